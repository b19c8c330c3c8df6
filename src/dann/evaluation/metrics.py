"""Evaluation: predictions in batches, accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from ..data.domains import Domain
from ..models.network import DomainAdaptNet
from ..training.distributed import World

if TYPE_CHECKING:
    from ..data.domains import AnyDomain, DomainData


@torch.no_grad()
def _outputs(
    net: DomainAdaptNet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | None,
    features: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Per batch of (x (B, ...), indices (B,)): features (unless ``features`` is False: none are kept), class
    logits (float32, on the CPU) and the indices. Eval mode without gradients; the mode is restored afterwards."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    feats, logits, index = [], [], []
    try:
        for x, idx in batches:
            f = net.forward_features(x.to(device, non_blocking=True))
            if features:
                feats.append(f.float().cpu())
            logits.append(net.forward_head(f).float().cpu())
            index.append(idx)
    finally:
        net.train(was_training)
    return feats, logits, index


def predict_batches(
    net: DomainAdaptNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (M, num_classes) and sample indices (M,) on the CPU, from batches of (x (B, ...),
    indices (B,)) such as ``domain.batches(size)``; in eval mode (the mode is restored afterwards)."""
    _, logits, index = _outputs(net, batches, device)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.softmax(torch.cat(logits), dim=1), torch.cat(index)


def predict_proba(
    net: DomainAdaptNet, x: torch.Tensor, batch_size: int = 512, device: torch.device | None = None
) -> torch.Tensor:
    """Class probabilities (N, num_classes) of samples (N, ...) on the CPU, in eval mode."""
    return predict_batches(net, Domain(x).batches(batch_size), device)[0]


def embed(
    net: DomainAdaptNet,
    data: torch.Tensor | AnyDomain,
    batch_size: int = 512,
    device: torch.device | None = None,
    world: World | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (M, num_features), class logits (M, num_classes) and sample indices (M,), float32 on the CPU, for
    samples (N, ...) or a domain (arrays or image files; unreadable files skipped under ``data.skip_bad_images``
    are absent from the indices). Computed in eval mode without gradients; the mode is restored afterwards.

    With a ``world`` of several processes (``training.distributed``), every process must call this with the same data:
    each computes a contiguous 1/N of it and all get the gathered result, in order."""
    domain = Domain(data) if isinstance(data, torch.Tensor) else data
    return _domain_outputs(net, domain, batch_size, device, world, features=True)


def _domain_outputs(
    net: DomainAdaptNet,
    domain: AnyDomain,
    batch_size: int,
    device: torch.device | None,
    world: World | None,
    features: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``embed``; without ``features`` the features are (M, 0), neither kept nor gathered."""
    if world is not None and world.active:
        lo, hi = world.chunk(len(domain))
        part = domain.subset(torch.arange(lo, hi))
        feats, logits, index = _domain_outputs(net, part, batch_size, device, None, features)
        index = world.gather_rows(index + lo)
        return world.gather_rows(feats) if features else torch.empty(len(index), 0), world.gather_rows(logits), index
    feats, logits, index = _outputs(net, domain.batches(batch_size), device, features)
    if not logits:
        empty = torch.empty(0, dtype=torch.int64)
        return torch.empty(0, net.num_features if features else 0), torch.empty(0, net.num_classes), empty
    index_all = torch.cat(index)
    return torch.cat(feats) if features else torch.empty(len(index_all), 0), torch.cat(logits), index_all


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


def evaluate_domain(
    net: DomainAdaptNet, domain: AnyDomain, num_classes: int, batch_size: int = 512, world: World | None = None
) -> dict:
    """``classification_metrics`` of a labeled domain (arrays or image files; unreadable files skipped); with a
    ``world`` of several processes, computed by all of them together (see ``embed``)."""
    _, logits, index = _domain_outputs(net, domain, batch_size, None, world, features=False)
    return classification_metrics(domain.y[index], logits.argmax(1), num_classes)


def labeled_accuracy(net: DomainAdaptNet, data: DomainData, batch_size: int = 512, world: World | None = None) -> dict:
    """``{"labeled_val": {name: {"acc": a}}}``: the held-out accuracy of each labeled domain with a held-out set,
    when there are several labeled domains (``DomainData.labeled``); ``{}`` otherwise."""
    if len(data.domains) < 2:
        return {}
    k = data.num_classes
    accs = {
        d.name: {"acc": evaluate_domain(net, d.val, k, batch_size, world)["acc"]}
        for d in data.domains
        if d.val is not None
    }
    return {"labeled_val": accs} if accs else {}


def confusion_csv(
    confusion: list[list[int]], classes: list[str], extra: dict[str, dict[str, int]] | None = None
) -> str:
    """The confusion matrix as CSV: one row per true class, one column per predicted class; then one row per entry
    of ``extra`` (row name → {predicted class: count}), e.g. the classes of the data unknown to the model."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(classes, confusion, strict=True):
        writer.writerow([name, *row])
    for name, counts in (extra or {}).items():
        writer.writerow([name, *(counts.get(c, 0) for c in classes)])
    return buffer.getvalue()
