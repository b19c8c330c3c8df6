"""A run read back from its files (``config.yaml``, ``metrics.jsonl``, ``train.jsonl``): what the report, ``dann
compare`` and the verdicts read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, config_from_dict
from ..errors import RunDirError
from ..evaluation.loading import unfinished_selection
from ..runs import CONFIG_FILE, METRICS_FILE, TRAIN_LOG_FILE, read_jsonl
from ..selection.validators import VALIDATORS, select_record


@dataclass
class RunSummary:
    """A run read from its files: its evaluation records (``history``), the last, the one ``validator`` selects, the
    best by target accuracy (``oracle``: uses target labels; None when the run has none), and the training terms at
    every log step (``train_log``, see ``training_log``)."""

    run_dir: Path
    config: Config
    history: list[dict[str, Any]]
    validator: str
    last: dict[str, Any]
    selected: dict[str, Any] | None
    oracle: dict[str, Any] | None
    train_log: list[dict[str, Any]] = field(default_factory=list)


def summarize(run_dir: str | Path, validator: str | None = None) -> RunSummary:
    """Read ``config.yaml`` and ``metrics.jsonl``; ``validator`` defaults to the one that chose the run's ``best.pt``
    (``selection.validator``, or the fallback the trainer took when that had no score on the data)."""
    run_dir = Path(run_dir)
    unfinished_selection(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunDirError(f"{run_dir} is not a run directory: {run_dir / CONFIG_FILE} does not exist")
    cfg = config_from_dict(yaml.safe_load((run_dir / CONFIG_FILE).read_text()))
    history = read_jsonl(run_dir / METRICS_FILE)
    if not history:
        raise RunDirError(f"{run_dir / METRICS_FILE} has no evaluation yet: train to train.eval_every steps first")
    chosen = [r["selection"]["validator"] for r in history if "selection" in r]  # a fallback, when it had no score
    validator = validator or (chosen[-1] if chosen else cfg.selection.validator)
    VALIDATORS.get(validator)  # an unknown name fails listing the valid ones
    labeled = [r for r in history if "oracle" in r]
    oracle = max(labeled, key=lambda r: r["oracle"]["target_acc"]) if labeled else None
    selected, log = select_record(history, validator), training_log(history, read_jsonl(run_dir / TRAIN_LOG_FILE))
    return RunSummary(run_dir, cfg, history, validator, history[-1], selected, oracle, log)


def training_log(history: list[dict[str, Any]], log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the training terms (``{"step", "train"}``) at every log step: ``train.jsonl``'s, after those of
    the evaluation records before its first step (each evaluation is a log step; a run written before ``train.jsonl``
    existed, or resumed from such a run, has them only there)."""
    first = log[0]["step"] if log else None
    return [r for r in history if "train" in r and (first is None or r["step"] < first)] + log
