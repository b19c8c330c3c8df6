"""``dann tune``: the choice reads no target label, the collapse guard, kill and continue, refusals, a CLI round trip,
regularized grid entries and shot started from the control. Tiny moons runs on the CPU (30 steps each)."""

import dataclasses
import importlib
import json
import re
import shutil

import pytest
import torch

import dann
from dann.cli import main
from dann.config import load_config
from dann.data import Domain
from dann.errors import ConfigError, RunDirError
from dann.plan import build_run_data
from dann.runs import LAST_CHECKPOINT, load_checkpoint
from dann.training.trainer import Trainer

tune_module = importlib.import_module("dann.selection.tune")  # `dann.tune` is the function; this is its module

FAST = ["train.steps=30", "train.eval_every=15", "train.device=cpu"]
GRID = {"methods": ("cdan_e",), "lambdas": (1.0, 1000.0)}  # λ_adv = 1000 makes cdan_e collapse on moons
CLI = ["--config", "moons", "--steps", "30", "--set", "train.eval_every=15", "--device", "cpu"]
CLI_GRID = ["--methods", "cdan_e", "--lambdas", "1", "1000"]
NAMES = ["source_only", "cdan_e-l1-lr0.05", "cdan_e-l1000-lr0.05"]


def moons():
    return load_config("moons", FAST)


def by_name(result):
    return {row["name"]: row for row in result.rows}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One uninterrupted tune: the control and cdan_e at λ_adv 1 and 1000 (read-only: copy before changing)."""
    return dann.tune(moons(), tmp_path_factory.mktemp("tune") / "moons", progress=False, **GRID)


@pytest.fixture
def fits(monkeypatch):
    """Every ``dann.api.fit`` call tune makes, as (run name, resumed)."""
    calls, fit = [], dann.api.fit

    def counted(cfg=None, out=None, **kwargs):
        calls.append((out.name, kwargs.get("resume", False)))
        return fit(cfg, out, **kwargs)

    monkeypatch.setattr(dann.api, "fit", counted)
    return calls


def test_the_guard_excludes_a_collapsed_run_the_validator_would_have_chosen(tuned):
    rows = by_name(tuned)
    assert [r["name"] for r in tuned.rows] == NAMES
    control, good, collapsed = (rows[n] for n in NAMES)
    assert collapsed["source_val_acc"] < control["source_val_acc"] - 0.02  # λ_adv = 1000 wrecked the classifier
    assert collapsed["score"] > max(control["score"], good["score"])  # ... and bnm alone would have chosen it
    assert not collapsed["eligible"] and collapsed["rank"] is None
    assert (
        collapsed["reason"].startswith("collapse guard: source held-out")
        and "below the control's" in collapsed["reason"]
    )
    assert good["eligible"] and control["eligible"]
    best = max((control, good), key=lambda r: r["score"])
    assert tuned.chosen == best["name"] and best["rank"] == 1
    saved = json.loads((tuned.out / "tune.json").read_text())
    assert saved["status"] == "done" and saved["chosen"]["name"] == tuned.chosen and saved["rows"] == tuned.rows
    assert saved["grid"] == {"methods": ["cdan_e"], "lambdas": [1.0, 1000.0], "lrs": [0.05]}
    assert all(row["oracle"]["note"] == "uses target labels, not used for the choice" for row in saved["rows"])
    md = (tuned.out / "tune.md").read_text()
    assert "target acc (uses target labels, not used for the choice)" in md and collapsed["reason"] in md
    assert f"Target labels would have picked `{tuned.oracle_pick}`" in md
    assert (tuned.out / "compare.html").read_text().count("cdan_e-l1000-lr0.05") >= 1
    assert tuned.chosen_dir.is_dir() and f"dann predict --run {tuned.chosen_dir}" in tuned.summary()


def test_target_labels_never_change_scores_or_choice(tuned, tmp_path, capsys):
    cfg = moons()
    data = build_run_data(cfg.data, cfg.model)
    y = data.target_eval.y
    permuted = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    assert (permuted != y).any()
    data = dataclasses.replace(data, target_eval=Domain(data.target_eval.x, permuted))
    result = dann.tune(cfg, tmp_path / "permuted", data=data, progress=False, **GRID)
    assert capsys.readouterr().out == ""  # progress=False is silent

    def without_labels(rows):
        return [{k: v for k, v in row.items() if k != "oracle"} for row in rows]

    assert without_labels(result.rows) == without_labels(tuned.rows)
    assert (result.chosen, result.why) == (tuned.chosen, tuned.why)
    assert [r["oracle"] for r in result.rows] != [r["oracle"] for r in tuned.rows]  # the labels did change


def test_judge_rules_without_training():
    def row(name, score, acc, step=10, failed=None):
        problem = None if score is not None else "missing"
        return {"name": name, "score": score, "score_problem": problem, "source_val_acc": acc, "step": step} | {
            "failed": failed
        }

    rows = [row("source_only", 0.5, 0.90), row("nan", None, 0.9), row("edge", 0.6, 0.88), row("fell", 0.9, 0.879)]
    rows += [row("short", 0.99, 0.9, step=5), row("diverged", None, None, None, "non-finite loss at step 3")]
    tune_module.judge(rows, 2.0, "bnm", steps=10)
    reasons = {r["name"]: (r["eligible"], r["reason"]) for r in rows}
    assert reasons["nan"] == (False, "`bnm` score missing at the last evaluation")
    assert reasons["edge"][0]  # exactly 2 points below the control: still eligible
    assert not reasons["fell"][0] and "2.1 points below" in reasons["fell"][1]
    assert reasons["short"] == (False, "unfinished: its last evaluation is at step 5")
    assert reasons["diverged"] == (False, "training stopped: non-finite loss at step 3")
    assert tune_module.choose(rows, "bnm")[0] == "edge"
    tune_module.judge(rows[:2] + rows[3:], 2.0, "bnm", steps=10)  # without "edge": no adapted run passes
    name, why = tune_module.choose(rows[:2] + rows[3:], "bnm")
    assert name == "source_only" and why.startswith("no adapted run is eligible")
    one = [row("source_only", 0.5, 0.90), row("one", 0.9, 0.88), row("two", 0.9, 0.86)]  # held out: 50 samples
    tune_module.judge(one, 1.0, "bnm", steps=10, held_out=50)  # one sample is 2 points, more than the guard
    assert (
        one[1]["eligible"] and not one[2]["eligible"] and "one of 50 held-out samples, 2.0 points" in one[2]["reason"]
    )
    assert "one is 2.0 points, more than the 1-point guard" in tune_module.guard_note(1.0, 50)
    assert tune_module.guard_note(2.0, 90) is None  # one of 90 samples: 1.1 points, finer than the guard
    rows[2]["score"] = 0.4  # "edge" passes the guard but scores below the control
    tune_module.judge(rows, 2.0, "bnm", steps=10)
    name, why = tune_module.choose(rows, "bnm")
    assert name == "source_only" and why.endswith("adaptation did not help")


def test_a_killed_tune_continues_where_it_stopped(tuned, tmp_path, monkeypatch, fits, capsys):
    out, evaluate, save = tmp_path / "killed", Trainer._evaluate, Trainer._save

    def die_before_first_checkpoint(self, *args):
        if self.run_dir.name == NAMES[1]:
            raise KeyboardInterrupt
        return evaluate(self, *args)

    def die_after_first_checkpoint(self, *args):
        save(self, *args)
        if self.run_dir.name == NAMES[2]:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_evaluate", die_before_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        dann.tune(moons(), out, progress=False, **GRID)
    assert (out / "runs" / NAMES[1] / "config.yaml").is_file() and not (
        out / "runs" / NAMES[1] / LAST_CHECKPOINT
    ).exists()
    assert json.loads((out / "tune.json").read_text())["status"] == "running" and not (out / "tune.md").exists()
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    monkeypatch.setattr(Trainer, "_save", die_after_first_checkpoint)
    fits.clear()
    with pytest.raises(KeyboardInterrupt):
        dann.tune(moons(), out, progress=False, **GRID)
    assert fits == [(NAMES[1], False), (NAMES[2], False)]  # the control is reused; NAMES[1] trained afresh
    assert load_checkpoint(out / "runs" / NAMES[2] / LAST_CHECKPOINT).step == 15
    monkeypatch.setattr(Trainer, "_save", save)
    fits.clear()
    result = dann.tune(moons(), out, **GRID)
    assert fits == [(NAMES[2], True)]  # only the unfinished run, resumed from its checkpoint
    assert result.rows == tuned.rows and result.chosen == tuned.chosen  # as if never killed
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tune: 3 runs (30 steps each), one after another")
    lines = lines[1:]
    assert lines[0] == (
        f"[1/3] source_only: bnm {tuned.rows[0]['score']:.4f}, source held-out "
        f"{100 * tuned.rows[0]['source_val_acc']:.1f}% (best so far: source_only {tuned.rows[0]['score']:.4f}), "
        "already trained"
    )
    assert "not eligible: collapse guard" in lines[2] and not lines[2].endswith("already trained")
    fits.clear()
    assert dann.tune(moons(), out, progress=False, **GRID).rows == tuned.rows and fits == []  # all reused


def test_a_rerun_with_another_grid_or_config_is_refused(tuned, tmp_path, fits):
    out = tmp_path / "copy"
    shutil.copytree(tuned.out, out)
    before = (out / "tune.json").read_text()
    with pytest.raises(RunDirError, match=r"another grid, config or data \(grid.lambdas: \[1.0, 1000.0\] → \[1.0\]\)"):
        dann.tune(moons(), out, methods=("cdan_e",), lambdas=(1.0,), progress=False)
    with pytest.raises(RunDirError, match=r"config.train.steps: 30 → 20"):
        dann.tune(load_config("moons", [*FAST, "train.steps=20"]), out, progress=False, **GRID)
    assert (out / "tune.json").read_text() == before and fits == []
    judged = dann.tune(
        load_config("moons", [*FAST, "selection.validator=dev"]), out, guard=50.0, progress=False, **GRID
    )
    assert fits == [] and judged.validator == "dev" and all(row["eligible"] for row in judged.rows)  # re-ranked only
    dev = [json.loads(line) for line in (out / "runs" / NAMES[2] / "metrics.jsonl").read_text().splitlines()][-1]
    assert by_name(judged)[NAMES[2]]["score"] == dev["validators"]["dev"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="is not a tune folder"):
        dann.tune(moons(), other, progress=False, **GRID)
    assert (other / "notes.txt").is_file()
    result = dann.tune(moons(), other, methods=("dann",), lambdas=(1.0,), overwrite=True, progress=False)
    assert not (other / "notes.txt").exists() and [r["name"] for r in result.rows] == ["source_only", "dann-l1-lr0.05"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"methods": ("nosuch",)}, "unknown method 'nosuch'"),
        ({"methods": ("dann+nosuch",)}, "unknown regularizer 'nosuch'"),
        ({"methods": ("source_only",)}, "source_only is the control"),
        ({"methods": ("mcc+mcc",)}, "already method 'mcc'"),
        ({"methods": ("dann+entropy:x",)}, "the weight of 'entropy' must be a number"),
        ({"methods": ()}, "at least one method"),
        ({"lambdas": (1.0, 1)}, "the grid repeats a point: dann-l1-lr0.05"),
        ({"lrs": (0.0,)}, "optim.lr must be > 0"),
        ({"guard": -1.0}, "guard must be a number of percentage points >= 0"),
    ],
)
def test_grid_mistakes_fail_before_anything_is_written(options, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        dann.tune(moons(), tmp_path / "t", **{"methods": ("dann",), **options})
    assert not (tmp_path / "t").exists()


def test_method_strings():
    assert tune_module.parse_method("dann+mcc") == ("dann", {"mcc": 1.0})
    assert tune_module.parse_method("cdan+entropy:0.1+mcc") == ("cdan", {"entropy": 0.1, "mcc": 1.0})


def test_a_choice_that_optimizes_the_validator_comes_with_a_caution():
    caution = tune_module.caution
    assert caution({"method": "dann", "regularizers": {"mcc": 1.0}}, "bnm").startswith("mcc trains the target")
    assert caution({"method": "shot", "regularizers": {"entropy": 0.1}}, "im").startswith("entropy and shot train")
    assert caution({"method": "mcc", "regularizers": {}}, "dev") is None  # dev reads source losses, not confidence
    assert caution({"method": "dann", "regularizers": {}}, "bnm") is None


def test_regularized_entries_and_shot_from_the_control(tmp_path):
    out = tmp_path / "t"
    result = dann.tune(moons(), out, methods=("dann+mcc", "shot"), lambdas=(0.3,), progress=False)
    rows = by_name(result)
    assert list(rows) == ["source_only", "dann+mcc-l0.3-lr0.05", "shot-l0.3-lr0.05"]
    regularized = dann.load_run(out / "runs" / "dann+mcc-l0.3-lr0.05").config.method
    assert (regularized.name, regularized.regularizers, regularized.lambda_adv) == ("dann", {"mcc": 1.0}, 0.3)
    assert rows["dann+mcc-l0.3-lr0.05"]["regularizers"] == {"mcc": 1.0}
    first = json.loads((out / "runs" / "dann+mcc-l0.3-lr0.05" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"adv", "mcc"} <= set(first["train"])
    control, shot = (
        load_checkpoint(out / "runs" / name / LAST_CHECKPOINT) for name in ("source_only", "shot-l0.3-lr0.05")
    )
    assert shot.config["model"]["init_from"] == str((out / "runs" / "source_only").resolve())
    # the control trains on the candidates' network (their references' bottleneck), not source-only's own
    assert control.config["model"]["bottleneck_dim"] == shot.config["model"]["bottleneck_dim"] == 256
    heads = [k for k in control.model if k.startswith("head.")]
    assert heads and all(torch.equal(control.model[k], shot.model[k]) for k in heads)  # SHOT keeps its head
    assert not all(torch.equal(control.model[k], shot.model[k]) for k in control.model)  # ... and adapts


def test_a_diverged_grid_point_is_recorded_and_the_search_goes_on(tmp_path, capsys):
    result = dann.tune(moons(), tmp_path / "t", methods=("dann+mcc",), lambdas=(1000.0,))  # NaN by step 15
    diverged = by_name(result)["dann+mcc-l1000-lr0.05"]
    assert diverged["failed"].startswith("non-finite loss at step") and diverged["step"] is None
    assert not diverged["eligible"] and diverged["reason"] == f"training stopped: {diverged['failed']}"
    assert result.chosen == "source_only" and result.why.startswith("no adapted run is eligible")
    assert "[2/2] dann+mcc-l1000-lr0.05: bnm –, source held-out – " in capsys.readouterr().out
    assert (tmp_path / "t" / "compare.html").is_file()  # built from the runs that have an evaluation


def test_cli_round_trip(tuned, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(tuned.out, out)  # the same arguments as the fixture: every run is reused
    assert main(["tune", *CLI, *CLI_GRID, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(
        r"^\[2/3\] cdan_e-l1-lr0\.05: bnm 0\.\d{4}, source held-out \d+\.\d% \(best so far: ", printed, re.M
    )
    assert f"chosen: {out}/runs/{tuned.chosen}" in printed
    assert f"use it: dann predict --run {out}/runs/{tuned.chosen} --data" in printed
    assert "[uses target labels, not used for the choice]" in printed
    assert main(["tune", *CLI, "--methods", "cdan_e", "--out", str(out), "--quiet"]) == 2
    assert "dann tune: error:" in capsys.readouterr().err


def test_compare_html_draws_every_evaluation_of_each_run(tmp_path, monkeypatch):
    """With the intervals left to auto, a 30-step run evaluates every 5 steps: compare.html draws 6 points per run."""
    from dann.reporting import plots

    drawn, draw = [], plots.compare_curves
    monkeypatch.setattr(plots, "compare_curves", lambda *args: drawn.append(args) or draw(*args))
    cfg = load_config("moons", [*FAST, "train.eval_every=auto", "train.log_every=2"])
    result = dann.tune(cfg, tmp_path / "t", methods=("dann",), lambdas=(1.0,), progress=False)
    histories, validator, logs = drawn[-1]
    assert len(histories) == len(result.rows) == 2
    for history in histories.values():
        assert plots.series(history, "validators", validator)[0] == [5, 10, 15, 20, 25, 30]
        assert plots.series(history, "oracle", "target_acc")[0] == [5, 10, 15, 20, 25, 30]
    panels = dict(plots.compare_lines(histories, logs, validator))
    losses = panels["source classification loss (training batches)"]
    assert [name for name, *_ in losses] == list(histories)  # one line per run, from every log step
    assert all(steps == sorted({*range(2, 31, 2), 5, 15, 25}) for _, steps, _, _ in losses)


def test_tune_says_what_it_will_train_then_the_time_left_after_each_run(tmp_path, capsys):
    dann.tune(moons(), tmp_path / "t", methods=("dann",), lambdas=(0.5, 1.0), progress=True)
    lines = capsys.readouterr().out.splitlines()
    names = "source_only, dann-l0.5-lr0.05, dann-l1-lr0.05"
    assert lines[0] == f"tune: 3 runs (30 steps each), one after another, into {tmp_path / 't' / 'runs'}: {names}"
    runs = [line for line in lines if line.startswith("[")]
    assert re.search(r"; about \d+ s left for 2 runs$", runs[0]) and runs[1].endswith("left for 1 run")
    assert "left" not in runs[2]


@pytest.mark.parametrize(
    ("seconds", "left", "said"),
    [
        ([], 3, ""),
        ([30.0], 0, ""),
        ([30.0], 2, "; about 60 s left for 2 runs"),
        ([60.0, 180.0], 5, "; about 10 min left for 5 runs"),
    ],
)
def test_time_left_is_the_mean_run_time_so_far_times_the_runs_left(seconds, left, said):
    assert tune_module.time_left(seconds, left) == said
