"""Arrays in memory and ``.npz`` files: ``x`` of shape (N, D) or (N, C, H, W), optional integer ``y``, optional
``classes`` (names, index = label)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .domains import Domain


def as_domain(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | None = None, what: str = "array") -> Domain:
    """Validate and convert: float32 features/images (uint8 images are scaled to [0, 1]), int64 labels."""
    x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim not in (2, 4):
        raise DataError(f"{what}: x must have shape (N, D) or (N, C, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{what}: x must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{what}: x contains NaN or infinite values ({int((~np.isfinite(x)).sum())} entries)")
    labels = None
    if y is not None:
        y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{what}: y must have shape ({len(x)},) to match x, got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
                raise DataError(f"{what}: y must hold integer class indices, got dtype {y.dtype}")
        labels = torch.from_numpy(y.astype(np.int64))
    return Domain(torch.from_numpy(np.ascontiguousarray(x)), labels)


def load_npz(path: str | Path) -> tuple[Domain, list[str] | None]:
    """Read a ``.npz`` file into a Domain (and class names, if the file has ``classes``)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"data file {path} could not be read as .npz: {e}") from None
    if "x" not in arrays:
        raise DataError(f"data file {path} has no array 'x' (found: {', '.join(arrays) or 'none'})")
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    return as_domain(arrays["x"], arrays.get("y"), what=str(path)), classes


def save_npz(path: str | Path, x: np.ndarray, y: np.ndarray | None = None, classes: list[str] | None = None) -> None:
    """Write arrays in the layout ``load_npz`` reads."""
    arrays = {"x": x} | ({"y": y} if y is not None else {}) | ({"classes": np.array(classes)} if classes else {})
    np.savez(path, **arrays)
