"""The one writer of alert state and of Flip rows.

A state change and its Flip are written in one transaction by `flip`; a reminder
while firing (no change of state) is a Flip too, written by `remind`.
"""

from datetime import datetime

from django.db import transaction

from modelhub.alerts.models import Alert, AlertState, Flip

# Which changes the state machine allows: ok -> firing -> resolved (-> firing again).
ALLOWED = {
    AlertState.OK: {AlertState.FIRING},
    AlertState.FIRING: {AlertState.RESOLVED},
    AlertState.RESOLVED: {AlertState.FIRING},
}


class InvalidTransition(ValueError):
    pass


def flip(alert: Alert, to_state: str, at: datetime) -> Flip:
    """Move `alert` (locked by the caller, or new) to `to_state` and write its Flip.

    The alert's last_value / last_message / last_details become the flip's
    snapshot. Entering firing clears an acknowledgement (it was for the last
    breach); leaving it stops reminders.
    """
    if to_state not in ALLOWED[alert.state]:
        raise InvalidTransition(f"alert {alert.pk} ({alert.target_label}): {alert.state} -> {to_state} is not allowed")
    # No savepoint: inside evaluate's transaction a pass with many flips saves two queries each.
    with transaction.atomic(savepoint=False):
        from_state, began = alert.state, alert.since
        alert.state = to_state
        alert.since = at
        fields = ["state", "since"]
        if to_state == AlertState.FIRING:
            alert.acknowledged_by = None
            alert.acknowledged_at = None
            fields += ["acknowledged_by", "acknowledged_at"]
        else:
            alert.next_reminder_at = None
            fields.append("next_reminder_at")
        alert.save(update_fields=fields)
        return Flip.objects.create(
            alert=alert,
            from_state=from_state,
            to_state=to_state,
            value=alert.last_value,
            message=alert.last_message,
            details=alert.last_details,
            condition_since=alert.bad_since if to_state == AlertState.FIRING else began,
            created_at=at,
        )


def remind(alert: Alert, at: datetime) -> Flip:
    """A reminder that `alert` is still firing: a Flip that changes no state."""
    return Flip.objects.create(
        alert=alert,
        from_state=alert.state,
        to_state=alert.state,
        reminder=True,
        value=alert.last_value,
        message=alert.last_message,
        details=alert.last_details,
        condition_since=alert.bad_since or alert.since,
        created_at=at,
    )
