"""A trained model rebuilt from a run directory's checkpoint alone: what ``predict``, ``evaluate`` and the report
load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config, config_from_dict, replace
from ..data import ImageConfig
from ..data.scales import Scale
from ..errors import DataError, RunDirError
from ..methods import build_network
from ..models import DomainAdaptNet
from ..runs import BEST_CHECKPOINT, LAST_CHECKPOINT, load_checkpoint


@dataclass
class TrainedModel:
    config: Config
    net: DomainAdaptNet  # in eval mode, on the CPU
    classes: list[str]
    input_shape: tuple[int, ...]
    step: int
    image: ImageConfig | None = None  # how image files become inputs, for runs trained on image files
    scale: Scale | None = None  # how the source arrays were stored, for runs trained on arrays

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


def load_run(run_dir: str | Path, checkpoint: str = LAST_CHECKPOINT) -> TrainedModel:
    """The trained model of a run directory, rebuilt from its checkpoint alone (config and class names included)."""
    state = load_checkpoint(Path(run_dir) / checkpoint)
    cfg = config_from_dict(state["config"])
    offline = replace(cfg, model={"pretrained": False, "pretrained_file": ""})  # the checkpoint has the weights
    meta = state["meta"]
    classes, input_shape = list(meta["classes"]), tuple(meta["input_shape"])
    domains = len(meta.get("domains") or ["source"]) + 1  # the labeled domains and the target
    net = build_network(offline.model, offline.method, input_shape, len(classes), domains)
    net.load_state_dict(state["model"])
    image = ImageConfig.from_dict(meta["image"]) if meta.get("image") else None
    scale = Scale.from_dict(meta.get("scale"))
    return TrainedModel(cfg, net.eval(), classes, input_shape, int(state["step"]), image, scale)
