"""The UI's charts: Plotly figures built from the monitoring series.

Each chart is a name, the kind of target it draws, and a builder; the page includes
`ui/includes/chart.html` with both, and the chart-data view calls the builder.

    name                kind         traces
    latency             deployment   p50, p95, p99 latency from the latency probe (ms)
    latency_breakdown   deployment   Triton's queue, compute input, infer, output time per request, stacked (ms)
    traffic             deployment   throughput (req/s); failure rate (%, second y axis)
    rollout             model        p95 latency (ms) and throughput (req/s) of each version with points: "v1", "v2"
    accuracy            model        the evaluation metric of each version over time, the threshold and the
                        version      baseline (the production alias's latest result) as horizontal lines
    server_utilisation  server       CPU % and GPU %
    server_memory       server       host and GPU memory used and total (GiB)
    server_up           server       share of health checks that found the server up (%)

Targets are written as in the UI: `deployment:<pk>`, `version:<pk>`, `model:<name>`,
`server:<name>`. A builder returns {"data", "layout", "empty", "points"}: "empty" says
why nothing is drawn (None when something is), "points" counts the data points sent.

All series of one chart are read in one pass over the roll-ups and one over the raw
points, grouped by series (`read_buckets`), so a chart costs the same few queries
whatever its number of versions or deployments, and no trace has more than
MAX_POINTS points: the database buckets, as `monitoring.series.read_series` does.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import chain

from django.conf import settings
from django.db.models import Count, Max, Min, Sum
from django.utils import timezone

from modelhub.monitoring.models import CheckKind, CheckResult, Point, PointRollup
from modelhub.monitoring.series import (
    GRANULARITY,
    MAX_POINTS,
    RAW,
    Bucket,
    bucket_width,
    floor_seconds,
    rolled_up_through,
    source_for,
)
from modelhub.registry.models import Alias, EvaluationSet, Model, ModelVersion
from modelhub.serving.models import Deployment, InferenceServer

PRODUCTION_ALIAS = "production"
GIB = 2**30
TARGET_SYNTAX = re.compile(r"(deployment|version|model|server):([A-Za-z0-9._-]{1,100})")


class BadTarget(ValueError):
    """A target the chart cannot read (syntax, or a kind the chart does not draw): 400."""


class NoSuchTarget(LookupError):
    """A well-formed target that names nothing: 404."""


# --- reading the series --------------------------------------------------------------

Buckets = dict[datetime, tuple[int, float, float, float]]  # bucket start -> (count, sum, min, max)


def read_buckets(
    metrics: list[str], targets: list[str], start: datetime, end: datetime
) -> dict[tuple[str, str], Buckets]:
    """{(metric, target): buckets} of every series in metrics x targets that has points in [start, end).

    The bucket width and the source (raw points; or minute or hour roll-ups, then the raw
    points after the last roll-up) are chosen as read_series chooses them, once for all.
    """
    source = source_for(start, bucket_width(start, end, MAX_POINTS), timezone.now())
    width = bucket_width(start, end, MAX_POINTS, at_least=GRANULARITY[source])
    if source == RAW:
        return _raw(metrics, targets, start, end, width)
    through = rolled_up_through()
    boundary = min(floor_seconds(through, GRANULARITY[source]), end) if through else start
    found = _rollups(source, metrics, targets, start, boundary, width) if boundary > start else {}
    if max(start, boundary) < end:
        for key, buckets in _raw(metrics, targets, max(start, boundary), end, width).items():
            found[key] = merged(found.get(key, {}), buckets)
    return found


def _raw(metrics, targets, start: datetime, end: datetime, width: int) -> dict[tuple[str, str], Buckets]:
    rows = Point.objects.filter(metric__in=metrics, target__in=targets, time__gte=start, time__lt=end)
    totals = {"n": Count("value"), "total": Sum("value"), "low": Min("value"), "high": Max("value")}
    return _by_series(rows, Bucket("time", width), totals)


def _rollups(resolution, metrics, targets, start, end, width: int) -> dict[tuple[str, str], Buckets]:
    """From the roll-up holding `start` to `end`: sums of sums and counts, so a bucket's
    mean is the mean of its points, not a mean of means."""
    rows = PointRollup.objects.filter(
        resolution=resolution,
        metric__in=metrics,
        target__in=targets,
        bucket__gte=floor_seconds(start, GRANULARITY[resolution]),
        bucket__lt=end,
    )
    totals = {"n": Sum("count"), "total": Sum("sum"), "low": Min("min"), "high": Max("max")}
    return _by_series(rows, Bucket("bucket", width), totals)


def _by_series(rows, bucket: Bucket, totals: dict) -> dict[tuple[str, str], Buckets]:
    grouped = rows.order_by().values("metric", "target", moment=bucket).annotate(**totals)
    found: dict[tuple[str, str], Buckets] = {}
    # Tuples, not dicts: a 30-day chart of several series reads thousands of rows.
    for metric, target, moment, *values in grouped.values_list("metric", "target", "moment", *totals):
        found.setdefault((metric, target), {})[moment] = tuple(values)
    return found


def _merge(a: tuple, b: tuple) -> tuple:
    return (a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3]))


def merged(*series: Buckets) -> Buckets:
    """Several series as one (a version served by two deployments; roll-ups and the raw points
    after them): the mean of all their points."""
    out: Buckets = {}
    for buckets in series:
        for moment, values in buckets.items():
            out[moment] = _merge(out[moment], values) if moment in out else values
    return out


# --- figures -------------------------------------------------------------------------


def trace(name: str, buckets: Buckets, unit: str, scale: float = 1.0, **style) -> dict:
    """A line of bucket means, oldest first, with hover text in `unit`."""
    moments = sorted(buckets)
    return {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": [m.isoformat() for m in moments],
        "y": [buckets[m][1] / buckets[m][0] * scale for m in moments],
        "hovertemplate": f"%{{x}}<br>{name}: %{{y:.3~f}} {unit}<extra></extra>",
        **style,
    }


def level_line(name: str, value: float, start: datetime, end: datetime, unit: str) -> dict:
    """A horizontal reference line (threshold, baseline) across the whole range."""
    return {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": [start.isoformat(), end.isoformat()],
        "y": [value, value],
        "line": {"dash": "dash", "width": 1},
        "hovertemplate": f"{name}: %{{y:.4~f}} {unit}<extra></extra>",
        "meta": "reference",
    }


def figure(title: str, y_title: str, traces: list[dict], empty: str, start, end, **layout) -> dict:
    """The chart's answer; `empty` is the reason shown when no trace has data. `layout` adds
    to Plotly's layout (its `yaxis` to the y axis's)."""
    data_traces = [t for t in traces if t.get("meta") != "reference"]
    points = sum(len(t["x"]) for t in data_traces)
    yaxis = {"title": {"text": y_title}, "rangemode": "tozero", **layout.pop("yaxis", {})}
    return {
        "data": traces if points else [],
        "layout": {
            "title": {"text": title},
            "xaxis": {"title": {"text": "time (UTC)"}, "type": "date", "range": [start.isoformat(), end.isoformat()]},
            "yaxis": yaxis,
            # Under the axis title, clear of the two-line date ticks (Plotly grows the margin to fit it).
            "legend": {"orientation": "h", "x": 0, "y": -0.3, "yanchor": "top"},
            "margin": {"t": 48, "r": 64, "b": 48, "l": 64},
            "hovermode": "x unified",
            **layout,
        },
        "empty": None if points else empty,
        "points": points,
    }


def _every(setting: str) -> str:
    return f"{getattr(settings, setting):g} s"


# --- targets -------------------------------------------------------------------------


def parse_target(target: str) -> tuple[str, str]:
    match = TARGET_SYNTAX.fullmatch(target or "")
    if not match:
        raise BadTarget(
            f"target {target!r} is not <kind>:<id>, e.g. deployment:12, version:5, model:digits, server:local"
        )
    kind, key = match.groups()
    if kind in ("deployment", "version") and not key.isdigit():
        raise BadTarget(f"target {target!r}: a {kind} is named by its number, e.g. {kind}:12")
    return kind, key


def _deployment(key: str) -> Deployment:
    found = Deployment.objects.select_related("version__model", "server").filter(pk=int(key)).first()
    if found is None:
        raise NoSuchTarget(f"no such deployment: {key}")
    return found


def _server(key: str) -> InferenceServer:
    found = InferenceServer.objects.filter(name=key).first()
    if found is None:
        raise NoSuchTarget(f"no such server: {key!r}")
    return found


def _model(key: str) -> Model:
    found = Model.objects.filter(name=key).first()
    if found is None:
        raise NoSuchTarget(f"no such model: {key!r}")
    return found


def _version(key: str) -> ModelVersion:
    found = ModelVersion.objects.select_related("model").filter(pk=int(key)).first()
    if found is None:
        raise NoSuchTarget(f"no such version: {key}")
    return found


LOOKUPS: dict[str, Callable[[str], object]] = {
    "deployment": _deployment,
    "server": _server,
    "model": _model,
    "version": _version,
}


# --- deployment charts ---------------------------------------------------------------


def latency(deployment: Deployment, start: datetime, end: datetime) -> dict:
    target = f"deployment:{deployment.pk}"
    names = {"latency_p50_ms": "p50", "latency_p95_ms": "p95", "latency_p99_ms": "p99"}
    found = read_buckets(list(names), [target], start, end)
    traces = [trace(label, found[m, target], "ms") for m, label in names.items() if (m, target) in found]
    reason = (
        f"no latency probes in this window (the latency check runs every {_every('MONITORING_LATENCY_INTERVAL_S')})"
    )
    return figure(
        f"Latency of {deployment.version} on {deployment.server.name}", "latency (ms)", traces, reason, start, end
    )


def latency_breakdown(deployment: Deployment, start: datetime, end: datetime) -> dict:
    target = f"deployment:{deployment.pk}"
    names = {
        "queue_ms": "queue",
        "compute_input_ms": "compute input",
        "compute_infer_ms": "compute infer",
        "compute_output_ms": "compute output",
    }
    found = read_buckets(list(names), [target], start, end)
    traces = [
        trace(label, found[m, target], "ms per request", stackgroup="time", fill="tonexty")
        for m, label in names.items()
        if (m, target) in found
    ]
    return figure(
        f"Triton queue vs compute time of {deployment.version} on {deployment.server.name}",
        "time per request (ms)",
        traces,
        "no requests in this window",
        start,
        end,
    )


def traffic(deployment: Deployment, start: datetime, end: datetime) -> dict:
    target = f"deployment:{deployment.pk}"
    found = read_buckets(["throughput_rps", "failure_rate"], [target], start, end)
    traces = []
    if ("throughput_rps", target) in found:
        traces.append(trace("throughput", found["throughput_rps", target], "req/s"))
    if ("failure_rate", target) in found:
        traces.append(trace("failure rate", found["failure_rate", target], "%", scale=100, yaxis="y2"))
    reason = f"no requests in this window (Triton's statistics are read every {_every('MONITORING_STATS_INTERVAL_S')})"
    return figure(
        f"Traffic of {deployment.version} on {deployment.server.name}",
        "throughput (req/s)",
        traces,
        reason,
        start,
        end,
        yaxis2={"title": {"text": "failure rate (%)"}, "overlaying": "y", "side": "right", "rangemode": "tozero"},
    )


# --- model and version charts --------------------------------------------------------


def rollout(model: Model, start: datetime, end: datetime) -> dict:
    """p95 latency and throughput per version (all its deployments together), overlaid."""
    targets_of: dict[int, list[str]] = {}
    for pk, number in Deployment.objects.filter(version__model=model).values_list("pk", "version__number"):
        targets_of.setdefault(number, []).append(f"deployment:{pk}")
    all_targets = list(chain.from_iterable(targets_of.values()))
    found = read_buckets(["latency_p95_ms", "throughput_rps"], all_targets, start, end) if all_targets else {}
    traces = []
    for metric, unit, axis in (("latency_p95_ms", "ms", "y"), ("throughput_rps", "req/s", "y2")):
        for number in sorted(targets_of):
            series = [found[metric, t] for t in targets_of[number] if (metric, t) in found]
            if series:
                label = f"v{number}" if metric == "latency_p95_ms" else f"v{number} throughput"
                style = {"legendgroup": f"v{number}", "yaxis": axis}
                if axis == "y2":
                    style["line"] = {"dash": "dot"}
                traces.append(trace(label, merged(*series), unit, **style))
    return figure(
        f"Rollout of {model.name}: p95 latency and throughput per version",
        "p95 latency (ms)",
        traces,
        f"no latency probes or requests of any version of {model.name} in this window",
        start,
        end,
        yaxis2={"title": {"text": "throughput (req/s)"}, "overlaying": "y", "side": "right", "rangemode": "tozero"},
    )


def accuracy(target: Model | ModelVersion, start: datetime, end: datetime) -> dict:
    model = target if isinstance(target, Model) else target.model
    evaluation_set = EvaluationSet.objects.filter(model=model).first()
    if evaluation_set is None:
        return figure(
            f"Accuracy of {target}", "accuracy", [], "no accuracy runs yet: upload an evaluation set", start, end
        )
    metric = evaluation_set.metric
    label = evaluation_set.get_metric_display()
    numbers = (
        {target.pk: target.number}
        if isinstance(target, ModelVersion)
        else dict(ModelVersion.objects.filter(model=model).values_list("pk", "number"))
    )
    found = read_buckets([metric], [f"version:{pk}" for pk in numbers], start, end)
    traces = [
        trace(f"v{number}", found[metric, f"version:{pk}"], "", mode="lines+markers")
        for pk, number in sorted(numbers.items(), key=lambda item: item[1])
        if (metric, f"version:{pk}") in found
    ]
    if evaluation_set.threshold is not None:
        traces.append(level_line(f"threshold {evaluation_set.threshold:g}", evaluation_set.threshold, start, end, ""))
    baseline = production_baseline(model)
    if baseline is not None:
        number, value = baseline
        traces.append(level_line(f"baseline (production v{number}) {value:.4g}", value, start, end, ""))
    every = settings.MONITORING_ACCURACY_INTERVAL_S / 3600
    return figure(
        f"{label} of {target} over time",
        label,
        traces,
        f"no accuracy runs in this window (the accuracy check runs every {every:g} h, or run it now)",
        start,
        end,
    )


def production_baseline(model: Model) -> tuple[int, float] | None:
    """(version number, latest score) of the version the production alias points at."""
    alias = Alias.objects.filter(model=model, name=PRODUCTION_ALIAS).select_related("version").first()
    if alias is None:
        return None
    latest = (
        CheckResult.objects.filter(kind=CheckKind.ACCURACY, version_id=alias.version_id)
        .exclude(value=None)
        .values_list("value", flat=True)
        .first()
    )
    return None if latest is None else (alias.version.number, latest)


# --- server charts -------------------------------------------------------------------


def _metrics_reason() -> str:
    return f"no server metrics in this window (the metrics check runs every {_every('MONITORING_METRICS_INTERVAL_S')})"


def server_utilisation(server: InferenceServer, start: datetime, end: datetime) -> dict:
    target = f"server:{server.pk}"
    found = read_buckets(["cpu_util", "gpu_util"], [target], start, end)
    # Triton reports utilisation as a fraction of 1.
    traces = [
        trace(label, found[m, target], "%", scale=100)
        for m, label in (("cpu_util", "CPU"), ("gpu_util", "GPU"))
        if (m, target) in found
    ]
    return figure(f"CPU and GPU utilisation of {server.name}", "utilisation (%)", traces, _metrics_reason(), start, end)


def server_memory(server: InferenceServer, start: datetime, end: datetime) -> dict:
    target = f"server:{server.pk}"
    names = {
        "memory_used_bytes": ("host used", {}),
        "memory_total_bytes": ("host total", {"line": {"dash": "dash"}}),
        "gpu_memory_used_bytes": ("GPU used", {}),
        "gpu_memory_total_bytes": ("GPU total", {"line": {"dash": "dash"}}),
    }
    found = read_buckets(list(names), [target], start, end)
    traces = [
        trace(label, found[m, target], "GiB", scale=1 / GIB, **style)
        for m, (label, style) in names.items()
        if (m, target) in found
    ]
    return figure(f"Memory of {server.name}", "memory (GiB)", traces, _metrics_reason(), start, end)


def server_up(server: InferenceServer, start: datetime, end: datetime) -> dict:
    target = f"server:{server.pk}"
    found = read_buckets(["up"], [target], start, end)
    traces = [trace("up", found["up", target], "% of health checks", scale=100, line={"shape": "hv"})] if found else []
    reason = f"no health checks in this window (the health check runs every {_every('MONITORING_HEALTH_INTERVAL_S')})"
    return figure(
        f"Health of {server.name}", "health checks up (%)", traces, reason, start, end, yaxis={"range": [0, 105]}
    )


# --- the registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    name: str
    kinds: tuple[str, ...]  # the target kinds it draws
    build: Callable[..., dict]


CHARTS: dict[str, Chart] = {
    chart.name: chart
    for chart in (
        Chart("latency", ("deployment",), latency),
        Chart("latency_breakdown", ("deployment",), latency_breakdown),
        Chart("traffic", ("deployment",), traffic),
        Chart("rollout", ("model",), rollout),
        Chart("accuracy", ("model", "version"), accuracy),
        Chart("server_utilisation", ("server",), server_utilisation),
        Chart("server_memory", ("server",), server_memory),
        Chart("server_up", ("server",), server_up),
    )
}


def build_chart(chart: Chart, target: str, start: datetime, end: datetime) -> dict:
    """The figure of `chart` for `target`; raises BadTarget (400) or NoSuchTarget (404)."""
    kind, key = parse_target(target)
    if kind not in chart.kinds:
        wanted = " or ".join(f"{k}:…" for k in chart.kinds)
        raise BadTarget(f"the {chart.name} chart draws a {wanted} target, not {target!r}")
    return chart.build(LOOKUPS[kind](key), start, end)
