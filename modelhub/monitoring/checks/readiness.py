"""Model readiness: is the deployed version ready on its server, and if not, Triton's reason."""

from modelhub.monitoring.checks._target import deployment_fields, triton_name
from modelhub.monitoring.checks.schema import check_schema, compare_schema
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result
from modelhub.serving.models import Deployment
from modelhub.serving.triton_client import TritonClient, TritonError, TritonUnavailable


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


def check_ready_and_schema(client: TritonClient, deployment: Deployment) -> list[Result]:
    """Readiness and schema conformance in one Triton call, for the scheduled pass.

    Triton answers a version's metadata only while that version is ready ("… is
    not at ready state" otherwise), so an answer means ready and is also what the
    schema is compared with: half the calls of a pass over many deployments.
    Anything else takes the long way, with the same results as the two checks.
    """
    name, number = triton_name(deployment)
    fields = deployment_fields(deployment)
    try:
        metadata = client.model_metadata(name, number)
    except TritonUnavailable as exc:
        return [Result(CheckKind.MODEL_READY, Status.FAIL, value=0.0, message=str(exc), **fields)]
    except TritonError:
        ready = check_ready(client, deployment)  # not ready: the readiness call and Triton's reason
        return [ready] if ready.status != Status.OK else [ready, check_schema(client, deployment)]
    ready = Result(CheckKind.MODEL_READY, Status.OK, value=1.0, **fields)
    return [ready, compare_schema(deployment, client.server_name, metadata)]
