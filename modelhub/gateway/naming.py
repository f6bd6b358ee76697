"""Hide per-version Triton names from the gateway's clients.

Each version is served by Triton as its own model, `<model>__v<n>`
(serving.models.triton_model_name). A client asks the gateway for `<model>`;
Triton's metadata and config answers name `<model>__v<n>`. This puts the
client's name back in those two small JSON answers (read rarely: at a client's
start-up), so that code written against Triton sees the model it asked for.

Inference answers are left byte for byte as Triton sent them (the request path
never parses a body); their `model_name` is Triton's, which tritonclient
ignores.
"""

import json

from modelhub.serving.models import parse_triton_model_name


def client_facing(body: bytes, triton_name: str, model: str) -> bytes:
    """`body` with a top-level "name" equal to `triton_name` replaced by `model`;
    unchanged when it is not such a JSON object (an error, another answer)."""
    if parse_triton_model_name(triton_name) is None or triton_name.encode() not in body:
        return body
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if not isinstance(answer, dict) or answer.get("name") != triton_name:
        return body
    answer["name"] = model
    return json.dumps(answer, separators=(",", ":")).encode()


def with_body(head: bytes, body: bytes) -> bytes:
    """A whole HTTP answer: `head` (status line and headers, without the blank line)
    with its Content-Length set to `body`'s, then `body`."""
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"content-length:")]
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
