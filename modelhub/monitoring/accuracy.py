"""The accuracy check: a model's evaluation set through Triton, scored.

The whole set goes through the deployment's server in batches no larger than
the version's max_batch_size (one row per request when the model does not
batch), over one client connection, with binary tensors and only the scored
output asked for. The result is the metric per version; a version's first
result (for the same set) is its baseline. Nothing here writes to the
database: the caller records the Result (modelhub.monitoring.record).
"""

import time

import numpy as np
from django.conf import settings
from django.db.models import prefetch_related_objects

from modelhub.lib import metrics
from modelhub.monitoring.models import CheckKind, CheckResult, Status, series_target
from modelhub.monitoring.record import Result
from modelhub.registry.evaluation import EvaluationData, EvaluationSetError, open_evaluation_data
from modelhub.registry.models import EvaluationSet
from modelhub.serving.models import Deployment, triton_model_name
from modelhub.serving.triton_client import TritonClient, TritonError


class NoEvaluationSet(Exception):
    """The model has no evaluation set to measure accuracy with."""


def evaluate(
    client: TritonClient,
    deployment: Deployment,
    evaluation_set: EvaluationSet | None = None,
    *,
    time_limit_s: float | None = None,
) -> Result:
    """Send `evaluation_set` (None: the model's own) through `deployment`'s server and score
    the answers. Raises NoEvaluationSet when the model has none; every other problem (a set
    the version's schema cannot take, Triton failing, the time limit) is a fail Result."""
    version = deployment.version
    prefetch_related_objects([version], "tensors")  # its schema is read several times below
    if evaluation_set is None:
        evaluation_set = EvaluationSet.objects.filter(model_id=version.model_id).first()
        if evaluation_set is None:
            raise NoEvaluationSet(f"model {version.model.name!r} has no evaluation set")
    started = time.monotonic()
    limit = time_limit_s if time_limit_s is not None else settings.ACCURACY_RUN_TIMEOUT_S
    details = {
        "metric": evaluation_set.metric,
        "k": evaluation_set.k,
        "rows": evaluation_set.rows,
        "threshold": evaluation_set.threshold,
        "baseline": None,
        "tolerance": evaluation_set.tolerance,
        "batch_size": version.max_batch_size or 1,
        "seconds": None,
        "requests": 0,
        "largest_request_rows": 0,
        "evaluation_set": evaluation_set.sha256,
        "lower_is_better": evaluation_set.lower_is_better,
    }

    def result(status: str, message: str, value: float | None = None) -> Result:
        details["seconds"] = round(time.monotonic() - started, 3)
        return Result(
            kind=CheckKind.ACCURACY,
            status=status,
            server_id=deployment.server_id,
            deployment_id=deployment.pk,
            version_id=version.pk,
            value=value,
            message=message,
            details=details,
            points=[(evaluation_set.metric, series_target(version), value)] if value is not None else [],
        )

    try:
        data = open_evaluation_data(evaluation_set, version)
    except EvaluationSetError as exc:
        return result(Status.FAIL, f"the evaluation set does not fit {version}'s schema: {exc}")
    except OSError as exc:
        return result(Status.FAIL, f"the evaluation set's file cannot be read: {exc}")
    try:
        predicted = _answers(client, deployment, data, evaluation_set.output, started + limit, details)
    except TritonError as exc:
        return result(Status.FAIL, f"{version} on {deployment.server.name}: {exc}")
    except TimeoutError as exc:
        return result(Status.FAIL, str(exc))
    output = next(t for t in version.outputs if t.name == evaluation_set.output)
    try:
        value = metrics.score(evaluation_set.metric, predicted, data.expected, k=evaluation_set.k, labels=output.labels)
    except metrics.MetricError as exc:
        return result(Status.FAIL, f"the answers of {version} cannot be scored: {exc}")
    baseline = _first_value(version.pk, evaluation_set.sha256)
    details["baseline"] = value if baseline is None else baseline
    details["is_baseline"] = baseline is None
    return _judged(result, evaluation_set, value, data.rows)


def _answers(
    client: TritonClient, deployment: Deployment, data: EvaluationData, output: str, deadline: float, details: dict
) -> np.ndarray:
    version = deployment.version
    # One timeout for every request; the first one after a load may warm the model up,
    # as the reconciler's smoke inference knows.
    timeout = max(min(client.load_timeout, deadline - time.monotonic()), 0.1)
    spans: list[tuple[int, int]] = []  # the rows of each request sent, in order

    def requests():
        for start, end, inputs in data.batches(version.max_batch_size):
            spans.append((start, end))
            yield inputs

    answers = []
    name = triton_model_name(version.model.name, version.number)
    stream = client.infer_many(name, version.number, requests(), data.datatypes, output, timeout=timeout)
    try:
        while True:
            try:
                answer = next(stream)
            except StopIteration:
                break
            except TritonError as exc:  # the same error (TritonUnavailable stays one), naming the rows sent
                start, end = spans[len(answers)]
                raise type(exc)(exc.server, exc.call, f"rows {start}..{end - 1}: {exc.detail}", exc.status) from exc
            start, end = spans[len(answers)]
            if version.max_batch_size <= 0:
                answer = answer[None, ...]  # the row's answer, as a batch of one
            if len(answer) != end - start:
                call = f"infer ({name})"
                raise TritonError(deployment.server.name, call, f"answered {len(answer)} rows for {end - start}")
            answers.append(answer)
            details["requests"] += 1
            details["largest_request_rows"] = max(details["largest_request_rows"], end - start)
            if time.monotonic() > deadline and end < data.rows:
                raise TimeoutError(
                    f"stopped after {end} of {data.rows} rows: the run took longer than its time limit "
                    "(MODELHUB_ACCURACY_RUN_TIMEOUT_S, or MODELHUB_ACCURACY_API_TIMEOUT_S through the API)"
                )
    finally:
        stream.close()  # stops sending and closes its connections
    return _concatenate(answers)


def _concatenate(answers: list[np.ndarray]) -> np.ndarray:
    shapes = {a.shape[1:] for a in answers}
    if len(shapes) == 1:
        return np.concatenate(answers)
    # Variable-size outputs: only one value per row can be scored against one expected value.
    return np.concatenate([a.reshape(len(a), -1) for a in answers])


def _first_value(version_id: int, sha256: str) -> float | None:
    """The version's first accuracy figure on this set: its baseline."""
    return (
        CheckResult.objects.filter(
            kind=CheckKind.ACCURACY, version_id=version_id, value__isnull=False, details__evaluation_set=sha256
        )
        .order_by("created_at", "id")
        .values_list("value", flat=True)
        .first()
    )


def _judged(result, evaluation_set: EvaluationSet, value: float, rows: int) -> Result:
    name = evaluation_set.get_metric_display()
    if evaluation_set.metric == "top_k_accuracy":
        name = f"top-{evaluation_set.k} accuracy"
    figure = f"{name} {value:.4g} on {rows} rows"
    threshold = evaluation_set.threshold
    if threshold is None:
        return result(Status.OK, f"{figure} (no threshold)", value)
    worse = value > threshold if evaluation_set.lower_is_better else value < threshold
    if worse:
        side = "above the ceiling" if evaluation_set.lower_is_better else "below the threshold"
        return result(Status.FAIL, f"{figure} is {side} {threshold:g}", value)
    return result(Status.OK, f"{figure} (threshold {threshold:g})", value)
