"""The same data gets the same network, method and schedule through every entry point: ``dann train``,
``dann.fit`` and ``DANNClassifier``; the "auto" network and the "recommended" method resolve to concrete values
that the run records."""

import json

import numpy as np
import pytest
import yaml

import dann
from dann import DANNClassifier
from dann.cli import main
from dann.config import RECIPE, RECIPE_FILE, Config, load_config
from dann.models.network import PAPER_HEAD


@pytest.mark.parametrize(
    ("shape", "backbone", "head"), [((3, 28, 28), "lenet_conv", list(PAPER_HEAD)), ((12,), "mlp", [])]
)
def test_every_entry_point_resolves_the_same_config(shape, backbone, head, tmp_path):
    rng = np.random.default_rng(0)
    x_s, x_t = rng.random((40, *shape), dtype=np.float32), rng.random((30, *shape), dtype=np.float32)
    y_s = np.arange(40) % 3
    np.savez(tmp_path / "s.npz", x=x_s, y=y_s)
    np.savez(tmp_path / "t.npz", x=x_t)
    files = ["--source", str(tmp_path / "s.npz"), "--target", str(tmp_path / "t.npz")]
    quick = ["--steps", "2", "--quiet", "--no-report", "--set", "train.device=cpu"]
    assert main(["train", *files, *quick, "--out", str(tmp_path / "cli")]) == 0
    cli = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    values = {"data": {"source": str(tmp_path / "s.npz"), "target": str(tmp_path / "t.npz")}}
    values["train"] = {"steps": 2, "device": "cpu", "progress": False}
    api = dann.fit(load_config(values=values)).config.to_dict()
    sk = DANNClassifier(max_steps=2, device="cpu").fit(x_s, y_s, X_target=x_t).config_.to_dict()
    for section in ("model", "method", "optim"):
        assert cli[section] == api[section] == sk[section], section
    for key in ("steps", "batch_size", "seed", "precision", "channels_last", "accumulate"):
        assert cli["train"][key] == api["train"][key] == sk["train"][key], key
    assert cli["model"]["backbone"] == backbone and cli["model"]["head_dims"] == head
    assert cli["train"]["precision"] in ("fp32", "bf16")  # "auto" is resolved for this machine and recorded
    assert cli["train"]["channels_last"] is (cli["train"]["precision"] == "bf16" and len(shape) == 3)
    assert cli["method"]["name"] == RECIPE["name"] and cli["method"]["regularizers"] == RECIPE["regularizers"]
    for key, value in RECIPE.get("options", {}).items():  # the recipe's own settings, recorded as trained
        assert cli["method"][key] == value, key


def test_a_named_method_is_that_method_alone_and_the_default_is_recorded_unresolved():
    assert Config().method.name == "recommended" and Config().model.backbone == "auto"
    named = load_config(None, ["method.name=dann"]).method
    assert named.name == "dann" and named.regularizers == {}


def test_the_paper_preset_is_the_seeds_exact_dann_on_any_data():
    cfg = load_config("paper", ["data.task=digits"])
    assert cfg.method.name == "dann" and cfg.method.regularizers == {} and cfg.method.grl_schedule == "ganin"
    assert (cfg.model.backbone, cfg.model.head_dims, cfg.model.bottleneck_dim) == ("lenet_conv", (100, 100), 0)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.lr_schedule) == ("sgd", 0.01, "ganin")


def test_the_summary_names_the_method_and_regularizers_need_a_named_method(tmp_path, capsys):
    quick = ["--steps", "4", "--quiet", "--no-report", "--set", "train.device=cpu", "--set", "train.eval_every=4"]
    assert main(["train", "--task", "moons", *quick, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"method: {RECIPE['name']} (the default, as no method was named: {RECIPE['why']})" in out
    note = json.loads((tmp_path / "a" / RECIPE_FILE).read_text())  # what the default did and why, kept with the run
    assert note["method"] == RECIPE["name"] and note["why"] == RECIPE["why"]
    dann.build_report(tmp_path / "a")
    answer = (tmp_path / "a" / "report.md").read_text().split("## ")[1]  # the report opens with it
    assert answer.startswith("Answer") and f"**The default trained `{RECIPE['name']}`**" in answer.splitlines()[2]
    assert main(["train", "--task", "moons", "--method", "dann", *quick, "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "method: dann\n" in out and not (tmp_path / "b" / RECIPE_FILE).exists()
    regularized = ["--set", "method.regularizers={mcc: 1.0}", "--out", str(tmp_path / "c")]
    if RECIPE["name"] == "source_only":
        assert main(["train", "--task", "moons", *quick, *regularized]) == 2
        assert "need a named method that reads the target batch" in capsys.readouterr().err
        assert not (tmp_path / "c").exists()


def test_runs_on_embedded_tasks_record_the_data_scale_that_evaluate_compares(tmp_path):
    from dann.errors import DataError, DataWarning

    cfg = load_config("cancer", ["train.steps=4", "train.eval_every=4", "train.device=cpu", "train.progress=false"])
    dann.fit(cfg, tmp_path / "run")
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()  # the table as stored, not standardized like the task: about 80x off
    np.savez(tmp_path / "raw.npz", x=raw.data.astype(np.float32), y=raw.target)
    with pytest.warns(DataWarning, match="differs in scale"):
        dann.evaluate(tmp_path / "run", tmp_path / "raw.npz")
    np.savez(tmp_path / "raw100.npz", x=100 * raw.data.astype(np.float32), y=raw.target)
    with pytest.raises(DataError, match="differs in scale"):
        dann.evaluate(tmp_path / "run", tmp_path / "raw100.npz")
