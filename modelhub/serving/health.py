"""The one writer of a server's health fields (live, ready, last_*, version,
extensions): the reconciler and the server health check both call it."""

from django.utils import timezone

from modelhub.serving.models import InferenceServer
from modelhub.serving.triton_client import TritonClient, TritonError, TritonUnavailable


def record_server_health(server: InferenceServer, client: TritonClient) -> None:
    """Ask Triton whether it is up and what it is; store the answer on the server.

    Raises TritonUnavailable (naming the server and the call) when it does not
    answer, after storing that it is down.
    """
    now = timezone.now()
    try:
        health = client.health()
        metadata = client.server_metadata()
    except TritonError as exc:
        InferenceServer.objects.filter(pk=server.pk).update(
            live=False, ready=False, last_checked_at=now, last_error=str(exc)
        )
        raise TritonUnavailable(exc.server, exc.call, exc.detail, exc.status) from exc
    InferenceServer.objects.filter(pk=server.pk).update(
        live=health.live,
        ready=health.ready,
        last_checked_at=now,
        last_seen_at=now,
        last_error="",
        triton_version=metadata.get("version", ""),
        extensions=metadata.get("extensions", []),
    )
    server.live, server.ready = health.live, health.ready
