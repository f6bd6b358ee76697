"""Retention: deployment transitions and audit events older than configured are deleted.

Both tables only ever grow (a deployment that keeps failing gains a transition every
retry; every write adds an audit event). With MODELHUB_RETENTION_DAYS_TRANSITIONS or
MODELHUB_RETENTION_DAYS_AUDIT set, a periodic task (the hourly expire-old-rows schedule) deletes older
rows; unset, the default, keeps them for ever. It lives in serving because serving is
the lowest app that knows both tables.

Rows go in batches, each its own short transaction: a delete of millions of rows must
not hold a lock that web requests wait behind (on SQLite, the one write lock). Running
it twice, or two workers at once, deletes nothing more the second time.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.audit.models import AuditEvent
from modelhub.serving.models import DeploymentTransition

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expired:
    transitions: int
    audit_events: int


def delete_older_than(model: type[models.Model], cutoff: datetime, batch_size: int, field: str = "created_at") -> int:
    """Delete `model` rows whose `field` is before `cutoff`, `batch_size` at a time; return how many.

    Batches keep each transaction (and its locks and WAL) short on a big table."""
    deleted = 0
    older = {f"{field}__lt": cutoff}
    while True:
        ids = list(model.objects.filter(**older).order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            count, _ = model.objects.filter(pk__in=ids).delete()
        deleted += count


def _cutoff(days: int | None, now: datetime) -> datetime | None:
    return None if days is None else now - timedelta(days=days)


def expire_old_rows(now: datetime | None = None) -> Expired:
    """Apply both retention settings once."""
    now = now or timezone.now()
    batch = settings.RETENTION_BATCH_SIZE
    transitions = audit_events = 0
    cutoff = _cutoff(settings.RETENTION_DAYS_TRANSITIONS, now)
    if cutoff is not None:
        transitions = delete_older_than(DeploymentTransition, cutoff, batch)
    cutoff = _cutoff(settings.RETENTION_DAYS_AUDIT, now)
    if cutoff is not None:
        audit_events = delete_older_than(AuditEvent, cutoff, batch)
        if audit_events:
            # The log says that it was cut, and where: its older history is gone on purpose.
            record(Actor(), "audit.expire", deleted=audit_events, before=cutoff.isoformat())
    if transitions or audit_events:
        log.info("retention: deleted %d transitions and %d audit events", transitions, audit_events)
    return Expired(transitions, audit_events)


@shared_task(name="modelhub.serving.retention.expire_old_rows")
def expire_old_rows_task() -> dict:
    expired = expire_old_rows()
    return {"transitions": expired.transitions, "audit_events": expired.audit_events}
