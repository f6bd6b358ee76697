"""The real Celery worker with embedded beat, on Redis: the schedule alone
brings a restarted Triton back to its desired models."""

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import redis
import tritonclient.http as triton_http
from django.conf import settings as django_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving.models import Deployment, InferenceServer, ObservedState

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

BROKER = "redis://127.0.0.1:6379/15"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def only_schedule(name: str, every_s: int) -> None:
    """Beat runs the PeriodicTask `name` every `every_s` seconds and no other (schedules are rows)."""
    every, _ = IntervalSchedule.objects.get_or_create(every=every_s, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.exclude(name=name).update(enabled=False)
    task = PeriodicTask.objects.get(name=name)
    task.interval, task.enabled, task.expire_seconds = every, True, None
    task.save()


def worker_command() -> list[str]:
    """A worker with embedded beat (reading the PeriodicTask rows) that consumes every queue, as scripts/run's do."""
    queues = ",".join(django_settings.TASK_QUEUE_NAMES)
    return [sys.executable, "-m", "celery", "-A", "modelhub", "worker", "--beat", "--pool", "solo",
            "--loglevel", "INFO", "-Q", queues, "-O", "fair"]  # fmt: skip


def worker_env(tmp_path, artifact_root) -> dict:
    db = django_settings.DATABASES["default"]
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelhub.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": BROKER,
        "MODELHUB_VAR_DIR": str(tmp_path / "var"),
        "MODELHUB_ARTIFACT_ROOT": artifact_root,
    }


@pytest.fixture
def worker(tmp_path, artifact_root):
    redis.Redis.from_url(BROKER).flushdb()
    only_schedule("reconcile-all-servers", 1)
    env = worker_env(tmp_path, artifact_root)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(worker_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    print((tmp_path / "worker.log").read_text()[-4000:])


def test_scheduled_reconcile_on_a_real_worker_loads_and_restores_after_restart(
    triton_factory, worker, actor, doubler_zip, manifest
):
    own = triton_factory()
    server = InferenceServer.objects.create(name="scheduled", base_url=own.http_url)
    model = get_or_create_model("beat-driven", actor)
    version = register_version(model, doubler_zip(4), manifest, actor).version
    # Desired state written directly: nothing enqueues a task, only beat can act.
    deployment = Deployment.objects.create(version=version, server=server)

    def observed():
        deployment.refresh_from_db()
        return deployment.observed

    wait_for(lambda: observed() == ObservedState.LOADED, 60, "the worker's scheduled reconcile to load the model")

    client = triton_http.InferenceServerClient(own.http_url.removeprefix("http://"))
    own.kill()
    own.restart()
    assert not client.is_model_ready("beat-driven__v1")  # explicit mode forgot it
    wait_for(lambda: client.is_model_ready("beat-driven__v1", "1"), 60, "beat to restore the model after a restart")
    client.close()


def test_a_worker_killed_during_a_load_leaves_a_back_off_and_the_next_one_does_not_repeat_it(
    triton_factory, worker, actor, manifest, tmp_path, artifact_root
):
    from django.utils import timezone

    from tests.conftest import make_zip
    from tests.serving.test_reconciler_faults import SLOW_MODEL_PY

    own = triton_factory()
    server = InferenceServer.objects.create(name="killed-mid-load", base_url=own.http_url)
    model = get_or_create_model("outlives-its-worker", actor)
    artifact = make_zip(tmp_path / "slow.zip", {"1/model.py": SLOW_MODEL_PY.format(seconds=15)})
    version = register_version(model, artifact, manifest, actor).version
    deployment = Deployment.objects.create(version=version, server=server)

    def refreshed():
        deployment.refresh_from_db()
        return deployment

    # The back-off is written before the load call: once it is there, the worker is inside the load.
    wait_for(lambda: refreshed().retry_at is not None, 60, "the worker to start the load")
    # SIGKILL, as the out-of-memory killer would; with it the embedded beat process it started.
    family = [worker.pid] + [child.pid for child in psutil.Process(worker.pid).children(recursive=True)]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait(timeout=10)
    assert refreshed().observed == ObservedState.PENDING

    replacement = subprocess.Popen(worker.args, env=worker_env(tmp_path, artifact_root), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: refreshed().observed == ObservedState.FAILED, 60, "the next worker to record the dead load")
        assert "did not finish" in deployment.last_error
        assert deployment.retry_at > timezone.now()
        time.sleep(3)  # a few more scheduled passes (every second)
        assert refreshed().observed == ObservedState.FAILED  # not loaded again before the back-off ends
    finally:
        replacement.terminate()
        replacement.wait(timeout=20)
