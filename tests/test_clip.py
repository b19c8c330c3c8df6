"""CLIP in dann: the zero-shot teacher (OpenCLIP, local weights only), the clip_distill term (CMKD), zero-shot
prediction, CLIP image towers through timm. Everything runs on a tiny randomly initialised OpenCLIP model and a tiny
timm CLIP-layout tower on the CPU; nothing is downloaded."""

import csv
import dataclasses
import json
import math
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import dann
from dann.cli import main
from dann.clip import ZeroShotTeacher, build_teacher, check_teacher, load_clip
from dann.clip.check import TeacherCheck
from dann.config import ConfigError, MethodConfig, load_config, replace
from dann.data import as_domain, make_domain_data
from dann.errors import DataWarning
from dann.methods import create_method
from dann.methods.clip_distill import agreement, cmkd_loss, gini_impurity, ramp
from dann.plan import build_network, build_run_data, plan_run
from dann.sklearn import DANNClassifier
from dann.training.trainer import Trainer, build_optimizer

from .conftest import damaged_weight_files

# the tiny random teacher is poor on noise images, and the runs say so: a warning tested on its own below
pytestmark = pytest.mark.filterwarnings("ignore:the CLIP teacher.*no better than:dann.errors.DataWarning")
CLASSES = ["cat", "dog", "bird"]
TINY = {  # an OpenCLIP model config small enough for the CPU: 32-pixel images, 2 layers of width 32
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@register_model
def vit_test_patch8_clip_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """timm's CLIP image tower layout (``vit_base_patch16_clip_224``: pre-norm ViT) at a size the CPU trains fast."""
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, pre_norm=True, norm_layer=nn.LayerNorm)
    return VisionTransformer(**args, num_classes=kwargs["num_classes"], in_chans=kwargs["in_chans"])


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """(config .json, checkpoint .pt) of the tiny OpenCLIP model, and a checkpoint of another architecture."""
    folder = tmp_path_factory.mktemp("clip")
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY))
    other = folder / "wider-clip.json"
    wide = json.loads(json.dumps(TINY))
    wide["vision_cfg"]["width"] = 48
    other.write_text(json.dumps(wide))
    torch.manual_seed(1)
    model, _ = load_clip(MethodConfig(name="clip_distill", clip_model=str(config)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # other weights than a random start's
    weights = folder / "tiny-clip.pt"
    torch.save(model.state_dict(), weights)
    wrong = folder / "wider-clip.pt"
    torch.save(load_clip(MethodConfig(name="clip_distill", clip_model=str(other)))[0].state_dict(), wrong)
    return config, weights, wrong


def clip_method(clip_files, **values) -> MethodConfig:
    config, weights, _ = clip_files
    return MethodConfig(name="clip_distill", clip_model=str(config), clip_file=str(weights), **values)


def image_data(seed: int = 0, classes=CLASSES, val_fraction: float = 0.25):
    rng = np.random.default_rng(seed)
    x_s, y_s = rng.random((40, 3, 32, 32), dtype=np.float32), rng.integers(0, len(classes), 40)
    x_t = rng.random((30, 3, 32, 32), dtype=np.float32)
    return make_domain_data(as_domain(x_s, y_s), as_domain(x_t, None), classes=classes, val_fraction=val_fraction)


def class_folders(root, rng, per_class: int = 1, side: int = 32):
    """One subfolder of random PNG images per class of CLASSES under ``root``."""
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def run_config(clip_files, **method):
    config, weights, _ = clip_files
    return load_config(
        values={
            "model": {"backbone": "lenet", "bottleneck_dim": 0},
            "method": {"name": "clip_distill", "clip_model": str(config), "clip_file": str(weights), **method},
            "data": {"augment": False},
            "train": {"steps": 6, "batch_size": 8, "eval_every": 3, "progress": False, "device": "cpu",
                      "precision": "fp32"},
        }
    )  # fmt: skip


def reference_logits(clip: nn.Module, tokenizer, pixels: torch.Tensor, prompts, classes=CLASSES) -> torch.Tensor:
    """CLIP's zero-shot logits computed here, apart from dann's teacher: image · prompt-ensembled text."""
    with torch.no_grad():
        text = torch.stack(
            [F.normalize(clip.encode_text(tokenizer([p.format(c) for p in prompts])), dim=-1).mean(0) for c in classes]
        )
        image = F.normalize(clip.encode_image(pixels), dim=-1)
        return clip.logit_scale.exp() * image @ F.normalize(text, dim=-1).T


# --- the loss, by hand -----------------------------------------------------------------------------------------------


def test_cmkd_loss_and_its_coefficient_equal_a_hand_computation():
    z_t = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    z_c = torch.tensor([[1.0, 1.0, 0.0], [-1.0, 2.0, 0.0]])
    p = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in z_t.tolist()]
    q = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in z_c.tolist()]
    c = [math.exp(-sum(q[i][k] * (math.log(q[i][k]) - math.log(p[i][k])) for k in range(3))) for i in range(2)]

    def gini(rows, weights):
        mass = [sum(r[k] for r in rows) for k in range(3)]
        return sum(weights[i] * (1 - sum(rows[i][k] ** 2 / mass[k] for k in range(3))) for i in range(2))

    m = [[(p[i][k] + q[i][k]) / 2 for k in range(3)] for i in range(2)]
    expected = gini(p, c) + gini(m, [1 - ci for ci in c])
    loss, coefficient = cmkd_loss(z_t, z_c)
    assert coefficient.tolist() == pytest.approx(c, rel=1e-6)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert 0 < c[1] < c[0] < 1  # the second row disagrees more: the teacher is trusted less there
    assert float(agreement(torch.softmax(z_t, 1), torch.softmax(z_t, 1)).min()) == pytest.approx(1.0)


def test_the_loss_sends_gradient_to_the_student_only_and_the_ramp_is_the_references_sigmoid():
    z_t = torch.randn(5, 4, requires_grad=True)
    z_c = torch.randn(5, 4, requires_grad=True)
    loss, c = cmkd_loss(z_t, z_c)
    loss.backward()
    assert z_t.grad is not None and z_t.grad.abs().sum() > 0 and z_c.grad is None and not c.requires_grad
    assert ramp(0.0) == 0.0 and ramp(1.0) == pytest.approx(2 / (1 + math.exp(-1)) - 1)
    assert ramp(0.5) < ramp(1.0)
    assert float(gini_impurity(torch.eye(3), torch.ones(3))) == pytest.approx(0.0)  # one-hot rows: pure
    with pytest.raises(ValueError, match="differ"):
        cmkd_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# --- the teacher ------------------------------------------------------------------------------------------------------


def test_the_prompts_are_embedded_once_and_logits_are_image_times_text(clip_files, monkeypatch):
    teacher = build_teacher(clip_method(clip_files, clip_templates=("a photo of a {}.", "art of a {}.")), CLASSES)
    calls = []
    encode = teacher.clip.encode_text
    monkeypatch.setattr(teacher.clip, "encode_text", lambda tokens: calls.append(len(tokens)) or encode(tokens))
    x = torch.rand(4, 3, 32, 32)
    first, second = teacher(x), teacher(torch.rand(2, 3, 32, 32))
    assert calls == [len(CLASSES) * 2] and teacher.text_encodes == 1  # one pass over 3 classes × 2 prompts
    assert first.shape == (4, 3) and second.shape == (2, 3)
    clip, tokenizer = load_clip(clip_method(clip_files))
    pixels = (x - torch.tensor(teacher.clip_mean).view(1, 3, 1, 1)) / torch.tensor(teacher.clip_std).view(1, 3, 1, 1)
    expected = reference_logits(clip, tokenizer, pixels, ("a photo of a {}.", "art of a {}."))
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-4)


def test_the_teacher_takes_images_as_dann_prepared_them(clip_files):
    from dann.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageConfig

    plain = build_teacher(clip_method(clip_files), CLASSES)  # arrays: intensities in [0, 1]
    imagenet = build_teacher(clip_method(clip_files), CLASSES, ImageConfig(64, IMAGENET_MEAN, IMAGENET_STD))
    x = torch.rand(2, 3, 64, 64)
    normalized = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet(normalized), plain(x), rtol=1e-4, atol=1e-4)  # resized 64 → 32 both ways
    gray = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(plain(gray), plain(gray.expand(-1, 3, -1, -1)))


def test_a_checkpoint_of_another_architecture_is_one_error_naming_the_file(clip_files, tmp_path):
    config, _, wrong = clip_files
    with pytest.raises(ConfigError) as error:
        build_teacher(MethodConfig(name="clip_distill", clip_model=str(config), clip_file=str(wrong)), CLASSES)
    message = str(error.value)
    assert f"method.clip_file {wrong} does not fit" in message and "size mismatch" in message and "\n" not in message
    missing = tmp_path / "absent.pt"
    with pytest.raises(ConfigError, match=f"method.clip_file {missing} does not exist"):
        build_teacher(MethodConfig(name="clip_distill", clip_model=str(config), clip_file=str(missing)), CLASSES)
    _, weights, _ = clip_files
    for path, says in damaged_weight_files(tmp_path, weights).values():  # not weights or damaged: never "does not fit"
        with pytest.raises(ConfigError, match=f"^method.clip_file {re.escape(str(path))} {says}") as error:
            build_teacher(MethodConfig(name="clip_distill", clip_model=str(config), clip_file=str(path)), CLASSES)
        assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"unknown method.clip_model 'ViT-B-61'; did you mean ViT-B-16"):
        load_clip(MethodConfig(name="clip_distill", clip_model="ViT-B-61"))
    with pytest.raises(ConfigError, match="local file only"):
        load_clip(MethodConfig(name="clip_distill", clip_model="hf-hub:timm/vit_base_patch16_clip_224.openai"))
    with pytest.raises(ConfigError, match=r"method.clip_templates must be prompts with one \{\} each"):
        MethodConfig(clip_templates=("a photo",))


def test_a_clip_tower_through_timm_loads_its_own_weights_and_refuses_another_architectures(clip_files, tmp_path):
    from dann.config import ModelConfig
    from dann.models.backbones import create_backbone

    tower = create_backbone(ModelConfig(backbone="vit_test_patch8_clip_32"), (3, 32, 32))
    file = tmp_path / "tower.pt"
    torch.save({k: v + 1 for k, v in tower.state_dict().items()}, file)
    loaded = create_backbone(ModelConfig(backbone="vit_test_patch8_clip_32", pretrained_file=str(file)), (3, 32, 32))
    assert torch.equal(loaded.state_dict()["pos_embed"], tower.state_dict()["pos_embed"] + 1)
    _, _, wrong = clip_files  # an OpenCLIP checkpoint: not a timm tower's layout
    with pytest.raises(ConfigError) as error:
        create_backbone(ModelConfig(backbone="vit_test_patch8_clip_32", pretrained_file=str(wrong)), (3, 32, 32))
    assert f"model.pretrained_file {wrong} does not fit backbone" in str(error.value) and "\n" not in str(error.value)


def test_the_teachers_source_accuracy_is_measured_and_a_poor_one_is_said(clip_files):
    teacher = build_teacher(clip_method(clip_files), CLASSES)
    data = image_data()
    check = check_teacher(teacher, data, "tiny")
    x, y = data.source_val.x, data.source_val.y
    assert check.n == len(y) and check.split == "held-out"
    assert check.acc == pytest.approx(float((teacher(x).argmax(1) == y).float().mean()))
    assert check.majority == pytest.approx(float(torch.bincount(y).max()) / len(y))
    assert TeacherCheck(0.35, 200, 0.34, "held-out", "m").poor  # within noise of always guessing one class
    assert not TeacherCheck(0.9, 200, 0.34, "held-out", "m").poor
    assert "no better than guessing" in TeacherCheck(0.35, 200, 0.34, "held-out", "m").line()
    for n, acc in ((1, 1.0), (1, 0.0), (19, 0.3)):  # one sample is its own most common class: no verdict, no warning
        few = TeacherCheck(acc, n, 1.0 if n == 1 else 0.3, "held-out", "m")
        assert not few.poor and "too few samples to judge" in few.line(), (n, acc)


# --- training ---------------------------------------------------------------------------------------------------------


def test_the_teacher_gets_no_gradient_and_keeps_its_weights_over_training(clip_files):
    cfg = run_config(clip_files)
    data = image_data()
    method = create_method(cfg.method)
    net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes)
    lines: list[str] = []
    Trainer(plan_run(cfg, data), echo=lines.append).fit(net, method, data)
    name, weight, term = method.terms[0]
    assert (name, weight) == ("clip_distill", 0.25)
    teacher: ZeroShotTeacher = term.teacher
    fresh = load_clip(clip_method(clip_files))[0].state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in teacher.clip.state_dict().items())
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert teacher.text_encodes == 1
    assert bool(term.known.all())  # augment off: every target image's logits kept, exactly
    torch.testing.assert_close(term.logits, teacher(data.target_train.x))
    assert any(line.startswith("teacher:  CLIP") for line in lines)
    assert not any(id(p) in {id(q) for q in teacher.parameters()} for p in net.parameters())


def test_augmented_views_are_never_cached(clip_files):
    cfg = replace(run_config(clip_files), data={"augment": True}, train={"steps": 2})
    data = image_data()
    method = create_method(cfg.method)
    net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes)
    Trainer(plan_run(cfg, data)).fit(net, method, data)
    assert method.terms[0][2].logits is None and method.state_dict() == {}


def test_as_a_regularizer_with_a_clip_tower_the_run_resumes_exactly(clip_files, tmp_path, crash_after_first_checkpoint):
    cfg = replace(
        run_config(clip_files),
        model={"backbone": "vit_test_patch8_clip_32", "bottleneck_dim": 16},
        method={"name": "dann", "regularizers": {"clip_distill": 1.0}},
    )
    data = image_data()
    full = dann.fit(cfg, tmp_path / "full", data=data)
    assert "clip_distill" in full.history[-1]["train"] and full.history[-1]["train"]["clip_ramp"] > 0
    crash_after_first_checkpoint(dann.fit, cfg, tmp_path / "crashed", data=data)
    saved = torch.load(tmp_path / "crashed" / "checkpoints" / "last.pt", weights_only=True)["method"]["clip_distill"]
    assert 0 < int(saved["known"].sum()) < len(data.target_train)  # part of the cache, in the checkpoint
    resumed = dann.fit(out=tmp_path / "crashed", resume=True, data=data)
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert resumed.history[-1]["train"] == full.history[-1]["train"]


def test_the_staged_preset_trains_a_pretrained_clip_tower_with_the_teacher_built_once(
    clip_files, tmp_path, monkeypatch
):
    """The system dann descends from: the staged preset (supervised on source + mid, then DANN on mid vs target) on a
    CLIP image tower from a local file, with the run's clip_distill regularizer in the stage that reads the target.
    The teacher is built once for the run, the tower trains at the pretrained backbones' lr multiplier (0.1)."""
    tower = tmp_path / "tower.pt"
    from dann.config import ModelConfig
    from dann.models.backbones import create_backbone

    torch.save(create_backbone(ModelConfig(backbone="vit_test_patch8_clip_32"), (3, 32, 32)).state_dict(), tower)
    config, weights, _ = clip_files
    cfg = load_config(
        "staged",
        values={
            "model": {"backbone": "vit_test_patch8_clip_32", "pretrained_file": str(tower)},
            "method": {"regularizers": {"clip_distill": 1.0}, "clip_model": str(config), "clip_file": str(weights)},
            "data": {"augment": False},
            "train": {"steps": 8, "batch_size": 4, "eval_every": 4, "progress": False, "device": "cpu",
                      "precision": "fp32"},
        },
    )  # fmt: skip
    rng = np.random.default_rng(0)
    labeled = {
        "source": as_domain(rng.random((24, 3, 32, 32), dtype=np.float32), rng.integers(0, 3, 24)),
        "mid": as_domain(rng.random((12, 3, 32, 32), dtype=np.float32), rng.integers(0, 3, 12), "mid"),
    }
    target = as_domain(rng.random((16, 3, 32, 32), dtype=np.float32), None)
    data = make_domain_data(labeled, target, classes=CLASSES, val_fraction=0.25, intermediate=["mid"])
    built = []
    monkeypatch.setattr("dann.methods.clip_distill.build_teacher", lambda *a: built.append(1) or build_teacher(*a))
    optimizers = []
    monkeypatch.setattr(
        "dann.training.trainer.build_optimizer", lambda *a: optimizers.append(build_optimizer(*a)) or optimizers[-1]
    )
    lines: list[str] = []
    run = dann.fit(cfg, tmp_path / "staged", data=data, echo=lines.append)
    assert len(built) == 1
    assert optimizers[0].param_groups[0]["lr_mult"] == 0.1  # the backbone's group
    by_stage = {r["stage"]: r["train"] for r in run.history}
    assert "clip_distill" not in by_stage["supervised"] and by_stage["adversarial"]["clip_agree"] > 0
    stages = dann.load_run(run.run_dir).config.train.stages
    assert [s.name for s in stages] == ["supervised", "adversarial"]
    assert "stages:   supervised: source_only → adversarial: dann+clip_distill:1" in lines
    assert sum(line.startswith("teacher:  CLIP") for line in lines) == 1
    # a third stage that trains the teacher too shares the one built: one model in memory, one check
    first, second = (dataclasses.asdict(stage) for stage in cfg.train.stages)
    again = {"name": "again", "fraction": 0.25, "method": {"name": "dann"}, "classify": {"intermediate": 1.0}}
    longer = replace(cfg, train={"stages": [first, {**second, "fraction": 0.5}, again]})
    built.clear()
    lines.clear()
    run = dann.fit(longer, data=data, echo=lines.append)
    assert len(built) == 1 and sum(line.startswith("teacher:  CLIP") for line in lines) == 1
    assert {r["stage"] for r in run.history if "clip_agree" in r["train"]} == {"adversarial", "again"}


# --- zero-shot prediction and refusals --------------------------------------------------------------------------------


def test_predict_zero_shot_gives_the_argmax_of_image_times_text(clip_files, tmp_path, capsys):
    config, weights, _ = clip_files
    rng = np.random.default_rng(0)
    source = class_folders(tmp_path / "source", rng)
    images = tmp_path / "new"
    images.mkdir()
    pictures = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(images / f"{i}.png")
    out = tmp_path / "zero_shot.csv"
    argv = ["predict", "--zero-shot", "--source", str(source), "--images", str(images), "--out", str(out),
            "--set", f"method.clip_model={config}", "--set", f"method.clip_file={weights}"]  # fmt: skip
    assert main(argv) == 0
    assert "zero-shot predictions of CLIP" in capsys.readouterr().out
    rows = {row["path"]: row for row in csv.DictReader(out.open())}
    clip, tokenizer = load_clip(clip_method(clip_files))
    pixels = torch.tensor(np.stack(pictures), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    teacher = build_teacher(clip_method(clip_files), CLASSES)
    pixels = (pixels - torch.tensor(teacher.clip_mean).view(1, 3, 1, 1)) / torch.tensor(teacher.clip_std).view(
        1, 3, 1, 1
    )
    probs = reference_logits(clip, tokenizer, pixels, teacher.prompts, sorted(CLASSES)).softmax(1)  # dann's order
    got = [rows[str(images / f"{i}.png")] for i in range(6)]
    assert [row["predicted_class"] for row in got] == [sorted(CLASSES)[k] for k in probs.argmax(1).tolist()]
    assert [float(row["confidence"]) for row in got] == pytest.approx(probs.max(1).values.tolist(), abs=1e-5)
    assert [float(row["prob_2"]) for row in got] == pytest.approx(probs.sort(1).values[:, -2].tolist(), abs=1e-5)
    assert main(["predict", "--images", str(images), "--out", str(out)]) == 2  # neither --run nor --zero-shot
    no_weights = ["predict", "--zero-shot", "--source", str(source), "--images", str(images), "--out", str(out),
                  "--overwrite", "--set", f"method.clip_model={config}"]  # fmt: skip
    before = out.read_bytes()
    assert main(no_weights) == 2  # random weights would predict noise that looks like an answer
    assert "--set method.clip_file=FILE" in capsys.readouterr().err and out.read_bytes() == before
    # options one kind of prediction would silently ignore are refused, naming them; the CSV is left as it was
    for extra in (["--run", str(tmp_path)], ["--checkpoint", "best"]):
        assert main([*argv, "--overwrite", *extra]) == 2
        assert "drop --run and --checkpoint" in capsys.readouterr().err and out.read_bytes() == before
    plain = ["predict", "--run", str(tmp_path), "--images", str(images), "--out", str(out), "--overwrite"]
    for extra in (["--source", str(source)], ["--set", "method.clip_file=x.pt"], ["--config", "digits"]):
        assert main([*plain, *extra]) == 2
        assert "apply to --zero-shot only" in capsys.readouterr().err and out.read_bytes() == before


def test_a_refused_clip_run_writes_nothing(clip_files, tmp_path):
    config, weights, _ = clip_files
    numbered = load_config("moons", ["train.steps=2", "method.name=clip_distill"])  # classes 0 and 1
    with pytest.raises(ConfigError, match="the classes are numbers"):
        dann.fit(replace(numbered, method={"clip_model": str(config), "clip_file": str(weights)}), tmp_path / "run")
    missing = run_config(clip_files, clip_file=str(tmp_path / "none.pt"))
    with pytest.raises(ConfigError, match=r"none\.pt"):
        dann.fit(missing, tmp_path / "run", data=image_data())
    assert not (tmp_path / "run").exists()


def test_the_estimator_refuses_a_clip_teacher_without_class_names(clip_files):
    config, weights, _ = clip_files
    rng = np.random.default_rng(0)
    x, x_t = rng.random((24, 3, 32, 32), dtype=np.float32), rng.random((16, 3, 32, 32), dtype=np.float32)
    options = {"method.clip_model": str(config), "method.clip_file": str(weights), "data.augment": False}
    clf = DANNClassifier(
        backbone="lenet", method="clip_distill", max_steps=2, batch_size=8, device="cpu", config=options
    )
    with pytest.raises(
        ConfigError, match=r"builds its prompts from the class names, but the classes are numbers \(0, 1"
    ):
        clf.fit(x, np.arange(24) % 2, x_t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the tiny teacher is poor on noise: said, not refused
        named = clf.fit(x, np.array(["cat", "dog"])[np.arange(24) % 2], x_t)
    assert list(named.classes_) == ["cat", "dog"] and named.predict(x_t).shape == (16,)


def test_target_labels_never_reach_the_teacher_or_the_weights(clip_files):
    cfg = run_config(clip_files)
    plain, labeled = image_data(), image_data()
    rng = np.random.default_rng(5)
    target = as_domain(labeled.target_train.x.numpy(), rng.integers(0, 3, len(labeled.target_train)))
    labeled = make_domain_data(as_domain(plain.source_train.x.numpy(), plain.source_train.y.numpy()), target,
                               classes=CLASSES, val_fraction=0.0)  # fmt: skip
    plain = make_domain_data(as_domain(plain.source_train.x.numpy(), plain.source_train.y.numpy()),
                             as_domain(target.x.numpy(), None), classes=CLASSES, val_fraction=0.0)  # fmt: skip
    a, b = dann.fit(cfg, data=plain), dann.fit(cfg, data=labeled)
    for key, value in a.net.state_dict().items():
        assert torch.equal(value, b.net.state_dict()[key]), key


def test_with_image_files_unaugmented_the_kept_logits_are_the_teachers_on_each_image(clip_files, tmp_path):
    rng = np.random.default_rng(3)
    source, target = class_folders(tmp_path / "s", rng, 4, 40), class_folders(tmp_path / "t", rng, 4, 40)
    cfg = replace(
        run_config(clip_files),
        data={
            "source": str(source),
            "target": str(target),
            "image_size": 32,
            "num_workers": 0,
            "cache": "off",
            "val_fraction": 0.25,
        },
        train={"steps": 4, "batch_size": 4, "eval_every": 4},
    )
    data = build_run_data(cfg.data, cfg.model)
    method = create_method(cfg.method)
    net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes)
    Trainer(plan_run(cfg, data)).fit(net, method, data)
    term = method.terms[0][2]
    assert int(term.known.sum()) == len(data.target_train) == 12  # 4 steps × 4 rows, one pass and a third
    x, index = next(iter(data.target_train.batches(64)))  # the evaluation view: resized, normalized, no augmentation
    torch.testing.assert_close(term.logits[index], term.teacher(x), rtol=1e-5, atol=1e-5)


def test_check_data_says_the_teachers_source_accuracy_when_the_run_would_distil_clip(clip_files, tmp_path, capsys):
    config, weights, _ = clip_files
    rng = np.random.default_rng(3)
    source, target = class_folders(tmp_path / "source", rng, per_class=4), class_folders(tmp_path / "target", rng)
    files = ["check-data", "--source", str(source), "--target", str(target), "--quiet", "--workers", "1"]
    teacher_keys = ["--set", f"method.clip_model={config}", "--set", f"method.clip_file={weights}"]
    cfg = load_config(values={"data": {"source": str(source), "target": str(target)}, "method": {
        "clip_model": str(config), "clip_file": str(weights)}})  # fmt: skip
    data = build_run_data(cfg.data, cfg.model)
    expected = check_teacher(build_teacher(cfg.method, data.classes, data.image), data, str(config))
    for extra in (
        ["--set", "method.name=dann", "--set", "method.regularizers={clip_distill: 1.0}"],  # a regularizer
        ["--method", "clip_distill"],  # the method, as dann train names it
        ["--config", "staged", "--set", "data.intermediate=[]", "--set",  # a stage's method
         "train.stages=[{fraction: 0.5}, {fraction: 0.5, method: {name: clip_distill}}]"],
    ):  # fmt: skip
        assert main([*files, *teacher_keys, *extra]) == 0
        out = capsys.readouterr().out
        assert expected.line() in out, (extra, out)
    assert main([*files, *teacher_keys, "--method", "dann"]) == 0  # no teacher in the run: no CLIP built, a hint
    assert "teacher:  none: method.clip_file is set but no method of this run distils CLIP" in capsys.readouterr().out
    assert main([*files, "--method", "dann"]) == 0
    assert "teacher:" not in capsys.readouterr().out
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(weights.read_bytes()[:100])
    second = f"{{fraction: 0.5, method: {{name: clip_distill, clip_file: {weights}}}}}"
    stages = f"[{{fraction: 0.5, method: {{name: source_only}}}}, {second}]"
    staged = [
        "--config",
        "staged",
        "--set",
        "data.intermediate=[]",
        "--set",
        "method.name=clip_distill",
        "--set",
        f"method.clip_file={damaged}",
        "--set",
        f"method.clip_model={config}",
        "--set",
        f"train.stages={stages}",
    ]
    assert main([*files, *staged]) == 0  # the stages train, not the run's own method (whose file is damaged)
    assert expected.line() in capsys.readouterr().out
