"""Fleet deploy: one version deployed by label to three Triton servers, against the slowest single load.

    python bench/fleet_deploy.py [--rounds 5] [--warmup 1] [--servers 3]

What it does, all in one run on a fresh database (``modelhub_bench_fleet``) and three
real local Tritons (``LocalTriton``, each its own ports and folder, explicit model
control), registered as servers with the label ``fleet``:

* registers a small python-backend model (a ``model.py`` that doubles its input)
  through ``registry.services.register_version``: a new version (new bytes) per round;
* **fleet path** (ModelHub): ``serving.services.request_deploy`` of the version to
  ``servers_with_label("fleet")`` with ``CELERY_TASK_ALWAYS_EAGER``, so the reconcile
  task runs in this process as the request's transaction commits, exactly as a worker
  would run it. The clock starts before the request and stops when all three
  Deployment rows read ``observed=loaded`` (polled every 5 ms). Then the version is
  undeployed by label the same way;
* **single loads** (Triton alone): the very load request ModelHub would send
  (``reconciler.build_load_request``: same config and ``file:`` overrides) posted
  straight to each server's ``/v2/repository/models/<other name>/load``, the three at
  the same moment (so they share the machine as the fleet's loads do); each one's clock
  stops when its Triton answers 200 and the model is ready. The slowest of the three is
  the round's figure. Then they are unloaded.

Rounds alternate the two paths, so both see the same machine state. Warm-up rounds
(the first python-backend load of a server is slower) are not counted.

Last line: ``fleet_deploy_overhead_s=<median fleet deploy - median slowest single load>``
plus the two medians. Target: overhead <= 0.5 s. A reconciler that loaded the servers
one after another would show about two load times here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
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

MODEL = "bench-fleet"
DIRECT_MODEL = "bench-fleet-direct"
LABEL = "fleet"
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


def fleet_states(version) -> dict[str, tuple[str, str]]:
    from modelhub.serving.models import Deployment

    rows = Deployment.objects.filter(version=version).values_list("server__name", "observed", "last_error")
    return {name: (observed, error) for name, observed, error in rows}


def time_fleet_deploy(version, actor, count: int) -> float:
    """Deploy request by label -> every server's Deployment row says observed=loaded."""
    from modelhub.serving.models import ObservedState
    from modelhub.serving.services import request_deploy, servers_with_label

    started = time.perf_counter()
    request_deploy(version, servers_with_label(LABEL), actor)

    def all_loaded() -> bool:
        states = fleet_states(version)
        failed = {name: error for name, (observed, error) in states.items() if observed == ObservedState.FAILED}
        if failed:
            raise RuntimeError(f"deploy of {version} failed: {failed}")
        return len(states) == count and all(observed == ObservedState.LOADED for observed, _ in states.values())

    wait_until(all_loaded, TIMEOUT_S, f"{version} to be observed loaded on all {count} servers")
    return time.perf_counter() - started


def undeploy_fleet(version, actor, http: requests.Session) -> None:
    from modelhub.serving.models import triton_model_name
    from modelhub.serving.services import request_undeploy, servers_with_label

    servers = servers_with_label(LABEL)
    request_undeploy(version, servers, actor)
    name = triton_model_name(MODEL, version.number)
    for server in servers:
        wait_until(lambda s=server: not model_ready(http, s.base_url, name), TIMEOUT_S, f"{name} unloaded")


def time_single_loads(version, servers, http: requests.Session) -> list[float]:
    """The load ModelHub sends, straight to each Triton under another name, all at once."""
    from modelhub.serving.reconciler import build_load_request
    from modelhub.serving.triton_client import LoadRequestBody

    bodies = {}
    for server in servers:
        config, files = build_load_request(server, MODEL, [version])
        # The very bytes ModelHub streams, built whole here: only Triton's side is timed.
        bodies[server.pk] = b"".join(LoadRequestBody(dict(config, name=DIRECT_MODEL), files))

    def load(server) -> float:
        with requests.Session() as own:  # one connection per server, as the reconciler's threads
            own.trust_env = False
            started = time.perf_counter()
            resp = own.post(
                f"{server.base_url}/v2/repository/models/{DIRECT_MODEL}/load",
                data=bodies[server.pk],
                headers={"Content-Type": "application/json"},
                timeout=TIMEOUT_S,
            )
            if resp.status_code != 200:
                raise RuntimeError(f"direct load on {server.name} failed: HTTP {resp.status_code}: {resp.text}")
            wait_until(lambda: model_ready(own, server.base_url, DIRECT_MODEL), TIMEOUT_S, f"{DIRECT_MODEL} ready")
            return time.perf_counter() - started

    with ThreadPoolExecutor(len(servers)) as pool:
        times = list(pool.map(load, servers))
    for server in servers:
        resp = http.post(f"{server.base_url}/v2/repository/models/{DIRECT_MODEL}/unload", timeout=TIMEOUT_S)
        resp.raise_for_status()
    for server in servers:
        wait_until(lambda s=server: not model_ready(http, s.base_url, DIRECT_MODEL), TIMEOUT_S, "direct unloaded")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    parser.add_argument("--servers", type=int, default=3, help="Triton servers in the fleet (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the database")
    args = parser.parse_args()

    with workdir("fleet", keep=args.keep) as tmp, scratch_database("modelhub_bench_fleet", keep=args.keep) as db:
        env = bench_env(db, tmp / "var", CELERY_TASK_ALWAYS_EAGER="1")
        setup_django(env)
        migrate()
        return run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from devtools.local_triton import LocalTriton
    from modelhub.audit.actors import Actor
    from modelhub.audit.models import Source
    from modelhub.registry.services import get_or_create_model, register_version
    from modelhub.serving.models import InferenceServer

    actor = Actor(source=Source.CLI)
    log(f"starting {args.servers} local Tritons")
    with ExitStack() as stack, requests.Session() as http:
        http.trust_env = False  # loopback: never through a proxy
        servers = []
        for n in range(args.servers):
            triton = stack.enter_context(LocalTriton(tmp / f"triton-{n}").start(timeout=120))
            servers.append(
                InferenceServer.objects.create(
                    name=f"fleet-{n}",
                    base_url=triton.http_url,
                    metrics_url=triton.metrics_url,
                    labels=[LABEL],
                    backends=["python"],
                )
            )
        model = get_or_create_model(MODEL, actor)
        fleets: list[float] = []
        slowest: list[float] = []
        for i in range(args.warmup + args.rounds):
            artifact = make_artifact(tmp / f"round{i}.zip", factor=i + 2)
            version = register_version(model, artifact, json.loads(json.dumps(DOUBLER_MANIFEST)), actor).version
            # Alternate which path goes first, so neither always follows the other.
            if i % 2:
                singles = time_single_loads(version, servers, http)
                fleet = time_fleet_deploy(version, actor, len(servers))
            else:
                fleet = time_fleet_deploy(version, actor, len(servers))
                singles = time_single_loads(version, servers, http)
            undeploy_fleet(version, actor, http)
            counted = i >= args.warmup
            log(
                f"round {i + 1}{'' if counted else ' (warm-up)'}: {version}: fleet deploy {fleet:.3f} s, "
                f"single loads {', '.join(f'{t:.3f}' for t in singles)} s, "
                f"difference {fleet - max(singles):+.3f} s"
            )
            if counted:
                fleets.append(fleet)
                slowest.append(max(singles))

    fleet_median = statistics.median(fleets)
    slowest_median = statistics.median(slowest)
    log(f"fleet deploy by label ({args.servers} servers): median {fleet_median:.3f} s over {len(fleets)} rounds")
    log(f"slowest single load:                median {slowest_median:.3f} s over {len(slowest)} rounds")
    report(
        fleet_deploy_overhead_s=fleet_median - slowest_median,
        fleet_deploy_median_s=fleet_median,
        slowest_single_load_median_s=slowest_median,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
