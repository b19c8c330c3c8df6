"""The Python API: everything the CLI does, as plain functions."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import Config, load_config, resolve_method
from .data import Domain, DomainData, ImageDomain, build_data, check_same_classes, load_npz, read_images
from .data.cache import DecodedImages
from .data.cached import CachedImageDomain
from .data.domains import check_labels
from .data.folders import encode_labels
from .data.images import Pipeline
from .data.scales import check_scales
from .data.transforms import eval_transform
from .errors import ConfigError, DataError, DataWarning, RunDirError
from .evaluation.loading import TrainedModel, checkpoint_path, load_run
from .evaluation.metrics import classification_metrics, confusion_csv, predict_batches
from .methods import build_network, create_method
from .models import DomainAdaptNet
from .models.network import resolve_model
from .runs import (
    CONFIG_FILE,
    LAST_CHECKPOINT,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    prepare_run_dir,
)
from .training.distributed import World, local_device
from .training.precision import resolve_channels_last, resolve_precision
from .training.steps import check_batchnorm_rows
from .training.trainer import Trainer, resolve_device


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
    at any time. Under torchrun every process calls it and gets the same history; only rank 0 writes files
    (``dann.training.distributed``)."""
    if resume:
        if out is None:
            raise RunDirError("resume needs the run directory (--out)")
        saved = Path(out) / CONFIG_FILE
        if not saved.is_file():
            raise RunDirError(f"cannot resume: {saved} does not exist")
        cfg = load_config(str(saved))  # a damaged config.yaml is a ConfigError naming it
    cfg = cfg or Config()
    data = data or build_data(cfg.data, cfg.model)
    # "auto" network and the "recommended" method become concrete values, the ones config.yaml records
    cfg = dataclasses.replace(cfg, model=resolve_model(cfg.model, data.input_shape), method=resolve_method(cfg.method))
    torch.manual_seed(cfg.train.seed)
    method = create_method(cfg.method)
    net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes)
    if method.needs_init and not cfg.model.init_from:
        raise ConfigError(
            f"method {cfg.method.name!r} adapts a trained source model: name its run directory with "
            "model.init_from (--init-from RUN), e.g. a source_only run on the same classes"
        )
    if cfg.model.init_from and not resume:
        init_from_run(net, cfg.model.init_from, data)
    world = World.from_env()  # a torchrun launch, or a world of one
    world.check_batch_size(cfg.train.batch_size)  # every check that can fail comes before the run directory is made
    check_batchnorm_rows(net, method, cfg.train.batch_size, world.size)
    device = resolve_device(local_device(cfg.train.device, world))
    # train.precision "auto" (and channels_last null) become the choices for this device and data, which config.yaml
    # records
    precision = resolve_precision(cfg.train.precision, device, data.input_shape)
    channels_last = resolve_channels_last(cfg.train.channels_last, precision, data.input_shape)
    train = dataclasses.replace(cfg.train, precision=precision, channels_last=channels_last)
    cfg = dataclasses.replace(cfg, train=train)
    run_dir = None
    if out is not None:  # under torchrun only rank 0 prepares (and writes) it; the others read it on resume
        run_dir = prepare_run_dir(out, resume, overwrite) if world.main else Path(out)
    history = Trainer(cfg, run_dir, resume, world).fit(net, method, data)
    page = build_report(run_dir, data) if report and run_dir is not None and world.main else None
    return FitResult(net, cfg, data.classes, history, run_dir, page)


def cache_images(cfg: Config) -> list[tuple[str, DecodedImages]]:
    """Build (or find) the decoded-image caches of the image folders or lists ``cfg.data`` names, ahead of training
    (``data.cache`` is taken as ``on``; see ``dann.data.cache``): one (folder or list, cache) per distinct file list.
    A cache's ``seconds`` is its build time, None when it was already built. Raises ``ConfigError`` for array data."""
    data = build_data(dataclasses.replace(cfg.data, cache="on"), cfg.model)
    caches: dict[Path, tuple[str, DecodedImages]] = {}
    for domain in (data.source_train, data.target_train, data.target_eval):
        if isinstance(domain, CachedImageDomain):
            caches.setdefault(domain.images.path, (domain.name, domain.images))
    if not caches:
        raise ConfigError("dann cache: the data are arrays, which need no cache; give image folders or list files")
    return list(caches.values())


def init_from_run(net: DomainAdaptNet, run_dir: str | Path, data: DomainData) -> None:
    """Start ``net`` from the weights of a trained run's ``last.pt``. The run must have the same classes (in the same
    order) and input shape, and the same backbone, bottleneck and head; its discriminator is taken too when it has
    the same shape (a run of the same kind of method), else the new one starts fresh. Raises ``ConfigError``."""
    where, path = f"model.init_from {run_dir}", Path(run_dir) / LAST_CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"{where}: no trained run there ({path} does not exist)")
    state = load_checkpoint(path)
    meta = state["meta"]
    if list(meta["classes"]) != list(data.classes):
        raise ConfigError(f"{where}: its classes {list(meta['classes'])} differ from this data's {list(data.classes)}")
    if tuple(meta["input_shape"]) != tuple(data.input_shape):
        raise ConfigError(
            f"{where}: it was trained on inputs of shape {tuple(meta['input_shape'])}, this data has "
            f"{tuple(data.input_shape)}"
        )
    own, saved = net.state_dict(), state["model"]
    fits = {k: v for k, v in saved.items() if k in own and v.shape == own[k].shape}
    wrong = [k for k in own if not k.startswith("discriminator.") and k not in fits]
    if wrong:
        raise ConfigError(
            f"{where}: its network differs from this one ({len(wrong)} tensors do not fit, e.g. {wrong[0]}); use "
            "the same model.backbone, model.bottleneck_dim and model.head_dims as that run"
        )
    discriminator = [k for k in own if k.startswith("discriminator.")]
    if not all(k in fits for k in discriminator):
        fits = {k: v for k, v in fits.items() if not k.startswith("discriminator.")}
    net.load_state_dict(fits, strict=False)


def build_report(run_dir: str | Path, data: DomainData | None = None) -> Path:
    """Write ``report.html``, ``report.md`` and ``report.json`` into a run directory from its files (``data``
    defaults to the data its config names); returns the HTML path."""
    from .reporting.report import build_report as build  # matplotlib loads only when a report is asked for

    return build(run_dir, data)


def compare(run_dirs: list[str | Path], out: str | Path | None = None, validator: str | None = None) -> str:
    """Runs side by side, ranked by one validator: a Markdown table; with ``out`` also one HTML page."""
    from .reporting.report import compare_runs

    return compare_runs(run_dirs, out, validator)


def _domain(model: TrainedModel, data_path: str | Path, labeled: bool, skip_bad: bool | None) -> Domain | ImageDomain:
    """The samples of ``data_path`` prepared for ``model``: an ``.npz`` file, or image files (a folder: its class
    subfolders when ``labeled``, else every image below it; or a list file), with the run's evaluation transform."""
    if str(data_path).endswith(".npz"):
        domain, names = load_npz(data_path)
        if len(domain) == 0:
            raise DataError(f"{data_path}: no samples")
        check_same_classes(model.classes, names, f"{data_path} vs the run's classes")
        model.check_input(domain.x, data_path)
        check_scales([domain.scale], trained=model.scale)
        return domain
    if model.image is None:
        raise DataError(f"{data_path}: this run was trained on arrays; give it an .npz file, not image files")
    images = read_images(data_path, recursive=not labeled, hint_root=False)
    y = encode_labels(images, model.classes, "the run") if labeled else None
    d = model.config.data
    skip = d.skip_bad_images if skip_bad is None else skip_bad
    transform = eval_transform(model.image)
    pipeline = Pipeline(model.image, transform, transform, d.num_workers, d.pin_memory, False, skip)
    return ImageDomain(images.paths, y, pipeline, images.origin)


def _report_skipped(domain: Domain | ImageDomain) -> None:
    if domain.bad:
        bad = sorted(domain.bad)
        warnings.warn(f"skipped {len(bad)} unreadable image file(s): {', '.join(bad[:5])}", DataWarning, stacklevel=3)


def evaluate(
    run_dir: str | Path,
    data_path: str | Path,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    skip_bad: bool | None = None,
    checkpoint: str = "last",
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, macro-F1 and confusion matrix of the run's model on labeled data (``.npz``,
    class folders or a list file with labels). With ``out_dir``: writes metrics.json, confusion.csv and
    confusion.png there (existing files are replaced only with ``overwrite``)."""
    files = [Path(out_dir) / name for name in ("metrics.json", "confusion.csv", "confusion.png")] if out_dir else []
    if any(f.exists() for f in files) and not overwrite:
        raise RunDirError(f"{out_dir} already holds evaluation files; pass --overwrite to replace them")
    model = load_run(run_dir, checkpoint_path(checkpoint))
    domain = _domain(model, data_path, labeled=True, skip_bad=skip_bad)
    if domain.y is None:
        raise DataError(
            f"{data_path}: evaluation needs labels (class subfolders, path,label rows or array 'y'); "
            "use predict for unlabeled data"
        )
    k = len(model.classes)
    check_labels(domain.y, k, str(data_path))
    probs, index = predict_batches(model.net, domain.batches(model.config.train.eval_batch_size))
    metrics = classification_metrics(domain.y[index], probs.argmax(1), k)
    _report_skipped(domain)
    metrics |= {"classes": model.classes, "step": model.step, "skipped_images": len(domain.bad)}
    if files:
        atomic_write_text(files[0], json.dumps(metrics, indent=1) + "\n")
        atomic_write_text(files[1], confusion_csv(metrics["confusion"], model.classes))
        from .reporting.plots import confusion_plot  # matplotlib only when a picture is asked for

        title = f"{Path(data_path).name}, step {model.step}"
        atomic_write_bytes(files[2], confusion_plot(metrics["confusion"], model.classes, title))
    return metrics


def predict(
    run_dir: str | Path,
    data_path: str | Path,
    out: str | Path,
    overwrite: bool = False,
    top_k: int = 3,
    skip_bad: bool | None = None,
    checkpoint: str = "last",
) -> Path:
    """Write ``out`` (CSV), one row per sample. ``.npz``: index, predicted_class, confidence. Image files (a folder,
    searched recursively, or a list file): path, predicted_class, confidence, then class_i, prob_i for the
    ``top_k`` most probable classes (fewer when the model has fewer classes)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise RunDirError(f"{out} already exists; pass --overwrite to replace it")
    model = load_run(run_dir, checkpoint_path(checkpoint))
    domain = _domain(model, data_path, labeled=False, skip_bad=skip_bad)
    probs, index = predict_batches(model.net, domain.batches(model.config.train.eval_batch_size))
    _report_skipped(domain)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if isinstance(domain, Domain):
        conf, pred = probs.max(1)
        writer.writerow(["index", "predicted_class", "confidence"])
        for i, (p, c) in enumerate(zip(pred.tolist(), conf.tolist(), strict=True)):
            writer.writerow([i, model.classes[p], f"{c:.6f}"])
    else:
        k = max(1, min(top_k, len(model.classes)))
        top_p, top_i = probs.topk(k, dim=1)
        writer.writerow(
            ["path", "predicted_class", "confidence", *[f"{n}_{j}" for j in range(1, k + 1) for n in ("class", "prob")]]
        )
        for i, ps, cs in zip(index.tolist(), top_p.tolist(), top_i.tolist(), strict=True):
            top = [v for c, p in zip(cs, ps, strict=True) for v in (model.classes[c], f"{p:.6f}")]
            writer.writerow([domain.paths[i], model.classes[cs[0]], f"{ps[0]:.6f}", *top])
    atomic_write_text(out, buffer.getvalue())
    return out
