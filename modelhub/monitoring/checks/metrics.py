"""Server metrics: Triton's Prometheus endpoint (parsed with prometheus_client's
parser by TritonClient.scrape_metrics) turned into CPU, host memory and, where
the server has GPUs, GPU utilisation and memory points."""

from collections import defaultdict

from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result
from modelhub.serving.models import InferenceServer
from modelhub.serving.triton_client import TritonClient, TritonError

# Triton's metric -> ModelHub's series name, and how samples of several devices
# (one per GPU, labelled gpu_uuid) combine: memory adds up, utilisation averages.
SERVER_METRICS = {
    "nv_cpu_utilization": ("cpu_util", "mean"),
    "nv_cpu_memory_used_bytes": ("memory_used_bytes", "sum"),
    "nv_cpu_memory_total_bytes": ("memory_total_bytes", "sum"),
    "nv_gpu_utilization": ("gpu_util", "mean"),
    "nv_gpu_memory_used_bytes": ("gpu_memory_used_bytes", "sum"),
    "nv_gpu_memory_total_bytes": ("gpu_memory_total_bytes", "sum"),
}


def server_figures(families: list) -> dict[str, float]:
    """The server figures found in parsed metric families (GPU ones only where present)."""
    values: dict[str, list[float]] = defaultdict(list)
    for family in families:
        if family.name not in SERVER_METRICS:
            continue
        for sample in family.samples:
            if sample.name == family.name:
                values[family.name].append(float(sample.value))
    figures = {}
    for metric, samples in values.items():
        if samples:
            name, combine = SERVER_METRICS[metric]
            figures[name] = sum(samples) / len(samples) if combine == "mean" else sum(samples)
    # Triton reports 0 bytes of 0 until its first sampling (2 s after start): no reading yet.
    for prefix in ("memory", "gpu_memory"):
        if figures.get(f"{prefix}_total_bytes") == 0:
            figures.pop(f"{prefix}_total_bytes")
            figures.pop(f"{prefix}_used_bytes", None)
    return figures


def check_metrics(server: InferenceServer, client: TritonClient) -> Result:
    try:
        figures = server_figures(client.scrape_metrics())
    except TritonError as exc:
        return Result(CheckKind.METRICS, Status.FAIL, server_id=server.pk, message=str(exc))
    target = f"server:{server.pk}"
    return Result(
        CheckKind.METRICS,
        Status.OK,
        server_id=server.pk,
        value=figures.get("cpu_util"),
        details=figures,
        points=[(name, target, value) for name, value in figures.items()],
    )


def server_memory(client: TritonClient) -> tuple[str, float]:
    """("gpu", bytes used on all GPUs) where the server has GPUs, else ("cpu", host bytes used)."""
    figures = server_figures(client.scrape_metrics())
    if "gpu_memory_used_bytes" in figures:
        return "gpu", figures["gpu_memory_used_bytes"]
    if "memory_used_bytes" in figures:
        return "cpu", figures["memory_used_bytes"]
    raise TritonError(client.server_name, "metrics scrape", "no memory figures (nv_gpu_memory_*, nv_cpu_memory_*) yet")
