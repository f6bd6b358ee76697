"""String tensors and bare ONNX files, end to end on a real tritonserver.

Each model is uploaded through the REST API, deployed through it to the
session's Triton, and asked by a stock tritonclient.http client. Bare ONNX
files run in ModelHub's python-backend runner: the local Triton has only the
python backend, and the server is registered as such.
"""

import numpy as np
import onnx
import pytest
import tritonclient.http as triton_http
from google.protobuf import json_format, text_format
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_diabetes, load_digits, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from tritonclient.grpc import model_config_pb2

from modelhub.registry.triton_config import parse_config_pbtxt, schema_from_config
from modelhub.serving.models import triton_model_name

# The API fixtures are imported from tests/api/conftest.py; naming them as
# arguments redefines the imported names, which is how pytest fixtures work.
# ruff: noqa: F811
from tests.api.conftest import (  # noqa: F401 (fixtures)
    admin_api,
    ci_user,
    client_with,
    make_token,
    make_user,
    upload,
)
from tests.conftest import make_zip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

# Echoes each string upper-cased with the count and sum of a variable-length
# FP32 input: real work on both kinds of tensor.
STRINGS_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "VALUES").as_numpy()
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            suffix = f"|{values.size}|{values.sum():g}"
            reply = np.array([t.decode("utf-8").upper().encode("utf-8") + suffix.encode() for t in texts], dtype=object)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("REPLY", reply)]))
        return responses
"""

STRINGS_MANIFEST = {
    "backend": "python",
    "max_batch_size": 0,
    "inputs": [
        {"name": "VALUES", "datatype": "FP32", "dims": [-1]},
        {"name": "TEXT", "datatype": "BYTES", "dims": [-1]},
    ],
    "outputs": [{"name": "REPLY", "datatype": "BYTES", "dims": [-1]}],
}


@pytest.fixture(autouse=True)
def roles(transactional_db):
    """The roles a data migration creates, which an earlier transactional test's flush removed.

    (serialized_rollback would restore them, but clashes with the content types
    that a flush re-creates.)
    """
    from django.contrib.auth.models import Group

    from modelhub.access.roles import ROLES

    for name in ROLES:
        Group.objects.get_or_create(name=name)


@pytest.fixture
def python_server(admin_api, triton):
    """The session's Triton, registered through the API as a server with only the python backend."""
    response = admin_api.post(
        "/api/v1/servers/",
        {"name": "local-python", "base_url": triton.http_url, "backends": ["python"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return "local-python"


@pytest.fixture
def triton_client(triton):
    client = triton_http.InferenceServerClient(triton.http_url.removeprefix("http://"))
    yield client
    client.close()


def upload_and_deploy(admin_api, server: str, model: str, artifact, manifest: dict) -> dict:
    """Upload a version, deploy it to `server` (the reconciler runs on commit), return the version's JSON."""
    response = upload(admin_api, model, artifact, manifest)
    assert response.status_code == 201, response.json()
    version = response.json()
    response = admin_api.post(
        f"/api/v1/models/{model}/versions/{version['number']}/deploy/", {"server": server}, format="json"
    )
    assert response.status_code == 202, response.json()
    (deployment,) = response.json()["deployments"]
    detail = admin_api.get(deployment["url"]).json()
    assert detail["observed"] == "loaded", detail["last_error"]
    return version


def infer(client, model: str, inputs: dict[str, np.ndarray], outputs: list[str], binary: bool = True) -> dict:
    """Version 1 of registered model `model`, under its own Triton name."""
    tensors = []
    for name, array in inputs.items():
        datatype = "BYTES" if array.dtype == object else triton_http.np_to_triton_dtype(array.dtype)
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        tensors.append(tensor)
    requested = [triton_http.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    result = client.infer(triton_model_name(model, 1), tensors, outputs=requested)
    return {name: result.as_numpy(name) for name in outputs}


def onnx_file(model: onnx.ModelProto) -> bytes:
    onnx.checker.check_model(model)
    return model.SerializeToString()


def sklearn_onnx(estimator, X) -> bytes:
    """Exported the way the issue's users do, ZipMap off so probabilities are a tensor."""
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    return onnx_file(to_onnx(estimator, X[:1].astype(np.float32), options=options))


# ---------------------------------------------------------------- BYTES tensors


def test_a_python_model_with_bytes_input_and_output_deploys_and_answers_the_right_bytes(
    admin_api, python_server, triton_client, tmp_path
):
    artifact = make_zip(tmp_path / "strings.zip", {"1/model.py": STRINGS_MODEL_PY})
    version = upload_and_deploy(admin_api, python_server, "strings", artifact, STRINGS_MANIFEST)
    assert [t["datatype"] for t in version["inputs"]] == ["FP32", "BYTES"]
    assert version["outputs"] == [{"name": "REPLY", "datatype": "BYTES", "dims": [-1], "labels": None}]

    texts = np.array(["héllo wörld".encode(), b"", "日本語".encode(), b"plain"], dtype=object)
    values = np.array([1.5, 2.5, -1.0], dtype=np.float32)
    expected = ["HÉLLO WÖRLD|3|3", "|3|3", "日本語|3|3", "PLAIN|3|3"]
    for binary in (True, False):
        reply = infer(triton_client, "strings", {"VALUES": values, "TEXT": texts}, ["REPLY"], binary)["REPLY"]
        assert reply.dtype == object and reply.shape == (4,)
        # the binary protocol carries bytes; JSON carries text, which tritonclient hands back as str
        assert reply.tolist() == ([e.encode() for e in expected] if binary else expected)
    # other lengths of both variable-length inputs, on the same loaded model
    reply = infer(
        triton_client, "strings", {"VALUES": np.ones(7, np.float32), "TEXT": np.array([b"x"], object)}, ["REPLY"]
    )
    assert reply["REPLY"].tolist() == [b"X|7|7"]


# ---------------------------------------------------------------- bare ONNX from scikit-learn


def test_a_skl2onnx_classifier_with_string_labels_uploaded_bare_deploys_and_answers(
    admin_api, python_server, triton_client
):
    iris = load_iris()
    X, y = iris.data.astype(np.float32), iris.target_names[iris.target]  # labels are strings: a BYTES output
    clf = LogisticRegression(max_iter=1000).fit(X, y)

    version = upload_and_deploy(admin_api, python_server, "iris", sklearn_onnx(clf, X), {"max_batch_size": 16})

    assert version["platform"] == "onnxruntime_onnx" and version["max_batch_size"] == 16
    assert version["inputs"] == [{"name": "X", "datatype": "FP32", "dims": [4], "labels": None}]
    # label is [N] in the graph: one value per sample, registered as dims [] (served as [N, 1])
    assert version["outputs"] == [
        {"name": "label", "datatype": "BYTES", "dims": [], "labels": None},
        {"name": "probabilities", "datatype": "FP32", "dims": [3], "labels": None},
    ]
    sample = X[::10]  # 15 rows, all three classes
    out = infer(triton_client, "iris", {"X": sample}, ["label", "probabilities"])

    assert out["label"].shape == (15, 1)
    assert [b.decode() for b in out["label"][:, 0]] == clf.predict(sample).tolist()
    assert out["probabilities"].shape == (15, 3)
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(sample), atol=1e-5)
    metadata = triton_client.get_model_metadata(triton_model_name("iris", 1))
    assert {t["name"]: t["shape"] for t in metadata["outputs"]} == {"label": [-1, 1], "probabilities": [-1, 3]}


def test_a_classifier_with_integer_labels_uploaded_bare_deploys_and_answers(admin_api, python_server, triton_client):
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    clf = DecisionTreeClassifier(max_depth=8, random_state=0).fit(X, y)

    version = upload_and_deploy(admin_api, python_server, "digits-tree", sklearn_onnx(clf, X), {"max_batch_size": 16})

    assert version["outputs"][0] == {"name": "label", "datatype": "INT64", "dims": [], "labels": None}
    out = infer(triton_client, "digits-tree", {"X": X[:16]}, ["label", "probabilities"])
    assert out["label"].dtype == np.int64 and out["label"][:, 0].tolist() == clf.predict(X[:16]).tolist()
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X[:16]), atol=1e-6)

    # The config Triton serves, read back as a config.pbtxt, is the registered schema.
    served = triton_client.get_model_config(triton_model_name("digits-tree", 1))
    message = json_format.ParseDict(served, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
    assert message.output[0].dims == [1] and message.output[0].HasField("reshape")
    schema = schema_from_config(parse_config_pbtxt(text_format.MessageToString(message)))
    assert (schema["inputs"], schema["outputs"]) == (version["inputs"], version["outputs"])


def test_a_regressor_with_one_float_per_sample_deploys_and_answers(admin_api, python_server, triton_client):
    X, y = load_diabetes(return_X_y=True)
    X = X.astype(np.float32)
    reg = LinearRegression().fit(X, y)
    # skl2onnx writes [N, 1]; flattened to [N], the shape torch and most other exporters give a scalar head.
    model = to_onnx(reg, X[:1])
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), name="flat"))
    model.graph.node.append(helper.make_node("Reshape", ["variable", "flat"], ["prediction"]))
    model.graph.ClearField("output")
    model.graph.output.append(helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["N"]))

    version = upload_and_deploy(admin_api, python_server, "diabetes", onnx_file(model), {"max_batch_size": 16})

    assert version["outputs"] == [{"name": "prediction", "datatype": "FP32", "dims": [], "labels": None}]
    out = infer(triton_client, "diabetes", {"X": X[:5]}, ["prediction"])
    assert out["prediction"].shape == (5, 1)
    np.testing.assert_allclose(out["prediction"][:, 0], reg.predict(X[:5]), rtol=1e-4)


# ---------------------------------------------------------------- other one-value shapes


def test_an_input_of_one_value_per_sample_deploys_and_answers(admin_api, python_server, triton_client):
    one = numpy_helper.from_array(np.array([1], dtype=np.int64), name="axis1")
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Unsqueeze", ["scale", "axis1"], ["scale2"]),
                helper.make_node("Mul", ["x", "scale2"], ["y"]),
            ],
            "per-sample-scale",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
                helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N"]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
            initializer=[one],
        ),
        ir_version=8,
        opset_imports=[helper.make_opsetid("", 17)],
    )

    version = upload_and_deploy(admin_api, python_server, "scaled", onnx_file(model), {"max_batch_size": 8})

    assert [t["dims"] for t in version["inputs"]] == [[3], []]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = infer(triton_client, "scaled", {"x": x, "scale": np.array([[2], [10]], np.float32)}, ["y"])
    assert out["y"].tolist() == [[0, 2, 4], [30, 40, 50]]


def test_a_scalar_model_without_batching_deploys_and_answers(admin_api, python_server, triton_client):
    three = numpy_helper.from_array(np.array(3.0, dtype=np.float32), name="three")
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Mul", ["a", "three"], ["b"])],
            "scalar",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [])],
            [helper.make_tensor_value_info("b", TensorProto.FLOAT, [])],
            initializer=[three],
        ),
        ir_version=8,
        opset_imports=[helper.make_opsetid("", 17)],
    )

    version = upload_and_deploy(admin_api, python_server, "scalar", onnx_file(model), {"max_batch_size": 0})

    assert version["inputs"][0]["dims"] == [] and version["outputs"][0]["dims"] == []
    out = infer(triton_client, "scalar", {"a": np.array([1.5], np.float32)}, ["b"])
    assert out["b"].tolist() == [4.5]
