"""Build the ModelHub demo: two versions of a digits classifier, as Triton python-backend zips.

Each version is a scikit-learn classifier trained on the digits data bundled with
scikit-learn (nothing is downloaded), exported to ONNX with skl2onnx and packed as a
Triton model folder zip holding ``1/model.py`` (ModelHub's generic onnxruntime
runner) and ``1/model.onnx``, without a ``config.pbtxt``: the configuration comes
from the upload manifest.

ONNX signature of both versions::

    input          FP32  [N, 64]   pixel intensities 0..16
    label          INT64 [N, 1]    predicted digit
    probabilities  FP32  [N, 10]   class probabilities, classes "0".."9"

The label is reshaped to [N, 1] inside the graph so that, with batching on, its
Triton dims are [1] (Triton needs at least one non-batch dim).

    python -m modelhub.demo.artifacts OUT_DIR
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelhub.demo.data import CLASS_LABELS, N_FEATURES, load_eval_split, load_train_split
from modelhub.lib.onnx_models import ONNX_RUNNER_MODEL_PY

MODEL_NAME = "digits"
MAX_BATCH_SIZE = 64
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# Fixed zip entry timestamp, so that rebuilding gives byte-identical archives.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class DemoVersion:
    archive_path: Path
    manifest: dict
    accuracy: float


def _make_v1():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000), "LogisticRegression(max_iter=1000) on raw pixels"


def _make_v2():
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, random_state=0),
    )
    return model, "StandardScaler + MLPClassifier(hidden_layer_sizes=(128,), random_state=0)"


_VERSIONS = (("v1", _make_v1), ("v2", _make_v2))


def _reshape_label(model):
    """Turn the skl2onnx ``label`` output [N] into [N, 1] with a Reshape node."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    flat = "label_flat"
    for node in graph.node:
        node.output[:] = [flat if o == "label" else o for o in node.output]
        node.input[:] = [flat if i == "label" else i for i in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), name="label_shape"))
    graph.node.append(helper.make_node("Reshape", [flat, "label_shape"], ["label"], name="label_reshape"))
    for i, out in enumerate(graph.output):
        if out.name == "label":
            graph.output.remove(out)
            graph.output.insert(i, helper.make_tensor_value_info("label", TensorProto.INT64, [None, 1]))
            break
    else:  # pragma: no cover - skl2onnx always names it "label" with zipmap=False
        raise RuntimeError("skl2onnx model has no 'label' output")
    return model


def _to_onnx(model) -> bytes:
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        name=MODEL_NAME,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={"zipmap": False},
        target_opset=TARGET_OPSET,
    )
    onx = _reshape_label(onx)
    # skl2onnx may list a domain twice and in set order: one entry per domain, sorted,
    # so that the file is valid for strict runtimes and rebuilds are byte-identical.
    opsets: dict[str, int] = {}
    for entry in onx.opset_import:
        opsets[entry.domain] = max(entry.version, opsets.get(entry.domain, 0))
    del onx.opset_import[:]
    onx.opset_import.extend(onnx.helper.make_opsetid(domain, opsets[domain]) for domain in sorted(opsets))
    names = [o.name for o in onx.graph.output]
    if names != ["label", "probabilities"]:  # pragma: no cover - guards skl2onnx changes
        raise RuntimeError(f"unexpected skl2onnx outputs {names}")
    onnx.checker.check_model(onx)
    return onx.SerializeToString()


def _onnx_accuracy(onnx_bytes: bytes) -> tuple[float, np.ndarray]:
    import onnxruntime as ort

    X_test, y_test = load_eval_split()
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    label, _ = session.run(["label", "probabilities"], {"input": X_test})
    return float(np.mean(label[:, 0] == y_test)), label


def _manifest(accuracy: float, algorithm: str) -> dict:
    return {
        "backend": "python",
        "max_batch_size": MAX_BATCH_SIZE,
        "inputs": [{"name": "input", "datatype": "FP32", "dims": [N_FEATURES]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "dims": [1]},
            {"name": "probabilities", "datatype": "FP32", "dims": [len(CLASS_LABELS)], "labels": list(CLASS_LABELS)},
        ],
        "config": {"dynamic_batching": {}, "instance_group": [{"kind": "KIND_CPU", "count": 1}]},
        "provenance": {"git_commit": None, "ci_run_url": None},
        "metadata": {
            "metrics": {"accuracy": accuracy},
            "trained_on": "sklearn digits",
            "algorithm": algorithm,
        },
    }


def _write_zip(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)


def build_demo_versions(out_dir: Path) -> list[DemoVersion]:
    """Train, export and pack the two demo versions into ``out_dir``.

    Writes ``digits-v1.zip`` / ``digits-v2.zip`` (``1/model.py`` + ``1/model.onnx``)
    and, next to each, ``digits-vN.manifest.json``.  Returns them in version order,
    with the accuracy of the exported ONNX model on ``load_eval_split()``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    X_train, y_train = load_train_split()
    runner = ONNX_RUNNER_MODEL_PY.encode("utf-8")
    built = []
    for tag, make in _VERSIONS:
        model, algorithm = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. ConvergenceWarning: the demo only needs a good model
            model.fit(X_train, y_train)
        onnx_bytes = _to_onnx(model)
        accuracy, _ = _onnx_accuracy(onnx_bytes)
        accuracy = round(accuracy, 4)
        archive = out_dir / f"{MODEL_NAME}-{tag}.zip"
        _write_zip(archive, {"1/model.py": runner, "1/model.onnx": onnx_bytes})
        manifest = _manifest(accuracy, algorithm)
        (out_dir / f"{MODEL_NAME}-{tag}.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        built.append(DemoVersion(archive_path=archive, manifest=copy.deepcopy(manifest), accuracy=accuracy))
    return built


EVALUATION_SET_NAME = f"{MODEL_NAME}-evaluation.npz"


def write_evaluation_set(out_dir: Path) -> Path:
    """The held-out split as the model's evaluation set: ``input`` (FP32 [450, 64]) and the
    expected ``label`` (INT64 [450]), in an .npz with fixed timestamps (rebuilt byte-identical)."""
    features, labels = load_eval_split()
    path = Path(out_dir) / EVALUATION_SET_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in (("input", features.astype(np.float32)), ("label", labels.astype(np.int64))):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m modelhub.demo.artifacts OUT_DIR", file=sys.stderr)
        return 2
    for version in build_demo_versions(Path(argv[0])):
        print(f"{version.archive_path}  accuracy={version.accuracy}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
