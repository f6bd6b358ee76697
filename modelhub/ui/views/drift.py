"""A version's drift page: the latest drift result, its features sorted by PSI beside the
reference profile, and the drift charts (modelhub.ui.charts). Read only: samples, labels
and reference samples arrive over the REST API, drift comes from the drift pass."""

import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.core.paginator import Paginator
from django.db.models import Max, Min, Sum
from django.shortcuts import get_object_or_404, render
from django.utils.dateparse import parse_datetime

from modelhub.access.roles import Scope
from modelhub.monitoring.models import CheckKind, CheckResult, ReferenceProfile, SampleBlock
from modelhub.monitoring.sampling import window_sample
from modelhub.registry.models import EvaluationSet, ModelVersion
from modelhub.ui.access import require_scope
from modelhub.ui.charts import features_by_psi, latest_drift

FEATURES_PER_PAGE = 50


@dataclass(frozen=True)
class FeatureRow:
    name: str
    psi: float
    ks: float | None
    drifted: bool
    reference: dict  # mean, std, min, max, nan_share of the reference profile
    current_mean: float | None
    current_std: float | None


@dataclass(frozen=True)
class Headline:
    """The latest result's figures (PSI max is its value; the rest are in its details)."""

    psi_max: float | None
    ks_max: float | None
    js_outputs: float | None
    drifted: int
    features: int
    rows: int
    live_accuracy: float | None

    @classmethod
    def of(cls, result: CheckResult) -> "Headline":
        details = result.details
        return cls(
            psi_max=result.value,
            ks_max=max((details.get("ks") or {}).values(), default=None),
            js_outputs=details.get("js_outputs"),
            drifted=len(details.get("drifted") or []),
            features=len(details.get("psi") or {}),
            rows=details.get("rows", 0),
            live_accuracy=details.get("live_accuracy"),
        )


def drift_window(result: CheckResult) -> tuple[datetime, datetime]:
    """[start, end) a drift result measured: it is written at the window's end, and the drift
    pass is named by the window's start (its dedupe key: "drift:<start>:drift:<target>")."""
    end = result.created_at
    pass_id = (result.dedupe_key or "").partition(f":{CheckKind.DRIFT}:")[0]
    try:
        start = parse_datetime(pass_id.removeprefix("drift:")) if pass_id.startswith("drift:") else None
    except ValueError:
        start = None
    return start or end - timedelta(seconds=settings.DRIFT_WINDOW_S), end


def current_summary(version_id: int, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray] | None:
    """Per feature, the mean and std of the window's samples (a bounded sample of them); None if
    the window's samples are gone (past MONITORING_SAMPLE_RETENTION_DAYS)."""
    features = window_sample(version_id, start, end)
    if features is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN feature has no mean: shown as "—"
        return np.nanmean(features, axis=0), np.nanstd(features, axis=0)


def feature_rows(result: CheckResult, profile: ReferenceProfile | None, current) -> list[FeatureRow]:
    """The result's features, highest PSI first."""
    psi, ks = result.details.get("psi") or {}, result.details.get("ks") or {}
    drifted = set(result.details.get("drifted") or [])
    columns = {name: i for i, name in enumerate(profile.feature_names)} if profile else {}
    rows = []
    for name in features_by_psi(result):
        column = columns.get(name)
        mean, std = (None, None) if current is None or column is None else (current[0][column], current[1][column])
        rows.append(
            FeatureRow(
                name=name,
                psi=psi[name],
                ks=ks.get(name),
                drifted=name in drifted,
                reference=profile.summary.get(name, {}) if profile else {},
                current_mean=None if mean is None or np.isnan(mean) else float(mean),
                current_std=None if std is None or np.isnan(std) else float(std),
            )
        )
    return rows


@require_scope(Scope.READ)
def version_drift(request, name: str, number: int):
    version = get_object_or_404(ModelVersion.objects.select_related("model"), model__name=name, number=number)
    latest = latest_drift(version)
    # The profile's reference sample (the KS test's, megabytes) is not shown.
    profile = ReferenceProfile.objects.filter(version=version).defer("sample").first()
    samples = SampleBlock.objects.filter(version=version).aggregate(
        count=Sum("count"), first=Min("first_time"), last=Max("last_time")
    )
    window = drift_window(latest) if latest else None
    current = current_summary(version.pk, *window) if window else None
    features = Paginator(feature_rows(latest, profile, current) if latest else [], FEATURES_PER_PAGE)
    context = {
        "version": version,
        "model": version.model,
        "latest": latest,
        "headline": Headline.of(latest) if latest else None,
        "window": window,
        "window_samples_kept": current is not None,
        "profile": profile,
        # Without a profile yet, the first drift pass computes one from the evaluation set, if any.
        "has_evaluation_set": profile is None and EvaluationSet.objects.filter(model_id=version.model_id).exists(),
        "samples": samples,
        "features": features.get_page(request.GET.get("page")),
        "feature_choices": features_by_psi(latest) or (profile.feature_names if profile else []),
        "chart_target": f"version:{version.pk}",
        "psi_threshold": settings.DRIFT_PSI_THRESHOLD,
        "window_hours": settings.DRIFT_WINDOW_S / 3600,
        "sample_rate": settings.GATEWAY_SAMPLE_RATE,
        "retention_days": settings.MONITORING_SAMPLE_RETENTION_DAYS,
    }
    return render(request, "ui/drift/version.html", context)
