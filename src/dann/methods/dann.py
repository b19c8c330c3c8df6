"""DANN (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016), the seed formulation:

    cls   = weighted mean over source samples of CE(logits_s, y_s, label_smoothing=ε)
    adv   = 0.5 * (BCEWithLogits(D(GRL(f_s, λ_grl)), SOURCE) + BCEWithLogits(D(GRL(f_t, λ_grl)), TARGET))
    total = cls + λ_adv * adv

λ_grl follows ``method.grl_schedule`` over progress (the paper's ``2/(1+exp(-γp)) - 1`` by default); λ_adv is a
separate constant weight. Minimizing ``total`` trains the discriminator to tell the domains apart while the GRL
makes the feature extractor work to confuse it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import METHODS, SOURCE, TARGET, Forward, Method, Term, grl_coeff, weighted_mean


def domain_adversarial_loss(
    d_s: torch.Tensor, d_t: torch.Tensor, w_s: torch.Tensor | None = None, w_t: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain logits (B_s,), (B_t,) → (adv loss, discriminator accuracy), source labelled 0 and target 1. With
    per-sample weights ``w_s``, ``w_t`` each domain's BCE is their weighted mean (CDAN+E)."""
    bce_s = weighted_mean(F.binary_cross_entropy_with_logits(d_s, torch.full_like(d_s, SOURCE), reduction="none"), w_s)
    bce_t = weighted_mean(F.binary_cross_entropy_with_logits(d_t, torch.full_like(d_t, TARGET), reduction="none"), w_t)
    correct = (d_s < 0).sum() + (d_t > 0).sum()
    return 0.5 * (bce_s + bce_t), correct.float() / (len(d_s) + len(d_t))


class DomainAdversarial(Term):
    """``adv`` above, on the features both heads read; logs ``domain_acc`` and ``grl_lambda``."""

    uses_discriminator = True

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        coeff = grl_coeff(self.cfg, fw.progress)
        d = fw.net.domain_logits(torch.cat([fw.f_s, fw.f_t]), coeff)
        adv, domain_acc = domain_adversarial_loss(d[: len(fw.f_s)], d[len(fw.f_s) :])
        return adv, {"domain_acc": domain_acc, "grl_lambda": coeff}


@METHODS.register("dann")
class DANN(Method):
    term = DomainAdversarial
    term_name = "adv"
