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
    drift_heatmap       version      PSI per feature over time, a heatmap (the 30 features with the highest latest PSI)
    drift_histogram     version      reference vs current share of each reference bin of one feature (bars);
                                     query parameter `feature` (default: the feature with the highest latest PSI)
    drift_summary       version      PSI max, JS distance of the outputs, share of drifted features (%, second y
                                     axis), and the thresholds of the enabled drift alert rules as lines
    live_accuracy       version      live accuracy (from late labels) beside the evaluation accuracy points
    canary_latency      model        p50 and p95 latency of an alias's stable version and of its canary, overlaid;
                                     query parameter `alias` (required), as for the two below
    canary_traffic      model        throughput and failure rate (%) of the stable version and of the canary
    canary_outputs      model        share of each predicted class (or decile bin of a value output) in the
                                     sampled requests of the stable version and of the canary (bars)

Targets are written as in the UI: `deployment:<pk>`, `version:<pk>`, `model:<name>`,
`server:<name>`. A chart that takes more query parameters names them (`Chart.params`); a
bad value raises BadParameter, naming the parameter (400). A builder returns {"data",
"layout", "empty", "points"}: "empty" says why nothing is drawn (None when something is),
"points" counts the data points sent.

All series of one chart are read together (`monitoring.series.read_buckets`: one pass
over the roll-ups and one over the raw points, bucketed in SQL), so a chart costs the
same few queries whatever its number of versions or deployments, and no trace has more
than MAX_POINTS points.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from itertools import chain

import numpy as np
from django.conf import settings
from django.db.models import Q

from modelhub.alerts.models import AlertRule, Signal
from modelhub.alerts.models import Scope as RuleScope
from modelhub.monitoring.drift import bin_counts
from modelhub.monitoring.models import CheckKind, CheckResult, ReferenceProfile
from modelhub.monitoring.sampling import window_sample
from modelhub.monitoring.series import Buckets, merged, psi_metric, read_buckets
from modelhub.registry.models import Alias, EvaluationSet, Model, ModelVersion
from modelhub.serving.models import Deployment, InferenceServer
from modelhub.ui import canary
from modelhub.ui.samples import bin_labels

PRODUCTION_ALIAS = "production"
# The two versions of a canary chart keep their colours across its charts (Plotly's first two).
CANARY_COLOURS = {"stable": "#1f77b4", "canary": "#ff7f0e"}
GIB = 2**30
TARGET_SYNTAX = re.compile(r"(deployment|version|model|server):([A-Za-z0-9._-]{1,100})")


class BadTarget(ValueError):
    """A target the chart cannot read (syntax, or a kind the chart does not draw): 400."""


class NoSuchTarget(LookupError):
    """A well-formed target that names nothing: 404."""


class BadParameter(ValueError):
    """A chart's own query parameter (`Chart.params`) it cannot use; the text names it: 400."""


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


# --- drift charts (the points of modelhub.monitoring.drift_tasks on version:<pk>) ------

HEATMAP_FEATURES = 30
DRIFT_SERIES = {"drift_psi_max": "PSI max", "drift_js_outputs": "JS distance of the outputs"}


def _drift_hint() -> str:
    return (
        f"the drift pass runs every {settings.DRIFT_WINDOW_S / 3600:g} h over sampled requests: set "
        "MODELHUB_GATEWAY_SAMPLE_RATE or POST prediction logs"
    )


def latest_drift(version: ModelVersion) -> CheckResult | None:
    return CheckResult.objects.filter(kind=CheckKind.DRIFT, version=version).order_by("-created_at", "-id").first()


def features_by_psi(result: CheckResult | None) -> list[str]:
    """The features a drift result measured, highest PSI first."""
    psi = (result.details.get("psi") or {}) if result else {}
    return sorted(psi, key=lambda name: (-psi[name], name))


def drift_heatmap(version: ModelVersion, start: datetime, end: datetime) -> dict:
    """PSI per feature over time: features on y (highest latest PSI on top), buckets on x."""
    target = f"version:{version.pk}"
    ranked = features_by_psi(latest_drift(version))
    shown = ranked[:HEATMAP_FEATURES]
    found = read_buckets([psi_metric(f) for f in shown], [target], start, end) if shown else {}
    rows = [(f, found[psi_metric(f), target]) for f in reversed(shown) if (psi_metric(f), target) in found]
    moments = sorted({moment for _, buckets in rows for moment in buckets})
    traces = []
    if rows:
        z = [[b[m][1] / b[m][0] if m in b else None for m in moments] for _, b in rows]
        traces.append(
            {
                "type": "heatmap",
                "name": "PSI",
                "x": [m.isoformat() for m in moments],
                "y": [f for f, _ in rows],
                "z": z,
                "zmin": 0,
                "colorscale": "YlOrRd",
                "colorbar": {"title": {"text": "PSI"}},
                "hovertemplate": "%{x}<br>%{y}: PSI %{z:.3f}<extra></extra>",
            }
        )
    title = f"PSI per feature of {version}"
    if len(ranked) > HEATMAP_FEATURES:
        title += f" (the {HEATMAP_FEATURES} of {len(ranked)} features with the highest latest PSI)"
    reason = "no drift results in this window" if ranked else "no drift results yet"
    return figure(
        title,
        "feature",
        traces,
        f"{reason} ({_drift_hint()})",
        start,
        end,
        yaxis={"type": "category", "automargin": True},
        hovermode="closest",
    )


def bars(name: str, labels: list[str], shares, **style) -> dict:
    return {
        "type": "bar",
        "name": name,
        "x": labels,
        "y": [float(s) * 100 for s in shares],
        "hovertemplate": f"%{{x}}<br>{name}: %{{y:.2f}} %<extra></extra>",
        **style,
    }


def drift_histogram(version: ModelVersion, start: datetime, end: datetime, feature: str | None = None) -> dict:
    """One feature's share of samples per reference bin: the reference's beside the window's."""
    profile = ReferenceProfile.objects.filter(version=version).defer("sample").first()
    if profile is None:
        return figure(
            f"Reference vs current of {version}",
            "share of samples (%)",
            [],
            "no reference yet: upload an evaluation set or PUT a reference sample",
            start,
            end,
        )
    feature = feature or next(iter(features_by_psi(latest_drift(version))), None) or profile.feature_names[0]
    if feature not in profile.feature_names:
        known = ", ".join(profile.feature_names[:5]) + (", …" if len(profile.feature_names) > 5 else "")
        raise BadParameter(f"feature: {feature!r} is not a feature of {version} (its features: {known})")
    i = profile.feature_names.index(feature)
    labels = bin_labels(profile.bin_edges[i])
    traces = []
    current = window_sample(version.pk, start, end)
    if current is not None:
        shares = bin_counts(current[:, i], np.asarray(profile.bin_edges[i])) / len(current)
        traces = [
            bars(f"reference ({profile.rows} rows)", labels, profile.bin_shares[i]),
            bars(f"current ({len(current)} samples)", labels, shares),
        ]
    return figure(
        f"Reference vs current distribution of {feature} ({version})",
        "share of samples (%)",
        traces,
        f"no samples of {version} in this window (set MODELHUB_GATEWAY_SAMPLE_RATE or POST prediction logs)",
        start,
        end,
        xaxis={"title": {"text": f"{feature}: the reference's decile bins"}, "type": "category"},
        barmode="group",
    )


def drift_alert_thresholds(version: ModelVersion) -> list[tuple[str, float]]:
    """(series, threshold) of the enabled point rules on the drift series that judge this version."""
    rules = AlertRule.objects.filter(
        Q(scope=RuleScope.GLOBAL) | Q(scope=RuleScope.MODEL, model_id=version.model_id),
        enabled=True,
        signal=Signal.POINT,
        series__in=list(DRIFT_SERIES),
        threshold__isnull=False,
    )
    return sorted(set(rules.values_list("series", "threshold")))


def drift_summary(version: ModelVersion, start: datetime, end: datetime) -> dict:
    target = f"version:{version.pk}"
    found = read_buckets([*DRIFT_SERIES, "drift_share"], [target], start, end)
    traces = [
        trace(label, found[m, target], "", mode="lines+markers")
        for m, label in DRIFT_SERIES.items()
        if (m, target) in found
    ]
    if ("drift_share", target) in found:
        traces.append(
            trace("drifted features", found["drift_share", target], "%", scale=100, mode="lines+markers", yaxis="y2")
        )
    for series, threshold in drift_alert_thresholds(version):
        traces.append(level_line(f"alert: {DRIFT_SERIES[series]} > {threshold:g}", threshold, start, end, ""))
    return figure(
        f"Drift of {version}",
        "PSI / JS distance",
        traces,
        f"no drift results in this window ({_drift_hint()})",
        start,
        end,
        yaxis2={"title": {"text": "drifted features (%)"}, "overlaying": "y", "side": "right", "range": [0, 105]},
    )


def live_accuracy(version: ModelVersion, start: datetime, end: datetime) -> dict:
    """Live accuracy (predictions against late labels) beside the evaluation set's accuracy points."""
    target = f"version:{version.pk}"
    evaluation_set = EvaluationSet.objects.filter(model_id=version.model_id).first()
    metrics = {"live_accuracy": "live accuracy (labels)"}
    if evaluation_set is not None:
        metrics[evaluation_set.metric] = f"evaluation {evaluation_set.get_metric_display()}"
    found = read_buckets(list(metrics), [target], start, end)
    traces = [
        trace(label, found[m, target], "", mode="lines+markers") for m, label in metrics.items() if (m, target) in found
    ]
    if evaluation_set is not None and evaluation_set.threshold is not None:
        traces.append(level_line(f"threshold {evaluation_set.threshold:g}", evaluation_set.threshold, start, end, ""))
    return figure(
        f"Live vs evaluation accuracy of {version}",
        "accuracy",
        traces,
        "no live accuracy or evaluation results in this window (applications POST labels for logged request ids "
        f"to /api/v1/models/{version.model.name}/labels/)",
        start,
        end,
    )


# --- canary charts: an alias's stable version and its canary overlaid (modelhub.ui.canary) ----


def _canary_pair(model: Model, alias: str | None, title: str, y_title: str, start, end):
    """(alias, [stable, canary]) or (the figure that says why there is nothing to compare, None)."""
    try:
        found = canary.find_alias(model, alias)
    except LookupError as exc:
        raise BadParameter(str(exc)) from None
    try:
        return found, canary.sides(found)
    except canary.NoCanary as exc:
        return figure(f"{title} of {model.name}@{found.name}", y_title, [], str(exc), start, end), None


def _side_style(side, dash: str | None = None) -> dict:
    # Markers too: a canary started minutes ago has one probe per version, and a lone point draws no line.
    style = {"legendgroup": side.role, "mode": "lines+markers", "line": {"color": CANARY_COLOURS[side.role]}}
    if dash:
        style["line"]["dash"] = dash
    return style


def canary_latency(model: Model, start: datetime, end: datetime, alias: str | None = None) -> dict:
    """p50 (dotted) and p95 of the stable version and of the canary, each over all its deployments."""
    found, pair = _canary_pair(model, alias, "Canary latency", "latency (ms)", start, end)
    if pair is None:
        return found
    series = canary.per_side(pair, canary.LATENCY, start, end)
    traces = [
        trace(f"{side.label} {label}", series[metric, side.version.pk], "ms", **_side_style(side, dash))
        for side in pair
        for metric, label, dash in (("latency_p95_ms", "p95", None), ("latency_p50_ms", "p50", "dot"))
        if (metric, side.version.pk) in series
    ]
    reasons = "; ".join(canary.latency_reason(side) for side in pair)
    return figure(
        f"Latency of {model.name}@{found.name}: v{pair[0].version.number} vs canary v{pair[1].version.number}",
        "latency (ms)",
        traces,
        reasons,
        start,
        end,
    )


def canary_traffic(model: Model, start: datetime, end: datetime, alias: str | None = None) -> dict:
    """Throughput and failure rate (%, dotted, second axis) of the stable version and of the canary."""
    found, pair = _canary_pair(model, alias, "Canary traffic", "throughput (req/s)", start, end)
    if pair is None:
        return found
    series = canary.per_side(pair, ("throughput_rps", "failure_rate"), start, end)
    traces = []
    for side in pair:
        key = side.version.pk
        if ("throughput_rps", key) in series:
            style = _side_style(side)
            traces.append(trace(f"{side.label} throughput", series["throughput_rps", key], "req/s", **style))
        if ("failure_rate", key) in series:
            style = _side_style(side, "dot")
            traces.append(
                trace(f"{side.label} failures", series["failure_rate", key], "%", scale=100, yaxis="y2", **style)
            )
    return figure(
        f"Traffic of {model.name}@{found.name}: v{pair[0].version.number} vs canary v{pair[1].version.number}",
        "throughput (req/s)",
        traces,
        "; ".join(canary.traffic_reason(side) for side in pair),
        start,
        end,
        yaxis2={"title": {"text": "failure rate (%)"}, "overlaying": "y", "side": "right", "rangemode": "tozero"},
    )


def canary_outputs(model: Model, start: datetime, end: datetime, alias: str | None = None) -> dict:
    """Share of each predicted class (or value bin) in the sampled requests of each version, side by side."""
    found, pair = _canary_pair(model, alias, "Canary outputs", "share of sampled requests (%)", start, end)
    if pair is None:
        return found
    name, labels, shares = canary.compared_outputs(pair, start, end)
    traces = [
        bars(side.label, labels, shares[side.version.pk], marker={"color": CANARY_COLOURS[side.role]})
        for side in pair
        if side.version.pk in shares
    ]
    missing = [canary.no_samples_reason(side.version) for side in pair if side.version.pk not in shares]
    title = f"Outputs ({name}) of {model.name}@{found.name}" if name else f"Outputs of {model.name}@{found.name}"
    if traces and missing:
        title += f" ({missing[0].partition(':')[0]})"
    reason = "; ".join(missing) if name else f"v{pair[0].version.number} has no output to compare"
    return figure(
        title,
        "share of sampled requests (%)",
        traces,
        reason,
        start,
        end,
        xaxis={"title": {"text": name or "output"}, "type": "category"},
        barmode="group",
    )


# --- the registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Chart:
    name: str
    kinds: tuple[str, ...]  # the target kinds it draws
    build: Callable[..., dict]
    params: tuple[str, ...] = ()  # query parameters passed to `build` as keyword arguments


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
        Chart("drift_heatmap", ("version",), drift_heatmap),
        Chart("drift_histogram", ("version",), drift_histogram, params=("feature",)),
        Chart("drift_summary", ("version",), drift_summary),
        Chart("live_accuracy", ("version",), live_accuracy),
        Chart("canary_latency", ("model",), canary_latency, params=("alias",)),
        Chart("canary_traffic", ("model",), canary_traffic, params=("alias",)),
        Chart("canary_outputs", ("model",), canary_outputs, params=("alias",)),
    )
}


def build_chart(chart: Chart, target: str, start: datetime, end: datetime, params=None) -> dict:
    """The figure of `chart` for `target` (`params`: the query, for the chart's own parameters);
    raises BadTarget or BadParameter (400) or NoSuchTarget (404)."""
    kind, key = parse_target(target)
    if kind not in chart.kinds:
        wanted = " or ".join(f"{k}:…" for k in chart.kinds)
        raise BadTarget(f"the {chart.name} chart draws a {wanted} target, not {target!r}")
    own = {name: (params or {}).get(name) for name in chart.params}
    return chart.build(LOOKUPS[kind](key), start, end, **own)
