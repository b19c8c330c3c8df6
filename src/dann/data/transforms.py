"""Image files → network inputs. Sizes, normalization and interpolation come from the backbone's timm data config
(read from timm's registry, no model built and nothing downloaded) when it has one, else from ImageNet defaults;
``data.image_size`` overrides the size. Evaluation is deterministic (resize, centre crop); training adds the
augmentation of the ``data`` section (random resized crop, flips, colour jitter)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

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


class TrainTransform(Protocol):
    """Training view of an image: ``(RGB image, generator) -> (3, size, size)`` float32; every random number is drawn
    from ``generator``, never from torch's global generators."""

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor: ...


class Unaugmented:
    """The evaluation transform where a training transform is expected (``data.augment=false``): draws nothing."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        return self.transform(img)


class Augment:
    """Random resized crop (area share in ``crop_scale``, aspect ratio in [3/4, 4/3]), horizontal and vertical flips
    (probabilities ``hflip``, ``vflip``), colour jitter (brightness, contrast, saturation factors uniform in
    ``[max(0, 1 - j), 1 + j]``, applied in a random order), an intensity inversion (probability ``invert``: 255 - x
    per channel, for polarity shifts), then normalize.

    The operations are torchvision's (``transforms.v2.functional``); their random parameters are drawn from the
    generator passed with each image, in the order and with the formulas of torchvision's ``RandomResizedCrop``,
    ``RandomHorizontalFlip``, ``RandomVerticalFlip`` and ``ColorJitter`` (which would draw them from the global
    generator): the result equals those transforms run on a global generator seeded like ``generator``."""

    RATIO = (3.0 / 4.0, 4.0 / 3.0)

    def __init__(self, image: ImageConfig, data: DataConfig) -> None:
        from torchvision.transforms import v2

        self.size, self.scale = [image.size, image.size], tuple(data.crop_scale)
        self.mode = v2.InterpolationMode[image.interpolation.upper()]
        self.log_ratio = [float(r) for r in torch.log(torch.tensor(self.RATIO))]  # torchvision's float32 bounds
        self.hflip, self.vflip, self.jitter, self.invert = data.hflip, data.vflip, data.color_jitter, data.invert
        self.normalize = ToNormalizedTensor(image.mean, image.std)

    def crop_box(self, height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop: torchvision's ``RandomResizedCrop`` parameters, drawn from ``g``."""
        area, (lo, hi), u = height * width, self.log_ratio, torch.empty(1)  # u: one float32 draw at a time
        for _ in range(10):
            target_area = area * u.uniform_(*self.scale, generator=g).item()
            aspect = u.uniform_(lo, hi, generator=g).exp_().item()
            w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
                left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
                return top, left, h, w
        ratio = width / height  # ten misses: the central crop of the nearest allowed aspect ratio
        w = width if ratio <= max(self.RATIO) else round(height * max(self.RATIO))
        h = height if ratio >= min(self.RATIO) else round(width / min(self.RATIO))
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        width, height = img.size
        top, left, h, w = self.crop_box(height, width, generator)
        img = F.resized_crop(img, top, left, h, w, self.size, interpolation=self.mode, antialias=True)
        for p, flip in ((self.hflip, F.horizontal_flip), (self.vflip, F.vertical_flip)):
            if p and torch.rand(1, generator=generator).item() < p:
                img = flip(img)
        if self.jitter:
            order = torch.randperm(4, generator=generator).tolist()  # index 3, hue, is never jittered
            lo, hi = max(0.0, 1.0 - self.jitter), 1.0 + self.jitter
            factors = [float(torch.empty(1).uniform_(lo, hi, generator=generator).item()) for _ in range(3)]
            adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
            for i in order:
                if i < 3:
                    img = adjust[i](img, factors[i])
        if self.invert and torch.rand(1, generator=generator).item() < self.invert:
            img = F.invert(img)
        return self.normalize(img)


def train_transform(image: ImageConfig, data: DataConfig) -> TrainTransform:
    """``Augment`` per the ``data`` section; the evaluation transform when ``data.augment`` is false. Randomness comes
    from the generator the dataset passes, seeded per sample and step (see ``ImageDomain``), so batches are
    reproducible, resume exactly, and never move torch's global generators."""
    return Augment(image, data) if data.augment else Unaugmented(eval_transform(image))
