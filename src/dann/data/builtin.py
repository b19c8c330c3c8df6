"""Embedded demo tasks, built from data that ships inside installed packages (nothing is downloaded).

- ``moons``: the DANN paper's toy problem: two interleaving moons (source) and the same rotated by 35° (target).
- ``digits``: scikit-learn's handwritten digits upsampled to 28×28 RGB (source), and the MNIST-M recipe applied
  to the other half of the digits (target): per channel ``|patch − digit|`` with random crops of the colour photos
  that ship with scikit-learn.
"""

from __future__ import annotations

import math

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


def blend_with_photos(digits: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-M recipe: per channel ``|patch − digit|`` with a random crop of a natural colour photo per digit."""
    from sklearn.datasets import load_sample_images

    photos = [torch.tensor(p, dtype=torch.float32).permute(2, 0, 1) / 255.0 for p in load_sample_images().images]
    _, _, h, w = digits.shape
    out = torch.empty_like(digits)
    for i in range(len(digits)):
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(photo.shape[1] - h + 1), rng.integers(photo.shape[2] - w + 1)
        out[i] = (photo[:, top : top + h, left : left + w] - digits[i]).abs()
    return out


@TASKS.register()
def digits(seed: int = 0, val_fraction: float = 0.1) -> DomainData:
    """Source: half of scikit-learn's 1,797 digits; target: the other half in MNIST-M style. The unlabeled target
    images are also the ones scored (``target_eval``), the transductive protocol of the DANN paper's setting."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(bunch.target))
    half = len(perm) // 2
    x = digit_images(bunch.images)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    src, tgt = perm[:half], perm[half:]
    target = Domain(blend_with_photos(x[tgt], rng), y[tgt])
    return make_domain_data(Domain(x[src], y[src]), target, None, [str(i) for i in range(10)], val_fraction, seed)


def build_task(name: str, seed: int = 0, val_fraction: float = 0.1) -> DomainData:
    return TASKS.get(name)(seed=seed, val_fraction=val_fraction)
