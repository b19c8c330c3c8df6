"""Command line: ``dann train | tune | evaluate | predict | report | compare | download | demo | bench | cache``. Each
subcommand maps argv to one API call; ``main(argv) -> int`` is testable in-process. Errors of the project's own types
print one line and return 2; data warnings print one line each."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import api
from .config import RECIPE, RECOMMENDED, Config, load_config
from .data import TASKS
from .data.catalog import DATASETS
from .errors import DannError, DataWarning, RunDirError
from .methods import METHODS
from .selection.tune import DEFAULT_GUARD, DEFAULT_LAMBDAS, DEFAULT_METHODS, tune
from .training.distributed import World

SHORTCUTS = {  # flag -> config key
    "task": "data.task",
    "source": "data.source",
    "target": "data.target",
    "target_eval": "data.target_eval",
    "backbone": "model.backbone",
    "method": "method.name",
    "init_from": "model.init_from",
    "steps": "train.steps",
    "seed": "train.seed",
    "device": "train.device",
}


def _add_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        choices=["last", "best"],
        default="last",
        help="last.pt (default) or best.pt, the step chosen by selection.validator without target labels",
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """What to train on and how: the options ``train`` and ``tune`` share."""
    parser.add_argument("--config", help="YAML file, or a packaged preset name (moons, digits)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.01 (repeatable)",
    )
    parser.add_argument("--task", help=f"embedded task: {' | '.join(TASKS.names())}")
    parser.add_argument(
        "--source", help="labeled source data: .npz (x, y), a folder of class subfolders, or a list file"
    )
    parser.add_argument(
        "--target",
        help="unlabeled target data: .npz, a flat image folder, class subfolders or a list file "
        "(labels in it are used only to report accuracy)",
    )
    parser.add_argument("--target-eval", help="labeled target data used only to report accuracy")
    parser.add_argument("--backbone", help="lenet | lenet_conv | mlp | any timm model name (e.g. resnet50)")
    parser.add_argument("--steps", type=int, help="training steps")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")


def _config(args: argparse.Namespace, extra: Sequence[str] = ()) -> Config:
    """The config the data options ask for: ``--config``, then the shortcut flags, ``extra``, then ``--set``."""
    given = {flag: getattr(args, flag, None) for flag in SHORTCUTS}
    shortcuts = [f"{SHORTCUTS[flag]}={value}" for flag, value in given.items() if value is not None]
    return load_config(args.config, [*shortcuts, *extra, *args.overrides])


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model; writes a run directory")
    _add_data_options(train)
    train.add_argument(
        "--method",
        help=f"recommended (the default: {RECIPE['name']}; see the README's Results) | {' | '.join(METHODS.names())}",
    )
    train.add_argument("--init-from", metavar="RUN", help="start from this run's trained weights (shot needs it)")
    train.add_argument("--out", required=True, help="run directory to create")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="delete an existing --out first")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--no-report", action="store_true", help="skip report.html/report.md (see dann report)")


def _add_tune_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tune", help="methods x λ_adv x lr, chosen without target labels (see README)")
    _add_data_options(parser)
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="M",
        help=f"methods to try, with regularizers after + (dann+mcc, dann+entropy:0.1); shot starts from the "
        f"source-only control (default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--lambdas",
        nargs="+",
        type=float,
        metavar="L",
        help=f"λ_adv values (default: {' '.join(map(str, DEFAULT_LAMBDAS))})",
    )
    parser.add_argument(
        "--lrs", nargs="+", type=float, metavar="LR", help="learning rates (default: the config's optim.lr)"
    )
    parser.add_argument(
        "--guard",
        type=float,
        help="a run is eligible only if its source held-out accuracy is at most this many points below the "
        f"source-only control's (default: {DEFAULT_GUARD:g})",
    )
    parser.add_argument("--out", required=True, help="tune folder: runs/<name> per run, tune.json, tune.md")
    parser.add_argument("--overwrite", action="store_true", help="delete an existing --out first")
    parser.add_argument("--quiet", action="store_true", help="no line per run")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dann", description="Unsupervised domain adaptation with DANN.")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_train_parser(sub)
    _add_tune_parser(sub)

    evaluate = sub.add_parser("evaluate", help="accuracy of a trained run on labeled data")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument("--data", required=True, help="labeled data: .npz (x, y), class subfolders or a list file")
    evaluate.add_argument(
        "--out-dir", help="where metrics.json, confusion.csv and confusion.png go (default: RUN/eval/<data name>)"
    )
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing evaluation files")
    evaluate.add_argument("--skip-bad-images", action="store_true", help="skip unreadable image files, counting them")
    evaluate.add_argument("--json", action="store_true", help="print all metrics as JSON")
    _add_checkpoint_flag(evaluate)

    predict = sub.add_parser("predict", help="write predictions of a trained run to CSV")
    predict.add_argument("--run", required=True, help="run directory")
    given = predict.add_mutually_exclusive_group(required=True)
    given.add_argument("--data", help="arrays to classify (.npz with x)")
    given.add_argument("--images", help="image files to classify: a folder (searched recursively) or a list file")
    predict.add_argument("--out", required=True, help="CSV file to write")
    predict.add_argument("--top-k", type=int, default=3, help="classes listed per image with probabilities (3)")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    predict.add_argument("--skip-bad-images", action="store_true", help="skip unreadable image files, counting them")
    _add_checkpoint_flag(predict)

    download = sub.add_parser("download", help="fetch, verify and unpack a benchmark dataset (see dann.data.catalog)")
    download.add_argument("name", help=f"dataset: {', '.join(DATASETS.names())}")
    download.add_argument("--root", required=True, help="folder to put it in (the data.root of its config)")
    download.add_argument("--no-verify", action="store_true", help="accept archives without a known checksum")

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

    bench = sub.add_parser("bench", help="images/s of the DANN step vs a supervised step on the same images")
    bench.add_argument("--backbone", default="lenet", help="lenet (28 px) | resnet18 (64) | resnet50 (224) | mlp (30)")
    bench.add_argument("--batch-size", type=int, default=64, help="B: per domain for DANN, 2B for supervised (64)")
    bench.add_argument("--steps", type=int, default=10, help="timed steps per round (10)")
    bench.add_argument("--rounds", type=int, default=3, help="timed rounds per step kind; the fastest counts (3)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    bench.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (auto: as training picks)")
    bench.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, help="NHWC memory format (default: as training picks)"
    )
    bench.add_argument("--images", help="stream both domains from this folder of class subfolders (default: tensors)")
    bench.add_argument("--workers", type=int, help="with --images: DataLoader workers per loader (default: auto)")
    bench.add_argument("--image-size", type=int, default=0, help="with --images: network input side (default: above)")
    bench.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    cache = sub.add_parser("cache", help="decode image folders once into the decoded-image cache, ahead of training")
    _add_data_options(cache)
    cache.add_argument("--cache-dir", help="where caches go (data.cache_dir; default: $DANN_CACHE or ~/.cache/dann)")
    return parser


def _train(args: argparse.Namespace) -> int:
    recommended = False
    if args.resume:
        given = [flag for flag in ("config", *SHORTCUTS) if getattr(args, flag) is not None] + args.overrides
        if given:
            raise DannError(f"--resume continues the run with its saved config.yaml; drop {', '.join(given)}")
        result = api.fit(out=args.out, resume=True, report=not args.no_report)
    else:
        cfg = _config(args, ["train.progress=false"] if args.quiet else [])
        recommended = cfg.method.name == RECOMMENDED
        result = api.fit(cfg, args.out, overwrite=args.overwrite, report=not args.no_report)
    if not World.from_env().main:  # under torchrun rank 0 speaks for the run
        return 0
    last = result.history[-1]
    print(f"run: {result.run_dir}  (model: {result.run_dir}/checkpoints/last.pt)")
    default = " (method.name=recommended, the default; --method NAME to adapt)" if recommended else ""
    print(f"method: {result.config.method.name}{default}")
    if "source_val" in last:
        print(f"source held-out accuracy: {last['source_val']['acc']:.4f}")
    if "selection" in last:
        sel, best = last["selection"], f"{result.run_dir}/checkpoints/best.pt"
        print(f"selected: {best} (step {sel['step']}, by {sel['validator']}; no target labels)")
    if "oracle" in last:
        print(f"target accuracy: {last['oracle']['target_acc']:.4f}  [uses target labels: evaluation only]")
    if result.report is not None:
        print(f"report: {result.report}")
    if "skipped_images" in last:
        skipped = last["skipped_images"]
        print(
            f"skipped {skipped['count']} unreadable image file(s) (data.skip_bad_images): {', '.join(skipped['first'])}"
        )
    return 0


def _tune(args: argparse.Namespace) -> int:
    given = {"methods": args.methods, "lambdas": args.lambdas, "lrs": args.lrs, "guard": args.guard}
    options = {key: value for key, value in given.items() if value is not None}  # dann.tune's defaults otherwise
    result = tune(_config(args), args.out, overwrite=args.overwrite, progress=not args.quiet, **options)
    print(result.summary())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    out_dir = args.out_dir or Path(args.run) / "eval" / Path(args.data.rstrip("/")).name
    skip = True if args.skip_bad_images else None
    metrics = api.evaluate(
        args.run, args.data, out_dir, overwrite=args.overwrite, skip_bad=skip, checkpoint=args.checkpoint
    )
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"accuracy: {metrics['acc']:.4f}  macro-F1: {metrics['macro_f1']:.4f}  samples: {metrics['n']}")
    for name, acc in zip(metrics["classes"], metrics["per_class_acc"], strict=True):
        print(f"  {name}: {'-' if acc is None else f'{acc:.4f}'}")
    print(f"confusion matrix: {out_dir}/confusion.csv, {out_dir}/confusion.png")
    return 0


def _predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise DannError(f"--top-k must be at least 1, got {args.top_k}")
    skip = True if args.skip_bad_images else None
    data = args.data or args.images
    out = api.predict(
        args.run, data, args.out, overwrite=args.overwrite, top_k=args.top_k, skip_bad=skip, checkpoint=args.checkpoint
    )
    print(f"wrote {out}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .data.download import download

    for line in download(args.name, args.root, verify=not args.no_verify):
        print(line)
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


def _bench(args: argparse.Namespace) -> int:
    from .config import PRECISIONS
    from .training.bench import format_bench, run_bench

    if args.precision not in PRECISIONS:
        raise DannError(f"--precision must be {' | '.join(PRECISIONS)}, got {args.precision!r}")
    result = run_bench(
        args.backbone,
        args.batch_size,
        args.steps,
        args.warmup,
        args.rounds,
        args.precision,
        args.channels_last,
        args.device,
        args.images,
        args.workers,
        args.image_size,
    )
    print(json.dumps(result) if args.json else format_bench(result))
    return 0


def _cache(args: argparse.Namespace) -> int:
    cfg = _config(args, [f"data.cache_dir={args.cache_dir}"] if args.cache_dir else [])
    for origin, images in api.cache_images(cfg):
        size = f"{len(images)} images, {images.side}x{images.side} px, {images.nbytes / 2**20:.1f} MiB"
        if images.seconds is None:
            print(f"{origin}: already built: {images.path} ({size})")
        else:
            rate = len(images) / max(images.seconds, 1e-9)
            print(f"{origin}: {images.path} ({size}), built in {images.seconds:.1f} s ({rate:.0f} images/s)")
        if images.errors:
            print(f"  {len(images.errors)} unreadable file(s), e.g. {next(iter(images.errors.values()))}")
    return 0


COMMANDS = {
    "train": _train,
    "tune": _tune,
    "evaluate": _evaluate,
    "predict": _predict,
    "report": _report,
    "compare": _compare,
    "download": _download,
    "demo": _demo,
    "bench": _bench,
    "cache": _cache,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
        if issubclass(category, DataWarning):
            if not World.from_env().main:  # under torchrun rank 0 speaks for the run
                return
            print(f"dann {args.command}: warning: {message}", file=sys.stderr)
        else:
            original(message, category, *rest, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        try:
            return COMMANDS[args.command](args)
        except DannError as e:
            print(f"dann {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)  # always one line
            return 2
