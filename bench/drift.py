"""Drift of 1 M samples x 16 features through the real drift code (modelhub.monitoring.drift).

    python bench/drift.py [--samples 1000000] [--features 16] [--chunk 10000]

A reference profile is built by `build_profile` from 10,000 reference rows; the window's
samples arrive in chunks of `--chunk` rows (as `iter_blocks` yields a window's blocks)
into `drift_of_chunks`: PSI over decile bins and KS per feature, JS of 10 output classes.
Chunks are made from a pre-built pool, so the timing is the drift code's. Peak memory is
tracemalloc's (numpy allocations included) during the drift computation only.

Last line: ``drift_s=<float> drift_peak_mib=<float>``. Target: <= 3 s.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import log, report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=10_000)
    args = parser.parse_args()

    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
    import django

    django.setup()
    from modelhub.monitoring import drift

    rng = np.random.default_rng(0)
    names = [f"x[{i}]" for i in range(args.features)]
    reference = rng.normal(size=(10_000, args.features)).astype(np.float32)
    classes = rng.integers(0, 10, size=10_000).astype(np.float64)
    # build_profile reads the layout from a version; the bench's "version" is its feature names.
    layout = SimpleNamespace(feature_names=names)
    drift.Layout = lambda version: layout
    profile = drift.build_profile(None, reference, classes, "bench")
    pool = rng.normal(0.1, 1.0, size=(args.chunk, args.features)).astype(np.float32)
    outputs = rng.integers(0, 10, size=(args.chunk, 1)).astype(np.float64)

    def chunks():
        for _ in range(args.samples // args.chunk):
            yield None, None, pool.copy(), outputs.copy()  # a fresh block, as read from the database

    tracemalloc.start()
    started = time.perf_counter()
    result = drift.drift_of_chunks(profile, chunks(), args.samples, class_output=0)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    log(f"rows={result.rows} psi_max={result.psi_max:.4f} ks_max={result.ks_max:.4f} js={result.js_outputs:.4f}")
    report(drift_s=round(elapsed, 3), drift_peak_mib=round(peak / 2**20, 1))


if __name__ == "__main__":
    main()
