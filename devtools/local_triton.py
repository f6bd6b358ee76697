"""Start and stop a real local Triton Inference Server.

This module is the one place in ModelHub that knows how to run the
``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel on a plain
(CPU-only) Linux machine; see ``TRITON.md`` in the shared docs for the recipe.
It has no Django dependency: the run script, the pytest fixtures and the
benchmarks all use it.

    with LocalTriton(Path("var/triton")).start() as triton:
        requests.get(triton.http_url + "/v2/health/ready")

Command line (foreground until SIGINT/SIGTERM)::

    python -m devtools.local_triton --workdir var/triton \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002

Layout of ``workdir``:

* ``repository/``       empty model repository (models are loaded through
  the repository API with file overrides, explicit control mode)
* ``backends/python/``  the wheel's Python backend plus the stub for the
  running Python version (built once, reused while the wheel is unchanged)
* ``triton.log``        server and backend-stub output (appended per start)
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Self

import psutil
import requests

__all__ = [
    "LocalTriton",
    "TritonInstall",
    "TritonNotAvailable",
    "TritonStartError",
    "find_tritonserver",
    "free_port",
]

SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
_BACKEND_MARKER = ".modelhub-source"
_LOG_TAIL_BYTES = 6000


class TritonNotAvailable(RuntimeError):
    """The local Triton cannot run here (wheel, binary or a library missing)."""


class TritonStartError(RuntimeError):
    """The server process exited early or did not become ready in time."""


@dataclasses.dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the ``nvidia-pytriton`` wheel are."""

    binary: Path  # pytriton/tritonserver/bin/tritonserver
    python_backend_src: Path  # pytriton/tritonserver/backends/python
    stub: Path  # pytriton/tritonserver/python_backend_stubs/<X.Y>/triton_python_backend_stub
    libs_dir: Path  # nvidia_pytriton.libs (bundled shared libraries)
    python_version: str  # "3.11": the stub's (and this interpreter's) version


def _pytriton_dir() -> Path:
    # Locate the package without importing it (importing pytriton is slow
    # and pulls in things ModelHub does not use).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotAvailable(
            "The 'nvidia-pytriton' package is not installed in this Python "
            f"environment ({sys.prefix}). Install it with "
            "`pip install nvidia-pytriton==0.7.0` (Linux x86-64 only)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _missing_libraries(binary: Path, libs_dir: Path) -> list[str]:
    """Shared libraries ``binary`` needs that the dynamic loader cannot find."""
    ldd = shutil.which("ldd")
    if ldd is None:  # cannot check; a failure will show in the server log
        return []
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = _prepend_path(str(libs_dir), env.get("LD_LIBRARY_PATH"))
    try:
        out = subprocess.run(
            [ldd, str(binary)],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line]


def find_tritonserver() -> TritonInstall:
    """Find the Triton server of the ``nvidia-pytriton`` wheel and check it can run.

    Raises :class:`TritonNotAvailable` saying what is missing and how to fix it.
    """
    if not sys.platform.startswith("linux"):
        raise TritonNotAvailable(f"The local Triton server runs on Linux x86-64 only (this is {sys.platform}).")
    pkg = _pytriton_dir()
    site = pkg.parent
    server_dir = pkg / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=server_dir / "bin" / "tritonserver",
        python_backend_src=server_dir / "backends" / "python",
        stub=server_dir / "python_backend_stubs" / version / "triton_python_backend_stub",
        libs_dir=site / "nvidia_pytriton.libs",
        python_version=version,
    )
    reinstall = "Reinstall it: `pip install --force-reinstall nvidia-pytriton==0.7.0`."
    if not os.access(install.binary, os.X_OK):
        raise TritonNotAvailable(
            f"The tritonserver binary is missing or not executable: {install.binary}. " + reinstall
        )
    if not (install.python_backend_src / "libtriton_python.so").is_file():
        raise TritonNotAvailable(f"Triton's Python backend is missing from {install.python_backend_src}. " + reinstall)
    if not install.stub.is_file():
        have = sorted(p.name for p in install.stub.parent.parent.glob("*"))
        raise TritonNotAvailable(
            f"nvidia-pytriton has no Python backend stub for Python {version} "
            f"(expected {install.stub}; stubs exist for {', '.join(have) or 'none'}). "
            "Run ModelHub with one of those Python versions."
        )
    if not install.libs_dir.is_dir():
        raise TritonNotAvailable(f"The wheel's bundled libraries are missing ({install.libs_dir}). " + reinstall)
    for binary in (install.binary, install.stub):
        missing = _missing_libraries(binary, install.libs_dir)
        if missing:
            hint = ""
            if any(name.startswith("libpython") for name in missing):
                hint = (
                    f" The Python backend stub links against the shared libpython{version}: "
                    f"install it with `apt-get install libpython{version}` (Debian/Ubuntu) "
                    "or use a Python built with --enable-shared."
                )
            raise TritonNotAvailable(f"{binary.name} cannot find the shared libraries {', '.join(missing)}." + hint)
    return install


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_ports(count: int, exclude: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in exclude and port not in ports:
            ports.append(port)
    return ports


def _prepend_path(entry: str, current: str | None) -> str:
    parts = [p for p in (current or "").split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry, *parts])


def _file_signature(path: Path) -> str:
    st = path.stat()
    return f"{path} {st.st_size} {st.st_mtime_ns}"


def _prepare_backends(install: TritonInstall, backends_dir: Path) -> None:
    """Build ``backends_dir/python`` (backend + stub) once; reuse it while current."""
    target = backends_dir / "python"
    sources = [
        install.python_backend_src / "libtriton_python.so",
        install.python_backend_src / "triton_python_backend_utils.py",
        install.stub,
    ]
    signature = "\n".join(_file_signature(p) for p in sources if p.exists()) + "\n"
    marker = target / _BACKEND_MARKER
    with contextlib.suppress(OSError):
        if marker.read_text() == signature and (target / install.stub.name).is_file():
            return
    backends_dir.mkdir(parents=True, exist_ok=True)
    staging = backends_dir / f".python.{os.getpid()}.{threading.get_ident()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(install.python_backend_src, staging)
    shutil.copy2(install.stub, staging / install.stub.name)
    (staging / _BACKEND_MARKER).write_text(signature)
    # Swap in atomically enough for concurrent builders of the same workdir.
    old = backends_dir / f".python.old.{os.getpid()}.{threading.get_ident()}"
    if target.exists():
        target.rename(old)
    try:
        staging.rename(target)
    except OSError:  # another process won the race: use its copy
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _server_environment(install: TritonInstall) -> dict[str, str]:
    """Environment for the server: the backend stub runs in *this* Python env.

    The stub embeds libpython and finds its ``sys.prefix`` by looking up
    ``python3`` on PATH, so the running interpreter's bin directory (the
    virtual environment's) goes first; the stub also needs the wheel's
    bundled libraries.
    """
    env = dict(os.environ)
    env["PATH"] = _prepend_path(str(Path(sys.executable).parent), env.get("PATH"))
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    env.pop("PYTHONHOME", None)
    env["LD_LIBRARY_PATH"] = _prepend_path(str(install.libs_dir), env.get("LD_LIBRARY_PATH"))
    return env


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec
    if _prctl is not None:
        _prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux/glibc
    _prctl = None


_live: weakref.WeakSet[LocalTriton] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            server.stop(timeout=5)


class LocalTriton:
    """One real ``tritonserver`` process on 127.0.0.1 (or another loopback ``host``, so
    that several can share one port, as a fleet behind one DNS name), explicit model control.

    Ports left as ``None`` are chosen free when the object is made; they stay
    the same across :meth:`restart`. ``extra_args`` are appended to the
    server's command line (e.g. ``["--log-verbose", "1"]``).
    """

    def __init__(
        self,
        workdir: Path,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: Path | None = None,
        *,
        extra_args: list[str] | tuple[str, ...] = (),
        die_with_parent: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.repository = self.workdir / "repository"
        self.backends_dir = self.workdir / "backends"
        self.log_path = Path(log_path) if log_path else self.workdir / "triton.log"
        given = {p for p in (http_port, grpc_port, metrics_port) if p}
        auto = iter(_free_ports(3, given))
        self._auto_ports = http_port is None and grpc_port is None and metrics_port is None
        self.http_port = http_port or next(auto)
        self.grpc_port = grpc_port or next(auto)
        self.metrics_port = metrics_port or next(auto)
        self.extra_args = list(extra_args)
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._http = requests.Session()
        self._http.trust_env = False  # never send loopback requests via a proxy

    # -- addresses -------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` as ``tritonclient.grpc`` wants it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<LocalTriton {self.http_url} pid={self.pid} {state}>"

    # -- lifecycle -------------------------------------------------------
    def command(self, install: TritonInstall | None = None) -> list[str]:
        """The server's command line."""
        install = install or find_tritonserver()
        return [
            str(install.binary),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={self.backends_dir}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=2",
            # Ready means "server is up": a model that failed to load must not
            # turn the whole server not-ready (ModelHub tracks models itself).
            "--strict-readiness=false",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60) -> Self:
        """Spawn the server and wait until ``/v2/health/ready`` answers 200."""
        if self.is_running():
            return self
        install = find_tritonserver()
        self.repository.mkdir(parents=True, exist_ok=True)
        _prepare_backends(install, self.backends_dir)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        attempts = 3 if self._auto_ports else 1
        for attempt in range(attempts):
            try:
                self._spawn(install, timeout)
                return self
            except TritonStartError as exc:
                if attempt + 1 < attempts and "already in use" in str(exc):
                    # Lost a race for an automatically chosen port: choose again.
                    self.http_port, self.grpc_port, self.metrics_port = _free_ports(3, set())
                    continue
                raise
        raise AssertionError("unreachable")

    def _spawn(self, install: TritonInstall, timeout: float) -> None:
        cmd = self.command(install)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n===== LocalTriton start {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            preexec = None
            if self.die_with_parent and threading.current_thread() is threading.main_thread():
                # PDEATHSIG fires when the *thread* that forked exits: only safe
                # from the main thread.
                preexec = _set_parent_death_signal
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=_server_environment(install),
                start_new_session=True,  # own process group: no Ctrl-C race
                preexec_fn=preexec,  # main thread only, see above
            )
        _live.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            if self.is_running():  # e.g. Ctrl-C while waiting: do not leak it
                self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._cleanup_after_exit(set())
                raise TritonStartError(
                    f"tritonserver exited with code {code} during start-up "
                    f"(log {self.log_path}):\n{self._error_summary()}"
                )
            if self.is_ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise TritonStartError(
                    f"tritonserver was not ready after {timeout:.0f} s (log {self.log_path}):\n{self._error_summary()}"
                )
            time.sleep(0.05)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def is_ready(self) -> bool:
        """Whether ``GET /v2/health/ready`` answers 200 now."""
        try:
            # "Connection: close": an idle keep-alive connection would make
            # Triton wait out its whole exit timeout on SIGTERM.
            resp = self._http.get(
                self.http_url + "/v2/health/ready",
                headers={"Connection": "close"},
                timeout=1,
            )
        except requests.RequestException:
            return False
        return resp.status_code == 200

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (graceful: unloads models), then SIGKILL after ``timeout``.

        Backend stub processes are killed too, and shared-memory regions the
        server's tree left behind are removed.
        """
        proc = self._proc
        if proc is None:
            return
        tree, shm = self._snapshot_tree()
        self._http.close()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killpg()
                proc.wait()
        self._cleanup_after_exit(shm, tree)

    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (simulates a crash).

        Then removes the ``/dev/shm`` regions made by this server's tree only.
        """
        proc = self._proc
        if proc is None:
            return
        tree, shm = self._snapshot_tree()
        if proc.poll() is None:
            self._killpg()
            proc.wait()
        self._cleanup_after_exit(shm, tree)

    def restart(self, timeout: float = 60) -> Self:
        """Stop (if running) and start again on the same ports."""
        self.stop()
        auto, self._auto_ports = self._auto_ports, False  # keep the ports
        try:
            return self.start(timeout)
        finally:
            self._auto_ports = auto

    def __enter__(self) -> Self:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------
    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The end of this run's part of the log."""
        try:
            with open(self.log_path, "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(self._log_offset, size - max_bytes))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _error_summary(self) -> str:
        """Triton's error lines (``E1125 ...``) first, then the log's tail."""
        tail = self.log_tail()
        errors = [line for line in tail.splitlines() if len(line) > 1 and line[0] == "E" and line[1].isdigit()]
        if not errors:
            return tail
        return "\n".join(errors) + "\n--- end of log ---\n" + tail

    def _killpg(self) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def _snapshot_tree(self) -> tuple[list[psutil.Process], set[str]]:
        """The server's descendants and the shm regions they use (before killing)."""
        assert self._proc is not None
        pid = self._proc.pid
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            found = {p.pid: p for p in psutil.Process(pid).children(recursive=True)}
        # Stubs orphaned by a server that already died are still in its group.
        for p in psutil.process_iter():
            with contextlib.suppress(OSError):
                if p.pid != pid and os.getpgid(p.pid) == pid:
                    found.setdefault(p.pid, p)
        shm: set[str] = set()
        for p in found.values():
            shm |= _shm_regions_of(p)
        with contextlib.suppress(psutil.Error):
            shm |= _shm_regions_of(psutil.Process(pid))
        return list(found.values()), shm

    def _cleanup_after_exit(self, shm: set[str], tree: list[psutil.Process] | None = None) -> None:
        """After the server has exited: kill leftover stubs, remove their shm."""
        self._killpg()  # stubs stay in the server's process group
        if tree:
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(tree, timeout=5)
        for name in shm:
            with contextlib.suppress(OSError):  # already gone, or not ours to remove
                (SHM_DIR / name).unlink()
        _live.discard(self)


def _shm_regions_of(proc: psutil.Process) -> set[str]:
    """Python-backend shm regions ``proc`` maps or names on its command line."""
    names: set[str] = set()
    with contextlib.suppress(psutil.Error):
        for arg in proc.cmdline():
            base = os.path.basename(arg)
            if base.startswith(SHM_PREFIX):
                names.add(base)
    with contextlib.suppress(psutil.Error):
        for m in proc.memory_maps(grouped=True):
            base = os.path.basename(m.path)
            if m.path.startswith(str(SHM_DIR)) and base.startswith(SHM_PREFIX):
                names.add(base)
    return names


# -- command line ---------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_triton",
        description="Run a local Triton Inference Server in the foreground.",
    )
    parser.add_argument("--workdir", type=Path, default=Path("var/triton"))
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--log-path", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=60, help="start-up timeout (s)")
    parser.add_argument("--log-verbose", type=int, default=0, help="Triton's --log-verbose level")
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    extra = ["--log-verbose", str(args.log_verbose)] if args.log_verbose else []
    try:
        triton = LocalTriton(
            args.workdir,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            log_path=args.log_path,
            extra_args=extra,
        )
        started = time.monotonic()
        triton.start(timeout=args.timeout)
    except (TritonNotAvailable, TritonStartError) as exc:
        print(f"local_triton: {exc}", file=sys.stderr)
        return 1
    print(
        f"Triton ready in {time.monotonic() - started:.1f} s (pid {triton.pid})\n"
        f"  HTTP:    {triton.http_url}\n"
        f"  GRPC:    {triton.grpc_url}\n"
        f"  metrics: {triton.metrics_url}\n"
        f"  log:     {triton.log_path}",
        flush=True,
    )
    code = 0
    while not stop_requested.wait(0.5):
        if not triton.is_running():
            print(
                f"local_triton: tritonserver exited unexpectedly:\n{triton.log_tail()}",
                file=sys.stderr,
            )
            code = 1
            break
    triton.stop()
    print("Triton stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
