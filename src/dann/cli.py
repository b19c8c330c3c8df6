"""Command line: ``dann train | evaluate | predict | report | compare | demo``. Each subcommand maps argv to one API
call; ``main(argv) -> int`` is testable in-process. Errors of the project's own types print one line and return 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import api
from .config import load_config
from .errors import DannError, RunDirError

SHORTCUTS = {  # flag -> config key
    "task": "data.task",
    "source": "data.source",
    "target": "data.target",
    "target_eval": "data.target_eval",
    "backbone": "model.backbone",
    "method": "method.name",
    "steps": "train.steps",
    "seed": "train.seed",
    "device": "train.device",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dann", description="Unsupervised domain adaptation with DANN.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model; writes a run directory")
    train.add_argument("--config", help="YAML file, or a packaged preset name (moons, digits)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.01 (repeatable)",
    )
    train.add_argument("--task", help="embedded task: moons | digits")
    train.add_argument("--source", help="labeled source data (.npz with x, y)")
    train.add_argument("--target", help="unlabeled target data (.npz with x; a y in it is ignored for training)")
    train.add_argument("--target-eval", help="labeled target data used only to report accuracy")
    train.add_argument("--backbone", help="lenet | mlp | any timm model name")
    train.add_argument("--method", help="source_only | dann")
    train.add_argument("--steps", type=int, help="training steps")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    train.add_argument("--out", required=True, help="run directory to create")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="delete an existing --out first")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--no-report", action="store_true", help="skip report.html/report.md (see dann report)")

    evaluate = sub.add_parser("evaluate", help="accuracy of a trained run on labeled data")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument("--data", required=True, help="labeled data (.npz with x, y)")
    evaluate.add_argument("--json", action="store_true", help="print all metrics as JSON")

    predict = sub.add_parser("predict", help="write predictions of a trained run to CSV")
    predict.add_argument("--run", required=True, help="run directory")
    predict.add_argument("--data", required=True, help="data to classify (.npz with x)")
    predict.add_argument("--out", required=True, help="CSV file to write")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    report = sub.add_parser("report", help="(re)build report.html and report.md of a run from its files")
    report.add_argument("--run", required=True, help="run directory")

    compare = sub.add_parser("compare", help="several runs side by side, ranked by a validator")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    compare.add_argument("--out", help="also write one HTML page (table and curves) to this file")
    compare.add_argument("--validator", help="rank by this validator (default: the first run's selection.validator)")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing --out")

    demo = sub.add_parser("demo", help="source-only vs DANN on the embedded tasks, in a few minutes on a CPU")
    demo.add_argument("--out", help="where runs and pictures go (default: a new folder under runs/demo)")
    demo.add_argument("--tasks", nargs="+", default=["moons", "digits"], help="embedded tasks to run")
    return parser


def _train(args: argparse.Namespace) -> int:
    if args.resume:
        given = [flag for flag in ("config", *SHORTCUTS) if getattr(args, flag) is not None] + args.overrides
        if given:
            raise DannError(f"--resume continues the run with its saved config.yaml; drop {', '.join(given)}")
        result = api.fit(out=args.out, resume=True, report=not args.no_report)
    else:
        shortcuts = [
            f"{key}={getattr(args, flag)}" for flag, key in SHORTCUTS.items() if getattr(args, flag) is not None
        ]
        quiet = ["train.progress=false"] if args.quiet else []
        cfg = load_config(args.config, [*shortcuts, *quiet, *args.overrides])
        result = api.fit(cfg, args.out, overwrite=args.overwrite, report=not args.no_report)
    last = result.history[-1]
    print(f"run: {result.run_dir}  (model: {result.run_dir}/checkpoints/last.pt)")
    if "source_val" in last:
        print(f"source held-out accuracy: {last['source_val']['acc']:.4f}")
    if "selection" in last:
        sel, best = last["selection"], f"{result.run_dir}/checkpoints/best.pt"
        print(f"selected: {best} (step {sel['step']}, by {sel['validator']}; no target labels)")
    if "oracle" in last:
        print(f"target accuracy: {last['oracle']['target_acc']:.4f}  [uses target labels: evaluation only]")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    metrics = api.evaluate(args.run, args.data)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"accuracy: {metrics['acc']:.4f}  macro-F1: {metrics['macro_f1']:.4f}  samples: {metrics['n']}")
    for name, acc in zip(metrics["classes"], metrics["per_class_acc"], strict=True):
        print(f"  {name}: {'-' if acc is None else f'{acc:.4f}'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    print(f"wrote {api.predict(args.run, args.data, args.out, overwrite=args.overwrite)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    print(f"wrote {api.build_report(args.run)} and report.md")
    return 0


def _compare(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise RunDirError(f"{args.out} already exists; pass --overwrite to replace it")
    print(api.compare(args.runs, args.out, args.validator))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, tuple(args.tasks))
    return 0


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "report": _report,
    "compare": _compare,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except DannError as e:
        print(f"dann {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
        return 2
