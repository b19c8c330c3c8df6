"""How often a run evaluates and logs when ``train.eval_every`` and ``train.log_every`` are ``auto``: pure functions
of ``train.steps``, so a run, its start-up summary and its resume agree (the run's config.yaml records the values).

- **Evaluations** (held-out accuracy, every validator, a checkpoint): about ``EVALS_PER_RUN`` per run, so that the
  accuracy and validator curves, ``best.pt`` and ``dann compare`` have points to choose from: ``steps / 20``
  rounded to the nearest 1, 2 or 5 × 10^k (13 to 32 evaluations from 2,000 steps on: 3,000 steps → every 200), and
  never more often than every ``MIN_EVAL_INTERVAL`` steps: an evaluation takes the time of some 30 to 60 steps (the
  embedded tasks on the CPU: it embeds up to ``selection.max_samples`` samples per domain, fits DEV's domain
  classifier and ClassAMI's k-means, and writes a checkpoint), so from 500 steps on they add at most about half
  the training time (1,000 steps → every 100: 10 evaluations, where 20 would double it). A short run still gets
  ``MIN_EVALS`` evaluations where it has the steps (300 steps → every 50, 40 steps → every 5).
- **Log steps** (the training terms in ``train.jsonl``, the progress bar, the non-finite check: the only host syncs
  between evaluations): about 100 per run, ``steps / 100`` rounded alike, between ``MIN_LOG_INTERVAL`` and
  ``MAX_LOG_INTERVAL`` steps and never longer than the evaluation interval (300 steps → every 5, 3,000 → every 20).
"""

from __future__ import annotations

import math

EVALS_PER_RUN, MIN_EVALS, MIN_EVAL_INTERVAL = 20, 5, 100
LOGS_PER_RUN, MIN_LOG_INTERVAL, MAX_LOG_INTERVAL = 100, 5, 50
NICE = (1, 2, 5)


def _candidates(x: float) -> list[int]:
    """The 1, 2, 5 × 10^k numbers around ``x`` (> 0)."""
    k = 10 ** max(0, math.floor(math.log10(x)))
    return [m * k for m in (*NICE, 10)]


def nice_interval(x: float) -> int:
    """The number of the form 1, 2 or 5 × 10^k nearest ``x`` on a log scale; 1 for ``x`` at most 1."""
    if x <= 1:
        return 1
    return min(_candidates(x), key=lambda n: abs(math.log(n / x)))


def nice_floor(x: float) -> int:
    """The largest number of the form 1, 2 or 5 × 10^k at most ``x``; 1 for ``x`` below 1."""
    if x < 1:
        return 1
    return max(n for n in _candidates(x) if n <= x)


def eval_interval(steps: int) -> int:
    """``train.eval_every: auto``: steps between evaluations of a run of ``steps`` steps (the run also evaluates at
    its last step)."""
    floor = min(MIN_EVAL_INTERVAL, nice_floor(steps / MIN_EVALS))
    return max(nice_interval(steps / EVALS_PER_RUN), floor)


def log_interval(steps: int, eval_every: int) -> int:
    """``train.log_every: auto``: steps between log steps of a run of ``steps`` steps evaluated every
    ``eval_every`` steps (every evaluation is a log step too)."""
    interval = min(max(nice_interval(steps / LOGS_PER_RUN), MIN_LOG_INTERVAL), MAX_LOG_INTERVAL)
    return min(interval, eval_every)
