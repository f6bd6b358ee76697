"""A real gunicorn with MODELHUB_ENV=production: HTTPS enforced except for probes and
metrics, HSTS and secure cookies, and JSON log lines that carry the request id."""

import json
import logging
import sys

import pytest
from django.core.management.utils import get_random_secret_key

from modelhub.lib.jsonlog import JsonFormatter, request_id

pytestmark = pytest.mark.django_db


def test_production_redirects_to_https_but_not_probes_and_sends_hsts_and_secure_cookies(web):
    server = web(
        MODELHUB_ENV="production",
        DJANGO_SECRET_KEY=get_random_secret_key(),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        MODELHUB_TRUST_X_FORWARDED_PROTO="true",
    )

    plain = server.get("/login/")
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://127.0.0.1:")
    for path in ("/healthz/live", "/healthz/ready", "/healthz", "/metrics"):
        assert server.get(path).status_code == 200, path  # probes speak plain http inside the cluster

    secure = server.get("/login/", headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    cookie = secure.headers["Set-Cookie"]
    assert "csrftoken=" in cookie and "Secure" in cookie

    missing = server.get("/nope-zz", headers={"X-Forwarded-Proto": "https", "X-Request-ID": "req-abc-123"})
    assert missing.status_code == 404 and missing.headers["X-Request-ID"] == "req-abc-123"
    made = server.get("/nope-zz", headers={"X-Forwarded-Proto": "https", "X-Request-ID": "bad id {forged}"})
    assert made.headers["X-Request-ID"] != "bad id {forged}" and len(made.headers["X-Request-ID"]) == 32

    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    [logged] = [entry for entry in lines if entry.get("request_id") == "req-abc-123"]
    assert logged["level"] == "WARNING" and logged["logger"] == "django.request"
    assert logged["message"] == "Not Found: /nope-zz" and logged["time"].endswith("+00:00")


def test_a_json_line_carries_the_exception_and_the_request_id_on_one_line():
    record = logging.LogRecord("modelhub.x", logging.ERROR, __file__, 1, "load of %s failed", ("digits",), None)
    try:
        raise ValueError("bad\nconfig")
    except ValueError:
        record.exc_info = sys.exc_info()
    token = request_id.set("r-42")
    try:
        line = JsonFormatter().format(record)
    finally:
        request_id.reset(token)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "load of digits failed" and entry["request_id"] == "r-42"
    assert entry["exception"].startswith("Traceback") and "ValueError: bad\nconfig" in entry["exception"]
    assert set(entry) == {"time", "level", "logger", "message", "request_id", "exception"}
