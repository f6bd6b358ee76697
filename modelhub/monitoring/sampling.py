"""Sampled requests and uploaded prediction logs -> stored feature and output columns.

The gateway hands `write_samples` the raw bodies it saw (off the request path);
applications calling Triton directly upload prediction logs (`write_prediction_logs`).
Both end as `SampleBlock` rows: per sample a time, a request id, the features of each
input tensor and the outputs, laid out by the version's schema (`Layout`):

- an input tensor of fixed dims with at most SMALL_TENSOR elements gives one feature
  per element (`input[0]` … `input[63]`); a larger or variable-size one gives its
  summary (`input.mean`, `.std`, `.min`, `.max`, `.nan_share`);
- a per-class scores output gives its predicted class (`probabilities.class`, the
  argmax); any other output gives its first value (`label`).
"""

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from tritonclient.utils import triton_to_np_dtype

from modelhub.audit.actors import Actor
from modelhub.audit.log import record as audit
from modelhub.monitoring.models import SampleBlock
from modelhub.registry.evaluation import output_is_scores
from modelhub.registry.models import ModelVersion
from modelhub.registry.triton_config import served_dims

log = logging.getLogger(__name__)

SMALL_TENSOR = 64
SUMMARY = ("mean", "std", "min", "max", "nan_share")


class SampleError(ValueError):
    """A record that does not fit the version's schema; `field` names where."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class TensorColumns:
    name: str
    datatype: str
    dims: tuple[int, ...]  # served dims (no batch dimension)
    elementwise: bool  # inputs: one feature per element; outputs: per-class scores (argmax)


class Layout:
    """The feature and output columns of one version, from its schema."""

    def __init__(self, version: ModelVersion):
        self.batched = version.max_batch_size > 0
        self.inputs = [self._input(t.as_dict()) for t in version.inputs]
        self.outputs = [self._output(t.as_dict()) for t in version.outputs]
        self.feature_names = [name for tensor in self.inputs for name in self._feature_names(tensor)]
        self.output_names = [f"{t.name}.class" if t.elementwise else t.name for t in self.outputs]
        labels = [t.as_dict().get("labels") for t in version.outputs]
        # The output whose classes the outputs' distribution (and live accuracy) is about.
        self.class_output = next(
            (i for i, t in enumerate(self.outputs) if t.elementwise or t.datatype.startswith(("INT", "UINT"))), None
        )
        self.class_labels = labels[self.class_output] if self.class_output is not None else None

    @staticmethod
    def _input(spec: dict) -> TensorColumns:
        dims = tuple(served_dims(spec["dims"]))
        fixed = all(d >= 0 for d in dims)
        small = fixed and spec["datatype"] != "BYTES" and int(np.prod(dims, dtype=np.int64)) <= SMALL_TENSOR
        return TensorColumns(spec["name"], spec["datatype"], dims, small)

    @staticmethod
    def _output(spec: dict) -> TensorColumns:
        dims = tuple(served_dims(spec["dims"]))
        # Per-class scores have a fixed class count; a variable-length output ([-1]) is values.
        scores = output_is_scores(spec["datatype"], dims) and all(d > 0 for d in dims)
        return TensorColumns(spec["name"], spec["datatype"], dims, scores)

    @staticmethod
    def _feature_names(tensor: TensorColumns) -> list[str]:
        if tensor.elementwise:
            return [f"{tensor.name}[{i}]" for i in range(int(np.prod(tensor.dims, dtype=np.int64)))]
        return [f"{tensor.name}.{stat}" for stat in SUMMARY]

    def features(self, inputs: dict[str, np.ndarray], rows: int) -> np.ndarray:
        """float32 [rows, features] from each input's [rows, *dims] values."""
        columns = []
        for tensor in self.inputs:
            if tensor.name not in inputs:
                raise SampleError(f"inputs.{tensor.name}", "is missing")
            values = _numeric(inputs[tensor.name], f"inputs.{tensor.name}").reshape(rows, -1)
            if tensor.elementwise:
                expected = int(np.prod(tensor.dims, dtype=np.int64))
                if values.shape[1] != expected:
                    raise SampleError(
                        f"inputs.{tensor.name}",
                        f"has {values.shape[1]} values per row, the schema's dims {list(tensor.dims)} hold {expected}",
                    )
                columns.append(values.astype(np.float32))
            else:
                columns.append(_summary(values))
        return np.hstack(columns).astype(np.float32, copy=False) if columns else np.zeros((rows, 0), np.float32)

    def output_values(self, outputs: dict[str, np.ndarray], rows: int) -> np.ndarray:
        """float64 [rows, outputs]: the predicted class of scores outputs, the first value of others."""
        columns = np.full((rows, len(self.outputs)), np.nan)
        for i, tensor in enumerate(self.outputs):
            if tensor.name not in outputs:
                continue  # a request may ask for some outputs only
            values = _numeric(outputs[tensor.name], f"outputs.{tensor.name}").reshape(rows, -1)
            if values.shape[1] == 0:
                raise SampleError(f"outputs.{tensor.name}", "has no values")
            columns[:, i] = np.argmax(values, axis=1) if tensor.elementwise else values[:, 0]
        return columns

    def rows_of(self, tensors: dict[str, np.ndarray]) -> int:
        """How many samples one request's tensors hold: the batch size, or 1 without batching."""
        if not self.batched or not tensors:
            return 1
        return int(np.asarray(next(iter(tensors.values()))).shape[0]) if np.ndim(next(iter(tensors.values()))) else 1


def _numeric(values, field: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise SampleError(field, "holds values that are not numbers (or rows of different lengths)") from None
    return array


def _summary(values: np.ndarray) -> np.ndarray:
    """[rows, 5]: mean, std, min, max (over the non-NaN values) and the NaN share of each row."""
    nan = np.isnan(values)
    out = np.zeros((len(values), len(SUMMARY)), dtype=np.float64)
    if values.shape[1] == 0:
        return out
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        out[:, 0] = np.nanmean(values, axis=1)
        out[:, 1] = np.nanstd(values, axis=1)
        out[:, 2] = np.nanmin(values, axis=1)
        out[:, 3] = np.nanmax(values, axis=1)
    out[:, 4] = nan.mean(axis=1)
    return out


def _quiet_nan_warnings():
    import warnings

    manager = warnings.catch_warnings()
    warnings.simplefilter("ignore", RuntimeWarning)
    return manager


# --- Triton bodies -------------------------------------------------------------------


def parse_infer_body(body: bytes, header_length: int | None, key: str) -> dict[str, np.ndarray]:
    """{tensor name: array} of a Triton v2 infer request or response body (`key`: inputs or outputs).

    JSON bodies carry `data`; with the binary extension, the JSON header is followed by
    each binary tensor's bytes in order (`parameters.binary_data_size`). A response does
    not say its header length in the body: the JSON header is read up to its end.
    """
    if header_length is None:
        header, end = _json_prefix(body)
    else:
        header, end = json.loads(body[:header_length]), header_length
    tensors = {}
    offset = end
    for tensor in header.get(key, []):
        shape = [int(d) for d in tensor.get("shape", [])]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[offset : offset + int(size)]
            offset += int(size)
            if tensor["datatype"] == "BYTES":
                continue  # strings carry no numeric feature
            array = np.frombuffer(raw, dtype=np.dtype(triton_to_np_dtype(tensor["datatype"])).newbyteorder("<"))
            tensors[tensor["name"]] = array.reshape(shape)
        elif "data" in tensor and tensor["datatype"] != "BYTES":
            tensors[tensor["name"]] = np.asarray(tensor["data"], dtype=np.float64).reshape(shape)
    return tensors


def _json_prefix(body: bytes) -> tuple[dict, int]:
    # latin-1 maps each byte to one character: the decoder's end index is the byte offset.
    text = body.decode("latin-1")
    header, end = json.JSONDecoder().raw_decode(text)
    return header, end


# --- writing -------------------------------------------------------------------------


@dataclass
class Batch:
    """Samples of one version being gathered for one block."""

    times: list
    request_ids: list
    features: list
    outputs: list

    def add(self, times, request_ids, features, outputs) -> None:
        self.times.extend(times)
        self.request_ids.extend(request_ids)
        self.features.append(features)
        self.outputs.append(outputs)


def _new_batch() -> Batch:
    return Batch([], [], [], [])


def write_samples(samples: list[dict]) -> None:
    """Store the gateway's sampled requests, one block per version. Samples that cannot be
    parsed (or name a version that is gone) are dropped, counted in the log, never raised."""
    versions = _versions({(s["model"], int(s["version"])) for s in samples})
    batches: dict[int, Batch] = defaultdict(_new_batch)
    layouts: dict[int, Layout] = {}
    dropped = 0
    for sample in samples:
        version = versions.get((sample["model"], int(sample["version"])))
        if version is None:
            dropped += 1
            continue
        layout = layouts.get(version.pk) or layouts.setdefault(version.pk, Layout(version))
        try:
            inputs = parse_infer_body(sample["request_body"], sample.get("binary_header_length"), "inputs")
            outputs = parse_infer_body(sample["response_body"], sample.get("response_binary_header_length"), "outputs")
            rows = layout.rows_of(inputs)
            features = layout.features(inputs, rows)
            values = layout.output_values(outputs, rows)
        except (SampleError, ValueError, KeyError, TypeError) as exc:
            dropped += 1
            log.debug("sample %s of %s dropped: %s", sample.get("request_id"), version, exc)
            continue
        ids = [sample["request_id"]] if rows == 1 else [f"{sample['request_id']}/{i}" for i in range(rows)]
        batches[version.pk].add([sample["time"]] * rows, ids, features, values)
    if dropped:
        log.warning("%d of %d samples could not be read and were dropped", dropped, len(samples))
    _store(batches, source="gateway")


def _versions(keys: set[tuple[str, int]]) -> dict[tuple[str, int], ModelVersion]:
    names = {name for name, _ in keys}
    rows = ModelVersion.objects.filter(model__name__in=names).select_related("model").prefetch_related("tensors")
    return {(v.model.name, v.number): v for v in rows if (v.model.name, v.number) in keys}


def _store(batches: dict[int, Batch], source: str) -> list[SampleBlock]:
    blocks = []
    for version_id, batch in batches.items():
        if not batch.times:
            continue
        seconds = np.array([t.timestamp() for t in batch.times], dtype="<f8")
        blocks.append(
            SampleBlock(
                version_id=version_id,
                first_time=datetime.fromtimestamp(seconds.min(), tz=UTC),
                last_time=datetime.fromtimestamp(seconds.max(), tz=UTC),
                count=len(seconds),
                times=seconds.tobytes(),
                request_ids=batch.request_ids,
                features=np.vstack(batch.features).astype("<f4").tobytes(),
                outputs=np.vstack(batch.outputs).astype("<f8").tobytes(),
                source=source,
            )
        )
    return SampleBlock.objects.bulk_create(blocks)


def parse_records(version: ModelVersion, records: list, now: datetime | None = None) -> Batch:
    """Uploaded prediction-log records, checked against the version's schema.

    Each record: {"request_id": str, "time": datetime (optional), "inputs": {name: array},
    "outputs": {name: array}}. SampleError names the record (by index) and the field.
    """
    layout = Layout(version)
    now = now or timezone.now()
    batch = _new_batch()
    input_names = {t.name for t in layout.inputs}
    output_names = {t.name for t in layout.outputs}
    for i, record in enumerate(records):
        where = f"[{i}]"
        try:
            _check_names(record.get("inputs") or {}, input_names, "inputs", required=True)
            _check_names(record.get("outputs") or {}, output_names, "outputs", required=True)
            inputs = {name: _one_row(value, f"inputs.{name}") for name, value in record["inputs"].items()}
            outputs = {name: _one_row(value, f"outputs.{name}") for name, value in record["outputs"].items()}
            features = layout.features(inputs, 1)
            values = layout.output_values(outputs, 1)
        except SampleError as exc:
            raise SampleError(f"{where}.{exc.field}", exc.problem) from None
        batch.add([record.get("time") or now], [record["request_id"]], features, values)
    return batch


def _check_names(values: dict, known: set[str], key: str, required: bool) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise SampleError(f"{key}.{unknown[0]}", f"is not one of the version's {key} ({', '.join(sorted(known))})")
    missing = sorted(known - set(values))
    if required and missing:
        raise SampleError(f"{key}.{missing[0]}", "is missing")


def _one_row(value, field: str) -> np.ndarray:
    # One record is one sample: its tensor without the batch dimension.
    return np.expand_dims(_numeric(value, field), 0)


def write_prediction_logs(version: ModelVersion, records: list, actor: Actor) -> int:
    """Validate and store uploaded prediction logs as one block, audited; the number of samples stored."""
    if not records:
        return 0
    batch = parse_records(version, records)
    with transaction.atomic():
        _store({version.pk: batch}, source="api")
        audit(actor, "predictions.upload", version, samples=len(batch.times))
    return len(batch.times)


def record_labels(model, labels: Iterable[tuple[str, str]], actor: Actor) -> int:
    """Ground truth for logged request ids (a request id labelled again takes the newer label), audited;
    the number of request ids labelled."""
    from modelhub.monitoring.models import PredictionLabel

    latest = dict(labels)  # the last label of a repeated id wins
    with transaction.atomic():
        PredictionLabel.objects.bulk_create(
            [PredictionLabel(model=model, request_id=rid, label=label) for rid, label in latest.items()],
            update_conflicts=True,
            unique_fields=["model", "request_id"],
            update_fields=["label"],
        )
        audit(actor, "labels.upload", model, labels=len(latest))
    return len(latest)


def prune_samples(now: datetime | None = None) -> int:
    """Delete blocks past MONITORING_SAMPLE_RETENTION_DAYS (and labels past it); the blocks deleted."""
    from modelhub.monitoring.models import PredictionLabel
    from modelhub.serving.retention import delete_older_than

    cutoff = (now or timezone.now()) - timedelta(days=settings.MONITORING_SAMPLE_RETENTION_DAYS)
    batch = settings.RETENTION_BATCH_SIZE
    deleted = delete_older_than(SampleBlock, cutoff, batch, field="last_time")
    delete_older_than(PredictionLabel, cutoff, batch)
    return deleted


# How each column of a block is stored (_store writes them): little-endian, row-major [count, width].
COLUMN_DTYPES = {"times": "<f8", "features": "<f4", "outputs": "<f8"}
# A page or chart reads at most about this many samples of a window (window_sample).
WINDOW_SAMPLE_ROWS = 50_000


def _column(raw: bytes, column: str, count: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=COLUMN_DTYPES[column]).reshape(count, -1)


def _inside(times: bytes, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
    seconds = np.frombuffer(times, dtype=COLUMN_DTYPES["times"])
    return seconds, (seconds >= start.timestamp()) & (seconds < end.timestamp())


def window_sample(
    version_id: int, start: datetime, end: datetime, max_rows: int = WINDOW_SAMPLE_ROWS, column: str = "features"
) -> np.ndarray | None:
    """`column` ([n, features] or [n, outputs]) of samples in [start, end), bounded for a page: every
    block when they hold at most about `max_rows` samples, else evenly spaced blocks holding about that
    many (the drift pass reads every sample with iter_blocks). None: no samples."""
    blocks = list(
        SampleBlock.objects.filter(version_id=version_id, last_time__gte=start, first_time__lt=end)
        .order_by("id")
        .values_list("id", "count")
    )
    step = max(1, -(-sum(count for _, count in blocks) // max_rows))
    chosen = [pk for pk, _ in blocks[::step]]
    rows = SampleBlock.objects.filter(pk__in=chosen).order_by("id").values_list("count", "times", column)
    parts = [
        _column(values, column, count)[_inside(times, start, end)[1]] for count, times, values in rows.iterator(20)
    ]
    current = np.vstack(parts) if parts else None
    return current if current is not None and len(current) else None


def iter_blocks(
    version_id: int, start: datetime, end: datetime, with_ids: bool = False, chunk: int = 20
) -> Iterable[tuple]:
    """(times, request ids or None, features [n, F], outputs [n, O]) of the samples in [start, end),
    block by block: at most `chunk` blocks in memory (request ids only when asked: they are Python strings)."""
    fields = ["count", "times", "features", "outputs"] + (["request_ids"] if with_ids else [])
    rows = (
        SampleBlock.objects.filter(version_id=version_id, last_time__gte=start, first_time__lt=end)
        .order_by("id")
        .values_list(*fields)
    )
    for count, times, features, outputs, *ids in rows.iterator(chunk_size=chunk):
        request_ids = ids[0] if with_ids else None
        seconds, inside = _inside(times, start, end)
        feats, outs = _column(features, "features", count), _column(outputs, "outputs", count)
        if inside.all():
            yield seconds, request_ids, feats, outs
        elif inside.any():
            ids = [r for r, keep in zip(request_ids, inside, strict=True) if keep] if with_ids else None
            yield seconds[inside], ids, feats[inside], outs[inside]
