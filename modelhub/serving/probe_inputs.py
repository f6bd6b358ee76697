"""Probe inferences built from a version's registered schema.

`probe_inputs` makes one request's worth of random inputs of the right
datatype and shape; `answer_differences` says how an answer departs from the
registered outputs. The reconciler's smoke inference after a load uses both
(a model that loads but answers with other outputs is not "loaded"); the
latency probe of monitoring reuses `probe_inputs`.
"""

from collections.abc import Iterable, Mapping

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from modelhub.registry.triton_config import served_dims

# Printable ASCII, so a model that decodes its string inputs as UTF-8 accepts them.
_TEXT = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype="S1")
_BYTES_LENGTH = 8


def probe_shape(dims: Iterable[int], max_batch_size: int) -> list[int]:
    """The concrete shape of one probe tensor as a client sends it: the served
    dims (a registered scalar-per-sample [] is served as [1]) with variable (-1)
    dims as 1, after a batch of 1 when the model batches (max_batch_size > 0)."""
    shape = [1 if d == -1 else int(d) for d in served_dims(dims)]
    return [1, *shape] if max_batch_size > 0 else shape


def probe_array(datatype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Random data of a Triton datatype. Values stay small (integers 0 or 1,
    floats in [0, 1)) so that index-like inputs (token ids, categories) are valid."""
    if datatype == "BYTES":
        count = int(np.prod(shape, dtype=np.int64))
        words = [b"".join(rng.choice(_TEXT, size=_BYTES_LENGTH)) for _ in range(count)]
        return np.array(words, dtype=np.object_).reshape(shape)
    dtype = triton_to_np_dtype(datatype)
    if dtype is None:
        raise ValueError(f"no numpy type for Triton datatype {datatype!r}")
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(np.dtype(dtype), np.integer):
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.random(size=shape).astype(dtype)  # FP16, FP32, FP64, BF16 (ml_dtypes)


def probe_inputs(
    inputs: Iterable[Mapping], max_batch_size: int, seed: int | None = None
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays and datatypes for one request to a model with these registered
    inputs ({name, datatype, dims} dicts), ready for TritonClient.infer."""
    rng = np.random.default_rng(seed)
    arrays, datatypes = {}, {}
    for tensor in inputs:
        arrays[tensor["name"]] = probe_array(tensor["datatype"], probe_shape(tensor["dims"], max_batch_size), rng)
        datatypes[tensor["name"]] = tensor["datatype"]
    return arrays, datatypes


def answer_differences(registered: Iterable[Mapping], answered: Iterable[Mapping]) -> list[str]:
    """How the outputs of an answer depart from the registered outputs; [] if
    they fit. Both are {name, datatype, dims} dicts without the batch dimension
    (registry.triton_config.metadata_schema converts Triton's answer to that
    form); registered dims are compared as served, and a -1 matches any size.
    """
    want = {t["name"]: t for t in registered}
    have = {t["name"]: t for t in answered}
    problems = []
    for name in sorted(want.keys() - have.keys()):
        problems.append(f"output {name!r} is missing from the answer")
    for name in sorted(have.keys() - want.keys()):
        problems.append(f"output {name!r} is in the answer but not in the registered schema")
    for name in sorted(want.keys() & have.keys()):
        spec, out = want[name], have[name]
        if out["datatype"] != spec["datatype"]:
            problems.append(f"output {name!r} datatype: registered {spec['datatype']}, answered {out['datatype']}")
        dims, got = served_dims(spec["dims"]), list(out["dims"])
        if len(dims) != len(got) or any(d not in (-1, g) for d, g in zip(dims, got, strict=True)):
            problems.append(f"output {name!r} dims: registered {dims}, answered {got}")
    return problems
