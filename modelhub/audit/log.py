"""The one function that writes audit rows."""

from django.core.exceptions import FieldDoesNotExist
from django.db import models

from modelhub.audit.actors import Actor
from modelhub.audit.models import AuditEvent

# How an object reaches the registry model it belongs to, by its model label.
# Strings, not imports: the audit log sits below the apps whose objects it records.
_REGISTRY_MODEL = "registry.model"
_MODEL_HOPS = ("model", "version", "deployment")


def model_of(obj: models.Model | None) -> models.Model | None:
    """The registry model `obj` belongs to (itself, or through its model/version/deployment), or None."""
    for _ in range(len(_MODEL_HOPS) + 1):
        if obj is None or obj._meta.label_lower == _REGISTRY_MODEL:
            return obj
        obj = next((getattr(obj, hop) for hop in _MODEL_HOPS if _has_relation(obj, hop)), None)
    return None


def _has_relation(obj: models.Model, name: str) -> bool:
    try:
        field = obj._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return field.many_to_one or field.one_to_one


def record(actor: Actor, action: str, obj: models.Model | None = None, **details) -> AuditEvent:
    """Write an audit row. Call it inside the transaction that makes the change,
    so the change and its record commit together or not at all.

    The row is tied to the registry model `obj` belongs to; an event on another
    object that is about a model (a load on a server) names it in `details["model"]`.
    """
    model = model_of(obj)
    named = details.get("model")
    return AuditEvent.objects.create(
        source=actor.source,
        user=actor.django_user,
        token_id=getattr(actor.token, "pk", None),
        actor=actor.label,
        action=action,
        object_type=obj._meta.label_lower if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:300] if obj is not None else "",
        model_id=model.pk if model is not None else None,
        model_name=model.name if model is not None else (named[:100] if isinstance(named, str) else ""),
        details=details,
        remote_addr=actor.remote_addr,
    )
