"""One optimizer step, shared by the trainer and ``dann bench``.

A *step* is one optimizer update. With ``train.accumulate = K`` it averages the gradients of K micro-batches of
``batch_size`` samples per domain: micro-batch ``k`` of step ``s`` is batch ``s * K + k`` of each domain's
step-indexed stream, so a resumed run sees the same micro-batches, and progress ``p = s / steps`` (which drives
the learning-rate and GRL schedules) is the same for all K of them. K = 1 is the plain step."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from .methods.base import Batch, LossOutput, Method
from .precision import Precision


class Batches(Protocol):
    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]: ...


def train_step(
    net: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    source: Batches,
    target: Batches | None,
    step: int,
    progress: float,
    amp: Precision,
    accumulate: int = 1,
    grad_clip: float = 0.0,
) -> LossOutput:
    """Zero the gradients, run ``accumulate`` micro-batches (forward and loss under autocast, backward of
    ``loss / accumulate``), clip, step. Returns the detached total and terms averaged over the micro-batches, as
    device tensors (no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    total: torch.Tensor | float = 0.0
    terms: dict[str, torch.Tensor | float] = {}
    for k in range(accumulate):
        index = step * accumulate + k
        x_s, y_s = source.get(index)
        x_s = amp.batch(x_s)
        x_t = amp.batch(target.get(index)[0]) if target is not None else x_s[:0]
        with amp.autocast():
            out = method.loss(net, Batch(x_s, y_s, x_t), progress)
        amp.backward(out.total / accumulate if accumulate > 1 else out.total)
        total = total + out.total.detach().float() / accumulate
        for name, value in out.terms.items():
            terms[name] = terms.get(name, 0.0) + value / accumulate
    amp.step(optimizer, net.parameters(), grad_clip)
    return LossOutput(total, terms)  # type: ignore[arg-type]
