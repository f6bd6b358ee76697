"""Manifests that Triton or the database cannot hold are refused, naming the field.

The same limits hold wherever the schema comes from: the manifest, an
archive's config.pbtxt or a bare ONNX graph.
"""

import json

import onnx
import pytest
from onnx import TensorProto, helper

from modelhub.registry.manifest import MAX_BATCH_SIZE, ManifestError, parse_manifest
from modelhub.registry.models import ModelVersion, TensorSpec
from modelhub.registry.schema import MAX_LABEL_CHARS, MAX_LABELS, MAX_RANK, MAX_TENSOR_NAME, MAX_TENSORS
from modelhub.registry.services import get_or_create_model, register_version
from tests.conftest import DOUBLER_MANIFEST, make_zip


def manifest(**changes) -> dict:
    result = json.loads(json.dumps(DOUBLER_MANIFEST))
    result.update(changes)
    return result


def tensor(name="INPUT", datatype="FP32", dims=(-1,), **extra) -> dict:
    return {"name": name, "datatype": datatype, "dims": list(dims), **extra}


def errors_of(raw: dict, derived: dict | None = None) -> dict[str, str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(raw, derived)
    return caught.value.errors


REFUSED = [
    pytest.param(manifest(inputs=[tensor(dims=[2**63])]), "manifest.inputs[0].dims", "int64", id="dim-2**63"),
    pytest.param(manifest(inputs=[tensor(dims=[10**30])]), "manifest.inputs[0].dims", "int64", id="dim-10**30"),
    pytest.param(
        manifest(inputs=[tensor(dims=[2**62, 2**62])]), "manifest.inputs[0].dims", "2**126 bytes", id="dims-overflow"
    ),
    pytest.param(
        # 2**60 FP64 elements: the count fits int64, the bytes do not.
        manifest(inputs=[tensor(datatype="FP64", dims=[2**30, 2**30])]),
        "manifest.inputs[0].dims",
        "2**63 bytes",
        id="bytes-overflow",
    ),
    pytest.param(
        manifest(max_batch_size=2**20, inputs=[tensor(dims=[2**40, 2**10])]),
        "manifest.inputs[0].dims",
        "max_batch_size 1048576",
        id="batch-overflow",
    ),
    pytest.param(
        manifest(inputs=[tensor(dims=[1] * 10_000)]), "manifest.inputs[0].dims", "10000 dimensions", id="rank"
    ),
    pytest.param(
        manifest(max_batch_size=4, inputs=[tensor(dims=[1] * MAX_RANK)]),
        "manifest.inputs[0].dims",
        "plus the batch dimension",
        id="rank-with-batch",
    ),
    pytest.param(
        manifest(inputs=[tensor(name=f"IN{i}") for i in range(10_000)]),
        "manifest.inputs",
        f"has 10000 tensors; at most {MAX_TENSORS}",
        id="10000-inputs",
    ),
    pytest.param(manifest(max_batch_size=2**40), "manifest.max_batch_size", "int32", id="max-batch-2**40"),
    pytest.param(manifest(max_batch_size=2**70), "manifest.max_batch_size", "int32", id="max-batch-2**70"),
    pytest.param(
        manifest(inputs=[tensor(name="N" * 10_000)]),
        "manifest.inputs[0].name",
        f"10000 characters long; at most {MAX_TENSOR_NAME}",
        id="long-name",
    ),
    pytest.param(manifest(backend="../../etc"), "manifest.backend", "not a backend name", id="backend-dotdot"),
    pytest.param(manifest(backend="python/../x"), "manifest.backend", "not a backend name", id="backend-slash"),
    pytest.param(manifest(backend="b" * 65), "manifest.backend", "not a backend name", id="backend-long"),
    pytest.param(
        manifest(backend="", platform="../../etc"), "manifest.platform", "unknown platform '../../etc'", id="platform"
    ),
    pytest.param(
        manifest(outputs=[tensor("OUTPUT", labels=["x"] * (MAX_LABELS + 1))]),
        "manifest.outputs[0].labels",
        f"at most {MAX_LABELS}",
        id="too-many-labels",
    ),
    pytest.param(
        manifest(outputs=[tensor("OUTPUT", labels=["ok", "x" * (MAX_LABEL_CHARS + 1)])]),
        "manifest.outputs[0].labels",
        f"label 1 is {MAX_LABEL_CHARS + 1} characters long",
        id="long-label",
    ),
    pytest.param(
        manifest(outputs=[tensor("OUTPUT", labels=["cat", "dog\nbird"])]),
        "manifest.outputs[0].labels",
        "line break",
        id="label-line-break",
    ),
    pytest.param(
        manifest(outputs=[tensor("a/../../../OUTPUT", labels=["cat"])]),
        "manifest.outputs[0].labels",
        "path separator",
        id="labelled-output-path",
    ),
]


@pytest.mark.parametrize("raw, field, message", REFUSED)
def test_a_manifest_that_cannot_work_is_refused_naming_the_field(raw, field, message):
    errors = errors_of(raw)
    assert message in errors.get(field, ""), errors
    assert all(len(text) < 1000 for text in errors.values()), "messages stay one readable line"


ACCEPTED = [
    pytest.param(manifest(max_batch_size=MAX_BATCH_SIZE), id="max-batch-int32-max"),
    pytest.param(manifest(inputs=[tensor(dims=[2**61 - 1])]), id="dim-2**61-FP32"),
    pytest.param(manifest(inputs=[tensor(name="N" * MAX_TENSOR_NAME)]), id="name-at-the-column-width"),
    pytest.param(manifest(inputs=[tensor(name=f"IN{i}") for i in range(MAX_TENSORS)]), id="max-inputs"),
    pytest.param(manifest(max_batch_size=8, inputs=[tensor(dims=[1] * (MAX_RANK - 1))]), id="max-rank"),
    pytest.param(manifest(backend="tensorrtllm"), id="backend-word"),
    pytest.param(manifest(backend="", platform="tensorflow_savedmodel"), id="known-platform"),
    pytest.param(manifest(outputs=[tensor("model/dense:0")]), id="slash-in-unlabelled-name"),
    pytest.param(manifest(outputs=[tensor("OUTPUT", labels=[f"c{i}" for i in range(1000)])]), id="1000-labels"),
]


@pytest.mark.parametrize("raw", ACCEPTED)
def test_manifests_within_the_limits_are_accepted(raw):
    parsed = parse_manifest(raw)
    assert parsed.inputs and parsed.outputs


# --- the same limits for a schema the artifact declares --------------------------------


def _config_pbtxt(dims: str = "[ -1 ]", max_batch_size: int = 0, backend: str = "python", inputs: int = 1) -> str:
    tensors = ", ".join(f'{{ name: "IN{i}" data_type: TYPE_FP32 dims: {dims} }}' for i in range(inputs))
    return (
        f'backend: "{backend}"\nmax_batch_size: {max_batch_size}\ninput [ {tensors} ]\n'
        'output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
    )


CONFIG_REFUSED = [
    pytest.param(
        _config_pbtxt(dims="[ 4611686018427387904, 4611686018427387904 ]"), "manifest.inputs[0].dims", "int64"
    ),
    pytest.param(_config_pbtxt(dims="[ " + ", ".join(["1"] * 10_000) + " ]"), "manifest.inputs[0].dims", "dimensions"),
    pytest.param(_config_pbtxt(inputs=2000), "manifest.inputs", "has 2000 tensors"),
    pytest.param(_config_pbtxt(backend="../../etc"), "manifest.backend", "not a backend name"),
    pytest.param(
        _config_pbtxt(max_batch_size=2**31 - 1, dims="[ 1073741824, 1073741824 ]"), "manifest.inputs[0].dims", "int64"
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("config, field, message", CONFIG_REFUSED)
def test_the_limits_hold_for_a_config_pbtxt_schema(actor, tmp_path, config, field, message):
    model = get_or_create_model("limits", actor)
    artifact = make_zip(tmp_path / "a.zip", {"config.pbtxt": config, "1/model.py": "x"})
    with pytest.raises(ManifestError) as caught:
        register_version(model, artifact, {}, actor)
    assert message in caught.value.errors.get(field, ""), caught.value.errors
    if field != "manifest.backend":
        assert "as the artifact declares it" in caught.value.errors[field]
    assert not ModelVersion.objects.exists() and not TensorSpec.objects.exists()


def _onnx_file(path, shape: list[int]):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["X"], ["Y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.django_db
@pytest.mark.parametrize(
    "shape, message", [([2**62, 2**62], "2**126 bytes"), ([1] * 40, "40 dimensions")], ids=["overflow", "rank"]
)
def test_the_limits_hold_for_an_onnx_graph_schema(actor, tmp_path, shape, message):
    model = get_or_create_model("limits", actor)
    with pytest.raises(ManifestError) as caught:
        register_version(model, _onnx_file(tmp_path / "model.onnx", shape), {}, actor)
    errors = caught.value.errors
    assert message in errors.get("manifest.inputs[0].dims", ""), errors
    assert message in errors.get("manifest.outputs[0].dims", ""), errors
    assert not ModelVersion.objects.exists()
