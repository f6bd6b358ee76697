"""The curl-only CI script against a live ModelHub and a real Triton: release,
release again, roll back, and a refused upload that fails the pipeline."""

import json
import os
import subprocess

import numpy as np
import pytest

from modelhub.registry.models import Alias, Model
from modelhub.serving.models import InferenceServer
from modelhub.serving.triton_client import TritonClient
from modelhub.settings import BASE_DIR
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

SCRIPT = BASE_DIR / "scripts" / "modelhub-ci.sh"


@pytest.fixture
def pipeline(live_server, triton, make_token, tmp_path):
    InferenceServer.objects.create(name="local", base_url=triton.http_url)
    token = make_token("read", "upload", "deploy")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(DOUBLER_MANIFEST))

    def run(*args: str, factor: int = 2, manifest_path=manifest) -> subprocess.CompletedProcess:
        artifact = tmp_path / f"model-{factor}.zip"
        if not artifact.exists():  # the same build output, byte for byte, when a job is re-run
            make_zip(artifact, {"1/model.py": doubler_source(factor)})
        env = {
            "PATH": os.environ["PATH"],
            "MODELHUB_URL": live_server.url,
            "MODELHUB_TOKEN": token,
            "MODEL": "ci-doubler",
            "ARTIFACT": str(artifact),
            "MANIFEST": str(manifest_path),
            "SERVER": "local",
            "ALIAS": "production",
            "WAIT_SECONDS": "60",
            "POLL_SECONDS": "0.5",
        }
        return subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180)

    return run


def production() -> int:
    return Alias.objects.get(model__name="ci-doubler", name="production").version.number


def answer(triton, version: int) -> float:
    client = TritonClient("local", triton.http_url)
    try:
        one = {"INPUT": np.array([1.0], dtype=np.float32)}
        out = client.infer(f"ci-doubler__v{version}", version, one, {"INPUT": "FP32"})  # the version's own name
        return float(out["OUTPUT"][0])
    finally:
        client.close()


def test_release_release_again_and_roll_back_with_curl_only(pipeline, triton):
    first = pipeline("release", factor=2)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "1"
    assert production() == 1 and answer(triton, 1) == 2.0

    second = pipeline("release", factor=3)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "2"
    assert production() == 2 and answer(triton, 2) == 3.0
    assert answer(triton, 1) == 2.0  # both versions served side by side

    retry = pipeline("release", factor=3)  # a re-run of the same job
    assert retry.returncode == 0 and retry.stdout.strip() == "2"

    rollback = pipeline("rollback", "1")
    assert rollback.returncode == 0, rollback.stderr
    assert production() == 1


def test_a_refused_upload_fails_the_pipeline_with_the_apis_message(pipeline, tmp_path):
    bad = json.loads(json.dumps(DOUBLER_MANIFEST))
    bad["inputs"][0]["datatype"] = "FP33"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))

    result = pipeline("release", manifest_path=path)

    assert result.returncode != 0
    assert "HTTP 400" in result.stderr and "manifest.inputs[0].datatype" in result.stderr
    assert result.stdout == ""
    assert not Alias.objects.exists()


def test_a_gated_promote_fails_the_pipeline_naming_the_gate_and_promotes_once_the_gates_pass(pipeline):
    assert pipeline("release", factor=2).returncode == 0  # ungated: v1 is production
    Model.objects.filter(name="ci-doubler").update(latency_slo_ms=0.001)  # no Triton answers that fast

    refused = pipeline("release", "--gate", factor=3)

    assert refused.returncode != 0 and refused.stdout == ""
    assert "HTTP 409" in refused.stderr and "gate 'latency' failed: p95" in refused.stderr
    assert "gate loaded: passed:" in refused.stderr and "gate latency: failed:" in refused.stderr  # a line per gate
    assert production() == 1

    Model.objects.filter(name="ci-doubler").update(latency_slo_ms=None)
    accepted = pipeline("promote", "--gate", "2")

    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.strip() == "2" and "version 2 passed every gate" in accepted.stderr
    assert production() == 2
