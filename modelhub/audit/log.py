"""The one function that writes audit rows."""

from django.db import models

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent


def record(actor: Actor, action: str, obj: models.Model | None = None, **details) -> AuditEvent:
    """Write an audit row. Call it inside the transaction that makes the change,
    so the change and its record commit together or not at all."""
    return AuditEvent.objects.create(
        source=actor.source,
        user=actor.django_user,
        token_id=getattr(actor.token, "pk", None),
        actor=actor.label,
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:300] if obj is not None else "",
        details=details,
        remote_addr=actor.remote_addr,
    )
