"""Check fan-out: one check pass over 1,000 deployments on 10 Triton servers, one of them dead.

    python bench/check_fanout.py [--models 100] [--servers 10] [--delay-ms 20]

What it does, in one run on a fresh database (``modelhub_bench_fanout``):

* starts, in a child process (so their work does not share this process's
  interpreter lock), 9 simulated Triton servers: threaded HTTP servers
  answering Triton's ``/v2/health/live``, ``/v2/health/ready``, server
  metadata, ``/v2/models/{m}/versions/{v}/ready``, model metadata and
  ``/v2/models/{m}/stats`` after ``--delay-ms`` each; and one dead server: a
  socket that accepts connections and never answers (it costs the call
  timeout, ``MODELHUB_MONITORING_CALL_TIMEOUT_S`` = 1 s here);
* creates the rows: 100 models, one version each, deployed (observed loaded)
  on all 10 servers: 1,000 deployments;
* times one **model checks pass** through the real pass code
  (``monitoring.passes.run_pass``: health per server, then readiness and
  schema conformance per deployment (one metadata call when ready), fanned out on the thread pool, recorded
  with one ``record()``);
* times a **serial loop** over the same calls (the same check functions, one
  after another, nothing recorded).

Last line: ``fanout_pass_s`` (the pass's wall time) and ``speedup_vs_serial``
(serial time / pass time). Targets: <= 2 and >= 10.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, log, migrate, report, scratch_database, setup_django, workdir

TENSOR = {"name": "INPUT", "datatype": "FP32", "shape": [-1]}
OUTPUT = {"name": "OUTPUT", "datatype": "FP32", "shape": [-1]}
STATS = {"success": {"count": 1, "ns": 1000}, "fail": {"count": 0, "ns": 0}}


class SimulatedTriton(BaseHTTPRequestHandler):
    """Answers the calls of a check pass as Triton 2.51 does, after a delay."""

    protocol_version = "HTTP/1.1"  # keep-alive, as Triton
    delay_s = 0.02

    def setup(self):
        super().setup()
        # One write per answer, sent at once: no Nagle/delayed-ACK stall of 40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        time.sleep(self.delay_s)
        parts = self.path.strip("/").split("/")
        if parts[:2] == ["v2", "health"]:
            return self._answer({})
        if parts == ["v2"]:
            return self._answer({"name": "triton", "version": "2.51.0", "extensions": ["model_repository"]})
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            name = parts[2]
            version = parts[4] if len(parts) > 4 and parts[3] == "versions" else "1"
            if parts[-1] == "ready":
                return self._answer({})
            if parts[-1] == "stats":
                stats = [{"name": name, "version": version, "inference_stats": STATS}]
                return self._answer({"model_stats": stats})
            return self._answer(
                {"name": name, "versions": [version], "platform": "python", "inputs": [TENSOR], "outputs": [OUTPUT]}
            )
        return self._answer({"error": f"unknown path {self.path}"}, 400)

    def _answer(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode() if body else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)  # headers and body in one write
        self.flush_headers()

    def log_message(self, *args) -> None:
        pass


class SimulatedServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen() backlog: the default 5 drops connections a pass opens at once


def serve(count: int, delay_ms: float, ports: multiprocessing.Queue) -> None:
    SimulatedTriton.delay_s = delay_ms / 1000
    servers = []
    for _ in range(count):
        server = SimulatedServer(("127.0.0.1", 0), SimulatedTriton)
        Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    ports.put([s.server_port for s in servers])
    while True:
        time.sleep(3600)


def create_rows(models: int, urls: list[str]) -> None:
    from modelhub.registry.models import Model, ModelVersion, TensorSpec
    from modelhub.serving.models import Deployment, InferenceServer, ObservedState

    servers = InferenceServer.objects.bulk_create(
        [InferenceServer(name=f"sim-{i}", base_url=url) for i, url in enumerate(urls)]
    )
    made = Model.objects.bulk_create([Model(name=f"fanout-{i:04d}", last_version_number=1) for i in range(models)])
    versions = ModelVersion.objects.bulk_create(
        [
            ModelVersion(
                model=m,
                number=1,
                artifact=f"bench/{m.name}.zip",
                artifact_format="zip",
                sha256=f"{i:064x}",
                size=1,
                backend="python",
            )
            for i, m in enumerate(made)
        ]
    )
    TensorSpec.objects.bulk_create(
        [TensorSpec(version=v, direction="input", name="INPUT", datatype="FP32", dims=[-1]) for v in versions]
        + [TensorSpec(version=v, direction="output", name="OUTPUT", datatype="FP32", dims=[-1]) for v in versions]
    )
    Deployment.objects.bulk_create(
        [Deployment(version=v, server=s, observed=ObservedState.LOADED) for v in versions for s in servers]
    )


def serial_loop() -> float:
    """The same calls as the pass, one after another."""
    from django.conf import settings

    from modelhub.monitoring.checks.readiness import check_ready_and_schema
    from modelhub.monitoring.checks.server_health import check_server_health
    from modelhub.serving.models import Deployment, InferenceServer
    from modelhub.serving.triton_client import TritonClient

    started = time.perf_counter()
    for server in InferenceServer.objects.all():
        client = TritonClient.for_server(server, timeout=settings.MONITORING_CALL_TIMEOUT_S)
        if check_server_health(server, client).status == "ok":
            rows = Deployment.objects.filter(server=server).select_related("version__model", "server")
            for deployment in rows.prefetch_related("version__tensors"):
                check_ready_and_schema(client, deployment)
        client.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--servers", type=int, default=10, help="including the one dead server")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    args = parser.parse_args()

    ports: multiprocessing.Queue = multiprocessing.Queue()
    simulator = multiprocessing.Process(target=serve, args=(args.servers - 1, args.delay_ms, ports), daemon=True)
    simulator.start()
    dead = socket.socket()  # accepts (the kernel's backlog) and never answers
    dead.bind(("127.0.0.1", 0))
    dead.listen(64)
    urls = [f"http://127.0.0.1:{port}" for port in ports.get(timeout=30)]
    urls.append(f"http://127.0.0.1:{dead.getsockname()[1]}")

    with workdir("fanout") as var_dir, scratch_database("modelhub_bench_fanout") as database:
        setup_django(bench_env(database, var_dir, MODELHUB_MONITORING_CALL_TIMEOUT_S="1"))
        migrate()
        from django.conf import settings

        from modelhub.monitoring.models import CheckResult
        from modelhub.monitoring.passes import run_pass

        create_rows(args.models, urls)
        log(
            f"{args.models * args.servers} deployments on {args.servers} servers (1 dead), "
            f"{args.delay_ms:g} ms a call, {settings.MONITORING_PARALLEL_CALLS} calls at once"
        )

        started, cpu = time.perf_counter(), time.process_time()
        pass_report = run_pass("model_checks", "bench:fanout")
        pass_s, cpu = time.perf_counter() - started, time.process_time() - cpu
        failed = CheckResult.objects.exclude(status="ok").count()
        log(
            f"pass: {pass_s:.2f} s (recording {pass_report.record_seconds:.2f} s; {cpu:.2f} s CPU), "
            f"{pass_report.written} results ({failed} not ok), down: {pass_report.servers_down}"
        )
        for message in CheckResult.objects.exclude(status="ok").exclude(message__startswith="server down")[:3]:
            log(f"not ok: {message.kind} {message.message}")

        serial_s = serial_loop()
        log(f"serial loop: {serial_s:.2f} s")
    simulator.terminate()
    dead.close()
    report(fanout_pass_s=pass_s, speedup_vs_serial=serial_s / pass_s)


if __name__ == "__main__":
    main()
