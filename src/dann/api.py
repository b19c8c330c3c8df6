"""The Python API: everything the CLI does, as plain functions."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .clip.check import TeacherCheck
from .config import (
    RECIPE,
    RECIPE_FILE,
    RECOMMENDED,
    SELECTION,
    Config,
    absolute_paths,
    config_from_dict,
)
from .data import Domain, DomainData, ImageDomain, check_same_classes, load_npz, read_images
from .data.arrays import as_domain
from .data.cache import DecodedImages
from .data.cached import CachedImageDomain
from .data.check import DataCheck
from .data.check import check_data as check_files
from .data.domains import check_labels
from .data.folders import LIST_EXTENSIONS, encode_labels, unknown_classes
from .data.images import CALL_SKIP_HINT, Pipeline
from .data.scales import check_scales
from .data.transforms import Unaugmented, eval_transform
from .errors import (
    ConfigError,
    DataError,
    DataWarning,
    OutputExistsError,
    RunDirError,
    RunDirWarning,
    TrainingInterrupted,
)
from .evaluation.label_shift import LabelShift, model_label_shift
from .evaluation.loading import TrainedModel, checkpoint_path, load_run
from .evaluation.metrics import confusion_counts, confusion_csv, metrics_from_confusion, predictions_by_batch
from .methods import build_network, create_method
from .models import DomainAdaptNet
from .plan import build_run_data, clip_teacher_method, plan_run, resumed_config, saved_run_config, this_device
from .reporting.verdicts import CONTROL_DIR
from .runs import (
    CONFIG_FILE,
    LAST_CHECKPOINT,
    PREV_CHECKPOINT,
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    failed_start,
    guard_output,
    has_checkpoint,
    load_checkpoint,
    prepare_run_dir,
)
from .selection.bands import MIN_BAND_SAMPLES
from .selection.choice import CONTROL, choose
from .selection.choice import summary as choice_summary
from .selection.default import (
    DONE,
    SELECTING,
    adopt,
    cost_line,
    evidence,
    refuse_overridden,
    remaining_line,
    selection_configs,
    selection_state,
    total_estimate,
    where,
)
from .training.distributed import World
from .training.feedback import followed_by, format_duration
from .training.stages import bind_stages, plan_stages, warn_unused_stage_options
from .training.steps import check_batchnorm_rows
from .training.trainer import Trainer


@dataclass
class FitResult:
    """What ``fit`` returns: the trained network (on the training device, in eval mode), the resolved config (every
    ``auto``/``recommended`` replaced by its concrete value), the class names in label order, one record per
    evaluation, and the run directory (``None`` when the run was not saved)."""

    net: DomainAdaptNet
    config: Config
    classes: list[str]
    history: list[dict[str, Any]]  # one record per evaluation, as in metrics.jsonl
    run_dir: Path | None
    report: Path | None = None  # report.html, when asked for
    control: FitResult | None = None  # the source-only control, with ``control=True``: in run_dir/control
    summary: dict[str, Any] | None = None  # the start-up summary (training.feedback.RunSummary): device, input...
    selection: dict[str, Any] | None = None  # the selecting default's record (default.json): what it kept and why


def fit(
    cfg: Config | None = None,
    out: str | Path | None = None,
    *,
    data: DomainData | None = None,
    resume: bool = False,
    overwrite: bool = False,
    report: bool = False,
    control: bool = False,
    echo: Callable[[str], None] | None = None,
) -> FitResult:
    """Train per ``cfg`` (or, with ``resume``, per the run's saved ``config.yaml``; a ``cfg`` given with ``resume``
    may change only the settings ``config.RESUMABLE`` lists, any other difference is a ``ConfigError``). With ``out``
    the run's files go there; without it nothing is kept (the default's selection trains its runs in a temporary
    folder, deleted afterwards). ``data`` overrides ``cfg.data`` (e.g. arrays already in
    memory). With ``report`` (and ``out``) the run ends by writing its report, as ``dann train`` does;
    ``dann.build_report`` rebuilds it at any time. With ``control`` (and ``out``) the source-only control then trains on
    the same data, with the same seed and steps, into ``out/control`` (``FitResult.control``; resumed with the run),
    and the report answers "did adaptation help?" from both. ``echo`` (e.g. ``print``) receives the start-up
    summary, a time estimate and one line per evaluation (``dann.training.feedback``). Under torchrun every process
    calls it and gets the same history; only rank 0 writes files and echoes (``dann.training.distributed``). Raises
    ``ConfigError`` for ``control`` without ``out`` or on a source-only run.

    SIGINT (Ctrl-C) or SIGTERM stops training after the current step with a checkpoint of it and raises
    ``TrainingInterrupted`` (a ``KeyboardInterrupt``) naming it; ``resume=True`` continues exactly
    (``dann.training.interrupt``)."""
    if control and out is None:
        raise ConfigError("`control=True` trains the control into out/control: give the run directory `out`")
    cfg = absolute_paths(cfg) if cfg is not None else None  # what the run reads, records and compares on resume
    start = cfg.model.init_from if cfg is not None and not resume else ""
    held = start and (Path(start) / LAST_CHECKPOINT).is_file()  # a trained run there (else init_from_run says so)
    if held and out is not None and Path(out).resolve().is_relative_to(Path(start).resolve()):
        raise ConfigError(
            f"model.init_from {start} is the run this one starts from, and --out {out} would write over it: "
            "choose another --out"
        )
    state = selection_state(out)
    if resume and state in (SELECTING, DONE):  # a selection of the default: continue it (finished: re-reads it)
        return fit_selecting(cfg, out, data=data, resume=True, report=report, echo=echo)
    if not resume and not overwrite and state == SELECTING:
        raise RunDirError(
            f"{out} holds an unfinished selection of the default (its runs are in {out}/control and "
            f"{out}/candidates): pass --resume (resume=True) to continue it, or --overwrite to start again"
        )
    if not resume and not overwrite and state == DONE:
        raise OutputExistsError(
            f"{out} holds a finished selection of the default: dann report, predict and evaluate use it as it is; "
            "pass --overwrite (overwrite=True) to train it again, or choose another --out"
        )
    if (
        not resume
        and SELECTION["candidates"]
        and (cfg or Config()).method.name == RECOMMENDED
        and not (cfg or Config()).train.stages
    ):
        return fit_selecting(cfg or Config(), out, data=data, overwrite=overwrite, report=report, echo=echo)
    restart = False  # resume=True on a folder a start left without a checkpoint: nothing to resume
    if resume:
        cfg, resume = continue_or_restart(out, cfg)
        restart = not resume
    cfg = cfg or Config()
    by_default = cfg.method.name == RECOMMENDED and not resume  # the recipe, because no method was named
    data = data or build_run_data(cfg.data, cfg.model)
    plan = plan_run(cfg, data, control=control)  # every check that can fail comes before the run directory is made
    cfg, world = plan.config, plan.world
    torch.manual_seed(plan.seeds["init"])
    with warnings.catch_warnings():  # a staged run's stages train, not its method: their keys are checked below
        if cfg.train.stages:
            warnings.simplefilter("ignore", DataWarning)
        method = create_method(cfg.method)
    net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes, len(data.domains) + 1)
    stages = plan_stages(cfg, method, data)  # one, `method`, without train.stages; the trainer trains these
    if stages.staged:
        warn_unused_stage_options(cfg, stages.stages)
    for stage in stages.stages:
        check_batchnorm_rows(net, stage.method, cfg.train.batch_size, world.size)
    # a term's own checks (CLIP's teacher file, class names that make prompts), also before the run directory
    bind_stages(stages, data, cfg, None)
    if cfg.model.init_from and not resume:
        init_from_run(net, cfg.model.init_from, data)
        if echo is not None and data.source_val is not None and len(data.source_val) and len(data.target_train):
            # a trained source model is at hand: what it says of the target's class proportions, before adapting
            shift = model_label_shift(
                net, data.source_val, data.target_train, data.classes, bootstrap=100,
                batch_size=cfg.train.eval_batch_size,
            )  # fmt: skip
            verdict = "large: methods that align marginals assume none" if shift.large else "not shown to be large"
            echo(
                f"label shift: {shift.tv:.2f} [{shift.tv_band[0]:.2f}, {shift.tv_band[1]:.2f}] (total variation "
                f"between the source's class proportions and the target's, estimated by {cfg.model.init_from}), "
                f"{verdict}"
            )
    if echo is not None and world.main and plan.threads.why:
        echo(f"threads:  {plan.threads.count} ({plan.threads.why}; train.threads sets it)")
    run_dir = None
    if out is not None:  # under torchrun only rank 0 prepares (and writes) it; the others read it on resume
        fresh = overwrite or (restart and failed_start(out))  # continue_or_restart said so (still true: checked)
        run_dir = prepare_run_dir(out, resume, fresh) if world.main else Path(out)
    if by_default:
        note = default_note(cfg)
        if run_dir is not None and world.main:
            atomic_write_text(run_dir / RECIPE_FILE, json.dumps(note, indent=1) + "\n")
        if echo is not None and world.main:
            echo(f"default:  {note['method']}, as no method was named: {note['why']}")
    say = echo if echo is not None and world.main and control and run_dir is not None else None
    if say is not None:
        say(
            f"plan:     2 runs, one after the other: this one ({cfg.train.steps} steps), then its source-only control "
            f"({cfg.train.steps} steps, a cheaper step) into {run_dir / CONTROL_DIR}; the time below is this run's"
        )
    told = echo if say is None else with_control_estimate(say, cfg.train.steps)
    trainer, tic = Trainer(plan, run_dir, resume, told), time.perf_counter()
    history = trainer.fit(net, method, data, stages)
    if say is not None:
        took = format_duration(time.perf_counter() - tic)
        say(f"control:  this run took {took}; now its source-only control, into {run_dir / CONTROL_DIR}")
    baseline = fit_control(plan.control, run_dir, data, resume, echo) if plan.control and run_dir is not None else None
    page = build_report(run_dir, data, echo=echo) if report and run_dir is not None and world.main else None
    summary = trainer.summary.to_dict() if trainer.summary is not None else None
    return FitResult(net, cfg, data.classes, history, run_dir, page, control=baseline, summary=summary)


def with_control_estimate(say: Callable[[str], None], steps: int) -> Callable[[str], None]:
    """An ``echo`` for a run trained with its control: every line goes on, and the run's time estimate after its
    first steps is followed by one for both runs (the control's steps cost at most the run's: a bound, not a guess)."""

    def both(per_step: float) -> str:
        whole = format_duration(2 * per_step * steps)
        return f"plan:     with its source-only control, at most about {whole} in all (a control step costs less)"

    return followed_by(say, say, both)


def continue_or_restart(out: str | Path | None, cfg: Config | None) -> tuple[Config | None, bool]:
    """``fit(cfg, out, resume=True)``: the config to train and whether there is a run to continue. A folder that a
    start left without a checkpoint (``runs.failed_start``: it failed or was killed first) has nothing to resume: it
    starts afresh, with a ``RunDirWarning``, from ``cfg`` or else its ``config.yaml`` (what that start trained; any
    setting may change, as nothing was trained). Raises ``RunDirError`` when there is no run to continue, and when a
    start was stopped before it wrote ``config.yaml``: with no record of what it trained, the retry is the training
    call itself, without ``resume=True`` (the CLI's ``--resume`` takes its options over that file)."""
    if out is None:
        raise RunDirError("`resume=True` needs the run directory, `out`")
    saved = Path(out) / CONFIG_FILE
    if failed_start(out):
        if not saved.is_file():
            raise RunDirError(
                f"nothing to resume: {out} holds no checkpoint and no config.yaml (its start stopped before writing "
                "them); run the training command again without `resume=True`: it starts afresh there"
            )
        where = "the configuration given" if cfg is not None else "its config.yaml"
        warnings.warn(
            f"nothing to resume: {out} held no checkpoint (a start that failed); starting afresh from {where}",
            RunDirWarning,
            stacklevel=3,
        )
        return (cfg if cfg is not None else saved_run_config(Path(out))), False
    if not saved.is_file():
        raise RunDirError(f"cannot resume: {saved} does not exist")
    saved_cfg = saved_run_config(Path(out))  # a damaged config.yaml is a ConfigError naming it
    return (saved_cfg if cfg is None else resumed_config(saved_cfg, cfg, str(out))), True


def default_note(cfg: Config) -> dict[str, Any]:
    """What a run trained by the default (``method.name: recommended``) records in ``RECIPE_FILE``: the method it
    resolved to, the recipe's options, and why the recipe is the default."""
    options = {k: getattr(cfg.method, k) for k in RECIPE.get("options", {})}
    return {"method": cfg.method.name, "options": options, "why": RECIPE["why"]}


def fit_control(
    control: Config, run_dir: Path, data: DomainData, resume: bool = False, echo: Callable[[str], None] | None = None
) -> FitResult:
    """Train the source-only control of the run in ``run_dir`` into ``run_dir/control``: ``control`` is the run's
    planned config with ``method.name=source_only`` (no regularizers, ``RunPlan.control``), trained on ``data`` with
    the same seed, steps and network. With ``resume`` a control that has a checkpoint continues (a finished one is left
    as it is); else it starts afresh."""
    where = run_dir / CONTROL_DIR
    if resume and any((where / name).is_file() for name in (LAST_CHECKPOINT, PREV_CHECKPOINT)):
        return fit(out=where, data=data, resume=True, echo=echo)
    return fit(control, where, data=data, overwrite=True, echo=echo)


def check_data(cfg: Config, workers: int | None = None, progress: bool = False) -> DataCheck:
    """Read every file of ``cfg.data`` once, as training would (``dann.data.check``): every image decoded by a pool of
    ``workers`` processes (default: the usable CPUs), with a tqdm bar when ``progress``. Returns the counts and the
    unreadable files (path, reason); raises ``DataError`` for what would stop a run before its first step."""
    return check_files(cfg.data, workers, progress)


def check_teacher(cfg: Config) -> TeacherCheck | None:
    """The CLIP teacher's accuracy on the labeled source (``dann.clip.check``: its held-out split, else its training
    split) when ``cfg`` trains ``clip_distill`` (as the method or a regularizer, of the run or of a stage; the first
    such method's ``clip_model``, ``clip_file`` and ``clip_templates``); None otherwise. The same check a run makes at
    its start, before any training. Raises ``ConfigError`` for numeric class names or a CLIP file at fault."""
    from .clip.check import check_teacher as measure
    from .clip.teacher import build_teacher

    cfg = absolute_paths(cfg)  # the teacher named as the run names it
    method = clip_teacher_method(cfg)
    if method is None:
        return None
    data = build_run_data(cfg.data, cfg.model)
    teacher = build_teacher(method, data.classes, data.image).to(this_device(cfg))
    return measure(teacher, data, method.clip_model, cfg.train.eval_batch_size, cfg.selection.max_samples)


def cache_images(cfg: Config) -> list[tuple[str, DecodedImages]]:
    """Build (or find) the decoded-image caches of the image folders or lists ``cfg.data`` names, ahead of training
    (``data.cache`` is taken as ``on``; see ``dann.data.cache``): one (folder or list, cache) per distinct file list.
    A cache's ``seconds`` is its build time, None when it was already built. Raises ``ConfigError`` for array data."""
    data = build_run_data(dataclasses.replace(cfg.data, cache="on"), cfg.model)
    caches: dict[Path, tuple[str, DecodedImages]] = {}
    for domain in (data.source_train, data.target_train, data.target_eval):
        if isinstance(domain, CachedImageDomain):
            names = domain.name.split(" + ")  # a pooled domain's name joins its parts'
            names = names if len(names) == len(domain.caches) else [c.path.stem for c in domain.caches]
            for images, name in zip(domain.caches, names, strict=True):
                caches.setdefault(images.path, (name, images))
    if not caches:
        raise ConfigError("the data are arrays, which need no cache; give image folders or list files")
    return list(caches.values())


def init_from_run(net: DomainAdaptNet, run_dir: str | Path, data: DomainData) -> None:
    """Start ``net`` from the weights of a trained run's ``last.pt``. The run must have the same classes (in the same
    order) and input shape, and the same backbone, bottleneck and head; its discriminator is taken too when it has
    the same shape (a run of the same kind of method), else the new one starts fresh. Raises ``ConfigError``."""
    where, path = f"model.init_from {run_dir}", Path(run_dir) / LAST_CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"{where}: no trained run there ({path} does not exist)")
    state = load_checkpoint(path)
    meta = state.meta
    if list(meta["classes"]) != list(data.classes):
        raise ConfigError(f"{where}: its classes {list(meta['classes'])} differ from this data's {list(data.classes)}")
    if tuple(meta["input_shape"]) != tuple(data.input_shape):
        raise ConfigError(
            f"{where}: it was trained on inputs of shape {tuple(meta['input_shape'])}, this data has "
            f"{tuple(data.input_shape)}"
        )
    own, saved = net.state_dict(), state.predicting  # the weights the run predicts with
    fits = {k: v for k, v in saved.items() if k in own and v.shape == own[k].shape}
    wrong = [k for k in own if not k.startswith("discriminator.") and k not in fits]
    if wrong:
        theirs, ours = (w["bottleneck.0.weight"].shape[0] if "bottleneck.0.weight" in w else 0 for w in (saved, own))
        hint = (
            f"; that run has model.bottleneck_dim={theirs}, this one {ours} (under auto, the method's reference "
            f"layout): train that run with --set model.bottleneck_dim={ours}, or give this one "
            f"--set model.bottleneck_dim={theirs}"
            if theirs != ours
            else ""
        )
        raise ConfigError(
            f"{where}: its network differs from this one ({len(wrong)} tensors do not fit, e.g. {wrong[0]}); use "
            f"the same model.backbone, model.bottleneck_dim and model.head_dims as that run{hint}"
        )
    discriminator = [k for k in own if k.startswith("discriminator.")]
    if not all(k in fits for k in discriminator):
        fits = {k: v for k, v in fits.items() if not k.startswith("discriminator.")}
    net.load_state_dict(fits, strict=False)


def build_report(
    run_dir: str | Path,
    data: DomainData | None = None,
    control: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Write ``report.html``, ``report.md`` and ``report.json`` into a run directory from its files (``data``
    defaults to the data its config names; ``control``, the source-only control's run directory, to
    ``run_dir/control`` when it exists); returns the HTML path. ``echo`` (e.g. ``print``) receives one line per
    diagnostic as it starts. See ``dann.reporting.report.build_report``."""
    from .reporting.report import build_report as build  # matplotlib loads only when a report is asked for

    return build(run_dir, data, control, echo)


def compare(
    run_dirs: list[str | Path],
    out: str | Path | None = None,
    validator: str | None = None,
    data: DomainData | None = None,
    different_targets: bool = False,
    overwrite: bool = False,
) -> str:
    """Runs side by side, ranked by one validator with 95 % noise bands ("no clear difference" when they overlap): a
    Markdown table and each run's sanity flags; with ``out`` also one HTML page (an existing ``out`` is replaced only
    with ``overwrite``: ``OutputExistsError``). ``data``: the data of runs trained on arrays in memory. Runs that
    adapted to different target data raise ``RunDirError`` unless ``different_targets`` (then they are shown
    unranked). See ``dann.reporting.report.compare_runs``."""
    from .reporting.report import compare_runs

    if out is not None:
        guard_output([out], overwrite)
    return compare_runs(run_dirs, out, validator, data, different_targets)


def _domain(
    model: TrainedModel, data_path: str | Path, labeled: bool, skip_bad: bool | None
) -> tuple[Domain | ImageDomain, list[str]]:
    """The samples of ``data_path`` prepared for ``model``: an ``.npz`` file, or image files (a folder: its class
    subfolders when ``labeled``, else every image below it; or a list file), with the run's evaluation transform;
    and the names of their classes unknown to the model (labeled image files only: their labels are ``K + j``, j the
    place of the name in that list)."""
    if str(data_path).endswith(".npz"):
        domain, names = load_npz(data_path)
        if len(domain) == 0:
            raise DataError(f"{data_path}: no samples")
        check_same_classes(model.classes, names, f"{data_path} vs the run's classes")
        model.check_input(domain.x, data_path)
        check_scales([domain.scale], trained=model.scale)
        return domain, []
    if model.image is None:
        raise DataError(f"{data_path}: this run was trained on arrays; give it an .npz file, not image files")
    images = read_images(data_path, recursive=not labeled, hint_root=False)
    y = encode_labels(images, model.classes, "the run", unknown_ok=True) if labeled else None
    d = model.config.data
    skip = d.skip_bad_images if skip_bad is None else skip_bad
    transform = eval_transform(model.image)
    pipeline = Pipeline(
        model.image, Unaugmented(transform), transform, d.num_workers, d.pin_memory, False, skip, CALL_SKIP_HINT
    )
    unknown = unknown_classes(images, model.classes) if labeled else []
    return ImageDomain(images.paths, y, pipeline, images.origin), unknown


def _check_read(domain: Domain | ImageDomain, data_path: str | Path, read: int) -> None:
    """After a pass over ``domain`` that read ``read`` samples: one warning names the skipped files. Raises
    ``DataError`` when none could be read."""
    bad = sorted(domain.bad)
    if bad and read == 0:
        raise DataError(f"{data_path}: none of its {len(domain)} image file(s) could be read, e.g. {bad[0]}")
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image file(s): {', '.join(bad[:5])}", DataWarning, stacklevel=3)


def _load(run_dir: str | Path, checkpoint: str) -> TrainedModel:
    """``load_run`` of checkpoint ``last`` or ``best``, with a warning when the run has not finished training."""
    model = load_run(run_dir, checkpoint_path(checkpoint))
    if not model.progress.finished:
        warnings.warn(
            f"{run_dir} has not finished training: {model.checkpoint} is at {model.progress}; its outputs come from a "
            f"model still in training (continue it: dann train --out {run_dir} --resume)",
            DataWarning,
            stacklevel=3,
        )
    return model


def default_eval_dir(run_dir: str | Path, data_path: str | Path, checkpoint: str = "last") -> Path:
    """Where ``dann evaluate`` writes by default: ``run_dir/eval/<data name>-<checkpoint>`` (the data's folder name,
    or its file name without ``.npz``/``.csv``...), one folder per data and checkpoint, so the results of ``last``
    and ``best`` are both kept."""
    path = Path(str(data_path).rstrip("/"))
    name = path.stem if path.suffix.lower() in (".npz", *LIST_EXTENSIONS) else path.name
    return Path(run_dir) / "eval" / f"{name}-{checkpoint}"


def _unknown_to_model(counts: torch.Tensor, unknown: list[str], classes: list[str]) -> dict[str, Any]:
    """Per class unknown to the model (labels ``K + j``, see ``_domain``; ``counts`` (len(unknown), K): its images
    per predicted class): ``{"n": images, "predicted": {class: images}}``, what the model took its images for."""
    out = {}
    for name, row in zip(unknown, counts.tolist(), strict=True):
        out[name] = {"n": sum(row), "predicted": {classes[i]: c for i, c in enumerate(row) if c}}
    return out


def evaluate(
    run_dir: str | Path,
    data_path: str | Path,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    skip_bad: bool | None = None,
    checkpoint: str = "last",
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, macro-F1 and confusion matrix of the run's ``checkpoint`` (``last`` or ``best``)
    on labeled data (``.npz``, class folders or a list file with labels), with the checkpoint, its step and the run's
    progress (``progress``: e.g. "step 400 of 1000 (unfinished)", with a warning). Images of classes unknown to the
    model are counted apart (``unknown_to_model``: per class, its images and what they were predicted as) and left
    out of the metrics, with a warning. The predictions are counted batch by batch (``confusion_counts``): memory
    does not grow with the number of samples. With ``out_dir`` (``default_eval_dir`` is the CLI's): writes
    metrics.json, confusion.csv (unknown classes as extra rows) and confusion.png there (existing files are replaced
    only with ``overwrite``). Raises ``DataError`` for unlabeled data or data without an image of the model's
    classes."""
    files = [Path(out_dir) / name for name in ("metrics.json", "confusion.csv", "confusion.png")] if out_dir else []
    guard_output(files, overwrite)
    model = _load(run_dir, checkpoint)
    domain, unknown = _domain(model, data_path, labeled=True, skip_bad=skip_bad)
    if domain.y is None:
        raise DataError(
            f"{data_path}: evaluation needs labels (class subfolders, path,label rows or array 'y'); "
            "use predict for unlabeled data"
        )
    k = len(model.classes)
    check_labels(domain.y, k + len(unknown), str(data_path))
    counts = confusion_counts(model.net, domain, k + len(unknown), model.config.train.eval_batch_size)
    _check_read(domain, data_path, int(counts.sum()))
    if not bool(counts[:k].sum()):
        raise DataError(f"{data_path}: none of its classes ({', '.join(unknown[:5])}) is a class of the run")
    metrics = metrics_from_confusion(counts[:k])
    apart = _unknown_to_model(counts[k:], unknown, model.classes)
    if apart:
        counted = ", ".join(f"{name}: {v['n']}" for name, v in apart.items())
        warnings.warn(
            f"{data_path}: {sum(v['n'] for v in apart.values())} image(s) of {len(apart)} class(es) unknown to the "
            f"model ({counted}) are left out of the accuracy, computed on the {metrics['n']} images of its classes",
            DataWarning,
            stacklevel=2,
        )
    done = model.progress
    metrics |= {"classes": model.classes, "step": model.step, "skipped_images": len(domain.bad)}
    metrics |= {"checkpoint": model.checkpoint, "steps": done.steps, "finished": done.finished, "progress": str(done)}
    metrics |= {"unknown_to_model": apart}
    if files:
        _write_evaluation(files, metrics, f"{Path(data_path).name}, {model.checkpoint}, {done}")
    return metrics


def _write_evaluation(files: list[Path], metrics: dict[str, Any], title: str) -> None:
    """metrics.json, confusion.csv (classes unknown to the model as extra rows) and confusion.png (``title``)."""
    rows = {f"{name} (unknown to the model)": v["predicted"] for name, v in metrics["unknown_to_model"].items()}
    atomic_write_text(files[0], json.dumps(metrics, indent=1) + "\n")
    atomic_write_text(files[1], confusion_csv(metrics["confusion"], metrics["classes"], rows))
    from .reporting.plots import confusion_plot  # matplotlib only when a picture is asked for

    atomic_write_bytes(files[2], confusion_plot(metrics["confusion"], metrics["classes"], title))


def predict(
    run_dir: str | Path | TrainedModel,
    data_path: str | Path,
    out: str | Path,
    overwrite: bool = False,
    top_k: int = 3,
    skip_bad: bool | None = None,
    checkpoint: str = "last",
) -> Path:
    """Write ``out`` (CSV), one row per sample. ``.npz``: index, predicted_class, confidence. Image files (a folder,
    searched recursively, or a list file): path, predicted_class, confidence, then class_i, prob_i for the
    ``top_k`` most probable classes (fewer when the model has fewer classes). A run that has not finished training
    gets a warning naming its step ("step 400 of 1000 (unfinished)"). The rows are written batch by batch to a
    temporary file beside ``out``, renamed onto it once complete (removed on an error): memory does not grow with the
    number of samples. Raises ``OutputExistsError`` for an existing ``out`` without ``overwrite``, ``DataError`` when
    no sample could be read. ``run_dir`` may be a model already loaded (e.g. CLIP's zero-shot classifier)."""
    out = Path(out)
    guard_output([out], overwrite)
    model = run_dir if isinstance(run_dir, TrainedModel) else _load(run_dir, checkpoint)
    domain, _ = _domain(model, data_path, labeled=False, skip_bad=skip_bad)
    paths = None if isinstance(domain, Domain) else domain.paths
    k = max(1, min(top_k, len(model.classes)))
    top = [f"{n}_{j}" for j in range(1, k + 1) for n in ("class", "prob")]
    header = (
        ["index", "predicted_class", "confidence"] if paths is None else ["path", "predicted_class", "confidence", *top]
    )
    read = 0
    with atomic_writer(out) as write:
        write(_csv_text([header]))
        for probs, index in predictions_by_batch(model.net, domain.batches(model.config.train.eval_batch_size)):
            write(_csv_text(_prediction_rows(probs, index, model.classes, paths, k)))
            read += len(index)
        _check_read(domain, data_path, read)  # before the rename: no file when nothing could be read
    return out


def _prediction_rows(
    probs: torch.Tensor, index: torch.Tensor, classes: list[str], paths: list[str] | None, top_k: int
) -> list[list[Any]]:
    """``predict``'s CSV rows for one batch of probabilities (B, K) of samples ``index`` (B,): index, predicted class
    and confidence for arrays (``paths`` None); else path, predicted class, confidence and the ``top_k`` most probable
    classes with their probabilities."""
    if paths is None:
        conf, pred = probs.max(1)
        return [
            [i, classes[p], f"{c:.6f}"] for i, p, c in zip(index.tolist(), pred.tolist(), conf.tolist(), strict=True)
        ]
    top_p, top_i = probs.topk(top_k, dim=1)
    rows = []
    for i, ps, cs in zip(index.tolist(), top_p.tolist(), top_i.tolist(), strict=True):
        top = [v for c, p in zip(cs, ps, strict=True) for v in (classes[c], f"{p:.6f}")]
        rows.append([paths[i], classes[cs[0]], f"{ps[0]:.6f}", *top])
    return rows


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def estimate_label_shift(
    run: str | Path | TrainedModel,
    target: str | Path | Any = None,
    source: str | Path | tuple[Any, Any] | None = None,
    method: str = "bbse",
    *,
    soft: bool = False,
    bootstrap: int = 200,
    seed: int = 0,
    checkpoint: str = "last",
) -> LabelShift:
    """The target's class proportions, estimated without target labels from a trained run's predictions on held-out
    labeled source samples and on target samples (``dann.evaluation.label_shift``: ``bbse``, Lipton et al., ICML
    2018, or ``em``, Saerens et al., 2002), with a bootstrap band and a ``large`` flag.

    ``run``: a run directory (its ``checkpoint``: last or best) or ``load_run``'s result. ``target``: samples
    (N, ...) as an array, an ``.npz`` file or image files; None: the run's own target data, built again from its
    config. ``source``: held-out labeled samples ``(x, y)``, a labeled ``.npz`` file or class folders; None: the
    run's held-out source split (``data.val_fraction``): predictions on the samples it trained on are too good to
    measure its confusion. Raises ``DataError`` when there is no held-out source sample."""
    model = run if isinstance(run, TrainedModel) else _load(run, checkpoint)
    data = build_run_data(model.config.data, model.config.model) if target is None or source is None else None
    target_domain = data.target_train if data is not None and target is None else _samples(model, target, False)
    source_domain = data.source_val if data is not None and source is None else _samples(model, source, True)
    if source_domain is None or len(source_domain) == 0:
        raise DataError("the run kept no held-out source samples (data.val_fraction=0): pass source=(x, y)")
    return model_label_shift(
        model.net, source_domain, target_domain, model.classes, method=method, soft=soft,
        balanced=model.config.data.balance_classes, bootstrap=bootstrap, seed=seed,
        batch_size=model.config.train.eval_batch_size,
    )  # fmt: skip


def _samples(model: TrainedModel, data: Any, labeled: bool) -> Domain | ImageDomain:
    """Samples for ``model``: a path (``.npz`` or image files, as ``evaluate`` and ``predict`` read them), or arrays
    (x when unlabeled, (x, y) when ``labeled``)."""
    if isinstance(data, str | Path):
        domain, unknown = _domain(model, data, labeled, skip_bad=None)
        if unknown:
            raise DataError(f"{data}: classes the run does not know: {', '.join(unknown)}")
        if labeled and domain.y is None:
            raise DataError(f"{data}: the source samples need labels (array 'y')")
        return domain
    domain = as_domain(*data) if labeled else as_domain(data)
    model.check_input(domain.x, "the samples given")
    return domain


def fit_selecting(
    cfg: Config | None,
    out: str | Path | None,
    *,
    data: DomainData | None = None,
    resume: bool = False,
    overwrite: bool = False,
    report: bool = False,
    echo: Callable[[str], None] | None = None,
) -> Any:
    """Train the control and the candidates (``selection_configs``) and keep what ``choice.choose`` picks; returns
    the kept run's ``FitResult`` with ``run_dir`` = ``out``, ``control`` = the control's result and ``selection`` =
    what ``default.json`` records. ``resume``: continue a selection ``out`` holds. Raises ``RunDirError`` for
    ``resume`` without a selection in ``out``; ``TrainingInterrupted`` (naming ``out``) when a run is interrupted."""
    main = World.from_env().main
    say = echo if echo is not None and main else (lambda line: None)
    with contextlib.ExitStack() as stack:
        if out is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dann-default-")))
        else:
            root = Path(out)
        if resume:
            if selection_state(root) not in (SELECTING, DONE):
                raise RunDirError(f"cannot resume {root}: it holds no selection of the default")
            saved = absolute_paths(config_from_dict(json.loads((root / RECIPE_FILE).read_text())["config"]))
            # options given on resume: only those a resume may change (config.RESUMABLE), as for any run
            cfg = saved if cfg is None else resumed_config(saved, cfg, str(root))
        else:
            refuse_overridden(cfg)
            if main:
                prepare_run_dir(root, False, overwrite)
        assert cfg is not None
        data = data or build_run_data(cfg.data, cfg.model)
        runs = selection_configs(cfg, data.input_shape)
        too_few = len(data.target_train) < MIN_BAND_SAMPLES  # no band can be measured: no candidate could clear
        if too_few:
            runs = {CONTROL: runs[CONTROL]}
        if not resume and main:
            plan = {"state": SELECTING, "runs": list(runs), "config": cfg.to_dict()}
            atomic_write_text(root / RECIPE_FILE, json.dumps(plan, indent=1) + "\n")
        if too_few:
            say(
                f"default:  {len(data.target_train)} target samples are too few to measure a noise band, so no "
                "candidate could clear the rule: it trains the source-only control alone"
            )
        else:
            say(cost_line(list(runs)))
        results = {}
        for i, (name, sub) in enumerate(runs.items()):
            path = where(root, name)
            say(f"default:  run {i + 1} of {len(runs)}, {name}, into {path}")
            tic, fresh = time.perf_counter(), not has_checkpoint(path)
            told = echo  # the control's estimate after its first steps becomes one for the whole selection
            if echo is not None and name == CONTROL and fresh and len(runs) > 1:
                told = total_estimate(echo, say, sub.train.steps, list(runs)[1:])
            try:  # a run with a checkpoint continues; one without starts afresh
                results[name] = fit(sub, path, data=data, resume=not fresh, overwrite=fresh, echo=told)
            except TrainingInterrupted:
                say(f"default:  stopped while training {name}; continue the selection with --resume on {root}")
                raise
            if name == CONTROL and fresh:
                say(remaining_line(time.perf_counter() - tic, list(runs)[1:]))
        validator, guard = SELECTION["validator"], SELECTION["guard"]
        held_out = len(data.source_val) if data.source_val is not None else 0
        seen = {n: evidence(where(root, n), r.history, data, validator) for n, r in results.items()}
        kept, verdicts = choose(seen, held_out, validator, guard)
        method = results[kept].config.method.name
        why = (
            f"kept the source-only control: {len(data.target_train)} target samples are too few to measure a "
            "noise band, so no candidate could clear the rule (none was trained)"
            if too_few
            else choice_summary(kept, verdicts, method)
        )
        note = {
            "state": DONE,
            "method": method,
            "kept": kept,
            "why": why,
            "validator": validator,
            "runs": {n: str(where(root, n).resolve()) for n in runs} if out is not None else None,
            "verdicts": {n: v.to_dict() for n, v in verdicts.items()},
            "config": cfg.to_dict(),
        }
        if main:
            adopt(root, where(root, kept))
            atomic_write_text(root / RECIPE_FILE, json.dumps(note, indent=1) + "\n")
        say(f"default:  {why}")
        kept_result = results[kept]
        page = build_report(root, data, echo=echo) if report and out is not None and main else None
        return dataclasses.replace(
            kept_result,
            run_dir=root if out is not None else None,
            report=page,
            control=dataclasses.replace(results[CONTROL], run_dir=results[CONTROL].run_dir if out else None)
            if kept != CONTROL
            else None,
            selection=note,
        )
