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
    name, number = triton_name(deployment)
    try:
        metadata = client.model_metadata(name, number)
    except TritonError as exc:
        return Result(CheckKind.SCHEMA, Status.FAIL, message=str(exc), **deployment_fields(deployment))
    return compare_schema(deployment, client.server_name, metadata)


def compare_schema(deployment: Deployment, server_name: str, metadata: dict) -> Result:
    """The schema result for metadata Triton gave for this deployment's version."""
    version = deployment.version
    fields = deployment_fields(deployment)
    problems = metadata_differences(
        metadata, version.max_batch_size, [t.as_dict() for t in version.inputs], [t.as_dict() for t in version.outputs]
    )
    if not problems:
        return Result(CheckKind.SCHEMA, Status.OK, value=0.0, **fields)
    message = f"served metadata of {version} on {server_name!r} disagrees with its registered schema: " + (
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
