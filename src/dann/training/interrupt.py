"""Ctrl-C (SIGINT) and SIGTERM while training: the run stops at the end of the step under way, writes a checkpoint
of that step through the trainer's usual save (atomic, with the model, optimizer, RNG and method states), and raises
``TrainingInterrupted`` naming it. Batches are a pure function of the step and every schedule of progress, so
``--resume`` continues exactly as the uninterrupted run would have (the logged mean of the training terms over the
interrupted ``train.log_every`` window covers only the steps after the resume).

A second signal ends the process at once (the default action: no cleanup, no checkpoint; a resume then starts from
the last checkpoint, and temporary files a write left behind are removed).

Under torchrun every process gets the signal (from the terminal, then again from torchrun, which forwards it and
kills its workers 30 s later): the processes agree at the next log step (``train.log_every``, whose host sync the
check shares), rank 0 writes the checkpoint, every process stops at the same step, and repeated signals are ignored.
A run that torchrun kills before that log step keeps its last checkpoint.

DataLoader workers ignore SIGINT (``ignore_interrupts``), so a Ctrl-C, which a terminal sends to every process of
the job, does not end them under the step being finished."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import torch

from .distributed import World

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NOTICE = "\n{name}: stopping after this step and saving a checkpoint; press Ctrl-C again to quit at once\n"


def ignore_interrupts(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGINT and leaves the interrupt to the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """While entered (in the main thread; elsewhere it never stops anything), SIGINT and SIGTERM ask the run to stop
    instead of ending it. ``requested(logging)`` says, after a step, whether to stop now; ``signal`` is the first
    signal received (None before any)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            return  # under torchrun: the same interrupt again, forwarded by torchrun
        self.signal = signum
        if self.world.active:
            return
        for s in SIGNALS:  # a second signal takes the default action: the process ends at once
            signal.signal(s, signal.SIG_DFL)
        os.write(2, NOTICE.format(name=signal.Signals(signum).name).encode())  # safe inside a handler

    def requested(self, logging: bool) -> bool:
        """Whether to stop after this step: at once in a single process; under torchrun at log steps only, when any
        process got a signal (one all-reduce, where the log step synchronizes anyway)."""
        if not self.world.active:
            return self.signal is not None
        if not logging:
            return False
        asked = torch.tensor(self.signal is not None)
        return not bool(self.world.all_true(~asked))
