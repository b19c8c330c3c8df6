"""MDD, Margin Disparity Discrepancy (Zhang et al., "Bridging Theory and Algorithm for Domain Adaptation", ICML 2019).

An auxiliary classifier f' (the net's discriminator slot, (N, F) → (N, K) logits) sits behind the GRL. With
ŷ = argmax of the main head's logits (no gradient) and p' = softmax(f'(GRL(f))), the term is (Eq. 29–30, the
cross-entropy surrogate, written as a loss that f' minimizes):

    mdd = γ · CE(f'(f_s), ŷ_s) − mean_t log(1 − p'_t[ŷ_t])

f' learns to agree with the main head on the source and to disagree on the target; through the GRL the features
learn the opposite, which shrinks the disparity discrepancy D_γ = E_t log(1 − p'_t) + γ E_s log p'_s. The margin
γ is ``method.mdd_margin`` (4 in the paper's Office-31 runs).

Reference defaults (TLlib ``examples/domain_adaptation/image_classification/mdd.py``, thuml/MDD): the GRL warms up
from 0 toward a cap of 0.1, ``WarmStartGradientReverseLayer(alpha=1, hi=0.1, max_iters=1000)``, i.e.
0.1 · (2 / (1 + exp(−i / 1000)) − 1) at iteration i: 0.046 at 1,000 steps, 0.09 at 5,000. That is the paper's
sigmoid (γ = 10) over a horizon of 10,000 steps: here ``method.grl_hi`` 0.1 and ``method.grl_horizon`` 10,000, after
which the coefficient holds; and a Linear-BatchNorm-ReLU bottleneck under both heads (``Method.bottleneck``). With a
GRL of 1 the auxiliary head's gradient on the features is 18 to 38 times the cross-entropy's on small networks, and
the features collapse."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig, ModelConfig
from ..models.heads import mlp_layers
from .base import METHODS, Forward, Method, Term, grl_coeff


def mdd_loss(z_adv_s: torch.Tensor, z_adv_t: torch.Tensor, y_s: torch.Tensor, y_t: torch.Tensor, margin: float):
    """Auxiliary logits (B_s, K), (B_t, K) and the main head's predictions (B_s,), (B_t,) → the scalar above."""
    source = F.cross_entropy(z_adv_s, y_s)
    p_t = torch.softmax(z_adv_t.float(), 1).gather(1, y_t[:, None]).squeeze(1)
    target = -torch.log1p(-p_t.clamp(max=1 - 1e-6)).mean()
    return margin * source + target


class MarginDisparity(Term):
    options = ("mdd_margin",)
    uses_discriminator = True

    @classmethod
    def discriminator(
        cls, model: ModelConfig, cfg: MethodConfig, num_features: int, num_classes: int, num_domains: int = 2
    ) -> nn.Module:
        return mlp_layers(num_features, model.discriminator_dims, num_classes, model.dropout, model.discriminator_slope)

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        coeff = grl_coeff(self.cfg, fw.progress, fw.steps)
        z_adv = fw.net.domain_logits(torch.cat([fw.f_s, fw.f_t]), coeff)
        n_s = len(fw.f_s)
        y_s, y_t = fw.z_s.detach().argmax(1), fw.z_t.detach().argmax(1)
        loss = mdd_loss(z_adv[:n_s].float(), z_adv[n_s:].float(), y_s, y_t, self.cfg.mdd_margin)
        agree_s = (z_adv[:n_s].argmax(1) == y_s).float().mean()
        return loss, {"grl_lambda": coeff, "aux_agree_s": agree_s.detach()}


@METHODS.register("mdd")
class MDD(Method):
    defaults: ClassVar[dict[str, Any]] = {"grl_hi": 0.1, "grl_horizon": 10000}
    term = MarginDisparity
    term_name = "mdd"
