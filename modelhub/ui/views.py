from django.contrib.auth.decorators import login_required
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
