"""Datatypes in Triton's two vocabularies, and tensors of one value per sample.

Every datatype goes through the config a load sends, Triton's own protobuf,
the config.pbtxt reader and, on a real tritonserver, the served metadata.
"""

import numpy as np
import pytest
import tritonclient.utils as triton_utils
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from modelhub.registry.datatypes import DATATYPES, TRITON_DATATYPES, from_config, parse_datatype, to_config
from modelhub.registry.schema import SchemaError, validate_schema
from modelhub.registry.triton_config import (
    ConfigError,
    build_model_config,
    metadata_differences,
    parse_config_pbtxt,
    schema_from_config,
)

ALL = [d.name for d in DATATYPES]


def config_with(inputs, outputs, max_batch_size=0) -> dict:
    return build_model_config(
        "m",
        backend="python",
        platform="",
        max_batch_size=max_batch_size,
        inputs=inputs,
        outputs=outputs,
        extra={},
        versions=[1],
    )


def tensor(name, datatype, dims=(-1,)):
    return {"name": name, "datatype": datatype, "dims": list(dims), "labels": None}


def test_the_table_covers_every_enum_of_tritons_model_config_once():
    enums = set(model_config_pb2.DataType.keys()) - {"TYPE_INVALID"}
    assert sorted(d.config for d in DATATYPES) == sorted(enums)
    assert len(set(TRITON_DATATYPES)) == len(TRITON_DATATYPES) == len(enums)
    assert to_config("BYTES") == "TYPE_STRING" and from_config("TYPE_STRING") == "BYTES"
    assert from_config("TYPE_INVALID") == "TYPE_INVALID"  # left for validation to name


@pytest.mark.parametrize("name", ALL)
def test_each_datatype_round_trips_through_the_config_tritons_protobuf_and_config_pbtxt(name):
    config = config_with([tensor("IN", name)], [tensor("OUT", name, [2, -1])])
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())  # Triton's own schema
    assert model_config_pb2.DataType.Name(message.input[0].data_type) == to_config(name)
    assert model_config_pb2.DataType.Name(message.output[0].data_type) == to_config(name)

    pbtxt = text_format.MessageToString(message)
    back = schema_from_config(parse_config_pbtxt(pbtxt))
    assert back["inputs"] == [tensor("IN", name)]
    assert back["outputs"] == [tensor("OUT", name, [2, -1])]

    # The names Triton's metadata and clients use are the table's names.
    assert triton_utils.np_to_triton_dtype(triton_utils.triton_to_np_dtype(name)) == name
    metadata = {
        "inputs": [{"name": "IN", "datatype": name, "shape": [-1]}],
        "outputs": [{"name": "OUT", "datatype": name, "shape": [2, -1]}],
    }
    assert metadata_differences(metadata, 0, [tensor("IN", name)], [tensor("OUT", name, [2, -1])]) == []


def test_a_config_pbtxt_with_type_string_is_read_as_bytes():
    schema = schema_from_config(
        parse_config_pbtxt('input [{ name: "text" data_type: TYPE_STRING dims: [ -1 ] }]\nbackend: "python"')
    )
    assert schema["inputs"] == [tensor("text", "BYTES")]


@pytest.mark.parametrize(
    ("given", "stored"), [("BYTES", "BYTES"), ("TYPE_STRING", "BYTES"), ("fp32", "FP32"), ("TYPE_BF16", "BF16")]
)
def test_a_manifest_may_name_a_datatype_in_either_vocabulary(given, stored):
    inputs, _ = validate_schema([tensor("a", given)], [tensor("b", "FP32")])
    assert inputs[0]["datatype"] == stored


@pytest.mark.parametrize("given", ["TYPE_BYTES", "STRINGS", "FLOAT", 7, None])
def test_an_unknown_datatype_is_refused_naming_the_field(given):
    assert parse_datatype(given) is None
    with pytest.raises(SchemaError) as err:
        validate_schema([tensor("a", given)], [tensor("b", "FP32")])
    assert "unknown datatype" in err.value.errors["inputs[0].datatype"]


def test_metadata_with_another_datatype_name_is_a_difference():
    metadata = {"inputs": [{"name": "IN", "datatype": "STRING", "shape": [-1]}], "outputs": []}
    assert metadata_differences(metadata, 0, [tensor("IN", "BYTES")], []) == [
        "input 'IN' datatype: registered 'BYTES', found 'STRING'"
    ]


# ---------------------------------------------------------------- one value per sample


def test_one_value_per_sample_is_served_as_dims_1_with_a_scalar_reshape_and_read_back():
    config = config_with(
        [tensor("x", "FP32", [4]), tensor("w", "FP32", [])], [tensor("label", "INT64", [])], max_batch_size=16
    )
    assert config["input"][0] == {"name": "x", "data_type": "TYPE_FP32", "dims": [4]}
    assert config["input"][1] == {"name": "w", "data_type": "TYPE_FP32", "dims": [1], "reshape": {"shape": []}}
    assert config["output"][0] == {"name": "label", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    assert message.output[0].HasField("reshape") and list(message.output[0].reshape.shape) == []

    back = schema_from_config(parse_config_pbtxt(text_format.MessageToString(message)))
    assert [t["dims"] for t in back["inputs"]] == [[4], []]
    assert [t["dims"] for t in back["outputs"]] == [[]]


def test_a_scalar_without_batching_is_served_as_dims_1_since_triton_has_no_scalars_there():
    config = config_with([tensor("a", "FP32", [])], [tensor("b", "BYTES", [])], max_batch_size=0)
    assert config["input"] == [{"name": "a", "data_type": "TYPE_FP32", "dims": [1]}]
    assert config["output"] == [{"name": "b", "data_type": "TYPE_STRING", "dims": [1]}]


@pytest.mark.parametrize("max_batch_size", [0, 16])
def test_served_metadata_of_one_value_per_sample_agrees_with_dims_of_nothing(max_batch_size):
    # Triton's metadata shows such a tensor with dims [1] (after the batch dimension, if any).
    batch = [-1] if max_batch_size else []
    metadata = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [*batch, 4]},
            {"name": "w", "datatype": "FP32", "shape": [*batch, 1]},
        ],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [*batch, 1]}],
    }
    registered_inputs = [tensor("x", "FP32", [4]), tensor("w", "FP32", [])]
    assert metadata_differences(metadata, max_batch_size, registered_inputs, [tensor("label", "INT64", [])]) == []
    assert metadata_differences(metadata, max_batch_size, registered_inputs, [tensor("label", "INT64", [2])]) == [
        "output 'label' dims: registered [2], found [1]"
    ]


def test_other_reshapes_in_a_config_pbtxt_are_refused_naming_the_tensor():
    text = 'backend: "python"\noutput [{ name: "grid" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } }]'
    with pytest.raises(ConfigError, match=r"output 'grid': reshape from \[4\] to \[2, 2\] is not supported"):
        schema_from_config(parse_config_pbtxt(text))


def _bare_onnx(path, input_shape, output_shape):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
    )
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.django_db
def test_a_bare_onnx_tensor_of_shape_n_registers_as_dims_of_nothing(actor, tmp_path):
    from modelhub.registry.services import get_or_create_model, register_version

    artifact = _bare_onnx(tmp_path / "model.onnx", ["N"], ["N"])
    version = register_version(
        get_or_create_model("per-sample", actor), artifact, {"max_batch_size": 16}, actor
    ).version
    assert [t.as_dict()["dims"] for t in [*version.inputs, *version.outputs]] == [[], []]
    config = config_with([t.as_dict() for t in version.inputs], [t.as_dict() for t in version.outputs], 16)
    assert config["input"][0]["dims"] == [1] and config["input"][0]["reshape"] == {"shape": []}


@pytest.mark.django_db
def test_batching_a_bare_onnx_scalar_is_refused_naming_the_tensor(actor, tmp_path):
    from modelhub.registry.manifest import ManifestError
    from modelhub.registry.services import get_or_create_model, register_version

    artifact = _bare_onnx(tmp_path / "model.onnx", [], ["N"])
    with pytest.raises(ManifestError) as err:
        register_version(get_or_create_model("scalar", actor), artifact, {"max_batch_size": 16}, actor)
    assert err.value.errors["manifest.max_batch_size"] == (
        "16 needs a variable first (batch) dimension on every tensor of the ONNX graph, and input 'x' has shape []"
    )


# ---------------------------------------------------------------- on a real tritonserver


# Answers every out_<type> with its in_<type> (one row of each batch item), and
# label with zeros: the reconciler's smoke inference after the load checks the
# answer against the schema too. BF16 has no numpy type: it goes through DLPack.
ECHO_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json

        config = json.loads(args["model_config"])
        self.names = [o["name"].removeprefix("out_") for o in config["output"] if o["name"].startswith("out_")]

    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = []
            for name in self.names:
                given = pb_utils.get_input_tensor_by_name(request, "in_" + name)
                if name == "bf16":
                    outputs.append(pb_utils.Tensor.from_dlpack("out_bf16", given.to_dlpack()))
                else:
                    outputs.append(pb_utils.Tensor("out_" + name, given.as_numpy()))
            scalar = pb_utils.get_input_tensor_by_name(request, "scalar").as_numpy()
            outputs.append(pb_utils.Tensor("label", np.zeros(scalar.shape, dtype=np.float16)))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
"""


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_every_datatype_deploys_and_tritons_metadata_agrees_with_the_schema(triton, actor, tmp_path):
    from modelhub.registry.services import get_or_create_model, register_version
    from modelhub.serving.models import InferenceServer, ObservedState
    from modelhub.serving.services import request_deploy
    from tests.conftest import make_zip

    server = InferenceServer.objects.create(name="local", base_url=triton.http_url)
    manifest = {
        "backend": "python",
        "max_batch_size": 4,
        "inputs": [tensor(f"in_{name.lower()}", name, [2]) for name in ALL] + [tensor("scalar", "BYTES", [])],
        "outputs": [tensor(f"out_{name.lower()}", name, [-1]) for name in ALL] + [tensor("label", "FP16", [])],
    }
    artifact = make_zip(tmp_path / "all.zip", {"1/model.py": ECHO_MODEL_PY})
    version = register_version(get_or_create_model("all-datatypes", actor), artifact, manifest, actor).version

    [deployment] = request_deploy(version, [server], actor)

    deployment.refresh_from_db()
    # LOADED: Triton took the generated config, its metadata matched the schema, and it answered.
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata("all-datatypes__v1")  # version 1's own Triton name
    finally:
        client.close()
    served = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"] + metadata["outputs"]}
    for name in ALL:
        assert served[f"in_{name.lower()}"] == (name, [-1, 2])
        assert served[f"out_{name.lower()}"] == (name, [-1, -1])
    assert served["scalar"] == ("BYTES", [-1, 1]) and served["label"] == ("FP16", [-1, 1])
    assert np.dtype(triton_utils.triton_to_np_dtype("FP16")) == np.float16
