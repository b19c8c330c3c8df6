"""IWDAN and IWCDAN: importance-weighted alignment that survives a change of class proportions (Tachet des Combes,
Zhao, Wang, Gordon, "Domain Adaptation with Conditional Distribution Matching and Generalized Label Shift", NeurIPS
2020; official code microsoft/Domain-Adaptation-with-Conditional-Distribution-Matching-and-Generalized-Label-Shift).

Aligning the marginal feature distributions forces errors when the class proportions differ (Zhao et al., ICML
2019). Weighting each source sample by its class's importance weight w[y] = q_t[y] / p_s[y] aligns the target with
the source *re-weighted to the target's proportions* instead. w is estimated without target labels, by the
quadratic program of BBSE (``dann.evaluation.label_shift.solve_weights``) on what the training steps saw:

    C[i, j] += Σ_s softmax(z_s)[i] · 1[y_s = j]        (K, K) over the source batches
    μ[i]    += Σ_t softmax(z_t)[i]                      (K,)   over the target batches
    every ``method.iw_every`` steps:   w ← (1 − m) · argmin_{w ≥ 0, p_sᵀw = 1} ‖C w − μ‖² + m · w,   then C, μ ← 0

with p_s the column sums of C (the labels of the batches seen), m = ``method.iw_ma`` (0.5, the reference's ``--ma``)
and w = 1 at the start. The terms are DANN's and CDAN's (``dann.methods.dann``, ``dann.methods.cdan``), with each
source sample's BCE multiplied by w[y_s] (a weighted mean over the batch; the reference divides by B_s instead):

    iwdan  = ½ (Σ_s w[y_s] BCE(D(GRL(f_s)), 0) / Σ_s w[y_s] + mean_t BCE(D(GRL(f_t)), 1))
    iwcdan = the same on CDAN's map f ⊗ softmax(z)

The adversarial term is off (× 0) while progress < ``method.iw_warmup``. The source cross-entropy is weighted by
``method.iw_cls``: ``balanced`` (the reference: CE with class weights 1 / p_s, times w[y]), ``iw`` (w[y]), ``none``.
w and the accumulators are in the term's ``state_dict``, so a resumed run continues them exactly; under torchrun
each step's sums are added over the processes, so every process solves the same program."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..errors import ConfigError
from ..evaluation.label_shift import solve_weights
from ..models.network import DomainAdaptNet
from .base import METHODS, Batch, Forward, LossOutput, Method
from .cdan import ConditionalAdversarial
from .dann import DomainAdversarial

IW_OPTIONS = ("iw_every", "iw_warmup", "iw_ma", "iw_cls")


def summed(x: torch.Tensor) -> torch.Tensor:
    """``x`` added over the torchrun processes (in place); itself in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


class ImportanceWeights:
    """The class weights w (K,) and their accumulators; mixed into an adversarial term (before it in the bases), whose
    ``source_weights`` it answers with w[y_s]."""

    cfg: Any

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)  # type: ignore[call-arg]
        if cfg.domain_discriminator != "binary":
            raise ConfigError(
                f"method {cfg.name!r} weighs a binary discriminator's loss: set method.domain_discriminator=binary"
            )
        self.w: torch.Tensor | None = None  # (K,) importance weights, 1 until the first estimate
        self.confusion: torch.Tensor | None = None  # (K, K) Σ softmax(z_s) ⊗ onehot(y_s) since the last estimate
        self.target: torch.Tensor | None = None  # (K,) Σ softmax(z_t) since the last estimate
        self.labels: torch.Tensor | None = None  # (K,) source labels seen over the whole run (for iw_cls=balanced)
        self.step = 0  # optimizer steps taken

    def start(self, num_classes: int, device: torch.device) -> None:
        """Create w (ones) and the accumulators for K classes on ``device``, or move loaded ones there."""
        if self.w is None:
            self.w = torch.ones(num_classes, device=device)
            self.confusion = torch.zeros(num_classes, num_classes, device=device)
            self.target = torch.zeros(num_classes, device=device)
            self.labels = torch.zeros(num_classes, device=device)
        elif self.w.device != device:  # loaded from a checkpoint on another device
            self.w, self.confusion, self.target, self.labels = (
                t.to(device) for t in (self.w, self.confusion, self.target, self.labels)
            )

    def class_weights(self, y_s: torch.Tensor, num_classes: int) -> torch.Tensor | None:
        """The source cross-entropy's per-sample weights (B_s,) under ``method.iw_cls``; None for ``none``."""
        if self.cfg.iw_cls == "none" or len(y_s) == 0:
            return None
        self.start(num_classes, y_s.device)
        weights = self.w[y_s]
        if self.cfg.iw_cls == "balanced":  # 1 / p_s[y], p_s from the labels seen so far and this batch's
            counts = self.labels + torch.bincount(y_s, minlength=num_classes).to(self.labels.dtype)
            weights = weights * (counts.sum() / counts)[y_s]
        return weights

    def accumulate(self, fw: Forward) -> None:
        """Add this batch's source confusion, target prediction and source labels (summed over torchrun processes;
        a batch with a non-finite prediction adds nothing)."""
        k = fw.z_s.shape[1]
        self.start(k, fw.z_s.device)
        with torch.no_grad():
            p_s, p_t = torch.softmax(fw.z_s.detach().float(), 1), torch.softmax(fw.z_t.detach().float(), 1)
            onehot = F.one_hot(fw.batch.y_s, k).float()
            sums = torch.cat([(p_s.T @ onehot).flatten(), p_t.sum(0), onehot.sum(0)])
            sums = summed(torch.where(torch.isfinite(sums).all(), sums, torch.zeros_like(sums)))
            self.confusion += sums[: k * k].view(k, k)
            self.target += sums[k * k : k * k + k]
            self.labels += sums[k * k + k :]

    def source_weights(self, fw: Forward) -> torch.Tensor | None:
        return self.w[fw.batch.y_s]

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        self.accumulate(fw)
        value, extra = super().__call__(fw)  # type: ignore[misc]
        on = fw.progress >= self.cfg.iw_warmup
        return value * float(on), {**extra, "iw_max": self.w.max(), "iw_min": self.w.min()}

    def after_step(self, net: DomainAdaptNet) -> None:
        self.step += 1
        if self.w is None or self.step % self.cfg.iw_every or self.target.sum() <= 0:
            return
        estimate = solve_weights(self.confusion.double().cpu().numpy(), self.target.double().cpu().numpy())
        new = torch.as_tensor(estimate, dtype=self.w.dtype, device=self.w.device)
        new = torch.where(self.confusion.sum(0) > 0, new, self.w)  # a class no source batch held keeps its weight
        self.w = (1 - self.cfg.iw_ma) * new + self.cfg.iw_ma * self.w
        self.confusion.zero_()
        self.target.zero_()

    def state_dict(self) -> dict[str, Any]:
        if self.w is None:
            return {"step": self.step}
        names = ("w", "confusion", "target", "labels")
        return {"step": self.step, **{n: getattr(self, n).clone() for n in names}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        for name in ("w", "confusion", "target", "labels"):
            setattr(self, name, state[name].clone() if name in state else None)


class ImportanceWeightedAdversarial(ImportanceWeights, DomainAdversarial):
    options = DomainAdversarial.options + IW_OPTIONS


class ImportanceWeightedConditional(ImportanceWeights, ConditionalAdversarial):
    options = ConditionalAdversarial.options + IW_OPTIONS


class ImportanceWeighted(Method):
    """Source cross-entropy weighted per ``method.iw_cls`` + λ_adv × the importance-weighted term."""

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        iw = self.terms[0][2]
        weights = iw.class_weights(batch.y_s, net.num_classes)  # type: ignore[attr-defined]
        if weights is not None:
            batch = dataclasses.replace(batch, w_s=weights if batch.w_s is None else batch.w_s * weights)
        return super().loss(net, batch, progress)


@METHODS.register("iwdan")
class IWDAN(ImportanceWeighted):
    term = ImportanceWeightedAdversarial


@METHODS.register("iwcdan")
class IWCDAN(ImportanceWeighted):
    term = ImportanceWeightedConditional
