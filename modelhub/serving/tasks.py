"""Celery tasks of the serving app. They take ids, never objects, and are idempotent."""

import logging

from celery import shared_task

from modelhub.serving.models import InferenceServer
from modelhub.serving.reconciler import reconcile_server

log = logging.getLogger(__name__)


@shared_task(acks_late=True)
def reconcile_server_task(server_id: int) -> dict:
    # No retry when a model is busy: the run that holds it looks again at its
    # desired state after releasing the lock, so a change it missed is not lost.
    report = reconcile_server(server_id)
    if report.changed or report.failures:
        log.info(
            "reconciled %s: loads=%s unloads=%s failures=%s busy=%s",
            report.server,
            report.loads,
            report.unloads,
            report.failures,
            report.busy,
        )
    return {
        "server": report.server,
        "loads": report.loads,
        "unloads": report.unloads,
        "failures": report.failures,
        "busy": report.busy,
    }


@shared_task
def reconcile_all() -> None:
    """Scheduled: restores models on servers that restarted, retries failed loads."""
    for server_id in InferenceServer.objects.filter(enabled=True).values_list("pk", flat=True):
        reconcile_server_task.delay(server_id)
