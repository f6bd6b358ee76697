"""Issue 10: a disk full while an upload is received or stored.

The artifact store (MEDIA_ROOT) or the upload temporary folder (FILE_UPLOAD_TEMP_DIR)
is a real 4 MiB tmpfs: a 6 MiB upload runs out of room for real (ENOSPC from the
kernel). The API answers 413 storage_full naming the store, leaves no row, no stored
file and no temporary file, and a small upload on the same store still succeeds.
"""

import errno
import json
import os
import subprocess

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from modelhub.audit.models import AuditEvent
from modelhub.lib.diskspace import StorageFull, is_full
from modelhub.registry.models import EvaluationSet, Model, ModelVersion
from tests.api.conftest import bearer, upload
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB filesystem (tmpfs), unmounted afterwards."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def api(admin_token):
    return bearer(admin_token)


def files_under(folder) -> list[str]:
    return sorted(os.path.join(root, name) for root, _, names in os.walk(folder) for name in names)


def big_artifact(tmp_path):
    # Random bytes: deflate cannot shrink them below the 4 MiB of the small disk.
    return make_zip(tmp_path / "big.zip", {"1/model.py": doubler_source(2), "1/weights.bin": os.urandom(6 * MiB)})


def small_artifact(tmp_path):
    return make_zip(tmp_path / "small.zip", {"1/model.py": doubler_source(3)})


def assert_full(response, store: str, setting: str):
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert error["code"] == "storage_full"
    assert f"the {store} is full" in error["message"] and f"setting {setting}" in error["message"]
    assert "No space left on device" in error["message"] and "bytes free" in error["message"]


def test_a_full_artifact_store_answers_413_and_keeps_nothing(small_disk, api, settings, tmp_path):
    settings.MEDIA_ROOT = str(small_disk)
    temp_dir = tmp_path / "upload-temp"
    temp_dir.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(temp_dir)

    response = upload(api, "big", big_artifact(tmp_path), DOUBLER_MANIFEST)

    assert_full(response, "artifact store", "MODELHUB_ARTIFACT_ROOT")
    assert str(small_disk) not in response.json()["error"]["message"]  # the setting names it, not the path
    assert not Model.objects.exists() and not ModelVersion.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="version.").exists()
    assert files_under(small_disk) == [] and os.listdir(small_disk) == []  # no half file, no empty folder
    assert files_under(temp_dir) == []

    fits = upload(api, "big", small_artifact(tmp_path), DOUBLER_MANIFEST)
    assert fits.status_code == 201, fits.content
    assert files_under(small_disk) == [str(small_disk / ModelVersion.objects.get().artifact.name)]
    assert files_under(temp_dir) == []


def test_a_full_upload_temp_folder_answers_413_and_keeps_nothing(small_disk, api, settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(small_disk)

    response = upload(api, "big", big_artifact(tmp_path), DOUBLER_MANIFEST)

    assert_full(response, "upload temporary folder", "MODELHUB_UPLOAD_TEMP_DIR")
    assert not Model.objects.exists() and not ModelVersion.objects.exists()
    assert files_under(small_disk) == []
    assert files_under(settings.MEDIA_ROOT) == []

    fits = upload(api, "big", small_artifact(tmp_path), DOUBLER_MANIFEST)
    assert fits.status_code == 201, fits.content
    assert files_under(small_disk) == []  # the temporary file was moved into the store


def fill(disk, leave: int) -> None:
    """Take all but `leave` bytes of the disk's free room."""
    stat = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - leave))


def evaluation_set(rows: int) -> SimpleUploadedFile:
    line = json.dumps({"inputs": {"INPUT": [1.0, 2.0, 3.0]}, "expected": [2.0, 4.0, 6.0]}) + "\n"
    return SimpleUploadedFile("set.jsonl", (line * rows).encode())


def put_set(api, rows: int):
    form = {"output": "OUTPUT", "metric": "mae", "file": evaluation_set(rows)}
    return api.put("/api/v1/models/big/evaluation-set/", form, format="multipart")


def test_a_full_disk_during_an_evaluation_set_upload_answers_413_and_keeps_nothing(small_disk, api, settings, tmp_path):
    temp_dir = tmp_path / "upload-temp"
    temp_dir.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(temp_dir)
    settings.MEDIA_ROOT = str(small_disk)
    assert upload(api, "big", small_artifact(tmp_path), DOUBLER_MANIFEST).status_code == 201
    stored_before = files_under(small_disk)
    fill(small_disk, leave=256 * 1024)  # a set of ~2 MiB does not fit

    response = put_set(api, 40_000)

    assert_full(response, "artifact store", "MODELHUB_ARTIFACT_ROOT")
    assert not EvaluationSet.objects.exists()
    assert files_under(small_disk) == sorted([*stored_before, str(small_disk / "filler")])
    assert files_under(temp_dir) == []
    assert put_set(api, 10).status_code == 201

    # The upload temporary folder full: refused while the body is received.
    settings.FILE_UPLOAD_TEMP_DIR = str(small_disk)
    (small_disk / "filler").unlink()
    fill(small_disk, leave=256 * 1024)
    kept, before = EvaluationSet.objects.get().sha256, files_under(small_disk)
    response = put_set(api, 40_000)
    assert_full(response, "upload temporary folder", "MODELHUB_UPLOAD_TEMP_DIR")
    assert EvaluationSet.objects.get().sha256 == kept  # the earlier set stays
    assert files_under(small_disk) == before  # no temporary file left


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_a_quota_or_file_size_limit_counts_as_a_full_disk_and_other_errors_do_not(code, tmp_path):
    # Narrow: a quota (EDQUOT) and a per-file limit (EFBIG) cannot be set up on a tmpfs.
    assert is_full(OSError(code, os.strerror(code)))
    full = StorageFull("artifact store", "MODELHUB_ARTIFACT_ROOT", tmp_path, OSError(code, os.strerror(code)))
    assert str(full).startswith(f"the artifact store is full: {os.strerror(code)} (setting MODELHUB_ARTIFACT_ROOT; ")
    assert not is_full(OSError(errno.EACCES, "Permission denied")) and not is_full(ValueError("x"))
