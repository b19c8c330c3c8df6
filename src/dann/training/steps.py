"""One optimizer step, shared by the trainer and ``dann bench``.

A *step* is one optimizer update. With ``train.accumulate = K`` it averages the gradients of K micro-batches of
``batch_size`` samples per domain: micro-batch ``k`` of step ``s`` is batch ``s * K + k`` of each domain's
step-indexed stream, so a resumed run sees the same micro-batches, and progress ``p = s / steps`` (which drives
the learning-rate and GRL schedules) is the same for all K of them. K = 1 is the plain step."""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.loaders import Rows
from ..errors import ConfigError
from ..methods.base import Batch, LossOutput, Method
from ..models.network import DomainAdaptNet
from .precision import Precision


class Batches(Protocol):
    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def get_rows(self, index: int) -> Rows: ...


class MethodLoss(nn.Module):
    """The network and a method's loss as one module: ``forward(batch, progress)`` is ``method.loss(net, batch,
    progress)``. Methods call the network's parts (``forward_features``, ``domain_logits``...), not its
    ``forward``; wrapping this module instead of the network lets DistributedDataParallel see the whole step
    (``dann.training.distributed``). Its parameters are the network's, under the same objects."""

    def __init__(self, net: DomainAdaptNet, method: Method) -> None:
        super().__init__()
        self.net = net
        self.method = method

    def forward(self, batch: Batch, progress: float) -> LossOutput:
        return self.method.loss(self.net, batch, progress)


def check_batchnorm_rows(net: DomainAdaptNet, method: Method, batch_size: int, processes: int = 1) -> None:
    """Refuse a ``train.batch_size`` that would hand a BatchNorm layer of ``net`` a single sample per training
    forward (PyTorch stops at the first step with "Expected more than 1 value per channel", or normalizes one image
    by its own pixels). Each of ``processes`` (torchrun) forwards ``batch_size / processes`` rows per domain."""
    norms = [name for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if getattr(net, "freeze_bn", False):  # model.freeze_bn: BatchNorm in eval mode takes any number of samples
        norms = []
    rows = batch_size // processes
    if not norms or method.forward_rows(rows) >= 2:
        return
    need = processes * (1 if method.forward_rows(1) >= 2 else 2)
    split = f" split over {processes} processes ({rows} per process and domain)" if processes > 1 else ""
    per_process = f" ({need // processes} per process)" if processes > 1 else ""
    raise ConfigError(
        f"train.batch_size={batch_size}{split} hands the network's BatchNorm layers ({', '.join(norms[:3])}"
        f"{', ...' if len(norms) > 3 else ''}) a single sample per training forward: {method.forward_note()}; "
        f"BatchNorm needs at least 2, so set train.batch_size={need} or more{per_process}"
    )


def train_step(
    model: MethodLoss | DistributedDataParallel,
    optimizer: torch.optim.Optimizer,
    source: Batches | None,
    target: Batches | None,
    step: int,
    progress: float,
    amp: Precision,
    accumulate: int = 1,
    grad_clip: float = 0.0,
) -> LossOutput:
    """Zero the gradients, run ``accumulate`` micro-batches (forward and loss under autocast, backward of
    ``loss / accumulate``), clip, step; a stream is None when the method does not read that domain. Returns the
    detached total and terms averaged over the micro-batches, as device tensors (no host sync). Under DDP the
    gradients are averaged over the processes in the last micro-batch's backward only."""
    optimizer.zero_grad(set_to_none=True)
    total: torch.Tensor | float = 0.0
    terms: dict[str, torch.Tensor | float] = {}
    for k in range(accumulate):
        index = step * accumulate + k
        t_rows = target.get_rows(index) if target is not None else None
        if source is not None:
            rows = source.get_rows(index)
            x_s, y_s = amp.batch(rows.x), rows.y
            x_t = amp.batch(t_rows.x) if t_rows is not None else x_s[:0]
        else:  # a source-free method reads an empty source batch
            x_t = amp.batch(t_rows.x)  # type: ignore[union-attr]
            x_s, y_s = x_t[:0], torch.zeros(0, dtype=torch.int64, device=x_t.device)
            rows = Rows(x_s, y_s)
        last = k == accumulate - 1
        no_sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else None
        with no_sync or contextlib.nullcontext():
            with amp.autocast():
                i_t = t_rows.i if t_rows is not None else None
                out = model(Batch(x_s, y_s, x_t, rows.w, rows.d, rows.parts, i_t), progress)
            amp.backward(out.total / accumulate if accumulate > 1 else out.total)
        total = total + out.total.detach().float() / accumulate
        for name, value in out.terms.items():
            terms[name] = terms.get(name, 0.0) + value / accumulate
    amp.step(optimizer, model.parameters(), grad_clip)
    return LossOutput(total, terms)  # type: ignore[arg-type]
