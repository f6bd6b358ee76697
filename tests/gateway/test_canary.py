"""Canaries in the gateway: a model name without a version splits its requests between
the alias's version (100 - w %) and the canary (w %), by smooth weighted round-robin,
so the shares are exact over every 100 requests (50 %: every other request)."""

from collections import Counter

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http

from modelhub.gateway.routing import Snapshot, build_table, weighted_cycle
from modelhub.registry.services import abort_canary, promote_canary, set_canary_weight, start_canary
from modelhub.serving.models import InferenceServer
from tests.gateway.conftest import ACTOR, FACTORS, MODEL, mark_loaded

pytestmark = [pytest.mark.django_db(transaction=True)]


def factors_of(client, requests_count: int) -> Counter:
    """Which version answered each of `requests_count` requests, told by what it multiplies by."""
    counted = Counter()
    for _ in range(requests_count):
        data = triton_http.InferInput("INPUT", [1], "FP32")
        data.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        counted[int(client.infer(MODEL, [data]).as_numpy("OUTPUT")[0])] += 1
    return counted


def routed_version(gateway) -> str:
    """The version a stand-in server was asked for, by one request for the model without a version."""
    path = requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}").json()["path"]
    name, number = path.removeprefix("/v2/models/").removesuffix("/infer").split("/versions/")
    assert name == f"{MODEL}__v{number}", path  # each version under its own Triton name
    return number


@pytest.mark.triton
def test_a_canary_at_50_percent_splits_traffic_then_abort_and_promote_send_it_all_one_way(served, gateway_factory):
    model, v2 = served["model"], served["versions"][2]
    start_canary(model, "production", v2, 50, ACTOR)
    gateway = gateway_factory(auth_open=True)
    client = triton_http.InferenceServerClient(gateway.address)
    x2, x3 = FACTORS[1], FACTORS[2]

    assert factors_of(client, 20) == {x2: 10, x3: 10}

    abort_canary(model, "production", ACTOR)
    gateway.wait_for(lambda: factors_of(client, 4) == {x2: 4}, what="the abort reaching routing")
    assert factors_of(client, 10) == {x2: 10}

    start_canary(model, "production", v2, 50, ACTOR)
    gateway.wait_for(lambda: factors_of(client, 2) == {x2: 1, x3: 1}, what="the new canary reaching routing")
    promote_canary(model, "production", ACTOR)
    gateway.wait_for(lambda: factors_of(client, 4) == {x3: 4}, what="the promotion reaching routing")
    assert factors_of(client, 10) == {x3: 10}


def test_a_canary_nowhere_live_gets_no_traffic(registered, gateway_factory, fake_triton):
    stable, canary_server = fake_triton("stable"), fake_triton("canary")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=stable.url)
    v2 = registered["versions"][2]
    v2.deployments.all().delete()
    mark_loaded(v2, InferenceServer.objects.create(name=canary_server.name, base_url=canary_server.url, live=False))
    start_canary(registered["model"], "production", v2, 50, ACTOR)
    gateway = gateway_factory(auth_open=True)

    assert [routed_version(gateway) for _ in range(6)] == ["1"] * 6
    assert canary_server.hits == 0

    # The canary's server comes back: the refresher notices and the split starts.
    InferenceServer.objects.filter(name=canary_server.name).update(live=True)
    gateway.wait_for(lambda: routed_version(gateway) == "2", what="the canary getting traffic")
    assert canary_server.hits == 1


def test_a_weight_change_reaches_routing_and_sets_the_exact_share(registered, gateway_factory, fake_triton):
    upstream = fake_triton("both")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    start_canary(registered["model"], "production", registered["versions"][2], 50, ACTOR)
    gateway = gateway_factory(auth_open=True)

    set_canary_weight(registered["model"], "production", 10, ACTOR)
    gateway.wait_for(lambda: gateway.app.refresher.table.aliased[MODEL].targets[1].weight == 10, what="the weight")

    assert Counter(routed_version(gateway) for _ in range(100)) == {"1": 90, "2": 10}


# --- the table, without servers --------------------------------------------------------------


def test_smooth_weighted_round_robin_gives_exact_evenly_spread_shares():
    assert weighted_cycle((50, 50)) == (0, 1)
    assert weighted_cycle((90, 10)).count(1) == 1 and len(weighted_cycle((90, 10))) == 10
    cycle = weighted_cycle((67, 33))
    assert (len(cycle), cycle.count(1)) == (100, 33)
    assert "1, 1, 1" not in str(cycle)  # spread out, not in a burst


def snapshot(canary: int | None, weight: int, loaded=((MODEL, 1, "a"), (MODEL, 2, "a"))) -> Snapshot:
    return Snapshot(
        models=(MODEL,),
        servers=(("a", "http://127.0.0.1:1"),),
        loaded=loaded,
        aliases=((MODEL, 1, canary, weight),),
    )


def test_the_table_routes_the_alias_to_both_versions_only_while_the_canary_is_loaded():
    split = build_table(snapshot(2, 25), "production").route(MODEL, None)
    unloaded = build_table(snapshot(2, 25, loaded=((MODEL, 1, "a"),)), "production").route(MODEL, None)
    none = build_table(snapshot(None, 0), "production").route(MODEL, None)

    assert [(t.version, t.weight) for t in split.targets] == [(1, 75), (2, 25)]
    assert Counter(split.choose().version for _ in range(100)) == {1: 75, 2: 25}
    assert [(t.version, t.weight) for t in unloaded.targets] == [(1, 100)]
    assert [(t.version, t.weight) for t in none.targets] == [(1, 100)]
