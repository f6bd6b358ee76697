"""Celery tasks of server discovery (on the checks queue: a DNS lookup must not wait
behind a long load). They take ids and are idempotent: a second run finds nothing to change."""

import logging

from celery import shared_task
from django.utils import timezone

from modelhub.serving.discovery import due_groups, sync_group
from modelhub.serving.models import ServerGroup

log = logging.getLogger(__name__)


@shared_task
def discover_servers() -> list[dict]:
    """Scheduled: resolve every enabled group whose own interval has passed."""
    reports = []
    for group_id in due_groups():
        try:
            reports.append(sync_group(group_id).as_dict())
        except Exception as exc:  # one group's trouble must not keep the others from being resolved
            log.exception("discovery of server group %s failed", group_id)
            error = f"discovery failed: {type(exc).__name__}: {exc}"
            # Its time is stamped too: it is tried again after its interval, not on every tick.
            ServerGroup.objects.filter(pk=group_id).update(last_resolved_at=timezone.now(), last_error=error)
            reports.append({"group_id": group_id, "error": error})
    return reports


@shared_task
def sync_group_task(group_id: int) -> dict:
    """One group now (after it is created or changed)."""
    return sync_group(group_id).as_dict()
