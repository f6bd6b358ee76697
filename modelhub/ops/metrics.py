"""ModelHub's own Prometheus metrics (GET /metrics).

Counted where they happen: HTTP requests (by view name and status, never the raw path,
whose names and ids would make a series per object), reconciler actions (a deployment
transition committed) and checks run (check results recorded). Read at scrape time from
the database and the broker: alerts firing and the depth of each Celery queue.

Several processes: with PROMETHEUS_MULTIPROC_DIR set (before the process starts; one
folder, emptied at each start, shared by gunicorn's workers and by the Celery workers of
the same host), each process writes its counters there and a scrape adds them all up.
Without it, each process counts alone (one gunicorn worker answers a scrape with its own).
"""

import logging
import os

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.db.models.signals import post_save
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)
# No "<name>_created" series beside each counter: nothing here reads them, and they double the scrape.
disable_created_metrics()

HTTP_REQUESTS = Counter(
    "modelhub_http_requests", "HTTP requests answered, by view name, method and status", ["view", "method", "status"]
)
HTTP_DURATION = Histogram("modelhub_http_request_duration_seconds", "Time to answer a request, by view name", ["view"])
RECONCILER_ACTIONS = Counter(
    "modelhub_reconciler_actions", "Deployments the reconciler loaded, unloaded or saw fail", ["action"]
)
CHECKS = Counter("modelhub_checks", "Check results recorded, by kind and outcome (ok, warn, fail)", ["kind", "outcome"])

# A deployment transition's new state, as the action that led to it.
_ACTION_BY_STATE = {"loaded": "load", "unloaded": "unload", "failed": "failure"}
for _action in _ACTION_BY_STATE.values():
    RECONCILER_ACTIONS.labels(_action)  # every action is a series from the start, at 0


def _count_transition(sender, instance, created, **kwargs) -> None:
    action = _ACTION_BY_STATE.get(instance.to_state)
    if created and action:
        # Counted once committed: a transition rolled back did not happen.
        transaction.on_commit(RECONCILER_ACTIONS.labels(action).inc)


def _count_checks(sender, results, **kwargs) -> None:
    for row in results:
        CHECKS.labels(row.kind, row.status).inc()


def connect_signals() -> None:
    from modelhub.monitoring.record import results_recorded
    from modelhub.serving.models import DeploymentTransition

    post_save.connect(_count_transition, sender=DeploymentTransition, dispatch_uid="ops-reconciler-actions")
    results_recorded.connect(_count_checks, dispatch_uid="ops-checks")


# --- read at scrape time ---------------------------------------------------------------


def _alerts_firing() -> GaugeMetricFamily:
    from modelhub.alerts.models import Alert, AlertState, Severity

    # Served by the (state, since) index: one small grouped count.
    rows = Alert.objects.filter(state=AlertState.FIRING).values("rule__severity").annotate(n=Count("id")).order_by()
    counts = {row["rule__severity"]: row["n"] for row in rows}
    family = GaugeMetricFamily(
        "modelhub_alerts_firing", "Alerts firing now, by their rule's severity", labels=["severity"]
    )
    for severity in Severity.values:
        family.add_metric([severity], counts.get(severity, 0))
    return family


_redis_clients: dict[str, object] = {}


def _redis_depths(url: str) -> dict[str, int]:
    import redis

    client = _redis_clients.get(url)
    if client is None:
        timeout = settings.READY_TIMEOUT_S
        client = _redis_clients[url] = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    # kombu keeps a queue in one list per priority step: "<queue>", "<queue>\x06\x163", …
    keys = {q: [q] + [f"{q}\x06\x16{p}" for p in (3, 6, 9)] for q in settings.TASK_QUEUE_NAMES}
    with client.pipeline(transaction=False) as pipe:
        for names in keys.values():
            for name in names:
                pipe.llen(name)
        lengths = iter(pipe.execute())
    return {q: sum(next(lengths) for _ in names) for q, names in keys.items()}


def _filesystem_depths() -> dict[str, int]:
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
    depths = dict.fromkeys(settings.TASK_QUEUE_NAMES, 0)
    for entry in os.scandir(folder):  # messages are "<ms>_<uuid>.<queue>.msg"
        queue = entry.name.split(".", 1)[-1].removesuffix(".msg") if entry.name.endswith(".msg") else None
        if queue in depths:
            depths[queue] += 1
    return depths


def queue_depths() -> dict[str, int] | None:
    """Messages waiting in each Celery queue; None where the broker cannot tell us cheaply."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")):
        return _redis_depths(url)
    if url.startswith("filesystem://"):
        return _filesystem_depths()
    return None  # RabbitMQ: its own Prometheus plugin reports queue depth


class StateCollector:
    """Gauges read when Prometheus scrapes: never stale, and no process has to keep them."""

    def collect(self):
        try:
            yield _alerts_firing()
        except Exception:
            log.exception("metrics: cannot count firing alerts")
        try:
            depths = queue_depths()
        except Exception:
            log.exception("metrics: cannot read the queue depths from the broker")
            yield GaugeMetricFamily("modelhub_broker_reachable", _REACHABLE, value=0)
            return
        if depths is None:
            return
        yield GaugeMetricFamily("modelhub_broker_reachable", _REACHABLE, value=1)
        family = GaugeMetricFamily("modelhub_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"])
        for queue, depth in depths.items():
            family.add_metric([queue], depth)
        yield family


_REACHABLE = "1 when the broker answered the queue depth read, 0 when it did not"
_STATE = CollectorRegistry(auto_describe=False)
_STATE.register(StateCollector())


def exposition() -> bytes:
    """The text Prometheus reads: every process's counters, then the gauges read now."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_STATE)
