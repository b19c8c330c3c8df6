"""Every registered method (and regularized combinations) through the real trainer and CLI: target labels never
change training, resume equals an uninterrupted run, a CLI round trip, and the source-free method's contract."""

import numpy as np
import pytest
import torch

import dann
from dann.cli import main
from dann.config import MethodConfig, replace
from dann.data import as_domain, make_domain_data
from dann.errors import ConfigError
from dann.methods import METHODS, create_method

from .conftest import blobs
from .test_trainer import assert_same, weights

# clip_distill needs images and class names in words: tests/test_clip.py trains it
GENERIC = [name for name in METHODS.names() if not METHODS.get(name).needs_names]
CASES = [(name, {}) for name in GENERIC] + [
    ("fixmatch", {"ema_teacher": 0.5}),
    ("adamatch", {"uratio": 3}),  # 48 target rows per step: two passes of the 60 target samples in 12 steps
    ("dann", {"regularizers": {"mcc": 1.0, "fixmatch": 1.0, "entropy": 0.1, "bnm": 0.1}}),
]
IDS = [name + ("+" + "+".join(extra) if extra else "") for name, extra in CASES]


def tiny(target_labels: np.ndarray | None = None, source_x: np.ndarray | None = None):
    x_s, y_s = blobs(80, 0.0, 0)
    x_t, y_t = blobs(60, 1.5, 1)
    source = as_domain(x_s if source_x is None else source_x, y_s)
    return make_domain_data(source, as_domain(x_t, y_t if target_labels is None else target_labels), val_fraction=0.2)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A source-only run on the tiny data: the start of shot (model.init_from)."""
    from dann.config import load_config

    cfg = load_config(
        values={
            # shot's reference layout (a 256-wide bottleneck under the classifier), which shot's network has
            "model": {"backbone": "mlp", "mlp_dims": [16], "discriminator_dims": [8], "bottleneck_dim": 256},
            "method": {"name": "source_only"},
            "train": {"steps": 12, "batch_size": 16, "eval_every": 6, "progress": False, "device": "cpu"},
        }
    )
    out = tmp_path_factory.mktemp("runs") / "source"
    dann.fit(cfg, out, data=tiny())
    return out


def config_for(tiny_cfg, name, extra, source_run):
    cfg = replace(tiny_cfg, method={"name": name, **extra})
    if not create_method(cfg.method).needs_init:
        return cfg
    return replace(cfg, model={"init_from": str(source_run), "bottleneck_dim": 256})  # the start's network


@pytest.mark.parametrize(("name", "extra"), CASES, ids=IDS)
def test_target_labels_never_change_the_trained_weights(name, extra, tiny_cfg, source_run):
    cfg = config_for(tiny_cfg, name, extra, source_run)
    _, y_t = blobs(60, 1.5, 1)
    permuted = np.random.default_rng(0).permutation(y_t)
    assert (permuted != y_t).any()
    a, b = dann.fit(cfg, data=tiny()), dann.fit(cfg, data=tiny(permuted))
    assert_same(weights(a.net), weights(b.net))
    x_t, _ = blobs(60, 1.5, 1)
    predicted = b.net.eval()(torch.tensor(x_t)).argmax(1).numpy()
    assert b.history[-1]["oracle"]["target_acc"] == pytest.approx((predicted == permuted).mean())  # labels were read


@pytest.mark.parametrize(("name", "extra"), CASES, ids=IDS)
def test_resume_after_a_crash_equals_the_uninterrupted_run(
    name, extra, tiny_cfg, source_run, tmp_path, crash_after_first_checkpoint
):
    cfg = config_for(tiny_cfg, name, extra, source_run)
    crash_after_first_checkpoint(dann.fit, cfg, tmp_path / "crashed", data=tiny())
    resumed = dann.fit(out=tmp_path / "crashed", resume=True, data=tiny())
    assert_same(weights(resumed.net), weights(dann.fit(cfg, data=tiny()).net))


@pytest.mark.parametrize("name", GENERIC)
def test_cli_round_trip(name, npz_files, tmp_path):
    def train(method: str, out, *extra: str) -> int:
        data = ["--source", str(npz_files["source"]), "--target", str(npz_files["target"]), "--backbone", "mlp"]
        quick = ["--steps", "6", "--quiet", "--no-report", "--set", "train.device=cpu", "--set", "train.eval_every=3"]
        return main(["train", *data, *quick, "--method", method, "--out", str(out), *extra])

    extra = []
    if create_method(MethodConfig(name=name)).needs_init:
        layout = f"model.bottleneck_dim={METHODS.get(name).bottleneck}"  # the start has the method's network
        assert train("source_only", tmp_path / "source", "--set", layout) == 0
        extra = ["--init-from", str(tmp_path / "source")]
    assert train(name, tmp_path / name, *extra) == 0
    assert dann.load_run(tmp_path / name).config.method.name == name
    predictions = tmp_path / "p.csv"
    assert (
        main(["predict", "--run", str(tmp_path / name), "--data", str(npz_files["target"]), "--out", str(predictions)])
        == 0
    )
    assert len(predictions.read_text().splitlines()) == 61


def test_shot_reads_no_source_sample_and_keeps_the_source_head(tiny_cfg, source_run):
    cfg = config_for(tiny_cfg, "shot", {}, source_run)
    x_s, _ = blobs(80, 0.0, 0)
    other = np.random.default_rng(5).normal(size=x_s.shape).astype(np.float32) * 10
    a, b = dann.fit(cfg, data=tiny()), dann.fit(cfg, data=tiny(source_x=other))
    assert_same(weights(a.net), weights(b.net))
    start = dann.load_run(source_run).net.state_dict()
    for k, v in a.net.state_dict().items():
        if k.startswith("head."):
            assert torch.equal(v, start[k]), k
    assert not torch.equal(a.net.state_dict()["backbone.net.1.weight"], start["backbone.net.1.weight"])


def test_shot_without_a_trained_start_or_with_a_foreign_one_is_one_clear_error(tiny_cfg, source_run, tmp_path):
    cfg = replace(tiny_cfg, method={"name": "shot"})
    with pytest.raises(ConfigError, match=r"model\.init_from"):
        dann.fit(cfg, tmp_path / "a", data=tiny())
    assert not (tmp_path / "a").exists()
    cfg = replace(cfg, model={"init_from": str(source_run), "bottleneck_dim": None})  # auto: the start's network
    renamed = make_domain_data(as_domain(*blobs(80, 0.0, 0)), as_domain(*blobs(60, 1.5, 1)), classes=["a", "b"])
    with pytest.raises(ConfigError, match="classes"):
        dann.fit(cfg, tmp_path / "b", data=renamed)
    wide = make_domain_data(as_domain(*blobs(80, 0.0, 0, dims=5)), as_domain(*blobs(60, 1.5, 1, dims=5)))
    with pytest.raises(ConfigError, match=r"shape \(4,\)"):
        dann.fit(cfg, tmp_path / "c", data=wide)
    with pytest.raises(ConfigError, match="no trained run"):
        dann.fit(replace(cfg, model={"init_from": str(tmp_path / "nowhere")}), tmp_path / "d", data=tiny())
    assert not any((tmp_path / n).exists() for n in "bcd")


@pytest.mark.parametrize("name", [n for n in GENERIC if n != "source_only"])
def test_every_method_trains_under_bf16_autocast(name, tiny_cfg, source_run):
    cfg = replace(config_for(tiny_cfg, name, {}, source_run), train={"precision": "bf16"})
    net = dann.fit(cfg, data=tiny()).net
    assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("name", ["cdan", "fixmatch"])
def test_the_scikit_learn_estimator_takes_any_method(name):
    from dann import DANNClassifier

    x_s, y_s = blobs(80, 0.0, 0)
    x_t, _ = blobs(60, 1.5, 1)
    clf = DANNClassifier(backbone="mlp", method=name, max_steps=6, batch_size=16, device="cpu")
    assert clf.fit(x_s, y_s, X_target=x_t).predict(x_t).shape == (60,)
