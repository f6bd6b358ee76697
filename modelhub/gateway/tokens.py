"""API tokens as the gateway checks them: from memory, refreshed in the background.

The same rules as the REST API (modelhub.api.tokens.authenticate_token): the secret's
sha256 must match, the token must be neither revoked nor expired, its user active,
and the scope counts only as far as the user's role holds it now. Read once per
refresh for every token, so a request makes no query; a revoke shows within one
refresh interval.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from modelhub.access.roles import Scope, role_scopes
from modelhub.api.models import ApiToken, hash_secret, parse_token


@dataclass(frozen=True)
class CachedToken:
    name: str
    secret_hash: str
    grants: frozenset[str]  # the token's scopes, implied ones included, within its user's role
    expires_at: float | None  # epoch seconds
    revoked: bool
    user_active: bool
    allowed_models: frozenset[str] | None  # None: not restricted


class Refused(Exception):
    """The caller may not infer; `status` is 401 (who are you) or 403 (not allowed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def read_tokens() -> dict[str, CachedToken]:
    """prefix -> token, for every token (revoked ones too, to say so)."""
    tokens = ApiToken.objects.select_related("user").prefetch_related("user__groups", "allowed_models")
    return {token.prefix: _cached(token) for token in tokens}


def _cached(token: ApiToken) -> CachedToken:
    held = role_scopes(token.user, groups=list(token.user.groups.all()))
    return CachedToken(
        name=token.name,
        secret_hash=token.secret_hash,
        grants=frozenset(token.granted) & held,
        expires_at=token.expires_at.timestamp() if token.expires_at else None,
        revoked=token.revoked,
        user_active=token.user.is_active,
        allowed_models=frozenset(m.name for m in token.allowed_models.all()) if token.restricted else None,
    )


def check(tokens: dict[str, CachedToken], authorization: bytes | None, model: str | None) -> None:
    """Raise Refused unless the Authorization header carries a token that may infer on `model`
    (None: a call about no model, such as the server's metadata)."""
    if not authorization:
        raise Refused(401, "missing API token: send 'Authorization: Bearer mh_<prefix>_<secret>'")
    scheme, _, text = authorization.decode("latin-1").partition(" ")
    parsed = parse_token(text.strip()) if scheme.lower() == "bearer" else None
    if parsed is None:
        raise Refused(401, "malformed API token: expected 'Authorization: Bearer mh_<prefix>_<secret>'")
    prefix, secret = parsed
    token = tokens.get(prefix)
    # Unknown prefix and wrong secret read the same: no oracle for valid prefixes.
    if token is None or not hmac.compare_digest(token.secret_hash, hash_secret(secret)):
        raise Refused(401, "invalid API token")
    if token.revoked:
        raise Refused(401, f"API token {token.name!r} has been revoked")
    if token.expires_at is not None and token.expires_at <= time.time():
        raise Refused(401, f"API token {token.name!r} has expired")
    if not token.user_active:
        raise Refused(401, f"API token {token.name!r} belongs to an inactive user")
    if Scope.INFER not in token.grants:
        raise Refused(403, f"API token {token.name!r} lacks the 'infer' scope (or its user's role does)")
    if model is not None and token.allowed_models is not None and model not in token.allowed_models:
        raise Refused(403, f"API token {token.name!r} may not use model {model!r}")
