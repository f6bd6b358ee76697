"""Every version is its own Triton model (`<model>__v<n>`): versions whose schema and
batching differ are served side by side on the real session Triton, each loads and
unloads on its own, and Triton models that are not ModelHub's are left alone."""

import json

import numpy as np
import pytest
import tritonclient.http as triton_http

from modelhub.audit.models import AuditEvent
from modelhub.serving.models import (
    Deployment,
    InferenceServer,
    ObservedState,
    parse_triton_model_name,
    triton_model_name,
)
from modelhub.serving.reconciler import reconcile_server
from modelhub.serving.services import request_deploy, request_undeploy
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip
from tests.serving.test_deploy import infer, register

# Version 2 of a model whose first version is the doubler: other input and output
# names, fixed dims and batching on, so its Triton config differs in every way.
ADDER_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x + 10).astype(np.float32))]))
        return responses
"""
ADDER_MANIFEST = {
    "backend": "python",
    "max_batch_size": 4,
    "inputs": [{"name": "X", "datatype": "FP32", "dims": [4]}],
    "outputs": [{"name": "Y", "datatype": "FP32", "dims": [4]}],
}


def register_differing_versions(actor, tmp_path, model: str):
    """v1: the doubler (INPUT [-1] -> OUTPUT, no batching); v2: X [4] -> Y = X + 10, max_batch_size 4."""
    doubler = make_zip(tmp_path / "doubler.zip", {"1/model.py": doubler_source(2)})
    adder = make_zip(tmp_path / "adder.zip", {"1/model.py": ADDER_MODEL_PY})
    v1 = register(actor, doubler, json.loads(json.dumps(DOUBLER_MANIFEST)), model)
    v2 = register(actor, adder, json.loads(json.dumps(ADDER_MANIFEST)), model)
    return v1, v2


def add_ten(triton, model: str, version: int, rows: list[list[float]]) -> list[list[float]]:
    """Ask Triton directly for the adder version, under its own Triton name, with a batch."""
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        data = np.array(rows, dtype=np.float32)
        tensor = triton_http.InferInput("X", list(data.shape), "FP32")
        tensor.set_data_from_numpy(data)
        result = client.infer(triton_model_name(model, version), [tensor], model_version=str(version))
        return result.as_numpy("Y").tolist()
    finally:
        client.close()


def tritonclient(triton) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))


def test_triton_names_parse_back_to_exactly_one_model_and_version():
    assert triton_model_name("digits", 12) == "digits__v12"
    # A model name may itself hold "__v<digits>": the last one is the version.
    for model, version in [("digits", 1), ("a__v1", 2), ("x-y_z", 30), ("m__v", 4), ("0", 7)]:
        assert parse_triton_model_name(triton_model_name(model, version)) == (model, version)
    for foreign in ["digits", "digits__v", "digits__v0", "digits__v01", "digits__v1x", "Digits__v1", "__v1", "a_v1"]:
        assert parse_triton_model_name(foreign) is None, foreign


@pytest.mark.django_db(transaction=True)
@pytest.mark.triton
def test_two_versions_with_different_schemas_and_batching_are_served_at_once(triton, actor, tmp_path):
    server = InferenceServer.objects.create(name="sides", base_url=triton.http_url)
    v1, v2 = register_differing_versions(actor, tmp_path, "two-schemas")

    [first] = request_deploy(v1, [server], actor)  # eager Celery: reconciles on commit
    [second] = request_deploy(v2, [server], actor)

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.observed == second.observed == ObservedState.LOADED, (first.last_error, second.last_error)
    assert infer(triton, "two-schemas", 1, [1.0, 2.0]) == [2.0, 4.0]
    assert add_ten(triton, "two-schemas", 2, [[1, 2, 3, 4], [0, 0, 0, 0]]) == [[11, 12, 13, 14], [10, 10, 10, 10]]
    client = tritonclient(triton)
    try:
        assert client.get_model_config("two-schemas__v1")["max_batch_size"] == 0
        assert client.get_model_config("two-schemas__v2")["max_batch_size"] == 4
        assert client.get_model_metadata("two-schemas__v1")["versions"] == ["1"]  # only its own version
        assert client.get_model_metadata("two-schemas__v2")["versions"] == ["2"]
    finally:
        client.close()
    # v2's load was a load of v2 alone: v1 was not sent (or reloaded) with it.
    loads = AuditEvent.objects.filter(action="triton.load", model_name="two-schemas").order_by("pk")
    assert [(e.details["versions"], e.details["triton_model"]) for e in loads] == [
        ([1], "two-schemas__v1"),
        ([2], "two-schemas__v2"),
    ]
    assert reconcile_server(server.pk).changed is False  # idempotent

    [undeployed] = request_undeploy(v1, [server], actor)

    undeployed.refresh_from_db()
    assert undeployed.observed == ObservedState.UNLOADED
    with pytest.raises(Exception, match="unavailable|not found|unknown"):
        infer(triton, "two-schemas", 1, [1.0])
    assert add_ten(triton, "two-schemas", 2, [[1, 1, 1, 1]]) == [[11, 11, 11, 11]]  # v2 kept serving
    assert Deployment.objects.get(pk=second.pk).observed == ObservedState.LOADED
    unloads = AuditEvent.objects.filter(action="triton.unload", model_name="two-schemas")
    assert [e.details["triton_model"] for e in unloads] == ["two-schemas__v1"]

    request_undeploy(v2, [server], actor)
    client = tritonclient(triton)
    try:
        assert not client.is_model_ready("two-schemas__v2")
    finally:
        client.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.triton
def test_triton_models_that_are_not_modelhubs_are_left_alone(triton, actor, doubler_zip, manifest):
    server = InferenceServer.objects.create(name="beside-strangers", base_url=triton.http_url)
    version = register(actor, doubler_zip(2), manifest, "among-strangers")
    client = tritonclient(triton)
    config = {
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
    }
    # Loaded by someone else: one under a name of no ModelHub form, one under the registered
    # model's bare name (ModelHub never loads under it).
    strangers = ["hand-made", "among-strangers"]
    for name in strangers:
        client.load_model(
            name,
            config=json.dumps(config | {"name": name}),
            files={"file:1/model.py": doubler_source(3).encode()},
        )
    try:
        [deployment] = request_deploy(version, [server], actor)
        deployment.refresh_from_db()
        assert deployment.observed == ObservedState.LOADED, deployment.last_error
        request_undeploy(version, [server], actor)
        reconcile_server(server.pk)

        assert Deployment.objects.get(pk=deployment.pk).observed == ObservedState.UNLOADED
        assert not client.is_model_ready("among-strangers__v1")
        for name in strangers:
            assert client.is_model_ready(name), f"{name} was touched"
        assert not AuditEvent.objects.filter(action="triton.unload", details__triton_model__in=strangers).exists()
    finally:
        for name in strangers:
            client.unload_model(name)
        client.close()


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_a_stale_model_under_a_versions_triton_name_is_replaced_by_the_registered_one(
    triton, actor, doubler_zip, manifest
):
    """Left by an earlier install (or by hand) under m__v1 with another schema: deploying m v1
    loads the registered version over it rather than failing it for Triton's stale model."""
    server = InferenceServer.objects.create(name="stale-left", base_url=triton.http_url)
    version = register(actor, doubler_zip(2), manifest, "stale-left")
    name = triton_model_name("stale-left", 1)
    stale = {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "OTHER", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [-1]}],
        "version_policy": {"specific": {"versions": [1]}},
    }
    client = tritonclient(triton)
    client.load_model(
        name,
        config=json.dumps(stale),
        files={"file:1/model.py": doubler_source(3).replace('"INPUT"', '"OTHER"').encode()},
    )
    try:
        [deployment] = request_deploy(version, [server], actor)
        deployment.refresh_from_db()
        assert deployment.observed == ObservedState.LOADED, deployment.last_error
        assert infer(triton, "stale-left", 1, [1.0, 2.0]) == [2.0, 4.0]  # the registered doubler, not the stale x3
    finally:
        client.unload_model(name)
        client.close()
