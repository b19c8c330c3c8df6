"""Training in stages: the staged preset's loss by hand, one stage as a plain run, resume inside a stage."""

import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import dann
from dann.config import load_config, replace
from dann.data import as_domain, make_domain_data
from dann.errors import ConfigError, DataWarning
from dann.methods import Batch, create_method
from dann.methods.base import method_defaults
from dann.models.grl import grad_reverse
from dann.plan import build_network
from dann.reporting import plots
from dann.training.schedules import warm_start_grl
from dann.training.stages import plan_stages
from dann.training.trainer import Trainer

from .conftest import blobs

TINY = {
    "model": {"backbone": "mlp", "mlp_dims": [16], "discriminator_dims": [8], "freeze_bn": False},
    "train": {"steps": 12, "batch_size": 8, "eval_every": 4, "log_every": 2, "progress": False, "device": "cpu"},
}


@pytest.fixture
def three_domains():
    """Labeled source and mid (mid weighted 1 or 3 by class), unlabeled target; mid marked intermediate."""
    x_s, y_s = blobs(60, 0.0, 0)
    x_m, y_m = blobs(24, 0.8, 1)
    x_t, y_t = blobs(40, 1.5, 2)
    mid = as_domain(x_m, y_m, "mid", 1.0 + 2.0 * y_m)
    sources = {"source": as_domain(x_s, y_s), "mid": mid}
    return make_domain_data(sources, as_domain(x_t, y_t), val_fraction=0.2, intermediate=["mid"])


def staged_cfg(**sections):
    cfg = load_config("staged", values=TINY)
    return replace(cfg, **sections) if sections else cfg


def _grads(net, loss):
    net.zero_grad()
    loss.backward()
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def test_the_staged_preset_computes_the_two_stage_loss_by_hand(three_domains):
    cfg = staged_cfg()
    torch.manual_seed(0)
    net = build_network(cfg.model, cfg.method, (4,), 2, 3).double()
    first, second = plan_stages(cfg, create_method(cfg.method), three_domains).stages
    assert (first.steps, second.steps, first.name, second.name) == (3, 9, "supervised", "adversarial")
    g = torch.Generator().manual_seed(1)
    x_s, x_m, x_t = (torch.randn(n, 4, generator=g).double() for n in (5, 4, 6))
    y_s, y_m = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([1, 0, 1, 1])
    w_m = torch.tensor([3.0, 1.0, 0.0, 2.0]).double()
    eps, lam1, lam3 = method_defaults(cfg.method).label_smoothing, 1.0, cfg.method.lambda_adv  # eps: null → 0.1
    assert (cfg.train.stages[0].classify["intermediate"], cfg.method.lambda_adv) == (lam1, 1.0)

    def ce(x, y):
        return F.cross_entropy(net(x), y, reduction="none", label_smoothing=eps)

    # stage 1: CE(source) + λ1 · CE(mid), unweighted
    batch = Batch(torch.cat([x_s, x_m]), torch.cat([y_s, y_m]), x_t, torch.cat([torch.ones(5).double(), w_m]),
                  torch.tensor([0] * 5 + [1] * 4), parts=(5, 4))  # fmt: skip
    out = first.method.loss(net, batch, 0.5)
    reference = ce(x_s, y_s).mean() + lam1 * ce(x_m, y_m).mean()
    torch.testing.assert_close(out.total, reference, rtol=1e-12, atol=1e-12)
    expected = _grads(net, reference)
    for k, grad in _grads(net, out.total).items():
        torch.testing.assert_close(grad, expected[k], rtol=1e-10, atol=1e-12)
    # stage 2: weighted CE(mid) + λ3 · 0.5 (BCE(D(GRL(f_mid, λ2)), 0) + BCE(D(GRL(f_t, λ2)), 1)), λ2 warming up
    p = 0.3
    lam2 = warm_start_grl(p, 0.0, 1.0, cfg.method.grl_gamma)
    out = second.method.loss(net, Batch(x_m, y_m, x_t, w_m, torch.ones(4, dtype=torch.int64), parts=(4,)), p)
    d_m = net.discriminator(grad_reverse(net.forward_features(x_m), lam2))
    d_t = net.discriminator(grad_reverse(net.forward_features(x_t), lam2))
    adv = 0.5 * (F.binary_cross_entropy_with_logits(d_m, torch.zeros_like(d_m))
                 + F.binary_cross_entropy_with_logits(d_t, torch.ones_like(d_t)))  # fmt: skip
    reference = (w_m * ce(x_m, y_m)).sum() / w_m.sum() + lam3 * adv
    assert out.terms["grl_lambda"] == pytest.approx(lam2) and 0 < lam2 < 1
    torch.testing.assert_close(out.total, reference, rtol=1e-12, atol=1e-12)
    expected = _grads(net, reference)
    for k, grad in _grads(net, out.total).items():
        torch.testing.assert_close(grad, expected[k], rtol=1e-10, atol=1e-12)


def test_one_stage_over_the_whole_run_is_the_plain_run(tiny_cfg, tiny_data):
    plain = dann.fit(tiny_cfg, data=tiny_data).net.state_dict()
    staged = replace(tiny_cfg, train={"stages": [{"name": "all", "fraction": 1.0}]})
    one = dann.fit(staged, data=tiny_data)
    assert all(torch.equal(plain[k], v) for k, v in one.net.state_dict().items())
    assert [r["stage"] for r in one.history] == ["all", "all"]


def test_stages_train_in_turn_and_record_their_stage(three_domains, tmp_path):
    run = tmp_path / "run"
    result = dann.fit(staged_cfg(), run, data=three_domains, report=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["stage"]) for r in records] == [
        (3, "supervised"), (4, "adversarial"), (8, "adversarial"), (12, "adversarial")
    ]  # fmt: skip
    assert records[0]["stage_progress"] == 1.0 and records[1]["stage_progress"] == pytest.approx(1 / 9)
    assert "adv" not in records[0]["train"] and {"cls_source", "cls_mid"} <= set(records[0]["train"])
    assert "adv" in records[-1]["train"] and set(records[-1]["train"]) & {"cls_source"} == set()
    # the learning rate and the GRL follow each stage's own progress: stage 2 starts again at optim.lr and λ = 0
    assert records[1]["train"]["lr"] == pytest.approx(staged_cfg().optim.lr)
    assert records[0]["train"]["lr"] < staged_cfg().optim.lr
    assert records[1]["train"]["grl_lambda"] == 0.0 < records[2]["train"]["grl_lambda"]
    kept = torch.load(run / "checkpoints/supervised.pt", weights_only=True)
    assert kept["step"] == 3 and result.history[-1]["step"] == 12
    report = (run / "report.md").read_text()
    assert "supervised (3 steps" in report and "the start of stage adversarial (after step 3)" in report
    assert plots.stage_boundaries(records) == [(3, "adversarial")]


def test_resume_inside_the_second_stage_gives_the_uninterrupted_run(three_domains, tmp_path, monkeypatch):
    full = dann.fit(staged_cfg(), tmp_path / "full", data=three_domains)
    save, saves = Trainer._save, []

    def save_then_die_at_step_8(self, *args):
        save(self, *args)
        saves.append(args[5])
        if args[5] == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_die_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        dann.fit(staged_cfg(), tmp_path / "crashed", data=three_domains)
    monkeypatch.setattr(Trainer, "_save", save)
    assert saves == [3, 4, 8]
    resumed = dann.fit(out=tmp_path / "crashed", data=three_domains, resume=True)
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in resumed.history] == [3, 4, 8, 12]
    assert resumed.history[-1]["train"] == pytest.approx(full.history[-1]["train"])


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"fraction": 1.0, "classify": {"scanner": 1.0}}], r"train.stages\[0\] \(stage1\).classify names 'scanner', "
         r"which is not a labeled domain; labeled domains: source, mid; roles: source, intermediate"),
        ([{"fraction": 1.0, "method": {"name": "dann"}, "align": ["nope"]}], r"\(stage1\).align names 'nope'"),
        ([{"fraction": 1.0, "method": {"name": "source_only"}, "align": ["mid"]}], "align must be empty"),
        ([{"fraction": 1.0, "method": {"name": "cdan"}}], "method cdan's discriminator is not the one"),
        ([{"fraction": 1.0, "method": {"name": "dann", "domain_discriminator": "multiclass"}}],
         "method.domain_discriminator shapes the run's one discriminator"),
        ([{"fraction": 1.0, "classify": {"mid": 1.0, "intermediate": 2.0}}], "names labeled domain 'mid' twice"),
    ],
)  # fmt: skip
def test_bad_stages_are_named_before_the_run_directory_is_made(three_domains, tmp_path, stages, message):
    cfg = staged_cfg(train={"stages": stages}, method={"name": "dann"})
    with pytest.raises(ConfigError, match=message):
        dann.fit(cfg, tmp_path / "run", data=three_domains)
    assert not (tmp_path / "run").exists()


def test_the_intermediate_role_needs_a_marked_domain(tiny_data):
    with pytest.raises(ConfigError, match="names the role 'intermediate', but no labeled domain has it"):
        dann.fit(staged_cfg(), data=tiny_data)


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"steps": 10, "stages": [{"steps": 4}, {"steps": 5}]}, r"add up to 9 steps \(stage1 4 \+ stage2 5\)"),
        ({"stages": [{"fraction": 0.5}, {"fraction": 0.4}]}, "fractions add up to 0.9, not 1"),
        ({"stages": [{"steps": 3, "fraction": 0.5}]}, "needs either steps .* not both"),
        ({"stages": [{"fraction": 0.5, "name": "a"}, {"fraction": 0.5, "name": "a"}]}, "two stages are named 'a'"),
        ({"stages": [{"fraction": 1.0, "name": "../x"}]}, "a stage name is letters"),
        ({"stages": [{"fraction": 1.0, "name": "last"}]}, "not last, prev, best"),
        ({"stages": [{"fraction": 1.0, "method": {"lambda_adv": -1}}]}, r"\(stage1\): method.lambda_adv must be >= 0"),
        ({"stages": [{"fraction": 1.0, "optim": {"momentum": 0.5}}]}, "optim.momentum cannot change between stages"),
        ({"stages": [{"fraction": 1.0, "lr": 0.1}]}, r"train.stages\[0\]: unknown key 'lr'"),
    ],
)
def test_bad_stage_configs_are_refused(train, message):
    with pytest.raises(ConfigError, match=message):
        load_config(values={"train": train})


def test_stage_schedules_read_the_stage_progress():
    cfg = staged_cfg()
    plan = plan_stages(cfg, create_method(cfg.method), _two_domain_data())
    second = plan.stages[1]
    assert second.progress(3) == 0.0 and second.progress(12 - 1) == pytest.approx(8 / 9)
    assert second.lr(3) == cfg.optim.lr
    assert second.lr(7) == pytest.approx(cfg.optim.lr / (1 + 10 * 4 / 9) ** 0.75)
    assert math.isclose(plan.at(2).progress(2), 2 / 3) and plan.at(2).name == "supervised"


def _two_domain_data():
    x, y = blobs(20, 0.0, 0)
    sources = {"a": as_domain(x, y), "b": as_domain(x, y)}
    return make_domain_data(sources, as_domain(x), val_fraction=0.0, intermediate=["b"])


def test_each_stages_method_takes_its_own_reference_defaults_whatever_the_run_resolved(three_domains, tmp_path):
    stages = [
        {"name": "warm", "fraction": 0.5, "method": {"name": "source_only"}},
        {"name": "vada", "fraction": 0.5, "method": {"name": "vada"}},
    ]
    cfg = staged_cfg(train={"stages": stages}, method={"name": "dann", "regularizers": {}})
    result = dann.fit(cfg, tmp_path / "run", data=three_domains)
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert saved.method.grl_hi is None and saved.method.ema_eval is None  # left to each stage's method
    second = plan_stages(result.config, create_method(result.config.method), three_domains).stages[1]
    inner = second.method.inner.cfg
    assert (inner.name, inner.lambda_adv, inner.grl_hi, inner.ema_eval) == ("vada", 1.0, 0.01, 0.998)


def test_the_runs_regularizers_train_in_the_stages_that_read_the_target(three_domains):
    """method.regularizers of the run (a CLIP teacher, an entropy term) apply where a stage reads the target batch;
    the staged preset's supervised stage reads none and runs without them; set in such a stage, they are refused."""
    cfg = staged_cfg(method={"regularizers": {"entropy": 0.1}})
    stages = plan_stages(cfg, create_method(cfg.method), three_domains).stages
    assert [[name for name, _, _ in s.method.inner.terms] for s in stages] == [[], ["adv", "entropy"]]
    supervised = {"name": "s", "fraction": 0.5, "method": {"name": "source_only", "regularizers": {"entropy": 0.1}}}
    cfg = replace(cfg, train={"stages": [supervised, {"name": "a", "fraction": 0.5, "method": {"name": "dann"}}]})
    with pytest.raises(ConfigError, match=r"reads no target batch, so method\.regularizers cannot apply"):
        plan_stages(cfg, create_method(cfg.method), three_domains)


def test_a_stage_with_a_target_batch_ratio_draws_it_and_says_so(three_domains, tmp_path):
    """method.uratio read by a later stage's term: that stage draws uratio × train.batch_size target rows; the
    summary and the report say so per stage, and no warning claims the run does not read it."""
    cfg = staged_cfg(method={"regularizers": {"fixmatch": 1.0}, "uratio": 3})
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # "does not read method.uratio" would fail the test
        run = dann.fit(cfg, tmp_path / "run", data=three_domains, echo=lines.append)
    training = next(line for line in lines if line.startswith("training:"))
    assert "batch 8 source + 24 target in stage adversarial" in training
    assert "stages:   supervised: source_only → adversarial: dann+fixmatch:1" in lines
    page = dann.build_report(run.run_dir, three_domains).with_name("report.md").read_text()
    assert "batch 8 source + 24 target in stage adversarial" in page
    assert "adversarial (9 steps, dann + fixmatch 1:" in page
    with pytest.warns(DataWarning, match=r"the stages of this run do not read method\.teacher_momentum:"):
        dann.fit(replace(cfg, method={"teacher_momentum": 0.5}), data=three_domains)
    with warnings.catch_warnings():  # the preset's own keys, left to auto, are no setting of the user's
        warnings.simplefilter("error", DataWarning)
        dann.fit(staged_cfg(), data=three_domains)
