"""Probes and metrics: anyone on the network may call them (the metrics behind an
optional token), so their answers name no host, user, URL or database."""

import hmac

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from modelhub.ops import health, metrics


@never_cache
@require_GET
def live(request):
    """The process answers requests; nothing else is asked (a database outage must not
    make an orchestrator restart every web process)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request):
    """Ready for traffic: the database, the migrations and the broker; 503 naming which not."""
    checks = health.status()
    if any(value != "ok" for value in checks.values()):
        return JsonResponse({"status": "unavailable", "checks": checks}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})


@never_cache
@require_GET
def prometheus(request):
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse(
                "a Bearer token is required (MODELHUB_METRICS_TOKEN)\n", status=401, content_type="text/plain"
            )
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
