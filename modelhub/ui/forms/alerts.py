"""Forms of the alert pages: the list's filters, a silence's length, an alert rule.

The rule form is a ModelForm, so a rule is validated by the model's own rules
(`AlertRule.clean` and its fields), the same ones the API's writes run through
`alerts.services`; the silence form keeps the API's limits (`SilenceSerializer`).
"""

import re
from datetime import datetime, timedelta

from django import forms
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.utils import timezone

from modelhub.alerts.models import AlertRule, AlertState, Severity
from modelhub.alerts.services import RULE_FIELDS
from modelhub.api.alerts_views import MAX_SILENCE
from modelhub.registry.models import Model
from modelhub.serving.models import InferenceServer

ALL_STATES = "all"
# What a target string starts with ("server:3"), as the list's "target kind" filter.
TARGET_KINDS = [("server", "server"), ("deployment", "deployment"), ("version", "version"), ("model", "model")]


class AlertFilterForm(forms.Form):
    """GET filters of the alert list; firing alerts unless asked otherwise."""

    state = forms.ChoiceField(
        choices=[(AlertState.FIRING, "firing"), (AlertState.RESOLVED, "resolved"), (ALL_STATES, "all")],
        required=False,
    )
    severity = forms.ChoiceField(choices=[("", "any"), *Severity.choices], required=False)
    target = forms.ChoiceField(label="Target kind", choices=[("", "any"), *TARGET_KINDS], required=False)
    rule = forms.ModelChoiceField(
        AlertRule.objects.select_related("model", "server").order_by("name", "id"), required=False, empty_label="any"
    )

    def _valid_data(self) -> dict:
        # An unbound form (no filters asked) or an invalid one filters by the defaults;
        # the invalid field shows its error.
        return self.cleaned_data if self.is_bound and self.is_valid() else {}

    def chosen_state(self) -> str:
        return self._valid_data().get("state") or AlertState.FIRING

    def filter(self, alerts):
        """`alerts` narrowed to the chosen filters."""
        data = self._valid_data()
        state = self.chosen_state()
        if state != ALL_STATES:
            alerts = alerts.filter(state=state)
        if data.get("severity"):
            alerts = alerts.filter(rule__severity=data["severity"])
        if data.get("target"):
            alerts = alerts.filter(target__startswith=data["target"] + ":")
        if data.get("rule"):
            alerts = alerts.filter(rule=data["rule"])
        return alerts


DURATION = re.compile(r"^\s*(\d{1,6})\s*(m|h|d)\s*$", re.IGNORECASE)
DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
# The per-row buttons of the alert list.
QUICK_SILENCES = ("1h", "4h", "24h")


def parse_duration(text: str) -> timedelta:
    match = DURATION.match(text)
    if not match:
        raise ValidationError(f"{text!r} is not a duration: write a number and m, h or d, e.g. 30m, 4h or 2d")
    return timedelta(**{DURATION_UNITS[match.group(2).lower()]: int(match.group(1))})


class SilenceForm(forms.Form):
    """Silence for a duration ("4h") or until a time, within the API's limits."""

    duration = forms.CharField(required=False, max_length=20, help_text="e.g. 30m, 4h, 2d")
    until = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="or until this time (UTC)",
    )

    def clean_duration(self) -> timedelta | None:
        text = self.cleaned_data["duration"]
        return parse_duration(text) if text.strip() else None

    def clean(self):
        data = super().clean()
        duration, until = data.get("duration"), data.get("until")
        if self.errors:
            return data
        if (duration is None) == (until is None):
            raise ValidationError({"until": "give either a duration or an until time, not both and not neither"})
        now = timezone.now()
        until = until or now + duration
        if until <= now:
            raise ValidationError({"until": f"{until:%Y-%m-%d %H:%M} is not in the future"})
        if until > now + MAX_SILENCE:
            raise ValidationError({"until": f"silence for at most {MAX_SILENCE.days} days"})
        data["silence_until"] = until
        return data

    @property
    def silence_until(self) -> datetime:
        return self.cleaned_data["silence_until"]


class EmailListField(forms.CharField):
    """Addresses separated by commas or new lines, as the list the model keeps (the model checks each)."""

    widget = forms.Textarea(attrs={"rows": 2})

    def to_python(self, value) -> list[str]:
        return [part for part in re.split(r"[\s,;]+", super().to_python(value)) if part]

    def prepare_value(self, value) -> str:
        return "\n".join(value) if isinstance(value, list) else value


class AlertRuleForm(forms.ModelForm):
    model = forms.ModelChoiceField(Model.objects.order_by("name"), required=False, to_field_name="name")
    server = forms.ModelChoiceField(InferenceServer.objects.order_by("name"), required=False, to_field_name="name")
    groups = forms.ModelMultipleChoiceField(Group.objects.order_by("name"), required=False)
    emails = EmailListField(required=False, help_text="Extra addresses to mail, one a line or comma-separated")

    class Meta:
        model = AlertRule
        fields = list(RULE_FIELDS)  # the fields the rule services take, in the model's order

    def service_fields(self) -> dict:
        """The cleaned fields as `alerts.services.create_rule / update_rule` take them."""
        return {name: self.cleaned_data[name] for name in self.Meta.fields}
