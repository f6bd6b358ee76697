"""Who is acting: passed from views, commands and tasks into domain functions."""

from dataclasses import dataclass
from typing import Any

from modelhub.audit.models import Source


@dataclass(frozen=True)
class Actor:
    source: str = Source.SYSTEM
    user: Any = None  # a User, or None
    token: Any = None  # an ApiToken, or None
    remote_addr: str | None = None

    @property
    def label(self) -> str:
        if self.token is not None:
            return f"token:{self.token.name}"
        if self.user is not None and self.user.is_authenticated:
            return f"user:{self.user.get_username()}"
        return self.source

    @property
    def django_user(self):
        """The user to record as creator: a token acts for the user who made it."""
        if self.user is not None and self.user.is_authenticated:
            return self.user
        return getattr(self.token, "user", None)

    @classmethod
    def from_request(cls, request, source: str) -> "Actor":
        token = getattr(request, "auth", None)
        token = token if hasattr(token, "scopes") else None
        user = request.user if request.user.is_authenticated else None
        return cls(source=source, user=user, token=token, remote_addr=client_ip(request))


SYSTEM = Actor()


def client_ip(request) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is trivially forged unless a known proxy sets it.
    return request.META.get("REMOTE_ADDR") or None
