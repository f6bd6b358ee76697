"""Drift of one window of 1 M samples x 16 features: the drift task's database read and its math.

    python bench/drift.py [--samples 1000000] [--features 16] [--block 10000] [--keep-db]

Two figures, on the same samples:

- end to end (`drift_s`): the samples are written as SampleBlock rows (blocks of `--block`
  samples, through the writers' storage step, `monitoring.sampling._store`) into the bench's
  own database (``modelhub_bench_drift``, see _common.scratch_database); then the drift task's
  call for one window is timed: `monitoring.drift.window_drift`, which counts the window's
  samples, reads its blocks with `sampling.iter_blocks` and computes PSI over decile bins and KS
  per feature, JS of the 10 output classes. The writing is not timed.
- math only (`math_s`): the same blocks handed to `drift_of_chunks` from memory, no database.

The reference profile is built by `build_profile` from 10,000 reference rows of a version
whose schema gives `--features` feature columns and one class output. Peak memory is
tracemalloc's (numpy arrays and the bytes the database driver hands over included) during
each timed call only.

Last line: ``drift_s=<float> drift_peak_mib=<float> drift_cpu_s=<float> math_s=<float> math_peak_mib=<float>
math_cpu_s=<float> samples=<int>`` (`*_cpu_s`: this process's CPU time of the call, Postgres's not in it:
on a busy machine the wall time is mostly waiting for a core).
Target: drift_s <= 3 s.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import bench_env, log, migrate, report, scratch_database, setup_django, workdir

WINDOW_START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
WINDOW = timedelta(hours=1)
CLASSES = 10


def make_version(features: int):
    """A version whose schema gives `features` feature columns (one input of that many elements)
    and one class output (its predicted class: an INT64 label)."""
    from modelhub.registry.models import Model, ModelVersion, TensorSpec

    model = Model.objects.create(name="bench-drift")
    version = ModelVersion.objects.create(
        model=model, number=1, artifact="bench.zip", artifact_format="zip", sha256="0" * 64, size=1, backend="python"
    )
    TensorSpec.objects.bulk_create(
        [
            TensorSpec(version=version, direction="input", name="x", datatype="FP32", dims=[features]),
            TensorSpec(version=version, direction="output", name="label", datatype="INT64", dims=[1]),
        ]
    )
    return ModelVersion.objects.prefetch_related("tensors").get(pk=version.pk)


def write_window(version, blocks: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """The blocks as SampleBlock rows spread over the window, as the gateway's flushes store them."""
    from modelhub.monitoring.sampling import Batch, _store

    per_sample = WINDOW / sum(len(f) for f, _ in blocks)
    written = 0
    for number, (features, outputs) in enumerate(blocks):
        times = [WINDOW_START + per_sample * (written + i) for i in range(len(features))]
        ids = [f"b{number}-{i}" for i in range(len(features))]
        _store({version.pk: Batch(times, ids, [features], [outputs])}, source="gateway")
        written += len(features)


def block_sizes(samples: int, block: int) -> list[int]:
    return [block] * (samples // block) + ([samples % block] if samples % block else [])


def timed(call):
    """(result, wall seconds, this process's CPU seconds, peak MiB) of `call()`. The CPU seconds
    say how much of the wall time was this process's work on a busy machine (Postgres's is not in it)."""
    tracemalloc.start()
    started, cpu = time.perf_counter(), time.process_time()
    result = call()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, cpu, peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--block", type=int, default=10_000, help="samples per SampleBlock row")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(10_000, args.features)).astype(np.float32)
    reference_classes = rng.integers(0, CLASSES, size=10_000).astype(np.float64)
    blocks = [
        (
            rng.normal(0.1, 1.0, size=(n, args.features)).astype(np.float32),
            rng.integers(0, CLASSES, size=(n, 1)).astype(np.float64),
        )
        for n in block_sizes(args.samples, args.block)
    ]

    with workdir("drift") as var_dir, scratch_database("modelhub_bench_drift", keep=args.keep_db) as url:
        setup_django(bench_env(url, var_dir))
        migrate()
        from modelhub.monitoring import drift
        from modelhub.monitoring.sampling import Layout

        version = make_version(args.features)
        profile = drift.save_profile(drift.build_profile(version, reference, reference_classes, "bench"))
        class_output = Layout(version).class_output
        started = time.perf_counter()
        write_window(version, blocks)
        log(f"wrote {args.samples} samples in {len(blocks)} blocks in {time.perf_counter() - started:.1f} s")

        def math_only():
            chunks = ((None, None, f, o) for f, o in blocks)
            return drift.drift_of_chunks(profile, chunks, args.samples, class_output)

        def end_to_end():
            return drift.window_drift(profile, version.pk, WINDOW_START, WINDOW_START + WINDOW, class_output)

        math, math_s, math_cpu, math_peak = timed(math_only)
        result, drift_s, drift_cpu, drift_peak = timed(end_to_end)
        assert result.rows == math.rows == args.samples, (result.rows, math.rows)
        assert result.psi == math.psi and result.class_shares == math.class_shares
        log(f"rows={result.rows} psi_max={result.psi_max:.4f} ks_max={result.ks_max:.4f} js={result.js_outputs:.4f}")
    report(
        drift_s=round(drift_s, 3),
        drift_peak_mib=round(drift_peak, 1),
        drift_cpu_s=round(drift_cpu, 3),
        math_s=round(math_s, 3),
        math_peak_mib=round(math_peak, 1),
        math_cpu_s=round(math_cpu, 3),
        samples=args.samples,
    )


if __name__ == "__main__":
    main()
