"""Evaluation: predictions in batches, accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

import torch
from torch import nn

from .models.network import DomainAdaptNet


@torch.no_grad()
def predict_proba(
    net: nn.Module, x: torch.Tensor, batch_size: int = 512, device: torch.device | None = None
) -> torch.Tensor:
    """Class probabilities (N, num_classes) on the CPU, in eval mode (the mode is restored afterwards)."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        out = [
            torch.softmax(net(x[i : i + batch_size].to(device)).float(), dim=1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


@torch.no_grad()
def embed(
    net: DomainAdaptNet, x: torch.Tensor, batch_size: int = 512, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, num_features) and class logits (N, num_classes), float32 on the CPU, computed in eval mode
    (the mode is restored afterwards)."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    feats, logits = [], []
    try:
        for i in range(0, len(x), batch_size):
            f = net.forward_features(x[i : i + batch_size].to(device))
            feats.append(f.float().cpu())
            logits.append(net.forward_head(f).float().cpu())
    finally:
        net.train(was_training)
    if not feats:
        return torch.empty(0, net.num_features), torch.empty(0, net.num_classes)
    return torch.cat(feats), torch.cat(logits)


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    return torch.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, per-class accuracy (None for classes absent from ``y_true``), macro-F1 and the confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, num_classes).double()
    support, predicted, hits = cm.sum(1), cm.sum(0), cm.diag()
    per_class = [float(h / s) if s else None for h, s in zip(hits, support, strict=True)]
    f1 = 2 * hits / (support + predicted).clamp_min(1)
    present = support > 0
    return {
        "acc": float(hits.sum() / cm.sum()) if cm.sum() else float("nan"),
        "per_class_acc": per_class,
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "confusion": cm.long().tolist(),
        "n": int(cm.sum()),
    }


def evaluate_domain(net: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 512) -> dict:
    probs = predict_proba(net, x, batch_size)
    return classification_metrics(y, probs.argmax(1), num_classes)
