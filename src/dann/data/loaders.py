"""Step-indexed batches. The batch for step ``s`` is a pure function of (seed, s): each pass over a domain is a
fresh seeded permutation, and passes are concatenated into one endless index stream. So a resumed run sees exactly
the batches an uninterrupted run would, with no iterator state to save."""

from __future__ import annotations

import torch

from .domains import Domain


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Indices (batch_size,) of step ``step`` in the endless stream of seeded permutations of ``range(n)``."""
    start = step * batch_size
    parts, taken = [], 0
    while taken < batch_size:
        epoch, offset = divmod(start + taken, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        part = perm[offset : offset + batch_size - taken]
        parts.append(part)
        taken += len(part)
    return torch.cat(parts)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of (N, C, H, W) by up to ``max_shift`` pixels in each direction (zero fill)."""
    n, c, h, w = x.shape
    off = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(x.device)
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    rows = (off[0][:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (off[1][:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    n_idx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    c_idx = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[n_idx, c_idx, rows, cols]


class StepBatches:
    """Endless batches of one in-memory domain, moved once to ``device``; ``get(step)`` → (x, y or None)."""

    def __init__(self, domain: Domain, batch_size: int, seed: int, device: torch.device, augment: bool) -> None:
        self.x = domain.x.to(device)
        self.y = domain.y.to(device) if domain.y is not None else None
        self.batch_size, self.seed, self.augment = batch_size, seed, augment and self.x.ndim == 4

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = batch_indices(len(self.x), self.batch_size, step, self.seed).to(self.x.device)
        x = self.x[idx]
        if self.augment:
            x = random_shift(x, 2, torch.Generator().manual_seed(self.seed * 1_000_003 + step))
        return x, (self.y[idx] if self.y is not None else None)
