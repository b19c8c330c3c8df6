"""A trained model rebuilt from a run directory's checkpoint alone: what ``predict``, ``evaluate`` and the report
load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, config_from_dict, replace
from ..data import ImageConfig
from ..data.scales import Scale
from ..errors import DataError, RunDirError
from ..models import DomainAdaptNet
from ..plan import build_network
from ..runs import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, load_checkpoint, read_jsonl


@dataclass(frozen=True)
class Progress:
    """How far a checkpoint, and the run it belongs to, got: the checkpoint's ``step``, the run's last evaluated
    step ``trained`` and its ``train.steps``. A run is unfinished while ``trained < steps`` (still training, killed,
    or stopped by a non-finite loss)."""

    step: int
    trained: int
    steps: int

    @property
    def finished(self) -> bool:
        return self.trained >= self.steps

    def __str__(self) -> str:
        """``step 400 of 1000 (unfinished)``; for an earlier checkpoint of an unfinished run, ``step 200 of 1000
        (unfinished run, trained to step 400 so far)``; ``step 1000 of 1000`` once finished."""
        text = f"step {self.step} of {self.steps}"
        if self.finished:
            return text
        if self.step >= self.trained:
            return f"{text} (unfinished)"
        return f"{text} (unfinished run, trained to step {self.trained} so far)"

    def to_dict(self) -> dict[str, int | bool]:
        return {"step": self.step, "steps": self.steps, "trained_steps": self.trained, "finished": self.finished}


def run_progress(run_dir: str | Path, step: int, steps: int) -> Progress:
    """The ``Progress`` of a checkpoint at ``step`` of a run of ``steps`` (``train.steps``), the run's last step read
    from its ``metrics.jsonl`` (the checkpoint's own step when that file is missing)."""
    records = read_jsonl(Path(run_dir) / METRICS_FILE)
    return Progress(step, max(step, int(records[-1]["step"])) if records else step, steps)


@dataclass
class TrainedModel:
    """A run rebuilt from one checkpoint: the config it trained with, the network (eval mode, CPU), the class names
    in label order, the per-sample input shape (C, H, W) or (D,), the checkpoint's step, and how files or arrays
    were prepared for it (``image`` for image files, ``scale`` for arrays)."""

    config: Config
    net: DomainAdaptNet  # in eval mode, on the CPU
    classes: list[str]
    input_shape: tuple[int, ...]
    step: int
    image: ImageConfig | None = None  # how image files become inputs, for runs trained on image files
    scale: Scale | None = None  # how the source arrays were stored, for runs trained on arrays
    checkpoint: str = LAST_CHECKPOINT  # the file inside the run directory the weights came from
    progress: Progress | None = None  # how far the checkpoint and its run got (load_run sets it)

    def check_input(self, x: torch.Tensor, path: str | Path) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"{path}: samples have shape {tuple(x.shape[1:])}, but the model was trained on {self.input_shape}"
            )


CHECKPOINTS = {"last": LAST_CHECKPOINT, "best": BEST_CHECKPOINT}


def checkpoint_path(name: str) -> str:
    """``last`` (the end of training) or ``best`` (chosen by ``selection.validator``, no target labels) → its path
    inside a run directory."""
    if name not in CHECKPOINTS:
        raise RunDirError(f"unknown checkpoint {name!r}; valid: {', '.join(CHECKPOINTS)}")
    return CHECKPOINTS[name]


def default_record(run_dir: str | Path) -> dict[str, Any] | None:
    """What a run trained by the default records in ``config.RECIPE_FILE``: the fixed recipe and why, or the
    selecting default's plan (``"state": "selecting"``) and then what it kept; None when the run has no such file
    or it cannot be read."""
    import json

    from ..config import RECIPE_FILE

    path = Path(run_dir) / RECIPE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, OSError):
        return None


def unfinished_selection(run_dir: Path) -> None:
    """A ``RunDirError`` when ``run_dir`` holds a selection of the default that has not kept a run yet."""
    if (run_dir / LAST_CHECKPOINT).is_file():
        return
    if (default_record(run_dir) or {}).get("state") == "selecting":
        raise RunDirError(
            f"{run_dir} holds a selection of the default that has not finished (no run kept yet): continue it "
            f"with dann train --out {run_dir} --resume; each finished run is in {run_dir}/control or "
            f"{run_dir}/candidates"
        )


def load_run(run_dir: str | Path, checkpoint: str = LAST_CHECKPOINT) -> TrainedModel:
    """The trained model of a run directory, rebuilt from its checkpoint alone (config and class names included).
    Raises ``RunDirError`` for a selection of the default that has not finished (no run kept yet)."""
    unfinished_selection(Path(run_dir))
    state = load_checkpoint(Path(run_dir) / checkpoint)
    cfg = config_from_dict(state.config)
    offline = replace(cfg, model={"pretrained": False, "pretrained_file": ""})  # the checkpoint has the weights
    if cfg.model.bottleneck_dim is None:  # a run that left it to auto before runs recorded it: the checkpoint knows
        width = state.model["bottleneck.0.weight"].shape[0] if "bottleneck.0.weight" in state.model else 0
        offline = replace(offline, model={"bottleneck_dim": width})
    meta = state.meta
    classes, input_shape = list(meta["classes"]), tuple(meta["input_shape"])
    domains = len(meta.get("domains") or ["source"]) + 1  # the labeled domains and the target
    net = build_network(offline.model, offline.method, input_shape, len(classes), domains)
    net.load_state_dict(state.predicting)  # an EMA teacher's weights where the method evaluates one
    image = ImageConfig.from_dict(meta["image"]) if meta.get("image") else None
    scale = Scale.from_dict(meta.get("scale"))
    step = int(state.step)
    progress = run_progress(run_dir, step, cfg.train.steps)
    return TrainedModel(cfg, net.eval(), classes, input_shape, step, image, scale, checkpoint, progress)
