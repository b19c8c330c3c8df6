"""Every file of a run's data read once, before training (``dann check-data``, ``dann train --check-data``): image
files are decoded exactly as training decodes them (``images.load_rgb``), in a pool of processes, so an unreadable
file is found in minutes instead of when a batch reaches it hours into a run. ``.npz`` files are loaded and checked
as training loads them."""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config import DataConfig
from ..errors import ConfigError
from ..training.interrupt import ignore_interrupts
from .images import load_rgb, unreadable, usable_cpus

CHUNK = 16  # files per task sent to a worker process


@dataclass
class DataCheck:
    """What ``check_data`` found, per role (source, target, target_eval): its folder or file (``origins``) and how
    many image files, or samples of an ``.npz`` file, it holds (``files``, counted in ``units``); and the ``bad``
    image files as (path, reason), in file order."""

    files: dict[str, int] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # advice on the settings for this data (e.g. flips and glyphs)

    @property
    def ok(self) -> bool:
        return not self.bad

    def lines(self) -> list[str]:
        """A short report: one line per role, then every unreadable file with its reason."""
        out = [f"{role} {self.origins[role]}: {n} {self.units[role]} read" for role, n in self.files.items()]
        if self.bad:
            out.append(f"unreadable: {len(self.bad)} file(s)")
            out += [f"  {path}: {reason}" for path, reason in self.bad]
        else:
            out.append("every file is readable")
        return out + [f"note: {note}" for note in self.notes]


GLYPH_WORDS = ("digit", "letter", "char", "text", "numeral", "glyph", "symbol", "word")


def looks_handed(classes: list[str]) -> bool:
    """Whether class names suggest classes that a mirror image changes (digits, letters, text): every name one letter
    or digit, every name a number, or a name with a word such as "digit" or "letter" in it."""
    names = [c.strip() for c in classes]
    if not names:
        return False
    glyphs = all(len(n) == 1 and n.isalnum() for n in names) or all(n.isdigit() for n in names)
    words = {w for n in names for w in re.split(r"[^a-z]+", n.lower())}  # whole words: "charcoal" is no "char"
    return glyphs or any(w.rstrip("s") in GLYPH_WORDS for w in words)


def flip_note(classes: list[str], hflip: float) -> str | None:
    """Advice to turn horizontal flips off when the source's class names look like digits or letters, or None."""
    if not hflip or not looks_handed(classes):
        return None
    shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
    return (
        f"the source classes ({shown}) look like digits, letters or text, which a mirror image turns into other "
        f"shapes: training flips images horizontally (data.hflip={hflip:g}); set data.hflip=0 for them (keep it for "
        "plankton, cells and other objects whose mirror image is the same class)"
    )


def problem(path: str) -> str:
    """ "" when ``path`` decodes as training decodes it, else the reason it cannot be read (one line)."""
    try:
        load_rgb(path)
    except Exception as e:  # the decoder's failures, whatever they are, as training would meet them
        return unreadable(e)
    return ""


def problems(paths: list[str], workers: int | None = None) -> Iterator[str]:
    """``problem(path)`` for each of ``paths``, in order, decoded by ``workers`` processes (default: the CPUs this
    process may use; 1: in this process). Worker processes ignore Ctrl-C; the main process stops them."""
    if workers is not None and workers < 1:
        raise ConfigError(f"workers (--workers) must be at least 1, got {workers}")
    workers = workers or usable_cpus()
    if workers <= 1 or len(paths) <= 1:
        yield from map(problem, paths)
        return
    pool = concurrent.futures.ProcessPoolExecutor(workers, initializer=ignore_interrupts)
    try:
        yield from pool.map(problem, paths, chunksize=CHUNK)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _roles(cfg: DataConfig) -> list[tuple[str, str]]:
    """(role, path) of each file or folder ``cfg`` names, relative paths resolved against data.root."""
    from . import data_paths

    paths = data_paths(cfg)
    if not cfg.source:
        raise ConfigError("check-data reads files: give data.source and data.target (--source, --target)")
    if not cfg.target:
        raise ConfigError("data.target is required with data.source (the unlabeled target data)")
    return [(role, path) for role, path in zip(("source", "target", "target_eval"), paths, strict=True) if path]


def check_data(cfg: DataConfig, workers: int | None = None, progress: bool = False) -> DataCheck:
    """Read every file ``cfg`` names (data.source, data.target, data.target_eval): image folders and list files are
    listed as training lists them, then every image is decoded once (a file both roles name, once); ``.npz`` files
    are loaded. Raises ``DataError`` for what would stop a run before its first step (a missing folder, a list naming
    missing files, a damaged ``.npz``) and returns the unreadable images, which would stop it later."""
    from tqdm.auto import tqdm

    from . import _is_image_input, load_npz, read_images

    check = DataCheck()
    images: dict[str, None] = {}  # every image once, in order
    for role, path in _roles(cfg):
        check.origins[role] = path
        if _is_image_input(path):
            found = read_images(path, recursive=role == "target", root=cfg.root)  # as training reads it
            listed = found.paths
            images.update(dict.fromkeys(listed))
            if role == "source" and found.labels and (note := flip_note(sorted(set(found.labels)), cfg.hflip)):
                check.notes.append(note)
            check.files[role], check.units[role] = len(listed), "image file(s)"
        else:
            check.files[role], check.units[role] = len(load_npz(path)[0]), "sample(s)"
    paths = list(images)
    bar = tqdm(total=len(paths), disable=not progress or not paths, desc="decoding", unit="file", dynamic_ncols=True)
    with bar:
        for path, reason in zip(paths, problems(paths, workers), strict=True):
            bar.update(1)
            if reason:
                check.bad.append((path, reason))
    return check
