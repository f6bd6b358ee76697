"""Request ids and request metrics, around every request."""

import re
import time
import uuid

from modelhub.lib.jsonlog import request_id
from modelhub.ops.metrics import HTTP_DURATION, HTTP_REQUESTS

# A proxy's id (nginx $request_id, an ingress's, a client's) is kept when it looks like one;
# anything else would let a client write what it likes into every log line.
_GIVEN_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class RequestIdMiddleware:
    """Each request gets an id (X-Request-ID, given or made), in its log lines and its answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        rid = given if _GIVEN_ID.match(given) else uuid.uuid4().hex
        request.request_id = rid
        token = request_id.set(rid)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response["X-Request-ID"] = rid
        return response


class RequestMetricsMiddleware:
    """Counts each answer by view name (the URL pattern's, e.g. "api:server-detail"), method
    and status, and times it: a bounded set of series, whatever names the URLs carry."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or "unnamed") if match else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUESTS.labels(view, method, str(response.status_code)).inc()
        HTTP_DURATION.labels(view).observe(time.perf_counter() - started)
        return response
