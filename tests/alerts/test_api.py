"""The alerts API: lists firing first, detail with flips and sends, acknowledge/silence audited, rules CRUD."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.test import APIClient

from modelhub.alerts.delivery import send_pending
from modelhub.alerts.models import Alert, AlertRule
from modelhub.api.tokens import issue_token
from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.models import Model
from tests.alerts.conftest import down, up

pytestmark = pytest.mark.django_db
T0 = timezone.now().replace(microsecond=0) - timedelta(hours=1)


def person(username: str, role: str) -> APIClient:
    user = User.objects.create_user(username)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = APIClient()
    client.force_login(user)
    return client


def token_client(scope: str, models=()) -> APIClient:
    user = User.objects.create_user(f"ci-{scope}-{User.objects.count()}")
    user.groups.add(Group.objects.get_or_create(name="admin")[0])
    _, text = issue_token(
        name=f"ci-{scope}",
        user=user,
        scopes=[scope],
        models=list(models),
        expires_at=None,
        actor=Actor(source=Source.CLI),
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {text}")
    return client


@pytest.fixture
def firing(world, rules, smtp):
    """gpu-1 went down and came back (resolved); digits' latency is above its SLO (firing)."""
    from modelhub.monitoring.models import CheckKind, Status
    from modelhub.monitoring.record import Result, record

    down(world, T0)
    up(world, T0 + timedelta(seconds=30))
    record(
        [
            Result(
                kind=CheckKind.LATENCY,
                status=Status.FAIL,
                server_id=world.server.pk,
                deployment_id=world.deployment.pk,
                version_id=world.version.pk,
                value=120.0,
                time=T0 + timedelta(seconds=40),
            )
        ]
    )
    send_pending(T0 + timedelta(seconds=60))
    return world


def test_list_shows_firing_first_and_filters(firing):
    client = person("viewer", "viewer")
    body = client.get("/api/v1/alerts/").json()
    assert [(a["rule"]["signal"], a["state"]) for a in body["results"]] == [
        ("latency_p95", "firing"),
        ("server_down", "resolved"),
    ]
    latency = body["results"][0]
    assert (latency["model"], latency["version"], latency["server"], latency["last_value"]) == (
        "digits",
        1,
        "gpu-1",
        120.0,
    )
    assert [a["state"] for a in client.get("/api/v1/alerts/?state=resolved").json()["results"]] == ["resolved"]
    assert client.get("/api/v1/alerts/?model=digits").json()["count"] == 1
    assert client.get("/api/v1/alerts/?server=gpu-1").json()["count"] == 2
    assert client.get("/api/v1/alerts/?severity=warning").json()["count"] == 1
    refused = client.get("/api/v1/alerts/?state=on-fire")
    assert refused.status_code == 400 and "on-fire" in refused.json()["error"]["message"]


def test_detail_has_the_flips_and_each_send_attempt(firing):
    alert = Alert.objects.get(rule__signal="server_down")
    body = person("viewer", "viewer").get(f"/api/v1/alerts/{alert.pk}/").json()
    assert [(f["from_state"], f["to_state"]) for f in body["flips"]] == [("firing", "resolved"), ("ok", "firing")]
    assert body["flips"][1]["notifications"][0]["status"] == "sent"
    assert body["flips"][1]["notifications"][0]["recipient"] == "owner@example.com"
    assert "connection refused" in body["flips"][1]["message"]


def test_a_restricted_token_sees_its_models_alerts_only(firing, tmp_path):
    other = Model.objects.create(name="faces")
    client = token_client("read", [other])
    assert client.get("/api/v1/alerts/").json()["count"] == 0  # gpu-1's alert is under no model
    alert = Alert.objects.get(rule__signal="latency_p95")
    assert client.get(f"/api/v1/alerts/{alert.pk}/").status_code == 404
    assert token_client("read", [alert.model]).get("/api/v1/alerts/").json()["count"] == 1


def test_acknowledge_is_for_operators_and_audited(firing):
    alert = Alert.objects.get(rule__signal="latency_p95")
    refused = person("viewer", "viewer").post(f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert refused.status_code == 403 and "deploy" in refused.json()["error"]["message"]
    answer = person("alice", "operator").post(f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert answer.status_code == 200 and answer.json()["acknowledged_by"] == "alice"
    event = AuditEvent.objects.get(action="alert.acknowledge")
    assert (event.actor, event.model_name, event.object_id) == ("user:alice", "digits", str(alert.pk))
    resolved = Alert.objects.get(rule__signal="server_down")
    not_firing = person("bob", "operator").post(f"/api/v1/alerts/{resolved.pk}/acknowledge/")
    assert not_firing.status_code == 400 and "not firing" in not_firing.json()["error"]["message"]


def test_silence_for_minutes_or_until_then_unsilence(firing):
    alert = Alert.objects.get(rule__signal="latency_p95")
    client = person("alice", "operator")
    answer = client.post(f"/api/v1/alerts/{alert.pk}/silence/", {"minutes": 30}, format="json")
    assert answer.status_code == 200
    until = alert.__class__.objects.get(pk=alert.pk).silenced_until
    assert timedelta(minutes=29) < until - timezone.now() <= timedelta(minutes=30)
    later = (timezone.now() + timedelta(hours=2)).isoformat()
    assert client.post(f"/api/v1/alerts/{alert.pk}/silence/", {"until": later}, format="json").status_code == 200
    both = client.post(f"/api/v1/alerts/{alert.pk}/silence/", {"until": later, "minutes": 5}, format="json")
    assert both.status_code == 400 and "not both" in both.json()["error"]["message"]
    past = client.post(f"/api/v1/alerts/{alert.pk}/silence/", {"until": "2001-01-01T00:00:00Z"}, format="json")
    assert past.status_code == 400 and "not in the future" in past.json()["error"]["message"]
    assert client.post(f"/api/v1/alerts/{alert.pk}/unsilence/").json()["silenced_until"] is None
    actions = list(
        AuditEvent.objects.filter(action__startswith="alert.").order_by("id").values_list("action", flat=True)
    )
    assert actions == ["alert.silence", "alert.silence", "alert.unsilence"]


def test_rules_crud_by_operators_audited(world, rules):
    client = person("alice", "operator")
    body = {"name": "slow digits", "signal": "latency_p95", "scope": "model", "model": "digits", "threshold": 100}
    created = client.post("/api/v1/alert-rules/", body, format="json")
    assert created.status_code == 201, created.json()
    rule_url = created.json()["url"]
    assert created.json()["model"] == "digits" and created.json()["notify_owners"] is True
    changed = client.patch(rule_url, {"threshold": 150, "emails": ["oncall@example.com"]}, format="json")
    assert changed.status_code == 200 and changed.json()["threshold"] == 150
    assert person("viewer", "viewer").patch(rule_url, {"threshold": 1}, format="json").status_code == 403
    assert client.delete(rule_url).status_code == 204
    actions = list(AuditEvent.objects.filter(action__startswith="alert_rule.").values_list("action", flat=True))
    assert sorted(actions) == ["alert_rule.create", "alert_rule.delete", "alert_rule.update"]


def test_rule_validation_names_the_field(world, rules):
    client = person("alice", "operator")
    no_series = client.post("/api/v1/alert-rules/", {"name": "cpu", "signal": "point", "threshold": 0.9}, format="json")
    assert no_series.status_code == 400 and "series" in no_series.json()["error"]["fields"]
    no_model = client.post(
        "/api/v1/alert-rules/", {"name": "m", "signal": "latency_p95", "scope": "model"}, format="json"
    )
    assert no_model.status_code == 400 and "model" in no_model.json()["error"]["fields"]
    bad_mail = client.post(
        "/api/v1/alert-rules/", {"name": "m", "signal": "server_down", "emails": ["not-an-address"]}, format="json"
    )
    assert bad_mail.status_code == 400 and "emails" in str(bad_mail.json()["error"]["fields"])
    # Names Postgres cannot hold (NUL) are unknown names, not a failed lookup (a 500).
    for field, value in (("server", "gh\x00ost"), ("groups", ["\x00M"])):
        body = {"name": "nul", "signal": "server_down", "scope": "server", field: value}
        answer = client.post("/api/v1/alert-rules/", body, format="json")
        assert answer.status_code == 400 and field in answer.json()["error"]["fields"], answer.content
    # What the schema refuses, the API refuses: an empty name is not "none", false is not 0.
    for field, value in (("model", ""), ("server", ""), ("threshold", False)):
        body = {"name": "strict", "signal": "latency_p95", field: value}
        answer = client.post("/api/v1/alert-rules/", body, format="json")
        assert answer.status_code == 400 and field in answer.json()["error"]["fields"], answer.content


def test_a_restricted_token_writes_its_models_rules_only(world, rules):
    client = token_client("deploy", [world.model])
    global_rule = client.post("/api/v1/alert-rules/", {"name": "g", "signal": "server_down"}, format="json")
    assert (
        global_rule.status_code == 403 and "cannot write global alert rules" in global_rule.json()["error"]["message"]
    )
    Model.objects.create(name="faces")
    other = client.post(
        "/api/v1/alert-rules/",
        {"name": "f", "signal": "latency_p95", "scope": "model", "model": "faces"},
        format="json",
    )
    assert other.status_code == 403 and "'faces'" in other.json()["error"]["message"]
    own = client.post(
        "/api/v1/alert-rules/",
        {"name": "d", "signal": "latency_p95", "scope": "model", "model": "digits"},
        format="json",
    )
    assert own.status_code == 201
    listed = client.get("/api/v1/alert-rules/").json()
    assert [r["name"] for r in listed["results"]] == ["d"]  # the global defaults are hidden
    default = AlertRule.objects.get(signal="server_down", scope="global")
    assert client.get(f"/api/v1/alert-rules/{default.pk}/").status_code == 404


def test_admin_rule_edits_go_through_the_service_and_alert_pages_are_read_only(firing, admin_client):
    rule = AlertRule.objects.get(signal="latency_p95")
    page = admin_client.get(f"/admin/alerts/alertrule/{rule.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data = {name: ("on" if value is True else value) for name, value in data.items() if value is not False}
    data.update({"threshold": "75", "emails": '["oncall@example.com"]', "groups": []})
    response = admin_client.post(f"/admin/alerts/alertrule/{rule.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    rule.refresh_from_db()
    assert rule.threshold == 75 and rule.emails == ["oncall@example.com"]
    assert AuditEvent.objects.filter(action="alert_rule.update", source="admin").exists()
    alert = Alert.objects.get(rule=rule)
    assert admin_client.get(f"/admin/alerts/alert/{alert.pk}/change/").status_code == 200
    assert admin_client.post(f"/admin/alerts/alert/{alert.pk}/change/", {"state": "ok"}).status_code == 403
    acted = admin_client.post(
        "/admin/alerts/alert/", {"action": "acknowledge_selected", "_selected_action": [alert.pk]}
    )
    assert acted.status_code == 302
    assert AuditEvent.objects.filter(action="alert.acknowledge", source="admin").exists()
    for page in ("alert", "flip", "notification", "alertrule"):
        assert admin_client.get(f"/admin/alerts/{page}/").status_code == 200


def test_the_overview_lists_firing_alerts(firing, admin_client):
    page = admin_client.get("/").content.decode()
    section = page.split('data-testid="overview-alerts"', 1)[1].split("</section>", 1)[0]
    assert "Latency p95 above SLO" in section and "digits v1 on gpu-1" in section
    assert "Server down" not in section  # resolved
