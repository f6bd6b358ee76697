"""The one write path for people's changes to alerts and rules (API, admin), each audited
in the write's transaction. Alert *state* is written by modelhub.alerts.state only."""

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from modelhub.alerts.models import Alert, AlertRule, AlertState
from modelhub.audit.actors import Actor
from modelhub.audit.log import record

# What a rule write may set: its model's editable fields (not id or timestamps),
# derived so that a new field needs no second list here.
# A rule's writable fields, in the model's order: what the services, the API's
# serializer, the UI's form and the admin accept.
RULE_FIELDS = tuple(f.name for f in AlertRule._meta.get_fields() if f.concrete and f.editable and not f.auto_created)


def _locked(alert: Alert) -> Alert:
    return Alert.objects.select_for_update().select_related("rule").get(pk=alert.pk)


def acknowledge(alert: Alert, actor: Actor) -> Alert:
    """Someone is on it: no reminders until the alert resolves (a new breach clears it)."""
    with transaction.atomic():
        alert = _locked(alert)
        if alert.state != AlertState.FIRING:
            raise ValidationError({"state": f"alert {alert.pk} is {alert.state}, not firing: nothing to acknowledge"})
        alert.acknowledged_by = actor.django_user
        alert.acknowledged_at = timezone.now()
        alert.next_reminder_at = None
        alert.save(update_fields=["acknowledged_by", "acknowledged_at", "next_reminder_at"])
        record(actor, "alert.acknowledge", alert, alert=alert.pk, target=alert.target_label)
    return alert


def silence(alert: Alert, until: datetime, actor: Actor) -> Alert:
    """No mail about this alert until `until` (its flips are marked processed as silenced)."""
    if until <= timezone.now():
        raise ValidationError({"until": f"{until.isoformat()} is not in the future"})
    with transaction.atomic():
        alert = _locked(alert)
        alert.silenced_until = until
        alert.save(update_fields=["silenced_until"])
        record(actor, "alert.silence", alert, alert=alert.pk, target=alert.target_label, until=until.isoformat())
    return alert


def unsilence(alert: Alert, actor: Actor) -> Alert:
    with transaction.atomic():
        alert = _locked(alert)
        alert.silenced_until = None
        alert.save(update_fields=["silenced_until"])
        record(actor, "alert.unsilence", alert, alert=alert.pk, target=alert.target_label)
    return alert


def create_rule(actor: Actor, *, groups=(), **fields) -> AlertRule:
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise ValidationError({name: "unknown field" for name in sorted(unknown)})
    rule = AlertRule(**fields)
    rule.full_clean(exclude=["groups"])
    with transaction.atomic():
        rule.save()
        rule.groups.set(groups)
        record(actor, "alert_rule.create", rule, rule=rule.pk, name=rule.name, signal=rule.signal, scope=rule.scope)
    return rule


def update_rule(rule: AlertRule, actor: Actor, **changes) -> AlertRule:
    unknown = set(changes) - set(RULE_FIELDS)
    if unknown:
        raise ValidationError({name: "unknown field" for name in sorted(unknown)})
    groups = changes.pop("groups", None)
    with transaction.atomic():
        rule = AlertRule.objects.select_for_update().get(pk=rule.pk)
        for name, value in changes.items():
            setattr(rule, name, value)
        rule.full_clean(exclude=["groups"])
        rule.save()
        if groups is not None:
            rule.groups.set(groups)
        changed = sorted([*changes, *(["groups"] if groups is not None else [])])
        record(actor, "alert_rule.update", rule, rule=rule.pk, name=rule.name, fields=changed)
    return rule


def delete_rule(rule: AlertRule, actor: Actor) -> None:
    """Deletes the rule with its alerts and their history."""
    with transaction.atomic():
        record(actor, "alert_rule.delete", rule, rule=rule.pk, name=rule.name, signal=rule.signal)
        rule.delete()
