"""A Celery worker's own /metrics (MODELHUB_WORKER_METRICS_PORT): the reconciler actions and
checks it counted, for workers that share no PROMETHEUS_MULTIPROC_DIR with a web process
(their own pod or host).

The worker's main process serves it; with the prefork pool the tasks run in child
processes, which write their counts to PROMETHEUS_MULTIPROC_DIR, so that folder is
needed there too. Queue depths and alerts are the web's /metrics (read once, not per worker).
"""

import logging
import os

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess, start_http_server

log = logging.getLogger(__name__)


def serve(sender=None, **kwargs) -> None:
    port = settings.WORKER_METRICS_PORT
    if not port:
        return
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        log.warning(
            "MODELHUB_WORKER_METRICS_PORT is set without PROMETHEUS_MULTIPROC_DIR: tasks run in pool "
            "processes, whose counts this endpoint cannot see (set it to an empty folder)"
        )
        registry = REGISTRY
    start_http_server(port, addr=settings.WORKER_METRICS_HOST, registry=registry)
    log.info("worker metrics on http://%s:%s/metrics", settings.WORKER_METRICS_HOST, port)
