"""Is bfloat16 safe where ``train.precision: auto`` picks it? The recipe suite's candidates on its tasks, trained in
fp32 and in bf16 with the same seeds and budget (``methods.py`` trains them; runs already there are reused), compared
on target accuracy at the last step (target labels: evaluation only) and source held-out accuracy.

    python benchmarks/precision.py                                  # suite.py's tasks and candidates, seeds 0 1 2
    python benchmarks/precision.py --tasks digits --candidates source_only dann
    python benchmarks/precision.py --tasks digits digits_scanner digits_inverted --set train.steps=300 \
        --set train.eval_every=100 --out runs/bench-precision-300     # a shorter budget

THE RULE: bf16 *loses* on a task and candidate when its mean target accuracy over the seeds is below fp32's by more
than the seed spread (the standard deviation of fp32's accuracies over the seeds: what changing the seed alone
moves); ``auto`` must not pick bf16 for a method that loses on any task. The
table also prints the paired difference (bf16 − fp32, mean ± std over the seeds) and marks a *consistent* shift,
one whose mean exceeds its own standard deviation (the methods benchmark's "clear" rule): bf16 and fp32 runs of one
seed often differ by a fixed fraction of a point, which is consistent yet far below the seed spread. Last, each
run's training speed (steps/s; noisy on a shared machine: a hint only, ``dann bench`` measures speed)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from methods import fmt, run_dir, scores, train
from suite import CANDIDATES, TASKS

PRECISIONS = {"fp32": "", "bf16": "-bf16"}  # precision -> suffix of its --out folder


def verdict(fp32: list[float], bf16: list[float]) -> str:
    """The rule above: "bf16 loses", "bf16 gains" or "within the seed spread"."""
    shift, spread = statistics.mean(bf16) - statistics.mean(fp32), statistics.stdev(fp32) if len(fp32) > 1 else 0.0
    return "bf16 loses" if -shift > spread else ("bf16 gains" if shift > spread else "within the seed spread")


def paired(fp32: list[float], bf16: list[float]) -> str:
    """The mean ± std of the per-seed differences, starred when consistent (|mean| > std)."""
    diffs = [b - a for a, b in zip(fp32, bf16, strict=True)]
    mean, spread = statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    return f"{mean:+.1f} ± {spread:.1f}{' (consistent)' if abs(mean) > spread else ''}"


def table(task: str, names: list[str], seeds: list[int], out: str) -> list[str]:
    """Print one task's table; return the candidates on which bf16 loses."""
    print(f"\n### {task}\n")
    print("| candidate | fp32 target acc | bf16 target acc | bf16 − fp32, paired | verdict | "
          "fp32 / bf16 source held-out | steps/s fp32 / bf16 |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    losses = []
    for name in names:
        runs = {p: [scores(run_dir(Path(out + sfx), task, name, s)) for s in seeds] for p, sfx in PRECISIONS.items()}
        last = {p: [r["last"] for r in rs] for p, rs in runs.items()}
        said = verdict(last["fp32"], last["bf16"])
        losses += [name] if said == "bf16 loses" else []
        source = " / ".join(fmt([r["source_val"] for r in runs[p]]) for p in PRECISIONS)
        speed = " / ".join(f"{statistics.mean(r['steps_per_s'] for r in runs[p]):.1f}" for p in PRECISIONS)
        cells = [fmt(last["fp32"]), fmt(last["bf16"]), paired(last["fp32"], last["bf16"]), said, source, speed]
        print(f"| {name} | {' | '.join(cells)} |")
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench-methods", help="fp32 runs (shared with methods.py); bf16: -bf16")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (every run)")
    args = parser.parse_args()
    jobs = [
        (task, name, seed, args.out + sfx, [*args.overrides, f"train.precision={precision}"])
        for precision, sfx in PRECISIONS.items()
        for task in args.tasks
        for name in args.candidates
        for seed in args.seeds
    ]
    tic = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        list(pool.map(train, jobs))
    print(f"# {len(jobs)} runs ready in {time.perf_counter() - tic:.0f} s (1 torch thread each, {args.jobs} at a time)")
    losses = {task: table(task, args.candidates, args.seeds, args.out) for task in args.tasks}
    lost = ", ".join(f"{task}: {', '.join(names)}" for task, names in losses.items() if names)
    print(f"\nbf16 loses beyond the seed spread on: {lost or 'no task'}")


if __name__ == "__main__":
    main()
