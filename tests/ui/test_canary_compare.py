"""Watching a canary: the comparison page and its three charts put the alias's stable version and
its canary side by side (latency from the probe's points, requests and failures from Triton's
statistics points, outputs from the sampled requests), on Postgres, for every role.

Points go in through `record()` (the checks' writer), samples through `write_samples` (the
gateway's path): the page reads what the real backend writes.
"""

from datetime import timedelta

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.demo.artifacts import _manifest
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result, record
from modelhub.monitoring.sampling import write_samples
from modelhub.registry.services import move_alias, register_upload, start_canary
from modelhub.serving.models import Deployment, InferenceServer
from tests.conftest import doubler_source, make_zip
from tests.monitoring.test_drift import infer_bodies, response_body
from tests.ui.conftest import ROLES

pytestmark = pytest.mark.django_db

CLI = Actor(source=Source.CLI)
CHARTS = ("canary_latency", "canary_traffic", "canary_outputs")


class Canary:
    """digits v1 (production) and v2 (its 20 % canary), each deployed on one server."""

    def __init__(self, tmp_path):
        v1, v2 = (make_zip(tmp_path / f"v{n}.zip", {"1/model.py": doubler_source(n + 1)}) for n in (1, 2))
        self.v1 = register_upload("digits", v1, _manifest(0.95, "test"), CLI, create=True).version
        self.v2 = register_upload("digits", v2, _manifest(0.95, "test"), CLI, create=False).version
        self.model = self.v1.model
        server = InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")
        self.d1 = Deployment.objects.create(version=self.v1, server=server)
        self.d2 = Deployment.objects.create(version=self.v2, server=server)
        move_alias(self.model, "production", self.v1, CLI)
        start_canary(self.model, "production", self.v2, 20, CLI)

    def probe(self, deployment, p50: float, p95: float, ago_s: int = 60) -> None:
        target = f"deployment:{deployment.pk}"
        points = [("latency_p50_ms", target, p50), ("latency_p95_ms", target, p95)]
        record([Result(CheckKind.LATENCY, Status.OK, deployment_id=deployment.pk, points=points, time=_ago(ago_s))])

    def stats(self, deployment, requests: int, failures: int, ago_s: int = 60) -> None:
        target = f"deployment:{deployment.pk}"
        values = {
            "requests": requests,
            "failures": failures,
            "throughput_rps": requests / 60,
            "failure_rate": failures / requests,
        }
        points = [(metric, target, float(value)) for metric, value in values.items()]
        record([Result(CheckKind.STATS, Status.OK, deployment_id=deployment.pk, points=points, time=_ago(ago_s))])

    def sample(self, version, classes: list[int], ago_s: int = 60) -> None:
        """Sampled requests of `version` answering `classes`, one request of one row each."""
        samples = []
        for i, label in enumerate(classes):
            body, header_length = infer_bodies(np.zeros((1, 64), np.float32), binary=True)
            scores = np.eye(10, dtype=np.float32)[[label]]
            samples.append(
                {
                    "time": _ago(ago_s),
                    "model": "digits",
                    "version": version.number,
                    "request_id": f"v{version.number}-{i}",
                    "request_body": body,
                    "binary_header_length": header_length,
                    "response_body": response_body(np.array([[label]]), scores),
                }
            )
        write_samples(samples)


def _ago(seconds: int):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture
def canary(tmp_path) -> Canary:
    return Canary(tmp_path)


def page_url(alias: str = "production", **query) -> str:
    url = reverse("ui:canary-compare", kwargs={"name": "digits", "alias": alias})
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def chart(client, name: str, **params):
    return client.get(reverse("ui:chart-data", args=[name]), {"target": "model:digits", "range": "1h", **params})


def by_role(figures) -> dict:
    return {f.side.role: f for f in figures}


# --- the page --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_both_versions_side_by_side(canary, client_as, role):
    canary.probe(canary.d1, 10, 20)
    canary.probe(canary.d1, 12, 30, ago_s=120)
    canary.probe(canary.d2, 40, 80)
    canary.stats(canary.d1, requests=400, failures=0)
    canary.stats(canary.d2, requests=100, failures=5)
    canary.sample(canary.v1, [3, 3, 3, 7])
    canary.sample(canary.v2, [7, 7, 3, 7, 7])

    response = client_as(role).get(page_url())

    assert response.status_code == 200
    assert response.context["output_name"] == "label"  # the class output
    figures = by_role(response.context["figures"])
    stable, canary_row = figures["stable"], figures["canary"]
    assert (stable.side.version.number, stable.side.weight) == (1, 80)
    assert (canary_row.side.version.number, canary_row.side.weight) == (2, 20)
    assert (stable.p50_ms, stable.p95_ms, stable.probes) == (11, 25, 2)
    assert (canary_row.p50_ms, canary_row.p95_ms, canary_row.probes) == (40, 80, 1)
    assert (stable.requests, stable.failures, stable.failure_pct) == (400, 0, 0)
    assert (canary_row.requests, canary_row.failures, canary_row.failure_pct) == (100, 5, 5)
    assert stable.top_outputs == [("3", 75), ("7", 25)] and stable.samples == 4
    assert canary_row.top_outputs == [("7", 80), ("3", 20)] and canary_row.samples == 5
    html = response.content.decode()
    assert 'data-testid="canary-compare-stable"' in html and 'data-testid="canary-compare-canary"' in html
    for name in CHARTS:
        assert f'data-testid="chart-{name}"' in html
    assert html.count('type="hidden" name="alias" value="production"') == len(CHARTS)
    # Only the deploy role gets the forms that change the canary.
    assert ('data-testid="canary-promote-production"' in html) == (role != "viewer")


def test_an_empty_window_says_why_for_each_version(canary, client_as):
    canary.probe(canary.d1, 10, 20)
    canary.sample(canary.v1, [3])
    Deployment.objects.filter(pk=canary.d2.pk).delete()

    response = client_as("viewer").get(page_url())

    stable, canary_row = by_role(response.context["figures"]).values()
    assert stable.p95_ms == 20 and stable.latency_reason == ""
    assert canary_row.p95_ms is None
    assert "no latency probes of v2 in this window" in canary_row.latency_reason
    assert "v2 is not deployed anywhere" in canary_row.latency_reason
    assert "no requests to v1 in this window (Triton's statistics are read every" in stable.traffic_reason
    assert canary_row.outputs_reason.startswith(
        "no sampled requests for v2 in this window: the gateway samples MODELHUB_GATEWAY_SAMPLE_RATE (now 0)"
    )
    assert "no sampled requests for v2 in this window" in response.content.decode()


def test_the_window_is_chosen_and_a_bad_one_is_named(canary, client_as):
    canary.probe(canary.d2, 40, 80, ago_s=3 * 3600)  # outside the last hour, inside the last day

    hour = client_as("viewer").get(page_url())
    day = client_as("viewer").get(page_url(range="24h"))
    bad = client_as("viewer").get(page_url(range="2y"))

    assert by_role(hour.context["figures"])["canary"].p95_ms is None
    assert by_role(day.context["figures"])["canary"].p95_ms == 80
    assert 'data-range="24h"' in day.content.decode()  # the charts open with the page's window
    assert bad.status_code == 400
    assert bad.context["error"] == "range: '2y' is not one of 1h, 24h, 7d, 30d"
    assert "range: &#x27;2y&#x27; is not one of" in bad.content.decode()


def test_no_canary_and_an_unknown_alias(canary, client_as):
    move_alias(canary.model, "staging", canary.v2, CLI)

    idle = client_as("viewer").get(page_url("staging"))
    unknown = client_as("viewer").get(page_url("nightly"))

    assert idle.status_code == 200
    assert idle.context["no_canary"] == "digits@staging has no canary running (v2 gets all the traffic)"
    assert unknown.status_code == 404
    assert "Model digits has no alias “nightly”" in unknown.content.decode()


def test_the_model_page_links_each_running_canary_to_its_comparison(canary, client_as):
    html = client_as("viewer").get(reverse("ui:model-detail", kwargs={"name": "digits"})).content.decode()

    assert f'href="{page_url()}" data-testid="canary-watch-production"' in html
    assert "Compare v1 and v2" in html


def test_anonymous_is_sent_to_sign_in(canary):
    response = Client().get(page_url())

    assert response.status_code == 302 and response["Location"].startswith(reverse("ui:login"))


# --- the charts --------------------------------------------------------------------------


def test_the_charts_overlay_the_two_versions(canary, client_as):
    canary.probe(canary.d1, 10, 20)
    canary.probe(canary.d2, 40, 80)
    canary.stats(canary.d1, requests=600, failures=0)
    canary.stats(canary.d2, requests=60, failures=6)
    canary.sample(canary.v1, [3, 7])
    canary.sample(canary.v2, [7])
    viewer = client_as("viewer")

    latency = chart(viewer, "canary_latency", alias="production").json()
    traffic = chart(viewer, "canary_traffic", alias="production").json()
    outputs = chart(viewer, "canary_outputs", alias="production").json()

    assert latency["empty"] is None
    assert {t["name"]: t["y"] for t in latency["data"]} == {
        "v1 (stable, 80 %) p95": [20],
        "v1 (stable, 80 %) p50": [10],
        "v2 (canary, 20 %) p95": [80],
        "v2 (canary, 20 %) p50": [40],
    }
    rates = {t["name"]: t["y"] for t in traffic["data"] if t.get("yaxis") == "y2"}
    assert rates == {"v1 (stable, 80 %) failures": [0], "v2 (canary, 20 %) failures": [pytest.approx(10)]}
    assert [(t["type"], t["name"], t["x"], t["y"]) for t in outputs["data"]] == [
        ("bar", "v1 (stable, 80 %)", ["3", "7"], [50, 50]),
        ("bar", "v2 (canary, 20 %)", ["3", "7"], [0, 100]),
    ]


def test_a_chart_without_samples_or_canary_says_why(canary, client_as):
    viewer = client_as("viewer")

    outputs = chart(viewer, "canary_outputs", alias="production").json()
    move_alias(canary.model, "staging", canary.v1, CLI)
    idle = chart(viewer, "canary_latency", alias="staging").json()

    assert outputs["data"] == [] and "no sampled requests for v1 in this window" in outputs["empty"]
    assert "no sampled requests for v2 in this window" in outputs["empty"]
    assert idle["empty"] == "digits@staging has no canary running (v1 gets all the traffic)"


@pytest.mark.parametrize(
    "params, text",
    [
        ({}, "alias: required: the alias whose canary to compare"),
        ({"alias": "nightly"}, "alias: model 'digits' has no alias 'nightly'"),
    ],
)
def test_a_chart_without_a_known_alias_is_a_400_naming_it(canary, client_as, params, text):
    response = chart(client_as("viewer"), "canary_traffic", **params)

    assert response.status_code == 400
    assert text in response.json()["error"]
