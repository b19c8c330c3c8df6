"""The selecting default: with no method named, dann trains the source-only control and the candidates of
``config.SELECTION`` and keeps what the rule of ``dann.selection.choice`` picks, without target labels; the run
directory is then the kept run, and an interrupted selection resumes."""

import json

import numpy as np
import pytest

import dann
from dann import DANNClassifier
from dann.config import RECIPE_FILE, SELECTION, load_config
from dann.errors import RunDirError, TrainingInterrupted
from dann.runs import load_checkpoint
from dann.selection.bands import Band
from dann.selection.choice import CONTROL, Evidence, choose, judge


def band(score: float, half: float = 0.05) -> Band:
    return Band(score, score - half, score + half, 100)


@pytest.mark.parametrize(
    ("control_acc", "acc", "held_out", "eligible"),
    [
        (1.0, 1 - 1 / 60, 60, True),  # one held-out sample of 60 (1.7 points): not more than one sample
        (1.0, 1 - 2 / 60, 60, False),  # two samples, 3.3 points
        (0.95, 0.945, 1000, True),  # half a point, within the 1-point guard
        (0.95, 0.935, 1000, False),  # 1.5 points and 15 samples
        (0.9, 0.85, 20, True),  # 5 points, one sample of 20
        (0.9, 0.8, 20, False),  # 10 points, two samples of 20
        (0.9, 0.5, 0, True),  # no held-out samples: the guard cannot be read
    ],
)
def test_a_candidate_is_eligible_unless_it_loses_more_than_a_point_and_a_sample(control_acc, acc, held_out, eligible):
    verdict = judge(Evidence(acc, band(0.9)), Evidence(control_acc, band(0.1)), held_out, "class_ami")
    assert verdict.eligible is eligible and verdict.clears is eligible
    if not eligible:
        assert "not eligible" in verdict.why and verdict.gain is None
    if held_out == 0:
        assert "the source guard could not be read" in verdict.why


@pytest.mark.parametrize(
    ("mine", "theirs", "clears"),
    [
        (band(0.5), band(0.3), True),  # bands apart, above
        (band(0.5), band(0.42), False),  # above but the bands overlap
        (band(0.3), band(0.5), False),  # below
        (band(0.5, 0.0), band(0.5, 0.0), False),  # equal
    ],
)
def test_a_candidate_clears_only_with_its_band_wholly_above_the_controls(mine, theirs, clears):
    verdict = judge(Evidence(1.0, mine), Evidence(1.0, theirs), 50, "class_ami")
    assert verdict.clears is clears and verdict.gain == pytest.approx(mine.score - theirs.score)
    assert ("clears" if clears else "does not clear") in verdict.why


def test_the_largest_gain_among_those_that_clear_is_kept_else_the_control():
    control = Evidence(1.0, band(0.2))
    runs = {
        CONTROL: control,
        "a": Evidence(1.0, band(0.5)),
        "b": Evidence(1.0, band(0.8)),
        "c": Evidence(0.5, band(1.0)),
    }
    kept, verdicts = choose(runs, 100, "class_ami")
    assert kept == "b" and not verdicts["c"].eligible  # c scores highest but lost half its source accuracy
    assert choose({CONTROL: control, "a": Evidence(1.0, band(0.22))}, 100, "class_ami")[0] == CONTROL
    tie = {CONTROL: control, "a": Evidence(1.0, band(0.5)), "b": Evidence(1.0, band(0.5))}
    assert choose(tie, 100, "class_ami")[0] == "a"  # a tie goes to the earlier candidate
    no_band = {CONTROL: Evidence(1.0, None, "3 target samples are too few"), "a": Evidence(1.0, band(0.9))}
    kept, verdicts = choose(no_band, 100, "class_ami")
    assert kept == CONTROL and "no `class_ami` band for the control (3 target samples are too few)" in verdicts["a"].why


QUICK = ["train.steps=30", "train.eval_every=15", "train.progress=false", "train.device=cpu"]


@pytest.mark.selecting
def test_the_default_trains_the_control_and_each_candidate_and_becomes_the_run_it_keeps(tmp_path):
    out = tmp_path / "run"
    result = dann.fit(load_config("moons", QUICK), out)
    names = [CONTROL, *SELECTION["candidates"]]
    assert sorted(p.name for p in (out / "candidates").iterdir()) == sorted(SELECTION["candidates"])
    assert (out / "control" / "checkpoints" / "last.pt").is_file()
    note = json.loads((out / RECIPE_FILE).read_text())
    assert note["state"] == "done" and list(note["runs"]) == names and set(note["verdicts"]) == set(names[1:])
    kept = out / "control" if note["kept"] == CONTROL else out / "candidates" / note["kept"]
    assert (out / "config.yaml").read_text() == (kept / "config.yaml").read_text()  # out is the kept run
    assert (
        load_checkpoint(out / "checkpoints/last.pt").model.keys()
        == load_checkpoint(kept / "checkpoints/last.pt").model.keys()
    )
    assert result.run_dir == out and result.selection == note and result.config.method.name == note["method"]
    expected = {CONTROL: "source_only", **{n: k["name"] for n, k in SELECTION["candidates"].items()}}
    assert note["method"] == expected[note["kept"]]
    for name, keys in SELECTION["candidates"].items():  # each candidate trained as the selection names it
        trained = load_config(str(out / "candidates" / name / "config.yaml")).method
        assert all(getattr(trained, k) == v for k, v in keys.items())
    single = dann.fit(load_config("moons", [*QUICK, "method.name=dann"]), tmp_path / "named")
    assert single.selection is None and not (tmp_path / "named" / "candidates").exists()  # --method: one run


@pytest.mark.selecting
def test_an_interrupted_selection_resumes_without_training_finished_runs_again(tmp_path, monkeypatch):
    out, calls, original = tmp_path / "run", [], dann.api.fit

    def fit(cfg=None, out=None, **kw):  # the third run of the selection is interrupted before it trains
        calls.append(out)
        if len(calls) == 3:
            raise TrainingInterrupted(0, 30, None, 2)
        return original(cfg, out, **kw)

    monkeypatch.setattr(dann.api, "fit", fit)
    with pytest.raises(TrainingInterrupted):
        dann.fit(load_config("moons", QUICK), out)
    finished = {p: (p / "metrics.jsonl").read_text() for p in (out / "control", out / "candidates/adamatch_noda")}
    with pytest.raises(RunDirError, match=r"unfinished selection of the default.*--resume"):
        original(load_config("moons", QUICK), out)  # the same call without resume refuses to lose them
    result = original(out=out, resume=True)
    assert result.selection["state"] == "done" and (out / "candidates/iwdan/checkpoints/last.pt").is_file()
    assert all((p / "metrics.jsonl").read_text() == text for p, text in finished.items())  # not trained again


@pytest.mark.selecting
def test_dann_classifier_selects_as_dann_fit_does():
    rng = np.random.default_rng(0)
    x_s = rng.normal(size=(120, 2)).astype(np.float32) + np.repeat([[0, 0], [4, 0]], 60, axis=0)
    y_s = np.repeat([0, 1], 60)
    x_t = x_s + np.float32(0.5)
    clf = DANNClassifier(max_steps=20, device="cpu").fit(x_s, y_s, X_target=x_t)
    assert clf.selection_["state"] == "done" and clf.selection_["kept"] in (CONTROL, *SELECTION["candidates"])
    assert clf.config_.method.name == clf.selection_["method"] and clf.predict(x_t).shape == (120,)
    assert "the source guard could not be read" not in json.dumps(clf.selection_["verdicts"])  # 10 % held out
    assert clf.config_.data.val_fraction == 0.1
    assert DANNClassifier(method="dann", max_steps=4, device="cpu").fit(x_s, y_s, X_target=x_t).selection_ is None


@pytest.mark.selecting
def test_dann_train_and_dann_fit_keep_the_same_run_and_say_why(tmp_path, capsys):
    from dann.cli import main

    quick = ["--steps", "30", "--quiet", "--no-report", "--set", "train.device=cpu", "--set", "train.eval_every=15"]
    assert main(["train", "--config", "moons", *quick, "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    cli = json.loads((tmp_path / "cli" / RECIPE_FILE).read_text())
    api = dann.fit(load_config("moons", QUICK), tmp_path / "api").selection
    assert cli["kept"] == api["kept"] and cli["verdicts"] == api["verdicts"]  # the same data, the same choice
    assert f"default: {cli['why']}" in out and f"method: {cli['method']} (kept by the default's selection" in out
    assert out.count(cli["why"]) == 1  # said once


@pytest.mark.selecting
def test_dann_classifier_without_target_rows_warns_and_trains_the_source_only_model_alone():
    from dann.errors import DataWarning

    x_s, y_s = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32), np.repeat([0, 1], 30)
    with pytest.warns(DataWarning, match="no adaptation happened"):
        clf = DANNClassifier(max_steps=4, device="cpu").fit(x_s, y_s)
    assert clf.config_.method.name == "source_only" and clf.selection_ is None  # nothing to select on


@pytest.mark.selecting
def test_settings_the_selection_would_ignore_are_refused_and_a_resume_keeps_its_config(tmp_path):
    from dann.errors import ConfigError, OutputExistsError

    for given in (["method.distribution_alignment=true"], ["method.regularizers={mcc: 1.0}"]):
        with pytest.raises(ConfigError, match="given with no method named"):
            dann.fit(load_config("moons", [*QUICK, *given]), tmp_path / "refused")
        assert not (tmp_path / "refused").exists()
    out = tmp_path / "run"
    dann.fit(load_config("moons", QUICK), out)
    with pytest.raises(OutputExistsError, match="holds a finished selection of the default"):
        dann.fit(load_config("moons", QUICK), out)  # never trained again without being asked
    with pytest.raises(ConfigError, match=r"train\.steps"):  # a resume may not change what the runs train
        dann.fit(load_config("moons", [*QUICK, "train.steps=60"]), out, resume=True)
    again = dann.fit(out=out, resume=True)  # a finished selection resumed: nothing trains, the same choice
    assert again.selection["kept"] == json.loads((out / RECIPE_FILE).read_text())["kept"]


def test_an_unfinished_selection_is_named_by_the_commands_that_read_runs(tmp_path):
    from dann.reporting.summary import summarize

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RECIPE_FILE).write_text(json.dumps({"state": "selecting", "config": {}}))
    for read in (dann.load_run, summarize):
        with pytest.raises(RunDirError, match=r"has not finished.*--resume"):
            read(tmp_path / "run")


@pytest.mark.selecting
@pytest.mark.parametrize("n", [1, 3])
def test_a_target_too_small_for_a_noise_band_trains_the_control_alone(n, tmp_path):
    from dann.data import as_domain, make_domain_data

    rng = np.random.default_rng(0)
    x_s, y_s = rng.normal(size=(80, 2)).astype(np.float32), np.repeat([0, 1], 40)
    data = make_domain_data(as_domain(x_s, y_s), as_domain(x_s[:n] + 1), val_fraction=0.2)
    result = dann.fit(load_config(None, ["model.backbone=mlp", *QUICK]), tmp_path / "run", data=data)
    assert result.selection["kept"] == CONTROL and "too few to measure a noise band" in result.selection["why"]
    assert not (tmp_path / "run" / "candidates").exists() and list(result.selection["runs"]) == [CONTROL]


@pytest.mark.parametrize(("per_step", "left"), [(0.0123, 2980), (1.5, 100), (2e-4, 10)])
def test_the_controls_estimate_becomes_one_for_the_whole_selection(per_step, left, monkeypatch):
    from dann.selection.default import total_estimate
    from dann.training.feedback import estimate_line, format_duration, per_step_seconds

    line = estimate_line(per_step, left, "evaluations add to it")
    assert per_step_seconds(line) == pytest.approx(per_step, rel=1e-2) and per_step_seconds("device: cpu") is None
    monkeypatch.setitem(SELECTION, "relative_cost", {"adamatch_noda": 6.0})
    passed, said = [], []
    told = total_estimate(passed.append, said.append, 3000, ["adamatch_noda", "iwdan"])
    for text in ("device:   cpu (1 thread)", line, "step 500: ..."):
        told(text)
    assert passed == ["device:   cpu (1 thread)", line, "step 500: ..."]  # every line of the control goes on
    total = format_duration(per_step_seconds(line) * 3000 * (1 + 6 + 1))
    assert said == [
        f"default:  so the selection takes about {total} in all: this control, then adamatch_noda, iwdan "
        "(about 7 control runs of compute)"
    ]


def test_a_candidates_own_report_says_whether_the_selection_kept_it(tmp_path):
    from dann.reporting.report import candidate_line

    out = tmp_path / "run"
    for name in ("adamatch_noda", "iwdan", "other"):
        (out / "candidates" / name).mkdir(parents=True)
    verdicts = {
        "adamatch_noda": {"eligible": True, "clears": True, "gain": 0.1, "why": "clears: bands apart"},
        "iwdan": {"eligible": False, "clears": False, "gain": None, "why": "not eligible: source held-out 50.0 %"},
    }
    (out / RECIPE_FILE).write_text(json.dumps({"state": "selecting", "runs": ["control", *verdicts]}))
    assert candidate_line(out / "candidates" / "iwdan") is None  # still selecting: nothing to say yet
    (out / RECIPE_FILE).write_text(json.dumps({"state": "done", "kept": "adamatch_noda", "verdicts": verdicts}))
    kept = candidate_line(out / "candidates" / "adamatch_noda")
    assert kept.startswith(f"**A candidate of the default's selection in `{out}`, and the run it kept**: clears")
    dropped = candidate_line(out / "candidates" / "iwdan")
    assert dropped.startswith("**Flag: not eligible**: ") and "it kept `adamatch_noda`" in dropped
    assert "not eligible: source held-out 50.0 %" in dropped and f"Use the selection's run, `{out}`" in dropped
    assert candidate_line(out / "candidates" / "other") is None  # no verdict of its own
    assert candidate_line(out) is None and candidate_line(out / "control") is None
