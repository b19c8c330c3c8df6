"""``data.target_val_fraction``: a share of the unlabeled target held out of training. No loss, batch stream or
statistic of training reads it (a spy on the target batch stream); the validators read it alone; the split is seeded,
disjoint and complete, and the same through ``dann.fit`` and ``DANNClassifier``."""

import dataclasses

import numpy as np
import pytest
import torch

import dann
from dann.config import replace
from dann.data import hold_out_target
from dann.errors import ConfigError
from dann.plan import build_run_data
from dann.selection import validators as validators_module
from dann.training import trainer as trainer_module

from .conftest import blobs, tiny_config, tiny_domains


def rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.flatten(1).tolist()}


@pytest.mark.parametrize(("fraction", "n", "held"), [(0.1, 60, 6), (0.5, 60, 30), (0.01, 60, 1), (0.9, 3, 2)])
def test_the_split_is_seeded_disjoint_and_complete(fraction, n, held):
    data = tiny_domains()
    data = dataclasses.replace(data, target_train=data.target_train.subset(torch.arange(n)))
    split = hold_out_target(data, fraction, seed=0)
    assert len(split.target_val) == held and len(split.target_train) == n - held
    assert rows(split.target_val.x).isdisjoint(rows(split.target_train.x))
    assert rows(split.target_val.x) | rows(split.target_train.x) == rows(data.target_train.x)
    assert split.target_val.y is None and split.target_eval is data.target_eval  # evaluation keeps every sample
    again, other = hold_out_target(data, fraction, seed=0), hold_out_target(data, fraction, seed=1)
    assert torch.equal(again.target_val.x, split.target_val.x)
    assert n < 10 or not torch.equal(other.target_val.x, split.target_val.x)


def test_no_split_without_a_fraction_or_with_one_sample():
    data = tiny_domains()
    assert hold_out_target(data, 0.0, 0) is data
    one = dataclasses.replace(data, target_train=data.target_train.subset(torch.arange(1)))
    assert hold_out_target(one, 0.5, 0) is one
    with pytest.raises(ConfigError, match=r"data\.target_val_fraction"):
        dann.load_config(None, ["data.target_val_fraction=1.0"])


def test_training_never_reads_the_held_out_target_and_the_validators_read_nothing_else(monkeypatch):
    data = hold_out_target(tiny_domains(), 0.25, seed=0)
    held = rows(data.target_val.x)
    streamed, scored = [], []
    stream = trainer_module.step_batches

    def spy_stream(domain, *args, **kwargs):
        batches = stream(domain, *args, **kwargs)
        get = batches.get_rows

        def get_rows(step):
            got = get(step)
            streamed.append(got.x)
            return got

        batches.get_rows = get_rows
        return batches

    embed = validators_module.embed

    def spy_embed(net, domain, *args, **kwargs):
        scored.append(domain.x)
        return embed(net, domain, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "step_batches", spy_stream)
    monkeypatch.setattr(validators_module, "embed", spy_embed)
    dann.fit(tiny_config(), data=data)
    assert streamed and all(rows(x).isdisjoint(held) for x in streamed)  # no training batch holds a held-out sample
    assert any(rows(x) == held for x in scored)  # the validators' target outputs: the held-out part, all of it
    assert all(rows(x).isdisjoint(rows(data.target_train.x)) for x in scored if rows(x) & held)


def test_build_data_and_the_estimator_hold_out_the_same_share():
    cfg = dann.load_config("moons", ["data.target_val_fraction=0.2"])
    data = build_run_data(cfg.data, cfg.model)
    whole = build_run_data(replace(cfg, data={"target_val_fraction": 0.0}).data, cfg.model)
    assert len(data.target_val) == round(0.2 * len(whole.target_train))
    assert len(data.target_train) + len(data.target_val) == len(whole.target_train)

    x_s, y_s = blobs(80, 0.0, 0)
    x_t, _ = blobs(50, 1.5, 1)
    clf = dann.DANNClassifier(method="dann", max_steps=4, random_state=0, config={"data.target_val_fraction": 0.2})
    seen = []
    fit = dann.api.fit

    def spy(cfg=None, out=None, **kwargs):
        seen.append(kwargs["data"])
        return fit(cfg, out, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(dann.api, "fit", spy)
        clf.fit(np.asarray(x_s), y_s, X_target=np.asarray(x_t))
    assert len(seen[0].target_val) == 10 and len(seen[0].target_train) == 40
