from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from modelhub.registry.models import Model
from modelhub.serving.models import Deployment, InferenceServer


@login_required
def overview(request):
    """Every server and model at a glance (the fuller UI is a later issue)."""
    return render(
        request,
        "ui/overview.html",
        {
            "servers": InferenceServer.objects.all(),
            "models": Model.objects.prefetch_related("versions", "aliases__version"),
            "deployments": Deployment.objects.select_related("version__model", "server"),
        },
    )


def healthz(request):
    """Liveness for load balancers and container health checks: the database answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means "not healthy"
        return JsonResponse({"status": "error", "database": str(exc)}, status=503)
    return JsonResponse({"status": "ok"})
