"""Triton statistics: cumulative counters become per-interval points; a counter
that goes down (Triton restarted) starts a new baseline."""

import numpy as np
import pytest

from modelhub.monitoring.checks.stats import interval_points, read_counters
from modelhub.monitoring.models import CheckKind, CheckResult, Point, StatsBaseline, Status
from modelhub.monitoring.passes import run_pass
from modelhub.serving.triton_client import TritonClient
from tests.monitoring.test_checks import deploy
from tests.serving.test_deploy import register_server


def counters(success=0, fail=0, queue_ns=0, infer_ns=0) -> dict:
    base = {
        f"{s}_{k}": 0
        for s in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        for k in ("count", "ns")
    }
    base.update(success_count=success, fail_count=fail, queue_count=success, queue_ns=queue_ns)
    base.update(compute_infer_count=success, compute_infer_ns=infer_ns)
    return base


def test_interval_points_are_the_deltas_of_the_counters():
    before = counters(success=10, fail=1, queue_ns=1_000_000, infer_ns=5_000_000)
    after = counters(success=40, fail=3, queue_ns=4_000_000, infer_ns=65_000_000)

    points = interval_points(before, after, seconds=10.0)

    assert points["requests"] == 32 and points["failures"] == 2
    assert points["throughput_rps"] == pytest.approx(3.2)
    assert points["failure_rate"] == pytest.approx(2 / 32)
    assert points["queue_ms"] == pytest.approx(0.1)  # 3 ms over 30 requests
    assert points["compute_infer_ms"] == pytest.approx(2.0)
    assert "compute_input_ms" not in points  # no request went through it: no mean, not a zero


def test_a_counter_that_goes_down_starts_a_new_baseline_not_a_negative_or_giant_point():
    before = counters(success=1_000_000, fail=5)
    after_restart = counters(success=3, fail=0)

    assert interval_points(before, after_restart, seconds=60.0) is None
    assert interval_points(None, after_restart, seconds=60.0) is None  # first read: nothing to compare with
    # The next interval is measured from the new baseline.
    assert interval_points(after_restart, counters(success=8), seconds=60.0)["requests"] == 5


def test_read_counters_takes_the_deployed_version():
    answer = {
        "model_stats": [
            {"name": "m", "version": "1", "inference_stats": {"success": {"count": 4, "ns": 9}}},
            {"name": "m", "version": "2", "inference_stats": {"success": {"count": 7, "ns": 3}}},
        ]
    }
    assert read_counters(answer, 2)["success_count"] == 7
    assert read_counters(answer, 3) is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.triton
def test_n_inferences_on_the_real_triton_give_a_requests_point_of_n(triton, actor, doubler_zip, manifest):
    server = register_server(triton, "stats-real")
    deployment = deploy(actor, doubler_zip(2, "stats.zip"), manifest, "stats-real-model", server)

    run_pass("stats", "stats:1")  # the first read is the baseline
    [first] = CheckResult.objects.filter(kind=CheckKind.STATS, deployment=deployment)
    assert first.status == Status.OK and "baseline" in first.message
    assert not Point.objects.filter(target=f"deployment:{deployment.pk}").exists()

    client = TritonClient.for_server(server)
    for _ in range(7):
        client.infer("stats-real-model__v1", 1, {"INPUT": np.ones(3, dtype=np.float32)}, {"INPUT": "FP32"})
    client.close()
    run_pass("stats", "stats:2")

    target = f"deployment:{deployment.pk}"
    series = dict(Point.objects.filter(target=target).values_list("metric", "value"))
    assert series["requests"] == 7 and series["failures"] == 0 and series["failure_rate"] == 0
    assert series["throughput_rps"] > 0
    assert {"queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"} <= series.keys()
    baseline = StatsBaseline.objects.get(server=server, triton_model="stats-real-model__v1", triton_version="1")
    assert baseline.counters["success_count"] >= 7

    # The same pass again (a retried task) records nothing and does not move the baseline on.
    read_at = baseline.read_at
    assert run_pass("stats", "stats:2").written == 0
    baseline.refresh_from_db()
    assert baseline.read_at == read_at
