"""Aliases (promote, roll back, history) and the audit log."""

import pytest
from django.utils import timezone

from modelhub.audit.models import AuditEvent
from modelhub.registry.models import AliasMove
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def put_alias(client, alias: str, version: int, model: str = "digits"):
    return client.put(f"/api/v1/models/{model}/aliases/{alias}/", {"version": version}, format="json")


def test_promote_then_roll_back_with_the_history_kept(admin_api, registered):
    registered("digits", versions=3)
    assert put_alias(admin_api, "production", 1).status_code == 200
    assert put_alias(admin_api, "staging", 3).status_code == 200
    response = put_alias(admin_api, "production", 2)
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert put_alias(admin_api, "production", 1).status_code == 200  # roll back: move it back

    aliases = admin_api.get("/api/v1/models/digits/aliases/").json()["results"]
    assert {a["name"]: a["version"] for a in aliases} == {"production": 1, "staging": 3}
    assert admin_api.get("/api/v1/models/digits/aliases/production/").json()["version"] == 1
    history = admin_api.get("/api/v1/models/digits/alias-history/?alias=production").json()["results"]
    assert [(h["from_version"], h["to_version"]) for h in history] == [(2, 1), (1, 2), (None, 1)]
    assert {h["moved_by"] for h in history} == {"token:ci"}
    versions = admin_api.get("/api/v1/models/digits/versions/").json()["results"]
    assert {v["number"]: v["aliases"] for v in versions} == {3: ["staging"], 2: [], 1: ["production"]}
    assert admin_api.get("/api/v1/models/digits/").json()["aliases"] == {"production": 1, "staging": 3}


def test_pointing_an_alias_where_it_already_points_changes_nothing(admin_api, registered):
    registered("digits")
    put_alias(admin_api, "production", 1)
    put_alias(admin_api, "production", 1)
    assert AliasMove.objects.count() == 1


def test_deleting_an_alias_keeps_its_history(admin_api, registered):
    registered("digits")
    put_alias(admin_api, "staging", 1)
    assert admin_api.delete("/api/v1/models/digits/aliases/staging/").status_code == 204
    assert admin_api.get("/api/v1/models/digits/aliases/staging/").status_code == 404
    assert admin_api.delete("/api/v1/models/digits/aliases/staging/").status_code == 404
    history = admin_api.get("/api/v1/models/digits/alias-history/").json()["results"]
    assert [(h["from_version"], h["to_version"]) for h in history] == [(1, None), (None, 1)]
    assert AuditEvent.objects.filter(action="alias.delete").exists()


@pytest.mark.parametrize(
    "alias, body, field, message",
    [
        ("production", {"version": 9}, "version", "model 'digits' has no version 9"),
        ("production", {"version": "1"}, "version", "valid integer"),
        ("production", {"version": 0}, "version", "greater than or equal to 1"),
        ("production", {}, "version", "required"),
        ("Production", {"version": 1}, "alias", "lowercase"),
        ("-x", {"version": 1}, "alias", "lowercase"),
    ],
)
def test_bad_alias_moves_are_400(admin_api, registered, alias, body, field, message):
    registered("digits")
    response = admin_api.put(f"/api/v1/models/digits/aliases/{alias}/", body, format="json")
    assert response.status_code == 400
    assert message in error_of(response)["fields"][field]
    assert not AliasMove.objects.exists()


def test_an_operator_may_promote_but_a_viewer_may_not(session_client, registered):
    registered("digits")
    assert put_alias(session_client("viewer"), "production", 1).status_code == 403
    assert put_alias(session_client("operator"), "production", 1).status_code == 200


# --- audit -------------------------------------------------------------------------


def test_every_api_write_is_audited_with_its_token(admin_api, registered, dead_server):
    registered("digits", versions=2)
    put_alias(admin_api, "production", 2)
    admin_api.post("/api/v1/models/digits/versions/2/deploy/", {"server": "dead"}, format="json")
    admin_api.post("/api/v1/servers/", {"name": "new", "base_url": "http://127.0.0.1:9"}, format="json")
    events = admin_api.get("/api/v1/audit/?source=api&limit=100").json()["results"]
    assert sorted(e["action"] for e in events) == [
        "alias.move",
        "deployment.deploy",
        "inferenceserver.create",
        "model.create",
        "version.register",
        "version.register",
    ]
    assert {(e["actor"], e["user"], e["remote_addr"]) for e in events} == {("token:ci", "ci", "127.0.0.1")}
    assert len({e["token_id"] for e in events}) == 1


def test_audit_filters(admin_api, registered):
    registered("digits")
    start = timezone.now()
    put_alias(admin_api, "production", 1)

    def actions(query: str) -> list[str]:
        return [e["action"] for e in admin_api.get(f"/api/v1/audit/?{query}").json()["results"]]

    assert actions("action=alias.move") == ["alias.move"]
    assert actions("action_prefix=version.") == ["version.register"]
    assert actions("object_type=registry.modelversion") == ["version.register"]
    assert actions(f"since={start.isoformat().replace('+00:00', 'Z')}") == ["alias.move"]
    assert "alias.move" not in actions(f"until={start.isoformat().replace('+00:00', 'Z')}")
    assert actions("actor=token:ci&ordering=created_at")[0] == "model.create"
    assert actions("actor=user:nobody") == []


@pytest.mark.parametrize(
    "query",
    ["since=yesterday", "since=2026-01-01", "until=2026-01-01T00:00:00", "since=2026-02-30T00:00:00Z", "source=email"],
)
def test_bad_audit_filters_are_400(admin_api, query):
    response = admin_api.get(f"/api/v1/audit/?{query}")
    assert response.status_code == 400
    assert error_of(response)["fields"]


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00Z", "2016-12-31T23:59:60Z"],
)
def test_extreme_but_valid_date_times_are_accepted(admin_api, value):
    assert admin_api.get("/api/v1/audit/", {"since": value}).status_code == 200


def test_a_viewer_may_read_the_audit_log_but_not_an_unauthenticated_caller(session_client):
    from rest_framework.test import APIClient

    assert session_client("viewer").get("/api/v1/audit/").status_code == 200
    assert APIClient().get("/api/v1/audit/").status_code == 401
