"""The digits data set split used by the ModelHub demo (bundled with scikit-learn; no download)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TEST_SIZE = 0.25
RANDOM_STATE = 0
N_FEATURES = 64
CLASS_LABELS = [str(i) for i in range(10)]


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(np.float32),
        y.astype(np.int64),
        test_size=TEST_SIZE,
        random_state=RANDOM_STATE,
        stratify=y,
    )
    return X_train, X_test, y_train, y_test


def load_train_split() -> tuple[np.ndarray, np.ndarray]:
    """(X_train float32 [n, 64], y_train int64 [n]) the demo models are trained on."""
    X_train, _, y_train, _ = _split()
    return X_train, y_train


def load_eval_split() -> tuple[np.ndarray, np.ndarray]:
    """(X_test float32 [450, 64], y_test int64 [450]): the held-out split behind the demo accuracies."""
    _, X_test, _, y_test = _split()
    return X_test, y_test
