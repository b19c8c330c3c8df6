"""The cost of adaptation: images/s of the DANN step vs a plain supervised step on the same images, the data-wait
fraction and peak memory. The same code as ``dann bench`` (``dann.bench``); the same flags.

    python benchmarks/throughput.py --backbone lenet
    python benchmarks/throughput.py --backbone resnet18 --json
    python benchmarks/throughput.py --backbone resnet50 --precision bf16 --channels-last   # on a GPU
    python benchmarks/throughput.py --backbone lenet --images photos/ --image-size 32      # files vs their cache

``--vs-plain`` instead times dann's DANN step (the trainer's ``train_step`` on in-memory arrays, with its shift
augmentation, at ``--precision``, default ``auto``) against a plain PyTorch DANN loop written as most public DANN
code is (``plain_dann.py``, fp32), on the same LeNet layers, batch and tensors, in one process, alternating rounds
of ``--steps`` steps; it prints images/s of both and their ratio (dann / plain), per round and for the fastest
rounds:

    python benchmarks/throughput.py --vs-plain --batch-size 64 --rounds 7 --steps 20 --warmup 5

``--vs-precision`` times dann's DANN step of ``--backbone`` in fp32, fp32 + channels_last, bf16 and bf16 +
channels_last (what ``auto`` picks for images on a device with native bfloat16), alternating rounds in one process,
and prints each one's speed relative to fp32 (fastest rounds, and the median over rounds):

    python benchmarks/throughput.py --vs-precision --backbone resnet18 --rounds 5 --steps 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from dann.cli import _parser, main
from dann.plan import plan_bench
from dann.training.bench import INPUTS, Mode, device_name
from dann.training.precision import Precision
from plain_dann import PlainLoop


def bench_options(argv: list[str], flag: str) -> argparse.Namespace:
    """The options of dann bench (--backbone, --batch-size, --steps, --rounds, --warmup, --precision...)."""
    return _parser().parse_args(["bench", *[a for a in argv if a != flag]])


VARIANTS = {"fp32": ("fp32", False), "fp32 + channels_last": ("fp32", True), "bf16": ("bf16", False),
            "bf16 + channels_last": ("bf16", True)}  # fmt: skip


def vs_precision(argv: list[str]) -> int:
    args = bench_options(argv, "--vs-precision")
    device = torch.device("cpu")
    model = plan_bench(args.backbone, INPUTS[args.backbone], "cpu", threads=0).model  # dann bench's network
    modes = {
        name: Mode("dann", model, args.batch_size, Precision(precision, device, layout), device)
        for name, (precision, layout) in VARIANTS.items()
    }
    for mode in modes.values():
        mode.run(args.warmup)
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, mode in modes.items():
            seconds[name].append(mode.run(args.steps)[0])
    base, middle = min(seconds["fp32"]), statistics.median(seconds["fp32"])
    print(f"# torch {torch.__version__}, {device_name(device)}; {args.backbone} {INPUTS[args.backbone]}, DANN step, "
          f"batch {args.batch_size} + {args.batch_size}; {args.rounds} rounds of {args.steps} steps")  # fmt: skip
    print("| variant | img/s (fastest round) | × fp32 (fastest) | × fp32 (median) |\n| --- | --- | --- | --- |")
    for name, times in seconds.items():
        rate = 2 * args.batch_size * args.steps / min(times)
        print(f"| {name} | {rate:.0f} | {base / min(times):.2f} | {middle / statistics.median(times):.2f} |")
    return 0


def vs_plain(argv: list[str]) -> int:
    args = bench_options(argv, "--vs-plain")
    device = torch.device("cpu")
    plan = plan_bench("lenet", INPUTS["lenet"], "cpu", args.precision, args.channels_last, threads=0)  # as a run's
    precision, channels_last = plan.precision, plan.channels_last
    dann_step = Mode("dann", plan.model, args.batch_size, Precision(precision, device, channels_last), device)
    x, y = dann_step.domain.x, dann_step.domain.y  # the same tensors feed both: source and target alike
    plain = PlainLoop(x, y, x, args.batch_size, total=args.warmup + args.rounds * args.steps)
    dann_step.run(args.warmup)
    plain.run(args.warmup)
    images = 2 * args.batch_size * args.steps
    dann_rates, plain_rates = [], []
    for _ in range(args.rounds):
        dann_rates.append(images / dann_step.run(args.steps)[0])
        tic = time.perf_counter()
        plain.run(args.steps)
        plain_rates.append(images / (time.perf_counter() - tic))
    ratios = [a / b for a, b in zip(dann_rates, plain_rates, strict=True)]
    print(
        f"# torch {torch.__version__}, {device_name(device)} ({platform.processor() or platform.machine()}); LeNet "
        f"1x28x28, batch {args.batch_size} + {args.batch_size}; dann precision {precision}"
        f"{' channels_last' if channels_last else ''}, plain loop fp32; {args.rounds} rounds of {args.steps} steps"
    )
    print("| round | dann img/s | plain img/s | ratio |\n| --- | --- | --- | --- |")
    for i, (a, b, r) in enumerate(zip(dann_rates, plain_rates, ratios, strict=True)):
        print(f"| {i + 1} | {a:.0f} | {b:.0f} | {r:.2f} |")
    best = max(dann_rates) / max(plain_rates)
    print(f"fastest rounds: dann {max(dann_rates):.0f} img/s, plain {max(plain_rates):.0f} img/s, ratio {best:.2f}x")
    print(f"median per-round ratio: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)  # this script's own modes, then the options it shares with dann bench
    if "--vs-plain" in sys.argv[1:]:
        sys.exit(vs_plain(sys.argv[1:]))
    if "--vs-precision" in sys.argv[1:]:
        sys.exit(vs_precision(sys.argv[1:]))
    sys.exit(main(["bench", *sys.argv[1:]]))
