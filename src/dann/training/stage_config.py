"""One stage of ``train.stages``: a run trained in stages, each with its own method, classification domains, aligned
domains, steps and schedules (see ``dann.training.stages``). Defined apart from ``dann.config``, which types
``train.stages`` with it and checks each stage's ``method`` and ``optim`` keys against those sections."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from ..errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a stage's name, also its checkpoint's file name
RESERVED = ("last", "prev", "best")  # the run's own checkpoint files
STAGE_OPTIM_KEYS = ("lr", "lr_schedule", "lr_alpha", "lr_beta")  # one optimizer for the run: only its schedule varies


@dataclass(frozen=True)
class StageConfig:
    name: str = ""  # in the progress bar, metrics.jsonl and the report; default stage1, stage2...
    steps: int = 0  # this stage's optimizer steps (every stage gives steps, or every stage a fraction)
    fraction: float = 0.0  # this stage's share of train.steps
    method: dict[str, Any] = field(default_factory=dict)  # method.* keys over the run's, e.g. {name: dann}
    classify: dict[str, float] = field(default_factory=dict)  # labeled domain or role → λ of its CE; {}: all, 1
    align: tuple[str, ...] | None = None  # labeled domains or roles aligned with the target; null: those classified
    sample_weights: bool = True  # the labeled samples' weights in this stage's classification loss
    optim: dict[str, Any] = field(default_factory=dict)  # lr, lr_schedule, lr_alpha, lr_beta for this stage

    def __post_init__(self) -> None:
        shown = f"stage {self.name or '(unnamed)'!r}"
        if self.name and (not NAME.fullmatch(self.name) or self.name in RESERVED):
            raise ConfigError(
                f"{shown}: a stage name is letters, digits, _, - and . (not first), and not {', '.join(RESERVED)}: it "
                "names the stage's checkpoint file"
            )
        if self.steps < 0 or not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"{shown}: steps must be >= 0 and fraction in [0, 1]")
        if (self.steps > 0) == (self.fraction > 0):
            raise ConfigError(
                f"{shown} needs either steps (a number of steps) or fraction (a share of train.steps), not "
                f"{'both' if self.steps else 'neither'}"
            )
        for domain, weight in self.classify.items():
            if weight < 0:
                raise ConfigError(f"{shown}: classify.{domain} must be >= 0, got {weight}")
        unknown = sorted(set(self.optim) - set(STAGE_OPTIM_KEYS))
        if unknown:
            raise ConfigError(
                f"{shown}: optim.{unknown[0]} cannot change between stages (one optimizer for the run); a stage "
                f"sets {', '.join(STAGE_OPTIM_KEYS)}"
            )


def stage_label(index: int, stage: StageConfig) -> str:
    """A stage's name, or ``stage<i>`` (counted from 1) when it has none."""
    return stage.name or f"stage{index + 1}"


def stage_steps(stages: tuple[StageConfig, ...], total: int) -> list[int]:
    """Each stage's steps. With ``steps`` they must add up to ``total`` (``train.steps``); with ``fraction`` they
    must add up to 1, and stage i ends at ``round(total · (f_1 + ... + f_i))``. Raises ``ConfigError``."""
    labels = [stage_label(i, s) for i, s in enumerate(stages)]
    twice = sorted({n for n in labels if labels.count(n) > 1})
    if twice:
        raise ConfigError(f"train.stages: two stages are named {twice[0]!r}; give each its own name")
    if all(s.steps for s in stages):
        steps = [s.steps for s in stages]
        if sum(steps) != total:
            parts = " + ".join(f"{n} {k}" for n, k in zip(labels, steps, strict=True))
            raise ConfigError(
                f"train.stages add up to {sum(steps)} steps ({parts}) but train.steps={total}: set train.steps="
                f"{sum(steps)}, or give each stage a fraction of train.steps instead of steps"
            )
        return steps
    if any(s.steps for s in stages):
        raise ConfigError("train.stages: give every stage steps, or every stage a fraction, not a mix")
    fractions = [s.fraction for s in stages]
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"train.stages: the fractions add up to {sum(fractions):g}, not 1")
    ends, cumulative = [], 0.0
    for f in fractions:
        cumulative += f
        ends.append(round(total * cumulative))
    ends[-1] = total
    steps = [b - a for a, b in pairwise([0, *ends])]
    if min(steps) < 1:
        short = labels[steps.index(min(steps))]
        raise ConfigError(f"train.stages: stage {short!r} gets no step of train.steps={total}; raise train.steps")
    return steps
