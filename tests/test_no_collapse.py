"""Every registered method trains without collapse inside dann's own network, on the embedded `digits` task for a few
hundred steps: its features stay alive, it keeps its source accuracy within 5 points of its matched source-only
control (the same network; a source-free method is exempt: it never sees the source), and no class takes more than
half of the target predictions. The term tests check
formulas; this checks that each method, with its reference defaults and layout, actually trains."""

import pytest
import torch

import dann
from dann.config import load_config, replace
from dann.data.builtin import build_task
from dann.evaluation.metrics import embed
from dann.methods import METHODS

STEPS = ["train.steps=300", "train.batch_size=64", "train.eval_every=300", "train.precision=fp32"]
# every registered method once (an alias such as fixmatch, AdaMatch's former name, trains the same class)
NAMES = list({METHODS.get(n): n for n in reversed(METHODS.names()) if n != "source_only"}.values())[::-1]
NAMES = [n for n in NAMES if not METHODS.get(n).needs_names]  # clip_distill needs named images: see test_clip.py


@pytest.fixture(scope="module")
def digits():
    return build_task("digits")


@pytest.fixture(scope="module")
def controls(digits, tmp_path_factory):
    """The source-only control on each network the methods use (no bottleneck, and each reference width)."""
    runs = {}
    for width in sorted({METHODS.get(n).bottleneck for n in METHODS.names()}):
        cfg = load_config("digits", [*STEPS, "method.name=source_only", f"model.bottleneck_dim={width}"])
        runs[width] = dann.fit(cfg, tmp_path_factory.mktemp(f"control{width}") / "run", data=digits)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_each_method_trains_without_collapse_on_digits(name, digits, controls, tmp_path):
    width = METHODS.get(name).bottleneck
    cfg = load_config("digits", [*STEPS, f"method.name={name}"])
    if METHODS.get(name).needs_init:
        cfg = replace(cfg, model={"init_from": str(controls[width].run_dir)})
    result = dann.fit(cfg, tmp_path / "run", data=digits)
    assert result.config.model.bottleneck_dim == width  # compared with the control on its own network
    source = result.history[-1]["source_val"]["acc"]
    control = controls[width].history[-1]["source_val"]["acc"]
    if METHODS.get(name).uses_source:  # a source-free method (shot) never sees the source: it may drift from it
        assert source >= control - 0.05, f"{name}: source held-out accuracy {source:.3f} vs its control's {control:.3f}"
    f_t, z_t, _ = embed(result.net, digits.target_train)
    dead = (f_t.abs().amax(0) <= 1e-6).float().mean().item()
    assert dead < 0.5, f"{name}: {dead:.0%} of the feature units are zero on every target sample"
    share = torch.bincount(z_t.argmax(1), minlength=digits.num_classes).max().item() / len(z_t)
    assert share <= 0.5, f"{name}: one class takes {share:.0%} of the target predictions"
