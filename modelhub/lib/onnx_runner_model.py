"""Generic Triton python-backend model that runs ``model.onnx`` with onnxruntime.

ModelHub places this file as ``<version>/model.py`` next to ``<version>/model.onnx``
so that an ONNX model can be served by a Triton that has only the python backend.
Input and output names and datatypes come from the model configuration; they must
match the ONNX graph's names and ranks (checked at load, so a mismatch fails the load
with a message instead of every request).  Tensors pass straight through: with
max_batch_size > 0 Triton hands over the batch dimension and the ONNX graph is
expected to have it too.  A tensor of one value per sample (ONNX shape [N]) is
configured as dims [1] with reshape {shape: []}: clients send [N, 1], and Triton
itself reshapes it to [N] on the way in and back on the way out.  Without batching
Triton has no scalars: an ONNX scalar (shape []) is configured as dims [1], and this
runner turns the [1] it gets into the scalar the graph wants, and a scalar result
into [1].
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# onnxruntime type string -> numpy dtype used to feed the session.
_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _model_side_shape(cfg, tensor):
    """The shape the backend sees for a configured tensor: its reshape if it has one."""
    # protobuf's JSON may leave out an empty list: a reshape without "shape" is to a scalar
    dims = tensor["reshape"].get("shape", []) if "reshape" in tensor else tensor.get("dims", [])
    return ([-1] if cfg.get("max_batch_size", 0) > 0 else []) + [int(d) for d in dims]


def _stands_for_scalar(configured, graph_shape):
    """Triton's stand-in for a scalar without batching: dims [1] for a rank-0 graph tensor."""
    return configured == [1] and len(graph_shape) == 0


def _shape_problem(kind, name, configured, graph_shape):
    """Why a configured shape cannot feed (or hold) the ONNX graph's; None if it can."""
    if _stands_for_scalar(configured, graph_shape):
        return None
    graph = [d if isinstance(d, int) and d > 0 else -1 for d in graph_shape]
    if len(graph) != len(configured):
        return (
            f"{kind} {name!r}: the configuration gives the model shape {configured} (batch dimension included), "
            f"but model.onnx has rank {len(graph)} ({graph})"
        )
    for want, have in zip(configured, graph, strict=True):
        if want > 0 and have > 0 and want != have:
            return f"{kind} {name!r}: the configuration gives the model shape {configured}, model.onnx has {graph}"
    return None


def _to_str(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _to_bytes(value):
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = cfg = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        configured_inputs = [i["name"] for i in cfg.get("input", [])]
        configured_outputs = [o["name"] for o in cfg.get("output", [])]

        missing = [n for n in configured_inputs if n not in graph_inputs]
        if missing:
            raise ValueError(f"configured input(s) {missing} not in model.onnx (graph inputs: {sorted(graph_inputs)})")
        unfed = [n for n in graph_inputs if n not in configured_inputs]
        if unfed:
            raise ValueError(f"model.onnx input(s) {unfed} are not in the model configuration")
        missing = [n for n in configured_outputs if n not in graph_outputs]
        if missing:
            raise ValueError(
                f"configured output(s) {missing} not in model.onnx (graph outputs: {sorted(graph_outputs)})"
            )
        if not configured_outputs:
            raise ValueError("the model configuration lists no outputs")

        shapes = {
            "input": {i.name: i.shape for i in self.session.get_inputs()},
            "output": {o.name: o.shape for o in self.session.get_outputs()},
        }
        self.scalar_inputs = set()
        for kind in ("input", "output"):
            for tensor in cfg.get(kind, []):
                graph_shape, configured = shapes[kind][tensor["name"]], _model_side_shape(cfg, tensor)
                if kind == "input" and _stands_for_scalar(configured, graph_shape):
                    self.scalar_inputs.add(tensor["name"])
                # onnxruntime shows an output of unknown rank as []: nothing to check then
                if kind == "output" and not graph_shape:
                    continue
                problem = _shape_problem(kind, tensor["name"], configured, graph_shape)
                if problem:
                    raise ValueError(problem)

        # (name, numpy dtype the ONNX graph expects)
        self.inputs = []
        for name in configured_inputs:
            ort_type = graph_inputs[name].type
            if ort_type not in _ORT_TO_NUMPY:
                raise ValueError(f"input {name!r}: unsupported ONNX type {ort_type}")
            self.inputs.append((name, _ORT_TO_NUMPY[ort_type]))
        # (name, numpy dtype configured for Triton)
        self.outputs = [
            (
                name,
                pb_utils.triton_string_to_numpy(pb_utils.get_output_config_by_name(cfg, name)["data_type"]),
            )
            for name in configured_outputs
        ]
        self.output_names = [name for name, _ in self.outputs]

    def _feeds(self, request):
        feeds = {}
        for name, dtype in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name!r}")
            array = tensor.as_numpy()
            if name in self.scalar_inputs:
                if array.size != 1:
                    raise ValueError(f"input {name!r} is a scalar: send shape [1], not {list(array.shape)}")
                array = array.reshape(())
            if dtype is np.object_:
                array = np.vectorize(_to_str, otypes=[object])(array) if array.size else array.astype(object)
            elif array.dtype != dtype:
                array = array.astype(dtype)
            feeds[name] = array
        return feeds

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                results = self.session.run(self.output_names, self._feeds(request))
                tensors = []
                for (name, dtype), result in zip(self.outputs, results, strict=True):
                    # Triton has no scalars without batching: the configuration says [1]
                    array = np.asarray(result).reshape(1) if np.ndim(result) == 0 else np.asarray(result)
                    if dtype is np.object_ or dtype == np.dtype(object):
                        array = np.vectorize(_to_bytes, otypes=[object])(array) if array.size else array.astype(object)
                    else:
                        array = array.astype(dtype, copy=False)
                    tensors.append(pb_utils.Tensor(name, array))
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # every failure becomes an error response
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}")))
        return responses

    def finalize(self):
        self.session = None
