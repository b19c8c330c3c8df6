"""Non-finite losses, watched without a host-device synchronization per step.

Each step the trainer computes ``finite = torch.isfinite(loss)`` as a 0-dim device tensor and hands it here; it is
read on the host only at log and evaluation steps, which synchronize anyway. ``train.on_nonfinite`` picks:

- ``error`` (default): at the next log or evaluation step, stop with a ``DannError`` naming the non-finite steps
  and loss terms. The trainer checks *before* it evaluates or saves, so no metrics line and no checkpoint is
  written after a non-finite step: the run directory keeps its last good checkpoint.
- ``skip``: the step's update is discarded on the device by ``SkipGuard`` (parameters, buffers such as BatchNorm
  statistics, and optimizer state are put back with ``torch.where``, not with an ``if`` on the host) and counted.
  ``MAX_BAD_RUN`` non-finite steps in a row still stop the run: skipping cannot recover from weights that no longer
  give a finite loss.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import DivergedError

ADVICE = "try a lower optim.lr or optim.grad_clip=1.0"
MAX_BAD_RUN = 100  # consecutive skipped steps that stop a run


def kept(saved: int | None) -> str:
    """What a stopped run keeps: ``saved`` is the step of its last checkpoint, None when it has none (stopped
    before its first evaluation, or trained without a run directory)."""
    return "no checkpoint had been written yet" if saved is None else f"the last checkpoint (step {saved}) is kept"


class LossWatch:
    """Sums the loss terms and keeps the finiteness flags of the steps since the last ``check`` (at most
    ``window`` of them), all on the device."""

    def __init__(self, policy: str, window: int, device: torch.device, skipped: int = 0) -> None:
        self.policy = policy
        self.flags = torch.ones(window, dtype=torch.bool, device=device)
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0  # steps recorded since the last check
        self.skipped = skipped  # skipped steps in the whole run (restored on resume)
        self.bad_run = 0  # consecutive non-finite steps up to the last check
        self.saved: int | None = None  # step of the run's last checkpoint (the trainer keeps it up to date)

    def record(self, finite: torch.Tensor, terms: dict[str, torch.Tensor | float]) -> None:
        """One step: ``finite`` is a 0-dim bool tensor, ``terms`` the method's named terms. No host sync."""
        self.flags[self.count] = finite
        for name, value in terms.items():
            if self.policy == "skip":  # skipped steps must not turn the logged means into NaN
                value = torch.where(finite, value, 0.0)
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def check(self, done: int) -> dict[str, float]:
        """Read the window ending at step ``done`` (one host sync) and start a new one. Raise per the policy;
        return each term's mean over the window's finite steps."""
        first = done - self.count + 1
        flags = self.flags[: self.count].tolist()
        bad = [first + i for i, ok in enumerate(flags) if not ok]
        sums = {name: float(value) for name, value in self.sums.items()}
        self.sums, self.count = {}, 0
        if bad and self.policy == "error":
            steps = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
            terms = [name for name, value in sums.items() if not math.isfinite(value)]
            raise DivergedError(
                f"non-finite loss at step {bad[0]} (non-finite steps among {first}-{done}: {steps}); non-finite "
                f"loss terms: {', '.join(terms) or 'total'}; nothing from step {bad[0]} on was saved; "
                f"{kept(self.saved)}; {ADVICE}, or train.on_nonfinite=skip to skip such steps"
            )
        self.skipped += len(bad)
        trailing = next((i for i, ok in enumerate(reversed(flags)) if ok), len(flags))
        self.bad_run = self.bad_run + trailing if trailing == len(flags) else trailing
        if self.bad_run >= MAX_BAD_RUN:
            raise DivergedError(
                f"the loss was non-finite for the last {self.bad_run} steps up to step {done}: skipping them "
                f"(train.on_nonfinite=skip) cannot recover; {kept(self.saved)}; {ADVICE}"
            )
        return {name: value / max(len(flags) - len(bad), 1) for name, value in sums.items()}


class SkipGuard:
    """Discards an optimizer step on the device when its loss was non-finite: ``snapshot()`` before the forward
    pass, ``restore_unless(finite)`` after ``optimizer.step()``.

    Costs one copy of the parameters, buffers and optimizer state per step (only with ``on_nonfinite=skip``).
    Optimizer state that a skipped step created (the first step's momentum or Adam moments) is reset to zeros,
    its starting value. Tensors off the flag's device (Adam's step count lives on the host when the model is on an
    accelerator) are left alone, since reading the flag there would synchronize; that only shifts Adam's bias
    correction by the number of skipped steps."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.net, self.optimizer = net, optimizer
        self.saved: dict[int, torch.Tensor] = {}

    def _tensors(self) -> list[torch.Tensor]:
        state = [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        return [*self.net.parameters(), *self.net.buffers(), *state]

    @torch.no_grad()
    def snapshot(self) -> None:
        self.saved = {id(t): t.clone() for t in self._tensors()}

    @torch.no_grad()
    def restore_unless(self, finite: torch.Tensor) -> None:
        for t in self._tensors():
            if t.device == finite.device:
                old = self.saved.get(id(t))
                t.copy_(torch.where(finite, t, old if old is not None else torch.zeros_like(t)))


def check_weights(net: nn.Module, step: int, saved: int | None = None) -> None:
    """Refuse to go on with non-finite parameters or buffers at step ``step`` (a finite loss whose gradients
    overflowed); ``saved``: the step of the run's last checkpoint, if any. One host sync; the trainer calls it
    before it evaluates or saves."""
    checks = [torch.isfinite(t).all() for t in [*net.parameters(), *net.buffers()] if t.is_floating_point()]
    if checks and not bool(torch.stack(checks).all()):
        raise DivergedError(
            f"the weights became non-finite by step {step} although every loss was finite (the gradients "
            f"overflowed); nothing from that point on was saved; {kept(saved)}; {ADVICE}"
        )
