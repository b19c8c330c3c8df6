"""Image files decoded lazily, one at a time, in DataLoader workers: nothing is decoded when a dataset is built.

Every file becomes 8-bit RGB: grayscale, palette and CMYK images are converted; 16-bit and 32-bit grayscale are
scaled to 0..255 (16-bit: value / 257); transparent pixels are composited over black. Pillow's decompression-bomb
guard (``PIL.Image.MAX_IMAGE_PIXELS``) stays on. A file that cannot be read never raises inside a worker (a worker's
traceback would bury the path): its sample carries the error to the main process, which raises a ``DataError``
naming the file, or with ``data.skip_bad_images`` drops the sample and counts the file."""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..training.interrupt import ignore_interrupts
from .transforms import ImageConfig, TrainTransform, Transform

Sample = tuple[torch.Tensor | None, int, int, str]  # (image (3, H, W) or None, label or -1, index, error)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB. 16-bit (``I;16*``) is divided by 257; ``I`` likewise when it exceeds 255; ``F`` is
    taken as 0..1 when its maximum is at most 1, else as 0..255; alpha is composited over black."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0
        elif img.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path: str, draft: int = 0) -> Image.Image:
    """Decode ``path`` fully (truncated files fail here, not later) and convert it to RGB. With ``draft`` > 0 a JPEG
    is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both sides at least ``draft`` pixels
    (``Image.draft``: several times faster than a full decode); the size before that, (width, height), is then in
    the result's ``info["original_size"]``."""
    with Image.open(path) as img:
        size = img.size
        if draft:
            img.draft("RGB", (draft, draft))
        img.load()
        rgb = to_rgb(img)
    if draft:
        rgb.info["original_size"] = size
    return rgb


def unreadable(error: Exception) -> str:
    """Why a file could not be decoded, in one line."""
    if isinstance(error, Image.DecompressionBombError):
        return f"refused by Pillow's decompression-bomb guard ({error})"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or type(error).__name__
    return f"cannot read this image file ({reason})"


def decode(path: str, draft: int = 0) -> tuple[Image.Image | None, str]:
    """(RGB image, "") or (None, a one-line message naming the file and the reason); ``draft``: see ``load_rgb``."""
    try:
        return load_rgb(path, draft), ""
    except Exception as e:  # any decoder failure: truncated, corrupt, not an image, unreadable, too large
        return None, f"{path}: {unreadable(e)}"


SKIP_HINT = "set data.skip_bad_images=true to skip unreadable files, or list them all first with dann check-data"
CALL_SKIP_HINT = "pass `skip_bad=True` to skip unreadable files (`dann check-data` lists them all)"  # API calls


@dataclass(frozen=True)
class Pipeline:
    """What every image domain of one dataset shares: transforms, loader settings, the bad-file policy."""

    image: ImageConfig
    train: TrainTransform
    eval: Transform
    num_workers: int | None = 0  # None: auto, see default_workers
    pin_memory: bool = False
    persistent_workers: bool = False
    skip_bad: bool = False
    skip_hint: str = SKIP_HINT  # how the caller skips unreadable files, for the error that names one


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a container's CPU quota (cgroup v2)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def default_workers(requested: int | None, share: int = 1) -> int:
    """DataLoader workers per loader: ``data.num_workers`` when set, else (auto) this loader's share of the CPUs
    this process may use (``usable_cpus``): ``min(8, CPUs // (share × processes on this machine))``, at least 1.
    ``share`` is the number of loaders streaming at once (2 while training DANN: source and target); the
    processes on this machine are torchrun's ``LOCAL_WORLD_SIZE``. More workers than cores only makes them take
    turns with each other and the model."""
    if requested is not None:
        return requested
    return max(1, min(8, usable_cpus() // (share * local_processes())))


def local_processes() -> int:
    """The training processes on this machine: torchrun's ``LOCAL_WORLD_SIZE``, 1 without torchrun."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:
        return 1


class ImageDomain(Dataset):
    """Image files of one domain: ``paths`` (N) and labels ``y`` (N,) int64 or None, decoded on demand.

    ``self[i]`` is the evaluation view of file ``i``; ``self[(i, seed)]`` its training view, augmented with a
    ``torch.Generator`` of its own seeded by ``seed`` (the batch sampler derives it from the step), so an augmented
    batch is a pure function of (seed, step) whichever worker decodes it, and torch's global generators (CPU, CUDA)
    are neither read nor moved. Subsets share one set of skipped (bad) files."""

    def __init__(
        self,
        paths: Sequence[str],
        y: torch.Tensor | None,
        pipeline: Pipeline,
        name: str,
        bad: set[str] | None = None,
        w: torch.Tensor | None = None,
        d: torch.Tensor | None = None,
    ) -> None:
        self.paths, self.y, self.pipeline, self.name = list(paths), y, pipeline, name
        self.w, self.d = w, d  # per-sample weights and labeled-domain indices, as in ``Domain``
        self.bad = bad if bad is not None else set()
        self._loaders: dict[int, DataLoader] = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.pipeline.image.input_shape

    def subset(self, idx: torch.Tensor) -> ImageDomain:
        y, w, d = (v[idx] if v is not None else None for v in (self.y, self.w, self.d))
        return ImageDomain([self.paths[i] for i in idx.tolist()], y, self.pipeline, self.name, self.bad, w, d)

    def unlabeled(self) -> ImageDomain:
        """The files alone: no labels, weights or domain indices."""
        return ImageDomain(self.paths, None, self.pipeline, self.name, self.bad)

    @staticmethod
    def join(parts: Sequence[ImageDomain], w: torch.Tensor | None, d: torch.Tensor) -> ImageDomain:
        """The files of labeled ``parts`` (one pipeline) one after another, with their weights ``w`` and domain
        indices ``d`` (N,) (see ``dann.data.domains.pooled``)."""
        paths = [path for p in parts for path in p.paths]
        y = torch.cat([p.y for p in parts])  # type: ignore[misc]
        name = " + ".join(p.name for p in parts)
        bad = set().union(*(p.bad for p in parts))
        return ImageDomain(paths, y, parts[0].pipeline, name, bad, w, d)

    def __getitem__(self, item: int | tuple[int, int]) -> Sample:
        i, seed = item if isinstance(item, tuple) else (item, None)
        label = int(self.y[i]) if self.y is not None else -1
        img, error = decode(self.paths[i])
        if img is None:
            return None, label, i, error
        if seed is None:
            return self.pipeline.eval(img), label, i, ""
        return self.pipeline.train(img, torch.Generator().manual_seed(seed)), label, i, ""  # global RNGs untouched

    def __getstate__(self) -> dict[str, Any]:  # workers get the data, not the main process's loaders
        return {k: v for k, v in self.__dict__.items() if k != "_loaders"} | {"_loaders": {}}

    def loader(self, pin_memory: bool, persistent: bool = False, share: int = 1, **kwargs: Any) -> DataLoader:
        """A DataLoader over this domain; ``share``: how many loaders stream at once (see ``default_workers``).

        It has a generator of its own: each iterator a DataLoader starts draws its workers' base seed from it, which
        would otherwise be a draw from the global generator, so that building the training streams on resume, or an
        evaluation pass, would move the random stream training draws from (dropout) and break exact resume."""
        p = self.pipeline
        workers = default_workers(p.num_workers, share)
        if workers:
            # Workers are forked copies of this process. Uncollected garbage they inherit (e.g. an old loader's
            # iterator in a reference cycle) would be collected in the worker, whose __del__ then fails noisily
            # ("can only test a child process"): collect it here, just before the workers start.
            gc.collect()
        return DataLoader(
            self,
            num_workers=workers,
            worker_init_fn=ignore_interrupts if workers else None,  # Ctrl-C is the main process's to handle
            pin_memory=pin_memory and p.pin_memory,
            persistent_workers=persistent and workers > 0,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(0),  # workers seed their own global generators from it
            **kwargs,
        )

    def check(self, bad: list[tuple[int, str]]) -> None:
        """Raise for the first unreadable file of a batch, or with ``skip_bad`` remember them all."""
        if bad and not self.pipeline.skip_bad:
            raise DataError(f"{bad[0][1]}; {self.pipeline.skip_hint}")
        self.bad.update(self.paths[i] for i, _ in bad)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Evaluation batches in file order: (x (B, 3, H, W), indices (B,)); unreadable files are left out (with
        ``skip_bad``), so ``indices`` says which files the rows are, and a batch of only unreadable files is not
        yielded at all. The loader (and its workers) is kept."""
        if batch_size not in self._loaders:
            pin = torch.cuda.is_available()
            self._loaders[batch_size] = self.loader(pin, self.pipeline.persistent_workers, batch_size=batch_size)
        for x, _, idx, bad in self._loaders[batch_size]:
            self.check(bad)
            if len(idx):
                yield x, idx


def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Samples → (x (B, 3, H, W), y (B,), indices (B,), [(index, error) of unreadable files]) with B the readable
    ones; x is (0,) when none is readable."""
    good = [s for s in samples if s[0] is not None]
    x = torch.stack([s[0] for s in good]) if good else torch.empty(0)  # type: ignore[misc]
    y = torch.tensor([s[1] for s in good], dtype=torch.int64)
    index = torch.tensor([s[2] for s in good], dtype=torch.int64)
    return x, y, index, [(s[2], s[3]) for s in samples if s[0] is None]
