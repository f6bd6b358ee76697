"""An alias's canary watched: its stable version and its canary side by side over one window.

For each of the two versions: latency (the latency probe's p50 and p95 on every deployment
of the version), traffic (requests and failures from Triton's statistics) and outputs (the
share of each predicted class, or of each decile bin of a value output, in the sampled
requests). The comparison page's table and the three canary charts (modelhub.ui.charts:
canary_latency, canary_traffic, canary_outputs) read the same series through these functions.
"""

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.conf import settings

from modelhub.monitoring.drift import bin_counts, class_shares, inner_edges
from modelhub.monitoring.models import SampleBlock
from modelhub.monitoring.sampling import Layout, window_sample
from modelhub.monitoring.series import Buckets, merged, read_buckets
from modelhub.registry.models import Alias, Model, ModelVersion
from modelhub.serving.models import Deployment
from modelhub.ui.samples import bin_labels

LATENCY = {"latency_p50_ms": "p50", "latency_p95_ms": "p95"}
TRAFFIC = ("requests", "failures", "throughput_rps", "failure_rate")
TOP_OUTPUTS = 5  # the table's most frequent classes (bins) per version; the chart shows them all


class NoCanary(LookupError):
    """The alias has no canary running (never had one, or it was promoted or aborted)."""


@dataclass
class Side:
    """One of the two versions: the alias's own (`stable`) or its canary."""

    role: str  # "stable" or "canary"
    version: ModelVersion
    weight: int  # percent of the alias's traffic it gets
    targets: list[str] = field(default_factory=list)  # deployment:<pk> of each of its deployments

    @property
    def label(self) -> str:
        return f"v{self.version.number} ({self.role}, {self.weight} %)"


def find_alias(model: Model, name: str | None) -> Alias:
    """The alias row (with both versions); LookupError names what is missing."""
    if not name:
        raise LookupError("alias: required: the alias whose canary to compare, e.g. production")
    alias = Alias.objects.select_related("version", "canary_version", "model").filter(model=model, name=name).first()
    if alias is None:
        raise LookupError(f"alias: model {model.name!r} has no alias {name!r}")
    return alias


def sides(alias: Alias) -> list[Side]:
    """[stable, canary] with their deployments' series targets; NoCanary when none is running."""
    if alias.canary_version_id is None:
        raise NoCanary(
            f"{alias.model.name}@{alias.name} has no canary running (v{alias.version.number} gets all the traffic)"
        )
    pair = [
        Side("stable", alias.version, 100 - alias.canary_weight),
        Side("canary", alias.canary_version, alias.canary_weight),
    ]
    by_version = {side.version.pk: side for side in pair}
    for pk, version_id in (
        Deployment.objects.filter(version_id__in=by_version).order_by("pk").values_list("pk", "version_id")
    ):
        by_version[version_id].targets.append(f"deployment:{pk}")
    return pair


def per_side(pair: list[Side], metrics, start: datetime, end: datetime) -> dict[tuple[str, int], Buckets]:
    """{(metric, version pk): buckets of all its deployments together}, in one read for both versions."""
    targets = [t for side in pair for t in side.targets]
    found = read_buckets(list(metrics), targets, start, end) if targets else {}
    out = {}
    for side in pair:
        for metric in metrics:
            series = [found[metric, t] for t in side.targets if (metric, t) in found]
            if series:
                out[metric, side.version.pk] = merged(*series)
    return out


def window_total(buckets: Buckets | None) -> tuple[int, float] | None:
    """(points, sum of their values) over the whole window; None without points."""
    if not buckets:
        return None
    return sum(b[0] for b in buckets.values()), sum(b[1] for b in buckets.values())


# --- outputs ----------------------------------------------------------------------------


@dataclass
class Outputs:
    """What one version answered in the window's sampled requests."""

    name: str | None  # the output column compared (`probabilities.class`, `label`, …); None: no output
    classes: bool  # class shares (True) or a value's decile bins (False)
    values: np.ndarray | None  # the column's values in the window's sample; None: no samples


def sampled_outputs(version: ModelVersion, start: datetime, end: datetime, name: str | None = None) -> Outputs:
    """The version's output column `name` (default: its class output, else its first output) in the window."""
    layout = Layout(version)
    if name is None:
        index = layout.class_output if layout.class_output is not None else (0 if layout.output_names else None)
    else:
        index = layout.output_names.index(name) if name in layout.output_names else None
    if index is None:
        return Outputs(name, False, None)
    classes = layout.outputs[index].elementwise or index == layout.class_output
    outputs = window_sample(version.pk, start, end, column="outputs")
    values = outputs[:, index] if outputs is not None and outputs.shape[1] > index else None
    return Outputs(layout.output_names[index], classes, values)


def compared_outputs(pair: list[Side], start: datetime, end: datetime) -> tuple[str | None, list[str], dict]:
    """(output name, category labels, {version pk: shares per label}) of both versions: the stable
    version's output (its class output, else its first) and the canary's output of the same name.
    Class shares with the drift code's `class_shares`; a value output in the stable version's decile
    bins (`inner_edges`, `bin_counts`). A version without samples has no entry."""
    stable = sampled_outputs(pair[0].version, start, end)
    canary = sampled_outputs(pair[1].version, start, end, name=stable.name)
    found = {side.version.pk: out for side, out in zip(pair, (stable, canary), strict=True) if out.values is not None}
    if not found:
        return stable.name, [], {}
    if stable.classes:
        shares = {pk: class_shares(out.values) for pk, out in found.items()}
        keys = sorted({k for s in shares.values() for k in s}, key=_class_order)
        names = Layout(pair[0].version).class_labels or []
        labels = [_class_label(k, names) for k in keys]
        return stable.name, labels, {pk: [s.get(k, 0.0) for k in keys] for pk, s in shares.items()}
    reference = next(iter(found.values())).values  # the stable version's, when it has samples
    edges = inner_edges(reference.astype(np.float64))
    return (
        stable.name,
        bin_labels(edges.tolist()),
        {pk: (bin_counts(out.values, edges) / len(out.values)).tolist() for pk, out in found.items()},
    )


def _class_order(key: str):
    try:
        return (0, float(key))
    except ValueError:
        return (1, key)


def _class_label(key: str, names: list[str]) -> str:
    if key.isdigit() and int(key) < len(names):
        return f"{key} ({names[int(key)]})"
    return key


def no_samples_reason(version: ModelVersion) -> str:
    return (
        f"no sampled requests for v{version.number} in this window: the gateway samples "
        f"MODELHUB_GATEWAY_SAMPLE_RATE (now {settings.GATEWAY_SAMPLE_RATE:g}) of the requests it routes; "
        "applications calling Triton directly POST prediction logs"
    )


# --- the page's table -------------------------------------------------------------------


@dataclass
class Figures:
    """One version's numbers over the window; None where nothing was measured (`*_reason` says why)."""

    side: Side
    p50_ms: float | None = None
    p95_ms: float | None = None
    probes: int = 0
    requests: int | None = None
    failures: int | None = None
    samples: int = 0
    top_outputs: list[tuple[str, float]] = field(default_factory=list)  # (class or bin, % of the samples)
    latency_reason: str = ""
    traffic_reason: str = ""
    outputs_reason: str = ""

    @property
    def failure_pct(self) -> float | None:
        return 100 * self.failures / self.requests if self.requests else None


def compare(alias: Alias, start: datetime, end: datetime) -> tuple[str | None, list[Figures]]:
    """(the output compared, [stable, canary] figures) over [start, end); NoCanary when none runs."""
    pair = sides(alias)
    series = per_side(pair, (*LATENCY, "requests", "failures"), start, end)
    output_name, labels, shares = compared_outputs(pair, start, end)
    rows = []
    for side in pair:
        pk = side.version.pk
        row = Figures(side)
        p50, p95 = window_total(series.get(("latency_p50_ms", pk))), window_total(series.get(("latency_p95_ms", pk)))
        if p95:
            row.probes, row.p95_ms = p95[0], p95[1] / p95[0]
            row.p50_ms = p50[1] / p50[0] if p50 else None
        else:
            row.latency_reason = latency_reason(side)
        requests, failures = window_total(series.get(("requests", pk))), window_total(series.get(("failures", pk)))
        if requests:
            row.requests, row.failures = int(requests[1]), int(failures[1]) if failures else 0
        else:
            row.traffic_reason = traffic_reason(side)
        if pk in shares:
            ranked = sorted(zip(labels, shares[pk], strict=True), key=lambda item: -item[1])
            row.top_outputs = [(label, 100 * share) for label, share in ranked[:TOP_OUTPUTS] if share > 0]
            row.samples = _sample_count(side.version, start, end)
        else:
            row.outputs_reason = (
                no_samples_reason(side.version) if output_name else f"v{side.version.number} has no output to compare"
            )
        rows.append(row)
    return output_name, rows


def _sample_count(version: ModelVersion, start: datetime, end: datetime) -> int:
    # The blocks touching the window (a block straddling an edge counts whole: an estimate, said as such).
    counts = SampleBlock.objects.filter(version=version, last_time__gte=start, first_time__lt=end)
    return sum(counts.values_list("count", flat=True))


def latency_reason(side: Side) -> str:
    where = "" if side.targets else f"; v{side.version.number} is not deployed anywhere"
    return (
        f"no latency probes of v{side.version.number} in this window (the latency check probes each loaded "
        f"deployment every {settings.MONITORING_LATENCY_INTERVAL_S:g} s{where})"
    )


def traffic_reason(side: Side) -> str:
    where = "" if side.targets else f"; v{side.version.number} is not deployed anywhere"
    return (
        f"no requests to v{side.version.number} in this window (Triton's statistics are read every "
        f"{settings.MONITORING_STATS_INTERVAL_S:g} s{where})"
    )
