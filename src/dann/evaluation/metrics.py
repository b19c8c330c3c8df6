"""Evaluation: predictions in batches, accuracy, per-class accuracy, confusion matrix."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch

from ..data.domains import Domain
from ..models.network import DomainAdaptNet
from ..training.distributed import World

if TYPE_CHECKING:
    from ..data.domains import AnyDomain, DomainData


@torch.no_grad()
def _batch_outputs(
    net: DomainAdaptNet,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | None,
    features: bool = False,
) -> Iterator[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]:
    """Per batch of (x (B, ...), indices (B,)): features (B, num_features) (None unless ``features``), class logits
    (B, num_classes), float32 on the CPU, and the indices (B,). Eval mode without gradients; the mode is restored when
    the iteration ends (or the generator is closed). Nothing is kept from one batch to the next."""
    device = device or next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        for x, idx in batches:
            f = net.forward_features(x.to(device, non_blocking=True))
            yield (f.float().cpu() if features else None), net.forward_head(f).float().cpu(), idx
    finally:
        net.train(was_training)


def predictions_by_batch(
    net: DomainAdaptNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Class probabilities (B, num_classes) and sample indices (B,) on the CPU, one batch at a time, from batches of
    (x (B, ...), indices (B,)) such as ``domain.batches(size)``; in eval mode (restored afterwards). Memory is that of
    one batch, whatever the number of batches."""
    for _, logits, index in _batch_outputs(net, batches, device):
        yield torch.softmax(logits, dim=1), index


def predict_batches(
    net: DomainAdaptNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities (M, num_classes) and sample indices (M,) on the CPU, from batches of (x (B, ...),
    indices (B,)) such as ``domain.batches(size)``; in eval mode (the mode is restored afterwards). Keeps the
    probabilities alone (no features): M × num_classes floats."""
    probs, index = [], []
    for p, idx in predictions_by_batch(net, batches, device):
        probs.append(p)
        index.append(idx)
    if not probs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.int64)
    return torch.cat(probs), torch.cat(index)


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
    features: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (M, num_features), class logits (M, num_classes) and sample indices (M,), float32 on the CPU, for
    samples (N, ...) or a domain (arrays or image files; unreadable files skipped under ``data.skip_bad_images``
    are absent from the indices). Computed in eval mode without gradients; the mode is restored afterwards. Memory
    grows with M (num_features + num_classes floats per sample): embed a ``subset`` of a large domain. Without
    ``features`` the features are (M, 0), neither kept nor gathered.

    With a ``world`` of several processes (``training.distributed``), every process must call this with the same data:
    each computes a contiguous 1/N of it and all get the gathered result, in order."""
    domain = Domain(data) if isinstance(data, torch.Tensor) else data
    if world is not None and world.active:
        lo, hi = world.chunk(len(domain))
        feats, logits, index = embed(net, domain.subset(torch.arange(lo, hi)), batch_size, device, None, features)
        index = world.gather_rows(index + lo)
        return world.gather_rows(feats) if features else torch.empty(len(index), 0), world.gather_rows(logits), index
    feats, logits, index = [], [], []
    for f, z, idx in _batch_outputs(net, domain.batches(batch_size), device, features):
        if features:
            feats.append(f)
        logits.append(z)
        index.append(idx)
    if not logits:
        empty = torch.empty(0, dtype=torch.int64)
        return torch.empty(0, net.num_features if features else 0), torch.empty(0, net.num_classes), empty
    index_all = torch.cat(index)
    return torch.cat(feats) if features else torch.empty(len(index_all), 0), torch.cat(logits), index_all


def confusion_counts(
    net: DomainAdaptNet,
    domain: AnyDomain,
    rows: int | None = None,
    batch_size: int = 512,
    device: torch.device | None = None,
    world: World | None = None,
) -> torch.Tensor:
    """Counts (rows, num_classes), int64: entry [y, k] is the number of readable samples of label y the network
    predicts as class k (argmax of its logits), for a labeled domain (``domain.y`` (N,) in ``[0, rows)``; ``rows``
    defaults to ``net.num_classes``, more rows count labels the network has no output for). Accumulated batch by
    batch: memory is that of one batch and of the counts, whatever N. With a ``world`` of several processes each
    counts a contiguous 1/N of the domain and all get the sum (see ``embed``). Raises ``ValueError`` for a domain
    without labels; ``RuntimeError`` (from ``torch.bincount``) for a label outside ``[0, rows)``."""
    if domain.y is None:
        raise ValueError("confusion_counts needs a labeled domain (domain.y is None)")
    k = net.num_classes
    rows = k if rows is None else rows
    if world is not None and world.active:
        lo, hi = world.chunk(len(domain))
        part = confusion_counts(net, domain.subset(torch.arange(lo, hi)), rows, batch_size, device)
        return world.gather_rows(part[None]).sum(0)
    counts = torch.zeros(rows * k, dtype=torch.int64)
    for _, logits, index in _batch_outputs(net, domain.batches(batch_size), device):
        counts += torch.bincount(domain.y[index] * k + logits.argmax(1), minlength=rows * k)
    return counts.view(rows, k)


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts; row = true class, column = predicted class."""
    return torch.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> dict:
    """Accuracy, per-class accuracy (None for classes absent from ``y_true`` (N,)), macro-F1 and the confusion matrix
    of predictions ``y_pred`` (N,)."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def metrics_from_confusion(confusion: torch.Tensor) -> dict:
    """``classification_metrics`` of a confusion matrix (K, K) of counts (row = true class, column = predicted)."""
    cm = confusion.double()
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
    """``classification_metrics`` of a labeled domain (arrays or image files; unreadable files skipped), from
    ``confusion_counts`` accumulated batch by batch (memory does not grow with the domain); with a ``world`` of
    several processes, computed by all of them together. ``num_classes`` must be the network's."""
    return metrics_from_confusion(confusion_counts(net, domain, num_classes, batch_size, None, world))


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
