"""Raw points rolled up per minute and per hour, and the retention of points, roll-ups and results.

Rolling up recomputes whole buckets from their sources (a minute from its raw
points, an hour from its minute roll-ups) and upserts them, so running it twice,
or two workers at once, stores the same rows. Each run covers the minutes since
the newest minute roll-up, reaching back LATE_POINTS further for points recorded
a little after their time; after a worker outage it catches up on everything
since, an hour at a time. The minute still filling is left for the next run.

Retention never deletes what is not rolled up yet: a raw point goes only when its
minute roll-up exists, a minute roll-up only when its hour roll-up exists. Rows
go in batches, each its own short transaction (as in serving.retention).
"""

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, QuerySet, Sum
from django.utils import timezone

from modelhub.monitoring.models import CheckResult, Point, PointRollup, Resolution
from modelhub.monitoring.series import Bucket
from modelhub.serving.retention import delete_older_than

log = logging.getLogger(__name__)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
# Points recorded up to this long after their own time are still counted (a check records
# its points when its pass ends, well within a minute or two of their time).
LATE_POINTS = timedelta(minutes=5)
# Rolled up at once: bounds the rows one step holds in memory while catching up.
CHUNK = timedelta(hours=6)
_KEY_FIELDS = ["resolution", "metric", "target", "bucket"]
_VALUE_FIELDS = ["count", "sum", "min", "max"]


@dataclass(frozen=True)
class RolledUp:
    minutes: int  # minute roll-ups written (new or changed)
    hours: int


@dataclass(frozen=True)
class Pruned:
    points: int
    minute_rollups: int
    hour_rollups: int
    results: int


def floor_to(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, tz=UTC)


def _first_minute_to_roll(end: datetime) -> datetime | None:
    newest = PointRollup.objects.filter(resolution=Resolution.MINUTE).aggregate(b=Max("bucket"))["b"]
    if newest is not None:
        return min(newest, end - LATE_POINTS)
    oldest = Point.objects.aggregate(t=Min("time"))["t"]  # the first run ever: everything
    return None if oldest is None else floor_to(oldest, MINUTE)


def roll_up(now: datetime | None = None) -> RolledUp:
    """Roll up every complete minute not rolled up yet (and the last LATE_POINTS again)."""
    end = floor_to(now or timezone.now(), MINUTE)
    start = _first_minute_to_roll(end)
    minutes = hours = 0
    if start is None or start >= end:
        return RolledUp(0, 0)
    chunk = floor_to(start, HOUR)
    while chunk < end:
        # Catching up, hours without points are skipped, not visited one by one.
        first = Point.objects.filter(time__gte=max(start, chunk), time__lt=end).aggregate(t=Min("time"))["t"]
        if first is None:
            break
        chunk = max(chunk, floor_to(first, HOUR))
        minutes += _roll_minutes(max(start, chunk), min(end, chunk + CHUNK))
        hours += _roll_hours(chunk, min(end, chunk + CHUNK))
        chunk += CHUNK
    if minutes or hours:
        log.info("roll-up: wrote %d minute and %d hour roll-ups from %s to %s", minutes, hours, start, end)
    return RolledUp(minutes, hours)


def _roll_minutes(start: datetime, end: datetime) -> int:
    rows = (
        Point.objects.filter(time__gte=start, time__lt=end)
        .order_by()
        .values("metric", "target", start_of=Bucket("time", 60))
        .annotate(n=Count("id"), total=Sum("value"), low=Min("value"), high=Max("value"))
    )
    fresh = {(r["metric"], r["target"], r["start_of"]): (r["n"], r["total"], r["low"], r["high"]) for r in rows}
    return _upsert_changed(Resolution.MINUTE, fresh, start, end)


def _roll_hours(start: datetime, end: datetime) -> int:
    """Roll up the hours from `start` (a whole hour) to the one holding `end`, from their minutes."""
    last = floor_to(end - MINUTE, HOUR) + HOUR
    rows = (
        PointRollup.objects.filter(resolution=Resolution.MINUTE, bucket__gte=start, bucket__lt=last)
        .order_by()
        .values("metric", "target", start_of=Bucket("bucket", 3600))
        .annotate(n=Sum("count"), total=Sum("sum"), low=Min("min"), high=Max("max"))
    )
    fresh = {(r["metric"], r["target"], r["start_of"]): (r["n"], r["total"], r["low"], r["high"]) for r in rows}
    return _upsert_changed(Resolution.HOUR, fresh, start, last)


def _same(old: tuple, new: tuple) -> bool:
    # Float sums may differ in the last bit with the order Postgres adds them in.
    close = (math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12) for a, b in zip(old[1:], new[1:], strict=True))
    return old[0] == new[0] and all(close)


def _upsert_changed(resolution: str, fresh: dict, start: datetime, end: datetime) -> int:
    """Store the roll-ups in `fresh` ({(metric, target, bucket): (count, sum, min, max)}) of
    buckets in [start, end) that are new or differ from what is stored; return how many."""
    if not fresh:
        return 0
    stored = {
        (metric, target, bucket): values
        for metric, target, bucket, *values in PointRollup.objects.filter(
            resolution=resolution, bucket__gte=start, bucket__lt=end
        ).values_list("metric", "target", "bucket", *_VALUE_FIELDS)
    }
    changed = [
        PointRollup(
            resolution=resolution, metric=metric, target=target, bucket=bucket, count=n, sum=total, min=low, max=high
        )
        for (metric, target, bucket), (n, total, low, high) in fresh.items()
        if (metric, target, bucket) not in stored or not _same(stored[(metric, target, bucket)], (n, total, low, high))
    ]
    PointRollup.objects.bulk_create(
        changed,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=_KEY_FIELDS,
        update_fields=_VALUE_FIELDS,
    )
    return len(changed)


# --- retention ----------------------------------------------------------------------


def delete_in_batches(queryset: QuerySet, batch_size: int) -> int:
    """Delete the rows of `queryset`, `batch_size` at a time, each batch its own transaction."""
    deleted = 0
    while True:
        ids = list(queryset.order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            count, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += count


def prune(now: datetime | None = None) -> Pruned:
    """Apply the MONITORING_*_RETENTION_* settings once."""
    now = now or timezone.now()
    batch = settings.RETENTION_BATCH_SIZE
    minute_of_point = PointRollup.objects.filter(
        resolution=Resolution.MINUTE,
        metric=OuterRef("metric"),
        target=OuterRef("target"),
        bucket=Bucket(OuterRef("time"), 60),
    )
    points = delete_in_batches(
        Point.objects.filter(time__lt=now - timedelta(hours=settings.MONITORING_RAW_RETENTION_HOURS)).filter(
            Exists(minute_of_point)
        ),
        batch,
    )
    hour_of_minute = PointRollup.objects.filter(
        resolution=Resolution.HOUR,
        metric=OuterRef("metric"),
        target=OuterRef("target"),
        bucket=Bucket(OuterRef("bucket"), 3600),
    )
    minute_rollups = delete_in_batches(
        PointRollup.objects.filter(
            resolution=Resolution.MINUTE,
            bucket__lt=now - timedelta(days=settings.MONITORING_MINUTE_RETENTION_DAYS),
        ).filter(Exists(hour_of_minute)),
        batch,
    )
    hour_rollups = delete_in_batches(
        PointRollup.objects.filter(
            resolution=Resolution.HOUR, bucket__lt=now - timedelta(days=settings.MONITORING_HOUR_RETENTION_DAYS)
        ),
        batch,
    )
    results = delete_older_than(CheckResult, now - timedelta(days=settings.MONITORING_RESULT_RETENTION_DAYS), batch)
    pruned = Pruned(points, minute_rollups, hour_rollups, results)
    if any((points, minute_rollups, hour_rollups, results)):
        log.info("monitoring retention: deleted %s", pruned)
    return pruned
