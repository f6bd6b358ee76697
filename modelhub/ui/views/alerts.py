"""TODO(issue 8): being built."""

from django.http import HttpResponse


def alert_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def alert_detail(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def alert_acknowledge(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def alert_silence(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def alert_unsilence(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def rule_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def rule_create(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def rule_edit(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def rule_delete(request, **kwargs):
    return HttpResponse("not built yet", status=501)
