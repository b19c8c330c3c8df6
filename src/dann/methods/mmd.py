"""DAN's multi-kernel MMD (Long et al., "Learning Transferable Features with Deep Adaptation Networks", ICML 2015).

The squared maximum mean discrepancy between the source and target features f_s (B_s, F), f_t (B_t, F) under
the mean of Gaussian kernels k_u(a, b) = exp(−‖a − b‖² / (m_u · σ²)), m_u ∈ {1/4, 1/2, 1, 2, 4}, where σ² is the
mean squared distance over all pairs of the step's features, the diagonal included (no gradient), as DAN sets its
bandwidths. DAN trains with a linear-time unbiased estimate; this is the quadratic biased one over all pairs (the
batches are small), its Eq. 3:

    mmd = mean k(f_s, f_s') + mean k(f_t, f_t') − 2 mean k(f_s, f_t)

As in DAN, the term's weight is ramped up with progress p by 2 / (1 + exp(−10 p)) − 1 (logged as ``mmd_weight``;
``method.lambda_adv`` scales it), and the features it reads are those of a Linear-BatchNorm-ReLU bottleneck of 256
on the small backbones (DAN adapts the last layers of its network; every reference puts a normalised layer under the
term). On raw LeNet conv features the term's gradient is 13 times the cross-entropy's and every feature dies."""

from __future__ import annotations

import torch

from ..training.schedules import grl_lambda
from .base import METHODS, FeatureDistance, Forward, Method

BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)


def mmd_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """Features (B_s, F), (B_t, F) → the squared multi-kernel MMD above, a scalar in [0, 2]."""
    f = torch.cat([f_s, f_t]).float()
    d2 = torch.cdist(f, f).square()
    sigma2 = d2.detach().mean().clamp_min(1e-12)
    k = torch.stack([torch.exp(-d2 / (m * sigma2)) for m in BANDWIDTHS]).mean(0)
    n = len(f_s)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class MultiKernelMMD(FeatureDistance):
    distance = staticmethod(mmd_loss)

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        weight = grl_lambda(fw.progress)  # DAN's ramp of the MMD weight
        return weight * mmd_loss(fw.f_s, fw.f_t), {"mmd_weight": weight}


@METHODS.register("mmd")
class MMD(Method):
    term = MultiKernelMMD
    term_name = "mmd"
