"""CLIP's zero-shot predictions on image files, with no training (``dann predict --zero-shot``)."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from .teacher import ZeroShotTeacher, build_teacher


def zero_shot_predict(
    cfg: Config,
    data_path: str | Path,
    out: str | Path,
    overwrite: bool = False,
    top_k: int = 3,
    skip_bad: bool | None = None,
) -> Path:
    """``dann.predict`` with CLIP's zero-shot classifier instead of a trained run: the teacher of ``cfg.method``
    (``clip_model``, ``clip_file``, ``clip_templates``), the classes of ``cfg.data.source`` (its class subfolders or
    list-file labels, in dann's order: sorted), images prepared as CLIP prepares them. Same CSV as ``dann.predict``.
    Raises ``ConfigError`` without ``data.source``."""
    from ..api import predict
    from ..data.folders import read_images
    from ..data.transforms import ImageConfig
    from ..evaluation.loading import TrainedModel

    if not cfg.data.source or not isinstance(cfg.data.source, str):
        raise ConfigError(
            "zero-shot prediction names the classes from data.source (--source): give one folder of class "
            "subfolders or one list file"
        )
    if str(data_path).endswith(".npz"):
        raise ConfigError(f"{data_path}: zero-shot prediction reads image files (a folder or a list file), not arrays")
    labels = read_images(cfg.data.source, root=cfg.data.root).labels or []
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise ConfigError(f"data.source {cfg.data.source}: zero-shot prediction needs 2 classes at least")
    teacher = build_teacher(cfg.method, classes, None)
    size = teacher.image_size[0]
    image = ImageConfig(size, teacher.clip_mean, teacher.clip_std, "bicubic", 1.0)  # CLIP's own preparation
    teacher = ZeroShotTeacher(teacher.clip, teacher.tokenizer, classes, teacher.prompts, image.mean, image.std)
    model = TrainedModel(cfg, teacher, classes, image.input_shape, 0, image=image)  # type: ignore[arg-type]
    return predict(model, data_path, out, overwrite=overwrite, top_k=top_k, skip_bad=skip_bad)
