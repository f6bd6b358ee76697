"""Which page shows an alert's target, and the alert itself: the one place that knows.

The operator UI's pages (namespace `ui`). `*_path` is what a page links to;
`*_url` is absolute, with settings.MODELHUB_BASE_URL, for alert emails.
"""

from django.conf import settings
from django.urls import reverse

from modelhub.alerts.models import Alert


def absolute(path: str) -> str:
    return settings.MODELHUB_BASE_URL.rstrip("/") + path


def target_path(row) -> str | None:
    """The page of what broke or was checked (an Alert or a CheckResult): the deployment,
    the version, the server or the model; None when the target is gone (a deleted
    deployment keeps its alert)."""
    if row.deployment_id:
        return reverse("ui:deployment-detail", kwargs={"pk": row.deployment_id})
    if row.version_id:
        version = row.version
        return reverse("ui:version-detail", kwargs={"name": version.model.name, "number": version.number})
    if row.server_id:
        return reverse("ui:server-detail", kwargs={"name": row.server.name})
    if getattr(row, "model_id", None):
        return reverse("ui:model-detail", kwargs={"name": row.model.name})
    return None


def alert_path(alert: Alert) -> str:
    """The alert itself: its flips, its sends, acknowledge and silence."""
    return reverse("ui:alert-detail", kwargs={"pk": alert.pk})


def target_url(alert: Alert) -> str:
    """Absolute link to the target's page; the alert's page when the target is gone."""
    return absolute(target_path(alert) or alert_path(alert))


def alert_url(alert: Alert) -> str:
    return absolute(alert_path(alert))
