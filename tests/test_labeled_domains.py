"""Several labeled domains: config forms, class matching by name, per-domain held-out accuracy, the discriminator."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

import dann
from dann.cli import main
from dann.config import DataConfig, MethodConfig, ModelConfig, load_config, replace
from dann.data import labeled_sources
from dann.errors import ConfigError, DataError
from dann.methods import Batch, create_method
from dann.methods.dann import multiclass_domain_loss
from dann.plan import build_network, build_run_data

from .conftest import blobs


@pytest.fixture
def three_domains(tmp_path):
    """lab.npz (classes cat, dog), mid.npz (the same classes listed dog, cat, slightly shifted), target.npz."""
    x, y = blobs(60, 0.0, 0)
    np.savez(tmp_path / "lab.npz", x=x, y=y, classes=np.array(["cat", "dog"]))
    x, y = blobs(20, 0.7, 1)
    np.savez(tmp_path / "mid.npz", x=x, y=1 - y, classes=np.array(["dog", "cat"]), w=np.full(20, 2.0))
    x, y = blobs(40, 1.5, 2)
    np.savez(tmp_path / "target.npz", x=x, y=y, classes=np.array(["cat", "dog"]))
    return tmp_path


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a.npz", [("source", "a.npz")]),
        ("lab=a.npz", [("lab", "a.npz")]),
        (["x/a.npz", "y/b"], [("a", "x/a.npz"), ("b", "y/b")]),
        (["lab=x/a.npz", "mid=x/b.npz"], [("lab", "x/a.npz"), ("mid", "x/b.npz")]),
        ({"lab": "a.npz", "mid": "b.npz"}, [("lab", "a.npz"), ("mid", "b.npz")]),
    ],
)
def test_the_forms_of_data_source(source, expected):
    assert labeled_sources(DataConfig(source=source)) == expected
    assert labeled_sources(DataConfig(source=source, root="/r")) == [(n, f"/r/{p}") for n, p in expected]


def test_a_config_file_takes_a_list_or_a_mapping_and_saves_it_as_given(tmp_path):
    for source in (["lab=a.npz", "mid=b.npz"], {"lab": "a.npz", "mid": "b.npz"}):
        cfg = load_config(values={"data": {"source": source, "intermediate": "mid"}})
        assert cfg.data.intermediate == ("mid",)
        (tmp_path / "c.yaml").write_text(cfg.to_yaml())
        assert load_config(str(tmp_path / "c.yaml")) == cfg


def test_two_domains_of_one_name_are_refused():
    with pytest.raises(ConfigError, match=r"two labeled domains are named 'a' \(x/a.npz, y/a.npz\); name each"):
        labeled_sources(DataConfig(source=("x/a.npz", "y/a.npz")))


def test_npz_domains_are_matched_by_class_name_and_pooled(three_domains):
    root = three_domains
    cfg = DataConfig(
        source={"lab": "lab.npz", "mid": "mid.npz"}, target="target.npz", root=str(root), intermediate="mid"
    )
    data = build_run_data(cfg)
    assert data.classes == ["cat", "dog"]
    assert [(d.name, d.intermediate) for d in data.domains] == [("lab", False), ("mid", True)]
    _, y_mid = blobs(20, 0.7, 1)
    mid = data.domains[1]
    together = torch.cat([mid.train.y, mid.val.y])
    assert sorted(together.tolist()) == sorted(y_mid.tolist())  # dog, cat → cat, dog: labels mean the same class
    assert len(data.source_train) == len(data.domains[0].train) + len(mid.train)
    assert data.source_train.d.tolist() == [0] * len(data.domains[0].train) + [1] * len(mid.train)
    assert data.source_train.w.tolist() == [1.0] * len(data.domains[0].train) + [2.0] * len(mid.train)


def test_folders_with_different_classes_share_one_sorted_list(shape_folders, tmp_path):
    mid = tmp_path / "mid"
    shutil.copytree(shape_folders["target"], mid)
    shutil.rmtree(mid / "square")
    cfg = DataConfig(
        source=[f"lab={shape_folders['source']}", f"mid={mid}"], target=str(shape_folders["flat"]), image_size=32,
        num_workers=0,
    )  # fmt: skip
    data = build_run_data(cfg, ModelConfig(backbone="test_resnet"))
    assert data.classes == ["circle", "square", "triangle"]
    assert [d.name for d in data.domains] == ["lab", "mid"]
    assert set(data.domains[1].train.y.tolist()) <= {0, 2}


@pytest.mark.parametrize(
    ("keys", "error", "message"),
    [
        ({"intermediate": "scanner"}, ConfigError, r"data.intermediate names 'scanner', which is not a labeled domain"),
        ({"intermediate": ["lab", "mid"]}, ConfigError, "marks every labeled domain"),
        ({"source": {"lab": "lab.npz", "mid": "nope.npz"}}, DataError, "nope.npz does not exist"),
    ],
)
def test_bad_labeled_domains_are_named(three_domains, keys, error, message):
    values = {"source": {"lab": "lab.npz", "mid": "mid.npz"}, "target": "target.npz", "root": str(three_domains)}
    with pytest.raises(error, match=message):
        build_run_data(DataConfig(**(values | keys)))


def test_some_npz_files_naming_classes_and_others_not_is_refused(three_domains):
    x, y = blobs(10, 0.0, 3)
    np.savez(three_domains / "plain.npz", x=x, y=y)
    cfg = DataConfig(source=["lab.npz", "plain.npz"], target="target.npz", root=str(three_domains))
    with pytest.raises(DataError, match=r"plain\.npz does not"):
        build_run_data(cfg)


def test_cli_trains_on_named_domains_and_reports_each_held_out_accuracy(three_domains, tiny_cfg):
    run = three_domains / "run"
    args = ["train", "--source", f"lab={three_domains / 'lab.npz'}", "--source", f"mid={three_domains / 'mid.npz'}"]
    args += ["--intermediate", "mid", "--target", str(three_domains / "target.npz"), "--out", str(run), "--quiet"]
    args += ["--method", "dann", "--set", "train.steps=4", "--set", "train.eval_every=2", "--set", "train.batch_size=8"]
    args += ["--set", "data.val_fraction=0.3", "--set", "model.mlp_dims=[8]", "--set", "model.discriminator_dims=[4]"]
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert set(records[-1]["labeled_val"]) == {"lab", "mid"}
    report = (run / "report.md").read_text()
    assert "| `mid` | intermediate |" in report and "| `lab` | source |" in report
    saved = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert saved["meta"]["domains"] == ["lab", "mid"]


def test_multiclass_discriminator_is_at_chance_with_zero_logits_and_its_runs_reload(three_domains, tiny_cfg):
    logits = torch.zeros(7, 3)
    adv, _ = multiclass_domain_loss(logits, torch.tensor([0, 0, 1, 2, 2, 2, 2]))
    assert adv.item() == pytest.approx(math.log(3))
    # each domain counts once, however many of its samples the batch holds
    logits = torch.tensor([[4.0, 0, 0], [4.0, 0, 0], [0, 0, 4.0]])
    adv, acc = multiclass_domain_loss(logits, torch.tensor([0, 0, 1]))
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0, 1]), reduction="none")
    assert adv.item() == pytest.approx((ce[0].item() + ce[2].item()) / 2) and acc.item() == pytest.approx(2 / 3)
    cfg = replace(
        tiny_cfg,
        data={"source": {"lab": "lab.npz", "mid": "mid.npz"}, "target": "target.npz", "root": str(three_domains)},
        method={"domain_discriminator": "multiclass"},
    )
    result = dann.fit(cfg, three_domains / "run")
    assert result.net.discriminator(torch.zeros(2, 16)).shape == (2, 3)  # lab, mid, target
    reloaded, trained = dann.load_run(three_domains / "run").net.state_dict(), result.net.state_dict()
    assert reloaded.keys() == trained.keys() and all(torch.equal(reloaded[k], trained[k]) for k in trained)


def test_multiclass_labels_each_labeled_sample_with_its_domain():
    model = ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(4,))
    method_cfg = MethodConfig(name="dann", domain_discriminator="multiclass")
    torch.manual_seed(0)
    net, method = build_network(model, method_cfg, (4,), 2, 3), create_method(method_cfg)
    x_s, x_t, y_s = torch.randn(4, 4), torch.randn(3, 4), torch.tensor([0, 1, 0, 1])
    d_s = torch.tensor([0, 1, 1, 0])
    adv = method.loss(net, Batch(x_s, y_s, x_t, d_s=d_s), 0.5).terms["adv"]
    logits = net.discriminator(net.forward_features(torch.cat([x_s, x_t])))
    expected, _ = multiclass_domain_loss(logits, torch.tensor([0, 1, 1, 0, 2, 2, 2]))
    assert adv.item() == pytest.approx(expected.item())
