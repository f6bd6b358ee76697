from django.conf import settings
from django.db import models


class Source(models.TextChoices):
    UI = "ui", "Web UI"
    ADMIN = "admin", "Django admin"
    API = "api", "REST API"
    CLI = "cli", "Command line"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """One state-changing action: who did what to which object, when, from where.

    Rows are only ever inserted. The actor is kept as a label too, so the row
    still says who acted after the user or token is deleted.
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
    details = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_repr}"
