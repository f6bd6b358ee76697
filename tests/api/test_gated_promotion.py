"""PUT …/aliases/{alias}/ with "gate": true on a real Triton: 409 with the gates and their
figures (the alias stays, only check results are written), or the move, audited with the report."""

import pytest

from modelhub.audit.models import AuditEvent
from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.models import Alias, AliasMove, Model
from modelhub.registry.services import move_alias
from modelhub.serving.models import InferenceServer
from modelhub.serving.services import request_deploy

pytestmark = pytest.mark.django_db

GATES = ["loaded", "conforms", "latency", "accuracy"]


def put_alias(client, model: str, body: dict, alias: str = "production"):
    return client.put(f"/api/v1/models/{model}/aliases/{alias}/", body, format="json")


@pytest.fixture
def two_versions(registered, actor):
    """Model "gated" with v1 as production; v2 registered, not deployed."""
    model = registered("gated", versions=2)
    move_alias(model, "production", model.versions.get(number=1), actor)
    return model


def snapshot(model: Model) -> dict:
    return {
        "production": Alias.objects.get(model=model, name="production").version.number,
        "moves": AliasMove.objects.filter(model=model).count(),
        "audit": AuditEvent.objects.count(),
    }


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)  # the reconciler and the gates run outside the test's transaction
def test_refused_then_accepted_gated_promotion(two_versions, client_with, triton, actor):
    model = two_versions
    server = InferenceServer.objects.create(name="gated-local", base_url=triton.http_url)
    for number in (1, 2):
        request_deploy(model.versions.get(number=number), [server], actor)  # eager Celery: loaded on commit
    model.latency_slo_ms = 0.001  # no Triton answers that fast
    model.save()
    client = client_with("deploy")
    before = snapshot(model)

    refused = put_alias(client, "gated", {"version": 2, "gate": True})

    assert refused.status_code == 409, refused.json()
    body = refused.json()
    assert set(body) == {"error", "gates"}
    assert body["error"]["code"] == "gate_failed" and body["error"]["fields"] == {}
    assert "gate 'latency' failed: p95" in body["error"]["message"] and "SLO of 0.001 ms" in body["error"]["message"]
    assert [(g["name"], g["status"]) for g in body["gates"]] == [
        ("loaded", "passed"),
        ("conforms", "passed"),
        ("latency", "failed"),
        ("accuracy", "passed"),
    ]
    latency = body["gates"][2]
    assert latency["passed"] is False and latency["figures"]["slo_ms"] == 0.001 and latency["figures"]["p95_ms"] > 0
    assert body["gates"][0]["figures"]["server"] == "gated-local"
    assert snapshot(model) == before  # the alias stayed; no move, no audit row
    kinds = set(CheckResult.objects.filter(version__number=2, version__model=model).values_list("kind", flat=True))
    assert kinds == {CheckKind.MODEL_READY, CheckKind.SCHEMA, CheckKind.LATENCY}

    model.latency_slo_ms = 60_000
    model.save()
    accepted = put_alias(client, "gated", {"version": 2, "gate": True})

    assert accepted.status_code == 200, accepted.json()
    assert accepted.json()["version"] == 2
    after = snapshot(model)
    assert after["production"] == 2 and after["moves"] == before["moves"] + 1
    event = AuditEvent.objects.filter(action="alias.move", model_id=model.pk).latest("id")
    assert event.details["from_version"] == 1 and event.details["to_version"] == 2
    assert event.details["gate"]["passed"] is True
    assert [g["name"] for g in event.details["gate"]["gates"]] == GATES
    assert event.details["gate"]["gates"][2]["figures"]["slo_ms"] == 60_000

    again = put_alias(client, "gated", {"version": 2, "gate": True})  # a re-run of the CI job: nothing to gate

    assert again.status_code == 200 and snapshot(model) == after


def test_a_gated_promotion_of_a_version_that_is_not_loaded_is_refused_without_calling_triton(two_versions, client_with):
    client = client_with("deploy")
    before = snapshot(two_versions)

    refused = put_alias(client, "gated", {"version": 2, "gate": True})

    assert refused.status_code == 409
    body = refused.json()
    assert "gate 'loaded' failed: gated v2 is not loaded on any enabled server" in body["error"]["message"]
    assert [g["status"] for g in body["gates"]] == ["failed", "not_run", "not_run", "not_run"]
    assert snapshot(two_versions) == before
    assert not CheckResult.objects.exists()


def test_without_gate_the_alias_moves_as_before(two_versions, client_with):
    response = put_alias(client_with("deploy"), "gated", {"version": 2})

    assert response.status_code == 200
    assert Alias.objects.get(model=two_versions, name="production").version.number == 2
    assert "gate" not in AuditEvent.objects.filter(action="alias.move").latest("id").details


@pytest.mark.parametrize("gate", ["yes", 1, None])
def test_gate_must_be_a_boolean(two_versions, client_with, gate):
    response = put_alias(client_with("deploy"), "gated", {"version": 2, "gate": gate})

    assert response.status_code == 400
    assert "gate" in response.json()["error"]["fields"]


def test_gated_promotion_needs_the_deploy_scope_and_the_model(two_versions, registered, client_with):
    registered("other")

    assert put_alias(client_with("read"), "gated", {"version": 2, "gate": True}).status_code == 403
    restricted = client_with("deploy", models=["other"])
    assert put_alias(restricted, "gated", {"version": 2, "gate": True}).status_code == 404
