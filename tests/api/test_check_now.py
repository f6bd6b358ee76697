"""Run now over the API on a real Triton: POST …/deployments/{id}/check/ and …/servers/{name}/check/
run the checks in the request, record them and answer them."""

import time

import pytest

from modelhub.audit.models import AuditEvent
from modelhub.monitoring.models import CheckResult, Point
from modelhub.serving.models import InferenceServer
from modelhub.serving.services import request_deploy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]


@pytest.fixture
def server(triton):
    return InferenceServer.objects.create(name="now-local", base_url=triton.http_url, metrics_url=triton.metrics_url)


def test_a_deployment_is_checked_now_readiness_schema_and_latency(registered, server, client_with, actor):
    version = registered("check-now").versions.get()
    [deployment] = request_deploy(version, [server], actor)  # eager Celery: loaded on commit

    response = client_with("deploy").post(f"/api/v1/deployments/{deployment.pk}/check/")

    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [(r["kind"], r["status"]) for r in results] == [("model_ready", "ok"), ("schema", "ok"), ("latency", "ok")]
    assert all(r["deployment"] == deployment.pk and r["server"] == "now-local" for r in results)
    assert results[2]["details"]["p95_ms"] > 0 and results[2]["model"] == "check-now" and results[2]["version"] == 1
    assert CheckResult.objects.filter(deployment=deployment).count() == 3
    assert Point.objects.filter(metric="latency_p95_ms", target=f"deployment:{deployment.pk}").exists()
    event = AuditEvent.objects.filter(action="checks.run").latest("id")
    assert event.model_name == "check-now" and event.details["results"]["latency"] == "ok"


def test_a_server_is_checked_now_and_a_dead_one_answers_down_at_once(server, client_with):
    client = client_with("deploy")

    response = client.post("/api/v1/servers/now-local/check/")

    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [(r["kind"], r["status"]) for r in results] == [("server_health", "ok"), ("metrics", "ok")]
    assert 0 <= results[1]["details"]["cpu_util"] <= 1
    server.refresh_from_db()
    assert server.live and server.ready and server.last_checked_at is not None

    InferenceServer.objects.create(name="now-dead", base_url="http://127.0.0.1:9")
    started = time.monotonic()
    response = client.post("/api/v1/servers/now-dead/check/")

    assert response.status_code == 200 and time.monotonic() - started < 5
    health, metrics = response.json()["results"]
    assert health["kind"] == "server_health" and health["status"] == "fail" and "'now-dead'" in health["message"]
    assert metrics["status"] == "fail" and "server down" in metrics["message"]

    InferenceServer.objects.filter(name="now-dead").update(enabled=False)
    disabled = client.post("/api/v1/servers/now-dead/check/")

    assert disabled.status_code == 409 and "'now-dead' is disabled" in disabled.json()["error"]["message"]
