"""Optional TensorBoard event files, for watching a run live: ``pip install "dann[tensorboard]"``, then
``tensorboard --logdir runs``. Without the package, without a run directory or with ``train.tensorboard: false``
every call is a no-op. The run's record of truth stays ``metrics.jsonl``; these events are a view of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EVENTS_DIR = "tensorboard"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{"a/b": value}``; strings, lists and None are skipped."""
    out: dict[str, float] = {}
    for key, value in values.items():
        tag = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out |= flatten(value, tag)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[tag] = float(value)
    return out


class EventLog:
    """Scalars to ``<run_dir>/tensorboard`` through ``torch.utils.tensorboard.SummaryWriter`` when available."""

    def __init__(self, run_dir: Path | None, enabled: bool = True) -> None:
        self._writer = None
        if run_dir is None or not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional extra is not installed
            return
        self._writer = SummaryWriter(str(run_dir / EVENTS_DIR), flush_secs=10)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalars(self, values: dict[str, Any], step: int, prefix: str = "") -> None:
        if self._writer is None:
            return
        for tag, value in flatten(values, prefix).items():
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
