"""DANN (Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016), the seed formulation:

    cls   = weighted mean over source samples of CE(logits_s, y_s, label_smoothing=ε)
    adv   = 0.5 * (BCEWithLogits(D(GRL(f_s, λ_grl)), SOURCE) + BCEWithLogits(D(GRL(f_t, λ_grl)), TARGET))
    total = cls + λ_adv * adv

λ_grl follows ``method.grl_schedule`` over progress (the paper's ``2/(1+exp(-γp)) - 1`` by default); λ_adv is a
separate constant weight. Minimizing ``total`` trains the discriminator to tell the domains apart while the GRL
makes the feature extractor work to confuse it.

With several labeled domains, the binary discriminator above tells every labeled sample (SOURCE) from the target
(the seed's form). ``method.domain_discriminator: multiclass`` gives it one logit per domain instead, k = 0..M-1 the
labeled domains (``DomainData.labeled``) and M the target, and averages each domain's mean cross-entropy over the
domains in the batch:

    adv = (1 / |K|) Σ_{k ∈ K} mean_{i in domain k} CE(D(GRL(f_i, λ_grl)), k)

This is DANN's domain classifier extended to n domains as in MULANN (Schoenauer-Sebag et al., "Multi-Domain
Adversarial Learning", ICLR 2019); MDAN (Zhao et al., "Adversarial Multiple Source Domain Adaptation", NeurIPS
2018) keeps one binary discriminator per source instead. At zero logits adv = ln(M + 1), chance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig, ModelConfig
from ..models.heads import DomainDiscriminator
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


def multiclass_domain_loss(logits: torch.Tensor, domain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Domain logits (N, M+1) and domain indices (N,) in [0, M] → (adv loss, accuracy): the mean over the domains
    present in the batch of each one's mean cross-entropy (``multiclass`` above). No host synchronization."""
    ce = F.cross_entropy(logits.float(), domain, reduction="none")
    sums = torch.zeros(logits.shape[1], device=ce.device).index_add_(0, domain, ce)
    counts = torch.zeros_like(sums).index_add_(0, domain, torch.ones_like(ce))
    adv = (sums / counts.clamp_min(1)).sum() / (counts > 0).sum()
    return adv, (logits.argmax(1) == domain).float().mean()


class DomainAdversarial(Term):
    """``adv`` above, on the features both heads read; logs ``domain_acc`` and ``grl_lambda``."""

    uses_discriminator = True
    options = ("domain_discriminator",)

    @classmethod
    def discriminator(
        cls, model: ModelConfig, cfg: MethodConfig, num_features: int, num_classes: int, num_domains: int = 2
    ) -> nn.Module:
        outputs = num_domains if cfg.domain_discriminator == "multiclass" else 1
        return DomainDiscriminator(
            num_features, model.discriminator_dims, model.dropout, outputs, model.discriminator_slope
        )

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        coeff = grl_coeff(self.cfg, fw.progress, fw.steps)
        d = fw.net.domain_logits(torch.cat([fw.f_s, fw.f_t]), coeff)
        n_s = len(fw.f_s)
        if self.cfg.domain_discriminator == "multiclass":
            d_s = fw.batch.d_s if fw.batch.d_s is not None else torch.zeros(n_s, dtype=torch.int64, device=d.device)
            d_t = torch.full((len(fw.f_t),), d.shape[1] - 1, dtype=torch.int64, device=d.device)
            adv, domain_acc = multiclass_domain_loss(d, torch.cat([d_s, d_t]))
        else:
            adv, domain_acc = domain_adversarial_loss(d[:n_s], d[n_s:], self.source_weights(fw))
        return adv, {"domain_acc": domain_acc, "grl_lambda": coeff}

    def source_weights(self, fw: Forward) -> torch.Tensor | None:
        """Per-sample weights (B_s,) of the source samples' BCE; None: equal (IWDAN's class weights:
        ``dann.methods.iw``)."""
        return None


@METHODS.register("dann")
class DANN(Method):
    term = DomainAdversarial
    term_name = "adv"
    adversarial_bf16 = True  # auto: bf16 within fp32's seed spread on digits, digits_scanner, digits_inverted
