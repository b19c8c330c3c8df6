"""Peak memory of ``dann predict`` and ``dann evaluate`` against the number of samples N. A model with wide features
(the `mlp` backbone, one hidden layer of ``--width`` units, no bottleneck: features of ``--width`` floats per sample)
is trained for a few steps on 4-dimensional blobs; each call then runs on a labeled ``.npz`` of N samples, alone in a
fresh Python process, which reports its resident memory (RSS) after loading the run and its high-water mark (VmHWM,
/proc/self/status: Linux) after the call; the table shows the difference, the memory the call added. The input itself
is 16 bytes per sample, so what grows with N is what the pass keeps.

Each call is measured twice: with glibc's allocator as it comes, whose dynamic mmap threshold keeps some freed batch
buffers on its heap (a slack of a few batches, varying from run to run but not with N), and with a fixed threshold
(``MALLOC_MMAP_THRESHOLD_=131072``: every large block goes back to the system when freed), which leaves what the pass
itself holds.

    python benchmarks/memory.py                             # N = 2000 8000 32000, 4096-wide features
    python benchmarks/memory.py --sizes 1000 4000 16000 64000 --width 2048

It runs against whichever ``dann`` is importable: check out an older commit (or install another version) to measure
that one. One torch thread per process."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def status_mb(field: str) -> float:
    """``field`` (VmRSS, VmHWM) of /proc/self/status in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (this benchmark needs Linux)")


def save_blobs(path: Path, n: int, shift: float, seed: int) -> Path:
    """``path``: an ``.npz`` of ``n`` samples (x (n, 4) float32, y (n,)) of two Gaussian classes moved by ``shift``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    np.savez(path, x=(rng.normal(size=(n, 4)) + 2.0 * y[:, None] + shift).astype(np.float32), y=y)
    return path


SPLITS = (("source", 0.0, 0), ("target", 1.5, 1))


def train(root: Path, width: int) -> Path:
    """A run of the `mlp` backbone with ``width``-wide features (a few source-only steps on 400 samples)."""
    import dann
    from dann.config import load_config

    source, target = (save_blobs(root / f"{name}.npz", 400, shift, seed) for name, shift, seed in SPLITS)
    cfg = load_config(
        values={
            "data": {"source": str(source), "target": str(target)},
            "model": {"backbone": "mlp", "mlp_dims": [width], "bottleneck_dim": 0, "discriminator_dims": [8]},
            "method": {"name": "source_only"},
            "train": {"steps": 4, "eval_every": 4, "batch_size": 16, "progress": False, "device": "cpu"},
        }
    )
    dann.fit(cfg, root / "run")
    return root / "run"


def child(what: str, run: str, data: str, out: str) -> None:
    """In a fresh process: RSS after loading the run, then the high-water mark after ``what`` (predict, evaluate)."""
    import torch

    import dann
    from dann.evaluation.loading import load_run

    torch.set_num_threads(1)
    load_run(run)  # imports and one load before the baseline, as the call itself loads the run again
    before = status_mb("VmRSS")
    if what == "predict":
        dann.predict(run, data, Path(out) / "predictions.csv")
    else:
        dann.evaluate(run, data)  # no out_dir: the metrics alone, no picture
    print(json.dumps({"before": before, "peak": status_mb("VmHWM")}))


def measure(what: str, run: Path, data: Path, fixed: bool) -> tuple[float, float]:
    """RSS of a fresh process with the run loaded, and the MiB ``what`` added to it at its peak (``fixed``: with a
    fixed mmap threshold)."""
    env = os.environ | {"OMP_NUM_THREADS": "1"} | ({"MALLOC_MMAP_THRESHOLD_": "131072"} if fixed else {})
    with tempfile.TemporaryDirectory(dir=run.parent) as out:
        command = [sys.executable, __file__, "--child", what, str(run), str(data), out]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{what} on {data} failed:\n{done.stderr}")
    m = json.loads(done.stdout.splitlines()[-1])
    return m["before"], m["peak"] - m["before"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2000, 8000, 32000], help="numbers of samples N")
    parser.add_argument("--width", type=int, default=4096, help="features per sample")
    parser.add_argument("--child", nargs=4, metavar=("WHAT", "RUN", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    import torch

    import dann

    print(
        f"# dann {dann.__version__} ({Path(dann.__file__).parent}), torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, one torch thread; features of "
        f"{args.width} floats ({args.width * 4 / 1024:.0f} KiB per sample)"
    )
    print("MiB the call added at its peak, above the process with the run loaded (RSS before):")
    print(f"{'N':>8} {'command':>9} {'RSS before':>11} {'glibc default':>14} {'fixed mmap threshold':>21}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = train(root, args.width)
        for n in args.sizes:
            data = save_blobs(root / f"data-{n}.npz", n, 1.5, n)
            for what in ("predict", "evaluate"):
                (before, added), (_, fixed) = (measure(what, run, data, f) for f in (False, True))
                print(f"{n:>8} {what:>9} {before:>7.0f} MiB {added:>14.1f} {fixed:>21.1f}", flush=True)


if __name__ == "__main__":
    main()
