"""The accuracy check on a real tritonserver: the demo's digits classifier scores its real
held-out accuracy, a broken version falls below the threshold, batches stay within
max_batch_size, and CI uploads a set, runs the check and reads the result over the API."""

import json
import math
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from modelhub.demo.artifacts import build_demo_versions, write_evaluation_set
from modelhub.demo.data import load_eval_split
from modelhub.monitoring.accuracy import NoEvaluationSet, evaluate
from modelhub.monitoring.accuracy_tasks import accuracy_pass
from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status
from modelhub.monitoring.record import record
from modelhub.registry.evaluation import attach_evaluation_set
from modelhub.registry.services import get_or_create_model, register_version
from modelhub.serving.models import Deployment, InferenceServer, ObservedState, triton_model_name
from modelhub.serving.services import request_deploy
from modelhub.serving.triton_client import TritonClient

# ruff: noqa: F811 (pytest fixtures imported by name)
from tests.api.conftest import ci_user, make_token, make_user  # noqa: F401
from tests.conftest import DOUBLER_MANIFEST, doubler_source, make_zip

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.triton]

# Every image is a zero: the "broken" version a bad export could produce.
CONSTANT_MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            n = pb_utils.get_input_tensor_by_name(request, "input").as_numpy().shape[0]
            scores = np.zeros((n, 10), np.float32)
            scores[:, 0] = 1
            label = pb_utils.Tensor("label", np.zeros((n, 1), np.int64))
            responses.append(pb_utils.InferenceResponse([label, pb_utils.Tensor("probabilities", scores)]))
        return responses
"""


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """The demo's digits versions and evaluation set, built once (training takes seconds)."""
    folder = tmp_path_factory.mktemp("demo-build")
    return build_demo_versions(folder)[0], write_evaluation_set(folder), folder


@pytest.fixture
def server(triton):
    return InferenceServer.objects.create(name="local", base_url=triton.http_url, metrics_url=triton.metrics_url)


def deploy(version, server, actor) -> Deployment:
    [deployment] = request_deploy(version, [server], actor)  # eager Celery: reconciled on commit
    deployment.refresh_from_db()
    assert deployment.observed == ObservedState.LOADED, deployment.last_error
    return Deployment.objects.select_related("version__model", "server").get(pk=deployment.pk)


def onnx_accuracy(archive) -> float:
    """What onnxruntime computes for the same ONNX file on the same held-out images."""
    with zipfile.ZipFile(archive) as zf:
        session = ort.InferenceSession(zf.read("1/model.onnx"), providers=["CPUExecutionProvider"])
    features, labels = load_eval_split()
    predicted = session.run(["label"], {"input": features})[0][:, 0]
    return float(np.mean(predicted == labels))


def largest_triton_batch(triton, model: str, version: int) -> int:
    client = TritonClient("local", triton.http_url)
    try:
        stats = client.statistics(triton_model_name(model, version))["model_stats"]
    finally:
        client.close()
    [served] = [s for s in stats if s["version"] == str(version)]
    return max(int(b["batch_size"]) for b in served["batch_stats"])


def test_demo_digits_scores_its_real_accuracy_and_a_constant_version_fails(triton, server, actor, demo_build, tmp_path):
    good, evaluation_file, _ = demo_build
    model = get_or_create_model("acc-digits", actor)
    v1 = register_version(model, good.archive_path, good.manifest, actor).version
    broken = make_zip(tmp_path / "zero.zip", {"1/model.py": CONSTANT_MODEL_PY})
    v2 = register_version(model, broken, {**good.manifest, "metadata": {}}, actor).version
    attach_evaluation_set(model, evaluation_file, actor, output="label", threshold=0.9, tolerance=0.01)
    d1, d2 = deploy(v1, server, actor), deploy(v2, server, actor)
    client = TritonClient.for_server(server)

    first = evaluate(client, d1)
    expected = onnx_accuracy(good.archive_path)
    assert expected > 0.9
    assert first.status == Status.OK and first.value == pytest.approx(expected), first.message
    rows = len(load_eval_split()[1])
    assert first.details["rows"] == rows and first.details["batch_size"] == 64
    assert first.details["requests"] == math.ceil(rows / 64) and first.details["largest_request_rows"] == 64
    assert first.details["baseline"] == first.value and first.details["is_baseline"]
    assert largest_triton_batch(triton, "acc-digits", 1) <= 64  # what Triton itself executed
    record([first])

    again = evaluate(client, d1)
    assert again.details["baseline"] == first.value and not again.details["is_baseline"]

    bad = evaluate(client, d2)
    client.close()
    assert bad.status == Status.FAIL and bad.value == pytest.approx(np.mean(load_eval_split()[1] == 0))
    assert "below the threshold 0.9" in bad.message
    [row] = record([bad])
    assert (row.kind, row.status, row.version_id, row.server_id) == (CheckKind.ACCURACY, "fail", v2.pk, server.pk)
    assert Point.objects.filter(metric="accuracy", target=f"version:{v2.pk}").get().value == bad.value


def test_a_model_without_batching_gets_one_row_per_request(triton, server, actor, tmp_path):
    model = get_or_create_model("acc-doubler", actor)
    artifact = make_zip(tmp_path / "d.zip", {"1/model.py": doubler_source(2)})
    version = register_version(model, artifact, DOUBLER_MANIFEST, actor).version
    lines = [{"inputs": {"INPUT": [float(i), 1.0]}, "expected": [2.0 * i, 2.0]} for i in range(7)]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    attach_evaluation_set(model, path, actor, output="OUTPUT", metric="mae", threshold=0.001)
    deployment = deploy(version, server, actor)

    result = evaluate(TritonClient.for_server(server), deployment)

    assert result.status == Status.OK and result.value == 0.0, result.message
    assert result.details["requests"] == 7 and result.details["largest_request_rows"] == 1
    assert result.details["batch_size"] == 1


def test_a_set_the_version_cannot_take_is_a_clear_fail_not_a_crash(server, actor, tmp_path):
    model = get_or_create_model("acc-mismatch", actor)
    v1 = register_version(
        model, make_zip(tmp_path / "a.zip", {"1/model.py": doubler_source(2)}), DOUBLER_MANIFEST, actor
    ).version
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"inputs": {"INPUT": [1.0]}, "expected": [2.0]}) + "\n")
    attach_evaluation_set(model, path, actor, output="OUTPUT", metric="mae")
    renamed = {**DOUBLER_MANIFEST, "inputs": [{"name": "PIXELS", "datatype": "FP32", "dims": [-1]}]}
    v2 = register_version(
        model, make_zip(tmp_path / "b.zip", {"1/model.py": doubler_source(3)}), renamed, actor
    ).version
    deployment = Deployment.objects.create(version=v2, server=server)  # never asked: the set fails first

    result = evaluate(TritonClient.for_server(server), deployment)

    assert result.status == Status.FAIL and result.value is None
    assert "does not fit acc-mismatch v2's schema" in result.message and "'PIXELS' is missing" in result.message
    model.evaluation_set.delete()
    with pytest.raises(NoEvaluationSet, match="'acc-mismatch' has no evaluation set"):
        evaluate(TritonClient.for_server(server), Deployment.objects.create(version=v1, server=server))


def test_ci_uploads_a_set_runs_the_check_and_reads_the_results(triton, server, actor, demo_build, make_token):
    from tests.api.conftest import bearer

    good, evaluation_file, _ = demo_build
    ci = bearer(make_token("upload"))
    model = get_or_create_model("acc-api", actor)
    v1 = register_version(model, good.archive_path, good.manifest, actor).version
    url = "/api/v1/models/acc-api/evaluation-set/"

    refused = ci.post("/api/v1/models/acc-api/versions/1/accuracy/")
    assert refused.status_code == 409 and "has no evaluation set" in refused.json()["error"]["message"]
    form = {"output": "label", "metric": "accuracy", "threshold": "0.9", "tolerance": "0.02"}
    bad = ci.put(url, {**form, "file": SimpleUploadedFile("s.jsonl", b'{"inputs": {}, "expected": 1}\n')}, "multipart")
    assert bad.status_code == 400
    assert bad.json()["error"]["fields"] == {"file": "line 1: input 'input' is missing"}
    upload = SimpleUploadedFile("set.npz", evaluation_file.read_bytes())
    created = ci.put(url, {**form, "file": upload}, format="multipart")
    assert created.status_code == 201, created.json()
    assert created.json()["rows"] == 450 and created.json()["tolerance"] == 0.02
    assert ci.get(url).json()["sha256"] == created.json()["sha256"]

    not_loaded = ci.post("/api/v1/models/acc-api/versions/1/accuracy/")
    assert not_loaded.status_code == 409 and "not loaded on any enabled server" in not_loaded.json()["error"]["message"]
    deploy(v1, server, actor)
    runs = [ci.post("/api/v1/models/acc-api/versions/1/accuracy/?server=local") for _ in range(2)]
    assert [r.status_code for r in runs] == [200, 200], runs[0].json()
    body = runs[0].json()
    assert body["status"] == "ok" and body["value"] == pytest.approx(good.accuracy, abs=1e-4)
    assert body["metric"] == "accuracy" and body["baseline"] and body["server"] == "local"

    listed = ci.get("/api/v1/models/acc-api/versions/1/accuracy/").json()["results"]
    assert [r["id"] for r in listed] == [runs[1].json()["id"], body["id"]]  # latest first
    assert [r["baseline"] for r in listed] == [False, True]
    assert ci.options(url).status_code == ci.options("/api/v1/models/acc-api/versions/9/accuracy/").status_code == 200
    assert ci.delete(url).status_code == 204 and ci.get(url).status_code == 404


def test_the_scheduled_pass_measures_each_loaded_version_once_until_it_is_due_again(
    triton, server, actor, tmp_path, settings
):
    model = get_or_create_model("acc-pass", actor)
    artifact = make_zip(tmp_path / "d.zip", {"1/model.py": doubler_source(2)})
    version = register_version(model, artifact, DOUBLER_MANIFEST, actor).version
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"inputs": {"INPUT": [1.0, 2.0]}, "expected": [2.0, 4.0]}) + "\n")
    attach_evaluation_set(model, path, actor, output="OUTPUT", metric="rmse", threshold=0.1)
    deployment = deploy(version, server, actor)

    assert accuracy_pass.delay().get() == [deployment.pk]  # eager: the run happened too
    assert accuracy_pass.delay().get() == []  # measured: not due again before the interval
    [result] = CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=version)
    assert (result.status, result.value, result.deployment_id) == ("ok", 0.0, deployment.pk)

    path.write_text(json.dumps({"inputs": {"INPUT": [1.0]}, "expected": [3.0]}) + "\n")
    attach_evaluation_set(model, path, actor, output="OUTPUT", metric="rmse", threshold=0.1)
    assert accuracy_pass.delay().get() == [deployment.pk]  # a new set: measured again at once
    latest = CheckResult.objects.filter(kind=CheckKind.ACCURACY, version=version).first()
    assert (latest.status, latest.value) == ("fail", 1.0)
