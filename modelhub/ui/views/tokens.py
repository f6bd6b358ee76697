"""TODO(issue 8): being built."""

from django.http import HttpResponse


def token_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def token_create(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def token_revoke(request, **kwargs):
    return HttpResponse("not built yet", status=501)
