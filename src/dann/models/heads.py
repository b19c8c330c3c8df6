"""Heads on top of the features: an optional bottleneck, the label head and the domain discriminator (logits)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn


class Bottleneck(nn.Sequential):
    """(N, in_features) → (N, dim). ``kind``: ``bn_relu``, Linear + BatchNorm + ReLU (TLlib's ``ImageClassifier``,
    thuml/MDD's ``MDDNet``); ``bn_dropout``, Linear + BatchNorm + Dropout(0.5) with no activation (tim-learn/SHOT
    ``feat_bootleneck``, type ``bn``). Raises ``ValueError`` for another kind."""

    def __init__(self, in_features: int, dim: int, kind: str = "bn_relu") -> None:
        last = {"bn_relu": nn.ReLU, "bn_dropout": lambda: nn.Dropout(0.5)}
        if kind not in last:
            raise ValueError(f"bottleneck kind {kind!r}: expected one of {', '.join(last)}")
        super().__init__(nn.Linear(in_features, dim), nn.BatchNorm1d(dim), last[kind]())


def mlp_layers(
    in_features: int,
    hidden_dims: Sequence[int],
    out_features: int,
    dropout: float = 0.0,
    negative_slope: float = 0.0,
    norm: bool = False,
    weight_norm: bool = False,
) -> nn.Sequential:
    """Linear + ReLU (LeakyReLU with ``negative_slope`` > 0) (+ Dropout) per hidden width, then a final Linear to
    ``out_features``. ``norm``: the final Linear has no bias and reads its input through BatchNorm1d then LayerNorm,
    so the logits see normalized features of one scale. ``weight_norm``: the final Linear's weight is g · v / ‖v‖
    per output row (``torch.nn.utils.parametrizations.weight_norm``; Salimans & Kingma 2016), as SHOT's classifier
    (tim-learn/SHOT ``feat_classifier``, type ``wn``)."""
    layers: list[nn.Module] = []
    widths = [in_features, *hidden_dims]
    for d_in, d_out in pairwise(widths):
        layers += [nn.Linear(d_in, d_out), nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    if norm:
        layers += [nn.BatchNorm1d(widths[-1]), nn.LayerNorm(widths[-1])]
    last = nn.Linear(widths[-1], out_features, bias=not norm)
    layers.append(nn.utils.parametrizations.weight_norm(last) if weight_norm else last)
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
