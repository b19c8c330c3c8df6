import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from dann.config import MethodConfig, ModelConfig
from dann.methods import METHODS, Batch, create_method
from dann.methods.base import weighted_mean
from dann.methods.dann import domain_adversarial_loss
from dann.plan import build_network

MODEL = ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(6,))
# the seed's network: no BatchNorm bottleneck, so each row's features depend on that row alone
SEED_MODEL = dataclasses.replace(MODEL, bottleneck_dim=0)


def make_net(seed: int = 0, method: str = "dann", model: ModelConfig = MODEL):
    torch.manual_seed(seed)
    return build_network(model, MethodConfig(name=method), (4,), 3)


def make_batch(seed: int = 0, weights: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(5, generator=g) + 0.1 if weights else None
    return Batch(torch.randn(5, 4, generator=g), torch.tensor([0, 2, 1, 1, 0]), torch.randn(7, 4, generator=g), w)


def hand_dann_loss(net, batch: Batch, eps: float, lambda_adv: float) -> torch.Tensor:
    """The seed formulation written out element by element, independent of the library's helpers."""
    f_s, f_t = net.forward_features(batch.x_s), net.forward_features(batch.x_t)
    logp = torch.log_softmax(net.forward_head(f_s), dim=1)
    k = logp.shape[1]
    per_sample = -(1 - eps) * logp[torch.arange(len(batch.y_s)), batch.y_s] - eps / k * logp.sum(1)
    w = batch.w_s if batch.w_s is not None else torch.ones(len(per_sample))
    cls = (w * per_sample).sum() / w.sum()
    d_s, d_t = net.discriminator(f_s), net.discriminator(f_t)
    bce_s = -torch.log(1 - torch.sigmoid(d_s)).mean()  # source label 0
    bce_t = -torch.log(torch.sigmoid(d_t)).mean()  # target label 1
    return cls + lambda_adv * 0.5 * (bce_s + bce_t)


@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("separate", [False, True])
def test_dann_loss_equals_hand_computed_reference(weights, separate):
    net, batch = make_net(model=SEED_MODEL), make_batch(weights=weights)  # the reference forwards each domain alone
    method = create_method(MethodConfig(name="dann", label_smoothing=0.2, lambda_adv=0.7, separate_forward=separate))
    out = method.loss(net, batch, progress=0.4)
    torch.testing.assert_close(out.total, hand_dann_loss(net, batch, eps=0.2, lambda_adv=0.7))
    assert set(out.terms) == {"cls", "adv", "domain_acc", "grl_lambda"}
    assert out.terms["grl_lambda"] == pytest.approx(2 / (1 + math.exp(-4)) - 1)


@pytest.mark.parametrize("separate", [False, True])
def test_joint_forward_normalizes_the_mixed_batch_and_separate_forwards_each_domain(separate):
    """With BatchNorm the two forwards differ: one forward over cat(x_s, x_t) updates the running mean once, with
    the mixed batch's mean; two forwards update it twice, source then target (momentum 0.1 from zero)."""
    torch.manual_seed(0)
    net = build_network(dataclasses.replace(MODEL, batchnorm=True), MethodConfig(name="dann"), (4,), 3).train()
    norm = next(m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm1d))
    seen = []
    norm.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    cfg = MethodConfig(name="dann", separate_forward=separate)
    create_method(cfg).loss(net, make_batch(), progress=0.4)
    if separate:
        assert [len(x) for x in seen] == [5, 7]
        expected = 0.9 * 0.1 * seen[0].mean(0) + 0.1 * seen[1].mean(0)  # the target batch, last, weighs most
    else:
        assert [len(x) for x in seen] == [12]
        expected = 0.1 * seen[0].mean(0)  # the mixed batch's mean
    torch.testing.assert_close(norm.running_mean, expected)
    assert norm.num_batches_tracked.item() == 1 + separate


def test_sample_weights_change_the_classification_loss_as_a_weighted_mean():
    loss = torch.tensor([1.0, 2.0, 6.0])
    assert weighted_mean(loss).item() == pytest.approx(3.0)
    assert weighted_mean(loss, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(1.5)
    net, batch = make_net(), make_batch(weights=True)
    method = create_method(MethodConfig(name="source_only", label_smoothing=0.0))
    expected = (F.cross_entropy(net(batch.x_s), batch.y_s, reduction="none") * batch.w_s).sum() / batch.w_s.sum()
    torch.testing.assert_close(method.loss(net, batch, 0.0).total, expected)


def test_adv_is_ln2_when_the_discriminator_outputs_zero_logits():
    net = make_net()
    last = net.discriminator.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    out = create_method(MethodConfig(name="dann")).loss(net, make_batch(), progress=0.5)
    assert out.terms["adv"].item() == pytest.approx(math.log(2))
    adv, _ = domain_adversarial_loss(torch.zeros(3), torch.zeros(9))
    assert adv.item() == pytest.approx(math.log(2))


def test_backbone_gets_reversed_nonzero_gradient_from_adv_alone():
    net, batch = make_net(), make_batch()
    coeff = 0.6
    f = net.forward_features(torch.cat([batch.x_s, batch.x_t]))
    adv, _ = domain_adversarial_loss(*net.domain_logits(f, coeff).split([5, 7]))
    adv.backward()
    reversed_grads = [p.grad.clone() for p in net.backbone.parameters()]
    assert all(g.abs().sum() > 0 for g in reversed_grads)
    net.zero_grad()  # the same loss without the GRL: the backbone gradient must be exactly -1/coeff times that
    f = net.forward_features(torch.cat([batch.x_s, batch.x_t]))
    plain, _ = domain_adversarial_loss(*net.discriminator(f).split([5, 7]))
    plain.backward()
    for g_rev, p in zip(reversed_grads, net.backbone.parameters(), strict=True):
        torch.testing.assert_close(g_rev, -coeff * p.grad)


def test_discriminator_accuracy_counts_source_negative_target_positive():
    _, acc = domain_adversarial_loss(torch.tensor([-1.0, 2.0]), torch.tensor([3.0, 1.0, -1.0, 0.5]))
    assert acc.item() == pytest.approx(4 / 6)


def test_source_only_never_forwards_the_target_batch():
    net, batch = make_net(), make_batch()
    batch.x_t = torch.full((7, 4), float("nan"))  # would poison any loss that touched it
    out = create_method(MethodConfig(name="source_only")).loss(net, batch, 0.0)
    assert torch.isfinite(out.total)


# options under which an untrained network's target term is not zero (mean_teacher masks out every prediction of
# a teacher below 0.968 confidence, so at the default the loss honestly ignores the target batch of a fresh network)
READS_TARGET = {"mean_teacher": {"teacher_threshold": 0.0}}


@pytest.mark.parametrize("name", [n for n in METHODS.names() if not METHODS.get(n).needs_names])  # see test_clip.py
def test_every_method_reads_exactly_the_batches_it_declares_and_trains_the_backbone(name):
    """The loss is a function of the source samples and labels when the method declares ``uses_source``, of the
    target samples when it declares ``uses_target``, and of nothing else; its gradient reaches the backbone."""
    net, batch = make_net(method=name), make_batch()
    method = create_method(MethodConfig(name=name, **READS_TARGET.get(name, {})))
    if not method.uses_source:
        batch = Batch(batch.x_s[:0], batch.y_s[:0], batch.x_t)
    method.prepare(net)

    def total(b: Batch) -> torch.Tensor:
        torch.manual_seed(1)  # the same random draws (strong augmentation) for every variant of the batch
        return method.loss(net, b, 0.3).total

    out = total(batch)
    assert out.shape == () and torch.isfinite(out)
    moved_t = total(Batch(batch.x_s, batch.y_s, batch.x_t + 1.0))
    assert (not torch.equal(moved_t, out)) == method.uses_target
    if method.uses_source:
        assert not torch.equal(total(Batch(batch.x_s + 1.0, batch.y_s, batch.x_t)), out)
        assert not torch.equal(total(Batch(batch.x_s, (batch.y_s + 1) % 3, batch.x_t)), out)
    out.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters())
    assert ("cls" in method.loss(net, batch, 0.3).terms) == method.uses_source


def test_unknown_method_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown method 'dan'; valid methods: .*cdan_e, clip_distill, coral, dann, .*mdd, .*mmd"
    ):
        create_method(MethodConfig(name="dan"))
