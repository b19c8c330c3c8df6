"""``DANNClassifier``: the scikit-learn manner for arrays in memory. ``fit(X, y, X_target=Xt)`` trains on the same
trainer as the CLI; target labels are never taken."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .config import load_config
from .data.arrays import as_domain
from .data.domains import make_domain_data
from .evaluate import predict_proba


class DANNClassifier(ClassifierMixin, BaseEstimator):
    """Domain-adversarial classifier for X of shape (N, D) or (N, C, H, W).

    Parameters mirror the config keys most often changed; ``config`` takes any other ``section.key`` overrides
    (e.g. ``{"model.bottleneck_dim": 256}``). ``method="source_only"`` gives the control."""

    def __init__(
        self,
        backbone: str = "lenet",
        method: str = "dann",
        max_steps: int = 3000,
        batch_size: int = 64,
        lr: float = 0.01,
        lambda_adv: float = 1.0,
        random_state: int = 0,
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

    def _config(self):
        overrides = [f"{k}={v}" for k, v in (self.config or {}).items()]
        values = {
            "model": {"backbone": self.backbone},
            "method": {"name": self.method, "lambda_adv": self.lambda_adv},
            "optim": {"lr": self.lr},
            "train": {
                "steps": self.max_steps,
                "batch_size": self.batch_size,
                "seed": self.random_state,
                "device": self.device,
                "progress": self.verbose,
                "eval_every": self.max_steps,
            },
            "data": {"val_fraction": 0.0},
        }
        return load_config(values=values, overrides=overrides)

    def fit(self, X: np.ndarray, y: np.ndarray, X_target: np.ndarray | None = None) -> DANNClassifier:
        """Train on labeled source ``(X, y)`` and unlabeled ``X_target`` (required unless method is source_only)."""
        from .api import fit

        cfg = self._config()
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        source = as_domain(X, encoded, "X")
        if X_target is None:
            if cfg.method.name != "source_only":
                raise ValueError(f"method {cfg.method.name!r} needs unlabeled target data: fit(X, y, X_target=...)")
            X_target = X
        target = as_domain(X_target, None, "X_target")
        data = make_domain_data(
            source,
            target,
            classes=[str(c) for c in self.classes_],
            val_fraction=0.0,
            seed=self.random_state,
            names=("X", "X_target", "X_target"),
        )
        result = fit(cfg, data=data)
        self.net_ = result.net.cpu().eval()
        self.n_features_in_ = int(np.prod(X.shape[1:]))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "net_")
        return predict_proba(self.net_, as_domain(X, None, "X").x).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(1)]
