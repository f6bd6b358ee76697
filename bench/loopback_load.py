"""Load on loopback: 50 concurrent CI uploads, then 200 concurrent page loads, no errors.

    python bench/loopback_load.py [--uploads 50] [--pages 200] [--workers 4] [--threads 4] [--keep]

What it does, in one run on a fresh database (``modelhub_bench_loopback_load``):

* starts ModelHub as production runs it: gunicorn ``modelhub.wsgi`` with
  ``docker/gunicorn.conf.py`` (4 workers x 4 threads here, on a free loopback
  port; Celery on a memory broker: an upload needs no worker);
* (a) uploads: ``--uploads`` threads, released together, each POST a small
  python-backend zip and its manifest to ``/api/v1/models/load-<i>/versions/``
  with an upload-scoped token (what ``scripts/modelhub-ci.sh`` sends);
* (b) pages: ``--pages`` threads, released together, each GET one page as a
  signed-in viewer, in turn: the overview, the models list, a model page, a
  version page, the servers list.

An error is an exception (refused, reset, timed out) or an answer that is not
2xx/3xx. Per phase it prints the count, errors, wall seconds and p50/p95 ms.
Last line: ``uploads_errors uploads_wall_s uploads_p95_ms pages_errors
pages_wall_s pages_p95_ms``. tests/faults/test_loopback_load.py runs the same
functions against the test database.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DOUBLER_MANIFEST,
    DOUBLER_MODEL_PY,
    REPO,
    WebServer,
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

GUNICORN_CONF = REPO / "docker" / "gunicorn.conf.py"
REQUEST_TIMEOUT_S = 120


@dataclass
class Phase:
    """What one phase measured: every request's milliseconds and every error's description."""

    name: str
    count: int
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def p(self, pct: float) -> float:
        return percentile(self.latencies_ms, pct) if self.latencies_ms else 0.0

    def summary(self) -> str:
        return (
            f"{self.name}: count={self.count} errors={len(self.errors)} wall_s={self.wall_s:.2f} "
            f"p50_ms={self.p(50):.0f} p95_ms={self.p(95):.0f} statuses={dict(sorted(Counter(self.statuses).items()))}"
        )


def start_web(env: dict[str, str], log_path: Path, *, workers: int = 4, threads: int = 4) -> WebServer:
    """gunicorn with production's config file (its bind, workers and threads overridden here)."""
    server = WebServer(env, log_path, workers=workers, threads=threads)
    server.cmd[3:3] = ["--config", str(GUNICORN_CONF)]  # after "-m gunicorn modelhub.wsgi"
    # The config file's /dev/shm heartbeat folder may be missing outside a container.
    if not Path("/dev/shm").is_dir():
        server.cmd += ["--worker-tmp-dir", str(log_path.parent)]
    return server.start()


def write_artifacts(folder: Path, count: int) -> list[Path]:
    """`count` small python-backend zips, each with different bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"load-{i}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("1/model.py", DOUBLER_MODEL_PY.format(factor=i + 2))
        paths.append(path)
    return paths


def upload_model_name(i: int) -> str:
    return f"load-{i}"


def _concurrently(phase: Phase, calls: list[Callable[[], requests.Response]], describe: list[str]) -> Phase:
    """Run every call on its own thread, all released at once; fill `phase` in."""
    gate = threading.Barrier(len(calls))
    lock = threading.Lock()

    def one(i: int) -> None:
        gate.wait()
        begun = time.perf_counter()
        try:
            answer = calls[i]()
        except requests.RequestException as exc:
            answer, error = None, f"{describe[i]}: {type(exc).__name__}: {exc}"
        else:
            ok = answer.status_code < 400  # 2xx and 3xx
            error = None if ok else f"{describe[i]}: HTTP {answer.status_code} {answer.text[:300]}"
        elapsed = (time.perf_counter() - begun) * 1000
        with lock:
            phase.latencies_ms.append(elapsed)
            if answer is not None:
                phase.statuses.append(answer.status_code)
            if error:
                phase.errors.append(error)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        list(pool.map(one, range(len(calls))))
    phase.wall_s = time.perf_counter() - started
    return phase


def run_uploads(url: str, token: str, artifacts: list[Path], manifest: dict) -> Phase:
    """One CI upload per artifact, all at once, artifact i to model ``load-<i>``."""
    headers = {"Authorization": f"Bearer {token}"}
    body = json.dumps(manifest)

    def call(i: int) -> Callable[[], requests.Response]:
        def post() -> requests.Response:
            with open(artifacts[i], "rb") as artifact:
                return requests.post(
                    f"{url}/api/v1/models/{upload_model_name(i)}/versions/",
                    headers=headers,
                    files={"artifact": (artifacts[i].name, artifact, "application/zip")},
                    data={"manifest": body},
                    timeout=REQUEST_TIMEOUT_S,
                )

        return post

    calls = [call(i) for i in range(len(artifacts))]
    describe = [f"POST {upload_model_name(i)}" for i in range(len(artifacts))]
    return _concurrently(Phase("uploads", len(calls)), calls, describe)


def page_paths(model: str) -> list[str]:
    """The pages an operator opens: overview, models list, a model, a version, servers."""
    return ["/", "/models/", f"/models/{model}/", f"/models/{model}/versions/1/", "/servers/"]


def run_pages(url: str, cookies: dict[str, str], paths: list[str], count: int) -> Phase:
    """`count` GETs at once, through `paths` in turn, with the signed-in session's cookies."""

    def call(path: str) -> Callable[[], requests.Response]:
        return lambda: requests.get(url + path, cookies=cookies, timeout=REQUEST_TIMEOUT_S, allow_redirects=False)

    chosen = [paths[i % len(paths)] for i in range(count)]
    return _concurrently(Phase("pages", count), [call(p) for p in chosen], [f"GET {p}" for p in chosen])


def session_cookies(user) -> dict[str, str]:
    """A signed-in session for `user` (stored in the database the web server reads)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def viewer(username: str = "load-viewer"):
    from django.contrib.auth.models import Group, User

    user, _ = User.objects.get_or_create(username=username)
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    return user


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and the database")
    args = parser.parse_args()
    with (
        workdir("loopback-load", keep=args.keep) as tmp,
        scratch_database("modelhub_bench_loopback_load", keep=args.keep) as db,
    ):
        return run(tmp, db, args)


def run(tmp: Path, db: str, args: argparse.Namespace) -> int:
    env = bench_env(db, tmp / "var")
    setup_django(env)
    migrate()
    create_user("bench")
    token = create_token("bench", scopes="read,upload", name="loopback-load")
    cookies = session_cookies(viewer())
    from django.db import connections

    connections.close_all()
    artifacts = write_artifacts(tmp / "artifacts", args.uploads)

    server = start_web(env, tmp / "gunicorn.log", workers=args.workers, threads=args.threads)
    try:
        requests.get(f"{server.url}/login/", timeout=REQUEST_TIMEOUT_S)  # one worker has imported the app
        log(f"gunicorn at {server.url}: {args.workers} workers x {args.threads} threads")
        uploads = run_uploads(server.url, token, artifacts, DOUBLER_MANIFEST)
        print(uploads.summary(), flush=True)
        pages = run_pages(server.url, cookies, page_paths(upload_model_name(0)), args.pages)
        print(pages.summary(), flush=True)
    finally:
        server.stop()
    for error in (uploads.errors + pages.errors)[:20]:
        log(f"error: {error}")
    report(
        uploads_errors=len(uploads.errors),
        uploads_wall_s=uploads.wall_s,
        uploads_p95_ms=uploads.p(95),
        pages_errors=len(pages.errors),
        pages_wall_s=pages.wall_s,
        pages_p95_ms=pages.p(95),
    )
    return 0 if not uploads.errors and not pages.errors else 1


if __name__ == "__main__":
    sys.exit(main())
