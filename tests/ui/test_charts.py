"""Chart data: Plotly figures from the monitoring series, bucketed by the database.

Points are written with SQL (generate_series), as the checks would have over days;
the chart-data view is called through the test client as a page's charts.js calls it.
"""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from modelhub.audit.actors import Actor
from modelhub.audit.models import Source
from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status
from modelhub.monitoring.rollups import roll_up
from modelhub.monitoring.series import MAX_POINTS, read_buckets, read_series
from modelhub.registry.models import Alias, EvaluationSet, Model, ModelVersion
from modelhub.registry.services import start_canary
from modelhub.serving.models import Deployment, InferenceServer
from modelhub.ui.charts import CHARTS

pytestmark = pytest.mark.django_db


class World:
    """A model with two versions (v1 in production), each deployed on server "local"."""

    def __init__(self):
        self.model = Model.objects.create(name="digits", latency_slo_ms=50)
        self.v1, self.v2 = (
            ModelVersion.objects.create(
                model=self.model,
                number=n,
                artifact=f"v{n}.zip",
                artifact_format="zip",
                sha256=str(n) * 64,
                size=1,
                backend="python",
            )
            for n in (1, 2)
        )
        Alias.objects.create(model=self.model, name="production", version=self.v1)
        self.server = InferenceServer.objects.create(name="local", base_url="http://127.0.0.1:9")
        self.d1 = Deployment.objects.create(version=self.v1, server=self.server)
        self.d2 = Deployment.objects.create(version=self.v2, server=self.server)


@pytest.fixture
def world():
    return World()


@pytest.fixture
def viewer(client_as):
    return client_as("viewer")


def fill(metric: str, target: str, days: float, every_s: int, value: str = "10 + mod(n, 7)", end=None) -> int:
    """Points of one series every `every_s` seconds for `days` days up to `end` (now); returns how many.
    `value` is SQL over n, the point's index."""
    end = end or timezone.now()
    count = int(days * 86400 // every_s)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO monitoring_point (metric, target, time, value)
                SELECT %s, %s, %s - make_interval(secs => n * %s), {value}
                FROM generate_series(1, %s) AS n""",
            [metric, target, end, every_s, count],
        )
    return count


def get_chart(client, chart: str, **params):
    return client.get(reverse("ui:chart-data", args=[chart]), params)


def data_traces(body: dict) -> list[dict]:
    return [t for t in body["data"] if t.get("meta") != "reference"]


def spacing_s(trace: dict) -> float:
    times = [datetime.fromisoformat(x) for x in trace["x"][:2]]
    return (times[1] - times[0]).total_seconds()


# --- each chart draws its series --------------------------------------------------------

# chart -> (target kind, metrics with points, {trace name: unit of its hover text}, unit in the y axis title)
CASES = {
    "latency": (
        "deployment",
        ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"],
        {"p50": "ms", "p95": "ms", "p99": "ms"},
        "(ms)",
    ),
    "latency_breakdown": (
        "deployment",
        ["queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms"],
        {n: "ms per request" for n in ("queue", "compute input", "compute infer", "compute output")},
        "(ms)",
    ),
    "traffic": (
        "deployment",
        ["throughput_rps", "failure_rate"],
        {"throughput": "req/s", "failure rate": "%"},
        "(req/s)",
    ),
    "server_utilisation": ("server", ["cpu_util", "gpu_util"], {"CPU": "%", "GPU": "%"}, "(%)"),
    "server_memory": (
        "server",
        ["memory_used_bytes", "memory_total_bytes", "gpu_memory_used_bytes", "gpu_memory_total_bytes"],
        {n: "GiB" for n in ("host used", "host total", "GPU used", "GPU total")},
        "(GiB)",
    ),
    "server_up": ("server", ["up"], {"up": "% of health checks"}, "(%)"),
}


@pytest.mark.parametrize("chart", sorted(CASES))
def test_each_chart_draws_its_series_with_units_and_at_most_2000_points_over_30_days(world, viewer, chart):
    kind, metrics, units, axis_unit = CASES[chart]
    series_target = f"deployment:{world.d1.pk}" if kind == "deployment" else f"server:{world.server.pk}"
    ui_target = f"deployment:{world.d1.pk}" if kind == "deployment" else "server:local"
    for metric in metrics:
        fill(metric, series_target, days=30, every_s=60)
    response = get_chart(viewer, chart, target=ui_target, range="30d")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["empty"] is None
    assert [t["name"] for t in body["data"]] == list(units)
    assert body["layout"]["title"]["text"]
    assert axis_unit in body["layout"]["yaxis"]["title"]["text"]
    assert body["layout"]["xaxis"]["title"]["text"] == "time (UTC)"
    for trace in body["data"]:
        assert 700 <= len(trace["x"]) <= MAX_POINTS  # 30 days of hourly buckets
        assert len(trace["x"]) == len(trace["y"])
        assert f"%{{y:.3~f}} {units[trace['name']]}<" in trace["hovertemplate"]
    assert body["points"] == sum(len(t["x"]) for t in body["data"])


def test_memory_is_drawn_in_gib_and_utilisation_in_percent(world, viewer):
    target = f"server:{world.server.pk}"
    fill("gpu_memory_total_bytes", target, days=1, every_s=60, value=str(16 * 2**30))
    fill("cpu_util", target, days=1, every_s=60, value="0.25")
    memory = get_chart(viewer, "server_memory", target="server:local", range="24h").json()
    assert {round(y, 6) for y in memory["data"][0]["y"]} == {16.0}
    utilisation = get_chart(viewer, "server_utilisation", target="server:local", range="24h").json()
    assert {round(y, 6) for y in utilisation["data"][0]["y"]} == {25.0}


def test_traffic_draws_the_failure_rate_in_percent_on_a_second_axis(world, viewer):
    target = f"deployment:{world.d1.pk}"
    fill("throughput_rps", target, days=1, every_s=60, value="40")
    fill("failure_rate", target, days=1, every_s=60, value="0.02")
    body = get_chart(viewer, "traffic", target=f"deployment:{world.d1.pk}", range="24h").json()
    throughput, failures = body["data"]
    assert {round(y, 6) for y in throughput["y"]} == {40.0}
    assert {round(y, 6) for y in failures["y"]} == {2.0}
    assert failures["yaxis"] == "y2"
    assert "%" in body["layout"]["yaxis2"]["title"]["text"]


def test_latency_breakdown_is_stacked(world, viewer):
    target = f"deployment:{world.d1.pk}"
    fill("queue_ms", target, days=1, every_s=60)
    fill("compute_infer_ms", target, days=1, every_s=60)
    body = get_chart(viewer, "latency_breakdown", target=target, range="24h").json()
    assert {t["stackgroup"] for t in body["data"]} == {"time"}


def test_rollout_overlays_the_versions_that_have_points_in_the_window(world, viewer):
    fill("latency_p95_ms", f"deployment:{world.d1.pk}", days=1, every_s=60, value="20")
    fill("latency_p95_ms", f"deployment:{world.d2.pk}", days=0.5, every_s=60, value="30")
    fill("throughput_rps", f"deployment:{world.d2.pk}", days=0.5, every_s=60, value="5")
    # v2 served by a second server too: its two deployments make one "v2" line (the mean).
    other = InferenceServer.objects.create(name="other", base_url="http://127.0.0.1:9")
    d3 = Deployment.objects.create(version=world.v2, server=other)
    fill("latency_p95_ms", f"deployment:{d3.pk}", days=0.5, every_s=60, value="40")
    body = get_chart(viewer, "rollout", target="model:digits", range="24h").json()
    assert [t["name"] for t in body["data"]] == ["v1", "v2", "v2 throughput"]
    v1, v2, throughput = body["data"]
    assert {round(y, 6) for y in v1["y"]} == {20.0}
    assert {round(y, 6) for y in v2["y"]} == {35.0}
    assert throughput["yaxis"] == "y2"
    # An hour where only v1 had points: v2 is not drawn at all.
    start = (timezone.now() - timedelta(hours=20)).isoformat()
    end = (timezone.now() - timedelta(hours=19)).isoformat()
    early = get_chart(viewer, "rollout", target="model:digits", start=start, end=end).json()
    assert [t["name"] for t in early["data"]] == ["v1"]


def test_accuracy_draws_each_version_with_the_threshold_and_the_production_baseline(world, viewer):
    EvaluationSet.objects.create(
        model=world.model,
        file="digits/evaluation/x.npz",
        file_format="npz",
        sha256="e" * 64,
        size=1,
        rows=100,
        output="OUTPUT",
        threshold=0.9,
    )
    fill("accuracy", f"version:{world.v1.pk}", days=5, every_s=86400, value="0.95")
    fill("accuracy", f"version:{world.v2.pk}", days=2, every_s=86400, value="0.97")
    CheckResult.objects.create(kind=CheckKind.ACCURACY, status=Status.OK, version=world.v1, value=0.94)
    CheckResult.objects.create(kind=CheckKind.ACCURACY, status=Status.OK, version=world.v2, value=0.99)
    body = get_chart(viewer, "accuracy", target="model:digits", range="7d").json()
    names = [t["name"] for t in body["data"]]
    assert names == ["v1", "v2", "threshold 0.9", "baseline (production v1) 0.94"]
    threshold, baseline = body["data"][2:]
    assert threshold["y"] == [0.9, 0.9] and baseline["y"] == [0.94, 0.94]
    assert len(data_traces(body)[0]["x"]) == 5
    assert body["points"] == 5 + 2  # the reference lines are not data points
    one = get_chart(viewer, "accuracy", target=f"version:{world.v2.pk}", range="7d").json()
    assert [t["name"] for t in one["data"]][0] == "v2" and len(data_traces(one)) == 1


# --- ranges -------------------------------------------------------------------------------


def test_the_range_rebuckets_from_raw_points_to_hours(world, viewer):
    target = f"deployment:{world.d1.pk}"
    fill("latency_p95_ms", target, days=30, every_s=60)
    hour = get_chart(viewer, "latency", target=target, range="1h").json()["data"][0]
    month = get_chart(viewer, "latency", target=target, range="30d").json()["data"][0]
    assert spacing_s(hour) == 60  # raw points, one per minute
    assert spacing_s(month) == 3600
    assert 55 <= len(hour["x"]) <= 60
    assert 719 <= len(month["x"]) <= 721


def test_a_custom_range_reads_only_that_window(world, viewer):
    target = f"deployment:{world.d1.pk}"
    fill("latency_p95_ms", target, days=2, every_s=60)
    end = timezone.now() - timedelta(hours=3)
    params = {"start": (end - timedelta(hours=2)).isoformat(), "end": end.isoformat()}
    body = get_chart(viewer, "latency", target=target, **params).json()
    (trace,) = body["data"]
    assert 119 <= len(trace["x"]) <= 120
    assert datetime.fromisoformat(trace["x"][0]) >= end - timedelta(hours=2, seconds=60)
    assert datetime.fromisoformat(trace["x"][-1]) < end


def test_one_read_of_several_series_gives_each_series_as_its_own_read_does(world):
    # Charts read all their series at once; the series API reads one: the same buckets.
    targets = [f"deployment:{world.d1.pk}", f"deployment:{world.d2.pk}"]
    now = timezone.now()
    fill("latency_p95_ms", targets[0], days=3, every_s=15, value="mod(n, 13)", end=now)
    fill("latency_p95_ms", targets[1], days=3, every_s=15, value="100 + mod(n, 7)", end=now)
    roll_up(now - timedelta(hours=2))  # the last two hours are raw only
    for days in (30, 7, 1, 1 / 24):
        start, end = now - timedelta(days=days), now
        together = read_buckets(["latency_p95_ms"], targets, start, end, now=now)
        for target in targets:
            ours = together[("latency_p95_ms", target)]
            theirs = read_series("latency_p95_ms", target, start, end, now=now)
            assert sorted(ours) == [p.time for p in theirs.points]
            for point in theirs.points:
                count, total, low, high = ours[point.time]
                assert (count, low, high) == (point.count, point.min, point.max)
                assert total / count == pytest.approx(point.mean)


# --- empty charts say why --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chart", "reason"),
    [
        ("latency", "no latency probes in this window (the latency check runs every 60 s)"),
        ("latency_breakdown", "no requests in this window"),
        ("traffic", "no requests in this window"),
    ],
)
def test_an_empty_deployment_chart_says_why(world, viewer, chart, reason):
    fill("latency_p95_ms", f"deployment:{world.d2.pk}", days=1, every_s=60)  # another deployment's points
    body = get_chart(viewer, chart, target=f"deployment:{world.d1.pk}", range="24h").json()
    assert body["empty"].startswith(reason)
    assert body["data"] == [] and body["points"] == 0


def test_accuracy_without_an_evaluation_set_says_to_upload_one(world, viewer):
    body = get_chart(viewer, "accuracy", target="model:digits", range="30d").json()
    assert body["empty"] == "no accuracy runs yet: upload an evaluation set"


def test_an_empty_server_chart_says_why(world, viewer):
    body = get_chart(viewer, "server_memory", target="server:local", range="1h").json()
    assert body["empty"] == "no server metrics in this window (the metrics check runs every 30 s)"


# --- refused queries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chart", "params", "status", "error"),
    [
        ("pie", {"target": "server:local"}, 400, "chart: unknown chart 'pie'"),
        ("latency", {"target": "deployment:1", "range": "2y"}, 400, "range: '2y' is not one of 1h, 24h, 7d, 30d"),
        ("latency", {"target": "deployment"}, 400, "target: target 'deployment' is not <kind>:<id>"),
        ("latency", {}, 400, "target: target '' is not <kind>:<id>"),
        ("latency", {"target": "deployment:abc"}, 400, "a deployment is named by its number"),
        ("latency", {"target": "server:local"}, 400, "the latency chart draws a deployment:… target"),
        ("latency", {"target": "deployment:1", "start": "yesterday", "end": "2026-01-01T00:00:00Z"}, 400, "start:"),
        ("latency", {"target": "deployment:1", "start": "2026-01-01T00:00:00Z"}, 400, "end: required"),
        (
            "latency",
            {"target": "deployment:1", "start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            400,
            "end: must be after start",
        ),
        (
            "latency",
            {"target": "deployment:1", "start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
            400,
            "start: the range from start to end may span at most 400 days",
        ),
        (
            "latency",
            {"target": "deployment:1", "range": "1h", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
            400,
            "range: give either range or start and end",
        ),
        ("server_up", {"target": "server:nowhere"}, 404, "target: no such server: 'nowhere'"),
        ("latency", {"target": "deployment:999999"}, 404, "target: no such deployment: 999999"),
        ("rollout", {"target": "model:nothing"}, 404, "target: no such model: 'nothing'"),
        ("accuracy", {"target": "version:999999"}, 404, "target: no such version: 999999"),
    ],
)
def test_a_bad_query_is_refused_with_json_naming_the_parameter(world, viewer, chart, params, status, error):
    response = get_chart(viewer, chart, **params)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert error in response.json()["error"]


def test_the_chart_data_needs_a_signed_in_person_with_a_role(world, client, client_as):
    url = reverse("ui:chart-data", args=["server_up"])
    anonymous = client.get(url, {"target": "server:local"})
    assert anonymous.status_code == 302 and reverse("ui:login") in anonymous["Location"]
    assert client_as(None).get(url, {"target": "server:local"}).status_code == 403
    assert client_as("viewer").get(url, {"target": "server:local"}).status_code == 200


# --- cost ----------------------------------------------------------------------------------


def _queries(client, chart: str, target: str) -> int:
    # The canary charts compare production's version with its canary (started in the test).
    params = {"alias": "production"} if "alias" in CHARTS[chart].params else {}
    with CaptureQueriesContext(connection) as queries:
        assert get_chart(client, chart, target=target, range="30d", **params).status_code == 200
    return len(queries)


@pytest.mark.parametrize("chart", sorted(CHARTS))
def test_a_chart_costs_the_same_queries_whatever_its_number_of_series(world, viewer, chart):
    kind = CHARTS[chart].kinds[0]
    target = {
        "deployment": f"deployment:{world.d1.pk}",
        "server": "server:local",
        "model": "model:digits",
        "version": f"version:{world.v1.pk}",
    }[kind]
    EvaluationSet.objects.create(
        model=world.model, file="e.npz", file_format="npz", sha256="e" * 64, size=1, rows=1, output="OUTPUT"
    )
    fill("latency_p95_ms", f"deployment:{world.d1.pk}", days=1, every_s=300)
    start_canary(world.model, "production", world.v2, 10, Actor(source=Source.CLI))
    roll_up()  # roll-ups and raw points after them: the chart reads both
    few = _queries(viewer, chart, target)
    for n in range(3, 9):
        version = ModelVersion.objects.create(
            model=world.model,
            number=n,
            artifact="v.zip",
            artifact_format="zip",
            sha256=f"{n:064d}",
            size=1,
            backend="python",
        )
        server = InferenceServer.objects.create(name=f"s{n}", base_url="http://127.0.0.1:9")
        deployment = Deployment.objects.create(version=version, server=server)
        for metric in ("latency_p95_ms", "throughput_rps"):
            fill(metric, f"deployment:{deployment.pk}", days=1, every_s=300)
        fill("accuracy", f"version:{version.pk}", days=3, every_s=86400)
    for metric in ("latency_p50_ms", "queue_ms", "throughput_rps", "cpu_util", "up"):
        fill(metric, f"deployment:{world.d1.pk}" if metric != "cpu_util" else f"server:{world.server.pk}", 1, 300)
    roll_up()
    assert _queries(viewer, chart, target) == few
    assert few <= 12


def test_points_of_the_deleted_past_do_not_break_a_chart(world, viewer):
    """Points whose deployment row is gone (undeployed and cleaned up) are simply not drawn."""
    Point.objects.create(metric="latency_p95_ms", target="deployment:424242", time=timezone.now(), value=1.0)
    body = get_chart(viewer, "rollout", target="model:digits", range="1h").json()
    assert body["empty"] and body["points"] == 0


def test_a_time_without_offset_is_read_as_utc(world, viewer):
    target = f"deployment:{world.d1.pk}"
    moment = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    Point.objects.create(metric="latency_p50_ms", target=target, time=moment, value=3.0)
    body = get_chart(viewer, "latency", target=target, start="2026-01-01T11:59:00", end="2026-01-01T12:01:00").json()
    assert body["points"] == 1
    assert datetime.fromisoformat(body["data"][0]["x"][0]) == moment


# --- the include ---------------------------------------------------------------------------


def test_the_include_gives_each_chart_its_own_range_selector_and_data_url():
    from django.template import Context, Template

    page = Template(
        '{% include "ui/includes/chart.html" with chart="latency" target="deployment:12" title="Latency" %}'
        '{% include "ui/includes/chart.html" with chart="traffic" target="deployment:12" title="Traffic" '
        'initial_range="7d" %}'
    ).render(Context({}))
    assert 'data-testid="chart-latency"' in page and 'data-testid="chart-traffic"' in page
    assert f'data-url="{reverse("ui:chart-data", args=["latency"])}"' in page
    assert page.count('data-target="deployment:12"') == 2
    # Each opens on its own range: the last hour unless the page says otherwise.
    latency, traffic = page.split('data-testid="chart-traffic"')[0].split("<figure")[1:]
    for label, pressed in (("1 h", "true"), ("24 h", "false"), ("7 d", "false"), ("30 d", "false")):
        assert f'aria-pressed="{pressed}">{label}</button>' in latency
    for label, pressed in (("1 h", "false"), ("24 h", "false"), ("7 d", "true"), ("30 d", "false")):
        assert f'aria-pressed="{pressed}">{label}</button>' in traffic
    assert 'data-range="1h" aria-live' in latency and 'data-range="7d" aria-live' in page
    assert page.count(">Apply</button>") == 2
    ids = [part.split('"')[0] for part in page.split(' id="')[1:]]
    assert len(ids) == len(set(ids)) == 8  # block, start, end and chart of each
