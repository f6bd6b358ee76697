"""Who may do what through the API.

Every request is granted a set of scopes (read, upload, deploy, admin):

- a token: the scopes it was issued with (upload and deploy imply read, admin
  implies all), whatever the groups of the user it acts for;
- a person signed in by session: the union over their role groups —
  viewer = read, operator = read + deploy (deploy and promote),
  admin = everything; a superuser is admin.

A view names the scope each action needs. A token may also be restricted to
some models: it then sees only those, and anything else answers 404 as if it
did not exist (it never learns which names are taken).
"""

from rest_framework.permissions import BasePermission

from modelhub.api.models import ApiToken, Scope

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": frozenset({Scope.READ}),
    "operator": frozenset({Scope.READ, Scope.DEPLOY}),
    "admin": frozenset(Scope.values),
}
ROLES = tuple(ROLE_SCOPES)


def request_token(request) -> ApiToken | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiToken) else None


def granted_scopes(request) -> frozenset[str]:
    cached = getattr(request, "_modelhub_scopes", None)
    if cached is not None:
        return cached
    token = request_token(request)
    user = request.user
    if token is not None:
        scopes = frozenset(token.granted)
    elif not user.is_authenticated or not user.is_active:
        scopes = frozenset()
    elif user.is_superuser:
        scopes = frozenset(Scope.values)
    else:
        scopes = frozenset()
        for group in user.groups.filter(name__in=ROLES).values_list("name", flat=True):
            scopes |= ROLE_SCOPES[group]
    request._modelhub_scopes = scopes
    return scopes


def allowed_model_ids(request) -> frozenset[int] | None:
    """The ids of the models a restricted token may touch; None when unrestricted."""
    token = request_token(request)
    if token is None:
        return None
    return getattr(token, "allowed_model_ids", None)


def refusal(request, scope: str) -> str:
    scope = str(getattr(scope, "value", scope))
    if request_token(request) is not None:
        return f"this API token lacks the {scope!r} scope"
    return f"your role does not allow {scope!r} (roles: viewer=read, operator=read+deploy, admin=all)"


class HasScope(BasePermission):
    """The view's `required_scope(request)` must be among the request's scopes."""

    def has_permission(self, request, view) -> bool:
        scope = view.required_scope(request)
        if scope is None or scope in granted_scopes(request):
            return True
        self.message = refusal(request, scope)
        return False
