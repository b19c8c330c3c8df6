"""``dann demo``: source-only, the seed's DANN and the default (no method named: the selecting default,
``dann.selection.default``) on the embedded tasks, a results table and pictures, in minutes on a CPU. The default
trains on the tasks of ``DEFAULT_TASKS`` only: on digits it trains AdaMatch, about 10 minutes more on 2 cores."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .api import fit
from .config import SELECTION, load_config
from .data import build_task
from .evaluation.metrics import predict_proba
from .models import DomainAdaptNet
from .runs import atomic_write_bytes

# the control, the seed's exact DANN, and the default (no method named: what every entry point trains by default)
METHODS = {
    "source_only": ["method.name=source_only"],
    "dann": ["method.name=dann", "model.bottleneck_dim=0"],  # the seed's network: no bottleneck (as --config paper)
    "default": [],
}
DEFAULT_TASKS = ("moons",)  # where the demo trains the default too (a minute); elsewhere it says how to


def demo_methods(task: str = "moons") -> dict[str, list[str]]:
    """The demo's rows on ``task``: the default's row only on ``DEFAULT_TASKS``."""
    return {name: o for name, o in METHODS.items() if name != "default" or task in DEFAULT_TASKS}


def _plot_moons(nets: dict[str, DomainAdaptNet], out: Path) -> Path:
    from matplotlib.figure import Figure

    from .reporting.plots import png

    data = build_task("moons")
    xs, ys, xt, yt = data.source_train.x, data.source_train.y, data.target_eval.x, data.target_eval.y
    grid = torch.stack(
        torch.meshgrid(torch.linspace(-2.0, 3.0, 250), torch.linspace(-1.8, 2.2, 250), indexing="xy"), -1
    )
    fig = Figure(figsize=(5.5 * len(nets), 4.6), layout="tight")
    axes = fig.subplots(1, len(nets), squeeze=False)
    for ax, (name, net) in zip(axes[0], nets.items(), strict=True):
        p = predict_proba(net, grid.reshape(-1, 2))[:, 1].reshape(grid.shape[:2])
        ax.contourf(grid[..., 0], grid[..., 1], p, levels=[0, 0.5, 1], colors=["#fde0dd", "#deebf7"], alpha=0.8)
        ax.contour(grid[..., 0], grid[..., 1], p, levels=[0.5], colors="k", linewidths=1.5)
        ax.scatter(*xs[ys == 0].T, s=6, c="#d7301f", label="source, class 0")
        ax.scatter(*xs[ys == 1].T, s=6, c="#2171b5", label="source, class 1")
        ax.scatter(*xt[yt == 0].T, s=6, marker="x", c="#fc9272", alpha=0.5, label="target (rotated 35°), class 0")
        ax.scatter(*xt[yt == 1].T, s=6, marker="x", c="#6baed6", alpha=0.5, label="target (rotated 35°), class 1")
        acc = (predict_proba(net, xt).argmax(1) == yt).float().mean().item()
        ax.set_title(f"{name}: target accuracy {acc:.1%} (uses target labels)")
    axes[0][0].legend(loc="lower left", fontsize=7)
    path = out / "moons_boundaries.png"
    atomic_write_bytes(path, png(fig, dpi=110))
    return path


def _plot_digits(out: Path) -> Path:
    from matplotlib.figure import Figure

    from .reporting.plots import png

    data = build_task("digits")
    fig = Figure(figsize=(10, 2.3), layout="tight")
    axes = fig.subplots(2, 10)
    for row, (name, x) in enumerate((("source", data.source_train.x), ("target", data.target_train.x))):
        for i in range(10):
            axes[row][i].imshow(x[i].permute(1, 2, 0).numpy())
            axes[row][i].axis("off")
        axes[row][0].set_title(name, fontsize=8, loc="left")
    path = out / "digits_samples.png"
    atomic_write_bytes(path, png(fig, dpi=110))
    return path


@dataclass
class DemoResult:
    rows: list[dict[str, Any]]  # one per run: task, method, target_acc, source_val_acc, steps_per_s, seconds, steps
    pictures: list[Path]  # moons_boundaries.png, digits_samples.png
    root: Path  # the folder of the runs, <root>/<task>-<method>


def run_demo(
    out: str | Path | None = None,
    tasks: tuple[str, ...] = ("moons", "digits"),
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Train source-only, the seed's DANN and, on ``DEFAULT_TASKS``, the default on each task with its packaged
    preset, and write pictures. Prints nothing itself: ``echo`` (``dann
    demo`` passes ``print``) gets one line as the demo starts and as each run starts and ends; ``dann demo`` then
    prints the rows (``format_table``). Existing runs in ``out`` are never replaced (``OutputExistsError``)."""
    say = echo or (lambda line: None)
    root = Path(out) if out else Path("runs/demo") / time.strftime("%Y%m%d-%H%M%S")
    rows, pictures = [], []
    runs = [f"{task} × {', '.join(demo_methods(task))}" for task in tasks]
    say(f"dann demo: {sum(len(demo_methods(t)) for t in tasks)} runs ({'; '.join(runs)}) into {root}")
    for task in tasks:
        nets = {}
        for method, overrides in demo_methods(task).items():
            cfg = load_config(task, overrides)  # with its progress bar: the runs take minutes in all
            say(f"  {task:7s} {method:12s} training {cfg.train.steps} steps ...")
            tic = time.perf_counter()
            result = fit(cfg, root / f"{task}-{method}", echo=_estimates(say, f"  {task:7s} {method:12s} "))
            last = result.history[-1]
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "target_acc": last["oracle"]["target_acc"],
                    "source_val_acc": last["source_val"]["acc"],
                    "steps_per_s": last["steps_per_s"],
                    "seconds": time.perf_counter() - tic,
                    "steps": cfg.train.steps,
                }
            )
            nets[method] = result.net.cpu()
            kept = f" (kept {result.selection['kept']})" if result.selection else ""
            rows[-1]["kept"] = result.selection["kept"] if result.selection else None
            say(f"  {task:7s} {method:12s} done in {rows[-1]['seconds']:.0f} s{kept}")
        if task == "moons":
            pictures.append(_plot_moons(nets, root))
        if task == "digits":
            pictures.append(_plot_digits(root))
    return DemoResult(rows, pictures, root)


def _estimates(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    """An ``echo`` for ``fit`` that passes on only each run's time estimate after its first steps (``time: ...``), so
    that on a busy machine the demo says at once how long a run takes."""

    def echo(line: str) -> None:
        if line.startswith("time:"):
            say(prefix + line)

    return echo


def format_table(rows: list[dict]) -> str:
    lines = [
        "",
        f"{'task':8s} {'method':18s} {'target acc*':>12s} {'gain':>9s} {'source val acc':>15s} {'steps':>6s} "
        f"{'steps/s':>8s}",
    ]
    for row in rows:
        base = next(r for r in rows if r["task"] == row["task"] and r["method"] == "source_only")
        gain = "" if row is base else f"{100 * (row['target_acc'] - base['target_acc']):+.1f} pts"
        lines.append(
            f"{row['task']:8s} {row['method']:18s} {row['target_acc']:12.1%} {gain:>9s} {row['source_val_acc']:15.1%} "
            f"{row['steps']:6d} {row['steps_per_s']:8.0f}"
        )
    lines.append("* last checkpoint; target labels are used only to compute this column, never for training.")
    kept = [f"{r['task']}: {r['kept']}" for r in rows if r.get("kept")]
    lines.append(
        "default: no method named, dann trains the source-only control and "
        f"{', '.join(SELECTION['candidates']) or 'no candidate'} and keeps what its rule picks without target labels"
        + (f" (kept: {'; '.join(kept)})" if kept else "")
        + "; on digits: dann train --config digits --out runs/digits-default (about 10 min on 2 cores)"
    )
    return "\n".join(lines)
