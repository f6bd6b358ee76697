"""Schema conformance: Triton's served metadata against the registered schema."""

from modelhub.monitoring.checks._target import deployment_fields, triton_name
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result
from modelhub.registry.triton_config import metadata_differences
from modelhub.serving.models import Deployment
from modelhub.serving.triton_client import TritonClient, TritonError


def check_schema(client: TritonClient, deployment: Deployment) -> Result:
    """ok when the served inputs and outputs match the registered ones; fail
    naming each tensor and what differs (datatype, dims, missing, extra)."""
    version = deployment.version
    name, number = triton_name(deployment)
    fields = deployment_fields(deployment)
    try:
        metadata = client.model_metadata(name, number)
    except TritonError as exc:
        return Result(CheckKind.SCHEMA, Status.FAIL, message=str(exc), **fields)
    problems = metadata_differences(
        metadata, version.max_batch_size, [t.as_dict() for t in version.inputs], [t.as_dict() for t in version.outputs]
    )
    if not problems:
        return Result(CheckKind.SCHEMA, Status.OK, value=0.0, **fields)
    message = f"served metadata of {version} on {client.server_name!r} disagrees with its registered schema: " + (
        "; ".join(problems)
    )
    return Result(
        CheckKind.SCHEMA,
        Status.FAIL,
        value=float(len(problems)),
        message=message,
        details={"problems": problems},
        **fields,
    )
