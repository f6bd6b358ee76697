"""Flips become emails, received by a real SMTP server: one per transition, whatever runs twice."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from modelhub.alerts import tasks
from modelhub.alerts.delivery import send_pending
from modelhub.alerts.models import Alert, Flip, Notification
from modelhub.alerts.run_now import evaluate_and_send
from modelhub.alerts.services import acknowledge, silence
from modelhub.audit.models import AuditEvent
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result, record
from modelhub.serving.models import InferenceServer
from tests.alerts.conftest import down, up

T0 = timezone.now().replace(microsecond=0)


def body(message, subtype: str) -> str:
    return message.get_body(preferencelist=(subtype,)).get_content()


@pytest.mark.django_db
def test_alert_and_recovery_mails_say_what_broke_since_when_and_link_to_it(world, rules, smtp):
    down(world, T0)
    assert send_pending(T0).sent == 1
    up(world, T0 + timedelta(seconds=30))
    assert send_pending(T0 + timedelta(seconds=30)).sent == 1
    assert send_pending(T0 + timedelta(hours=1)).sent == 0  # nothing left to send

    alert_mail, recovery = smtp.messages
    assert alert_mail["To"] == "owner@example.com"
    assert alert_mail["Subject"] == "[ModelHub] FIRING critical: Server down - gpu-1"
    assert recovery["Subject"] == "[ModelHub] RESOLVED: Server down - gpu-1"
    link = "https://modelhub.example.com/servers/gpu-1/"
    for part in (body(alert_mail, "plain"), body(alert_mail, "html")):
        assert "gpu-1" in part
        assert "connection refused" in part  # Triton's (the client's) message
        assert T0.strftime("%Y-%m-%d %H:%M:%S") in part  # since when
        assert "0.0" in part  # the last value
        assert link in part
    assert f"https://modelhub.example.com/alerts/{Alert.objects.get().pk}/" in body(alert_mail, "plain")
    assert "Firing since" in body(recovery, "plain") and "resolved at" in body(recovery, "plain")
    assert list(Notification.objects.values_list("status", flat=True)) == ["sent", "sent"]


@pytest.mark.django_db
def test_a_deployment_alert_names_server_model_and_version(world, rules, smtp):
    rows = record(
        [
            Result(
                kind=CheckKind.MODEL_READY,
                status=Status.FAIL,
                server_id=world.server.pk,
                deployment_id=world.deployment.pk,
                version_id=world.version.pk,
                message="Request for unknown model: 'digits' version 1 is not ready (reason: unloaded)",
                time=T0,
            )
        ]
    )
    evaluate_and_send(rows, T0)  # the rows were evaluated by record(): evaluating again changes nothing
    (mail,) = smtp.messages
    text = body(mail, "plain")
    assert "Server:  gpu-1" in text and "Model:   digits v1" in text
    assert "reason: unloaded" in text
    assert f"https://modelhub.example.com/deployments/{world.deployment.pk}/" in text


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_senders_send_each_transition_once(world, rules, smtp):
    servers = [
        InferenceServer.objects.create(name=f"s{i}", base_url=f"http://127.0.0.1:{20000 + i}") for i in range(10)
    ]
    rules["server_down"].emails = ["oncall@example.com"]
    rules["server_down"].save()
    # Committed, so the flips' on_commit queued the (eager) task, which sent them: one mail per server.
    record(
        [Result(kind=CheckKind.SERVER_HEALTH, status=Status.FAIL, server_id=s.pk, value=0.0, time=T0) for s in servers]
    )
    assert len(smtp.messages) == 10
    # Now make them unsent again and let two workers race for them.
    Flip.objects.update(processed=None)
    Notification.objects.all().delete()
    Alert.objects.update(notified_at=None, notified_state="")
    smtp.messages.clear()
    barrier = threading.Barrier(2)
    errors = []

    def worker():
        try:
            barrier.wait()
            send_pending(T0)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(m["Subject"].rsplit(" - ", 1)[1] for m in smtp.messages) == sorted(s.name for s in servers)
    assert Notification.objects.filter(status="sent").count() == 10 == Notification.objects.count()


@pytest.mark.django_db
def test_a_retried_task_sends_nothing_twice(world, rules, smtp):
    down(world, T0)
    tasks.send_notifications.apply()
    tasks.send_notifications.apply()  # the same task again (a retry, a second worker)
    assert len(smtp.messages) == 1
    assert Flip.objects.get().processed is not None


@pytest.mark.django_db
def test_flapping_sends_no_storm_and_ends_on_the_last_state(world, rules, smtp):
    # min_interval_s is 300 by default: down, up, down, up, down within two minutes.
    for i in range(5):
        (down if i % 2 == 0 else up)(world, T0 + timedelta(seconds=30 * i))
        send_pending(T0 + timedelta(seconds=30 * i + 1))
    assert smtp.subjects() == [
        "[ModelHub] FIRING critical: Server down - gpu-1",
        "[ModelHub] RESOLVED: Server down - gpu-1",
    ]
    assert Flip.objects.filter(processed__isnull=True).count() == 1  # the last firing waits out the interval
    # The recovery went out at T0+31s: the next firing mail may leave 300 s later.
    assert send_pending(T0 + timedelta(seconds=330)).held == 1
    send_pending(T0 + timedelta(seconds=331))
    assert len(smtp.messages) == 3 and smtp.messages[2]["Subject"].startswith("[ModelHub] FIRING")
    statuses = sorted(Notification.objects.values_list("status", flat=True))
    assert statuses == ["sent", "sent", "sent", "superseded", "unchanged"]


@pytest.mark.django_db
def test_a_silenced_alert_sends_nothing_and_says_so(world, rules, smtp, actor):
    down(world, T0)
    send_pending(T0)
    alert = Alert.objects.get()
    silence(alert, timezone.now() + timedelta(hours=1), actor)
    up(world, T0 + timedelta(seconds=10))
    send_pending(T0 + timedelta(seconds=10))
    assert len(smtp.messages) == 1
    silenced = Notification.objects.get(status="silenced")
    assert "silenced until" in silenced.error and silenced.flip.to_state == "resolved"
    assert AuditEvent.objects.filter(action="alert.silence", model_id=None).exists()


@pytest.mark.django_db
def test_reminders_while_firing_stop_when_acknowledged(world, rules, smtp, actor):
    rule = rules["server_down"]
    rule.reminder_interval_s = 600
    rule.save()
    down(world, T0)
    send_pending(T0)
    send_pending(T0 + timedelta(seconds=599))
    assert len(smtp.messages) == 1
    send_pending(T0 + timedelta(seconds=600))
    send_pending(T0 + timedelta(seconds=601))  # the same due reminder is written once
    assert len(smtp.messages) == 2 and smtp.messages[1]["Subject"].startswith("[ModelHub] STILL FIRING")
    acknowledge(Alert.objects.get(), actor)
    send_pending(T0 + timedelta(seconds=2000))
    assert len(smtp.messages) == 2
    event = AuditEvent.objects.get(action="alert.acknowledge")
    assert event.actor == "cli" and event.details["target"] == "gpu-1"


@pytest.mark.django_db
def test_an_smtp_failure_is_recorded_and_retried_once_sent_never_again(world, rules, smtp, settings):
    settings.EMAIL_PORT = smtp.controller.port + 1 if smtp.controller.port < 65535 else 1  # nothing listens there
    down(world, T0)
    send_pending(T0)
    failed = Notification.objects.get()
    assert failed.status == "failed" and failed.retry_at == T0 + timedelta(seconds=30)
    assert "Connection refused" in failed.error or "ConnectionRefused" in failed.error
    send_pending(T0 + timedelta(seconds=10))  # before the back-off: nothing
    assert Notification.objects.count() == 1
    settings.EMAIL_PORT = smtp.controller.port  # the mail server is back
    send_pending(T0 + timedelta(seconds=31))
    send_pending(T0 + timedelta(seconds=3600))
    rows = list(Notification.objects.order_by("id").values_list("attempt", "status"))
    assert rows == [(1, "failed"), (2, "sent")]
    assert len(smtp.messages) == 1


@pytest.mark.django_db
def test_attempts_are_bounded(world, rules, smtp, settings):
    settings.EMAIL_PORT = 1  # refused
    settings.ALERT_MAX_ATTEMPTS = 3
    down(world, T0)
    for minutes in range(0, 30, 2):
        send_pending(T0 + timedelta(minutes=minutes))
    rows = list(Notification.objects.order_by("id").values_list("attempt", "status", "retry_at"))
    assert [(a, s) for a, s, _ in rows] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert rows[-1][2] is None and "no attempts left" in Notification.objects.get(attempt=3).error


@pytest.mark.django_db
def test_recipients_are_owners_addresses_groups_and_superusers_when_nobody_else(world, rules, smtp, settings):
    from django.contrib.auth.models import Group, User

    from modelhub.alerts.delivery import recipients

    down(world, T0)
    alert = Alert.objects.select_related("rule").get()
    assert recipients(alert) == ["owner@example.com"]  # gpu-1 is meant to serve digits, whose owner this is
    oncall = Group.objects.create(name="oncall")
    User.objects.create_user("pager", email="pager@example.com").groups.add(oncall)
    alert.rule.groups.add(oncall)
    alert.rule.emails = ["team@example.com", "OWNER@example.com"]
    settings.ALERT_EMAILS = ["all@example.com"]
    assert recipients(alert) == ["all@example.com", "owner@example.com", "pager@example.com", "team@example.com"]
    # A server nothing is meant to run on, a rule naming nobody: the superusers are told.
    User.objects.create_superuser("root", email="root@example.com")
    alert.rule.groups.clear()
    alert.rule.emails = []
    settings.ALERT_EMAILS = []
    world.deployment.desired = "unloaded"
    world.deployment.save()
    assert recipients(alert) == ["root@example.com"]
