"""A long run: 20,000 steps on the embedded `moons` task, with its run directory written as usual, watching resident
memory (RSS). Leaks that matter in a run of hours (metrics kept per step, autograd graphs held by logged terms,
checkpoint buffers) show up as growth between the first evaluation and the last.

    python benchmarks/long_run.py                       # 20,000 steps, fails if RSS grows by more than 25 MB
    python benchmarks/long_run.py --steps 5000 --set train.on_nonfinite=skip --threads 2

RSS is read from /proc/self/status (Linux). The baseline is taken at the first evaluation, after the allocator and
the first checkpoint have reached their working size; the figure before training is printed too.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import dann
from dann.training.trainer import Trainer


def rss_mb() -> float:
    """Resident set size of this process in MiB (VmRSS in /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--max-growth-mb", type=float, default=25.0, help="allowed RSS growth after the first eval")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the moons MLP is too small to gain)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = [f"train.steps={args.steps}", "train.progress=false", f"train.threads={args.threads}", *args.overrides]
    cfg = dann.load_config("moons", sets)  # train.threads: the run sets its own count, auto would choose
    samples: list[tuple[int, float]] = []
    evaluate = Trainer._evaluate

    def evaluate_and_sample(self, net, data, step, *rest):
        record = evaluate(self, net, data, step, *rest)
        samples.append((step, rss_mb()))
        return record

    Trainer._evaluate = evaluate_and_sample  # sample RSS at every evaluation, without touching the loop
    before = rss_mb()
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = dann.fit(cfg, Path(out) / "run")
    seconds = time.perf_counter() - tic
    (first_step, first), (last_step, last) = samples[0], samples[-1]
    print(
        f"# dann {dann.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"device {cfg.train.device}; moons, {args.steps} steps in {seconds:.0f} s, overrides {args.overrides}"
    )
    print(f"RSS before training: {before:.1f} MiB")
    print(f"RSS at the first evaluation (step {first_step}): {first:.1f} MiB")
    print(f"RSS at the end (step {last_step}): {last:.1f} MiB  (growth {last - first:+.1f} MiB)")
    print("RSS by evaluation:", " ".join(f"{s}:{m:.0f}" for s, m in samples))
    print(f"target accuracy at the end: {result.history[-1]['oracle']['target_acc']:.3f} (uses target labels)")
    growth = last - first
    assert growth <= args.max_growth_mb, f"RSS grew by {growth:.1f} MiB (> {args.max_growth_mb} MiB)"


if __name__ == "__main__":
    main()
