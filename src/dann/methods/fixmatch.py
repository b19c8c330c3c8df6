"""Self-training with confidence-thresholded pseudo-labels and weak/strong consistency: FixMatch (Sohn et al.,
"FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020, Eq. 4) with the
relative confidence threshold of its domain-adaptation form, AdaMatch (Berthelot et al., ICLR 2022, Eq. 3–4):

    q_t = softmax(teacher(x_t))                  on the weakly augmented target batch, no gradient
    τ_rel = τ · mean_s max softmax(z_s)          τ = ``method.fixmatch_threshold``; τ alone without a source batch
    fixmatch = mean_t 1[max q_t > τ_rel] · CE(net(strong(x_t)), argmax q_t)

The relative threshold keeps the rule meaningful whatever the source confidence is (label smoothing caps it below
1, so a fixed 0.95 could never be reached). The teacher is the model itself, or with ``method.ema_teacher = m > 0``
an exponential moving average of its weights (w ← m w + (1 − m) w_model after each step; Tarvainen & Valpola, NeurIPS
2017), kept in checkpoints. The strong view is ``dann.data.strong.strong_augment``; its forward is one extra pass
over the target batch (two with a teacher). That forward normalizes with its own batch statistics but leaves
BatchNorm's running statistics as the main forward set them; the teacher runs as evaluation does (running
statistics, no dropout).

``fixmatch`` is a method (source cross-entropy + λ_adv · fixmatch) and a regularizer for any method that reads the
target (``method.regularizers: {fixmatch: 1.0}`` on top of DANN); with ``model.init_from`` it is the second stage
that starts from a trained run."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..data.strong import strong_augment
from ..models.network import DomainAdaptNet
from .base import METHODS, REGULARIZERS, Forward, Method, Term, frozen_batchnorm_statistics


def pseudo_label_loss(z_strong: torch.Tensor, q_t: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Strong-view logits (B, K) and teacher probabilities (B, K) → (mean masked CE, share of the batch kept)."""
    conf, pseudo = q_t.max(1)
    mask = (conf > threshold).float()
    return (F.cross_entropy(z_strong.float(), pseudo, reduction="none") * mask).mean(), mask.mean()


@REGULARIZERS.register("fixmatch")
class SelfTraining(Term):
    options = ("fixmatch_threshold", "ema_teacher")
    forwards_target_alone = True
    teacher: dict[str, torch.Tensor] | None = None

    def prepare(self, net: DomainAdaptNet) -> None:
        if self.cfg.ema_teacher > 0 and self.teacher is None:
            self.teacher = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def after_step(self, net: DomainAdaptNet) -> None:
        if self.teacher is None:
            return
        with torch.no_grad():
            for k, v in net.state_dict().items():
                if v.is_floating_point():
                    self.teacher[k].lerp_(v, 1 - self.cfg.ema_teacher)
                else:
                    self.teacher[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher} if self.teacher is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "teacher" in state:
            self.teacher = {k: v.clone() for k, v in state["teacher"].items()}

    def teacher_logits(self, net: DomainAdaptNet, x_t: torch.Tensor) -> torch.Tensor:
        """The EMA teacher's logits (B, K), as it would be evaluated: BatchNorm on its averaged running statistics,
        no dropout, nothing of the student changed."""
        training = net.training
        net.eval()
        try:
            return functional_call(net, self.teacher, (x_t,))
        finally:
            net.train(training)

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        with torch.no_grad():
            z_weak = fw.z_t if self.teacher is None else self.teacher_logits(fw.net, fw.batch.x_t)
            q_t = torch.softmax(z_weak.detach().float(), 1)
            threshold = self.cfg.fixmatch_threshold
            if len(fw.z_s):
                threshold = threshold * torch.softmax(fw.z_s.detach().float(), 1).max(1).values.mean()
        with frozen_batchnorm_statistics(fw.net):  # the strong view must not pull the running statistics
            z_strong = fw.net(strong_augment(fw.batch.x_t))
        loss, kept = pseudo_label_loss(z_strong, q_t, threshold)
        return loss, {"pseudo_kept": kept}


@METHODS.register("fixmatch")
class FixMatch(Method):
    term = SelfTraining
    term_name = "fixmatch"
