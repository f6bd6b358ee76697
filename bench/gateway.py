"""Inference gateway overhead: the same requests through the gateway and straight to Triton.

    python bench/gateway.py [--seconds 4] [--rounds 2]

What it does, in one run on a fresh database (``modelhub_bench_gateway``) and one
real local Triton:

* registers a trivial python-backend model (doubles a 4-element FP32 tensor, where
  the gateway's overhead shows most), deploys it through ModelHub (the reconciler,
  eager) and points its ``production`` alias at it;
* starts the gateway as ModelHub runs it (``python -m modelhub.gateway``: its own
  HTTP server on uvloop and httptools, one process unless ``--gateway-workers``) with
  token auth, and an API token with ``infer``;
* drives both with the same load generator: one uvloop process holding N keep-alive
  connections, each sending a pre-built binary infer request (tritonclient's body
  and Inference-Header-Content-Length) and reading the answer by Content-Length,
  for ``--seconds`` each; direct requests go to ``/v2/models/<m>/infer`` on Triton,
  gateway ones to the same path on the gateway (with the token). Rounds alternate
  direct and gateway at concurrency 1 and 8, so both see the same machine state.

Last line: ``gateway_throughput_ratio_c8`` (gateway req/s / direct req/s at
concurrency 8) and ``gateway_added_p50_ms`` (gateway p50 - direct p50 at
concurrency 1), plus the raw figures and ``gateway_cpu_us_per_request_c1/_c8`` (the
gateway processes' CPU time per request: on a shared machine the steadier figure of
the gateway's own cost). Targets: ratio >= 0.8, added p50 <= 1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DOUBLER_MANIFEST,
    DOUBLER_MODEL_PY,
    REPO,
    bench_env,
    create_token,
    create_user,
    free_port,
    log,
    migrate,
    percentile,
    report,
    scratch_database,
    setup_django,
    workdir,
)

MODEL = "bench-gateway"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=2, help="direct/gateway pairs per concurrency")
    parser.add_argument("--gateway-workers", type=int, default=1, help="gateway processes (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the database")
    parser.add_argument(
        "--database", default="modelhub_bench_gateway", help="the scratch database's name (runs side by side)"
    )
    args = parser.parse_args()
    with workdir("gateway", keep=args.keep) as tmp, scratch_database(args.database, keep=args.keep) as db:
        env = bench_env(db, tmp / "var", CELERY_TASK_ALWAYS_EAGER="1")
        setup_django(env)
        migrate()
        return run(tmp, env, args)


def run(tmp: Path, env: dict[str, str], args: argparse.Namespace) -> int:
    from devtools.local_triton import LocalTriton

    log("starting a local Triton")
    triton = LocalTriton(tmp / "triton").start(timeout=120)
    gateway = None
    try:
        deploy_trivial_model(tmp, triton)
        user = create_user("bench")
        token = create_token(user.username, scopes="infer", name="bench-infer")
        port = free_port()
        gateway = start_gateway(env, port, args.gateway_workers)
        figures = measure(triton.http_url, f"http://127.0.0.1:{port}", token, args, gateway.pid)
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=10)
        triton.stop()
    report(**figures)
    return 0


def deploy_trivial_model(tmp: Path, triton) -> None:
    from modelhub.audit.actors import Actor
    from modelhub.audit.models import Source
    from modelhub.registry.services import get_or_create_model, move_alias, register_version
    from modelhub.serving.models import Deployment, InferenceServer, ObservedState
    from modelhub.serving.services import request_deploy

    actor = Actor(source=Source.CLI)
    server = InferenceServer.objects.create(name="local", base_url=triton.http_url)
    artifact = tmp / "model.zip"
    with zipfile.ZipFile(artifact, "w") as zf:
        zf.writestr("1/model.py", DOUBLER_MODEL_PY.format(factor=2))
    model = get_or_create_model(MODEL, actor)
    version = register_version(model, artifact, dict(DOUBLER_MANIFEST), actor).version
    request_deploy(version, [server], actor)  # eager: loaded when this returns
    deployment = Deployment.objects.get(version=version, server=server)
    if deployment.observed != ObservedState.LOADED:
        raise RuntimeError(f"deploy failed: {deployment.last_error}")
    move_alias(model, "production", version, actor)
    log(f"{MODEL} v{version.number} loaded on Triton and behind 'production'")


def start_gateway(env: dict[str, str], port: int, workers: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "modelhub.gateway", "--port", str(port), "--workers", str(workers)],
        cwd=REPO,
        env=env | {"MODELHUB_GATEWAY_AUTH": "token"},
    )
    import requests

    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.1)


def infer_request(base_url: str, token: str | None, model: str = MODEL) -> tuple[str, int, bytes]:
    import numpy as np
    import tritonclient.http as triton_http

    data = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    tensor = triton_http.InferInput("INPUT", [4], "FP32")
    tensor.set_data_from_numpy(data)
    output = triton_http.InferRequestedOutput("OUTPUT", binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body([tensor], outputs=[output])
    host, port = base_url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {header_length}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return host, int(port), head.encode() + body


def measure(direct_url: str, gateway_url: str, token: str, args, gateway_pid: int) -> dict:
    from modelhub.serving.models import triton_model_name

    # Direct to Triton: the name Triton serves version 1 under.
    direct = infer_request(direct_url, None, triton_model_name(MODEL, 1))
    targets = {"direct": direct, "gateway": infer_request(gateway_url, token)}
    for name, target in targets.items():  # warm up both, and check both answer
        drive(target, 4, 1.0)
        log(f"{name}: warmed up")
    results: dict[tuple[str, int], list[dict]] = {}
    for concurrency in (1, 8):
        for _ in range(args.rounds):
            for name, target in targets.items():
                cpu_before = _cpu_seconds(gateway_pid)
                result = drive(target, concurrency, args.seconds)
                # The gateway's own CPU per request: steadier than the ratio on a shared machine.
                result["cpu_us"] = (_cpu_seconds(gateway_pid) - cpu_before) / (result["rps"] * args.seconds) * 1e6
                results.setdefault((name, concurrency), []).append(result)
                log(f"{name} c={concurrency}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.3f} ms")

    def rps(name, c):
        return statistics.mean(r["rps"] for r in results[(name, c)])

    def p50(name, c):
        return statistics.median(r["p50_ms"] for r in results[(name, c)])

    return {
        "direct_rps_c1": rps("direct", 1),
        "gateway_rps_c1": rps("gateway", 1),
        "direct_rps_c8": rps("direct", 8),
        "gateway_rps_c8": rps("gateway", 8),
        "direct_p50_ms_c1": p50("direct", 1),
        "gateway_p50_ms_c1": p50("gateway", 1),
        "gateway_throughput_ratio_c8": rps("gateway", 8) / rps("direct", 8),
        "gateway_added_p50_ms": p50("gateway", 1) - p50("direct", 1),
        "gateway_cpu_us_per_request_c1": statistics.median(r["cpu_us"] for r in results[("gateway", 1)]),
        "gateway_cpu_us_per_request_c8": statistics.median(r["cpu_us"] for r in results[("gateway", 8)]),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of the gateway process and its workers so far."""
    import psutil

    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in (process, *process.children(recursive=True)))


def drive(target: tuple[str, int, bytes], concurrency: int, seconds: float) -> dict:
    """Run the load generator in its own process (its CPU is not the measured server's)."""
    host, port, request = target
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import gateway; gateway._load_main()"
    spec = json.dumps({"host": host, "port": port, "request": request.hex(), "c": concurrency, "s": seconds})
    out = subprocess.run([sys.executable, "-c", code], input=spec, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{out.stderr}")
    return json.loads(out.stdout)


def _load_main() -> None:
    import uvloop

    spec = json.loads(sys.stdin.read())
    latencies: list[float] = []
    uvloop.run(_load(spec["host"], spec["port"], bytes.fromhex(spec["request"]), spec["c"], spec["s"], latencies))
    took = spec["s"]
    print(json.dumps({"rps": len(latencies) / took, "p50_ms": percentile(latencies, 50) * 1000}))


async def _load(host: str, port: int, request: bytes, concurrency: int, seconds: float, latencies: list) -> None:
    deadline = time.perf_counter() + seconds

    async def one_connection():
        reader, writer = await asyncio.open_connection(host, port)
        while (started := time.perf_counter()) < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"not 200: {head!r} {await reader.read(500)!r}")
            length = int(head.lower().split(b"\r\ncontent-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))


if __name__ == "__main__":
    sys.exit(main())
