"""Read the input/output signature of an ONNX model, and serve ONNX on a python-only Triton.

Pure Python (no Django).  ``read_onnx_signature`` parses a model with the ``onnx``
package (without loading external data) and reports its graph inputs and outputs
with Triton datatype names.  ``ONNX_RUNNER_MODEL_PY`` is the source of a generic
Triton python-backend ``model.py`` (kept as ``onnx_runner_model.py`` next to this
module) that runs ``model.onnx`` with onnxruntime, so an ONNX model can be served by
a Triton that has only the python backend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ONNX_RUNNER_MODEL_PY",
    "OnnxError",
    "OnnxSignature",
    "TensorSig",
    "is_onnx",
    "read_onnx_signature",
]


class OnnxError(ValueError):
    """The file is not a usable ONNX model; the message names the problem."""


@dataclass(frozen=True)
class TensorSig:
    name: str
    datatype: str  # Triton datatype name: FP32, INT64, BYTES, ...
    dims: list[int]  # full ONNX shape, -1 for any symbolic or unknown dim


@dataclass(frozen=True)
class OnnxSignature:
    inputs: list[TensorSig]
    outputs: list[TensorSig]

    @property
    def batchable(self) -> bool:
        """Every input and output has rank >= 1 and a dynamic (-1) first dim."""
        tensors = [*self.inputs, *self.outputs]
        return bool(tensors) and all(t.dims and t.dims[0] == -1 for t in tensors)


# onnx.TensorProto.DataType value -> Triton datatype name.
_ONNX_TO_TRITON = {
    1: "FP32",  # FLOAT
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",  # STRING
    9: "BOOL",
    10: "FP16",  # FLOAT16
    11: "FP64",  # DOUBLE
    12: "UINT32",
    13: "UINT64",
    16: "BF16",  # BFLOAT16
}


def _load_model(path_or_bytes):
    import onnx

    try:
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            return onnx.load_model_from_string(bytes(path_or_bytes))
        if isinstance(path_or_bytes, (str, os.PathLike)):
            return onnx.load(os.fspath(path_or_bytes), load_external_data=False)
        if hasattr(path_or_bytes, "read"):
            return onnx.load_model_from_string(path_or_bytes.read())
    except OSError:
        raise
    except Exception as exc:  # protobuf DecodeError and whatever else onnx raises on garbage
        raise OnnxError(f"not a valid ONNX model: {exc}") from exc
    raise TypeError(f"read_onnx_signature expects a path or bytes, not {type(path_or_bytes).__name__}")


def _tensor_sig(value_info, kind: str) -> TensorSig:
    name = value_info.name
    vtype = value_info.type
    which = vtype.WhichOneof("value")
    if which != "tensor_type":
        what = {
            "sequence_type": "a sequence",
            "map_type": "a map",
            "optional_type": "an optional",
            "sparse_tensor_type": "a sparse tensor",
            None: "of unknown type",
        }.get(which, which)
        msg = f"{kind} {name!r} is {what}, not a tensor; only tensor {kind}s can be served"
        if kind == "output" and which in ("sequence_type", "map_type"):
            msg += (
                " (a skl2onnx classifier emits a ZipMap sequence of maps: convert it with"
                " options={id(model): {'zipmap': False}} to get a probabilities tensor)"
            )
        raise OnnxError(msg)
    elem = vtype.tensor_type.elem_type
    datatype = _ONNX_TO_TRITON.get(elem)
    if datatype is None:
        import onnx

        try:
            elem_name = onnx.TensorProto.DataType.Name(elem)
        except ValueError:
            elem_name = str(elem)
        raise OnnxError(f"{kind} {name!r} has element type {elem_name}, which Triton does not support")
    if not vtype.tensor_type.HasField("shape"):
        raise OnnxError(f"{kind} {name!r} has no shape (unknown rank); the model must declare the rank")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in vtype.tensor_type.shape.dim]
    return TensorSig(name=name, datatype=datatype, dims=dims)


def read_onnx_signature(path_or_bytes) -> OnnxSignature:
    """Inputs and outputs of an ONNX model (a path, or the file's bytes).

    Initializers listed among the graph inputs (older exporters do that) are not
    inputs.  Raises OnnxError for a file that is not an ONNX model, and for
    non-tensor inputs or outputs (e.g. a skl2onnx ZipMap output).
    """
    model = _load_model(path_or_bytes)
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise OnnxError("not a valid ONNX model: no IR version or no graph")
    graph = model.graph
    if not graph.output:
        raise OnnxError("not a valid ONNX model: the graph has no outputs")
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    inputs = [_tensor_sig(vi, "input") for vi in graph.input if vi.name not in initializers]
    outputs = [_tensor_sig(vi, "output") for vi in graph.output]
    return OnnxSignature(inputs=inputs, outputs=outputs)


_ARCHIVE_MAGICS = (
    b"PK\x03\x04",  # zip
    b"PK\x05\x06",  # empty zip
    b"\x1f\x8b",  # gzip
    b"BZh",  # bzip2
    b"\xfd7zXZ\x00",  # xz
    b"(\xb5/\xfd",  # zstd
)

# Tags of the ModelProto fields that protobuf serializes after ir_version (field 1):
# producer_name 2, producer_version 3, domain 4, model_version 5, doc_string 6,
# graph 7, opset_import 8, metadata_props 14, training_info 20, functions 25.
_MODELPROTO_NEXT_TAGS = (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA)


def is_onnx(path) -> bool:
    """Cheap check (first bytes only) that a file looks like a serialized ONNX model.

    Used to tell a bare ``model.onnx`` upload from an archive (zip, tar.*): an ONNX
    file is a protobuf ModelProto, which starts with its ir_version field.
    Accepts a path or the first bytes of the file.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        head = bytes(path[:16])
    else:
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError:
            return False
    if len(head) < 3 or head.startswith(_ARCHIVE_MAGICS):
        return False
    # field 1 (ir_version), wire type varint: tag 0x08, then a small version number.
    if head[0] != 0x08 or not 1 <= head[1] <= 0x7F:
        return False
    return head[2] in _MODELPROTO_NEXT_TAGS


def _read_runner_source() -> str:
    return Path(__file__).with_name("onnx_runner_model.py").read_text(encoding="utf-8")


ONNX_RUNNER_MODEL_PY: str = _read_runner_source()
