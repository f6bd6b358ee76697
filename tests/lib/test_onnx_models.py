"""read_onnx_signature / is_onnx / the generic runner, and the demo artifacts.

Plain pytest, no Django and no Triton: ``pytest -p no:django tests/lib/test_onnx_models.py``.
The runner is exercised with a stand-in ``triton_python_backend_utils`` module.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelhub.demo.artifacts import DemoVersion, build_demo_versions
from modelhub.demo.data import load_eval_split
from modelhub.lib.onnx_models import (
    ONNX_RUNNER_MODEL_PY,
    OnnxError,
    OnnxSignature,
    TensorSig,
    is_onnx,
    read_onnx_signature,
)

RUNNER_PATH = Path(__file__).resolve().parents[2] / "modelhub" / "lib" / "onnx_runner_model.py"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> list[DemoVersion]:
    return build_demo_versions(tmp_path_factory.mktemp("demo"))


def _onnx_bytes(version: DemoVersion) -> bytes:
    with zipfile.ZipFile(version.archive_path) as zf:
        return zf.read("1/model.onnx")


def _model(inputs, outputs, nodes, initializers=(), ir_version=8) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(initializers))
    return helper.make_model(graph, ir_version=ir_version, opset_imports=[helper.make_opsetid("", 17)])


# ---------------------------------------------------------------- read_onnx_signature


EXPECTED_DEMO_SIGNATURE = OnnxSignature(
    inputs=[TensorSig("input", "FP32", [-1, 64])],
    outputs=[TensorSig("label", "INT64", [-1, 1]), TensorSig("probabilities", "FP32", [-1, 10])],
)


def test_signature_of_demo_model_from_bytes_and_path(demo, tmp_path):
    for version in demo:
        data = _onnx_bytes(version)
        sig = read_onnx_signature(data)
        assert sig == EXPECTED_DEMO_SIGNATURE
        assert sig.batchable
        path = tmp_path / "model.onnx"
        path.write_bytes(data)
        assert read_onnx_signature(path) == EXPECTED_DEMO_SIGNATURE
        assert read_onnx_signature(str(path)) == EXPECTED_DEMO_SIGNATURE


def test_zipmap_output_is_rejected_naming_the_output():
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    clf = LogisticRegression().fit(X, y)
    model = convert_sklearn(clf, initial_types=[("input", FloatTensorType([None, 4]))])  # ZipMap on by default
    with pytest.raises(OnnxError) as err:
        read_onnx_signature(model.SerializeToString())
    assert "output_probability" in str(err.value)
    assert "zipmap" in str(err.value).lower()


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not an onnx model", b"\x08\x08" + bytes(range(256)) * 4, b"PK\x03\x04garbage"],
)
def test_garbage_is_rejected(data, tmp_path):
    with pytest.raises(OnnxError):
        read_onnx_signature(data)
    path = tmp_path / "junk.onnx"
    path.write_bytes(data)
    with pytest.raises(OnnxError):
        read_onnx_signature(path)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        read_onnx_signature(tmp_path / "nope.onnx")


def test_initializers_are_not_inputs_and_symbolic_dims_are_minus_one():
    weight = numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), name="W")
    model = _model(
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
            # old exporters (IR < 4) list initializers among the graph inputs
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [3, 2]),
        ],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        nodes=[helper.make_node("MatMul", ["x", "W"], ["y"])],
        initializers=[weight],
        ir_version=3,
    )
    sig = read_onnx_signature(model.SerializeToString())
    assert sig.inputs == [TensorSig("x", "FP32", [-1, 3])]
    assert sig.outputs == [TensorSig("y", "FP32", [-1, 2])]
    assert sig.batchable


@pytest.mark.parametrize(
    ("elem", "name"),
    [
        (TensorProto.BOOL, "BOOL"),
        (TensorProto.UINT8, "UINT8"),
        (TensorProto.UINT16, "UINT16"),
        (TensorProto.UINT32, "UINT32"),
        (TensorProto.UINT64, "UINT64"),
        (TensorProto.INT8, "INT8"),
        (TensorProto.INT16, "INT16"),
        (TensorProto.INT32, "INT32"),
        (TensorProto.INT64, "INT64"),
        (TensorProto.FLOAT16, "FP16"),
        (TensorProto.BFLOAT16, "BF16"),
        (TensorProto.FLOAT, "FP32"),
        (TensorProto.DOUBLE, "FP64"),
        (TensorProto.STRING, "BYTES"),
    ],
)
def test_datatype_names(elem, name):
    model = _model(
        inputs=[helper.make_tensor_value_info("a", elem, [4])],
        outputs=[helper.make_tensor_value_info("b", elem, [4])],
        nodes=[helper.make_node("Identity", ["a"], ["b"])],
    )
    sig = read_onnx_signature(model.SerializeToString())
    assert sig.inputs == [TensorSig("a", name, [4])]
    assert sig.outputs == [TensorSig("b", name, [4])]
    assert not sig.batchable  # fixed first dim


def test_unsupported_element_type_names_the_input():
    model = _model(
        inputs=[helper.make_tensor_value_info("c", TensorProto.COMPLEX64, [None, 2])],
        outputs=[helper.make_tensor_value_info("d", TensorProto.COMPLEX64, [None, 2])],
        nodes=[helper.make_node("Identity", ["c"], ["d"])],
    )
    with pytest.raises(OnnxError, match="input 'c'.*COMPLEX64"):
        read_onnx_signature(model.SerializeToString())


def test_unknown_rank_is_rejected():
    model = _model(
        inputs=[helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
        outputs=[helper.make_tensor_value_info("b", TensorProto.FLOAT, [None])],
        nodes=[helper.make_node("Identity", ["a"], ["b"])],
    )
    with pytest.raises(OnnxError, match="input 'a'"):
        read_onnx_signature(model.SerializeToString())


def test_batchable_needs_rank_and_dynamic_first_dim():
    assert OnnxSignature([TensorSig("a", "FP32", [-1, 3])], [TensorSig("b", "FP32", [-1])]).batchable
    assert not OnnxSignature([TensorSig("a", "FP32", [-1, 3])], [TensorSig("b", "FP32", [])]).batchable
    assert not OnnxSignature([TensorSig("a", "FP32", [2, 3])], [TensorSig("b", "FP32", [-1])]).batchable


# ---------------------------------------------------------------- is_onnx


def test_is_onnx(demo, tmp_path):
    data = _onnx_bytes(demo[0])
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(data)
    assert is_onnx(onnx_path)
    assert is_onnx(str(onnx_path))
    assert is_onnx(data)
    assert not is_onnx(demo[0].archive_path)  # a zip
    import tarfile

    tar_path = tmp_path / "model.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        tf.add(onnx_path, arcname="1/model.onnx")
    assert not is_onnx(tar_path)
    plain_tar = tmp_path / "model.tar"
    with tarfile.open(plain_tar, "w") as tf:
        tf.add(onnx_path, arcname="1/model.onnx")
    assert not is_onnx(plain_tar)
    text = tmp_path / "config.pbtxt"
    text.write_text('name: "x"\n')
    assert not is_onnx(text)
    assert not is_onnx(tmp_path / "missing.onnx")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert not is_onnx(empty)


# ---------------------------------------------------------------- the runner


def test_runner_constant_is_the_runner_file():
    assert RUNNER_PATH.read_text(encoding="utf-8") == ONNX_RUNNER_MODEL_PY
    compile(ONNX_RUNNER_MODEL_PY, "model.py", "exec")
    assert "class TritonPythonModel" in ONNX_RUNNER_MODEL_PY


_NP_TO_TRITON = {"TYPE_FP32": np.float32, "TYPE_FP64": np.float64, "TYPE_INT64": np.int64, "TYPE_STRING": np.object_}


def _fake_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, message):
            self._message = message

        def message(self):
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self.output_tensors, self.error = list(output_tensors), error

    class Request:
        def __init__(self, tensors):
            self.tensors = tensors

    def get_input_tensor_by_name(request, name):
        return next((t for t in request.tensors if t.name() == name), None)

    def get_output_config_by_name(cfg, name):
        return next((o for o in cfg["output"] if o["name"] == name), None)

    pb.Tensor, pb.TritonError, pb.InferenceResponse, pb.Request = Tensor, TritonError, InferenceResponse, Request
    pb.get_input_tensor_by_name = get_input_tensor_by_name
    pb.get_output_config_by_name = get_output_config_by_name
    pb.triton_string_to_numpy = _NP_TO_TRITON.__getitem__
    return pb


@pytest.fixture
def runner_module(monkeypatch):
    pb = _fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("modelhub_test_onnx_runner", RUNNER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, pb


def _runner_config(max_batch_size, input_type="TYPE_FP32", input_dims=(64,)):
    extra = [] if max_batch_size else [-1]
    return {
        "name": "digits",
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [{"name": "input", "data_type": input_type, "dims": [*extra, *input_dims]}],
        "output": [
            {"name": "label", "data_type": "TYPE_INT64", "dims": [*extra, 1]},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [*extra, 10]},
        ],
    }


def _init_runner(module, tmp_path, onnx_bytes, cfg):
    (tmp_path / "3").mkdir(exist_ok=True)
    (tmp_path / "3" / "model.onnx").write_bytes(onnx_bytes)
    model = module.TritonPythonModel()
    model.initialize({"model_repository": str(tmp_path), "model_version": "3", "model_config": json.dumps(cfg)})
    return model


@pytest.mark.parametrize(("max_batch_size", "input_type"), [(64, "TYPE_FP32"), (0, "TYPE_FP32"), (64, "TYPE_FP64")])
def test_runner_matches_onnxruntime(runner_module, demo, tmp_path, max_batch_size, input_type):
    module, pb = runner_module
    data = _onnx_bytes(demo[1])
    model = _init_runner(module, tmp_path, data, _runner_config(max_batch_size, input_type))
    X, _ = load_eval_split()
    send_dtype = np.float64 if input_type == "TYPE_FP64" else np.float32
    requests = [pb.Request([pb.Tensor("input", X[i : i + 7].astype(send_dtype))]) for i in (0, 7, 14)]
    responses = model.execute(requests)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for i, response in zip((0, 7, 14), responses, strict=True):
        assert response.error is None
        outputs = {t.name(): t.as_numpy() for t in response.output_tensors}
        ref_label, ref_prob = session.run(["label", "probabilities"], {"input": X[i : i + 7]})
        assert outputs["label"].dtype == np.int64 and outputs["label"].shape == (7, 1)
        assert outputs["probabilities"].dtype == np.float32 and outputs["probabilities"].shape == (7, 10)
        np.testing.assert_array_equal(outputs["label"], ref_label)
        np.testing.assert_allclose(outputs["probabilities"], ref_prob)
    model.finalize()


def test_runner_errors_become_error_responses(runner_module, demo, tmp_path):
    module, pb = runner_module
    model = _init_runner(module, tmp_path, _onnx_bytes(demo[0]), _runner_config(64))
    X, _ = load_eval_split()
    good = pb.Request([pb.Tensor("input", X[:2])])
    missing = pb.Request([pb.Tensor("other", X[:2])])
    bad_shape = pb.Request([pb.Tensor("input", X[:2, :32])])
    responses = model.execute([good, missing, bad_shape])
    assert responses[0].error is None
    assert "missing input 'input'" in responses[1].error.message()
    assert responses[2].error is not None and responses[2].output_tensors == []


def test_runner_rejects_config_that_does_not_match_the_graph(runner_module, demo, tmp_path):
    module, _ = runner_module
    cfg = _runner_config(64)
    cfg["output"][0]["name"] = "nope"
    with pytest.raises(ValueError, match="nope"):
        _init_runner(module, tmp_path, _onnx_bytes(demo[0]), cfg)
    cfg = _runner_config(64)
    cfg["input"][0]["name"] = "x"
    with pytest.raises(ValueError, match="'x'"):
        _init_runner(module, tmp_path, _onnx_bytes(demo[0]), cfg)


# ---------------------------------------------------------------- the demo


def test_demo_archives_and_manifests(demo):
    assert [v.archive_path.name for v in demo] == ["digits-v1.zip", "digits-v2.zip"]
    X, y = load_eval_split()
    assert X.dtype == np.float32 and X.shape == (450, 64) and y.shape == (450,)
    for version in demo:
        with zipfile.ZipFile(version.archive_path) as zf:
            assert sorted(zf.namelist()) == ["1/model.onnx", "1/model.py"]
            assert zf.read("1/model.py").decode() == ONNX_RUNNER_MODEL_PY
        m = version.manifest
        assert m["backend"] == "python" and m["max_batch_size"] == 64
        assert m["inputs"] == [{"name": "input", "datatype": "FP32", "dims": [64]}]
        assert m["outputs"] == [
            {"name": "label", "datatype": "INT64", "dims": [1]},
            {"name": "probabilities", "datatype": "FP32", "dims": [10], "labels": [str(i) for i in range(10)]},
        ]
        assert m["config"] == {"dynamic_batching": {}, "instance_group": [{"kind": "KIND_CPU", "count": 1}]}
        assert m["provenance"] == {"git_commit": None, "ci_run_url": None}
        assert m["metadata"]["metrics"]["accuracy"] == version.accuracy
        assert m["metadata"]["trained_on"] == "sklearn digits" and m["metadata"]["algorithm"]
        json.dumps(m)  # JSON-serializable
        manifest_file = version.archive_path.with_name(version.archive_path.stem + ".manifest.json")
        assert json.loads(manifest_file.read_text()) == m
        # the accuracy is the real held-out accuracy of the packed ONNX model
        session = ort.InferenceSession(_onnx_bytes(version), providers=["CPUExecutionProvider"])
        (label,) = session.run(["label"], {"input": X})
        assert version.accuracy == round(float(np.mean(label[:, 0] == y)), 4)
        assert version.accuracy > 0.9
    assert demo[1].accuracy > demo[0].accuracy
    assert demo[0].manifest["metadata"]["algorithm"] != demo[1].manifest["metadata"]["algorithm"]


def test_demo_build_is_deterministic(demo, tmp_path):
    again = build_demo_versions(tmp_path)
    for a, b in zip(demo, again, strict=True):
        assert a.archive_path.read_bytes() == b.archive_path.read_bytes()
        assert a.manifest == b.manifest


# ---------------------------------------------------------------- reading without loading the file

MiB = 1024 * 1024


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _write_model_with_big_initializer(path: Path, raw_bytes: int) -> Path:
    """A valid ONNX file whose graph holds an initializer of `raw_bytes` zero bytes.

    The big initializer is appended to the graph field on the wire (repeated
    fields concatenate), with its raw_data left as a hole in a sparse file: the
    test writes no 100 MiB, while a reader that loads the file must read them.
    """
    small = _model(
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        nodes=[helper.make_node("Identity", ["x"], ["y"])],
    )
    graph = small.graph.SerializeToString()
    small.ClearField("graph")
    n_floats = raw_bytes // 4
    tensor_head = b"".join(
        [
            b"\x08" + _varint(n_floats),  # dims (field 1): [n_floats]
            b"\x10" + _varint(TensorProto.FLOAT),  # data_type (field 2)
            b"\x42" + _varint(len(b"weights")) + b"weights",  # name (field 8)
            b"\x4a" + _varint(n_floats * 4),  # raw_data (field 9): its bytes follow
        ]
    )
    tensor_len = len(tensor_head) + n_floats * 4
    initializer = b"\x2a" + _varint(tensor_len) + tensor_head  # GraphProto.initializer (field 5)
    graph_len = len(graph) + len(initializer) + n_floats * 4
    with open(path, "wb") as f:
        f.write(small.SerializeToString())
        f.write(b"\x3a" + _varint(graph_len) + graph + initializer)  # ModelProto.graph (field 7)
        f.truncate(f.tell() + n_floats * 4)
    return path


def _peak_traced(fn) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            result = fn()
        except Exception as exc:  # the caller inspects what was raised
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_big_initializer_file_is_a_real_onnx_model(tmp_path):
    path = _write_model_with_big_initializer(tmp_path / "model.onnx", 4096)
    model = onnx.load(str(path))  # the hand-written wire bytes are what onnx reads
    assert [t.name for t in model.graph.initializer] == ["weights"]
    assert numpy_helper.to_array(model.graph.initializer[0]).shape == (1024,)
    onnx.checker.check_model(model)


def test_signature_of_a_100_mib_model_is_read_without_reading_its_weights(tmp_path):
    path = _write_model_with_big_initializer(tmp_path / "model.onnx", 100 * MiB)
    assert path.stat().st_size > 100 * MiB
    signature, peak = _peak_traced(lambda: read_onnx_signature(path))
    assert signature == OnnxSignature([TensorSig("x", "FP32", [-1, 4])], [TensorSig("y", "FP32", [-1, 4])])
    assert peak < 2 * MiB, f"reading the signature allocated {peak / MiB:.1f} MiB"


def test_a_100_mib_garbage_file_is_refused_without_reading_it_into_memory(tmp_path):
    # It starts like an ONNX model (is_onnx says yes, as it does at upload),
    # then its graph field claims the rest of the file, which is garbage.
    path = tmp_path / "model.onnx"
    size = 100 * MiB
    head = b"\x08\x08" + b"\x3a" + _varint(size)
    with open(path, "wb") as f:
        f.write(head)
        f.write(b"\x0d" * 64)  # fixed32 fields, then ...
        f.write(b"\xff" * 16)  # ... a varint that never ends
        f.truncate(len(head) + size)
    assert is_onnx(path)
    error, peak = _peak_traced(lambda: read_onnx_signature(path))
    assert isinstance(error, OnnxError), error
    assert "not a valid ONNX model" in str(error) and "varint" in str(error)
    assert peak < 2 * MiB, f"refusing the file allocated {peak / MiB:.1f} MiB"


def test_a_truncated_model_is_refused_naming_the_field(demo, tmp_path):
    data = _onnx_bytes(demo[0])
    with pytest.raises(OnnxError, match="claims .* bytes, only .* remain|cut short|varint"):
        read_onnx_signature(data[: len(data) // 2])


def test_a_graph_input_too_large_to_be_a_signature_is_refused():
    model = _model(
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2], doc_string="d" * (5 * MiB))],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        nodes=[helper.make_node("Identity", ["x"], ["y"])],
    )
    with pytest.raises(OnnxError, match="a graph input is .* bytes; at most"):
        read_onnx_signature(model.SerializeToString())


def test_sparse_initializers_and_unknown_fields_and_groups_are_walked_over():
    values = numpy_helper.from_array(np.array([1.0], dtype=np.float32), name="S")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0], dtype=np.int64)), [2])
    model = _model(
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("S", TensorProto.FLOAT, [2]),
        ],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        nodes=[helper.make_node("Add", ["x", "S"], ["y"])],
    )
    model.graph.sparse_initializer.append(sparse)
    # An unknown field 99 holding a group with a nested group and a fixed64, as a newer writer might add.
    unknown = b"\x9b\x06" + b"\x0b" + b"\x11" + b"\0" * 8 + b"\x0c" + b"\x9c\x06"
    data = model.SerializeToString() + unknown
    onnx.load_model_from_string(data)  # protobuf itself accepts it
    sig = read_onnx_signature(data)
    assert sig.inputs == [TensorSig("x", "FP32", [2])]
    assert sig.outputs == [TensorSig("y", "FP32", [2])]


def test_an_open_file_is_read_from_its_start_and_left_open(demo, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(_onnx_bytes(demo[0]))
    with open(path, "rb") as f:
        f.read(5)
        assert read_onnx_signature(f) == EXPECTED_DEMO_SIGNATURE
        assert not f.closed


# ---------------------------------------------------------------- the runner and one value per sample


def _per_sample_model() -> bytes:
    """y[n] = x[n] * scale[n] for x [N, 3], scale [N]; total[n] = sum(y[n]) of shape [N]."""
    model = _model(
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, ["N"]),
        ],
        outputs=[
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N"]),
        ],
        nodes=[
            helper.make_node("Unsqueeze", ["scale", "axis1"], ["scale2"]),
            helper.make_node("Mul", ["x", "scale2"], ["y"]),
            helper.make_node("ReduceSum", ["y", "axis1"], ["total"], keepdims=0),
        ],
        initializers=[numpy_helper.from_array(np.array([1], dtype=np.int64), name="axis1")],
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _per_sample_config(scale_entry, total_entry):
    return {
        "name": "per-sample",
        "backend": "python",
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}, {"name": "scale", **scale_entry}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}, {"name": "total", **total_entry}],
    }


@pytest.mark.parametrize("reshape", [{"shape": []}, {}])  # protobuf's JSON may drop the empty list
def test_runner_serves_one_value_per_sample_tensors_configured_with_a_scalar_reshape(runner_module, tmp_path, reshape):
    module, pb = runner_module
    entry = {"data_type": "TYPE_FP32", "dims": [1], "reshape": reshape}
    model = _init_runner(module, tmp_path, _per_sample_model(), _per_sample_config(entry, entry))
    # Triton applies the reshape: the backend sees scale as [N] and hands total back as [N].
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    [response] = model.execute([pb.Request([pb.Tensor("x", x), pb.Tensor("scale", np.array([1, 2], np.float32))])])
    assert response.error is None, response.error and response.error.message()
    outputs = {t.name(): t.as_numpy() for t in response.output_tensors}
    assert outputs["y"].tolist() == [[0, 1, 2], [6, 8, 10]]
    assert outputs["total"].tolist() == [3, 24]


def test_runner_refuses_a_config_whose_ranks_disagree_with_the_graph(runner_module, tmp_path):
    module, _ = runner_module
    no_reshape = {"data_type": "TYPE_FP32", "dims": [1]}
    good = {**no_reshape, "reshape": {"shape": []}}
    with pytest.raises(ValueError, match=r"input 'scale'.*\[-1, 1\].*rank 1"):
        _init_runner(module, tmp_path, _per_sample_model(), _per_sample_config(no_reshape, good))
    with pytest.raises(ValueError, match=r"output 'total'.*\[-1, 1\].*rank 1"):
        _init_runner(module, tmp_path, _per_sample_model(), _per_sample_config(good, no_reshape))
    cfg = _per_sample_config(good, good)
    cfg["input"][0]["dims"] = [4]
    with pytest.raises(ValueError, match=r"input 'x'.*\[-1, 4\].*\[-1, 3\]"):
        _init_runner(module, tmp_path, _per_sample_model(), cfg)


def test_runner_turns_tritons_dims_1_into_the_graphs_scalar_without_batching(runner_module, tmp_path):
    module, pb = runner_module
    model = _model(
        inputs=[helper.make_tensor_value_info("a", TensorProto.FLOAT, [])],
        outputs=[helper.make_tensor_value_info("b", TensorProto.FLOAT, [])],
        nodes=[helper.make_node("Mul", ["a", "three"], ["b"])],
        initializers=[numpy_helper.from_array(np.array(3.0, dtype=np.float32), name="three")],
    )
    cfg = {
        "name": "scalar",
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "a", "data_type": "TYPE_FP32", "dims": [1]}],
        "output": [{"name": "b", "data_type": "TYPE_FP32", "dims": [1]}],
    }
    runner = _init_runner(module, tmp_path, model.SerializeToString(), cfg)
    good, bad = runner.execute(
        [
            pb.Request([pb.Tensor("a", np.array([1.5], np.float32))]),
            pb.Request([pb.Tensor("a", np.ones(2, np.float32))]),
        ]
    )
    assert good.error is None
    assert good.output_tensors[0].as_numpy().shape == (1,) and good.output_tensors[0].as_numpy().tolist() == [4.5]
    assert "input 'a' is a scalar: send shape [1], not [2]" in bad.error.message()
