"""dann: unsupervised domain adaptation with Domain-Adversarial Neural Networks (Ganin et al., JMLR 2016)."""

from .api import FitResult, TrainedModel, build_report, compare, estimate_label_shift, evaluate, fit, load_run, predict
from .config import Config, load_config
from .data import SOURCE, TARGET
from .errors import CheckpointError, ConfigError, DannError, DataError, OutputError, RunDirError, UnsafeFileError
from .evaluation.label_shift import LabelShift
from .methods import create_method
from .models import DomainAdaptNet, create_backbone, create_network, grad_reverse
from .selection.tune import TuneResult, tune

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``dann.DANNClassifier`` is imported on first use: scikit-learn takes about a second to import, and the
    command line and the trainer do not need its estimator API."""
    if name == "DANNClassifier":
        from .sklearn import DANNClassifier

        return DANNClassifier
    raise AttributeError(f"module 'dann' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "DANNClassifier"])


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
