"""Who may do what: scopes, the roles that hold them, and a person's scopes.

The one place the REST API (tokens and sessions, `modelhub.api.permissions`), the
operator UI (`modelhub.ui.access`) and the Django admin (`RoleAdminMixin`) read
roles from. It sits below every app that has an admin, so each can use it.

Scopes are read, upload, deploy, infer and admin (upload and deploy imply read,
admin implies all; infer, calling models through the inference gateway, implies
nothing else). A person holds the scopes of their role group: viewer = read,
operator = read + deploy + infer, admin = everything. A superuser is admin; a person in no
role group, or inactive, holds nothing.
"""

from django.db import models


class Scope(models.TextChoices):
    READ = "read", "read everything the token can see"
    UPLOAD = "upload", "register models and versions"
    DEPLOY = "deploy", "deploy, undeploy and move aliases"
    INFER = "infer", "call models through the inference gateway"
    ADMIN = "admin", "everything, servers and deletes included"


# What each scope lets a caller do: writing implies reading what you write.
SCOPE_IMPLIES = {
    Scope.READ: {Scope.READ},
    Scope.UPLOAD: {Scope.READ, Scope.UPLOAD},
    Scope.DEPLOY: {Scope.READ, Scope.DEPLOY},
    Scope.INFER: {Scope.INFER},
    Scope.ADMIN: {Scope.READ, Scope.UPLOAD, Scope.DEPLOY, Scope.INFER, Scope.ADMIN},
}

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "viewer": frozenset({Scope.READ}),
    "operator": frozenset({Scope.READ, Scope.DEPLOY, Scope.INFER}),
    "admin": frozenset(Scope.values),
}
ROLES = tuple(ROLE_SCOPES)  # from least to most
ROLES_SUMMARY = "roles: viewer=read, operator=read+deploy+infer, admin=all"


def role_scopes(user, groups=None) -> frozenset[str]:
    """What a person may do by their role groups, whatever signs them in.

    `groups`: the person's groups when the caller already has them (a list of people
    with their groups prefetched), so that no query is made per person."""
    if user is None or not user.is_authenticated or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(Scope.values)
    if groups is not None:
        return frozenset().union(*(ROLE_SCOPES.get(group.name, frozenset()) for group in groups))
    return frozenset().union(*(ROLE_SCOPES[name] for name in _role_groups(user)))


def _role_groups(user) -> frozenset[str]:
    cached = getattr(user, "_modelhub_role_groups", None)  # one query per user object
    if cached is None:
        cached = user._modelhub_role_groups = frozenset(
            user.groups.filter(name__in=ROLES).values_list("name", flat=True)
        )
    return cached


def role_name(user) -> str:
    """The strongest role a signed-in person holds ("no role" if none), for display."""
    if user is None or not user.is_authenticated:
        return ""
    if user.is_superuser:
        return "admin"
    names = _role_groups(user)
    return next((role for role in reversed(ROLES) if role in names), "no role")


def role_refusal(scope: str) -> str:
    """Why a person lacking `scope` is refused, in words that say what to change."""
    return f"your role does not allow {str(getattr(scope, 'value', scope))!r} ({ROLES_SUMMARY})"


class RoleAdminMixin:
    """A ModelAdmin that lets a staff member see and change rows only as far as their
    role allows, on top of Django's own model permissions: viewing needs `view_scope`,
    adding and changing `write_scope`, deleting `delete_scope` (the API's scopes for the
    same actions)."""

    view_scope: str = Scope.READ
    write_scope: str = Scope.ADMIN
    delete_scope: str | None = None  # None: as write_scope

    def _role_allows(self, request, scope) -> bool:
        return scope in role_scopes(request.user)

    def has_module_permission(self, request):
        return self._role_allows(request, self.view_scope) and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None):
        return self._role_allows(request, self.view_scope) and super().has_view_permission(request, obj)

    def has_add_permission(self, request, *args):
        return self._role_allows(request, self.write_scope) and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return self._role_allows(request, self.write_scope) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        scope = self.delete_scope or self.write_scope
        return self._role_allows(request, scope) and super().has_delete_permission(request, obj)

    # For admin actions: @admin.action(permissions=["deploy_role"]) needs the deploy scope.
    def has_deploy_role_permission(self, request) -> bool:
        return self._role_allows(request, Scope.DEPLOY)

    def has_admin_role_permission(self, request) -> bool:
        return self._role_allows(request, Scope.ADMIN)
