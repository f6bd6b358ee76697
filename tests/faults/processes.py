"""The real processes the fault tests start, break and start again.

Each test gets its own: a web server (gunicorn, as in production), Celery workers,
and where a test stops or restarts a service, a Postgres cluster or a Redis server
of its own on free loopback ports (the machine's shared ones are never touched).
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
from django.conf import settings as django_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_family(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Signal a process and every process it started (a worker's pool, its embedded beat)."""
    try:
        family = [proc.pid] + [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    proc.wait(timeout=20)


class Processes:
    """Web servers and workers started by one test, stopped (and their logs printed) at its end."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def env(self, *, database_url: str | None = None, broker: str, **extra: str) -> dict:
        db = django_settings.DATABASES["default"]
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "modelhub.settings",
            "DATABASE_URL": database_url or f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": broker,
            "MODELHUB_VAR_DIR": str(self.folder / "var"),
            "MODELHUB_ARTIFACT_ROOT": str(django_settings.MEDIA_ROOT),
            "MODELHUB_LOG_LEVEL": "INFO",
            # This process's key: sessions it makes (force_login) are valid there too.
            "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
            **extra,
        }

    def _start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log_path = self.folder / f"{name}-{len(self.started)}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.started.append((name, proc, log_path))
        return proc

    def web(self, env: dict) -> str:
        """gunicorn with one sync worker (one kept database connection, as in production); its URL."""
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "modelhub.wsgi:application", "--bind", f"127.0.0.1:{port}",
                   "--workers", "1", "--timeout", "120", "--access-logfile", "-"]  # fmt: skip
        proc = self._start("web", command, env)
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert proc.poll() is None, f"the web server exited: {self.log_of(proc)[-3000:]}"
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(f"{url}/login/", timeout=90).status_code == 200
            return False

        wait_for(answers, 120, "the web server to answer", every=0.2)
        return url

    def worker(self, env: dict, queues: list[str], *, beat: bool = False) -> subprocess.Popen:
        command = [sys.executable, "-m", "celery", "-A", "modelhub", "worker", "--pool", "solo", "--loglevel", "INFO",
                   "-Q", ",".join(queues), "-O", "fair", "--without-gossip", "--without-mingle",
                   "-n", f"faults{len(self.started)}@%h"]  # fmt: skip
        if beat:
            command += ["--beat", "-s", str(self.folder / f"beat-{len(self.started)}")]
        return self._start("worker", command, env)

    def log_of(self, proc: subprocess.Popen) -> str:
        for _, started, path in self.started:
            if started is proc:
                return path.read_text(errors="replace")
        return ""

    def wait_until_ready(self, proc: subprocess.Popen, timeout: float = 120) -> None:
        """A worker is ready once it says so in its log (connected, consuming)."""

        def ready() -> bool:
            assert proc.poll() is None, f"the worker exited: {self.log_of(proc)[-3000:]}"
            return " ready." in self.log_of(proc)

        wait_for(ready, timeout, "the worker to be ready", every=0.2)

    def stop_all(self) -> None:
        for name, proc, path in reversed(self.started):
            if proc.poll() is None:
                kill_family(proc)  # the test is over: no graceful shutdown to wait for
            print(f"----- {name} ({path.name}) -----\n{path.read_text(errors='replace')[-4000:]}")


def only_schedule(name: str, every_s: int) -> None:
    """Beat runs the PeriodicTask `name` every `every_s` seconds and no other (schedules are rows)."""
    every, _ = IntervalSchedule.objects.get_or_create(every=every_s, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.exclude(name=name).update(enabled=False)
    PeriodicTask.objects.filter(name=name).update(interval=every, enabled=True, expire_seconds=None)


def _as_postgres_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class OwnPostgres:
    """A throwaway Postgres cluster on a free port, to restart without disturbing anyone."""

    def __init__(self):
        if PG_BIN is None:
            raise RuntimeError("no Postgres binaries under /usr/lib/postgresql/*/bin")
        self.folder = Path(tempfile.mkdtemp(prefix="mh-faults-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                   "-E", "UTF8", "--locale=C.UTF-8"])  # fmt: skip

    def _run(self, command: list[str]) -> None:
        subprocess.run(_as_postgres_user(command), check=True, capture_output=True, cwd=self.folder)

    def _ctl(self, action: str, *more: str) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([str(PG_BIN / "pg_ctl"), action, "-D", str(self.data), "-w", "-t", "60", "-l",
                   str(self.folder / "server.log"), "-o", options, *more])  # fmt: skip

    def start(self) -> "OwnPostgres":
        self._ctl("start")
        return self

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def copy_database(self, source_url: str, name: str) -> str:
        """A copy of another server's database (schema and rows) here, as `name`; its URL."""
        self._run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name])
        dump = subprocess.run(
            [str(PG_BIN / "pg_dump"), "--no-owner", "--no-privileges", source_url],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            [str(PG_BIN / "psql"), "-q", "-v", "ON_ERROR_STOP=1", self.url(name)], input=dump, check=True,
            capture_output=True,
        )  # fmt: skip
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class OwnRedis:
    """A redis-server of its own (append-only file on, so queued messages outlive a restart)."""

    def __init__(self):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("no redis-server on PATH")
        self.folder = Path(tempfile.mkdtemp(prefix="mh-faults-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "OwnRedis":
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                   "--appendonly", "yes", "--save", "", "--protected-mode", "no"]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 20, f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        """Shut down as an outage would look to clients: the port refuses connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # redis writes its append-only file and exits
            self.proc.wait(timeout=20)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _pings(client) -> bool:
    try:
        return client.ping()
    except Exception:
        return False
