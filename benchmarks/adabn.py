"""AdaBN on trained source-only controls: each control evaluated as trained and again with every BatchNorm layer's
statistics recomputed on the unlabeled target (``model.adabn``, Li et al. 2017), per task and seed.

    python benchmarks/adabn.py                      # the controls methods.py trained, seeds 0 1 2
    python benchmarks/adabn.py --tasks digits moons --configs source_only@256

It trains nothing: it reads the runs ``benchmarks/methods.py`` wrote under ``--out`` (the plain model has no BatchNorm
layer, so AdaBN leaves it as it is; the candidates' network has one, in its bottleneck). Target accuracy uses target
labels: grading only. A gain counts as clear only when the mean of the per-seed differences exceeds their spread."""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch


def accuracy(net: torch.nn.Module, domain: Any) -> float:
    from dann.evaluation.metrics import predict_batches

    probs, index = predict_batches(net, domain.batches(256))
    return 100 * (probs.argmax(1) == domain.y[index]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tasks", nargs="+", default=["moons", "digits", "digits_inverted", "cancer", "digits_label_shift"]
    )
    parser.add_argument("--configs", nargs="+", default=["source_only", "source_only@256"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench-matched", help="the run directories of benchmarks/methods.py")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import dann
    from dann.data.builtin import build_task
    from dann.models.network import recompute_batchnorm

    print("| task | control | as trained | with AdaBN | AdaBN gain | verdict | per seed (as trained → AdaBN) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for task in args.tasks:
        for name in args.configs:
            runs = [Path(args.out) / task / f"{name}-seed{seed}" for seed in args.seeds]
            if not all((r / "checkpoints/last.pt").is_file() for r in runs):
                print(f"| {task} | {name} | not run yet | | | | |")
                continue
            pairs = []
            for run, seed in zip(runs, args.seeds, strict=True):
                model, data = dann.load_run(run), build_task(task, seed)
                before = accuracy(model.net, data.target_eval)
                model.net.load_state_dict(recompute_batchnorm(model.net, data.target_train.batches(256)))
                pairs.append((before, accuracy(model.net, data.target_eval)))
            diffs = [b - a for a, b in pairs]
            mean, spread = statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else float("inf")
            verdict = "clear gain" if mean > spread else ("clear loss" if -mean > spread else "no clear gain")
            cells = [
                f"{statistics.mean(a for a, _ in pairs):.1f}",
                f"{statistics.mean(b for _, b in pairs):.1f}",
                f"{mean:+.1f} ± {spread:.1f}",
                verdict,
                " / ".join(f"{a:.1f} → {b:.1f}" for a, b in pairs),
            ]
            print(f"| {task} | {name} | {' | '.join(cells)} |")
    print("\nTarget accuracy uses target labels: grading only.")


if __name__ == "__main__":
    main()
