"""Kill ``dann train`` with SIGKILL at a random moment, resume it, and get the uninterrupted run's weights bit for bit.

Both runs are subprocesses with one CPU thread, so their arithmetic is identical. The kill lands after a random
number of checkpoints plus a random delay, anywhere in a step, an evaluation or a checkpoint write. (The worst
moments of a write, last.pt cut short or missing between the two renames, are made exact in test_runs.py.)"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import dann
from dann.runs import LAST_CHECKPOINT, METRICS_FILE, load_checkpoint, read_jsonl

from .test_trainer import assert_same

STEPS, EVAL_EVERY = 200, 10
ENV = os.environ | {
    "PYTHONPATH": str(Path(dann.__file__).parents[1]),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "CUDA_VISIBLE_DEVICES": "",
}


def dann_train(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dann", "train", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def train_args(npz_files: dict[str, Path], out: Path) -> list[str]:
    return [
        *("--source", str(npz_files["source"]), "--target", str(npz_files["target"]), "--out", str(out)),
        *("--backbone", "mlp", "--method", "source_only", "--steps", str(STEPS), "--quiet", "--device", "cpu"),
        *("--set", f"train.eval_every={EVAL_EVERY}", "--set", "train.batch_size=16", "--set", "model.mlp_dims=[32]"),
    ]


def wait_for_evaluations(run: Path, count: int, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until ``count`` evaluations are logged and a checkpoint exists: the metrics line of an evaluation is written
    just before its checkpoint, so on a slow disk the first line can appear while no checkpoint is there yet (a run
    killed then has nothing to resume from: ``--resume`` would start it afresh, and this test is about resuming)."""
    deadline = time.monotonic() + timeout
    while len(read_jsonl(run / METRICS_FILE)) < count or not (run / LAST_CHECKPOINT).is_file():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "the run did not reach its evaluation in time"
        time.sleep(0.002)


def test_sigkill_at_a_random_moment_then_resume_gives_the_uninterrupted_weights(npz_files, tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    checkpoints, delay = rng.randint(1, STEPS // EVAL_EVERY - 10), rng.uniform(0.0, 0.02)
    note = f"random seed {seed}: kill after {checkpoints} evaluations + {delay * 1000:.1f} ms"
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    reference = dann_train(*train_args(npz_files, full))  # runs alongside, on the other core
    victim = dann_train(*train_args(npz_files, crashed))
    wait_for_evaluations(crashed, checkpoints, victim)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, note
    assert (crashed / "checkpoints").is_dir()
    stopped_at = max((r["step"] for r in read_jsonl(crashed / METRICS_FILE)), default=0)
    assert stopped_at < STEPS, f"{note}: the run finished before the kill"

    resumed = dann_train("--out", str(crashed), "--resume")
    for process in (resumed, reference):
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{note}\n{err.decode()}"
    a, b = load_checkpoint(full / LAST_CHECKPOINT), load_checkpoint(crashed / LAST_CHECKPOINT)
    assert a.step == b.step == STEPS, note
    assert_same(a.model, b.model)
    for k, state in a.optimizer["state"].items():
        assert_same(state, b.optimizer["state"][k])
    assert [r["step"] for r in read_jsonl(crashed / METRICS_FILE)] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert not list((crashed / "checkpoints").glob(".*.tmp")), "a temporary file was left behind"
