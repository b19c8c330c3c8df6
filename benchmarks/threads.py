"""Training speed against the number of torch CPU threads, on the machine as it is (quiet or busy).

    python benchmarks/threads.py                 # lenet on digits, mlp on moons, resnet18 on digits; 1 and 2 threads
    python benchmarks/threads.py --threads 1 2 4 --repeats 5 --steps 600

Each measurement is a fresh process that sets ``torch.set_num_threads(t)``, then trains ``--steps`` steps of the
task's packaged preset (method ``dann``, fp32, one evaluation at the end) and reports steps/s of the ``dann.fit``
call (imports and data set-up excluded). Thread counts alternate within each repeat so that a machine whose load
changes slows them alike; the median of the repeats is printed with the 1-minute load average seen before each run,
and the ratio to one thread. ``train.threads: auto`` is chosen from these figures (see ``dann.training.threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = {  # name: (preset, overrides)
    "lenet/digits": ("digits", ["model.backbone=lenet"]),
    "mlp/moons": ("moons", []),
    "resnet18/digits": ("digits", ["model.backbone=resnet18", "model.bottleneck_dim=256"]),
}

CHILD = """
import json, sys, tempfile, time, torch, dann
threads, preset, steps, overrides = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
torch.set_num_threads(threads)
sets = [f"train.steps={steps}", f"train.eval_every={steps}", f"train.log_every={steps}", "train.progress=false",
        "train.precision=fp32", "method.name=dann", *overrides]
try:
    cfg = dann.load_config(preset, [*sets, f"train.threads={threads}"])
except dann.ConfigError:  # a version without train.threads
    cfg = dann.load_config(preset, sets)
with tempfile.TemporaryDirectory() as out:
    tic = time.perf_counter()
    dann.fit(cfg, out + "/run")
    print(json.dumps({"steps_per_s": steps / (time.perf_counter() - tic)}))
"""


def measure(threads: int, preset: str, steps: int, overrides: list[str]) -> float:
    argv = [sys.executable, "-c", CHILD, str(threads), preset, str(steps), json.dumps(overrides)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=os.environ | {"OMP_NUM_THREADS": ""})
    return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs; {args.steps} steps per run, {args.repeats} repeats")
    print("| case | threads | steps/s (median) | per repeat | vs 1 thread | load before (1 min) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        preset, overrides = CASES[case]
        speed: dict[int, list[float]] = {t: [] for t in args.threads}
        load: dict[int, list[float]] = {t: [] for t in args.threads}
        for _ in range(args.repeats):
            for t in args.threads:
                load[t].append(os.getloadavg()[0])
                speed[t].append(measure(t, preset, args.steps, overrides))
        base = statistics.median(speed[args.threads[0]])
        for t in args.threads:
            med = statistics.median(speed[t])
            each = " / ".join(f"{v:.1f}" for v in speed[t])
            loads = " / ".join(f"{v:.1f}" for v in load[t])
            print(f"| {case} | {t} | {med:.1f} | {each} | {med / base:.2f} | {loads} |", flush=True)


if __name__ == "__main__":
    main()
