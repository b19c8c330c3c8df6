"""Heads on top of the features: an optional bottleneck, and the domain discriminator (logits only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Bottleneck(nn.Sequential):
    """Linear + BatchNorm + ReLU: (N, in_features) → (N, dim)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__(nn.Linear(in_features, dim), nn.BatchNorm1d(dim), nn.ReLU())


class DomainDiscriminator(nn.Module):
    """MLP (Linear + ReLU [+ Dropout] per hidden width) → one logit per sample: (N, F) → (N,).

    Returns raw logits, to be used with ``binary_cross_entropy_with_logits`` (stable, and safe under autocast);
    positive means "target" (TARGET = 1)."""

    def __init__(self, in_features: int, hidden_dims: Sequence[int] = (100,), dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d_in, d_out in zip([in_features, *hidden_dims[:-1]], hidden_dims, strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden_dims[-1] if hidden_dims else in_features, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(-1)
