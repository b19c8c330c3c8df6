"""Each method trains with its reference's defaults and network: null method keys resolve per method (and runs record
them), MDD's GRL is capped, the bottleneck follows the method on the small backbones, an EMA of the weights is what
a run evaluates and predicts with, and AdaMatch's pieces (distribution alignment, warm-up, logit interpolation)."""

import math
import warnings

import pytest
import torch

import dann
from dann.config import Config, ConfigError, MethodConfig, ModelConfig, load_config, replace
from dann.errors import DataWarning
from dann.methods import METHODS, Batch, create_method
from dann.methods.base import METHOD_DEFAULTS, Forward, Method, grl_coeff, method_defaults
from dann.methods.fixmatch import TARGET_WINDOW, AdaMatch, DistributionAlignment, warmup
from dann.models.network import PerImageStandardize
from dann.plan import build_network, network_model, saved_run_config
from dann.training.feedback import RunSummary


def test_null_keys_resolve_to_the_methods_own_defaults_and_given_values_win():
    mdd = method_defaults(MethodConfig(name="mdd"))
    assert (mdd.grl_hi, mdd.grl_horizon, mdd.lambda_adv) == (0.1, 10000, 1.0)
    vada = method_defaults(MethodConfig(name="vada"))  # λ_d on the features only: the discriminator trains at 1
    assert (vada.lambda_adv, vada.grl_hi) == (1.0, 0.01)
    dann_ = method_defaults(MethodConfig(name="dann"))
    assert (dann_.grl_hi, dann_.grl_horizon, dann_.ema_eval) == (1.0, 0, 0.0)
    assert method_defaults(MethodConfig(name="adamatch")).ema_eval == 0.999
    assert method_defaults(MethodConfig(name="mdd", grl_hi=0.5)).grl_hi == 0.5  # a given value is kept
    for name in METHODS.names():  # every null key gets a value, whatever the method
        resolved = method_defaults(MethodConfig(name=name))
        assert all(getattr(resolved, key) is not None for key in METHOD_DEFAULTS), name


@pytest.mark.parametrize("steps", [300, 3000, 20000])
def test_mdd_grl_coefficient_is_tllibs_warm_start_and_never_exceeds_its_cap(steps):
    cfg = method_defaults(MethodConfig(name="mdd"))
    coeffs = [grl_coeff(cfg, s / steps, steps) for s in range(0, steps + 1, max(1, steps // 200))]
    assert max(coeffs) <= 0.1 + 1e-9 and coeffs[0] == 0.0
    assert coeffs == sorted(coeffs)  # a warm start: never decreasing
    for i in (100, 1000, 5000, 9000):  # TLlib: WarmStartGradientReverseLayer(alpha=1, lo=0, hi=0.1, max_iters=1000)
        if i <= steps:
            tllib = 2 * 0.1 / (1 + math.exp(-1.0 * i / 1000)) - 0.1
            assert grl_coeff(cfg, i / steps, steps) == pytest.approx(tllib)
    held = 0.1 * (2 / (1 + math.exp(-10 * min(steps, 10000) / 10000)) - 1)
    assert grl_coeff(cfg, 1.0, steps) == pytest.approx(held)  # after the horizon it holds
    dann_cfg = method_defaults(MethodConfig(name="dann"))  # the whole run, peaking at 1
    assert grl_coeff(dann_cfg, 0.5, steps) == pytest.approx(2 / (1 + math.exp(-5)) - 1)


def test_the_mdd_term_reads_the_horizon_from_the_step_of_its_run():
    cfg = MethodConfig(name="mdd")
    net, method = build_network(ModelConfig(backbone="mlp", mlp_dims=(8,)), cfg, (4,), 3), create_method(cfg)
    method.steps = 20000
    x = torch.randn(6, 4)
    logged = method.loss(net, Batch(x, torch.zeros(6, dtype=torch.int64), x), 0.25).terms  # step 5,000 of 10,000
    assert logged["grl_lambda"] == pytest.approx(0.1 * (2 / (1 + math.exp(-5)) - 1))


def test_the_bottleneck_follows_the_methods_reference_network_on_small_backbones_only():
    images, vectors = (3, 28, 28), (30,)
    for name in METHODS.names():
        width = METHODS.get(name).bottleneck
        resolved = network_model(ModelConfig(), MethodConfig(name=name), images)
        assert resolved.bottleneck_dim == width, name
        assert resolved.head_dims == (() if width else (100, 100)), name  # the paper's fc-100 head only without one
        assert network_model(ModelConfig(), MethodConfig(name=name), vectors).bottleneck_dim == width
    assert all(METHODS.get(n).bottleneck == 256 for n in METHODS.names() if n != "source_only")
    assert METHODS.get("source_only").bottleneck == 0  # a BatchNorm layer that only sees the source stays opt-in
    given = ModelConfig(bottleneck_dim=64)
    assert network_model(given, MethodConfig(name="mdd"), images).bottleneck_dim == 64  # a given width wins
    timm_like = ModelConfig(backbone="resnet18")
    assert network_model(timm_like, MethodConfig(name="dann"), images).bottleneck_dim is None  # timm: 256 under auto
    net = build_network(ModelConfig(backbone="mlp", mlp_dims=(8,)), MethodConfig(name="mdd"), (4,), 3)
    assert net.num_features == METHODS.get("mdd").bottleneck
    assert isinstance(net.bottleneck[1], torch.nn.BatchNorm1d)


def test_a_run_records_its_methods_resolved_defaults_and_network(tiny_data, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, method={"name": "mdd"}, model={"bottleneck_dim": None})  # auto: the method's network
    result = dann.fit(cfg, tmp_path / "run", data=tiny_data)
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert (saved.method.grl_hi, saved.method.grl_horizon, saved.method.lambda_adv) == (0.1, 10000, 1.0)
    assert saved.model.bottleneck_dim == METHODS.get("mdd").bottleneck
    assert result.config == saved
    loaded = dann.load_run(tmp_path / "run")
    assert loaded.net.num_features == METHODS.get("mdd").bottleneck


def test_a_run_that_left_the_bottleneck_to_auto_before_runs_recorded_it_still_loads(tiny_data, tiny_cfg, tmp_path):
    run = tmp_path / "run"
    dann.fit(replace(tiny_cfg, method={"name": "mdd"}, model={"bottleneck_dim": None}), run, data=tiny_data)
    text = (run / "config.yaml").read_text()
    width = METHODS.get("mdd").bottleneck
    (run / "config.yaml").write_text(text.replace(f"bottleneck_dim: {width}", "bottleneck_dim: null"))
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    checkpoint["config"]["model"]["bottleneck_dim"] = None
    torch.save(checkpoint, run / "checkpoints" / "last.pt")
    assert dann.load_run(run).net.num_features == width


def test_the_bottleneck_kinds_and_the_weight_normalized_classifier_are_the_references_layers():
    x = torch.randn(6, 4)
    for kind, last in (("bn_relu", torch.nn.ReLU), ("bn_dropout", torch.nn.Dropout)):
        model = ModelConfig(backbone="mlp", mlp_dims=(8,), bottleneck_dim=5, bottleneck_kind=kind, weight_norm=True)
        net = build_network(model, MethodConfig(name="dann"), (4,), 3).eval()
        assert [type(m) for m in net.bottleneck] == [torch.nn.Linear, torch.nn.BatchNorm1d, last], kind
        head = net.head[-1]
        g, v = head.parametrizations.weight.original0, head.parametrizations.weight.original1
        torch.testing.assert_close(head.weight, g * v / v.norm(dim=1, keepdim=True))  # per output row
        f = net.forward_features(x)
        assert (f < 0).any() == (kind == "bn_dropout")  # no activation after SHOT's BatchNorm: negative features
    resolved = network_model(ModelConfig(), MethodConfig(name="dann"), (4,))
    assert (resolved.bottleneck_kind, resolved.weight_norm) == ("bn_relu", False)  # auto: the methods' layer
    with pytest.raises(dann.ConfigError, match=r"model\.bottleneck_kind.*bn_relu \| bn_dropout.*'bn'"):
        ModelConfig(bottleneck_kind="bn")


def test_per_image_standardisation_is_part_of_the_network():
    layer = PerImageStandardize()
    x = torch.rand(5, 3, 16, 16) * torch.arange(1, 6).view(5, 1, 1, 1) + 2
    y = layer(x)
    assert torch.allclose(y.flatten(1).mean(1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(y.flatten(1).std(1), torch.ones(5), atol=1e-3)
    assert torch.allclose(layer(-x), -y, atol=1e-5)  # polarity is kept: it is a sign flip after standardisation
    net = build_network(
        ModelConfig(backbone="lenet", input_norm="per_image"), MethodConfig(name="dann"), (3, 16, 16), 2
    )
    assert torch.allclose(net.eval()(x), net(3 * x + 1), atol=1e-4)  # invariant to each image's gain and offset
    with pytest.raises(dann.ConfigError, match=r"model\.input_norm=per_image standardises images"):
        build_network(ModelConfig(backbone="mlp", input_norm="per_image"), MethodConfig(name="dann"), (4,), 2)


def test_ema_eval_weights_are_what_a_run_evaluates_checkpoints_and_predicts_with(tiny_data, tiny_cfg, tmp_path):
    cfg = replace(tiny_cfg, method={"name": "dann", "ema_eval": 0.5})
    result = dann.fit(cfg, tmp_path / "run", data=tiny_data)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    averaged, trained = state["eval_model"], state["model"]
    assert averaged is not None and any(not torch.equal(averaged[k], trained[k]) for k in trained)
    kept = state["method"]["ema_eval"]  # what a resume continues the average from
    assert kept["updates"] == cfg.train.steps and all(torch.equal(kept["weights"][k], averaged[k]) for k in averaged)
    loaded = dann.load_run(tmp_path / "run")
    assert all(torch.equal(v, averaged[k]) for k, v in loaded.net.state_dict().items())
    assert all(torch.equal(v.cpu(), averaged[k]) for k, v in result.net.state_dict().items())
    x = tiny_data.target_eval.x
    with torch.no_grad():
        evaluated = (loaded.net(x).argmax(1) == tiny_data.target_eval.y).float().mean().item()
    assert result.history[-1]["oracle"]["target_acc"] == pytest.approx(evaluated)
    plain = torch.load(
        dann.fit(replace(tiny_cfg, method={"name": "dann"}), tmp_path / "plain", data=tiny_data).run_dir
        / "checkpoints"
        / "last.pt",
        weights_only=True,
    )
    assert plain["eval_model"] is None


def test_adamatch_distribution_alignment_against_a_hand_computation():
    align = DistributionAlignment()
    q = torch.tensor([[0.7, 0.2, 0.1], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.9, 0.05, 0.05]])  # biased to class 0
    p_s = torch.tensor([[0.2, 0.4, 0.4], [0.1, 0.5, 0.4]])
    out = align(q, p_s)
    p_source = torch.full((3,), 1 / 3) * 0.999 + 0.001 * p_s.mean(0)
    p_target = (torch.full((3,), 1 / 3) * (TARGET_WINDOW - 1) + q.mean(0)) / TARGET_WINDOW
    expected = q * (1e-6 + p_source) / (1e-6 + p_target)
    torch.testing.assert_close(out, expected / expected.sum(1, keepdim=True))
    for _ in range(400):  # the averages settle: the one-class bias moves toward the source prior
        out = align(q, p_s)
    assert out[:, 0].mean() < q[:, 0].mean() - 0.2
    assert torch.allclose(out.sum(1), torch.ones(4))
    state = align.state_dict()
    fresh = DistributionAlignment()
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(q, p_s), align(q, p_s))


def test_adamatch_warmup_is_a_half_cosine_over_the_first_half():
    assert warmup(0.0, 0.5) == 0.0 and warmup(0.5, 0.5) == pytest.approx(1.0) and warmup(0.9, 0.5) == 1.0
    assert warmup(0.25, 0.5) == pytest.approx(0.5)
    assert warmup(0.0, 0.0) == 1.0


def test_adamatch_target_term_is_silent_at_the_start_and_uses_the_joint_strong_view():
    cfg = MethodConfig(name="adamatch")
    net = build_network(ModelConfig(backbone="mlp", mlp_dims=(8,)), cfg, (4,), 3)
    method = create_method(cfg)
    x_s, x_t = torch.randn(8, 4), torch.randn(8, 4) + 1
    batch = Batch(x_s, torch.arange(8) % 3, x_t)
    out = method.loss(net, batch, 0.0)
    assert out.terms["unlabeled_weight"] == 0.0 and out.terms["fixmatch"].item() == 0.0
    assert method.loss(net, batch, 0.6).terms["unlabeled_weight"] == 1.0
    term = method.terms[0][2]
    z = torch.zeros(8, 3)
    fw = Forward(net, batch, x_s, x_t, z, z, 0.6, 100, z_t_strong=torch.randn(8, 3, requires_grad=True))
    value, _ = term(fw)
    value.backward()  # the strong logits come from the method's joint forward: no extra forward of the network
    assert fw.z_t_strong.grad is not None
    assert all(p.grad is None for p in net.parameters())


def test_adamatch_random_logit_interpolation_mixes_the_joint_and_the_source_only_forward():
    cfg = MethodConfig(name="adamatch", label_smoothing=0.0)
    model = ModelConfig(backbone="mlp", mlp_dims=(8,))
    x_s, x_t = torch.randn(8, 4), torch.randn(8, 4) * 3 + 2  # a target batch that moves BatchNorm's batch statistics
    batch = Batch(x_s, torch.arange(8) % 3, x_t)
    losses = {}
    for interpolate in (True, False):
        torch.manual_seed(0)
        net = build_network(model, cfg, (4,), 3)
        method = create_method(replace(Config(method=cfg), method={"logit_interpolation": interpolate}).method)
        torch.manual_seed(1)
        losses[interpolate] = method.loss(net, batch, 0.0).terms["cls"].item()
    assert losses[True] != pytest.approx(losses[False])


def test_adabn_changes_only_batchnorm_statistics_to_the_targets_and_is_what_the_run_predicts_with(
    tiny_data, tiny_cfg, tmp_path
):
    data = tiny_data
    cfg = replace(tiny_cfg, model={"batchnorm": True, "adabn": True}, method={"name": "source_only"})
    result = dann.fit(cfg, tmp_path / "run", data=data)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    adapted, trained = state["eval_model"], state["model"]
    assert load_config(str(tmp_path / "run" / "config.yaml")).model.adabn
    changed = {k for k in trained if not torch.equal(adapted[k], trained[k])}
    assert changed and all(k.endswith(("running_mean", "running_var")) for k in changed)
    net = dann.load_run(tmp_path / "run").net
    assert all(torch.equal(v, adapted[k]) for k, v in net.state_dict().items())
    # the statistics are the target's: the first BatchNorm layer's running mean is the mean of its target inputs
    first = net.backbone.net[2]  # Flatten, Linear, BatchNorm1d, ReLU
    with torch.no_grad():
        inputs = net.backbone.net[1](torch.flatten(data.target_train.x, 1))
    torch.testing.assert_close(first.running_mean, inputs.mean(0), rtol=1e-4, atol=1e-4)
    assert all(torch.equal(v.cpu(), adapted[k]) for k, v in result.net.state_dict().items())


def test_the_weight_average_ramps_its_momentum_as_the_mean_teacher_does():
    from dann.methods.base import WeightAverage

    net = torch.nn.Linear(2, 1)
    average = WeightAverage(0.99)
    average.prepare(net)
    values = [net.weight.detach().clone()]
    expected = values[0].clone()
    for t in range(1, 6):
        with torch.no_grad():
            net.weight += 1.0
        average.update(net)
        m = min(0.99, 1 - 1 / (t + 1))
        expected = m * expected + (1 - m) * net.weight.detach()
        torch.testing.assert_close(average.weights["weight"], expected)
    resumed = WeightAverage(0.99)
    resumed.load_state_dict(average.state_dict())
    assert resumed.updates == 5 and torch.equal(resumed.weights["weight"], average.weights["weight"])


def test_the_paper_preset_is_the_seeds_exact_dann_network_and_schedule():
    cfg = load_config("paper")
    model = network_model(cfg.model, cfg.method, (3, 28, 28))
    method = method_defaults(cfg.method)
    assert (model.backbone, model.bottleneck_dim, model.head_dims, model.discriminator_dims) == (
        "lenet_conv",
        0,
        (100, 100),
        (100,),
    )
    assert (method.name, method.lambda_adv, method.grl_hi, method.grl_horizon) == ("dann", 1.0, 1.0, 0)
    assert (method.label_smoothing, method.ema_eval) == (0.1, 0.0)
    net = build_network(cfg.model, cfg.method, (3, 28, 28), 10)
    assert isinstance(net.bottleneck, torch.nn.Identity) and net.num_features == 768  # D reads the conv features
    assert grl_coeff(method, 0.5, 3000) == pytest.approx(2 / (1 + math.exp(-5)) - 1)  # over progress, as published


def test_a_run_written_before_the_reference_defaults_resumes_as_it_trained(tiny_data, tiny_cfg, tmp_path):
    import yaml

    run = tmp_path / "run"
    cfg = replace(tiny_cfg, model={"bottleneck_dim": 0}, method={"name": "dann", "regularizers": {"fixmatch": 1.0}})
    dann.fit(replace(cfg, method={"unlabeled_warmup": 0.0, "distribution_alignment": False}), run, data=tiny_data)
    old = yaml.safe_load((run / "config.yaml").read_text())  # as an earlier version wrote it: no such keys, auto width
    for key in ("distribution_alignment", "logit_interpolation", "unlabeled_warmup", "ema_eval", "grl_horizon",
                "intensity_augment"):  # fmt: skip
        del old["method"][key]
    for key in ("input_norm", "adabn", "bottleneck_kind", "weight_norm"):
        del old["model"][key]
    old["model"]["bottleneck_dim"] = None
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    resumed = dann.fit(out=run, resume=True, data=tiny_data)
    assert resumed.config.model.bottleneck_dim == 0  # read from the checkpoint, not today's 256 for dann
    assert (resumed.config.model.bottleneck_kind, resumed.config.model.weight_norm) == ("bn_relu", False)
    m = resumed.config.method
    assert (m.distribution_alignment, m.unlabeled_warmup, m.ema_eval, m.grl_horizon) == (False, 0.0, 0.0, 0)
    assert m.intensity_augment is True  # read by no term of this run: today's default, which no warning names
    teacher = {**old, "method": {**old["method"], "name": "mean_teacher", "regularizers": {}}}
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "config.yaml").write_text(yaml.safe_dump(teacher))
    assert saved_run_config(tmp_path / "teacher").method.intensity_augment is False  # as the mean teacher trained
    old["method"]["name"] = "fixmatch"  # the former FixMatch loss cannot be continued by AdaMatch: one clear error
    old["method"]["regularizers"] = {}
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(dann.ConfigError, match="former fixmatch"):
        dann.fit(out=run, resume=True, data=tiny_data)


def test_precision_auto_keeps_adversarial_and_unmeasured_methods_in_fp32():
    from dann.methods.base import keeps_fp32

    assert not keeps_fp32(create_method(MethodConfig(name="source_only")))  # measured: bf16 within the seed spread
    assert not keeps_fp32(create_method(MethodConfig(name="mcc")))
    assert not keeps_fp32(create_method(MethodConfig(name="dann")))  # alone, binary discriminator: measured
    assert not keeps_fp32(create_method(MethodConfig(name="mean_teacher")))  # measured: within the seed spread
    for name in ("cdan_e", "mdd", "vada", "iwdan", "adamatch", "fixmatch", "clip_distill"):
        assert keeps_fp32(create_method(MethodConfig(name=name))), name
    from dann.methods.staged import StageLoss

    for unmeasured in ({"regularizers": {"mcc": 1.0}}, {"domain_discriminator": "multiclass"}):
        assert keeps_fp32(create_method(MethodConfig(name="dann", **unmeasured))), unmeasured
    assert keeps_fp32(StageLoss(create_method(MethodConfig(name="dann")), ("source",), {0: 1.0}, (0,)))  # in stages


def test_uratio_draws_that_many_target_rows_per_source_row_for_adamatch_only(tiny_data, tiny_cfg, monkeypatch):
    """AdaMatch's target:source batch ratio (google-research/adamatch ``--uratio``, 3 in the paper): the method gets
    ``uratio`` × ``train.batch_size`` target rows per step; a method whose terms do not read it warns and keeps one
    target row per source row; the start-up summary says so; an invalid ratio is refused."""
    sizes: list[tuple[int, int]] = []
    loss = Method.loss

    def spy(self, net, batch, progress):
        sizes.append((len(batch.x_s), len(batch.x_t)))
        return loss(self, net, batch, progress)

    monkeypatch.setattr(Method, "loss", spy)
    monkeypatch.setattr(AdaMatch, "loss", lambda self, net, batch, progress: spy(self, net, batch, progress))
    cfg = replace(tiny_cfg, train={"steps": 4, "batch_size": 8, "eval_every": 4})
    run = dann.fit(replace(cfg, method={"name": "adamatch", "uratio": 3}), data=tiny_data)
    assert sizes == [(8, 24)] * 4
    assert "training: 4 steps × batch 8 source + 24 target" in "\n".join(RunSummary(**run.summary).lines())
    sizes.clear()
    with pytest.warns(DataWarning, match="method 'dann' does not read method.uratio"):
        run = dann.fit(replace(cfg, method={"name": "dann", "uratio": 3}), data=tiny_data)
    assert sizes == [(8, 8)] * 4 and "batch 8 per domain" in "\n".join(RunSummary(**run.summary).lines())
    sizes.clear()
    dann.fit(replace(cfg, method={"name": "dann", "regularizers": {"fixmatch": 1.0}, "uratio": 2}), data=tiny_data)
    assert sizes == [(8, 16)] * 4  # the regularizer reads it, so the method's whole target batch follows
    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match=r"method\.uratio must be an integer >= 1"):
            MethodConfig(name="adamatch", uratio=bad)


def test_a_resume_compares_only_the_term_options_the_run_reads(tiny_data, tiny_cfg, tmp_path):
    import yaml

    for name, reads in (("dann", False), ("mean_teacher", True)):
        run = tmp_path / name
        cfg = replace(tiny_cfg, method={"name": name})
        dann.fit(cfg, run, data=tiny_data)
        saved = yaml.safe_load((run / "config.yaml").read_text())
        saved["method"]["intensity_augment"] = False  # recorded under an earlier default
        (run / "config.yaml").write_text(yaml.safe_dump(saved))
        if reads:  # the mean teacher's views: another model, refused
            with pytest.raises(ConfigError, match=r"method.intensity_augment \(saved False, given True\)"):
                dann.fit(cfg, run, data=tiny_data, resume=True)
        else:  # DANN never read it: the default's change is no change to this run, and nothing to warn about
            with warnings.catch_warnings():
                warnings.simplefilter("error", DataWarning)
                assert dann.fit(cfg, run, data=tiny_data, resume=True).config.method.name == "dann"
