"""Load memory: how much a worker grows while it loads a 512 MiB model into Triton.

    python bench/load_memory.py [--rounds 1] [--size-mib 512]

What it does, in one run on a fresh database (``modelhub_bench_load``) and one
real local Triton (``LocalTriton``, explicit model control):

* writes a stored (not deflated) zip: ``1/model.py``, a python-backend model
  that doubles its input and reads only the first bytes of its data file, and
  ``1/data.bin``, 512 MiB of random bytes; the same two files go into Triton's
  own model repository folder under another name;
* registers the zip with ``registry.services.register_version``;
* **ModelHub path, file override** (a server without ``model_repository``):
  ``serving.services.request_deploy`` with
  ``CELERY_TASK_ALWAYS_EAGER``, so the reconciler runs in this process as the
  request's transaction commits, exactly as a Celery worker would run it
  (list the artifact, stream the load request, check readiness, metadata and
  a smoke inference). A thread samples this process's RSS every 5 ms; the
  growth is the peak minus the RSS just before the request. The clock runs
  until the Deployment row reads ``observed=loaded``;
* **ModelHub path, model repository**: the same, to a second server entry for
  the same Triton whose ``model_repository`` is Triton's own repository
  folder: the reconciler copies the files out of the stored zip into
  ``<repository>/bench-load/1/`` and loads with the config only. The folder
  is removed on undeploy, so every round copies the 512 MiB again;
* **Triton path**: ``POST /v2/repository/models/<name>/load`` with the same
  config, for the copy in Triton's repository folder: Triton reads the files
  itself. The clock stops when Triton answers 200 (its load call returns once
  the model is ready);
* **direct override** (to read the figures by): the very request ModelHub
  sends (``reconciler.build_load_request``, ``triton_client.LoadRequestBody``),
  built whole in memory *before* the clock starts and posted in one piece to
  Triton under a third name, after the ModelHub path is measured: Triton's
  own time for a file-override load (receive, parse, base64-decode, write the
  files to a temporary model folder, load), without any client-side work.

Rounds alternate which path goes first; each round unloads everything after.

Last line: ``load_rss_growth_mib`` (the largest growth of any round) and
``load_vs_triton_s`` (median ModelHub load - median Triton repository load)
for the model-repository mode, the same two as ``override_rss_growth_mib``
and ``override_vs_triton_s`` for the file-override mode, then the medians
``modelhub_repository_load_s``, ``modelhub_override_load_s``,
``triton_repository_load_s``, ``triton_override_load_s`` and
``read_and_encode_s`` (reading the files from the stored zip and
base64-encoding them into the request, nothing sent: the client-side work a
streamed load overlaps with sending) and ``write_folder_s`` (the
model-repository mode's copy of the files out of the stored zip into a model
folder, alone). Targets: <= 64 MiB and <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
import zipfile
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DOUBLER_MANIFEST, bench_env, log, migrate, report, scratch_database, setup_django, workdir

MODEL = "bench-load"
REPOSITORY_MODEL = "bench-load-repository"
DIRECT_MODEL = "bench-load-direct"
TIMEOUT_S = 600.0
MIB = 1024 * 1024

# Reads only the head of its data file: the benchmark measures moving the
# bytes, not a model that needs them all.
MODEL_PY = """\
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "data.bin")
        with open(path, "rb") as fh:
            self.head = fh.read(16)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", (x * 2).astype(np.float32))]))
        return responses
"""


def write_model(zip_path: Path, repository_folder: Path, size_mib: int) -> None:
    """The zip ModelHub stores, and the same files in Triton's repository folder."""
    (repository_folder / "1").mkdir(parents=True)
    (repository_folder / "1" / "model.py").write_text(MODEL_PY)
    block = os.urandom(MIB)
    with (
        zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf,
        open(repository_folder / "1" / "data.bin", "wb") as copy,
    ):
        zf.writestr("1/model.py", MODEL_PY)
        with zf.open("1/data.bin", "w") as member:
            for i in range(size_mib):
                # One random MiB, rotated and stamped per MiB: incompressible, no two MiB alike.
                chunk = i.to_bytes(8, "little") + block[8 + i % 4096 :] + block[8 : 8 + i % 4096]
                member.write(chunk)
                copy.write(chunk)


class RssSampler:
    """Peak RSS of this process, sampled in a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / MIB


def wait_until(predicate, timeout: float, what: str, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def model_ready(http: requests.Session, base_url: str, name: str) -> bool:
    return http.get(f"{base_url}/v2/models/{name}/ready", timeout=5).status_code == 200


def unload(http: requests.Session, base_url: str, name: str) -> None:
    http.post(f"{base_url}/v2/repository/models/{name}/unload", timeout=TIMEOUT_S).raise_for_status()
    wait_until(lambda: not model_ready(http, base_url, name), TIMEOUT_S, f"{name} unloaded")


def time_modelhub(version, server, actor) -> tuple[float, float]:
    """Deploy request -> observed loaded, with this process's RSS growth meanwhile."""
    from modelhub.serving.models import Deployment, ObservedState
    from modelhub.serving.services import request_deploy

    with RssSampler() as rss:
        started = time.perf_counter()
        (deployment,) = request_deploy(version, [server], actor)  # eager: the reconciler runs here

        def loaded() -> bool:
            row = Deployment.objects.values("observed", "last_error").get(pk=deployment.pk)
            if row["observed"] == ObservedState.FAILED:
                raise RuntimeError(f"deploy of {version} failed: {row['last_error']}")
            return row["observed"] == ObservedState.LOADED

        wait_until(loaded, TIMEOUT_S, f"{version} to be observed loaded")
        elapsed = time.perf_counter() - started
    return elapsed, rss.growth_mib


def undeploy(version, server, actor, http: requests.Session) -> None:
    from modelhub.serving.services import request_undeploy

    request_undeploy(version, [server], actor)
    name = f"{MODEL}__v{version.number}"  # the version's own Triton name
    wait_until(lambda: not model_ready(http, server.base_url, name), TIMEOUT_S, f"{name} unloaded")
    if server.model_repository:  # the reconciler removes an unloaded version's folder
        wait_until(lambda: not (Path(server.model_repository) / name).exists(), TIMEOUT_S, f"{name}'s folder gone")


def time_triton_repository(config: dict, server, http: requests.Session) -> float:
    """Triton loads the same files from its own repository folder, with the same config."""
    body = json.dumps({"parameters": {"config": json.dumps(dict(config, name=REPOSITORY_MODEL))}})
    started = time.perf_counter()
    resp = http.post(f"{server.base_url}/v2/repository/models/{REPOSITORY_MODEL}/load", data=body, timeout=TIMEOUT_S)
    elapsed = time.perf_counter() - started
    if resp.status_code != 200:
        raise RuntimeError(f"repository load failed: HTTP {resp.status_code}: {resp.text}")
    unload(http, server.base_url, REPOSITORY_MODEL)
    return elapsed


def time_direct_override(version, server, http: requests.Session) -> tuple[float, float]:
    """ModelHub's request, built whole beforehand and sent in one piece: Triton's share of an
    override load; and the time building it took (reading and base64-encoding the files)."""
    from modelhub.serving.reconciler import build_load_request
    from modelhub.serving.triton_client import LoadRequestBody

    started = time.perf_counter()
    config, files = build_load_request(server, DIRECT_MODEL, [version])
    body = b"".join(LoadRequestBody(dict(config, name=DIRECT_MODEL), files))
    encoding = time.perf_counter() - started
    started = time.perf_counter()
    resp = http.post(f"{server.base_url}/v2/repository/models/{DIRECT_MODEL}/load", data=body, timeout=TIMEOUT_S)
    elapsed = time.perf_counter() - started
    del body
    if resp.status_code != 200:
        raise RuntimeError(f"direct override load failed: HTTP {resp.status_code}: {resp.text}")
    unload(http, server.base_url, DIRECT_MODEL)
    return elapsed, encoding


def time_repository_copy(version, tmp: Path) -> float:
    """What the model-repository mode adds before its load: writing the model's folder from the stored zip."""
    from modelhub.serving.models import InferenceServer
    from modelhub.serving.reconciler import _write_to_model_repository

    scratch = tmp / "scratch-repository"
    scratch.mkdir()
    server = InferenceServer(name="bench-scratch", backends=["python"], model_repository=str(scratch))  # not saved
    started = time.perf_counter()
    _write_to_model_repository(server, MODEL, [version])
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds (default 1)")
    parser.add_argument("--size-mib", type=int, default=512, help="size of the data file (default 512)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the database")
    args = parser.parse_args()

    with workdir("load", keep=args.keep) as tmp, scratch_database("modelhub_bench_load", keep=args.keep) as db:
        env = bench_env(
            db,
            tmp / "var",
            CELERY_TASK_ALWAYS_EAGER="1",
            MODELHUB_MAX_ARTIFACT_BYTES=str((args.size_mib + 64) * MIB),
            MODELHUB_TRITON_LOAD_TIMEOUT_S=str(TIMEOUT_S),
        )
        setup_django(env)
        migrate()
        return run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> int:
    from devtools.local_triton import LocalTriton
    from modelhub.audit.actors import Actor
    from modelhub.audit.models import Source
    from modelhub.registry.services import get_or_create_model, register_version
    from modelhub.serving.models import InferenceServer
    from modelhub.serving.reconciler import deployable_config

    actor = Actor(source=Source.CLI)
    log("starting a local Triton")
    with LocalTriton(tmp / "triton").start(timeout=120) as triton, requests.Session() as http:
        http.trust_env = False  # loopback: never through a proxy
        log(f"writing a {args.size_mib} MiB model (zip and Triton repository copy)")
        artifact = tmp / "big.zip"
        write_model(artifact, triton.repository / REPOSITORY_MODEL, args.size_mib)
        server = InferenceServer.objects.create(
            name="bench-triton", base_url=triton.http_url, metrics_url=triton.metrics_url, backends=["python"]
        )
        # The same Triton once more, loading from its own repository folder that ModelHub writes.
        repository_server = InferenceServer.objects.create(
            name="bench-triton-repository",
            base_url=triton.http_url,
            metrics_url=triton.metrics_url,
            backends=["python"],
            model_repository=str(triton.repository),
        )
        log("registering it")
        version = register_version(
            get_or_create_model(MODEL, actor), artifact, json.loads(json.dumps(DOUBLER_MANIFEST)), actor
        )
        version = version.version
        config = deployable_config(server, version, [version.number])

        log("warm-up: a first python-backend load of a fresh server is slower")
        time_triton_repository(config, server, http)

        override, override_growth, in_repository, repository_growth = [], [], [], []
        repository, direct, encode, copy = [], [], [], []

        def modelhub_round(target, times: list, growth: list) -> None:
            elapsed, grown = time_modelhub(version, target, actor)
            times.append(elapsed)
            growth.append(grown)
            undeploy(version, target, actor, http)

        for i in range(args.rounds):
            steps = [
                lambda: repository.append(time_triton_repository(config, server, http)),
                lambda: modelhub_round(server, override, override_growth),
                lambda: modelhub_round(repository_server, in_repository, repository_growth),
            ]
            for step in steps if i % 2 == 0 else reversed(steps):
                step()
            direct_s, encode_s = time_direct_override(version, server, http)
            direct.append(direct_s)
            encode.append(encode_s)
            copy.append(time_repository_copy(version, tmp))
            log(
                f"round {i + 1}: ModelHub load by file override {override[-1]:.3f} s "
                f"(RSS +{override_growth[-1]:.1f} MiB), from the model repository {in_repository[-1]:.3f} s "
                f"(RSS +{repository_growth[-1]:.1f} MiB); Triton from its repository {repository[-1]:.3f} s, "
                f"the same override request sent directly {direct_s:.3f} s (building it: {encode_s:.3f} s); "
                f"writing the model's folder alone {copy[-1]:.3f} s"
            )

    override_s, in_repository_s, repository_s, direct_s, encode_s, copy_s = (
        statistics.median(v) for v in (override, in_repository, repository, direct, encode, copy)
    )
    report(
        load_rss_growth_mib=max(repository_growth),
        load_vs_triton_s=in_repository_s - repository_s,
        override_rss_growth_mib=max(override_growth),
        override_vs_triton_s=override_s - repository_s,
        modelhub_repository_load_s=in_repository_s,
        modelhub_override_load_s=override_s,
        triton_repository_load_s=repository_s,
        triton_override_load_s=direct_s,
        read_and_encode_s=encode_s,
        write_folder_s=copy_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
