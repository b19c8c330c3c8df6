import math

import pytest

from dann.training.schedules import GRL_SCHEDULES, LR_SCHEDULES, cosine_lr, grl_lambda, lr_factor, warm_start_grl


def test_paper_grl_schedule_endpoints_and_midpoint():
    assert grl_lambda(0.0) == 0.0
    assert grl_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)


def test_paper_lr_annealing_endpoints():
    assert lr_factor(0.0) == 1.0
    assert lr_factor(1.0) == pytest.approx(11**-0.75)
    assert lr_factor(1.0, alpha=10, beta=0.75) * 0.01 == pytest.approx(0.01 / 11**0.75)


def test_other_schedules_endpoints():
    assert cosine_lr(0.0) == 1.0 and cosine_lr(1.0) == pytest.approx(0.0)
    assert LR_SCHEDULES.get("constant")(0.7) == 1.0
    assert warm_start_grl(0.0, lo=0.2, hi=0.8) == pytest.approx(0.2)
    assert warm_start_grl(1.0, lo=0.2, hi=0.8) == pytest.approx(0.2 + 0.6 * grl_lambda(1.0))
    assert GRL_SCHEDULES.get("constant")(0.0, hi=0.4) == 0.4
    assert GRL_SCHEDULES.get("ganin")(1.0, hi=0.5) == pytest.approx(0.5 * grl_lambda(1.0))


@pytest.mark.parametrize("name", GRL_SCHEDULES.names())
def test_grl_schedules_are_monotone(name):
    values = [GRL_SCHEDULES.get(name)(i / 20, 0.1, 1.0, 10.0) for i in range(21)]
    assert values == sorted(values)


@pytest.mark.parametrize("p", [-0.1, 1.01])
def test_progress_outside_unit_interval_is_refused(p):
    with pytest.raises(ValueError, match="progress"):
        grl_lambda(p)


@pytest.mark.parametrize(
    ("schedule", "hi", "gamma"), [("ganin", 1.0, 10.0), ("ganin", 0.5, 5.0), ("constant", 0.3, 10.0)]
)
def test_the_trainer_applies_the_grl_schedule_at_each_steps_progress(tiny_cfg, tiny_data, schedule, hi, gamma):
    """The λ each step's loss used, as logged (one step per log window), against the paper's formula written out:
    step s of S runs at progress p = s / S, and λ(p) = hi · (2 / (1 + exp(−γ p)) − 1) (the schedule of Ganin et
    al., JMLR 2016, scaled by grl_hi), or hi throughout for the constant schedule."""
    import dann
    from dann.config import replace

    steps = 6
    cfg = replace(
        tiny_cfg,
        method={"grl_schedule": schedule, "grl_hi": hi, "grl_gamma": gamma},
        train={"steps": steps, "eval_every": 1, "log_every": 1},
    )
    history = dann.fit(cfg, data=tiny_data).history
    for record in history:
        p = (record["step"] - 1) / steps
        expected = hi * (2 / (1 + math.exp(-gamma * p)) - 1) if schedule == "ganin" else hi
        assert record["train"]["grl_lambda"] == pytest.approx(expected, rel=1e-6, abs=1e-9), record["step"]
    assert [r["step"] for r in history] == list(range(1, steps + 1))
