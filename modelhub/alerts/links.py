"""Absolute links in alert emails: the one place that knows which page shows a target.

The operator UI's pages come later; until then a target links to its API detail.
"""

from django.conf import settings
from django.urls import NoReverseMatch, reverse

from modelhub.alerts.models import Alert


def absolute(path: str) -> str:
    return settings.MODELHUB_BASE_URL.rstrip("/") + path


def target_url(alert: Alert) -> str:
    """The page of what broke: the deployment, the version, or the server."""
    try:
        if alert.deployment_id:
            return absolute(reverse("api:deployment-detail", kwargs={"pk": alert.deployment_id}))
        if alert.version_id:
            version = alert.version
            return absolute(
                reverse("api:version-detail", kwargs={"model_name": version.model.name, "number": version.number})
            )
        if alert.server_id:
            return absolute(reverse("api:server-detail", kwargs={"name": alert.server.name}))
    except NoReverseMatch:  # the API is not mounted (a stripped-down deployment)
        pass
    return alert_url(alert)


def alert_url(alert: Alert) -> str:
    """The alert itself: its flips, its sends, acknowledge and silence."""
    try:
        return absolute(reverse("api:alert-detail", kwargs={"pk": alert.pk}))
    except NoReverseMatch:
        return absolute(f"/admin/alerts/alert/{alert.pk}/change/")
