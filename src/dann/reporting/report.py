"""``dann report`` and ``dann compare``: run directories → Markdown and self-contained HTML pages.

Built from a run's files only (``config.yaml``, ``metrics.jsonl``, ``train.jsonl``, ``checkpoints/``; the data named
in the config for the feature diagnostics), so a report can be rebuilt at any time. Every number computed with target
labels is marked as such; the checkpoint recommendation never uses them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import RECIPE_FILE, Config
from ..data import SOURCE, TARGET, DomainData
from ..errors import DannError, RunDirError
from ..evaluation.diagnostics import proxy_a_distance, tsne_2d
from ..evaluation.label_shift import LARGE_TV, LabelShift, model_label_shift
from ..evaluation.loading import default_record, load_run
from ..evaluation.metrics import embed, evaluate_domain
from ..models import DomainAdaptNet
from ..plan import build_network, build_run_data
from ..runs import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    LAST_CHECKPOINT,
    TRAIN_LOG_FILE,
    atomic_write_bytes,
    atomic_write_text,
)
from ..selection.bands import Band, checkpoint_band
from ..selection.validators import SUBSET_SEED, subset
from ..training.seeds import derive_seed
from ..training.stage_config import stage_label, stage_steps
from ..training.stages import batch_words, stage_method, target_batches
from . import plots
from .pages import Code, Figure, Section, Table, figures, to_html, to_markdown
from .summary import RunSummary, summarize
from .verdicts import (
    CONTROL_DIR,
    USES_LABELS,
    Flag,
    check_targets,
    control_verdict,
    num_classes,
    progress,
    ranking,
    run_bands,
    run_flags,
)

REPORT_MD, REPORT_HTML, REPORT_JSON, FIGURE_DIR = "report.md", "report.html", "report.json", "report_files"
MIN_DIAGNOSTIC_SAMPLES = 4  # per domain, for the proxy A-distance (two halves of a balanced sample) and t-SNE


def _pct(record: dict[str, Any] | None, *path: str) -> str:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "–"


def _score(record: dict[str, Any] | None, validator: str) -> str:
    value = (record or {}).get("validators", {}).get(validator)
    return f"{value:.4g}" if isinstance(value, int | float) else "–"


def checkpoint_table(run: RunSummary) -> Table:
    """Accuracy of the last, the validator-selected and the target-label-selected steps."""
    has_best = (run.run_dir / BEST_CHECKPOINT).is_file()
    selected = f"selected by `{run.validator}` (no target labels)"
    rows = [("last", run.last, f"`{LAST_CHECKPOINT}`"), (selected, run.selected, f"`{BEST_CHECKPOINT}`" * has_best)]
    if run.oracle is not None:
        rows.append((f"**best target accuracy: {USES_LABELS}**, reference only", run.oracle, "not saved"))
    header = ["checkpoint", "step", "file", "source held-out acc", f"`{run.validator}` score"]
    header.append(f"target acc ({USES_LABELS})")
    body = []
    for label, r, file in rows:
        step = str(r["step"]) if r else "–"
        score, target = _score(r, run.validator), _pct(r, "oracle", "target_acc")
        body.append([label, step, file or "–", _pct(r, "source_val", "acc"), score, target])
    return Table(header, body)


def labeled_table(run: RunSummary) -> Table | None:
    """Held-out accuracy of each labeled domain at the last and the selected step (runs with several); None else."""
    names = list(run.last.get("labeled_val", {}))
    if not names:
        return None
    intermediate = set(run.config.data.intermediate)
    rows = [
        [f"`{n}`", "intermediate" if n in intermediate else "source", _pct(run.last, "labeled_val", n, "acc"),
         _pct(run.selected, "labeled_val", n, "acc")]
        for n in names
    ]  # fmt: skip
    return Table(["labeled domain", "role", "held-out acc, last step", "held-out acc, selected step"], rows)


def initial_network(cfg: Config, data: DomainData) -> DomainAdaptNet:
    """The network as training started: ``fit`` seeds torch with the ``init`` seed (``training.seeds``) right before
    building it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.train.seed, "init"))
        return build_network(cfg.model, cfg.method, data.input_shape, data.num_classes, len(data.domains) + 1)


def _networks(run: RunSummary, data: DomainData) -> dict[str, DomainAdaptNet]:
    nets = {} if run.config.model.pretrained else {"initialization": initial_network(run.config, data)}
    nets["last"] = load_run(run.run_dir).net
    if (run.run_dir / BEST_CHECKPOINT).is_file():
        nets["selected"] = load_run(run.run_dir, BEST_CHECKPOINT).net
    return nets


def feature_diagnostics(
    run: RunSummary,
    data: DomainData,
    max_points: int = 1000,
    tsne_points: int = 200,
    echo: Callable[[str], None] | None = None,
) -> dict:
    """Proxy A-distance per checkpoint (source vs unlabeled target features), a t-SNE map of the selected
    checkpoint's features, and its confusion matrix on labeled target data when there is some (target labels).

    Memory is bounded by the samples drawn, not by the data: features are computed only for a random sample (seed
    ``SUBSET_SEED``, the same at every call) of at most ``max_points`` training samples per domain, drawn before the
    forward pass; the t-SNE maps a random sample of at most ``tsne_points`` of those per domain; the confusion matrix
    is counted batch by batch. ``out["sample"]`` records the sizes: ``{"source": (drawn, of), "target": (drawn, of),
    "tsne": (source, target), "seed": SUBSET_SEED}``. ``echo`` (e.g. ``print``) receives one line per step."""
    say = echo or (lambda line: None)
    nets = _networks(run, data)
    n_s, n_t = len(data.source_train), len(data.target_train)
    source = data.source_train.subset(subset(n_s, max_points))
    target = data.target_train.subset(subset(n_t, max_points))
    which = "selected" if "selected" in nets else "last"
    out: dict[str, Any] = {"a_distance": {}, "which": which}
    out["sample"] = {"source": (len(source), n_s), "target": (len(target), n_t), "seed": SUBSET_SEED}
    for label, net in nets.items():
        say(f"report: proxy A-distance of the {label} network on {len(source)} + {len(target)} samples")
        f_s, _, kept_s = embed(net, source)
        f_t, logits_t, _ = embed(net, target)
        out["a_distance"][label] = proxy_a_distance(f_s, f_t)
        if label == which:
            pick_s, pick_t = subset(len(f_s), tsne_points), subset(len(f_t), tsne_points)
            out["sample"]["tsne"] = (len(pick_s), len(pick_t))
            say(f"report: t-SNE of {len(pick_s) + len(pick_t)} points ({len(pick_s)} + {len(pick_t)})")
            out["tsne"] = tsne_2d(torch.cat([f_s[pick_s], f_t[pick_t]]))
            out["domain"] = torch.tensor([SOURCE] * len(pick_s) + [TARGET] * len(pick_t))
            out["labels"] = torch.cat([source.y[kept_s][pick_s], logits_t[pick_t].argmax(1)])
    if data.target_eval is not None and data.target_eval.y is not None:
        say(f"report: confusion matrix on the {len(data.target_eval)} labeled target samples")
        out["target_metrics"] = evaluate_domain(nets[which], data.target_eval, data.num_classes)
    return out | {"classes": data.classes}


def candidate_line(run_dir: Path) -> str | None:
    """For a candidate of the default's selection (``OUT/candidates/NAME``): whether the selection kept it, and the
    rule's verdict on it (an ineligible candidate, e.g. one whose source accuracy collapsed, is marked as such);
    None for any other run or a selection still running."""
    if run_dir.parent.name != "candidates":
        return None
    record = default_record(run_dir.parent.parent)
    verdict = ((record or {}).get("verdicts") or {}).get(run_dir.name)
    if verdict is None:
        return None
    where = f"`{run_dir.parent.parent}`"
    if record.get("kept") == run_dir.name:
        return f"**A candidate of the default's selection in {where}, and the run it kept**: {verdict['why']}."
    warning = "**Flag: not eligible**: " if not verdict["eligible"] else ""
    return (
        f"{warning}**A candidate of the default's selection in {where}, not kept** (it kept `{record['kept']}`): "
        f"{verdict['why']}. Use the selection's run, {where}, not this one."
    )


def _answer(
    run: RunSummary, diag: dict | None, flags: list[Flag], verdict: list[str] | None, note: dict[str, Any] | None
) -> Section:
    """The short answer: what the default did (``note``: its ``default_record``, None for a named method), which
    checkpoint to use, the sanity flags, and whether adaptation helped (no target labels; ``verdict``: the comparison
    with the source-only control, when there is one)."""
    sel, done = run.selected, progress(run)
    end = "the end of training" if done.finished else "training has not finished: see the flags below"
    blocks: list = []
    kept_control = (note or {}).get("kept") == "control"
    if note is not None:  # trained by the default, because no method was named
        if "kept" in note:  # the selecting default
            named = f" ({note['method']})" if note["method"] != note["kept"] else ""
            blocks.append(
                f"**The default kept `{note['kept']}`{named}**: no method was named, so it trained the "
                f"source-only control and {', '.join(n for n in note['verdicts'])} on this data and {note['why']}. "
                "Each run is in its own folder (`control/`, `candidates/`)."
            )
        else:
            blocks.append(f"**The default trained `{note['method']}`**, as no method was named: {note['why']}.")
    blocks.append(f"**Checkpoint to use: `{LAST_CHECKPOINT}`** ({done}, {end}).")
    if sel is not None:
        blocks.append(
            f"The `{run.validator}` validator (no target labels) prefers step {sel['step']}, kept as "
            f"`{BEST_CHECKPOINT}` (score {_score(sel, run.validator)}, higher is better; use it with "
            "`--checkpoint best`). Validators earn their keep when choosing between runs: `dann compare`."
        )
    pad = (diag or {}).get("a_distance", {})
    if pad:
        values = ", ".join(f"{k} {v:.2f}" for k, v in pad.items())
        blocks.append(
            f"**Domain alignment** (proxy A-distance between source and target features; 2 = linearly separable, "
            f"0 = indistinguishable): {values}. Lower means a linear classifier tells the domains apart less easily."
        )
    acc = _pct(run.last, "source_val", "acc")
    blocks.append(f"**Source held-out accuracy** at the last step: {acc}; a large drop would mean adaptation hurt.")
    blocks += [f"**Flag: {f.name}**. {f}" for f in flags] or ["**Sanity flags**: none."]
    if kept_control:
        blocks.append(
            "**Did adaptation help?** Not shown on this data: no candidate cleared the default's rule (above), so "
            "this run is the source-only control it kept, the safe choice; a candidate may still help where the "
            "noise bands were too wide to tell. Each candidate's own report: `dann report --run` on its folder in "
            "`candidates/`."
        )
    elif verdict:
        blocks += [f"**Did adaptation help?** {verdict[0]}", *verdict[1:]]
    else:
        blocks.append(
            "**Did adaptation help?** Train with `--control` (`dann train ... --control`, or `dann.fit(..., "
            f"control=True)`): the source-only control trains on the same data, and this report compares both by "
            f"`{run.validator}` with noise bands, without target labels."
        )
    if run.oracle is not None:
        last, chosen, best = (_pct(r, "oracle", "target_acc") for r in (run.last, sel, run.oracle))
        blocks.append(
            f"With target labels (evaluation only): target accuracy {last} at the last step, {chosen} "
            f"at the selected step, and at best {best} (step {run.oracle['step']}), a choice no user without target "
            "labels could make."
        )
    return Section("Answer", blocks)


MAX_LABEL_SHIFT_ROWS = 30  # classes listed in the report's label-shift table


def label_shift(run: RunSummary, data: DomainData, echo: Callable[[str], None] | None = None) -> LabelShift | None:
    """The target's class proportions estimated with the run's last checkpoint (BBSE: its confusion on the held-out
    source and its predictions on the target; ``evaluation.label_shift``), or None without held-out source samples.
    Keeps the class probabilities of both sets (K floats per sample), no features."""
    if data.source_val is None or len(data.source_val) == 0 or data.source_val.y is None:
        return None
    if echo is not None:
        echo(f"report: label shift from predictions on {len(data.source_val)} + {len(data.target_train)} samples")
    model = load_run(run.run_dir)
    balanced = run.config.data.balance_classes
    size = run.config.train.eval_batch_size
    return model_label_shift(
        model.net, data.source_val, data.target_train, data.classes, balanced=balanced, bootstrap=100, batch_size=size
    )


SEPARATED = 1.8  # proxy A-distance above which the report calls the domains' features nearly separable


def _label_shift_section(shift: LabelShift, a_distance: float = 0.0) -> Section:
    """The label-shift estimate; with the domains' features nearly separable (``a_distance`` of the trained
    network above ``SEPARATED``) it opens with a caution: the estimate then mostly reads the covariate shift."""
    verdict = "**large**" if shift.large else "not shown to be large"
    blocks: list = []
    if a_distance > SEPARATED:
        blocks.append(
            f"**Unreliable on this data**: the trained network's source and target features are almost perfectly "
            f"separable (proxy A-distance {a_distance:.2f} of 2), so its errors on the target come mostly from the "
            "domain shift, which this estimate cannot tell from a change of the class proportions: read the "
            "table below as where the model's predictions go, not as the target's classes."
        )
    blocks += [
        f"Estimated with this run's model ({shift.method.upper()}, Lipton et al. 2018: its confusion on the held-out "
        f"source and its predictions on the target, no target labels): the total variation between the source's "
        f"class proportions and the target's is {shift.tv:.2f} [{shift.tv_band[0]:.2f}, {shift.tv_band[1]:.2f}], "
        f"{verdict} (above {LARGE_TV} at the band's low end). The estimate assumes each class looks the same in both "
        "domains: where the model errs more on the target than on the source it moves too, so it is a measurement "
        "of the target's proportions only when the model is accurate there. Methods that align the domains' "
        "marginals or rescale pseudo-labels to the source's proportions (`dann`, `cdan`, `adamatch`'s distribution "
        "alignment) assume there is no label shift; `iwdan` and `iwcdan` do not."
    ]
    names = shift.classes or tuple(str(k) for k in range(len(shift.proportions)))
    rows = [
        [name, f"{shift.source[k]:.3f}", f"{shift.proportions[k]:.3f}", f"[{shift.low[k]:.3f}, {shift.high[k]:.3f}]"]
        for k, name in enumerate(names)
    ]
    blocks.append(
        Table(["class", "source", "target (estimate)", "band (5th–95th percentile)"], rows[:MAX_LABEL_SHIFT_ROWS])
    )
    if len(rows) > MAX_LABEL_SHIFT_ROWS:
        blocks.append(f"{len(rows) - MAX_LABEL_SHIFT_ROWS} more classes in `report.json`.")
    return Section("Label shift", blocks)


def _config_section(run: RunSummary) -> Section:
    cfg = run.config
    data = cfg.data.task or (
        f"{_sources(cfg.data.source)} → {cfg.data.target}" if cfg.data.source else "arrays in memory"
    )
    transfer = (
        f", λ_adv {cfg.method.lambda_adv}, GRL {cfg.method.grl_schedule}" if cfg.method.name != "source_only" else ""
    )
    regularizers = "".join(f" + {name} {w:g}" for name, w in cfg.method.regularizers.items())
    uneven = {k: v for k, v in target_batches(cfg).items() if v != cfg.train.batch_size}  # method.uratio
    batch = batch_words(cfg.train.batch_size, uneven)
    keys = {
        "data": data,
        "method": f"{cfg.method.name}{transfer}{regularizers}",
        "model": f"{cfg.model.backbone}, bottleneck {cfg.model.bottleneck_dim}",
        "optimizer": f"{cfg.optim.name}, lr {cfg.optim.lr}, schedule {cfg.optim.lr_schedule}",
        "training": f"{cfg.train.steps} steps, batch {batch}, seed {cfg.train.seed}",
        "selection": f"`{run.validator}`, evaluated every {cfg.train.eval_every} steps",
    }
    if cfg.train.stages:
        keys["stages"] = _stages(cfg)
    return Section("Configuration", [Table(["", "value"], [[k, v] for k, v in keys.items()]), Code(cfg.to_yaml())])


def _stages(cfg: Config) -> str:
    """``train.stages`` in one line: each stage's name, steps, method, classified and aligned domains."""
    parts = []
    for i, (stage, steps) in enumerate(zip(cfg.train.stages, stage_steps(cfg.train.stages, cfg.train.steps),
                                           strict=True)):  # fmt: skip
        method = stage_method(cfg, i)[0]  # with the run's regularizers where the stage reads the target batch
        terms = method.name + "".join(f" + {name} {w:g}" for name, w in method.regularizers.items())
        classify = ", ".join(f"{k} × {v:g}" for k, v in stage.classify.items()) or "every labeled domain"
        align = f"; aligns {', '.join(stage.align)}" if stage.align else ""
        parts.append(f"{stage_label(i, stage)} ({steps} steps, {terms}: classifies {classify}{align})")
    return " → ".join(parts)


def _sources(source: str | tuple[str, ...] | dict[str, str]) -> str:
    """``data.source`` in one line: a path, paths joined by " + ", or name = path entries."""
    if isinstance(source, dict):
        return " + ".join(f"{name} = {path}" for name, path in source.items())
    return source if isinstance(source, str) else " + ".join(source)


def _curve_sections(run: RunSummary) -> list[Section]:
    step = run.selected["step"] if run.selected else None
    t, logged = run.config.train, (run.run_dir / TRAIN_LOG_FILE).is_file()  # a run written before it: evaluations
    terms = f"every log step (every {t.log_every} steps, means since the one before)" if logged else "every evaluation"
    caption = (
        f"Loss terms, GRL λ, lr and domain accuracy (those the method logs) at {terms}; accuracies and "
        f"`{run.validator}` at every evaluation (every {t.eval_every} steps and at the end); against the step. "
        "Dashed: uses target labels."
    )
    bounds = plots.stage_boundaries(run.history)
    if bounds:
        caption += " Grey dashed lines: the start of " + ", ".join(f"stage {n} (after step {s})" for s, n in bounds)
    curves = Figure("curves", plots.training_curves(run.history, run.validator, step, run.train_log), caption)
    adversarial = any("domain_acc" in r.get("train", {}) for r in run.train_log or run.history)
    hint = (
        "When adaptation works, `adv` stays near ln 2 ≈ 0.69 and the discriminator's accuracy near 0.5: it cannot "
        "tell the domains apart from the features. Near 1.0, the features are still domain-specific."
        if adversarial
        else f"`{run.config.method.name}` trains no domain discriminator: the curves show its loss terms, the "
        "learning rate and the accuracies."
    )
    caption = "Validator scores against the step (no target labels; higher is better)."
    scores = Figure("validators", plots.validator_curves(run.history, run.validator, step), caption)
    names = sorted(run.last.get("validators", {}))
    table = Table(
        ["validator", "last step", "selected step"],
        [[f"`{n}`", _score(run.last, n), _score(run.selected, n)] for n in names],
    )
    return [Section("Training curves", [hint, curves]), Section("Validators", [scores, table])]


def _feature_sections(diag: dict) -> list[Section]:
    classes, which = diag["classes"], diag["which"]
    text = "Lower is better aligned: 2 means a linear classifier tells source from target features perfectly."
    table = Table(["features of", "proxy A-distance"], [[k, f"{v:.3f}"] for k, v in diag["a_distance"].items()])
    sample = diag["sample"]
    (drawn_s, n_s), (drawn_t, n_t) = sample["source"], sample["target"]
    text += f" Computed on the features of {_drawn((drawn_s, drawn_t), (n_s, n_t), sample['seed'])}."
    caption = (
        f"t-SNE of the {which} checkpoint's features of {_drawn(sample['tsne'], (n_s, n_t), sample['seed'])}; target "
        "classes are predictions (no target labels)."
    )
    tsne = Figure("tsne", plots.tsne_map(diag["tsne"], diag["domain"], diag["labels"], classes), caption)
    sections = [Section("Domain alignment", [text, table, tsne])]
    metrics = diag.get("target_metrics")
    if metrics is not None:
        title = f"{which} checkpoint on labeled target data: {USES_LABELS}"
        confusion = Figure("confusion", plots.confusion_plot(metrics["confusion"], classes, title), title)
        accs = ["–" if a is None else f"{100 * a:.1f}%" for a in metrics["per_class_acc"]]
        per_class = Table(
            ["class", f"accuracy ({USES_LABELS})"], [list(row) for row in zip(classes, accs, strict=True)]
        )
        sections.append(Section(f"Target accuracy by class ({USES_LABELS})", [confusion, per_class]))
    return sections


def _drawn(drawn: tuple[int, int], of: tuple[int, int], seed: int) -> str:
    """The samples a diagnostic read, e.g. "200 of 4000 source and 200 of 3000 target training samples, drawn at
    random (seed 0)", or "all 48 source and all 36 target training samples"."""
    (k_s, k_t), (n_s, n_t) = drawn, of
    part_s, part_t = (f"all {n}" if k == n else f"{k} of {n}" for k, n in ((k_s, n_s), (k_t, n_t)))
    random = f", drawn at random (seed {seed})" if k_s < n_s or k_t < n_t else ""
    return f"{part_s} source and {part_t} target training samples{random}"


def _verdict(
    run: RunSummary, control_dir: Path | None, data: DomainData | None, note: str
) -> tuple[list[str] | None, dict[str, Any] | None]:
    """ "Did adaptation help?" against the source-only control in ``control_dir`` (None: no control), both at their
    last checkpoint, with noise bands on ``data`` (the run's; ``note`` says why it is None)."""
    if control_dir is None:
        return None, None
    control = summarize(control_dir, run.validator)
    check_targets([run, control])  # a control of another target is refused
    bands: tuple = (None, None)
    problem = note or "the run's data could not be loaded"
    if data is not None:
        (mine, why), (theirs, why_not) = (
            checkpoint_band(r.run_dir, LAST_CHECKPOINT, run.validator, data) for r in (run, control)
        )
        bands, problem = (mine, theirs), why or why_not
    return control_verdict(run, control, bands, problem)


def find_control(run_dir: Path, control: str | Path | None = None) -> Path | None:
    """The source-only control to compare a run with: ``control`` when given, else ``run_dir/control`` (where
    ``dann train --control`` puts it) when that is a run directory, or, for a candidate of the default's selection
    (``OUT/candidates/NAME``), the selection's ``OUT/control``; else None."""
    if control is not None:
        return Path(control)
    default = run_dir / CONTROL_DIR
    if not (default / CONFIG_FILE).is_file() and (run_dir.parent.parent / RECIPE_FILE).is_file():
        default = run_dir.parent.parent / CONTROL_DIR  # a candidate of the default's selection: the selection's control
    return default if (default / CONFIG_FILE).is_file() and default.resolve() != run_dir.resolve() else None


def build_report(
    run_dir: str | Path,
    data: DomainData | None = None,
    control: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Write ``report.md`` (figures in ``report_files/``), ``report.html`` (self-contained) and ``report.json``;
    returns the HTML path. ``data`` defaults to the data named in the run's config; without it the feature
    diagnostics (A-distance, t-SNE, confusion matrix) and the noise bands are left out with a note. ``control``: the
    source-only control's run directory (default: ``run_dir/control`` when it exists), for the verdict "did adaptation
    help?". ``echo`` (e.g. ``print``) receives one line per diagnostic as it starts ("report: t-SNE of 400 points
    ..."). Raises ``RunDirError`` for a control that adapted to other target data."""
    run = summarize(run_dir)
    diag, note = None, ""
    try:
        data = data or build_run_data(run.config.data, run.config.model)
    except DannError as e:
        note = f"Feature diagnostics left out: the run's data could not be loaded ({e})."
    if data is not None:
        n_s, n_t = len(data.source_train), len(data.target_train)
        if min(n_s, n_t) >= MIN_DIAGNOSTIC_SAMPLES:
            diag = feature_diagnostics(run, data, echo=echo)
        else:
            note = (
                f"Feature diagnostics left out: the proxy A-distance and t-SNE need at least {MIN_DIAGNOSTIC_SAMPLES} "
                f"training samples per domain, and the data has {n_s} source and {n_t} target samples."
            )
    flags = run_flags(run, data.num_classes if data else num_classes(run.run_dir), diag and diag["a_distance"])
    default = default_record(run.run_dir)
    kept_control = (default or {}).get("kept") == "control"
    control_dir = None if kept_control else find_control(run.run_dir, control)  # not the run against itself
    chosen_by = (default or {}).get("validator")
    judged = dataclasses.replace(run, validator=chosen_by) if chosen_by else run  # the default's own validator
    verdict, verdict_summary = _verdict(judged, control_dir, data, note)
    labeled = labeled_table(run)
    checkpoints = [checkpoint_table(run), *([labeled] if labeled else [])]
    answer = _answer(run, diag, flags, verdict, default)
    candidate = candidate_line(run.run_dir)
    if candidate:
        answer.blocks.insert(0, candidate)
    sections = [answer, Section("Checkpoints", checkpoints)]
    sections += _curve_sections(run)
    sections += _feature_sections(diag) if diag else [Section("Domain alignment", [note])]
    shift = label_shift(run, data, echo) if data is not None else None
    far = (diag or {}).get("a_distance", {}).get("last", 0.0)  # the network the estimate reads
    sections += [_label_shift_section(shift, far)] if shift is not None else []
    sections.append(_config_section(run))
    title = f"dann run report: {run.run_dir.name}"
    for figure in figures(sections):
        atomic_write_bytes(run.run_dir / FIGURE_DIR / f"{figure.name}.png", figure.png)
    atomic_write_text(run.run_dir / REPORT_MD, to_markdown(title, sections, FIGURE_DIR))
    atomic_write_text(run.run_dir / REPORT_HTML, to_html(title, sections))
    summary = {
        "validator": run.validator,
        "selected_step": run.selected["step"] if run.selected else None,
        "last_step": run.last["step"],
        "progress": progress(run).to_dict(),
        "a_distance": diag["a_distance"] if diag else None,
        "flags": [f.to_dict() for f in flags],
        "verdict": verdict_summary,
        "label_shift": shift.to_dict() if shift is not None else None,
        "default": default,
    }
    atomic_write_text(run.run_dir / REPORT_JSON, json.dumps(summary, indent=1) + "\n")
    return run.run_dir / REPORT_HTML


def _saved_a_distance(run: RunSummary) -> dict[str, float]:
    """The proxy A-distances of ``report.json``, when a report was built ({} otherwise)."""
    path = run.run_dir / REPORT_JSON
    try:
        return json.loads(path.read_text()).get("a_distance") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def _a_distance(run: RunSummary) -> str:
    """The selected (else last) checkpoint's proxy A-distance, from ``report.json`` when a report was built."""
    pad = _saved_a_distance(run)
    value = pad.get("selected", pad.get("last"))
    return "–" if value is None else f"{value:.2f}"


def compare_table(runs: list[RunSummary], bands: dict[str, Band] | None = None) -> Table:
    """One row per run; the validator's score of the selected step with its 95 % noise band (``bands``: run → band)
    where there is one."""
    validator, bands = runs[0].validator, bands or {}
    header = ["run", "method", "λ_adv", "lr", "step", "selected step", f"`{validator}` ± 95 % band"]
    header += ["source held-out acc", "A-distance", f"target acc, selected / last / best step ({USES_LABELS})"]
    rows = []
    for run in runs:
        cfg, sel, band = run.config, run.selected, bands.get(str(run.run_dir))
        targets = " / ".join(_pct(r, "oracle", "target_acc") for r in (sel, run.last, run.oracle))
        done = str(progress(run)).removeprefix("step ")
        method = [cfg.method.name, f"{cfg.method.lambda_adv:g}", f"{cfg.optim.lr:g}", done]
        score = str(band) if band is not None else _score(sel, validator)
        selected = [str(sel["step"]) if sel else "–", score, _pct(sel, "source_val", "acc")]
        rows.append([f"`{run.run_dir}`", *method, *selected, _a_distance(run), targets])
    return Table(header, rows)


def compare_runs(
    run_dirs: list[str | Path],
    out_html: str | Path | None = None,
    validator: str | None = None,
    data: DomainData | None = None,
    different_targets: bool = False,
) -> str:
    """Runs side by side: returns a Markdown table; with ``out_html`` also writes one HTML page with the table and
    the validator and target-accuracy curves. Every run is scored by one validator (default: the first run's
    ``selection.validator``) at its selected checkpoint, with a 95 % noise band recomputed on the data its config
    names (or ``data``, for runs trained on arrays in memory): a run is named the choice only when its band clears
    every other's, else "no clear difference". Each run's sanity flags follow. Runs that adapted to different target
    data raise ``RunDirError``; with ``different_targets`` they are shown, unranked, with a warning."""
    if not run_dirs:
        raise RunDirError("compare needs at least one run directory")
    first = summarize(run_dirs[0], validator)
    runs = [first, *(summarize(d, first.validator) for d in run_dirs[1:])]
    bands: dict[str, Band] = {}
    if check_targets(runs, different_targets):
        bands, problems = run_bands(runs, first.validator, data)
        choice = ranking(bands, problems, first.validator)
    else:
        choice = "**Not ranked**: the runs adapted to different target data, so their scores do not compare."
    note = "A-distance: the selected checkpoint's, from each run's `report.json` (– until `dann report` has run)."
    blocks: list = [compare_table(runs, bands), choice, note]
    for run in runs:
        flags = run_flags(run, num_classes(run.run_dir), _saved_a_distance(run))
        blocks += [f"`{run.run_dir}`: **flag: {f.name}**. {f}" for f in flags]
    runs_section = Section("Runs", blocks)
    if out_html is not None:
        histories = {str(r.run_dir): r.history for r in runs}
        logs = {str(r.run_dir): r.train_log for r in runs}
        caption = (
            f"`{first.validator}` per run (no target labels), target accuracy ({USES_LABELS}; dashed) and the source "
            "classification loss at every log step."
        )
        curves = Figure("compare", plots.compare_curves(histories, first.validator, logs), caption)
        atomic_write_text(out_html, to_html("dann: runs compared", [runs_section, Section("Curves", [curves])]))
    return to_markdown("dann: runs compared", [runs_section], FIGURE_DIR)
