"""scripts/run's supervisor (keep_running): the demo outlives a dead local Triton.

The function is sourced from scripts/run itself, so these tests run the code the
demo runs; the Triton it supervises is the real one, started the way run starts it.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from devtools.local_triton import free_port

RUN = Path(__file__).resolve().parents[2] / "scripts" / "run"


def keep_running(name: str, delay: float, log: Path, *command: str) -> subprocess.Popen:
    # "bash" as $0: sourcing then defines the function and returns before run's own steps.
    return subprocess.Popen(
        ["bash", "-c", 'source "$1"; shift; keep_running "$@"', "bash", str(RUN), name, str(delay), str(log), *command],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so cleanup can take everything it started
    )


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def tritonserver_of(supervisor: subprocess.Popen) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(supervisor.pid).children(recursive=True):
            if child.name() == "tritonserver" and child.status() != psutil.STATUS_ZOMBIE:
                return child
    return None


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/health/ready", timeout=1, headers={"Connection": "close"}).status_code == 200
    except requests.RequestException:
        return False


@pytest.mark.triton
def test_a_killed_local_triton_is_started_again_on_the_same_port_and_stopped_with_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_RUNNING_SETTLED_S", "1")  # killed seconds after its start, not a failed first start
    http, grpc, metrics = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{http}"
    supervisor = keep_running(
        "local Triton", 1, tmp_path / "triton.log",
        sys.executable, "-m", "devtools.local_triton", "--workdir", str(tmp_path / "triton"),
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
    )  # fmt: skip
    try:
        # A (re)start prepares the work folder and starts tritonserver: up to a minute on a busy 2-core machine.
        wait_for(lambda: ready(url), 120, "the first start")
        first = tritonserver_of(supervisor)
        first.kill()  # SIGKILL, as a crash or the out-of-memory killer would
        first.wait(10)

        second = wait_for(lambda: ready(url) and tritonserver_of(supervisor), 120, "the supervisor's restart")
        assert second.pid != first.pid
        assert supervisor.poll() is None  # the run goes on

        supervisor.terminate()  # what run's stop_all sends
        assert supervisor.wait(30) == 0
        psutil.wait_procs([second], timeout=15)
        assert not second.is_running() and not ready(url)  # nothing left behind
        assert "local Triton exited (status 1); starting it again in 1 s" in supervisor.stderr.read()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(supervisor.pid, signal.SIGKILL)


def test_a_process_that_fails_on_its_first_start_stops_the_supervisor_at_once(tmp_path):
    tries = tmp_path / "tries"
    supervisor = keep_running("broken", 0, tmp_path / "broken.log", "sh", "-c", f"echo try >> {tries}; exit 3")
    assert supervisor.wait(30) == 1  # run's start-up check (or `wait -n`) sees it exit, and stops
    assert tries.read_text().count("try") == 1
    assert "broken failed on its first start (status 3); giving up" in supervisor.stderr.read()


def test_a_process_that_ran_then_keeps_failing_stops_the_supervisor_after_five_quick_tries(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEP_RUNNING_SETTLED_S", "1")  # a run of 1 s counts as having started well
    tries = tmp_path / "tries"
    # The first run lasts 1.5 s, then every start fails at once.
    script = f"echo try >> {tries}; [ $(wc -l < {tries}) = 1 ] && sleep 1.5; exit 3"
    supervisor = keep_running("crashing", 0, tmp_path / "crashing.log", "sh", "-c", script)
    assert supervisor.wait(30) == 1
    assert tries.read_text().count("try") == 1 + 5
    assert "crashing exited 5 times in a row soon after starting (status 3); giving up" in supervisor.stderr.read()


def test_a_process_that_stops_cleanly_is_not_started_again(tmp_path):
    # local_triton exits 0 only when asked to stop (Ctrl-C reaches it directly), 1 when Triton died.
    tries = tmp_path / "tries"
    supervisor = keep_running("stopped", 0, tmp_path / "stopped.log", "sh", "-c", f"echo try >> {tries}")
    assert supervisor.wait(30) == 0
    assert tries.read_text().count("try") == 1
