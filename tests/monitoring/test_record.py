"""record(): the one writer of check results and points, idempotent per pass."""

import threading

import pytest
from django.db import connection

from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status
from modelhub.monitoring.record import Result, record, results_recorded
from modelhub.serving.models import InferenceServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def servers():
    return [InferenceServer.objects.create(name=f"rec-{i}", base_url=f"http://127.0.0.1:{9000 + i}") for i in range(3)]


def health(server, up: bool) -> Result:
    return Result(
        CheckKind.SERVER_HEALTH,
        Status.OK if up else Status.FAIL,
        server_id=server.pk,
        value=1.0 if up else 0.0,
        message="" if up else f"Triton server {server.name!r}: health (live) failed: refused",
        points=[("up", f"server:{server.pk}", 1.0 if up else 0.0)],
    )


def test_results_and_points_are_stored_and_announced(servers):
    heard = []

    def listener(sender, results, **kwargs):
        heard.append([r.pk for r in results])

    results_recorded.connect(listener)
    try:
        written = record([health(servers[0], True), health(servers[1], False)], pass_id="health:1")
    finally:
        results_recorded.disconnect(listener)
    assert [r.status for r in written] == [Status.OK, Status.FAIL]
    assert all(r.pk for r in written)
    assert heard == [[r.pk for r in written]]
    assert CheckResult.objects.get(server=servers[1]).message.endswith("refused")
    assert sorted(Point.objects.values_list("target", "value")) == sorted(
        [(f"server:{servers[0].pk}", 1.0), (f"server:{servers[1].pk}", 0.0)]
    )


def test_the_same_pass_recorded_twice_writes_each_result_once(servers):
    first = record([health(servers[0], True), health(servers[1], True)], pass_id="health:7")
    # A retried task: the same pass again, plus a result the first run did not get to.
    second = record([health(servers[0], True), health(servers[1], True), health(servers[2], False)], pass_id="health:7")
    assert len(first) == 2
    assert [r.server_id for r in second] == [servers[2].pk]
    assert CheckResult.objects.count() == 3
    assert Point.objects.count() == 3
    # Another pass is another set of results.
    record([health(servers[0], True)], pass_id="health:8")
    assert CheckResult.objects.filter(server=servers[0]).count() == 2


def test_a_point_without_a_value_is_skipped(servers):
    result = health(servers[0], True)
    result.points.append(("latency_p95_ms", f"server:{servers[0].pk}", None))
    record([result])
    assert Point.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_recording_one_pass_at_once_write_each_result_once(servers):
    barrier = threading.Barrier(4)
    written = []

    def run():
        try:
            barrier.wait()
            written.append(len(record([health(s, True) for s in servers], pass_id="health:race")))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(written) == 3
    assert CheckResult.objects.count() == 3
    assert Point.objects.count() == 3
