"""Celery tasks of the alerts app (queue notify). Idempotent: safe to run twice, or in two workers."""

from celery import shared_task

from modelhub.alerts.delivery import send_pending


@shared_task(acks_late=True)
def send_notifications() -> dict:
    """Send the unsent flips, due reminders and due retries. Queued right after a flip
    commits, and run on a schedule (every ALERT_SEND_INTERVAL_S) for retries, reminders
    and flips held by the minimum interval."""
    report = send_pending()
    return {"sent": report.sent, "failed": report.failed, "held": report.held, "skipped": report.skipped}
