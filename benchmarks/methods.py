"""Every method on every embedded task, several seeds, the same budget: target accuracy at the last step and at the
step the selection validator picks (no target labels), beside source-only and the target-label oracle pick.

    python benchmarks/methods.py                                   # all tasks, all methods, seeds 0 1 2
    python benchmarks/methods.py --tasks moons --methods dann mcc --seeds 0 1 2 3 4
    python benchmarks/methods.py --timing-only                      # step time of each method vs source-only

Each run trains the task's packaged preset with ``method.name`` (and regularizers) changed, nothing else; ``shot``
starts from the ``source_only`` run of the same seed (``model.init_from``) and adapts for the preset's steps again.
Runs are written under ``--out`` and reused when the benchmark is run again (so an interrupted benchmark continues).
Every accuracy is computed with target labels, for evaluation only; "oracle pick" is the evaluation step with the
best target accuracy, which no user without target labels could choose: an upper bound, marked as such.

A gain counts as clear only when the mean of the per-seed differences to source-only exceeds their standard
deviation; otherwise the table says "no clear gain"."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

# name -> overrides; "+" joins a method and its regularizers
CONFIGS: dict[str, list[str]] = {
    "source_only": ["method.name=source_only"],
    "dann": ["method.name=dann"],
    "cdan": ["method.name=cdan"],
    "cdan_e": ["method.name=cdan_e"],
    "mdd": ["method.name=mdd"],
    "mcc": ["method.name=mcc"],
    "mmd": ["method.name=mmd"],
    "coral": ["method.name=coral"],
    "fixmatch": ["method.name=fixmatch"],
    "shot": ["method.name=shot"],
    "dann+mcc": ["method.name=dann", "method.regularizers={mcc: 1.0}"],
    "dann+fixmatch": ["method.name=dann", "method.regularizers={fixmatch: 1.0}"],
    "cdan_e+mcc": ["method.name=cdan_e", "method.regularizers={mcc: 1.0}"],
}
DEFAULT_METHODS = [n for n in CONFIGS if n != "cdan_e+mcc"]  # the methods table; cdan_e+mcc is a recipe candidate
# The digit tasks train LeNet for 1,000 steps of 32 + 32 images here instead of their presets' 4,000: on the shared
# 2-core CPU the whole benchmark must fit in about an hour. Every schedule is a function of progress, so the runs
# follow the same lr and GRL curves, only shorter. Moons and cancer keep their presets' budgets.
BUDGET = {
    task: ["train.steps=1000", "train.eval_every=250"] for task in ("digits", "digits_scanner", "digits_inverted")
}


def run_dir(out: Path, task: str, name: str, seed: int) -> Path:
    return out / task / f"{name}-seed{seed}"


def train(job: tuple[str, str, int, str, list[str]]) -> Path:
    """Train one (task, config, seed) unless its run directory already holds a finished run."""
    torch.set_num_threads(1)
    import dann
    from dann.config import load_config, replace
    from dann.runs import METRICS_FILE, read_jsonl

    task, name, seed, out, extra = job
    run = run_dir(Path(out), task, name, seed)
    overrides = [*CONFIGS[name], *BUDGET.get(task, []), f"train.seed={seed}", f"data.seed={seed}", *extra]
    cfg = load_config(task, [*overrides, "train.progress=false"])
    if name == "shot":
        cfg = replace(cfg, model={"init_from": str(run_dir(Path(out), task, "source_only", seed))})
    if (run / METRICS_FILE).is_file():
        history = read_jsonl(run / METRICS_FILE)
        if history and history[-1]["step"] == cfg.train.steps:
            return run
    dann.fit(cfg, run, overwrite=True)
    return run


def scores(run: Path) -> dict[str, float]:
    """Target accuracy (uses target labels) at the last, the validator-selected and the best step; and, without
    target labels, the last evaluation's validator scores and source held-out accuracy."""
    from dann.runs import METRICS_FILE, read_jsonl

    history = read_jsonl(run / METRICS_FILE)
    by_step = {r["step"]: r for r in history}
    last = history[-1]
    selected = last.get("selection", {}).get("step", last["step"])
    return {
        "last": 100 * last["oracle"]["target_acc"],
        "selected": 100 * by_step[selected]["oracle"]["target_acc"],
        "oracle_pick": 100 * max(r["oracle"]["target_acc"] for r in history),
        "steps_per_s": statistics.mean(r["steps_per_s"] for r in history),
        "source_val": 100 * last["source_val"]["acc"],
        **{f"validator_{k}": v for k, v in last["validators"].items() if v is not None},
    }


def fmt(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.1f}"


def table(task: str, names: list[str], seeds: list[int], out: Path) -> None:
    res = {n: [scores(run_dir(out, task, n, s)) for s in seeds] for n in names}
    base = [r["last"] for r in res["source_only"]] if "source_only" in res else None
    print(f"\n### {task}\n")
    head = ["method", "last step", "validator-selected", "oracle pick*", "gain vs source-only (last)", "verdict"]
    print(f"| {' | '.join(head)} | per seed (last) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in names:
        last = [r["last"] for r in res[n]]
        gain, verdict = "", ""
        if base is not None and n != "source_only":
            diffs = [a - b for a, b in zip(last, base, strict=True)]
            mean, spread = statistics.mean(diffs), statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            gain = f"{mean:+.1f} ± {spread:.1f}"
            verdict = "clear gain" if mean > spread else ("clear loss" if -mean > spread else "no clear gain")
            verdict = verdict if len(diffs) > 1 else "one seed: no verdict"
        cells = [fmt(last), fmt([r["selected"] for r in res[n]]), fmt([r["oracle_pick"] for r in res[n]])]
        print(f"| {n} | {' | '.join(cells)} | {gain} | {verdict} | {' / '.join(f'{x:.1f}' for x in last)} |")
    print("\n\\* oracle pick: the evaluation step with the best target accuracy (uses target labels: an upper bound).")


def step_times(names: list[str], steps: int, rounds: int) -> None:
    """Seconds per optimizer step of each method on the digits preset's network and batches, relative to
    source-only and to DANN, alternating methods in each round and keeping each one's fastest round."""
    torch.set_num_threads(1)
    from dann.config import load_config
    from dann.data.builtin import build_task
    from dann.methods import Batch, build_network, create_method

    data = build_task("digits")
    x_s, y_s, x_t = data.source_train.x[:32], data.source_train.y[:32], data.target_train.x[:32]
    best: dict[str, float] = {}
    for _ in range(rounds):
        for n in names:
            cfg = load_config("digits", CONFIGS[n])
            torch.manual_seed(0)
            net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes).train()
            method = create_method(cfg.method)
            method.prepare(net)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            batch = Batch(x_s if method.uses_source else x_s[:0], y_s if method.uses_source else y_s[:0], x_t)
            for i in range(steps + 2):
                if i == 2:
                    tic = time.perf_counter()
                opt.zero_grad()
                method.loss(net, batch, 0.5).total.backward()
                opt.step()
                method.after_step(net)
            best[n] = min(best.get(n, float("inf")), (time.perf_counter() - tic) / steps)
    print("\n| method | ms per step | × source-only | × DANN |\n| --- | --- | --- | --- |")
    for n in names:
        so, dn = best.get("source_only"), best.get("dann")
        ratio = [f"{best[n] / r:.2f}" if r else "" for r in (so, dn)]
        print(f"| {n} | {1000 * best[n]:.1f} | {ratio[0]} | {ratio[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["moons", "digits"])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench-methods", help="run directories (reused when present)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one torch thread each (2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (every run)")
    parser.add_argument("--timing-only", action="store_true", help="only the step-time table")
    parser.add_argument("--timing-steps", type=int, default=20)
    args = parser.parse_args()
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"1 thread per run, {args.jobs} runs at a time; seeds {args.seeds}; overrides {args.overrides}"
    )
    names = list(dict.fromkeys(["source_only", *args.methods]))
    if not args.timing_only:
        out = Path(args.out)
        first = [
            (t, n, s, str(out), args.overrides) for t in args.tasks for n in names if n != "shot" for s in args.seeds
        ]
        then = [(t, "shot", s, str(out), args.overrides) for t in args.tasks for s in args.seeds if "shot" in names]
        tic = time.perf_counter()
        with ProcessPoolExecutor(args.jobs) as pool:
            list(pool.map(train, first))
            list(pool.map(train, then))  # shot starts from the source_only runs
        print(f"# trained in {time.perf_counter() - tic:.0f} s")
        for task in args.tasks:
            table(task, names, args.seeds, out)
        print(json.dumps({"out": str(out)}))
    step_times(names, args.timing_steps, rounds=3)


if __name__ == "__main__":
    main()
