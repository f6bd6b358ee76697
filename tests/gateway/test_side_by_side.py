"""Two versions whose schemas and batching differ, deployed by the reconciler on the real
session Triton, each under its own Triton name: a stock tritonclient asks the gateway
for the model's own name, by pin and by alias, and never sees the Triton names."""

import json

import numpy as np
import pytest
import tritonclient.http as triton_http

from modelhub.gateway.naming import client_facing, with_body
from modelhub.registry.services import move_alias
from modelhub.serving.models import InferenceServer, ObservedState
from modelhub.serving.services import request_deploy
from tests.gateway.conftest import ACTOR
from tests.serving.test_per_version_names import register_differing_versions

MODEL = "gw-sides"


def doubled(client, values: list[float], version: str = "") -> list[float]:
    data = np.array(values, dtype=np.float32)
    tensor = triton_http.InferInput("INPUT", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer(MODEL, [tensor], model_version=version).as_numpy("OUTPUT").tolist()


def plus_ten(client, rows: list[list[float]], version: str = "") -> list[list[float]]:
    data = np.array(rows, dtype=np.float32)
    tensor = triton_http.InferInput("X", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer(MODEL, [tensor], model_version=version).as_numpy("Y").tolist()


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_two_versions_with_different_schemas_served_at_once_through_the_gateway(triton, gateway_factory, tmp_path):
    server = InferenceServer.objects.create(name="gw-sides-triton", base_url=triton.http_url)
    v1, v2 = register_differing_versions(ACTOR, tmp_path, MODEL)
    for version in (v1, v2):
        [deployment] = request_deploy(version, [server], ACTOR)  # eager Celery: the reconciler loads it
        deployment.refresh_from_db()
        assert deployment.observed == ObservedState.LOADED, deployment.last_error
    move_alias(v1.model, "production", v1, ACTOR)
    gateway = gateway_factory(auth_open=True)
    client = triton_http.InferenceServerClient(gateway.address)
    try:
        # By pin: each version with its own schema and batching, at the same time.
        assert doubled(client, [1, 2, 3], version="1") == [2, 4, 6]
        assert plus_ten(client, [[1, 2, 3, 4], [5, 5, 5, 5]], version="2") == [[11, 12, 13, 14], [15, 15, 15, 15]]
        assert client.get_model_metadata(MODEL, model_version="2")["inputs"][0]["name"] == "X"
        assert client.get_model_config(MODEL, model_version="2")["max_batch_size"] == 4
        assert client.get_model_config(MODEL, model_version="1")["max_batch_size"] == 0
        assert client.is_model_ready(MODEL, "1") and client.is_model_ready(MODEL, "2")

        # By alias: production -> v1, then moved to v2, whose schema the client then uses.
        assert doubled(client, [4]) == [8]
        move_alias(v1.model, "production", v2, ACTOR)
        gateway.wait_for(lambda: client.get_model_config(MODEL)["max_batch_size"] == 4, what="the alias move")
        assert plus_ten(client, [[0, 1, 2, 3]]) == [[10, 11, 12, 13]]
        assert doubled(client, [5], version="1") == [10]  # v1 still answers, pinned
    finally:
        client.close()


def test_metadata_and_config_answers_carry_the_clients_model_name():
    metadata = json.dumps({"name": "gw-sides__v2", "versions": ["2"], "inputs": []}).encode()

    assert json.loads(client_facing(metadata, "gw-sides__v2", "gw-sides")) == {
        "name": "gw-sides",
        "versions": ["2"],
        "inputs": [],
    }
    # Anything else passes as Triton sent it.
    error = b'{"error":"Request for unknown model: \'gw-sides__v2\' is not found"}'
    assert client_facing(error, "gw-sides__v2", "gw-sides") == error
    assert client_facing(b"\x00binary", "gw-sides__v2", "gw-sides") == b"\x00binary"
    stranger = b'{"name":"gw-sides__v2"}'
    assert client_facing(stranger, "gw-sides", "gw-sides") == stranger  # not a ModelHub Triton name


def test_a_renamed_answer_gets_its_new_length():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 24"
    body = client_facing(b'{"name":"gw-sides__v2"}', "gw-sides__v2", "gw-sides")

    assert with_body(head, body) == (
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{"name":"gw-sides"}'
    )
