"""CLIP's zero-shot classifier as a frozen teacher (Radford et al., "Learning Transferable Visual Models From Natural
Language Supervision", ICML 2021, Sec. 3.1.4): each class name is put into prompt templates ("a photo of a {}."),
the text tower embeds the prompts, and an image's class logits are

    t_k = normalize(mean_j normalize(text(template_j(class_k))))      (K, D), prompt ensembling, computed once
    z = exp(logit_scale) · normalize(image(x)) · tᵀ (+ logit_bias)     (N, K)

The model is OpenCLIP's (``open_clip``, its tokenizer vocabulary ships inside the package); weights come only from a
local checkpoint file (``method.clip_file``), never from a download. The teacher follows timm's contract:
``forward_features(x)`` → normalized image embeddings (N, D), ``forward_head(f)`` → logits (N, K), ``forward(x)``
both, so it predicts through the same code as a trained network."""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ..errors import ConfigError, DataWarning
from ..runs import load_state_file

if TYPE_CHECKING:
    from ..data.transforms import ImageConfig

# The prompts of CLIP's ImageNet prompt ensemble that describe a photograph of one object (the paper's notebook lists
# 80, several for drawings, tattoos or toys); method.clip_templates replaces them.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
)
TEACHER_SEED = 0  # a teacher without method.clip_file gets the same random weights in every process and on resume


def templates(cfg: MethodConfig) -> tuple[str, ...]:
    """``method.clip_templates``, or ``DEFAULT_TEMPLATES`` when it is empty."""
    return tuple(cfg.clip_templates) or DEFAULT_TEMPLATES


def check_class_names(classes: Sequence[str]) -> None:
    """Raises ``ConfigError`` when every class name is a number ("0", "1", ...: arrays given without names): the
    teacher's prompts need words."""
    if all(name.strip().lstrip("-").isdigit() for name in classes):
        shown = ", ".join(list(classes)[:5]) + (", ..." if len(classes) > 5 else "")
        raise ConfigError(
            f"the CLIP teacher (method clip_distill) builds its prompts from the class names, but the classes are "
            f"numbers ({shown}): name them (class subfolders or list-file labels such as 'diatom'; in a .npz file, "
            "an array 'classes' of names beside x and y; with arrays, labels y given as names, e.g. "
            "DANNClassifier.fit(X, y) with y = ['diatom', 'ciliate', ...])"
        )


class ZeroShotTeacher(nn.Module):
    """A frozen OpenCLIP model (``clip``, in eval mode, no parameter requires a gradient) and the prompts of
    ``classes``. Input images (N, C, H, W) come normalized as dann prepared them: ``(pixel - mean) / std`` with
    ``input_mean`` / ``input_std`` (a run's ``ImageConfig``), or, for arrays (None), intensities in [0, 1]; one
    channel is repeated to three. They are renormalized with CLIP's statistics and resized (bicubic, antialiased) to
    the tower's ``image_size`` where they differ. ``text_encodes`` counts the passes over the prompts (one)."""

    def __init__(
        self,
        clip: nn.Module,
        tokenizer: Any,
        classes: Sequence[str],
        prompts: Sequence[str],
        input_mean: Sequence[float] | None = None,
        input_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer, self.classes, self.prompts = tokenizer, list(classes), tuple(prompts)
        pre = getattr(clip.visual, "preprocess_cfg", {})
        size = getattr(clip.visual, "image_size", 224)
        self.image_size: tuple[int, int] = tuple(size) if isinstance(size, Sequence) else (size, size)  # type: ignore
        self.clip_mean: tuple[float, ...] = tuple(pre.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.clip_std: tuple[float, ...] = tuple(pre.get("std", (0.26862954, 0.26130258, 0.27577711)))
        # x_clip = x · a + b per channel: (x · std_in + mean_in − mean_clip) / std_clip
        mean_in = torch.tensor(input_mean if input_mean is not None else (0.0,) * 3)
        std_in = torch.tensor(input_std if input_std is not None else (1.0,) * 3)
        mean, std = torch.tensor(self.clip_mean), torch.tensor(self.clip_std)
        self.identity = bool(torch.equal(mean_in, mean) and torch.equal(std_in, std))
        self.register_buffer("scale", (std_in / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_in - mean) / std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("text", torch.empty(0), persistent=False)  # (K, D) once computed
        self.text_encodes = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train(self, mode: bool = True) -> ZeroShotTeacher:
        """Always eval mode: the teacher never trains (dropout off, fixed statistics)."""
        return super().train(False)

    @torch.no_grad()
    def text_embeddings(self) -> torch.Tensor:
        """(K, D) unit class embeddings: each class's prompts embedded, normalized, averaged, normalized again.
        Computed on the first call, then cached (``text_encodes`` stays 1)."""
        if self.text.numel() == 0:
            device = self.scale.device
            tokens = self.tokenizer([p.format(name) for name in self.classes for p in self.prompts]).to(device)
            with torch.autocast(device.type, enabled=False):
                t = F.normalize(self.clip.encode_text(tokens).float(), dim=-1)
            t = t.view(len(self.classes), len(self.prompts), -1).mean(1)
            self.text = F.normalize(t, dim=-1)
            self.text_encodes += 1
        return self.text

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) as dann prepared them → (N, 3, h, w) as CLIP's image tower expects them. Raises
        ``ConfigError`` for inputs of another shape (feature vectors, C not 1 or 3)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ConfigError(f"the CLIP teacher reads images of 1 or 3 channels, got inputs of shape {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if not self.identity:
            x = x * self.scale.to(x.dtype) + self.shift.to(x.dtype)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bicubic", align_corners=False, antialias=True)
        return x

    @torch.no_grad()
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) → unit image embeddings (N, D), float32."""
        return F.normalize(self.clip.encode_image(self.pixels(x)).float(), dim=-1)

    @torch.no_grad()
    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings (N, D) → zero-shot logits (N, K): CLIP's logit scale times the cosines."""
        logits = self.clip.logit_scale.exp().float() * f.float() @ self.text_embeddings().T
        bias = getattr(self.clip, "logit_bias", None)
        return logits + bias.float() if bias is not None else logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs a warning when it builds a model without pretrained weights: the weights come next, here."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def architecture(name: str) -> str:
    """The OpenCLIP model name of ``method.clip_model``: a name OpenCLIP knows, or a model config ``.json`` file
    (``{"embed_dim": ..., "vision_cfg": {...}, "text_cfg": {...}}``, registered under its file name's stem).
    Raises ``ConfigError`` for a missing file, a hub name or tokenizer (nothing is downloaded) or an unknown name."""
    import open_clip

    if name.endswith(".json"):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"method.clip_model {name} does not exist (an OpenCLIP model config .json file)")
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"method.clip_model {name} could not be read as JSON: {e}") from None
        if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(config):
            raise ConfigError(f"method.clip_model {name} is no OpenCLIP model config (embed_dim, vision_cfg, text_cfg)")
        open_clip.add_model_config(path)
        return path.stem
    if ":" in name:
        raise ConfigError(
            f"method.clip_model {name!r}: the teacher is built from a local file only; give the architecture's name "
            "(e.g. ViT-B-16) and its checkpoint as method.clip_file"
        )
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see open_clip.list_models())"
        raise ConfigError(f"unknown method.clip_model {name!r}{hint}")
    if (open_clip.get_model_config(name) or {}).get("text_cfg", {}).get("hf_tokenizer_name"):
        raise ConfigError(
            f"method.clip_model {name}: its tokenizer comes from the Hugging Face hub, which the teacher never "
            "downloads; pick a model with OpenCLIP's own tokenizer (ViT-B-32, ViT-B-16, ViT-L-14, RN50...)"
        )
    return name


def load_clip(cfg: MethodConfig) -> tuple[nn.Module, Any]:
    """The OpenCLIP model (CPU, float32) of ``method.clip_model`` with the weights of ``method.clip_file`` (random
    weights, seeded by ``TEACHER_SEED``, without one), and its tokenizer. Raises ``ConfigError`` naming the file when
    it is missing, damaged, of another format or of another architecture (``runs.load_state_file``), ``DannError``
    when the system refuses to read it, ``UnsafeFileError`` for pickled objects."""
    import open_clip

    name = architecture(cfg.clip_model)
    with _quiet_open_clip(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEACHER_SEED)
        model = open_clip.create_model(name, pretrained=None)
    if cfg.clip_file:
        path = Path(cfg.clip_file)
        # read it once ourselves: a file that is missing, unreadable, damaged, unsafe or of another format is named as
        # such; what open_clip then refuses is an intact file of another architecture
        load_state_file(path, "method.clip_file")
        try:
            open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
        except Exception as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
            detail = "; ".join(lines[1:3]) or lines[0]
            raise ConfigError(
                f"method.clip_file {cfg.clip_file} does not fit the teacher's architecture method.clip_model="
                f"{cfg.clip_model}: {detail[:300]}"
            ) from None
    return model, open_clip.get_tokenizer(name)


def build_teacher(cfg: MethodConfig, classes: Sequence[str], image: ImageConfig | None = None) -> ZeroShotTeacher:
    """The zero-shot teacher of ``cfg`` (``method.clip_model``, ``clip_file``, ``clip_templates``) for ``classes``,
    reading inputs prepared per ``image`` (a run's image-file preparation; None: arrays in [0, 1]). Raises
    ``ConfigError`` for class names that are numbers (``check_class_names``) and for a file at fault."""
    check_class_names(classes)
    model, tokenizer = load_clip(cfg)
    if not cfg.clip_file:
        warnings.warn(
            f"method.clip_file is empty: the CLIP teacher ({cfg.clip_model}) has random weights and its zero-shot "
            "predictions are noise; give the OpenCLIP checkpoint file (see docs/clip.md)",
            DataWarning,
            stacklevel=2,
        )
    mean, std = (image.mean, image.std) if image is not None else (None, None)
    return ZeroShotTeacher(model, tokenizer, classes, templates(cfg), mean, std)
