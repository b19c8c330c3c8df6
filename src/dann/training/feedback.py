"""What a run tells the person who started it, as data and as lines: a start-up summary (device, network and input
size, classes, sample counts, steps, batch, method, precision), one estimate of the training time after the first
``ESTIMATE_STEPS`` timed steps (with a warning when a CPU would take more than an hour, naming the settings to
lower), and one line per evaluation. The trainer hands the lines to an ``echo`` function: ``dann train`` prints them,
Python callers pass ``echo=print`` to ``dann.fit`` or read ``FitResult.summary``."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..config import Config
from ..data.domains import DomainData
from .distributed import World
from .stages import batch_words, stage_terms, target_batches

ESTIMATE_STEPS = 20  # steps timed for the estimate, after the first one (which pays for start-up: workers, caches)
SLOW_CPU_SECONDS = 3600.0  # an estimate above this on a CPU comes with a warning naming the settings to lower
SHOWN_CLASSES = 5  # class names listed in the summary
clock = time.perf_counter  # seconds, for the estimate

Echo = Callable[[str], None]


def print_line(line: str) -> None:
    """Print ``line`` to stdout above any tqdm progress bar (which lives on stderr) and flush it, so the line is
    seen at once in a terminal, a pipe or a log file."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


def bar_interval() -> float:
    """Seconds between progress-bar redraws: tqdm's 0.1 where the bar redraws in place (a terminal, a notebook), 30
    in a pipe or log file, where every redraw is one more line."""
    from tqdm import std
    from tqdm.autonotebook import tqdm  # the class tqdm.auto builds on: a notebook widget, else the text bar

    return 0.1 if tqdm is not std.tqdm or sys.stderr.isatty() else 30.0


@dataclass(frozen=True)
class RunSummary:
    """The start-up summary of a run. ``input_shape``: one sample, (C, H, W) for images or (D,) for vectors;
    ``counts``: samples per part (source_train, source_val, target_train, target_eval; 0 when absent)."""

    device: str
    backbone: str
    input_shape: tuple[int, ...]
    input_note: str  # where an image input size comes from ("lenet_conv's native size", "data.image_size"...)
    classes: list[str]
    counts: dict[str, int]
    target_eval_is_target: bool  # the target's own labels score it (transductive protocol)
    steps: int
    start: int  # the step a resumed run continues from, else 0
    batch_size: int  # per domain and step, global under torchrun
    method: str
    regularizers: dict[str, float]
    precision: str
    channels_last: bool = False
    images: str = ""  # image files: how they are read (the decoded-image cache, or the files as they are)
    stages: list[str] | None = None  # train.stages: each stage's name and the terms it trains
    target_batches: dict[str, int] | None = None  # target rows per step by stage ("": the run), where not batch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The summary as a short block of lines, as ``dann train`` prints it."""
        c = self.counts
        shown = ", ".join(self.classes[:SHOWN_CLASSES]) + (", ..." if len(self.classes) > SHOWN_CLASSES else "")
        held_out = f" + {c['source_val']} held out" if c["source_val"] else " (none held out)"
        target = f"target {c['target_train']} unlabeled"
        if c.get("target_val"):
            target += f" + {c['target_val']} held out for the validators"
        if self.target_eval_is_target:
            target += " in training (its labels only score it: evaluation only)"
        elif c["target_eval"]:
            target += f"; target eval {c['target_eval']} labeled (evaluation only)"
        shape = "×".join(map(str, self.input_shape))
        note = f" ({self.input_note})" if self.input_note else ""
        method = self.method + "".join(f"+{name}:{w:g}" for name, w in self.regularizers.items())
        resumed = f", resuming at step {self.start}" if self.start else ""
        layout = ", channels_last" if self.channels_last else ""
        batch = batch_words(self.batch_size, self.target_batches)
        return [
            f"device:   {self.device}",
            f"model:    {self.backbone}, input {shape}{note}",
            f"classes:  {len(self.classes)} ({shown})",
            f"data:     source {c['source_train']} train{held_out}; {target}",
            *([f"images:   {self.images}"] if self.images else []),
            f"training: {self.steps} steps × batch {batch}{resumed}; method {method}; "
            f"precision {self.precision}{layout}",
            *([f"stages:   {' → '.join(self.stages)}"] if self.stages else []),
        ]


def _images_note(data: DomainData) -> str:
    """How the run reads its image files: from which decoded-image caches, or the files as they are; "" for arrays."""
    from ..data.cached import CachedImageDomain

    if data.image is None:
        return ""
    parts = [data.source_train, data.source_val, data.target_train, data.target_eval]
    caches = {c.path: c for p in parts if isinstance(p, CachedImageDomain) for c in p.caches}
    if not caches:
        return "read from the files as they are (data.cache)"
    folders = sorted({str(path.parent) for path in caches})
    size = sum(c.nbytes for c in caches.values()) / 2**20
    return (
        f"read from {len(caches)} decoded-image cache(s) in {', '.join(folders)} ({size:.1f} MiB); the run's "
        "evaluations read them too (data.cache)"
    )


def _same_samples(a: Any, b: Any) -> bool:
    """Whether two domains hold the same samples (the target's labels scoring the target itself)."""
    if hasattr(a, "paths"):
        return a.paths == getattr(b, "paths", None)
    return getattr(a, "x", None) is getattr(b, "x", None)


def describe_device(device: torch.device, world: World) -> str:
    """``cpu (2 threads)``, ``cuda:0 (NVIDIA H100)``, with the number of processes under torchrun."""
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        threads = torch.get_num_threads()
        name = f"cpu ({threads} thread{'s' * (threads != 1)})"
    else:
        name = str(device)
    return f"{name} × {world.size} processes" if world.active else name


def summarize(
    cfg: Config, data: DomainData, device: torch.device, world: World, input_note: str = "", start: int = 0
) -> RunSummary:
    """The start-up summary of a run of the resolved ``cfg`` (its plan's, ``dann.plan.RunPlan``) on ``data``, on
    ``device`` in ``world``; ``input_note``: where an image input size comes from."""

    def count(domain: Any) -> int:
        return len(domain) if domain is not None else 0

    parts = ("source_train", "source_val", "target_train", "target_eval", "target_val")
    return RunSummary(
        device=describe_device(device, world),
        backbone=cfg.model.backbone,
        input_shape=tuple(data.input_shape),
        input_note=input_note,
        classes=list(data.classes),
        counts={part: count(getattr(data, part)) for part in parts},
        target_eval_is_target=data.target_eval is not None and _same_samples(data.target_eval, data.target_train),
        steps=cfg.train.steps,
        start=start,
        batch_size=cfg.train.batch_size,
        method=cfg.method.name,
        regularizers=dict(cfg.method.regularizers),
        precision=cfg.train.precision,
        channels_last=bool(cfg.train.channels_last),
        images=_images_note(data),
        stages=stage_terms(cfg) or None,
        target_batches={k: v for k, v in target_batches(cfg).items() if v != cfg.train.batch_size} or None,
    )


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``6.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def slow_advice(cfg: Config, data: DomainData) -> str:
    """The settings that shorten a run, with their values."""
    from ..models.backbones import NATIVE_SIZE

    settings = [f"train.steps (now {cfg.train.steps})", f"train.batch_size (now {cfg.train.batch_size})"]
    if cfg.model.backbone not in NATIVE_SIZE:
        settings.append(f"model.backbone (now {cfg.model.backbone}; lenet_conv trains at 28×28)")
    if data.image is not None:
        settings.append(f"data.image_size (now {data.image.size})")
    return f"lower {', '.join(settings)}, or train on a GPU (train.device=cuda)"


def evaluation_line(record: dict[str, Any], steps: int) -> str:
    """One line per evaluation: step, source held-out accuracy, the discriminator's domain accuracy (methods that have
    one; 0.5 is chance, i.e. domains the features cannot tell apart), the selection validator's score, and the target
    accuracy when labeled target data exist, marked as using target labels."""
    parts = [f"step {record['step']}/{steps}"]
    if "source_val" in record:
        parts.append(f"source held-out acc {record['source_val']['acc']:.3f}")
    domain_acc = record.get("train", {}).get("domain_acc")
    if domain_acc is not None:
        parts.append(f"domain acc {domain_acc:.3f}")
    selection = record.get("selection")
    if selection is not None:
        score = record.get("validators", {}).get(selection["validator"])
        best = " best so far" if selection["step"] == record["step"] else ""
        shown = "-" if score is None else f"{score:.4g}"
        parts.append(f"{selection['validator']} {shown} (selection{best})")
    if "oracle" in record:
        parts.append(f"target acc {record['oracle']['target_acc']:.3f} (uses target labels)")
    return "  ".join(parts)


def estimate_line(per_step: float, left: int, extra: str) -> str:
    """The time estimate a run prints after its first steps (``per_step_seconds`` reads it back)."""
    return f"time: {per_step:.3g} s/step → about {format_duration(per_step * left)} for the {left} steps left ({extra})"


def per_step_seconds(line: str) -> float | None:
    """The seconds per step of an ``estimate_line``; None for any other line."""
    match = re.match(r"time: (\S+) s/step → ", line)
    return float(match.group(1)) if match else None


def followed_by(echo: Echo, say: Echo, line_for: Callable[[float], str]) -> Echo:
    """An ``echo`` that passes every line on to ``echo`` and follows a run's time estimate (``estimate_line``, after
    its first steps) with ``say(line_for(seconds per step))``: the time of what comes after this run, for instance."""

    def told(line: str) -> None:
        echo(line)
        per_step = per_step_seconds(line)
        if per_step is not None:
            say(line_for(per_step))

    return told


class Console:
    """Sends a run's summary, time estimate and evaluation lines to ``echo`` (nothing when it is None). The trainer
    calls ``stepped`` after every step and ``evaluated`` after every evaluation; evaluation time is left out of the
    estimate's steps."""

    def __init__(self, echo: Echo | None, cfg: Config, data: DomainData, device: torch.device) -> None:
        self.echo, self.cfg, self.data, self.device = echo, cfg, data, device
        self.first: tuple[int, float] | None = None  # (step, time) the estimate's window starts from
        self.paused = 0.0  # evaluation seconds inside the window
        self.estimated = False

    def say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    def started(self, summary: RunSummary) -> None:
        for line in summary.lines():
            self.say(line)

    def _now(self) -> float:
        if self.device.type == "cuda":  # twice a run: queued kernels must be done for a wall-clock rate
            torch.cuda.synchronize(self.device)
        return clock()

    def stepped(self, done: int) -> None:
        """After step ``done``: the first call opens the estimate's window, the one ``ESTIMATE_STEPS`` later closes
        it and says the estimate (once)."""
        if self.echo is None or self.estimated:
            return
        if self.first is None:
            self.first = (done, self._now())
            return
        if done - self.first[0] < ESTIMATE_STEPS:
            return
        self.estimated = True
        per_step = (self._now() - self.first[1] - self.paused) / (done - self.first[0])
        left = self.cfg.train.steps - done
        total = per_step * left
        every = self.cfg.train.eval_every
        extra = f"evaluations every {every} steps add" if every < self.cfg.train.steps else "the final evaluation adds"
        self.say(estimate_line(per_step, left, f"{extra} to it"))
        if self.device.type == "cpu" and total > SLOW_CPU_SECONDS:
            self.say(f"warning: about {format_duration(total)} on the CPU; {slow_advice(self.cfg, self.data)}")

    def evaluated(self, record: dict[str, Any], seconds: float) -> None:
        if self.first is not None and not self.estimated:
            self.paused += seconds
        self.say(evaluation_line(record, self.cfg.train.steps))
