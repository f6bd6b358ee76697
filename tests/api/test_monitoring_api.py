"""The check results and series API: filters, cursor pages, 400s naming the parameter, restricted tokens."""

from datetime import timedelta

import pytest
from django.utils import timezone

from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status
from modelhub.registry.services import register_upload
from modelhub.serving.models import Deployment, InferenceServer
from tests.api.conftest import error_of
from tests.conftest import doubler_source, make_zip

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path, actor, manifest):
    """Two models, digits and faces, each deployed on server gpu-1; results of an hour ago and now."""
    server = InferenceServer.objects.create(name="gpu-1", base_url="http://127.0.0.1:9")
    deployments = {}
    for name, factor in (("digits", 2), ("faces", 3)):
        artifact = make_zip(tmp_path / f"{name}.zip", {"1/model.py": doubler_source(factor)})
        version = register_upload(name, artifact, manifest, actor, create=True).version
        deployments[name] = Deployment.objects.create(version=version, server=server)
    hour_ago = timezone.now() - timedelta(hours=1)
    CheckResult.objects.create(kind=CheckKind.SERVER_HEALTH, status=Status.OK, server=server, created_at=hour_ago)
    CheckResult.objects.create(kind=CheckKind.SERVER_HEALTH, status=Status.FAIL, server=server, message="refused")
    for d in deployments.values():
        for kind, status in ((CheckKind.MODEL_READY, Status.OK), (CheckKind.LATENCY, Status.WARN)):
            CheckResult.objects.create(kind=kind, status=status, server=server, deployment=d, version=d.version)
    now = timezone.now()
    d = deployments["digits"]
    Point.objects.bulk_create(
        [
            Point(metric="latency_p95_ms", target=f"deployment:{d.pk}", time=now - timedelta(minutes=m), value=m)
            for m in range(1, 11)
        ]
    )
    return {"server": server, **deployments}


def listed(client, query: str = "") -> list[dict]:
    response = client.get(f"/api/v1/check-results/{query}")
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def test_results_are_listed_newest_first_and_filtered(admin_api, world):
    everything = listed(admin_api)
    assert len(everything) == 6
    assert everything[-1]["kind"] == "server_health" and everything[-1]["status"] == "ok"  # the oldest
    assert {r["kind"] for r in listed(admin_api, "?kind=latency")} == {"latency"}
    assert [r["message"] for r in listed(admin_api, "?status=fail")] == ["refused"]
    assert len(listed(admin_api, "?server=gpu-1")) == 6
    digits = listed(admin_api, "?model=digits")
    assert {(r["model"], r["version"], r["server"]) for r in digits} == {("digits", 1, "gpu-1")}
    assert len(listed(admin_api, "?model=digits&version=1")) == 2
    assert listed(admin_api, "?model=digits&version=2") == []
    assert {r["model"] for r in listed(admin_api, f"?deployment={world['faces'].pk}")} == {"faces"}
    since = (timezone.now() - timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    assert len(listed(admin_api, f"?since={since}")) == 5
    assert len(listed(admin_api, f"?until={since}")) == 1
    first = admin_api.get("/api/v1/check-results/?limit=4").json()
    rest = admin_api.get(first["next"]).json()
    assert len(first["results"]) == 4 and len(rest["results"]) == 2
    detail = admin_api.get(first["results"][0]["url"])
    assert detail.status_code == 200 and detail.json() == first["results"][0]


@pytest.mark.parametrize(
    "query, field",
    [
        ("kind=sideways", "kind"),
        ("status=bad", "status"),
        ("version=1", "version"),  # a number without its model
        ("model=digits&version=x", "version"),
        ("deployment=abc", "deployment"),
        ("since=yesterday", "since"),
        ("offset=5", "offset"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(admin_api, world, query, field):
    response = admin_api.get(f"/api/v1/check-results/?{query}")
    assert response.status_code == 400
    assert field in error_of(response)["fields"]


def test_a_restricted_token_reads_its_models_and_the_servers_results(client_with, world):
    client = client_with("read", models=["digits"])
    results = listed(client)
    assert {r["model"] for r in results} == {"digits", None}
    assert {r["kind"] for r in results if r["model"] is None} == {"server_health"}
    faces = CheckResult.objects.filter(version__model__name="faces").first()
    assert client.get(f"/api/v1/check-results/{faces.pk}/").status_code == 404


def test_a_series_is_bucketed_and_says_what_it_read(admin_api, world):
    target = f"deployment:{world['digits'].pk}"
    response = admin_api.get(f"/api/v1/series/?metric=latency_p95_ms&target={target}&max_points=1000")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["metric"], body["target"], body["label"]) == ("latency_p95_ms", target, "digits v1 on gpu-1")
    # 24 hours in at most 1,000 buckets: per-minute roll-ups, and raw points where none is rolled up yet.
    assert body["resolution"] == "minute" and body["bucket_seconds"] == 120
    assert sum(p["count"] for p in body["points"]) == 10
    assert min(p["min"] for p in body["points"]) == 1 and max(p["max"] for p in body["points"]) == 10
    assert set(body["points"][0]) == {"time", "mean", "min", "max", "count"}
    # A known metric without points is an empty series, not an error.
    empty = admin_api.get(f"/api/v1/series/?metric=queue_ms&target={target}")
    assert empty.status_code == 200 and empty.json()["points"] == []
    available = admin_api.get(f"/api/v1/series/available/?target={target}").json()
    assert available == {"target": target, "label": "digits v1 on gpu-1", "metrics": ["latency_p95_ms"]}


def test_bad_series_parameters_are_400s_naming_them(admin_api, world):
    target = f"deployment:{world['digits'].pk}"
    cases = {
        f"metric=no_such_metric&target={target}": ("metric", "unknown metric 'no_such_metric'"),
        "metric=latency_p95_ms&target=deployment:999999": ("target", "no deployment with id 999999"),
        "metric=latency_p95_ms&target=cluster:1": ("target", "'cluster:1' is not"),
        "metric=latency_p95_ms": ("target", "required"),
        f"target={target}": ("metric", "required"),
        f"metric=latency_p95_ms&target={target}&start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z": (
            "start",
            "must be before end",
        ),
        f"metric=latency_p95_ms&target={target}&start=2020-01-01T00:00:00Z&end=2026-01-01T00:00:00Z": (
            "start",
            "at most 800 days",
        ),
        f"metric=latency_p95_ms&target={target}&end=noon": ("end", "RFC 3339"),
        f"metric=latency_p95_ms&target={target}&max_points=0": ("max_points", "from 1 to 10000"),
    }
    for query, (field, words) in cases.items():
        response = admin_api.get(f"/api/v1/series/?{query}")
        assert response.status_code == 400, query
        assert words in error_of(response)["fields"][field], (query, response.json())


def test_a_restricted_token_reads_series_of_its_models_only(client_with, world):
    client = client_with("read", models=["digits"])
    own = client.get(f"/api/v1/series/?metric=latency_p95_ms&target=deployment:{world['digits'].pk}")
    assert own.status_code == 200
    other = client.get(f"/api/v1/series/?metric=latency_p95_ms&target=deployment:{world['faces'].pk}")
    assert other.status_code == 400  # as if it did not exist
    assert error_of(other)["fields"]["target"] == f"no deployment with id {world['faces'].pk}"
    other_version = client.get(f"/api/v1/series/available/?target=version:{world['faces'].version_id}")
    assert other_version.status_code == 400
    server = client.get(f"/api/v1/series/?metric=up&target=server:{world['server'].pk}")
    assert server.status_code == 403
    assert "restricted to the models digits" in error_of(server)["message"]
