"""Which Triton backend a version needs, and whether a server can serve it.

Triton does not list the backends it has, and a load for a missing one fails
only on the server ("unable to find backend library"). So a server declares
its backends (InferenceServer.backends; empty means unknown) and a deploy is
checked against them when it is requested. A bare ONNX version can still run
on a server with the python backend alone, inside ModelHub's ONNX runner.
"""

from modelhub.registry.manifest import PLATFORM_BACKENDS
from modelhub.registry.models import ModelVersion
from modelhub.serving.models import InferenceServer

ONNX_PLATFORM = "onnxruntime_onnx"


class BackendMissing(ValueError):
    """Servers that lack the backend a version needs. `errors` maps "server" to the reasons."""

    def __init__(self, reasons: list[str]):
        self.errors = {"server": "; ".join(reasons)}
        super().__init__(self.errors["server"])


def backend_of(version: ModelVersion) -> str:
    """The backend that serves `version`; "" when it needs none (an ensemble)."""
    return version.backend or PLATFORM_BACKENDS.get(version.platform, version.platform)


def needs_onnx_runner(server: InferenceServer, version: ModelVersion) -> bool:
    """A bare ONNX version sent to a server known to lack the onnxruntime
    backend runs there inside ModelHub's python-backend runner instead."""
    return (
        version.platform == ONNX_PLATFORM
        and bool(server.backends)
        and "onnxruntime" not in server.backends
        and "python" in server.backends
    )


def cannot_serve(server: InferenceServer, version: ModelVersion) -> str:
    """Why `server` cannot serve `version`, or "" when it can (or may: backends unknown)."""
    backend = backend_of(version)
    if not server.backends or not backend or backend in server.backends or needs_onnx_runner(server, version):
        return ""
    needs = f"backend {backend!r}" + (f" (platform {version.platform!r})" if version.platform else "")
    runner = " or 'python' for ModelHub's ONNX runner" if version.platform == ONNX_PLATFORM else ""
    return f"server {server.name!r} declares backends {', '.join(server.backends)}; {version} needs {needs}{runner}"


def check_servable(version: ModelVersion, servers: list[InferenceServer]) -> None:
    """Raise BackendMissing naming every server of `servers` that cannot serve `version`."""
    reasons = [reason for server in servers if (reason := cannot_serve(server, version))]
    if reasons:
        raise BackendMissing(reasons)
