"""Command line: ``dann train | tune | check-data | cache | evaluate | predict | report | compare | download | demo |
bench``. Each subcommand maps argv to one API call; ``main(argv) -> int`` is testable in-process. Errors of the
project's own types print one line and return 2; data warnings print one line each. The library's messages name its
parameters (`overwrite=True`); they are printed with the flags that set them (--overwrite): see ``as_flags``. An
interrupted ``train`` (Ctrl-C, SIGTERM) prints one line naming its checkpoint and the command that resumes it, and
returns 128 + the signal's number.

The parser is built without torch: ``dann --help``, ``dann <command> --help`` and argument errors answer at once, and
each command imports what it needs when it runs. The names the help lists are kept here for that (``METHOD_NAMES``,
``TASK_NAMES``, ``DATASET_NAMES``); ``tests/test_cli_startup.py`` checks that they are the registries' names."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shlex
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .config import RECIPE, RECOMMENDED, Config, MethodConfig, load_config
from .errors import DannError, DataError, DataWarning, TrainingInterrupted
from .selection.defaults import DEFAULT_GUARD, DEFAULT_LAMBDAS, DEFAULT_METHODS

# the names of dann.methods.METHODS, dann.data.TASKS and dann.data.catalog.DATASETS, whose modules import torch
METHOD_NAMES = (
    "adamatch",
    "cdan",
    "cdan_e",
    "clip_distill",
    "coral",
    "dann",
    "fixmatch",
    "iwcdan",
    "iwdan",
    "mcc",
    "mdd",
    "mean_teacher",
    "mmd",
    "shot",
    "source_only",
    "vada",
)
TASK_NAMES = ("cancer", "digits", "digits_gradual", "digits_inverted", "digits_label_shift", "digits_scanner", "moons")
DATASET_NAMES = ("digits", "domainnet", "mnist", "mnistm", "office31", "officehome", "svhn", "usps", "visda2017")

SHORTCUTS = {  # flag -> config key
    "task": "data.task",
    "source": "data.source",
    "target": "data.target",
    "target_eval": "data.target_eval",
    "intermediate": "data.intermediate",
    "backbone": "model.backbone",
    "method": "method.name",
    "init_from": "model.init_from",
    "steps": "train.steps",
    "seed": "train.seed",
    "device": "train.device",
}


FLAGS = {  # how library messages name API parameters (in backquotes) → the flags that set them
    "overwrite=True": "--overwrite",
    "resume=True": "--resume",
    "control=True": "--control",
    "different_targets=True": "--different-targets",
    "verify=False": "--no-verify",
    "skip_bad=True": "--skip-bad-images",
    "out": "--out",
    "lambdas": "--lambdas",
    "lrs": "--lrs",
    "images": "--images",
    "workers": "--workers",
    "batch_size": "--batch-size",
    "steps": "--steps",
    "rounds": "--rounds",
    "warmup": "--warmup",
    "image_size": "--image-size",
}


def as_flags(message: str) -> str:
    """A library message in the CLI's words: each parameter it names in backquotes (``FLAGS``) becomes its flag;
    anything else in backquotes (a validator's name, a command) is left as it is."""
    for parameter, flag in FLAGS.items():
        message = message.replace(f"`{parameter}`", flag)
    return message


def _add_checkpoint_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        choices=["last", "best"],
        default="last",
        help="last.pt (default) or best.pt, the step chosen by selection.validator without target labels",
    )


def _add_file_options(parser: argparse.ArgumentParser) -> None:
    """Which data: the options ``train``, ``tune`` and ``check-data`` share."""
    parser.add_argument("--config", help="YAML file, or a packaged preset name (moons, digits)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values, e.g. --set optim.lr=0.01 train.steps=500 (repeatable)",
    )
    parser.add_argument(
        "--source",
        action="append",
        metavar="[NAME=]PATH",
        help="labeled source data: .npz (x, y[, w]), a folder of class subfolders, or a list file "
        "(path,label[,weight]); repeat for several labeled domains, each may be named: --source a=x --source b=y",
    )
    parser.add_argument(
        "--intermediate", metavar="NAME", help="the labeled domain nearest the target (see the staged preset)"
    )
    parser.add_argument(
        "--target",
        help="unlabeled target data: .npz, a flat image folder, class subfolders or a list file "
        "(labels in it are used only to report accuracy)",
    )
    parser.add_argument("--target-eval", help="labeled target data used only to report accuracy")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """What to train on and how: the options ``train`` and ``tune`` share."""
    _add_file_options(parser)
    parser.add_argument("--task", help=f"embedded task: {' | '.join(TASK_NAMES)}")
    parser.add_argument("--backbone", help="lenet | lenet_conv | mlp | any timm model name (e.g. resnet50)")
    parser.add_argument("--steps", type=int, help="training steps")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")


def _config(
    args: argparse.Namespace, extra: Sequence[str] = (), base: str | None = None, values: dict | None = None
) -> Config:
    """The config the data options ask for: ``--config`` (else ``base``, else ``values``), then the shortcut flags,
    ``extra``, then ``--set``."""
    given = {flag: getattr(args, flag, None) for flag in SHORTCUTS}
    if given.get("source") is not None:  # repeatable: one path as it was, several as a list (JSON is YAML)
        given["source"] = given["source"][0] if len(given["source"]) == 1 else json.dumps(given["source"])
    shortcuts = [f"{SHORTCUTS[flag]}={value}" for flag, value in given.items() if value is not None]
    return load_config(args.config or base, [*shortcuts, *extra, *args.overrides], values=values)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model; writes a run directory")
    _add_data_options(train)
    train.add_argument(
        "--method",
        help="recommended (the default: trains the source-only control and two candidates on your data and keeps "
        f"what its rule picks, without target labels; see the README) | {' | '.join(METHOD_NAMES)}",
    )
    train.add_argument("--init-from", metavar="RUN", help="start from this run's trained weights (shot needs it)")
    train.add_argument("--out", required=True, help="run directory to create")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint; the run's own options may be repeated, and only "
        "settings that change neither the model nor its schedule may differ (data.skip_bad_images, num_workers...)",
    )
    train.add_argument("--overwrite", action="store_true", help="delete an existing --out first")
    train.add_argument("--quiet", action="store_true", help="no progress bar, summary or line per evaluation")
    train.add_argument("--no-report", action="store_true", help="skip report.html/report.md (see dann report)")
    train.add_argument(
        "--control",
        action="store_true",
        help="also train the source-only control (same data, seed and steps) into OUT/control; the report then says "
        "whether adaptation helped, without target labels",
    )
    train.add_argument("--check-data", action="store_true", help="first decode every image file once (dann check-data)")


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

    check = sub.add_parser(
        "check-data",
        help="decode every image file once and list the unreadable ones; for a run that distils CLIP (clip_distill "
        "as its method, a regularizer or a stage's method), also the teacher's accuracy on the labeled source",
    )
    _add_file_options(check)
    for flag, what in (
        ("--method", "the run's method (the CLIP teacher's line, for clip_distill)"),
        ("--backbone", "the run's backbone (the input size of image files)"),
        ("--seed", "the run's seed"),
        ("--device", "where the CLIP teacher runs: auto | cpu | cuda"),
    ):
        check.add_argument(flag, help=what)  # fmt: skip
    check.add_argument("--workers", type=int, help="processes that decode (default: the CPUs this process may use)")
    check.add_argument("--quiet", action="store_true", help="no progress bar")
    check.add_argument(
        "--run",
        metavar="RUN",
        help="a trained run (e.g. source-only): also estimate the target's class proportions with its model (BBSE, "
        "its held-out source samples and --target's images), a label-shift check before choosing a method",
    )

    evaluate = sub.add_parser("evaluate", help="accuracy of a trained run on labeled data")
    evaluate.add_argument("--run", required=True, help="run directory")
    labeled = evaluate.add_mutually_exclusive_group(required=True)
    labeled.add_argument("--data", help="labeled data: .npz (x, y), class subfolders or a list file")
    labeled.add_argument("--images", help="labeled image files: a folder of class subfolders or a path,label list file")
    evaluate.add_argument(
        "--out-dir",
        help="where metrics.json, confusion.csv and confusion.png go (default: RUN/eval/<data name>-<checkpoint>)",
    )
    evaluate.add_argument("--overwrite", action="store_true", help="replace existing evaluation files")
    evaluate.add_argument("--skip-bad-images", action="store_true", help="skip unreadable image files, counting them")
    evaluate.add_argument("--json", action="store_true", help="print all metrics as JSON")
    _add_checkpoint_flag(evaluate)

    predict = sub.add_parser("predict", help="write predictions of a trained run (or of CLIP, zero-shot) to CSV")
    predict.add_argument("--run", help="run directory (required unless --zero-shot)")
    predict.add_argument(
        "--zero-shot", action="store_true", help="CLIP's zero-shot classifier, no training (docs/clip.md): the classes "
        "of --source, the teacher of --config / --set method.clip_model, method.clip_file, method.clip_templates",
    )  # fmt: skip
    predict.add_argument("--config", help="with --zero-shot: YAML file or preset")
    predict.add_argument("--source", action="append", help="with --zero-shot: class subfolders naming the classes")
    predict.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE")
    given = predict.add_mutually_exclusive_group(required=True)
    given.add_argument("--data", help="arrays to classify (.npz with x)")
    given.add_argument("--images", help="image files to classify: a folder (searched recursively) or a list file")
    predict.add_argument("--out", required=True, help="CSV file to write")
    predict.add_argument("--top-k", type=int, default=3, help="classes listed per image with probabilities (3)")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    predict.add_argument("--skip-bad-images", action="store_true", help="skip unreadable image files, counting them")
    _add_checkpoint_flag(predict)

    download = sub.add_parser("download", help="fetch, verify and unpack a benchmark dataset (see dann.data.catalog)")
    download.add_argument("name", help=f"dataset: {', '.join(DATASET_NAMES)}")
    download.add_argument("--root", required=True, help="folder to put it in (the data.root of its config)")
    download.add_argument("--no-verify", action="store_true", help="accept archives without a known checksum")

    report = sub.add_parser("report", help="(re)build report.html and report.md of a run from its files")
    report.add_argument("--run", required=True, help="run directory")
    report.add_argument("--control", help="the source-only control's run directory (default: RUN/control if there)")

    compare = sub.add_parser("compare", help="several runs side by side, ranked by a validator")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    compare.add_argument("--out", help="also write one HTML page (table and curves) to this file")
    compare.add_argument("--validator", help="rank by this validator (default: the first run's selection.validator)")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    compare.add_argument(
        "--different-targets",
        action="store_true",
        help="show runs that adapted to different target data side by side, unranked (refused otherwise)",
    )

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
    bench.add_argument("--skip-bad-images", action="store_true", help="with --images: skip unreadable image files")
    bench.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    bench.add_argument(
        "--threads", default="auto", help="torch CPU threads: auto (as training picks, train.threads) | N | 0 (torch's)"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    cache = sub.add_parser("cache", help="decode image folders once into the decoded-image cache, ahead of training")
    _add_data_options(cache)
    cache.add_argument("--cache-dir", help="where caches go (data.cache_dir; default: $DANN_CACHE or ~/.cache/dann)")
    return parser


def _resume_config(args: argparse.Namespace, extra: Sequence[str]) -> Config | None:
    """On ``--resume``: the options given, over the run's config.yaml (or ``--config``), for ``api.fit`` to compare
    with the saved ones; None when none is given (the run's own config then)."""
    from .config import RECIPE_FILE
    from .plan import saved_run_config
    from .runs import CONFIG_FILE

    saved = Path(args.out) / CONFIG_FILE
    given = [flag for flag in ("config", *SHORTCUTS) if getattr(args, flag) is not None] + args.overrides
    selection = Path(args.out) / RECIPE_FILE  # a selection of the default: its plan holds the config it trains
    plan = json.loads(selection.read_text()) if selection.is_file() else {}
    if (given or extra) and "config" in plan and args.config is None:
        shortcuts = _config(args, extra).to_dict()  # only what was given counts: compare key by key below
        defaults = Config().to_dict()
        changed = {s: {k: v for k, v in keys.items() if v != defaults[s][k]} for s, keys in shortcuts.items()}
        return load_config(None, values={s: {**plan["config"][s], **changed[s]} for s in plan["config"]})
    if not (given or extra) or not saved.is_file():
        return None  # api.fit says when config.yaml is missing
    if args.config is not None:
        return _config(args, extra)
    # over the run's config as it trained: keys its version predates take the values it trained with (plan.LEGACY)
    return _config(args, extra, values=saved_run_config(Path(args.out)).to_dict())


def _check_first(cfg: Config, quiet: bool) -> None:
    """``train --check-data``: decode every image before training; unreadable ones stop the run here unless
    data.skip_bad_images skips them."""
    from . import api

    check = api.check_data(cfg, progress=not quiet)
    if not quiet or not check.ok:
        for line in check.lines():
            print(line)
    if not check.ok and not cfg.data.skip_bad_images:
        raise DataError(
            f"{len(check.bad)} unreadable image file(s), listed above: fix or remove them, or skip them with "
            "--set data.skip_bad_images=true"
        )


def _train(args: argparse.Namespace) -> int:
    from . import api
    from .runs import CONFIG_FILE
    from .training.feedback import print_line

    extra = ["train.progress=false"] if args.quiet else []
    cfg = _resume_config(args, extra) if args.resume else _config(args, extra)
    recommended = cfg is not None and cfg.method.name == RECOMMENDED and not args.resume
    saved = Path(args.out) / CONFIG_FILE
    if args.check_data and (cfg is not None or saved.is_file()):
        _check_first(cfg or load_config(str(saved)), args.quiet)
    echo = None if args.quiet else print_line
    result = api.fit(
        cfg,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        report=not args.no_report,
        control=args.control,
        echo=echo,
    )
    if not _main_process():
        return 0
    last = result.history[-1]
    print(f"run: {result.run_dir}  (model: {result.run_dir}/checkpoints/last.pt)")
    default = f" (the default, as no method was named: {RECIPE['why']})" if recommended else ""
    if result.selection is not None:  # the selecting default: what it kept, why, and where every run is
        runs = f"{result.run_dir}/control and {result.run_dir}/candidates/"
        default = f" (kept by the default's selection; the runs it trained: {runs})"
        if args.quiet:  # otherwise the selection has said it as it ended
            print(f"default: {result.selection['why']}")
    print(f"method: {result.config.method.name}{default}")
    if "source_val" in last:
        print(f"source held-out accuracy: {last['source_val']['acc']:.4f}")
    if "selection" in last:
        sel, best = last["selection"], f"{result.run_dir}/checkpoints/best.pt"
        print(
            f"also kept: {best} (step {sel['step']}, the best {sel['validator']} score, no target labels; "
            "--checkpoint best uses it)"
        )
    if "oracle" in last:
        print(f"target accuracy: {last['oracle']['target_acc']:.4f}  [uses target labels: evaluation only]")
    if result.control is not None:
        print(f"control: {result.control.run_dir} (source_only: same data, seed and steps)")
    if result.report is not None:
        print(f"report: {result.report}")
        _print_verdicts(result.run_dir)
    elif result.control is not None:
        print(f"did adaptation help? dann report --run {result.run_dir} answers it")
    if "skipped_images" in last:
        skipped = last["skipped_images"]
        print(
            f"skipped {skipped['count']} unreadable image file(s) (data.skip_bad_images): {', '.join(skipped['first'])}"
        )
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from . import api
    from .clip.check import report_teacher

    cfg = _config(args)
    check = api.check_data(cfg, workers=args.workers, progress=not args.quiet)
    for line in check.lines():
        print(line)
    if check.ok:  # a run that distils CLIP: the teacher's accuracy on the labeled source, as the run would say it
        teacher = api.check_teacher(cfg)
        report_teacher(teacher, print)
        clip_keys = [k for k in ("clip_file", "clip_model") if getattr(cfg.method, k) != getattr(MethodConfig(), k)]
        if teacher is None and clip_keys:
            print(
                f"teacher:  none: method.{clip_keys[0]} is set but no method of this run distils CLIP; name one "
                "(--method clip_distill, or --set method.regularizers={clip_distill: 1.0}) to see its accuracy"
            )
    if args.run and check.ok:
        target = cfg.data.target or None  # None: the run's own target data
        print(api.estimate_label_shift(args.run, target=target, bootstrap=100))
        print(
            "(assumes each class looks the same in both domains: where the run's model errs on the target, a "
            "covariate shift moves this estimate too)"
        )
    return 0 if check.ok else 1


def _tune(args: argparse.Namespace) -> int:
    from .selection.tune import tune

    given = {"methods": args.methods, "lambdas": args.lambdas, "lrs": args.lrs, "guard": args.guard}
    options = {key: value for key, value in given.items() if value is not None}  # dann.tune's defaults otherwise
    result = tune(_config(args), args.out, overwrite=args.overwrite, progress=not args.quiet, **options)
    print(result.summary())
    return 0


def _print_verdicts(run_dir: str | Path) -> None:
    """The sanity flags and the control's verdict of a run, from the ``report.json`` its report wrote."""
    summary = json.loads((Path(run_dir) / "report.json").read_text())
    for flag in summary.get("flags", []):
        print(f"flag: {flag['name']}: {flag['what']} Try: {flag['advice']}")
    verdict = summary.get("verdict")
    if verdict:
        print(
            f"did adaptation help? {verdict['answer']} (by {verdict['validator']} with 95% noise bands, no target "
            f"labels; control: {verdict['control']})"
        )


def _evaluate(args: argparse.Namespace) -> int:
    if args.images and args.images.endswith(".npz"):
        raise DannError(f"--images {args.images}: an .npz file is arrays, not image files; pass it with --data")
    from . import api

    data = args.data or args.images
    out_dir = args.out_dir or api.default_eval_dir(args.run, data, args.checkpoint)
    skip = True if args.skip_bad_images else None
    metrics = api.evaluate(args.run, data, out_dir, overwrite=args.overwrite, skip_bad=skip, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(metrics))
        return 0
    print(f"checkpoint: {Path(args.run) / metrics['checkpoint']}, {metrics['progress']}")
    print(f"accuracy: {metrics['acc']:.4f}  macro-F1: {metrics['macro_f1']:.4f}  samples: {metrics['n']}")
    for name, acc in zip(metrics["classes"], metrics["per_class_acc"], strict=True):
        print(f"  {name}: {'-' if acc is None else f'{acc:.4f}'}")
    for name, apart in metrics["unknown_to_model"].items():
        taken = ", ".join(f"{c} {n}" for c, n in apart["predicted"].items()) or "none readable"
        print(f"  {name}: unknown to the model ({apart['n']} images, left out of the accuracy; predicted as {taken})")
    print(f"metrics: {out_dir}/metrics.json; confusion matrix: {out_dir}/confusion.csv, {out_dir}/confusion.png")
    return 0


def _predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise DannError(f"--top-k must be at least 1, got {args.top_k}")
    from . import api

    skip = True if args.skip_bad_images else None
    data = args.data or args.images
    if args.zero_shot and (args.run or args.checkpoint != "last"):  # an option that would be silently ignored
        raise DannError(
            "predict --zero-shot classifies with CLIP, not with a trained run: drop --run and --checkpoint, or drop "
            "--zero-shot to predict with the run"
        )
    if args.run and not args.zero_shot and (args.source or args.config or args.overrides):
        raise DannError(
            "predict --run reads the run's own classes and configuration: --source, --config and --set apply to "
            "--zero-shot only"
        )
    if args.zero_shot or not args.run:
        if not args.zero_shot:
            raise DannError("predict needs --run RUN (a trained run), or --zero-shot for CLIP's zero-shot classifier")
        from .clip import zero_shot_predict

        cfg = _config(args)
        if not cfg.method.clip_file:  # random weights predict noise: a file that looks right would mislead
            raise DannError(
                "predict --zero-shot needs CLIP's weights: --set method.clip_file=FILE (an OpenCLIP checkpoint; "
                "docs/clip.md says which)"
            )
        out = zero_shot_predict(cfg, data, args.out, args.overwrite, args.top_k, skip)
        print(f"wrote {out}: zero-shot predictions of CLIP {cfg.method.clip_model}, {cfg.method.clip_file or 'random'}")
        return 0
    out = api.predict(
        args.run, data, args.out, overwrite=args.overwrite, top_k=args.top_k, skip_bad=skip, checkpoint=args.checkpoint
    )
    with open(out, encoding="utf-8", newline="") as rows:
        n = sum(1 for _ in csv.reader(rows)) - 1  # the header
    checkpoint = Path(args.run) / "checkpoints" / f"{args.checkpoint}.pt"
    print(f"wrote {out}: {n} prediction{'s' * (n != 1)}, by {checkpoint}")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .data.download import download

    for line in download(args.name, args.root, verify=not args.no_verify):
        print(line)
    return 0


def _report(args: argparse.Namespace) -> int:
    from . import api
    from .training.feedback import print_line

    print(f"wrote {api.build_report(args.run, control=args.control, echo=print_line)} and report.md")
    _print_verdicts(args.run)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from . import api

    print(
        api.compare(
            args.runs, args.out, args.validator, different_targets=args.different_targets, overwrite=args.overwrite
        )
    )
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    result = run_demo(args.out, tuple(args.tasks), echo=lambda line: print(line, flush=True))
    print(format_table(result.rows))
    print("pictures:", *(str(p) for p in result.pictures))
    print(f"runs: {result.root}/<task>-<method>  (each has config.yaml, metrics.jsonl, checkpoints/last.pt)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .config import PRECISIONS
    from .plan import plan_bench
    from .training.bench import INPUTS, format_bench, run_bench

    if args.precision not in PRECISIONS:
        raise DannError(f"--precision must be {' | '.join(PRECISIONS)}, got {args.precision!r}")
    if args.threads != "auto" and not args.threads.isdigit():
        raise DannError(f"--threads must be auto or an integer >= 0, got {args.threads!r}")
    if args.backbone not in INPUTS:
        raise DannError(f"unknown backbone {args.backbone!r}; choose one of {', '.join(INPUTS)}")
    setting = args.threads if args.threads == "auto" else int(args.threads)
    # the choices a training run of this backbone would make (threads included), so the figures are the ones it gets
    shape = INPUTS[args.backbone]
    plan = plan_bench(args.backbone, shape, args.device, args.precision, args.channels_last, setting, args.image_size)
    before = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    try:
        result = run_bench(
            args.backbone,
            plan,
            args.batch_size,
            args.steps,
            args.warmup,
            args.rounds,
            args.images,
            args.workers,
            args.skip_bad_images,
        )
    finally:
        torch.set_num_threads(before)
    print(json.dumps(result) if args.json else format_bench(result))
    return 0


def _cache(args: argparse.Namespace) -> int:
    from . import api

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
    "check-data": _check_data,
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
    with _printable_streams():
        return _main(argv)


@contextlib.contextmanager
def _printable_streams() -> Iterator[None]:
    """stdout and stderr write any text: a character their encoding lacks (a file name with undecodable bytes, read
    back as a lone surrogate; a class name on an ASCII terminal) comes out as a backslash escape instead of ending the
    command in a ``UnicodeEncodeError`` before its message. Their own error handling comes back afterwards."""
    streams = [s for s in (sys.stdout, sys.stderr) if isinstance(s, io.TextIOWrapper)]
    before = [s.errors for s in streams]
    for stream in streams:
        stream.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        for stream, errors in zip(streams, before, strict=True):
            with contextlib.suppress(ValueError):  # a stream closed meanwhile keeps what it has
                stream.reconfigure(errors=errors)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)

    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
        if issubclass(category, DataWarning):
            if not _main_process():
                return
            print(f"dann {args.command}: warning: {as_flags(str(message))}", file=sys.stderr)
        else:
            original(message, category, *rest, **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DataWarning)
        warnings.showwarning = show
        try:
            return COMMANDS[args.command](args)
        except DannError as e:
            print(f"dann {args.command}: error: {as_flags(' '.join(str(e).split()))}", file=sys.stderr)  # one line
            return 2
        except TrainingInterrupted as e:
            if _main_process():
                print(f"dann {args.command}: {e}{_continue_hint(args, e)}", file=sys.stderr)
            return 128 + e.signal
        except KeyboardInterrupt:
            print(f"dann {args.command}: interrupted", file=sys.stderr)
            return 128 + 2  # SIGINT's


def _main_process() -> bool:
    """False in every process of a torchrun launch but rank 0's, which speaks for the run."""
    from .training.distributed import World

    return World.from_env().main


def _continue_hint(args: argparse.Namespace, e: TrainingInterrupted) -> str:
    """How to continue an interrupted run: the exact resume command of ``train``; the same command for ``tune``."""
    if e.checkpoint is None:
        return ""
    if args.command == "train":
        from .training.distributed import World

        command = f"dann train --out {shlex.quote(args.out)} --resume{' --no-report' * args.no_report}"
        world = World.from_env()
        if world.active:  # the same processes again, so that the resume is exact
            single = os.environ.get("LOCAL_WORLD_SIZE") == str(world.size)
            launch = f"torchrun --standalone --nproc_per_node {world.size}" if single else "your torchrun launch"
            command = f"{launch} -m {command}"
        return f"; continue with: {command}"
    return f"; run the same dann {args.command} command again to continue"
