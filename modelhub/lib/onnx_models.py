"""Read the input/output signature of an ONNX model, and serve ONNX on a python-only Triton.

Pure Python (no Django).  ``read_onnx_signature`` reads a model's graph inputs and
outputs, with Triton datatype names, without reading the rest of the file (its
weights) into memory.  ``ONNX_RUNNER_MODEL_PY`` is the source of a generic
Triton python-backend ``model.py`` (kept as ``onnx_runner_model.py`` next to this
module) that runs ``model.onnx`` with onnxruntime, so an ONNX model can be served by
a Triton that has only the python backend.
"""

from __future__ import annotations

import contextlib
import io
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


# The signature is read by walking the protobuf wire format of the ModelProto
# from a seekable file, without onnx.load: that would read the whole file (and
# its weights: initializers, Constant nodes) into memory, which for an upload
# is the web process's memory. Only the few fields a signature needs are
# read: ModelProto.ir_version (1) and graph (7); in the GraphProto, input (11)
# and output (12), and the names of initializer (5) and sparse_initializer
# (15), which are skipped over by seeking. A well-formed walk also proves that
# every field's length fits the file, so a truncated file is refused here.
_VARINT, _FIXED64, _LENGTH, _GROUP_START, _GROUP_END, _FIXED32 = range(6)
_MODEL_IR_VERSION, _MODEL_GRAPH = 1, 7
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_SPARSE_INITIALIZER = 5, 11, 12, 15
_TENSOR_NAME = 8  # TensorProto.name
_SPARSE_VALUES = 1  # SparseTensorProto.values, a TensorProto
# A graph input or output (ValueInfoProto: name, type, doc string) is tiny; one
# larger than this is not a signature worth reading into memory.
MAX_VALUE_INFO_BYTES = 4 * 1024 * 1024
MAX_NAME_BYTES = 64 * 1024


def _corrupt(detail: str) -> OnnxError:
    return OnnxError(f"not a valid ONNX model: {detail}")


def _read_varint(f, pos: int, end: int) -> tuple[int, int]:
    """Decode one varint at `pos`; return (value, position after it)."""
    f.seek(pos)
    chunk = f.read(min(10, end - pos))
    value = shift = 0
    for i, byte in enumerate(chunk):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise _corrupt(f"truncated or malformed varint at byte {pos}")


def _field_value(f, pos: int, end: int, field: int, wire_type: int) -> tuple[object, int]:
    """Decode or skip the value of a field whose tag ends at `pos`; return (value, position after it)."""
    if wire_type == _VARINT:
        return _read_varint(f, pos, end)
    if wire_type == _LENGTH:
        length, pos = _read_varint(f, pos, end)
        if length > end - pos:
            raise _corrupt(f"field {field} at byte {pos} claims {length} bytes, only {end - pos} remain")
        return (pos, length), pos + length
    if wire_type in (_FIXED64, _FIXED32):
        size = 8 if wire_type == _FIXED64 else 4
        if size > end - pos:
            raise _corrupt(f"field {field} at byte {pos} is cut short")
        return None, pos + size
    if wire_type == _GROUP_START:  # deprecated groups, still legal as unknown fields
        return None, _skip_group(f, pos, end, field)
    raise _corrupt(f"invalid wire type {wire_type} of field {field} at byte {pos}")


def _read_tag(f, pos: int, end: int) -> tuple[int, int, int]:
    tag, pos = _read_varint(f, pos, end)
    if tag >> 3 == 0:
        raise _corrupt(f"field number 0 at byte {pos}")
    return tag >> 3, tag & 7, pos


def _fields(f, start: int, end: int):
    """Yield (field number, wire type, value) for each field in [start, end).

    `value` is the integer of a varint, (offset, length) of a length-delimited
    field, None for fixed-size fields and groups (skipped). The caller may
    read elsewhere in the file: the walk seeks back to its own position.
    """
    pos = start
    while pos < end:
        field, wire_type, pos = _read_tag(f, pos, end)
        value, pos = _field_value(f, pos, end, field, wire_type)
        yield field, wire_type, value


_MAX_GROUP_DEPTH = 100  # protobuf's own recursion limit


def _skip_group(f, pos: int, end: int, group: int) -> int:
    """Skip to just after the end-group tag that closes `group` (iteratively: garbage can nest deep)."""
    open_groups = [group]
    while open_groups:
        if pos >= end:
            raise _corrupt(f"group {open_groups[-1]} is not closed")
        field, wire_type, pos = _read_tag(f, pos, end)
        if wire_type == _GROUP_END:
            if field != open_groups.pop():
                raise _corrupt(f"end of group {field} at byte {pos} closes no open group")
        elif wire_type == _GROUP_START:
            open_groups.append(field)
            if len(open_groups) > _MAX_GROUP_DEPTH:
                raise _corrupt(f"groups nested deeper than {_MAX_GROUP_DEPTH} at byte {pos}")
        else:
            _, pos = _field_value(f, pos, end, field, wire_type)
    return pos


def _read_bytes(f, span: tuple[int, int], limit: int, what: str) -> bytes:
    offset, length = span
    if length > limit:
        raise OnnxError(f"{what} is {length} bytes; at most {limit} are read for a signature")
    f.seek(offset)
    return f.read(length)


def _tensor_name(f, span: tuple[int, int]) -> str:
    name = b""
    offset, length = span
    for field, wire_type, value in _fields(f, offset, offset + length):
        if field == _TENSOR_NAME and wire_type == _LENGTH:
            name = _read_bytes(f, value, MAX_NAME_BYTES, "an initializer's name")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _corrupt(f"an initializer's name is not UTF-8: {exc}") from exc


def _sparse_tensor_name(f, span: tuple[int, int]) -> str:
    offset, length = span
    name = ""
    for field, wire_type, value in _fields(f, offset, offset + length):
        if field == _SPARSE_VALUES and wire_type == _LENGTH:
            name = _tensor_name(f, value)
    return name


def _value_info(f, span: tuple[int, int], kind: str):
    import onnx
    from google.protobuf.message import DecodeError

    message = onnx.ValueInfoProto()
    try:
        message.ParseFromString(_read_bytes(f, span, MAX_VALUE_INFO_BYTES, f"a graph {kind}"))
    except DecodeError as exc:
        raise _corrupt(f"a graph {kind} does not parse: {exc}") from exc
    return message


def _read_graph_io(f) -> tuple[list, list, set[str]]:
    """(graph inputs, graph outputs, initializer names) of the ModelProto in `f`."""
    end = f.seek(0, os.SEEK_END)
    ir_version, graphs = 0, []
    for field, wire_type, value in _fields(f, 0, end):
        if field == _MODEL_IR_VERSION and wire_type == _VARINT:
            ir_version = value
        elif field == _MODEL_GRAPH and wire_type == _LENGTH:
            graphs.append(value)  # protobuf merges a message field given twice
    if ir_version <= 0 or not graphs:
        raise _corrupt("no IR version or no graph")
    inputs, outputs, initializers = [], [], set()
    for offset, length in graphs:
        for field, wire_type, value in _fields(f, offset, offset + length):
            if wire_type != _LENGTH:
                continue
            if field == _GRAPH_INPUT:
                inputs.append(_value_info(f, value, "input"))
            elif field == _GRAPH_OUTPUT:
                outputs.append(_value_info(f, value, "output"))
            elif field == _GRAPH_INITIALIZER:
                initializers.add(_tensor_name(f, value))
            elif field == _GRAPH_SPARSE_INITIALIZER:
                initializers.add(_sparse_tensor_name(f, value))
    return inputs, outputs, initializers


def _open(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return io.BytesIO(path_or_bytes)
    if isinstance(path_or_bytes, (str, os.PathLike)):
        return open(os.fspath(path_or_bytes), "rb")
    if hasattr(path_or_bytes, "read"):
        if getattr(path_or_bytes, "seekable", lambda: False)():
            return contextlib.nullcontext(path_or_bytes)  # the caller's file: read from its start, left open
        return io.BytesIO(path_or_bytes.read())
    raise TypeError(f"read_onnx_signature expects a path, bytes or a file, not {type(path_or_bytes).__name__}")


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
    """Inputs and outputs of an ONNX model (a path, the file's bytes, or a seekable file).

    Reads only the graph's inputs and outputs and its initializers' names
    (memory does not grow with the file: see _read_graph_io). Initializers
    listed among the graph inputs (older exporters do that) are not inputs.
    Raises OnnxError for a file that is not an ONNX model, and for non-tensor
    inputs or outputs (e.g. a skl2onnx ZipMap output); OSError if the path
    cannot be read.
    """
    with _open(path_or_bytes) as f:
        graph_inputs, graph_outputs, initializers = _read_graph_io(f)
    if not graph_outputs:
        raise _corrupt("the graph has no outputs")
    inputs = [_tensor_sig(vi, "input") for vi in graph_inputs if vi.name not in initializers]
    outputs = [_tensor_sig(vi, "output") for vi in graph_outputs]
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
