from . import dann, source_only  # noqa: F401 -- registers the methods
from .base import METHODS, Batch, LossOutput, Method, create_method

__all__ = ["METHODS", "Batch", "LossOutput", "Method", "create_method"]
