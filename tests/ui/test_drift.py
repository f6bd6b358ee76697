"""The drift page of a version and its charts (heatmap, histogram, summary, live accuracy).

Samples go in through the sampling module (`feed`, the gateway's path), drift comes from
the drift pass itself (`run_drift`), other points through `record()`: the page and the
charts read what the real backend writes.
"""

from datetime import datetime, timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from modelhub.alerts.defaults import ensure_default_rules
from modelhub.demo.data import load_eval_split
from modelhub.monitoring.drift_tasks import run_drift
from modelhub.monitoring.models import CheckKind, PredictionLabel, ReferenceProfile, Status
from modelhub.monitoring.record import Result, record
from modelhub.monitoring.sampling import write_samples
from modelhub.monitoring.series import MAX_POINTS
from modelhub.registry.models import Model, ModelVersion
from modelhub.ui.charts import HEATMAP_FEATURES
from tests.monitoring.test_drift import END, START, digits, feed, infer_bodies, response_body  # noqa: F401

pytestmark = pytest.mark.django_db

# The charts' custom range: the drift pass's window and a little around it.
AROUND = {"start": (START - timedelta(hours=1)).isoformat(), "end": (END + timedelta(hours=1)).isoformat()}


@pytest.fixture
def drifted(digits):  # noqa: F811
    """digits v1 fed brighter digits for one window, and the drift pass run over it."""
    x, y = load_eval_split()
    feed(digits, np.clip(x + 6.0, 0, 16), y)
    run_drift(START, END)
    return digits


@pytest.fixture
def bare():
    """A version with no evaluation set, no samples and no drift."""
    model = Model.objects.create(name="plain")
    return ModelVersion.objects.create(
        model=model, number=1, artifact="v1.zip", artifact_format="zip", sha256="1" * 64, size=1, backend="python"
    )


def page_url(version) -> str:
    return reverse("ui:version-drift", args=[version.model.name, version.number])


def chart(client, name: str, version, **params):
    """The chart's data for `version`, over the drift pass's window unless `params` give a range."""
    around = {} if "range" in params else AROUND
    return client.get(reverse("ui:chart-data", args=[name]), {"target": f"version:{version.pk}", **around, **params})


def data_traces(body: dict) -> list[dict]:
    return [t for t in body["data"] if t.get("meta") != "reference"]


# --- the page ----------------------------------------------------------------------------


def test_the_page_shows_the_latest_drift_and_features_by_psi(drifted, client_as):
    response = client_as("viewer").get(page_url(drifted))
    assert response.status_code == 200
    html = response.content.decode()
    headline = response.context["headline"]
    assert headline.psi_max > 0.2 and 0 < headline.ks_max <= 1 and headline.js_outputs is not None
    assert headline.rows == len(load_eval_split()[0]) and headline.drifted > 0
    assert 'data-testid="drift-psi-max"' in html and f"{headline.psi_max:.3f}" in html
    assert response.context["window"] == (START, END)
    rows = list(response.context["features"])
    assert [r.psi for r in rows] == sorted((r.psi for r in rows), reverse=True)
    top = rows[0]
    # Brighter digits: the current mean is above the reference mean, and both are shown.
    assert top.drifted and top.current_mean > top.reference["mean"]
    assert f'data-feature="{top.name}"' in html and 'data-testid="drifted"' in html
    assert "evaluation_set" in html and 'data-testid="drift-no-samples"' not in html
    assert 'data-testid="drift-no-reference"' not in html


def test_the_feature_table_pages_long_feature_lists(drifted, client_as):
    second = client_as("viewer").get(page_url(drifted), {"page": 2})
    first_page = client_as("viewer").get(page_url(drifted)).context["features"]
    assert len(first_page) == 50 and len(second.context["features"]) == 14  # 64 pixels
    assert max(r.psi for r in second.context["features"]) <= min(r.psi for r in first_page)


def test_an_empty_version_says_how_to_get_samples_and_a_reference(bare, client_as):
    response = client_as("viewer").get(page_url(bare))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="drift-no-samples"' in html and "MODELHUB_GATEWAY_SAMPLE_RATE" in html
    assert "/api/v1/models/plain/versions/1/predictions/" in html
    assert 'data-testid="drift-no-reference"' in html and "/api/v1/models/plain/versions/1/reference/" in html
    assert 'data-testid="drift-features"' not in html and 'data-testid="drift-feature-select"' not in html


def test_samples_without_a_drift_result_say_the_pass_has_not_run(digits, client_as):  # noqa: F811
    x, y = load_eval_split()
    feed(digits, x[:100], y[:100])
    html = client_as("viewer").get(page_url(digits)).content.decode()
    assert 'data-testid="drift-no-result"' in html and 'data-testid="drift-samples"' in html
    assert 'data-testid="drift-no-samples"' not in html


def test_the_page_needs_a_role(bare, client, client_as):
    anonymous = client.get(page_url(bare))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("ui:login"))
    assert client_as(None).get(page_url(bare)).status_code == 403
    assert client.get(reverse("ui:version-drift", args=["plain", 9])).status_code == 302
    assert client_as("viewer").get(reverse("ui:version-drift", args=["plain", 9])).status_code == 404


def test_the_version_and_model_pages_link_to_the_drift_page(bare, client_as):
    viewer = client_as("viewer")
    link = f'href="{page_url(bare)}"'
    assert link in viewer.get(reverse("ui:version-detail", args=["plain", 1])).content.decode()
    assert link in viewer.get(reverse("ui:model-detail", args=["plain"])).content.decode()


def test_the_page_costs_the_same_queries_however_many_windows_and_samples(drifted, client_as):
    viewer = client_as("viewer")
    viewer.get(page_url(drifted))  # the session and the role are read once per client
    with CaptureQueriesContext(connection) as one_window:
        assert viewer.get(page_url(drifted)).status_code == 200
    x, y = load_eval_split()
    for hour in (1, 2):
        moved = START + timedelta(hours=hour)
        feed_at(drifted, x, y, moved)
        run_drift(moved, moved + timedelta(hours=1))
    with CaptureQueriesContext(connection) as three_windows:
        assert viewer.get(page_url(drifted)).status_code == 200
    assert len(three_windows) == len(one_window) <= 30


def feed_at(version, x, y, start: datetime, batch: int = 50) -> None:
    """Samples of `x` (classes `y`) sent to the gateway from `start` on, one request a second."""
    samples = []
    for i, first in enumerate(range(0, len(x), batch)):
        rows = slice(first, first + batch)
        body, header_length = infer_bodies(x[rows], binary=True)
        samples.append(
            {
                "time": start + timedelta(seconds=i),
                "model": version.model.name,
                "version": version.number,
                "request_id": f"{start:%H}-{i}",
                "request_body": body,
                "binary_header_length": header_length,
                "response_body": response_body(y[rows].reshape(-1, 1), np.eye(10, dtype=np.float32)[y[rows]]),
            }
        )
    write_samples(samples)


# --- the charts --------------------------------------------------------------------------


def test_the_heatmap_shows_the_30_features_with_the_highest_psi(drifted, client_as):
    response = chart(client_as("viewer"), "drift_heatmap", drifted)
    assert response.status_code == 200
    body = response.json()
    (heatmap,) = body["data"]
    assert heatmap["type"] == "heatmap" and len(heatmap["y"]) == HEATMAP_FEATURES
    psi = drifted.check_results.get(kind=CheckKind.DRIFT).details["psi"]
    highest = sorted(psi, key=psi.get, reverse=True)[:HEATMAP_FEATURES]
    assert set(heatmap["y"]) == set(highest) and heatmap["y"][-1] == highest[0]  # the highest on top
    assert len(heatmap["x"]) == 1 and heatmap["z"][-1][0] == pytest.approx(psi[highest[0]])
    assert f"the {HEATMAP_FEATURES} of 64 features" in body["layout"]["title"]["text"]


def test_the_heatmap_sends_at_most_2000_cells_per_feature(bare, client_as):
    """Ten days of drift results every 5 minutes (2,880 per feature): the database buckets them."""
    target = f"version:{bare.pk}"
    end = timezone.now().replace(second=0, microsecond=0)  # recent: read at 10-minute buckets
    features = ["a", "b", "c"]
    record(
        [
            Result(
                kind=CheckKind.DRIFT,
                status=Status.OK,
                version_id=bare.pk,
                value=0.1,
                details={"psi": {f: 0.1 for f in features}},
                points=[(f"drift_psi:{f}", target, 0.1 + i % 3) for f in features],
                time=end - timedelta(minutes=5 * i),
            )
            for i in range(2880)
        ]
    )
    body = chart(
        client_as("viewer"), "drift_heatmap", bare, start=(end - timedelta(days=10)).isoformat(), end=end.isoformat()
    ).json()
    (heatmap,) = body["data"]
    assert heatmap["y"] == ["c", "b", "a"] and all(len(row) == len(heatmap["x"]) for row in heatmap["z"])
    assert 1000 < len(heatmap["x"]) <= MAX_POINTS and body["points"] <= MAX_POINTS


def test_the_histogram_compares_one_features_reference_and_current_shares(drifted, client_as):
    response = chart(client_as("viewer"), "drift_histogram", drifted, feature="input[36]")
    assert response.status_code == 200
    body = response.json()
    reference, current = body["data"]
    assert reference["type"] == current["type"] == "bar" and reference["x"] == current["x"]
    profile = ReferenceProfile.objects.get(version=drifted)
    assert len(reference["x"]) == len(profile.bin_edges[profile.feature_names.index("input[36]")]) + 1
    assert sum(reference["y"]) == pytest.approx(100) and sum(current["y"]) == pytest.approx(100)
    assert reference["y"] != current["y"]  # brighter digits fill other bins
    assert "input[36]" in body["layout"]["title"]["text"] and str(len(load_eval_split()[0])) in current["name"]


def test_the_histogram_defaults_to_the_feature_with_the_highest_psi(drifted, client_as):
    psi = drifted.check_results.get(kind=CheckKind.DRIFT).details["psi"]
    body = chart(client_as("viewer"), "drift_histogram", drifted).json()
    assert max(psi, key=psi.get) in body["layout"]["title"]["text"]


def test_a_bad_feature_is_a_400_naming_it(drifted, client_as):
    response = chart(client_as("viewer"), "drift_histogram", drifted, feature="pixel[99]")
    assert response.status_code == 400
    assert "feature: 'pixel[99]' is not a feature of digits v1" in response.json()["error"]


def test_the_histogram_of_a_window_without_samples_says_why(drifted, client_as):
    body = chart(client_as("viewer"), "drift_histogram", drifted, feature="input[36]", range="1h").json()
    assert body["data"] == [] and "no samples of digits v1 in this window" in body["empty"]


def test_empty_drift_charts_say_why(bare, client_as):
    viewer = client_as("viewer")
    assert "no reference yet" in chart(viewer, "drift_histogram", bare).json()["empty"]
    assert "no drift results yet" in chart(viewer, "drift_heatmap", bare).json()["empty"]
    assert "MODELHUB_GATEWAY_SAMPLE_RATE" in chart(viewer, "drift_summary", bare).json()["empty"]
    assert "/api/v1/models/plain/labels/" in chart(viewer, "live_accuracy", bare).json()["empty"]


def test_the_summary_draws_psi_js_and_share_with_the_alert_thresholds(drifted, client_as):
    ensure_default_rules()
    body = chart(client_as("viewer"), "drift_summary", drifted).json()
    traces = {t["name"]: t for t in body["data"]}
    assert traces["PSI max"]["y"][0] > 0.2 and traces["drifted features"]["yaxis"] == "y2"
    assert 0 < traces["drifted features"]["y"][0] <= 100 and "JS distance of the outputs" in traces
    lines = {t["name"]: t["y"][0] for t in body["data"] if t.get("meta") == "reference"}
    assert lines == {"alert: PSI max > 0.2": 0.2, "alert: JS distance of the outputs > 0.1": 0.1}


def test_live_accuracy_is_drawn_beside_the_evaluation_accuracy(digits, client_as):  # noqa: F811
    x, y = load_eval_split()
    feed(digits, x[:40], y[:40], batch=1)
    truth = y[:40].copy()
    truth[:10] = (truth[:10] + 1) % 10
    PredictionLabel.objects.bulk_create(
        [PredictionLabel(model=digits.model, request_id=f"r{i}", label=str(v)) for i, v in enumerate(truth)]
    )
    run_drift(START, END)
    target = f"version:{digits.pk}"
    record([Result(kind=CheckKind.ACCURACY, status=Status.OK, version_id=digits.pk, value=0.97,
                   points=[("accuracy", target, 0.97)], time=END)])  # fmt: skip
    body = chart(client_as("viewer"), "live_accuracy", digits).json()
    traces = {t["name"]: t["y"] for t in data_traces(body)}
    assert traces["live accuracy (labels)"] == [pytest.approx(0.75)]
    assert traces["evaluation Accuracy"] == [pytest.approx(0.97)]


def test_the_drift_charts_refuse_other_targets(drifted, client_as):
    response = client_as("viewer").get(
        reverse("ui:chart-data", args=["drift_heatmap"]), {"target": "model:digits", "range": "1h"}
    )
    assert response.status_code == 400 and "version:" in response.json()["error"]


def test_a_version_whose_model_has_an_evaluation_set_says_the_reference_will_come_from_it(digits, client_as):  # noqa: F811
    ReferenceProfile.objects.filter(version=digits).delete()
    html = client_as("viewer").get(page_url(digits)).content.decode()
    assert 'data-testid="drift-no-reference"' in html
    assert "computes it from the evaluation set of digits" in html
    assert "upload an evaluation set" not in html  # it has one
