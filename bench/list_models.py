"""GET /api/v1/models/ with 1,000 models x 20 versions: p95 latency and queries per request.

    python bench/list_models.py [--models 1000] [--versions 20] [--requests 200]

What it does, in one run on a fresh database (``modelhub_bench_list``):

* seeds the registry through the ORM (``bulk_create``, in this process): models
  ``bench-0000`` ..., each with 20 versions (artifact name, sha256, size,
  python backend, provenance, metrics metadata), one input and one output
  tensor per version, aliases ``production`` (newest) and ``staging`` (the one
  before), and the newest version deployed (observed loaded) on one server;
* counts the SQL queries of one ``GET /api/v1/models/`` (default page) through
  Django's test ``Client`` in this process (``CaptureQueriesContext``), first
  with 100 models seeded, then with all of them, and once more with a page of
  5 rows: the three counts must be equal (a count that grows with rows or with
  the page is an N+1 query);
* starts ModelHub under gunicorn (1 worker, 4 threads) and times 200
  sequential ``GET /api/v1/models/`` (default page, keep-alive, a read-scoped
  API token) after 20 warm-up requests.

Last line: ``list_models_p95_ms=<float> queries_per_request=<int>`` (the largest
of the three counts), then the median. Targets: p95 <= 100 ms, and a query count that
does not grow with rows.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    WebServer,
    api_available,
    bench_env,
    create_token,
    create_user,
    log,
    migrate,
    percentile,
    report,
    scratch_database,
    setup_django,
    workdir,
)

URL = "/api/v1/models/"
BATCH = 5000


def seed(first: int, last: int, versions: int, user, server) -> None:
    """Models number first..last-1, each with `versions` versions and their rows."""
    from django.db import transaction
    from django.utils import timezone

    from modelhub.registry.models import Alias, AliasMove, Model, ModelVersion, TensorSpec
    from modelhub.serving.models import Deployment

    now = timezone.now()
    with transaction.atomic():
        models = Model.objects.bulk_create(
            [
                Model(name=f"bench-{i:04d}", description=f"benchmark model {i}", task_kind="classification")
                for i in range(first, last)
            ],
            batch_size=BATCH,
        )
        rows = []
        for model in models:
            for number in range(1, versions + 1):
                sha = hashlib.sha256(f"{model.name}/{number}".encode()).hexdigest()
                rows.append(
                    ModelVersion(
                        model=model,
                        number=number,
                        artifact=f"artifacts/{model.name}/{sha}.zip",
                        artifact_format="zip",
                        sha256=sha,
                        size=10_000 + number,
                        version_files={"model.py": 1000 + number},
                        backend="python",
                        max_batch_size=8,
                        triton_config={"instance_group": [{"kind": "KIND_CPU", "count": 1}]},
                        git_commit=sha[:40],
                        ci_run_url=f"https://ci.example.com/runs/{number}",
                        metadata={"metrics": {"accuracy": 0.9 + number / 1000}},
                        created_by=user,
                    )
                )
        created = ModelVersion.objects.bulk_create(rows, batch_size=BATCH)
        TensorSpec.objects.bulk_create(
            [
                TensorSpec(version=v, direction=direction, position=0, name=name, datatype="FP32", dims=[-1, 64])
                for v in created
                for direction, name in (("input", "INPUT"), ("output", "OUTPUT"))
            ],
            batch_size=BATCH,
        )
        newest = {v.model_id: v for v in created if v.number == versions}
        previous = {v.model_id: v for v in created if v.number == max(1, versions - 1)}
        Alias.objects.bulk_create(
            [Alias(model_id=m, name="production", version=v) for m, v in newest.items()]
            + [Alias(model_id=m, name="staging", version=v) for m, v in previous.items()],
            batch_size=BATCH,
        )
        AliasMove.objects.bulk_create(
            [
                AliasMove(model_id=m, alias="production", from_version=None, to_version=v, moved_by="system")
                for m, v in newest.items()
            ],
            batch_size=BATCH,
        )
        Deployment.objects.bulk_create(
            [
                Deployment(version=v, server=server, desired="loaded", observed="loaded", observed_at=now)
                for v in newest.values()
            ],
            batch_size=BATCH,
        )


def count_queries(client, path: str, token: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        resp = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
    if resp.status_code != 200:
        raise RuntimeError(f"GET {path} answered {resp.status_code}: {resp.content[:500]!r}")
    return len(ctx.captured_queries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and the database")
    args = parser.parse_args()

    with workdir("list", keep=args.keep) as tmp, scratch_database("modelhub_bench_list", keep=args.keep) as db:
        return run(tmp, db, args)


def run(tmp: Path, db: str, args: argparse.Namespace) -> int:
    env = bench_env(db, tmp / "var")
    setup_django(env)
    migrate()
    if not api_available():
        print("list_models: the REST API (manage.py create_api_token) does not exist yet", file=sys.stderr)
        return 1

    from django.test import Client

    from modelhub.serving.models import InferenceServer

    user = create_user("bench")
    token = create_token("bench", scopes="read", name="bench-list")
    server = InferenceServer.objects.create(name="bench-triton", base_url="http://127.0.0.1:9", backends=["python"])
    client = Client()

    small = min(100, args.models)
    started = time.perf_counter()
    seed(0, small, args.versions, user, server)
    count_queries(client, URL, token)  # warm-up: first-request caches (content types, …)
    queries_small = count_queries(client, URL, token)
    seed(small, args.models, args.versions, user, server)
    log(f"seeded {args.models} models x {args.versions} versions in {time.perf_counter() - started:.1f} s")
    queries_full = count_queries(client, URL, token)
    queries_page5 = count_queries(client, URL + "?limit=5", token)
    log(
        f"queries per GET {URL}: {queries_small} with {small} models, {queries_full} with {args.models} models, "
        f"{queries_page5} for a page of 5 rows"
    )
    if len({queries_small, queries_full, queries_page5}) > 1:
        log("WARNING: the query count changes with the rows: an N+1 query somewhere in the list")
    from django.db import connections

    connections.close_all()

    times: list[float] = []
    with WebServer(env, tmp / "gunicorn.log") as web, requests.Session() as http:
        http.trust_env = False
        http.headers["Authorization"] = f"Bearer {token}"
        for i in range(20 + args.requests):
            started = time.perf_counter()
            resp = http.get(web.url + URL, timeout=30)
            elapsed = time.perf_counter() - started
            if resp.status_code != 200:
                raise RuntimeError(f"GET {URL} answered {resp.status_code}: {resp.text[:500]}\n{web.log_tail()}")
            if i == 0:
                body = resp.json()
                page = body.get("results", []) if isinstance(body, dict) else body
                total = body.get("count", "?") if isinstance(body, dict) else "?"
                log(f"first page: {len(page)} rows, {len(resp.content)} bytes, count={total}")
            if i >= 20:
                times.append(elapsed * 1000)
    p95 = percentile(times, 95)
    log(f"{len(times)} requests: median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {max(times):.1f} ms")
    report(
        list_models_p95_ms=p95,
        queries_per_request=max(queries_full, queries_small, queries_page5),
        list_models_median_ms=statistics.median(times),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
