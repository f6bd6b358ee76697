"""What every check of a deployment puts on its Result."""

from modelhub.serving.models import Deployment, triton_model_name


def deployment_fields(deployment: Deployment) -> dict:
    return {"deployment_id": deployment.pk, "server_id": deployment.server_id, "version_id": deployment.version_id}


def triton_name(deployment: Deployment) -> tuple[str, int]:
    """The Triton model name and version number a deployment is served as."""
    version = deployment.version
    return triton_model_name(version.model.name, version.number), version.number
