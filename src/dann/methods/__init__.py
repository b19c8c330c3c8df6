from . import cdan, coral, dann, fixmatch, mcc, mdd, mmd, regularizers, shot, source_only  # noqa: F401 -- registers
from .base import METHODS, REGULARIZERS, Batch, LossOutput, Method, build_network, create_method

__all__ = ["METHODS", "REGULARIZERS", "Batch", "LossOutput", "Method", "build_network", "create_method"]
