"""CLIP in dann: OpenCLIP's zero-shot classifier as a frozen teacher (``teacher``), how well it does on the labeled
source (``check``) and what it predicts with no training (``predict``). The distillation term is
``dann.methods.clip_distill``; CLIP image towers as backbones are timm's (``vit_base_patch16_clip_224`` ...), through
``model.backbone``."""

from .check import TeacherCheck, check_teacher
from .predict import zero_shot_predict
from .teacher import DEFAULT_TEMPLATES, ZeroShotTeacher, build_teacher, check_class_names, load_clip

__all__ = [
    "DEFAULT_TEMPLATES",
    "TeacherCheck",
    "ZeroShotTeacher",
    "build_teacher",
    "check_class_names",
    "check_teacher",
    "load_clip",
    "zero_shot_predict",
]
