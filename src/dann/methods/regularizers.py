"""Target regularizers that need no state: usable with any method that reads the target batch, weighted in
``method.regularizers`` (e.g. ``{entropy: 0.1, mcc: 1.0}``). ``mcc`` (``dann.methods.mcc``) and ``fixmatch``
(``dann.methods.fixmatch``) are regularizers too.

- ``entropy``: conditional entropy minimization, mean_t H(softmax(z_t)) (Grandvalet & Bengio, "Semi-supervised
  Learning by Entropy Minimization", NeurIPS 2004; the target term of VADA, Shu et al. ICLR 2018).
- ``bnm``: batch nuclear-norm maximization, −‖softmax(z_t)‖_* / B (Cui et al., "Towards Discriminability and
  Diversity: Batch Nuclear-norm Maximization under Label Insufficient Situations", CVPR 2020, Eq. 10)."""

from __future__ import annotations

import torch

from .base import REGULARIZERS, Forward, Term, entropy


def entropy_loss(z_t: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of the target predictions, logits (B, K) → scalar in [0, log K]."""
    return entropy(torch.softmax(z_t.float(), 1)).mean()


def bnm_loss(z_t: torch.Tensor) -> torch.Tensor:
    """Minus the nuclear norm of the target probabilities (B, K), over B → scalar in [−sqrt(min(B, K) / B), 0)."""
    return -torch.linalg.svdvals(torch.softmax(z_t.float(), 1)).sum() / len(z_t)


@REGULARIZERS.register("entropy")
class Entropy(Term):
    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        return entropy_loss(fw.z_t), {}


@REGULARIZERS.register("bnm")
class BNM(Term):
    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        return bnm_loss(fw.z_t), {}
