"""Model readiness: is the deployed version ready on its server, and if not, Triton's reason."""

from modelhub.monitoring.checks._target import deployment_fields, triton_name
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result
from modelhub.serving.models import Deployment
from modelhub.serving.triton_client import TritonClient, TritonError


def check_ready(client: TritonClient, deployment: Deployment) -> Result:
    name, number = triton_name(deployment)
    fields = deployment_fields(deployment)
    try:
        ready = client.model_ready(name, number)
    except TritonError as exc:
        return Result(CheckKind.MODEL_READY, Status.FAIL, value=0.0, message=str(exc), **fields)
    if ready:
        return Result(CheckKind.MODEL_READY, Status.OK, value=1.0, **fields)
    reason = not_ready_reason(client, name, number)
    message = f"version {number} of {name!r} is not ready on Triton server {client.server_name!r}: {reason}"
    return Result(CheckKind.MODEL_READY, Status.FAIL, value=0.0, message=message, **fields)


def not_ready_reason(client: TritonClient, name: str, number: int) -> str:
    """Triton's own words for why a version is not ready.

    The repository index gives state and reason, but only for models of the
    server's repository folder; a model loaded by file override is not listed
    there, and then the metadata call's error says it ("has no available versions").
    """
    try:
        for entry in client.repository_index():
            if entry.get("name") == name and str(entry.get("version", "")) == str(number):
                state, reason = entry.get("state", ""), entry.get("reason", "")
                if state or reason:
                    return f"{state or 'state unknown'}: {reason or 'no reason given'}"
    except TritonError:
        pass  # the metadata call below speaks for the server
    try:
        metadata = client.model_metadata(name, number)
    except TritonError as exc:
        return exc.detail
    return f"Triton reports the version but not ready (versions served: {metadata.get('versions', [])})"
