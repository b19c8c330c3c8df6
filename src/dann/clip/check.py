"""How well CLIP's zero-shot classifier does on the labeled source: a label-free sign of whether it can teach on
this data.

The teacher never saw the source images, so its accuracy on any labeled source sample is a fair estimate of its
accuracy on data like the source; the target's may be lower (the domain shift), seldom much higher. Near chance, the
teacher has nothing to give: distilling it pulls the target predictions toward noise."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..data.domains import AnyDomain, DomainData
from ..errors import DataWarning
from .teacher import ZeroShotTeacher

Z = 1.96  # 95 % normal band of an accuracy measured on n samples
MIN_SAMPLES = 20  # below this the normal band means little (one sample: 1.000 ± 0.000): no verdict


@dataclass(frozen=True)
class TeacherCheck:
    """The teacher's accuracy ``acc`` on ``n`` labeled source samples (``split``: "held-out" or "training"), beside
    ``majority``, the share of the most common class among them (what always guessing it scores)."""

    acc: float
    n: int
    majority: float
    split: str
    model: str

    @property
    def band(self) -> float:
        """Half the width of the accuracy's 95 % band."""
        return Z * math.sqrt(max(self.acc * (1 - self.acc), 1e-12) / max(self.n, 1))

    @property
    def poor(self) -> bool:
        """True when the accuracy is not clearly above guessing the most common class (its 95 % band reaches it),
        measured on at least ``MIN_SAMPLES`` samples."""
        return self.n >= MIN_SAMPLES and self.acc - self.band <= self.majority

    def line(self) -> str:
        if self.n < MIN_SAMPLES:
            verdict = f"too few samples to judge (at least {MIN_SAMPLES}; data.val_fraction holds more out)"
        elif self.poor:
            verdict = "no better than guessing the most common class: it has nothing to teach here"
        else:
            verdict = "above chance: it can teach where the target looks like the source"
        return (
            f"teacher:  CLIP {self.model} zero-shot accuracy {self.acc:.3f} ± {self.band:.3f} on {self.n} {self.split} "
            f"source samples (most common class {self.majority:.3f}), {verdict}"
        )

    def warning(self) -> str:
        return (
            f"the CLIP teacher ({self.model}) scores {self.acc:.3f} on {self.n} labeled source samples, no better than "
            f"always guessing the most common class ({self.majority:.3f}): its zero-shot guesses are poor on these "
            "classes, and distilling them pulls the target toward noise; check the class names and "
            "method.clip_templates (e.g. 'a micrograph of a {}.'), or train without clip_distill"
        )


def evenly(n: int, most: int) -> torch.Tensor:
    """At most ``most`` indices spread evenly over ``range(n)`` (all of them when n ≤ most)."""
    return torch.arange(n) if n <= most else torch.linspace(0, n - 1, most).round().long().unique()


@torch.no_grad()
def check_teacher(
    teacher: ZeroShotTeacher, data: DomainData, model: str, batch_size: int = 512, max_samples: int = 2000
) -> TeacherCheck | None:
    """The teacher's accuracy on the source's held-out split (its training split when none is held out), on at most
    ``max_samples`` samples spread evenly over it; None when the source has no labeled sample."""
    from ..evaluation.metrics import evaluate_domain

    domain: AnyDomain | None = data.source_val if data.source_val is not None and len(data.source_val) else None
    split = "held-out" if domain is not None else "training"
    domain = domain if domain is not None else data.source_train
    if domain is None or domain.y is None or not len(domain):
        return None
    domain = domain.subset(evenly(len(domain), max_samples))
    metrics = evaluate_domain(teacher, domain, teacher.num_classes, batch_size)  # type: ignore[arg-type]
    y = domain.y
    majority = float(torch.bincount(y, minlength=teacher.num_classes).max()) / len(y)
    return TeacherCheck(float(metrics["acc"]), len(y), majority, split, model)


def report_teacher(check: TeacherCheck | None, echo: object | None) -> None:
    """``check``'s line through ``echo`` (when given); a ``DataWarning`` when the teacher is poor."""
    if check is None:
        return
    if callable(echo):
        echo(check.line())
    if check.poor:
        warnings.warn(check.warning(), DataWarning, stacklevel=3)
