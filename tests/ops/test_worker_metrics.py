"""A real Celery worker (prefork pool) serving its own counters at MODELHUB_WORKER_METRICS_PORT."""

import contextlib
import os
import subprocess
import sys
import time

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from modelhub.serving.models import InferenceServer
from tests.ops.conftest import ROOT, database_url, free_port

BROKER = "redis://127.0.0.1:6379/5"
TASK = "modelhub.monitoring.tasks.health_pass"


def health_failures(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "modelhub_checks_total" and s.labels == {"kind": "server_health", "outcome": "fail"}:
                return s.value
    return 0.0


@pytest.mark.django_db(transaction=True)
def test_a_prefork_worker_serves_the_checks_its_pool_processes_ran(tmp_path):
    InferenceServer.objects.create(name="gone-a", base_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    redis.Redis.from_url(BROKER).flushdb()
    port = free_port()
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_", "PROMETHEUS_"))},
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "modelhub.settings",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": BROKER,
        "MODELHUB_VAR_DIR": str(tmp_path / "var"),
        "MODELHUB_MONITORING_CALL_TIMEOUT_S": "1",
        "MODELHUB_WORKER_METRICS_PORT": str(port),
        "MODELHUB_WORKER_METRICS_HOST": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    command = [sys.executable, "-m", "celery", "-A", "modelhub", "worker", "--pool", "prefork", "--concurrency", "2"]
    command += ["--loglevel", "INFO", "-Q", "checks", "-n", f"metrics-{port}@%h"]
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url, timeout=10).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no worker metrics within 120 s: {log.read_text()}")
        assert health_failures(requests.get(url, timeout=10).text) == 0

        # Sent from a process of its own: Celery prefers CELERY_BROKER_URL, which the test settings set.
        send = f"from celery import Celery; Celery().send_task({TASK!r}, queue='checks')"
        subprocess.run([sys.executable, "-c", send], env=env, check=True, timeout=60)

        deadline = time.monotonic() + 90
        while health_failures(requests.get(url, timeout=10).text) < 1:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert health_failures(requests.get(url, timeout=10).text) == 1  # counted in a pool process, served here
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
