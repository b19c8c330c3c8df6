"""DANN (Ganin et al., JMLR 2016), the seed formulation:

    cls   = weighted mean over source samples of CE(logits_s, y_s, label_smoothing=ε)
    adv   = 0.5 * (BCEWithLogits(D(GRL(f_s, λ_grl)), SOURCE) + BCEWithLogits(D(GRL(f_t, λ_grl)), TARGET))
    total = cls + λ_adv * adv

λ_grl follows ``method.grl_schedule`` over progress (the paper's ``2/(1+exp(-γp)) - 1`` by default); λ_adv is a
separate constant weight. Minimizing ``total`` trains the discriminator to tell the domains apart while the GRL
makes the feature extractor work to confuse it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.network import DomainAdaptNet
from ..schedules import GRL_SCHEDULES
from .base import METHODS, SOURCE, TARGET, Batch, LossOutput, Method, classification_loss, joint_features


def domain_adversarial_loss(d_s: torch.Tensor, d_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain logits (B_s,), (B_t,) → (adv loss, discriminator accuracy), source labelled 0 and target 1."""
    bce_s = F.binary_cross_entropy_with_logits(d_s, torch.full_like(d_s, SOURCE))
    bce_t = F.binary_cross_entropy_with_logits(d_t, torch.full_like(d_t, TARGET))
    correct = (d_s < 0).sum() + (d_t > 0).sum()
    return 0.5 * (bce_s + bce_t), correct.float() / (len(d_s) + len(d_t))


@METHODS.register("dann")
class DANN(Method):
    def grl_coeff(self, progress: float) -> float:
        c = self.cfg
        return GRL_SCHEDULES.get(c.grl_schedule)(progress, c.grl_lo, c.grl_hi, c.grl_gamma)

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        f_s, f_t = joint_features(net, batch, self.cfg.separate_forward)
        cls = classification_loss(net.forward_head(f_s), batch.y_s, batch.w_s, self.cfg.label_smoothing)
        coeff = self.grl_coeff(progress)
        d = net.domain_logits(torch.cat([f_s, f_t]), coeff)
        adv, domain_acc = domain_adversarial_loss(d[: len(f_s)], d[len(f_s) :])
        total = cls + self.cfg.lambda_adv * adv
        terms = {"cls": cls.detach(), "adv": adv.detach(), "domain_acc": domain_acc, "grl_lambda": coeff}
        return LossOutput(total, terms)
