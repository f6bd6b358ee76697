"""Signals the reconciler sends around each load and unload call it makes to Triton.

Apps above serving (monitoring samples server memory around them) listen
without serving importing them. Both carry `server` (the InferenceServer),
`model` (the Triton model name), `version_ids` (ModelVersion ids: those the
load asks Triton to serve, or those served before an unload) and `action`
("load" or "unload"); `model_change_finished` adds `succeeded` (did Triton
answer 200). They are sent with send_robust: a listener's failure is logged,
never allowed to break a load.
"""

import logging
from contextlib import contextmanager

import django.dispatch

log = logging.getLogger(__name__)

model_change_starting = django.dispatch.Signal()
model_change_finished = django.dispatch.Signal()


def send(signal: django.dispatch.Signal, **kwargs) -> None:
    for receiver, outcome in signal.send_robust(sender=None, **kwargs):
        if isinstance(outcome, Exception):
            log.error(
                "listener %r of a Triton %s of %s failed: %s",
                receiver,
                kwargs.get("action"),
                kwargs.get("model"),
                outcome,
                exc_info=outcome,
            )


@contextmanager
def around_model_change(server, model: str, version_ids: list[int], action: str):
    """Send model_change_starting, run the Triton call, then model_change_finished."""
    details = {"server": server, "model": model, "version_ids": list(version_ids), "action": action}
    send(model_change_starting, **details)
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        send(model_change_finished, succeeded=succeeded, **details)
