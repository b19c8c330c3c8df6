"""VADA, Virtual Adversarial Domain Adaptation (Shu, Bui, Narui, Ermon, "A DIRT-T Approach to Unsupervised Domain
Adaptation", ICLR 2018, Eq. 7; official code RuiShu/dirt-t, ``codebase/models/dirtt.py``), and its virtual
adversarial training term (Miyato, Maeda, Koyama, Ishii, "Virtual Adversarial Training", TPAMI 2018, Eq. 12–14).

VAT on a batch x (B, ...) with the prediction p = softmax(z) of the step's main forward (no gradient)::

    d ~ N(0, I), d ← d / ‖d‖                      per sample, over all input dimensions
    g = ∇_d Σ_i KL(p_i ‖ softmax(net(x_i + ξ d_i)))   ξ = 1e-6, one power iteration
    r = ε · g / ‖g‖                                per sample, ε = ``method.vat_radius`` (3.5)
    vat = mean_i KL(p_i ‖ softmax(net(x_i + r_i)))

The perturbation is on the network's input, the whole network after it (``model.input_norm`` included), as the
reference's ``perturb_image``/``vat_loss`` perturb the classifier's input. Both extra forwards run in train mode
(batch statistics, dropout) but leave BatchNorm's running statistics as the main forward set them; the power
iteration runs in float32 outside autocast (ξ d would vanish in bfloat16) and its gradient is taken with respect to
d alone, so no parameter gradient comes from it. The KL is in float32.

VADA's loss (λ_d, λ_s = ``method.vada_source_vat``, λ_t = ``method.vada_target``)::

    total = cls + λ_d · adv + λ_s · vat_s + λ_t · (entropy_t + vat_t)

where λ_d weights the domain loss *of the feature extractor* only: in the reference the discriminator trains on its
own loss at weight 1. Behind the GRL that is ``method.lambda_adv`` 1 (the discriminator's weight) with the GRL's
peak ``method.grl_hi`` = λ_d = 0.01 (what reaches the features); a ``lambda_adv`` of 0.01 would train the
discriminator 100 times too weakly.

with DANN's domain-adversarial ``adv`` (``dann.methods.dann``, the same discriminator behind the GRL), the mean
conditional entropy of the target predictions and VAT on the source and on the target batch. The reference code's
defaults: λ_d = 0.01 (``grl_hi``), λ_s = 1, λ_t = 0.01, radius 3.5, evaluation with an exponential moving average
of the weights (decay 0.998, ``method.ema_eval``; here with the ramp of every method's ``ema_eval``,
``base.WeightAverage``, where the reference decays at 0.998 from the first step). The paper tuned these on 1,000
labeled target samples."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..config import MethodConfig
from ..models.network import DomainAdaptNet
from .base import METHODS, REGULARIZERS, Forward, Method, Term, frozen_batchnorm_statistics
from .dann import DomainAdversarial
from .regularizers import Entropy

XI = 1e-6  # the power iteration's step ξ (the reference's ``1e-6 * normalize_perturbation(...)``)


def unit_rows(d: torch.Tensor) -> torch.Tensor:
    """(B, ...) → each sample scaled to Euclidean norm 1 over all its dimensions (all-zero samples stay zero).
    Divides by the largest magnitude first, so that tiny gradients (order ξ²) neither underflow nor lose digits."""
    flat = d.flatten(1)
    tiny = torch.finfo(flat.dtype).tiny
    flat = flat / flat.abs().amax(1, keepdim=True).clamp_min(tiny)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(tiny)).reshape(d.shape)


def kl_rows(z_p: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Logits (B, K), (B, K) → (B,) KL(softmax(z_p) ‖ softmax(z_q)) in nats, in float32."""
    log_p, log_q = torch.log_softmax(z_p.float(), 1), torch.log_softmax(z_q.float(), 1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def vat_perturbation(net: DomainAdaptNet, x: torch.Tensor, z: torch.Tensor, radius: float) -> torch.Tensor:
    """Inputs (B, ...) and their logits (B, K) → the virtual adversarial perturbation r (B, ...), float32, of norm
    ``radius`` per sample: one power iteration from a random direction (above); a sample whose gradient is exactly 0
    (ξ d lost to float32 rounding on a network that gives exactly p) keeps that random direction. Call it inside
    ``frozen_batchnorm_statistics``; no parameter receives a gradient."""
    with torch.autocast(x.device.type, enabled=False):
        d = unit_rows(torch.randn(x.shape, device=x.device)).requires_grad_(True)
        kl = kl_rows(z.detach(), net(x.float() + XI * d)).sum()  # a sum: each sample's gradient is its own
        (grad,) = torch.autograd.grad(kl, d)
        vanished = (grad.flatten(1) == 0).all(1).view((-1,) + (1,) * (x.ndim - 1))
        return radius * unit_rows(torch.where(vanished, d.detach(), grad))  # no gradient: the random direction


def vat_loss(net: DomainAdaptNet, x: torch.Tensor, z: torch.Tensor, radius: float) -> torch.Tensor:
    """Inputs (B, ...) and the logits (B, K) the step's forward gave them → the scalar ``vat`` above; 0 for B = 0."""
    if not len(x):
        return z.float().sum() * 0.0
    with frozen_batchnorm_statistics(net):  # neither extra forward moves what evaluation normalizes with
        r = vat_perturbation(net, x, z, radius)
        return kl_rows(z.detach(), net(x + r.to(x.dtype))).mean()


@REGULARIZERS.register("vat")
class VirtualAdversarial(Term):
    """VAT on the target batch: ``vat_loss(net, x_t, z_t)``. Two extra forwards of the target batch alone."""

    options = ("vat_radius",)
    forwards_target_alone = True

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        return vat_loss(fw.net, fw.batch.x_t, fw.z_t, self.cfg.vat_radius), {}


class SourceVirtualAdversarial(VirtualAdversarial):
    """VAT on the source batch: ``vat_loss(net, x_s, z_s)`` (its forwards see one domain's rows, as the target's)."""

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        return vat_loss(fw.net, fw.batch.x_s, fw.z_s, self.cfg.vat_radius), {}


class VadaAdversarial(DomainAdversarial):
    """DANN's domain-adversarial term as VADA's ``term``. Its ``options`` also name the keys of the terms VADA adds
    to it, so that vada reads them and another method that sets them is warned."""

    options = (*DomainAdversarial.options, "vada_source_vat", "vada_target", "vat_radius")


@METHODS.register("vada")
class VADA(Method):
    """``total = cls + λ_d · adv + λ_s · vat_s + λ_t · (entropy_t + vat_t)``, logged under ``adv``, ``vat_s``,
    ``entropy_t``, ``vat_t``. Defaults from RuiShu/dirt-t ``run_dirtt.py`` (``--dw 1e-2 --sw 1 --tw 1e-2
    --radius 3.5``) and ``dirtt.py`` (``ExponentialMovingAverage(decay=0.998)``). The reference network has
    BatchNorm after every layer and no bottleneck; on the small backbones, which have no BatchNorm, a normalised
    bottleneck of 256 stands for it (on digits, 600 steps: target 51.2 % with it, 38.9 % without, and source held-out
    94.4 % against 83.3 %)."""

    defaults: ClassVar[dict[str, Any]] = {"lambda_adv": 1.0, "grl_hi": 0.01, "ema_eval": 0.998}
    term = VadaAdversarial
    term_name = "adv"

    def __init__(self, cfg: MethodConfig) -> None:
        super().__init__(cfg)
        c = self.cfg
        self.terms[1:1] = [  # after adv, before any method.regularizers
            ("vat_s", c.vada_source_vat, SourceVirtualAdversarial(c)),
            ("entropy_t", c.vada_target, Entropy(c)),
            ("vat_t", c.vada_target, VirtualAdversarial(c)),
        ]
