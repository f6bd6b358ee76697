"""URLs as readers may see them."""

import re

# The user:password@ of a URL, wherever it appears: in a URL or inside an error text.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s'\"]+@")


def hide_credentials(text: str) -> str:
    """`http://user:secret@host:8000` shown as `http://***@host:8000`: no page, mail or log line
    shows a password that was registered inside a server's URL."""
    return _CREDENTIALS.sub("***@", text or "")
