"""Figures of a run, as PNG bytes. Built on ``matplotlib.figure.Figure`` (no pyplot, no GUI backend, no global
state). Everything computed with target labels is drawn dashed and says so in its label or title."""

from __future__ import annotations

import io
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

ORACLE_LABEL = "target acc (uses target labels)"
DOMAIN_PANEL = "domain discriminator accuracy (training batches)"
NOT_LOSS_TERMS = ("lr", "grl_lambda", "domain_acc", "pseudo_kept", "aux_agree_s")  # logged, but not loss terms
CURVE_PANELS = [  # (title, [(label, key path in a train.jsonl or metrics.jsonl record)]); loss terms: per run
    ("GRL coefficient λ", [("GRL λ", ("train", "grl_lambda"))]),
    ("learning rate", [("lr", ("train", "lr"))]),
    (DOMAIN_PANEL, [("domain_acc", ("train", "domain_acc"))]),
    ("accuracy", [("source held-out acc", ("source_val", "acc")), (ORACLE_LABEL, ("oracle", "target_acc"))]),
]


def png(fig: Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def series(history: Sequence[dict[str, Any]], *path: str) -> tuple[list[int], list[float]]:
    """(steps, values) of a nested key such as ``("train", "adv")``, over the records that have it."""
    steps, values = [], []
    for record in history:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float):
            steps.append(record["step"])
            values.append(float(value))
    return steps, values


Line = tuple[str, list[int], list[float], bool]  # label, steps, values, dashed (uses target labels)
MARKED_POINTS = 40  # a line of at most this many points marks each one


def curve_lines(
    history: Sequence[dict[str, Any]], log: Sequence[dict[str, Any]], lines: list[tuple[str, tuple[str, ...]]]
) -> list[Line]:
    """The lines of one panel that have values: a training term's (a path under ``train``) from ``log``, at every
    log step, any other from ``history``, at every evaluation."""
    drawn = []
    for label, path in lines:
        steps, values = series(log if path[0] == "train" else history, *path)
        if steps:
            drawn.append((label, steps, values, path[0] == "oracle"))
    return drawn


def _panel(ax: Axes, title: str, lines: list[Line]) -> None:
    for label, steps, values, dashed in lines:
        marker = "o" if len(steps) <= MARKED_POINTS else None
        ax.plot(steps, values, "--" if dashed else "-", marker=marker, markersize=3, label=label)
    if not lines:
        ax.text(0.5, 0.5, "not logged by this method", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    if lines:
        ax.legend(fontsize=7)


def loss_terms(history: Sequence[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    """Every loss term the run's method logged (``cls``, ``adv``, ``mcc``, ``fixmatch``...), in logging order."""
    names = dict.fromkeys(k for record in history for k in record.get("train", {}) if k not in NOT_LOSS_TERMS)
    return [(name, ("train", name)) for name in names]


def labeled_lines(history: Sequence[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    """The held-out accuracy of each labeled domain, when a run has several (``labeled_val``)."""
    names = dict.fromkeys(k for record in history for k in record.get("labeled_val", {}))
    return [(f"{name} held-out acc", ("labeled_val", name, "acc")) for name in names]


def stage_boundaries(history: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
    """(step, name of the stage that starts there) of each stage after the first, from the ``stage`` of the records
    (every stage ends with an evaluation, so its last record is at its last step)."""
    bounds = []
    for before, after in pairwise(history):
        if before.get("stage") != after.get("stage"):
            bounds.append((before["step"], str(after.get("stage"))))
    return bounds


def training_panels(
    history: Sequence[dict[str, Any]], log: Sequence[dict[str, Any]], validator: str
) -> list[tuple[str, list[Line]]]:
    """The panels of ``training_curves``, (title, lines): the training terms (loss terms, GRL λ, lr, domain
    discriminator accuracy) at every log step of ``log`` (``summary.training_log``), the accuracies and the validator
    at every evaluation of ``history`` (``metrics.jsonl``)."""
    chosen = (f"{validator} (selects best.pt; no target labels)", [(validator, ("validators", validator))])
    panels = [("loss terms (training batches)", loss_terms(log)), *CURVE_PANELS, chosen]
    title, lines = panels[4]  # accuracy: each labeled domain's too
    panels[4] = (title, [*lines, *labeled_lines(history)])
    return [(title, curve_lines(history, log, lines)) for title, lines in panels]


def drawn_panels(panels: list[tuple[str, list[Line]]]) -> list[tuple[str, list[Line]]]:
    """The panels worth drawing: those with a line, so that a method without a discriminator (source-only, AdaMatch)
    shows no empty GRL λ or domain-accuracy panel. The loss-terms panel always stays."""
    return [(title, lines) for i, (title, lines) in enumerate(panels) if lines or i == 0]


def training_curves(
    history: Sequence[dict[str, Any]],
    validator: str,
    selected_step: int | None,
    log: Sequence[dict[str, Any]] | None = None,
) -> bytes:
    """Loss terms, GRL coefficient, lr, domain discriminator accuracy (at every log step of ``log``; default: the
    evaluation records), accuracies and the validator that selects ``best.pt`` (at every evaluation), against the
    step; stages of ``train.stages`` on the same axis, split by grey dashed lines."""
    panels = drawn_panels(training_panels(history, log or history, validator))
    rows = -(-len(panels) // 3)
    fig = Figure(figsize=(12, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False).ravel()
    for ax, (title, lines) in zip(axes, panels, strict=False):
        _panel(ax, title, lines)
        if title == DOMAIN_PANEL:
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")  # chance
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    axes = axes[: len(panels)]
    bounds = stage_boundaries(history)
    for ax in axes:
        if selected_step is not None:
            ax.axvline(selected_step, color="tab:red", lw=1, alpha=0.6)
        for step, _ in bounds:
            ax.axvline(step, color="grey", lw=1, ls="--")
    stages = f"; grey dashed: a new stage ({', '.join(f'{n} from step {s}' for s, n in bounds)})" if bounds else ""
    fig.suptitle(f"red line: the step kept as best.pt (chosen without target labels){stages}", fontsize=9)
    return png(fig)


def validator_curves(history: Sequence[dict[str, Any]], validator: str, selected_step: int | None) -> bytes:
    """One small panel per validator score against the step; the configured validator's panel is marked."""
    names = sorted({name for record in history for name in record.get("validators", {})})
    cols = min(4, max(1, len(names)))
    rows = -(-max(1, len(names)) // cols)
    fig = Figure(figsize=(2.9 * cols, 2.3 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        steps, values = series(history, "validators", name)
        ax.plot(steps, values, marker="o", markersize=3, color="tab:red" if name == validator else "tab:blue")
        ax.set_title(f"{name}{'  (selects best.pt)' if name == validator else ''}", fontsize=9)
        ax.tick_params(labelsize=7)
        if name == validator and selected_step is not None:
            ax.axvline(selected_step, color="tab:red", lw=1, alpha=0.6)
    for ax in axes[len(names) :]:
        ax.axis("off")
    fig.suptitle("validator scores (higher is better; no target labels)", fontsize=9)
    return png(fig)


def tsne_map(emb: torch.Tensor, domain: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> bytes:
    """Two views of a 2-D embedding (N, 2): coloured by domain (``domain`` (N,) 0/1) and by class (``labels`` (N,):
    true source labels, *predicted* target labels), source as dots and target as crosses."""
    import matplotlib as mpl

    fig = Figure(figsize=(11, 4.8), layout="constrained")
    by_domain, by_class = fig.subplots(1, 2)
    cmap = mpl.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for d, (name, marker, colour) in enumerate((("source", "o", "#404040"), ("target", "x", "#d6336c"))):
        pts, lab = emb[domain == d].numpy(), labels[domain == d].numpy()
        by_domain.scatter(pts[:, 0], pts[:, 1], s=9, marker=marker, alpha=0.6, color=colour, label=name)
        by_class.scatter(pts[:, 0], pts[:, 1], s=9, marker=marker, alpha=0.7, c=cmap(lab % cmap.N))
    by_domain.legend(fontsize=8)
    by_domain.set_title("coloured by domain", fontsize=10)
    by_class.set_title("coloured by class (source: true label •, target: predicted ×)", fontsize=10)
    handles = [by_class.scatter([], [], color=cmap(i % cmap.N), label=c) for i, c in enumerate(classes[:20])]
    by_class.legend(handles=handles, fontsize=7, ncols=2)
    for ax in (by_domain, by_class):
        ax.set_xticks([])
        ax.set_yticks([])
    return png(fig)


def confusion_plot(confusion: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    """Counts (K, K), row = true class, column = predicted class: cells coloured by the share of the true class,
    with the counts written in them for up to 30 classes."""
    cm = torch.tensor(confusion, dtype=torch.float64)
    rates = cm / cm.sum(1, keepdim=True).clamp_min(1)
    k = len(classes)
    fig = Figure(figsize=(min(3.0 + 0.45 * k, 16), min(2.4 + 0.45 * k, 15)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(k), classes, fontsize=7, rotation=90)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    return png(fig)


def compare_lines(
    histories: dict[str, Sequence[dict[str, Any]]], logs: dict[str, Sequence[dict[str, Any]]], validator: str
) -> list[tuple[str, list[Line]]]:
    """The panels of ``compare_curves``, (title, one line per run): the validator and the target accuracy at every
    evaluation of ``histories``, the source classification loss at every log step of ``logs`` (a run's
    ``train.jsonl``; its evaluations when it has none)."""
    panels: list[tuple[str, list[Line]]] = []
    wanted = [
        (f"{validator} (no target labels; higher is better)", ("validators", validator), histories),
        (ORACLE_LABEL, ("oracle", "target_acc"), histories),
        ("source classification loss (training batches)", ("train", "cls"), logs),
    ]
    for title, path, records in wanted:
        lines = []
        for name in histories:
            steps, values = series(records.get(name) or histories[name], *path)
            if steps:
                lines.append((name, steps, values, path[0] == "oracle"))
        panels.append((title, lines))
    return panels


def compare_curves(
    histories: dict[str, Sequence[dict[str, Any]]],
    validator: str,
    logs: dict[str, Sequence[dict[str, Any]]] | None = None,
) -> bytes:
    """Runs side by side against the step: the validator score, the target accuracy (target labels; dashed) and the
    source classification loss at every log step (``logs``: each run's ``train.jsonl`` records)."""
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    for ax, (title, lines) in zip(fig.subplots(1, 3), compare_lines(histories, logs or {}, validator), strict=True):
        _panel(ax, title, lines)
    return png(fig)
