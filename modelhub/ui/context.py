"""Template context for every page: the role's buttons (`can`), the role's name and
the number of firing alerts in the navigation (one COUNT, only when a page renders it)."""

from django.utils.functional import SimpleLazyObject

from modelhub.access.roles import ROLES
from modelhub.ui.access import Can


def _role_name(user) -> str:
    if user is None or not user.is_authenticated:
        return ""
    if user.is_superuser:
        return "admin"
    names = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    # The strongest role shown: ROLES runs from least to most.
    return next((r for r in reversed(ROLES) if r in names), "no role")


def _firing_count() -> int:
    from modelhub.alerts.models import Alert, AlertState

    return Alert.objects.filter(state=AlertState.FIRING).count()


def ui(request) -> dict:
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    return {
        "can": Can(user),
        "user_role": SimpleLazyObject(lambda: _role_name(user)),
        "nav_firing_alerts": SimpleLazyObject(_firing_count) if signed_in else 0,
    }
