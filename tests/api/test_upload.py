"""Uploading versions: streaming, idempotency, size cap, bare ONNX, and hostile input.

Every refused upload must leave nothing behind: no stored file, no temporary
file, no version or tensor row, no model created on the way.
"""

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from modelhub.api import uploads
from modelhub.audit.models import AuditEvent
from modelhub.registry.models import Model, ModelVersion
from tests.api.conftest import error_of, upload
from tests.conftest import doubler_source, make_tar_gz, make_zip

pytestmark = pytest.mark.django_db

CONFIG_PBTXT = """
backend: "python"
max_batch_size: 0
input [{ name: "INPUT", data_type: TYPE_FP32, dims: [ -1 ] }]
output [{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ -1 ] }]
"""


# --- the happy path ------------------------------------------------------------------


def test_upload_answers_201_then_the_same_bytes_answer_200_with_the_same_version(
    admin_api, doubler_artifact, doubler_manifest, snapshot
):
    artifact = doubler_artifact()
    first = upload(admin_api, "digits", artifact, doubler_manifest)
    assert first.status_code == 201, first.json()
    body = first.json()
    assert body["number"] == 1
    assert body["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert body["size"] == artifact.stat().st_size
    assert body["url"].endswith("/api/v1/models/digits/versions/1/")
    assert first["Location"] == body["url"]
    assert body["provenance"] == {"git_commit": "0123abcd", "ci_run_url": "https://ci.example.com/runs/1"}
    assert body["inputs"] == [{"name": "INPUT", "datatype": "FP32", "dims": [-1], "labels": None}]

    retry = upload(admin_api, "digits", artifact, doubler_manifest)
    assert retry.status_code == 200
    assert retry.json() == body
    assert ModelVersion.objects.count() == 1
    assert AuditEvent.objects.filter(action="version.register").count() == 1
    assert snapshot()["temporary"] == []  # the temporary upload files are gone


def test_the_same_bytes_with_another_schema_are_409_and_change_nothing(
    admin_api, doubler_artifact, doubler_manifest, snapshot
):
    artifact = doubler_artifact()
    assert upload(admin_api, "digits", artifact, doubler_manifest).status_code == 201
    before = snapshot()
    changed = json.loads(json.dumps(doubler_manifest))
    changed["inputs"][0]["datatype"] = "FP64"

    response = upload(admin_api, "digits", artifact, changed)

    assert response.status_code == 409, response.json()
    message = response.json()["error"]["message"]
    assert "already registered as digits v1 with a different inputs" in message
    assert snapshot() == before


def test_the_same_bytes_with_an_invalid_manifest_are_400_not_the_old_version(
    admin_api, doubler_artifact, doubler_manifest
):
    artifact = doubler_artifact()
    assert upload(admin_api, "digits", artifact, doubler_manifest).status_code == 201
    broken = json.loads(json.dumps(doubler_manifest))
    broken["inputs"][0]["datatype"] = "FP33"
    response = upload(admin_api, "digits", artifact, broken)
    assert response.status_code == 400
    assert "manifest.inputs[0].datatype" in response.json()["error"]["fields"]


def test_the_upload_is_moved_into_storage_not_copied(admin_api, doubler_artifact, doubler_manifest, monkeypatch):
    from django.core.files import move

    moved = []
    real_move = move.file_move_safe

    def spy(old, new, *args, **kwargs):
        moved.append((old, new))
        return real_move(old, new, *args, **kwargs)

    monkeypatch.setattr("django.core.files.storage.filesystem.file_move_safe", spy)
    assert upload(admin_api, "digits", doubler_artifact(), doubler_manifest).status_code == 201
    [(old, new)] = moved
    assert "upload-tmp" in str(old) and str(new).endswith(".zip")
    assert ModelVersion.objects.get().artifact.path == new


def test_new_bytes_make_the_next_version(admin_api, doubler_artifact, doubler_manifest):
    upload(admin_api, "digits", doubler_artifact(2), doubler_manifest)
    response = upload(admin_api, "digits", doubler_artifact(3), doubler_manifest)
    assert response.status_code == 201
    assert response.json()["number"] == 2
    listed = admin_api.get("/api/v1/models/digits/versions/").json()
    assert [v["number"] for v in listed["results"]] == [2, 1]
    assert admin_api.get("/api/v1/models/digits/versions/2/").json()["sha256"] == response.json()["sha256"]


def test_upload_creates_the_model_from_the_manifest(admin_api, doubler_artifact, doubler_manifest):
    manifest = {**doubler_manifest, "description": "doubles", "task_kind": "regression"}
    assert upload(admin_api, "doubler", doubler_artifact(), manifest).status_code == 201
    model = Model.objects.get(name="doubler")
    assert (model.description, model.task_kind) == ("doubles", "regression")
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"model.create", "version.register"} <= actions


def test_the_manifest_may_be_a_file_part(admin_api, doubler_artifact, doubler_manifest):
    with open(doubler_artifact(), "rb") as artifact:
        manifest = io.BytesIO(json.dumps(doubler_manifest).encode())
        manifest.name = "manifest.json"
        response = admin_api.post(
            "/api/v1/models/digits/versions/", {"artifact": artifact, "manifest": manifest}, format="multipart"
        )
    assert response.status_code == 201, response.json()


def test_an_archive_with_config_pbtxt_needs_no_manifest(admin_api, tmp_path):
    artifact = make_tar_gz(tmp_path / "m.tar.gz", {"config.pbtxt": CONFIG_PBTXT, "1/model.py": doubler_source()})
    response = upload(admin_api, "digits", artifact)
    assert response.status_code == 201, response.json()
    assert response.json()["backend"] == "python"
    assert response.json()["artifact_format"] == "tar.gz"


def test_the_artifact_is_streamed_through_the_hashing_handler(
    admin_api, doubler_artifact, doubler_manifest, monkeypatch, isolated_storage
):
    seen = {}
    real = uploads.ArtifactUploadHandler.receive_data_chunk

    def spy(self, raw_data, start):
        seen["chunks"] = seen.get("chunks", 0) + 1
        seen["largest"] = max(seen.get("largest", 0), len(raw_data))
        seen["temporary"] = Path(self.file.temporary_file_path()).parent
        return real(self, raw_data, start)

    monkeypatch.setattr(uploads.ArtifactUploadHandler, "receive_data_chunk", spy)
    registered = {}
    from modelhub.api import views

    real_register = views.register_upload

    def register_spy(*args, **kwargs):
        registered.update(kwargs, path=args[1])
        return real_register(*args, **kwargs)

    monkeypatch.setattr(views, "register_upload", register_spy)
    artifact = doubler_artifact()
    assert upload(admin_api, "digits", artifact, doubler_manifest).status_code == 201
    assert seen["chunks"] >= 1 and seen["largest"] <= uploads.ArtifactUploadHandler.chunk_size
    assert seen["temporary"] == isolated_storage / "upload-tmp"
    # The digest computed on the way in is the one the registry uses: no second pass.
    assert registered["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert registered["size"] == artifact.stat().st_size
    assert not Path(registered["path"]).exists()


# --- refusals that are not about the archive --------------------------------------------


def test_over_the_size_cap_is_413_and_leaves_nothing(admin_api, settings, tmp_path, doubler_manifest, snapshot):
    settings.MAX_ARTIFACT_BYTES = 10_000
    before = snapshot()
    big = make_zip(tmp_path / "big.zip", {"1/model.bin": bytes(range(256)) * 200})  # stored incompressibly enough
    big.write_bytes(big.read_bytes() + b"\0" * 20_000)
    response = upload(admin_api, "digits", big, doubler_manifest)
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "too_large"
    assert "10000 bytes" in error["message"]
    assert snapshot() == before


def test_an_announced_oversize_body_is_refused_before_reading_it(admin_api, settings, monkeypatch, snapshot):
    settings.MAX_ARTIFACT_BYTES = 1000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    def never(*args):
        raise AssertionError("the body must not be read")

    monkeypatch.setattr(uploads.ArtifactUploadHandler, "receive_data_chunk", never)
    before = snapshot()
    response = upload(admin_api, "digits", b"x" * 200_000, {})
    assert response.status_code == 413
    assert snapshot() == before


def test_a_json_body_is_415(admin_api):
    response = admin_api.post("/api/v1/models/digits/versions/", {"manifest": "{}"}, format="json")
    assert response.status_code == 415
    assert "multipart/form-data" in error_of(response)["message"]


@pytest.mark.parametrize(
    "artifact, manifest, field, message",
    [
        (None, {}, "artifact", "required"),
        (b"", {}, "artifact", "empty"),
        ("zip", "{not json", "manifest", "not valid JSON"),
        ("zip", "[1, 2]", "manifest", "must be a JSON object"),
        ("zip", '{"metadata": {"x": "a\\u0000b"}}', "manifest", "NUL"),
        ("zip", '{"metadata": {"x": NaN}}', "manifest", "not valid JSON"),
        ("zip", '{"metadata": ' + "[" * 40 + "]" * 40 + "}", "manifest", "nested deeper"),
        ("zip", '{"backend": "python", "shoe_size": 44}', "manifest.shoe_size", "unknown field"),
    ],
)
def test_bad_upload_fields_are_400_naming_the_field(
    admin_api, doubler_artifact, artifact, manifest, field, message, snapshot
):
    before = snapshot()
    if artifact == "zip":
        artifact = doubler_artifact()
    response = upload(admin_api, "digits", artifact, manifest)
    assert response.status_code == 400, response.json()
    error = error_of(response)
    assert message in error["fields"][field]
    assert snapshot() == before


def test_the_artifact_sent_as_a_text_field_is_400(admin_api):
    response = admin_api.post(
        "/api/v1/models/digits/versions/", {"artifact": "abc", "manifest": "{}"}, format="multipart"
    )
    assert response.status_code == 400
    assert "file part" in error_of(response)["fields"]["artifact"]


def test_an_invalid_model_name_is_400(admin_api, doubler_artifact, doubler_manifest):
    response = upload(admin_api, "Bad_Name", doubler_artifact(), doubler_manifest)
    assert response.status_code == 400
    assert "model_name" in error_of(response)["fields"]


def test_a_restricted_token_uploads_to_its_model_but_creates_none(
    client_with, registered, doubler_artifact, doubler_manifest, snapshot
):
    registered("digits")
    client = client_with("upload", models=["digits"])
    assert upload(client, "digits", doubler_artifact(7), doubler_manifest).status_code == 201
    before = snapshot()
    response = upload(client, "fresh", doubler_artifact(8), doubler_manifest)
    assert response.status_code == 404
    assert snapshot() == before


def test_a_read_token_cannot_upload(client_with, doubler_artifact, doubler_manifest, snapshot):
    before = snapshot()
    response = upload(client_with("read", "deploy"), "digits", doubler_artifact(), doubler_manifest)
    assert response.status_code == 403
    assert snapshot() == before


# --- bare ONNX --------------------------------------------------------------------


def tiny_onnx(path: Path, batch: bool = True) -> Path:
    first = "batch" if batch else 2
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [first, 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [first, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_a_bare_onnx_model_fills_in_its_schema(admin_api, tmp_path):
    response = upload(admin_api, "relu", tiny_onnx(tmp_path / "model.onnx"), {"max_batch_size": 8})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["platform"] == "onnxruntime_onnx"
    assert body["artifact_format"] == "onnx"
    assert body["max_batch_size"] == 8
    assert body["inputs"] == [{"name": "X", "datatype": "FP32", "dims": [3], "labels": None}]
    assert body["outputs"] == [{"name": "Y", "datatype": "FP32", "dims": [3], "labels": None}]


def test_a_bare_onnx_model_without_manifest_keeps_full_dims(admin_api, tmp_path):
    response = upload(admin_api, "relu", tiny_onnx(tmp_path / "model.onnx"))
    assert response.status_code == 201, response.json()
    assert response.json()["inputs"][0]["dims"] == [-1, 3]


@pytest.mark.parametrize(
    "manifest, field, message",
    [
        (
            {"inputs": [{"name": "X", "datatype": "INT64", "dims": [-1, 3]}]},
            "manifest.inputs",
            "disagrees with the artifact",
        ),
        ({"inputs": [{"name": "Z", "datatype": "FP32", "dims": [-1, 3]}]}, "manifest.inputs", "input 'X' is not in"),
        ({"platform": "tensorflow_savedmodel"}, "manifest.platform", "disagrees with the artifact"),
    ],
)
def test_a_manifest_that_disagrees_with_the_onnx_graph_is_400(admin_api, tmp_path, manifest, field, message, snapshot):
    before = snapshot()
    response = upload(admin_api, "relu", tiny_onnx(tmp_path / "model.onnx"), manifest)
    assert response.status_code == 400, response.json()
    assert message in error_of(response)["fields"][field]
    assert snapshot() == before


def test_batching_an_onnx_graph_without_a_batch_dimension_is_400(admin_api, tmp_path):
    response = upload(admin_api, "relu", tiny_onnx(tmp_path / "model.onnx", batch=False), {"max_batch_size": 4})
    assert response.status_code == 400
    assert "batch" in error_of(response)["fields"]["manifest.max_batch_size"]


def test_a_broken_onnx_file_is_400(admin_api, tmp_path, snapshot):
    good = tiny_onnx(tmp_path / "model.onnx").read_bytes()
    before = snapshot()
    response = upload(admin_api, "relu", good[: len(good) // 2])
    assert response.status_code == 400
    assert "not a valid ONNX model" in error_of(response)["fields"]["artifact"]
    assert snapshot() == before


# --- hostile archives ----------------------------------------------------------------


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"print('hi')\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, None


def absolute_path(tmp: Path) -> Path:
    return _tar(tmp / "a.tar.gz", [_file("1/model.py"), _file("/etc/cron.d/evil")])


def dotdot(tmp: Path) -> Path:
    return make_zip(tmp / "a.zip", {"1/model.py": doubler_source(), "1/../../evil.py": "x"})


def symlink(tmp: Path) -> Path:
    return _tar(tmp / "a.tar.gz", [_file("1/model.py"), _special("1/passwd", tarfile.SYMTYPE, "/etc/passwd")])


def hardlink(tmp: Path) -> Path:
    return _tar(tmp / "a.tar.gz", [_file("1/model.py"), _special("1/passwd", tarfile.LNKTYPE, "/etc/passwd")])


def zip_symlink(tmp: Path) -> Path:
    path = make_zip(tmp / "a.zip", {"1/model.py": doubler_source()})
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("1/link")
        info.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    return path


def device_file(tmp: Path) -> Path:
    return _tar(tmp / "a.tar.gz", [_file("1/model.py"), _special("1/null", tarfile.CHRTYPE)])


def fifo(tmp: Path) -> Path:
    return _tar(tmp / "a.tar.gz", [_file("1/model.py"), _special("1/pipe", tarfile.FIFOTYPE)])


def too_many_entries(tmp: Path) -> Path:
    return make_zip(tmp / "a.zip", {f"1/f{i}.py": "x" for i in range(20)})


def zip_bomb(tmp: Path) -> Path:
    path = tmp / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("1/model.onnx", "w") as out:
        for _ in range(8):
            out.write(bytes(1024 * 1024))
    assert path.stat().st_size < 100_000
    return path


def corrupt_zip(tmp: Path) -> Path:
    path = make_zip(tmp / "a.zip", {"1/model.py": doubler_source() * 50})
    data = bytearray(path.read_bytes())
    data[60:200] = b"\xff" * 140  # inside the compressed data
    path.write_bytes(bytes(data))
    return path


def truncated_tar_gz(tmp: Path) -> Path:
    path = make_tar_gz(tmp / "a.tar.gz", {"1/model.py": doubler_source(), "1/weights.bin": bytes(range(256)) * 400})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def not_an_archive(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("this is not a model\n" * 10)
    return path


def two_versions(tmp: Path) -> Path:
    return make_zip(tmp / "a.zip", {"1/model.py": doubler_source(), "2/model.py": doubler_source()})


def config_disagrees(tmp: Path) -> Path:
    return make_zip(tmp / "a.zip", {"config.pbtxt": CONFIG_PBTXT.replace("TYPE_FP32", "TYPE_INT32"), "1/model.py": "x"})


def config_does_not_parse(tmp: Path) -> Path:
    return make_zip(tmp / "a.zip", {"config.pbtxt": "backend: python {{{", "1/model.py": "x"})


def doubler(tmp: Path) -> Path:
    # Bytes of their own: the same bytes as a registered version would just return it.
    return make_zip(tmp / "a.zip", {"1/model.py": doubler_source(9)})


MANIFEST = {
    "backend": "python",
    "inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [-1]}],
    "outputs": [{"name": "OUTPUT", "datatype": "FP32", "dims": [-1]}],
}
HOSTILE = [
    pytest.param(absolute_path, MANIFEST, "artifact", "absolute paths are not allowed", id="absolute-path"),
    pytest.param(dotdot, MANIFEST, "artifact", "'..' path components are not allowed", id="dotdot"),
    pytest.param(symlink, MANIFEST, "artifact", "symbolic links are not allowed", id="symlink"),
    pytest.param(zip_symlink, MANIFEST, "artifact", "symbolic links are not allowed", id="zip-symlink"),
    pytest.param(hardlink, MANIFEST, "artifact", "hard links are not allowed", id="hardlink"),
    pytest.param(device_file, MANIFEST, "artifact", "character device members are not allowed", id="device"),
    pytest.param(fifo, MANIFEST, "artifact", "FIFO members are not allowed", id="fifo"),
    pytest.param(too_many_entries, MANIFEST, "artifact", "more than 10 entries (max_entries)", id="too-many-entries"),
    pytest.param(zip_bomb, MANIFEST, "artifact", "unpacks to more than 1048576 bytes", id="zip-bomb"),
    pytest.param(corrupt_zip, MANIFEST, "artifact", "corrupt", id="corrupt-zip"),
    pytest.param(truncated_tar_gz, MANIFEST, "artifact", "truncated", id="truncated-tar-gz"),
    pytest.param(not_an_archive, MANIFEST, "artifact", "not a zip or tar archive", id="not-an-archive"),
    pytest.param(two_versions, MANIFEST, "artifact", "upload one version per artifact", id="two-versions"),
    pytest.param(config_disagrees, MANIFEST, "manifest.inputs", "disagrees with the artifact", id="config-mismatch"),
    pytest.param(config_does_not_parse, MANIFEST, "artifact", "config.pbtxt does not parse", id="config-garbage"),
    pytest.param(
        doubler,
        {**MANIFEST, "inputs": [{"name": "INPUT", "datatype": "FP99", "dims": [-1]}]},
        "manifest.inputs[0].datatype",
        "unknown datatype 'FP99'",
        id="unknown-datatype",
    ),
    pytest.param(
        doubler,
        {**MANIFEST, "outputs": [{"name": "OUT", "datatype": "FP32", "dims": [1]}] * 2},
        "manifest.outputs[1].name",
        "duplicate tensor name 'OUT'",
        id="duplicate-tensor-names",
    ),
    pytest.param(
        doubler,
        {**MANIFEST, "inputs": [{"name": "INPUT", "datatype": "FP32", "dims": [0]}]},
        "manifest.inputs[0].dims",
        "must be a list of positive integers",
        id="zero-dim",
    ),
]


@pytest.mark.parametrize("existing_model", [False, True], ids=["new-model", "existing-model"])
@pytest.mark.parametrize("build, manifest, field, message", HOSTILE)
def test_hostile_uploads_are_400_and_change_nothing(
    admin_api, registered, settings, tmp_path, snapshot, build, manifest, field, message, existing_model
):
    if existing_model:
        registered("target")
    settings.MAX_ARCHIVE_ENTRIES = 10
    settings.MAX_UNPACKED_BYTES = 1024 * 1024
    artifact = build(tmp_path)
    before = snapshot()
    response = upload(admin_api, "target", artifact, manifest)
    assert response.status_code == 400, response.json()
    error = error_of(response)
    assert error["code"] == "invalid"
    assert message in error["fields"][field], error
    assert message in error["message"]
    assert snapshot() == before
