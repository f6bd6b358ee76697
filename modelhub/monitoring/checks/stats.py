"""Triton statistics: cumulative counters of /v2/models/{m}/stats turned into
per-interval points (requests, failures, throughput, failure rate, mean queue
and compute times per request).

Each read is compared with the last one kept in StatsBaseline (this module is
its one writer). A counter that went down means Triton restarted (its
counters start again from zero): that read becomes the new baseline and gives
no point, so a chart never shows a negative or a giant value.
"""

from dataclasses import dataclass
from datetime import datetime

from modelhub.monitoring.checks._target import deployment_fields, triton_name
from modelhub.monitoring.models import CheckKind, StatsBaseline, Status
from modelhub.monitoring.record import Result
from modelhub.serving.models import Deployment
from modelhub.serving.triton_client import TritonClient, TritonError

STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def read_counters(answer: dict, number: int) -> dict[str, int] | None:
    """The counters of version `number` in a statistics answer; None if it is not there."""
    for entry in answer.get("model_stats", []):
        if str(entry.get("version")) == str(number):
            stats = entry.get("inference_stats", {})
            counters = {}
            for stat in ("success", "fail", *STAGES):
                counters[f"{stat}_count"] = int(stats.get(stat, {}).get("count", 0))
                counters[f"{stat}_ns"] = int(stats.get(stat, {}).get("ns", 0))
            return counters
    return None


def interval_points(previous: dict | None, current: dict, seconds: float) -> dict[str, float] | None:
    """The points of the interval between two reads; None when `previous` cannot
    serve as a baseline (there is none, or a counter went down: Triton restarted)."""
    if previous is None or seconds <= 0 or any(current[k] < previous.get(k, 0) for k in current):
        return None
    delta = {k: current[k] - previous.get(k, 0) for k in current}
    requests = delta["success_count"] + delta["fail_count"]
    points = {
        "requests": float(requests),
        "failures": float(delta["fail_count"]),
        "throughput_rps": requests / seconds,
        "failure_rate": delta["fail_count"] / requests if requests else 0.0,
    }
    for stage in STAGES:
        if delta[f"{stage}_count"]:  # a mean over no request is no value, not zero
            points[f"{stage}_ms"] = delta[f"{stage}_ns"] / delta[f"{stage}_count"] / 1e6
    return points


@dataclass
class StatsReading:
    """A check's result and the counters to keep as the next baseline (None: keep the old one)."""

    result: Result
    counters: dict | None


def check_stats(client: TritonClient, deployment: Deployment, baseline: StatsBaseline | None, now: datetime):
    name, number = triton_name(deployment)
    fields = deployment_fields(deployment)
    try:
        answer = client.statistics(name)
    except TritonError as exc:
        return StatsReading(Result(CheckKind.STATS, Status.FAIL, message=str(exc), time=now, **fields), None)
    counters = read_counters(answer, number)
    if counters is None:
        message = f"Triton server {client.server_name!r} has no statistics for version {number} of {name!r}"
        return StatsReading(Result(CheckKind.STATS, Status.FAIL, message=message, time=now, **fields), None)
    seconds = (now - baseline.read_at).total_seconds() if baseline else 0.0
    points = interval_points(baseline.counters if baseline else None, counters, seconds)
    if points is None:
        message = (
            "first read: counters kept as the baseline"
            if baseline is None
            else "a counter went down (Triton restarted?): counters kept as a new baseline"
        )
        return StatsReading(Result(CheckKind.STATS, Status.OK, message=message, time=now, **fields), counters)
    target = f"deployment:{deployment.pk}"
    failures = int(points["failures"])
    result = Result(
        CheckKind.STATS,
        Status.WARN if failures else Status.OK,
        value=points["failure_rate"],
        message=f"{failures} of {int(points['requests'])} requests failed in {seconds:.0f} s" if failures else "",
        details={"seconds": round(seconds, 3), **{k: round(v, 6) for k, v in points.items()}},
        points=[(metric, target, value) for metric, value in points.items()],
        time=now,
        **fields,
    )
    return StatsReading(result, counters)


def baseline_key(deployment: Deployment) -> tuple[int, str, str]:
    name, number = triton_name(deployment)
    return deployment.server_id, name, str(number)


def current_baselines(deployments: list[Deployment]) -> dict[tuple[int, str, str], StatsBaseline]:
    """The stored baselines of these deployments, by baseline_key."""
    keys = {baseline_key(d) for d in deployments}
    rows = StatsBaseline.objects.filter(server_id__in={k[0] for k in keys}, triton_model__in={k[1] for k in keys})
    return {key: row for row in rows if (key := (row.server_id, row.triton_model, row.triton_version)) in keys}


def save_baselines(readings: list[tuple[Deployment, dict]], now: datetime) -> None:
    """Keep these counters as the baselines of the next reads (one upsert)."""
    rows = {}
    for deployment, counters in readings:
        server_id, model, version = baseline_key(deployment)
        rows[server_id, model, version] = StatsBaseline(
            server_id=server_id, triton_model=model, triton_version=version, counters=counters, read_at=now
        )
    StatsBaseline.objects.bulk_create(
        list(rows.values()),
        update_conflicts=True,
        unique_fields=["server", "triton_model", "triton_version"],
        update_fields=["counters", "read_at"],
    )
