"""API tokens: one's own (an admin sees everyone's), created with the secret shown once, revoked."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from modelhub.access.roles import role_scopes
from modelhub.api.models import SCOPE_IMPLIES, ApiToken, Scope
from modelhub.api.tokens import issue_token, revoke_token
from modelhub.registry.models import Model
from modelhub.ui.access import can, require_scope, ui_actor
from modelhub.ui.forms.tokens import TokenCreateForm, TokenFilterForm

PAGE_SIZE = 50


def _visible_tokens(request):
    """The tokens this person may see: their own, or everyone's for an admin."""
    tokens = ApiToken.objects.select_related("user").prefetch_related(
        "user__groups", Prefetch("allowed_models", queryset=Model.objects.order_by("name").only("name"))
    )
    if can(request.user, Scope.ADMIN):
        return tokens
    return tokens.filter(user=request.user)


def _mark_lapsed_scopes(tokens) -> None:
    """Give each token `lapsed`: its scopes that its owner's role no longer grants.

    The role comes from the prefetched groups, through the one permission module: no
    query per row.
    """
    for token in tokens:
        user = token.user
        held = role_scopes(user, groups=user.groups.all())
        token.lapsed = [s for s in token.scopes if not SCOPE_IMPLIES.get(s, {s}) <= held]


def _may_revoke(request, token: ApiToken) -> bool:
    return token.user_id == request.user.pk or can(request.user, Scope.ADMIN)


@require_scope(Scope.READ)
def token_list(request):
    tokens = _visible_tokens(request)
    is_admin = can(request.user, Scope.ADMIN)
    filters = TokenFilterForm(request.GET) if is_admin else None
    if filters is not None and filters.is_valid() and filters.cleaned_data["user"]:
        tokens = tokens.filter(user__username=filters.cleaned_data["user"])
    page = Paginator(tokens, PAGE_SIZE).get_page(request.GET.get("page"))
    _mark_lapsed_scopes(page.object_list)
    for token in page.object_list:
        token.may_revoke = not token.revoked and _may_revoke(request, token)
    return render(request, "ui/tokens/list.html", {"page": page, "filters": filters, "everyone": is_admin})


@require_scope(Scope.READ)
def token_create(request):
    form = TokenCreateForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            token, secret = issue_token(
                name=form.cleaned_data["name"],
                user=request.user,
                scopes=form.cleaned_data["scopes"],
                models=form.cleaned_data["models"],
                expires_at=form.expires_at,
                actor=ui_actor(request),
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            return _show_secret_once(request, token, secret)
    status = 400 if form.errors else 200
    return render(request, "ui/tokens/create.html", {"form": form}, status=status)


def _show_secret_once(request, token: ApiToken, secret: str):
    # Rendered in the POST's response, not redirected to: the secret must not pass through
    # the session or the messages cookie, and no cache may keep the page.
    response = render(
        request,
        "ui/tokens/created.html",
        {"token": token, "secret": secret, "models": [m.name for m in token.allowed_models.order_by("name")]},
    )
    add_never_cache_headers(response)
    return response


@require_POST
@require_scope(Scope.READ)
def token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken.objects.select_related("user"), pk=pk)
    if not _may_revoke(request, token):
        raise PermissionDenied("only the token's owner or an admin may revoke it")
    if token.revoked:
        messages.info(request, f"Token {token.name!r} was already revoked.")
    else:
        revoke_token(token, ui_actor(request))
        messages.success(request, f"Token {token.name!r} of {token.user.get_username()} revoked: it no longer works.")
    return redirect("ui:token-list")
