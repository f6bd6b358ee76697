"""Celery tasks of the check passes (queue "checks"). They take ids, never
objects, and are idempotent: a pass's id is its task id, which a retry or a
redelivery to a second worker keeps, so its results are recorded once. Each
pass's hard time limit is below its interval, so passes of one kind do not pile up.
"""

import time

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError

from modelhub.monitoring import passes
from modelhub.monitoring.checks import memory
from modelhub.monitoring.record import record

# A pass that meets a database gone away (a restart, a failover) is tried again under the
# same task id, so its results are recorded once they can be, and still only once.
DATABASE_RETRY = {
    "autoretry_for": (DjangoOperationalError, DjangoInterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 8,
    "retry_jitter": False,
    "max_retries": 6,
}


def _limits(kind: str) -> dict:
    seconds = passes.interval(kind)
    return {"soft_time_limit": seconds * 0.8, "time_limit": seconds * 0.9, **DATABASE_RETRY}


def _pass(task, kind: str) -> dict:
    # Called directly (not through Celery) there is no task id: use the schedule's slot.
    pass_id = f"{kind}:{task.request.id}" if task.request.id else None
    return passes.run_pass(kind, pass_id).as_dict()


@shared_task(bind=True, acks_late=True, **_limits(passes.HEALTH))
def health_pass(self) -> dict:
    return _pass(self, passes.HEALTH)


@shared_task(bind=True, acks_late=True, **_limits(passes.MODEL_CHECKS))
def model_checks_pass(self) -> dict:
    """Readiness and schema conformance of every deployment desired loaded."""
    return _pass(self, passes.MODEL_CHECKS)


@shared_task(bind=True, acks_late=True, **_limits(passes.LATENCY))
def latency_pass(self) -> dict:
    return _pass(self, passes.LATENCY)


@shared_task(bind=True, acks_late=True, **_limits(passes.STATS))
def stats_pass(self) -> dict:
    return _pass(self, passes.STATS)


@shared_task(bind=True, acks_late=True, **_limits(passes.METRICS))
def metrics_pass(self) -> dict:
    return _pass(self, passes.METRICS)


@shared_task(bind=True, acks_late=True, **_limits(passes.MODEL_CHECKS))
def run_checks_for_deployment(self, deployment_id: int) -> list[dict]:
    """ "Run now": readiness, schema and latency of one deployment, recorded at once."""
    run = self.request.id or f"{time.time():.6f}"
    return [
        passes.run_pass(kind, f"now:{run}:{kind}", deployment_ids=[deployment_id]).as_dict()
        for kind in (passes.MODEL_CHECKS, passes.LATENCY)
    ]


@shared_task(bind=True, acks_late=True, soft_time_limit=60, time_limit=90)
def record_memory_change(
    self, server_id: int, version_ids: list[int], action: str, device: str, before_bytes: float, not_before: float
) -> None:
    """The sample after a load or unload (see checks/memory.py), taken once Triton's metrics have caught up."""
    # A worker honours the countdown; run eagerly (tests, no broker) this waits instead.
    time.sleep(max(0.0, min(not_before - time.time(), settings.MONITORING_MEMORY_SETTLE_S)))
    result = memory.memory_change(server_id, version_ids, action, device, before_bytes)
    record([result], f"memory:{self.request.id}" if self.request.id else None)
