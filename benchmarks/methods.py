"""Every method on every embedded task, several seeds, the same budget, each beside its **matched** source-only
control (the same network, preprocessing and precision: a method whose reference network has a bottleneck is
compared with source-only on that bottleneck) and beside the plain source-only model. Target accuracy at the last
step and at the step the selection validator picks (no target labels), and the target-label oracle pick.

    python benchmarks/methods.py                                   # the default tasks and methods, seeds 0 1 2
    python benchmarks/methods.py --tasks moons --methods dann mcc --seeds 0 1 2 3 4
    python benchmarks/methods.py --timing-only                      # step time of each method vs source-only
    python benchmarks/methods.py --report-only --methods mean_teacher mean_teacher-intensity \
        --versus mean_teacher mean_teacher-intensity               # the tables, and one config against another

Each run trains the task's packaged preset with ``method.name`` (and regularizers) changed, in fp32 (so a method and
its control share the precision whatever ``train.precision: auto`` would pick); the digit tasks at 3,000 steps of 64 +
64 images, where source-only has converged. ``shot`` starts from the matched control of the same seed
(``model.init_from``) and adapts for the same budget again. Runs are written under ``--out`` and reused when the
benchmark is run again with the same configuration (a run of another under the same name, e.g. trained before a
default changed, is trained afresh; an interrupted benchmark resumes its unfinished runs from their last checkpoint; a
table grows over several invocations). Every accuracy is computed with target labels, for evaluation only; "oracle
pick" is the evaluation step with the best target accuracy, which no user without target labels could choose: an upper
bound, marked as such.

A gain counts as clear only when the mean of the per-seed differences to the control exceeds their standard
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

# the mean teacher's reference training recipe (Britefury/self-ensemble-visual-domain-adapt): inputs standardised
# per image, Adam at 1e-3, constant, no weight decay; its matched control trains source-only with the same recipe
REF = [
    "model.input_norm=per_image",
    "optim.name=adam",
    "optim.lr=0.001",
    "optim.lr_schedule=constant",
    "optim.weight_decay=0",
]
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
    "adamatch": ["method.name=adamatch"],
    "adamatch_noda": ["method.name=adamatch", "method.distribution_alignment=false"],
    "adamatch@uratio3": ["method.name=adamatch", "method.uratio=3"],  # the reference's 3 target rows per source row
    "mean_teacher": ["method.name=mean_teacher"],  # with its colour augmentation on images (the default)
    "mean_teacher-intensity": ["method.name=mean_teacher", "method.intensity_augment=false"],  # views without it
    "vada": ["method.name=vada"],
    "iwdan": ["method.name=iwdan"],
    "iwcdan": ["method.name=iwcdan"],
    "shot": ["method.name=shot"],  # from source_only@shot: the reference's network (STARTS)
    "shot@bn_relu": ["method.name=shot"],  # from source_only@256: the methods' Linear-BN-ReLU bottleneck, plain head
    "source_only@256": ["method.name=source_only", "model.bottleneck_dim=256"],
    "source_only+norm": ["method.name=source_only", "model.input_norm=per_image"],
    # the mean teacher's reference recipe: per-image standardised inputs, Adam 1e-3 at a constant rate, no decay
    "mean_teacher@ref": ["method.name=mean_teacher", "method.intensity_augment=false", *REF],
    "mean_teacher@ref+intensity": ["method.name=mean_teacher", "method.intensity_augment=true", *REF],
    "mean_teacher+intensity": ["method.name=mean_teacher", "method.intensity_augment=true"],
    "source_only@256@ref": ["method.name=source_only", "model.bottleneck_dim=256", *REF],
    # tim-learn/SHOT's source network: Linear-BN-Dropout(0.5) bottleneck (256), weight-normalized classifier
    "source_only@shot": [
        "method.name=source_only",
        "model.bottleneck_dim=256",
        "model.bottleneck_kind=bn_dropout",
        "model.weight_norm=true",
    ],
    # the strong control's augmentation: random intensity inversion of training images (polarity shifts)
    "source_only@256+invert": ["method.name=source_only", "model.bottleneck_dim=256", "data.invert=0.5"],
    "adamatch_noda+invert": ["method.name=adamatch", "method.distribution_alignment=false", "data.invert=0.5"],
    "iwdan+invert": ["method.name=iwdan", "data.invert=0.5"],
    "dann+mcc": ["method.name=dann", "method.regularizers={mcc: 1.0}"],
    "dann+fixmatch": ["method.name=dann", "method.regularizers={fixmatch: 1.0}"],
    "cdan_e+mcc": ["method.name=cdan_e", "method.regularizers={mcc: 1.0}"],
}
# the configs that adapt a trained source model (model.init_from): the matched control they start from, and
# inherit their network from (dann.plan.start_network)
STARTS = {"shot": "source_only@shot", "shot@bn_relu": "source_only@256"}
DEFAULT_METHODS = ["dann", "mdd", "mmd", "adamatch", "mean_teacher", "vada", "iwdan", "shot"]
DIGIT_TASKS = ("digits", "digits_scanner", "digits_inverted", "digits_gradual", "digits_label_shift")
# The digit tasks at the budget where source-only has converged: 3,000 steps of 64 + 64 images (their presets train
# 4,000 of 32 + 32). Moons and cancer keep their presets' budgets (3,000 steps of 64 + 64).
BUDGET = {task: ["train.steps=3000", "train.batch_size=64", "train.eval_every=500"] for task in DIGIT_TASKS}
PRECISION = ["train.precision=fp32"]  # every run, so that a method and its control share it


def control_of(name: str) -> str:
    """The matched source-only control of a benchmark config: source-only on the same network (the method's
    reference bottleneck on the small backbones, ``Method.bottleneck``), with the same input normalisation and
    intensity inversion."""
    from dann.methods import METHODS

    if name.startswith("source_only"):
        return name
    if name in STARTS:
        return STARTS[name]
    method = next(o.split("=", 1)[1] for o in CONFIGS[name] if o.startswith("method.name="))
    width = METHODS.get(method).bottleneck if method in METHODS else 0
    inverted = "+invert" if "data.invert=0.5" in CONFIGS[name] else ""
    recipe = "@ref" if "@ref" in name else ""
    return (f"source_only@{width}" if width else "source_only") + recipe + inverted


def run_dir(out: Path, task: str, name: str, seed: int) -> Path:
    return out / task / f"{name}-seed{seed}"


def train(job: tuple[str, str, int, str, list[str]]) -> Path:
    """Train one (task, config, seed) unless its run directory already holds a finished run."""
    torch.set_num_threads(1)
    import dann
    from dann.config import load_config, replace
    from dann.errors import ConfigError
    from dann.plan import resumed_config, saved_run_config
    from dann.runs import LAST_CHECKPOINT, METRICS_FILE, read_jsonl

    task, name, seed, out, extra = job
    run = run_dir(Path(out), task, name, seed)
    overrides = [*CONFIGS[name], *BUDGET.get(task, []), *PRECISION, f"train.seed={seed}", f"data.seed={seed}", *extra]
    cfg = load_config(task, [*overrides, "train.progress=false"])
    if name in STARTS:
        cfg = replace(cfg, model={"init_from": str(run_dir(Path(out), task, STARTS[name], seed))})
    stale = False  # a run of another configuration under this name (a default changed since): trained afresh
    if (run / METRICS_FILE).is_file():
        history = read_jsonl(run / METRICS_FILE)
        if history and history[-1]["step"] == cfg.train.steps:
            try:
                resumed_config(saved_run_config(run), cfg, str(run))
                return run  # finished, and of this configuration
            except ConfigError as e:
                print(f"# {task} {name} seed {seed}: trained with another configuration ({e}); training afresh")
                stale = True
    try:
        if (run / LAST_CHECKPOINT).is_file() and not stale:
            try:  # a run the benchmark was stopped in continues from its last checkpoint, exactly
                dann.fit(cfg, run, resume=True)
                return run
            except ConfigError as e:  # another configuration under this name: train it afresh
                print(f"# {task} {name} seed {seed}: not resumed ({e}); training afresh", flush=True)
        dann.fit(cfg, run, overwrite=True)
    except Exception as e:  # one failing configuration must not stop the others; its row says "not run yet"
        print(f"# {task} {name} seed {seed} failed: {type(e).__name__}: {e}", flush=True)
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


def gain(xs: list[float], base: list[float]) -> tuple[str, str]:
    """Mean ± std of the per-seed differences, and the verdict: clear only when the mean exceeds the spread."""
    diffs = [a - b for a, b in zip(xs, base, strict=True)]
    if len(diffs) < 2:
        return f"{diffs[0]:+.1f}", "one seed: no verdict"
    mean, spread = statistics.mean(diffs), statistics.stdev(diffs)
    verdict = "clear gain" if mean > spread else ("clear loss" if -mean > spread else "no clear gain")
    return f"{mean:+.1f} ± {spread:.1f}", verdict


def table(task: str, names: list[str], seeds: list[int], out: Path) -> None:
    done = {n for n in names if all(finished(run_dir(out, task, n, s)) for s in seeds)}
    res = {n: [scores(run_dir(out, task, n, s)) for s in seeds] for n in names if n in done}
    plain = [r["last"] for r in res["source_only"]] if "source_only" in res else None
    print(f"\n### {task}\n")
    head = ["method", "control", "last step", "validator-selected", "oracle pick*", "source held-out", "vs control"]
    print(f"| {' | '.join(head)} | verdict | vs plain source-only | per seed (last) |")
    print("| --- " * (len(head) + 3) + "|")
    for n in names:
        if n not in res:
            some = [scores(run_dir(out, task, n, s))["last"] for s in seeds if finished(run_dir(out, task, n, s))]
            state = f"{len(some)} of {len(seeds)} seeds so far" if some else "not run yet"
            per_seed = " / ".join(f"{x:.1f}" for x in some)
            print(f"| {n} | {control_of(n)} | {state} |" + " |" * len(head) + f" {per_seed} |")
            continue
        last, control = [r["last"] for r in res[n]], control_of(n)
        vs, verdict = gain(last, [r["last"] for r in res[control]]) if control in res and control != n else ("", "")
        vs_plain = gain(last, plain)[0] if plain is not None and n != "source_only" else ""
        cells = [fmt(last), fmt([r["selected"] for r in res[n]]), fmt([r["oracle_pick"] for r in res[n]])]
        cells.append(fmt([r["source_val"] for r in res[n]]))
        per_seed = " / ".join(f"{x:.1f}" for x in last)
        print(f"| {n} | {control} | {' | '.join(cells)} | {vs} | {verdict} | {vs_plain} | {per_seed} |")
    print("\n\\* oracle pick: the evaluation step with the best target accuracy (uses target labels: an upper bound).")


def versus(a: str, b: str, tasks: list[str], seeds: list[int], out: Path) -> None:
    """Config ``a`` against config ``b`` on each task: the per-seed differences of their last-step target accuracies
    (target labels: grading only), their mean ± std and the verdict of ``gain``; tasks missing a run say so."""
    print(f"\n### {a} against {b}\n")
    print(f"| task | {a} | {b} | difference | verdict | per seed (difference) |\n" + "| --- " * 6 + "|")
    for task in tasks:
        runs = {n: [run_dir(out, task, n, s) for s in seeds] for n in (a, b)}
        if not all(finished(r) for rs in runs.values() for r in rs):
            print(f"| {task} | not all {len(seeds)} seeds run yet | | | | |")
            continue
        xa, xb = ([scores(r)["last"] for r in runs[n]] for n in (a, b))
        diff, verdict = gain(xa, xb)
        per_seed = " / ".join(f"{x - y:+.1f}" for x, y in zip(xa, xb, strict=True))
        print(f"| {task} | {fmt(xa)} | {fmt(xb)} | {diff} | {verdict} | {per_seed} |")


def finished(run: Path) -> bool:
    from dann.config import load_config
    from dann.runs import CONFIG_FILE, METRICS_FILE, read_jsonl

    if not (run / METRICS_FILE).is_file() or not (run / CONFIG_FILE).is_file():
        return False
    history = read_jsonl(run / METRICS_FILE)
    return bool(history) and history[-1]["step"] == load_config(str(run / CONFIG_FILE)).train.steps


def step_times(names: list[str], steps: int, rounds: int) -> None:
    """Seconds per optimizer step of each method on the digits preset's network and batches, relative to
    source-only and to DANN, alternating methods in each round and keeping each one's fastest round."""
    torch.set_num_threads(1)
    from dann.config import load_config
    from dann.data.builtin import build_task
    from dann.methods import Batch
    from dann.plan import build_network, create_method

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
    parser.add_argument("--tasks", nargs="+", default=["moons", "digits", "digits_inverted", "cancer"])
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/bench-matched", help="run directories (reused when present)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one torch thread each (2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (every run)")
    parser.add_argument("--timing-only", action="store_true", help="only the step-time table")
    parser.add_argument("--report-only", action="store_true", help="the tables of the runs already there; no training")
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument(
        "--versus",
        nargs=2,
        metavar=("A", "B"),
        help="with --report-only: also A against B per task (per-seed differences of last-step accuracy, verdict)",
    )
    args = parser.parse_args()
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"1 thread per run, {args.jobs} runs at a time; seeds {args.seeds}; overrides {args.overrides}"
    )
    names = list(dict.fromkeys(["source_only", *(control_of(n) for n in args.methods), *args.methods]))
    if args.report_only:
        for task in args.tasks:
            table(task, names, args.seeds, Path(args.out))
        if args.versus:
            versus(*args.versus, args.tasks, args.seeds, Path(args.out))
        return
    if not args.timing_only:
        out = Path(args.out)
        jobs = [(t, n, s, str(out), args.overrides) for s in args.seeds for t in args.tasks for n in names]
        first, then = [j for j in jobs if j[1] not in STARTS], [j for j in jobs if j[1] in STARTS]
        tic = time.perf_counter()
        with ProcessPoolExecutor(args.jobs) as pool:
            list(pool.map(train, first))
            list(pool.map(train, then))  # shot starts from its source_only control's trained model
        print(f"# trained in {time.perf_counter() - tic:.0f} s")
        for task in args.tasks:
            table(task, names, args.seeds, out)
        print(json.dumps({"out": str(out)}))
    step_times(names, args.timing_steps, rounds=3)


if __name__ == "__main__":
    main()
