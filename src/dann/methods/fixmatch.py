"""AdaMatch (Berthelot, Roelofs, Sohn, Carlini, Kurakin, "AdaMatch: A Unified Approach to Semi-Supervised Learning
and Domain Adaptation", ICLR 2022; official code google-research/adamatch ``domain_adaptation/adamatch.py``), the
domain-adaptation form of FixMatch (Sohn et al., NeurIPS 2020). Registered as ``adamatch`` and, for the runs and
configs that name it so, ``fixmatch``. Per step, with ``strong`` = ``dann.data.strong.strong_augment``:

    z = net(cat(x_s, strong(x_s), x_t, strong(x_t)))            one forward: BatchNorm sees both domains
    z'_s = net(cat(x_s, strong(x_s)))                            source alone (running statistics left as they are)
    z_s ← z_s + u ⊙ (z'_s − z_s), u ~ U[0, 1] per logit          random logit interpolation
    cls = ½ (CE(z_s^weak, y_s) + CE(z_s^strong, y_s))
    q_t = softmax(z_t^weak) ⊙ p̄_s / p̄_t, renormalised             distribution alignment, per class (no gradient)
    τ_rel = τ · mean_s max softmax(z_s^weak)                    relative confidence threshold, τ = 0.9
    adamatch = mean_t 1[max q_t ≥ τ_rel] · CE(z_t^strong, argmax q_t)
    total = cls + μ(p) · λ · adamatch,  μ(p) = ½ − ½ cos(π · min(1, p / warm-up))

p̄_s is an exponential moving average (0.999) of the mean source prediction, p̄_t the mean over the last 128 steps
of the mean target prediction, both starting at 1/K (the reference's ``ExponentialMovingAverage`` and
``MovingAverage(buffer_size=128)``); the warm-up is the first half of the run (``method.unlabeled_warmup`` 0.5); λ is
``method.lambda_adv`` (1). The network is evaluated with an EMA of its weights (``method.ema_eval`` 0.999) and has a
Linear-BatchNorm-ReLU bottleneck (256) on the small backbones. The reference's target batch is 3 times the source's
(``uratio``); here ``method.uratio`` sets it, 1 by default (both domains' batches ``train.batch_size``).

The target term alone is also a regularizer for any method that reads the target (``method.regularizers:
{fixmatch: 1.0}``, e.g. on top of DANN): there the strong target view is one extra forward, and the pseudo-labels
may come from an EMA teacher (``method.ema_teacher`` > 0; Tarvainen & Valpola, NeurIPS 2017) run as evaluation
runs it."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..data.strong import strong_augment
from ..models.network import DomainAdaptNet
from .base import (
    METHODS,
    REGULARIZERS,
    Batch,
    Forward,
    LossOutput,
    Method,
    Term,
    WeightAverage,
    classification_loss,
    frozen_batchnorm_statistics,
)

SOURCE_MOMENTUM = 0.999  # the EMA of the mean source prediction (objax ExponentialMovingAverage's default)
TARGET_WINDOW = 128  # steps averaged for the mean target prediction (MovingAverage(buffer_size=128))


def pseudo_label_loss(z_strong: torch.Tensor, q_t: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Strong-view logits (B, K) and pseudo-label probabilities (B, K) → (mean masked CE, share of the batch kept);
    a row is kept when its top probability is at least ``threshold``."""
    conf, pseudo = q_t.max(1)
    mask = (conf >= threshold).float()
    return (F.cross_entropy(z_strong.float(), pseudo, reduction="none") * mask).mean(), mask.mean()


def warmup(progress: float, length: float) -> float:
    """AdaMatch's unlabeled-loss weight: 0 → 1 along a half cosine over the first ``length`` of the run, then 1
    (``ScheduleCosPhases(1, [(0.5, 1), ...], start_value=0)``); 1 throughout when ``length`` is 0."""
    if length <= 0:
        return 1.0
    return 0.5 - 0.5 * math.cos(math.pi * min(1.0, progress / length))


class DistributionAlignment:
    """Per-class distribution alignment: target probabilities (B, K) × p̄_s / p̄_t, renormalised per row, where
    p̄_s is an EMA (``SOURCE_MOMENTUM``) of the batch-mean source probabilities and p̄_t the mean of the last
    ``TARGET_WINDOW`` batch-mean target probabilities; both start at the uniform 1/K and are updated with the
    batch before it is aligned, as in the reference."""

    def __init__(self) -> None:
        self.p_source: torch.Tensor | None = None  # (K,)
        self.p_target: torch.Tensor | None = None  # (TARGET_WINDOW, K), a ring buffer
        self.index = 0

    def __call__(self, q_t: torch.Tensor, p_s: torch.Tensor | None) -> torch.Tensor:
        k = q_t.shape[1]
        if self.p_source is None or self.p_target is None:
            self.p_source = torch.full((k,), 1 / k, device=q_t.device)
            self.p_target = torch.full((TARGET_WINDOW, k), 1 / k, device=q_t.device)
        if p_s is not None:
            self.p_source.lerp_(p_s.mean(0), 1 - SOURCE_MOMENTUM)
        self.p_target[self.index % TARGET_WINDOW] = q_t.mean(0)
        self.index += 1
        aligned = q_t * (1e-6 + self.p_source) / (1e-6 + self.p_target.mean(0))
        return aligned / aligned.sum(1, keepdim=True)

    def state_dict(self) -> dict[str, Any]:
        if self.p_source is None:
            return {}
        return {"p_source": self.p_source, "p_target": self.p_target, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "p_source" in state:
            self.p_source, self.p_target = state["p_source"].clone(), state["p_target"].clone()
            self.index = int(state["index"])


@REGULARIZERS.register("fixmatch")
class SelfTraining(Term):
    """AdaMatch's target term (see the module docstring): aligned, relatively thresholded pseudo-labels of the weak
    view train the strong view, weighted by the warm-up. Reads the strong view's logits from the method's forward
    (``Forward.z_t_strong``) or, as a regularizer, forwards ``strong(x_t)`` itself."""

    options = (
        "fixmatch_threshold",
        "ema_teacher",
        "distribution_alignment",
        "unlabeled_warmup",
        "logit_interpolation",
        "uratio",
    )
    forwards_target_alone = True
    teacher: WeightAverage | None = None

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.alignment = DistributionAlignment()

    def prepare(self, net: DomainAdaptNet) -> None:
        if self.cfg.ema_teacher > 0 and self.teacher is None:
            self.teacher = WeightAverage(self.cfg.ema_teacher)
            self.teacher.prepare(net)

    def after_step(self, net: DomainAdaptNet) -> None:
        if self.teacher is not None:
            self.teacher.update(net)

    def state_dict(self) -> dict[str, Any]:
        state = {"alignment": self.alignment.state_dict()}
        return state | ({"teacher": self.teacher.state_dict()} if self.teacher is not None else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alignment.load_state_dict(state.get("alignment", {}))
        if "teacher" in state:  # also before ``prepare``: a later stage of train.stages is prepared after the load
            self.teacher = self.teacher or WeightAverage(self.cfg.ema_teacher)
            self.teacher.load_state_dict(state["teacher"])

    def teacher_logits(self, net: DomainAdaptNet, x_t: torch.Tensor) -> torch.Tensor:
        """The EMA teacher's logits (B, K), as it would be evaluated: BatchNorm on its averaged running statistics,
        no dropout, nothing of the student changed."""
        training = net.training
        net.eval()
        try:
            return functional_call(net, self.teacher.weights, (x_t,))  # type: ignore[union-attr]
        finally:
            net.train(training)

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        with torch.no_grad():
            z_weak = fw.z_t if self.teacher is None else self.teacher_logits(fw.net, fw.batch.x_t)
            q_t = torch.softmax(z_weak.detach().float(), 1)
            p_s = torch.softmax(fw.z_s.detach().float(), 1) if len(fw.z_s) else None
            if self.cfg.distribution_alignment:
                q_t = self.alignment(q_t, p_s)
            threshold = self.cfg.fixmatch_threshold
            if p_s is not None:
                threshold = threshold * p_s.max(1).values.mean()
        z_strong = fw.z_t_strong
        if z_strong is None:
            with frozen_batchnorm_statistics(fw.net):  # the strong view must not pull the running statistics
                z_strong = fw.net(strong_augment(fw.batch.x_t))
        loss, kept = pseudo_label_loss(z_strong, q_t, threshold)
        weight = warmup(fw.progress, self.cfg.unlabeled_warmup)
        return weight * loss, {"pseudo_kept": kept, "unlabeled_weight": weight}


@METHODS.register("adamatch")
@METHODS.register("fixmatch")
class AdaMatch(Method):
    """AdaMatch as published (module docstring): one forward over both domains' weak and strong views, random logit
    interpolation with a source-only forward, and the target term ``SelfTraining``."""

    defaults: ClassVar[dict[str, Any]] = {"ema_eval": 0.999}
    auto_bf16 = False  # not measured in bf16 yet: train.precision=auto keeps it in fp32
    term = SelfTraining
    term_name = "fixmatch"

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        x_s, x_t, n, m = batch.x_s, batch.x_t, len(batch.x_s), len(batch.x_t)
        views_s = torch.cat([x_s, strong_augment(x_s)])
        f = net.forward_features(torch.cat([views_s, x_t, strong_augment(x_t)]))
        z = net.forward_head(f)
        z_src = z[: 2 * n]
        if self.cfg.logit_interpolation:
            with frozen_batchnorm_statistics(net):  # source-only BatchNorm statistics; running ones left as they are
                z_alone = net(views_s)
            z_src = z_src + (z_alone - z_src) * torch.rand_like(z_src)
        z_s, z_s_strong = z_src[:n], z_src[n:]
        y2 = torch.cat([batch.y_s, batch.y_s])
        w2 = torch.cat([batch.w_s, batch.w_s]) if batch.w_s is not None else None
        cls = classification_loss(torch.cat([z_s, z_s_strong]), y2, w2, self.cfg.label_smoothing)
        f_s, f_t = f[:n], f[2 * n : 2 * n + m]
        fw = Forward(net, batch, f_s, f_t, z_s, z[2 * n : 2 * n + m], progress, self.steps, z[2 * n + m :])
        return self.add_terms(fw, cls, {"cls": cls.detach()})
