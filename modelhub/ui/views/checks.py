"""TODO(issue 8): being built."""

from django.http import HttpResponse


def check_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def check_detail(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def run_now(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def schedule_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def schedule_edit(request, **kwargs):
    return HttpResponse("not built yet", status=501)
