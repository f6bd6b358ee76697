"""Scores of a model's answers against expected values: accuracy, top-k accuracy,
macro F1, MAE and RMSE, with numpy only (scikit-learn is a test dependency; the
tests compare these with its results).

Classification answers come in two shapes:
- labels, one per row ([N] or [N, 1]): strings (BYTES outputs of skl2onnx
  classifiers arrive as bytes), integers or booleans;
- scores, [N, C] floats (probabilities, logits): the predicted class is the
  argmax, mapped through the output's `labels` when the expected values are
  label strings, else compared as the class index.
Expected labels are strings or integers; "3" and 3 are the same class, so an
INT64 label output can be scored against string labels and the other way round.
"""

from collections.abc import Sequence

import numpy as np

ACCURACY = "accuracy"
TOP_K_ACCURACY = "top_k_accuracy"
MACRO_F1 = "macro_f1"
MAE = "mae"
RMSE = "rmse"
CLASSIFICATION = frozenset({ACCURACY, TOP_K_ACCURACY, MACRO_F1})
REGRESSION = frozenset({MAE, RMSE})


class MetricError(ValueError):
    """Answers and expected values that cannot be scored together; the message says why."""


def score(
    metric: str,
    predicted: np.ndarray,
    expected: np.ndarray,
    *,
    k: int = 1,
    labels: Sequence[str] | None = None,
) -> float:
    """The `metric` of `predicted` (a model's answers, all rows) against `expected`."""
    predicted, expected = np.asarray(predicted), np.asarray(expected)
    if len(predicted) != len(expected):
        raise MetricError(f"{len(predicted)} answers for {len(expected)} expected values")
    if len(expected) == 0:
        raise MetricError("no rows to score")
    if metric == MAE:
        return mae(predicted, expected)
    if metric == RMSE:
        return rmse(predicted, expected)
    if metric == ACCURACY:
        return accuracy(predicted, expected, labels=labels)
    if metric == TOP_K_ACCURACY:
        return top_k_accuracy(predicted, expected, k, labels=labels)
    if metric == MACRO_F1:
        return macro_f1(predicted, expected, labels=labels)
    raise MetricError(f"unknown metric {metric!r}")


# --- classification --------------------------------------------------------------


def is_scores(predicted: np.ndarray) -> bool:
    """Whether answers are per-class scores ([N, C] numbers, C > 1) rather than one label per row."""
    return predicted.ndim == 2 and predicted.shape[1] > 1 and predicted.dtype.kind in "fiu"


def as_labels(values: np.ndarray) -> np.ndarray:
    """One label per row, [N]: bytes decoded to str, a trailing [N, 1] dimension dropped."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise MetricError(f"expected one label per row, got rows of shape {list(values.shape[1:])}")
    if values.dtype.kind == "S" or (values.dtype.kind == "O" and len(values) and isinstance(values[0], bytes)):
        return np.array([v.decode("utf-8", "replace") for v in values], dtype=object)
    if values.dtype.kind in "UO":
        return values.astype(str).astype(object)
    return values


def _comparable(predicted: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays in one kind: strings when either side is, else numbers."""
    text = [a.dtype.kind == "O" for a in (predicted, expected)]
    if any(text) and not all(text):
        pair = zip((predicted, expected), text, strict=True)
        predicted, expected = (a if is_text else _numbers_as_text(a) for a, is_text in pair)
    return predicted, expected


def _numbers_as_text(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        values = values.astype(np.int64)
    return values.astype(str).astype(object)


def predicted_labels(predicted: np.ndarray, expected: np.ndarray, labels: Sequence[str] | None = None) -> np.ndarray:
    """The predicted label of each row, comparable with as_labels(expected)."""
    if is_scores(predicted):
        return _class_names(np.argmax(predicted, axis=1), expected, labels, predicted.shape[1])
    return as_labels(predicted)


def _class_names(indices: np.ndarray, expected: np.ndarray, labels: Sequence[str] | None, classes: int) -> np.ndarray:
    # Expected label strings are matched through the output's labels; expected numbers are class indices.
    if as_labels(expected).dtype.kind != "O":
        return indices
    if not labels:
        raise MetricError(
            "the expected values are label strings but the scores have no labels to name their classes "
            "(register the output's labels, or give class indices)"
        )
    if len(labels) != classes:
        raise MetricError(f"the scores have {classes} classes but the output has {len(labels)} labels")
    return np.asarray(labels, dtype=object)[indices]


def accuracy(predicted: np.ndarray, expected: np.ndarray, *, labels: Sequence[str] | None = None) -> float:
    """The share of rows whose predicted label is the expected one."""
    got, want = _comparable(predicted_labels(predicted, expected, labels), as_labels(expected))
    return float(np.mean(got == want))


def top_k_accuracy(
    predicted: np.ndarray, expected: np.ndarray, k: int, *, labels: Sequence[str] | None = None
) -> float:
    """The share of rows whose expected label is among the k highest scores."""
    if k < 1:
        raise MetricError(f"k must be at least 1, not {k}")
    if not is_scores(predicted):
        if k == 1:
            return accuracy(predicted, expected, labels=labels)
        raise MetricError(f"top-{k} accuracy needs per-class scores ([N, C]); the answers are one label per row")
    classes = predicted.shape[1]
    # argpartition: the k best of each row without sorting all C scores.
    top = np.argpartition(-predicted, min(k, classes) - 1, axis=1)[:, : min(k, classes)]
    want = as_labels(expected)
    if want.dtype.kind == "O":
        top_names = _class_names(top.reshape(-1), expected, labels, classes).reshape(top.shape)
        return float(np.mean(np.any(top_names == want[:, None], axis=1)))
    return float(np.mean(np.any(top == want.astype(np.int64)[:, None], axis=1)))


def macro_f1(predicted: np.ndarray, expected: np.ndarray, *, labels: Sequence[str] | None = None) -> float:
    """F1 per class averaged over the classes seen in either the answers or the expected
    values (as scikit-learn's f1_score(average="macro"); a class never predicted scores 0)."""
    got, want = _comparable(predicted_labels(predicted, expected, labels), as_labels(expected))
    classes, codes = np.unique(np.concatenate([want, got]), return_inverse=True)
    truth, guess = codes[: len(want)], codes[len(want) :]
    n = len(classes)
    true_positive = np.bincount(truth[truth == guess], minlength=n)
    predicted_count = np.bincount(guess, minlength=n)
    actual_count = np.bincount(truth, minlength=n)
    denominator = predicted_count + actual_count
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros(n), where=denominator > 0)
    return float(f1.mean())


# --- regression --------------------------------------------------------------------


def _numbers(predicted: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    try:
        got, want = predicted.astype(np.float64), expected.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"MAE and RMSE need numbers: {exc}") from None
    got, want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    if got.shape != want.shape:
        raise MetricError(f"answers have {got.shape[1]} values per row, expected values {want.shape[1]}")
    return got, want


def mae(predicted: np.ndarray, expected: np.ndarray) -> float:
    """Mean absolute error (averaged over outputs per row, as scikit-learn's uniform average)."""
    got, want = _numbers(predicted, expected)
    return float(np.mean(np.abs(got - want)))


def rmse(predicted: np.ndarray, expected: np.ndarray) -> float:
    """Root mean squared error per output column, averaged over columns (scikit-learn's
    root_mean_squared_error with its default uniform average)."""
    got, want = _numbers(predicted, expected)
    return float(np.mean(np.sqrt(np.mean((got - want) ** 2, axis=0))))
