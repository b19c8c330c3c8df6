"""dann: unsupervised domain adaptation with Domain-Adversarial Neural Networks (Ganin et al., JMLR 2016)."""

from .api import FitResult, TrainedModel, build_report, compare, evaluate, fit, load_run, predict
from .config import Config, load_config
from .data import SOURCE, TARGET
from .errors import ConfigError, DannError, DataError, RunDirError
from .methods import create_method
from .models import DomainAdaptNet, create_backbone, create_network, grad_reverse
from .sklearn import DANNClassifier

__version__ = "0.1.0"

__all__ = [
    "SOURCE",
    "TARGET",
    "Config",
    "ConfigError",
    "DANNClassifier",
    "DannError",
    "DataError",
    "DomainAdaptNet",
    "FitResult",
    "RunDirError",
    "TrainedModel",
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
