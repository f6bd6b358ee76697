"""Prediction logs, late labels and reference samples over the API: validation names the
record and the tensor; labels become live accuracy; an uploaded reference replaces the profile."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.demo.artifacts import _manifest
from modelhub.monitoring.drift_tasks import run_drift
from modelhub.monitoring.models import Point, PredictionLabel, ReferenceProfile, SampleBlock
from modelhub.registry.services import register_upload
from tests.conftest import doubler_source, make_zip

pytestmark = pytest.mark.django_db

T = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
PREDICTIONS = "/api/v1/models/digits/versions/1/predictions/"


@pytest.fixture
def digits(tmp_path):
    artifact = make_zip(tmp_path / "digits.zip", {"1/model.py": doubler_source(2)})
    return register_upload("digits", artifact, _manifest(0.9, "t"), Actor(source=Source.CLI), create=True).version


def record(i: int, pixels=None, label: int = 3, **extra) -> dict:
    scores = np.eye(10)[label].tolist()
    body = {
        "request_id": f"req-{i}",
        "time": T.isoformat(),
        "inputs": {"input": pixels if pixels is not None else [float(i % 16)] * 64},
        "outputs": {"label": [label], "probabilities": scores},
    }
    return {**body, **extra}


def test_logs_are_stored_as_features_and_outputs(digits, client_with):
    response = client_with("upload").post(PREDICTIONS, [record(0), record(1, label=7)], format="json")
    assert response.status_code == 201, response.json()
    assert response.json() == {"accepted": 2}
    (block,) = SampleBlock.objects.all()
    assert block.count == 2 and block.request_ids == ["req-0", "req-1"] and block.source == "api"


@pytest.mark.parametrize(
    "bad, field, words",
    [
        (record(1, pixels=[1.0] * 63), "[1].inputs.input", "63 values per row"),
        (record(1, pixels=["a"] * 64), "[1].inputs.input", "not numbers"),
        ({**record(1), "inputs": {}}, "[1].inputs.input", "missing"),
        ({**record(1), "inputs": {"input": [0.0] * 64, "extra": [1]}}, "[1].inputs.extra", "not one of"),
        ({k: v for k, v in record(1).items() if k != "request_id"}, "[1].request_id", "required"),
    ],
    ids=["too-few-values", "not-numbers", "missing-input", "unknown-input", "no-request-id"],
)
def test_a_record_that_does_not_fit_the_schema_is_a_400_naming_it(digits, client_with, bad, field, words):
    response = client_with("upload").post(PREDICTIONS, [record(0), bad], format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["fields"] and words in error["fields"][field], error
    assert not SampleBlock.objects.exists()


def test_a_read_token_may_not_upload_logs(digits, client_with):
    assert client_with("read").post(PREDICTIONS, [record(0)], format="json").status_code == 403
    assert not SampleBlock.objects.exists()


def test_labels_posted_late_give_live_accuracy(digits, client_with):
    client = client_with("upload")
    assert client.post(PREDICTIONS, [record(i, label=i % 10) for i in range(10)], format="json").status_code == 201
    labels = [{"request_id": f"req-{i}", "label": str(i % 10 if i < 8 else 0)} for i in range(10)]
    response = client.post("/api/v1/models/digits/labels/", labels, format="json")
    assert response.status_code == 201 and response.json() == {"accepted": 10}
    # Labelled again: the newer label counts.
    client.post("/api/v1/models/digits/labels/", [{"request_id": "req-9", "label": "9"}], format="json")
    assert PredictionLabel.objects.get(request_id="req-9").label == "9"
    reference = [record(i, label=i % 10) for i in range(20)]
    assert client.put("/api/v1/models/digits/versions/1/reference/", reference, format="json").status_code == 201
    start = T.replace(minute=0)
    run_drift(start, start + timedelta(hours=1))
    assert Point.objects.get(metric="live_accuracy", target=f"version:{digits.pk}").value == pytest.approx(0.9)


def test_an_uploaded_reference_replaces_the_profile(digits, client_with):
    client = client_with("upload")
    url = "/api/v1/models/digits/versions/1/reference/"
    assert client.put(url, [record(i) for i in range(5)], format="json").status_code == 201
    assert client.put(url, [record(i) for i in range(8)], format="json").status_code == 201
    profile = ReferenceProfile.objects.get(version=digits)
    assert profile.rows == 8 and profile.source == "upload" and profile.class_shares == {"3": 1.0}
    bad = client.put(url, [record(0, pixels=[1.0])], format="json")
    assert bad.status_code == 400 and "[0].inputs.input" in bad.json()["error"]["fields"]


def test_empty_lists_store_nothing_and_an_empty_reference_falls_back_to_the_evaluation_set(digits, client_with):
    client = client_with("upload")
    assert client.post(PREDICTIONS, [], format="json").json() == {"accepted": 0}
    assert client.post("/api/v1/models/digits/labels/", [], format="json").json() == {"accepted": 0}
    assert not SampleBlock.objects.exists() and not PredictionLabel.objects.exists()

    url = "/api/v1/models/digits/versions/1/reference/"
    assert client.put(url, [record(i, label=i % 10) for i in range(20)], format="json").status_code == 201
    assert ReferenceProfile.objects.get(version=digits).source == "upload"
    assert client.put(url, [], format="json").json() == {"accepted": 0}
    assert not ReferenceProfile.objects.filter(version=digits).exists()  # rebuilt from the evaluation set when needed


@pytest.mark.parametrize(
    ("url", "write"),
    [
        (PREDICTIONS, "POST"),
        ("/api/v1/models/digits/labels/", "POST"),
        ("/api/v1/models/digits/versions/1/reference/", "PUT"),
    ],
)
def test_options_describes_each_endpoint(digits, client_with, url, write):
    response = client_with("upload").options(url)
    assert response.status_code == 200, response.content
    assert write in response["Allow"]
    described = response.json()
    assert described["name"] and described["description"]
    assert "application/json" in described["parses"]


@pytest.mark.parametrize("body", [[None], [1], ["x"], [[]], {}, "x", None, [{"request_id": None}]])
@pytest.mark.parametrize("url", [PREDICTIONS, "/api/v1/models/digits/labels/"])
def test_a_body_that_is_not_a_list_of_records_is_a_400(digits, client_with, url, body):
    response = client_with("upload").post(url, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"]


def test_each_upload_is_one_audit_row_naming_who_and_how_many(digits, client_with):
    from modelhub.audit.models import AuditEvent

    client = client_with("upload")
    client.post(PREDICTIONS, [record(0), record(1)], format="json")
    client.post("/api/v1/models/digits/labels/", [{"request_id": "req-0", "label": "3"}], format="json")
    client.put("/api/v1/models/digits/versions/1/reference/", [record(i) for i in range(12)], format="json")
    refused = client.post(PREDICTIONS, [record(0, pixels=[1.0])], format="json")
    assert refused.status_code == 400
    rows = {
        e.action: e
        for e in AuditEvent.objects.filter(
            source="api", action__in=["predictions.upload", "labels.upload", "drift.reference"]
        )
    }
    assert rows["predictions.upload"].details["samples"] == 2
    assert rows["labels.upload"].details["labels"] == 1
    assert rows["drift.reference"].details["rows"] == 12
    assert all(e.actor.startswith("token:") for e in rows.values())
    assert AuditEvent.objects.filter(action="predictions.upload").count() == 1  # the refused upload wrote nothing
