"""Accuracy check overhead: ModelHub's accuracy check on an evaluation set of 20,000
rows against a plain tritonclient.http loop over the same rows, same batch size.

The demo's digits classifier (scikit-learn -> ONNX, run by ModelHub's python-backend
ONNX runner, max_batch_size 64) is registered and deployed to a real local Triton.
Its evaluation set is scikit-learn's digits repeated to 20,000 rows, attached as an
.npz through the same service the API uses.

- ModelHub: `modelhub.monitoring.accuracy.evaluate(client, deployment)` from the
  start: it reads the stored set, checks it against the schema, sends it in batches
  of 64 through TritonClient and scores the answers. Nothing is recorded.
- Plain loop: the rows already in memory as numpy, one `InferenceServerClient`,
  `InferInput` + `set_data_from_numpy(binary_data=True)` + `infer` asking for the
  label output in binary, `as_numpy`, then the accuracy with numpy.

Rounds alternate which goes first. The figure is the ratio of the fastest rounds: on a
shared machine other load only ever slows a round down, so the fastest is the cleanest
measure of each path's own cost (the medians are printed too).

    python bench/accuracy_check.py   # accuracy_check_ratio=…  (target ≤ 1.2)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_env, log, migrate, report, scratch_database, setup_django, workdir

ROWS = 20_000
BATCH = 64


def evaluation_rows() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    reps = -(-ROWS // len(labels))
    return np.tile(features.astype(np.float32), (reps, 1))[:ROWS], np.tile(labels.astype(np.int64), reps)[:ROWS]


def plain_loop(url: str, model: str, version: int, features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    import tritonclient.http as triton_http

    started = time.perf_counter()
    client = triton_http.InferenceServerClient(url.removeprefix("http://"), network_timeout=60)
    try:
        answers = []
        requested = [triton_http.InferRequestedOutput("label", binary_data=True)]
        for start in range(0, len(features), BATCH):
            batch = features[start : start + BATCH]
            tensor = triton_http.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch, binary_data=True)
            # Triton's own name of the version (serving.models.triton_model_name)
            result = client.infer(f"{model}__v{version}", [tensor], model_version=str(version), outputs=requested)
            answers.append(result.as_numpy("label"))
        accuracy = float(np.mean(np.concatenate(answers)[:, 0] == labels))
    finally:
        client.close()
    return time.perf_counter() - started, accuracy


def modelhub_check(deployment) -> tuple[float, float]:
    from modelhub.monitoring.accuracy import evaluate
    from modelhub.serving.triton_client import TritonClient

    started = time.perf_counter()
    client = TritonClient.for_server(deployment.server)
    try:
        result = evaluate(client, deployment)
    finally:
        client.close()
    elapsed = time.perf_counter() - started
    if result.value is None:
        raise RuntimeError(f"the accuracy check failed: {result.message}")
    if result.details["largest_request_rows"] > BATCH:
        raise RuntimeError(f"a request carried {result.details['largest_request_rows']} rows, over {BATCH}")
    return elapsed, result.value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the database")
    args = parser.parse_args()

    with workdir("accuracy", keep=args.keep) as tmp, scratch_database("modelhub_bench_accuracy", args.keep) as db:
        env = bench_env(db, tmp / "var", CELERY_TASK_ALWAYS_EAGER="1")
        setup_django(env)
        migrate()
        return run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> int:
    from devtools.local_triton import LocalTriton
    from modelhub.audit.actors import Actor
    from modelhub.audit.models import Source
    from modelhub.demo.artifacts import build_demo_versions
    from modelhub.registry.evaluation import attach_evaluation_set
    from modelhub.registry.services import get_or_create_model, register_version
    from modelhub.serving.models import Deployment, InferenceServer, ObservedState
    from modelhub.serving.services import request_deploy

    actor = Actor(source=Source.CLI)
    features, labels = evaluation_rows()
    set_path = tmp / "digits-20k.npz"
    np.savez(set_path, input=features, label=labels)
    log("building the digits model")
    demo = build_demo_versions(tmp / "demo")[0]
    log("starting a local Triton")
    with LocalTriton(tmp / "triton").start(timeout=120) as triton:
        server = InferenceServer.objects.create(
            name="bench-triton", base_url=triton.http_url, metrics_url=triton.metrics_url, backends=["python"]
        )
        model = get_or_create_model("digits", actor)
        version = register_version(model, demo.archive_path, demo.manifest, actor).version
        attach_evaluation_set(model, set_path, actor, output="label", metric="accuracy", threshold=0.9)
        (deployment,) = request_deploy(version, [server], actor)
        deployment = Deployment.objects.select_related("version__model", "server").get(pk=deployment.pk)
        if deployment.observed != ObservedState.LOADED:
            raise RuntimeError(f"the digits model did not load: {deployment.last_error}")

        ours: list[float] = []
        plain: list[float] = []
        for i in range(args.warmup + args.rounds):
            if i % 2:
                plain_s, plain_acc = plain_loop(triton.http_url, "digits", version.number, features, labels)
                ours_s, ours_acc = modelhub_check(deployment)
            else:
                ours_s, ours_acc = modelhub_check(deployment)
                plain_s, plain_acc = plain_loop(triton.http_url, "digits", version.number, features, labels)
            if abs(ours_acc - plain_acc) > 1e-9:
                raise RuntimeError(f"the two paths disagree: ModelHub {ours_acc}, plain loop {plain_acc}")
            counted = i >= args.warmup
            log(
                f"round {i + 1}{'' if counted else ' (warm-up)'}: ModelHub {ours_s:.3f} s, plain loop {plain_s:.3f} s "
                f"(accuracy {ours_acc:.4f} on {ROWS} rows)"
            )
            if counted:
                ours.append(ours_s)
                plain.append(plain_s)

    ours_median, plain_median = statistics.median(ours), statistics.median(plain)
    log(f"ModelHub accuracy check: median {ours_median:.3f} s; plain tritonclient loop: median {plain_median:.3f} s")
    report(
        accuracy_check_s=min(ours),
        plain_loop_s=min(plain),
        accuracy_check_median_ratio=ours_median / plain_median,
        accuracy_check_ratio=min(ours) / min(plain),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
