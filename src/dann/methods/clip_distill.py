"""CLIP knowledge distillation on the target: CMKD, Cross-Modal Knowledge Distillation (Zhou & Zhou, "Unsupervised
Domain Adaption Harnessing Vision-Language Pre-training", IEEE TCSVT 2024; reference code Wenlve-Zhou/VLP-UDA,
``models/cmkd.py``). A frozen CLIP zero-shot classifier (``dann.clip.ZeroShotTeacher``) teaches the target.

On target logits z_t (B, K) and the teacher's zero-shot logits z_c (B, K):

    p = softmax(z_t),  q = softmax(z_c)                  student and teacher probabilities (B, K)
    c_i = exp(−KL(q_i ‖ p_i)),  KL(q‖p) = Σ_k q_k (log q_k − log p_k)
                                                         per-sample confidence in (0, 1], no gradient: 1 where the
                                                         two agree, → 0 where they disagree (the reference's
                                                         ``F.kl_div(p.log(), q)``, teacher first)
    G(P, w) = Σ_i w_i (1 − Σ_k P_ik² / Σ_j P_jk)         Gini impurity of the rows of P (B, K), each class's square
                                                         weighted by its batch mass Σ_j P_jk (no gradient)
    m = (p + q) / 2                                      the student pulled halfway to the teacher
    cmkd = G(p, c) + G(m, 1 − c)                         self-training where they agree, distillation where not
    λ(t) = 2 / (1 + exp(−γ t)) − 1,  γ = 1               the sigmoid ramp over progress t ∈ [0, 1] (0 → 0.462)
    clip_distill = λ(t) · cmkd

Summed over the batch, as the reference does: the term grows with ``train.batch_size`` (the reference's is 32).
As a method its weight ``method.lambda_adv`` defaults to the reference's λ1 = 0.25 (office_home.yaml); as a
regularizer on any method it takes the weight given, ``method.regularizers: {clip_distill: w}``. The reference's
other two terms train CLIP's own text classifier (a source cross-entropy, a Gini term on its target outputs); here
the teacher stays frozen, so they have no place. Where target batches are not augmented (``data.augment=false``) the
teacher's logits are exact per target image and are kept, by index, across steps and in checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..clip.check import check_teacher, report_teacher
from ..clip.teacher import ZeroShotTeacher, build_teacher
from .base import METHODS, REGULARIZERS, Forward, Method, Term

if TYPE_CHECKING:
    from ..config import Config
    from ..data.domains import DomainData

RAMP_GAMMA = 1.0  # the reference's LambdaSheduler(gamma=1.0)


def ramp(progress: float, gamma: float = RAMP_GAMMA) -> float:
    """λ(t) = 2 / (1 + exp(−γ t)) − 1 at progress t ∈ [0, 1]: 0 at the start, 0.462 at the end for γ = 1."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def agreement(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-sample confidence exp(−KL(q ‖ p)) (B,) of student probabilities ``p`` (B, K) and teacher ``q`` (B, K),
    detached; 0 log 0 = 0."""
    kl = (q * (q.clamp_min(1e-12).log() - p.clamp_min(1e-12).log())).sum(-1)
    return torch.exp(-kl).detach()


def gini_impurity(probs: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """G(P, w) = Σ_i w_i (1 − Σ_k P_ik² / Σ_j P_jk) of probabilities (B, K) and weights (B,) → scalar; the column
    masses Σ_j P_jk carry no gradient."""
    mass = probs.sum(0, keepdim=True).detach().clamp_min(1e-12)
    return (weight * (1 - (probs**2 / mass).sum(-1))).sum()


def cmkd_loss(z_t: torch.Tensor, z_clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cmkd, c): G(p, c) + G((p + q) / 2, 1 − c) (scalar) and the confidences c (B,) of student logits z_t (B, K)
    and teacher logits z_clip (B, K), in float32. Raises ``ValueError`` when the shapes differ."""
    if z_t.shape != z_clip.shape:
        raise ValueError(f"student logits {tuple(z_t.shape)} and teacher logits {tuple(z_clip.shape)} differ")
    p = torch.softmax(z_t.float(), 1)
    q = torch.softmax(z_clip.detach().float(), 1)
    c = agreement(p, q)
    return gini_impurity(p, c) + gini_impurity((p + q) / 2, 1 - c), c


@REGULARIZERS.register("clip_distill")
class CLIPDistillation(Term):
    """``clip_distill`` above. The teacher is built by ``bind`` (it needs the class names) and reports its accuracy
    on the labeled source in the start-up summary, with a warning when it is no better than chance."""

    options = ("clip_model", "clip_file", "clip_templates")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.teacher: ZeroShotTeacher | None = None
        self.logits: torch.Tensor | None = None  # (N_t, K) cached teacher logits, where exact
        self.known: torch.Tensor | None = None  # (N_t,) which rows of ``logits`` are filled
        self.pending: tuple[DomainData, Config, Callable[[str], None] | None] | None = None  # to check in prepare
        self.shared = False  # the teacher is an earlier stage's (Term.share)

    def bind(self, data: DomainData, cfg: Config, echo: Callable[[str], None] | None) -> None:
        """Build the teacher for ``data.classes`` (raises ``ConfigError`` for class names that are numbers or a
        file at fault) and, where target batches are not augmented, the empty cache; ``prepare`` checks it."""
        if self.teacher is None:
            self.teacher = build_teacher(self.cfg, data.classes, data.image)
        self.pending = None if self.shared else (data, cfg, echo)  # a shared teacher was checked where it was built
        if not cfg.data.augment and not cfg.data.invert:  # each target image reaches the teacher as it is
            self.logits = torch.zeros(len(data.target_train), len(data.classes))
            self.known = torch.zeros(len(data.target_train), dtype=torch.bool)

    def share(self, other: Term) -> None:
        """Take the teacher of ``other``, an earlier stage's term of the same CLIP model, file and prompts: a run
        with several stages that train the teacher builds it once."""
        same = isinstance(other, CLIPDistillation) and all(
            getattr(self.cfg, k) == getattr(other.cfg, k) for k in self.options
        )
        if same and self.teacher is None and other.teacher is not None:
            self.teacher, self.shared = other.teacher, True

    def prepare(self, net: torch.nn.Module) -> None:
        """Move the teacher (and the cache) to the network's device, then measure and report the teacher's accuracy
        on the labeled source (``dann.clip.check``)."""
        if self.teacher is None:
            raise RuntimeError("clip_distill: bind(data, cfg) must build the teacher before prepare")
        device = next(net.parameters()).device
        self.teacher.to(device)
        if self.logits is not None and self.known is not None:
            self.logits, self.known = self.logits.to(device), self.known.to(device)
        if self.pending is not None:
            data, cfg, echo = self.pending
            most, batch = cfg.selection.max_samples, cfg.train.eval_batch_size
            report_teacher(check_teacher(self.teacher, data, self.cfg.clip_model, batch, most), echo)
            self.pending = None

    def teacher_logits(self, x_t: torch.Tensor, i_t: torch.Tensor | None) -> torch.Tensor:
        """The teacher's logits (B_t, K) of target images ``x_t``; from the cache for indices ``i_t`` it holds."""
        assert self.teacher is not None
        if self.logits is None or self.known is None or i_t is None:
            return self.teacher(x_t)
        new = ~self.known[i_t]
        if bool(new.any()):  # one host sync per step while the cache fills, none once every image is in it
            self.logits[i_t[new]] = self.teacher(x_t[new])
            self.known[i_t[new]] = True
        return self.logits[i_t]

    def __call__(self, fw: Forward) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        if self.teacher is None:
            raise RuntimeError("clip_distill: bind(data, cfg) must build the teacher before the first step")
        loss, c = cmkd_loss(fw.z_t, self.teacher_logits(fw.batch.x_t, fw.batch.i_t))
        weight = ramp(fw.progress)
        return weight * loss, {"clip_agree": c.mean().detach(), "clip_ramp": weight}

    def state_dict(self) -> dict[str, Any]:
        return {"logits": self.logits, "known": self.known} if self.logits is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("logits") is not None and self.logits is not None:
            self.logits = state["logits"].to(self.logits.device)
            self.known = state["known"].to(self.logits.device)


@METHODS.register("clip_distill")
class CLIPDistill(Method):
    """Source cross-entropy + λ_adv · clip_distill (λ_adv = 0.25, the reference's λ1)."""

    term = CLIPDistillation
    term_name = "clip_distill"
    needs_names = True
    defaults: ClassVar[dict[str, Any]] = {"lambda_adv": 0.25}
    auto_bf16 = False  # not measured in bf16 yet
