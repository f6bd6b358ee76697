"""Triton model configuration: parse an archive's config.pbtxt, generate the
JSON config a load sends, and compare the two with a registered schema.

Parsing and validation go through Triton's own protobuf (ModelConfig from
tritonclient), so an unknown field or a bad enum is caught here with the
protobuf's message instead of by Triton at deploy time. Datatypes translate
through registry.datatypes (BYTES is the config's TYPE_STRING); a tensor of one
value per sample (dims []) is written in Triton's form (see served_dims).
"""

from collections.abc import Iterable, Mapping

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from modelhub.registry.datatypes import from_config, to_config
from modelhub.registry.schema import schema_differences

# Fields of ModelConfig that ModelHub owns and fills from the registered version;
# everything else in a config.pbtxt (instance_group, dynamic_batching,
# parameters, optimization, …) is kept as the version's extra config.
OWNED_FIELDS = {"name", "backend", "platform", "max_batch_size", "input", "output", "version_policy"}


class ConfigError(ValueError):
    """A config.pbtxt or extra config that cannot be used. `field` names where."""

    def __init__(self, message: str, field: str = "config"):
        self.field = field
        super().__init__(message)


def _to_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def parse_config_pbtxt(text: str) -> dict:
    try:
        message = text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"config.pbtxt does not parse: {exc}", "artifact") from exc
    return _to_dict(message)


def config_pbtxt(config: Mapping) -> str:
    """A config dict (as build_model_config makes) in Triton's text form: parse_config_pbtxt's inverse."""
    return text_format.MessageToString(json_format.ParseDict(dict(config), model_config_pb2.ModelConfig()))


def validate_extra_config(extra: Mapping) -> dict:
    """Check extra Triton config against ModelConfig; return it normalised."""
    owned = sorted(OWNED_FIELDS & set(extra))
    if owned:
        raise ConfigError(f"{', '.join(owned)} cannot be set in config: ModelHub fills them from the version")
    try:
        message = json_format.ParseDict(dict(extra), model_config_pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise ConfigError(f"not a valid Triton model config: {exc}") from exc
    return _to_dict(message)


# How a tensor of one value per sample (a batch-only ONNX shape [N], or a
# scalar) is served. Triton refuses empty dims. With batching its way is dims
# [1] with reshape {shape: []}: clients send and receive [N, 1], metadata
# reports [-1, 1], and the backend sees [N]. Without batching Triton has no
# scalars at all ("scalar tensors are not supported" even with a reshape):
# dims [1], and the backend sees [1] (ModelHub's ONNX runner turns that into
# the graph's scalar and back).
# The registered schema stores dims [] — the model's own per-sample shape,
# what the ONNX graph declares — and this module alone turns it into
# Triton's form (config) and compares it with Triton's view (metadata).
# Only this reshape is supported: any other would have to be kept beside the
# schema to survive a round trip.
SCALAR_SERVED_DIMS = [1]
SCALAR_RESHAPE = {"shape": []}


def served_dims(dims: Iterable[int]) -> list[int]:
    """The dims a client sends and Triton's metadata shows (batch dimension not included)."""
    return list(dims) or list(SCALAR_SERVED_DIMS)


def _tensor_from_config(raw: Mapping, label: str) -> dict:
    name = raw.get("name", "")
    # protobuf's JSON form writes int64 as strings
    dims = [int(d) for d in raw.get("dims", [])]
    if "reshape" in raw:
        shape = [int(d) for d in raw["reshape"].get("shape", [])]
        if shape or dims != SCALAR_SERVED_DIMS:
            raise ConfigError(
                f"{label} {name!r}: reshape from {dims} to {shape} is not supported; only dims [1] with "
                "reshape { shape: [] } (one value per sample), which ModelHub writes for dims []",
                "artifact",
            )
        dims = []
    return {
        "name": name,
        "datatype": from_config(raw.get("data_type", "TYPE_INVALID")),
        "dims": dims,
        "labels": None,
    }


def schema_from_config(config: Mapping) -> dict:
    """Split a parsed config.pbtxt into ModelHub's manifest fields."""
    return {
        "backend": config.get("backend", ""),
        "platform": config.get("platform", ""),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "inputs": [_tensor_from_config(t, "input") for t in config.get("input", [])],
        "outputs": [_tensor_from_config(t, "output") for t in config.get("output", [])],
        "config": {k: v for k, v in config.items() if k not in OWNED_FIELDS},
    }


def label_filename(output_name: str) -> str:
    return f"labels_{output_name}.txt"


def _config_tensor(tensor: Mapping, max_batch_size: int) -> dict:
    entry = {
        "name": tensor["name"],
        "data_type": to_config(tensor["datatype"]),
        "dims": served_dims(tensor["dims"]),
    }
    if not tensor["dims"] and max_batch_size > 0:
        entry["reshape"] = dict(SCALAR_RESHAPE)
    return entry


def build_model_config(
    name: str,
    *,
    backend: str,
    platform: str,
    max_batch_size: int,
    inputs: Iterable[Mapping],
    outputs: Iterable[Mapping],
    extra: Mapping,
    versions: Iterable[int],
) -> dict:
    """The JSON model config sent with a load (parameters.config)."""
    config = dict(extra)
    config.update(
        name=name,
        max_batch_size=max_batch_size,
        input=[_config_tensor(t, max_batch_size) for t in inputs],
        output=[
            {
                **_config_tensor(t, max_batch_size),
                **({"label_filename": label_filename(t["name"])} if t.get("labels") else {}),
            }
            for t in outputs
        ],
        version_policy={"specific": {"versions": sorted(versions)}},
    )
    if backend:
        config["backend"] = backend
    if platform:
        config["platform"] = platform
    return config


def metadata_schema(metadata: Mapping, max_batch_size: int) -> tuple[list[dict], list[dict]]:
    """Tensor lists from Triton's model metadata (GET /v2/models/{m}).

    Metadata shapes include the batch dimension (-1) when batching is on;
    config dims do not, so strip it to compare like with like.
    """

    def convert(raw: Mapping) -> dict:
        shape = [int(d) for d in raw.get("shape", [])]
        if max_batch_size > 0 and shape:
            shape = shape[1:]
        return {"name": raw.get("name", ""), "datatype": raw.get("datatype", ""), "dims": shape}

    return [convert(t) for t in metadata.get("inputs", [])], [convert(t) for t in metadata.get("outputs", [])]


def metadata_differences(
    metadata: Mapping, max_batch_size: int, inputs: Iterable[Mapping], outputs: Iterable[Mapping]
) -> list[str]:
    """How Triton's served metadata differs from a registered schema; [] if it agrees.

    Compared in Triton's terms: a registered scalar-per-sample tensor (dims [])
    is served as dims [1].
    """
    served_inputs, served_outputs = metadata_schema(metadata, max_batch_size)

    def as_served(tensors: Iterable[Mapping]) -> list[dict]:
        return [{**t, "dims": served_dims(t["dims"])} for t in tensors]

    return schema_differences(as_served(inputs), served_inputs, "input") + schema_differences(
        as_served(outputs), served_outputs, "output"
    )
