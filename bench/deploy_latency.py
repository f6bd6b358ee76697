"""Deploy overhead: deploy request -> observed loaded, minus Triton's own load time.

    python bench/deploy_latency.py [--rounds 5] [--warmup 1]

What it does, all in one run on a fresh database (``modelhub_bench_deploy``)
and one real local Triton (``LocalTriton``, explicit model control):

* registers a small python-backend model (a ``model.py`` that doubles its
  input) through ``registry.services.register_version``: a new version (new
  bytes) per round;
* **deploy path** (ModelHub): ``serving.services.request_deploy`` with
  ``CELERY_TASK_ALWAYS_EAGER``, so the reconciler task runs in this process as
  the request's transaction commits, exactly as a Celery worker would run it.
  The clock starts before the request and stops when the Deployment row reads
  ``observed=loaded`` (polled every 5 ms). Then the version is undeployed the
  same way, and the next round deploys the next version;
* **direct path** (Triton alone): the same load request ModelHub would send
  (same config and ``file:`` overrides, from ``reconciler.build_load_request``)
  posted straight to ``/v2/repository/models/<other name>/load``; the clock
  stops when Triton answers 200 (Triton's load call returns when the model is
  loaded) and the model's ``ready`` endpoint answers 200. Then it is unloaded.

Rounds alternate the two paths, so both see the same machine state. Warm-up
rounds (the first python-backend load of a server is slower) are not counted.

Last line: ``deploy_overhead_s=<median deploy - median direct load>`` plus the
two medians. Target: overhead <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DOUBLER_MANIFEST,
    DOUBLER_MODEL_PY,
    bench_env,
    log,
    migrate,
    report,
    scratch_database,
    setup_django,
    workdir,
)

MODEL = "bench-deploy"
DIRECT_MODEL = "bench-direct"
TIMEOUT_S = 120.0


def make_artifact(path: Path, factor: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("1/model.py", DOUBLER_MODEL_PY.format(factor=factor))
    return path


def wait_until(predicate, timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def model_ready(http: requests.Session, base_url: str, name: str) -> bool:
    return http.get(f"{base_url}/v2/models/{name}/ready", timeout=5).status_code == 200


def time_deploy(version, server, actor) -> float:
    """Deploy request -> the Deployment row says observed=loaded."""
    from modelhub.serving.models import Deployment, ObservedState
    from modelhub.serving.services import request_deploy

    started = time.perf_counter()
    (deployment,) = request_deploy(version, [server], actor)
    state = {}

    def loaded() -> bool:
        row = Deployment.objects.values("observed", "last_error").get(pk=deployment.pk)
        state.update(row)
        if row["observed"] == ObservedState.FAILED:
            raise RuntimeError(f"deploy of {version} failed: {row['last_error']}")
        return row["observed"] == ObservedState.LOADED

    wait_until(loaded, TIMEOUT_S, f"{version} to be observed loaded")
    return time.perf_counter() - started


def undeploy(version, server, actor, http: requests.Session) -> None:
    from modelhub.serving.models import Deployment, ObservedState
    from modelhub.serving.services import request_undeploy

    (deployment,) = request_undeploy(version, [server], actor)
    name = f"{MODEL}__v{version.number}"  # the version's own Triton name
    wait_until(lambda: not model_ready(http, server.base_url, name), TIMEOUT_S, f"{name} unloaded on Triton")
    observed = Deployment.objects.values_list("observed", flat=True).get(pk=deployment.pk)
    if observed != ObservedState.UNLOADED:
        log(f"note: after undeploy of {version}, Triton no longer serves it but the deployment reads {observed!r}")


def time_direct_load(version, server, http: requests.Session) -> float:
    """The same load ModelHub sends, straight to Triton under another name."""
    from modelhub.serving.reconciler import build_load_request
    from modelhub.serving.triton_client import LoadRequestBody

    config, files = build_load_request(server, MODEL, [version])
    # The very bytes ModelHub streams, built whole here: only Triton's side is timed.
    body = b"".join(LoadRequestBody(dict(config, name=DIRECT_MODEL), files))

    started = time.perf_counter()
    resp = http.post(
        f"{server.base_url}/v2/repository/models/{DIRECT_MODEL}/load",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )
    if resp.status_code != 200:
        raise RuntimeError(f"direct load failed: HTTP {resp.status_code}: {resp.text}")
    wait_until(lambda: model_ready(http, server.base_url, DIRECT_MODEL), TIMEOUT_S, f"{DIRECT_MODEL} ready")
    elapsed = time.perf_counter() - started

    resp = http.post(f"{server.base_url}/v2/repository/models/{DIRECT_MODEL}/unload", timeout=TIMEOUT_S)
    resp.raise_for_status()
    wait_until(lambda: not model_ready(http, server.base_url, DIRECT_MODEL), TIMEOUT_S, f"{DIRECT_MODEL} unloaded")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the database")
    args = parser.parse_args()

    with workdir("deploy", keep=args.keep) as tmp, scratch_database("modelhub_bench_deploy", keep=args.keep) as db:
        env = bench_env(db, tmp / "var", CELERY_TASK_ALWAYS_EAGER="1")
        setup_django(env)
        migrate()
        return run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> int:
    from devtools.local_triton import LocalTriton
    from modelhub.audit.actors import Actor
    from modelhub.audit.models import Source
    from modelhub.registry.services import get_or_create_model, register_version
    from modelhub.serving.models import InferenceServer

    actor = Actor(source=Source.CLI)
    log("starting a local Triton")
    with LocalTriton(tmp / "triton").start(timeout=120) as triton, requests.Session() as http:
        http.trust_env = False  # loopback: never through a proxy
        server = InferenceServer.objects.create(
            name="bench-triton", base_url=triton.http_url, metrics_url=triton.metrics_url, backends=["python"]
        )
        model = get_or_create_model(MODEL, actor)
        deploys: list[float] = []
        directs: list[float] = []
        for i in range(args.warmup + args.rounds):
            artifact = make_artifact(tmp / f"round{i}.zip", factor=i + 2)
            version = register_version(model, artifact, json.loads(json.dumps(DOUBLER_MANIFEST)), actor).version
            # Alternate which path goes first, so neither always follows the other.
            if i % 2:
                direct = time_direct_load(version, server, http)
                deploy = time_deploy(version, server, actor)
            else:
                deploy = time_deploy(version, server, actor)
                direct = time_direct_load(version, server, http)
            undeploy(version, server, actor, http)
            counted = i >= args.warmup
            log(
                f"round {i + 1}{'' if counted else ' (warm-up)'}: {version}: deploy {deploy:.3f} s, "
                f"direct load {direct:.3f} s, difference {deploy - direct:+.3f} s"
            )
            if counted:
                deploys.append(deploy)
                directs.append(direct)

    deploy_median = statistics.median(deploys)
    direct_median = statistics.median(directs)
    log(f"deploy (in-process reconciler): median {deploy_median:.3f} s over {len(deploys)} rounds")
    log(f"direct Triton load:            median {direct_median:.3f} s over {len(directs)} rounds")
    report(
        deploy_overhead_s=deploy_median - direct_median,
        deploy_median_s=deploy_median,
        triton_load_median_s=direct_median,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
