"""Who may call the REST API: people by their role, tokens by their scopes.

The roles themselves (which scopes each holds, a person's scopes) are in
`modelhub.access.roles`, the one place the API, the UI and the admin read them from.

- A person (a session) holds the scopes of their role.
- A token holds the scopes it was issued with *that its owner's role holds now*:
  the two are intersected at every request, so a demoted user's tokens lose what
  the role lost, and no token does more than the person it acts for.
- A token may be restricted to some models. It then touches only objects under
  them (the models, their versions, aliases, alias history, deployments and
  audit rows); anything of another model answers 404 as if it did not exist, so
  it never learns which names are taken. What is not under one model it may
  not write (servers, new models, tokens, users: 403 saying so). It may read
  servers, since a deploy names one.

A view says which scope each action needs (`required_scope`), how its rows
reach a model (`model_path`), whether a restricted token may read rows that
belong to no model (`restricted_reads_all`) and which of its actions make
something under no model yet (`restricted_refused_actions`: creating a model).
"""

from django.contrib.auth.models import AnonymousUser
from rest_framework.authentication import get_authorization_header
from rest_framework.exceptions import NotAuthenticated, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission

from modelhub.access.roles import ROLES_SUMMARY, role_refusal, role_scopes
from modelhub.api.authentication import BearerTokenAuthentication
from modelhub.api.models import ApiToken
from modelhub.registry.models import Model


def token_scopes(token: ApiToken) -> frozenset[str]:
    """What a token may do now: its own scopes, as far as its owner's role still allows them."""
    return frozenset(token.granted) & role_scopes(token.user)


def token_model_ids(token: ApiToken) -> frozenset[int] | None:
    """The ids of the models a restricted token may touch; None when it is not restricted."""
    if not token.restricted:
        return None
    ids = getattr(token, "allowed_model_ids", None)
    if ids is None:  # authenticate_token fills it; a token from elsewhere is read here
        ids = token.allowed_model_ids = frozenset(token.allowed_models.values_list("pk", flat=True))
    return ids


def request_token(request) -> ApiToken | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiToken) else None


def granted_scopes(request) -> frozenset[str]:
    """Every scope the caller of `request` holds now (implied ones included)."""
    cached = getattr(request, "_modelhub_scopes", None)
    if cached is None:
        token = request_token(request)
        cached = token_scopes(token) if token is not None else role_scopes(request.user)
        request._modelhub_scopes = cached
    return cached


def allowed_model_ids(request) -> frozenset[int] | None:
    """The ids of the models the caller may touch; None when it may touch every model."""
    token = request_token(request)
    return token_model_ids(token) if token is not None else None


def refusal(scope: str, token: ApiToken | None) -> str:
    """Why a caller lacking `scope` is refused, in words that say what to change."""
    scope = str(getattr(scope, "value", scope))
    if token is None:
        return role_refusal(scope)
    if scope in token.granted:
        return (
            f"this API token has the {scope!r} scope but its user {token.user.get_username()!r} "
            f"no longer does ({ROLES_SUMMARY})"
        )
    return f"this API token lacks the {scope!r} scope"


_VERBS = {"POST": "create", "PUT": "change", "PATCH": "change", "DELETE": "delete"}


def restriction_refusal(request, view) -> str | None:
    """Why a token restricted to some models may not take this action here; None when it may.

    Actions on rows under a model are allowed: the view's queryset keeps them to
    the token's models (others are 404). Rows under no model are refused, except
    reads where the view allows them.
    """
    ids = allowed_model_ids(request)
    if ids is None:
        return None
    safe = request.method in SAFE_METHODS
    refused = getattr(view, "action", None) in getattr(view, "restricted_refused_actions", ())
    if getattr(view, "model_path", None) is not None and not refused:
        return None
    if safe and getattr(view, "restricted_reads_all", False):
        return None
    names = ", ".join(Model.objects.filter(pk__in=ids).order_by("name").values_list("name", flat=True)) or "none left"
    what = view.queryset.model._meta.verbose_name_plural
    verb = "read" if safe else _VERBS.get(request.method, request.method.lower())
    return f"this API token is restricted to the models {names}: it cannot {verb} {what}"


class HasScope(BasePermission):
    """The caller holds the scope the view's `required_scope(request)` names, and a
    token restricted to some models stays within them."""

    def has_permission(self, request, view) -> bool:
        scope = view.required_scope(request)
        if scope is not None and scope not in granted_scopes(request):
            self.message = refusal(scope, request_token(request))
            return False
        reason = restriction_refusal(request, view)
        if reason:
            self.message = reason
            return False
        return True


def check_before_body(view, request) -> None:
    """Refuse a caller who may not take the view's action, without reading the request body.

    For uploads: the body is streamed to disk as soon as anything reads it, and
    session authentication reads it (the CSRF check looks for a form field). A
    token is authenticated from its header, so the usual checks run now; a person
    is the session's user (Django's middleware, no body read) and their role is
    checked here. The CSRF check still runs afterwards, in the usual authentication.
    """
    header = get_authorization_header(request).split()
    if header and header[0].lower() == BearerTokenAuthentication.keyword:
        view.perform_authentication(request)
        view.check_permissions(request)
        return
    user = getattr(request._request, "user", None) or AnonymousUser()
    if not user.is_authenticated:
        raise NotAuthenticated()
    scope = view.required_scope(request)
    if scope is not None and scope not in role_scopes(user):
        raise PermissionDenied(refusal(scope, None))
