"""What a few labeled images from an instrument nearer the target are worth, on the embedded ``digits_gradual`` task
(source digits; five labeled "mid" digits per class on faint photo backgrounds; MNIST-M-style unlabeled target).

    python benchmarks/intermediate.py                 # 4 recipes x seeds 0 1 2, 400 steps of 32 images per domain
    python benchmarks/intermediate.py --jobs 2        # two runs at a time
    python benchmarks/intermediate.py --steps 4000    # the presets' budget (about ten times as long)

Recipes: source-only on the source alone; DANN source → target (the mid images unused); DANN with source and mid as
one labeled pool (the default for several labeled domains); the ``staged`` preset (supervised on source and mid, then
adversarial mid → target). Prints a Markdown table of the target accuracy at the last step (computed with target
labels, for evaluation only: no checkpoint is chosen with them), mean ± std and per seed, and the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch

import dann
from dann.config import load_config
from dann.data import DomainData, build_task

RECIPES = {  # name → (preset or None, method, labeled data used)
    "source-only": (None, "source_only", "source"),
    "DANN source → target": (None, "dann", "source"),
    "DANN, source + mid pooled": (None, "dann", "source + mid"),
    "staged preset": ("staged", "dann", "source + mid"),
}


def source_alone(data: DomainData) -> DomainData:
    """The task's data without its mid domain: the source's own training and held-out parts."""
    source = data.domains[0]
    return dataclasses.replace(data, source_train=source.train, source_val=source.val, labeled=[source])


def run(recipe: str, seed: int, steps: int, batch: int, lr: float) -> float:
    """Target accuracy (%) of one recipe and seed at the last step."""
    torch.set_num_threads(1)
    preset, method, used = RECIPES[recipe]
    keys = [f"method.name={method}", f"train.seed={seed}", f"data.seed={seed}", f"train.steps={steps}"]
    keys += [f"train.eval_every={steps}", f"train.batch_size={batch}", f"optim.lr={lr}", "train.progress=false"]
    keys += ["train.tensorboard=false", "train.device=cpu", "data.task=digits_gradual"]
    cfg = load_config(preset, keys)
    data = build_task("digits_gradual", seed, cfg.data.val_fraction)
    data = source_alone(data) if used == "source" else data
    return 100 * dann.fit(cfg, data=data).history[-1]["oracle"]["target_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per run (400)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per domain and step (32)")
    parser.add_argument("--lr", type=float, default=0.05, help="optim.lr of every recipe (0.05)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one torch thread each (1)")
    args = parser.parse_args()
    tic = time.perf_counter()
    jobs = [(r, s, args.steps, args.batch_size, args.lr) for r in RECIPES for s in args.seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        accs = list(pool.map(run, *zip(*jobs, strict=True)))
    results = {r: [a for (name, *_), a in zip(jobs, accs, strict=True) if name == r] for r in RECIPES}
    print(f"Command: `python {shlex.join(['benchmarks/intermediate.py', *sys.argv[1:]])}`")
    print(
        f"dann {dann.__version__}, torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, one torch "
        f"thread per run; {args.steps} steps of {args.batch_size} images per domain, optim.lr {args.lr}; "
        f"{time.perf_counter() - tic:.0f} s\n"
    )
    print("| recipe | labeled data | target acc. (%, last step), mean ± std | per seed " + f"({args.seeds}) |")
    print("| --- | --- | --- | --- |")
    for recipe, values in results.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        seeds = " / ".join(f"{v:.1f}" for v in values)
        print(f"| {recipe} | {RECIPES[recipe][2]} | {statistics.mean(values):.1f} ± {spread:.1f} | {seeds} |")


if __name__ == "__main__":
    main()
