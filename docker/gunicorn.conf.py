"""gunicorn's settings for the production image (docker/entrypoint.sh web).

GUNICORN_CMD_ARGS overrides any of these (e.g. "--workers 8"); WEB_CONCURRENCY sets the
worker count (gunicorn's own variable). Logs go to stdout/stderr, the container's log.
"""

import os

bind = "0.0.0.0:8000"
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
threads = 4
# Uploads of multi-GiB artifacts and their hashing run inside a request.
timeout = 900
graceful_timeout = 30
# Heartbeat files on memory, not on the container's overlay disk (gunicorn's Docker advice).
worker_tmp_dir = "/dev/shm"
accesslog = "-"
errorlog = "-"
# The proxy in front (ingress, load balancer) terminates TLS: trust its X-Forwarded-* headers.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")


def child_exit(server, worker):
    # prometheus_client's multiprocess mode: a gone worker's live gauges stop being summed.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
