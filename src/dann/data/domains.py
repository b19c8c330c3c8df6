"""The data every run needs, in one object. Target labels, when present, live only in ``target_eval``:
``target_train`` never carries labels, so no method can train on them.

A domain is either a ``Domain`` (tensors in memory) or an ``ImageDomain`` (image files decoded on demand, see
``images.py``); both offer ``len``, ``y``, ``input_shape``, ``subset``, ``unlabeled`` and ``batches``."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import torch

from ..errors import ConfigError, DataError, DataWarning
from .scales import Scale, check_scales
from .weights import check_some_weight

if TYPE_CHECKING:
    from .images import ImageDomain
    from .transforms import ImageConfig

# domain labels, defined once for the whole package (one name per line: the API reference reads each docstring)
SOURCE = 0
"""Domain label of source samples: the domain discriminator's BCE target for them (a negative logit says source)."""
TARGET = 1
"""Domain label of target samples: the discriminator's BCE target for them (a positive logit says target)."""


@dataclass
class Domain:
    """Samples of one domain held in memory: ``x`` (N, D) or (N, C, H, W) float32, ``y`` (N,) int64 or None; for
    labeled samples optionally ``w`` (N,) float32 per-sample weights (``dann.data.weights``) and ``d`` (N,) int64, the
    index of the labeled domain each sample comes from when several are pooled (``DomainData.labeled``)."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    bad: frozenset[str] = field(default=frozenset(), repr=False)  # arrays have no unreadable files
    scale: Scale | None = field(default=None, repr=False, compare=False)  # how x was stored (as_domain), if known
    w: torch.Tensor | None = field(default=None, repr=False)
    d: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, idx: torch.Tensor) -> Domain:
        y, w, d = (v[idx] if v is not None else None for v in (self.y, self.w, self.d))
        return Domain(self.x[idx], y, scale=self.scale, w=w, d=d)

    def unlabeled(self) -> Domain:
        """The samples alone: no labels, weights or domain indices."""
        return Domain(self.x, None, scale=self.scale)

    @staticmethod
    def join(parts: Sequence[Domain], w: torch.Tensor | None, d: torch.Tensor) -> Domain:
        """The samples of labeled ``parts`` one after another, with their weights ``w`` and domain indices ``d`` (N,)
        (see ``pooled``)."""
        x, y = torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts])  # type: ignore[misc]
        return Domain(x, y, scale=parts[0].scale, w=w, d=d)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x (B, ...), indices (B,)) in order."""
        for i in range(0, len(self.x), batch_size):
            yield self.x[i : i + batch_size], torch.arange(i, min(i + batch_size, len(self.x)))


AnyDomain = Union[Domain, "ImageDomain"]


SOURCE_NAME = "source"  # the name of the labeled domain when there is one (data.source names no other)


@dataclass
class LabeledDomain:
    """One labeled domain of a run: its ``name``, training and held-out parts, and whether it is an intermediate
    domain (``data.intermediate``: labeled samples from an instrument or site nearer the target)."""

    name: str
    train: AnyDomain
    val: AnyDomain | None
    intermediate: bool = False


@dataclass
class DomainData:
    """Training and evaluation data. ``source_train`` / ``source_val`` hold every labeled domain's training and
    held-out samples (with several, ``d`` says whose each sample is); ``labeled`` lists them one by one."""

    source_train: AnyDomain
    source_val: AnyDomain | None
    target_train: AnyDomain
    target_eval: AnyDomain | None
    classes: list[str]
    image: ImageConfig | None = None  # how image files become inputs (image-file data only); saved in checkpoints
    labeled: list[LabeledDomain] = field(default_factory=list)  # empty: one labeled domain, source_train/source_val
    # unlabeled target samples held out of training for the validators alone (data.target_val_fraction); None: the
    # validators read target_train
    target_val: AnyDomain | None = None

    @property
    def domains(self) -> list[LabeledDomain]:
        """The labeled domains, in order (index = ``d``); one named ``source`` when ``labeled`` is empty."""
        return self.labeled or [LabeledDomain(SOURCE_NAME, self.source_train, self.source_val)]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.source_train.input_shape)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def scale(self) -> Scale | None:
        """How the source arrays were stored (None for image files and arrays of unknown origin); checkpoints keep
        it, so ``evaluate`` and ``predict`` can compare new data with it."""
        return getattr(self.source_train, "scale", None)

    def skipped_images(self) -> list[str]:
        """Unreadable image files skipped so far (``data.skip_bad_images``), over all domains, sorted."""
        domains = [self.source_train, self.source_val, self.target_train, self.target_eval, self.target_val]
        domains += [part for p in self.labeled for part in (p.train, p.val)]
        return sorted(set().union(*(d.bad for d in domains if d is not None)))


def joined_weights(parts: Sequence[AnyDomain]) -> torch.Tensor | None:
    """The weights (N,) of ``parts`` one after another, 1 for parts without weights; None when no part has any."""
    if all(p.w is None for p in parts):
        return None
    return torch.cat([p.w if p.w is not None else torch.ones(len(p)) for p in parts])


def part_indices(parts: Sequence[AnyDomain], index: Sequence[int]) -> torch.Tensor:
    """(N,) int64: ``index[i]`` for each sample of ``parts[i]``, the parts one after another."""
    return torch.cat([torch.full((len(p),), i, dtype=torch.int64) for i, p in zip(index, parts, strict=True)])


def check_labels(y: torch.Tensor, num_classes: int, what: str) -> None:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(
            f"{what}: labels must lie in [0, {num_classes}), found values from {int(y.min())} to {int(y.max())}"
        )


def make_domain_data(
    source: AnyDomain | Mapping[str, AnyDomain],
    target: AnyDomain,
    target_eval: AnyDomain | None = None,
    classes: list[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    names: tuple[str, str, str] = ("source", "target", "target_eval"),
    image: ImageConfig | None = None,
    intermediate: Sequence[str] = (),
    origins: Mapping[str, str] | None = None,
) -> DomainData:
    """Check the domains agree, split a held-out set from each labeled domain, and strip labels from the training
    target.

    ``source`` is one labeled domain (named ``source``), or several as a mapping name → domain, whose labels index one
    list of ``classes``; ``intermediate`` names those nearest the target. ``target_eval`` defaults to ``target`` itself
    when that has labels (the usual transductive protocol: the unlabeled target images are also the ones scored).
    ``names`` (one labeled domain, target, target evaluation) and ``origins`` (name → file, for several) are used in
    error messages. Raises ``DataError``, or ``ConfigError`` for an intermediate name that is not a labeled domain."""
    several = isinstance(source, Mapping)
    sources = dict(source) if several else {SOURCE_NAME: source}
    what = {n: (origins or {}).get(n, n if several else names[0]) for n in sources}
    check_intermediate(intermediate, list(sources))
    for name, dom in sources.items():
        if dom.y is None:
            raise DataError(f"{what[name]}: the source data needs labels (array 'y')")
        if len(dom) == 0:
            raise DataError(f"{what[name]}: no samples")
    if len(target) == 0:
        raise DataError(f"{names[1]}: no samples")
    labels = torch.cat([dom.y for dom in sources.values()])  # type: ignore[misc]
    num_classes = len(classes) if classes else int(labels.max()) + 1
    classes = classes or [str(i) for i in range(num_classes)]
    for name, dom in sources.items():
        check_labels(dom.y, num_classes, what[name])  # type: ignore[arg-type]
    first = next(iter(sources.values()))
    others = [(d, what[n], False) for n, d in list(sources.items())[1:]]
    for dom, name, unlabeled in [*others, (target, names[1], True), (target_eval, names[2], True)]:
        if dom is None:
            continue
        if tuple(dom.input_shape) != tuple(first.input_shape):
            raise DataError(
                f"{name}: samples have shape {tuple(dom.input_shape)} but the source samples have shape "
                f"{tuple(first.input_shape)}; both domains must share one input shape"
            )
        if unlabeled and dom.y is not None:
            check_labels(dom.y, num_classes, f"{name} (classes must be those of the source)")
    if target_eval is not None and target_eval.y is None:
        raise DataError(f"{names[2]}: the target evaluation data needs labels (array 'y'): it only serves to score")
    if target_eval is None and target.y is not None:
        target_eval = target
    target_before = target
    sources = {n: _measured(d, what[n]) for n, d in sources.items()}
    target = _measured(target, names[1])
    target_eval = target if target_eval is target_before else _measured(target_eval, names[2])
    scales = [*sources.values(), target, target_eval]
    check_scales([getattr(d, "scale", None) for d in scales if d is not None])
    check_source_classes(labels, list(classes), names[0] if not several else "the labeled domains")
    parts = [
        LabeledDomain(n, *split_source(d, val_fraction, seed, what[n]), n in intermediate) for n, d in sources.items()
    ]
    source_train, source_val = pooled(parts)
    return DomainData(source_train, source_val, target.unlabeled(), target_eval, list(classes), image, parts)


TARGET_VAL_SEED = 104_729  # added to data.seed for the target's held-out draw, apart from the source's split


def hold_out_target(data: DomainData, fraction: float, seed: int) -> DomainData:
    """``data`` with a random ``fraction`` of its unlabeled target training samples moved to ``target_val`` (drawn
    with ``seed``; at least one sample, and one left to train on): no loss, stream or statistic of training reads
    them, only the validators that score checkpoints and the default's noise bands. ``data`` as it is for a fraction
    of 0 or a target of fewer than 2 samples. ``target_eval`` (labels, evaluation only) is left whole."""
    n = len(data.target_train)
    if fraction <= 0 or n < 2:
        return data
    k = min(n - 1, max(1, round(fraction * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + TARGET_VAL_SEED))
    train, val = order[k:].sort().values, order[:k].sort().values
    target = data.target_train
    return dataclasses.replace(data, target_train=target.subset(train), target_val=target.subset(val))


def check_intermediate(intermediate: Sequence[str], names: Sequence[str]) -> None:
    """Every name of ``data.intermediate`` must be a labeled domain's, and one labeled domain at least must be left
    that is not intermediate. Raises ``ConfigError``."""
    unknown = [n for n in intermediate if n not in names]
    if unknown:
        raise ConfigError(
            f"data.intermediate names {unknown[0]!r}, which is not a labeled domain; the labeled domains are "
            f"{', '.join(names)} (name them in data.source as name=path, or as a mapping name: path)"
        )
    if intermediate and set(names) <= set(intermediate):
        raise ConfigError(
            f"data.intermediate marks every labeled domain ({', '.join(names)}) as intermediate; one labeled source "
            "domain at least must stay the source"
        )


def mark_intermediate(data: DomainData, intermediate: Sequence[str]) -> DomainData:
    """``data`` with the labeled domains named in ``intermediate`` marked as intermediate, the others not; ``data``
    as it is when ``intermediate`` is empty (an embedded task keeps its own marks). Raises ``ConfigError``."""
    if not intermediate:
        return data
    check_intermediate(intermediate, [d.name for d in data.domains])
    labeled = [dataclasses.replace(d, intermediate=d.name in intermediate) for d in data.domains]
    return dataclasses.replace(data, labeled=labeled)


def pooled(parts: Sequence[LabeledDomain]) -> tuple[AnyDomain, AnyDomain | None]:
    """(training, held-out) samples of every labeled domain together, ``d`` the index of each one's domain; one
    domain's own parts when there is one."""
    if len(parts) == 1:
        return parts[0].train, parts[0].val
    vals = [(i, p.val) for i, p in enumerate(parts) if p.val is not None]
    train = _join([p.train for p in parts], range(len(parts)))
    return train, _join([v for _, v in vals], [i for i, _ in vals]) if vals else None  # type: ignore[misc]


def _join(parts: Sequence[AnyDomain], index: Sequence[int]) -> AnyDomain:
    """``parts`` one after another: ``d`` = ``index[i]`` for the samples of ``parts[i]``; weights where any part has
    some (1 for the samples of parts without)."""
    return type(parts[0]).join(parts, joined_weights(parts), part_indices(parts, index))  # type: ignore[arg-type]


def _measured(domain: AnyDomain | None, what: str) -> AnyDomain | None:
    """A ``Domain`` built in memory (an embedded task, arrays passed to ``make_domain_data``) gets its scale measured
    here, so its runs record it and ``evaluate``/``predict`` can compare new data with it; others are unchanged."""
    if not isinstance(domain, Domain) or domain.scale is not None:
        return domain
    x = domain.x.detach().cpu().float().numpy()
    return dataclasses.replace(domain, scale=Scale.measure(x, x, what))


def split_source(source: AnyDomain, val_fraction: float, seed: int, what: str) -> tuple[AnyDomain, AnyDomain | None]:
    """(training part, held-out part or None) of a labeled source, by ``stratified_split``."""
    train_idx, val_idx = stratified_split(source.y, val_fraction, seed)
    if len(val_idx) == 0 and round(val_fraction * len(source)) > 0:
        warnings.warn(
            f"{what}: data.val_fraction={val_fraction} holds out no source sample for validation: every class keeps "
            "at least one training sample, and no class has two; validators that need a held-out set (source_acc, "
            "dev) get no score",
            DataWarning,
            stacklevel=3,
        )
    train = source.subset(train_idx)
    check_some_weight(train.w, what)
    return train, source.subset(val_idx) if len(val_idx) else None


def _class_name(classes: list[str], index: int) -> str:
    return str(index) if classes[index] == str(index) else f"{index} ({classes[index]!r})"


def check_source_classes(y: torch.Tensor, classes: list[str], what: str) -> None:
    """A source must hold samples of two classes at least (error); a class with no sample gets a warning naming it,
    since the model has an output for it that nothing trains."""
    counts = torch.bincount(y, minlength=len(classes))
    present = torch.nonzero(counts).squeeze(1).tolist()
    if len(present) < 2:
        raise DataError(
            f"{what}: every source sample has label {_class_name(classes, present[0])}; a classifier needs "
            "labeled samples of at least two classes"
        )
    empty = torch.nonzero(counts == 0).squeeze(1).tolist()
    if empty:
        listed = ", ".join(_class_name(classes, i) for i in empty[:10]) + (", ..." if len(empty) > 10 else "")
        warnings.warn(
            f"{what}: no source sample has label {listed} ({len(empty)} of {len(classes)} classes); the model "
            "gets an output for each that no sample trains, so it will rarely predict them",
            DataWarning,
            stacklevel=3,
        )


def stratified_split(y: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, held-out indices) of labels ``y`` (N,): ``round(val_fraction · N)`` samples held out,
    shared among the classes in proportion to their sizes (largest remainders first), each class's drawn in the
    order of a permutation seeded by ``seed``. Every class keeps at least one training sample: a class with a single
    sample stays in training, and the held-out set is smaller when nothing else can give."""
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    counts = torch.bincount(y)
    room = (counts - 1).clamp_min(0)
    share = val_fraction * counts.double()
    take = torch.minimum(share.floor().long(), room)
    left = round(val_fraction * len(y)) - int(take.sum())
    order = sorted(range(len(counts)), key=lambda c: (-float(share[c] - take[c]), c))  # largest remainder first
    while left > 0 and bool((take < room).any()):
        for c in order:
            if left > 0 and take[c] < room[c]:
                take[c] += 1
                left -= 1
    y_perm = y[perm]
    by_class = torch.argsort(y_perm, stable=True)  # positions in perm, grouped by class, in perm order
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(perm)
    rank[by_class] = torch.arange(len(y)) - starts[y_perm[by_class]]  # place of each sample within its class
    held_out = rank < take[y_perm]
    return perm[~held_out], perm[held_out]
