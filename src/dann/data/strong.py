"""Strong augmentation of tensors on their device, for self-training's consistency term (``fixmatch``).

FixMatch (Sohn et al., NeurIPS 2020) trains the prediction on a strongly distorted view to match the pseudo-label of
a weakly augmented one; its strong view is RandAugment + Cutout on PIL images. This is the tensor counterpart, so
arrays in memory and decoded image batches both get it without leaving the device. Every operation is relative to
each image's own statistics, so it works on [0, 1] pixels and on mean/std-normalized inputs alike:

- images (N, C, H, W): contrast (× U[0.5, 1.5] about the image mean), brightness (± 0.3 image std), per-channel gain
  (× U[0.7, 1.3] about the channel mean), polarity inversion about the mean (p = 0.25), a random affine map
  (rotation ± 15°, scale 0.85–1.15, shift ± 10 %), then Cutout (a square of side H/4 set to the image mean);
- feature vectors (N, D): Gaussian noise of 0.2 × each feature's batch standard deviation (label-preserving noise
  only: setting features to their batch mean moves low-dimensional samples across the class boundary).

Random numbers come from torch's global generator of the tensor's device, which the trainer seeds and checkpoints,
so a resumed run draws the same views. ``self_ensembling_augment`` is the milder pair of views that ``mean_teacher``
gives its student and its teacher."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, device: torch.device, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, device=device) * (hi - lo) + lo


def _affine(x: torch.Tensor) -> torch.Tensor:
    n, dev = len(x), x.device
    angle = _uniform(n, -15, 15, dev) * math.pi / 180
    scale = _uniform(n, 0.85, 1.15, dev)
    shift = _uniform(n, -0.2, 0.2, dev, 2)  # ± 10 % of the side: affine_grid coordinates span [−1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def _cutout(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    side = max(1, h // 4)
    top = (torch.rand(n, device=x.device) * (h - side + 1)).long().view(n, 1, 1, 1)
    left = (torch.rand(n, device=x.device) * (w - side + 1)).long().view(n, 1, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return torch.where(inside, mean, x)


def _images(x: torch.Tensor) -> torch.Tensor:
    n, c, dev = len(x), x.shape[1], x.device
    mean, std = x.mean((1, 2, 3), keepdim=True), x.std((1, 2, 3), keepdim=True)
    channel_mean = x.mean((2, 3), keepdim=True)
    contrast, brightness = _uniform(n, 0.5, 1.5, dev, 1, 1, 1), _uniform(n, -0.3, 0.3, dev, 1, 1, 1)
    gain = _uniform(n, 0.7, 1.3, dev, c, 1, 1)
    sign = torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.25, -1.0, 1.0).to(x.dtype)  # −1: inverted
    # contrast about the mean, brightness, then gain about each channel's mean, composed into one a·x + b per
    # image and channel; inversion about the mean maps a·x + b to 2·mean − (a·x + b)
    scale = gain * contrast
    shift = (1 - contrast) * mean + brightness * std + (1 - gain) * contrast * channel_mean
    x = torch.addcmul(sign * shift + (1 - sign) * mean, x, sign * scale)
    return _cutout(_affine(x), mean)


def _vectors(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    std = flat.std(0, keepdim=True).nan_to_num(0.0)
    return (flat + 0.2 * std * torch.randn_like(flat)).view_as(x)


def strong_augment(x: torch.Tensor) -> torch.Tensor:
    """A strongly distorted view of a batch: images (N, C, H, W) or feature vectors (N, ...); same shape and dtype."""
    with torch.no_grad():
        return _images(x) if x.ndim == 4 else _vectors(x)


def _self_ensembling_images(x: torch.Tensor, intensity: bool) -> torch.Tensor:
    n, dev, (h, w) = len(x), x.device, x.shape[2:]
    mean, std = x.mean((1, 2, 3), keepdim=True), x.std((1, 2, 3), keepdim=True).nan_to_num(0.0)
    if intensity:  # flip, scale about the image mean, offset in image stds: the paper's on standardised images
        flip = torch.where(torch.rand(n, 1, 1, 1, device=dev) < 0.5, -1.0, 1.0)
        scale, offset = _uniform(n, 0.25, 1.5, dev, 1, 1, 1), _uniform(n, -0.5, 0.5, dev, 1, 1, 1)
        x = mean + (flip * scale).to(x.dtype) * (x - mean) + (offset * std).to(x.dtype)
    a = torch.eye(2, device=dev) + 0.1 * torch.randn(n, 2, 2, device=dev)  # acts on pixel coordinates
    shift = _uniform(n, -2.0, 2.0, dev, 2)  # pixels
    size = torch.tensor([w, h], device=dev, dtype=a.dtype)  # affine_grid's coordinates: x_n = 2 x_px / size
    a = a * size.view(1, 1, 2) / size.view(1, 2, 1)
    theta = torch.cat([a, (2 * shift / size).unsqueeze(2)], 2)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return x + 0.1 * std * torch.randn_like(x)


def self_ensembling_augment(x: torch.Tensor, intensity: bool = False) -> torch.Tensor:
    """One randomly augmented view of a batch, as self-ensembling draws it for the student and the teacher (French,
    Mackiewicz, Fisher, ICLR 2018; Britefury/self-ensemble-visual-domain-adapt, ``augmentation.py``).

    - images (N, C, H, W): an affine map about the centre, its 2x2 matrix I + N(0, 0.1) per entry, translated by
      U[−2, 2] pixels on each axis (edges repeated), then Gaussian noise of 0.1 × the image's standard deviation;
      with ``intensity`` first a random intensity flip (p = 0.5), scale U[0.25, 1.5] about the image mean and offset
      U[−0.5, 0.5] image stds (for polarity and colour shifts, MNIST ↔ SVHN). On per-image standardised inputs
      (mean 0, std 1) these are the paper's absolute values;
    - feature vectors (N, ...): Gaussian noise of 0.1 × each feature's batch standard deviation.

    Same shape and dtype; random numbers from torch's global generator of ``x``'s device."""
    with torch.no_grad():
        if x.ndim == 4:
            return _self_ensembling_images(x, intensity)
        flat = x.flatten(1)
        return (flat + 0.1 * flat.std(0, keepdim=True).nan_to_num(0.0) * torch.randn_like(flat)).view_as(x)
