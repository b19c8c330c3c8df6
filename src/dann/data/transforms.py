"""Image files → network inputs. Sizes, normalization and interpolation come from the backbone's timm data config
(read from timm's registry, no model built and nothing downloaded) when it has one, else from ImageNet defaults;
``data.image_size`` overrides the size. Evaluation is deterministic (resize, centre crop); training adds the
augmentation of the ``data`` section (random resized crop, flips, colour jitter)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig, ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")  # names of torchvision's InterpolationMode members

Transform = Callable[[Image.Image], torch.Tensor]


@dataclass(frozen=True)
class ImageConfig:
    """How an RGB image becomes a (3, size, size) float tensor. Saved in checkpoints, so ``predict`` prepares new
    images exactly as evaluation did during training."""

    size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"  # nearest | bilinear | bicubic
    crop_pct: float = 0.875  # evaluation: resize the shorter side to size / crop_pct, then centre-crop

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def timm_data_config(backbone: str) -> dict[str, Any] | None:
    """timm's data config (input_size, mean, std, interpolation, crop_pct) of a timm model name, or None for the
    registered small backbones, unknown names and timm models without a pretrained config."""
    from ..models.backbones import BACKBONES

    if backbone in BACKBONES:
        return None
    import timm
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    if not timm.is_model(backbone):
        return None
    pretrained = get_pretrained_cfg(backbone)
    return resolve_data_config(pretrained_cfg=pretrained.to_dict()) if pretrained is not None else None


def resolve_image_config(data: DataConfig, model: ModelConfig) -> ImageConfig:
    """How image files become inputs for ``model.backbone``: a timm model's pretrained data config (input_size, mean,
    std, interpolation, crop_pct) where it has one; for the registered small backbones their native size
    (``models.backbones.NATIVE_SIZE``: 28×28 for ``lenet``, ``lenet_conv``, ``mlp``, and so for ``auto``, which
    gives images ``lenet_conv``) with ImageNet statistics; else ImageNet defaults (224). ``data.image_size`` wins."""
    from ..models.backbones import NATIVE_SIZE
    from ..models.network import AUTO_IMAGE_BACKBONE

    backbone = AUTO_IMAGE_BACKBONE if model.backbone == "auto" else model.backbone
    timm_cfg = timm_data_config(backbone)
    base = ImageConfig(size=NATIVE_SIZE[backbone]) if backbone in NATIVE_SIZE else ImageConfig()
    if timm_cfg is not None:
        interpolation = timm_cfg["interpolation"] if timm_cfg["interpolation"] in INTERPOLATIONS else "bilinear"
        base = ImageConfig(
            size=int(timm_cfg["input_size"][-1]),
            mean=tuple(float(m) for m in timm_cfg["mean"]),
            std=tuple(float(s) for s in timm_cfg["std"]),
            interpolation=interpolation,
            crop_pct=float(timm_cfg["crop_pct"]),
        )
    if data.image_size:
        base = ImageConfig(data.image_size, base.mean, base.std, base.interpolation, base.crop_pct)
    return base


class ToNormalizedTensor:
    """RGB image (H, W) → (3, H, W) float32 tensor ``(x / 255 - mean) / std``, computed with NumPy. NumPy is single-
    threaded: when images are prepared in the training process (``data.num_workers=0``), torch's elementwise ops
    would start and wait on intra-op threads for every image, which costs 10-30× more on a busy 2-core machine."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        std_ = np.asarray(std, dtype=np.float32)
        self.scale = 1.0 / (255.0 * std_)
        self.shift = -np.asarray(mean, dtype=np.float32) / std_

    def __call__(self, img: Image.Image) -> torch.Tensor:
        a = np.asarray(img, dtype=np.float32) * self.scale + self.shift
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def _to_tensor(image: ImageConfig) -> list[Transform]:
    return [ToNormalizedTensor(image.mean, image.std)]


def eval_transform(image: ImageConfig) -> Transform:
    """Deterministic: resize the shorter side to ``floor(size / crop_pct)``, centre-crop ``size``, normalize."""
    from torchvision.transforms import v2  # here, not at import: it costs over a second, and arrays never need it

    mode = v2.InterpolationMode[image.interpolation.upper()]
    resize = v2.Resize(math.floor(image.size / image.crop_pct), interpolation=mode, antialias=True)
    return v2.Compose([resize, v2.CenterCrop(image.size), *_to_tensor(image)])


def train_transform(image: ImageConfig, data: DataConfig) -> Transform:
    """Random resized crop (area share in ``data.crop_scale``), flips, colour jitter, then normalize; the evaluation
    transform when ``data.augment`` is false. Randomness comes from torch's global generator, which the dataset
    seeds per sample and step (see ``ImageDomain``), so batches are reproducible and resume exactly."""
    if not data.augment:
        return eval_transform(image)
    from torchvision.transforms import v2

    mode = v2.InterpolationMode[image.interpolation.upper()]
    ops: list[Transform] = [
        v2.RandomResizedCrop(image.size, scale=tuple(data.crop_scale), interpolation=mode, antialias=True)
    ]
    if data.hflip:
        ops.append(v2.RandomHorizontalFlip(data.hflip))
    if data.vflip:
        ops.append(v2.RandomVerticalFlip(data.vflip))
    if data.color_jitter:
        ops.append(v2.ColorJitter(data.color_jitter, data.color_jitter, data.color_jitter))
    return v2.Compose([*ops, *_to_tensor(image)])
