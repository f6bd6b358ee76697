"""TODO(issue 8): being built."""

from django.http import HttpResponse


def server_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def server_create(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def server_detail(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def server_edit(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def server_delete(request, **kwargs):
    return HttpResponse("not built yet", status=501)
