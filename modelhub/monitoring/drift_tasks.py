"""The drift pass: per window (DRIFT_WINDOW_S) and per version with samples in it, drift
against the version's reference profile and live accuracy from late labels, recorded as
one `drift` CheckResult with its points on `version:<pk>`.

Idempotent per window: the pass id is the window's start, so a retried or repeated
run records each version's result once (record's dedupe key).
"""

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from modelhub.monitoring.drift import Drift, NoReference, profile_from_evaluation_set, window_drift
from modelhub.monitoring.models import CheckKind, PredictionLabel, SampleBlock, Status
from modelhub.monitoring.record import Result, record
from modelhub.monitoring.sampling import Layout, iter_blocks, prune_samples
from modelhub.monitoring.series import psi_metric
from modelhub.registry.evaluation import EvaluationSetError
from modelhub.registry.models import ModelVersion

log = logging.getLogger(__name__)

# How far back the live accuracy looks for labelled samples (labels arrive late).
LIVE_ACCURACY_LOOKBACK = timedelta(days=1)


def last_window(now: datetime | None = None) -> tuple[datetime, datetime]:
    """The newest complete window, aligned on the Unix epoch."""
    width = settings.DRIFT_WINDOW_S
    end_s = int((now or timezone.now()).timestamp()) // width * width
    return datetime.fromtimestamp(end_s - width, tz=UTC), datetime.fromtimestamp(end_s, tz=UTC)


@shared_task(name="modelhub.monitoring.drift_tasks.drift_pass", ignore_result=True)
def drift_pass() -> int:
    start, end = last_window()
    return len(run_drift(start, end))


@shared_task(name="modelhub.monitoring.drift_tasks.prune_samples", ignore_result=True)
def prune_samples_task() -> int:
    return prune_samples()


def run_drift(start: datetime, end: datetime) -> list:
    """Drift of every version with samples in [start, end); the CheckResult rows written."""
    version_ids = (
        SampleBlock.objects.filter(last_time__gte=start, first_time__lt=end)
        .order_by()
        .values_list("version_id", flat=True)
        .distinct()
    )
    versions = ModelVersion.objects.filter(pk__in=list(version_ids)).select_related("model").prefetch_related("tensors")
    results = [r for r in (version_result(v, start, end) for v in versions) if r is not None]
    return record(results, f"drift:{start.isoformat()}")


def version_result(version: ModelVersion, start: datetime, end: datetime) -> Result | None:
    try:
        profile = profile_from_evaluation_set(version)
    except (NoReference, EvaluationSetError, ValueError) as exc:
        log.info("no drift for %s: %s", version, exc)
        return None
    layout = Layout(version)
    drift = window_drift(profile, version.pk, start, end, layout.class_output)
    if drift is None:
        return None
    return drift_result(version, drift, end, live_accuracy(version, layout, end))


def drift_result(version: ModelVersion, drift: Drift, at: datetime, accuracy: float | None) -> Result:
    target = f"version:{version.pk}"
    points = [
        ("drift_psi_max", target, drift.psi_max),
        ("drift_ks_max", target, drift.ks_max),
        ("drift_share", target, drift.share),
        *((psi_metric(name), target, value) for name, value in drift.psi.items()),
    ]
    if drift.js_outputs is not None:
        points.append(("drift_js_outputs", target, drift.js_outputs))
    if accuracy is not None:
        points.append(("live_accuracy", target, accuracy))
    drifted = drift.drifted
    parts = []
    if drifted:
        worst = ", ".join(sorted(drifted, key=drift.psi.get, reverse=True)[:5])
        threshold = settings.DRIFT_PSI_THRESHOLD
        parts.append(f"{len(drifted)} of {len(drift.psi)} features drifted (PSI > {threshold}): {worst}")
    if drift.js_outputs is not None:
        # Both drift rules show this message: the outputs' alert must say what the outputs did.
        parts.append(f"outputs' class shares at JS distance {drift.js_outputs:.3f} from the reference")
    message = "; ".join(parts)
    return Result(
        kind=CheckKind.DRIFT,
        status=Status.FAIL if drifted else Status.OK,
        version_id=version.pk,
        value=drift.psi_max,
        message=message,
        details={
            "rows": drift.rows,
            "psi": drift.psi,
            "ks": drift.ks,
            "js_outputs": drift.js_outputs,
            "class_shares": drift.class_shares,
            "drifted": drifted,
            "live_accuracy": accuracy,
        },
        points=points,
        time=at,
    )


def live_accuracy(version: ModelVersion, layout: Layout, end: datetime) -> float | None:
    """The share of labelled samples (of the lookback before `end`) whose predicted class is the label."""
    if layout.class_output is None:
        return None
    start = end - LIVE_ACCURACY_LOOKBACK
    # A label comes after its prediction, so the lookback's labels were all written since its
    # start: one indexed range read, instead of the day's request ids in one huge IN list.
    labels = dict(
        PredictionLabel.objects.filter(model_id=version.model_id, created_at__gte=start).values_list(
            "request_id", "label"
        )
    )
    if not labels:
        return None
    names = layout.class_labels or []
    hits = []
    for _, ids, _, outputs in iter_blocks(version.pk, start, end, with_ids=True):
        classes = outputs[:, layout.class_output].tolist()
        hits.extend(_matches(c, labels[rid], names) for rid, c in zip(ids, classes, strict=True) if rid in labels)
    return float(np.mean(hits)) if hits else None


def _matches(predicted: float, label: str, names: list[str]) -> bool:
    if np.isnan(predicted):
        return False
    index = int(predicted)
    return label == str(index) or (0 <= index < len(names) and names[index] == label)
