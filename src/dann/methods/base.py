"""What every method shares. A method is a small registered class with one entry point,
``loss(net, batch, progress) -> LossOutput``; it never calls ``backward``, ``step`` or ``.to(device)``:
the trainer owns optimization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..config import MethodConfig
from ..data.domains import SOURCE, TARGET  # noqa: F401 -- re-exported for methods
from ..models.network import DomainAdaptNet
from ..registry import Registry

METHODS: Registry = Registry("method")


@dataclass
class Batch:
    """One training step's data: ``x_s`` (B_s, ...) with labels ``y_s`` (B_s,) and optional per-sample weights
    ``w_s`` (B_s,); ``x_t`` (B_t, ...) unlabeled target samples (target labels never reach a method)."""

    x_s: torch.Tensor
    y_s: torch.Tensor
    x_t: torch.Tensor
    w_s: torch.Tensor | None = None


class LossOutput(NamedTuple):
    total: torch.Tensor  # scalar to minimize
    terms: dict[str, torch.Tensor | float]  # named parts for logging (detached or plain floats)


class Method:
    """Base class. Subclasses set ``uses_target`` and implement ``loss``."""

    uses_target: bool = True

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    def loss(self, net: DomainAdaptNet, batch: Batch, progress: float) -> LossOutput:
        raise NotImplementedError

    def forward_rows(self, rows: int) -> int:
        """The fewest samples one training forward of the network sees when each domain's batch has ``rows``: both
        domains' in one forward by default (``joint_features``); one domain's when the method reads no target or
        ``method.separate_forward`` forwards each domain alone."""
        return 2 * rows if self.uses_target and not self.cfg.separate_forward else rows

    def forward_note(self) -> str:
        """Why a training forward sees only one domain's rows (for messages); "" when it sees both."""
        if not self.uses_target:
            return f"method {self.cfg.name} forwards only the source batch"
        return "method.separate_forward=true forwards each domain alone" if self.cfg.separate_forward else ""


def weighted_mean(loss: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-sample losses (N,), or their weighted mean ``sum(w * l) / sum(w)`` when weights are given."""
    if weight is None:
        return loss.mean()
    return (loss * weight).sum() / weight.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def classification_loss(
    logits_s: torch.Tensor, y_s: torch.Tensor, w_s: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy with label smoothing, per sample (``reduction="none"``), then ``weighted_mean``."""
    per_sample = F.cross_entropy(logits_s, y_s, reduction="none", label_smoothing=label_smoothing)
    return weighted_mean(per_sample, w_s)


def joint_features(net: DomainAdaptNet, batch: Batch, separate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_s, f_t). By default one forward over ``cat(x_s, x_t)``: BatchNorm layers then normalize with statistics
    of the mixed batch. ``separate=True`` runs two forwards (the seed's variant): each domain is normalized with its
    own statistics, and the running statistics end up dominated by the target batch, which runs last."""
    if separate:
        return net.forward_features(batch.x_s), net.forward_features(batch.x_t)
    f = net.forward_features(torch.cat([batch.x_s, batch.x_t]))
    return f[: len(batch.x_s)], f[len(batch.x_s) :]


def create_method(cfg: MethodConfig) -> Method:
    return METHODS.get(cfg.name)(cfg)
