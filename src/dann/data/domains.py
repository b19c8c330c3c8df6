"""The data every run needs, in one object. Target labels, when present, live only in ``target_eval``:
``target_train`` never carries labels, so no method can train on them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError

SOURCE, TARGET = 0, 1  # domain labels, defined once for the whole package


@dataclass
class Domain:
    """Samples of one domain held in memory: ``x`` (N, D) or (N, C, H, W) float32, ``y`` (N,) int64 or None."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class DomainData:
    source_train: Domain
    source_val: Domain | None
    target_train: Domain
    target_eval: Domain | None
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.source_train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check_labels(y: torch.Tensor, num_classes: int, what: str) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{what}: labels must lie in [0, {num_classes}), found values from {int(y.min())} to {int(y.max())}"
        )


def make_domain_data(
    source: Domain,
    target: Domain,
    target_eval: Domain | None = None,
    classes: list[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    names: tuple[str, str, str] = ("source", "target", "target_eval"),
) -> DomainData:
    """Check the domains agree, split a held-out source set, and strip labels from the training target.

    ``target_eval`` defaults to ``target`` itself when that has labels (the usual transductive protocol: the
    unlabeled target images are also the ones scored). ``names`` are used in error messages (e.g. file paths)."""
    if source.y is None:
        raise DataError(f"{names[0]}: the source data needs labels (array 'y')")
    if len(source) == 0 or len(target) == 0:
        raise DataError(f"{names[0] if len(source) == 0 else names[1]}: no samples")
    num_classes = len(classes) if classes else int(source.y.max()) + 1
    classes = classes or [str(i) for i in range(num_classes)]
    check_labels(source.y, num_classes, names[0])
    for dom, name in ((target, names[1]), (target_eval, names[2])):
        if dom is None:
            continue
        if dom.x.shape[1:] != source.x.shape[1:]:
            raise DataError(
                f"{name}: samples have shape {tuple(dom.x.shape[1:])} but the source samples have shape "
                f"{tuple(source.x.shape[1:])}; both domains must share one input shape"
            )
        if dom.y is not None:
            check_labels(dom.y, num_classes, f"{name} (classes must be those of the source)")
    if target_eval is not None and target_eval.y is None:
        raise DataError(f"{names[2]}: the target evaluation data needs labels (array 'y'): it only serves to score")
    if target_eval is None and target.y is not None:
        target_eval = target
    perm = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * len(source))
    if n_val >= len(source):
        raise DataError(
            f"{names[0]}: data.val_fraction={val_fraction} holds out all {len(source)} source samples for validation, "
            "leaving none to train on; lower data.val_fraction"
        )
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    source_val = Domain(source.x[val_idx], source.y[val_idx]) if n_val else None
    return DomainData(
        Domain(source.x[train_idx], source.y[train_idx]), source_val, Domain(target.x, None), target_eval, list(classes)
    )
