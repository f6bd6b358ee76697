"""Celery tasks of the serving app. They take ids, never objects, and are idempotent."""

import logging

from celery import shared_task

from modelhub.serving.models import InferenceServer
from modelhub.serving.reconciler import reconcile_server

log = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=30, acks_late=True)
def reconcile_server_task(self, server_id: int) -> dict:
    report = reconcile_server(server_id)
    if report.busy:
        # Another run holds the server; it may have read desired state before
        # the change that enqueued us, so look again shortly.
        raise self.retry(countdown=2)
    if report.changed or report.failures:
        log.info(
            "reconciled %s: loads=%s unloads=%s failures=%s",
            report.server,
            report.loads,
            report.unloads,
            report.failures,
        )
    return {"server": report.server, "loads": report.loads, "unloads": report.unloads, "failures": report.failures}


@shared_task
def reconcile_all() -> None:
    """Scheduled: restores models on servers that restarted, retries failed loads."""
    for server_id in InferenceServer.objects.filter(enabled=True).values_list("pk", flat=True):
        reconcile_server_task.delay(server_id)
