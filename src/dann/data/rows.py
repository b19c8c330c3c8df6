"""Which rows of one array are labeled source and which are unlabeled target, in the conventions a scikit-learn user
knows: rows labeled ``-1`` (scikit-learn's semi-supervised estimators, e.g. ``SelfTrainingClassifier``), or skada's
``sample_domain`` (positive: source, negative: target, whose labels are masked); or a separate target array. Several
positive ``sample_domain`` values are several labeled domains."""

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


def domain_values(sample_domain: Any, n: int) -> np.ndarray:
    """skada's ``sample_domain`` (N,) checked: integers, none 0 (positive: a labeled source domain, negative: the
    target), several positive values for several labeled domains, one negative value at most."""
    d = np.asarray(sample_domain)
    if d.shape != (n,):
        raise DataError(f"sample_domain must have shape ({n},) to match X, got {d.shape}")
    if d.dtype.kind not in "iu" and not (d.dtype.kind == "f" and np.all(np.mod(d, 1) == 0)):
        raise DataError(f"sample_domain must hold integers (positive: source, negative: target), got {d.dtype}")
    if (d == 0).any():
        raise DataError("sample_domain: 0 is no domain; source domains are positive, target domains negative")
    found = np.unique(d[d < 0])
    if len(found) > 1:
        raise DataError(
            f"several target domains in sample_domain ({', '.join(str(v) for v in found)}): one target domain per "
            "fit; give their rows one negative value to use their union as one target domain"
        )
    return d.astype(np.int64)


def target_rows(
    y: np.ndarray, X_target: np.ndarray | None = None, sample_domain: Any = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """((N,) bool: the unlabeled target rows of ``X``, the checked ``sample_domain`` (N,) or None). Target rows are
    those labeled -1, or those of a negative ``sample_domain`` (their labels are not read); none when the target
    comes as ``X_target``, when ``sample_domain`` (if given) names the labeled rows' domains only."""
    unlabeled = unlabeled_mask(y)
    d = domain_values(sample_domain, len(y)) if sample_domain is not None else None
    is_target = d < 0 if d is not None else unlabeled
    if d is not None and (unlabeled & ~is_target).any():
        raise DataError(f"{int((unlabeled & ~is_target).sum())} source row(s) (sample_domain > 0) have y == -1")
    if X_target is not None and is_target.any():
        way = "a negative sample_domain" if d is not None else "rows with y == -1"
        raise DataError(f"give the target rows one way: {way} or X_target, not both")
    if is_target.all():
        raise DataError("no labeled source rows: every row is an unlabeled target row")
    return is_target, d


def split_domains(
    X: np.ndarray, y: np.ndarray, X_target: np.ndarray | None = None, sample_domain: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X_s, y_s, X_t): the labeled source rows of ``X`` (N, ...) and the unlabeled target rows, which are
    ``X_target``, or the rows labeled -1, or those of a negative ``sample_domain`` (see ``target_rows``)."""
    is_target, _ = target_rows(y, X_target, sample_domain)
    return X[~is_target], y[~is_target], X[is_target] if X_target is None else X_target
