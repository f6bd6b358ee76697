"""What the signed-in person may do in the UI.

The rules live in `modelhub.access.roles`, the one module the REST API and the
admin also read: a person holds the scopes of their role group
(viewer = read, operator = read + deploy, admin = everything). Here they become a
view decorator (the server refuses what the role does not allow, whatever the
page showed) and `can` in every template (which buttons to show).
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from modelhub.access.roles import role_refusal, role_scopes
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source


def can(user, scope: str) -> bool:
    return scope in role_scopes(user)


def require_scope(scope: str):
    """The view needs a signed-in person whose role holds `scope`; others get the
    login page (anonymous) or a 403 that says which role would do."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not can(request.user, scope):
                raise PermissionDenied(role_refusal(scope))
            return view(request, *args, **kwargs)

        wrapped.required_scope = scope  # read by the page permission matrix test
        return wrapped

    return decorator


def ui_actor(request) -> Actor:
    """The actor the service functions record for a UI write."""
    return Actor.from_request(request, Source.UI)


class Can:
    """`can.deploy`, `can.admin`… in templates: whether to show a button."""

    def __init__(self, user):
        self._scopes = role_scopes(user)

    def __getattr__(self, scope: str) -> bool:
        if scope.startswith("_"):
            raise AttributeError(scope)
        return scope in self._scopes
