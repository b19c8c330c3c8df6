"""Which rows of one array are labeled source and which are unlabeled target, in the conventions a scikit-learn user
knows: rows labeled ``-1`` (scikit-learn's semi-supervised estimators, e.g. ``SelfTrainingClassifier``), or skada's
``sample_domain`` (positive: source, negative: target, whose labels are masked); or a separate target array."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError

UNLABELED = -1  # the label of an unlabeled target row, as scikit-learn's semi-supervised estimators use it


def unlabeled_mask(y: np.ndarray) -> np.ndarray:
    """(N,) bool: the rows whose label is the unlabeled marker, ``-1`` (also ``"-1"`` among string labels)."""
    y = np.asarray(y)
    if y.dtype.kind in "biuf":
        return y == UNLABELED
    if y.dtype.kind == "O":
        return np.array([v == UNLABELED or v == str(UNLABELED) for v in y], dtype=bool).reshape(y.shape)
    return y.astype(str) == str(UNLABELED)


def target_domain(sample_domain: Any, n: int) -> np.ndarray:
    """(N,) bool: the target rows of skada's ``sample_domain`` (N,) (positive: source, negative: target). One
    domain of each kind: several sources are refused until multi-source training exists."""
    d = np.asarray(sample_domain)
    if d.shape != (n,):
        raise DataError(f"sample_domain must have shape ({n},) to match X, got {d.shape}")
    if d.dtype.kind not in "iu" and not (d.dtype.kind == "f" and np.all(np.mod(d, 1) == 0)):
        raise DataError(f"sample_domain must hold integers (positive: source, negative: target), got {d.dtype}")
    if (d == 0).any():
        raise DataError("sample_domain: 0 is no domain; source domains are positive, target domains negative")
    for sign, kind, why in ((1, "source", "training on several sources is not supported yet"), (-1, "target", "")):
        found = np.unique(d[np.sign(d) == sign])
        if len(found) > 1:
            raise DataError(
                f"several {kind} domains in sample_domain ({', '.join(str(v) for v in found)}): "
                f"{why or 'one target domain per fit'}; give their rows one {'positive' if sign > 0 else 'negative'} "
                f"value to use their union as one {kind} domain"
            )
    return d < 0


def split_domains(
    X: np.ndarray, y: np.ndarray, X_target: np.ndarray | None = None, sample_domain: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X_s, y_s, X_t): the labeled source rows of ``X`` (N, ...) and the unlabeled target rows, which are
    ``X_target``, or the rows labeled -1, or those of a negative ``sample_domain`` (their labels are not read)."""
    unlabeled = unlabeled_mask(y)
    if sample_domain is not None:
        if X_target is not None:
            raise DataError("give the target rows one way: sample_domain or X_target, not both")
        is_target = target_domain(sample_domain, len(y))
        if (unlabeled & ~is_target).any():
            raise DataError(f"{int((unlabeled & ~is_target).sum())} source row(s) (sample_domain > 0) have y == -1")
    else:
        is_target = unlabeled
        if X_target is not None and is_target.any():
            raise DataError("give the target rows one way: rows with y == -1 or X_target, not both")
    if is_target.all():
        raise DataError("no labeled source rows: every row is an unlabeled target row")
    return X[~is_target], y[~is_target], X[is_target] if X_target is None else X_target
