"""One seed per use of randomness, all derived from ``train.seed``, so that two uses never draw the same numbers.

Before this helper, the network was built right after ``torch.manual_seed(train.seed)`` and the trainer reseeded
the global generator with the same value: the first dropout masks were made of the very numbers that had drawn the
initial weights. Every place that seeds a generator asks ``derive_seed`` instead (``api.fit``, the trainer, the
report's initial network, ``dann bench``), so the purposes stay apart wherever they are seeded.

=========  ============================================================  ==========================================
purpose    what draws from it                                            value
=========  ============================================================  ==========================================
``init``   the initial weights: the global generator, right before the   ``seed`` itself, so a run's network is the
           network is built (``dann.fit``, the report's "initialization"  one earlier versions built
           row)
``data``   the step-indexed batch streams and their augmentation         ``seed`` itself (source; the target stream
           (``dann.data.loaders``); never the global generator: each      uses ``seed + 1``), as in earlier versions,
           pass and step gets its own ``torch.Generator`` seeded from     so batches are unchanged
           (seed, pass or step)
``train``  the global generators while training: dropout masks,          a hash of (seed, rank) with NumPy's
           FixMatch's strong augmentation; one stream per process         ``SeedSequence``, in ``[2**28, 2**32)``:
           (``rank`` under torchrun)                                      never a valid ``train.seed``, so never an
                                                                          ``init`` seed
=========  ============================================================  ==========================================
"""

from __future__ import annotations

import numpy as np

from ..config import SEED_LIMIT

PURPOSES = ("init", "data", "train")
_TRAIN_SPAN = 2**32 - SEED_LIMIT  # train seeds lie in [SEED_LIMIT, 2**32): above every train.seed


def derive_seed(seed: int, purpose: str, rank: int = 0) -> int:
    """The seed of ``purpose`` (``init``, ``data`` or ``train``; see the table above) for ``train.seed = seed`` in
    process ``rank`` (0 outside torchrun; only ``train`` depends on it: every process builds the same network and
    reads the same global batch). Raises ``ValueError`` for an unknown purpose or a negative seed or rank."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; valid: {', '.join(PURPOSES)}")
    if seed < 0 or rank < 0:
        raise ValueError(f"seed and rank must be >= 0, got seed={seed}, rank={rank}")
    if purpose != "train":
        return seed
    state = np.random.SeedSequence(seed, spawn_key=(PURPOSES.index(purpose), rank)).generate_state(1, np.uint64)
    return SEED_LIMIT + int(state[0] % _TRAIN_SPAN)
