"""Triton's tensor datatypes in its two vocabularies, one table both ways.

The v2 inference protocol, the model metadata call and ModelHub's schema name a
datatype "FP32", "BYTES", …; Triton's model configuration (config.pbtxt, the JSON
config of a load) uses the DataType enum of model_config.proto, "TYPE_FP32", … The
two differ beyond the prefix for strings: the protocol's BYTES is the config's
TYPE_STRING. Every translation between them goes through this table.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Datatype:
    name: str  # v2 protocol and metadata name, as stored in a TensorSpec
    config: str  # model_config.proto DataType enum name
    element_bytes: int  # bytes per element; a BYTES element is a 4-byte length prefix and its bytes


DATATYPES: tuple[Datatype, ...] = (
    Datatype("BOOL", "TYPE_BOOL", 1),
    Datatype("UINT8", "TYPE_UINT8", 1),
    Datatype("UINT16", "TYPE_UINT16", 2),
    Datatype("UINT32", "TYPE_UINT32", 4),
    Datatype("UINT64", "TYPE_UINT64", 8),
    Datatype("INT8", "TYPE_INT8", 1),
    Datatype("INT16", "TYPE_INT16", 2),
    Datatype("INT32", "TYPE_INT32", 4),
    Datatype("INT64", "TYPE_INT64", 8),
    Datatype("FP16", "TYPE_FP16", 2),
    Datatype("BF16", "TYPE_BF16", 2),
    Datatype("FP32", "TYPE_FP32", 4),
    Datatype("FP64", "TYPE_FP64", 8),
    Datatype("BYTES", "TYPE_STRING", 4),
)

TRITON_DATATYPES: tuple[str, ...] = tuple(d.name for d in DATATYPES)

_BY_NAME = {d.name: d for d in DATATYPES}
_BY_CONFIG = {d.config: d for d in DATATYPES}


def to_config(name: str) -> str:
    """The config enum of a protocol name: BYTES -> TYPE_STRING. KeyError for an unknown name."""
    return _BY_NAME[name].config


def from_config(config: str) -> str:
    """The protocol name of a config enum: TYPE_STRING -> BYTES. An enum without one
    (TYPE_INVALID) is returned as it is, so that schema validation names it in its error."""
    found = _BY_CONFIG.get(config)
    return found.name if found else config


def parse_datatype(text: object) -> str | None:
    """A datatype given in either vocabulary, any case ("fp32", "TYPE_STRING",
    "BYTES"), as its protocol name; None when it is neither."""
    if not isinstance(text, str):
        return None
    upper = text.upper()
    if upper in _BY_NAME:
        return upper
    found = _BY_CONFIG.get(upper if upper.startswith("TYPE_") else f"TYPE_{upper}")
    return found.name if found else None
