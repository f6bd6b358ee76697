"""A real web server (gunicorn, as in production) started with the environment a test gives."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    db = django_settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Web:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=90, allow_redirects=False, **kwargs)

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def web(tmp_path, django_db_setup, django_db_blocker):
    """web(workers=1, **env) -> a running gunicorn on the test database (migrated), stopped at the end."""
    started: list[Web] = []

    def start(workers: int = 1, preload: bool = False, **env_vars: str) -> Web:
        port = free_port()
        log = tmp_path / f"web-{port}.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_", "DJANGO_", "PROMETHEUS_"))},
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "modelhub.settings",
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": "memory://localhost/",
            "MODELHUB_VAR_DIR": str(tmp_path / "var"),
            **env_vars,
        }
        command = [sys.executable, "-m", "gunicorn", "modelhub.wsgi", "--bind", f"127.0.0.1:{port}"]
        command += ["--workers", str(workers), "--threads", "2"] + (["--preload"] if preload else [])
        with log.open("w") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        server = Web(proc, f"http://127.0.0.1:{port}", log)
        started.append(server)
        # Generous: each worker imports Django on its first request, on a machine shared with other runs.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"gunicorn exited: {server.output()}"
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                requests.get(server.url + "/healthz/live", timeout=max(1.0, deadline - time.monotonic()))
                return server
            time.sleep(0.2)
        raise AssertionError(f"gunicorn did not answer within 120 s: {server.output()}")

    with django_db_blocker.unblock():
        yield start
    for server in started:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
