"""Numeric precision and memory layout of training: ``train.precision``, ``train.channels_last``, ``train.compile``.

- ``fp32``: plain float32, no autocast.
- ``bf16``: ``torch.autocast(dtype=bfloat16)`` around the forward and the loss only; backward and the optimizer
  step run on the float32 weights. No loss scaling is needed (bfloat16 has float32's exponent range). Works on the
  CPU and on recent GPUs.
- ``fp16``: autocast with float16 plus a ``torch.amp.GradScaler`` that scales the loss before backward and skips
  steps whose gradients overflowed. The scaler's ``step`` reads one flag on the host (a sync per optimizer step),
  which is how PyTorch's scaler works: prefer ``bf16`` where the hardware has it. The scaler's state is saved in
  checkpoints and restored on resume.

``channels_last`` puts the model's 4-D weights and every 4-D image batch in NHWC memory order (faster convolutions
on tensor cores and oneDNN); 2-D inputs are left alone. ``compile`` compiles the backbone in place with
``nn.Module.compile`` (its parameters keep their names, so checkpoints are unchanged)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from ..errors import DannError

# the autocast dtype of each of config.PRECISIONS
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast, gradient scaling and memory layout for one device, from ``train.precision`` and
    ``train.channels_last``. The trainer calls ``autocast()`` around ``method.loss``, ``backward(loss)`` instead of
    ``loss.backward()``, and ``step(optimizer, params, grad_clip)`` instead of ``optimizer.step()``."""

    def __init__(self, precision: str, device: torch.device, channels_last: bool = False) -> None:
        if precision not in DTYPES:
            raise DannError(f"train.precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.dtype = DTYPES[precision]
        self.device = device
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass and the loss (a no-op context for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def prepare_model(self, net: nn.Module, compile_backbone: bool = False) -> nn.Module:
        """Move ``net`` to the chosen memory format and compile its backbone when asked; returns ``net``."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        if compile_backbone:
            backbone = getattr(net, "backbone", net)
            backbone.compile()
        return net

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in the chosen memory format: (N, C, H, W) images go channels_last; others unchanged."""
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss`` (scaled when fp16 uses the GradScaler)."""
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: Any, grad_clip: float) -> None:
        """Optional gradient clipping on the unscaled gradients, then the optimizer step (and the scaler update)."""
        if grad_clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        """The GradScaler's state for a checkpoint, or None when no scaler is used."""
        return self.scaler.state_dict() if self.scaler.is_enabled() else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(state)
