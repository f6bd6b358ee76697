"""Deploying to a real tritonserver: the reconciler makes Triton match desired state."""

import numpy as np
import pytest
import tritonclient.http as triton_http

from modelhub.registry.models import Model
from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving.models import (
    Deployment,
    DeploymentTransition,
    InferenceServer,
    ObservedState,
    triton_model_name,
)
from modelhub.serving.reconciler import reconcile_server
from modelhub.serving.services import request_deploy, request_undeploy
from tests.conftest import BROKEN_MODEL_PY, EXTRA_OUTPUT_MODEL_PY, make_zip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]


def register_server(triton, name="local") -> InferenceServer:
    return InferenceServer.objects.create(name=name, base_url=triton.http_url, metrics_url=triton.metrics_url)


def register(actor, artifact, manifest, model_name):
    model = get_or_create_model(model_name, actor)
    return register_version(model, artifact, manifest, actor).version


def infer(triton, model: str, version: int, values: list[float]) -> list[float]:
    """Version `version` of registered model `model`, asked of Triton directly (its own Triton name)."""
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        data = np.array(values, dtype=np.float32)
        tensor = triton_http.InferInput("INPUT", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        result = client.infer(triton_model_name(model, version), [tensor], model_version=str(version))
        return result.as_numpy("OUTPUT").tolist()
    finally:
        client.close()


def test_deploy_loads_version_through_file_override_and_it_answers(triton, actor, doubler_zip, manifest):
    server = register_server(triton)
    version = register(actor, doubler_zip(2), manifest, "double-one")

    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciles on commit

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    assert infer(triton, "double-one", version.number, [1, 2, 3]) == [2, 4, 6]
    server.refresh_from_db()
    assert server.live and server.ready and server.triton_version == "2.51.0"
    assert "model_repository" in server.extensions
    assert list(deployment.transitions.values_list("from_state", "to_state")) == [("pending", "loaded")]


def test_two_versions_of_one_model_are_served_at_once_and_unload_leaves_the_other(triton, actor, doubler_zip, manifest):
    server = register_server(triton)
    v1 = register(actor, doubler_zip(2, "a.zip"), manifest, "two-versions")
    v2 = register(actor, doubler_zip(3, "b.zip"), manifest, "two-versions")

    request_deploy(v1, [server], actor)
    request_deploy(v2, [server], actor)

    assert infer(triton, "two-versions", 1, [1.0]) == [2.0]
    assert infer(triton, "two-versions", 2, [1.0]) == [3.0]

    [undeployed] = request_undeploy(v1, [server], actor)
    undeployed.refresh_from_db()
    assert undeployed.observed == ObservedState.UNLOADED
    assert infer(triton, "two-versions", 2, [2.0]) == [6.0]
    with pytest.raises(Exception, match="unavailable|not found|unknown"):
        infer(triton, "two-versions", 1, [1.0])

    request_undeploy(v2, [server], actor)
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    assert not client.is_model_ready(triton_model_name("two-versions", 2))
    assert not client.is_model_ready(triton_model_name("two-versions", 1))
    client.close()


def test_reconciling_twice_or_concurrently_loads_once(triton, actor, doubler_zip, manifest):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    server = register_server(triton)
    version = register(actor, doubler_zip(5), manifest, "idempotent")
    # Desired state written directly (no request, so nothing is enqueued): we drive the reconciler.
    deployment = Deployment.objects.create(version=version, server=server)

    def run():
        try:
            return reconcile_server(server.pk)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: run(), range(2)))
    reports.append(reconcile_server(server.pk))

    assert sum(len(r.loads) for r in reports) == 1, reports
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED
    assert DeploymentTransition.objects.filter(deployment=deployment).count() == 1


def test_served_metadata_that_disagrees_with_schema_fails_the_deployment_and_unloads_it(
    triton, actor, manifest, tmp_path
):
    server = register_server(triton)
    artifact = make_zip(tmp_path / "extra.zip", {"1/model.py": EXTRA_OUTPUT_MODEL_PY})
    version = register(actor, artifact, manifest, "surprise")

    [deployment] = request_deploy(version, [server], actor)

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.FAILED
    assert "disagrees with its registered schema" in deployment.last_error
    assert "'SURPRISE' is not in the registered schema" in deployment.last_error
    assert deployment.retry_at is not None
    # Not left serving behind "failed".
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    assert not client.is_model_ready(triton_model_name("surprise", version.number))
    client.close()


def test_failed_load_stores_tritons_error_and_keeps_other_versions_serving(
    triton, actor, doubler_zip, manifest, tmp_path
):
    server = register_server(triton)
    good = register(actor, doubler_zip(2), manifest, "half-broken")
    broken = register(
        actor, make_zip(tmp_path / "broken.zip", {"1/model.py": BROKEN_MODEL_PY}), manifest, "half-broken"
    )

    request_deploy(good, [server], actor)
    [failed] = request_deploy(broken, [server], actor)

    failed.refresh_from_db()
    assert failed.observed == ObservedState.FAILED
    assert "SyntaxError" in failed.last_error
    assert "half-broken" in failed.last_error and "load" in failed.last_error
    assert failed.retry_at is not None  # backs off instead of hammering Triton
    good_deployment = good.deployments.get()
    assert good_deployment.observed == ObservedState.LOADED
    assert infer(triton, "half-broken", good.number, [4.0]) == [8.0]

    # The next scheduled pass does not retry before the back-off ends.
    assert reconcile_server(server.pk).loads == []


def test_deploy_to_a_server_that_is_down_records_which_server_and_why(actor, doubler_zip, manifest):
    from devtools.local_triton import free_port

    server = InferenceServer.objects.create(name="gone", base_url=f"http://127.0.0.1:{free_port()}")
    version = register(actor, doubler_zip(2), manifest, "nowhere")

    [deployment] = request_deploy(version, [server], actor)

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.FAILED
    assert "Triton server 'gone'" in deployment.last_error
    assert "refused" in deployment.last_error.lower()
    server.refresh_from_db()
    assert server.live is False and "gone" in server.last_error


def test_triton_killed_and_restarted_gets_its_models_back_on_the_next_reconcile(
    triton_factory, actor, doubler_zip, manifest
):
    own = triton_factory()
    server = register_server(own, name="crashy")
    v1 = register(actor, doubler_zip(2, "1.zip"), manifest, "phoenix")
    v2 = register(actor, doubler_zip(7, "2.zip"), manifest, "phoenix")
    request_deploy(v1, [server], actor)
    request_deploy(v2, [server], actor)
    assert infer(own, "phoenix", 2, [1.0]) == [7.0]

    own.kill()
    report = reconcile_server(server.pk)
    assert not report.reachable
    assert all(d.observed == ObservedState.FAILED for d in server.deployments.all())

    own.restart()
    report = reconcile_server(server.pk)

    assert report.loads == ["phoenix: [1]", "phoenix: [2]"]  # each version its own Triton model
    assert {d.observed for d in server.deployments.all()} == {ObservedState.LOADED}
    assert infer(own, "phoenix", 1, [1.0]) == [2.0]
    assert infer(own, "phoenix", 2, [1.0]) == [7.0]
    assert Model.objects.filter(name="phoenix").exists()


def tiny_onnx(path, factor: float = 2.0):
    """y = x * factor, as a real ONNX graph with a variable batch dimension."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[helper.make_tensor("k", TensorProto.FLOAT, [1], [factor])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_bare_onnx_version_runs_in_the_python_runner_on_a_server_without_onnxruntime(triton, actor, tmp_path):
    server = InferenceServer.objects.create(name="python-only", base_url=triton.http_url, backends=["python"])
    version = register(actor, tiny_onnx(tmp_path / "model.onnx"), {"max_batch_size": 8}, "bare-onnx")
    assert version.platform == "onnxruntime_onnx"  # registered for servers with the real backend

    [deployment] = request_deploy(version, [server], actor)

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    data = np.array([[1, 2, 3]], dtype=np.float32)
    tensor = triton_http.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(data)
    assert client.infer(triton_model_name("bare-onnx", 1), [tensor]).as_numpy("y").tolist() == [[2, 4, 6]]
    client.close()


# Versions whose schemas differ are served side by side: tests/serving/test_per_version_names.py.
