"""The bad-input catalogue: every row of the "Bad input and what you get" tables in docs/reliability.md, through the
CLI.

Each row gives what is wrong, the command line (built in a temporary folder ``TMP``) and the exact error the user
gets: exit code 2 and one line on stderr, never a traceback. A test also checks the docs page lists every row."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from dann import runs
from dann.cli import main

from .conftest import blobs

PAGE = Path(__file__).parents[1] / "docs" / "reliability.md"
SECTION = "## Bad input and what you get"


class Files:
    """Inputs for one row, in its own temporary folder: good .npz files, a finished run, and helpers to break them."""

    def __init__(self, tmp: Path, trained: Path) -> None:
        self.tmp = tmp
        x_s, y_s = blobs(40, 0.0, 0)
        x_t, y_t = blobs(30, 1.5, 1)
        self.src = self.npz("source", x=x_s, y=y_s)
        self.tgt = self.npz("target", x=x_t, y=y_t)
        self.x, self.y = x_t, y_t
        self.out = str(tmp / "run")
        (tmp / "folder").mkdir()
        self.trained = trained

    def npz(self, name: str, **arrays: np.ndarray) -> str:
        path = self.tmp / f"{name}.npz"
        np.savez(path, **arrays)
        return str(path)

    def file(self, name: str, content: bytes | str) -> str:
        path = self.tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def train(self, *extra: str) -> list[str]:
        """A valid, tiny ``dann train`` command; ``extra`` options come last and override (``--source`` is
        repeatable, one per labeled domain: a given one replaces the default)."""
        source = [] if "--source" in extra else ["--source", self.src]
        base = ["train", *source, "--target", self.tgt, "--out", self.out, "--quiet"]
        return [*base, "--backbone", "mlp", "--steps", "2", "--set", "train.batch_size=8", *extra]

    def run(self, damage: Callable[[Path], object] | None = None) -> str:
        """A copy of a finished run, optionally damaged by ``damage(run_dir)``."""
        run = self.tmp / "done"
        shutil.copytree(self.trained, run)
        if damage:
            damage(run)
        return str(run)

    def cmd(self, command: str, data: str, *extra: str) -> list[str]:
        """``dann evaluate`` or ``dann predict`` of the finished run on ``data``."""
        out = ["--out", str(self.tmp / "preds.csv")] if command == "predict" else []
        return [command, "--run", self.run(), "--data", data, *out, *extra]


@dataclass
class Row:
    what: str  # the docs table's first column
    argv: Callable[[Files], list[str]]
    error: str  # what stderr says, after "dann <command>: error: "; TMP/ stands for the temporary folder


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


class Evil:
    """Pickled, it would create a file named PWNED when unpickled by an unsafe loader."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').close()",))


def _plant_pickle(run: Path) -> None:
    state = torch.load(run / runs.LAST_CHECKPOINT, weights_only=True) | {"extra": Evil()}
    torch.save(state, run / runs.LAST_CHECKPOINT)


def _image_list(f: Files) -> str:
    """``ds/image_list/source.txt`` listing ``src/a/0.png 0``: entries relative to ``ds``, as other tools write them."""
    for entry in ("src/a/0.png", "src/b/1.png"):
        (f.tmp / "ds" / entry).parent.mkdir(parents=True, exist_ok=True)
        (f.tmp / "ds" / entry).write_bytes(b"an image")
    (f.tmp / "ds/image_list").mkdir()
    return f.file("ds/image_list/source.txt", "src/a/0.png 0\nsrc/b/1.png 1\n")


def _png_folder(f: Files) -> str:
    """``pngs/a/0.png`` and ``pngs/b/1.png``: two classes of one real 32×32 image each."""
    from PIL import Image

    for i, name in enumerate("ab"):
        (f.tmp / "pngs" / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (90 * i, 40, 200)).save(f.tmp / "pngs" / name / f"{i}.png")
    return str(f.tmp / "pngs")


def _user_folder(f: Files) -> str:
    """``mine/notes.txt``: a folder of the user's own, no dann run."""
    f.file("notes.txt", "mine")
    (f.tmp / "mine").mkdir()
    (f.tmp / "notes.txt").rename(f.tmp / "mine" / "notes.txt")
    return str(f.tmp / "mine")


def _failed_start(f: Files) -> str:
    """``failed/``: what a start that failed before its first checkpoint leaves (checkpoints/ empty, config.yaml)."""
    (f.tmp / "failed" / "checkpoints").mkdir(parents=True)
    f.file("failed/config.yaml", "train:\n  steps: 2\n")
    return str(f.tmp / "failed")


def _days(f: Files, *names: str) -> str:
    """``days/<name>/<i>.png``: one real 32×32 image per subfolder, per day or per class."""
    from PIL import Image

    for i, name in enumerate(names):
        (f.tmp / "days" / name).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (60 * i, 90, 30)).save(f.tmp / "days" / name / f"{i}.png")
    return str(f.tmp / "days")


X4 = np.zeros((5, 4), np.float32)
SRC10 = blobs(40, 0.0, 2)[0]  # features of 40 source samples, for 10 classes
RAMP = np.arange(20).reshape(5, 4) * 10  # values 0 to 190, stored as float32 or uint8 by the rows below
Y2 = np.array([0, 1, 0, 1, 0])
PRESETS = (
    "packaged presets: cancer, digits, digits_gradual, digits_inverted, digits_label_shift, digits_scanner, moons, "
    "paper, staged"
)

ROWS = [
    # paths
    Row("missing data file", lambda f: f.train("--source", "TMP/none.npz"), "data file TMP/none.npz does not exist"),
    Row(
        "a folder mixed with .npz files",
        lambda f: f.train("--source", "TMP/folder"),
        "mixing .npz files with image folders or lists is not supported: TMP/folder, TMP/target.npz",
    ),
    Row(
        "empty (zero-byte) .npz",
        lambda f: f.train("--source", f.file("e.npz", b"")),
        "data file TMP/e.npz is empty (0 bytes); write one with np.savez(path, x=..., y=...)",
    ),
    Row(
        "truncated .npz",
        lambda f: f.train("--source", f.file("t.npz", Path(f.src).read_bytes()[:300])),
        "data file TMP/t.npz could not be read as .npz: File is not a zip file",
    ),
    Row(
        "not a .npz (text)",
        lambda f: f.train("--source", f.file("a.npz", "a,b\n1,2\n")),
        "data file TMP/a.npz is not a .npz file (a zip archive of arrays); write one with np.savez(path, x=..., y=...)",
    ),
    Row(
        "a .npy file instead of .npz",
        lambda f: f.train("--source", str(np.save(f.tmp / "a.npy", X4) or f.tmp / "a.npy")),
        "data file TMP/a.npy holds one array, not named arrays; write it with np.savez(path, x=..., y=...)",
    ),
    Row(
        "missing config file",
        lambda f: ["train", "--config", "TMP/c.yaml", "--out", f.out],
        f"config file TMP/c.yaml does not exist ({PRESETS})",
    ),
    Row(
        "config path is a folder",
        lambda f: ["train", "--config", "TMP/folder", "--out", f.out],
        "cannot read config file TMP/folder: Is a directory",
    ),
    Row(
        "config file not text",
        lambda f: ["train", "--config", f.src, "--out", f.out],
        "config file TMP/source.npz is not a text file (UTF-8 YAML)",
    ),
    Row(
        "config file not valid YAML",
        lambda f: ["train", "--config", f.file("c.yaml", "optim: [1, 2"), "--out", f.out],
        "config file TMP/c.yaml is not valid YAML: expected ',' or ']', but got '<stream end>' (line 1, column 13)",
    ),
    Row(
        "config file not a mapping",
        lambda f: ["train", "--config", f.file("c.yaml", "- 1\n- 2\n"), "--out", f.out],
        "config file TMP/c.yaml must hold a mapping of sections (data, model, method, optim, train, selection)",
    ),
    Row(
        "config file with a Python tag",
        lambda f: [
            "train",
            "--config",
            f.file("c.yaml", 'a: !!python/object/apply:os.system ["touch PWNED"]'),
            "--out",
            "r",
        ],
        "config file TMP/c.yaml holds a tag that is not plain YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system' (line 1, column 4)",
    ),
    Row(
        "run folder does not exist",
        lambda f: ["evaluate", "--run", "TMP/nope", "--data", f.tgt],
        "checkpoint TMP/nope/checkpoints/last.pt does not exist; was the run trained to its first evaluation?",
    ),
    Row(
        "resume a folder without a checkpoint",
        lambda f: ["train", "--out", "TMP/folder", "--resume"],
        "nothing to resume: TMP/folder holds no checkpoint and no config.yaml (its start stopped before writing them); "
        "run the training command again without --resume: it starts afresh there",
    ),
    Row(
        "--out holds files that are not a dann run",
        lambda f: f.train("--out", _user_folder(f)),
        "run directory TMP/mine already exists and is not a dann run (it holds no checkpoint, and files a run does not "
        "write: notes.txt); choose another --out, or pass --overwrite to delete what it holds",
    ),
    Row(
        "--out exists and is not empty",
        lambda f: f.train("--out", f.run()),
        "run directory TMP/done already exists and is not empty; pass --resume to continue it, --overwrite to replace "
        "it, or choose another --out",
    ),
    # .npz contents
    Row("no array x", lambda f: f.train("--source", f.npz("s", y=Y2)), "TMP/s.npz has no array 'x' (found: y)"),
    Row(
        "x with one dimension",
        lambda f: f.train("--source", f.npz("s", x=np.zeros(5), y=Y2)),
        "TMP/s.npz: x must have shape (N, D) or (N, C, H, W), got (5,)",
    ),
    Row(
        "x with three dimensions",
        lambda f: f.train("--source", f.npz("s", x=np.zeros((5, 2, 2)), y=Y2)),
        "TMP/s.npz: x must have shape (N, D) or (N, C, H, W), got (5, 2, 2)",
    ),
    Row(
        "x of strings",
        lambda f: f.train("--source", f.npz("s", x=np.full((5, 4), "a"), y=Y2)),
        "TMP/s.npz: x must hold real numbers, got dtype <U1",
    ),
    Row(
        "x of complex numbers",
        lambda f: f.train("--source", f.npz("s", x=X4 + 1j, y=Y2)),
        "TMP/s.npz: x must hold real numbers, got dtype complex64",
    ),
    Row(
        "x of Python objects (pickled)",
        lambda f: f.train("--source", f.npz("s", x=np.array([{}, None], dtype=object), y=Y2[:2])),
        "data file TMP/s.npz could not be read as .npz: Object arrays cannot be loaded when allow_pickle=False",
    ),
    Row(
        "samples with no features",
        lambda f: f.train("--source", f.npz("s", x=np.zeros((5, 0)), y=Y2)),
        "TMP/s.npz: samples must not be empty, got x of shape (5, 0)",
    ),
    Row("no samples", lambda f: f.train("--source", f.npz("s", x=X4[:0], y=Y2[:0])), "TMP/s.npz: no samples"),
    Row(
        "NaN in x",
        lambda f: f.train("--target", f.npz("t", x=np.where(f.x == f.x[2, 1], np.nan, f.x))),
        "TMP/t.npz: x contains NaN or infinite values (1 entries)",
    ),
    Row(
        "infinity in x",
        lambda f: f.train("--source", f.npz("s", x=X4 + np.inf, y=Y2)),
        "TMP/s.npz: x contains NaN or infinite values (20 entries)",
    ),
    Row(
        "y longer than x",
        lambda f: f.train("--source", f.npz("s", x=X4, y=np.zeros(6, int))),
        "TMP/s.npz: y must have shape (5,) to match x, got (6,)",
    ),
    Row(
        "y with fractions",
        lambda f: f.train("--source", f.npz("s", x=X4, y=Y2 + 0.5)),
        "TMP/s.npz: y must hold integer class indices, got dtype float64",
    ),
    Row(
        "NaN in y",
        lambda f: f.train("--source", f.npz("s", x=X4, y=np.where(Y2 == 1, np.nan, 0))),
        "TMP/s.npz: y must hold integer class indices, got dtype float64",
    ),
    Row(
        "source without labels",
        lambda f: f.train("--source", f.npz("s", x=X4)),
        "TMP/s.npz: the source data needs labels (array 'y')",
    ),
    Row(
        "negative label",
        lambda f: f.train("--source", f.npz("s", x=X4, y=Y2 - 1)),
        "TMP/s.npz: labels must lie in [0, 1), found values from -1 to 0",
    ),
    Row(
        "target label not a source class",
        lambda f: f.train("--target", f.npz("t", x=X4, y=Y2 * 2)),
        "TMP/t.npz (classes must be those of the source): labels must lie in [0, 2), found values from 0 to 2",
    ),
    Row(
        "labels beyond the class names",
        lambda f: f.train("--source", f.npz("s", x=X4, y=Y2, classes=np.array(["cat"]))),
        "TMP/s.npz: labels must lie in [0, 1), found values from 0 to 1",
    ),
    Row(
        "class names not a list",
        lambda f: f.train("--source", f.npz("s", x=X4, y=Y2, classes=np.array("cat"))),
        "data file TMP/s.npz: 'classes' must be a non-empty list of names, got shape ()",
    ),
    Row(
        "source and target name different classes",
        lambda f: f.train(
            "--source",
            f.npz("s", x=X4, y=Y2, classes=np.array(["cat", "dog"])),
            "--target",
            f.npz("t", x=X4, y=Y2, classes=np.array(["dog", "cat"])),
        ),
        "TMP/t.npz vs TMP/s.npz: different class names (['dog', 'cat'] vs ['cat', 'dog']); label i must mean one "
        "class in both",
    ),
    Row(
        "domains with different sample shapes",
        lambda f: f.train("--target", f.npz("t", x=np.zeros((5, 3)))),
        "TMP/t.npz: samples have shape (3,) but the source samples have shape (4,); both domains must share one "
        "input shape",
    ),
    Row(
        "--target-eval without labels",
        lambda f: f.train("--target-eval", f.npz("e", x=X4)),
        "TMP/e.npz: the target evaluation data needs labels (array 'y'): it only serves to score",
    ),
    Row(
        "a source with one class",
        lambda f: f.train("--source", f.npz("s", x=X4, y=Y2 * 0), "--target", f.npz("t", x=X4)),
        "TMP/s.npz: every source sample has label 0; a classifier needs labeled samples of at least two classes",
    ),
    Row(
        "list entries relative to the dataset root",
        lambda f: f.train("--source", (listed := _image_list(f)), "--target", listed),
        "list file TMP/ds/image_list/source.txt names 2 missing file(s), e.g. TMP/ds/image_list/src/a/0.png, "
        "TMP/ds/image_list/src/b/1.png; they exist under ds: set data.root=ds to read them from there, and name the "
        "list relative to it (image_list/source.txt)",
    ),
    Row(
        "domains on different scales",
        lambda f: f.train(
            "--source", f.npz("s", x=RAMP.astype(np.float32), y=Y2), "--target", f.npz("t", x=RAMP.astype(np.uint8))
        ),
        "TMP/s.npz (float32, values 0 to 190) and TMP/t.npz (uint8, values 0 to 190, read as 0 to 0.745098) differ in "
        "scale by 255x (mean |x| 95 vs 0.373); uint8 arrays are read as value/255, every other dtype as stored: store "
        "all inputs on one scale",
    ),
    # data given to a trained run
    Row(
        "evaluate: other sample shape",
        lambda f: f.cmd("evaluate", f.npz("d", x=np.zeros((5, 3)), y=Y2)),
        "TMP/d.npz: samples have shape (3,), but the model was trained on (4,)",
    ),
    Row(
        "evaluate: no labels",
        lambda f: f.cmd("evaluate", f.npz("d", x=X4)),
        "TMP/d.npz: evaluation needs labels (class subfolders, path,label rows or array 'y'); "
        "use predict for unlabeled data",
    ),
    Row(
        "evaluate: label out of range",
        lambda f: f.cmd("evaluate", f.npz("d", x=X4, y=Y2 - 1)),
        "TMP/d.npz: labels must lie in [0, 2), found values from -1 to 0",
    ),
    Row(
        "evaluate: other class names",
        lambda f: f.cmd("evaluate", f.npz("d", x=X4, y=Y2, classes=np.array(["a", "b"]))),
        "TMP/d.npz vs the run's classes: different class names (['a', 'b'] vs ['0', '1'])",
    ),
    Row(
        "evaluate: data on another scale",
        lambda f: f.cmd("evaluate", f.npz("d", x=RAMP * 100.0, y=Y2)),
        "TMP/d.npz (float64, values 0 to 19000) differs in scale by 6350x from the run's training data",
    ),
    Row("predict: no samples", lambda f: f.cmd("predict", f.npz("d", x=X4[:0])), "TMP/d.npz: no samples"),
    Row(
        "predict: output exists",
        lambda f: f.cmd("predict", f.tgt, "--out", f.src),
        "TMP/source.npz already exists; pass --overwrite to replace it",
    ),
    # names
    Row(
        "unknown backbone",
        lambda f: f.train("--backbone", "resnet"),
        "unknown backbone 'resnet'; valid: lenet, lenet_conv, mlp or any timm model name (see timm.list_models()); "
        "did you mean",
    ),
    Row(
        "unknown method",
        lambda f: f.train("--method", "dan"),
        "unknown method 'dan'; valid methods: adamatch, cdan, cdan_e, clip_distill, coral, dann, fixmatch, iwcdan, "
        "iwdan, mcc, mdd, mean_teacher, mmd, shot, source_only, vada",
    ),
    Row(
        "unknown regularizer",
        lambda f: f.train("--method", "dann", "--set", "method.regularizers={entrpy: 1.0}"),
        "unknown regularizer 'entrpy'; valid regularizers: bnm, clip_distill, entropy, fixmatch, mcc, vat",
    ),
    Row(
        "negative regularizer weight",
        lambda f: f.train("--set", "method.regularizers={mcc: -1}"),
        "config: method.regularizers.mcc must be >= 0, got -1.0",
    ),
    Row(
        "shot without a trained start",
        lambda f: f.train("--method", "shot"),
        "method 'shot' adapts a trained source model: name its run directory with model.init_from",
    ),
    Row(
        "--init-from a folder with no run",
        lambda f: f.train("--init-from", f.out),
        "model.init_from TMP/run: no trained run there (TMP/run/checkpoints/last.pt does not exist)",
    ),
    Row(
        "unknown embedded task",
        lambda f: ["train", "--task", "moon", "--out", f.out],
        "unknown embedded task 'moon'; valid embedded tasks: cancer, digits, digits_gradual, digits_inverted, "
        "digits_label_shift, digits_scanner, moons",
    ),
    Row(
        "unknown preset",
        lambda f: ["train", "--config", "moon", "--out", f.out],
        f"config file moon does not exist ({PRESETS})",
    ),
    Row(
        "unknown optimizer",
        lambda f: f.train("--set", "optim.name=sgdd"),
        "config: optim.name must be sgd | adam | adamw, got 'sgdd'",
    ),
    Row(
        "unknown schedule",
        lambda f: f.train("--set", "optim.lr_schedule=cos"),
        "config: unknown learning-rate schedule 'cos'; valid learning-rate schedules: constant, cosine, ganin",
    ),
    Row(
        "unknown config section",
        lambda f: f.train("--set", "optimizer.lr=0.1"),
        "config: unknown section 'optimizer'; valid sections: data, model, method, optim, train, selection",
    ),
    Row(
        "unknown config key",
        lambda f: f.train("--set", "optim.lrr=0.1"),
        "config: unknown key optim.lrr; valid keys in 'optim': name, lr, momentum,",
    ),
    Row(
        "unknown device",
        lambda f: f.train("--device", "gpu"),
        "train.device 'gpu' is not a valid device (auto, cpu, cuda, cuda:N, mps)",
    ),
    Row(
        "a device type dann does not train on",
        lambda f: f.train("--device", "meta"),
        "train.device 'meta' is not a valid device (auto, cpu, cuda, cuda:N, mps)",
    ),
    Row("unknown subcommand", lambda f: ["trian"], "argument command: invalid choice: 'trian'"),
    # override values
    Row(
        "override without a section",
        lambda f: f.train("--set", "lr=0.1"),
        "override 'lr=0.1' must look like section.key=value, e.g. optim.lr=0.01",
    ),
    Row("text for a number", lambda f: f.train("--set", "optim.lr=fast"), "optim.lr must be a number, got 'fast'"),
    Row("NaN for a number", lambda f: f.train("--set", "optim.lr=.nan"), "optim.lr must be a finite number, got nan"),
    Row("fraction for an integer", lambda f: f.train("--set", "train.steps=1.5"), "train.steps must be an integer"),
    Row(
        "scientific notation for an integer",
        lambda f: f.train("--set", "train.steps=1e3"),
        "train.steps must be an integer, got '1e3'; write 1000",
    ),
    Row("text for a flag option", lambda f: f.train("--steps", "ten"), "argument --steps: invalid int value: 'ten'"),
    Row(
        "number for true/false",
        lambda f: f.train("--set", "method.separate_forward=1"),
        "method.separate_forward must be true or false, got 1",
    ),
    Row(
        "number for a list",
        lambda f: f.train("--set", "model.mlp_dims=7"),
        "model.mlp_dims must be a list such as [100, 100], got 7",
    ),
    Row(
        "unknown choice",
        lambda f: f.train("--set", "train.on_nonfinite=ignore"),
        "config: train.on_nonfinite must be error or skip, got 'ignore'",
    ),
    # out-of-range hyper-parameters
    Row("negative learning rate", lambda f: f.train("--set", "optim.lr=-0.1"), "config: optim.lr must be > 0"),
    Row("zero batch size", lambda f: f.train("--set", "train.batch_size=0"), "config: train.batch_size must be > 0"),
    Row("zero steps", lambda f: f.train("--steps", "0"), "config: train.steps must be > 0, got 0"),
    Row(
        "validation fraction of 1",
        lambda f: f.train("--set", "data.val_fraction=1"),
        "config: data.val_fraction must be in [0, 1), got 1.0",
    ),
    Row(
        "momentum of 1",
        lambda f: f.train("--set", "optim.momentum=1"),
        "config: optim.momentum must be in [0, 1), got 1.0",
    ),
    Row(
        "label smoothing above 1",
        lambda f: f.train("--set", "method.label_smoothing=1.5"),
        "config: method.label_smoothing must be in [0, 1), got 1.5",
    ),
    Row(
        "negative adversarial weight",
        lambda f: f.train("--set", "method.lambda_adv=-1"),
        "config: method.lambda_adv must be >= 0, got -1.0",
    ),
    Row(
        "negative lr decay",
        lambda f: f.train("--set", "optim.lr_alpha=-2"),
        "config: optim.lr_alpha must be >= 0, got -2.0",
    ),
    Row(
        "negative GRL steepness",
        lambda f: f.train("--set", "method.grl_gamma=-1"),
        "config: method.grl_gamma must be >= 0, got -1.0",
    ),
    Row("negative seed", lambda f: f.train("--seed", "-1"), "config: train.seed must be in [0, 268435456), got -1"),
    Row(
        "zero-width layer",
        lambda f: f.train("--set", "model.mlp_dims=[0]"),
        "config: model.mlp_dims must be positive widths, got (0,)",
    ),
    Row(
        "a BatchNorm layer given one sample",
        lambda f: f.train("--method", "source_only", "--set", "model.batchnorm=true", "--set", "train.batch_size=1"),
        "train.batch_size=1 hands the network's BatchNorm layers (backbone.net.2, backbone.net.5) a single sample per "
        "training forward: method source_only forwards only the source batch; BatchNorm needs at least 2, so set "
        "train.batch_size=2 or more",
    ),
    Row(
        "--target-eval of per-day subfolders",
        lambda f: f.train(
            *("--source", _png_folder(f), "--target", _png_folder(f), "--target-eval", _days(f, "day1", "day2"))
        ),
        "class 'day1' of TMP/days is not a class of TMP/pngs (2 unknown: day1, day2); known classes: a, b",
    ),
    Row(
        "image backbone on feature vectors",
        lambda f: f.train("--backbone", "lenet"),
        "backbone 'lenet' needs images of shape (C, H, W), but the data has samples of shape (4,); use "
        "model.backbone=mlp for feature vectors",
    ),
    Row(
        "cache folder is a file",
        lambda f: f.train(
            *("--source", _png_folder(f), "--target", _png_folder(f), "--backbone", "lenet"),
            *("--set", "data.cache=on", "--set", "data.cache_dir=TMP/source.npz"),
        ),
        "the decoded-image cache folder TMP/source.npz cannot be written (File exists); set data.cache_dir to a "
        "writable folder, or data.cache=off (the folder comes from data.cache_dir)",
    ),
    # output and run folders
    Row(
        "--out under a regular file",
        lambda f: f.train("--out", f"{f.src}/run"),
        "cannot create run directory TMP/source.npz/run: Not a directory",
    ),
    Row(
        "predict --out under a regular file",
        lambda f: f.cmd("predict", f.tgt, "--out", f"{f.src}/p.csv"),
        "cannot write TMP/source.npz/p.csv: TMP/source.npz is a file, not a folder",
    ),
    Row(
        "disk full",
        lambda f: f.train(),  # the test makes every fsync fail with ENOSPC
        "cannot write TMP/run/default.json: No space left on device",  # a default run records its recipe first
    ),
    Row(
        "truncated checkpoint",
        lambda f: ["evaluate", "--run", f.run(lambda r: _truncate(r / runs.LAST_CHECKPOINT)), "--data", f.tgt],
        "checkpoint TMP/done/checkpoints/last.pt is truncated or corrupt (1,000 bytes; ",  # then torch's words
    ),
    Row(
        "a text file in place of a checkpoint",
        lambda f: [
            "evaluate",
            "--run",
            f.run(lambda r: (r / runs.LAST_CHECKPOINT).write_text("step: 3\n")),
            "--data",
            f.tgt,
        ],
        "checkpoint TMP/done/checkpoints/last.pt is truncated or corrupt: neither a zip archive, as torch.save writes, "
        "nor .safetensors (8 bytes)",
    ),
    Row(
        "checkpoint carrying a pickled object",
        lambda f: ["evaluate", "--run", f.run(_plant_pickle), "--data", f.tgt],
        "refused to load checkpoint TMP/done/checkpoints/last.pt: it holds Python objects other than tensors and "
        "plain data, which could run code when loaded (",  # then torch's words; test_safe_loading checks the rest
    ),
    Row(
        "foreign checkpoint",
        lambda f: ["evaluate", "--run", f.run(lambda r: torch.save({}, r / runs.LAST_CHECKPOINT)), "--data", f.tgt],
        "TMP/done/checkpoints/last.pt is not a dann checkpoint (missing: step, model, optimizer, rng, config, meta)",
    ),
    Row(
        "damaged config.yaml on resume",
        lambda f: ["train", "--resume", "--out", f.run(lambda r: (r / "config.yaml").write_text("data: [")), "--quiet"],
        "config file TMP/done/config.yaml is not valid YAML: expected the node content, but found '<stream end>' "
        "(line 1, column 8)",
    ),
]


WARNINGS = [  # the run goes on (exit code 0) and stderr has the line "dann <command>: warning: <message>"
    Row(
        "--out a start left without a checkpoint",
        lambda f: f.train("--out", _failed_start(f), "--no-report"),
        "TMP/failed held no checkpoint (a start that failed): starting afresh",
    ),
    Row(
        "target subfolders only partly source classes",
        lambda f: f.train("--source", _png_folder(f), "--target", _days(f, "a", "day2"), "--no-report"),
        "TMP/days is read as unlabeled images, so no target accuracy is reported: its subfolders day2 are not classes "
        "of TMP/pngs, though a are; give labeled target images with data.target_eval to score them",
    ),
    Row(
        "a class index without a source sample",
        lambda f: f.train("--source", f.npz("s", x=X4, y=Y2 * 2), "--no-report"),
        "TMP/s.npz: no source sample has label 1 (1 of 3 classes); the model gets an output for each that no sample "
        "trains, so it will rarely predict them",
    ),
    Row(
        "no class has two samples to hold one out",
        lambda f: f.train("--source", f.npz("s", x=X4[:2], y=Y2[:2]), "--set", "data.val_fraction=0.9", "--no-report"),
        "TMP/s.npz: data.val_fraction=0.9 holds out no source sample for validation: every class keeps at least one "
        "training sample, and no class has two; validators that need a held-out set (source_acc, dev) get no score",
    ),
    Row(
        "domains an order of magnitude apart",
        lambda f: f.train(
            "--source", f.npz("s", x=RAMP / 100, y=Y2), "--target", f.npz("t", x=RAMP / 5), "--no-report"
        ),
        "TMP/s.npz (float64, values 0 to 1.9) and TMP/t.npz (float64, values 0 to 38) differ in scale by 20x (mean |x| "
        "0.95 vs 19); uint8 arrays are read as value/255, every other dtype as stored: store all inputs on one scale",
    ),
    Row(
        "a target smaller than the number of classes",
        lambda f: f.train("--source", f.npz("s", x=SRC10, y=np.arange(40) % 10), "--target", f.npz("t", x=f.x[:5])),
        "validator class_ami cannot be computed on this data (k-means with k = 10 classes needs at least 10 target "
        "samples, got 5); its score is null",
    ),
    Row(
        "the selecting validator cannot be computed",
        lambda f: f.train(
            "--source",
            f.npz("s", x=SRC10, y=np.arange(40) % 10),
            "--target",
            f.npz("t", x=f.x[:5]),
            "--set",
            "selection.validator=class_ami",
            "--no-report",
        ),
        "selection.validator=class_ami has no score on this data, so best.pt is chosen by bnm: the first validator "
        "with a score in the order of the selection benchmark (docs/selection.md)",
    ),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (2 classes, 4 features) that evaluate/predict rows use, copied before any damage."""
    tmp = tmp_path_factory.mktemp("trained")
    files = Files(tmp, tmp)
    assert main(files.train("--set", "train.eval_every=1")) == 0
    return Path(files.out)


@pytest.mark.parametrize("row", ROWS, ids=[row.what for row in ROWS])
def test_bad_input_exits_2_with_one_clear_line(row, tmp_path, trained, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a payload that ran would leave PWNED here
    files = Files(tmp_path, trained)
    argv = [a.replace("TMP", str(tmp_path)) for a in row.argv(files)]
    if row.what == "disk full":
        monkeypatch.setattr(os, "fsync", _no_space)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert row.error.replace("TMP", str(tmp_path)) in err
    assert "Traceback" not in err and ("usage:" in err or len(err.strip().splitlines()) == 1)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("row", WARNINGS, ids=[row.what for row in WARNINGS])
def test_doubtful_input_goes_on_with_one_warning_line(row, tmp_path, trained, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = Files(tmp_path, trained)
    argv = [a.replace("TMP", str(tmp_path)) for a in row.argv(files)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    expected = f"dann {argv[0]}: warning: {row.error.replace('TMP', str(tmp_path))}"
    assert err.splitlines().count(expected) == 1, err
    assert "Traceback" not in err


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_the_docs_table_lists_every_row():
    table = PAGE.read_text().split(SECTION)[1].split("\n## ")[0]
    names = re.compile(r"(packaged presets|valid embedded tasks): [a-z_, ]+")  # lists that grow with new names
    for row in ROWS + WARNINGS:
        line = next((line for line in table.splitlines() if line.startswith(f"| {row.what} |")), None)
        assert line is not None, f"{PAGE.name} table lacks the row {row.what!r}"
        expected, shown = (names.sub(r"\1", t) for t in (row.error, line.replace("\\|", "|")))
        assert expected.replace("TMP/", "") in shown, row.what
