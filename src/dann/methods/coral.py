"""Deep CORAL (Sun & Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016 workshops).

The distance between the feature covariances of the two domains (Eq. 1–3), with d = num_features:

    C = (fᵀf − (1ᵀf)ᵀ(1ᵀf) / n) / (n − 1)        per domain, f (n, d)
    coral = ‖C_s − C_t‖²_F / (4 d²)

The paper sets the weight (``method.lambda_adv``) so that this term and the classification loss are about equal at
the end of training; the term is small (it divides by 4 d²), so useful weights are often far above 1."""

from __future__ import annotations

import torch

from .base import METHODS, FeatureDistance, Method


def covariance(f: torch.Tensor) -> torch.Tensor:
    """(n, d) → (d, d) unbiased covariance."""
    centred = f - f.mean(0, keepdim=True)
    return centred.T @ centred / max(len(f) - 1, 1)


def coral_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    d = f_s.shape[1]
    return (covariance(f_s.float()) - covariance(f_t.float())).square().sum() / (4 * d * d)


class CorrelationAlignment(FeatureDistance):
    distance = staticmethod(coral_loss)


@METHODS.register("coral")
class CORAL(Method):
    term = CorrelationAlignment
    term_name = "coral"
