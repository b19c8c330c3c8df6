from . import (  # noqa: F401 -- registers
    cdan,
    clip_distill,
    coral,
    dann,
    fixmatch,
    iw,
    mcc,
    mdd,
    mean_teacher,
    mmd,
    regularizers,
    shot,
    source_only,
    vada,
)
from .base import METHODS, REGULARIZERS, Batch, LossOutput, Method, build_network, create_method

__all__ = ["METHODS", "REGULARIZERS", "Batch", "LossOutput", "Method", "build_network", "create_method"]
