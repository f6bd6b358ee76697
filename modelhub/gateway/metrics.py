"""The gateway's Prometheus metrics (GET /metrics on the gateway's port).

Latency is observed per forwarded request into a histogram by outcome: the request path
pays one clock read and one observe (a lock and a few additions, about a microsecond);
everything else (counters of refusals, the sampling buffer, connections) is read from the
gateway's own counters at scrape time. Each Gateway has its own registry, so several can
run in one process (tests) without clashing; with PROMETHEUS_MULTIPROC_DIR set
(`--workers N`), a scrape adds up every process's histogram from that folder.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# From a fast in-memory model (~1 ms) to a big batch near the timeout.
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OUTCOMES = ("ok", "triton_error", "unreachable", "timeout")


class GatewayMetrics:
    def __init__(self, gateway):
        self.registry = CollectorRegistry(auto_describe=True)
        histogram = Histogram(
            "modelhub_gateway_request_duration_seconds",
            "Time from a whole request to Triton's whole answer relayed (or the gateway's 502/504), "
            "by outcome: ok (Triton 2xx/3xx), triton_error (Triton's 4xx/5xx), unreachable, timeout",
            ["outcome"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        # Bound once: .labels() on the request path would cost a dict lookup under a lock.
        self.observe = {outcome: histogram.labels(outcome).observe for outcome in OUTCOMES}
        self._stats = CollectorRegistry(auto_describe=True)
        self._stats.register(_StatsCollector(gateway))

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # The histogram from every process's files; the plain counters are this process's.
            histograms = CollectorRegistry()
            multiprocess.MultiProcessCollector(histograms)
        else:
            histograms = self.registry
        return generate_latest(histograms) + generate_latest(self._stats)


class _StatsCollector:
    """The gateway's plain counters, read at scrape time."""

    def __init__(self, gateway):
        self.gateway = gateway

    def collect(self):
        stats = self.gateway.stats()
        requests = CounterMetricFamily(
            "modelhub_gateway_requests",
            "Requests by what became of them (forwarded to Triton, refused by auth, unreachable, timeouts)",
            labels=["result"],
        )
        for result, count in stats["requests"].items():
            requests.add_metric([result], count)
        yield requests
        sampling = stats["sampling"]
        for key, value in sampling.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and key != "rate":
                yield GaugeMetricFamily(f"modelhub_gateway_sampling_{key}", f"Sampling buffer: {key}", value=value)
        yield GaugeMetricFamily(
            "modelhub_gateway_live_servers", "Triton servers routed to", value=len(stats["routing"]["live_servers"])
        )
        yield GaugeMetricFamily(
            "modelhub_gateway_client_connections", "Open client connections", value=stats["connections"]["clients"]
        )
