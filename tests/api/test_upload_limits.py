"""Uploads that cannot work are refused up front: impossible manifests, bodies without a
length, and archives that unpack out of proportion to their size (zip bombs).

Every refusal names what was wrong and leaves nothing behind.
"""

import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelhub.settings import BASE_DIR
from tests.api.conftest import error_of, upload
from tests.conftest import doubler_source, make_zip

MIB = 1024 * 1024


def _manifest(doubler_manifest: dict, **changes) -> dict:
    return {**doubler_manifest, **changes}


def _input(**changes) -> list[dict]:
    return [{"name": "INPUT", "datatype": "FP32", "dims": [-1], **changes}]


# Each was answered 201 (2**70: 500) before the limits.
IMPOSSIBLE = [
    pytest.param({"inputs": _input(dims=[2**63])}, "manifest.inputs[0].dims", id="dim-2**63"),
    pytest.param({"inputs": _input(dims=[10**30])}, "manifest.inputs[0].dims", id="dim-10**30"),
    pytest.param({"inputs": _input(dims=[2**62, 2**62])}, "manifest.inputs[0].dims", id="elements-overflow"),
    pytest.param({"inputs": _input(dims=[1] * 10_000)}, "manifest.inputs[0].dims", id="10000-dims"),
    pytest.param(
        {"inputs": [{"name": f"IN{i}", "datatype": "FP32", "dims": [1]} for i in range(10_000)]},
        "manifest.inputs",
        id="10000-inputs",
    ),
    pytest.param({"max_batch_size": 2**40}, "manifest.max_batch_size", id="max-batch-2**40"),
    pytest.param({"max_batch_size": 2**70}, "manifest.max_batch_size", id="max-batch-2**70"),
    pytest.param({"inputs": _input(name="N" * 10_000)}, "manifest.inputs[0].name", id="10000-char-name"),
    pytest.param({"backend": "../../etc"}, "manifest.backend", id="backend-path"),
    pytest.param({"backend": "", "platform": "../../etc"}, "manifest.platform", id="platform-path"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("changes, field", IMPOSSIBLE)
def test_a_manifest_triton_or_the_database_cannot_hold_is_400_naming_the_field(
    admin_api, doubler_artifact, doubler_manifest, snapshot, changes, field
):
    before = snapshot()
    response = upload(admin_api, "limits", doubler_artifact(), _manifest(doubler_manifest, **changes))
    assert response.status_code == 400, response.content[:500]
    error = error_of(response)
    assert error["code"] == "invalid"
    assert list(error["fields"]) == [field], error["fields"]
    assert len(error["message"]) < 1000  # a line a CI log can show, not the 10,000 items echoed back
    assert snapshot() == before


# --- a body without a length -------------------------------------------------------------


def _chunked_upload(url: str, token: str, body: bytes, boundary: str) -> tuple[int, dict]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/v1/models/chunked/versions/")
        connection.putheader("Authorization", f"Bearer {token}")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for start in range(0, len(body), 4096):
            chunk = body[start : start + 4096]
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def _multipart(artifact: bytes, manifest: dict, boundary: str) -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="manifest"\r\n\r\n{json.dumps(manifest)}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="a.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + artifact
        + f"\r\n--{boundary}--\r\n".encode()
    )


# A real server, as the test client always sends a Content-Length.
@pytest.mark.django_db(transaction=True)
def test_an_upload_without_content_length_is_411_saying_so(
    live_server, make_token, doubler_artifact, doubler_manifest, snapshot
):
    token = make_token("upload")
    before = snapshot()
    boundary = uuid.uuid4().hex
    body = _multipart(doubler_artifact().read_bytes(), doubler_manifest, boundary)
    status, answer = _chunked_upload(live_server.url, token, body, boundary)
    assert status == 411, answer
    assert answer["error"]["code"] == "length_required"
    assert "no Content-Length header" in answer["error"]["message"]
    assert "chunked" in answer["error"]["message"]
    assert "artifact" not in answer["error"]["fields"]
    assert snapshot() == before


# --- archives that unpack out of proportion ---------------------------------------------


def _zip_bomb(path: Path, unpacked: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("1/model.py", doubler_source())
        with zf.open("1/weights.bin", "w", force_zip64=True) as out:
            for _ in range(unpacked // MIB):
                out.write(bytes(MIB))
    return path


def _tar_gz_bomb(path: Path, unpacked: int) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        source = doubler_source().encode()
        info = tarfile.TarInfo("1/model.py")
        info.size = len(source)
        tf.addfile(info, io.BytesIO(source))
        info = tarfile.TarInfo("1/weights.bin")
        info.size = unpacked
        tf.addfile(info, _Zeros(unpacked))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n

    def readable(self) -> bool:
        return True


@pytest.mark.django_db
def test_a_zip_bomb_under_the_size_caps_is_refused_for_its_ratio_with_the_default_settings(
    admin_api, tmp_path, doubler_manifest, snapshot, settings
):
    """128 MiB from 128 KiB: within every size cap, but 1000 times its packed size."""
    bomb = _zip_bomb(tmp_path / "bomb.zip", 128 * MIB)
    packed = bomb.stat().st_size
    assert packed < MIB and 128 * MIB < settings.MAX_UNPACKED_BYTES
    before = snapshot()
    response = upload(admin_api, "bomb", bomb, doubler_manifest)
    assert response.status_code == 400, response.json()
    message = error_of(response)["fields"]["artifact"]
    assert message.endswith(": 1/weights.bin"), message  # the member
    assert f"from {packed} packed bytes" in message and "100 times" in message  # the figures
    assert f"at least {128 * MIB + len(doubler_source())} bytes" in message
    assert f"at most {settings.COMPRESSION_RATIO_FLOOR_BYTES} bytes are exempt" in message
    assert snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize("build", [_zip_bomb, _tar_gz_bomb], ids=["zip", "tar.gz"])
def test_the_compression_ratio_cap_and_its_floor_are_settings(
    admin_api, tmp_path, doubler_manifest, snapshot, settings, build
):
    settings.COMPRESSION_RATIO_FLOOR_BYTES = MIB
    settings.MAX_COMPRESSION_RATIO = 20
    bomb = build(tmp_path / f"bomb.{build.__name__}", 4 * MIB)  # about 1000:1
    before = snapshot()
    response = upload(admin_api, "bomb", bomb, doubler_manifest)
    assert response.status_code == 400, response.json()
    message = error_of(response)["fields"]["artifact"]
    assert "over 20 times its packed size" in message and "1/weights.bin" in message
    assert snapshot() == before

    settings.MAX_COMPRESSION_RATIO = 2000  # the same archive, with room for its ratio
    assert upload(admin_api, "bomb", bomb, doubler_manifest).status_code == 201


@pytest.mark.django_db
def test_a_small_very_compressible_archive_is_under_the_floor(admin_api, tmp_path, doubler_manifest):
    archive = make_zip(tmp_path / "sparse.zip", {"1/model.py": doubler_source(), "1/zeros.bin": bytes(8 * MIB)})
    assert (8 * MIB) / archive.stat().st_size > 100  # far over the ratio, but only 8 MiB
    assert upload(admin_api, "sparse", archive, doubler_manifest).status_code == 201


def test_the_default_unpacked_cap_follows_the_artifact_cap(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "modelhub.settings",
        "MODELHUB_VAR_DIR": str(tmp_path),
        "MODELHUB_MAX_ARTIFACT_BYTES": str(100 * MIB),
    }
    env.pop("MODELHUB_MAX_UNPACKED_BYTES", None)
    result = subprocess.run(
        [sys.executable, "-c", "from modelhub import settings as s; print(s.MAX_UNPACKED_BYTES)"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == 200 * MIB
