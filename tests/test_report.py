import json
import re

import numpy as np
import pytest
import torch

import dann
from dann.cli import main
from dann.errors import OutputExistsError
from dann.reporting.report import initial_network, summarize
from dann.runs import load_checkpoint
from dann.training.trainer import Trainer

from .conftest import blobs

FAST = ["--backbone", "mlp", "--steps", "8", "--quiet", "--set", "train.eval_every=4", "--set", "train.batch_size=16"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs trained by the CLI on .npz files (target labels kept for evaluation): DANN and the source-only
    control. ``dann train`` ends each with its report."""
    root = tmp_path_factory.mktemp("runs")
    files = []
    for name, shift, seed in (("source", 0.0, 0), ("target", 1.5, 1)):
        x, y = blobs(60, shift, seed)
        np.savez(root / f"{name}.npz", x=x, y=y)
        files += [f"--{name}", str(root / f"{name}.npz")]
    paths = {}
    for method in ("dann", "source_only"):
        paths[method] = root / method
        assert main(["train", *files, "--method", method, "--out", str(paths[method]), *FAST]) == 0
    return paths


def test_train_ends_with_a_self_contained_report(runs, capsys):
    run = runs["dann"]
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4  # curves, validators, t-SNE, confusion matrix
    assert not re.search(r"<script|src=\"http|href=\"http", html)
    for text in ("Checkpoint to use", "checkpoints/best.pt", "proxy A-distance", "t-SNE", "Configuration"):
        assert text in html
    assert "README" not in html  # a report speaks of its run, not of conclusions drawn elsewhere
    assert (
        "best target accuracy: uses target labels" in html and "Target accuracy by class (uses target labels)" in html
    )
    md = (run / "report.md").read_text()
    for figure in re.findall(r"\]\((report_files/\w+\.png)\)", md):
        assert (run / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "report.json").read_text())
    best = load_checkpoint(run / "checkpoints/best.pt")
    assert summary["selected_step"] == best.step == summarize(run).selected["step"]
    assert set(summary["a_distance"]) == {"initialization", "last", "selected"}


def test_the_checkpoint_table_marks_the_target_label_choice(runs):
    run = summarize(runs["dann"])
    md = (runs["dann"] / "report.md").read_text()
    table = md.split("## Checkpoints")[1].split("##")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| last",
        f"| selected by `{run.validator}` (no target labels)",
        "| **best target accuracy: uses target labels**, reference only",
    ]
    best_acc = max(r["oracle"]["target_acc"] for r in run.history)
    assert f"{100 * best_acc:.1f}%" in rows[2]


def test_the_report_is_rebuilt_from_the_run_files_alone(runs, capsys):
    run = runs["dann"]
    before = (run / "report.md").read_text()
    (run / "report.html").unlink()
    assert main(["report", "--run", str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "report.md").read_text() == before  # deterministic
    assert main(["report", "--run", str(run.parent)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_compare_puts_runs_side_by_side(runs, tmp_path, capsys):
    page = tmp_path / "compare.html"
    assert main(["compare", str(runs["dann"]), str(runs["source_only"]), "--out", str(page)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert len(table) == 3 and "source_only" in table[2] and "uses target labels" in table[0]
    assert "by `bnm` (no target labels)" in out and all(" ± " in row for row in table[1:])  # scores with their bands
    assert 'src="data:image/png;base64,' in page.read_text()
    assert main(["compare", str(runs["dann"]), "--out", str(page)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["compare", str(runs["dann"]), "--validator", "nope"]) == 2
    assert "unknown validator 'nope'" in capsys.readouterr().err


def test_compare_refuses_to_replace_its_page_unless_asked(runs, tmp_path):
    page = tmp_path / "compare.html"
    page.write_text("mine")
    with pytest.raises(OutputExistsError, match=f"{page} already exists; pass `overwrite=True` to replace it"):
        dann.compare([runs["dann"]], out=page)
    assert page.read_text() == "mine"
    dann.compare([runs["dann"]], out=page, overwrite=True)
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_a_run_trained_on_arrays_in_memory_reports_without_the_feature_diagnostics(tiny_cfg, tiny_data, tmp_path):
    result = dann.fit(tiny_cfg, tmp_path / "run", data=tiny_data, report=True)
    assert "t-SNE" in result.report.read_text()  # the arrays were at hand at the end of training
    dann.build_report(tmp_path / "run")  # later, the config names no data
    html = (tmp_path / "run/report.html").read_text()
    assert "Feature diagnostics left out" in html and "t-SNE" not in html and "Checkpoint to use" in html


def test_the_initial_network_is_the_one_training_started_from(tiny_cfg, tiny_data, monkeypatch):
    seen = {}

    def capture(self, net, method, data, stages=None):
        seen.update({k: v.clone() for k, v in net.state_dict().items()})
        return []

    monkeypatch.setattr(Trainer, "fit", capture)
    dann.fit(tiny_cfg, data=tiny_data)
    start = initial_network(tiny_cfg, tiny_data).state_dict()
    assert seen.keys() == start.keys() and all(torch.equal(seen[k], start[k]) for k in start)


def test_the_loss_panel_draws_every_term_the_method_logged():
    from dann.reporting.plots import loss_terms

    history = [
        {"step": 5, "train": {"cls": 1.0, "adv": 0.6, "lr": 0.01, "grl_lambda": 0.2, "domain_acc": 0.5}},
        {"step": 10, "train": {"cls": 0.8, "adv": 0.6, "mcc": 0.3, "fixmatch": 0.1, "pseudo_kept": 0.4}},
    ]
    assert [name for name, _ in loss_terms(history)] == ["cls", "adv", "mcc", "fixmatch"]
    assert loss_terms(history)[2] == ("mcc", ("train", "mcc"))


def separated(counts: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian classes in 4 dimensions, ``counts[k]`` samples of class k (no covariate shift
    between two draws: only the proportions differ)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), counts)
    centres = 6.0 * np.eye(3, 4)
    return (centres[y] + rng.normal(size=(len(y), 4))).astype(np.float32), y


@pytest.mark.parametrize(
    ("counts", "large"), [([420, 120, 60], True), ([200, 200, 200], False), ([60, 240, 300], True)]
)
def test_the_report_estimates_the_targets_class_proportions(counts, large, tmp_path):
    from dann.config import load_config
    from dann.data import make_domain_data
    from dann.data.arrays import as_domain

    x_s, y_s = separated([300, 300, 300], 0)
    x_t, y_t = separated(counts, 1)
    data = make_domain_data(as_domain(x_s, y_s), as_domain(x_t, y_t), val_fraction=0.3)
    over = ["model.backbone=mlp", "method.name=source_only", "train.steps=150", "train.eval_every=150"]
    cfg = load_config(None, [*over, "train.progress=false", "train.device=cpu"])
    dann.fit(cfg, tmp_path / "run", data=data)
    dann.build_report(tmp_path / "run", data=data)
    shift = json.loads((tmp_path / "run/report.json").read_text())["label_shift"]
    truth = np.array(counts) / sum(counts)
    assert shift["large"] is large and np.abs(np.array(shift["proportions"]) - truth).max() < 0.05
    assert shift["source"] == pytest.approx([1 / 3] * 3, abs=0.01)
    assert all(lo <= q <= hi for lo, q, hi in zip(shift["low"], shift["proportions"], shift["high"], strict=True))
    md = (tmp_path / "run/report.md").read_text().split("## Label shift")[1].split("##")[0]
    assert ("**large**" in md) is large and md.count("\n| ") == 3 + 2  # header, rule, one row per class


def test_a_method_without_a_discriminator_draws_no_empty_panels():
    from dann.reporting import plots

    log = [{"step": s, "train": {"cls": 1.0 / s, "lr": 0.01}} for s in range(5, 55, 5)]
    history = [{"step": 50, "source_val": {"acc": 0.9}, "validators": {"bnm": 0.5}}]
    titles = [title for title, _ in plots.drawn_panels(plots.training_panels(history, log, "bnm"))]
    assert "GRL coefficient λ" not in titles and plots.DOMAIN_PANEL not in titles
    assert titles[0] == "loss terms (training batches)" and "learning rate" in titles and "accuracy" in titles
    adversarial = [
        {"step": s, "train": {"cls": 1.0, "adv": 0.69, "grl_lambda": 0.5, "domain_acc": 0.5}} for s in (5, 10)
    ]
    titles = [title for title, _ in plots.drawn_panels(plots.training_panels(history, adversarial, "bnm"))]
    assert "GRL coefficient λ" in titles and plots.DOMAIN_PANEL in titles
    assert plots.training_curves(history, "bnm", 50, log)[:8] == b"\x89PNG\r\n\x1a\n"  # 4 panels: one row and a half


@pytest.mark.parametrize(("a_distance", "cautioned"), [(0.0, False), (1.2, False), (1.8, False), (1.95, True)])
def test_the_label_shift_estimate_is_marked_unreliable_when_the_domains_are_separable(a_distance, cautioned):
    from dann.evaluation.label_shift import LabelShift
    from dann.reporting.pages import to_markdown
    from dann.reporting.report import _label_shift_section

    q, p = np.array([0.7, 0.2, 0.1]), np.array([1 / 3] * 3)
    shift = LabelShift(q, p, q / p, q - 0.05, q + 0.05, "bbse", 0.37, (0.32, 0.42), True, 100, ("a", "b", "c"))
    md = to_markdown("r", [_label_shift_section(shift, a_distance)], "f")
    assert ("**Unreliable on this data**" in md) is cautioned and "**large**" in md
    if cautioned:
        assert f"proxy A-distance {a_distance:.2f} of 2" in md
