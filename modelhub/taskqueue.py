"""Queueing a task after a write commits, and saying so clearly when the broker is down.

A write that needs a task (a deploy request enqueues a reconcile) commits its rows
first. If the broker cannot take the message, the write still stands: the periodic
pass (beat's reconcile-all-servers) picks it up once the broker is back. The caller
learns both facts from TaskQueueUnavailable, which the API answers as a 503 and the
UI shows as a warning.
"""

import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

log = logging.getLogger(__name__)


class TaskQueueUnavailable(Exception):
    """The broker refused a message that was due after a committed write."""

    def __init__(self, recorded: str, picked_up_by: str, cause: Exception):
        self.recorded, self.picked_up_by, self.cause = recorded, picked_up_by, cause
        super().__init__(
            f"the task queue ({broker_description()}) is unreachable: {cause}; {recorded} is recorded and "
            f"{picked_up_by} will pick it up once the queue is back"
        )


def broker_description() -> str:
    """The broker as a reader may see it: its kind and address, never a password."""
    parts = urlsplit(settings.CELERY_BROKER_URL)
    kind = {"redis": "Redis", "rediss": "Redis", "amqp": "AMQP", "amqps": "AMQP", "pyamqp": "AMQP"}.get(parts.scheme)
    if kind is None:
        return f"the {parts.scheme} broker"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    database = parts.path if kind == "Redis" and parts.path not in ("", "/") else ""
    return f"{kind} at {parts.hostname or 'localhost'}{port}{database}"


def enqueue_on_commit(task, *args, recorded: str, picked_up_by: str) -> None:
    """`task.delay(*args)` once the current transaction commits (at once outside one).

    Raises TaskQueueUnavailable (from the commit, after the rows are written) if the
    broker does not take the message; `recorded` and `picked_up_by` say in the error
    what was kept and what will do the work instead.
    """

    def send() -> None:
        try:
            task.delay(*args)
        except BrokerError as exc:
            log.warning("queueing %s%s failed, %s stands: %s", task.name, args, recorded, exc)
            raise TaskQueueUnavailable(recorded, picked_up_by, exc) from exc

    transaction.on_commit(send)
