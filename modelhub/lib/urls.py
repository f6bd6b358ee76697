"""URLs as readers may see them."""

import re
from urllib.parse import urlsplit

# The user:password@ of a URL, wherever it appears: in a URL or inside an error text.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s'\"]+@")


def hide_credentials(text: str) -> str:
    """`http://user:secret@host:8000` shown as `http://***@host:8000`: no page, mail or log line
    shows a password that was registered inside a server's URL."""
    return _CREDENTIALS.sub("***@", text or "")


# Why a server URL may not carry credentials: Triton has no login of its own, ModelHub never
# sent them (the client uses the host and port only), and every page would have to hide them.
CREDENTIALS_REFUSED = (
    "must not contain a user name or password (user:password@): ModelHub does not send them to Triton; "
    "restrict who reaches the server by network instead (MODELHUB_TRITON_ALLOWED_NETWORKS)"
)


def has_credentials(url: str) -> bool:
    """True when `url` names a user or password before its host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False  # not a URL at all: the caller's own check says so
    return parts.username is not None or parts.password is not None
