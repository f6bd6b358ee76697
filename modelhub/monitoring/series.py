"""One series (metric x target) over a time range, bucketed in SQL: what a chart reads.

A chart never gets more than `max_points` buckets. The bucket width is the
smallest "round" width (1 s, 5 s, … 1 min, … 1 h, … 1 day, …) that keeps the
range within `max_points` buckets, aligned on the Unix epoch so that a chart's
buckets do not move as its range slides. The source follows the width and what
retention has kept: raw points for short recent ranges, per-minute roll-ups for
middle ones, per-hour roll-ups for long ones (a 30-day chart reads ~720 hour
rows per series, not ~90,000 raw points). Roll-ups are aggregated as sums and
counts, so a bucket's mean is the mean of its points, not a mean of means.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, DateTimeField, Func, Max, Min, Sum
from django.utils import timezone

from modelhub.monitoring.models import Point, PointRollup, Resolution
from modelhub.registry.models import EvaluationMetric

MAX_POINTS = 2_000
RAW = "raw"
GRANULARITY = {RAW: 1, Resolution.MINUTE: 60, Resolution.HOUR: 3600}
_ROUND_WIDTHS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]

# The series each kind of target has (the conventions of modelhub.monitoring.checks):
# what `series_for_target` looks for, and the names the series API accepts before any
# point exists. A metric outside these is accepted where its points exist.
SERVER_METRICS = (
    "up",
    "cpu_util",
    "memory_used_bytes",
    "memory_total_bytes",
    "gpu_util",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
)
DEPLOYMENT_METRICS = (
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "requests",
    "failures",
    "throughput_rps",
    "failure_rate",
    "queue_ms",
    "compute_input_ms",
    "compute_infer_ms",
    "compute_output_ms",
)
# Per-feature PSI goes under "drift_psi:<feature>" (accepted where its points exist).


def psi_metric(feature: str) -> str:
    """The series of one feature's PSI (a metric name holds 64 characters)."""
    return f"drift_psi:{feature}"[:64]


DRIFT_METRICS = ("drift_psi_max", "drift_ks_max", "drift_js_outputs", "drift_share", "live_accuracy")
KNOWN_METRICS: dict[str, tuple[str, ...]] = {
    "server": SERVER_METRICS,
    "deployment": DEPLOYMENT_METRICS,
    "version": (*EvaluationMetric.values, *DRIFT_METRICS),
}


class Bucket(Func):
    """The start of the `seconds`-wide bucket (aligned on the Unix epoch) a time falls in."""

    output_field = DateTimeField()

    def __init__(self, expression, seconds: int):
        # An int, inlined into the SQL: the GROUP BY then repeats the very same text.
        self.seconds = int(seconds)
        super().__init__(expression)

    def as_postgresql(self, compiler, connection, **extra_context):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"date_bin(interval '{self.seconds} seconds', {sql}, timestamptz 'epoch')", params

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django keeps SQLite datetimes as UTC text; back to that text, whole seconds.
        sql, params = compiler.compile(self.source_expressions[0])
        n = self.seconds
        return f"datetime((CAST(strftime('%%s', {sql}) AS INTEGER) / {n}) * {n}, 'unixepoch')", params


@dataclass(frozen=True)
class SeriesPoint:
    time: datetime
    mean: float
    min: float
    max: float
    count: int


@dataclass(frozen=True)
class Series:
    metric: str
    target: str
    resolution: str  # raw, minute or hour: what the buckets were computed from
    bucket_seconds: int
    start: datetime
    end: datetime
    points: list[SeriesPoint]


def floor_seconds(moment: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, tz=UTC)


def bucket_count(start: datetime, end: datetime, seconds: int) -> int:
    """How many epoch-aligned buckets of `seconds` the range [start, end) touches."""
    first = int(start.timestamp()) // seconds
    last = (int(end.timestamp()) - (0 if end.timestamp() % 1 else 1)) // seconds
    return max(last - first + 1, 1)


def bucket_width(start: datetime, end: datetime, max_points: int, at_least: int = 1) -> int:
    """The smallest round width, a multiple of `at_least`, giving at most `max_points` buckets."""
    widths = [w for w in _ROUND_WIDTHS if w >= at_least and w % at_least == 0]
    for width in widths:
        if bucket_count(start, end, width) <= max_points:
            return width
    width = 2 * 86400
    while bucket_count(start, end, width) > max_points:
        width *= 2
    return width


def source_for(start: datetime, width: int, now: datetime) -> str:
    """The finest source that is at most as fine as `width` and still holds `start`."""
    raw_kept_from = now - timedelta(hours=settings.MONITORING_RAW_RETENTION_HOURS)
    minutes_kept_from = now - timedelta(days=settings.MONITORING_MINUTE_RETENTION_DAYS)
    if width < GRANULARITY[Resolution.MINUTE] and start >= raw_kept_from:
        return RAW
    if width < GRANULARITY[Resolution.HOUR] and start >= minutes_kept_from:
        return Resolution.MINUTE
    return Resolution.HOUR


Buckets = dict[datetime, tuple[int, float, float, float]]  # bucket start -> (count, sum, min, max)


def plan(start: datetime, end: datetime, max_points: int, now: datetime) -> tuple[str, int]:
    """(source, bucket width) of a read of [start, end) in at most `max_points` buckets."""
    source = source_for(start, bucket_width(start, end, max_points), now)
    return source, bucket_width(start, end, max_points, at_least=GRANULARITY[source])


def read_buckets(
    metrics: list[str],
    targets: list[str],
    start: datetime,
    end: datetime,
    max_points: int = MAX_POINTS,
    now: datetime | None = None,
) -> dict[tuple[str, str], Buckets]:
    """{(metric, target): buckets} of every series in metrics x targets that has points in [start, end).

    One pass over the roll-ups and one over the raw points for all the series together, so a
    chart of many series costs the same few queries as one of a single series.
    """
    source, width = plan(start, end, max_points, now or timezone.now())
    if source == RAW:
        return _raw_buckets(metrics, targets, start, end, width)
    # Roll-ups up to where the last roll-up got to, raw points after it: a chart ending
    # now shows the last minute too, and shows something before the first roll-up ever.
    through = rolled_up_through()
    boundary = min(floor_seconds(through, GRANULARITY[source]), end) if through else start
    found = _rollup_buckets(source, metrics, targets, start, boundary, width) if boundary > start else {}
    for key, buckets in _raw_buckets(metrics, targets, max(start, boundary), end, width).items():
        found[key] = merged(found.get(key, {}), buckets)
    return found


def read_series(
    metric: str, target: str, start: datetime, end: datetime, max_points: int = MAX_POINTS, now: datetime | None = None
) -> Series:
    """Points of (metric, target) in [start, end), at most `max_points` buckets, oldest first."""
    if end <= start:
        raise ValueError(f"the range must end after it starts (start {start.isoformat()}, end {end.isoformat()})")
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, not {max_points}")
    now = now or timezone.now()
    source, width = plan(start, end, max_points, now)
    buckets = read_buckets([metric], [target], start, end, max_points, now).get((metric, target), {})
    points = [SeriesPoint(moment, total / n, low, high, n) for moment, (n, total, low, high) in sorted(buckets.items())]
    return Series(metric, target, source, width, start, end, points)


def rolled_up_through() -> datetime | None:
    """Where the per-minute roll-ups end: points from here on are only raw (yet)."""
    newest = PointRollup.objects.filter(resolution=Resolution.MINUTE).aggregate(b=Max("bucket"))["b"]
    return None if newest is None else newest + timedelta(minutes=1)


def _merge(a: tuple, b: tuple) -> tuple:
    return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]))


def merged(*series: Buckets) -> Buckets:
    """Several series as one (a version served by two deployments; roll-ups and the raw points
    after them): the mean of all their points."""
    out: Buckets = {}
    for buckets in series:
        for moment, values in buckets.items():
            out[moment] = _merge(out[moment], values) if moment in out else values
    return out


def _raw_buckets(metrics, targets, start: datetime, end: datetime, width: int) -> dict[tuple[str, str], Buckets]:
    """The raw points of [start, end), per series."""
    if start >= end:
        return {}
    rows = Point.objects.filter(metric__in=metrics, target__in=targets, time__gte=start, time__lt=end)
    totals = {"n": Count("value"), "total": Sum("value"), "low": Min("value"), "high": Max("value")}
    return _by_series(rows, Bucket("time", width), totals)


def _rollup_buckets(resolution, metrics, targets, start, end, width: int) -> dict[tuple[str, str], Buckets]:
    """The roll-ups from the one holding `start` to `end`, per series.

    Sums of sums and of counts: the mean is then the mean of the points, not of the roll-ups.
    """
    rows = PointRollup.objects.filter(
        resolution=resolution,
        metric__in=metrics,
        target__in=targets,
        bucket__gte=floor_seconds(start, GRANULARITY[resolution]),
        bucket__lt=end,
    )
    totals = {"n": Sum("count"), "total": Sum("sum"), "low": Min("min"), "high": Max("max")}
    return _by_series(rows, Bucket("bucket", width), totals)


def _by_series(rows, bucket: Bucket, totals: dict) -> dict[tuple[str, str], Buckets]:
    grouped = rows.order_by().values("metric", "target", moment=bucket).annotate(**totals)
    found: dict[tuple[str, str], Buckets] = {}
    # Tuples, not dicts: a 30-day chart of several series reads thousands of rows.
    for metric, target, moment, *values in grouped.values_list("metric", "target", "moment", *totals):
        found.setdefault((metric, target), {})[moment] = tuple(values)
    return found


def target_kind(target: str) -> str:
    return target.partition(":")[0]


def series_for_target(target: str) -> list[str]:
    """The metrics that have points (raw or rolled up) for `target`, in a stable order.

    One indexed EXISTS per metric this kind of target may have: "which metrics does
    this target have" is not what the (metric, target, time) index is ordered by.
    """
    found = []
    for metric in KNOWN_METRICS.get(target_kind(target), ()):
        if has_points(metric, target):
            found.append(metric)
    return found


def has_points(metric: str, target: str) -> bool:
    return (
        Point.objects.filter(metric=metric, target=target).exists()
        or PointRollup.objects.filter(metric=metric, target=target).exists()
    )
