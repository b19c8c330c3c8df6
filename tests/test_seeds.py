"""One seed per use of randomness (``dann.training.seeds``): initialization and the training stream never draw the
same numbers, every process has its own training stream, and the report rebuilds the network fit started from."""

import pytest
import torch

import dann
from dann.config import SEED_LIMIT, replace
from dann.training.seeds import PURPOSES, derive_seed


def test_every_purpose_and_rank_gets_its_own_training_stream():
    for seed in range(200):
        assert derive_seed(seed, "init") == derive_seed(seed, "data") == seed  # the networks and batches of old runs
        train = [derive_seed(seed, "train", rank) for rank in range(4)]
        assert len(set(train)) == 4 and all(SEED_LIMIT <= s < 2**32 for s in train)  # never a train.seed
    assert derive_seed(7, "train", 1) == derive_seed(7, "train", 1)  # a pure function
    with pytest.raises(ValueError, match=f"unknown seed purpose 'dropout'; valid: {', '.join(PURPOSES)}"):
        derive_seed(0, "dropout")


def test_the_first_dropout_mask_is_not_drawn_from_the_numbers_that_initialized_the_network(
    tiny_cfg, tiny_data, monkeypatch
):
    """The generator's state when training draws its first dropout mask: that of the ``train`` seed, not the state
    right after seeding with the ``init`` seed (from which the initial weights were drawn)."""
    cfg = replace(tiny_cfg, model={"dropout": 0.5}, train={"steps": 1, "eval_every": 1})
    states = []
    dropout = torch.nn.functional.dropout

    def spy(x, p=0.5, training=True, inplace=False):
        if training:
            states.append(torch.get_rng_state())
        return dropout(x, p, training, inplace)

    monkeypatch.setattr(torch.nn.functional, "dropout", spy)
    dann.fit(cfg, data=tiny_data)
    init = torch.Generator().manual_seed(derive_seed(cfg.train.seed, "init")).get_state()
    train = torch.Generator().manual_seed(derive_seed(cfg.train.seed, "train")).get_state()
    assert states, "the discriminator drew no dropout mask"
    assert not torch.equal(states[0], init)
    assert torch.equal(states[0], train)
