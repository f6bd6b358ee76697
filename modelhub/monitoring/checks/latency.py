"""Latency probe: N inferences with inputs generated from the registered schema
(strings included), timed on the client; p50/p95/p99 against the model's SLO."""

import time

import numpy as np
from django.conf import settings

from modelhub.monitoring.checks._target import deployment_fields, triton_name
from modelhub.monitoring.models import CheckKind, Status
from modelhub.monitoring.record import Result
from modelhub.serving.models import Deployment
from modelhub.serving.probe_inputs import probe_inputs
from modelhub.serving.triton_client import TritonClient, TritonError, TritonUnavailable


def probe_latency(client: TritonClient, deployment: Deployment, requests: int | None = None) -> Result:
    requests = requests or settings.LATENCY_PROBE_REQUESTS
    version = deployment.version
    name, number = triton_name(deployment)
    fields = deployment_fields(deployment)
    slo_ms = version.model.latency_slo_ms
    # One set of inputs for all requests: generating strings costs more than
    # sending them, and the probe measures the server, not the generator.
    arrays, datatypes = probe_inputs([t.as_dict() for t in version.inputs], version.max_batch_size)
    durations_ms: list[float] = []
    errors: list[str] = []
    for _ in range(requests):
        start = time.perf_counter()
        try:
            client.infer_outputs(name, number, arrays, datatypes)
        except TritonUnavailable as exc:
            errors.append(str(exc))
            break  # no answer at all: the next requests would each wait out the timeout too
        except TritonError as exc:
            errors.append(str(exc))
            continue
        durations_ms.append((time.perf_counter() - start) * 1000)
    details = {"requests": requests, "errors": len(errors), "slo_ms": slo_ms}
    if not durations_ms:
        details.update(p50_ms=None, p95_ms=None, p99_ms=None)
        message = f"latency probe of {version} on {client.server_name!r}: no request succeeded: {errors[0]}"
        return Result(CheckKind.LATENCY, Status.FAIL, message=message, details=details, **fields)
    p50, p95, p99 = (float(p) for p in np.percentile(durations_ms, [50, 95, 99]))
    details.update(p50_ms=round(p50, 3), p95_ms=round(p95, 3), p99_ms=round(p99, 3))
    problems = []
    if errors:
        problems.append(f"{len(errors)} of {requests} requests failed (first: {errors[0]})")
    if slo_ms is not None and p95 > slo_ms:
        problems.append(f"p95 {p95:.1f} ms is above the model's SLO of {slo_ms:g} ms")
    target = f"deployment:{deployment.pk}"
    return Result(
        CheckKind.LATENCY,
        Status.FAIL if problems else Status.OK,
        value=p95,
        message=f"latency probe of {version} on {client.server_name!r}: " + "; ".join(problems) if problems else "",
        details=details,
        points=[("latency_p50_ms", target, p50), ("latency_p95_ms", target, p95), ("latency_p99_ms", target, p99)],
        **fields,
    )
