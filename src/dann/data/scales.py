"""The scale of array data: how values were stored, and whether two sets of inputs are on one scale.

``as_domain`` reads uint8 arrays as value / 255 and every other dtype as stored, so the same 0–255 pixels saved as
float32 in one file and as uint8 in another reach the network 255 times apart. ``check_scales`` compares the
typical magnitude (mean |x|, as the network sees it) of the source, target and later ``evaluate``/``predict``
inputs: a factor of ``REFUSE_RATIO`` or more is an error, ``WARN_RATIO`` or more a warning, each naming every file,
its dtype and its range."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import DataError, DataWarning

WARN_RATIO, REFUSE_RATIO = 10.0, 100.0  # factors between typical magnitudes: a warning, an error
LEVEL_ROWS = 4096  # about this many samples, evenly spaced, give the typical magnitude


@dataclass(frozen=True)
class Scale:
    """One array as stored (``dtype``, values from ``lo`` to ``hi``) and as read: ``level`` is its mean |x| after
    reading (uint8 divided by 255)."""

    what: str
    dtype: str
    lo: float
    hi: float
    level: float

    @classmethod
    def measure(cls, stored: np.ndarray, read: np.ndarray, what: str) -> Scale | None:
        """The scale of ``stored`` (N, ...) read as float32 ``read``; None without samples."""
        if len(stored) == 0:
            return None
        rows = read[:: max(1, len(read) // LEVEL_ROWS)]
        level = float(np.abs(rows).mean(dtype=np.float64))
        return cls(what, str(stored.dtype), float(stored.min()), float(stored.max()), level)

    def describe(self) -> str:
        read = f", read as {self.lo / 255:g} to {self.hi / 255:g}" if self.dtype == "uint8" else ""
        return f"{self.what} ({self.dtype}, values {self.lo:g} to {self.hi:g}{read})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Scale | None:
        return cls(**d) if d else None


def check_scales(scales: list[Scale | None], trained: Scale | None = None) -> None:
    """Refuse (``REFUSE_RATIO``) or warn about (``WARN_RATIO``) inputs whose typical magnitudes differ by that
    factor: the domains of one run, or with ``trained`` (the run's source data) new data given to the run.
    All-zero arrays and unknown scales (image files, older checkpoints) are left out."""
    known = [s for s in (trained, *scales) if s is not None and s.level > 0]
    if len(known) < 2:
        return
    low, high = min(known, key=lambda s: s.level), max(known, key=lambda s: s.level)
    ratio = high.level / low.level
    if ratio < WARN_RATIO:
        return
    first, second = sorted((low, high), key=known.index)  # in the order given: the run's own data first
    if first is trained:
        found = (
            f"{second.describe()} differs in scale by {ratio:.0f}x from the run's training data, {first.describe()} "
            f"(mean |x| {second.level:.3g} vs {first.level:.3g})"
        )
    else:
        found = (
            f"{first.describe()} and {second.describe()} differ in scale by {ratio:.0f}x (mean |x| "
            f"{first.level:.3g} vs {second.level:.3g})"
        )
    message = f"{found}; uint8 arrays are read as value/255, every other dtype as stored: store all inputs on one scale"
    if ratio >= REFUSE_RATIO:
        raise DataError(message)
    warnings.warn(message, DataWarning, stacklevel=3)
