"""VADA and its virtual adversarial training term against hand computations on a tiny network."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dann.config import MethodConfig, ModelConfig
from dann.errors import DataWarning
from dann.methods import Batch, create_method
from dann.methods.vada import kl_rows, unit_rows, vat_loss, vat_perturbation
from dann.plan import build_network

G = torch.Generator().manual_seed(0)
BATCH = Batch(torch.randn(6, 4, generator=G), torch.tensor([0, 1, 2, 1, 0, 2]), torch.randn(5, 4, generator=G) + 1.0)


def tiny(batchnorm: bool = False, input_shape: tuple[int, ...] = (4,), **method):
    torch.manual_seed(0)
    cfg = MethodConfig(name="vada", **method)
    model = ModelConfig(backbone="mlp", mlp_dims=(16,), discriminator_dims=(6,), batchnorm=batchnorm)
    return build_network(model, cfg, input_shape, 3), create_method(cfg)


def kl_written_out(z_p, z_q):
    p, q = torch.softmax(z_p, 1), torch.softmax(z_q, 1)
    return (p * (p.log() - q.log())).sum(1)


@pytest.mark.parametrize("radius", [3.5, 0.2])
def test_the_perturbation_has_norm_radius_per_sample_over_all_its_dimensions(radius):
    net, _ = tiny(input_shape=(2, 3, 3))
    x = torch.randn(5, 2, 3, 3, generator=G)
    x[0] *= 100  # samples of very different scales get the same norm
    r = vat_perturbation(net, x, net(x).detach() + 0.1, radius)
    assert r.shape == x.shape and r.dtype == torch.float32
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((5,), radius))
    assert unit_rows(torch.zeros(2, 3)).eq(0).all()  # nothing to scale stays nothing


def test_the_vat_direction_raises_the_kl_more_than_a_random_direction_of_the_same_norm():
    """On a fixed network: where the perturbed forward gives exactly p (a deterministic net), one power iteration
    finds a direction of larger curvature than a random one; where p is the main forward's and differs (dropout,
    another batch for BatchNorm), the direction is uphill: +r raises the KL, −r lowers it."""
    net, _ = tiny()
    x = torch.randn(64, 4, generator=G) * 2
    z = net(x).detach()
    torch.manual_seed(1)
    r = vat_perturbation(net, x, z, 0.5)
    random = 0.5 * unit_rows(torch.randn(x.shape, generator=G))
    assert kl_rows(z, net(x + r)).mean() > 1.5 * kl_rows(z, net(x + random)).mean()

    z = z + 0.3 * torch.randn(z.shape, generator=G)
    torch.manual_seed(1)
    r = vat_perturbation(net, x, z, 0.5)
    here, up, down = (kl_rows(z, net(x + s * r)) for s in (0.0, 1.0, -1.0))
    assert (up > here).all() and down.mean() < here.mean()
    assert (up > kl_rows(z, net(x + random))).float().mean() > 0.8


def test_vat_moves_no_batchnorm_statistics_and_its_power_iteration_no_parameter_gradient():
    net, _ = tiny(batchnorm=True)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    z = net(BATCH.x_t).detach()  # the main forward, as in training
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    assert any(not torch.equal(stats[k], before[k]) for k in stats)  # the main forward did move them
    torch.manual_seed(3)
    loss = vat_loss(net, BATCH.x_t, z, 3.5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, stats[k]), k
    assert all(p.grad is None for p in net.parameters())  # the gradient w.r.t. d stayed with d
    loss.backward()
    torch.manual_seed(3)
    r = vat_perturbation(net, BATCH.x_t, z, 3.5)  # the same draw: the same r
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    kl_written_out(z, net(BATCH.x_t + r)).mean().backward()  # r a constant: only the last forward has a gradient
    for n, p in net.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad)


def test_the_power_iteration_runs_in_float32_under_autocast():
    net, _ = tiny()
    z = net(BATCH.x_t).detach() + 0.1
    torch.manual_seed(2)
    plain = vat_perturbation(net, BATCH.x_t, z, 3.5)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = vat_perturbation(net, BATCH.x_t, z, 3.5)
    torch.testing.assert_close(mixed, plain)


def hand_vat(net, x, z, radius):
    """One power iteration written out: the random unit direction, the gradient of the summed KL at ξ d, r."""

    def unit(v):
        return v / v.flatten(1).norm(dim=1).view(-1, *[1] * (v.ndim - 1))

    d = unit(torch.randn(x.shape)).requires_grad_(True)
    (g,) = torch.autograd.grad(kl_written_out(z.detach(), net(x + 1e-6 * d)).sum(), d)
    return kl_written_out(z.detach(), net(x + radius * unit(g))).mean()


@pytest.mark.parametrize("weights", [{}, {"lambda_adv": 0.3, "vada_source_vat": 0.5, "vada_target": 2.0}])
def test_the_vada_total_equals_the_weighted_sum_written_out(weights):
    net, method = tiny(batchnorm=True, label_smoothing=0.1, **weights)
    # λ_d = 0.01 reaches the features through the GRL's peak; the discriminator trains at weight 1 (the reference's)
    expected = {"lambda_adv": 1.0, "grl_hi": 0.01, "vada_source_vat": 1.0, "vada_target": 0.01} | weights
    assert {k: getattr(method.cfg, k) for k in expected} == expected
    hand_net = copy.deepcopy(net)
    torch.manual_seed(5)
    out = method.loss(net, BATCH, 0.4)

    torch.manual_seed(5)
    n_s = len(BATCH.x_s)
    f = hand_net.forward_features(torch.cat([BATCH.x_s, BATCH.x_t]))
    z = hand_net.forward_head(f)
    cls = F.cross_entropy(z[:n_s], BATCH.y_s, label_smoothing=0.1)
    d = hand_net.discriminator(f)
    adv = 0.5 * (-F.logsigmoid(-d[:n_s]).mean() - F.logsigmoid(d[n_s:]).mean())  # source 0, target 1
    vat_s = hand_vat(hand_net, BATCH.x_s, z[:n_s], 3.5)  # the source's draw comes first
    vat_t = hand_vat(hand_net, BATCH.x_t, z[n_s:], 3.5)
    p_t = torch.softmax(z[n_s:], 1)
    entropy_t = -(p_t * p_t.log()).sum(1).mean()
    total = cls + expected["lambda_adv"] * adv
    total = total + expected["vada_source_vat"] * vat_s + expected["vada_target"] * (entropy_t + vat_t)

    for name, value in {"cls": cls, "adv": adv, "vat_s": vat_s, "entropy_t": entropy_t, "vat_t": vat_t}.items():
        torch.testing.assert_close(out.terms[name], value.detach(), msg=name)
    torch.testing.assert_close(out.total, total)
    assert out.terms["vat_s"] > 0 and out.terms["vat_t"] > 0
    assert out.terms["grl_lambda"] == pytest.approx(0.01 * (2 / (1 + math.exp(-4)) - 1))


def test_the_vat_regularizer_adds_target_vat_to_another_method():
    net, _ = tiny(batchnorm=True)
    plain = create_method(MethodConfig(name="dann"))
    regular = create_method(MethodConfig(name="dann", regularizers={"vat": 0.7}, vat_radius=1.5))
    a = plain.loss(net, BATCH, 0.5)
    torch.manual_seed(4)
    b = regular.loss(net, BATCH, 0.5)
    torch.manual_seed(4)
    z_t = net(torch.cat([BATCH.x_s, BATCH.x_t]))[len(BATCH.x_s) :].detach()  # the joint forward's target logits
    assert set(b.terms) == set(a.terms) | {"vat"}
    torch.testing.assert_close(b.terms["vat"], hand_vat(net, BATCH.x_t, z_t, 1.5).detach())
    torch.testing.assert_close(b.total, a.total + 0.7 * b.terms["vat"])


def test_vada_evaluates_with_an_ema_of_its_weights_kept_in_its_state():
    """``method.ema_eval`` 0.998: w ← m_t w + (1 − m_t) w_net after each step, m_t = min(0.998, t / (t + 1)) (the
    plain mean of the weights so far until step 499, then the reference's constant decay)."""
    net, method = tiny(batchnorm=True)
    assert method.cfg.ema_eval == 0.998
    method.prepare(net)
    hand = {n: p.detach().clone() for n, p in net.named_parameters()}
    for t in range(1, 601):
        with torch.no_grad():
            for p in net.parameters():
                p += 0.1 * torch.randn(p.shape, generator=G)
        if t % 200 == 0:
            net(BATCH.x_s)  # the integer batch counter moves
        method.after_step(net)
        m = min(0.998, t / (t + 1))
        hand = {n: m * hand[n] + (1 - m) * p.detach() for n, p in net.named_parameters()}
    weights = method.eval_weights()
    for n, value in hand.items():
        torch.testing.assert_close(weights[n], value, rtol=1e-5, atol=1e-5, msg=n)
    counters = [k for k in weights if k.endswith("num_batches_tracked")]
    assert counters and all(torch.equal(weights[k], net.state_dict()[k]) for k in counters)
    _, fresh = tiny(batchnorm=True)
    fresh.load_state_dict(method.state_dict())
    assert all(torch.equal(fresh.eval_weights()[k], v) for k, v in weights.items())
    _, off = tiny(ema_eval=0.0)
    off.prepare(net)
    assert off.eval_weights() is None


def test_vada_reads_its_settings_and_another_method_is_warned_about_them():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_method(MethodConfig(name="vada", vat_radius=2.0, vada_target=0.1, vada_source_vat=0.0))
        create_method(MethodConfig(name="dann", regularizers={"vat": 1.0}, vat_radius=2.0))
    with pytest.warns(DataWarning, match="does not read method.vada_target, method.vat_radius"):
        create_method(MethodConfig(name="dann", vat_radius=2.0, vada_target=0.1))


def test_an_empty_batch_has_zero_vat():
    net, _ = tiny()
    x = BATCH.x_s[:0]
    assert vat_loss(net, x, net(x), 3.5).item() == 0.0
    assert math.isclose(kl_rows(torch.zeros(1, 3), torch.zeros(1, 3)).item(), 0.0)
