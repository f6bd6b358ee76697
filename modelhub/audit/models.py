from django.conf import settings
from django.db import models


class Source(models.TextChoices):
    UI = "ui", "Web UI"
    ADMIN = "admin", "Django admin"
    API = "api", "REST API"
    CLI = "cli", "Command line"
    SYSTEM = "system", "System"


class AuditEventQuerySet(models.QuerySet):
    def about_models(self, ids, names):
        """Events about these models (ids), and events that name one of them but
        could not know its id (`names`: a list or a subquery of names)."""
        named_only = models.Q(model_id__isnull=True, model_name__in=names) & ~models.Q(model_name="")
        return self.filter(models.Q(model_id__in=ids) | named_only)


class AuditEvent(models.Model):
    """One state-changing action: who did what to which object, when, from where.

    Rows are only ever inserted. The actor is kept as a label too, so the row
    still says who acted after the user or token is deleted. `model_id` and
    `model_name` say which registered model the object belongs to (a version,
    alias or deployment belongs to its model), so a token restricted to some
    models reads the rows of its models only; they are plain columns, not a
    foreign key, because the log outlives the models and sits below the registry.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=200, help_text="user:<name>, token:<name> or system")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    model_id = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="the registry model concerned")
    model_name = models.CharField(max_length=100, blank=True, db_index=True, help_text="its name at the time")
    details = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_repr}"
