"""One bad model must not stop a server's reconcile, and a loaded model must
answer as its schema says.

Each fault sits next to a healthy model on the same real Triton, and the
healthy one must still become loaded promptly.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import tritonclient.http as triton_http
from django.db import connection
from django.utils import timezone

from modelhub.serving.models import Deployment, InferenceServer, ObservedState, triton_model_name
from modelhub.serving.reconciler import reconcile_server
from modelhub.serving.services import request_deploy
from tests.conftest import DOUBLER_MODEL_PY, make_zip
from tests.serving.test_deploy import infer, register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

# A doubler whose initialize() takes `seconds`: a load that outlasts the client's timeout.
SLOW_MODEL_PY = (
    DOUBLER_MODEL_PY.format(factor=2)
    + """
    def initialize(self, args):
        import time
        time.sleep({seconds})
"""
)

# Loads fine, then answers with no outputs at all ("outputs": []).
NO_OUTPUTS_MODEL_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in requests]
"""

# Answers OUTPUT as FP64 although its config (and the schema) say FP32.
WRONG_DTYPE_MODEL_PY = DOUBLER_MODEL_PY.format(factor=2).replace("np.float32", "np.float64")


def slow_zip(tmp_path: Path, seconds: float, name: str) -> Path:
    return make_zip(tmp_path / name, {"1/model.py": SLOW_MODEL_PY.format(seconds=seconds)})


def server_on(triton, name: str) -> InferenceServer:
    return InferenceServer.objects.create(name=name, base_url=triton.http_url)


def observed(deployment: Deployment) -> str:
    deployment.refresh_from_db()
    return deployment.observed


def wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ready(triton, model: str, version: int = 1) -> bool:
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        return client.is_model_ready(triton_model_name(model, version))
    finally:
        client.close()


@pytest.fixture
def in_background():
    """Run a reconcile on another thread (its own database connection), as a second worker would."""
    pool = ThreadPoolExecutor(2)

    def submit(fn, *args):
        def run():
            try:
                return fn(*args)
            finally:
                connection.close()

        return pool.submit(run)

    yield submit
    pool.shutdown(wait=True)


def test_a_missing_artifact_file_fails_that_model_and_the_pass_goes_on(triton, actor, doubler_zip, manifest, caplog):
    server = server_on(triton, "faults-missing")
    # Named to sort first: a pass that stopped at it would never reach the healthy one.
    lost = register(actor, doubler_zip(3, "lost.zip"), manifest, "fault-a-lost-file")
    healthy = register(actor, doubler_zip(2, "healthy.zip"), manifest, "fault-b-beside-lost-file")
    Path(lost.artifact.path).unlink()
    lost_deployment = Deployment.objects.create(version=lost, server=server)
    healthy_deployment = Deployment.objects.create(version=healthy, server=server)

    with caplog.at_level(logging.ERROR, logger="modelhub.serving.reconciler"):
        report = reconcile_server(server.pk)

    assert observed(healthy_deployment) == ObservedState.LOADED, healthy_deployment.last_error
    assert infer(triton, "fault-b-beside-lost-file", 1, [1.0]) == [2.0]
    assert observed(lost_deployment) == ObservedState.FAILED
    assert "No such file or directory" in lost_deployment.last_error
    assert lost.artifact.path in lost_deployment.last_error
    assert "fault-a-lost-file" in lost_deployment.last_error and "faults-missing" in lost_deployment.last_error
    assert lost_deployment.retry_at > timezone.now() + timedelta(seconds=60)
    assert report.loads == ["fault-b-beside-lost-file: [1]"]
    assert any(r.exc_info and "fault-a-lost-file" in r.getMessage() for r in caplog.records), caplog.text

    # Backing off: the next pass neither retries it nor disturbs the healthy one.
    assert reconcile_server(server.pk).loads == []
    assert observed(lost_deployment) == ObservedState.FAILED
    assert observed(healthy_deployment) == ObservedState.LOADED


def test_a_deployment_deleted_during_the_pass_does_not_stop_it(
    triton, actor, doubler_zip, manifest, tmp_path, in_background
):
    server = server_on(triton, "faults-deleted")
    vanishing = register(actor, slow_zip(tmp_path, 2, "vanishing.zip"), manifest, "fault-a-vanishing")
    healthy = register(actor, doubler_zip(2, "healthy.zip"), manifest, "fault-b-beside-vanishing")
    doomed = Deployment.objects.create(version=vanishing, server=server)
    healthy_deployment = Deployment.objects.create(version=healthy, server=server)

    running = in_background(reconcile_server, server.pk)
    # The back-off is written just before the load call: the load is under way.
    wait_for(lambda: Deployment.objects.get(pk=doomed.pk).retry_at is not None, 10, "the slow load to start")
    Deployment.objects.filter(pk=doomed.pk).delete()
    report = running.result(timeout=60)

    assert observed(healthy_deployment) == ObservedState.LOADED, healthy_deployment.last_error
    assert infer(triton, "fault-b-beside-vanishing", 1, [3.0]) == [6.0]
    assert not Deployment.objects.filter(pk=doomed.pk).exists()
    # Its model was loaded for a deployment that no longer exists: the same run took it off again.
    assert not ready(triton, "fault-a-vanishing")
    assert "fault-a-vanishing: [1]" in report.unloads
    assert report.failures == []


def test_a_load_that_hangs_backs_off_and_does_not_hold_back_other_models(
    triton, actor, doubler_zip, manifest, tmp_path, settings, in_background
):
    # Generous figures: on a busy 2-core CI machine a healthy python model's
    # load has taken over 30 s. What matters is that it does not wait for the
    # hang (the load timeout), so keep the timeout well above that.
    settings.TRITON_LOAD_TIMEOUT_S = 50
    settings.TRITON_TIMEOUT_S = 10  # this busy test machine can stall short calls while Triton starts a stub
    server = server_on(triton, "faults-hang")
    hung = register(actor, slow_zip(tmp_path, 80, "hung.zip"), manifest, "fault-a-hangs")
    first = register(actor, doubler_zip(2, "first.zip"), manifest, "fault-b-beside-hang")
    second = register(actor, doubler_zip(5, "second.zip"), manifest, "fault-c-deployed-during-hang")
    # Triton 2.51 sets up a backend on its first model's load, and loads that
    # start meanwhile wait for that whole first load: have the python backend
    # up before the hang, so that what is measured is the reconciler.
    warm = register(actor, doubler_zip(7, "warm.zip"), manifest, "fault-warm-up")
    request_deploy(warm, [server_on(triton, "faults-warm-up")], actor)
    hung_deployment = Deployment.objects.create(version=hung, server=server)
    first_deployment = Deployment.objects.create(version=first, server=server)

    started = time.monotonic()
    running = in_background(reconcile_server, server.pk)

    # The same pass loads the healthy model at once, while the other load hangs.
    wait_for(lambda: observed(first_deployment) == ObservedState.LOADED, 45, "the healthy model beside the hang")
    assert not running.done()
    # Its back-off was written before the load call, so a worker killed by the load would not repeat it.
    hung_deployment.refresh_from_db()
    assert hung_deployment.retry_at is not None and hung_deployment.observed == ObservedState.PENDING

    # A deploy on the same server meanwhile is not queued behind the hanging model.
    [second_deployment] = request_deploy(second, [server], actor)  # eager Celery: reconciles now
    assert observed(second_deployment) == ObservedState.LOADED, second_deployment.last_error
    assert time.monotonic() - started < settings.TRITON_LOAD_TIMEOUT_S
    assert not running.done()
    assert infer(triton, "fault-c-deployed-during-hang", 1, [1.0]) == [5.0]

    report = running.result(timeout=80)
    assert report.loads == ["fault-b-beside-hang: [1]"]
    hung_deployment.refresh_from_db()
    assert hung_deployment.observed == ObservedState.FAILED
    assert "no answer within 50 s" in hung_deployment.last_error
    assert "Triton may still be loading it" in hung_deployment.last_error
    assert "load (fault-a-hangs__v1)" in hung_deployment.last_error
    assert hung_deployment.retry_at > timezone.now() + timedelta(seconds=60)
    server.refresh_from_db()
    assert server.live is True  # a load timeout is not "server down"

    # A timeout backs off like any failed load: no second attempt on the next pass.
    again = reconcile_server(server.pk)
    assert again.loads == [] and again.reachable
    assert observed(hung_deployment) == ObservedState.FAILED
    assert observed(first_deployment) == observed(second_deployment) == ObservedState.LOADED


def test_a_load_whose_worker_died_is_failed_and_not_repeated(triton, actor, doubler_zip, manifest):
    server = server_on(triton, "faults-killed")
    version = register(actor, doubler_zip(2), manifest, "fault-worker-died")
    # What a worker killed during the load leaves behind: the back-off written
    # before the load call, and no outcome.
    deployment = Deployment.objects.create(
        version=version, server=server, retry_at=timezone.now() + timedelta(minutes=5)
    )

    report = reconcile_server(server.pk)

    assert report.loads == []
    assert observed(deployment) == ObservedState.FAILED
    assert "did not finish" in deployment.last_error and "worker" in deployment.last_error
    assert not ready(triton, "fault-worker-died")


@pytest.mark.parametrize(
    "source, model_name, difference",
    [
        (NO_OUTPUTS_MODEL_PY, "fault-no-outputs", "output 'OUTPUT' is missing from the answer"),
        (WRONG_DTYPE_MODEL_PY, "fault-wrong-dtype", "output 'OUTPUT' datatype: registered FP32, answered FP64"),
    ],
)
def test_a_model_that_answers_outside_its_schema_is_failed_and_unloaded(
    triton, actor, manifest, tmp_path, source, model_name, difference
):
    server = server_on(triton, "faults-smoke")
    version = register(actor, make_zip(tmp_path / "odd.zip", {"1/model.py": source}), manifest, model_name)

    [deployment] = request_deploy(version, [server], actor)

    assert observed(deployment) == ObservedState.FAILED
    assert "smoke inference" in deployment.last_error
    assert difference in deployment.last_error
    assert deployment.retry_at is not None
    assert not ready(triton, model_name)  # never left serving behind "failed"


def test_a_version_failing_the_smoke_inference_leaves_the_other_versions_served(
    triton, actor, doubler_zip, manifest, tmp_path
):
    server = server_on(triton, "faults-smoke-versions")
    good = register(actor, doubler_zip(2), manifest, "fault-half-mute")
    mute = register(
        actor, make_zip(tmp_path / "mute.zip", {"1/model.py": NO_OUTPUTS_MODEL_PY}), manifest, "fault-half-mute"
    )
    request_deploy(good, [server], actor)

    [mute_deployment] = request_deploy(mute, [server], actor)

    assert observed(mute_deployment) == ObservedState.FAILED
    assert "output 'OUTPUT' is missing from the answer" in mute_deployment.last_error
    assert good.deployments.get().observed == ObservedState.LOADED
    assert infer(triton, "fault-half-mute", good.number, [4.0]) == [8.0]
    with pytest.raises(Exception, match="unavailable|not found|unknown"):
        infer(triton, "fault-half-mute", mute.number, [1.0])
