"""Target accuracy of source-only vs DANN on the embedded tasks, mean ± std over seeds, with the packaged presets.

    python benchmarks/demo_accuracy.py                      # moons and digits, seeds 0 1 2
    python benchmarks/demo_accuracy.py --tasks moons --seeds 0 1 2 3 4 --set method.lambda_adv=0.5

Prints a Markdown table. Target accuracy is computed with target labels (evaluation only) at the last step:
no checkpoint is chosen with them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import dann
from dann.config import load_config


def run(task: str, method: str, seed: int, overrides: list[str]) -> tuple[float, float]:
    cfg = load_config(
        task,
        [
            f"method.name={method}",
            "model.bottleneck_dim=0",  # the seed's network for both, as make demo trains them
            f"train.seed={seed}",
            f"data.seed={seed}",
            "train.progress=false",
            *overrides,
        ],
    )
    last = dann.fit(cfg).history[-1]
    return last["oracle"]["target_acc"], last["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["moons", "digits"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (both methods)")
    args = parser.parse_args()
    print(
        f"# dann {dann.__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads; seeds {args.seeds}; overrides {args.overrides}"
    )
    print("| task | steps | source only | DANN | gain (pts) | DANN steps/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for task in args.tasks:
        tic = time.perf_counter()
        res = {m: [run(task, m, s, args.overrides) for s in args.seeds] for m in ("source_only", "dann")}
        acc = {m: [100 * a for a, _ in r] for m, r in res.items()}
        gains = [d - s for d, s in zip(acc["dann"], acc["source_only"], strict=True)]
        steps = load_config(task, args.overrides).train.steps

        def fmt(xs: list[float]) -> str:
            return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.1f}"

        speed = statistics.mean(s for _, s in res["dann"])
        print(f"| {task} | {steps} | {fmt(acc['source_only'])} | {fmt(acc['dann'])} | {fmt(gains)} | {speed:.0f} |")
        print(
            f"<!-- {task}: per seed source_only {[round(a, 1) for a in acc['source_only']]}, "
            f"dann {[round(a, 1) for a in acc['dann']]}; {time.perf_counter() - tic:.0f} s -->",
            flush=True,
        )


if __name__ == "__main__":
    main()
