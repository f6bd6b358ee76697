"""Which page shows an alert's target, and the alert itself: the one place that knows.

The operator UI's pages (namespace `ui`). `*_path` is what a page links to;
`*_url` is absolute, with settings.MODELHUB_BASE_URL, for alert emails.
"""

from django.conf import settings
from django.urls import reverse

from modelhub.alerts.models import Alert


def absolute(path: str) -> str:
    return settings.MODELHUB_BASE_URL.rstrip("/") + path


def target_path(alert: Alert) -> str | None:
    """The page of what broke: the deployment, the version, the server or the model;
    None when the target is gone (a deleted deployment keeps its alert)."""
    if alert.deployment_id:
        return reverse("ui:deployment-detail", kwargs={"pk": alert.deployment_id})
    if alert.version_id:
        version = alert.version
        return reverse("ui:version-detail", kwargs={"name": version.model.name, "number": version.number})
    if alert.server_id:
        return reverse("ui:server-detail", kwargs={"name": alert.server.name})
    if alert.model_id:
        return reverse("ui:model-detail", kwargs={"name": alert.model.name})
    return None


def alert_path(alert: Alert) -> str:
    """The alert itself: its flips, its sends, acknowledge and silence."""
    return reverse("ui:alert-detail", kwargs={"pk": alert.pk})


def target_url(alert: Alert) -> str:
    """Absolute link to the target's page; the alert's page when the target is gone."""
    return absolute(target_path(alert) or alert_path(alert))


def alert_url(alert: Alert) -> str:
    return absolute(alert_path(alert))
