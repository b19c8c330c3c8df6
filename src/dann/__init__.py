"""dann: unsupervised domain adaptation with Domain-Adversarial Neural Networks (Ganin et al., JMLR 2016)."""

from .api import FitResult, TrainedModel, build_report, compare, evaluate, fit, load_run, predict
from .config import Config, load_config
from .data import SOURCE, TARGET
from .errors import CheckpointError, ConfigError, DannError, DataError, OutputError, RunDirError, UnsafeFileError
from .methods import create_method
from .models import DomainAdaptNet, create_backbone, create_network, grad_reverse
from .sklearn import DANNClassifier

__version__ = "0.1.0"

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
    "OutputError",
    "RunDirError",
    "TrainedModel",
    "UnsafeFileError",
    "build_report",
    "compare",
    "create_backbone",
    "create_method",
    "create_network",
    "evaluate",
    "fit",
    "grad_reverse",
    "load_config",
    "load_run",
    "predict",
]
