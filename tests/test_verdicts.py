"""Verdicts that know their noise: unfinished runs marked everywhere, the source-only control's verdict, noise bands
and "no clear difference" in compare, its refusal to rank runs of different targets, sanity flags, and evaluate
keeping one result per checkpoint."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import dann
from dann.cli import main
from dann.config import load_config
from dann.errors import ConfigError, DataWarning, RunDirError
from dann.reporting.report import RunSummary
from dann.reporting.verdicts import control_verdict, ranking, run_flags
from dann.selection.bands import Band, score_band
from dann.selection.validators import ValidationInputs

from .conftest import blobs

FAST = ["--backbone", "mlp", "--steps", "8", "--quiet", "--set", "train.eval_every=4", "--set", "train.batch_size=16"]
# the seed's network (no bottleneck): under auto, dann and its control share a BatchNorm bottleneck that dann trains
# on both domains' batches, and in 8 steps their `bnm` scores part by more than the noise (the no-clear-difference case)
FAST += ["--set", "model.bottleneck_dim=0"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """source.npz, target.npz and other.npz (another target), labels kept for evaluation."""
    root = tmp_path_factory.mktemp("data")
    for name, shift, seed in (("source", 0.0, 0), ("target", 1.5, 1), ("other", -1.5, 2)):
        x, y = blobs(60, shift, seed)
        np.savez(root / f"{name}.npz", x=x, y=y)
    return {name: str(root / f"{name}.npz") for name in ("source", "target", "other")}


def train_args(files, out, target="target"):
    return ["train", "--source", files["source"], "--target", files[target], "--out", str(out), *FAST]


@pytest.fixture(scope="module")
def controlled(files, tmp_path_factory):
    """A DANN run trained by ``dann train --control``, with the stdout of that command."""
    run = tmp_path_factory.mktemp("runs") / "dann"
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main([*train_args(files, run), "--method", "dann", "--control"]) == 0
    return run, out.getvalue()


def test_control_trains_beside_the_run_and_the_report_gives_the_verdict(controlled):
    run, out = controlled
    control = run / "control"
    assert f"control: {control} (source_only" in out and "did adaptation help? " in out
    saved = load_config(str(control / "config.yaml"))
    trained = load_config(str(run / "config.yaml"))
    assert saved.method.name == "source_only" and trained.method.name == "dann"
    assert (saved.train.steps, saved.train.seed) == (trained.train.steps, trained.train.seed)
    assert json.loads((control / "data.json").read_text()) == json.loads((run / "data.json").read_text())
    verdict = json.loads((run / "report.json").read_text())["verdict"]
    assert verdict["control"] == str(control) and verdict["answer"] in ("yes", "no", "no clear difference")
    mine, theirs = verdict["bands"]["run"], verdict["bands"]["control"]
    assert mine["low"] < mine["score"] < mine["high"] and theirs["low"] < theirs["score"] < theirs["high"]
    last = [json.loads(line) for line in (control / "metrics.jsonl").read_text().splitlines()][-1]
    assert theirs["score"] == pytest.approx(last["validators"]["bnm"])  # the band is around the logged score
    md = (run / "report.md").read_text()
    answer = md.split("## Answer")[1].split("## ")[0]
    assert "**Did adaptation help?**" in answer and "for the source-only control" in answer
    assert "target accuracy" in answer and "uses target labels" in answer  # marked, beside the verdict


def test_control_needs_a_run_directory_and_an_adapting_method(tiny_cfg, tiny_data):
    with pytest.raises(ConfigError, match="give the run directory"):
        dann.fit(tiny_cfg, data=tiny_data, control=True)
    source_only = load_config(values={**tiny_cfg.to_dict(), "method": {"name": "source_only"}})
    with pytest.raises(ConfigError, match="the source-only control already"):
        dann.fit(source_only, "unused", data=tiny_data, control=True)


def _band(score: float, half: float) -> Band:
    return Band(score, score - half, score + half, 100)


def test_ranking_names_a_winner_only_clear_of_the_other_bands():
    clear = ranking({"a": _band(0.60, 0.01), "b": _band(0.50, 0.01)}, {}, "bnm")
    assert "**`a` 0.6 ± 0.01**" in clear and "No clear difference" not in clear
    close = ranking({"a": _band(0.4502, 0.004), "b": _band(0.4491, 0.004)}, {}, "bnm")
    assert close.startswith("**No clear difference**") and "`a`" in close and "`b`" in close
    assert "**No choice**" in ranking({"a": _band(0.6, 0.01)}, {"b": "no `bnm` score"}, "bnm")


def test_the_band_shrinks_as_the_square_root_of_the_samples():
    g = torch.Generator().manual_seed(0)
    widths = []
    for n in (200, 1800):
        logits = 2 * torch.randn(n, 5, generator=g) + torch.linspace(0, 2, 5)
        band, problem = score_band("entropy", ValidationInputs(torch.empty(0, 3), None, None, None, logits, logits))
        assert problem == "" and band.low < band.score < band.high and band.n == n
        widths.append(band.high - band.low)
    assert widths[0] / widths[1] == pytest.approx(3.0, rel=0.3)  # sqrt(1800 / 200)
    few = ValidationInputs(torch.empty(0, 3), None, None, None, torch.zeros(3, 5), torch.zeros(3, 5))
    assert score_band("entropy", few) == (None, "3 target samples are too few to measure the noise")


def test_compare_says_no_clear_difference_within_the_noise(controlled, capsys):
    run, _ = controlled
    assert main(["compare", str(run), str(run / "control"), str(run)]) == 0
    out = capsys.readouterr().out
    assert "**No clear difference** by `bnm`" in out and "Highest" not in out
    rows = [line for line in out.splitlines() if line.startswith(f"| `{run}")]
    assert len(rows) == 3 and all(" ± " in row for row in rows)


def test_compare_refuses_to_rank_runs_of_different_targets(controlled, files, tmp_path, capsys):
    run, _ = controlled
    other = tmp_path / "other"
    assert main([*train_args(files, other, target="other"), "--no-report"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run), str(other)]) == 2
    err = capsys.readouterr().err
    assert "cannot rank runs that adapted to different target data" in err and "other.npz (60 samples)" in err
    with pytest.raises(RunDirError, match="different_targets=True"):
        dann.compare([run, other])
    assert main(["compare", str(run), str(other), "--different-targets"]) == 0
    captured = capsys.readouterr()
    assert "**Not ranked**" in captured.out and "Highest" not in captured.out
    assert "warning: the runs adapted to different target data" in captured.err
    (other / "data.json").unlink()  # a run trained before runs recorded their data: compared, with a warning
    with pytest.warns(DataWarning, match="no record of the target data"):
        dann.compare([run, other])


def _summary(history: list[dict], method: str = "dann", steps: int = 30) -> RunSummary:
    cfg = load_config(values={"method": {"name": method}, "train": {"steps": steps}})
    return RunSummary(Path("run"), cfg, history, "bnm", history[-1], None, None)


def _names(history: list[dict], num_classes: int = 10, a_distance: dict | None = None, **kwargs) -> list[str]:
    return [f.name for f in run_flags(_summary(history, **kwargs), num_classes, a_distance)]


def test_sanity_flags_say_what_they_saw_and_what_to_try():
    accs = {6: 0.7, 12: 0.96, 18: 0.97, 30: 0.99}  # the discriminator wins over the last three evaluations
    history = [{"step": s, "source_val": {"acc": 0.11}, "train": {"domain_acc": a}} for s, a in accs.items()]
    history[-1]["source_val"]["acc"] = 0.12
    flags = {f.name: f for f in run_flags(_summary(history), 10, {"initialization": 0.5, "last": 1.4})}
    assert list(flags) == ["chance", "adversary_lost", "a_distance_rising"]
    assert "12.0%, near chance (1/10 = 10.0%)" in flags["chance"].what and "model.pretrained" in flags["chance"].advice
    lost = flags["adversary_lost"]
    assert "over the last 3 evaluations (0.96, 0.97, 0.99)" in lost.what and "method.lambda_adv" in lost.advice
    assert "from 0.50 at initialization to 1.40" in flags["a_distance_rising"].what
    control = _names(history, a_distance={"initialization": 0.5, "last": 1.4}, method="source_only")
    assert "a_distance_rising" not in control  # a control aligns nothing: a rising distance is no alarm


def test_sanity_flags_stay_quiet_on_a_healthy_run():
    healthy = [{"step": 30, "source_val": {"acc": 0.20}, "train": {"domain_acc": 0.6}}]  # 10 classes: 19 % is chance
    assert _names(healthy, a_distance={"initialization": 0.5, "last": 0.55}) == []
    assert _names([{**healthy[0], "source_val": {"acc": 0.60}}], num_classes=2) == []  # 2 classes: 55 % is chance
    pinned = [{"step": s, "train": {"domain_acc": 0.99}} for s in (15, 30)]
    assert _names(pinned) == ["adversary_lost"] and _names(pinned[1:]) == []  # one evaluation is not "pinned"
    pinned.insert(1, {"step": 20, "train": {"domain_acc": 0.5}})
    assert _names(pinned) == []  # the adversary was in the game at one of the last three
    assert _names(healthy, steps=60) == ["unfinished"]


def test_the_control_verdict_follows_the_bands():
    run, control = _summary([{"step": 30}]), _summary([{"step": 30}], "source_only")
    assert control_verdict(run, control, (_band(0.7, 0.01), _band(0.6, 0.01)), "")[1]["answer"] == "yes"
    assert control_verdict(run, control, (_band(0.5, 0.01), _band(0.6, 0.01)), "")[1]["answer"] == "no"
    close = control_verdict(run, control, (_band(0.61, 0.02), _band(0.6, 0.02)), "")
    assert close[1]["answer"] == "no clear difference" and close[0][0].startswith("**No clear difference**")
    blocks, summary = control_verdict(run, control, (None, None), "its data could not be loaded")
    assert summary["answer"] == "unknown" and "its data could not be loaded" in blocks[0]


def test_an_unfinished_run_is_marked_everywhere(files, tmp_path, capsys, crash_after_first_checkpoint):
    run = tmp_path / "run"
    crash_after_first_checkpoint(main, train_args(files, run))  # killed after its checkpoint at step 4 of 8
    mark = "step 4 of 8 (unfinished)"
    with pytest.warns(DataWarning, match=r"has not finished training: checkpoints/last.pt is at step 4 of 8"):
        metrics = dann.evaluate(run, files["target"])
    assert metrics["progress"] == mark and metrics["finished"] is False and metrics["steps"] == 8
    assert main(["predict", "--run", str(run), "--data", files["target"], "--out", str(tmp_path / "p.csv")]) == 0
    assert mark in capsys.readouterr().err
    assert main(["evaluate", "--run", str(run), "--data", files["target"]]) == 0
    assert f"checkpoint: {run}/checkpoints/last.pt, {mark}" in capsys.readouterr().out
    assert main(["report", "--run", str(run)]) == 0
    assert f"flag: unfinished: Training is unfinished: the last checkpoint is at {mark}" in capsys.readouterr().out
    answer = (run / "report.md").read_text().split("## Answer")[1].split("## ")[0]
    assert mark in answer and "the end of training" not in answer
    assert json.loads((run / "report.json").read_text())["progress"]["finished"] is False
    assert main(["compare", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| 4 of 8 (unfinished) |" in out and "**flag: unfinished**" in out


def test_evaluate_keeps_one_result_per_checkpoint(controlled, files, capsys):
    run, _ = controlled
    for checkpoint in ("last", "best"):
        assert main(["evaluate", "--run", str(run), "--data", files["target"], "--checkpoint", checkpoint]) == 0
        out = capsys.readouterr().out
        saved = json.loads((run / "eval" / f"target-{checkpoint}" / "metrics.json").read_text())
        step = torch.load(run / f"checkpoints/{checkpoint}.pt", weights_only=True)["step"]
        assert saved["checkpoint"] == f"checkpoints/{checkpoint}.pt" and saved["step"] == step
        assert f"checkpoint: {run}/checkpoints/{checkpoint}.pt, step {step} of 8" in out
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["target-best", "target-last"]


def test_a_run_with_its_control_says_so_before_training_and_as_the_control_starts(tiny_cfg, tiny_data, tmp_path):
    lines: list[str] = []
    cfg = dann.config.replace(tiny_cfg, method={"name": "dann"}, train={"steps": 30})  # long enough to estimate
    dann.fit(cfg, tmp_path / "run", data=tiny_data, control=True, echo=lines.append)
    plan = next(i for i, line in enumerate(lines) if line.startswith("plan:"))
    steps = cfg.train.steps
    assert lines[plan] == (
        f"plan:     2 runs, one after the other: this one ({steps} steps), then its source-only control ({steps} "
        f"steps, a cheaper step) into {tmp_path / 'run' / 'control'}; the time below is this run's"
    )
    assert plan < next(i for i, line in enumerate(lines) if line.startswith("device:"))  # before the run's summary
    estimate = next(i for i, line in enumerate(lines) if line.startswith("time:"))
    assert lines[estimate + 1].startswith("plan:     with its source-only control, at most about ")
    starts = [i for i, line in enumerate(lines) if line.startswith("control:  this run took ")]
    assert len(starts) == 1 and lines[starts[0]].endswith(
        f"now its source-only control, into {tmp_path / 'run' / 'control'}"
    )
    assert sum(line.startswith("device:") for line in lines[starts[0] :]) == 1  # the control's own summary follows
