"""TODO(issue 8): being built."""

from django.http import HttpResponse


def deployment_detail(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def deployment_status(request, **kwargs):
    return HttpResponse("not built yet", status=501)
