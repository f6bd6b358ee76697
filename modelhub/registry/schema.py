"""The I/O schema of a model version: validation of tensor specs.

Pure functions over plain dicts, so that the upload manifest, the ORM model
and the Triton config parser all share one set of rules and one error shape:
a dict of field path -> message, e.g. {"inputs[1].datatype": "…"}.
"""

from collections.abc import Iterable, Mapping

from modelhub.registry.datatypes import DATATYPES, TRITON_DATATYPES, parse_datatype

INPUT, OUTPUT = "input", "output"
DIRECTIONS = {INPUT: "inputs", OUTPUT: "outputs"}

# Limits a schema must stay within to be storable and servable; past them an
# upload is refused naming the field, rather than failing later on Triton or
# in the database.
# TensorSpec.name's column holds 128 characters.
MAX_TENSOR_NAME = 128
# Tensors per direction. Triton sets no limit, but TensorSpec.position is a
# smallint and no exporter produces more; 10,000 inputs is a mistake, not a model.
MAX_TENSORS = 1024
# Dimensions of one tensor, the batch dimension included: numpy (which the
# python backend and tritonclient build tensors with) holds at most 32 in its
# 1.x releases; Triton's own formats (TensorRT: 8) hold fewer still.
MAX_RANK = 32
# Triton counts a tensor's elements and bytes in int64 (ModelConfig dims are
# int64; GetByteSize is int64): a shape whose fixed part alone is bigger can
# never be allocated, whatever the batch. (A BYTES element counts as its
# 4-byte length prefix.)
MAX_TENSOR_BYTES = 2**63 - 1
ELEMENT_BYTES = {d.name: d.element_bytes for d in DATATYPES}
# Class labels of one output: each is one line of the labels file Triton reads
# (so no line breaks), kept in the version's row and sent with every load.
MAX_LABELS = 100_000
MAX_LABEL_CHARS = 1000


class SchemaError(ValueError):
    """Invalid tensor specs. `errors` maps field paths to messages."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in self.errors.items()))


def normalise_tensor(raw: object, path: str, errors: dict[str, str], max_batch_size: int = 0) -> dict | None:
    """Check one tensor spec; return {name, datatype, dims, labels} or None.

    `max_batch_size` > 0 adds the batch dimension to the rank and size limits.
    """
    if not isinstance(raw, Mapping):
        errors[path] = "must be an object with name, datatype and dims"
        return None
    unknown = set(raw) - {"name", "datatype", "dims", "labels"}
    if unknown:
        errors[path] = f"unknown keys: {', '.join(sorted(unknown))}"
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        errors[f"{path}.name"] = "must be a non-empty string"
    elif len(name) > MAX_TENSOR_NAME:
        errors[f"{path}.name"] = f"is {len(name)} characters long; at most {MAX_TENSOR_NAME} are stored"
    elif name != name.strip() or any(ord(c) < 32 for c in name):
        errors[f"{path}.name"] = f"{name!r} has surrounding spaces or control characters"
    datatype = raw.get("datatype")
    if parse_datatype(datatype):  # either vocabulary: "BYTES" or config.pbtxt's "TYPE_STRING"
        datatype = parse_datatype(datatype)
    else:
        errors[f"{path}.datatype"] = f"unknown datatype {datatype!r}; expected one of {', '.join(TRITON_DATATYPES)}"
    dims = raw.get("dims")
    if (
        not isinstance(dims, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
        or any(d < -1 or d == 0 for d in dims)
    ):
        errors[f"{path}.dims"] = f"{_shown(dims)} must be a list of positive integers, -1 for a variable size"
    elif f"{path}.datatype" not in errors:
        problem = _dims_problem(dims, datatype, max_batch_size)
        if problem:
            errors[f"{path}.dims"] = problem
    labels = raw.get("labels")
    if labels is not None:
        problem = _labels_problem(labels, name)
        if problem:
            errors[f"{path}.labels"] = problem
            labels = None
    if any(key.startswith(path) for key in errors):
        return None
    return {"name": name, "datatype": datatype, "dims": list(dims), "labels": labels}


def _shown(value: object, limit: int = 80) -> str:
    """repr() cut short: a 10,000-element list must not make a 10,000-element message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " …" + text[-1]


def _dims_problem(dims: list[int], datatype: str, max_batch_size: int) -> str:
    batched = max_batch_size > 0
    rank = len(dims) + batched
    if rank > MAX_RANK:
        return (
            f"has {len(dims)} dimensions{' plus the batch dimension' if batched else ''}; "
            f"at most {MAX_RANK} in all (numpy's limit)"
        )
    elements = max(max_batch_size, 1)
    for d in dims:
        elements *= max(d, 1)  # a variable (-1) dimension counts as at least 1
    size = elements * ELEMENT_BYTES.get(datatype, 1)
    if size > MAX_TENSOR_BYTES:
        batch = f" × max_batch_size {max_batch_size}" if batched else ""
        return (
            f"{_shown(dims)}{batch} of {datatype} is at least 2**{size.bit_length() - 1} bytes, more than "
            f"Triton's int64 sizes hold (at most 2**63 - 1 bytes per tensor)"
        )
    return ""


def _labels_problem(labels: object, name: object) -> str:
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        return "must be a list of strings"
    if len(labels) > MAX_LABELS:
        return f"has {len(labels)} labels; at most {MAX_LABELS}"
    for i, label in enumerate(labels):
        if len(label) > MAX_LABEL_CHARS:
            return f"label {i} is {len(label)} characters long; at most {MAX_LABEL_CHARS}"
        if "\n" in label or "\r" in label:
            return f"label {i} ({_shown(label)}) holds a line break: each label is one line of Triton's labels file"
    # The labels travel as the file labels_<name>.txt beside the model.
    if isinstance(name, str) and ("/" in name or "\\" in name):
        return f"a labelled output's name becomes a file name (labels_<name>.txt): {name!r} holds a path separator"
    return ""


def validate_schema(inputs: object, outputs: object, max_batch_size: int = 0) -> tuple[list[dict], list[dict]]:
    """Validate both tensor lists; raise SchemaError naming every bad field.

    `max_batch_size` (already validated) counts in each tensor's size limit.
    """
    errors: dict[str, str] = {}
    result = {}
    for key, tensors in (("inputs", inputs), ("outputs", outputs)):
        if not isinstance(tensors, list) or not tensors:
            errors[key] = "must be a non-empty list of tensors"
            continue
        if len(tensors) > MAX_TENSORS:
            errors[key] = f"has {len(tensors)} tensors; at most {MAX_TENSORS}"
            continue
        result[key] = [normalise_tensor(t, f"{key}[{i}]", errors, max_batch_size) for i, t in enumerate(tensors)]
        seen: dict[str, int] = {}
        for i, tensor in enumerate(result[key]):
            if tensor is None:
                continue
            if tensor["name"] in seen:
                errors[f"{key}[{i}].name"] = (
                    f"duplicate tensor name {tensor['name']!r} (also {key}[{seen[tensor['name']]}])"
                )
            seen.setdefault(tensor["name"], i)
    if errors:
        raise SchemaError(errors)
    return result["inputs"], result["outputs"]


def schema_differences(expected: Iterable[Mapping], actual: Iterable[Mapping], label: str) -> list[str]:
    """Human-readable differences between two tensor lists, keyed by name."""
    want = {t["name"]: t for t in expected}
    have = {t["name"]: t for t in actual}
    problems = []
    for name in sorted(want.keys() - have.keys()):
        problems.append(f"{label} {name!r} is missing")
    for name in sorted(have.keys() - want.keys()):
        problems.append(f"{label} {name!r} is not in the registered schema")
    for name in sorted(want.keys() & have.keys()):
        for field in ("datatype", "dims"):
            registered, found = want[name][field], have[name][field]
            if field == "dims":
                registered, found = list(registered), list(found)
            if registered != found:
                problems.append(f"{label} {name!r} {field}: registered {registered!r}, found {found!r}")
    return problems
