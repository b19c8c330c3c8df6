"""How well does each validator choose checkpoints without target labels? A grid of DANN runs on an embedded task
(λ_adv × learning rate × seeds), every run evaluated every ``--eval-every`` steps; target labels are used here only
to score the choices.

    python benchmarks/selection.py                       # moons: λ_adv {0.1, 0.3, 1, 3} × lr {0.01, 0.05} × 3 seeds
    python benchmarks/selection.py --task digits --lambdas 0.3 1 --lrs 0.01 --seeds 0 1 --steps 1000

Per validator, for each seed: the Spearman rank correlation between its score and target accuracy over all
checkpoints of that seed's grid, and the target accuracy of the checkpoint it ranks first over the grid (choosing
hyper-parameters and step at once); then, per run, the target accuracy of the checkpoint it keeps as ``best.pt``.
Prints a Markdown table of means over seeds (± std) and runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

import dann
from dann.config import load_config
from dann.selection.validators import VALIDATORS, select_record

ORACLE, LAST = "oracle (uses target labels)", "last checkpoint"


def grid_runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One dict per run: its seed, hyper-parameters and evaluation history."""
    runs = []
    for seed in args.seeds:
        for lam in args.lambdas:
            for lr in args.lrs:
                overrides = [
                    f"method.lambda_adv={lam}",
                    f"optim.lr={lr}",
                    f"train.seed={seed}",
                    f"data.seed={seed}",
                    f"train.eval_every={args.eval_every}",
                    "train.progress=false",
                    f"train.threads={args.threads}",  # the run's own setting: auto would choose for itself
                    *([f"train.steps={args.steps}"] if args.steps else []),
                ]
                history = dann.fit(load_config(args.task, overrides)).history
                runs.append({"seed": seed, "lambda_adv": lam, "lr": lr, "history": history})
                print(f"<!-- seed {seed} λ_adv {lam} lr {lr}: last target acc "
                      f"{history[-1]['oracle']['target_acc']:.3f} -->", flush=True)  # fmt: skip
    return runs


def acc(record: dict[str, Any]) -> float:
    return record["oracle"]["target_acc"]


def pick(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The record a validator (or the oracle, or "last") chooses among ``records``."""
    if name == ORACLE:
        return max(records, key=acc)
    if name == LAST:
        return records[-1]
    return select_record(records, name)


def scores(runs: list[dict[str, Any]], name: str) -> dict[str, list[float]]:
    """Per seed: ρ and the grid pick's accuracy; per run: the best.pt pick's accuracy (all in %, ρ as is)."""
    out: dict[str, list[float]] = {"rho": [], "grid": [], "run": []}
    for seed in sorted({r["seed"] for r in runs}):
        pool = [rec for r in runs if r["seed"] == seed for rec in r["history"]]
        if name not in (ORACLE, LAST):
            out["rho"].append(spearmanr([rec["validators"][name] for rec in pool], [acc(rec) for rec in pool])[0])
        if name != LAST:
            out["grid"].append(100 * acc(pick(pool, name)))
    out["run"] = [100 * acc(pick(r["history"], name)) for r in runs]
    return out


def fmt(xs: list[float], digits: int = 1) -> str:
    if not xs:
        return "–"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="moons")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.1, 0.3, 1.0, 3.0])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.05])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--steps", type=int, default=0, help="train.steps (default: the preset's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small nets)")
    parser.add_argument("--dump", help="also write every run (hyper-parameters and history) to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    print(
        f"# dann {dann.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} torch thread(s); task {args.task}; λ_adv {args.lambdas}; "
        f"lr {args.lrs}; seeds {args.seeds}; evaluated every {args.eval_every} steps"
    )
    runs = grid_runs(args)
    if args.dump:
        Path(args.dump).write_text(json.dumps(runs))
    print(
        "| validator | Spearman ρ with target acc | target acc of its pick over the grid | target acc of its best.pt |"
    )
    print("| --- | --- | --- | --- |")
    for name in [*VALIDATORS.names(), LAST, ORACLE]:
        s = scores(runs, name)
        print(f"| {name} | {fmt(s['rho'], 2)} | {fmt(s['grid'])} | {fmt(s['run'])} |")
    checkpoints = sum(len(r["history"]) for r in runs)
    print(f"<!-- {len(runs)} runs, {checkpoints} checkpoints, {time.perf_counter() - tic:.0f} s -->")


if __name__ == "__main__":
    main()
