"""Sampling storage and drift: parsing Triton bodies, the digits model against its own data
and shifted data (PSI, one alert mail), live accuracy from late labels."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.contrib.auth.models import User

from modelhub.alerts.delivery import send_pending
from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.demo.artifacts import _manifest, write_evaluation_set
from modelhub.demo.data import load_eval_split, load_train_split
from modelhub.monitoring.drift import psi
from modelhub.monitoring.drift_tasks import run_drift
from modelhub.monitoring.models import CheckKind, CheckResult, Point, PredictionLabel, ReferenceProfile, SampleBlock
from modelhub.monitoring.sampling import Layout, iter_blocks, write_samples
from modelhub.registry.evaluation import attach_evaluation_set
from modelhub.registry.services import register_upload
from tests.alerts.conftest import rules, smtp  # noqa: F401  (fixtures)
from tests.conftest import doubler_source, make_zip

pytestmark = pytest.mark.django_db

START = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
END = START + timedelta(hours=1)


@pytest.fixture
def digits(tmp_path):
    actor = Actor(source=Source.CLI)
    artifact = make_zip(tmp_path / "digits.zip", {"1/model.py": doubler_source(2)})
    version = register_upload("digits", artifact, _manifest(0.95, "test"), actor, create=True).version
    version.model.owners.add(User.objects.create_user("owner", email="owner@example.com"))
    attach_evaluation_set(version.model, write_evaluation_set(tmp_path), actor, output="label")
    return version


def infer_bodies(x: np.ndarray, binary: bool) -> tuple[bytes, int | None]:
    """A Triton request body built by tritonclient, as the gateway sees it."""
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([tensor])
    return body, header_length


def response_body(labels: np.ndarray, scores: np.ndarray) -> bytes:
    import json

    outputs = [
        {"name": "label", "datatype": "INT64", "shape": [len(labels), 1], "data": labels.tolist()},
        {"name": "probabilities", "datatype": "FP32", "shape": list(scores.shape), "data": scores.ravel().tolist()},
    ]
    return json.dumps({"model_name": "digits", "outputs": outputs}).encode()


def feed(version, x: np.ndarray, y: np.ndarray, binary: bool = True, batch: int = 50, prefix: str = "r") -> None:
    samples = []
    for i, first in enumerate(range(0, len(x), batch)):
        rows = slice(first, first + batch)
        body, header_length = infer_bodies(x[rows], binary)
        scores = np.eye(10, dtype=np.float32)[y[rows]]
        samples.append(
            {
                "time": START + timedelta(seconds=i),
                "model": "digits",
                "version": version.number,
                "request_id": f"{prefix}{i}",
                "request_body": body,
                "binary_header_length": header_length,
                "response_body": response_body(y[rows].reshape(-1, 1), scores),
            }
        )
    write_samples(samples)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_write_samples_parses_infer_bodies_into_features_and_predicted_classes(digits, binary):
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 64)
    feed(digits, x, np.array([3, 7]), binary=binary, batch=2)
    (block,) = SampleBlock.objects.all()
    _, ids, features, outputs = next(iter_blocks(digits.pk, START, END, with_ids=True))
    assert block.count == 2 and ids == ["r0/0", "r0/1"]
    np.testing.assert_array_equal(features, x)  # 64 elements: one feature per pixel
    np.testing.assert_array_equal(outputs, [[3, 3], [7, 7]])  # label, argmax of probabilities
    assert Layout(digits).output_names == ["label", "probabilities.class"]


def test_a_sample_that_cannot_be_read_is_dropped_not_raised_and_its_batch_is_kept(digits):
    body, header_length = infer_bodies(np.zeros((1, 3), np.float32), False)  # 3 values, the schema says 64
    good, good_length = infer_bodies(np.ones((1, 64), np.float32), False)
    write_samples([{"time": START, "model": "digits", "version": 1, "request_id": "bad", "request_body": body,
                    "binary_header_length": header_length, "response_body": b"{}"},
                   {"time": START, "model": "digits", "version": 1, "request_id": "good", "request_body": good,
                    "binary_header_length": good_length,
                    "response_body": response_body(np.array([[3]]), np.eye(10, dtype=np.float32)[[3]])}])  # fmt: skip
    (block,) = SampleBlock.objects.all()
    assert block.count == 1 and block.request_ids == ["good"]


def test_digits_fed_its_own_data_shows_no_drift_and_mails_nobody(digits, rules, smtp):  # noqa: F811
    x, y = load_train_split()
    feed(digits, x, y)
    (result,) = run_drift(START, END)
    assert result.kind == CheckKind.DRIFT and result.status == "ok"
    assert result.details["rows"] == len(x)
    assert result.value < 0.2, result.details["psi"]
    assert result.details["js_outputs"] < 0.1
    assert ReferenceProfile.objects.get(version=digits).source == "evaluation_set"
    assert Point.objects.filter(metric="drift_psi:input[36]", target=f"version:{digits.pk}").exists()
    send_pending(END)
    assert smtp.messages == []


def test_shifted_inputs_show_psi_above_threshold_and_send_one_alert_mail(digits, rules, smtp):  # noqa: F811
    x, y = load_eval_split()
    feed(digits, np.clip(x + 6.0, 0, 16), y)  # brighter digits
    (result,) = run_drift(START, END)
    assert result.status == "fail" and result.value > 0.2
    assert "features drifted" in result.message and "JS distance" in result.message  # both rules' alerts read it
    assert result.details["drifted"] and 0 < result.details["ks"]["input[36]"] <= 1
    assert Point.objects.get(metric="drift_share", target=f"version:{digits.pk}").value > 0.3
    send_pending(END)
    (mail,) = smtp.messages
    assert "Input drift" in mail["Subject"] and "digits" in mail["Subject"]
    # The same window again: recorded once, no second mail.
    assert run_drift(START, END) == []
    send_pending(END + timedelta(minutes=10))
    assert len(smtp.messages) == 1
    assert CheckResult.objects.filter(kind=CheckKind.DRIFT).count() == 1


def test_labels_give_live_accuracy_per_version(digits):
    x, y = load_eval_split()
    feed(digits, x[:100], y[:100], batch=1)
    truth = y[:100].copy()
    truth[:25] = (truth[:25] + 1) % 10  # a quarter predicted wrong
    PredictionLabel.objects.bulk_create(
        [PredictionLabel(model=digits.model, request_id=f"r{i}", label=str(v)) for i, v in enumerate(truth)]
    )
    run_drift(START, END)
    assert Point.objects.get(metric="live_accuracy", target=f"version:{digits.pk}").value == pytest.approx(0.75)


def test_psi_is_zero_for_the_same_distribution_and_large_for_a_moved_one():
    shares = np.full(10, 0.1)
    assert psi(shares, np.full(10, 100)) == pytest.approx(0.0)
    assert psi(shares, np.array([0] * 9 + [1000])) > 1
