"""Numeric precision and memory layout of training: ``train.precision``, ``train.channels_last``, ``train.compile``.

- ``auto`` (the default; ``train.channels_last: null`` goes with it, see ``resolve_channels_last``): ``bf16`` for
  image inputs (C, H, W) trained by a method without an adversarial branch, on a device that runs bfloat16 natively
  (``native_bf16``: a CUDA GPU with bfloat16 units, an x86 CPU with AVX-512 BF16 or AMX-BF16), ``fp32`` otherwise.
  Feature vectors stay ``fp32``: their small MLPs gain no speed from bfloat16 (0.6-0.8x fp32 measured). Adversarial
  methods stay ``fp32`` (but DANN alone, which passed): bfloat16 failed the recipe suite's accuracy rule for CDAN+E or
  was not measured (``methods.base.keeps_fp32``, ``resolve_precision``).
  The run's plan (``dann.plan``) resolves it before the run's ``config.yaml`` is written, so a run records (and a
  resume keeps) the concrete choice; see ``docs/speed.md``.
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
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import DannError

AUTO = "auto"
# the autocast dtype of each concrete value of config.PRECISIONS
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_capabilities() -> Mapping[str, Any]:
    """The instruction sets of this CPU as torch detects them (``torch.cpu.get_capabilities()``; on torch releases
    without it, the two bfloat16 probes torch kept privately), e.g. ``{"avx512_bf16": True, "amx_bf16": False}``."""
    public = getattr(torch.cpu, "get_capabilities", None)
    if public is not None:
        return public()
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    return {key: bool(getattr(torch.cpu, name, lambda: False)()) for key, name in probes.items()}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively, not by emulation: a CUDA GPU for which
    ``torch.cuda.is_bf16_supported(including_emulation=False)`` holds (Ampere and later), or a CPU with AVX-512 BF16
    or AMX-BF16 instructions (``cpu_capabilities``; oneDNN runs bfloat16 convolutions and matmuls on them). Other
    devices (MPS, CPUs without these instructions, which would emulate bfloat16 at a loss): False."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        caps = cpu_capabilities()
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return False


def resolve_precision(
    precision: str, device: torch.device, input_shape: Sequence[int], adversarial: bool = False
) -> str:
    """``train.precision`` → a concrete value: ``auto`` becomes ``bf16`` for image inputs (``input_shape`` (C, H, W))
    on a device with ``native_bf16`` unless ``adversarial`` (``methods.base.keeps_fp32``: a term reads the domain
    discriminator through gradient reversal, cdan, cdan_e, mdd... but DANN alone; or a method not measured in bf16),
    else ``fp32``; any other value is returned unchanged. Those methods stay in fp32 because bfloat16 failed the
    accuracy rule for them or was not measured (``benchmarks/precision.py``: cdan_e lost more than the seed spread on
    digits_scanner and digits with the discriminator in float32; DANN passed on digits, digits_scanner and
    digits_inverted; see ``docs/speed.md``)."""
    if precision != AUTO:
        return precision
    return "bf16" if len(input_shape) == 3 and not adversarial and native_bf16(device) else "fp32"


def resolve_channels_last(channels_last: bool | None, precision: str, input_shape: Sequence[int]) -> bool:
    """``train.channels_last`` → a concrete value: None (auto) becomes True for image inputs (C, H, W) trained in a
    reduced precision (``bf16``, ``fp16``; ``precision`` already resolved), whose convolutions oneDNN and cuDNN run
    fastest in NHWC (LeNet in bf16 on an AVX-512 BF16 CPU: 1.5-1.9x fp32 with NHWC, 1.3-1.4x without; see
    ``docs/speed.md``), False otherwise; True or False is kept."""
    if channels_last is not None:
        return channels_last
    return len(input_shape) == 3 and precision in ("bf16", "fp16")


class Precision:
    """Autocast, gradient scaling and memory layout for one device, from ``train.precision`` and
    ``train.channels_last``. The trainer calls ``autocast()`` around ``method.loss``, ``backward(loss)`` instead of
    ``loss.backward()``, and ``step(optimizer, params, grad_clip)`` instead of ``optimizer.step()``."""

    def __init__(self, precision: str, device: torch.device, channels_last: bool = False) -> None:
        if precision not in DTYPES:  # "auto" is resolved before (resolve_precision), where the input shape is known
            raise DannError(f"train.precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.precision = precision
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
