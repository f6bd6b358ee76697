"""Triton killed while it loads a model: the deployment ends failed with an error naming
the server and what happened, at once (not after the load's timeout), never pending;
once Triton is back and the back-off has passed, the next pass loads it."""

import threading
import time

import pytest
import tritonclient.http as triton_http
from django.db import connection

from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving.models import (
    Deployment,
    DeploymentTransition,
    InferenceServer,
    ObservedState,
    triton_model_name,
)
from modelhub.serving.reconciler import reconcile_server
from tests.conftest import DOUBLER_MODEL_PY, make_zip
from tests.faults.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

# A doubler whose initialize() sleeps as many seconds as a file says when it loads:
# slow while the test kills Triton, fast once it is back.
SLOW_WHILE_FILE_SAYS_PY = (
    DOUBLER_MODEL_PY.format(factor=2)
    + """
    def initialize(self, args):
        import pathlib
        import time
        time.sleep(float(pathlib.Path({path!r}).read_text()))
"""
)


def test_triton_killed_during_a_load_fails_the_deployment_at_once_and_a_later_pass_loads_it(
    triton_factory, actor, manifest, tmp_path, settings
):
    settings.TRITON_LOAD_TIMEOUT_S = 60.0  # the failure must come from the dead server, not from a timeout
    settings.DEPLOY_RETRY_AFTER_S = 1.0
    own = triton_factory()
    delay = tmp_path / "delay"
    delay.write_text("30")
    artifact = make_zip(tmp_path / "slow.zip", {"1/model.py": SLOW_WHILE_FILE_SAYS_PY.format(path=str(delay))})
    version = register_version(get_or_create_model("killed-mid-load", actor), artifact, manifest, actor).version
    server = InferenceServer.objects.create(name="dies-while-loading", base_url=own.http_url)
    deployment = Deployment.objects.create(version=version, server=server)

    def refreshed() -> Deployment:
        deployment.refresh_from_db()
        return deployment

    reports = []

    def reconcile() -> None:
        try:
            reports.append(reconcile_server(server.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=reconcile)
    thread.start()
    # The back-off is written just before the load call: then Triton is (about to be) inside initialize().
    wait_for(lambda: refreshed().retry_at is not None, 30, "the reconciler to start the load")
    time.sleep(1.0)
    killed_at = time.monotonic()
    own.kill()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the reconciler still waits on a dead server"
    assert time.monotonic() - killed_at < 10  # the dead connection ended it, not the 60 s load timeout

    failed = refreshed()
    assert failed.observed == ObservedState.FAILED
    assert "dies-while-loading" in failed.last_error and "load" in failed.last_error
    assert "the server stopped answering" in failed.last_error, failed.last_error
    assert failed.retry_at is not None  # backs off: a model whose load killed its server is not reloaded at once
    assert list(DeploymentTransition.objects.filter(deployment=deployment).values_list("to_state", flat=True)) == [
        ObservedState.FAILED
    ]

    delay.write_text("0")
    own.restart()
    time.sleep(max(0.0, (failed.retry_at - failed.checked_at).total_seconds()))

    def next_pass_loads() -> bool:
        reconcile_server(server.pk)
        return refreshed().observed == ObservedState.LOADED

    wait_for(next_pass_loads, 60, "a pass after the back-off to load it on the restarted Triton", every=0.5)
    client = triton_http.InferenceServerClient(own.http_url.removeprefix("http://"))
    try:
        assert client.is_model_ready(triton_model_name("killed-mid-load", 1), "1")
    finally:
        client.close()
    assert refreshed().last_error == ""
