"""The alert pages: list and detail for every role; acknowledge, silence and unsilence
for operators, audited as UI writes; alert rules created, edited and deleted through
the same services and model rules as the API; alert emails link to these pages."""

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from modelhub.alerts.links import alert_url, target_url
from modelhub.alerts.models import Alert, AlertRule, AlertState, Flip, Notification, NotificationStatus
from modelhub.alerts.services import create_rule
from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent, Source
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, InferenceServer
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db

SMTP_ERROR = "(550, b'5.1.1 <oncall@example.com>: Recipient address rejected: User unknown')"


@dataclass
class World:
    server: InferenceServer
    deployment: Deployment
    server_down: Alert  # firing, on the server
    not_ready: Alert  # firing, warning, on the deployment
    accuracy: Alert  # resolved, on the version
    flip: Flip  # the server alert's firing flip, its mail failed once


@pytest.fixture
def world(tmp_path) -> World:
    actor = Actor(source=Source.CLI)
    version = register_upload(
        "digits", make_zip(tmp_path / "d.zip", {"1/model.py": doubler_source()}), DOUBLER_MANIFEST, actor, create=True
    ).version
    server = InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")
    deployment = Deployment.objects.create(version=version, server=server)
    now = timezone.now()

    def rule(name, signal, severity="critical"):
        return create_rule(actor, name=name, signal=signal, severity=severity)

    server_down = Alert.objects.create(
        rule=rule("Server down", "server_down"),
        target=f"server:{server.pk}",
        target_label="gpu-1",
        server=server,
        state=AlertState.FIRING,
        since=now - timedelta(minutes=5),
        last_value=0.0,
        last_message="server gpu-1 (http://127.0.0.1:9): live: connection refused",
    )
    not_ready = Alert.objects.create(
        rule=rule("Model not ready", "model_not_ready", "warning"),
        target=f"deployment:{deployment.pk}",
        target_label="digits v1 on gpu-1",
        server=server,
        deployment=deployment,
        version=version,
        model=version.model,
        state=AlertState.FIRING,
        since=now - timedelta(minutes=2),
        last_message="Request for unknown model: 'digits' version 1 is not ready (reason: unloaded)",
    )
    accuracy = Alert.objects.create(
        rule=rule("Accuracy below threshold", "accuracy_below_threshold", "warning"),
        target=f"version:{version.pk}",
        target_label="digits v1",
        version=version,
        model=version.model,
        state=AlertState.RESOLVED,
        since=now - timedelta(hours=1),
    )
    flip = Flip.objects.create(
        alert=server_down,
        from_state=AlertState.OK,
        to_state=AlertState.FIRING,
        value=0.0,
        message="live: connection refused",
        created_at=now - timedelta(minutes=5),
        processed=now,
    )
    Notification.objects.create(
        flip=flip,
        recipient="oncall@example.com",
        status=NotificationStatus.FAILED,
        error=SMTP_ERROR,
        retry_at=now + timedelta(minutes=10),
    )
    return World(server, deployment, server_down, not_ready, accuracy, flip)


def rows(response) -> list[str]:
    """The data-alert ids of the alert rows on a list page, in order."""
    return re.findall(r'data-testid="alert-row" data-state="\w+" data-alert="(\d+)"', response.content.decode())


def ui_audit(action: str):
    return AuditEvent.objects.filter(action=action, source=Source.UI)


# --- the alert list -------------------------------------------------------------------------


def test_the_list_shows_firing_alerts_with_their_message_and_target_link(client_as, world):
    response = client_as("viewer").get(reverse("ui:alert-list"))
    assert response.status_code == 200
    assert set(rows(response)) == {str(world.server_down.pk), str(world.not_ready.pk)}  # firing by default
    page = response.content.decode()
    assert "connection refused" in page and "reason: unloaded" in page  # the check's message
    assert 'href="/servers/gpu-1/"' in page
    assert f'href="/deployments/{world.deployment.pk}/"' in page
    assert 'data-state="firing"' in page and 'data-state="resolved"' not in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"state": "resolved"}, ["accuracy"]),
        ({"state": "all", "severity": "warning"}, ["not_ready", "accuracy"]),  # firing first
        ({"state": "all", "target": "server"}, ["server_down"]),
        ({"state": "all", "target": "version"}, ["accuracy"]),
    ],
)
def test_the_list_filters_by_state_severity_and_target_kind(client_as, world, query, expected):
    response = client_as("viewer").get(reverse("ui:alert-list"), query)
    assert rows(response) == [str(getattr(world, name).pk) for name in expected]


def test_the_list_filters_by_rule(client_as, world):
    response = client_as("viewer").get(reverse("ui:alert-list"), {"state": "all", "rule": world.not_ready.rule_id})
    assert rows(response) == [str(world.not_ready.pk)]


def test_an_empty_firing_list_says_nothing_is_firing(client_as, world):
    Alert.objects.filter(state=AlertState.FIRING).update(state=AlertState.RESOLVED)
    response = client_as("viewer").get(reverse("ui:alert-list"))
    assert rows(response) == []
    assert "Nothing firing" in response.content.decode()


def test_the_list_paginates_in_constant_queries(client_as, world, django_assert_max_num_queries):
    server_down = world.server_down
    Alert.objects.bulk_create(
        Alert(
            rule=server_down.rule,
            target=f"server:{1000 + i}",
            target_label=f"gone-{i}",
            state=AlertState.FIRING,
            since=server_down.since,
        )
        for i in range(60)
    )
    client = client_as("operator")
    with django_assert_max_num_queries(12):
        first = client.get(reverse("ui:alert-list"))
    assert len(rows(first)) == 50 and "page 1 of 2" in first.content.decode()
    assert len(rows(client.get(reverse("ui:alert-list"), {"page": 2}))) == 12


def test_the_viewer_sees_no_action_forms_and_the_operator_does(client_as, world):
    pk = world.server_down.pk
    viewer = client_as("viewer").get(reverse("ui:alert-list")).content.decode()
    operator = client_as("operator").get(reverse("ui:alert-list")).content.decode()
    for testid in (f'data-testid="ack-{pk}"', f'data-testid="silence-{pk}"'):
        assert testid not in viewer
        assert testid in operator
    assert reverse("ui:alert-acknowledge", args=[pk]) not in viewer


def test_the_pages_send_anonymous_callers_to_login_and_refuse_people_without_a_role(client_as, world):
    for url in (reverse("ui:alert-list"), reverse("ui:alert-detail", args=[world.server_down.pk])):
        anonymous = Client().get(url)
        assert anonymous.status_code == 302 and reverse("ui:login") in anonymous["Location"]
        refused = client_as(None).get(url)
        assert refused.status_code == 403 and b"read" in refused.content


# --- the alert's page -----------------------------------------------------------------------


def test_the_detail_shows_flips_and_a_failed_notifications_smtp_error(client_as, world):
    response = client_as("viewer").get(reverse("ui:alert-detail", args=[world.server_down.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('data-testid="flip-row"') == 1
    assert 'data-testid="notification-row" data-status="failed"' in page
    assert "oncall@example.com" in page
    assert "Recipient address rejected: User unknown" in page  # the SMTP server's words
    assert "connection refused" in page
    assert 'href="/servers/gpu-1/"' in page and "Server down" in page  # target and rule
    assert 'data-testid="ack-' not in page  # a viewer


def test_the_detail_of_a_missing_alert_is_404(client_as, world):
    assert client_as("viewer").get(reverse("ui:alert-detail", args=[999999])).status_code == 404


# --- acknowledge, silence, unsilence --------------------------------------------------------


def test_an_operator_acknowledges_and_goes_back_to_the_list(client_as, world):
    pk = world.server_down.pk
    client = client_as("operator")
    back = reverse("ui:alert-list") + "?state=all"
    response = client.post(reverse("ui:alert-acknowledge", args=[pk]), {"next": back}, follow=True)
    assert response.redirect_chain == [(back, 302)]
    assert "Acknowledged Server down on gpu-1" in response.content.decode()
    alert = Alert.objects.get(pk=pk)
    assert alert.acknowledged_by == client.person and alert.acknowledged_at is not None
    assert ui_audit("alert.acknowledge").filter(object_id=str(pk), user=client.person).count() == 1


def test_acknowledging_a_resolved_alert_says_why_and_changes_nothing(client_as, world):
    pk = world.accuracy.pk
    response = client_as("operator").post(reverse("ui:alert-acknowledge", args=[pk]), follow=True)
    assert f"alert {pk} is resolved, not firing: nothing to acknowledge" in response.content.decode()
    assert Alert.objects.get(pk=pk).acknowledged_at is None
    assert not ui_audit("alert.acknowledge").exists()


def test_a_foreign_next_is_ignored(client_as, world):
    pk = world.server_down.pk
    response = client_as("operator").post(
        reverse("ui:alert-acknowledge", args=[pk]), {"next": "https://evil.example.com/"}
    )
    assert response["Location"] == reverse("ui:alert-detail", args=[pk])


@pytest.mark.parametrize("duration", ["1h", "4h", "24h"])
def test_an_operator_silences_for_a_duration(client_as, world, duration):
    pk = world.server_down.pk
    before = timezone.now()
    response = client_as("operator").post(reverse("ui:alert-silence", args=[pk]), {"duration": duration})
    assert response.status_code == 302
    hours = int(duration[:-1])
    until = Alert.objects.get(pk=pk).silenced_until
    assert before + timedelta(hours=hours) <= until <= timezone.now() + timedelta(hours=hours)
    assert ui_audit("alert.silence").filter(object_id=str(pk)).count() == 1


def test_an_operator_silences_until_a_time_then_unsilences(client_as, world):
    pk = world.server_down.pk
    client = client_as("operator")
    until = (timezone.now() + timedelta(days=2)).replace(second=0, microsecond=0)
    response = client.post(
        reverse("ui:alert-silence", args=[pk]), {"until": until.strftime("%Y-%m-%dT%H:%M")}, follow=True
    )
    assert Alert.objects.get(pk=pk).silenced_until == until
    assert "Silenced Server down on gpu-1 until" in response.content.decode()
    assert f'data-testid="unsilence-{pk}"' in response.content.decode()

    response = client.post(reverse("ui:alert-unsilence", args=[pk]), follow=True)
    assert Alert.objects.get(pk=pk).silenced_until is None
    assert "no longer silenced" in response.content.decode()
    assert ui_audit("alert.unsilence").filter(object_id=str(pk)).count() == 1


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"duration": "3 weeks"}, "&#x27;3 weeks&#x27; is not a duration"),
        ({"until": "2020-01-01T10:00"}, "2020-01-01 10:00 is not in the future"),
        ({"duration": "200d"}, "silence for at most 90 days"),
        ({}, "give either a duration or an until time"),
        ({"until": "tomorrow"}, "until: Enter a valid date/time"),
    ],
)
def test_a_bad_silence_says_what_is_wrong_and_silences_nothing(client_as, world, data, error):
    pk = world.server_down.pk
    response = client_as("operator").post(reverse("ui:alert-silence", args=[pk]), data, follow=True)
    assert response.status_code == 200
    assert "Not silenced:" in response.content.decode() and error in response.content.decode()
    assert Alert.objects.get(pk=pk).silenced_until is None
    assert not AuditEvent.objects.filter(action="alert.silence").exists()


@pytest.mark.parametrize("action", ["ui:alert-acknowledge", "ui:alert-silence", "ui:alert-unsilence"])
def test_a_viewer_cannot_act_on_an_alert(client_as, world, action):
    pk = world.server_down.pk
    Alert.objects.filter(pk=pk).update(silenced_until=timezone.now() + timedelta(hours=1))
    before = Alert.objects.values().get(pk=pk)
    response = client_as("viewer").post(reverse(action, args=[pk]), {"duration": "1h"})
    assert response.status_code == 403 and b"deploy" in response.content
    assert Alert.objects.values().get(pk=pk) == before
    assert not AuditEvent.objects.filter(action__startswith="alert.").exists()


def test_actions_refuse_get(client_as, world):
    response = client_as("operator").get(reverse("ui:alert-acknowledge", args=[world.server_down.pk]))
    assert response.status_code == 405
    assert Alert.objects.get(pk=world.server_down.pk).acknowledged_at is None


# --- alert rules ----------------------------------------------------------------------------

RULE = {
    "name": "digits slow",
    "signal": "latency_p95",
    "scope": "model",
    "model": "digits",
    "comparison": "gt",
    "threshold": "120",
    "for_seconds": "60",
    "severity": "warning",
    "notify_owners": "on",
    "emails": "oncall@example.com, sre@example.com",
    "min_interval_s": "300",
    "enabled": "on",
}


def test_the_rule_list_shows_rules_and_only_operators_get_the_forms(client_as, world):
    viewer = client_as("viewer").get(reverse("ui:rule-list"))
    assert viewer.status_code == 200
    assert viewer.content.decode().count('data-testid="rule-row"') == AlertRule.objects.count()
    assert "Model not ready" in viewer.content.decode()
    assert reverse("ui:rule-create") not in viewer.content.decode()
    assert reverse("ui:rule-delete", args=[world.server_down.rule_id]) not in viewer.content.decode()
    operator = client_as("operator").get(reverse("ui:rule-list")).content.decode()
    assert reverse("ui:rule-create") in operator
    assert reverse("ui:rule-delete", args=[world.server_down.rule_id]) in operator


def test_an_operator_creates_a_model_rule(client_as, world):
    response = client_as("operator").post(reverse("ui:rule-create"), RULE, follow=True)
    assert response.redirect_chain == [(reverse("ui:rule-list"), 302)]
    assert "Alert rule &#x27;digits slow&#x27; created" in response.content.decode()
    rule = AlertRule.objects.get(name="digits slow")
    assert (rule.scope, rule.model.name, rule.threshold, rule.severity) == ("model", "digits", 120.0, "warning")
    assert rule.emails == ["oncall@example.com", "sre@example.com"]
    assert ui_audit("alert_rule.create").filter(object_id=str(rule.pk)).count() == 1


@pytest.mark.parametrize(
    ("changes", "field", "error"),
    [
        ({"model": ""}, "model", "a model rule names its model"),
        ({"scope": "global"}, "model", "only a model rule names a model (this one is global)"),
        ({"signal": "point"}, "series", "a point rule names its series"),
        ({"emails": "oncall@example.com, not-an-address"}, "emails", "item 1: &#x27;not-an-address&#x27;"),
        ({"severity": "apocalyptic"}, "severity", "Select a valid choice"),
        ({"threshold": "fast"}, "threshold", "Enter a number"),
    ],
)
def test_a_bad_rule_names_the_field_and_writes_nothing(client_as, world, changes, field, error):
    response = client_as("operator").post(reverse("ui:rule-create"), {**RULE, **changes})
    assert response.status_code == 400
    page = response.content.decode()
    assert f'data-testid="error-{field}"' in page and error in page
    assert not AlertRule.objects.filter(name="digits slow").exists()
    assert not ui_audit("alert_rule.create").exists()


def test_an_operator_edits_a_rule(client_as, world):
    rule = world.server_down.rule
    client = client_as("operator")
    form = client.get(reverse("ui:rule-edit", args=[rule.pk]))
    assert form.status_code == 200 and 'value="Server down"' in form.content.decode()
    data = {
        "name": "Server really down",
        "signal": "server_down",
        "scope": "server",
        "server": "gpu-1",
        "comparison": "gt",
        "for_seconds": "30",
        "severity": "critical",
        "emails": "",
        "min_interval_s": "600",
        "reminder_interval_s": "3600",
        "enabled": "on",
    }
    response = client.post(reverse("ui:rule-edit", args=[rule.pk]), data)
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.scope, rule.server, rule.for_seconds) == ("Server really down", "server", world.server, 30)
    assert rule.notify_owners is False and rule.reminder_interval_s == 3600
    assert ui_audit("alert_rule.update").filter(object_id=str(rule.pk)).count() == 1


def test_a_bad_edit_keeps_the_rule(client_as, world):
    rule = world.server_down.rule
    response = client_as("operator").post(
        reverse("ui:rule-edit", args=[rule.pk]), {"name": "x", "signal": "server_down", "scope": "server"}
    )
    assert response.status_code == 400 and "a server rule names its server" in response.content.decode()
    rule.refresh_from_db()
    assert (rule.name, rule.scope) == ("Server down", "global")


def test_an_operator_deletes_a_rule_with_its_alerts(client_as, world):
    rule_pk = world.server_down.rule_id
    response = client_as("operator").post(reverse("ui:rule-delete", args=[rule_pk]), follow=True)
    assert response.redirect_chain == [(reverse("ui:rule-list"), 302)]
    assert "deleted" in response.content.decode()
    assert not AlertRule.objects.filter(pk=rule_pk).exists()
    assert not Alert.objects.filter(pk=world.server_down.pk).exists()
    assert ui_audit("alert_rule.delete").filter(object_id=str(rule_pk)).count() == 1


def test_a_viewer_cannot_write_rules(client_as, world):
    rule = world.server_down.rule
    rules = AlertRule.objects.count()
    viewer = client_as("viewer")
    assert viewer.get(reverse("ui:rule-create")).status_code == 403
    assert viewer.post(reverse("ui:rule-create"), RULE).status_code == 403
    assert viewer.post(reverse("ui:rule-edit", args=[rule.pk]), {**RULE, "name": "x"}).status_code == 403
    assert viewer.post(reverse("ui:rule-delete", args=[rule.pk])).status_code == 403
    assert AlertRule.objects.count() == rules and AlertRule.objects.get(pk=rule.pk).name == "Server down"
    assert not AuditEvent.objects.filter(action__startswith="alert_rule.", source=Source.UI).exists()


# --- links in alert emails ------------------------------------------------------------------


def test_email_links_open_the_ui_pages_for_a_signed_in_viewer(client_as, world, settings):
    settings.MODELHUB_BASE_URL = "https://modelhub.example.com/"
    expected = {
        target_url(world.server_down): "https://modelhub.example.com/servers/gpu-1/",
        target_url(world.not_ready): f"https://modelhub.example.com/deployments/{world.deployment.pk}/",
        target_url(world.accuracy): "https://modelhub.example.com/models/digits/versions/1/",
        alert_url(world.server_down): f"https://modelhub.example.com/alerts/{world.server_down.pk}/",
    }
    assert list(expected) == list(expected.values())
    viewer = client_as("viewer")
    for url in expected:
        response = viewer.get(url.removeprefix("https://modelhub.example.com"))
        assert response.status_code == 200, url


def test_a_model_alert_links_to_the_model_and_a_gone_target_to_the_alert(world):
    alert = world.accuracy
    alert.version = None
    assert target_url(alert).endswith("/models/digits/")
    alert.model = None
    assert target_url(alert) == alert_url(alert)
