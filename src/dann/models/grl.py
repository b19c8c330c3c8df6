"""Gradient reversal layer (Ganin & Lempitsky 2015): identity forward, gradient × (−coeff) backward.

Stateless: the coefficient is an argument, computed by the caller from training progress, so nothing hidden
needs to be checkpointed."""

from __future__ import annotations

import torch


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * -ctx.coeff, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """``x`` unchanged in the forward pass; the gradient flowing back is multiplied by ``-coeff``."""
    return GradReverse.apply(x, float(coeff))
