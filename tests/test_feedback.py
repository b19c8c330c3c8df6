"""What a run shows: the start-up summary (as data and as lines), one time estimate with a warning for long CPU runs,
one line per evaluation; and the input size of image files following the backbone."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import dann
from dann.cli import main
from dann.config import replace
from dann.data import ImageConfig
from dann.models.backbones import BACKBONES, NATIVE_SIZE
from dann.training import feedback
from dann.training.feedback import Console, evaluation_line


def test_summary_says_device_network_classes_counts_and_schedule(tiny_cfg, tiny_data):
    lines = []
    result = dann.fit(tiny_cfg, data=tiny_data, echo=lines.append)
    s = result.summary
    assert s["device"].startswith("cpu (") and s["backbone"] == "mlp" and s["input_shape"] == (4,)
    assert s["classes"] == ["0", "1"] and s["method"] == "dann" and s["precision"] == "fp32"
    assert s["counts"] == {"source_train": 64, "source_val": 16, "target_train": 60, "target_eval": 60, "target_val": 0}
    assert s["target_eval_is_target"] and (s["steps"], s["batch_size"], s["start"]) == (12, 16, 0)
    block = "\n".join(lines[:6])  # the summary, after the line saying how many threads auto chose
    assert "mlp, input 4" in block and "classes:  2 (0, 1)" in block
    assert "source 64 train + 16 held out; target 60 unlabeled in training (its labels only score it" in block
    assert "12 steps × batch 16 per domain; method dann; precision fp32" in block and "images:" not in block
    assert not s["channels_last"] and s["images"] == ""  # arrays: no image files to read
    evaluations = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in evaluations] == ["6/12", "12/12"]  # one line per evaluation
    assert all("(uses target labels)" in line for line in evaluations)


def test_the_recommended_method_is_summarized_as_what_it_resolves_to(tiny_cfg, tiny_data):
    cfg = replace(tiny_cfg, method={"name": "recommended"})
    assert dann.fit(cfg, data=tiny_data).summary["method"] == dann.config.RECIPE["name"]


def test_evaluation_line_names_each_figure_and_marks_target_labels():
    record = {
        "step": 500,
        "train": {"cls": 0.3, "domain_acc": 0.625},
        "source_val": {"acc": 0.9123},
        "validators": {"bnm": 0.41234, "entropy": -0.2},
        "selection": {"validator": "bnm", "step": 500, "score": 0.41234},
        "oracle": {"target_acc": 0.705},
    }
    line = evaluation_line(record, 3000)
    assert line == (
        "step 500/3000  source held-out acc 0.912  domain acc 0.625  bnm 0.4123 (selection best so far)  "
        "target acc 0.705 (uses target labels)"
    )
    plain = {"step": 10, "train": {"cls": 0.3}, "validators": {"bnm": 0.5}, "selection": dict(record["selection"])}
    line = evaluation_line(plain, 20)
    assert line == "step 10/20  bnm 0.5 (selection)" and "target" not in line  # no labels, no target figure


def fake_clock(monkeypatch, seconds_per_call):
    ticks = itertools.count()
    monkeypatch.setattr(feedback, "clock", lambda: next(ticks) * seconds_per_call)


@pytest.mark.parametrize(("seconds", "warned"), [(0.01, False), (10.0, True)])
def test_one_estimate_after_twenty_steps_and_a_warning_for_hours_on_a_cpu(tiny_cfg, monkeypatch, seconds, warned):
    cfg = replace(tiny_cfg, train={"steps": 3000}, model={"backbone": "resnet50"})
    data = SimpleNamespace(image=ImageConfig(224))
    lines = []
    console = Console(lines.append, cfg, data, SimpleNamespace(type="cpu"))
    fake_clock(monkeypatch, seconds * feedback.ESTIMATE_STEPS)  # the window's two readings are 20 steps apart
    for done in range(1, 100):
        console.stepped(done)
    assert len([line for line in lines if line.startswith("time: ")]) == 1
    assert lines[0].startswith(f"time: {seconds:.3g} s/step → about ")
    assert "2979 steps left" in lines[0]
    if warned:
        assert lines[1] == (
            "warning: about 8.3 h on the CPU; lower train.steps (now 3000), train.batch_size (now 16), model.backbone "
            "(now resnet50; lenet_conv trains at 28×28), data.image_size (now 224), or train on a GPU "
            "(train.device=cuda)"
        )
    else:
        assert len(lines) == 1


def test_image_files_get_the_native_size_of_a_small_backbone_recorded_in_the_run(tmp_path, capsys):
    """64×64 pictures and the default network: trained at lenet_conv's 28×28, not 64 nor timm's usual 224."""
    rng = np.random.default_rng(0)
    for domain, classes in (("lab", ("a", "b")), ("new", ("a", "b"))):
        for name in classes:
            (tmp_path / domain / name).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / domain / name / f"{i}.png")
    run = tmp_path / "run"
    args = ["train", "--source", str(tmp_path / "lab"), "--target", str(tmp_path / "new"), "--out", str(run)]
    fast = ["--steps", "2", "--set", "train.batch_size=4", "--set", "data.num_workers=0", "--device", "cpu"]
    assert main([*args, *fast, "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "model:    lenet_conv, input 3×28×28 (images resized to 28×28: lenet_conv's native size" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["image_size"] == 28 and saved["model"]["backbone"] == "lenet_conv"
    model = dann.load_run(run)
    assert model.image.size == 28 and model.input_shape == (3, 28, 28)
    assert main([*args, *fast, "--no-report", "--resume"]) == 0  # the same command resumes: auto matches its choice


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_registered_backbone_declares_its_native_size(name):
    assert NATIVE_SIZE[name] in (28, 32)
    cfg = dann.load_config(values={"model": {"backbone": name}})
    net = dann.create_network(cfg.model, (3, NATIVE_SIZE[name], NATIVE_SIZE[name]), 3)
    assert net(torch.zeros(2, 3, NATIVE_SIZE[name], NATIVE_SIZE[name])).shape == (2, 3)
