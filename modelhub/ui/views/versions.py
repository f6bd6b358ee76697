"""TODO(issue 8): being built."""

from django.http import HttpResponse


def version_detail(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def version_compare(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def version_artifact(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def version_deploy(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def version_undeploy(request, **kwargs):
    return HttpResponse("not built yet", status=501)


def version_accuracy_run(request, **kwargs):
    return HttpResponse("not built yet", status=501)
