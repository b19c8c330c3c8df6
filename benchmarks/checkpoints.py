"""Which validator should pick ``checkpoints/best.pt``? Every finished run of the methods benchmark, read again: at the
evaluation step each validator scores highest (ties: the earlier step, as the trainer keeps them), the target
accuracy, against the run's last evaluation (the checkpoint ``last.pt`` holds, which ``dann predict`` uses). Trains
nothing: it reads the ``metrics.jsonl`` of the runs ``benchmarks/methods.py`` and ``benchmarks/suite.py`` wrote.

    python benchmarks/checkpoints.py                          # every run under runs/bench-matched
    python benchmarks/checkpoints.py --tasks digits moons     # some tasks

Target accuracy uses target labels: these figures grade the validators, and chose nothing (``selection.validator``
defaults to ``class_ami``, the validator the default's rule reads, for one definition of "better" in a run)."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

VALIDATORS = ("class_ami", "bnm", "source_acc", "dev", "im", "entropy", "snd")


def picks(history: list[dict]) -> dict[str, float]:
    """Per validator (and ``last``, ``oracle``): target accuracy (%) at the step it picks in one run's history."""
    acc = [100 * r["oracle"]["target_acc"] for r in history]
    out = {"last": acc[-1], "oracle": max(acc)}
    for name in VALIDATORS:
        scores = [r.get("validators", {}).get(name) for r in history]
        finite = [(s, -i) for i, s in enumerate(scores) if isinstance(s, int | float) and s == s]
        if finite:
            out[name] = acc[-max(finite)[1]]
    return out


def main() -> None:
    from dann.runs import METRICS_FILE, read_jsonl

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-matched", help="the benchmark's run directories")
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every task folder there")
    args = parser.parse_args()
    root = Path(args.out)
    tasks = args.tasks or sorted(p.name for p in root.iterdir() if p.is_dir())
    rows: dict[str, list[dict[str, float]]] = {}
    for task in tasks:
        for run in sorted((root / task).iterdir()):
            history = read_jsonl(run / METRICS_FILE) if (run / METRICS_FILE).is_file() else []
            steps = {r["step"] for r in history}
            if len(steps) > 1 and history[-1]["progress"] >= 1.0:  # finished, with more than one evaluation
                rows.setdefault(task, []).append(picks(history))
    names = [*VALIDATORS, "oracle"]
    print(f"\nTarget accuracy at each validator's pick minus at the last evaluation, points (runs under {root};")
    print("target labels: grading only). Mean over the runs; in brackets the share of runs it costs over 1 point.\n")
    print("| task | runs | " + " | ".join(names) + " |")
    print("| --- " * (len(names) + 2) + "|")
    every: list[dict[str, float]] = []
    for task, runs in [*rows.items(), ("all tasks", None)]:
        runs = runs if runs is not None else every
        cells = []
        for name in names:
            diffs = [r[name] - r["last"] for r in runs if name in r]
            worse = sum(d < -1 for d in diffs) / len(diffs) if diffs else float("nan")
            cells.append(f"{statistics.mean(diffs):+.1f} ({worse:.0%})" if diffs else "–")
        print(f"| {task} | {len(runs)} | " + " | ".join(cells) + " |")
        if task != "all tasks":
            every += runs


if __name__ == "__main__":
    main()
