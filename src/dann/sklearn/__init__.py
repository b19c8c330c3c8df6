"""scikit-learn's manner for arrays in memory: ``DANNClassifier`` (``estimator.py``) and model selection without
target labels, ``make_validator_scorer`` and ``SourceKFold`` (``selection.py``)."""

from .estimator import EXPECTED_FAILED_CHECKS, UNLABELED, DANNClassifier
from .selection import SourceKFold, make_validator_scorer

__all__ = ["EXPECTED_FAILED_CHECKS", "UNLABELED", "DANNClassifier", "SourceKFold", "make_validator_scorer"]
