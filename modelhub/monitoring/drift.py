"""Drift: a version's reference profile (computed once) and one window's drift against it.

Per feature: PSI over the reference's decile bins (epsilon-smoothed shares) and the
two-sample Kolmogorov-Smirnov statistic (scipy) against a bounded reference sample;
for the outputs, the Jensen-Shannon distance (base 2, 0..1) of the class shares; the
share of features whose PSI is above DRIFT_PSI_THRESHOLD.

A window is read block by block (modelhub.monitoring.sampling.iter_blocks): bin counts
and class counts add up per block, and the KS test sees an evenly strided subsample of
at most KS_MAX_ROWS rows, so memory stays bounded however many samples a window holds.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from modelhub.audit.actors import Actor
from modelhub.audit.log import record as audit
from modelhub.monitoring.models import ReferenceProfile, SampleBlock
from modelhub.monitoring.sampling import Layout, iter_blocks, parse_records
from modelhub.registry.evaluation import open_evaluation_data
from modelhub.registry.models import EvaluationSet, ModelVersion

BINS = 10
EPSILON = 1e-4
REFERENCE_SAMPLE_ROWS = 10_000
KS_MAX_ROWS = 50_000


class NoReference(ValueError):
    """A version with neither a reference profile nor an evaluation set to compute one from."""


# --- the reference profile ---------------------------------------------------------


def inner_edges(column: np.ndarray) -> np.ndarray:
    """The distinct deciles of a column's finite values: BINS bins at most (fewer for few distinct values)."""
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))


def bin_counts(column: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (len(edges) + 1 bins; a value equal to an edge goes right; NaN in the last bin)."""
    return np.bincount(np.searchsorted(edges, column, side="right"), minlength=len(edges) + 1)


def build_profile(
    version: ModelVersion, features: np.ndarray, classes: np.ndarray | None, source: str
) -> ReferenceProfile:
    """A profile (unsaved) from reference features [rows, F] and output classes [rows] (or None)."""
    layout = Layout(version)
    if features.shape[1] != len(layout.feature_names):
        raise ValueError(f"{features.shape[1]} features, the layout of {version} has {len(layout.feature_names)}")
    edges, shares, summary = [], [], {}
    for i, name in enumerate(layout.feature_names):
        column = features[:, i].astype(np.float64)
        e = inner_edges(column)
        counts = bin_counts(column, e)
        edges.append(e.tolist())
        shares.append((counts / max(len(column), 1)).tolist())
        summary[name] = _summary(column)
    stride = max(1, -(-len(features) // REFERENCE_SAMPLE_ROWS))
    return ReferenceProfile(
        version=version,
        source=source,
        rows=len(features),
        feature_names=layout.feature_names,
        bin_edges=edges,
        bin_shares=shares,
        summary=summary,
        sample=np.ascontiguousarray(features[::stride], dtype="<f4").tobytes(),
        class_shares=class_shares(classes) if classes is not None else {},
    )


def _summary(column: np.ndarray) -> dict:
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "nan_share": 1.0}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "nan_share": float(np.isnan(column).mean()),
    }


def class_shares(classes: np.ndarray) -> dict[str, float]:
    classes = classes[~np.isnan(classes)] if classes.dtype.kind == "f" else classes
    if classes.size == 0:
        return {}
    values, counts = np.unique(classes, return_counts=True)
    return {_class_key(v): float(c / classes.size) for v, c in zip(values, counts, strict=True)}


def _class_key(value) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def save_profile(profile: ReferenceProfile, replace: bool = False) -> ReferenceProfile:
    """Store a profile; a version's first profile wins unless `replace` (an uploaded reference)."""
    with transaction.atomic():
        existing = ReferenceProfile.objects.select_for_update().filter(version=profile.version).first()
        if existing and not replace:
            return existing
        if existing:
            existing.delete()
        try:
            with transaction.atomic():
                profile.save()
        except IntegrityError:  # another worker computed it meanwhile
            return ReferenceProfile.objects.get(version=profile.version)
    return profile


def set_uploaded_reference(version: ModelVersion, records: list, actor: Actor) -> int:
    """Replace the version's reference profile by one computed from uploaded records (prediction-log
    records); no records remove an uploaded one (the evaluation set's is used again). Audited; the
    number of rows the profile holds. Raises SampleError naming a record that does not fit the schema."""
    if not records:
        with transaction.atomic():
            ReferenceProfile.objects.filter(version=version, source="upload").delete()
            audit(actor, "drift.reference", version, rows=0)
        return 0
    batch = parse_records(version, records)
    layout = Layout(version)
    outputs = np.vstack(batch.outputs)
    classes = outputs[:, layout.class_output] if layout.class_output is not None else None
    profile = build_profile(version, np.vstack(batch.features), classes, "upload")
    with transaction.atomic():
        profile = save_profile(profile, replace=True)
        audit(actor, "drift.reference", version, rows=profile.rows)
    return profile.rows


def profile_from_evaluation_set(version: ModelVersion) -> ReferenceProfile:
    """The version's profile, computed from its model's evaluation set the first time it is asked for."""
    existing = ReferenceProfile.objects.filter(version=version).first()
    if existing:
        return existing
    evaluation_set = EvaluationSet.objects.filter(model_id=version.model_id).first()
    if evaluation_set is None:
        raise NoReference(f"{version} has no reference profile and its model no evaluation set")
    data = open_evaluation_data(evaluation_set, version)
    layout = Layout(version)
    inputs = {name: _stack(values) for name, values in data.inputs.items()}
    features = layout.features(inputs, data.rows)
    classes = _expected_classes(data.expected, layout)
    return save_profile(build_profile(version, features, classes, "evaluation_set"))


def _stack(values) -> np.ndarray:
    return values if isinstance(values, np.ndarray) else np.stack(values)


def _expected_classes(expected: np.ndarray, layout: Layout) -> np.ndarray | None:
    """The evaluation set's expected labels as class numbers (the reference output shares)."""
    if layout.class_output is None:
        return None
    if expected.dtype.kind in "iuf":
        return expected.astype(np.float64).reshape(len(expected), -1)[:, 0]
    if layout.class_labels:
        index = {label: i for i, label in enumerate(layout.class_labels)}
        return np.array([index.get(str(v), np.nan) for v in expected], dtype=np.float64)
    return None


# --- one window ---------------------------------------------------------------------


@dataclass
class Drift:
    rows: int
    psi: dict[str, float] = field(default_factory=dict)
    ks: dict[str, float] = field(default_factory=dict)
    js_outputs: float | None = None
    class_shares: dict[str, float] = field(default_factory=dict)

    @property
    def psi_max(self) -> float:
        return max(self.psi.values(), default=0.0)

    @property
    def ks_max(self) -> float:
        return max(self.ks.values(), default=0.0)

    @property
    def drifted(self) -> list[str]:
        return [name for name, value in self.psi.items() if value > settings.DRIFT_PSI_THRESHOLD]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.psi) if self.psi else 0.0


def psi(reference_shares: np.ndarray, counts: np.ndarray) -> float:
    """Population stability index of current bin counts against reference shares (epsilon-smoothed)."""
    current = counts / max(counts.sum(), 1)
    ref = np.clip(reference_shares, EPSILON, None)
    cur = np.clip(current, EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def js_distance(reference: dict[str, float], current: dict[str, float]) -> float | None:
    if not reference or not current:
        return None
    keys = sorted(set(reference) | set(current))
    p = np.array([reference.get(k, 0.0) for k in keys])
    q = np.array([current.get(k, 0.0) for k in keys])
    return float(jensenshannon(p, q, base=2))


def window_drift(profile: ReferenceProfile, version_id: int, start: datetime, end: datetime, class_output=None):
    """Drift of the samples of [start, end) against `profile`; None when the window has none."""
    total = sum(
        SampleBlock.objects.filter(version_id=version_id, last_time__gte=start, first_time__lt=end).values_list(
            "count", flat=True
        )
    )
    if not total:
        return None
    return drift_of_chunks(profile, iter_blocks(version_id, start, end), total, class_output)


def drift_of_chunks(profile: ReferenceProfile, chunks, total: int, class_output: int | None) -> Drift | None:
    """Drift of the samples `chunks` yields ((times, ids, features, outputs) per chunk, `total` rows at most)."""
    edges = [np.asarray(e) for e in profile.bin_edges]
    counts = [np.zeros(len(e) + 1, dtype=np.int64) for e in edges]
    stride = max(1, -(-total // KS_MAX_ROWS))
    kept, classes, rows, offset = [], Counter(), 0, 0
    for _, _, features, outputs in chunks:
        for i, e in enumerate(edges):
            counts[i] += bin_counts(features[:, i], e)
        # Every stride-th row of the whole window, wherever chunks begin.
        kept.append(features[(-offset) % stride :: stride].copy())  # a view would keep the whole chunk alive
        offset += len(features)
        rows += len(features)
        if class_output is not None:
            values, n = np.unique(outputs[:, class_output], return_counts=True)
            classes.update({_class_key(v): int(c) for v, c in zip(values, n, strict=True) if not np.isnan(v)})
    if rows == 0:
        return None
    reference = np.frombuffer(profile.sample, dtype="<f4").reshape(-1, len(edges))
    current = np.vstack(kept)
    drift = Drift(rows)
    for i, name in enumerate(profile.feature_names):
        drift.psi[name] = psi(np.asarray(profile.bin_shares[i]), counts[i])
        drift.ks[name] = _ks(reference[:, i], current[:, i])
    if classes:
        n = sum(classes.values())
        drift.class_shares = {k: c / n for k, c in sorted(classes.items())}
        drift.js_outputs = js_distance(profile.class_shares, drift.class_shares)
    return drift


def _ks(reference: np.ndarray, current: np.ndarray) -> float:
    reference, current = reference[~np.isnan(reference)], current[~np.isnan(current)]
    if reference.size == 0 or current.size == 0:
        return 0.0
    return float(ks_2samp(reference, current, method="asymp").statistic)
