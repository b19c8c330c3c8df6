"""The GPU check: every figure the docs still lack from a GPU, in one run of a few minutes, as one Markdown report.

Run it on the GPU machine from the repository root, after ``pip install -e .``:

    pip install -e .
    python benchmarks/gpu_check.py --out gpu_check.md

(Without the install it runs too where torch, timm, scikit-learn and Pillow are installed: it puts ``src/`` on the
path, its own and its torchrun processes'. ``--out`` refuses an existing file unless ``--overwrite``.) To try every
code path on a CPU first, in well under a minute:

    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check.md

The report starts with the card, the torch/CUDA versions and the date, then:

1. ResNet-50 at 224 px (timm, random init: nothing is downloaded): images/s of the DANN step (B source + B target)
   and of the supervised step (2B source) with ``precision: auto`` (bf16 where native) and channels_last, their
   ratio, and the peak GPU memory (``torch.cuda.max_memory_allocated``), by ``dann bench``'s ``run_bench``.
2. The data wait from image files and from their decoded-image cache: ``run_bench(images=...)`` on a synthetic
   folder (2 classes × 64 JPEGs of 256×256) made in a temporary folder, which also holds the cache.
3. ``torchrun --standalone --nproc_per_node N -m dann train`` on every visible GPU (NCCL), the embedded ``digits``
   task with DANN: wall time, and whether it finished.
4. Exact resume: a DANN run on ``digits`` interrupted by SIGINT at half its steps (the real Ctrl-C path: a checkpoint
   of the step reached, ``TrainingInterrupted``), resumed to the end, against the uninterrupted run, weights compared
   bit for bit (``dann.load_run(...).net.state_dict()``). When they differ, a second uninterrupted run measures the
   GPU's own run-to-run difference, so a resume bug is told from non-deterministic kernels.

Each part runs alone: one that fails prints its error line and the others still run (exit status 1). Each finished
part is printed at once, and ``--out`` is rewritten atomically after each, so a run cut short keeps what it measured.

``--dry-run`` runs every part on the CPU with tiny sizes (ResNet-18, batch 2, 2 steps, 1 round, 32 px images, 4
training steps; one torch thread, channels_last as training picks it, i.e. off) so that tests exercise the whole
script in under a minute; its figures say nothing about speed. Its torchrun
part launches the real command with one process and the gloo backend (``--device cpu``): the launcher, the
distributed start-up and the run's outputs are the GPU run's, only NCCL and the process count differ. Without
``--dry-run`` and without CUDA the script stops at once with one line."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))  # a checkout without `pip install -e .` runs too

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import dann  # noqa: E402
from dann.errors import TrainingInterrupted  # noqa: E402
from dann.plan import plan_bench  # noqa: E402
from dann.runs import METRICS_FILE, read_jsonl  # noqa: E402
from dann.training.bench import INPUTS, run_bench  # noqa: E402

NO_GPU = "gpu_check: no CUDA device here; pass --dry-run to run the same checks on the CPU with tiny sizes"
TASK = ["--config", "digits", "--method", "dann"]  # the embedded task of parts 3 and 4 (LeNet's conv layers)
PER_PROCESS_BATCH = 32  # digits' train.batch_size: torchrun's global batch is this × the number of processes


@dataclass(frozen=True)
class Sizes:
    """What each part runs: the check on a GPU, or the same code paths, tiny, on the CPU."""

    device: str
    backbone: str  # parts 1 and 2 (dann bench's input size: resnet50 224 px, resnet18 64 px)
    batch_size: int  # per domain
    steps: int  # timed steps per round
    warmup: int
    rounds: int
    channels_last: bool | None  # None: as training picks (on a CPU: off, where it only slows BatchNorm down)
    threads: int  # torch CPU threads of this process (0: torch's own); the dry run shares its cores with workers
    images_per_class: int  # part 2's synthetic folder
    image_side: int  # of its JPEG files
    image_size: int  # part 2's network input (0: the backbone's bench size)
    processes: int  # part 3 (0: every visible GPU)
    train_steps: int  # part 3
    resume_steps: int  # part 4: the whole run; interrupted at half
    timeout_s: int  # part 3's launch


GPU = Sizes("cuda", "resnet50", 64, 20, 5, 3, True, 0, 64, 256, 0, 0, 300, 400, 240)
DRY = Sizes("cpu", "resnet18", 2, 2, 1, 1, None, 1, 8, 48, 32, 1, 4, 4, 180)


def header(s: Sizes, dry_run: bool) -> list[str]:
    """The card, the versions and the date: the report's first lines."""
    if dry_run:
        threads = torch.get_num_threads()
        card = f"CPU, dry run ({platform.processor() or platform.machine()}, {threads} thread{'s' * (threads != 1)})"
        cuda = "none (dry run)"
    else:
        card, cuda = cuda_details()
    import timm

    return [
        "# dann GPU check" + (" (dry run: tiny sizes on the CPU, no speed figure means anything)" if dry_run else ""),
        "",
        f"- card: {card}",
        f"- torch {torch.__version__}, CUDA {cuda}, timm {timm.__version__}, dann {dann.__version__} ({commit()}), "
        f"Python {platform.python_version()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        "",
    ]


def cuda_details() -> tuple[str, str]:
    """The card (name, count, memory, native bf16) and the CUDA, cuDNN and NCCL versions, as far as they are known."""
    name = f"{torch.cuda.get_device_name(0)} × {torch.cuda.device_count()} visible"
    try:
        props = torch.cuda.get_device_properties(0)
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        card = (
            f"{name}, {props.total_memory / 2**30:.1f} GiB, "
            f"compute capability {props.major}.{props.minor}, native bf16: {'yes' if bf16 else 'no'}"
        )
        version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        return card, f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, NCCL {nccl}"
    except Exception as error:  # the versions are context: a missing one must not stop the check
        return name, f"{torch.version.cuda} ({type(error).__name__}: {error})"


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        dirty = ", uncommitted changes" if git("status", "--porcelain") else ""
        return f"commit {git('rev-parse', '--short', 'HEAD')}{dirty}"
    except (OSError, subprocess.CalledProcessError):
        return "no git checkout"


def bench(s: Sizes, **images: Any) -> dict[str, Any]:
    """``dann bench`` (``run_bench``) at these sizes, ``precision: auto``; ``images``: its image-folder options."""
    size = images.pop("image_size", 0)
    plan = plan_bench(s.backbone, INPUTS[s.backbone], s.device, "auto", s.channels_last, threads=0, image_size=size)
    return run_bench(s.backbone, plan, s.batch_size, s.steps, s.warmup, s.rounds, **images)


def part_bench(s: Sizes, work: Path) -> list[str]:
    """1: the DANN and the supervised step from tensors on the device, with peak memory."""
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    r = bench(s)
    memory = "peak GPU memory (torch.cuda.max_memory_allocated)" if s.device == "cuda" else "peak RSS of the process"
    c, h, w = r["input"]
    return [
        f"{r['backbone']} {c}x{h}x{w}, batch {r['batch_size']} per domain, precision {r['precision']}"
        f"{', channels_last' if r['channels_last'] else ''}, {r['data']}; the fastest of {s.rounds} round(s) of "
        f"{s.steps} steps after {s.warmup} untimed; {r['device']}",
        "",
        "| step | images/s |",
        "|---|---|",
        f"| supervised (source_only, 2B source images) | {r['supervised_img_s']:.1f} |",
        f"| DANN (B source + B target images) | {r['dann_img_s']:.1f} |",
        "",
        f"- ratio (DANN step time / supervised step time): {r['ratio']:.3f}",
        f"- {memory}, both steps' networks held: {r['peak_memory_mb']:.0f} MiB",
    ]


def part_images(s: Sizes, work: Path) -> list[str]:
    """2: the same steps streaming a synthetic JPEG folder, from the files and from the decoded-image cache."""
    folder = make_folder(work / "images", s.images_per_class, s.image_side)
    with environment(DANN_CACHE=str(work / "cache")):  # a fresh cache, built here and deleted with the folder
        r = bench(s, images=str(folder), image_size=s.image_size)
    cache = r["cache"]
    built = f"built in {cache['build_s']:.1f} s" if cache["build_s"] is not None else "built before"
    c, h, w = r["input"]
    return [
        f"{2 * s.images_per_class} JPEGs of {s.image_side}x{s.image_side} in 2 classes, {r['backbone']} at "
        f"{c}x{h}x{w}, batch {r['batch_size']} per domain, precision {r['precision']}; "
        f"{r['data'].replace(str(work), '$TMP')}",
        "",
        "| read from | supervised img/s | DANN img/s | data wait (share of the DANN step) |",
        "|---|---|---|---|",
        f"| files | {r['supervised_img_s']:.1f} | {r['dann_img_s']:.1f} | {r['data_wait_fraction']:.1%} |",
        f"| cache | {cache['supervised_img_s']:.1f} | {cache['dann_img_s']:.1f} | {cache['data_wait_fraction']:.1%} |",
        "",
        f"- cache speed-up of the DANN step: {cache['speedup']:.2f}x; cache {cache['side']}x{cache['side']} px, "
        f"{cache['size_mb']:.1f} MiB, {built}",
    ]


def make_folder(root: Path, per_class: int, side: int, seed: int = 0) -> Path:
    """``per_class`` smooth random RGB JPEGs of ``side`` × ``side`` (quality 90) in each of two class folders."""
    rng = np.random.default_rng(seed)
    for label in range(2):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            blobs = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
            pixels = np.asarray(blobs, dtype=np.int16) + rng.integers(-12, 13, (side, side, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def part_torchrun(s: Sizes, work: Path) -> list[str]:
    """3: ``torchrun -m dann train`` on every visible GPU (NCCL), or one CPU process (gloo) in a dry run."""
    n = s.processes or torch.cuda.device_count()
    out, steps = work / "torchrun", s.train_steps
    args = [
        *("--standalone", "--nproc_per_node", str(n), "-m", "dann", "train", *TASK, "--steps", str(steps)),
        *("--device", s.device, "--out", str(out), "--quiet", "--no-report"),
        *("--set", f"train.batch_size={PER_PROCESS_BATCH * n}", "--set", f"train.eval_every={max(1, steps // 3)}"),
    ]
    tic = time.perf_counter()
    code, err = launch([sys.executable, "-m", "torch.distributed.run", *args], s.timeout_s)
    wall = time.perf_counter() - tic
    if code != 0:
        raise RuntimeError(f"torchrun exited with status {code} after {wall:.1f} s: {last_line(err)}")
    run, last = dann.load_run(out), read_jsonl(out / METRICS_FILE)[-1]
    backend = "NCCL, process r on cuda:r" if s.device == "cuda" else "gloo, CPU: the dry run's stand-in for NCCL"
    return [
        f"- command: `torchrun {' '.join(args).replace(str(work), '$TMP')}`",
        f"- {n} process{'es' * (n != 1)}, {backend}; global batch {PER_PROCESS_BATCH * n} per domain",
        f"- finished: {'yes' if run.step == steps else 'no'}, step {run.step}/{steps}, wall time {wall:.1f} s "
        f"(launch and evaluations included), training {last['steps_per_s']:.1f} steps/s, "
        f"target accuracy {last['oracle']['target_acc']:.3f} (target labels: evaluation only)",
    ]


def launch(cmd: list[str], timeout_s: int) -> tuple[int, str]:
    """Run ``cmd`` in its own process group (torchrun's workers included); kill the group on timeout."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"no result within {timeout_s} s (killed)") from None
    return proc.returncode, err


def part_resume(s: Sizes, work: Path) -> list[str]:
    """4: interrupt a run at half its steps with SIGINT, resume it, and compare with the uninterrupted run."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("the interrupt needs the main thread (SIGINT handlers)")
    steps = s.resume_steps
    overrides = [f"train.steps={steps}", f"train.eval_every={steps // 4 or 1}", f"train.device={s.device}",
                 "train.threads=1", "train.progress=false", "method.name=dann"]  # fmt: skip
    cfg = dann.load_config(TASK[1], overrides)  # threads=1: the CPU's float sums in the same order in every run
    dann.fit(cfg, work / "full")
    try:
        dann.fit(cfg, work / "stopped", echo=interrupt_at(steps // 2))
        raise RuntimeError(f"the run was not interrupted at step {steps // 2}")
    except TrainingInterrupted as stop:
        stopped_at = stop.step
    dann.fit(out=work / "stopped", resume=True)
    exact, verdict = compare(work / "full", work / "stopped")
    lines = [
        f"digits, DANN, {steps} steps on {s.device}: SIGINT at step {stopped_at}, resumed to {steps}, against the "
        "uninterrupted run",
        f"- resumed vs uninterrupted weights: {verdict}",
    ]
    if not exact:
        dann.fit(cfg, work / "again")
        lines.append(f"- a second uninterrupted run vs the first (the device's own noise): "
                     f"{compare(work / 'full', work / 'again')[1]}")  # fmt: skip
    return lines


def interrupt_at(step: int) -> Callable[[str], None]:
    """An ``echo`` for ``dann.fit`` that sends this process SIGINT on the evaluation line of ``step``: training
    stops after that step, as on Ctrl-C."""

    def echo(line: str) -> None:
        if line.startswith(f"step {step}/"):
            os.kill(os.getpid(), signal.SIGINT)

    return echo


def compare(a: Path, b: Path) -> tuple[bool, str]:
    """Whether the two runs' weights (``load_run(...).net.state_dict()``) are bit for bit equal, and in words:
    "exact", or how many tensors differ and the largest absolute difference."""
    wa, wb = dann.load_run(a).net.state_dict(), dann.load_run(b).net.state_dict()
    if wa.keys() != wb.keys():
        return False, "not comparable: different parameter names"
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    if not differ:
        return True, f"exact ({len(wa)} tensors, bit for bit)"
    largest = max((wa[k].double() - wb[k].double()).abs().max().item() for k in differ)
    return False, f"not exact: {len(differ)} of {len(wa)} tensors differ, max |difference| {largest:.3g}"


PARTS: list[tuple[str, Callable[[Sizes, Path], list[str]]]] = [
    ("1. DANN step vs supervised step", part_bench),
    ("2. Data wait: image files vs decoded-image cache", part_images),
    ("3. torchrun on every visible GPU", part_torchrun),
    ("4. Exact resume", part_resume),
]


def run_part(title: str, part: Callable[[Sizes, Path], list[str]], s: Sizes, work: Path) -> tuple[list[str], bool]:
    """The part's section; a failure becomes one line in it (the traceback goes to stderr)."""
    tic, ok = time.perf_counter(), True
    try:
        body = part(s, work)
    except Exception as error:  # one part failing must not stop the others
        traceback.print_exc()
        body, ok = [f"**failed**: {type(error).__name__}: {last_line(str(error))}"], False
    if s.device == "cuda":
        torch.cuda.empty_cache()  # what a part cached is free for the next (and for torchrun's processes)
    return [f"## {title}", "", *body, "", f"({time.perf_counter() - tic:.1f} s)", ""], ok


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU, to test the script")
    parser.add_argument("--out", type=Path, help="also write the report here (Markdown, atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.overwrite:
        print(f"gpu_check: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    if not args.dry_run and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    s, tic = (DRY if args.dry_run else GPU), time.perf_counter()
    if s.threads:
        torch.set_num_threads(s.threads)
    report, failed = header(s, args.dry_run), 0
    print("\n".join(report), flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        for title, part in PARTS:
            work = Path(tmp) / part.__name__
            work.mkdir()
            section, ok = run_part(title, part, s, work)
            failed += not ok
            report += section
            print("\n".join(section), flush=True)
            if args.out is not None:
                write_atomically(args.out, "\n".join(report))
    report.append(f"total: {time.perf_counter() - tic:.0f} s, {failed} part{'s' * (failed != 1)} failed\n")
    print(report[-1], flush=True)
    if args.out is not None:
        write_atomically(args.out, "\n".join(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
