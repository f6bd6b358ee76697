"""Time series: bucketing in SQL, roll-ups equal to the raw aggregation, retention that keeps what is not rolled up."""

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from modelhub.monitoring.maintenance import roll_up_and_prune
from modelhub.monitoring.models import CheckKind, CheckResult, Point, PointRollup, Resolution, Status
from modelhub.monitoring.rollups import LATE_POINTS, RolledUp, floor_to, prune, roll_up
from modelhub.monitoring.series import bucket_count, bucket_width, read_series, series_for_target

pytestmark = pytest.mark.django_db

BASE = datetime(2026, 1, 1, tzinfo=UTC)
TARGET = "deployment:1"


def points(*pairs, metric="latency_p95_ms", target=TARGET) -> None:
    """points((seconds after BASE, value), …)"""
    Point.objects.bulk_create(
        [Point(metric=metric, target=target, time=BASE + timedelta(seconds=s), value=v) for s, v in pairs]
    )


def aggregate(pairs, width: int) -> dict:
    """The expected buckets, computed in Python: {bucket start: (mean, min, max, count)}."""
    buckets = defaultdict(list)
    for seconds, value in pairs:
        moment = BASE + timedelta(seconds=seconds)
        buckets[floor_to(moment, timedelta(seconds=width))].append(value)
    return {k: (sum(v) / len(v), min(v), max(v), len(v)) for k, v in sorted(buckets.items())}


def as_dict(series) -> dict:
    return {p.time: (p.mean, p.min, p.max, p.count) for p in series.points}


def assert_same(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for key, (mean, low, high, count) in expected.items():
        assert got[key][0] == pytest.approx(mean, rel=1e-9)
        assert got[key][1:] == (low, high, count)


def test_raw_points_are_bucketed_in_sql_with_mean_min_max_and_count():
    points((0, 1.0), (9, 3.0), (70, 5.0), (599, 7.0), (600, 100.0))  # 600 s is the range's end: left out
    points((5, 1000.0), metric="latency_p50_ms")
    points((5, 1000.0), target="deployment:2")
    series = read_series("latency_p95_ms", TARGET, BASE, BASE + timedelta(minutes=10), max_points=100, now=BASE)
    assert (series.resolution, series.bucket_seconds) == ("raw", 10)
    assert as_dict(series) == {
        BASE: (2.0, 1.0, 3.0, 2),
        BASE + timedelta(seconds=70): (5.0, 5.0, 5.0, 1),
        BASE + timedelta(seconds=590): (7.0, 7.0, 7.0, 1),
    }


def test_a_series_never_has_more_than_max_points_buckets():
    # Every 7 s for three hours, read from an unaligned start.
    pairs = [(s, float(s % 13)) for s in range(0, 3 * 3600, 7)]
    points(*pairs)
    start, end = BASE + timedelta(seconds=7), BASE + timedelta(hours=3)
    roll_up(end + timedelta(minutes=1))
    for max_points in (1, 7, 100, 2000):
        series = read_series("latency_p95_ms", TARGET, start, end, max_points=max_points, now=end)
        assert len(series.points) <= max_points
        # The point at BASE is before start; a roll-up's first minute counts as a whole.
        assert sum(p.count for p in series.points) == len(pairs) - (series.resolution == "raw")
    rng = random.Random(7)
    for _ in range(500):
        start = BASE + timedelta(seconds=rng.uniform(0, 10**7))
        end = start + timedelta(seconds=rng.uniform(0.001, 10**8))
        max_points = rng.choice([1, 2, 3, 10, 999, 2000])
        assert bucket_count(start, end, bucket_width(start, end, max_points)) <= max_points


def test_roll_ups_equal_the_raw_aggregation_and_a_chart_reads_them_as_sums_and_counts():
    rng = random.Random(3)
    # Uneven counts per minute: a mean of means would differ from the true mean.
    pairs = sorted((rng.randrange(0, 3 * 3600), rng.uniform(0, 100)) for _ in range(3000))
    points(*pairs)
    now = BASE + timedelta(hours=3, minutes=1)
    roll_up(now)
    minutes = {
        r.bucket: (r.sum / r.count, r.min, r.max, r.count)
        for r in PointRollup.objects.filter(resolution=Resolution.MINUTE)
    }
    assert_same(minutes, aggregate(pairs, 60))
    hours = {
        r.bucket: (r.sum / r.count, r.min, r.max, r.count)
        for r in PointRollup.objects.filter(resolution=Resolution.HOUR)
    }
    assert_same(hours, aggregate(pairs, 3600))
    # Two days later the raw points are gone from the range's start: the chart reads minute roll-ups.
    series = read_series(
        "latency_p95_ms", TARGET, BASE, BASE + timedelta(hours=3), max_points=12, now=BASE + timedelta(days=3)
    )
    assert (series.resolution, series.bucket_seconds) == ("minute", 900)
    assert_same(as_dict(series), aggregate(pairs, 900))


def test_a_chart_from_roll_ups_adds_the_raw_points_not_rolled_up_yet():
    rolled = [(s, float(s)) for s in range(0, 3600, 50)]
    points(*rolled)
    roll_up(BASE + timedelta(minutes=61))
    fresh = [(3600 + s, 1.0) for s in range(0, 300, 10)]  # the next five minutes: raw only
    points(*fresh)
    end = BASE + timedelta(hours=1, minutes=5)
    series = read_series("latency_p95_ms", TARGET, BASE, end, max_points=10, now=end)
    assert series.resolution == "minute"
    assert_same(as_dict(series), aggregate(rolled + fresh, series.bucket_seconds))


def test_a_30_day_chart_reads_hour_roll_ups():
    # A few hours on five days of the month (a catch-up of 30 days rolls up hours with points only).
    pairs = [(d * 86400 + h * 3600 + 30, float(d + h)) for d in (0, 7, 14, 21, 29) for h in range(4)]
    points(*pairs)
    end = BASE + timedelta(days=30)
    roll_up(end)
    # What is left to read are roll-ups, and the raw points of the hour the roll-ups are filling.
    Point.objects.filter(time__lt=BASE + timedelta(days=29, hours=3)).delete()
    series = read_series("latency_p95_ms", TARGET, BASE, end, now=end)
    assert (series.resolution, series.bucket_seconds) == ("hour", 3600)
    assert len(series.points) == len(pairs)
    assert_same(as_dict(series), aggregate(pairs, 3600))
    assert series_for_target(TARGET) == ["latency_p95_ms"]
    assert series_for_target("deployment:2") == []


def test_rolling_up_twice_changes_nothing_and_a_late_point_is_counted():
    points((0, 1.0), (30, 2.0), (61, 4.0))
    now = BASE + timedelta(minutes=2)
    first = roll_up(now)
    assert first == RolledUp(minutes=2, hours=1)
    stored = sorted(PointRollup.objects.values_list("id", "resolution", "bucket", "count", "sum", "min", "max"))
    assert roll_up(now) == RolledUp(0, 0)
    assert sorted(PointRollup.objects.values_list("id", "resolution", "bucket", "count", "sum", "min", "max")) == stored
    # A point recorded a little after its time (within LATE_POINTS) lands in a minute rolled up already.
    points((45, 10.0))
    assert roll_up(now + timedelta(minutes=1)) == RolledUp(minutes=1, hours=1)
    # One later than that is not counted any more: its minute is not rolled up again.
    points((50, 100.0))
    assert roll_up(now + LATE_POINTS + timedelta(minutes=1)) == RolledUp(0, 0)
    Point.objects.filter(value=100.0).delete()
    minute = PointRollup.objects.get(resolution=Resolution.MINUTE, bucket=BASE)
    hour = PointRollup.objects.get(resolution=Resolution.HOUR, bucket=BASE)
    assert (minute.count, minute.sum, minute.max) == (3, 13.0, 10.0)
    assert (hour.count, hour.sum, hour.min, hour.max) == (4, 17.0, 1.0, 10.0)
    # The minute still filling is not rolled up yet.
    points((10 * 60 + 10, 1.0))
    roll_up(BASE + timedelta(minutes=10, seconds=20))
    assert not PointRollup.objects.filter(bucket=BASE + timedelta(minutes=10)).exists()


def test_retention_keeps_points_not_rolled_up_and_prunes_each_table_by_its_setting(settings):
    settings.MONITORING_RAW_RETENTION_HOURS = 48
    settings.MONITORING_MINUTE_RETENTION_DAYS = 14
    settings.MONITORING_HOUR_RETENTION_DAYS = 400
    settings.MONITORING_RESULT_RETENTION_DAYS = 30
    points((0, 1.0), (60, 2.0))
    now = BASE + timedelta(days=3)
    assert prune(now).points == 0  # not rolled up: kept
    assert Point.objects.count() == 2
    points((3 * 86400 - 600, 3.0))  # ten minutes ago
    roll_up(now)
    pruned = prune(now)
    assert pruned.points == 2
    assert list(Point.objects.values_list("value", flat=True)) == [3.0]
    assert PointRollup.objects.filter(resolution=Resolution.MINUTE).count() == 3
    # Minute roll-ups go after 14 days (their hours stay), hours after 400 days.
    assert prune(BASE + timedelta(days=15)).minute_rollups == 2
    assert PointRollup.objects.filter(resolution=Resolution.HOUR, bucket=BASE).exists()
    assert prune(BASE + timedelta(days=401)).hour_rollups == 1
    old = CheckResult.objects.create(kind=CheckKind.SERVER_HEALTH, status=Status.OK)
    CheckResult.objects.filter(pk=old.pk).update(created_at=BASE)
    CheckResult.objects.create(kind=CheckKind.SERVER_HEALTH, status=Status.OK, created_at=BASE + timedelta(days=29))
    assert prune(BASE + timedelta(days=30, hours=1)).results == 1


def test_a_minute_roll_up_without_its_hour_is_kept():
    PointRollup.objects.create(
        resolution=Resolution.MINUTE, metric="up", target="server:1", bucket=BASE, count=1, sum=1, min=1, max=1
    )
    assert prune(BASE + timedelta(days=30)).minute_rollups == 0
    assert PointRollup.objects.count() == 1


def test_the_maintenance_task_rolls_up_then_prunes(settings):
    now = datetime.now(tz=UTC)
    old = floor_to(now - timedelta(hours=settings.MONITORING_RAW_RETENTION_HOURS + 2), timedelta(hours=1))
    Point.objects.create(metric="up", target="server:1", time=old, value=1.0)
    summary = roll_up_and_prune.apply().result
    assert summary["minute_rollups"] == 1 and summary["hour_rollups"] == 1
    assert summary["pruned_points"] == 1
    assert not Point.objects.exists()
    assert PointRollup.objects.filter(target="server:1").count() == 2


def test_a_raw_retention_shorter_than_two_hours_stops_the_start(tmp_path):
    from tests.test_settings import start_with

    result = start_with(MODELHUB_MONITORING_RAW_RETENTION_HOURS="1", MODELHUB_VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "MODELHUB_MONITORING_RAW_RETENTION_HOURS=1 must be at least 2" in result.stderr.splitlines()[-1]
