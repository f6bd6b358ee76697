"""Celery tasks of the serving app. They take ids, never objects, and are idempotent."""

import logging
from concurrent.futures import ThreadPoolExecutor

import gevent
from celery import shared_task
from django.db import connection

from modelhub.serving.models import InferenceServer
from modelhub.serving.reconciler import reconcile_server

log = logging.getLogger(__name__)

# Servers one reconcile_servers_task works on at once (each load streams, so memory stays flat).
PARALLEL_SERVERS = 16


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


@shared_task(acks_late=True)
def reconcile_servers_task(server_ids: list[int]) -> list[dict]:
    """Several servers at once, each on its own thread: a deploy to a label (a fleet) takes
    as long as its slowest server, not their sum, however many workers are free."""
    if len(server_ids) == 1 or connection.in_atomic_block:
        # In a transaction (eager Celery inside a test's), other threads' connections
        # would not see its rows: one after another, here.
        return [reconcile_server_task(server_id) for server_id in server_ids]
    with ThreadPoolExecutor(min(PARALLEL_SERVERS, len(server_ids)), thread_name_prefix="fleet") as pool:
        return list(pool.map(_reconcile_on_own_thread, server_ids))


def _reconcile_on_own_thread(server_id: int) -> dict:
    try:
        return reconcile_server_task(server_id)
    finally:
        # As the reconciler's own threads: close this thread's database connection and
        # the gevent hub the Triton client's timeouts ran on.
        connection.close()
        gevent.get_hub().destroy(destroy_loop=True)


@shared_task
def reconcile_all() -> None:
    """Scheduled: restores models on servers that restarted, retries failed loads."""
    # Not drained servers: their address left their group's DNS name (modelhub.serving.discovery).
    servers = InferenceServer.objects.filter(enabled=True, drained_at__isnull=True)
    for server_id in servers.values_list("pk", flat=True):
        reconcile_server_task.delay(server_id)
