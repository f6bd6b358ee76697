"""The checks against a real tritonserver: health, readiness, schema, latency."""

import json
import socket
import time

import pytest
import tritonclient.http as triton_http

from devtools.local_triton import free_port
from modelhub.monitoring.checks.latency import probe_latency
from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status
from modelhub.monitoring.passes import run_pass
from modelhub.serving.models import Deployment, InferenceServer, ObservedState
from modelhub.serving.services import request_deploy
from modelhub.serving.triton_client import TritonClient
from tests.conftest import doubler_source, make_zip
from tests.serving.test_deploy import register, register_server
from tests.serving.test_string_and_onnx_models import STRINGS_MANIFEST, STRINGS_MODEL_PY

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]


@pytest.fixture
def hanging_port():
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def deploy(actor, artifact, manifest, model: str, server: InferenceServer) -> Deployment:
    version = register(actor, artifact, manifest, model)
    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciled on commit
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    return Deployment.objects.select_related("version__model", "server").get(pk=deployment.pk)


def results(kind: str, **filters) -> list[CheckResult]:
    return list(CheckResult.objects.filter(kind=kind, **filters))


def test_health_pass_marks_up_refused_and_silent_servers_and_a_silent_one_costs_one_timeout(
    triton, settings, hanging_port
):
    settings.MONITORING_CALL_TIMEOUT_S = 1.5
    up = register_server(triton, "health-up")
    refused = InferenceServer.objects.create(name="health-refused", base_url=f"http://127.0.0.1:{free_port()}")
    silent = [
        InferenceServer.objects.create(name=f"health-silent-{i}", base_url=f"http://127.0.0.1:{hanging_port}")
        for i in range(3)
    ]

    started = time.monotonic()
    report = run_pass("health", "health:test")
    elapsed = time.monotonic() - started

    # Three silent servers checked at once: one timeout (plus gevent's 1 s slack), not three.
    assert elapsed < 1.5 + 1 + 1.5, elapsed
    assert sorted(report.servers_down) == sorted(["health-refused"] + [s.name for s in silent])
    [ok] = results(CheckKind.SERVER_HEALTH, server=up)
    assert (ok.status, ok.value) == (Status.OK, 1.0)
    [down] = results(CheckKind.SERVER_HEALTH, server=refused)
    assert down.status == Status.FAIL and down.value == 0.0
    assert "health-refused" in down.message and "Connection refused" in down.message
    for server in silent:
        [timed_out] = results(CheckKind.SERVER_HEALTH, server=server)
        assert timed_out.status == Status.FAIL and "no answer within 1.5 s" in timed_out.message
        server.refresh_from_db()
        assert server.live is False and "no answer" in server.last_error
    up.refresh_from_db()
    assert up.live and up.ready and up.triton_version == "2.51.0" and up.last_error == ""
    assert Point.objects.get(metric="up", target=f"server:{up.pk}").value == 1.0
    assert Point.objects.get(metric="up", target=f"server:{refused.pk}").value == 0.0


def test_a_silent_server_does_not_delay_the_checks_of_a_healthy_one(
    triton, settings, hanging_port, actor, doubler_zip, manifest
):
    settings.MONITORING_CALL_TIMEOUT_S = 2.0
    healthy = register_server(triton, "delay-healthy")
    deployment = deploy(actor, doubler_zip(2, "delay.zip"), manifest, "delay-healthy-model", healthy)
    silent = InferenceServer.objects.create(name="delay-silent", base_url=f"http://127.0.0.1:{hanging_port}")
    # A deployment row on the silent server (never reconciled: it would hang).
    stuck = Deployment.objects.create(version=deployment.version, server=silent)

    run_pass("model_checks", "model_checks:delay")

    [ready] = results(CheckKind.MODEL_READY, deployment=deployment)
    [schema] = results(CheckKind.SCHEMA, deployment=deployment)
    assert ready.status == Status.OK and schema.status == Status.OK, (ready.message, schema.message)
    # Recorded at the same time as the silent server's, but checked while it timed out:
    # the silent server's deployment got "server down" without a call of its own.
    [down] = results(CheckKind.MODEL_READY, deployment=stuck)
    assert down.status == Status.FAIL and down.message.startswith("server down:") and "delay-silent" in down.message
    assert not results(CheckKind.SCHEMA, deployment=stuck)


def test_a_model_unloaded_behind_modelhubs_back_fails_readiness_with_tritons_reason(
    triton, actor, doubler_zip, manifest
):
    server = register_server(triton, "unloaded-behind")
    deployment = deploy(actor, doubler_zip(2, "behind.zip"), manifest, "unloaded-behind-back", server)
    run_pass("model_checks", "model_checks:before")
    assert results(CheckKind.MODEL_READY, deployment=deployment)[0].status == Status.OK

    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    client.unload_model("unloaded-behind-back__v1")  # version 1's own Triton name
    client.close()
    run_pass("model_checks", "model_checks:after")

    [latest, _] = results(CheckKind.MODEL_READY, deployment=deployment)
    assert latest.status == Status.FAIL and latest.value == 0.0
    assert "version 1 of 'unloaded-behind-back__v1' is not ready on Triton server 'unloaded-behind'" in latest.message
    assert "Request for unknown model: 'unloaded-behind-back__v1' version 1 is not at ready state" in latest.message
    assert len(results(CheckKind.SCHEMA, deployment=deployment)) == 1  # no schema check of a model not served


def test_schema_mismatch_names_the_tensor_and_what_differs(triton, actor, doubler_zip, manifest):
    server = register_server(triton, "schema-drift")
    deployment = deploy(actor, doubler_zip(2, "drift.zip"), manifest, "schema-drift-model", server)
    # Someone reloads the model by hand with OUTPUT as FP64: Triton now serves another schema.
    config = {
        "name": "schema-drift-model__v1",  # version 1's own Triton name
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT", "data_type": "TYPE_FP64", "dims": [-1]}],
    }
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    client.load_model(
        "schema-drift-model__v1", config=json.dumps(config), files={"file:1/model.py": doubler_source(2).encode()}
    )
    client.close()

    run_pass("model_checks", "model_checks:drift")

    [ready] = results(CheckKind.MODEL_READY, deployment=deployment)
    [schema] = results(CheckKind.SCHEMA, deployment=deployment)
    assert ready.status == Status.OK
    assert schema.status == Status.FAIL
    assert "'OUTPUT'" in schema.message and "FP32" in schema.message and "FP64" in schema.message, schema.message
    assert "schema-drift" in schema.message


def test_latency_probe_of_string_inputs_gives_ordered_percentiles_checked_against_the_slo(
    triton, actor, tmp_path, settings
):
    server = register_server(triton, "latency-strings")
    artifact = make_zip(tmp_path / "strings.zip", {"1/model.py": STRINGS_MODEL_PY})
    deployment = deploy(actor, artifact, json.loads(json.dumps(STRINGS_MANIFEST)), "latency-strings-model", server)
    deployment.version.model.latency_slo_ms = 10_000
    deployment.version.model.save()
    settings.LATENCY_PROBE_REQUESTS = 12

    report = run_pass("latency", "latency:strings", deployment_ids=[deployment.pk])

    assert report.written == 1
    [result] = results(CheckKind.LATENCY, deployment=deployment)
    details = result.details
    assert result.status == Status.OK, result.message
    assert details["requests"] == 12 and details["errors"] == 0 and details["slo_ms"] == 10_000
    assert 0 < details["p50_ms"] <= details["p95_ms"] <= details["p99_ms"]
    assert result.value == pytest.approx(details["p95_ms"], abs=1e-3)
    target = f"deployment:{deployment.pk}"
    assert set(Point.objects.filter(target=target).values_list("metric", flat=True)) == {
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
    }

    # Above the model's SLO (no real request is this fast): fail, with the figures.
    deployment.version.model.latency_slo_ms = 0.0001
    slow = probe_latency(TritonClient.for_server(server), deployment, requests=3)
    assert slow.status == Status.FAIL and slow.value > 0.0001
    assert "p95" in slow.message and "above the model's SLO of 0.0001 ms" in slow.message
