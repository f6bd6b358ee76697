"""The I/O schema of a model version: validation of tensor specs.

Pure functions over plain dicts, so that the upload manifest, the ORM model
and the Triton config parser all share one set of rules and one error shape:
a dict of field path -> message, e.g. {"inputs[1].datatype": "…"}.
"""

from collections.abc import Iterable, Mapping

TRITON_DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "BF16",
    "FP32",
    "FP64",
    "BYTES",
)
INPUT, OUTPUT = "input", "output"
DIRECTIONS = {INPUT: "inputs", OUTPUT: "outputs"}


class SchemaError(ValueError):
    """Invalid tensor specs. `errors` maps field paths to messages."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in self.errors.items()))


def normalise_tensor(raw: object, path: str, errors: dict[str, str]) -> dict | None:
    """Check one tensor spec; return {name, datatype, dims, labels} or None."""
    if not isinstance(raw, Mapping):
        errors[path] = "must be an object with name, datatype and dims"
        return None
    unknown = set(raw) - {"name", "datatype", "dims", "labels"}
    if unknown:
        errors[path] = f"unknown keys: {', '.join(sorted(unknown))}"
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        errors[f"{path}.name"] = "must be a non-empty string"
    elif name != name.strip() or any(ord(c) < 32 for c in name):
        errors[f"{path}.name"] = f"{name!r} has surrounding spaces or control characters"
    datatype = raw.get("datatype")
    if isinstance(datatype, str) and datatype.upper().removeprefix("TYPE_") in TRITON_DATATYPES:
        datatype = datatype.upper().removeprefix("TYPE_")
    else:
        errors[f"{path}.datatype"] = f"unknown datatype {datatype!r}; expected one of {', '.join(TRITON_DATATYPES)}"
    dims = raw.get("dims")
    if (
        not isinstance(dims, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
        or any(d < -1 or d == 0 for d in dims)
    ):
        errors[f"{path}.dims"] = f"{dims!r} must be a list of positive integers, -1 for a variable size"
    labels = raw.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)):
        errors[f"{path}.labels"] = "must be a list of strings"
        labels = None
    if any(key.startswith(path) for key in errors):
        return None
    return {"name": name, "datatype": datatype, "dims": list(dims), "labels": labels}


def validate_schema(inputs: object, outputs: object) -> tuple[list[dict], list[dict]]:
    """Validate both tensor lists; raise SchemaError naming every bad field."""
    errors: dict[str, str] = {}
    result = {}
    for key, tensors in (("inputs", inputs), ("outputs", outputs)):
        if not isinstance(tensors, list) or not tensors:
            errors[key] = "must be a non-empty list of tensors"
            continue
        result[key] = [normalise_tensor(t, f"{key}[{i}]", errors) for i, t in enumerate(tensors)]
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
