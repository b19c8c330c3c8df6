"""Noise bands for validator scores: how far a score would move on another draw of as many samples.

A validator scores a checkpoint on at most ``selection.max_samples`` unlabeled target samples (and, for ``source_acc``
and ``dev``, source samples); another draw of as many samples gives another score. The band is
``score ± 1.96 · se``, with the standard error ``se`` from the delete-d jackknife with d = n/2 ("half-sampling";
Shao & Wu, "A General Theory for Jackknife Variance Estimation", Annals of Statistics 1989): the validator is
recomputed on ``REPLICATES`` random halves of every sample set, drawn independently and without replacement, and
``se² = r/(n − r) · Var(replicates)`` for halves of r of the n target samples (≈ Var(replicates)).

Why not the ordinary bootstrap (draws with replacement): a drawn-twice sample is its own nearest neighbour, which moves
``snd`` and ``class_ami`` (on 2,000 samples their bootstrap interval left out the score itself), and halves cost half
as much to score. Both agree on the smooth validators (``benchmarks/band_calibration.py``).

The band covers the sampling of the target (and source) samples only: another seed trains another model, which can
differ by more than the band."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.domains import DomainData
from ..evaluation.loading import load_run
from .validators import ValidationInputs, collect_inputs, needs_source, score_one

REPLICATES = 100
SLOW_REPLICATES = {"dev": 20, "class_ami": 20}  # each replicate fits a classifier or k-means: about 1 s on 2,000 rows
MIN_BAND_SAMPLES = 4  # fewer target samples: no band (two halves of one sample each cannot measure a spread)
Z_95 = 1.959964  # the 97.5 % quantile of the standard normal: a 95 % band


@dataclass(frozen=True)
class Band:
    """A validator ``score`` with its 95 % noise band [``low``, ``high``], from ``n`` target samples."""

    score: float
    low: float
    high: float
    n: int

    def overlaps(self, other: Band) -> bool:
        return self.low <= other.high and other.low <= self.high

    def __str__(self) -> str:
        return f"{self.score:.4g} ± {(self.high - self.low) / 2:.2g}"

    def to_dict(self) -> dict[str, float | int]:
        return {"score": self.score, "low": self.low, "high": self.high, "n": self.n}


def _half(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=g)[: n // 2]


def half_sample(v: ValidationInputs, g: torch.Generator) -> ValidationInputs:
    """A random half of each sample set of ``v`` (source training, source held-out, target), drawn independently,
    without replacement."""
    t, s = _half(len(v.logits_t), g), _half(len(v.f_s), g)
    if v.f_sv is None:
        return ValidationInputs(v.f_s[s], None, None, None, v.f_t[t], v.logits_t[t])
    sv = _half(len(v.f_sv), g)
    return ValidationInputs(v.f_s[s], v.f_sv[sv], v.logits_sv[sv], v.y_sv[sv], v.f_t[t], v.logits_t[t])


def score_band(
    name: str, inputs: ValidationInputs, replicates: int | None = None, seed: int = 0
) -> tuple[Band | None, str]:
    """(the 95 % band of validator ``name`` on ``inputs``, "") or (None, why there is none: the validator has no
    score on these inputs or on half of them, or there are fewer than 4 target samples). Deterministic for a given
    ``seed``."""
    from threadpoolctl import threadpool_limits

    n = len(inputs.logits_t)
    if n < MIN_BAND_SAMPLES:
        return None, f"{n} target sample{'s are' if n != 1 else ' is'} too few to measure the noise"
    replicates = replicates or SLOW_REPLICATES.get(name, REPLICATES)
    g = torch.Generator().manual_seed(seed)
    with threadpool_limits(1):  # small problems: BLAS threads only contend
        score, problem = score_one(name, inputs)
        values = []
        for _ in range(replicates if score is not None else 0):
            value, problem = score_one(name, half_sample(inputs, g))
            if value is None:
                return None, f"no score on half of the samples ({problem})"
            values.append(value)
    if score is None:
        return None, problem
    r = n // 2
    se = math.sqrt(r / (n - r)) * torch.tensor(values, dtype=torch.float64).std().item()
    return Band(score, score - Z_95 * se, score + Z_95 * se, n), ""


def checkpoint_band(run_dir: str | Path, checkpoint: str, validator: str, data: DomainData) -> tuple[Band | None, str]:
    """``score_band`` of a run's checkpoint (a path inside ``run_dir``) on ``data``, the data it trained on: the
    outputs are recomputed on the same fixed subsets the trainer scored (``selection.max_samples`` per set), so the
    score is the one in ``metrics.jsonl``. Raises what ``load_run`` raises for a missing or damaged checkpoint."""
    model = load_run(run_dir, checkpoint)
    cfg = model.config
    inputs = collect_inputs(
        model.net, data, cfg.selection.max_samples, cfg.train.eval_batch_size, source=needs_source(validator)
    )
    return score_band(validator, inputs)
