"""Evaluate and send in the caller's process, now: for tests and commands that must see the email
before they go on (the scheduled path is record() -> signal -> on_commit -> send_notifications)."""

from collections.abc import Sequence
from datetime import datetime

from modelhub.alerts.delivery import Report, send_pending
from modelhub.alerts.evaluation import evaluate
from modelhub.monitoring.models import CheckResult


def evaluate_and_send(results: Sequence[CheckResult] = (), now: datetime | None = None) -> Report:
    """Evaluate `results` (those record() wrote are evaluated already: a second time changes nothing),
    then send every due flip, reminder and retry."""
    evaluate(results)
    return send_pending(now)
