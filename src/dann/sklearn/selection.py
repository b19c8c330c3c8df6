"""Model selection without target labels, the scikit-learn way: the validators (``selection.validators``) as scorers for
``GridSearchCV(scoring=...)``, and a splitter that keeps the unlabeled target rows in every fold."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import BaseCrossValidator, StratifiedKFold
from sklearn.utils.validation import column_or_1d

from ..data.rows import unlabeled_mask
from ..selection.validators import VALIDATORS, ValidationInputs, score_validators


def make_validator_scorer(name: str) -> Callable[[Any, Any, Any], float]:
    """A scorer for ``GridSearchCV(..., scoring=...)``: validator ``name`` (``selection.validators``, higher is better)
    of the fitted estimator (a ``DANNClassifier``, or a ``Pipeline`` ending in one) on the unlabeled target rows
    (``y == -1``) of the evaluation fold, without target labels (the fold has none). ``source_acc`` and ``dev``
    also read the fold's labeled source rows (``dev`` estimates its density ratio on them). Use with ``SourceKFold``,
    whose every evaluation fold holds the target rows."""
    VALIDATORS.get(name)  # an unknown name lists the valid ones

    def scorer(estimator: Any, X: Any, y: Any) -> float:
        y = column_or_1d(y)
        target = unlabeled_mask(y)
        if not target.any():
            raise ValueError(f"validator {name!r}: the evaluation fold has no target rows (y == -1); use SourceKFold")
        f, logits = _fold_outputs(estimator, X)
        f_t, logits_t = f[target], logits[target]
        scores = score_validators(ValidationInputs(f_t, None, None, None, f_t, logits_t), [name])  # target only
        if name in scores:
            return scores[name]
        source = ~target  # the validator reads a labeled source held-out set: the fold's source rows
        if not source.any():
            raise ValueError(f"validator {name!r} needs labeled source rows in the evaluation fold; use SourceKFold")
        y_sv = torch.from_numpy(_encode(estimator.classes_, y[source]))
        inputs = ValidationInputs(f[source], f[source], logits[source], y_sv, f_t, logits_t)
        return score_validators(inputs, [name])[name]

    scorer.__name__ = f"validator_{name}"
    return scorer


def _fold_outputs(estimator: Any, X: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and class logits (float32) of ``estimator``'s rows ``X``, through its public methods; a two-class
    ``decision_function`` (N,) gives logits (0, d), which have the same softmax."""
    f = torch.as_tensor(np.asarray(estimator.transform(X)), dtype=torch.float32)
    d = torch.as_tensor(np.asarray(estimator.decision_function(X)), dtype=torch.float32)
    return f, torch.stack([torch.zeros_like(d), d], 1) if d.ndim == 1 else d


def _encode(classes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Labels → indices into ``classes`` (int64); a label the fit never saw is an error."""
    index = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    if not np.array_equal(classes[index], y):
        raise ValueError("the evaluation fold holds source classes that the fitted estimator never saw")
    return index.astype(np.int64)


class SourceKFold(BaseCrossValidator):
    """Stratified K folds over the labeled source rows for ``GridSearchCV(cv=...)``: every fold trains on all the
    unlabeled target rows (``y == -1``) and the other source folds, and is scored on its source fold plus the target
    rows (the transductive protocol of unsupervised domain adaptation)."""

    def __init__(self, n_splits: int = 5, shuffle: bool = False, random_state: int | None = None) -> None:
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def split(self, X: Any, y: Any, groups: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        y = column_or_1d(y)
        target = unlabeled_mask(y)
        if not target.any():
            raise ValueError("SourceKFold: no target rows (y == -1) to keep in every fold")
        source, rows_t = np.flatnonzero(~target), np.flatnonzero(target)
        folds = StratifiedKFold(self.n_splits, shuffle=self.shuffle, random_state=self.random_state)
        for train, test in folds.split(source, y[source]):
            yield np.concatenate([source[train], rows_t]), np.concatenate([source[test], rows_t])

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits
