"""TODO(issue 8): being built."""

from django.http import HttpResponse


def chart_data(request, **kwargs):
    return HttpResponse("not built yet", status=501)
