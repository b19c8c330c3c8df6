"""Ctrl-C and SIGTERM during training: a checkpoint of the step reached, one line naming it and the resume command,
exit status 128 + signal, no traceback; the resumed run equals the uninterrupted one."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

import dann
from dann.cli import main
from dann.errors import TrainingInterrupted
from dann.runs import LAST_CHECKPOINT, METRICS_FILE, load_checkpoint, read_jsonl
from dann.training.distributed import World
from dann.training.interrupt import StopRequest
from dann.training.nonfinite import LossWatch

from .test_kill_resume import ENV
from .test_trainer import assert_same, weights


def interrupt_at(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    """Send ``signum`` to this process right after the update of step ``step`` (as a terminal would, mid-run)."""
    record, seen = LossWatch.record, []

    def record_then_signal(self, *args):
        record(self, *args)
        seen.append(1)
        if len(seen) == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(LossWatch, "record", record_then_signal)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_step_reached_and_resume_equals_the_uninterrupted_run(
    tiny_cfg, tiny_data, tmp_path, monkeypatch, signum
):
    full = dann.fit(tiny_cfg, tmp_path / "full", data=tiny_data)
    interrupt_at(monkeypatch, 4, signum)  # between the evaluations at 6 and 12, before any checkpoint
    with pytest.raises(TrainingInterrupted) as stopped:
        dann.fit(tiny_cfg, tmp_path / "stopped", data=tiny_data)
    assert (stopped.value.step, stopped.value.signal) == (4, signum)
    assert stopped.value.checkpoint == str(tmp_path / "stopped" / LAST_CHECKPOINT)
    assert load_checkpoint(stopped.value.checkpoint).step == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    monkeypatch.undo()
    resumed = dann.fit(out=tmp_path / "stopped", data=tiny_data, resume=True)
    assert_same(weights(full.net), weights(resumed.net))
    a, b = load_checkpoint(tmp_path / "full" / LAST_CHECKPOINT), load_checkpoint(tmp_path / "stopped" / LAST_CHECKPOINT)
    for k, state in a.optimizer["state"].items():
        assert_same(state, b.optimizer["state"][k])
    assert [r["validators"] for r in resumed.history] == [r["validators"] for r in full.history]


def test_a_second_signal_takes_the_default_action_at_once():
    with StopRequest(World()) as stop:
        stop._handle(signal.SIGINT, None)
        assert stop.requested(logging=False) and stop.signal == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL  # the next Ctrl-C ends the process, no handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_under_torchrun_repeated_signals_are_one_interrupt():
    """torchrun forwards the terminal's Ctrl-C to processes that already got it: that is no second Ctrl-C."""
    with StopRequest(World(rank=1, size=2)) as stop:
        stop._handle(signal.SIGINT, None)
        stop._handle(signal.SIGINT, None)
        assert signal.getsignal(signal.SIGINT) == stop._handle and stop.signal == signal.SIGINT


def test_ctrl_c_on_dann_train_prints_one_line_and_the_printed_command_resumes_exactly(npz_files, tmp_path):
    """The interrupted run is a subprocess, in its own process group as a terminal's job is; the uninterrupted
    reference trains in this process meanwhile, and the printed command resumes here (one CPU thread in both, so
    the arithmetic is the same)."""
    steps, every = 200, 20
    args = [
        *("train", "--source", str(npz_files["source"]), "--target", str(npz_files["target"]), "--backbone", "mlp"),
        *("--method", "source_only"),  # the interrupt of one run (the selecting default trains several)
        *("--steps", str(steps), "--device", "cpu", "--no-report", "--set", f"train.eval_every={every}"),
        *("--set", "train.batch_size=16", "--set", "model.mlp_dims=[32]", "--set", "train.progress=false"),
    ]
    victim = subprocess.Popen(
        [sys.executable, "-m", "dann", *args, "--out", str(tmp_path / "stopped")],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which a terminal's Ctrl-C reaches as a whole
    )
    assert main([*args, "--out", str(tmp_path / "full"), "--quiet"]) == 0
    for line in victim.stdout:  # the first evaluation line: training is under way
        if line.startswith(f"step {every}/"):
            break
    os.killpg(victim.pid, signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(rf"dann train: interrupted at step (\d+)/{steps}; saved (\S+); continue with: (.+)", last)
    assert match, err
    step, checkpoint, command = int(match[1]), match[2], match[3]
    assert every <= step < steps and load_checkpoint(checkpoint).step == step

    argv = shlex.split(command)
    assert argv[:2] == ["dann", "train"] and "--resume" in argv
    assert main(argv[1:]) == 0
    a, b = load_checkpoint(tmp_path / "full" / LAST_CHECKPOINT), load_checkpoint(tmp_path / "stopped" / LAST_CHECKPOINT)
    assert a.step == b.step == steps
    assert_same(a.model, b.model)
    records = read_jsonl(tmp_path / "stopped" / METRICS_FILE)
    assert [r["step"] for r in records] == list(range(every, steps + 1, every))
