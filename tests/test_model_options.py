"""model.freeze_bn, model.discriminator_slope, model.head_norm and optim.discriminator_lr_mult."""

import pytest
import torch
from torch import nn

import dann
from dann.config import MethodConfig, ModelConfig, replace
from dann.plan import build_network, plan_run
from dann.training.trainer import Trainer


def _batchnorm(net):
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_bn_keeps_running_statistics_bit_identical_while_affine_parameters_train(tiny_cfg, tiny_data, freeze):
    cfg = replace(tiny_cfg, model={"batchnorm": True, "freeze_bn": freeze, "bottleneck_dim": 8, "head_norm": True})
    torch.manual_seed(cfg.train.seed)
    net = build_network(cfg.model, cfg.method, tiny_data.input_shape, tiny_data.num_classes)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layers = _batchnorm(net)
    assert len(layers) == 3  # the backbone's, the bottleneck's, the head's
    Trainer(plan_run(cfg, tiny_data)).fit(net, dann.methods.create_method(cfg.method), tiny_data)
    after = net.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    affine = [k for k, m in net.named_modules() if m in layers]
    assert stats and affine
    assert all(torch.equal(before[k], after[k]) for k in stats) == freeze
    assert all(not torch.equal(before[f"{k}.weight"], after[f"{k}.weight"]) for k in affine)
    assert net.training and all(m.training != freeze for m in layers)  # train() keeps them in eval mode


def test_freeze_bn_lets_one_sample_through_a_batchnorm_layer(tiny_cfg, tiny_data):
    cfg = replace(tiny_cfg, model={"batchnorm": True, "freeze_bn": True}, method={"name": "source_only"},
                  train={"batch_size": 1})  # fmt: skip
    dann.fit(cfg, data=tiny_data)  # a BatchNorm in train mode refuses a single sample; in eval mode it takes it


def test_discriminator_lr_mult_scales_the_discriminator_alone(tiny_cfg, tiny_data):
    def trained(mult):
        torch.manual_seed(tiny_cfg.train.seed)
        cfg = replace(tiny_cfg, optim={"discriminator_lr_mult": mult})
        net = build_network(cfg.model, cfg.method, tiny_data.input_shape, tiny_data.num_classes)
        start = {k: v.clone() for k, v in net.state_dict().items()}
        return start, dann.fit(cfg, data=tiny_data).net.state_dict()

    start, frozen = trained(0.0)
    _, moving = trained(1.0)
    for k in start:
        assert torch.equal(start[k], frozen[k]) == k.startswith("discriminator."), k
        assert not torch.equal(start[k], moving[k]), k


def test_discriminator_slope_lets_gradient_through_negative_units():
    # the seed's network (no bottleneck): the discriminator reads the backbone's 4 features directly
    model = ModelConfig(backbone="mlp", mlp_dims=(4,), discriminator_dims=(3,), discriminator_slope=0.2,
                        bottleneck_dim=0)  # fmt: skip
    net = build_network(model, MethodConfig(name="dann"), (4,), 2)
    relus = [m for m in net.discriminator.modules() if isinstance(m, nn.LeakyReLU)]
    assert [m.negative_slope for m in relus] == [0.2]
    plain = build_network(replace_model(model, discriminator_slope=0.0), MethodConfig(name="dann"), (4,), 2)
    assert not any(isinstance(m, nn.LeakyReLU) for m in plain.modules())
    plain.discriminator.load_state_dict(net.discriminator.state_dict())
    grads = []
    for disc in (net.discriminator, plain.discriminator):
        with torch.no_grad():  # every hidden unit negative: a ReLU passes no gradient at all
            disc.net[0].bias.fill_(-100.0)
        f = torch.randn(5, 4, requires_grad=True)
        disc(f).sum().backward()
        grads.append(f.grad.abs().sum().item())
    assert grads[0] > 0 and grads[1] == 0


def replace_model(model, **keys):
    import dataclasses

    return dataclasses.replace(model, **keys)


def test_head_norm_reads_normalized_features_through_a_bias_free_linear():
    model = ModelConfig(backbone="mlp", mlp_dims=(6,), head_norm=True, bottleneck_dim=0)  # the head reads 6 features
    net = build_network(model, MethodConfig(name="dann"), (4,), 3).eval()
    kinds = [type(m) for m in net.head]
    assert kinds == [nn.BatchNorm1d, nn.LayerNorm, nn.Linear] and net.head[-1].bias is None
    f = torch.rand(5, 6) + 0.1
    torch.testing.assert_close(net.forward_head(10.0 * f), net.forward_head(f), rtol=1e-3, atol=1e-3)  # scale-free
    default = build_network(ModelConfig(backbone="mlp", mlp_dims=(6,)), MethodConfig(name="dann"), (4,), 3)
    assert [type(m) for m in default.head] == [nn.Linear] and default.head[0].bias is not None
