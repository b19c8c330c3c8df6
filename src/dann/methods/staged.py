"""The loss of one stage of ``train.stages`` (``dann.training.stages``): a method, here ``inner``, run on one batch
per labeled domain that the stage reads, plus the target batch.

Each labeled domain d the stage classifies has its own batch and weight λ_d; the labeled domains A the stage aligns
take the place of the source in the method's terms (the adversarial loss, MMD...):

    total = Σ_d λ_d · weighted_mean(CE(logits_d, y_d), w_d) + λ_adv · term(f_A, f_t, z_A, z_t) + Σ_r w_r · reg_r

with ``weighted_mean`` and the terms of ``dann.methods.base``; w_d are the samples' weights when the stage reads
them (``sample_weights``), else none. With one labeled domain, classified with λ = 1 and aligned, this is exactly the
method's own loss. The source of the formula: the two-stage recipe of the system dann descends from (``staged``
preset), stage 1 ``CE(source) + λ1 · CE(mid)``, stage 2 ``weighted CE(mid) + λ3 · DANN's adv(mid, target)``."""

from __future__ import annotations

from typing import Any

import torch

from ..data.domains import AnyDomain
from ..models.network import DomainAdaptNet
from .base import Batch, Forward, LossOutput, Method, classification_loss, joint_features


class StageLoss:
    """``inner`` on the labeled domains ``parts`` (indices into ``DomainData.domains``, in batch order, ``names``
    theirs): ``classify`` maps a part's position to its λ, ``align`` lists the positions aligned with the target.
    It offers what the trainer asks of a method (``loss``, ``prepare``, ``refresh``, ``after_step``, state,
    ``forward_rows``)."""

    def __init__(
        self,
        inner: Method,
        names: tuple[str, ...],
        classify: dict[int, float],
        align: tuple[int, ...],
        sample_weights: bool = True,
    ) -> None:
        self.inner, self.names, self.classify, self.align = inner, names, classify, align
        self.sample_weights = sample_weights
        self.cfg = inner.cfg
        self.uses_source = bool(names)
        self.uses_target = inner.uses_target

    @property
    def uses_discriminator(self) -> bool:
        return self.inner.uses_discriminator

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        """``batch.x_s`` (B_s, ...) holds the parts' batches one after another, ``batch.parts`` their sizes."""
        sizes = batch.parts or (len(batch.x_s),)
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        rows = [slice(a, a + n) for a, n in zip(starts, sizes, strict=True)]
        x_t = batch.x_t if self.uses_target else batch.x_s[:0]
        f_s, f_t = joint_features(net, Batch(batch.x_s, batch.y_s, x_t), self.cfg.separate_forward)
        z = net.forward_head(torch.cat([f_s, f_t]))
        z_s, z_t = z[: len(f_s)], z[len(f_s) :]
        total, logged = torch.zeros((), device=z.device), {}
        w_s = batch.w_s if self.sample_weights else None
        for i, weight in self.classify.items():
            cls = classification_loss(z_s[rows[i]], batch.y_s[rows[i]], _rows(w_s, rows[i]), self.cfg.label_smoothing)
            total = total + weight * cls
            logged[f"cls_{self.names[i]}"] = cls.detach()
        if self.classify:
            logged["cls"] = total.detach()
        if not self.inner.terms:
            return LossOutput(total, logged)
        aligned = [rows[i] for i in self.align]
        x_a, y_a, f_a, z_a = (torch.cat([v[r] for r in aligned]) for v in (batch.x_s, batch.y_s, f_s, z_s))
        w_a, d_a = (torch.cat([v[r] for r in aligned]) if v is not None else None for v in (w_s, batch.d_s))
        fw = Forward(net, Batch(x_a, y_a, x_t, w_a, d_a), f_a, f_t, z_a, z_t, progress, self.inner.steps)
        return self.inner.add_terms(fw, total, logged)

    def prepare(self, net: DomainAdaptNet) -> None:
        self.inner.prepare(net)

    def refresh(self, net: DomainAdaptNet, target: AnyDomain, step: int, epoch_steps: int, batch_size: int) -> None:
        self.inner.refresh(net, target, step, epoch_steps, batch_size)

    def after_step(self, net: DomainAdaptNet) -> None:
        self.inner.after_step(net)

    def eval_weights(self) -> dict[str, torch.Tensor] | None:
        return self.inner.eval_weights()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def forward_rows(self, rows: int) -> int:
        """The fewest samples a training forward sees with ``rows`` per domain's batch: every part's and the
        target's in one forward, unless the method forwards the target apart (see ``Method.forward_rows``)."""
        labeled = rows * len(self.names)
        if not (self.uses_source and self.uses_target):
            return labeled or rows
        apart = self.cfg.separate_forward or any(term.forwards_target_alone for _, _, term in self.inner.terms)
        return rows if apart else labeled + rows

    def forward_note(self) -> str:
        return self.inner.forward_note() or f"the stage forwards {len(self.names)} labeled batch(es)"


def _rows(w: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return w[rows] if w is not None else None
