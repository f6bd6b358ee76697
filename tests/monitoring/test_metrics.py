"""Server metrics from a real Triton's Prometheus endpoint; no redirect followed, a timeout per scrape."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelhub.monitoring.checks.metrics import server_figures
from modelhub.monitoring.models import CheckKind, CheckResult, Point, Status
from modelhub.monitoring.passes import run_pass
from modelhub.serving.models import InferenceServer
from modelhub.serving.triton_client import TritonClient, TritonError, TritonUnavailable
from tests.monitoring.test_checks import hanging_port  # noqa: F401 (fixture)
from tests.serving.test_deploy import register_server


@pytest.fixture
def http_server():
    """Start a loopback HTTP server whose GET answers come from `answer(handler)`; counts hits per path."""
    started = []

    def start(answer):
        hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                answer(self)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_port}", hits

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


def wait_for_memory_figures(client: TritonClient) -> dict:
    # Triton samples CPU memory every 2 s; right after its start it reports 0 of 0.
    deadline = time.monotonic() + 5
    while "memory_used_bytes" not in (figures := server_figures(client.scrape_metrics())):
        assert time.monotonic() < deadline, figures
        time.sleep(0.2)
    return figures


@pytest.mark.django_db(transaction=True)
@pytest.mark.triton
def test_metrics_pass_parses_the_real_triton_metrics(triton):
    server = register_server(triton, "metrics-real")
    wait_for_memory_figures(TritonClient.for_server(server))

    report = run_pass("metrics", "metrics:real")

    assert report.written == 1
    [result] = CheckResult.objects.filter(kind=CheckKind.METRICS, server=server)
    assert result.status == Status.OK, result.message
    figures = result.details
    assert 0 <= figures["cpu_util"] <= 1
    assert 0 < figures["memory_used_bytes"] < figures["memory_total_bytes"]
    assert not any(name.startswith("gpu_") for name in figures)  # this machine has no GPU: Triton reports none
    series = dict(Point.objects.filter(target=f"server:{server.pk}").values_list("metric", "value"))
    assert series == pytest.approx(figures)


def test_gpu_figures_add_up_memory_and_average_utilisation_over_devices():
    from prometheus_client.parser import text_string_to_metric_families

    text = """# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.2
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.6
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} 1000
nv_gpu_memory_used_bytes{gpu_uuid="GPU-b"} 3000
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-a"} 8000
nv_gpu_memory_total_bytes{gpu_uuid="GPU-b"} 8000
# TYPE nv_cpu_memory_total_bytes gauge
nv_cpu_memory_total_bytes 0
# TYPE nv_cpu_memory_used_bytes gauge
nv_cpu_memory_used_bytes 0
"""
    figures = server_figures(list(text_string_to_metric_families(text)))
    assert figures == pytest.approx(
        {"gpu_util": 0.4, "gpu_memory_used_bytes": 4000, "gpu_memory_total_bytes": 16000}
    )  # and host memory of 0 of 0 (not sampled yet) is no figure at all


@pytest.mark.django_db(transaction=True)
@pytest.mark.triton
def test_a_redirecting_metrics_url_is_refused_not_followed(triton, http_server):
    target_url, target_hits = http_server(lambda h: (h.send_response(200), h.end_headers(), h.wfile.write(b"")))

    def redirect(handler):
        handler.send_response(302)
        handler.send_header("Location", f"{target_url}/metrics")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    redirect_url, _ = http_server(redirect)
    server = InferenceServer.objects.create(
        name="metrics-redirect", base_url=triton.http_url, metrics_url=f"{redirect_url}/metrics"
    )

    with pytest.raises(TritonError, match="redirects are not followed") as caught:
        TritonClient.for_server(server).scrape_metrics()
    assert "HTTP 302" in str(caught.value) and f"{target_url}/metrics" in str(caught.value)
    assert target_hits == []

    run_pass("metrics", "metrics:redirect")
    [result] = CheckResult.objects.filter(kind=CheckKind.METRICS, server=server)
    assert result.status == Status.FAIL and "redirect" in result.message


def test_a_metrics_endpoint_that_never_answers_costs_one_timeout(hanging_port):  # noqa: F811
    client = TritonClient("silent-metrics", "http://127.0.0.1:1", f"http://127.0.0.1:{hanging_port}/metrics")

    started = time.monotonic()
    with pytest.raises(TritonUnavailable, match="silent-metrics.*metrics scrape"):
        client.scrape_metrics(timeout=0.5)
    assert time.monotonic() - started < 1.5
