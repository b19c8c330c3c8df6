"""The labeled domains ``data.source`` names: one path (the domain ``source``), several paths (each named by its
file or folder name), ``name=path`` entries, or a mapping name → path. Paths are image folders, list files or
``.npz`` files, resolved against ``data.root``; several ``.npz`` files are merged onto one list of classes by name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import NAMED_SOURCE as NAMED
from ..config import DataConfig
from ..errors import ConfigError, DataError
from .domains import SOURCE_NAME, Domain, check_labels


def resolve(cfg: DataConfig, path: str) -> str:
    """``path`` relative to ``data.root`` when it is set and the path is relative; "" stays ""."""
    return str(Path(cfg.root) / path) if path and cfg.root and not Path(path).is_absolute() else path


def labeled_sources(cfg: DataConfig) -> list[tuple[str, str]]:
    """(name, path) of each labeled domain ``data.source`` names, paths resolved against ``data.root``; [] when it
    names none. Raises ``ConfigError`` for an empty name or path, or two domains of one name."""
    source = cfg.source
    if isinstance(source, dict):
        entries = [(str(name), str(path)) for name, path in source.items()]
    else:
        items = [source] if isinstance(source, str) else list(source)
        single = isinstance(source, str)
        entries = [_entry(item, single) for item in items if item or not single]
    for name, path in entries:
        if not name or not path:
            raise ConfigError(f"data.source: labeled domain {name or '(no name)'!r} needs a path, got {path!r}")
    names = [name for name, _ in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        paths = ", ".join(p for n, p in entries if n == twice[0])
        raise ConfigError(
            f"data.source: two labeled domains are named {twice[0]!r} ({paths}); name each as name=path, "
            "or give a mapping name: path"
        )
    return [(name, resolve(cfg, path)) for name, path in entries]


def _entry(item: str, single: bool) -> tuple[str, str]:
    """``name=path`` → (name, path); a bare path → (``source``, path) when it is the only one, else (its file or
    folder name without suffix, path)."""
    match = NAMED.match(item)
    if match:
        return match.group(1), match.group(2)
    return (SOURCE_NAME if single else Path(item.rstrip("/\\")).stem), item


def merge_npz_classes(
    loaded: list[tuple[str, str, Domain, list[str] | None]],
) -> tuple[dict[str, Domain], list[str] | None]:
    """Labeled ``.npz`` domains (name, path, domain, class names or None) → domains whose labels index one list of
    classes. With names in every file, classes are matched by name: the first file's order, then classes only later
    files have; without names in any, label i means the same class in all. One file is kept as it is. Raises
    ``DataError`` when only some files name their classes, or a label has no name."""
    if len(loaded) == 1 or all(names is None for *_, names in loaded):
        return {name: domain for name, _, domain, _ in loaded}, loaded[0][3]
    missing = [path for _, path, _, names in loaded if names is None]
    if missing:
        raise DataError(
            f"some labeled .npz files name their classes (array 'classes') and {missing[0]} does not: classes are "
            "matched by name across labeled domains, so give every file its 'classes'"
        )
    classes: list[str] = []
    for *_, names in loaded:
        classes += [c for c in names if c not in classes]  # type: ignore[union-attr]
    merged = {}
    for name, path, domain, names in loaded:
        check_labels(domain.y, len(names), path)  # type: ignore[arg-type]
        remap = torch.tensor([classes.index(c) for c in names], dtype=torch.int64)  # type: ignore[union-attr]
        merged[name] = dataclasses.replace(domain, y=remap[domain.y])  # type: ignore[index]
    return merged, classes
