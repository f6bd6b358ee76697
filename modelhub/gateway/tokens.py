"""API tokens as the gateway checks them: from memory, refreshed in the background.

The same rules as the REST API (modelhub.api.tokens.authenticate_token): the secret's
sha256 must match, the token must be neither revoked nor expired, its user active,
and the scope counts only as far as the user's role holds it now. Read once per
refresh for every token, so a request makes no query; a revoke shows within one
refresh interval.

A request checks its token against the cache (the secret's hash once per distinct
Authorization header and cache) and notes the prefix in a set; the refresher thread
writes `last_used_at` for the noted tokens in one UPDATE per refresh, at most once per
LAST_USED_RESOLUTION per token, as the REST API does.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from modelhub.access.roles import Scope, role_scopes
from modelhub.api.models import ApiToken, hash_secret, parse_token
from modelhub.api.tokens import LAST_USED_RESOLUTION

_VERIFIED_MAX = 4096  # distinct Authorization headers kept verified per token cache


@dataclass(frozen=True)
class CachedToken:
    name: str
    secret_hash: str
    grants: frozenset[str]  # the token's scopes, implied ones included, within its user's role
    expires_at: float | None  # epoch seconds
    revoked: bool
    user_active: bool
    allowed_models: frozenset[str] | None  # None: not restricted
    last_used_at: float | None = None  # epoch seconds, as read


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
        last_used_at=token.last_used_at.timestamp() if token.last_used_at else None,
    )


class TokenChecker:
    """check() with a memo of the Authorization headers whose secret matched, per token cache:
    the hash is computed once per header, not per request. The token's state (revoked,
    expiry, user, scopes, models) is still checked on every request."""

    def __init__(self) -> None:
        self._for: dict[str, CachedToken] | None = None
        self._verified: dict[bytes, tuple[str, CachedToken]] = {}

    def check(self, tokens: dict[str, CachedToken], authorization: bytes | None, model: str | None) -> str:
        """The token's prefix if it may infer on `model`; else Refused."""
        if tokens is not self._for:
            self._verified = {}  # refreshed: a changed secret or a deleted token shows now
            self._for = tokens
        verified = self._verified.get(authorization) if authorization else None
        if verified is None:
            prefix = check(tokens, authorization, model)
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[authorization] = (prefix, tokens[prefix])
            return prefix
        prefix, token = verified
        _check_state(token, model)
        return prefix


def check(tokens: dict[str, CachedToken], authorization: bytes | None, model: str | None) -> str:
    """The prefix of the token in the Authorization header if it may infer on `model`
    (None: a call about no model, such as the server's metadata); else Refused."""
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
    _check_state(token, model)
    return prefix


def _check_state(token: CachedToken, model: str | None) -> None:
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


def record_last_used(seen: set[str], tokens: dict[str, CachedToken]) -> int:
    """Write last_used_at for the tokens in `seen` (prefixes the request path noted) that
    were last marked used over LAST_USED_RESOLUTION ago: one UPDATE. Returns how many were due.

    Called by the refresher thread while the event loop keeps adding: set() and
    difference_update() each run without letting another thread in (the GIL), so a
    prefix noted meanwhile is either taken now or left for the next call."""
    taken = set(seen)
    if not taken:
        return 0
    seen.difference_update(taken)
    now = timezone.now()
    cutoff = now - LAST_USED_RESOLUTION
    due = [
        prefix
        for prefix in taken
        if (token := tokens.get(prefix)) is not None
        and (token.last_used_at is None or token.last_used_at < cutoff.timestamp())
    ]
    if due:
        # The same rule as the REST API; the condition again in SQL, since it may have written meanwhile.
        recent = Q(last_used_at__isnull=True) | Q(last_used_at__lt=cutoff)
        ApiToken.objects.filter(recent, prefix__in=due).update(last_used_at=now)
    return len(due)
