"""Helpers shared by the benchmarks in bench/ (not a benchmark itself).

Every benchmark runs against the services the test command uses: Postgres at
127.0.0.1:5432 (user postgres, trust auth) and a real local Triton. Each one
gets its own database (``modelhub_bench_<name>``), dropped and created afresh
on every run, so runs are comparable and never touch the development or test
databases. Override the server with ``BENCH_DATABASE_URL`` (its path is
replaced by the benchmark's database name).

The last line a benchmark prints is ``key=value`` pairs: :func:`report`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"

# A python-backend model that doubles its FP32 input (loads in ~1 s on CPU).
DOUBLER_MODEL_PY = """\
import numpy as np
import triton_python_backend_utils as pb_utils

FACTOR = {factor}


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            y = pb_utils.Tensor("OUTPUT", (x * FACTOR).astype(np.float32))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
"""

DOUBLER_MANIFEST = {
    "backend": "python",
    "max_batch_size": 0,
    "inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [-1]}],
    "outputs": [{"name": "OUTPUT", "datatype": "FP32", "dims": [-1]}],
    "provenance": {"git_commit": "0123abcd", "ci_run_url": "https://ci.example.com/runs/1"},
    "metadata": {"bench": True},
}


def log(message: str) -> None:
    """Progress goes to stderr; stdout's last line is the figures."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def report(**figures: float | int) -> None:
    """Print the figures as ``key=value`` pairs on one (the last) line of stdout."""
    parts = []
    for key, value in figures.items():
        parts.append(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")
    print(" ".join(parts), flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- database -----------------------------------------------------------------
def database_url(name: str) -> str:
    """The URL of the benchmark's own database on the test command's Postgres."""
    parts = urlsplit(os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER_URL))
    return urlunsplit(parts._replace(path=f"/{name}"))


def recreate_database(url: str) -> None:
    """Drop (closing other sessions) and create the database ``url`` names."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(parts.path.lstrip("/"))))


@contextlib.contextmanager
def scratch_database(name: str, keep: bool = False) -> Iterator[str]:
    """A fresh database for one run, dropped afterwards (unless ``keep``); yields its URL."""
    url = database_url(name)
    recreate_database(url)
    try:
        yield url
    finally:
        if "django" in sys.modules:  # this process's Django connections hold the database open
            from django.db import connections

            connections.close_all()
        if keep:
            log(f"kept database {name}")
        else:
            drop_database(url)


# -- environment and Django ---------------------------------------------------
def bench_env(database: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for ModelHub processes of a benchmark (web server, manage.py)."""
    # whitenoise warns on every start if the static root does not exist.
    (var_dir / "staticfiles").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="modelhub.settings",
        DATABASE_URL=database,
        MODELHUB_VAR_DIR=str(var_dir),
        CELERY_BROKER_URL="memory://localhost/",
        MODELHUB_LOG_LEVEL="WARNING",
        # With eager Celery the sample after a load would sleep its settle delay inside the
        # load being timed; a worker runs it later, off the load's path.
        MODELHUB_MONITORING_MEMORY_SETTLE_S="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def setup_django(env: dict[str, str]) -> None:
    """Configure and set up Django in *this* process with ``env``'s settings."""
    os.environ.update(env)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import django

    django.setup()


def migrate() -> None:
    """Migrate the (already set-up) database of this process."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def create_user(username: str = "bench"):
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(
        username=username, defaults={"is_staff": True, "is_superuser": True, "email": f"{username}@example.com"}
    )
    return user


def create_token(username: str, scopes: str = "read,upload,deploy,admin", name: str = "bench") -> str:
    """Make an API token with the project's management command; return its text.

    The command prints the token once: ``mh_<prefix>_<secret>`` (or, failing
    that pattern, the longest whitespace-free word of its output).
    """
    import io
    import re

    from django.core.management import call_command

    out = io.StringIO()
    call_command("create_api_token", user=username, scopes=scopes, name=name, stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    found = re.search(r"\bmh_[A-Za-z0-9]+_[A-Za-z0-9]+\b", text)
    token = found.group(0) if found else max((w.strip("'\"`.,:;()[]") for w in text.split()), key=len, default="")
    if len(token) < 20:
        raise RuntimeError(f"create_api_token printed no token I can recognise:\n{text}")
    return token


def api_available() -> bool:
    """Whether the REST API and its token command exist yet."""
    from django.core.management import get_commands

    return "create_api_token" in get_commands()


# -- web server ---------------------------------------------------------------
class WebServer:
    """ModelHub under gunicorn (1 worker, 4 threads) on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 1, threads: int = 4):
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "modelhub.wsgi",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--timeout",
            "900",
            "--log-level",
            "warning",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> WebServer:
        with open(self.log_path, "ab") as logfile:
            self.proc = subprocess.Popen(
                self.cmd, cwd=REPO, env=self.env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not listen within {timeout:.0f} s:\n{self.log_tail()}")

    def processes(self):
        """The gunicorn master and its workers, as psutil processes."""
        import psutil

        assert self.proc is not None
        master = psutil.Process(self.proc.pid)
        return [master, *master.children(recursive=True)]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, size: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-size:]
        return ""

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def workdir(name: str, keep: bool = False) -> Iterator[Path]:
    """A fresh temporary folder for one run (``MODELHUB_VAR_DIR`` and scratch files).

    ``BENCH_TMPDIR`` chooses where (it must be on a disk with room for the
    upload benchmark's ~3 GiB, not a small tmpfs).
    """
    path = Path(tempfile.mkdtemp(prefix=f"modelhub-bench-{name}-", dir=os.environ.get("BENCH_TMPDIR")))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
