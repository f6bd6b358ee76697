"""TODO(issue 8): being built."""

from django.http import HttpResponse


def model_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def model_detail(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def alias_move(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def alias_rollback(request, **kwargs):
    return HttpResponse("not built yet", status=501)
