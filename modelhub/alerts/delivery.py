"""Sending: unprocessed flips -> one email per recipient, claimed so that each goes once.

A flip is claimed by `UPDATE … SET processed = now WHERE id = … AND processed IS
NULL`: of two workers (or a task and its retry) only the one whose update counted
a row sends. Each attempt is a Notification row written before the send; a
failed one carries `retry_at`, claimed the same way by the next run, which makes
the next attempt as a new row. A flip or a retry that raises is logged and the
run goes on with the others. An attempt whose worker died mid-send (its row still
"sending", its lock gone with the worker's connection) is failed and retried.

Flapping: a firing flip waits until `min_interval_s` after the alert's last mail;
a flip made in that quiet period and overtaken by a newer one is superseded, and
a state the recipients were already told is not told again.
"""

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from modelhub.alerts import emails
from modelhub.alerts.models import Alert, AlertState, Flip, Notification, NotificationStatus
from modelhub.alerts.state import remind
from modelhub.serving.locks import named_lock
from modelhub.serving.models import Deployment, DesiredState

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class Report:
    sent: int = 0
    failed: int = 0
    held: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def recipients(alert: Alert) -> list[str]:
    """Who hears about `alert`: the rule's owners, addresses and groups, and MODELHUB_ALERT_EMAILS;
    when that is nobody, the superusers."""
    rule = alert.rule
    users = get_user_model().objects.filter(is_active=True).exclude(email="")
    found: list[str] = []
    if rule.notify_owners:
        if alert.model_id:
            found += users.filter(owned_models=alert.model_id).values_list("email", flat=True)
        elif alert.server_id:
            # A server's trouble is the trouble of every model meant to run there.
            on_server = Deployment.objects.filter(server_id=alert.server_id, desired=DesiredState.LOADED)
            found += users.filter(owned_models__versions__deployments__in=on_server).values_list("email", flat=True)
    found += rule.emails or []
    found += users.filter(groups__alert_rules=rule).values_list("email", flat=True)
    found += settings.ALERT_EMAILS
    if not found:
        # Nobody named: the administrators hear it rather than nobody (a fresh install, the demo).
        found += users.filter(is_superuser=True).values_list("email", flat=True)
    unique: dict[str, str] = {}
    for address in found:
        unique.setdefault(address.strip().lower(), address.strip())
    return sorted(unique.values())


def backoff(attempt: int) -> timedelta:
    """Wait before attempt `attempt + 1`: doubling from ALERT_RETRY_BACKOFF_S, capped at an hour."""
    return timedelta(seconds=min(settings.ALERT_RETRY_BACKOFF_S * 2 ** (attempt - 1), 3600))


def _lock_name(flip_id: int, recipient: str) -> str:
    return f"alerts.notify:{flip_id}:{recipient.lower()}"


@contextmanager
def _sending(flip_id: int, recipient: str):
    """Held while one attempt for (flip, recipient) is written and sent.

    The lock lives on the sender's database connection (a file lock on SQLite), so it
    goes when its worker dies: a SENDING row whose lock is free was interrupted.
    A recovery holds it only for an UPDATE, so waiting a moment for it is enough.
    """
    name = _lock_name(flip_id, recipient)
    deadline = time.monotonic() + 5
    while True:
        with named_lock(name) as held:
            if held or time.monotonic() > deadline:
                if not held:
                    log.warning("sending to %s for flip %s without its lock (held too long)", recipient, flip_id)
                yield
                return
        time.sleep(0.05)


def attempt(flip: Flip, recipient: str, number: int, now: datetime, report: Report) -> Notification:
    with _sending(flip.pk, recipient):
        return _attempt(flip, recipient, number, now, report)


def _attempt(flip: Flip, recipient: str, number: int, now: datetime, report: Report) -> Notification:
    note = Notification.objects.create(
        flip=flip, recipient=recipient, attempt=number, status=NotificationStatus.SENDING
    )
    try:
        emails.send(flip, recipient)
    except Exception as exc:  # the backend's error, whatever it is, is the attempt's record
        last = number >= settings.ALERT_MAX_ATTEMPTS
        note.status = NotificationStatus.FAILED
        note.error = f"{type(exc).__name__}: {exc}"[:2000] + (" (no attempts left)" if last else "")
        note.retry_at = None if last else now + backoff(number)
        note.save(update_fields=["status", "error", "retry_at"])
        log.warning("alert mail to %s for flip %s failed (attempt %s): %s", recipient, flip.pk, number, note.error)
        report.failed += 1
    else:
        note.status = NotificationStatus.SENT
        note.sent_at = timezone.now()
        note.save(update_fields=["status", "sent_at"])
        report.sent += 1
    return note


def _mark(flip: Flip, status: str, report: Report, error: str = "") -> None:
    Notification.objects.create(flip=flip, status=status, error=error)
    report.skip(status)


def _newer_flip(flip: Flip) -> bool:
    return Flip.objects.filter(alert_id=flip.alert_id, reminder=False, pk__gt=flip.pk).exists()


def _quiet_until(alert: Alert) -> datetime | None:
    """Until when a new firing of `alert` waits: the minimum interval after its last mail."""
    if alert.notified_at is None:
        return None
    return alert.notified_at + timedelta(seconds=alert.rule.min_interval_s)


def _held(flip: Flip, alert: Alert, now: datetime) -> bool:
    """A new firing waits out the minimum interval since the alert's last mail (unless already outdated)."""
    quiet_until = _quiet_until(alert)
    if flip.reminder or flip.to_state != AlertState.FIRING or quiet_until is None:
        return False
    return now < quiet_until and not _newer_flip(flip)


def _flapped(flip: Flip, alert: Alert) -> bool:
    """A flip made during the quiet period and already overtaken by a newer one: the alert flapped.
    (Outside a quiet period every transition is mailed, even one overtaken before the mail went.)"""
    quiet_until = _quiet_until(alert)
    return quiet_until is not None and flip.created_at < quiet_until and _newer_flip(flip)


def process_flip(flip_id: int, now: datetime, report: Report) -> None:
    flip = Flip.objects.select_related("alert__rule", "alert__server", "alert__model", "alert__version__model").get(
        pk=flip_id
    )
    alert = flip.alert
    if _held(flip, alert, now):
        report.held += 1
        return
    if not Flip.objects.filter(pk=flip.pk, processed__isnull=True).update(processed=now):
        return  # another worker claimed it
    told = alert.notified_state or AlertState.RESOLVED  # nobody told anything = nothing firing, as they know
    if flip.reminder:
        if alert.state != AlertState.FIRING or alert.acknowledged_at is not None:
            return _mark(flip, NotificationStatus.SUPERSEDED, report, "no longer firing, or acknowledged")
    elif _flapped(flip, alert):
        return _mark(flip, NotificationStatus.SUPERSEDED, report)
    elif flip.to_state == told:
        return _mark(flip, NotificationStatus.UNCHANGED, report)
    if alert.is_silenced(now):
        return _mark(
            flip, NotificationStatus.SILENCED, report, f"silenced until {alert.silenced_until:%Y-%m-%d %H:%M:%S %Z}"
        )
    to = recipients(alert)
    if not to:
        return _mark(
            flip,
            NotificationStatus.NO_RECIPIENTS,
            report,
            "no owners, addresses or groups on the rule, MODELHUB_ALERT_EMAILS empty, no superuser with an email",
        )
    reminder_s = alert.rule.reminder_interval_s
    Alert.objects.filter(pk=alert.pk).update(
        notified_state=flip.to_state,
        notified_at=now,
        next_reminder_at=now + timedelta(seconds=reminder_s)
        if reminder_s and flip.to_state == AlertState.FIRING
        else None,
    )
    for recipient in to:
        attempt(flip, recipient, 1, now, report)


def retry(notification_id: int, now: datetime, report: Report) -> None:
    if not Notification.objects.filter(pk=notification_id, retry_at__lte=now).update(retry_at=None):
        return  # another worker claimed this retry
    failed = Notification.objects.select_related("flip__alert").get(pk=notification_id)
    flip = Flip.objects.select_related("alert__rule", "alert__server", "alert__model", "alert__version__model").get(
        pk=failed.flip_id
    )
    if not flip.reminder and _flapped(flip, flip.alert):
        Notification.objects.create(
            flip=flip, recipient=failed.recipient, attempt=failed.attempt + 1, status=NotificationStatus.SUPERSEDED
        )
        report.skip(NotificationStatus.SUPERSEDED)
        return
    attempt(flip, failed.recipient, failed.attempt + 1, now, report)


INTERRUPTED = (
    "interrupted: the worker sending it stopped before the mail server answered (killed, out of memory, time limit?)"
)


def recover_interrupted(now: datetime) -> int:
    """Attempts left SENDING by a worker that died mid-send: failed, and due for a retry now.

    Without this such a mail was never sent (its flip is claimed, its row says
    "sending" for ever). The sender's lock tells a dead sender from a slow one. The
    mail server may have taken the message just before the worker died; sending it
    again is the lesser harm than an alert nobody hears of.
    """
    recovered = 0
    sending = Notification.objects.filter(status=NotificationStatus.SENDING).order_by("id")
    for pk, flip_id, recipient, number in sending.values_list("id", "flip_id", "recipient", "attempt")[:BATCH]:
        with named_lock(_lock_name(flip_id, recipient)) as free:
            if not free:
                continue  # its sender is alive and still sending
            last = number >= settings.ALERT_MAX_ATTEMPTS
            recovered += Notification.objects.filter(pk=pk, status=NotificationStatus.SENDING).update(
                status=NotificationStatus.FAILED,
                error=INTERRUPTED + (" (no attempts left)" if last else ""),
                retry_at=None if last else now,
            )
    if recovered:
        log.warning("%s alert mail(s) interrupted by a dead worker are due again", recovered)
    return recovered


def schedule_reminders(now: datetime) -> None:
    due = Alert.objects.filter(
        next_reminder_at__lte=now, state=AlertState.FIRING, acknowledged_at__isnull=True
    ).select_related("rule")[:BATCH]
    for alert in due:
        interval = timedelta(seconds=alert.rule.reminder_interval_s or 0)
        nxt = now + interval if interval else None
        # The run whose update counts the row writes the reminder: never two for one due time.
        if not Alert.objects.filter(pk=alert.pk, next_reminder_at=alert.next_reminder_at).update(next_reminder_at=nxt):
            continue
        if not alert.is_silenced(now):
            remind(alert, now)


def send_pending(now: datetime | None = None) -> Report:
    """Send what is due now: reminders, unprocessed flips, retries of failed sends.

    Safe to run at once in several workers, and again: nothing is sent twice.
    Tests pass `now` to step past the minimum interval or a retry's back-off.
    """
    now = now or timezone.now()
    report = Report()
    try:
        recover_interrupted(now)
    except Exception:
        log.exception("interrupted alert mails could not be recovered; the others are still sent")
    try:
        schedule_reminders(now)
    except Exception:
        log.exception("alert reminders could not be scheduled; flips are still sent")
    pending = Flip.objects.filter(processed__isnull=True).order_by("id").values_list("id", flat=True)[:BATCH]
    for flip_id in pending:
        try:
            process_flip(flip_id, now, report)
        except Exception:  # one bad flip never stops the others
            log.exception("alert flip %s could not be processed", flip_id)
    due = Notification.objects.filter(retry_at__lte=now).order_by("retry_at", "id").values_list("id", flat=True)
    for notification_id in due[:BATCH]:
        try:
            retry(notification_id, now, report)
        except Exception:
            log.exception("alert notification %s could not be retried", notification_id)
    return report
