"""Self-ensembling: a mean teacher for domain adaptation (French, Mackiewicz, Fisher, "Self-ensembling for visual
domain adaptation", ICLR 2018; official code Britefury/self-ensemble-visual-domain-adapt,
``experiment_domainadapt_meanteacher.py``). The student is the trained network; the teacher is an exponential moving
average of its parameters (Tarvainen & Valpola, NeurIPS 2017) that sees only target batches::

    p_t = softmax(student(aug(x_t)))      q_t = softmax(teacher(aug'(x_t)))   (no gradient)   both (B_t, K)
    consistency = 1/B_t Σ_t 1[max_k q_tk > τ] · 1/K Σ_k (p_tk − q_tk)²    τ = ``method.teacher_threshold`` (0.968)
              + w_b · (1/B_t Σ_t 1[max_k q_tk > τ]) · Σ_k BCE(mean_t p_tk, 1/K)   w_b = ``method.class_balance``
    total = CE(student(aug(x_s)), y_s) + λ · consistency                    λ = ``method.lambda_adv`` (3)

``aug`` and ``aug'`` are independent draws of ``dann.data.strong.self_ensembling_augment``, on images with the
reference's colour augmentation (intensity flip, scale, offset: ``method.intensity_augment``, on by default; the
reference turns it on for its colour and polarity shifts, and dann's benchmark found no digit shift it hurt). The
student forwards the source and the target batches separately (each its own BatchNorm batch); the teacher runs in train
mode on target batches only, so its BatchNorm layers normalize with target batch statistics and its own running
statistics (kept apart from the student's) become target statistics. After each step the teacher's parameters follow the
student's, θ' ← α θ' + (1 − α) θ (α = ``method.teacher_momentum``, 0.99); its buffers are its own. Evaluation,
checkpoints' ``eval_model`` and prediction use the teacher. The squared difference is averaged over classes, as the
official code does (``aug_loss.mean(dim=1)``), which the weight 3 was tuned with; the class-balance term is scaled by
the share of confident samples as there (without ramp-up)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch.func import functional_call

from ..data.strong import self_ensembling_augment
from ..models.network import DomainAdaptNet
from .base import METHODS, Batch, Forward, LossOutput, Method, Term, classification_loss


def consistency_loss(p_t: torch.Tensor, q_t: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Student probabilities (B, K), teacher probabilities (B, K) → (mean over the batch of the masked squared
    difference averaged over classes, share of the batch whose teacher max-probability exceeds ``threshold``)."""
    mask = (q_t.max(1).values > threshold).float()
    return (((p_t - q_t) ** 2).mean(1) * mask).mean(), mask.mean()


def class_balance_loss(p_t: torch.Tensor) -> torch.Tensor:
    """Σ_k BCE(p̄_k, 1/K) for the batch-mean prediction p̄ (K,) of probabilities (B, K): pulls the mean target
    prediction toward uniform (the official code's ``robust_binary_crossentropy``, 1e-6 inside the logs)."""
    mean, u = p_t.mean(0), 1.0 / p_t.shape[1]
    return -(u * (mean + 1e-6).log() + (1 - u) * (1 - mean + 1e-6).log()).sum()


class SelfEnsembling(Term):
    options = ("teacher_momentum", "teacher_threshold", "class_balance", "intensity_augment")
    forwards_target_alone = True
    teacher: dict[str, torch.Tensor] | None = None  # the teacher's full state_dict: EMA parameters, own buffers

    def prepare(self, net: DomainAdaptNet) -> None:
        if self.teacher is None:
            self.teacher = {k: v.detach().clone() for k, v in net.state_dict().items()}

    def after_step(self, net: DomainAdaptNet) -> None:
        with torch.no_grad():  # parameters only: the teacher's BatchNorm buffers come from its own target forwards
            for k, p in net.named_parameters():
                self.teacher[k].lerp_(p.detach(), 1 - self.cfg.teacher_momentum)  # type: ignore[index]

    def eval_weights(self) -> dict[str, torch.Tensor] | None:
        return self.teacher

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher} if self.teacher is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "teacher" in state:
            self.teacher = {k: v.clone() for k, v in state["teacher"].items()}

    def teacher_logits(self, net: DomainAdaptNet, x_t: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (B, K) on a target view, in train mode: BatchNorm normalizes with the batch and
        updates the teacher's own running statistics in place; the student's are untouched."""
        training = net.training
        net.train()
        try:
            with torch.no_grad():
                return functional_call(net, self.teacher, (x_t,))  # type: ignore[arg-type]
        finally:
            net.train(training)

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        if self.teacher is None:
            self.prepare(fw.net)
        z_teacher = self.teacher_logits(fw.net, self_ensembling_augment(fw.batch.x_t, self.cfg.intensity_augment))
        q_t = torch.softmax(z_teacher.float(), 1)
        p_t = torch.softmax(fw.z_t.float(), 1)  # in float32 under autocast
        loss, kept = consistency_loss(p_t, q_t, self.cfg.teacher_threshold)
        if self.cfg.class_balance > 0:
            loss = loss + self.cfg.class_balance * kept * class_balance_loss(p_t)
        return loss, {"mask_rate": kept}


@METHODS.register("mean_teacher")
class MeanTeacher(Method):
    """Self-ensembling (French et al., ICLR 2018): source cross-entropy on an augmented source batch + λ_adv ×
    ``consistency`` between the student and its EMA teacher on two augmented views of the target batch. Defaults
    from the paper and its official code: λ_adv = 3 (``--unsup_weight``), and a Linear-BatchNorm-ReLU bottleneck of
    256 under the head on the small backbones (the reference digit networks normalize every layer)."""

    term = SelfEnsembling
    term_name = "consistency"
    defaults: ClassVar[dict[str, Any]] = {"lambda_adv": 3.0, "label_smoothing": 0.0}  # the reference: plain CE
    # train.precision=auto may give it bf16: within fp32's seed spread on digits, digits_scanner, digits_inverted

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        def view(x: torch.Tensor) -> torch.Tensor:
            return self_ensembling_augment(x, self.cfg.intensity_augment)

        f_s = net.forward_features(view(batch.x_s))  # each domain its own BatchNorm batch
        f_t = net.forward_features(view(batch.x_t))
        fw = Forward(net, batch, f_s, f_t, net.forward_head(f_s), net.forward_head(f_t), progress, self.steps)
        total = classification_loss(fw.z_s, batch.y_s, batch.w_s, self.cfg.label_smoothing)
        return self.add_terms(fw, total, {"cls": total.detach()})

    def forward_note(self) -> str:
        return f"method {self.cfg.name} forwards each domain alone"
