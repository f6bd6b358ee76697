"""The rules that work without configuration, written once by the initial migration
(editable and deletable afterwards, like any other rule)."""

DEFAULT_RULES = [
    {"name": "Server down", "signal": "server_down", "severity": "critical"},
    {"name": "Model not ready", "signal": "model_not_ready", "severity": "critical"},
    {"name": "Schema mismatch", "signal": "schema_mismatch", "severity": "critical"},
    {"name": "Accuracy below threshold", "signal": "accuracy_below_threshold", "severity": "warning"},
    # No threshold: each model's own latency_slo_ms (models without one are not judged).
    {"name": "Latency p95 above SLO", "signal": "latency_p95", "severity": "warning", "comparison": "gt"},
    {
        "name": "Failure rate above 1 %",
        "signal": "failure_rate",
        "severity": "warning",
        "comparison": "gt",
        "threshold": 0.01,
    },
    # Drift: points of the drift pass (modelhub.monitoring.drift_tasks) on each version.
    {
        "name": "Input drift: PSI above 0.2",
        "signal": "point",
        "series": "drift_psi_max",
        "severity": "warning",
        "comparison": "gt",
        "threshold": 0.2,
    },
    {
        "name": "Output drift: JS above 0.1",
        "signal": "point",
        "series": "drift_js_outputs",
        "severity": "warning",
        "comparison": "gt",
        "threshold": 0.1,
    },
]


def create_default_rules(apps, schema_editor) -> None:
    AlertRule = apps.get_model("alerts", "AlertRule")
    for fields in DEFAULT_RULES:
        AlertRule.objects.get_or_create(scope="global", signal=fields["signal"], name=fields["name"], defaults=fields)


def ensure_default_rules() -> None:
    """Write the default rules where they are missing (a flushed test database, a fresh install)."""
    from django.apps import apps

    create_default_rules(apps, None)
