"""The inference gateway: unchanged tritonclient code through ModelHub to a real Triton."""

import json
import statistics
import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from devtools.local_triton import free_port
from modelhub.api.tokens import revoke_token
from modelhub.registry.services import move_alias
from modelhub.serving.models import InferenceServer
from tests.gateway.conftest import ACTOR, MODEL, mark_loaded

pytestmark = [pytest.mark.django_db(transaction=True)]


def client_for(gateway, token: str | None = None) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(gateway.address)


def headers(token: str | None) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def infer(client, values, *, version: str = "", binary: bool = True, token: str | None = None) -> list[float]:
    data = np.array(values, dtype=np.float32)
    tensor = triton_http.InferInput("INPUT", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    output = triton_http.InferRequestedOutput("OUTPUT", binary_data=binary)
    result = client.infer(MODEL, [tensor], model_version=version, outputs=[output], headers=headers(token))
    return result.as_numpy("OUTPUT").tolist()


def binary_infer_body(values) -> tuple[bytes, int]:
    data = np.array(values, dtype=np.float32)
    tensor = triton_http.InferInput("INPUT", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    output = triton_http.InferRequestedOutput("OUTPUT", binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body([tensor], outputs=[output])
    return body, header_length


# --- Triton's protocol, through the gateway ------------------------------------------


@pytest.mark.triton
def test_tritonclient_reads_metadata_and_infers_json_and_binary_on_the_production_version(served, gateway_factory):
    gateway = gateway_factory(auth_open=True)
    client = client_for(gateway)

    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert [t["name"] for t in metadata["inputs"]] == ["INPUT"]
    assert client.get_model_config(MODEL)["backend"] == "python"
    assert infer(client, [1, 2, 3], binary=False) == [2, 4, 6]  # production = v1, x2
    assert infer(client, [1, 2, 3], binary=True) == [2, 4, 6]


@pytest.mark.triton
def test_a_version_in_the_path_pins_it(served, gateway_factory):
    client = client_for(gateway_factory(auth_open=True))

    assert infer(client, [1, 2], version="2") == [3, 6]
    assert client.get_model_metadata(MODEL, model_version="2")["versions"] == ["2"]
    assert infer(client, [1, 2], version="1") == [2, 4]


@pytest.mark.triton
def test_the_answer_is_tritons_byte_for_byte_binary_header_included(served, gateway_factory):
    gateway = gateway_factory(auth_open=True)
    body, header_length = binary_infer_body([1.5, -2, 4])
    sent = {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"}

    triton_url = f"{served['triton'].http_url}/v2/models/{MODEL}__v1/versions/1/infer"  # v1's own Triton name
    direct = requests.post(triton_url, data=body, headers=sent)
    through = requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=body, headers=sent)

    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content
    for name in ("Content-Type", "Inference-Header-Content-Length", "Content-Length"):
        assert through.headers.get(name) == direct.headers.get(name), name
    assert "Inference-Header-Content-Length" in through.headers


@pytest.mark.triton
def test_an_unknown_model_gets_tritons_own_error_and_status(served, gateway_factory):
    gateway = gateway_factory(auth_open=True)
    body = json.dumps({"inputs": [{"name": "INPUT", "datatype": "FP32", "shape": [1], "data": [1]}]})

    direct = requests.post(f"{served['triton'].http_url}/v2/models/no-such-model/infer", data=body)
    through = requests.post(f"{gateway.url}/v2/models/no-such-model/infer", data=body)

    assert direct.status_code >= 400
    assert (through.status_code, through.content) == (direct.status_code, direct.content)
    with pytest.raises(InferenceServerException, match="no-such-model"):
        client_for(gateway).get_model_metadata("no-such-model")


@pytest.mark.triton
def test_routing_follows_an_alias_move_within_two_seconds(served, gateway_factory):
    gateway = gateway_factory(auth_open=True, refresh_s=1.0)  # the default interval
    client = client_for(gateway)
    assert infer(client, [1]) == [2]

    move_alias(served["model"], "production", served["versions"][2], ACTOR)

    took = gateway.wait_for(lambda: infer(client, [1]) == [3], timeout=2.0, what="the alias move reaching routing")
    assert took < 2.0


def test_a_model_without_the_alias_or_with_its_version_nowhere_live_is_a_clear_error(
    registered, gateway_factory, fake_triton
):
    registered["model"].aliases.all().delete()
    InferenceServer.objects.filter(pk=registered["server"].pk).update(live=False)
    gateway = gateway_factory(auth_open=True)

    no_alias = requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}")
    pinned = requests.post(f"{gateway.url}/v2/models/{MODEL}/versions/2/infer", data=b"{}")

    assert no_alias.status_code == 404 and "has no 'production' alias" in no_alias.json()["error"]
    assert pinned.status_code == 503
    assert pinned.json()["error"] == f"model '{MODEL}' version 2 is not loaded on any live server"


# --- load sharing, failures ------------------------------------------------------------------


def test_two_live_servers_share_the_load_and_a_down_one_gets_none(registered, gateway_factory, fake_triton):
    # Stand-ins that count requests: which server answered is what this test is about.
    a, b, down = fake_triton("a"), fake_triton("b"), fake_triton("down")
    version = registered["versions"][1]
    for fake, live in ((a, True), (b, True), (down, False)):
        mark_loaded(version, InferenceServer.objects.create(name=fake.name, base_url=fake.url, live=live))
    InferenceServer.objects.filter(name="local").update(enabled=False)
    gateway = gateway_factory(auth_open=True)

    answers = [requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}").json() for _ in range(10)]

    assert (a.hits, b.hits, down.hits) == (5, 5, 0)
    assert {answer["path"] for answer in answers} == {f"/v2/models/{MODEL}__v1/versions/1/infer"}


def test_an_unreachable_server_is_a_502_naming_it(registered, gateway_factory):
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=f"http://127.0.0.1:{free_port()}")
    gateway = gateway_factory(auth_open=True)

    response = requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}")

    assert response.status_code == 502
    assert response.json()["error"].startswith("server local (127.0.0.1:") and "unreachable" in response.text


def test_a_server_that_never_answers_is_a_504_after_the_timeout(registered, gateway_factory, silent_server):
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=silent_server)
    gateway = gateway_factory(auth_open=True, timeout_s=0.5)

    started = time.monotonic()
    response = requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}", timeout=10)

    assert response.status_code == 504
    assert 0.5 <= time.monotonic() - started < 3
    assert response.json() == {"error": "server local did not answer within 0.5 s (MODELHUB_GATEWAY_TIMEOUT_S)"}


# --- auth ----------------------------------------------------------------------------------------


def test_a_token_with_the_infer_scope_is_needed_and_a_revoke_shows_after_one_refresh(
    registered, gateway_factory, fake_triton, token_for
):
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    infer_token, infer_text = token_for("infer")
    _, read_text = token_for("read")
    _, viewer_infer_text = token_for("infer", role="viewer")  # the role does not hold infer
    _, admin_text = token_for("admin", role="admin")
    gateway = gateway_factory()
    url = f"{gateway.url}/v2/models/{MODEL}/infer"

    def status(token: str | None) -> int:
        return requests.post(url, data=b"{}", headers=headers(token)).status_code

    missing = requests.post(url, data=b"{}")
    assert missing.status_code == 401 and "missing API token" in missing.json()["error"]
    assert status("mh_notatoken") == 401
    assert status(read_text) == 403
    assert "lacks the 'infer' scope" in requests.post(url, data=b"{}", headers=headers(read_text)).json()["error"]
    assert status(viewer_infer_text) == 403
    assert status(infer_text) == 200 and status(admin_text) == 200
    assert upstream.hits == 2  # refused requests never reached Triton

    revoke_token(infer_token, ACTOR)
    gateway.wait_for(lambda: status(infer_text) == 401, timeout=2.0, what="the revoke reaching the token cache")
    assert "has been revoked" in requests.post(url, data=b"{}", headers=headers(infer_text)).json()["error"]


def test_a_token_restricted_to_other_models_is_refused(registered, gateway_factory, fake_triton, token_for):
    from modelhub.registry.services import get_or_create_model

    other = get_or_create_model("other-model", ACTOR)
    _, text = token_for("infer", models=[other])
    gateway = gateway_factory()

    response = requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}", headers=headers(text))

    assert response.status_code == 403 and f"may not use model '{MODEL}'" in response.json()["error"]


def test_open_mode_needs_no_token(registered, gateway_factory, fake_triton):
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    assert requests.post(f"{gateway_factory(auth_open=False).url}/v2/models/{MODEL}/infer").status_code == 401

    assert requests.post(f"{gateway_factory(auth_open=True).url}/v2/models/{MODEL}/infer").status_code == 200


# --- sampling --------------------------------------------------------------------------------------


def test_sampling_under_a_slow_sink_drops_and_counts_and_requests_stay_fast(registered, gateway_factory, fake_triton):
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    written: list[dict] = []
    sink_entered = threading.Event()

    def slow_sink(samples):
        sink_entered.set()
        time.sleep(0.5)  # a database that takes its time
        written.extend(samples)

    gateway = gateway_factory(auth_open=True, sample_rate=1.0, sample_buffer=5, sample_batch=2, sample_sink=slow_sink)
    session = requests.Session()
    body = json.dumps({"id": "req-1", "inputs": []}).encode()
    took = []
    for _ in range(60):
        started = time.perf_counter()
        assert session.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=body).status_code == 200
        took.append(time.perf_counter() - started)

    stats = requests.get(f"{gateway.url}/v2/modelhub/stats").json()["sampling"]
    assert stats["dropped"] > 0 and stats["kept"] + stats["dropped"] == 60
    assert stats["buffered"] <= 5
    assert statistics.median(took) < 0.02  # a 0.5 s sink never shows on the request path
    gateway.wait_for(lambda: gateway.app.sampling.stats()["buffered"] == 0, timeout=5, what="the buffer draining")
    gateway.wait_for(lambda: len(written) == stats["kept"], timeout=5, what="the sink getting every kept sample")
    sample = written[0]
    assert (sample["model"], sample["version"], sample["request_id"]) == (MODEL, 1, "req-1")
    assert sample["request_body"] == body and sample["binary_header_length"] is None
    assert json.loads(sample["response_body"])["served_by"] == "a"


def test_sampling_without_a_sink_drops_and_counts(registered, gateway_factory, fake_triton):
    upstream = fake_triton("a")
    InferenceServer.objects.filter(pk=registered["server"].pk).update(base_url=upstream.url)
    gateway = gateway_factory(auth_open=True, sample_rate=1.0, sample_sink="modelhub.monitoring.no_such.sink")

    for _ in range(3):
        requests.post(f"{gateway.url}/v2/models/{MODEL}/infer", data=b"{}")

    gateway.wait_for(lambda: gateway.app.sampling.stats()["lost"] == 3, timeout=3, what="3 samples counted lost")


def test_a_server_outside_the_allowed_networks_gets_no_connection_and_a_502_naming_the_setting(served, gateway_factory):
    import ipaddress

    refused = gateway_factory(auth_open=True, allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    response = requests.post(f"{refused.url}/v2/models/{MODEL}/infer", data=b"{}")
    assert response.status_code == 502
    assert "127.0.0.1 is not in MODELHUB_TRITON_ALLOWED_NETWORKS (10.0.0.0/8)" in response.json()["error"]

    allowed = gateway_factory(auth_open=True, allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    assert infer(client_for(allowed), [1, 2, 3], binary=True) == [2, 4, 6]


def test_metrics_count_each_outcome_with_its_latency_and_ask_for_the_token_when_set(served, gateway_factory, settings):
    from prometheus_client.parser import text_string_to_metric_families

    gateway = gateway_factory(auth_open=True)
    client = client_for(gateway)
    for _ in range(3):
        infer(client, [1.0], binary=True)
    assert requests.get(f"{gateway.url}/v2/models/{MODEL}/versions/9/ready").status_code == 503  # not loaded
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")  # Triton's own 400, passed through

    samples = {
        (s.name, s.labels.get("outcome") or s.labels.get("result")): s.value
        for family in text_string_to_metric_families(requests.get(f"{gateway.url}/metrics").text)
        for s in family.samples
    }
    assert samples[("modelhub_gateway_request_duration_seconds_count", "ok")] == 3
    assert samples[("modelhub_gateway_request_duration_seconds_count", "triton_error")] == 1
    assert 0 < samples[("modelhub_gateway_request_duration_seconds_sum", "ok")] < 3
    assert samples[("modelhub_gateway_requests_total", "forwarded")] == 4

    settings.METRICS_TOKEN = "s3cret"
    assert requests.get(f"{gateway.url}/metrics").status_code == 401
    answer = requests.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 200 and "modelhub_gateway_request_duration_seconds_bucket" in answer.text
