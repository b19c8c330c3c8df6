"""How often a run evaluates and logs (``train.eval_every`` and ``train.log_every``, ``auto`` by default), and the
training terms it logs at every log step (``train.jsonl``), which the report's curves draw."""

import math

import pytest
import yaml

import dann
from dann.config import AUTO, Config, ConfigError, load_config, replace, resolve_intervals, resume_config
from dann.reporting import plots
from dann.reporting.report import build_report
from dann.runs import CONFIG_FILE, METRICS_FILE, TRAIN_LOG_FILE, read_jsonl
from dann.training.cadence import MIN_EVAL_INTERVAL, eval_interval, log_interval, nice_floor, nice_interval

NICE = {m * 10**k for m in (1, 2, 5) for k in range(7)}


@pytest.mark.parametrize(
    ("steps", "evaluations"), [(40, (5, 10)), (300, (5, 10)), (1000, (8, 20)), (3000, (12, 32)), (100000, (12, 32))]
)
def test_auto_evaluates_a_handful_to_about_20_times_at_nice_intervals(steps, evaluations):
    every = eval_interval(steps)
    count = math.ceil(steps / every)  # with the one at the last step
    assert every in NICE and evaluations[0] <= count <= evaluations[1], (every, count)
    assert every >= min(MIN_EVAL_INTERVAL, steps // 10)  # an evaluation costs some 30 to 60 steps
    log = log_interval(steps, every)
    assert log in NICE and log <= every and (steps < 100 or steps / log >= 2 * count)  # more points: the losses


def test_the_intervals_of_a_300_and_a_3000_step_run():
    assert (eval_interval(300), log_interval(300, eval_interval(300))) == (50, 5)
    assert (eval_interval(3000), log_interval(3000, eval_interval(3000))) == (200, 20)
    assert [eval_interval(s) for s in (1, 4, 12)] == [1, 1, 2]  # tiny runs: every step or two, 5+ evaluations


def test_nice_numbers():
    assert [nice_interval(x) for x in (0.3, 1, 1.4, 1.5, 3, 3.2, 7, 7.1, 15, 150, 5000)] == [
        1, 1, 1, 2, 2, 5, 5, 10, 20, 200, 5000
    ]  # fmt: skip
    assert [nice_floor(x) for x in (0.5, 1, 4.9, 8, 60, 99)] == [1, 1, 2, 5, 50, 50]


def test_auto_is_the_default_and_a_given_interval_is_kept():
    assert (Config().train.eval_every, Config().train.log_every) == (AUTO, AUTO)
    auto = resolve_intervals(load_config(overrides=["train.steps=300"]))
    assert (auto.train.eval_every, auto.train.log_every) == (50, 5)
    given = resolve_intervals(load_config(overrides=["train.steps=300", "train.eval_every=7", "train.log_every=3"]))
    assert (given.train.eval_every, given.train.log_every) == (7, 3)
    only_eval = resolve_intervals(load_config(overrides=["train.steps=300", "train.eval_every=2"]))
    assert only_eval.train.log_every == 2  # never longer than the evaluation interval
    assert load_config("moons").train.eval_every == 500  # a preset's own interval stays


@pytest.mark.parametrize("value", [0, -5, "often", True, 2.5])
def test_an_interval_is_a_positive_integer_or_auto(value):
    with pytest.raises(ConfigError, match=r"train\.eval_every must be"):
        load_config(values={"train": {"eval_every": value}})


def test_a_resume_left_on_auto_keeps_the_intervals_the_run_recorded(tiny_cfg):
    saved = replace(tiny_cfg, train={"steps": 300, "eval_every": 50, "log_every": 5})
    assert resume_config(saved, replace(saved, train={"eval_every": AUTO, "log_every": AUTO}), "run") == saved
    changed = resume_config(saved, replace(saved, train={"eval_every": 100}), "run")
    assert changed.train.eval_every == 100  # a resumable setting: a given number is taken


def test_a_short_run_logs_its_training_terms_at_every_log_step_and_the_report_draws_them(
    tiny_cfg, tiny_data, tmp_path, monkeypatch
):
    cfg = replace(tiny_cfg, train={"steps": 100, "eval_every": AUTO, "log_every": AUTO})
    result = dann.fit(cfg, tmp_path / "run", data=tiny_data)
    run, evals, logs = result.run_dir, list(range(20, 101, 20)), list(range(5, 101, 5))
    saved = yaml.safe_load((run / CONFIG_FILE).read_text())["train"]
    assert (saved["eval_every"], saved["log_every"]) == (result.config.train.eval_every, 5) == (20, 5)
    evaluations, logged = read_jsonl(run / METRICS_FILE), read_jsonl(run / TRAIN_LOG_FILE)
    assert [r["step"] for r in evaluations] == evals and evaluations == result.history
    assert [r["step"] for r in logged] == logs
    assert {"cls", "adv", "domain_acc", "grl_lambda", "lr"} <= set(logged[0]["train"])
    at_evaluations = {r["step"]: r["train"] for r in logged if r["step"] in evals}
    assert at_evaluations == {r["step"]: r["train"] for r in evaluations}  # the same window, in both files

    drawn = []
    draw = plots.training_curves
    monkeypatch.setattr(plots, "training_curves", lambda *args: drawn.append(args) or draw(*args))
    build_report(run, tiny_data)
    history, validator, _, log = drawn[0]
    panels = dict(plots.training_panels(history, log, validator))
    lines = {label: steps for lines in panels.values() for label, steps, _, _ in lines}
    for term in ("cls", "adv", "GRL λ", "lr", "domain_acc"):  # at every log step
        assert lines[term] == logs, term
    for label in ("source held-out acc", validator):  # at every evaluation
        assert lines[label] == evals, label


def test_the_curves_of_a_run_without_train_jsonl_come_from_its_evaluations(tiny_cfg, tiny_data, tmp_path):
    from dann.reporting.summary import summarize

    run = dann.fit(tiny_cfg, tmp_path / "run", data=tiny_data).run_dir
    (run / TRAIN_LOG_FILE).unlink()  # as written before train.jsonl existed
    summary = summarize(run)
    assert [r["step"] for r in summary.train_log] == [6, 12] and summary.train_log == summary.history
