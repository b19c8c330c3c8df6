"""dann: unsupervised domain adaptation with Domain-Adversarial Neural Networks (Ganin et al., JMLR 2016)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .config import Config, load_config
from .errors import CheckpointError, ConfigError, DannError, DataError, OutputError, RunDirError, UnsafeFileError

if TYPE_CHECKING:  # imported on first use, by __getattr__ below; listed here for readers and static analysis
    from .api import (
        FitResult,
        TrainedModel,
        build_report,
        compare,
        estimate_label_shift,
        evaluate,
        fit,
        load_run,
        predict,
    )
    from .data import SOURCE, TARGET
    from .evaluation.label_shift import LabelShift
    from .models import DomainAdaptNet, create_backbone, grad_reverse
    from .plan import create_method, create_network
    from .selection.tune import TuneResult, tune

__version__ = "0.1.0"

# module → its public names, imported on first use: these modules import torch (.sklearn scikit-learn too), which
# takes seconds, and `import dann` (the command line's --help, for one) must not wait for it
_LAZY = {
    ".api": (
        "FitResult",
        "TrainedModel",
        "build_report",
        "compare",
        "estimate_label_shift",
        "evaluate",
        "fit",
        "load_run",
        "predict",
    ),
    ".data": ("SOURCE", "TARGET"),
    ".evaluation.label_shift": ("LabelShift",),
    ".models": ("DomainAdaptNet", "create_backbone", "grad_reverse"),
    ".plan": ("create_method", "create_network"),
    ".selection.tune": ("TuneResult", "tune"),
    ".sklearn": ("DANNClassifier",),
}
_ORIGIN = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> object:
    """A public name of ``_LAZY``, imported on first use (torch takes seconds to import; scikit-learn, for
    ``DANNClassifier``, one more), or a submodule, as ``dann.methods`` after a plain ``import dann``."""
    if name in _ORIGIN:
        value = getattr(importlib.import_module(_ORIGIN[name], __name__), name)
        globals()[name] = value  # found directly from now on
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_ORIGIN])


__all__ = [
    "SOURCE",
    "TARGET",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DANNClassifier",
    "DannError",
    "DataError",
    "DomainAdaptNet",
    "FitResult",
    "LabelShift",
    "OutputError",
    "RunDirError",
    "TrainedModel",
    "TuneResult",
    "UnsafeFileError",
    "build_report",
    "compare",
    "create_backbone",
    "create_method",
    "create_network",
    "estimate_label_shift",
    "evaluate",
    "fit",
    "grad_reverse",
    "load_config",
    "load_run",
    "predict",
    "tune",
]
