"""Heads on top of the features: an optional bottleneck, the label head and the domain discriminator (logits)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn


class Bottleneck(nn.Sequential):
    """Linear + BatchNorm + ReLU: (N, in_features) → (N, dim)."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__(nn.Linear(in_features, dim), nn.BatchNorm1d(dim), nn.ReLU())


def mlp_layers(
    in_features: int,
    hidden_dims: Sequence[int],
    out_features: int,
    dropout: float = 0.0,
    negative_slope: float = 0.0,
    norm: bool = False,
) -> nn.Sequential:
    """Linear + ReLU (LeakyReLU with ``negative_slope`` > 0) (+ Dropout) per hidden width, then a final Linear to
    ``out_features``. ``norm``: the final Linear has no bias and reads its input through BatchNorm1d then LayerNorm,
    so the logits see normalized features of one scale."""
    layers: list[nn.Module] = []
    widths = [in_features, *hidden_dims]
    for d_in, d_out in pairwise(widths):
        layers += [nn.Linear(d_in, d_out), nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    if norm:
        layers += [nn.BatchNorm1d(widths[-1]), nn.LayerNorm(widths[-1])]
    layers.append(nn.Linear(widths[-1], out_features, bias=not norm))
    return nn.Sequential(*layers)


class DomainDiscriminator(nn.Module):
    """MLP (Linear + ReLU or LeakyReLU [+ Dropout] per hidden width) → one logit per sample: (N, F) → (N,); with
    ``outputs`` > 1, one logit per domain: (N, F) → (N, outputs).

    Returns raw logits, to be used with ``binary_cross_entropy_with_logits`` (stable, and safe under autocast);
    positive means "target" (TARGET = 1). Several outputs go with ``cross_entropy``."""

    def __init__(
        self,
        in_features: int,
        hidden_dims: Sequence[int] = (100,),
        dropout: float = 0.0,
        outputs: int = 1,
        negative_slope: float = 0.0,
    ) -> None:
        super().__init__()
        self.net = mlp_layers(in_features, hidden_dims, outputs, dropout, negative_slope)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f).squeeze(-1)
