"""Schedules: pure functions of training progress ``p`` in [0, 1]. No hidden state, so resuming at a step
reproduces the same values (the step lives in the checkpoint)."""

from __future__ import annotations

import math

from ..registry import Registry

GRL_SCHEDULES: Registry = Registry("GRL schedule")
LR_SCHEDULES: Registry = Registry("learning-rate schedule")


def _check(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {p}")
    return p


def grl_lambda(p: float, gamma: float = 10.0) -> float:
    """DANN paper (Ganin et al. 2016, eq. 14): ``2 / (1 + exp(-gamma p)) - 1``; 0 at p=0, about 1 at p=1."""
    return 2.0 / (1.0 + math.exp(-gamma * _check(p))) - 1.0


@GRL_SCHEDULES.register("ganin")
def ganin_grl(p: float, lo: float = 0.0, hi: float = 1.0, gamma: float = 10.0) -> float:
    """The paper's schedule scaled to peak at ``hi``: ``hi * grl_lambda(p, gamma)`` (``lo`` is unused)."""
    return hi * grl_lambda(p, gamma)


@GRL_SCHEDULES.register("warm")
def warm_start_grl(p: float, lo: float = 0.0, hi: float = 1.0, gamma: float = 10.0) -> float:
    """Warm start from ``lo`` to ``hi`` along the paper's sigmoid: ``lo + (hi - lo) * grl_lambda(p, gamma)``."""
    return lo + (hi - lo) * grl_lambda(p, gamma)


@GRL_SCHEDULES.register("constant")
def constant_grl(p: float, lo: float = 0.0, hi: float = 1.0, gamma: float = 10.0) -> float:
    """Always ``hi``."""
    _check(p)
    return hi


@LR_SCHEDULES.register("ganin")
def lr_factor(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """DANN paper annealing: ``1 / (1 + alpha p) ** beta`` (multiplies the base learning rate mu_0)."""
    return 1.0 / (1.0 + alpha * _check(p)) ** beta


@LR_SCHEDULES.register("constant")
def constant_lr(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Always 1."""
    _check(p)
    return 1.0


@LR_SCHEDULES.register("cosine")
def cosine_lr(p: float, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Half-cosine from 1 to 0."""
    return 0.5 * (1.0 + math.cos(math.pi * _check(p)))
