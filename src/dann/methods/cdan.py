"""CDAN and CDAN+E (Long et al., "Conditional Adversarial Domain Adaptation", NeurIPS 2018).

The discriminator reads the multilinear map of features and predictions, ``h = f ⊗ p`` with ``p = softmax(z)``
detached (Eq. 4), flattened to (N, F·K); when F·K exceeds ``method.cdan_max_dim`` (4096 in the paper) the
randomized map ``h = (f R_f) ⊙ (p R_g) / sqrt(d)`` with fixed Gaussian R_f (F, d), R_g (K, d), d = 1024 (Eq. 6):

    adv = 0.5 * (BCEWithLogits(D(GRL(h_s)), SOURCE) + BCEWithLogits(D(GRL(h_t)), TARGET))       (Eq. 7)

CDAN+E (``cdan_e``) weighs each sample by ``w = 1 + exp(−H(p))`` (Eq. 9), normalized to mean 1 within each domain,
so confident predictions count more. Since the map is linear in f for a fixed p, reversing the gradient of h
equals reversing that of f, so the GRL sits inside ``net.domain_logits`` as for DANN."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import MethodConfig, ModelConfig
from ..models.heads import DomainDiscriminator
from .base import METHODS, Forward, Method, Term, entropy, grl_coeff
from .dann import domain_adversarial_loss

RANDOMIZED_DIM = 1024  # d of the randomized multilinear map, as in the paper


class MultilinearDiscriminator(nn.Module):
    """(N, F + K) = cat(f, p) → (N,) domain logits of a discriminator on f ⊗ p (or its randomized form)."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        max_dim: int,
        hidden: tuple[int, ...],
        dropout: float,
        negative_slope: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.randomized = num_features * num_classes > max_dim
        if self.randomized:
            g = torch.Generator().manual_seed(0)  # fixed, and saved with the weights
            self.register_buffer("r_f", torch.randn(num_features, RANDOMIZED_DIM, generator=g))
            self.register_buffer("r_g", torch.randn(num_classes, RANDOMIZED_DIM, generator=g))
        width = RANDOMIZED_DIM if self.randomized else num_features * num_classes
        self.net = DomainDiscriminator(width, hidden, dropout, negative_slope=negative_slope)

    def multilinear(self, f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (f @ self.r_f) * (p @ self.r_g) / math.sqrt(RANDOMIZED_DIM)
        return torch.bmm(f.unsqueeze(2), p.unsqueeze(1)).flatten(1)

    def forward(self, fp: torch.Tensor) -> torch.Tensor:
        f, p = fp[:, : self.num_features], fp[:, self.num_features :]
        return self.net(self.multilinear(f, p))


class ConditionalAdversarial(Term):
    options = ("cdan_max_dim",)
    uses_discriminator = True
    entropy_weights = False

    @classmethod
    def discriminator(
        cls, model: ModelConfig, cfg: MethodConfig, num_features: int, num_classes: int, num_domains: int = 2
    ) -> nn.Module:
        return MultilinearDiscriminator(
            num_features, num_classes, cfg.cdan_max_dim, model.discriminator_dims, model.dropout,
            model.discriminator_slope,
        )  # fmt: skip

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        coeff = grl_coeff(self.cfg, fw.progress, fw.steps)
        p = torch.softmax(torch.cat([fw.z_s, fw.z_t]).detach().float(), 1).to(fw.f_s.dtype)
        d = fw.net.domain_logits(torch.cat([torch.cat([fw.f_s, fw.f_t]), p], 1), coeff)
        w = 1 + torch.exp(-entropy(p.float())) if self.entropy_weights else None
        n_s = len(fw.f_s)
        w_s, w_t = (w[:n_s], w[n_s:]) if w is not None else (None, None)
        if (iw := self.source_weights(fw)) is not None:  # IWCDAN's class weights (dann.methods.iw)
            w_s = iw if w_s is None else w_s * iw
        adv, domain_acc = domain_adversarial_loss(d[:n_s], d[n_s:], w_s, w_t)
        return adv, {"domain_acc": domain_acc, "grl_lambda": coeff}

    def source_weights(self, fw: Forward) -> torch.Tensor | None:
        """Per-sample weights (B_s,) multiplying the source samples' BCE weights; None: none."""
        return None


class ConditionalAdversarialEntropy(ConditionalAdversarial):
    entropy_weights = True


@METHODS.register("cdan")
class CDAN(Method):
    term = ConditionalAdversarial


@METHODS.register("cdan_e")
class CDANE(Method):
    term = ConditionalAdversarialEntropy
