"""``DANNClassifier``: the scikit-learn manner for arrays in memory, on the same trainer as the CLI.

The unlabeled target rows can be given three equivalent ways (target labels are never taken):

- ``fit(X_source, y_source, X_target=X_t)``;
- ``fit(X, y)`` where rows labeled ``-1`` are the unlabeled target (scikit-learn's semi-supervised convention, as in
  ``SelfTrainingClassifier``; string labels mark them with ``-1`` or ``"-1"`` in an object array), so a ``Pipeline``
  adapts with no extra fit parameters;
- ``fit(X, y, sample_domain=d)`` (skada's convention): ``d > 0`` source rows, ``d < 0`` target rows, whose labels
  are ignored (skada masks them with ``-1``).

Several labeled domains are several positive ``sample_domain`` values, with any of the three: the rows of ``X`` each
carry theirs (with ``X_target``, ``sample_domain`` covers the rows of ``X`` alone). ``sample_weight`` weighs the
labeled rows in the classification loss.

Without target rows the source-only model is trained, with a ``DataWarning``. Model selection without target labels:
``make_validator_scorer`` and ``SourceKFold`` (in ``dann.sklearn.selection``, re-exported by ``dann.sklearn``).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import Tags, TransformerTags, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..config import RECOMMENDED, SEED_LIMIT, SELECTION, Config, load_config, replace
from ..data.arrays import as_domain
from ..data.domains import Domain, hold_out_target, make_domain_data
from ..data.rows import UNLABELED, target_rows
from ..data.weights import as_weights
from ..errors import ConfigError, DataError, DataWarning
from ..evaluation.metrics import embed
from ..plan import reads_target

__all__ = ["EXPECTED_FAILED_CHECKS", "UNLABELED", "DANNClassifier"]

# config keys that have their own parameter: ``config`` may not set them (two places for one value)
PARAMETER_KEYS = {
    "model.backbone": "backbone",
    "method.name": "method",
    "method.lambda_adv": "lambda_adv",
    "optim.lr": "lr",
    "train.steps": "max_steps",
    "train.batch_size": "batch_size",
    "train.seed": "random_state",
    "train.device": "device",
    "train.progress": "verbose",
}

SELECTION_HELD_OUT = 0.1  # the source rows held out when the default selects (dann train's data.val_fraction)
NO_ADAPTATION = (
    "no unlabeled target rows (y == -1, sample_domain < 0 or X_target): trained the source-only model, "
    "no adaptation happened"
)


def _plain(value: Any) -> Any:
    """NumPy scalars (as parameter grids give them) → Python values, which the typed config accepts."""
    return value.item() if isinstance(value, np.generic) else value


class DANNClassifier(ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Domain-adversarial classifier for X of shape (N, D) or (N, C, H, W) (uint8 images are scaled to [0, 1]).

    Parameters mirror the config keys most often changed, with the CLI's defaults; ``config`` takes any other
    ``section.key`` value (e.g. ``{"model.bottleneck_dim": 256}``). Two defaults differ from ``dann train``: every
    labeled row trains (``data.val_fraction=0``) and the one evaluation is at the end. ``method="source_only"`` gives
    the control; ``verbose=True`` shows the progress bar. ``random_state``: an int is ``train.seed``.

    Fitted: ``classes_`` (any label type), ``n_features_in_``, ``net_`` (the ``DomainAdaptNet``, on the CPU),
    ``config_`` (the resolved ``Config``; its method is ``source_only`` when there was no target to adapt to),
    ``selection_`` (with ``method="recommended"``: what the selecting default kept and why, ``dann.selection.default``;
    None when a method is named). To select, the default holds out 10 % of the labeled rows for its source guard (as
    ``dann train`` does), unless ``config`` sets ``data.val_fraction`` above 0.
    ``lambda_adv=None`` takes the method's reference weight, as ``dann train`` does (``docs/methods/index.md``)."""

    def __init__(
        self,
        backbone: str = "auto",
        method: str = "recommended",
        max_steps: int = 3000,
        batch_size: int = 64,
        lr: float = 0.01,
        lambda_adv: float | None = None,
        random_state: int | np.random.RandomState | None = 0,
        device: str = "auto",
        verbose: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.backbone = backbone
        self.method = method
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.lambda_adv = lambda_adv
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.config = config

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=["float32"])  # transform: float32 features
        return tags

    @property
    def _n_features_out(self) -> int:  # names the columns of ``transform`` (``get_feature_names_out``)
        return self.net_.num_features

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(SEED_LIMIT))

    def _config(self) -> Config:
        """The run's config: defaults, then the parameters, then ``config``'s ``section.key`` values."""
        if not isinstance(self.method, str):
            raise ConfigError(
                f"method must be a method's name, got {self.method!r}; give its other keys through config, e.g. "
                "DANNClassifier(method='adamatch', config={'method.uratio': 3})"
            )
        steps = _plain(self.max_steps)
        values: dict[str, dict[str, Any]] = {
            "model": {"backbone": self.backbone},
            "method": {"name": self.method, "lambda_adv": _plain(self.lambda_adv)},
            "optim": {"lr": _plain(self.lr)},
            "train": {
                "steps": steps,
                "batch_size": _plain(self.batch_size),
                "seed": self._seed(),
                "device": self.device,
                "progress": bool(self.verbose),
                "eval_every": steps,
            },
            "data": {"val_fraction": 0.0},
        }
        for key, value in (self.config or {}).items():
            section, _, name = str(key).partition(".")
            if not name or "." in name:
                raise ConfigError(f"config key {key!r} must look like section.key, e.g. 'model.mlp_dims'")
            if key in PARAMETER_KEYS:
                raise ConfigError(f"config key {key!r} is the parameter {PARAMETER_KEYS[key]}=; set it there")
            values.setdefault(section, {})[name] = _plain(value)
        return load_config(values=values)

    def fit(
        self,
        X: Any,
        y: Any,
        X_target: Any | None = None,
        sample_domain: Any | None = None,
        sample_weight: Any | None = None,
    ) -> DANNClassifier:
        """Train on the labeled source rows and the unlabeled target rows, given by ``X_target``, by ``y == -1``, or
        by ``sample_domain`` (see the module's docstring); ``y`` of (N,) labels of any type. Several positive
        ``sample_domain`` values are several labeled domains, named by their value (``"1"``, ``"2"``...: the names
        ``config={"data.intermediate": ...}`` and ``train.stages`` take). ``sample_weight`` (N,): each labeled row's
        weight in the classification loss (``dann.data.weights``; the target rows' are not read)."""
        from ..api import fit

        X, y = validate_data(self, X, y, allow_nd=True, dtype="numeric")
        self.input_shape_ = tuple(X.shape[1:])
        if X_target is not None:
            X_target = self._check_X(X_target)
        is_target, domain = target_rows(y, X_target, sample_domain)
        x_s, y_s = X[~is_target], y[~is_target]
        x_t = X[is_target] if X_target is None else X_target
        check_classification_targets(y_s)
        self.classes_, encoded = np.unique(y_s, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"the labeled rows hold only one class ({self.classes_[0]}): 2 classes are needed")
        w_s = _labeled_weights(sample_weight, ~is_target)
        cfg = self._config()
        selects = cfg.method.name == RECOMMENDED and bool(SELECTION["candidates"])  # the selecting default adapts
        if len(x_t) == 0 and (selects or reads_target(cfg.method)):
            warnings.warn(NO_ADAPTATION, DataWarning, stacklevel=2)
            cfg = replace(cfg, method={"name": "source_only"})
        elif selects and cfg.data.val_fraction == 0:  # its source guard reads a held-out split, as dann train's does
            cfg = replace(cfg, data={"val_fraction": SELECTION_HELD_OUT})
        source = _labeled_domains(x_s, encoded, w_s, domain[~is_target] if domain is not None else None)
        first = source if not isinstance(source, dict) else next(iter(source.values()))
        target = as_domain(x_t, None, "X_target") if len(x_t) else first.unlabeled()  # source_only reads none
        data = make_domain_data(
            source,
            target,
            classes=[str(c) for c in self.classes_],
            val_fraction=cfg.data.val_fraction,
            seed=cfg.data.seed,
            names=("X", "X_target", "X_target"),
            intermediate=cfg.data.intermediate,
        )
        data = hold_out_target(data, cfg.data.target_val_fraction, cfg.data.seed)
        result = fit(cfg, data=data)
        self.net_, self.config_ = result.net.cpu().eval(), result.config  # config_: "auto" and "recommended" resolved
        self.selection_ = result.selection  # with no method named: what the selecting default kept and why
        return self

    def _check_X(self, X: Any) -> np.ndarray:
        """``X`` validated against the fitted feature count, and sample shape for images."""
        X = validate_data(self, X, reset=False, allow_nd=True, dtype="numeric")
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(
                f"X has samples of shape {tuple(X.shape[1:])}, but {type(self).__name__} was fitted on samples of "
                f"shape {self.input_shape_}"
            )
        return X

    def _outputs(self, X: Any, features: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (N, num_features) float32 ((N, 0) unless ``features``: none are kept) and class logits (N, K)
        float64, on the CPU. Raises ``NotFittedError`` before ``fit``, ``ValueError`` for samples of another shape."""
        check_is_fitted(self)
        x = as_domain(self._check_X(X), None, "X").x
        f, logits, _ = embed(self.net_, x, self.config_.train.eval_batch_size, torch.device("cpu"), features=features)
        return f, logits.double()

    def transform(self, X: Any) -> np.ndarray:
        """(N, num_features) float32: the adapted features both heads read, e.g. for another estimator."""
        return self._outputs(X, features=True)[0].numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """Class logits (N, K); for two classes (N,), the logit of ``classes_[1]`` minus that of ``classes_[0]``."""
        logits = self._outputs(X, features=False)[1]
        return (logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits).numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, K) float64 class probabilities, columns in the order of ``classes_``."""
        return torch.softmax(self._outputs(X, features=False)[1], 1).numpy()

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """(N, K) float64 log class probabilities, columns in the order of ``classes_``."""
        return torch.log_softmax(self._outputs(X, features=False)[1], 1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """(N,) predicted labels, taken from ``classes_``. Keeps no features: memory is the logits' (N, K)."""
        best = self._outputs(X, features=False)[1].argmax(1).numpy()
        return self.classes_[best]


def _labeled_weights(sample_weight: Any | None, labeled: np.ndarray) -> torch.Tensor | None:
    """The weights (N_labeled,) of the labeled rows of ``sample_weight`` (N,), checked (``as_weights``)."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.shape != labeled.shape:
        raise DataError(f"sample_weight must have shape {labeled.shape}, one weight per row of X, got {w.shape}")
    rows = np.flatnonzero(labeled)
    return as_weights(w[labeled], len(rows), "sample_weight", lambda i: f"row {rows[i]}")


def _labeled_domains(
    x: np.ndarray, y: np.ndarray, w: torch.Tensor | None, domain: np.ndarray | None
) -> Domain | dict[str, Domain]:
    """The labeled rows as one domain, or as one domain per positive ``sample_domain`` value, named by it."""
    values = np.unique(domain) if domain is not None else np.array([])
    if len(values) < 2:
        return as_domain(x, y, "X", w)
    parts = {}
    for value in values:
        rows = domain == value
        what = f"X (sample_domain={value})"
        parts[str(value)] = as_domain(x[rows], y[rows], what, w[torch.from_numpy(rows)] if w is not None else None)
    return parts


EXPECTED_FAILED_CHECKS = {  # for check_estimator / parametrize_with_checks(expected_failed_checks=...)
    "check_classifiers_classes": "it uses -1 as a class label, which marks an unlabeled target row (y == -1)",
    "check_sample_weight_equivalence_on_dense_data": "training draws mini-batches of rows: a row of weight 2 equals a "
    "repeated row in expectation, not draw for draw",
}
