"""What data a run trained on, recorded in its ``data.json`` so that runs can be checked for comparability later.

Validator scores are computed on a run's unlabeled target samples, so two runs' scores rank them only when both adapted
to the same target data. A domain's fingerprint is a SHA-256 digest: of the ``x`` bytes for arrays (float32, as
trained on), of every file's path relative to the files' common folder and its size in bytes for image files (so the
same folder reached by another path, or moved, keeps its fingerprint; a file added, removed, renamed or rewritten with
another size changes it). Only ``target_train`` decides comparability; the others are recorded for the reader."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..runs import atomic_write_text
from .domains import Domain, DomainData

DATA_FILE = "data.json"
PARTS = ("source_train", "source_val", "target_train", "target_eval")


def domain_fingerprint(domain: Any) -> dict[str, Any]:
    """``{"kind": "arrays" | "images", "n": N, "sha256": hex digest}`` of a ``Domain`` or an ``ImageDomain``; image
    domains also give ``"origin"`` (their folder or list file)."""
    digest = hashlib.sha256()
    if isinstance(domain, Domain):
        digest.update(json.dumps(list(domain.x.shape)).encode())
        digest.update(domain.x.detach().cpu().contiguous().numpy().tobytes())
        return {"kind": "arrays", "n": len(domain), "sha256": digest.hexdigest()}
    paths = [os.path.abspath(p) for p in domain.paths]
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    for path in paths:
        size = os.path.getsize(path) if os.path.isfile(path) else -1
        digest.update(os.fsencode(os.path.relpath(path, common)) + f"\0{size}\n".encode())  # a name's own bytes
    return {"kind": "images", "n": len(paths), "sha256": digest.hexdigest(), "origin": domain.name}


def data_fingerprint(data: DomainData, target: str = "") -> dict[str, Any]:
    """The ``data.json`` record of ``data``: the classes and a ``domain_fingerprint`` per part (None where absent);
    ``target`` names the target data for messages (``data.target``, a task name; "" for arrays in memory)."""
    parts = {name: domain_fingerprint(d) if (d := getattr(data, name)) is not None else None for name in PARTS}
    return {"format": 1, "classes": list(data.classes), "target": target, **parts}


def write_data_fingerprint(run_dir: str | Path, data: DomainData, target: str = "") -> None:
    """Write ``run_dir/data.json`` (atomically) unless it exists: a resumed run keeps the record of its start."""
    path = Path(run_dir) / DATA_FILE
    if not path.exists():
        atomic_write_text(path, json.dumps(data_fingerprint(data, target), indent=1) + "\n")


def read_data_fingerprint(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``data.json`` record, or None for a run without one (trained before runs recorded their data) or
    with an unreadable one."""
    path = Path(run_dir) / DATA_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("target_train"), dict) else None


def describe_target(record: dict[str, Any]) -> str:
    """``"new_instrument (600 images)"``: the target data of a ``data.json`` record, for messages."""
    part = record["target_train"]
    what = record.get("target") or part.get("origin") or "arrays in memory"
    return f"{what} ({part['n']} {'images' if part['kind'] == 'images' else 'samples'})"
