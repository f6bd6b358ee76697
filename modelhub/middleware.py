"""Project-wide request guards."""

from django.http import HttpResponseBadRequest


class RefuseNulInPathMiddleware:
    """A NUL character in the URL's path is a 400 before any view runs.

    Postgres text cannot hold NUL, so a path parameter carrying one (a model or server
    name) would otherwise fail inside the view's lookup as a 500, on every page, the
    admin's included. No valid name holds NUL; query parameters are each view's to check.
    The REST API keeps its own answer (a 404 in its JSON error shape: no such name).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path and not request.path.startswith("/api/"):
            return HttpResponseBadRequest("the URL's path holds a NUL character (%00): no name or id can contain it")
        return self.get_response(request)
