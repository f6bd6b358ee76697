"""The model page's chart data over 30 days, in a Point table of 10 M rows: server time per page.

    python bench/chart_query.py [--rows 10000000] [--runs 50] [--rebuild]

What it does:

* its own database, ``modelhub_bench_chart`` (``BENCH_DATABASE_URL`` picks the
  server), created and migrated if missing. Unlike the other benchmarks it is
  **kept** between runs: building 10 M points and their roll-ups takes minutes, so
  a marker table (``bench_chart_marker``) says the data is there and a second run
  goes straight to the timing (``--rebuild`` drops and builds it again);
* one model (``bench-chart``, v1 deployed on server ``bench``) whose deployment has
  4 series (latency p50/p95/p99, throughput) of 30 days of 15-second points
  (172,800 each), among other series' points up to ``--rows`` in all, all written
  by ``INSERT … SELECT generate_series`` in SQL;
* per-minute and per-hour roll-ups of every point, in SQL that is the roll-up code's
  own aggregation (``monitoring.rollups._roll_minutes`` / ``_roll_hours``: the same
  ``date_bin`` on the epoch, count, sum, min, max; hours from minutes), then ANALYZE;
* times the charts the model page draws (``rollout`` and ``accuracy`` of the model;
  the version also has 30 daily accuracy points) through the real ``chart_data`` view
  with Django's test ``Client`` in this process, signed in as a viewer, over the
  30 days the data spans: 5 warm-up page loads, then ``--runs`` timed ones.

Last line: ``chart_server_ms=<p95 of a page's chart requests, ms> max_points_per_trace=<int>``
(the median goes to stderr). Targets: <= 150 ms and <= 2,000 points.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_env, database_url, drop_database, log, migrate, percentile, report, setup_django

DATABASE = "modelhub_bench_chart"
MARKER = "bench_chart_marker"
SERIES = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "throughput_rps")
STEP_S = 15
DAYS = 30
# The other points: series of other targets, a point every 5 s, spread over the same 30 days.
OTHER_STEP_S = 5
OTHER_METRICS = ("latency_p95_ms", "throughput_rps", "queue_ms", "cpu_util")


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def built() -> dict | None:
    """The marker of a complete build: its range and target, or None."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [MARKER])
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f"SELECT rows, deployment_id, model_name, ends_at FROM {MARKER}")
        row = cursor.fetchone()
    return None if row is None else dict(zip(("rows", "deployment_id", "model_name", "ends_at"), row, strict=True))


def build(rows: int) -> dict:
    from django.db import connection, transaction
    from django.utils import timezone

    from modelhub.monitoring.rollups import floor_to
    from modelhub.registry.models import Alias, EvaluationSet, Model, ModelVersion
    from modelhub.serving.models import Deployment, InferenceServer

    ends_at = floor_to(timezone.now(), timedelta(minutes=1))
    model = Model.objects.create(name="bench-chart", latency_slo_ms=50)
    version = ModelVersion.objects.create(
        model=model, number=1, artifact="v1.zip", artifact_format="zip", sha256="b" * 64, size=1, backend="python"
    )
    server = InferenceServer.objects.create(name="bench", base_url="http://127.0.0.1:9")
    deployment = Deployment.objects.create(version=version, server=server)
    Alias.objects.create(model=model, name="production", version=version)
    EvaluationSet.objects.create(
        model=model, file="e.npz", file_format="npz", sha256="e" * 64, size=1, rows=1, output="OUTPUT", threshold=0.9
    )
    target = f"deployment:{deployment.pk}"
    ours = DAYS * 86400 // STEP_S
    other_series = max(1, (rows - ours * len(SERIES)) // (DAYS * 86400 // OTHER_STEP_S))
    per_other = (rows - ours * len(SERIES)) // other_series
    with connection.cursor() as cursor:
        log(f"points: 4 series x {ours:,} of {target}")
        for metric in SERIES:
            cursor.execute(
                """INSERT INTO monitoring_point (metric, target, time, value)
                   SELECT %s, %s, %s - make_interval(secs => n * %s), 20 + 10 * random()
                   FROM generate_series(1, %s) AS n""",
                [metric, target, ends_at, STEP_S, ours],
            )
        cursor.execute(  # the daily accuracy check of the version
            """INSERT INTO monitoring_point (metric, target, time, value)
               SELECT 'accuracy', %s, %s - make_interval(days => n), 0.9 + 0.05 * random()
               FROM generate_series(1, %s) AS n""",
            [f"version:{version.pk}", ends_at, DAYS],
        )
        log(f"points: {other_series} other series x {per_other:,} (up to {rows:,} rows)")
        for i in range(other_series):
            cursor.execute(
                """INSERT INTO monitoring_point (metric, target, time, value)
                   SELECT %s, %s, %s - make_interval(secs => n * %s), random() * 100
                   FROM generate_series(1, %s) AS n""",
                [OTHER_METRICS[i % len(OTHER_METRICS)], f"deployment:{100000 + i}", ends_at, OTHER_STEP_S, per_other],
            )
        log("roll-ups: minutes from points, hours from minutes (the roll-up code's aggregation)")
        cursor.execute(
            """INSERT INTO monitoring_pointrollup (resolution, metric, target, bucket, count, sum, min, max)
               SELECT 'minute', metric, target, date_bin(interval '60 seconds', time, timestamptz 'epoch'),
                      count(value), sum(value), min(value), max(value)
               FROM monitoring_point GROUP BY 2, 3, 4"""
        )
        cursor.execute(
            """INSERT INTO monitoring_pointrollup (resolution, metric, target, bucket, count, sum, min, max)
               SELECT 'hour', metric, target, date_bin(interval '3600 seconds', bucket, timestamptz 'epoch'),
                      sum(count), sum(sum), min(min), max(max)
               FROM monitoring_pointrollup WHERE resolution = 'minute' GROUP BY 2, 3, 4"""
        )
        cursor.execute("ANALYZE monitoring_point")
        cursor.execute("ANALYZE monitoring_pointrollup")
        cursor.execute("SELECT count(*) FROM monitoring_point")
        total = cursor.fetchone()[0]
        with transaction.atomic():
            cursor.execute(
                f"CREATE TABLE {MARKER} (rows bigint, deployment_id int, model_name text, ends_at timestamptz)"
            )
            cursor.execute(f"INSERT INTO {MARKER} VALUES (%s, %s, %s, %s)", [total, deployment.pk, model.name, ends_at])
    return built()


def page_load(client, url, marker: dict, start: datetime, end: datetime) -> tuple[float, int]:
    """Server time (ms) of the model page's chart requests, and the largest trace's points."""
    range_params = {"start": start.isoformat(), "end": end.isoformat()}
    charts = [("rollout", f"model:{marker['model_name']}"), ("accuracy", f"model:{marker['model_name']}")]
    began = time.perf_counter()
    largest = 0
    for chart, target in charts:
        response = client.get(url(chart), {"target": target, **range_params})
        if response.status_code != 200:
            raise SystemExit(f"{chart} answered {response.status_code}: {response.content[:300]!r}")
        largest = max([largest, *(len(t["x"]) for t in response.json()["data"])])
    return (time.perf_counter() - began) * 1000, largest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="points in the table, all series together")
    parser.add_argument("--runs", type=int, default=50, help="timed page loads")
    parser.add_argument("--rebuild", action="store_true", help="drop the kept database and build the data again")
    args = parser.parse_args()
    url = database_url(DATABASE)
    if args.rebuild:
        drop_database(url)
    ensure_database(url)
    setup_django(bench_env(url, Path(tempfile.mkdtemp(prefix="bench-chart-"))))
    migrate()
    marker = built()
    if marker is None or marker["rows"] < args.rows * 0.99:
        if marker is not None:
            log("the kept data is smaller than --rows: run again with --rebuild")
            return 2
        began = time.perf_counter()
        marker = build(args.rows)
        log(f"built {marker['rows']:,} points and their roll-ups in {time.perf_counter() - began:.0f} s")
    else:
        log(f"reusing the {marker['rows']:,} points built before (--rebuild to build again)")

    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django.urls import reverse

    viewer, _ = User.objects.get_or_create(username="bench-viewer")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client = Client()
    client.force_login(viewer)
    end = marker["ends_at"]
    start = end - timedelta(days=DAYS)

    def chart_url(chart: str) -> str:
        return reverse("ui:chart-data", args=[chart])

    for _ in range(5):
        page_load(client, chart_url, marker, start, end)
    times, largest = [], 0
    for _ in range(args.runs):
        ms, points = page_load(client, chart_url, marker, start, end)
        times.append(ms)
        largest = max(largest, points)
    log(f"{args.runs} page loads: median {statistics.median(times):.1f} ms, p95 {percentile(times, 95):.1f} ms")
    report(chart_server_ms=percentile(times, 95), max_points_per_trace=largest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
