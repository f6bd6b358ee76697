"""The accuracy check's metrics agree with scikit-learn's, on every kind of answer a model gives."""

import numpy as np
import pytest
from sklearn import metrics as sk

from modelhub.lib import metrics
from modelhub.lib.metrics import MetricError, score

RNG = np.random.default_rng(7)
N, C = 300, 6
SCORES = RNG.random((N, C)).astype(np.float32)
TRUTH = RNG.integers(0, C, size=N)
# A mostly right labeller: the true class, except every fourth row.
GUESS = np.where(np.arange(N) % 4 == 0, (TRUTH + 1) % C, TRUTH)
NAMES = np.array(["cat", "dog", "eel", "fox", "gnu", "hen"])


def test_accuracy_of_integer_labels_matches_sklearn():
    assert score("accuracy", GUESS, TRUTH) == pytest.approx(sk.accuracy_score(TRUTH, GUESS))


def test_accuracy_of_string_labels_as_triton_returns_them_bytes_in_n_by_1():
    # A skl2onnx classifier's BYTES label output arrives as an object array of bytes, [N, 1].
    answered = np.array([n.encode() for n in NAMES[GUESS]], dtype=object).reshape(N, 1)
    expected = NAMES[TRUTH]
    assert score("accuracy", answered, expected) == pytest.approx(sk.accuracy_score(NAMES[TRUTH], NAMES[GUESS]))


def test_integer_label_output_scored_against_string_labels():
    expected = np.array([str(t) for t in TRUTH])
    assert score("accuracy", GUESS.reshape(N, 1), expected) == pytest.approx(sk.accuracy_score(TRUTH, GUESS))


def test_accuracy_from_scores_by_argmax_against_class_indices_and_against_labels():
    want = sk.accuracy_score(TRUTH, SCORES.argmax(axis=1))
    assert score("accuracy", SCORES, TRUTH) == pytest.approx(want)
    assert score("accuracy", SCORES, NAMES[TRUTH], labels=list(NAMES)) == pytest.approx(want)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_matches_sklearn(k):
    want = sk.top_k_accuracy_score(TRUTH, SCORES, k=k, labels=list(range(C)))
    assert score("top_k_accuracy", SCORES, TRUTH, k=k) == pytest.approx(want)
    assert score("top_k_accuracy", SCORES, NAMES[TRUTH], k=k, labels=list(NAMES)) == pytest.approx(want)


def test_macro_f1_matches_sklearn_including_a_class_never_predicted():
    guess = np.where(GUESS == 5, 0, GUESS)  # class 5 is never predicted: its F1 is 0
    assert score("macro_f1", guess, TRUTH) == pytest.approx(sk.f1_score(TRUTH, guess, average="macro"))
    assert score("macro_f1", NAMES[guess], NAMES[TRUTH]) == pytest.approx(
        sk.f1_score(NAMES[TRUTH], NAMES[guess], average="macro")
    )
    assert score("macro_f1", SCORES, TRUTH) == pytest.approx(sk.f1_score(TRUTH, SCORES.argmax(axis=1), average="macro"))


def test_mae_and_rmse_match_sklearn_for_one_and_several_outputs():
    truth = RNG.normal(size=(N, 3))
    answered = truth + RNG.normal(scale=0.3, size=(N, 3))
    assert score("mae", answered, truth) == pytest.approx(sk.mean_absolute_error(truth, answered))
    assert score("rmse", answered, truth) == pytest.approx(sk.root_mean_squared_error(truth, answered))
    # A regressor's [N, 1] output against expected values given one per row.
    assert score("rmse", answered[:, :1], truth[:, 0]) == pytest.approx(
        sk.root_mean_squared_error(truth[:, 0], answered[:, 0])
    )


def test_what_cannot_be_scored_says_why():
    with pytest.raises(MetricError, match="3 answers for 2"):
        score("accuracy", np.zeros(3), np.zeros(2))
    with pytest.raises(MetricError, match="needs per-class scores"):
        score("top_k_accuracy", GUESS, TRUTH, k=2)
    with pytest.raises(MetricError, match="no labels to name their classes"):
        score("accuracy", SCORES, NAMES[TRUTH])
    with pytest.raises(MetricError, match="need numbers"):
        score("mae", NAMES[GUESS], NAMES[TRUTH])
    with pytest.raises(MetricError, match="unknown metric"):
        score("auc", GUESS, TRUTH)


def test_metric_names_are_the_registry_choices():
    from modelhub.registry.models import LOWER_IS_BETTER, EvaluationMetric

    assert set(EvaluationMetric.values) == metrics.CLASSIFICATION | metrics.REGRESSION
    assert set(LOWER_IS_BETTER) == metrics.REGRESSION
