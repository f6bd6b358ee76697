"""Issuing, checking and revoking API tokens: the domain side of token auth."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from modelhub.api.models import ApiToken, parse_token
from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.registry.models import Model

# last_used_at is written at most this often per token: a busy CI token must
# not turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenRejected(Exception):
    """The presented token cannot be used; the message says why."""


def issue_token(
    *,
    name: str,
    user,
    scopes: Iterable[str],
    models: Iterable[Model] = (),
    expires_at: datetime | None = None,
    actor: Actor,
) -> tuple[ApiToken, str]:
    """Create a token and return it with its full text, which is never stored."""
    models = list(models)
    token = ApiToken(name=name, user=user, scopes=sorted(set(scopes)), expires_at=expires_at, restricted=bool(models))
    text = token.set_new_secret()
    token.full_clean()
    with transaction.atomic():
        token.save()
        token.allowed_models.set(models)
        record(
            actor,
            "token.create",
            token,
            user=user.get_username(),
            scopes=token.scopes,
            models=sorted(m.name for m in models),
            expires_at=expires_at.isoformat() if expires_at else None,
        )
    return token, text


def revoke_token(token: ApiToken, actor: Actor) -> None:
    with transaction.atomic():
        if ApiToken.objects.filter(pk=token.pk, revoked=False).update(revoked=True):
            record(actor, "token.revoke", token)
    token.revoked = True


def authenticate_token(text: str) -> ApiToken:
    """The token `text` stands for, if it may be used now; else TokenRejected."""
    parsed = parse_token(text)
    if parsed is None:
        raise TokenRejected("malformed API token: expected mh_<prefix>_<secret>")
    prefix, secret = parsed
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    # Unknown prefix and wrong secret read the same: no oracle for valid prefixes.
    if token is None or not token.secret_matches(secret):
        raise TokenRejected("invalid API token")
    if token.revoked:
        raise TokenRejected(f"API token {token.name!r} has been revoked")
    if token.expired:
        raise TokenRejected(f"API token {token.name!r} expired at {token.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    if not token.user.is_active:
        raise TokenRejected(f"API token {token.name!r} belongs to an inactive user")
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    # One query now instead of one per restricted lookup later.
    token.allowed_model_ids = frozenset(token.allowed_models.values_list("pk", flat=True)) if token.restricted else None
    return token
