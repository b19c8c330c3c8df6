"""SHOT, source-free adaptation (Liang, Hu, Feng, "Do We Really Need to Access the Source Data? Source Hypothesis
Transfer for Unsupervised Domain Adaptation", ICML 2020; official code tim-learn/SHOT, folder ``digit/``).

Starts from a trained source model (``model.init_from``, a run directory) on that model's network (the network keys
left to auto take the start's: ``dann.plan.start_network``), keeps its final linear classifier (the source
hypothesis, the reference's ``netC``) frozen, and trains the rest (backbone and bottleneck) on **target batches
only**; no source sample is read:

    p = softmax(z_t)
    im = mean_t H(p_t) + Σ_k p̄_k log p̄_k            information maximization (Eq. 2–3), p̄ = mean_t p_t
    ŷ_t = argmax_k cos(g_t, c_k)                   clustered pseudo-labels (Eq. 4–6)
    shot = im + β · CE(z_t, ŷ_t)                   β = ``method.shot_beta`` (Eq. 7; 0.1 on digits)

g is what the classifier reads (eval mode), with a 1 appended, L2-normalized. The centres c_k come from the whole
target training set once per epoch (every ceil(N_t / (batch_size · accumulate)) steps, and at the first step), in
eval mode without gradients, as the reference's ``obtain_label``: c_k = the prediction-weighted mean of the g, each
sample assigned to its nearest centre (cosine), then c_k = the mean of the samples assigned to k (a class with none
is never chosen: the reference's ``threshold``). A batch's pseudo-labels are its samples' nearest centres from their
own eval-mode features, so a sample's label never depends on the batch it comes in. The centres and the step they
were computed at are kept in checkpoints: a resumed run continues with them, without another pass. Under torchrun
every process runs the pass over the whole target set, and all take rank 0's centres."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..config import MethodConfig
from ..data.domains import AnyDomain
from ..models.network import DomainAdaptNet
from .base import METHODS, Forward, Method, Term, entropy


def information_maximization(z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Target logits (B, K) → (mean entropy, Σ p̄ log p̄), whose sum SHOT minimizes."""
    p = torch.softmax(z_t.float(), 1)
    p_mean = p.mean(0)
    return entropy(p).mean(), (p_mean * p_mean.clamp_min(1e-12).log()).sum()


def augmented(g: torch.Tensor) -> torch.Tensor:
    """Features (N, F) → (N, F + 1): a 1 appended to each row, then each row L2-normalized (the reference's
    ``torch.cat((all_fea, torch.ones(...)), 1)``), in float32."""
    g = g.float()
    return F.normalize(torch.cat([g, torch.ones(len(g), 1, device=g.device)], 1), dim=1)


def nearest_centre(f: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Normalized features (N, D), centres (K, D) → the index (N,) of each row's nearest centre by cosine distance;
    an all-zero centre (a class no sample was assigned to) is never chosen."""
    centres = centres.to(f)
    similarity = f @ F.normalize(centres, dim=1).T
    return similarity.masked_fill(centres.abs().sum(1) == 0, float("-inf")).argmax(1)


def cluster_centres(f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Weighted k-means with cosine distance, two rounds (Eq. 4–6). Normalized features (N, D), class probabilities
    (N, K) → centres (K, D): round 1 c_k = Σ_i p_ik f_i / Σ_i p_ik; each sample to its nearest c_k; round 2 c_k = the
    mean of the samples assigned to k, all zeros for a class with none (``nearest_centre`` never picks it)."""
    soft = (p.T @ f) / (p.sum(0)[:, None] + 1e-8)
    onehot = F.one_hot(nearest_centre(f, soft), p.shape[1]).to(f.dtype)
    return (onehot.T @ f) / onehot.sum(0).clamp_min(1)[:, None]


@contextlib.contextmanager
def evaluating(net: nn.Module) -> Iterator[None]:
    """``net`` in eval mode without gradients within the block; its mode comes back after it."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        net.train(was_training)


def classifier(net: DomainAdaptNet) -> nn.Linear:
    """The head's final Linear: the source hypothesis SHOT keeps frozen."""
    return [m for m in net.head.modules() if isinstance(m, nn.Linear)][-1]


def target_centres(net: DomainAdaptNet, target: AnyDomain, batch_size: int) -> torch.Tensor:
    """``cluster_centres`` of the whole target set (N samples) in eval mode: centres (K, F' + 1) on the net's
    device. Under torchrun every process computes them over the whole set, then takes rank 0's."""
    from ..evaluation.metrics import embed  # evaluation imports the methods' network module: import on use

    device = next(net.parameters()).device
    f, z, _ = embed(net, target, batch_size, device)
    if len(net.head) > 1:  # hidden head layers: the classifier reads their output
        with evaluating(net):
            f = torch.cat([net.head[:-1](part.to(device)).float().cpu() for part in f.split(batch_size)])
    centres = cluster_centres(augmented(f), torch.softmax(z, 1)).to(device)
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(centres, 0)
    return centres


class HypothesisTransfer(Term):
    """SHOT's term (see the module docstring): ``refresh`` clusters the whole target set once per epoch; a batch's
    pseudo-labels are its samples' nearest centres."""

    options = ("shot_beta",)

    def __init__(self, cfg: MethodConfig) -> None:
        super().__init__(cfg)
        self.centres: torch.Tensor | None = None  # (K, F' + 1), this epoch's
        self.step: int | None = None  # the step they were computed at

    def prepare(self, net: DomainAdaptNet) -> None:
        classifier(net).requires_grad_(False)  # the source hypothesis stays as trained; the bottleneck adapts

    def refresh_due(self, step: int, epoch_steps: int) -> bool:
        return self.step is None or step // epoch_steps != self.step // epoch_steps

    def refresh(self, net: DomainAdaptNet, target: AnyDomain, step: int, batch_size: int) -> None:
        self.centres, self.step = target_centres(net, target, batch_size), step

    def state_dict(self) -> dict[str, Any]:
        return {"centres": self.centres, "step": self.step} if self.centres is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.centres = state["centres"].clone() if "centres" in state else None
        self.step = state.get("step") if self.centres is not None else None  # none: recompute at the next step

    def pseudo_labels(self, net: DomainAdaptNet, x_t: torch.Tensor) -> torch.Tensor:
        """Target samples (B, ...) → their pseudo-labels (B,): each one's nearest centre, from its own eval-mode
        features. Without centres (a term used outside the trainer, never refreshed) the batch is clustered alone."""
        with evaluating(net):
            g = net.head[:-1](net.forward_features(x_t))  # what the classifier reads: (B, F')
            z = net.head[-1](g)
        f = augmented(g)
        return nearest_centre(f, self.centres if self.centres is not None else cluster_centres(f, z.float().softmax(1)))

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        ent, neg_diversity = information_maximization(fw.z_t)
        pseudo = F.cross_entropy(fw.z_t.float(), self.pseudo_labels(fw.net, fw.batch.x_t))
        loss = ent + neg_diversity + self.cfg.shot_beta * pseudo
        return loss, {"ent": ent.detach(), "div": -neg_diversity.detach(), "pseudo_ce": pseudo.detach()}


@METHODS.register("shot")
class SHOT(Method):
    """SHOT (Liang et al., ICML 2020; tim-learn/SHOT): see the module docstring. It adapts the network of the run it
    starts from. The reference's source network (tim-learn/SHOT ``digit/network.py``, ``uda_digit.py``:
    ``--classifier bn --layer wn``) is a 256-wide Linear-BatchNorm-Dropout(0.5) bottleneck with no activation
    (``feat_bootleneck``, type ``bn``) under a weight-normalized Linear classifier (``feat_classifier``, type ``wn``):
    train the source with ``--set model.bottleneck_dim=256 model.bottleneck_kind=bn_dropout model.weight_norm=true``.
    On the methods' Linear-BatchNorm-ReLU bottleneck with a plain classifier SHOT loses target accuracy on ``digits``
    (docs/benchmarks.md, "SHOT in its reference network")."""

    uses_source = False
    needs_init = True
    term = HypothesisTransfer
    term_name = "shot"
