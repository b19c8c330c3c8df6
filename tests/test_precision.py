import math

import pytest
import torch

import dann
from dann.config import MethodConfig, ModelConfig, load_config, replace
from dann.data import as_domain, make_domain_data
from dann.errors import ConfigError
from dann.methods.base import Batch
from dann.plan import create_method, create_network
from dann.reporting.report import initial_network
from dann.runs import LAST_CHECKPOINT, load_checkpoint
from dann.training import precision as precision_module
from dann.training.precision import Precision, resolve_channels_last, resolve_precision
from dann.training.seeds import derive_seed


def weights(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_bf16_trains_on_the_cpu_with_finite_losses_close_to_fp32(tiny_cfg, tiny_data):
    one = replace(tiny_cfg, train={"steps": 1, "eval_every": 1, "log_every": 1})
    torch.manual_seed(derive_seed(one.train.seed, "init"))
    init = weights(create_network(one.model, tiny_data.input_shape, tiny_data.num_classes))
    fp32 = weights(dann.fit(one, data=tiny_data).net)
    bf16_run = dann.fit(replace(one, train={"precision": "bf16"}), data=tiny_data)
    bf16 = weights(bf16_run.net)
    assert all(math.isfinite(v) for v in bf16_run.history[-1]["train"].values())
    for key in init:
        assert bf16[key].dtype == torch.float32, key  # autocast leaves the weights in float32
        step32, step16 = fp32[key] - init[key], bf16[key] - init[key]
        assert step16.abs().sum() > 0, key  # the weights moved
        # bf16 keeps ~3 significant digits: the update is fp32's up to ~10%, far from a wrong or missing update
        assert (step16 - step32).norm() <= 0.15 * step32.norm(), key
    assert any(not torch.equal(bf16[key], fp32[key]) for key in init)  # autocast did run in bfloat16
    longer = dann.fit(replace(tiny_cfg, train={"precision": "bf16"}), data=tiny_data)
    assert all(math.isfinite(v) for r in longer.history for v in r["train"].values())


def test_the_grl_and_the_discriminator_run_in_float32_under_autocast_while_the_features_do_not():
    torch.manual_seed(0)
    net = create_network(ModelConfig(backbone="mlp", mlp_dims=(8,), bottleneck_dim=6), (4,), 3)
    seen = []
    net.discriminator.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0].dtype, out.dtype)))
    x = torch.randn(10, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = net.forward_features(x)
        d = net.domain_logits(f, 0.5)
    assert f.dtype == torch.bfloat16 and seen == [(torch.float32, torch.float32)] and d.dtype == torch.float32
    d.sum().backward()  # the reversed gradient reaches the bfloat16 features and the layers under them
    assert all(p.grad is not None for p in net.bottleneck.parameters())
    with torch.no_grad():
        exact = net.discriminator(f.float())  # outside autocast: float32 throughout
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert net.discriminator(f).dtype == torch.bfloat16  # what it would be without the guard
            torch.testing.assert_close(net.domain_logits(f, 0.5), exact, rtol=0, atol=0)


def test_fp16_gradscaler_state_is_checkpointed_and_resume_is_exact(
    tiny_cfg, tiny_data, tmp_path, crash_after_first_checkpoint
):
    cfg = replace(tiny_cfg, train={"precision": "fp16", "accumulate": 2})
    full = dann.fit(cfg, tmp_path / "full", data=tiny_data)
    scaler = load_checkpoint(tmp_path / "full/checkpoints/last.pt").scaler
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(scaler)
    assert restored.get_scale() == torch.amp.GradScaler("cpu").get_scale()  # 12 steps without an overflow
    crash_after_first_checkpoint(dann.fit, cfg, tmp_path / "crashed", data=tiny_data)
    assert load_checkpoint(tmp_path / "crashed/checkpoints/last.pt").scaler != scaler  # 6 steps of growth count, not 12
    resumed = dann.fit(out=tmp_path / "crashed", data=tiny_data, resume=True)
    assert load_checkpoint(tmp_path / "crashed/checkpoints/last.pt").scaler == scaler  # restored, then counted on
    for key, value in weights(full.net).items():
        assert torch.equal(value, weights(resumed.net)[key]), key


def test_fp32_checkpoints_hold_no_scaler(tiny_cfg, tiny_data, tmp_path):
    dann.fit(replace(tiny_cfg, train={"steps": 6}), tmp_path / "run", data=tiny_data)
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt").scaler is None


def test_accumulating_two_half_batches_equals_one_full_batch(tiny_cfg, tiny_data):
    """Micro-batch k of step s is batch s*K+k of the step-indexed stream, so K micro-batches of B cover exactly the
    stream positions of one batch of K*B; without BatchNorm, and with losses that are means, the averaged
    gradients are those of the full batch."""
    cfg = replace(tiny_cfg, train={"steps": 4, "eval_every": 4}, optim={"weight_decay": 0.0})
    full = dann.fit(replace(cfg, train={"batch_size": 32}), data=tiny_data)
    accumulated = dann.fit(replace(cfg, train={"batch_size": 16, "accumulate": 2}), data=tiny_data)
    plain = dann.fit(replace(cfg, train={"batch_size": 16}), data=tiny_data)
    a, b, c = weights(full.net), weights(accumulated.net), weights(plain.net)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key
    assert any(not torch.allclose(a[key], c[key], atol=1e-4) for key in a)  # the test can tell batches apart


def test_channels_last_gives_the_contiguous_loss():
    torch.manual_seed(0)
    net = create_network(ModelConfig(backbone="lenet"), (1, 28, 28), 10)
    method = create_method(MethodConfig())
    x_s, x_t, y_s = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    plain = method.loss(net, Batch(x_s, y_s, x_t), 0.5).total
    amp = Precision("fp32", torch.device("cpu"), channels_last=True)
    amp.prepare_model(net)
    assert net.backbone.conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    batch = amp.batch(x_s)
    assert batch.is_contiguous(memory_format=torch.channels_last) and amp.batch(y_s) is y_s
    nhwc = method.loss(net, Batch(batch, y_s, amp.batch(x_t)), 0.5).total
    assert torch.allclose(plain, nhwc, atol=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.precision=fp8", "train.precision must be auto | fp32 | bf16 | fp16, got 'fp8'"),
        ("train.accumulate=0", "train.accumulate must be > 0"),
        ("train.channels_last=maybe", "train.channels_last must be true or false"),
        ("train.compile=1", "train.compile must be true or false"),
    ],
)
def test_speed_options_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_fp16_gradients_are_unscaled_before_they_are_clipped(tiny_cfg, tiny_data, monkeypatch):
    """optim.grad_clip under fp16: the GradScaler multiplies the loss by 2**16, so clipping must come after
    unscaling. One plain SGD step moves the weights by exactly lr × grad_clip when the gradient is larger than that;
    clipping the scaled gradient would move them 2**16 times less, not clipping at all far more."""
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        norm = clip(params, max_norm, *args, **kwargs)
        norms.append(norm.item())
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    cfg = replace(
        tiny_cfg,
        optim={"grad_clip": 1e-3, "lr": 0.5, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
        train={"precision": "fp16", "steps": 1, "eval_every": 1},
    )
    result = dann.fit(cfg, data=tiny_data)
    init = weights(initial_network(result.config, tiny_data))  # the network fit started from
    step = torch.cat([(value - init[key]).flatten() for key, value in weights(result.net).items()])
    assert len(norms) == 1 and 1e-3 < norms[0] < 100  # the unscaled gradient norm: about 1, not 2**16 times that
    assert step.norm().item() == pytest.approx(0.5 * 1e-3, rel=1e-3)


@pytest.mark.slow
def test_compiling_the_backbone_trains_the_same_weights_under_the_same_names(tiny_cfg, tiny_data, monkeypatch):
    """train.compile=true compiles the MLP backbone in place (TorchDynamo; the AOTAutograd backend here, which
    compiles forward and backward like the default one without spending a minute generating C++): training runs
    through the compiled module, the checkpoint's parameter names are the plain ones, and the weights match."""
    compile_module, compiled = torch.nn.Module.compile, []

    def cheaper(self, *args, **kwargs):
        compiled.append(self)
        return compile_module(self, *args, **(kwargs | {"backend": "aot_eager"}))

    monkeypatch.setattr(torch.nn.Module, "compile", cheaper)
    cfg = replace(tiny_cfg, train={"steps": 6, "eval_every": 6})
    fast = dann.fit(replace(cfg, train={"compile": True}), data=tiny_data).net
    assert compiled == [fast.backbone] and fast.backbone._compiled_call_impl is not None
    plain = weights(dann.fit(cfg, data=tiny_data).net)
    assert weights(fast).keys() == plain.keys()  # no "_orig_mod." prefix: checkpoints load either way
    for key, value in weights(fast).items():
        torch.testing.assert_close(value, plain[key], rtol=1e-5, atol=1e-6)


IMAGES, VECTORS = (3, 28, 28), (30,)


@pytest.mark.parametrize(
    ("caps", "images", "vectors"),
    [
        ({"avx512_bf16": True, "amx_bf16": False}, "bf16", "fp32"),  # e.g. Cooper Lake, Zen 4
        ({"avx512_bf16": False, "amx_bf16": True}, "bf16", "fp32"),  # AMX alone counts too
        ({"avx512_bf16": False, "amx_bf16": False}, "fp32", "fp32"),  # AVX2 or plain AVX-512: bf16 is emulated
        ({}, "fp32", "fp32"),  # an ARM or unknown CPU reports neither
    ],
)
def test_auto_picks_bf16_on_cpus_with_native_bf16_and_only_for_images(monkeypatch, caps, images, vectors):
    monkeypatch.setattr(precision_module, "cpu_capabilities", lambda: caps)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, IMAGES) == images
    assert resolve_precision("auto", cpu, VECTORS) == vectors
    for concrete in ("fp32", "bf16", "fp16"):  # an explicit choice is kept whatever the hardware
        assert resolve_precision(concrete, cpu, IMAGES) == concrete


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_asks_torch_for_native_bf16_not_emulation(monkeypatch, native, expected):
    asked = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["emulation"] = including_emulation
        return native or including_emulation  # what torch answers on a pre-Ampere GPU when emulation counts

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(precision_module, "cpu_capabilities", lambda: {"avx512_bf16": True})  # not the CPU's say
    assert resolve_precision("auto", torch.device("cuda", 0), IMAGES) == expected
    assert asked == {"emulation": False}
    assert resolve_precision("auto", torch.device("cuda", 0), VECTORS) == "fp32"
    assert resolve_precision("auto", torch.device("mps"), IMAGES) == "fp32"


def test_auto_memory_layout_is_nhwc_for_images_in_reduced_precision_only():
    assert resolve_channels_last(None, "bf16", IMAGES) and resolve_channels_last(None, "fp16", IMAGES)
    assert not resolve_channels_last(None, "fp32", IMAGES) and not resolve_channels_last(None, "bf16", VECTORS)
    assert resolve_channels_last(True, "fp32", IMAGES) and not resolve_channels_last(False, "bf16", IMAGES)  # kept


def test_the_cpu_probe_reads_torchs_capabilities():
    caps = precision_module.cpu_capabilities()
    assert isinstance(caps.get("avx512_bf16", False), bool) and isinstance(caps.get("amx_bf16", False), bool)


def tiny_images(seed: int, n: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g).numpy(), (torch.arange(n) % 2).numpy()


def test_auto_is_recorded_in_the_run_and_a_resume_keeps_it_exactly(
    tiny_cfg, tmp_path, monkeypatch, crash_after_first_checkpoint
):
    data = make_domain_data(as_domain(*tiny_images(0, 40)), as_domain(*tiny_images(1, 30)), val_fraction=0.2)
    cfg = replace(
        tiny_cfg,
        model={"backbone": "lenet"},
        method={"name": "mcc"},
        train={"precision": "auto", "channels_last": None},
    )
    monkeypatch.setattr(precision_module, "cpu_capabilities", lambda: {"avx512_bf16": True})
    full = dann.fit(cfg, tmp_path / "full", data=data)
    assert full.config.train.precision == "bf16" and full.config.train.channels_last is True
    assert "precision: bf16" in (tmp_path / "full/config.yaml").read_text()
    assert "channels_last: true" in (tmp_path / "full/config.yaml").read_text()
    assert load_checkpoint(tmp_path / "full" / LAST_CHECKPOINT).config["train"]["precision"] == "bf16"
    crash_after_first_checkpoint(dann.fit, cfg, tmp_path / "crashed", data=data)
    # resumed where auto would now say fp32 (another machine): the run keeps the bf16 it recorded, bit for bit
    monkeypatch.setattr(precision_module, "cpu_capabilities", lambda: {})
    resumed = dann.fit(out=tmp_path / "crashed", data=data, resume=True)
    assert resumed.config.train.precision == "bf16"
    for key, value in weights(full.net).items():
        assert torch.equal(value, weights(resumed.net)[key]), key
    fresh = dann.fit(cfg, tmp_path / "fresh", data=data)  # a new run on that machine resolves to fp32
    assert fresh.config.train.precision == "fp32" and fresh.config.train.channels_last is False
    assert any(not torch.equal(v, weights(fresh.net)[k]) for k, v in weights(full.net).items())


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ({"name": "source_only"}, "bf16"),
        ({"name": "mcc"}, "bf16"),
        ({"name": "mean_teacher"}, "bf16"),
        ({"name": "dann"}, "bf16"),  # measured with its discriminator in float32: within the seed spread
        ({"name": "dann", "domain_discriminator": "multiclass"}, "fp32"),  # not measured
        ({"name": "iwdan"}, "fp32"),
        ({"name": "cdan_e"}, "fp32"),
        ({"name": "mdd"}, "fp32"),
        ({"name": "dann", "regularizers": {"mcc": 1.0}}, "fp32"),
    ],
)
def test_auto_keeps_adversarial_methods_in_fp32_where_bf16_failed_the_accuracy_rule(
    tiny_cfg, monkeypatch, method, expected
):
    monkeypatch.setattr(precision_module, "cpu_capabilities", lambda: {"avx512_bf16": True})
    assert resolve_precision("auto", torch.device("cpu"), IMAGES, adversarial=True) == "fp32"
    data = make_domain_data(as_domain(*tiny_images(0, 40)), as_domain(*tiny_images(1, 30)), val_fraction=0.2)
    cfg = replace(
        tiny_cfg, model={"backbone": "lenet"}, method=method, train={"steps": 2, "eval_every": 2, "precision": "auto"}
    )
    result = dann.fit(cfg, data=data)
    assert result.config.train.precision == expected and result.summary["precision"] == expected
    assert result.config.train.channels_last is (expected == "bf16")
    explicit = dann.fit(replace(cfg, train={"precision": "bf16"}), data=data)  # asked for: kept
    assert explicit.config.train.precision == "bf16"
