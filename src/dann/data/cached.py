"""Reading image domains from the decoded-image cache (``cache.py``): the same files, order, labels and random
draws as the uncached pipeline, with the pixels sampled from the cached arrays a batch at a time.

Each sample's augmentation is drawn exactly as ``ImageDomain`` draws it: torch's CPU generator seeded with the
sample's seed, then the pipeline's own torchvision transforms draw their parameters in order (random resized crop
box in the original image's coordinates, flips, colour jitter). The crop box is then mapped onto the cached image
(squeezed to side × side, so the mapping is a per-axis scale) and the whole batch is sampled at once with
``torch.nn.functional.grid_sample`` (bilinear, one affine grid per image; a flip is the grid's sign). Evaluation
takes the box of the evaluation transform (shorter side resized to ``size / crop_pct``, centre crop), computed from
the original size. What differs from the uncached pipeline is only where the resampling happens (one shrink to the
cache, then a bilinear crop, instead of one antialiased crop from the full image): see ``docs/speed.md`` for the
measured pixel differences."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DataConfig
from ..errors import DataError, DataWarning
from .cache import CacheFolderError, DecodedImages, build, built, cache_settings, root_origin, wanted
from .images import ImageDomain, Sample
from .transforms import Augment, ImageConfig, ToNormalizedTensor, Transform, Unaugmented


class TransformError(DataError):
    """A pipeline step the cache cannot apply; ``data.cache: auto`` then reads the files instead."""


def resized_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], log_ratio: list[float]
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random resized crop of an image of that size, drawn from torch's CPU generator
    exactly as ``torchvision.transforms.v2.RandomResizedCrop.make_params`` (torchvision 0.19-0.29) draws it, the
    same random numbers in the same order, without its per-call input checks (a third of its time here):
    up to 10 tries of an area share in ``scale`` and a log-uniform aspect ratio in ``ratio``, else a centre crop.
    ``tests/test_cache.py`` checks that cached and uncached crops agree."""
    area = height * width
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = round(math.sqrt(target_area * aspect_ratio))
        h = round(math.sqrt(target_area / aspect_ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,)).item())
            left = int(torch.randint(0, width - w + 1, size=(1,)).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TensorTransform:
    """A pipeline transform (``transforms.train_transform`` or ``eval_transform``) applied to cached images: draws
    its parameters per sample from a seed, then samples a batch. Raises ``DataError`` for a transform step it does
    not know (the cache must not silently skip an augmentation)."""

    def __init__(self, transform: Transform | Augment | Unaugmented) -> None:
        from torchvision.transforms import v2

        self.steps: list[tuple[str, Any]] = []
        self.resize = self.center = self.size = 0
        self.scale = self.shift = None
        self.augment: Augment | None = None  # the training view: its parameters drawn as Augment draws them
        if isinstance(transform, Unaugmented):
            transform = transform.transform
        if isinstance(transform, Augment):
            self.augment, self.size = transform, transform.size[0]
            self.scale = torch.from_numpy(transform.normalize.scale).view(1, 3, 1, 1)
            self.shift = torch.from_numpy(transform.normalize.shift).view(1, 3, 1, 1)
            return
        for op in getattr(transform, "transforms", [transform]):
            if isinstance(op, v2.RandomResizedCrop):
                log_ratio = [float(r) for r in torch.log(torch.tensor(op.ratio))]  # as torchvision computes it
                self.steps.append(("crop", (tuple(op.scale), tuple(op.ratio), log_ratio)))
                self.size = op.size[0]
            elif isinstance(op, v2.Resize):
                self.resize = op.size[0]
            elif isinstance(op, v2.CenterCrop):
                self.center = self.size = op.size[0]
            elif isinstance(op, v2.RandomHorizontalFlip | v2.RandomVerticalFlip):
                self.steps.append(("hflip" if isinstance(op, v2.RandomHorizontalFlip) else "vflip", op.p))
            elif isinstance(op, v2.ColorJitter):
                self.steps.append(("jitter", op))
            elif isinstance(op, ToNormalizedTensor):
                self.scale = torch.from_numpy(op.scale).view(1, 3, 1, 1)
                self.shift = torch.from_numpy(op.shift).view(1, 3, 1, 1)
            else:
                raise TransformError(
                    f"data.cache cannot apply the image transform {type(op).__name__}; set data.cache=off"
                )
        if self.scale is None or not self.size:
            raise TransformError(
                "data.cache needs a transform that crops to one size and normalizes; set data.cache=off"
            )

    def eval_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(top, left, height, width) in original pixels of the evaluation crop: the shorter side resized to
        ``resize`` (the longer to ``int(resize × long / short)``, as torchvision does), then the centre square of
        side ``center``, whose offsets torchvision rounds (``int(round((side − center) / 2))``)."""
        short = min(height, width)
        new_h = self.resize if height == short else int(self.resize * height / short)
        new_w = self.resize if width == short else int(self.resize * width / short)
        top, left = round((new_h - self.center) / 2.0), round((new_w - self.center) / 2.0)
        sy, sx = height / new_h, width / new_w
        return top * sy, left * sx, self.center * sy, self.center * sx

    def draw(self, seed: int | None, height: int, width: int) -> tuple[tuple[float, ...], bool, bool, Any, bool]:
        """(crop box, horizontal flip, vertical flip, jitter parameters or None, inversion) of one sample of that
        original size; ``seed`` None: the deterministic evaluation view. Seeds torch's CPU generator (as
        ``ImageDomain``'s ``torch.manual_seed`` does): the caller saves and restores its state."""
        box = self.eval_box(height, width) if self.resize else (0.0, 0.0, float(height), float(width))
        hflip = vflip = invert = False
        jitter = None
        if seed is None:
            return box, hflip, vflip, jitter, invert
        if self.augment is not None:  # the draws of Augment.__call__, in its order, from the sample's own generator
            a, g = self.augment, torch.Generator().manual_seed(seed)
            box = a.crop_box(height, width, g)
            hflip = bool(a.hflip and torch.rand(1, generator=g).item() < a.hflip)
            vflip = bool(a.vflip and torch.rand(1, generator=g).item() < a.vflip)
            if a.jitter:
                order = torch.randperm(4, generator=g).tolist()
                lo, hi = max(0.0, 1.0 - a.jitter), 1.0 + a.jitter
                factors = [float(torch.empty(1).uniform_(lo, hi, generator=g).item()) for _ in range(3)]
                jitter = ("augment", (order, factors))
            invert = bool(a.invert and torch.rand(1, generator=g).item() < a.invert)
            return box, hflip, vflip, jitter, invert
        torch.default_generator.manual_seed(seed)
        for kind, op in self.steps:
            if kind == "crop":
                box = resized_crop_box(height, width, *op)
            elif kind == "jitter":
                jitter = (op, op.make_params([]))  # ColorJitter draws its factors whatever the image
            else:  # torchvision's random flips apply when torch.rand(1) < p
                flip = bool(torch.rand(1) < op)
                hflip, vflip = (flip, vflip) if kind == "hflip" else (hflip, flip)
        return box, hflip, vflip, jitter, invert

    def __call__(self, pixels: np.ndarray, sizes: np.ndarray, seeds: Sequence[int] | None) -> torch.Tensor:
        """Cached ``pixels`` (B, S, S, 3) uint8 of images of original ``sizes`` (B, 2) (height, width) → normalized
        (B, 3, size, size) float32."""
        n = len(pixels)
        # per image, the sampling grid's x and y: scale and offset of [-1, 1] (grid_sample's span of the outer pixel
        # edges, align_corners=False, in the original and the cached image alike, so the cache's side drops out)
        affine = np.zeros((n, 4), dtype=np.float32)
        jitters, inverted = [], []
        state = torch.default_generator.get_state()
        try:
            for k in range(n):
                height, width = int(sizes[k, 0]), int(sizes[k, 1])
                seed = None if seeds is None else seeds[k]
                (top, left, h, w), hflip, vflip, jitter, invert = self.draw(seed, height, width)
                if invert:
                    inverted.append(k)
                affine[k] = ((-w if hflip else w) / width, (2 * left + w) / width - 1,
                             (-h if vflip else h) / height, (2 * top + h) / height - 1)  # fmt: skip
                if jitter is not None:
                    jitters.append((k, jitter))
        finally:
            torch.default_generator.set_state(state)
        centres = (2 * np.arange(self.size, dtype=np.float32) + 1) / self.size - 1  # output pixels in [-1, 1]
        grid = np.empty((n, self.size, self.size, 2), dtype=np.float32)  # NumPy: no thread pool for small arrays
        grid[..., 0] = (affine[:, 0:1] * centres + affine[:, 1:2])[:, None, :]
        grid[..., 1] = (affine[:, 2:3] * centres + affine[:, 3:4])[:, :, None]
        x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float()
        out = F.grid_sample(x, torch.from_numpy(grid), mode="bilinear", padding_mode="border", align_corners=False)
        for k, (op, params) in jitters:
            if op == "augment":  # Augment's colour jitter: brightness, contrast, saturation in its drawn order
                from torchvision.transforms.v2 import functional as TF

                order, factors = params
                adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
                img = out[k] / 255.0
                for i in order:
                    if i < 3:
                        img = adjust[i](img, factors[i])
                out[k] = img.clamp(0, 1) * 255.0
            else:
                out[k] = op.transform(out[k] / 255.0, params).clamp(0, 1) * 255.0
        if inverted:  # after the jitter, as Augment does; resampling is linear, so it commutes with inversion
            out[inverted] = 255.0 - out[inverted]
        return out * self.scale + self.shift


class JoinedImages:
    """Several ``DecodedImages`` of one side read as one: row ``offsets[i] + r`` is row ``r`` of ``parts[i]`` (the
    pooled labeled domains of a run with several sources, each domain with its own cache)."""

    def __init__(self, parts: Sequence[DecodedImages]) -> None:
        self.parts = [q for p in parts for q in (p.parts if isinstance(p, JoinedImages) else [p])]
        self.side = self.parts[0].side
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.sizes = np.concatenate([p.sizes for p in self.parts])
        self.errors = {
            int(o) + k: e for o, p in zip(self.offsets, self.parts, strict=False) for k, e in p.errors.items()
        }

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Pixels (len(rows), side, side, 3) uint8 of these rows."""
        out = np.empty((len(rows), self.side, self.side, 3), dtype=np.uint8)
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        for i in np.unique(part):
            mine = part == i
            out[mine] = self.parts[i].take(rows[mine] - self.offsets[i])
        return out


class CachedImageDomain(ImageDomain):
    """The files of ``domain`` (an ``ImageDomain``) read from a ``DecodedImages`` cache (or several, joined): ``rows``
    (N,) are the cache rows of ``domain.paths``. Batches of the DataLoader are made at once (``__getitems__``)."""

    def __init__(self, domain: ImageDomain, images: DecodedImages | JoinedImages, rows: np.ndarray) -> None:
        super().__init__(domain.paths, domain.y, domain.pipeline, domain.name, domain.bad, domain.w, domain.d)
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)
        self.train_view, self.eval_view = TensorTransform(domain.pipeline.train), TensorTransform(domain.pipeline.eval)

    @property
    def caches(self) -> list[DecodedImages]:
        """The cache files this domain reads."""
        return self.images.parts if isinstance(self.images, JoinedImages) else [self.images]

    @staticmethod
    def join(parts: Sequence[ImageDomain], w: torch.Tensor | None, d: torch.Tensor) -> ImageDomain:
        """``ImageDomain.join`` of cached parts, reading their caches; if any part reads its files, all do."""
        files = ImageDomain.join(parts, w, d)
        if not all(isinstance(p, CachedImageDomain) for p in parts):
            return files
        cached: list[CachedImageDomain] = list(parts)  # type: ignore[arg-type]
        images = JoinedImages([p.images for p in cached])
        starts = np.cumsum([0] + [len(p.images) for p in cached])
        rows = np.concatenate([p.rows + start for p, start in zip(cached, starts, strict=False)])
        return CachedImageDomain(files, images, rows)

    def subset(self, idx: torch.Tensor) -> CachedImageDomain:
        return CachedImageDomain(super().subset(idx), self.images, self.rows[idx.numpy()])

    def unlabeled(self) -> CachedImageDomain:
        return CachedImageDomain(super().unlabeled(), self.images, self.rows)

    def __getitem__(self, item: int | tuple[int, int]) -> Sample:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: Sequence[int | tuple[int, int]]) -> list[Sample]:
        """The samples of a batch: indices, or (index, augmentation seed) pairs as ``StepSampler`` yields them."""
        index = [i[0] if isinstance(i, tuple) else i for i in items]
        seeds = [i[1] for i in items] if items and isinstance(items[0], tuple) else None
        rows = self.rows[index]
        good = [k for k, row in enumerate(rows.tolist()) if row not in self.images.errors]
        x = iter(())
        if good:
            view = self.train_view if seeds is not None else self.eval_view
            kept, kept_seeds = rows[good], [seeds[k] for k in good] if seeds else None
            x = iter(view(self.images.take(kept), self.images.sizes[kept], kept_seeds))
        out: list[Sample] = []
        for i, row in zip(index, rows.tolist(), strict=True):
            label = int(self.y[i]) if self.y is not None else -1
            error = self.images.errors.get(row, "")
            out.append((None, label, i, error) if error else (next(x), label, i, ""))
        return out


def with_cache(domains: list[ImageDomain | None], cfg: DataConfig, image: ImageConfig) -> list[ImageDomain | None]:
    """The domains, each read through its decoded-image cache where ``data.cache`` wants one (built on first use;
    under ``auto`` also wherever a whole cache already exists, e.g. one ``dann cache`` built). Under ``data.cache:
    on`` a pipeline step the cache cannot apply, or a cache folder that cannot be written, is an error; under
    ``auto``, a warning, and the files are read as they are."""
    side, resample, root = cache_settings(cfg, image)
    out: list[ImageDomain | None] = []
    for d in domains:
        if d is None:
            out.append(d)
            continue
        name = Path(d.name).stem
        images = None  # under auto, a whole cache built ahead is read even where auto would not build one
        if not wanted(cfg.cache, d.paths, side, root, d.name):
            images = built(d.paths, side, resample, root, name) if cfg.cache == "auto" else None
            if images is None:
                out.append(d)
                continue
        try:
            TensorTransform(d.pipeline.train), TensorTransform(d.pipeline.eval)
            images = images if images is not None else build(d.paths, side, resample, root, name)
        except DataError as e:
            if not isinstance(e, CacheFolderError | TransformError):
                raise
            where = f" (the folder comes from {root_origin(cfg.cache_dir)})" if isinstance(e, CacheFolderError) else ""
            if cfg.cache == "on":
                raise type(e)(f"{e}{where}") from None
            warnings.warn(f"{d.name}: {e}{where}; reading the files without the cache", DataWarning, stacklevel=3)
            out.append(d)
            continue
        out.append(CachedImageDomain(d, images, np.arange(len(d))))
    return out
