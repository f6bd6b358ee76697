"""Alert rules, the state of each rule on each target, its transitions, and every send.

State is written in one place: `modelhub.alerts.state.flip` changes an alert's
state and writes its `Flip` row in the same transaction. Sending works from
unprocessed flips (modelhub.alerts.delivery), each claimed by a conditional
UPDATE, and writes a `Notification` row before every attempt.
"""

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import Q

from modelhub.monitoring.models import CheckKind, CheckResult
from modelhub.registry.models import Model, ModelVersion
from modelhub.serving.models import Deployment, InferenceServer


class Signal(models.TextChoices):
    """What a rule watches. Most are a check's own verdict; latency, failure rate and
    points compare a number with the rule's threshold."""

    SERVER_DOWN = "server_down", "server down"
    MODEL_NOT_READY = "model_not_ready", "model not ready"
    SCHEMA_MISMATCH = "schema_mismatch", "schema mismatch"
    ACCURACY = "accuracy_below_threshold", "accuracy below threshold"
    LATENCY_P95 = "latency_p95", "latency p95 above threshold (default: the model's SLO)"
    FAILURE_RATE = "failure_rate", "failure rate above threshold"
    POINT = "point", "a series point (cpu_util, gpu_util, memory_used_bytes, …) against the threshold"


# The check kind each signal reads; POINT reads the points of any kind's result.
SIGNAL_KINDS: dict[str, str | None] = {
    Signal.SERVER_DOWN: CheckKind.SERVER_HEALTH,
    Signal.MODEL_NOT_READY: CheckKind.MODEL_READY,
    Signal.SCHEMA_MISMATCH: CheckKind.SCHEMA,
    Signal.ACCURACY: CheckKind.ACCURACY,
    Signal.LATENCY_P95: CheckKind.LATENCY,
    Signal.FAILURE_RATE: CheckKind.STATS,
    Signal.POINT: None,
}
# Signals that compare the result's value with a threshold (the others read its status).
VALUE_SIGNALS = frozenset({Signal.LATENCY_P95, Signal.FAILURE_RATE, Signal.POINT})


class Scope(models.TextChoices):
    GLOBAL = "global"
    MODEL = "model"
    SERVER = "server"


class Comparison(models.TextChoices):
    GT = "gt", ">"
    GE = "ge", ">="
    LT = "lt", "<"
    LE = "le", "<="

    def breaks(self, value: float, threshold: float) -> bool:
        return {"gt": value > threshold, "ge": value >= threshold, "lt": value < threshold, "le": value <= threshold}[
            self.value
        ]


class Severity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertRule(models.Model):
    """When a target counts as broken, for how long before it alerts, and whom to tell.

    A rule of a model or a server replaces the global rules of the same signal (and
    series) for that model's or server's targets, so a model can have its own limit.
    """

    name = models.CharField(max_length=100)
    signal = models.CharField(max_length=30, choices=Signal.choices)
    series = models.CharField(
        max_length=64, blank=True, help_text="For signal=point: the series' metric, e.g. cpu_util, gpu_util"
    )
    scope = models.CharField(max_length=6, choices=Scope.choices, default=Scope.GLOBAL)
    model = models.ForeignKey(Model, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules")
    server = models.ForeignKey(
        InferenceServer, null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    comparison = models.CharField(max_length=2, choices=Comparison.choices, default=Comparison.GT)
    threshold = models.FloatField(
        null=True,
        blank=True,
        help_text="For latency (empty = the model's latency_slo_ms), failure rate (0..1) and points",
    )
    for_seconds = models.PositiveIntegerField(default=0, help_text="How long the condition must hold before firing")
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.CRITICAL)
    notify_owners = models.BooleanField(
        default=True, help_text="Mail the owners of the target's model (for a server: of the models deployed on it)"
    )
    emails = models.JSONField(default=list, blank=True, help_text="Extra addresses to mail")
    groups = models.ManyToManyField(Group, blank=True, related_name="alert_rules", help_text="Mail these groups' users")
    min_interval_s = models.PositiveIntegerField(
        default=300, help_text="A new firing mail waits this long after the last mail of the same alert (flapping)"
    )
    reminder_interval_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="Mail again this often while firing and not acknowledged; empty = never"
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["scope", "signal", "name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(scope="global") & Q(model__isnull=True) & Q(server__isnull=True))
                | (Q(scope="model") & Q(model__isnull=False) & Q(server__isnull=True))
                | (Q(scope="server") & Q(model__isnull=True) & Q(server__isnull=False)),
                name="alert_rule_scope_matches_target",
                violation_error_message="a global rule names no model or server, a model rule its model, "
                "a server rule its server",
            ),
        ]

    def __str__(self) -> str:
        where = {Scope.MODEL: f" of {self.model}", Scope.SERVER: f" of {self.server}"}.get(self.scope, "")
        return f"{self.name}{where}"

    def clean(self) -> None:
        """What one database constraint cannot say, in words naming the field (admin, API, services)."""
        errors: dict[str, str] = {}
        if self.scope == Scope.MODEL and self.model_id is None:
            errors["model"] = "a model rule names its model"
        if self.scope == Scope.SERVER and self.server_id is None:
            errors["server"] = "a server rule names its server"
        if self.scope != Scope.MODEL and self.model_id is not None:
            errors["model"] = f"only a model rule names a model (this one is {self.scope})"
        if self.scope != Scope.SERVER and self.server_id is not None:
            errors["server"] = f"only a server rule names a server (this one is {self.scope})"
        if self.signal == Signal.POINT:
            if not self.series:
                errors["series"] = "a point rule names its series, e.g. cpu_util"
            if self.threshold is None:
                errors["threshold"] = "a point rule needs a threshold"
        elif self.series:
            errors["series"] = f"only point rules name a series (this one is {self.signal})"
        if not isinstance(self.emails, list):
            errors["emails"] = "a list of addresses"
        else:
            for i, address in enumerate(self.emails):
                try:
                    validate_email(address)
                except (ValidationError, TypeError):
                    errors["emails"] = f"item {i}: {address!r} is not an email address"
        if errors:
            raise ValidationError(errors)


class AlertState(models.TextChoices):
    OK = "ok"
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(models.Model):
    """One rule on one target ("server:3", "deployment:12", "version:5").

    Made the first time the target breaks the rule. `bad_since` is when the
    current breach began (for the rule's for_seconds); `since` when the state last
    changed. `last_result_id` is the newest result evaluated: an older or equal one
    is never evaluated again.
    """

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    target = models.CharField(max_length=64)
    target_label = models.CharField(max_length=300, help_text="e.g. 'digits v3 on gpu-1', kept if the target goes")
    server = models.ForeignKey(InferenceServer, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey(Model, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    state = models.CharField(max_length=8, choices=AlertState.choices, default=AlertState.OK)
    since = models.DateTimeField(help_text="When the state last changed")
    bad_since = models.DateTimeField(null=True, blank=True, help_text="Start of the current breach, if any")
    last_value = models.FloatField(null=True, blank=True)
    last_message = models.TextField(blank=True, help_text="The check's message: Triton's reason, the tensor")
    last_details = models.JSONField(default=dict, blank=True)
    last_result = models.ForeignKey(CheckResult, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    last_result_id_seen = models.BigIntegerField(default=0)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    silenced_until = models.DateTimeField(null=True, blank=True)
    # What the recipients were last told, and when: the minimum interval and reminders read these.
    notified_state = models.CharField(max_length=8, choices=AlertState.choices, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    next_reminder_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-since", "-id"]
        constraints = [models.UniqueConstraint(fields=["rule", "target"], name="one_alert_per_rule_target")]
        indexes = [
            models.Index(fields=["state", "-since"], name="alert_state_since"),
            models.Index(
                fields=["next_reminder_at"], name="alert_reminder_due", condition=Q(next_reminder_at__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule.name}: {self.target_label} ({self.state})"

    def is_silenced(self, now) -> bool:
        return self.silenced_until is not None and self.silenced_until > now


class Flip(models.Model):
    """One change of an alert's state (or a reminder while firing), with what the check saw.

    `processed` is null until a sender claims it: the partial index keeps finding
    the unsent ones cheap however long the history grows.
    """

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="flips")
    from_state = models.CharField(max_length=8, choices=AlertState.choices)
    to_state = models.CharField(max_length=8, choices=AlertState.choices)
    reminder = models.BooleanField(default=False)
    value = models.FloatField(null=True, blank=True)
    message = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    condition_since = models.DateTimeField(
        null=True, blank=True, help_text="Firing: when the breach began; resolved: when it had started firing"
    )
    created_at = models.DateTimeField()
    processed = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["id"], name="flip_unprocessed", condition=Q(processed__isnull=True))]

    def __str__(self) -> str:
        kind = "reminder" if self.reminder else f"{self.from_state} -> {self.to_state}"
        return f"{self.alert.target_label}: {kind}"


class NotificationStatus(models.TextChoices):
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SILENCED = "silenced"
    SUPERSEDED = "superseded", "superseded by a newer flip"
    UNCHANGED = "unchanged", "recipients already told this state"
    NO_RECIPIENTS = "no_recipients", "nobody to tell"


class Notification(models.Model):
    """One attempt to tell one recipient about one flip, written before the send.

    A failed attempt carries `retry_at`; the sender that claims it (clearing
    retry_at with a conditional UPDATE) makes the next attempt as a new row.
    """

    flip = models.ForeignKey(Flip, on_delete=models.CASCADE, related_name="notifications")
    recipient = models.CharField(max_length=254, blank=True)
    attempt = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=13, choices=NotificationStatus.choices)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["retry_at"], name="notification_retry_due", condition=Q(retry_at__isnull=False))
        ]

    def __str__(self) -> str:
        return f"{self.recipient or '-'} #{self.attempt}: {self.status}"
