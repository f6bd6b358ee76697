"""Server health: live, ready and server metadata, within the call timeout."""

from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result
from modelhub.serving.health import record_server_health
from modelhub.serving.models import InferenceServer
from modelhub.serving.triton_client import TritonClient, TritonUnavailable


def check_server_health(server: InferenceServer, client: TritonClient) -> Result:
    """Ask the server (storing the answer on it, through the one writer) and
    say ok when it is live and ready, fail with what went wrong otherwise."""
    try:
        record_server_health(server, client)
    except TritonUnavailable as exc:
        return server_down(server, str(exc))
    if not (server.live and server.ready):
        state = "not live" if not server.live else "live but not ready"
        return server_down(server, f"Triton server {server.name!r} answered but is {state}")
    return Result(
        CheckKind.SERVER_HEALTH, Status.OK, server_id=server.pk, value=1.0, points=[("up", f"server:{server.pk}", 1.0)]
    )


def server_down(server: InferenceServer, message: str) -> Result:
    return Result(
        CheckKind.SERVER_HEALTH,
        Status.FAIL,
        server_id=server.pk,
        value=0.0,
        message=message,
        points=[("up", f"server:{server.pk}", 0.0)],
    )
