"""Evaluation sets: .npz and JSON lines read and checked against the latest version's schema,
stored content-addressed with their row, replaced and removed through one audited path."""

import io
import json
import os

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from modelhub.audit.models import AuditEvent
from modelhub.registry.evaluation import (
    EvaluationSetError,
    attach_evaluation_set,
    open_evaluation_data,
    remove_evaluation_set,
)
from modelhub.registry.models import EvaluationSet
from modelhub.registry.services import get_or_create_model, register_version
from tests.conftest import doubler_source, make_zip

pytestmark = pytest.mark.django_db

# One input per Triton datatype, two values per row; a BYTES label output and a scores output.
INTEGERS = ["UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
FLOATS = ["FP16", "BF16", "FP32", "FP64"]
ALL_TYPES = ["BOOL", *INTEGERS, *FLOATS, "BYTES"]
LABELS = ["cat", "dog", "eel"]
MANIFEST = {
    "backend": "python",
    "max_batch_size": 8,
    "inputs": [{"name": f"in_{t.lower()}", "datatype": t, "dims": [2]} for t in ALL_TYPES],
    "outputs": [
        {"name": "label", "datatype": "BYTES", "dims": [1]},
        {"name": "scores", "datatype": "FP32", "dims": [3], "labels": LABELS},
        {"name": "value", "datatype": "FP32", "dims": [1]},
    ],
}
ROWS = 5


def row_values(i: int) -> dict:
    values = {"in_bool": [True, i % 2 == 0], "in_bytes": [f"w{i}", "ünï"]}
    values.update({f"in_{t.lower()}": [i, i + 1] for t in INTEGERS})
    values.update({f"in_{t.lower()}": [i + 0.5, -1.25] for t in FLOATS})
    return values


def jsonl_bytes(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def good_jsonl(rows: int = ROWS) -> bytes:
    return jsonl_bytes([{"inputs": row_values(i), "expected": LABELS[i % 3]} for i in range(rows)])


def good_npz(rows: int = ROWS, output: str = "label", expected=None, **replace) -> bytes:
    arrays = {}
    for t in ALL_TYPES:
        name = f"in_{t.lower()}"
        column = [row_values(i)[name] for i in range(rows)]
        arrays[name] = np.array(column, dtype="U" if t == "BYTES" else None)
    arrays[output] = np.array([LABELS[i % 3] for i in range(rows)]) if expected is None else expected
    arrays.update(replace)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def version(actor, tmp_path):
    model = get_or_create_model("typed", actor)
    artifact = make_zip(tmp_path / "typed.zip", {"1/model.py": doubler_source(2)})
    return register_version(model, artifact, MANIFEST, actor).version


@pytest.fixture
def write(tmp_path):
    def write(data: bytes, name: str = "set.bin"):
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write


def attach(version, actor, path, **kwargs):
    kwargs.setdefault("output", "label")
    return attach_evaluation_set(version.model, path, actor, **kwargs)


def stored(settings) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), settings.MEDIA_ROOT)
        for d, _, files in os.walk(settings.MEDIA_ROOT)
        for f in files
        if "evaluation" in d
    )


@pytest.mark.parametrize("kind", ["npz", "jsonl"])
def test_every_datatype_is_read_into_what_triton_takes(version, actor, write, kind, settings):
    data = good_npz() if kind == "npz" else good_jsonl()
    evaluation_set = attach(version, actor, write(data), threshold=0.5)

    assert (evaluation_set.file_format, evaluation_set.rows, evaluation_set.metric) == (kind, ROWS, "accuracy")
    assert stored(settings) == [f"typed/evaluation/{evaluation_set.sha256}.{kind}"]
    read = open_evaluation_data(evaluation_set, version)
    assert read.rows == ROWS
    assert read.inputs["in_bool"].dtype == np.bool_ and read.inputs["in_bool"][1].tolist() == [True, False]
    for t in INTEGERS:
        assert read.inputs[f"in_{t.lower()}"].dtype == np.dtype(t.lower().replace("u", "u", 1)), t
        assert read.inputs[f"in_{t.lower()}"][3].tolist() == [3, 4]
    assert read.inputs["in_fp16"].dtype == np.float16 and read.inputs["in_fp64"].dtype == np.float64
    assert read.inputs["in_bf16"].dtype.name == "bfloat16" and float(read.inputs["in_bf16"][0, 0]) == 0.5
    assert read.inputs["in_bytes"][2].tolist() == [b"w2", "ünï".encode()]
    assert read.expected.tolist() == [LABELS[i % 3] for i in range(ROWS)]
    assert AuditEvent.objects.filter(action="evaluation_set.attach", model_id=version.model_id).count() == 1


def test_batches_never_exceed_the_batch_size_and_variable_rows_go_by_shape(actor, tmp_path, write):
    manifest = {
        "backend": "python",
        "max_batch_size": 4,
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [-1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [1]}],
    }
    model = get_or_create_model("ragged", actor)
    version = register_version(model, make_zip(tmp_path / "r.zip", {"1/model.py": "x"}), manifest, actor).version
    lengths = [2, 2, 2, 2, 2, 2, 3, 3, 2]
    rows = [{"inputs": {"x": [1.0] * n}, "expected": float(n)} for n in lengths]
    evaluation_set = attach_evaluation_set(model, write(jsonl_bytes(rows)), actor, output="y", metric="mae")
    read = open_evaluation_data(evaluation_set, version)

    batches = [(start, end, inputs["x"].shape) for start, end, inputs in read.batches(4)]
    assert batches == [(0, 4, (4, 2)), (4, 6, (2, 2)), (6, 8, (2, 3)), (8, 9, (1, 2))]
    assert [inputs["x"].shape for _, _, inputs in read.batches(0)] == [(n,) for n in lengths]


def test_scores_output_takes_labels_or_class_indices_and_top_k_needs_k_classes(version, actor, write):
    by_label = attach(version, actor, write(good_npz(output="scores")), output="scores", metric="top_k_accuracy", k=2)
    assert open_evaluation_data(by_label, version).expected.tolist()[:2] == ["cat", "dog"]
    indices = good_npz(output="scores", expected=np.array([0, 1, 2, 0, 1]))
    by_index = attach(version, actor, write(indices), output="scores", metric="accuracy")
    assert open_evaluation_data(by_index, version).expected.tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(EvaluationSetError) as refused:
        attach(version, actor, write(indices), output="scores", metric="top_k_accuracy", k=4)
    assert refused.value.errors == {"k": "k=4 but output 'scores' of typed v1 scores 3 classes"}


BAD_SETS = [
    # (what, file bytes, settings, field, message)
    (
        "jsonl value out of a datatype's range",
        lambda: jsonl_bytes(
            [{"inputs": {**row_values(i), "in_uint8": [1, 300 if i == 2 else 1]}, "expected": "cat"} for i in range(4)]
        ),
        {},
        "file",
        "line 3: input 'in_uint8': holds a value outside UINT8's 0..255",
    ),
    (
        "npz fraction for an integer input",
        lambda: good_npz(in_int32=np.array([[1, 2], [3, 4], [5, 6.5], [1, 1], [2, 2]])),
        {},
        "file",
        "row 2: input 'in_int32': holds a fraction or NaN; INT32 takes whole numbers",
    ),
    (
        "npz strings for a float input",
        lambda: good_npz(in_fp32=np.array([["a", "b"]] * ROWS)),
        {},
        "file",
        "input 'in_fp32': holds strings; FP32 takes numbers",
    ),
    (
        "npz numbers for a BYTES input",
        lambda: good_npz(in_bytes=np.zeros((ROWS, 2))),
        {},
        "file",
        "input 'in_bytes': holds float64 values; BYTES takes strings",
    ),
    (
        "npz rows of the wrong shape",
        lambda: good_npz(in_fp64=np.zeros((ROWS, 3))),
        {},
        "file",
        "input 'in_fp64': rows have shape [3], the schema's dims are [2] (-1: any size)",
    ),
    (
        "npz without an input",
        lambda: good_npz(),
        {"drop": "in_int8"},
        "file",
        "has no array named 'in_int8'",
    ),
    (
        "jsonl missing input",
        lambda: jsonl_bytes(
            [{"inputs": {k: v for k, v in row_values(0).items() if k != "in_bool"}, "expected": "cat"}]
        ),
        {},
        "file",
        "line 1: input 'in_bool' is missing",
    ),
    (
        "jsonl broken line",
        lambda: good_jsonl(2) + b'{"inputs": \n',
        {},
        "file",
        "line 3: not JSON",
    ),
    (
        "BOOL given 2",
        lambda: jsonl_bytes([{"inputs": {**row_values(0), "in_bool": [1, 2]}, "expected": "cat"}]),
        {},
        "file",
        "line 1: input 'in_bool': BOOL takes true/false (or 0/1)",
    ),
    (
        "expected label not among the output's labels",
        lambda: good_npz(output="scores", expected=np.array(["cat", "dog", "yak", "cat", "dog"])),
        {"output": "scores"},
        "file",
        "row 2: expected value (output 'scores'): label 'yak' is not one of the output's labels",
    ),
    (
        "class index out of range",
        lambda: good_npz(output="scores", expected=np.array([0, 1, 2, 3, 0])),
        {"output": "scores"},
        "file",
        "row 3: expected value (output 'scores'): class index 3 is outside 0..2",
    ),
    (
        "MAE against string expectations",
        lambda: good_npz(output="value"),
        {"output": "value", "metric": "mae"},
        "file",
        "expected value (output 'value'): holds <U3 values; MAE and RMSE need numbers",
    ),
    ("unknown output", lambda: good_npz(), {"output": "nope"}, "output", "typed v1 has no output 'nope'"),
    (
        "MAE on a BYTES output",
        lambda: good_npz(),
        {"metric": "mae"},
        "metric",
        "mae needs a numeric output; 'label' of typed v1 is BYTES",
    ),
    ("threshold out of 0..1", lambda: good_npz(), {"threshold": 1.5}, "threshold", "between 0 and 1"),
    ("pickled object arrays", lambda: good_npz(label=np.array(["a"] * ROWS, dtype=object)), {}, "file", "pickle"),
]


@pytest.mark.parametrize("what, data, options, field, message", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_a_bad_set_is_refused_naming_the_row_the_field_and_what_is_wrong(
    version, actor, write, settings, what, data, options, field, message
):
    options = dict(options)
    raw = data()
    if "drop" in options:
        raw = good_npz(**{})  # rebuilt below without one input
        arrays = dict(np.load(io.BytesIO(raw)))
        del arrays[options.pop("drop")]
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        raw = buffer.getvalue()
    if "pickle" in message:
        buffer = io.BytesIO()
        arrays = dict(np.load(io.BytesIO(good_npz())))
        arrays["label"] = np.array(["a"] * ROWS, dtype=object)
        np.savez(buffer, **arrays)
        raw = buffer.getvalue()
        message = "cannot be read"
    with pytest.raises(EvaluationSetError) as refused:
        attach(version, actor, write(raw), **options)
    assert message in refused.value.errors.get(field, ""), refused.value.errors
    assert not EvaluationSet.objects.exists() and stored(settings) == []


def test_caps_on_rows_and_size(version, actor, write, settings):
    settings.MAX_EVALUATION_ROWS = 3
    with pytest.raises(EvaluationSetError, match="over the limit of 3 .*MODELHUB_MAX_EVALUATION_ROWS"):
        attach(version, actor, write(good_jsonl(4)))
    with pytest.raises(EvaluationSetError, match="has 5 rows, over the limit of 3"):
        attach(version, actor, write(good_npz(5)))
    settings.MAX_EVALUATION_ROWS = 100
    settings.MAX_EVALUATION_BYTES = 100
    with pytest.raises(EvaluationSetError, match="MODELHUB_MAX_EVALUATION_BYTES"):
        attach(version, actor, write(good_jsonl()))


def test_a_new_upload_replaces_the_set_and_its_old_file_goes_after_commit(
    version, actor, write, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = attach(version, actor, write(good_npz(), "a.npz"))
    old_name = first.file.name
    with django_capture_on_commit_callbacks(execute=True):
        second = attach(version, actor, write(good_jsonl(), "b.jsonl"), threshold=0.8)

    assert EvaluationSet.objects.get().pk == first.pk
    assert (second.file_format, second.threshold) == ("jsonl", 0.8)
    assert stored(settings) == [second.file.name] and old_name != second.file.name
    # The same bytes again: the stored file is kept, not duplicated.
    with django_capture_on_commit_callbacks(execute=True):
        attach(version, actor, write(good_jsonl(), "c.jsonl"))
    assert stored(settings) == [second.file.name]

    with django_capture_on_commit_callbacks(execute=True):
        remove_evaluation_set(version.model, actor)
    assert not EvaluationSet.objects.exists() and stored(settings) == []
    actions = list(AuditEvent.objects.filter(model_id=version.model_id).values_list("action", flat=True))
    assert actions.count("evaluation_set.attach") == 3 and "evaluation_set.remove" in actions


def test_a_model_without_versions_cannot_take_a_set(actor, write):
    model = get_or_create_model("empty", actor)
    with pytest.raises(EvaluationSetError, match="has no version"):
        attach_evaluation_set(model, write(good_jsonl()), actor, output="label")


def test_admin_upload_goes_through_the_service_and_shows_refusals(version, admin_client, settings):
    url = "/admin/registry/evaluationset/add/"
    form = {"model": version.model.pk, "output": "label", "metric": "accuracy", "k": 1, "tolerance": 0.0}
    bad = admin_client.post(url, {**form, "upload": SimpleUploadedFile("bad.jsonl", b"{}\n")})
    assert bad.status_code == 200 and b"line 1: must be an object" in bad.content
    assert not EvaluationSet.objects.exists()

    response = admin_client.post(url, {**form, "upload": SimpleUploadedFile("set.npz", good_npz())})
    assert response.status_code == 302, response.content[:2000]
    evaluation_set = EvaluationSet.objects.get()
    assert evaluation_set.rows == ROWS and stored(settings) == [evaluation_set.file.name]
    event = AuditEvent.objects.get(action="evaluation_set.attach")
    assert event.source == "admin"

    # A change without a new file re-checks the stored one with the new settings.
    change = f"/admin/registry/evaluationset/{evaluation_set.pk}/change/"
    response = admin_client.post(change, {**form, "threshold": 0.7})
    assert response.status_code == 302, response.content[:2000]
    assert EvaluationSet.objects.get().threshold == 0.7
