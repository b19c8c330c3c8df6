"""Step-indexed batches. The batch for step ``s`` is a pure function of (seed, s): each pass over a domain is a
fresh seeded permutation, and passes are concatenated into one endless index stream. So a resumed run sees exactly
the batches an uninterrupted run would, with no iterator state to save."""

from __future__ import annotations

import torch

from .domains import Domain


def permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of pass ``epoch`` over ``range(n)``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


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


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of (N, C, H, W) by up to ``max_shift`` pixels in each direction (zero fill).
    ``generator`` must live on ``x``'s device."""
    n, c, h, w = x.shape
    off = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator, device=x.device)
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    rows = (off[0][:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (off[1][:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    n_idx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    c_idx = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[n_idx, c_idx, rows, cols]


class StepBatches:
    """Endless batches of one in-memory domain, held on ``device``; ``get(step)`` → (x, y or None).

    Data and each pass's permutation are copied to the device once, so a step does no host-device transfer."""

    def __init__(self, domain: Domain, batch_size: int, seed: int, device: torch.device, augment: bool) -> None:
        self.x = domain.x.to(device)
        self.y = domain.y.to(device) if domain.y is not None else None
        self.batch_size, self.seed, self.augment = batch_size, seed, augment and self.x.ndim == 4
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = permutation(len(self.x), self.seed, epoch).to(self.x.device)
        return self._perms[epoch]

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        slices = stream_slices(len(self.x), self.batch_size, step)
        idx = (
            torch.cat([self._perm(e)[a:b] for e, a, b in slices])
            if len(slices) > 1
            else self._perm(slices[0][0])[slices[0][1] : slices[0][2]]
        )
        x = self.x[idx]
        if self.augment:
            generator = torch.Generator(self.x.device).manual_seed(self.seed * 1_000_003 + step)
            x = random_shift(x, 2, generator)
        return x, (self.y[idx] if self.y is not None else None)
