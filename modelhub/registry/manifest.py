"""The upload manifest: what CI says about a version besides its bytes.

{"backend": "python" | "platform": "onnxruntime_onnx", "max_batch_size": 8,
 "inputs": [{"name", "datatype", "dims", "labels"?}], "outputs": [...],
 "config": {extra Triton model config}, "provenance": {"git_commit", "ci_run_url"},
 "metadata": {free-form, e.g. {"metrics": {"accuracy": 0.97}}},
 "description", "task_kind"  (used only when the upload creates the model)}

Every problem is reported against its field path, all at once.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from modelhub.registry.schema import SchemaError, schema_differences, validate_schema
from modelhub.registry.triton_config import ConfigError, validate_extra_config

ALLOWED_KEYS = {
    "backend",
    "platform",
    "max_batch_size",
    "inputs",
    "outputs",
    "config",
    "provenance",
    "metadata",
    "description",
    "task_kind",
}


# Triton's ModelConfig.max_batch_size is an int32 (and so is the column).
MAX_BATCH_SIZE = 2**31 - 1
# Triton loads backend B from <backend-directory>/B/libtriton_B.so: a name with
# a '/' or '..' would reach outside that folder. Real backends are plain words
# (python, onnxruntime, tensorrtllm, vllm…); 64 is ModelVersion.backend's column.
BACKEND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# The platforms Triton knows, each with the backend that serves it. An
# ensemble runs no backend of its own: Triton schedules its steps.
PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorflow_graphdef": "tensorflow",
    "tensorflow_savedmodel": "tensorflow",
    "tensorrt_plan": "tensorrt",
    "ensemble": "",
}


class ManifestError(ValueError):
    """Bad upload. `errors` maps field paths (manifest.inputs[0].datatype, artifact, …) to messages."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


@dataclass
class Manifest:
    backend: str = ""
    platform: str = ""
    max_batch_size: int = 0
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    git_commit: str = ""
    ci_run_url: str = ""
    metadata: dict = field(default_factory=dict)
    description: str = ""
    task_kind: str = ""


def parse_manifest(raw: object, derived: Mapping | None = None) -> Manifest:
    """Validate a manifest, filling gaps from what the artifact itself says.

    `derived` is the schema read from the artifact (a config.pbtxt or an ONNX
    graph). Where the manifest gives a field too, both must agree: a manifest
    that contradicts the model it describes is refused, naming the field.
    """
    errors: dict[str, str] = {}
    if not isinstance(raw, Mapping):
        raise ManifestError({"manifest": "must be a JSON object"})
    for key in sorted(set(raw) - ALLOWED_KEYS):
        errors[f"manifest.{key}"] = f"unknown field; allowed: {', '.join(sorted(ALLOWED_KEYS))}"
    derived = derived or {}
    m = Manifest()

    for key in ("backend", "platform"):
        value = raw.get(key, "") or ""
        if not isinstance(value, str):
            errors[f"manifest.{key}"] = "must be a string"
            continue
        found = derived.get(key, "")
        if value and found and value != found:
            errors[f"manifest.{key}"] = f"{value!r} disagrees with the artifact, which says {found!r}"
        elif problem := _backend_problem(key, value or found):
            errors[f"manifest.{key}"] = problem
        setattr(m, key, value or found)
    if bool(m.backend) == bool(m.platform):
        errors["manifest.backend"] = "give exactly one of backend (e.g. python) or platform (e.g. onnxruntime_onnx)"

    mbs = raw.get("max_batch_size", derived.get("max_batch_size", 0))
    if not isinstance(mbs, int) or isinstance(mbs, bool) or not 0 <= mbs <= MAX_BATCH_SIZE:
        errors["manifest.max_batch_size"] = (
            f"{mbs!r} must be an integer from 0 to {MAX_BATCH_SIZE} (Triton holds it in an int32)"
        )
    elif "max_batch_size" in raw and "max_batch_size" in derived and mbs != derived["max_batch_size"]:
        errors["manifest.max_batch_size"] = f"{mbs} disagrees with the artifact, which says {derived['max_batch_size']}"
    else:
        m.max_batch_size = mbs

    inputs = raw.get("inputs") or derived.get("inputs")
    outputs = raw.get("outputs") or derived.get("outputs")
    try:
        m.inputs, m.outputs = validate_schema(inputs, outputs, m.max_batch_size)
    except SchemaError as exc:
        for key, message in exc.errors.items():
            # The same limits hold for a schema read from a config.pbtxt or an ONNX graph: say so.
            direction = key.partition("[")[0]
            source = "" if raw.get(direction) or not derived.get(direction) else " (as the artifact declares it)"
            errors[f"manifest.{key}"] = message + source
    else:
        for key, label in (("inputs", "input"), ("outputs", "output")):
            if raw.get(key) and derived.get(key):
                problems = schema_differences(getattr(m, key), derived[key], label)
                if problems:
                    errors[f"manifest.{key}"] = "disagrees with the artifact: " + "; ".join(problems)

    extra = dict(derived.get("config") or {})
    given = raw.get("config") or {}
    if not isinstance(given, Mapping):
        errors["manifest.config"] = "must be an object (extra Triton model config)"
    else:
        extra.update(given)
        try:
            m.config = validate_extra_config(extra)
        except ConfigError as exc:
            errors["manifest.config"] = str(exc)

    provenance = raw.get("provenance") or {}
    if not isinstance(provenance, Mapping):
        errors["manifest.provenance"] = "must be an object with git_commit and ci_run_url"
    else:
        commit = provenance.get("git_commit") or ""
        url = provenance.get("ci_run_url") or ""
        if not isinstance(commit, str) or len(commit) > 64:
            errors["manifest.provenance.git_commit"] = "must be a string of at most 64 characters"
        else:
            m.git_commit = commit
        if not isinstance(url, str) or (url and urlsplit(url).scheme not in ("http", "https")) or len(url) > 500:
            errors["manifest.provenance.ci_run_url"] = "must be an http(s) URL of at most 500 characters"
        else:
            m.ci_run_url = url

    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        errors["manifest.metadata"] = "must be an object"
    else:
        m.metadata = dict(metadata)
    for key in ("description", "task_kind"):
        value = raw.get(key) or ""
        if not isinstance(value, str):
            errors[f"manifest.{key}"] = "must be a string"
        else:
            setattr(m, key, value)

    if errors:
        raise ManifestError(errors)
    return m


def _backend_problem(key: str, value: str) -> str:
    if not value:
        return ""
    if key == "platform":
        if value not in PLATFORM_BACKENDS:
            return f"unknown platform {value[:80]!r}; Triton knows {', '.join(sorted(PLATFORM_BACKENDS))}"
    elif not BACKEND_NAME.fullmatch(value):
        return (
            f"{value[:80]!r} is not a backend name: 1-64 letters, digits, '_' or '-' "
            "(Triton loads the backend from a folder of that name)"
        )
    return ""
