"""Artifacts and evaluation sets in an S3-compatible bucket (MODELHUB_ARTIFACT_STORAGE=s3).

Against a real S3-compatible server: moto's server mode, a separate process on a
free loopback port (in another process, so the memory measured here is ModelHub's
alone). The same paths as on disk: upload → register → download → deploy into
the session's Triton → evaluation set → accuracy; a 200 MiB artifact both ways in
bounded memory; an unreachable bucket answers 503 naming it and keeps nothing; a
failed database write leaves no object behind.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import numpy as np
import onnx
import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from modelhub.api.tokens import issue_token
from modelhub.registry.artifacts import read_artifact_files
from modelhub.registry.models import EvaluationSet, Model, ModelVersion, TensorSpec
from modelhub.registry.services import (
    delete_version_rows,
    get_or_create_model,
    register_upload,
    register_version,
    sha256_of,
)
from modelhub.registry.storage import StorageUnavailable
from modelhub.serving import model_repository
from modelhub.serving.models import InferenceServer, ObservedState, triton_model_name
from modelhub.serving.services import request_deploy
from modelhub.serving.triton_client import TritonClient
from modelhub.settings import BASE_DIR
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_tar_gz, make_zip

PREFIX = "modelhub/artifacts"
KEYS = {"access_key": "modelhub-test", "secret_key": "modelhub-test-secret"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """moto's S3-compatible server, in its own process, for the session."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def s3_options(endpoint: str, bucket: str) -> dict:
    """What modelhub/settings.py builds from MODELHUB_S3_* (test_settings_build_the_bucket_storage checks it)."""
    return {
        "bucket_name": bucket,
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        **KEYS,
        "addressing_style": "path",
        "location": PREFIX,
        "file_overwrite": False,
        "connect_timeout": 2.0,
    }


@dataclass
class Bucket:
    client: object
    name: str
    endpoint: str

    def objects(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        for chunk in self.client.get_object(Bucket=self.name, Key=key)["Body"].iter_chunks(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()

    def multipart_uploads(self) -> list:
        return self.client.list_multipart_uploads(Bucket=self.name).get("Uploads", [])


def use_storage(settings, options: dict) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "modelhub.registry.storage.ArtifactS3Storage", "OPTIONS": options},
    }


@pytest.fixture
def bucket(s3_endpoint, settings):
    """A fresh bucket, made ModelHub's artifact storage for the test."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEYS["access_key"],
        aws_secret_access_key=KEYS["secret_key"],
    )
    name = f"mh-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=name)
    use_storage(settings, s3_options(s3_endpoint, name))
    return Bucket(client, name, s3_endpoint)


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


@pytest.fixture
def admin(db):
    user = User.objects.create_user("s3-admin", password="pw")
    user.groups.add(Group.objects.get_or_create(name="admin")[0])
    return user


@pytest.fixture
def api(admin, actor):
    _, token = issue_token(name="ci", user=admin, scopes=["admin"], actor=actor)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def upload(api: APIClient, model: str, artifact: Path, manifest: dict):
    with open(artifact, "rb") as fh:
        return api.post(
            f"/api/v1/models/{model}/versions/", {"artifact": fh, "manifest": json.dumps(manifest)}, format="multipart"
        )


def downloaded_sha256(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response
    digest = hashlib.sha256()
    for chunk in response.streaming_content:
        digest.update(chunk)
    return digest.hexdigest()


# --- the whole path through the bucket ----------------------------------------------------------


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_upload_register_download_deploy_and_evaluate_through_the_bucket(
    triton, bucket, api, admin, actor, tmp_path, settings
):
    artifact = make_zip(tmp_path / "doubler.zip", {"1/model.py": doubler_source(2)})

    response = upload(api, "s3-doubler", artifact, DOUBLER_MANIFEST)

    assert response.status_code == 201, response.json()
    version = ModelVersion.objects.get(model__name="s3-doubler", number=1)
    assert version.sha256 == sha256_of(artifact)[0]
    key = f"{PREFIX}/s3-doubler/{version.sha256}.zip"
    assert bucket.objects() == [key] and version.artifact.name == f"s3-doubler/{version.sha256}.zip"
    assert bucket.sha256(key) == version.sha256
    assert files_under(settings.MEDIA_ROOT) == []  # nothing went to the local folder
    assert upload(api, "s3-doubler", artifact, DOUBLER_MANIFEST).status_code == 200  # same bytes: same version
    assert bucket.objects() == [key]

    ui = APIClient()
    ui.force_login(admin)
    assert downloaded_sha256(ui, "/models/s3-doubler/versions/1/artifact") == version.sha256

    server = InferenceServer.objects.create(name="local", base_url=triton.http_url, metrics_url=triton.metrics_url)
    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciles on commit
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    client = TritonClient.for_server(server)
    name = triton_model_name("s3-doubler", 1)
    out = client.infer(name, 1, {"INPUT": np.array([1.5, 4.0], dtype=np.float32)}, {"INPUT": "FP32"})
    assert out["OUTPUT"].tolist() == [3.0, 8.0]

    lines = [{"inputs": {"INPUT": [float(i), 1.0]}, "expected": [2.0 * i, 2.0]} for i in range(5)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    response = api.put(
        "/api/v1/models/s3-doubler/evaluation-set/",
        {"file": SimpleUploadedFile("set.jsonl", data), "output": "OUTPUT", "metric": "mae"},
        format="multipart",
    )
    assert response.status_code == 201, response.json()
    evaluation_key = f"{PREFIX}/s3-doubler/evaluation/{hashlib.sha256(data).hexdigest()}.jsonl"
    assert evaluation_key in bucket.objects() and files_under(settings.MEDIA_ROOT) == []

    response = api.post("/api/v1/models/s3-doubler/versions/1/accuracy/")  # read back from the bucket, run in Triton
    assert response.status_code in (200, 201), response.json()
    assert response.json()["value"] == 0.0, response.json()
    client.unload(name)
    client.close()


@pytest.mark.django_db
def test_a_model_repository_is_written_from_the_bucket(bucket, actor, tmp_path):
    """No local path: the bare ONNX file cannot be hard-linked and zip members cannot be copied in
    the kernel, so both are streamed out of the bucket instead."""
    stored = {"1/model.py": doubler_source(3), "1/data/blob.bin": os.urandom(300_000), "labels.txt": "a\nb\n"}
    archive = tmp_path / "stored.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # stored members: the kernel-copy path on disk
        for path, data in stored.items():
            zf.writestr(path, data)
    version = register_version(get_or_create_model("s3-repo", actor), archive, DOUBLER_MANIFEST, actor).version
    files = read_artifact_files(version)
    assert files.path is None and files.stored_ranges() == {}

    repository = tmp_path / "repository"
    repository.mkdir()
    model_repository.write_model_folder(
        str(repository), "local", "s3-repo", {1: (version.sha256, files)}, dict.fromkeys(files.model_files, files), {}
    )

    written = repository / "s3-repo"
    for path, data in stored.items():
        assert (written / path).read_bytes() == (data.encode() if isinstance(data, str) else data), path

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["X"], ["Y"])],
        "identity",
        [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [4])],
        [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [4])],
    )
    bare = tmp_path / "model.onnx"
    bare.write_bytes(onnx.helper.make_model(graph).SerializeToString())
    onnx_version = register_version(get_or_create_model("s3-onnx", actor), bare, {}, actor).version
    onnx_files = read_artifact_files(onnx_version)
    model_repository.write_model_folder(
        str(repository), "local", "s3-onnx", {1: (onnx_version.sha256, onnx_files)}, {}, {}
    )
    assert (repository / "s3-onnx" / "1" / "model.onnx").read_bytes() == bare.read_bytes()  # not a hard link: copied


@pytest.mark.django_db
def test_a_stored_object_reads_seeks_and_opens_again_like_a_file(bucket, actor, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than the read buffer, not a multiple of it
    archive = make_zip(tmp_path / "blob.zip", {"1/model.py": doubler_source(2), "1/blob.bin": data})
    version = register_version(get_or_create_model("s3-seek", actor), archive, DOUBLER_MANIFEST, actor).version
    raw = archive.read_bytes()

    stored = version.artifact
    with stored.open("rb") as fh:
        assert fh.size == len(raw)
        assert fh.read(10) == raw[:10]
        fh.seek(-100, os.SEEK_END)
        assert fh.read() == raw[-100:]
        fh.seek(5)
        assert fh.read(2 * 1024 * 1024) == raw[5 : 5 + 2 * 1024 * 1024]
    with stored.open("rb") as fh:  # the same FieldFile, opened again after it was closed (accuracy passes do)
        assert hashlib.sha256(fh.read()).hexdigest() == version.sha256
    with read_artifact_files(version).streams() as members:
        assert {relpath: stream.read() for _, relpath, stream in members}["blob.bin"] == data


@pytest.mark.django_db
def test_deleting_a_version_removes_its_object_after_commit(
    bucket, actor, tmp_path, django_capture_on_commit_callbacks
):
    model = get_or_create_model("s3-delete", actor)
    kept = register_version(
        model, make_zip(tmp_path / "a.zip", {"1/model.py": doubler_source(2)}), DOUBLER_MANIFEST, actor
    )
    gone = register_version(
        model, make_zip(tmp_path / "b.zip", {"1/model.py": doubler_source(3)}), DOUBLER_MANIFEST, actor
    )
    assert len(bucket.objects()) == 2

    packed = make_tar_gz(tmp_path / "c.tar.gz", {"1/model.py": doubler_source(4)})
    tar = register_version(model, packed, DOUBLER_MANIFEST, actor).version
    head = bucket.client.head_object(Bucket=bucket.name, Key=f"{PREFIX}/{tar.artifact.name}")
    assert "ContentEncoding" not in head and head["ContentType"] == "application/octet-stream"  # nobody unpacks it

    with django_capture_on_commit_callbacks(execute=True):
        delete_version_rows(gone.version, actor)
        delete_version_rows(tar, actor)

    assert bucket.objects() == [f"{PREFIX}/{kept.version.artifact.name}"]


# --- memory: a large artifact streams both ways -------------------------------------------------

LARGE = 200 * 1024 * 1024
BOUND = 48 * 1024 * 1024  # the most Python may hold at once for it, read or write: under a quarter of it


@pytest.fixture
def large_artifact(tmp_path) -> Path:
    """A 200 MiB zip: the doubler beside incompressible weights, written a MiB at a time."""
    path = tmp_path / "large.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("1/model.py", doubler_source(2))
        with zf.open("1/weights.bin", "w", force_zip64=True) as member:
            for _ in range(LARGE // (1 << 20)):
                member.write(os.urandom(1 << 20))
    return path


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_a_200_mib_artifact_streams_to_and_from_the_bucket_in_bounded_memory(
    triton, bucket, admin, actor, large_artifact, settings
):
    settings.TRITON_LOAD_TIMEOUT_S = 180.0  # Triton decodes 200 MiB of base64: seconds on a busy CPU
    sha256, size = sha256_of(large_artifact)
    peaks = {}

    tracemalloc.start()
    try:
        registration = register_upload(
            "s3-large", large_artifact, DOUBLER_MANIFEST, actor, create=True, sha256=sha256, size=size
        )
        peaks["upload"] = tracemalloc.get_traced_memory()[1]

        tracemalloc.reset_peak()
        ui = APIClient()
        ui.force_login(admin)
        assert downloaded_sha256(ui, "/models/s3-large/versions/1/artifact") == sha256
        peaks["download"] = tracemalloc.get_traced_memory()[1]

        tracemalloc.reset_peak()
        server = InferenceServer.objects.create(name="local", base_url=triton.http_url, metrics_url=triton.metrics_url)
        [deployment] = request_deploy(registration.version, [server], actor)
        peaks["load into Triton"] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    key = f"{PREFIX}/s3-large/{sha256}.zip"
    assert bucket.objects() == [key] and bucket.sha256(key) == sha256
    assert bucket.multipart_uploads() == []  # multipart (200 MiB), completed
    print({what: f"{peak / 2**20:.1f} MiB" for what, peak in peaks.items()})
    for what, peak in peaks.items():
        assert peak < BOUND, f"{what} held {peak / 2**20:.1f} MiB at its peak for a {size / 2**20:.0f} MiB artifact"
    client = TritonClient.for_server(server)
    client.unload(triton_model_name("s3-large", 1))
    client.close()


# --- failures: nothing half-written -------------------------------------------------------------


@pytest.fixture
def dead_bucket(settings):
    """Storage settings naming an endpoint nothing listens on."""
    endpoint = f"http://127.0.0.1:{_free_port()}"
    use_storage(settings, {**s3_options(endpoint, "mh-unreachable"), "max_attempts": 1})
    return endpoint


def snapshot(settings) -> dict:
    return {
        "models": list(Model.objects.values_list("name", flat=True)),
        "versions": ModelVersion.objects.count(),
        "tensors": TensorSpec.objects.count(),
        "evaluation sets": EvaluationSet.objects.count(),
        "local files": files_under(settings.MEDIA_ROOT),
        "upload temporary files": files_under(settings.FILE_UPLOAD_TEMP_DIR),
    }


@pytest.mark.django_db
def test_an_unreachable_bucket_is_a_503_naming_it_and_nothing_is_kept(dead_bucket, api, admin, tmp_path, settings):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-tmp")
    (tmp_path / "upload-tmp").mkdir()
    before = snapshot(settings)
    artifact = make_zip(tmp_path / "doubler.zip", {"1/model.py": doubler_source(2)})

    response = upload(api, "s3-down", artifact, DOUBLER_MANIFEST)

    assert response.status_code == 503, response.json()
    assert response["Retry-After"]
    error = response.json()["error"]
    assert error["code"] == "storage_unavailable"
    assert f"S3 bucket 'mh-unreachable' under {PREFIX}/ at {dead_bucket}" in error["message"]
    assert snapshot(settings) == before  # no model, no version, no file, no temporary file


@pytest.mark.triton
@pytest.mark.django_db(transaction=True)
def test_with_the_bucket_gone_download_and_deploy_say_which_bucket(triton, bucket, admin, actor, tmp_path, settings):
    artifact = make_zip(tmp_path / "doubler.zip", {"1/model.py": doubler_source(2)})
    version = register_version(get_or_create_model("s3-gone", actor), artifact, DOUBLER_MANIFEST, actor).version
    endpoint = f"http://127.0.0.1:{_free_port()}"
    use_storage(settings, {**s3_options(endpoint, bucket.name), "max_attempts": 1})

    ui = APIClient()
    ui.force_login(admin)
    response = ui.get("/models/s3-gone/versions/1/artifact")
    assert response.status_code == 503
    assert f"S3 bucket {bucket.name!r} under {PREFIX}/ at {endpoint}" in response.content.decode()

    server = InferenceServer.objects.create(name="local", base_url=triton.http_url, metrics_url=triton.metrics_url)
    [deployment] = request_deploy(version, [server], actor)
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.FAILED
    assert f"S3 bucket {bucket.name!r} under {PREFIX}/ at {endpoint}" in deployment.last_error
    assert "corrupt" not in deployment.last_error  # the storage's fault, not the archive's


@pytest.mark.django_db
def test_a_failed_database_write_leaves_no_object_in_the_bucket(bucket, api, tmp_path, settings):
    # A real database failure in the middle of the registration: the schema rows' insert fails.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_tensors() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'tensor rows refused by the test'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER refuse_tensors BEFORE INSERT ON {TensorSpec._meta.db_table} "
            "FOR EACH ROW EXECUTE FUNCTION refuse_tensors()"
        )
    artifact = make_zip(tmp_path / "doubler.zip", {"1/model.py": doubler_source(2)})
    before = snapshot(settings)

    response = upload(api, "s3-rollback", artifact, DOUBLER_MANIFEST)

    assert response.status_code == 500
    assert snapshot(settings) == before
    assert bucket.objects() == []  # the object stored before the transaction was removed again


@pytest.mark.django_db
def test_a_missing_object_is_a_file_not_found_and_a_refused_bucket_names_itself(bucket, actor, tmp_path, settings):
    artifact = make_zip(tmp_path / "doubler.zip", {"1/model.py": doubler_source(2)})
    version = register_version(get_or_create_model("s3-missing", actor), artifact, DOUBLER_MANIFEST, actor).version
    storage = version.artifact.storage
    bucket.client.delete_object(Bucket=bucket.name, Key=f"{PREFIX}/{version.artifact.name}")
    with pytest.raises(FileNotFoundError, match="s3-missing/"):
        storage.open(version.artifact.name)

    use_storage(settings, {**s3_options(bucket.endpoint, "mh-no-such-bucket"), "max_attempts": 1})
    with pytest.raises(StorageUnavailable, match="S3 bucket 'mh-no-such-bucket'.*NoSuchBucket"):
        version.artifact.storage.save("x/y.bin", SimpleUploadedFile("y.bin", b"data"))


# --- settings -----------------------------------------------------------------------------------


def settings_storage(tmp_path, **env_vars) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELHUB_S3_", "MODELHUB_ARTIFACT_STORAGE"))}
    env.update(DJANGO_SETTINGS_MODULE="modelhub.settings", MODELHUB_VAR_DIR=str(tmp_path), **env_vars)
    code = "import json; from django.conf import settings; print(json.dumps(settings.STORAGES['default']))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
    )


def test_settings_build_the_bucket_storage_and_refuse_what_cannot_work(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(KEYS["secret_key"] + "\n")
    result = settings_storage(
        tmp_path,
        MODELHUB_ARTIFACT_STORAGE="s3",
        MODELHUB_S3_BUCKET="mh-bucket",
        MODELHUB_S3_ENDPOINT_URL="http://127.0.0.1:9000",
        MODELHUB_S3_REGION="us-east-1",
        MODELHUB_S3_ACCESS_KEY_ID=KEYS["access_key"],
        MODELHUB_S3_SECRET_ACCESS_KEY_FILE=str(secret),  # secrets may come from files
        MODELHUB_S3_ADDRESSING_STYLE="path",
        MODELHUB_S3_PREFIX=f"/{PREFIX}/",
        MODELHUB_S3_CONNECT_TIMEOUT_S="2",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "BACKEND": "modelhub.registry.storage.ArtifactS3Storage",
        "OPTIONS": s3_options("http://127.0.0.1:9000", "mh-bucket"),
    }
    default = settings_storage(tmp_path)
    assert json.loads(default.stdout) == {"BACKEND": "django.core.files.storage.FileSystemStorage"}

    for env_vars, named in [
        ({"MODELHUB_ARTIFACT_STORAGE": "s3"}, "MODELHUB_S3_BUCKET"),
        ({"MODELHUB_ARTIFACT_STORAGE": "ftp"}, "MODELHUB_ARTIFACT_STORAGE"),
        (
            {"MODELHUB_ARTIFACT_STORAGE": "s3", "MODELHUB_S3_BUCKET": "b", "MODELHUB_S3_ENDPOINT_URL": "minio:9000"},
            "MODELHUB_S3_ENDPOINT_URL",
        ),
        (
            {"MODELHUB_ARTIFACT_STORAGE": "s3", "MODELHUB_S3_BUCKET": "b", "MODELHUB_S3_ADDRESSING_STYLE": "dns"},
            "MODELHUB_S3_ADDRESSING_STYLE",
        ),
    ]:
        result = settings_storage(tmp_path, **env_vars)
        assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr, env_vars
        assert named in result.stderr.splitlines()[-1]
