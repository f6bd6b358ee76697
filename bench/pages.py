"""The operator pages at scale: p95 server time and queries of the overview, model and server pages.

    python bench/pages.py [--models 1000] [--versions 20] [--servers 50] [--checks 100000] [--requests 60]

What it does, in one run on a fresh database (``modelhub_bench_pages``):

* seeds through the ORM (``bulk_create``): 1,000 models x 20 versions with their
  tensors and aliases (the seeding of ``bench/list_models.py``), the newest version
  of each deployed on one of 50 servers (20 deployments per server), 100,000 check
  results spread over the last 7 days across every kind, server and deployment, and
  200 firing alerts;
* counts the SQL queries of each page with 5 % of the rows seeded and again with all
  of them: the counts must not grow with the rows (an N+1 query would);
* times ``--requests`` GETs of each page (after 5 warm-up requests) through
  Django's test ``Client`` in this process, signed in as a viewer: the server's
  time for the page (URL resolving, middleware, queries, template), no network.
  The servers point at 127.0.0.1:9, where nothing listens: the server page's live
  call to Triton's repository index is refused at once, as for a dead server.

Last line: ``page_p95_ms=<float>`` (the worst page's p95) ``page_queries_max=<int>``
(the most queries any page made), then each page's p95. Targets: <= 150 and <= 30.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_env, log, migrate, percentile, report, scratch_database, setup_django, workdir
from list_models import BATCH, seed


def seed_servers(count: int):
    from modelhub.serving.models import InferenceServer

    return InferenceServer.objects.bulk_create(
        [
            InferenceServer(name=f"triton-{i:02d}", base_url="http://127.0.0.1:9", backends=["python"])
            for i in range(count)
        ]
    )


def seed_models(first: int, last: int, versions: int, user, servers) -> None:
    """Models first..last-1; the newest version of each deployed on one server, in turn."""
    per_server = max(1, (last - first) // len(servers))
    for i, server in enumerate(servers):
        start = first + i * per_server
        end = last if i == len(servers) - 1 else min(last, start + per_server)
        if start < end:
            seed(start, end, versions, user, server)


def seed_checks(count: int) -> None:
    """`count` check results over the last 7 days, every kind, on every server and deployment."""
    from django.utils import timezone

    from modelhub.monitoring.models import CheckKind, CheckResult, Status
    from modelhub.serving.models import Deployment

    rng = random.Random(8)
    now = timezone.now()
    deployments = list(Deployment.objects.values_list("pk", "server_id", "version_id"))
    kinds = list(CheckKind.values)
    statuses = [Status.OK] * 8 + [Status.WARN, Status.FAIL]
    rows = []
    for i in range(count):
        deployment, server, version = deployments[i % len(deployments)]
        kind = kinds[i % len(kinds)]
        on_server = kind in (CheckKind.SERVER_HEALTH, CheckKind.METRICS, CheckKind.MEMORY)
        status = rng.choice(statuses)
        rows.append(
            CheckResult(
                kind=kind,
                status=status,
                server_id=server,
                deployment_id=None if on_server else deployment,
                version_id=None if on_server else version,
                value=rng.random() * 100,
                message="" if status == Status.OK else "connection refused",
                created_at=now - timedelta(seconds=rng.random() * 7 * 86400),
            )
        )
        if len(rows) == BATCH:
            CheckResult.objects.bulk_create(rows)
            rows = []
    CheckResult.objects.bulk_create(rows)


def seed_alerts(count: int) -> None:
    from django.utils import timezone

    from modelhub.alerts.defaults import ensure_default_rules
    from modelhub.alerts.models import Alert, AlertRule, AlertState
    from modelhub.serving.models import InferenceServer

    ensure_default_rules()
    rule = AlertRule.objects.filter(signal="server_down").first()
    alerted = Alert.objects.filter(rule=rule).values("server_id")
    servers = list(InferenceServer.objects.exclude(pk__in=alerted).order_by("name")[: count - alerted.count()])
    Alert.objects.bulk_create(
        [
            Alert(
                rule=rule,
                target=f"server:{s.pk}",
                target_label=s.name,
                server=s,
                state=AlertState.FIRING,
                since=timezone.now() - timedelta(minutes=i),
                last_message="connection refused",
            )
            for i, s in enumerate(servers)
        ]
    )


def pages() -> dict[str, str]:
    from django.urls import reverse

    from modelhub.serving.models import InferenceServer

    server = InferenceServer.objects.order_by("name").first()
    return {
        "overview": reverse("ui:overview"),
        "model": reverse("ui:model-detail", kwargs={"name": "bench-0000"}),
        "server": reverse("ui:server-detail", kwargs={"name": server.name}),
    }


def count_queries(client, path: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.content[:500]!r}")
    return len(ctx.captured_queries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--checks", type=int, default=100_000)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and the database")
    args = parser.parse_args()

    with workdir("pages", keep=args.keep) as tmp, scratch_database("modelhub_bench_pages", keep=args.keep) as db:
        return run(tmp, db, args)


def run(tmp: Path, db: str, args: argparse.Namespace) -> int:
    setup_django(bench_env(db, tmp / "var"))
    migrate()

    from django.contrib.auth.models import Group, User
    from django.test import Client

    viewer = User.objects.create_user("bench-viewer")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client = Client()
    client.force_login(viewer)

    started = time.perf_counter()
    servers = seed_servers(args.servers)
    small = max(args.servers, args.models // 20)
    seed_models(0, small, args.versions, viewer, servers)
    seed_checks(args.checks // 20)
    seed_alerts(min(args.alerts // 20, args.servers))
    paths = pages()
    for path in paths.values():
        count_queries(client, path)  # first-request caches (content types, templates)
    queries_small = {name: count_queries(client, path) for name, path in paths.items()}

    seed_models(small, args.models, args.versions, viewer, servers)
    seed_checks(args.checks - args.checks // 20)
    seed_alerts(min(args.alerts, args.servers))
    log(
        f"seeded {args.models} models x {args.versions} versions, {args.servers} servers, "
        f"{args.checks} check results in {time.perf_counter() - started:.1f} s"
    )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    queries_full = {name: count_queries(client, path) for name, path in paths.items()}
    for name in paths:
        log(f"{name}: {queries_small[name]} queries with 5 % of the rows, {queries_full[name]} with all")
        if queries_small[name] != queries_full[name]:
            log(f"WARNING: the {name} page's query count changes with the rows: an N+1 query")

    p95s = {}
    for name, path in paths.items():
        times = []
        for i in range(5 + args.requests):
            begun = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - begun) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"GET {path} answered {response.status_code}")
            if i >= 5:
                times.append(elapsed)
        p95s[name] = percentile(times, 95)
        log(f"{name} ({path}): median {statistics.median(times):.1f} ms, p95 {p95s[name]:.1f} ms")
    report(
        page_p95_ms=max(p95s.values()),
        page_queries_max=max(max(queries_small.values()), max(queries_full.values())),
        **{f"{name}_p95_ms": value for name, value in p95s.items()},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
