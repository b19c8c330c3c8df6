"""Step-indexed batches. The batch for step ``s`` is a pure function of (seed, s): each pass over a domain is a
fresh seeded permutation, and passes are concatenated into one endless index stream (or, with class balancing, each
step draws its classes and images from a generator seeded by (seed, s)). So a resumed run sees exactly the batches
an uninterrupted run would, with no iterator state to save.

Arrays in memory are batched on the device (``StepBatches``); image files stream through a DataLoader whose batch
sampler yields the same step-indexed batches (``LoaderBatches``), with per-sample augmentation seeds, so workers,
prefetching and resume change nothing in what a step sees.

Under torchrun (``dann.training.distributed``) ``batch_size`` stays the global batch and ``rows = (lo, hi)`` picks this
process's rows of it: the indices and augmentation of those rows are the ones the single-process batch has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from ..errors import DataError
from .domains import AnyDomain, Domain
from .images import ImageDomain

SEED_STRIDE = 1_000_003  # separates the streams of different seeds


class Rows(NamedTuple):
    """One step's batch of a stream: ``x`` (B, ...), labels ``y`` (B,) or None, per-sample weights ``w`` (B,) and
    labeled-domain indices ``d`` (B,) when the domain has them, and ``parts``: the number of rows of each labeled
    domain, in order, when the batch joins several domains' batches (``dann.training.stages``); ``i`` (B,): the
    samples' indices in the domain, where known."""

    x: torch.Tensor
    y: torch.Tensor | None
    w: torch.Tensor | None = None
    d: torch.Tensor | None = None
    parts: tuple[int, ...] | None = None
    i: torch.Tensor | None = None


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of pass ``epoch`` over ``range(n)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * SEED_STRIDE + epoch))


def stream_slices(n: int, batch_size: int, step: int) -> list[tuple[int, int, int]]:
    """Where step ``step``'s batch lies in the stream: a list of (epoch, start, stop) slices of permutations."""
    position, end, out = step * batch_size, (step + 1) * batch_size, []
    while position < end:
        epoch, offset = divmod(position, n)
        stop = min(n, offset + end - position)
        out.append((epoch, offset, stop))
        position += stop - offset
    return out


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices (batch_size,) of step ``step`` in the endless stream of seeded permutations of ``range(n)``."""
    return torch.cat([permutation(n, seed, e)[a:b] for e, a, b in stream_slices(n, batch_size, step)])


class ClassBalance:
    """Class-balanced draws from labels ``y`` (N,): each sample of a step picks a class uniformly among those
    present, then an image of that class uniformly (with replacement), from a generator seeded by (seed, step)."""

    def __init__(self, y: torch.Tensor) -> None:
        counts = torch.bincount(y.cpu())
        self.order = torch.argsort(y.cpu(), stable=True)
        self.classes = torch.nonzero(counts).squeeze(1)
        self.counts = counts[self.classes]
        self.starts = (torch.cumsum(counts, 0) - counts)[self.classes]

    def indices(self, batch_size: int, step: int, seed: int) -> torch.Tensor:
        """Indices (batch_size,) of step ``step``."""
        g = torch.Generator().manual_seed((seed * SEED_STRIDE + step) * 2 + 1)  # odd: never a permutation's seed
        k = torch.randint(len(self.classes), (batch_size,), generator=g)
        within = (torch.rand(batch_size, generator=g, dtype=torch.float64) * self.counts[k]).long()
        return self.order[self.starts[k] + within]


def sample_seed(seed: int, step: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` in step ``step``'s batch."""
    return ((seed * SEED_STRIDE + step) * 65_537 + position) % (2**63 - 1)


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator, part: tuple[int, int, int] | None = None
) -> torch.Tensor:
    """Translate each image of (N, C, H, W) by up to ``max_shift`` pixels in each direction (zero fill).
    ``generator`` must live on ``x``'s device. With ``part = (lo, hi, B)``, ``x`` is rows lo..hi of a batch of B
    images and gets the shifts those rows get when the whole batch is shifted."""
    n, c, h, w = x.shape
    lo, hi, total = part or (0, n, n)
    off = torch.randint(0, 2 * max_shift + 1, (2, total), generator=generator, device=x.device)[:, lo:hi]
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    rows = (off[0][:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (off[1][:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    n_idx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    c_idx = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[n_idx, c_idx, rows, cols]


INVERT_SEED = 1 << 40  # offsets the seeds of the inversion draws from those of the shifts


def random_invert(
    x: torch.Tensor, p: float, generator: torch.Generator, part: tuple[int, int, int] | None = None
) -> torch.Tensor:
    """Invert the intensities of each image of (N, C, H, W) with probability ``p``: ``min + max - x``, with the
    image's own minimum and maximum, so an image keeps its range (``1 - x`` for an image spanning [0, 1]; a
    polarity shift, light digits on dark and dark on light). ``generator`` must live on ``x``'s device; ``part``
    as in ``random_shift``."""
    n = len(x)
    lo, hi, total = part or (0, n, n)
    flip = (torch.rand(total, generator=generator, device=x.device) < p)[lo:hi].view(n, 1, 1, 1)
    dims = tuple(range(1, x.ndim))
    mirrored = x.amin(dims, keepdim=True) + x.amax(dims, keepdim=True) - x
    return torch.where(flip, mirrored, x)


class StepBatches:
    """Endless batches of one in-memory domain, held on ``device``; ``get(step)`` → (x, y or None): rows
    ``rows = (lo, hi)`` of the step's batch of ``batch_size`` (all of it by default).

    Data and each pass's permutation are copied to the device once, so a step does no host-device transfer."""

    def __init__(
        self,
        domain: Domain,
        batch_size: int,
        seed: int,
        device: torch.device,
        augment: bool,
        balanced: bool = False,
        rows: tuple[int, int] | None = None,
        invert: float = 0.0,
    ) -> None:
        self.x = domain.x.to(device)
        self.y, self.w, self.d = (v.to(device) if v is not None else None for v in (domain.y, domain.w, domain.d))
        # random shifts scale with the image: 2 pixels at 28×28 (the paper's digits), none below 14×14
        self.max_shift = min(self.x.shape[-2:]) // 14 if self.x.ndim == 4 else 0
        self.batch_size, self.seed, self.augment = batch_size, seed, augment and self.max_shift > 0
        self.invert = invert if augment and self.x.ndim == 4 else 0.0
        self.rows = rows or (0, batch_size)
        self.balance = ClassBalance(domain.y) if balanced and domain.y is not None else None
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = permutation(len(self.x), self.seed, epoch).to(self.x.device)
        return self._perms[epoch]

    def _indices(self, step: int) -> torch.Tensor:
        if self.balance is not None:
            return self.balance.indices(self.batch_size, step, self.seed).to(self.x.device, non_blocking=True)
        slices = stream_slices(len(self.x), self.batch_size, step)
        if len(slices) > 1:
            return torch.cat([self._perm(e)[a:b] for e, a, b in slices])
        return self._perm(slices[0][0])[slices[0][1] : slices[0][2]]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.get_rows(step)[:2]

    def get_rows(self, step: int) -> Rows:
        """``get`` with the samples' weights and labeled-domain indices, where the domain has them."""
        idx = self._indices(step)
        if self.rows != (0, self.batch_size):
            idx = idx[self.rows[0] : self.rows[1]]
        x = self.x[idx]
        if self.augment:
            generator = torch.Generator(self.x.device).manual_seed(self.seed * SEED_STRIDE + step)
            x = random_shift(x, self.max_shift, generator, (*self.rows, self.batch_size))
        if self.invert:  # its own generator: the shifts of a run without inversion stay as they were
            generator = torch.Generator(self.x.device).manual_seed(INVERT_SEED + self.seed * SEED_STRIDE + step)
            x = random_invert(x, self.invert, generator, (*self.rows, self.batch_size))
        return Rows(x, *(v[idx] if v is not None else None for v in (self.y, self.w, self.d)), i=idx)


class StepSampler:
    """A DataLoader batch sampler: for steps ``start``, ``start + 1``, ... it yields rows ``rows = (lo, hi)`` (all by
    default) of that step's batch, the same indices ``StepBatches`` would use, as ``(index, augmentation seed)``
    pairs (plain indices without ``augment``)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        augment: bool,
        balance: ClassBalance | None = None,
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.n, self.batch_size, self.seed, self.start, self.augment = n, batch_size, seed, start, augment
        self.balance = balance
        self.rows = rows or (0, batch_size)

    def indices(self, step: int) -> torch.Tensor:
        if self.balance is not None:
            return self.balance.indices(self.batch_size, step, self.seed)
        return batch_indices(self.n, self.batch_size, step, self.seed)

    def __iter__(self) -> Iterator[list]:
        step, (lo, hi) = self.start, self.rows
        while True:
            idx = self.indices(step)[lo:hi].tolist()
            yield [(i, sample_seed(self.seed, step, j)) for j, i in enumerate(idx, lo)] if self.augment else idx
            step += 1


class LoaderBatches:
    """Endless batches of an ``ImageDomain`` through a DataLoader (workers, pinned memory); ``get(step)`` → (x, y or
    None) on ``device``. Steps are asked in order from ``start``; each batch is a pure function of (seed, step)."""

    def __init__(
        self,
        domain: ImageDomain,
        batch_size: int,
        seed: int,
        device: torch.device,
        start: int,
        augment: bool,
        balanced: bool = False,
        rows: tuple[int, int] | None = None,
        share: int = 1,
    ) -> None:
        balance = ClassBalance(domain.y) if balanced and domain.y is not None else None
        sampler = StepSampler(len(domain), batch_size, seed, start, augment, balance, rows)
        self.domain, self.device, self.next_step = domain, device, start
        self._batches = iter(domain.loader(device.type == "cuda", share=share, batch_sampler=sampler))

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.get_rows(step)[:2]

    def get_rows(self, step: int) -> Rows:
        """``get`` with the samples' weights and labeled-domain indices, where the domain has them."""
        if step != self.next_step:
            raise RuntimeError(f"LoaderBatches streams steps in order: asked for step {step}, next is {self.next_step}")
        x, y, index, bad = next(self._batches)
        self.next_step += 1
        self.domain.check(bad)
        if len(x) == 0:
            raise DataError(f"{self.domain.name}: every image of the batch of step {step} was unreadable")
        domain = self.domain
        w = domain.w[index] if domain.w is not None else None
        d = domain.d[index] if domain.d is not None else None
        y, w, d, i = (v.to(self.device, non_blocking=True) if v is not None else None for v in (y, w, d, index))
        return Rows(x.to(self.device, non_blocking=True), y if domain.y is not None else None, w, d, i=i)


def step_batches(
    domain: AnyDomain,
    batch_size: int,
    seed: int,
    device: torch.device,
    start: int = 0,
    augment: bool = True,
    balanced: bool = False,
    rows: tuple[int, int] | None = None,
    share: int = 1,
    invert: float = 0.0,
) -> StepBatches | LoaderBatches:
    """The batch stream of a domain: on the device for arrays, through a DataLoader for image files. With ``rows``,
    only those rows of each step's batch of ``batch_size`` (one process's share under torchrun). ``share``: how many
    streams run at once, which share the CPUs for loader workers (``images.default_workers``). ``invert``: the
    probability of inverting an array image (``data.invert``; image files invert in their own transform)."""
    if isinstance(domain, ImageDomain):
        return LoaderBatches(domain, batch_size, seed, device, start, augment, balanced, rows, share)
    return StepBatches(domain, batch_size, seed, device, augment, balanced, rows, invert)
