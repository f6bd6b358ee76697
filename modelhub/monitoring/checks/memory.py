"""Memory around loads: server memory (GPU where present, else host) sampled
before and after every load and unload the reconciler makes.

Listens to serving's model_change_* signals. The sample before is taken at once
(the reconciler waits a metrics scrape); the sample after is taken by a task a
few seconds later (MONITORING_MEMORY_SETTLE_S: Triton refreshes its memory
metrics every 2 s), so no load waits for it. An unload that gives back less
than what the version's last load took (minus MONITORING_MEMORY_TOLERANCE) is
a `memory` result with status warn.
"""

import logging
import threading
import time

from django.conf import settings

from modelhub.monitoring.checks.metrics import server_memory
from modelhub.monitoring.models import CheckKind, CheckResult, Status
from modelhub.monitoring.record import Result
from modelhub.serving.models import InferenceServer
from modelhub.serving.triton_client import TritonClient, TritonError

log = logging.getLogger(__name__)

# Below this a load's growth is noise on a busy host, not memory an unload must give back.
MIN_TRACKED_BYTES = 16 * 1024**2

_pending = threading.local()  # the sample before, per (server, model, action), on the reconciler's thread


def _client(server: InferenceServer) -> TritonClient:
    return TritonClient.for_server(server, timeout=settings.MONITORING_CALL_TIMEOUT_S)


def sample(server: InferenceServer) -> tuple[str, float] | None:
    """(device, bytes used) now, or None when the server's metrics cannot tell (logged)."""
    if not server.metrics_url:
        return None
    client = _client(server)
    try:
        return server_memory(client)
    except TritonError as exc:
        log.warning("memory around loads: %s", exc)
        return None
    finally:
        client.close()


def before_model_change(sender, server, model, version_ids, action, **kwargs) -> None:
    samples = getattr(_pending, "samples", None) or {}
    _pending.samples = samples
    samples[server.pk, model, action] = sample(server)


def after_model_change(sender, server, model, version_ids, action, succeeded, **kwargs) -> None:
    samples = getattr(_pending, "samples", {})
    before = samples.pop((server.pk, model, action), None)
    if before is None or not succeeded or not version_ids:
        return
    from modelhub.monitoring.tasks import record_memory_change  # tasks imports the passes, which import the checks

    settle = settings.MONITORING_MEMORY_SETTLE_S
    record_memory_change.apply_async(
        kwargs={
            "server_id": server.pk,
            "version_ids": list(version_ids),
            "action": action,
            "device": before[0],
            "before_bytes": before[1],
            "not_before": time.time() + settle,
        },
        countdown=settle,
    )


def memory_change(server_id: int, version_ids: list[int], action: str, device: str, before_bytes: float) -> Result:
    """The memory result of one load or unload whose sample before was `before_bytes`; samples after now."""
    server = InferenceServer.objects.get(pk=server_id)
    after = sample(server)
    version_id = max(version_ids)  # the newest of the call: the one a load adds
    fields = {"kind": CheckKind.MEMORY, "server_id": server_id, "version_id": version_id}
    details = {"action": action, "device": device, "version_ids": version_ids, "before_bytes": before_bytes}
    if after is None or after[0] != device:
        message = f"memory around the {action} on {server.name!r}: no sample after it (see the metrics check)"
        return Result(status=Status.WARN, message=message, details=details, **fields)
    delta = after[1] - before_bytes
    details.update(after_bytes=after[1], delta_bytes=delta)
    status, message = Status.OK, ""
    if action == "unload":
        took = load_growth(server_id, version_ids)
        details["load_delta_bytes"] = took
        if took is not None and not gives_back(took, -delta):
            status = Status.WARN
            message = (
                f"the unload on {server.name!r} gave back {-delta / 2**20:.0f} MiB of {device} memory, but the last "
                f"load of these versions took {took / 2**20:.0f} MiB"
            )
    return Result(status=status, value=delta, message=message, details=details, **fields)


def gives_back(took: float, given_back: float) -> bool:
    """Whether an unload that freed `given_back` bytes returned what a load that took `took` bytes held."""
    if took < MIN_TRACKED_BYTES:
        return True
    return given_back >= took * (1 - settings.MONITORING_MEMORY_TOLERANCE)


def load_growth(server_id: int, version_ids: list[int]) -> float | None:
    """What the last load of any of these versions on this server took (bytes), if it was measured."""
    last = (
        CheckResult.objects.filter(
            kind=CheckKind.MEMORY, server_id=server_id, version_id__in=version_ids, details__action="load"
        )
        .exclude(value=None)
        .first()
    )
    return last.value if last else None
