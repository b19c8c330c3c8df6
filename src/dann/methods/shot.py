"""SHOT, source-free adaptation (Liang et al., "Do We Really Need to Access the Source Data? Source Hypothesis
Transfer for Unsupervised Domain Adaptation", ICML 2020).

Starts from a trained source model (``model.init_from``, a run directory), keeps its classifier head (the source
hypothesis) frozen, and trains the feature extractor on **target batches only**; no source sample is read:

    p = softmax(z_t)
    im = mean_t H(p_t) + Σ_k p̄_k log p̄_k            information maximization (Eq. 2–3), p̄ = mean_t p_t
    ŷ_t = argmax_k cos(f_t, c_k)                   clustered pseudo-labels (Eq. 4–6)
    shot = im + β · CE(z_t, ŷ_t)                   β = ``method.shot_beta`` (Eq. 7)

The paper re-clusters the whole target set once per epoch: c_k is the prediction-weighted mean of the normalized
target features, then once more the mean of the features labelled k. Here both rounds run on each batch: the soft
centres are smoothed across batches by an exponential moving average (momentum 0.9, per micro-batch with
``train.accumulate``), the hard round uses the batch alone; so no extra pass over the data is needed. The smoothed
centres are kept in checkpoints (and never replaced by non-finite values), and under torchrun each batch's sums
are added over the processes."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..models.network import DomainAdaptNet
from .base import METHODS, Forward, Method, Term, entropy

CENTROID_MOMENTUM = 0.9


def information_maximization(z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Target logits (B, K) → (mean entropy, Σ p̄ log p̄), whose sum SHOT minimizes."""
    p = torch.softmax(z_t.float(), 1)
    p_mean = p.mean(0)
    return entropy(p).mean(), (p_mean * p_mean.clamp_min(1e-12).log()).sum()


def _summed(x: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


def cluster_labels(f: torch.Tensor, weights: torch.Tensor, previous: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """Normalized features (B, F), soft assignments (B, K), previous centres (K, F) or None → (labels (B,), the
    new centres (K, F)): a soft round, then a hard one (classes with no sample keep their soft centre)."""
    sums = _summed(torch.cat([weights.T @ f, weights.sum(0)[:, None]], 1))
    soft = sums[:, :-1] / sums[:, -1:].clamp_min(1e-12)
    centres = soft if previous is None else CENTROID_MOMENTUM * previous + (1 - CENTROID_MOMENTUM) * soft
    if previous is not None:  # a non-finite batch (skipped by train.on_nonfinite=skip) must not poison the centres
        centres = torch.where(torch.isfinite(centres), centres, previous)
    labels = (f @ F.normalize(centres, dim=1).T).argmax(1)
    onehot = F.one_hot(labels, weights.shape[1]).to(f.dtype)
    sums = _summed(torch.cat([onehot.T @ f, onehot.sum(0)[:, None]], 1))
    hard = torch.where(sums[:, -1:] > 0, sums[:, :-1] / sums[:, -1:].clamp_min(1), centres)
    return (f @ F.normalize(hard, dim=1).T).argmax(1), centres


class HypothesisTransfer(Term):
    options = ("shot_beta",)
    centres: torch.Tensor | None = None

    def prepare(self, net: DomainAdaptNet) -> None:
        net.head.requires_grad_(False)  # the source hypothesis stays as trained

    def state_dict(self) -> dict[str, Any]:
        return {"centres": self.centres} if self.centres is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.centres = state["centres"].clone() if "centres" in state else None

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        ent, neg_diversity = information_maximization(fw.z_t)
        with torch.no_grad():
            f = F.normalize(fw.f_t.detach().float(), dim=1)
            labels, self.centres = cluster_labels(f, torch.softmax(fw.z_t.detach().float(), 1), self.centres)
        pseudo = F.cross_entropy(fw.z_t.float(), labels)
        loss = ent + neg_diversity + self.cfg.shot_beta * pseudo
        return loss, {"ent": ent.detach(), "div": -neg_diversity.detach(), "pseudo_ce": pseudo.detach()}


@METHODS.register("shot")
class SHOT(Method):
    uses_source = False
    needs_init = True
    term = HypothesisTransfer
    term_name = "shot"
