"""MCC, Minimum Class Confusion (Jin et al., "Minimum Class Confusion for Versatile Domain Adaptation", ECCV 2020).

On target logits z_t (B, K) with temperature T (``method.mcc_temperature``):

    p = softmax(z_t / T)                                   (Eq. 1)
    w_i = B · (1 + exp(−H(p_i))) / Σ_j (1 + exp(−H(p_j)))  (Eq. 4–5, entropy weights, no gradient)
    C = pᵀ diag(w) p                                       (Eq. 6, K × K class correlation)
    C̃_jk = C_jk / Σ_k' C_jk'                               (Eq. 7, category normalization of each row)
    mcc = (Σ_jk C̃_jk − Σ_j C̃_jj) / K                       (Eq. 8, between-class confusion)

``mcc`` is a method on its own (source cross-entropy + λ_adv · mcc) and a regularizer for any other
(``method.regularizers: {mcc: 1.0}``; the paper's strongest results add it to DANN/CDAN)."""

from __future__ import annotations

import torch

from .base import METHODS, REGULARIZERS, Forward, Method, Term, entropy


def mcc_loss(z_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Target logits (B, K) → the class confusion above (a scalar in [0, (K − 1) / K])."""
    p = torch.softmax(z_t.float() / temperature, 1)
    w = 1 + torch.exp(-entropy(p.detach()))
    w = len(p) * w / w.sum()
    confusion = (p * w[:, None]).T @ p
    confusion = confusion / confusion.sum(1, keepdim=True)
    return (confusion.sum() - confusion.trace()) / p.shape[1]


@REGULARIZERS.register("mcc")
class ClassConfusion(Term):
    options = ("mcc_temperature",)

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        return mcc_loss(fw.z_t, self.cfg.mcc_temperature), {}


@METHODS.register("mcc")
class MCC(Method):
    term = ClassConfusion
    term_name = "mcc"
