"""Embedded tasks, built from data that ships inside installed packages (nothing is downloaded). Each is a different
kind of shift; together they are the suite that the recommended recipe is chosen on (``benchmarks/suite.py``).

- ``moons``: the DANN paper's toy problem: two interleaving moons (source) and the same rotated by 35° (target).
- ``digits``: scikit-learn's handwritten digits upsampled to 28×28 RGB (source), and the MNIST-M recipe applied
  to the other half of the digits (target): per channel ``|patch − digit|`` with random crops of the colour photos
  that ship with scikit-learn.
- ``digits_scanner``: the same source; the target digits as a second scanner would record them: thicker strokes,
  half the resolution, blur, and lower contrast on a grey background.
- ``digits_inverted``: the same source; the target digits in inverted polarity (dark strokes on a light ground)
  with a random colour tint per image.
- ``digits_gradual``: a gradual shift over three domains: the same source, a few labeled ``mid`` digits per class
  over faint photo patches (an instrument nearer the target, ``data.intermediate``), and the MNIST-M-style target.
- ``digits_label_shift``: ``digits`` with a label shift on top: the target keeps a share of each class falling
  geometrically from all to a tenth (a 10:1 ratio between its commonest and rarest class, in a random class order),
  as a new sea holds the same species in other proportions.
- ``cancer``: scikit-learn's breast-cancer table (30 measurements of cell nuclei, benign vs malignant), split by
  sample selection on one feature (covariate shift: the source favours high mean texture, the target low), with
  the target's size measurements read 30 % larger, as by a differently calibrated instrument.

In every task the unlabeled target samples are also the ones scored (``target_eval``), the transductive protocol
of the DANN paper; target labels are used for that score only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..registry import Registry
from .domains import Domain, DomainData, make_domain_data

TASKS: Registry = Registry("embedded task")


def rotate(points: np.ndarray, degrees: float, center: np.ndarray) -> np.ndarray:
    """Rotate (N, 2) points counter-clockwise about ``center``."""
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (points - center) @ rot.T + center


MOONS_CENTER = np.array([0.5, 0.25])  # centre of sklearn's two moons


@TASKS.register()
def moons(
    seed: int = 0, val_fraction: float = 0.1, n: int = 600, angle: float = 35.0, noise: float = 0.1
) -> DomainData:
    """Source: ``n`` labeled moons; target: ``n`` unlabeled moons rotated by ``angle`` degrees; target_eval: a fresh
    labeled draw of ``4 n`` rotated moons (held out from training)."""
    from sklearn.datasets import make_moons

    def draw(count: int, offset: int, degrees: float) -> Domain:
        x, y = make_moons(count, noise=noise, random_state=seed * 10 + offset)
        x = rotate(x, degrees, MOONS_CENTER)
        return Domain(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64))

    return make_domain_data(draw(n, 0, 0.0), draw(n, 1, angle), draw(4 * n, 2, angle), ["0", "1"], val_fraction, seed)


def digit_images(images: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) digits with values 0..16 → (N, 3, 28, 28) in [0, 1]: upsampled to 20×20 and centred like MNIST."""
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False).clamp(0, 1)
    return F.pad(x, (4, 4, 4, 4)).expand(-1, 3, -1, -1).contiguous()


def blend_with_photos(digits: torch.Tensor, rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    """MNIST-M recipe: per channel ``|s · patch − digit|`` with a random crop of a natural colour photo per digit;
    ``s = strength`` scales the photo: 1 is the recipe, smaller values a fainter background (0: the digits)."""
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(p, dtype=torch.float32).permute(2, 0, 1) / 255.0 for p in load_sample_images().images]
    _, _, h, w = digits.shape
    out = torch.empty_like(digits)
    for i in range(len(digits)):
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(photo.shape[1] - h + 1), rng.integers(photo.shape[2] - w + 1)
        patch = photo[:, top : top + h, left : left + w]
        out[i] = ((patch if strength == 1.0 else strength * patch) - digits[i]).abs()
    return out


@TASKS.register()
def digits(seed: int = 0, val_fraction: float = 0.1) -> DomainData:
    """Source: half of scikit-learn's 1,797 digits; target: the other half in MNIST-M style. The unlabeled target
    images are also the ones scored (``target_eval``), the transductive protocol of the DANN paper's setting."""
    return _digit_task(seed, val_fraction, blend_with_photos)


Shift = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]  # target digits (N, 3, H, W) → shifted


def _digit_split(seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.random.Generator]:
    """Scikit-learn's digits as (N, 3, 28, 28) images and labels, and a seeded half/half split of their indices."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(bunch.target))
    half = len(perm) // 2
    return digit_images(bunch.images), torch.tensor(bunch.target, dtype=torch.int64), perm[:half], perm[half:], rng


def _digit_task(seed: int, val_fraction: float, shift: Shift) -> DomainData:
    x, y, src, tgt, rng = _digit_split(seed)
    target = Domain(shift(x[tgt], rng), y[tgt])
    return make_domain_data(Domain(x[src], y[src]), target, None, [str(i) for i in range(10)], val_fraction, seed)


def second_scanner(digits: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(N, 3, H, W) digits in [0, 1] as another scanner records them: strokes dilated by one pixel, sampled at half
    the resolution and back, a 3×3 Gaussian blur (σ = 1), and contrast cut to [0.25, 0.75]."""
    h, w = digits.shape[2:]
    thick = F.max_pool2d(digits, 3, stride=1, padding=1)
    coarse = F.interpolate(F.avg_pool2d(thick, 2), size=(h, w), mode="nearest")
    k = torch.tensor([0.27901, 0.44198, 0.27901])  # normalized Gaussian, σ = 1
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(coarse, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return 0.25 + 0.5 * blurred.clamp(0, 1)


def inverted_tint(digits: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(N, 3, H, W) digits in [0, 1] → ``(1 − x) · tint`` with a random RGB tint in [0.3, 1] per image."""
    tint = torch.tensor(rng.uniform(0.3, 1.0, size=(len(digits), 3, 1, 1)), dtype=digits.dtype)
    return (1 - digits) * tint


@TASKS.register()
def digits_scanner(seed: int = 0, val_fraction: float = 0.1) -> DomainData:
    """Source: half of scikit-learn's digits (as in ``digits``); target: the other half through ``second_scanner``."""
    return _digit_task(seed, val_fraction, second_scanner)


@TASKS.register()
def digits_inverted(seed: int = 0, val_fraction: float = 0.1) -> DomainData:
    """Source: half of scikit-learn's digits (as in ``digits``); target: the other half through ``inverted_tint``."""
    return _digit_task(seed, val_fraction, inverted_tint)


LABEL_SHIFT_RATIO = 10.0  # digits_label_shift: the commonest target class over the rarest


@TASKS.register()
def digits_label_shift(seed: int = 0, val_fraction: float = 0.1, ratio: float = LABEL_SHIFT_RATIO) -> DomainData:
    """``digits`` with the target's class proportions skewed: after the MNIST-M-style shift the target keeps a share
    ``ratio ** (−r / 9)`` of class ``c``'s images, ``r`` its rank in a seeded random order of the ten classes, so the
    commonest keeps all of them and the rarest a ``1 / ratio`` share (about 370 of the 899 target digits at 10:1).
    The source is ``digits``' own (balanced); only the target's proportions, and the MNIST-M look, change."""
    x, y, src, tgt, rng = _digit_split(seed)
    target = Domain(blend_with_photos(x[tgt], rng), y[tgt])
    labels, rank = target.y.numpy(), rng.permutation(10)
    keep = np.concatenate(
        [np.flatnonzero(labels == c)[: max(1, round(np.sum(labels == c) * ratio ** (-rank[c] / 9)))] for c in range(10)]
    )
    shifted = target.subset(torch.tensor(np.sort(keep)))
    return make_domain_data(Domain(x[src], y[src]), shifted, None, [str(i) for i in range(10)], val_fraction, seed)


MID_PER_CLASS = 5  # digits_gradual: labeled mid digits per class
MID_STRENGTH = 0.4  # digits_gradual: the mid digits' photo strength (the target's is 1)


@TASKS.register()
def digits_gradual(
    seed: int = 0, val_fraction: float = 0.1, per_class: int = MID_PER_CLASS, mid_strength: float = MID_STRENGTH
) -> DomainData:
    """A gradual shift over three domains. Source: half of scikit-learn's digits (as in ``digits``); ``mid``, an
    intermediate labeled domain: ``per_class`` digits of each class from the other half, over photo patches at
    ``mid_strength`` (``blend_with_photos``: a lightly shifted instrument, a few annotated images); target: the rest
    of that half at full strength (MNIST-M style, as in ``digits``), unlabeled and also the images scored."""
    x, y, src, tgt, rng = _digit_split(seed)
    labels = y[tgt].numpy()
    mid = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    rest = np.setdiff1d(np.arange(len(tgt)), mid)
    mid_idx, target_idx = tgt[np.sort(mid)], tgt[rest]
    labeled = {
        "source": Domain(x[src], y[src]),
        "mid": Domain(blend_with_photos(x[mid_idx], rng, mid_strength), y[mid_idx]),
    }
    target = Domain(blend_with_photos(x[target_idx], rng), y[target_idx])
    classes = [str(i) for i in range(10)]
    return make_domain_data(labeled, target, None, classes, val_fraction, seed, intermediate=("mid",))


SIZE_FEATURES = [0, 2, 3, 10, 12, 13, 20, 22, 23]  # radius, perimeter and area: mean, error and worst


@TASKS.register()
def cancer(seed: int = 0, val_fraction: float = 0.1) -> DomainData:
    """Scikit-learn's breast-cancer table (569 samples, 30 features, classes malignant / benign). A sample joins the
    source with probability sigmoid(3 z), z the standardized "mean texture" (feature 1), else the target: a covariate
    shift by sample selection. The target's size features (``SIZE_FEATURES``) are then multiplied by 1.3, a
    miscalibrated instrument. Features are standardized with the source's mean and standard deviation only."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x, y = bunch.data.astype(np.float64), bunch.target
    z = (x[:, 1] - np.median(x[:, 1])) / x[:, 1].std()
    src = np.random.default_rng(seed).random(len(z)) < 1 / (1 + np.exp(-3 * z))
    x_t = x[~src].copy()
    x_t[:, SIZE_FEATURES] *= 1.3
    mean, std = x[src].mean(0), x[src].std(0)

    def domain(features: np.ndarray, labels: np.ndarray) -> Domain:
        scaled = torch.tensor((features - mean) / std, dtype=torch.float32)
        return Domain(scaled, torch.tensor(labels, dtype=torch.int64))

    return make_domain_data(
        domain(x[src], y[src]), domain(x_t, y[~src]), None, [str(c) for c in bunch.target_names], val_fraction, seed
    )


def build_task(name: str, seed: int = 0, val_fraction: float = 0.1) -> DomainData:
    return TASKS.get(name)(seed=seed, val_fraction=val_fraction)
