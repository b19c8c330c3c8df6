"""Run directories and atomic file writes. A run directory holds ``config.yaml``, ``metrics.jsonl``,
``checkpoints/last.pt``, ``checkpoints/best.pt`` and the reports. Files are written to a temporary sibling,
flushed, then renamed, so a crash never leaves a half-written file; an existing run is never replaced unless
asked."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import RunDirError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "checkpoints/last.pt"
BEST_CHECKPOINT = "checkpoints/best.pt"  # the best step by the run's selection.validator (no target labels)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` to bytes, then an atomic write; ``state`` must hold only tensors and plain data."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain data only, never arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"checkpoint {path} does not exist; was the run trained to its first evaluation?")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RunDirError(f"checkpoint {path} could not be loaded safely: {e}") from None


def prepare_run_dir(path: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or check, on resume) a run directory. An existing non-empty directory is refused unless
    ``resume`` (continue it) or ``overwrite`` (delete it first) is given."""
    path = Path(path)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    if resume:
        if not (path / LAST_CHECKPOINT).is_file():
            raise RunDirError(f"cannot resume: {path / LAST_CHECKPOINT} does not exist")
        return path
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"run directory {path} already exists and is not empty; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        shutil.rmtree(path)
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create run directory {path}: {e.strerror}") from None
    return path


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: str | Path, last_step: int) -> None:
    """On resume, drop metric lines written after the checkpoint being resumed from (they will be rewritten)."""
    kept = [r for r in read_jsonl(path) if r["step"] <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
