"""Template context for every page: the role's buttons (`can`), the role's name and
the number of firing alerts in the navigation (one COUNT, only when a page renders it)."""

from django.utils.functional import SimpleLazyObject

from modelhub.access.roles import role_name
from modelhub.ui.access import Can


def _firing_count() -> int:
    from modelhub.alerts.models import Alert, AlertState

    return Alert.objects.filter(state=AlertState.FIRING).count()


def ui(request) -> dict:
    user = getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    return {
        "can": Can(user),
        "user_role": SimpleLazyObject(lambda: role_name(user)),
        "nav_firing_alerts": SimpleLazyObject(_firing_count) if signed_in else 0,
    }
