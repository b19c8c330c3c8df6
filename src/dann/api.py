"""The Python API: everything the CLI does, as plain functions."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config, config_from_dict, load_config, replace
from .data import Domain, DomainData, build_data, check_same_classes, load_npz
from .data.domains import check_labels
from .errors import DataError, RunDirError
from .evaluate import classification_metrics, predict_proba
from .methods import create_method
from .models import DomainAdaptNet, create_network
from .runs import CONFIG_FILE, LAST_CHECKPOINT, atomic_write_text, load_checkpoint, prepare_run_dir
from .trainer import Trainer, resolve_device


@dataclass
class FitResult:
    net: DomainAdaptNet
    config: Config
    classes: list[str]
    history: list[dict[str, Any]]  # one record per evaluation, as in metrics.jsonl
    run_dir: Path | None
    report: Path | None = None  # report.html, when asked for


def fit(
    cfg: Config | None = None,
    out: str | Path | None = None,
    *,
    data: DomainData | None = None,
    resume: bool = False,
    overwrite: bool = False,
    report: bool = False,
) -> FitResult:
    """Train per ``cfg`` (or, with ``resume``, per the run's saved ``config.yaml``). With ``out`` the run's files go
    there; without it nothing is written. ``data`` overrides ``cfg.data`` (e.g. arrays already in memory). With
    ``report`` (and ``out``) the run ends by writing its report, as ``dann train`` does; ``dann.report`` rebuilds it
    at any time."""
    if resume:
        if out is None:
            raise RunDirError("resume needs the run directory (--out)")
        saved = Path(out) / CONFIG_FILE
        if not saved.is_file():
            raise RunDirError(f"cannot resume: {saved} does not exist")
        cfg = load_config(str(saved))  # a damaged config.yaml is a ConfigError naming it
    cfg = cfg or Config()
    data = data or build_data(cfg.data)
    torch.manual_seed(cfg.train.seed)
    method = create_method(cfg.method)
    net = create_network(cfg.model, data.input_shape, data.num_classes)
    resolve_device(cfg.train.device)  # every check that can fail comes before the run directory is created
    run_dir = prepare_run_dir(out, resume, overwrite) if out is not None else None
    history = Trainer(cfg, run_dir, resume).fit(net, method, data)
    page = build_report(run_dir, data) if report and run_dir is not None else None
    return FitResult(net, cfg, data.classes, history, run_dir, page)


def build_report(run_dir: str | Path, data: DomainData | None = None) -> Path:
    """Write ``report.html``, ``report.md`` and ``report.json`` into a run directory from its files (``data``
    defaults to the data its config names); returns the HTML path."""
    from .report import build_report as build  # matplotlib loads only when a report is asked for

    return build(run_dir, data)


def compare(run_dirs: list[str | Path], out: str | Path | None = None, validator: str | None = None) -> str:
    """Runs side by side, ranked by one validator: a Markdown table; with ``out`` also one HTML page."""
    from .report import compare_runs

    return compare_runs(run_dirs, out, validator)


@dataclass
class TrainedModel:
    config: Config
    net: DomainAdaptNet  # in eval mode, on the CPU
    classes: list[str]
    input_shape: tuple[int, ...]
    step: int

    def check_input(self, x: torch.Tensor, path: str | Path) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"{path}: samples have shape {tuple(x.shape[1:])}, but the model was trained on {self.input_shape}"
            )


def load_run(run_dir: str | Path, checkpoint: str = LAST_CHECKPOINT) -> TrainedModel:
    """The trained model of a run directory, rebuilt from its checkpoint alone (config and class names included)."""
    state = load_checkpoint(Path(run_dir) / checkpoint)
    cfg = config_from_dict(state["config"])
    offline = replace(cfg, model={"pretrained": False, "pretrained_file": ""})  # the checkpoint has the weights
    classes, input_shape = list(state["meta"]["classes"]), tuple(state["meta"]["input_shape"])
    net = create_network(offline.model, input_shape, len(classes))
    net.load_state_dict(state["model"])
    return TrainedModel(cfg, net.eval(), classes, input_shape, int(state["step"]))


def _load_data(model: TrainedModel, data_path: str | Path) -> Domain:
    """The samples of ``data_path``, checked against the run: not empty, the same input shape and class names."""
    domain, names = load_npz(data_path)
    if len(domain) == 0:
        raise DataError(f"{data_path}: no samples")
    check_same_classes(model.classes, names, f"{data_path} vs the run's classes")
    model.check_input(domain.x, data_path)
    return domain


def evaluate(run_dir: str | Path, data_path: str | Path) -> dict[str, Any]:
    """Accuracy, per-class accuracy, macro-F1 and confusion matrix of the run's model on a labeled ``.npz``."""
    model = load_run(run_dir)
    domain = _load_data(model, data_path)
    if domain.y is None:
        raise DataError(f"{data_path}: evaluation needs labels (array 'y'); use predict for unlabeled data")
    check_labels(domain.y, len(model.classes), str(data_path))
    probs = predict_proba(model.net, domain.x)
    k = len(model.classes)
    return classification_metrics(domain.y, probs.argmax(1), k) | {"classes": model.classes, "step": model.step}


def predict(run_dir: str | Path, data_path: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``out`` (CSV): one row per sample with its index, predicted class and confidence."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise RunDirError(f"{out} already exists; pass --overwrite to replace it")
    model = load_run(run_dir)
    domain = _load_data(model, data_path)
    probs = predict_proba(model.net, domain.x)
    conf, pred = probs.max(1)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["index", "predicted_class", "confidence"])
    for i, (p, c) in enumerate(zip(pred.tolist(), conf.tolist(), strict=True)):
        writer.writerow([i, model.classes[p], f"{c:.6f}"])
    atomic_write_text(out, buffer.getvalue())
    return out
