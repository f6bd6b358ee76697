"""Beat reading its schedule from the database and a Celery worker on the real Redis broker
run a check pass end to end: the rows it writes are the real server's health."""

import signal
import subprocess
import sys

import pytest
import redis

from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status, series_target
from modelhub.serving.models import InferenceServer
from tests.serving.test_worker import only_schedule, wait_for, worker_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

BROKER = "redis://127.0.0.1:6379/14"  # tests/serving/test_worker.py has 15


@pytest.fixture
def checks_worker(tmp_path, artifact_root):
    """A worker that consumes the checks queue only, with embedded beat running one schedule every second."""
    redis.Redis.from_url(BROKER).flushdb()
    only_schedule("server-health", 1)
    env = {**worker_env(tmp_path, artifact_root), "CELERY_BROKER_URL": BROKER}
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        # Only "checks": the pass reaches this worker through CELERY_TASK_ROUTES, or not at all.
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "modelhub", "worker", "--beat", "--pool", "solo",
             "--loglevel", "INFO", "-Q", "checks", "-O", "fair"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        yield proc
        proc.send_signal(signal.SIGQUIT)  # cold shutdown: nothing here is worth waiting for
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(log_path.read_text()[-4000:])


def test_the_scheduled_health_pass_records_each_servers_health_through_the_checks_queue(triton, checks_worker):
    up = InferenceServer.objects.create(name="watched", base_url=triton.http_url)
    down = InferenceServer.objects.create(name="nobody-home", base_url="http://127.0.0.1:9")

    def results(server):
        return CheckResult.objects.filter(kind=CheckKind.SERVER_HEALTH, server=server)

    wait_for(lambda: results(up).exists() and results(down).exists(), 45, "beat's health pass on the worker")

    healthy = results(up).first()
    assert (healthy.status, healthy.value) == (Status.OK, 1.0)
    dead = results(down).first()
    assert (dead.status, dead.value) == (Status.FAIL, 0.0)
    assert "nobody-home" in dead.message  # the error names the server
    assert Point.objects.filter(metric="up", target=series_target(up), value=1).exists()
    assert Point.objects.filter(metric="up", target=series_target(down), value=0).exists()
    up.refresh_from_db()
    assert up.live and up.ready  # the one writer of a server's health ran in the worker
