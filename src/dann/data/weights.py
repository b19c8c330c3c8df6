"""Per-sample weights of labeled samples: how much each one counts in the classification loss. A batch's loss is
``weighted_mean(CE, w) = Σ w_i · CE_i / Σ w_i`` (``dann.methods.base``), so a weight of 0 removes a sample's gradient
and a weight of 2 counts it twice; only their ratios matter within a batch. Weights come from a ``weight`` column of a
list file, a ``w`` array of an ``.npz`` file, or ``sample_weight`` of ``DANNClassifier.fit``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import DataError


def as_weights(
    values: Sequence[float] | np.ndarray | torch.Tensor, n: int, what: str, row: Callable[[int], str]
) -> torch.Tensor:
    """(n,) float32 weights, checked: real numbers, finite and >= 0, not all 0. ``what`` names the file (or argument)
    and ``row(i)`` the place of sample ``i`` in it, for the messages. Raises ``DataError``."""
    w = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if w.shape != (n,):
        raise DataError(f"{what}: weights must have shape ({n},), one per sample, got {w.shape}")
    if w.dtype.kind not in "biuf":
        raise DataError(f"{what}: weights must be numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{what}, {row(i)}: weight {w[i]:g} is not allowed; weights must be finite and >= 0 "
            f"({len(bad)} bad weight(s))"
        )
    if n and not (w > 0).any():
        raise DataError(f"{what}: every weight is zero, so no sample would count; give some samples a positive weight")
    return torch.from_numpy(w.astype(np.float32))


def check_some_weight(w: torch.Tensor | None, what: str) -> None:
    """A training set whose weights are all 0 (its positive-weight samples were all held out) is refused."""
    if w is not None and len(w) and not bool((w > 0).any()):
        raise DataError(
            f"{what}: every sample left for training has weight 0 (the positive-weight ones were held out for "
            "validation); give more samples a positive weight or lower data.val_fraction"
        )
