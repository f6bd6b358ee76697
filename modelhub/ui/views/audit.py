"""TODO(issue 8): being built."""

from django.http import HttpResponse


def audit_list(request, **kwargs):
    return HttpResponse("not built yet", status=501)
