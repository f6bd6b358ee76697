"""API tokens: how CI pipelines authenticate.

A token reads `mh_<prefix>_<secret>`. Only the prefix (indexed, shown in lists)
and the sha256 of the secret are stored; the full text is shown once, when the
token is made. Secrets are 240 random bits, so a plain sha256 is enough: there
is nothing to brute-force that a slow hash would protect.
"""

import hashlib
import hmac
import secrets
import string

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from modelhub.access.roles import SCOPE_IMPLIES, Scope

TOKEN_PREFIX = "mh"
_ALPHABET = string.ascii_letters + string.digits
PREFIX_LENGTH = 8
SECRET_LENGTH = 40  # 40 base-62 characters: about 238 bits


# The scopes live with the roles (modelhub.access.roles); imported here for the token's fields.


def validate_scopes(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("give at least one scope")
    unknown = [s for s in value if s not in Scope.values]
    if unknown:
        raise ValidationError(f"unknown scope(s) {', '.join(map(str, unknown))}; use {', '.join(Scope.values)}")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


class ApiToken(models.Model):
    name = models.CharField(max_length=100, help_text="What uses it, e.g. ci-main")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_tokens",
        help_text="Who the token acts for: the audit log and created_by name this user",
    )
    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, validators=[validate_scopes])
    allowed_models = models.ManyToManyField(
        "registry.Model",
        blank=True,
        related_name="+",
        help_text="If any are chosen, the token sees and acts on these models only",
    )
    # Set from allowed_models when the token is saved. Kept apart from them so a
    # restricted token whose models were all deleted sees nothing, not everything.
    restricted = models.BooleanField(default=False, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (mh_{self.prefix}_…)"

    def set_new_secret(self) -> str:
        """Give the token a fresh prefix and secret; return the full text, to be shown once."""
        secret = _random(SECRET_LENGTH)
        self.prefix = _random(PREFIX_LENGTH)
        self.secret_hash = hash_secret(secret)
        return f"{TOKEN_PREFIX}_{self.prefix}_{secret}"

    def secret_matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, hash_secret(secret))

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def granted(self) -> set[str]:
        """Every scope the token holds, implied ones included."""
        result: set[str] = set()
        for scope in self.scopes or []:
            result |= SCOPE_IMPLIES.get(scope, set())
        return result


def parse_token(text: str) -> tuple[str, str] | None:
    """Split `mh_<prefix>_<secret>` into (prefix, secret); None if it is not shaped like one."""
    parts = text.split("_")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    prefix, secret = parts[1], parts[2]
    if len(prefix) != PREFIX_LENGTH or len(secret) != SECRET_LENGTH:
        return None
    if not all(c in _ALPHABET for c in prefix + secret):
        return None
    return prefix, secret
