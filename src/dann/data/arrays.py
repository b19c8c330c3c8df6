"""Arrays in memory and ``.npz`` files: ``x`` of shape (N, D) or (N, C, H, W), optional integer ``y``, optional
``classes`` (names, index = label)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .domains import Domain
from .scales import Scale
from .weights import as_weights

MAGIC = (b"PK", b"\x93NUMPY")  # how a .npz (a zip archive) or a .npy file starts; np.load would try pickle otherwise


def as_domain(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor | None = None,
    what: str = "array",
    w: np.ndarray | torch.Tensor | None = None,
    w_name: str = "w",
) -> Domain:
    """Validate and convert: float32 features/images (uint8 images are scaled to [0, 1]), int64 labels, float32
    per-sample weights ``w`` (N,) (``dann.data.weights``; ``w_name`` names them in messages)."""
    x = stored = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if x.ndim not in (2, 4):
        raise DataError(f"{what}: x must have shape (N, D) or (N, C, H, W), got {x.shape}")
    if 0 in x.shape[1:]:
        raise DataError(f"{what}: samples must not be empty, got x of shape {x.shape}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype.kind not in "iuf":
        raise DataError(f"{what}: x must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{what}: x contains NaN or infinite values ({int((~np.isfinite(x)).sum())} entries)")
    labels = None
    if y is not None:
        y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{what}: y must have shape ({len(x)},) to match x, got {y.shape}")
        if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
            raise DataError(f"{what}: y must hold integer class indices, got dtype {y.dtype}")
        labels = torch.from_numpy(y.astype(np.int64))
    weights = as_weights(w, len(x), what, lambda i: f"{w_name}[{i}]") if w is not None else None
    return Domain(torch.from_numpy(np.ascontiguousarray(x)), labels, scale=Scale.measure(stored, x, what), w=weights)


def load_npz(path: str | Path) -> tuple[Domain, list[str] | None]:
    """Read a ``.npz`` file into a Domain (and class names, if the file has ``classes``); an array ``w`` gives
    per-sample weights (N,) of labeled samples."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        loaded = np.load(path, allow_pickle=False) if head.startswith(MAGIC) else None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile) as e:
        raise DataError(f"data file {path} could not be read as .npz: {e or type(e).__name__}") from None
    if loaded is None:
        kind = "is empty (0 bytes)" if not head else "is not a .npz file (a zip archive of arrays)"
        raise DataError(f"data file {path} {kind}; write one with np.savez(path, x=..., y=...)")
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(
            f"data file {path} holds one array, not named arrays; write it with np.savez(path, x=..., y=...)"
        )
    if "x" not in arrays:
        raise DataError(f"data file {path} has no array 'x' (found: {', '.join(arrays) or 'none'})")
    domain = as_domain(arrays["x"], arrays.get("y"), str(path), arrays.get("w"))
    return domain, _class_names(arrays.get("classes"), path)


def _class_names(names: np.ndarray | None, path: Path) -> list[str] | None:
    if names is None:
        return None
    if names.ndim != 1 or len(names) == 0:
        raise DataError(f"data file {path}: 'classes' must be a non-empty list of names, got shape {names.shape}")
    return [str(c) for c in names]


def check_same_classes(expected: list[str] | None, found: list[str] | None, what: str) -> None:
    """Two files that both name their classes must name the same ones in the same order (label i = name i)."""
    if expected is not None and found is not None and expected != found:
        raise DataError(f"{what}: different class names ({found} vs {expected}); label i must mean one class in both")


def save_npz(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray | None = None,
    classes: list[str] | None = None,
    w: np.ndarray | None = None,
) -> None:
    """Write arrays in the layout ``load_npz`` reads."""
    arrays = {"x": x} | ({"y": y} if y is not None else {}) | ({"classes": np.array(classes)} if classes else {})
    np.savez(path, **arrays, **({"w": w} if w is not None else {}))
