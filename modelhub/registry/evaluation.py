"""Evaluation sets: reading them, checking them against a version's schema, and
the one write path that attaches one to a model or removes it.

A set is a `.npz` (one array per input tensor, named after it, plus one named
after the expected output; rows along the first axis; strings as fixed-width
numpy strings, never pickled objects) or JSON lines, one row per line:
`{"inputs": {"<input>": value, ...}, "expected": value}`.

The same reader serves the upload (checked against the model's latest version)
and the accuracy check (against the version it evaluates): a set a version
cannot take is refused with the row, the field and what is wrong.
"""

import json
import logging
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.utils import timezone
from tritonclient.utils import triton_to_np_dtype

from modelhub.audit.actors import Actor
from modelhub.audit.log import record
from modelhub.lib import diskspace, metrics
from modelhub.registry.models import EvaluationMetric, EvaluationSet, EvaluationSetFormat, Model, ModelVersion
from modelhub.registry.triton_config import served_dims

log = logging.getLogger(__name__)

_ZIP_MAGIC = b"PK\x03\x04"
_FLOATS = {"FP16", "BF16", "FP32", "FP64"}


class EvaluationSetError(ValueError):
    """A set that cannot be used. `errors` maps fields ("file", "output", …) to what is wrong."""

    def __init__(self, errors: dict[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in self.errors.items()))


def _file_error(message: str) -> EvaluationSetError:
    return EvaluationSetError({"file": message})


@dataclass
class EvaluationData:
    """A set read for one version: inputs ready to send, expected values ready to score.

    Each input is an array of all rows ([rows, *served dims]) or, where rows of a
    variable-size tensor differ in shape (JSON lines), a list with one array per row.
    """

    rows: int
    inputs: dict[str, np.ndarray | list[np.ndarray]]
    datatypes: dict[str, str]
    expected: np.ndarray

    def batches(self, max_batch_size: int) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """(first row, end row, request inputs) covering every row in order.

        With max_batch_size 0 the model has no batch dimension: one row per
        request, sent in its own shape. Otherwise consecutive rows of the same
        shape go together, at most max_batch_size of them.
        """
        if max_batch_size <= 0:
            for i in range(self.rows):
                yield i, i + 1, {name: values[i] for name, values in self.inputs.items()}
            return
        start = 0
        while start < self.rows:
            end = min(start + max_batch_size, self.rows)
            end = self._same_shape_until(start, end)
            yield start, end, {name: self._stack(values, start, end) for name, values in self.inputs.items()}
            start = end

    def _same_shape_until(self, start: int, end: int) -> int:
        for values in self.inputs.values():
            if isinstance(values, list):
                shape = values[start].shape
                for i in range(start + 1, end):
                    if values[i].shape != shape:
                        end = i
                        break
        return end

    @staticmethod
    def _stack(values, start: int, end: int) -> np.ndarray:
        if isinstance(values, np.ndarray):
            return values[start:end]
        return np.stack(values[start:end])


# --- what a version expects -------------------------------------------------------


def output_is_scores(datatype: str, dims: Sequence[int]) -> bool:
    """An output of per-class scores ([C] numbers, C > 1), as opposed to one label per row."""
    served = served_dims(dims)
    return datatype != "BYTES" and datatype != "BOOL" and len(served) == 1 and served[0] != 1


def check_output(version: ModelVersion, output: str, metric: str, k: int) -> dict:
    """The output tensor a set's expectations are for, as a dict; EvaluationSetError when
    it is not an output of `version` or cannot be scored by `metric`."""
    tensors = {t.name: t.as_dict() for t in version.outputs}
    if output not in tensors:
        names = ", ".join(sorted(tensors)) or "none"
        return _raise({"output": f"{version} has no output {output!r} (its outputs: {names})"})
    tensor = tensors[output]
    scores = output_is_scores(tensor["datatype"], tensor["dims"])
    if metric in metrics.REGRESSION and tensor["datatype"] in ("BYTES", "BOOL"):
        _raise({"metric": f"{metric} needs a numeric output; {output!r} of {version} is {tensor['datatype']}"})
    if metric == EvaluationMetric.TOP_K_ACCURACY:
        if not scores:
            _raise(
                {
                    "metric": f"top-k accuracy needs per-class scores; output {output!r} of {version} is "
                    f"{tensor['datatype']}{served_dims(tensor['dims'])}, one label per row"
                }
            )
        classes = served_dims(tensor["dims"])[0]
        if classes != -1 and k > classes:
            _raise({"k": f"k={k} but output {output!r} of {version} scores {classes} classes"})
    return tensor


def _raise(errors: dict[str, str]):
    raise EvaluationSetError(errors)


# --- reading ------------------------------------------------------------------------


def sniff_format(head: bytes) -> str:
    """npz (a zip) or JSON lines, from the first bytes of the file."""
    return EvaluationSetFormat.NPZ if head.startswith(_ZIP_MAGIC) else EvaluationSetFormat.JSONL


def read_evaluation_data(
    source: str | Path | IO[bytes], file_format: str, version: ModelVersion, output: str, metric: str, k: int = 1
) -> EvaluationData:
    """Read a set and check it against `version`'s schema; EvaluationSetError names what does not fit."""
    tensor = check_output(version, output, metric, k)
    inputs = [t.as_dict() for t in version.inputs]
    if file_format == EvaluationSetFormat.NPZ:
        columns, rows = _read_npz(source, [t["name"] for t in inputs], output)
    elif file_format == EvaluationSetFormat.JSONL:
        columns, rows = _read_jsonl(source, [t["name"] for t in inputs])
    else:
        raise _file_error(f"unknown format {file_format!r}: use .npz or JSON lines")
    if rows == 0:
        raise _file_error("has no rows")
    data = EvaluationData(rows, {}, {}, np.empty(0))
    for spec in inputs:
        data.inputs[spec["name"]] = _input_column(columns[spec["name"]], spec, file_format)
        data.datatypes[spec["name"]] = spec["datatype"]
    data.expected = _expected_column(columns[_EXPECTED], tensor, metric, file_format)
    return data


_EXPECTED = "\x00expected"  # the key of the expected column; no tensor can be named so


def _row_label(file_format: str, row: int) -> str:
    # JSON lines count lines from 1 (as editors do); arrays count rows from 0 (as numpy does).
    return f"line {row + 1}" if file_format == EvaluationSetFormat.JSONL else f"row {row}"


def _read_npz(source, input_names: list[str], output: str) -> tuple[dict, int]:
    if output in input_names:
        raise EvaluationSetError({"output": f"{output!r} is also an input's name: an .npz cannot hold both"})
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _file_error(f"is not a readable .npz: {exc}") from None
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        unpacked = sum(info.file_size for info in members.values())
        if unpacked > settings.MAX_EVALUATION_UNPACKED_BYTES:
            raise _file_error(
                f"unpacks to {unpacked} bytes, over the limit of {settings.MAX_EVALUATION_UNPACKED_BYTES} "
                "(setting MODELHUB_MAX_EVALUATION_UNPACKED_BYTES)"
            )
        wanted = [*input_names, output]
        missing = [name for name in wanted if name not in members]
        if missing:
            raise _file_error(
                f"has no array named {', '.join(map(repr, missing))} (arrays: {', '.join(sorted(members)) or 'none'}); "
                "it needs one per input tensor and one named after the expected output"
            )
        extra = sorted(set(members) - set(wanted))
        if extra:
            raise _file_error(f"has arrays {', '.join(map(repr, extra))} that are neither an input nor the output")
        shapes = {name: _npz_header(archive, members[name]) for name in wanted}
        rows = {name: shape[0] if shape else None for name, shape in shapes.items()}
        if any(r is None for r in rows.values()):
            scalar = next(name for name, r in rows.items() if r is None)
            raise _file_error(f"array {scalar!r} is a scalar; rows go along the first axis")
        if len(set(rows.values())) > 1:
            raise _file_error(
                "arrays have different numbers of rows: " + ", ".join(f"{n!r} {r}" for n, r in rows.items())
            )
        count = next(iter(rows.values()))
        _check_row_cap(count)
        columns = {}
        for name in wanted:
            with archive.open(members[name]) as fh:
                try:
                    array = np.lib.format.read_array(fh, allow_pickle=False)
                except ValueError as exc:
                    raise _file_error(
                        f"array {name!r} cannot be read ({exc}); save strings as fixed-width numpy strings "
                        "(dtype 'U' or 'S')"
                    ) from None
            columns[_EXPECTED if name == output else name] = array
    return columns, count


def _npz_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[int, ...]:
    """An array's shape from its .npy header, before any of its data is read."""
    try:
        with archive.open(info) as fh:
            major, _ = np.lib.format.read_magic(fh)
            reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = reader(fh)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise _file_error(f"member {info.filename!r} is not a numpy array: {exc}") from None
    return shape


def _check_row_cap(count: int) -> None:
    if count > settings.MAX_EVALUATION_ROWS:
        raise _file_error(
            f"has {count if count else 'more'} rows, over the limit of {settings.MAX_EVALUATION_ROWS} "
            "(setting MODELHUB_MAX_EVALUATION_ROWS)"
        )


def _read_jsonl(source, input_names: list[str]) -> tuple[dict, int]:
    columns: dict[str, list] = {name: [] for name in [*input_names, _EXPECTED]}
    wanted = set(input_names)
    rows = 0
    with _open_binary(source) as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if rows >= settings.MAX_EVALUATION_ROWS:
                _check_row_cap(rows + 1)
            where = f"line {number}"
            try:
                row = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise _file_error(f"{where}: not JSON ({exc})") from None
            if not isinstance(row, dict) or "inputs" not in row or "expected" not in row:
                raise _file_error(f'{where}: must be an object {{"inputs": {{name: value, ...}}, "expected": value}}')
            unknown = set(row) - {"inputs", "expected"}
            if unknown:
                raise _file_error(f"{where}: unknown keys {', '.join(sorted(unknown))}")
            values = row["inputs"]
            if not isinstance(values, dict):
                raise _file_error(f"{where}: inputs must be an object of input name -> value")
            missing = sorted(wanted - set(values))
            if missing:
                raise _file_error(f"{where}: input {missing[0]!r} is missing")
            extra = sorted(set(values) - wanted)
            if extra:
                raise _file_error(f"{where}: {extra[0]!r} is not an input of the model")
            for name in input_names:
                columns[name].append(values[name])
            columns[_EXPECTED].append(row["expected"])
            rows += 1
    return columns, rows


@contextmanager
def _open_binary(source) -> Iterator[IO[bytes]]:
    """A path, or an already open binary file (Django's FieldFile), to read from the start."""
    if isinstance(source, str | Path):
        with open(source, "rb") as fh:
            yield fh
        return
    source.seek(0)
    yield source


# --- checking columns against the schema -----------------------------------------


class _BadRows(Exception):
    def __init__(self, row: int | None, problem: str):
        self.row, self.problem = row, problem


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))[0])


def _as_array(values: list) -> np.ndarray | None:
    """Rows of JSON values stacked into one array; None when their shapes differ."""
    try:
        array = np.array(values)
    except ValueError:  # numpy refuses ragged nested lists
        return None
    return None if array.dtype == object else array


def _input_column(values, spec: dict, file_format: str):
    name, datatype = spec["name"], spec["datatype"]
    dims = served_dims(spec["dims"])
    field = f"input {name!r}"
    try:
        if isinstance(values, list):
            array = _as_array(values)
            if array is None:  # rows of different shapes (variable dims): row by row
                return [_fit_row(np.asarray(v), dims, datatype, i) for i, v in enumerate(values)]
        else:
            array = values
        array = _fit_shape(array, dims)
        return _cast(array, datatype)
    except _BadRows as exc:
        where = _row_label(file_format, exc.row) + ": " if exc.row is not None else ""
        raise _file_error(f"{where}{field}: {exc.problem}") from None


def _fit_row(value: np.ndarray, dims: list[int], datatype: str, row: int) -> np.ndarray:
    try:
        return _cast(_fit_shape(value[None, ...], dims), datatype)[0]
    except _BadRows as exc:
        raise _BadRows(row, exc.problem) from None


def _fit_shape(array: np.ndarray, dims: list[int]) -> np.ndarray:
    """[rows, *dims] with -1 matching any size; one value per row also fits dims [1]."""
    row_shape = list(array.shape[1:])
    if not row_shape and dims == [1]:
        return array.reshape(len(array), 1)
    if len(row_shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, row_shape, strict=True)):
        raise _BadRows(None, f"rows have shape {row_shape}, the schema's dims are {dims} (-1: any size)")
    return array


def _cast(array: np.ndarray, datatype: str) -> np.ndarray:
    """`array` as the numpy type Triton's `datatype` travels in; _BadRows names the first value that cannot be."""
    kind = array.dtype.kind
    if datatype == "BYTES":
        if kind == "U":
            return np.char.encode(array, "utf-8").astype(np.object_)
        if kind == "S":
            return array.astype(np.object_)
        raise _BadRows(None, f"holds {array.dtype} values; BYTES takes strings")
    if kind in "USO":
        raise _BadRows(None, f"holds strings; {datatype} takes numbers")
    if datatype == "BOOL":
        if kind == "b":
            return array
        if kind in "iu" and np.isin(array, (0, 1)).all():
            return array.astype(np.bool_)
        raise _BadRows(_first(~np.isin(array, (0, 1))) if kind in "iuf" else None, "BOOL takes true/false (or 0/1)")
    target = np.dtype(triton_to_np_dtype(datatype))
    if datatype in _FLOATS:
        return array.astype(target, copy=False)
    if kind == "f":
        fractional = ~np.isfinite(array) | (array != np.round(array))
        if fractional.any():
            raise _BadRows(_first(fractional), f"holds a fraction or NaN; {datatype} takes whole numbers")
    info = np.iinfo(target)
    if array.size and (array.min() < info.min or array.max() > info.max):
        outside = (array < info.min) | (array > info.max)
        raise _BadRows(_first(outside), f"holds a value outside {datatype}'s {info.min}..{info.max}")
    return array.astype(target, copy=False)


def _expected_column(values, tensor: dict, metric: str, file_format: str) -> np.ndarray:
    field = f"expected value (output {tensor['name']!r})"
    array = _as_array(values) if isinstance(values, list) else values
    if array is None:
        raise _file_error(f"{field}: rows have different shapes (or hold nulls); give each row's value in one shape")
    try:
        if metric in metrics.REGRESSION:
            return _expected_numbers(array, tensor)
        return _expected_labels(array, tensor, metric)
    except _BadRows as exc:
        where = _row_label(file_format, exc.row) + ": " if exc.row is not None else ""
        raise _file_error(f"{where}{field}: {exc.problem}") from None


def _expected_numbers(array: np.ndarray, tensor: dict) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise _BadRows(None, f"holds {array.dtype} values; MAE and RMSE need numbers")
    dims = served_dims(tensor["dims"])
    if array.ndim > 1 and not (array.ndim == 2 and array.shape[1] == 1):
        _fit_shape(array, dims)
    bad = ~np.isfinite(array.astype(np.float64))
    if bad.any():
        raise _BadRows(_first(bad), "is NaN or infinite")
    return array.astype(np.float64)


def _expected_labels(array: np.ndarray, tensor: dict, metric: str) -> np.ndarray:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise _BadRows(None, f"must be one label per row, not rows of shape {list(array.shape[1:])}")
    kind = array.dtype.kind
    if kind == "f":
        fractional = ~np.isfinite(array) | (array != np.round(array))
        if fractional.any():
            raise _BadRows(_first(fractional), "is a fraction; a label is a string or a whole number")
        array, kind = array.astype(np.int64), "i"
    if kind not in "biuUS":
        raise _BadRows(None, f"holds {array.dtype} values; labels are strings or whole numbers")
    if not output_is_scores(tensor["datatype"], tensor["dims"]):
        return metrics.as_labels(array)
    classes = served_dims(tensor["dims"])[0]
    labels = tensor.get("labels")
    if kind in "US":
        if not labels:
            raise _BadRows(
                None,
                f"labels are strings but output {tensor['name']!r} scores classes by index and has no registered "
                "labels: give class indices 0..C-1",
            )
        names = metrics.as_labels(array)
        unknown = ~np.isin(names, np.asarray(labels, dtype=object))
        if unknown.any():
            row = _first(unknown)
            raise _BadRows(row, f"label {names[row]!r} is not one of the output's labels")
        return names
    if classes != -1:
        out = (array < 0) | (array >= classes)
        if out.any():
            raise _BadRows(_first(out), f"class index {array[_first(out)]} is outside 0..{classes - 1}")
    return array.astype(np.int64)


# --- the write path ---------------------------------------------------------------


def _latest_version(model: Model) -> ModelVersion:
    version = model.versions.order_by("-number").prefetch_related("tensors").first()
    if version is None:
        raise EvaluationSetError({"model": f"{model.name} has no version to check an evaluation set against"})
    return version


def _check_settings(metric: str, k: int, threshold: float | None, tolerance: float) -> None:
    errors = {}
    if metric not in EvaluationMetric.values:
        errors["metric"] = f"unknown metric {metric!r}; one of {', '.join(EvaluationMetric.values)}"
    if k < 1:
        errors["k"] = "must be at least 1"
    if threshold is not None and not np.isfinite(threshold):
        errors["threshold"] = "must be a finite number"
    elif threshold is not None and metric in metrics.CLASSIFICATION and not 0 <= threshold <= 1:
        errors["threshold"] = f"{metric} is between 0 and 1; {threshold} can never be met or never be missed"
    if not np.isfinite(tolerance) or tolerance < 0:
        errors["tolerance"] = "must be a number of at least 0"
    if errors:
        raise EvaluationSetError(errors)


def inspect_evaluation_file(
    model: Model, path: str | Path, *, output: str, metric: str, k: int, threshold: float | None, tolerance: float
) -> tuple[str, EvaluationData]:
    """Check a set (the file at `path` and how it is to be scored) against the model's
    latest version without keeping anything: (file format, the data as read)."""
    _check_settings(metric, k, threshold, tolerance)
    size = Path(path).stat().st_size
    if size > settings.MAX_EVALUATION_BYTES:
        raise _file_error(
            f"is {size} bytes, over the limit of {settings.MAX_EVALUATION_BYTES} "
            "(setting MODELHUB_MAX_EVALUATION_BYTES)"
        )
    with open(path, "rb") as fh:
        file_format = sniff_format(fh.read(4))
    return file_format, read_evaluation_data(path, file_format, _latest_version(model), output, metric, k)


class _MovableFile(File):
    # FileSystemStorage moves a file with a temporary path instead of copying it.
    def temporary_file_path(self) -> str:
        return str(self.name)


def attach_evaluation_set(
    model: Model,
    path: str | Path,
    actor: Actor,
    *,
    output: str,
    metric: str = EvaluationMetric.ACCURACY,
    k: int = 1,
    threshold: float | None = None,
    tolerance: float = 0.0,
    sha256: str | None = None,
    size: int | None = None,
    consume: bool = False,
) -> EvaluationSet:
    """Validate the file at `path` against the model's latest version and make it the
    model's evaluation set, replacing any earlier one (whose file goes after commit).

    Raises EvaluationSetError naming the field (and row) at fault; nothing is kept then.
    With `consume`, the file (an upload's temporary file) is moved into storage.
    """
    from modelhub.registry.services import sha256_of

    if sha256 is None or size is None:
        sha256, size = sha256_of(path)
    file_format, data = inspect_evaluation_file(
        model, path, output=output, metric=metric, k=k, threshold=threshold, tolerance=tolerance
    )
    storage = EvaluationSet._meta.get_field("file").storage
    stored_name = None
    try:
        with transaction.atomic():
            # The model row lock serialises uploads (and removals) of one model's set.
            Model.objects.select_for_update().get(pk=model.pk)
            current = EvaluationSet.objects.filter(model=model).first()
            previous_name = current.file.name if current else None
            evaluation_set = current or EvaluationSet(model=model)
            evaluation_set.file_format, evaluation_set.sha256, evaluation_set.size = file_format, sha256, size
            evaluation_set.rows, evaluation_set.output, evaluation_set.metric = data.rows, output, metric
            evaluation_set.k, evaluation_set.threshold, evaluation_set.tolerance = k, threshold, tolerance
            evaluation_set.created_by = actor.django_user
            evaluation_set.created_at = timezone.now()  # a replaced set is a new set: results before it are stale
            name = evaluation_set.file.field.generate_filename(evaluation_set, "set")
            if storage.exists(name):  # content-addressed: these bytes are stored already
                evaluation_set.file.name = name
            else:
                with (
                    open(path, "rb") as fh,
                    diskspace.saving(storage, name, store="artifact store", setting="MODELHUB_ARTIFACT_ROOT"),
                ):
                    evaluation_set.file.save("set", _MovableFile(fh, name=str(path)) if consume else File(fh), False)
                stored_name = evaluation_set.file.name
            evaluation_set.save()
            record(
                actor,
                "evaluation_set.attach",
                evaluation_set,
                sha256=sha256,
                size=size,
                rows=data.rows,
                output=output,
                metric=metric,
                k=k,
                threshold=threshold,
                tolerance=tolerance,
                replaced=current is not None,
            )
            if previous_name and previous_name != evaluation_set.file.name:
                _delete_on_commit(previous_name)
    except BaseException:
        if stored_name:  # the row rolled back: the file must go too
            storage.delete(stored_name)
        raise
    return evaluation_set


def remove_evaluation_set(model: Model, actor: Actor) -> None:
    """Remove the model's evaluation set (its file after commit); EvaluationSet.DoesNotExist when it has none."""
    with transaction.atomic():
        Model.objects.select_for_update().get(pk=model.pk)
        evaluation_set = EvaluationSet.objects.get(model=model)
        name = evaluation_set.file.name
        record(actor, "evaluation_set.remove", evaluation_set, sha256=evaluation_set.sha256, rows=evaluation_set.rows)
        evaluation_set.delete()
        _delete_on_commit(name)


def _delete_on_commit(name: str) -> None:
    storage = EvaluationSet._meta.get_field("file").storage

    def delete() -> None:
        try:
            storage.delete(name)
        except OSError:  # the row is gone either way; a stray file is only disk space
            log.exception("could not delete the evaluation set file %s", name)

    transaction.on_commit(delete)


def open_evaluation_data(evaluation_set: EvaluationSet, version: ModelVersion) -> EvaluationData:
    """Read a stored set for `version` (EvaluationSetError when it does not fit its schema)."""
    with evaluation_set.file.open("rb") as fh:
        return read_evaluation_data(
            fh, evaluation_set.file_format, version, evaluation_set.output, evaluation_set.metric, evaluation_set.k
        )
