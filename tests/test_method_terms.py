"""Each method's term against a hand computation on fixed tiny tensors, and a property that catches a sign error."""

import math

import numpy as np
import pytest
import torch

from dann.config import MethodConfig, ModelConfig
from dann.data.strong import strong_augment
from dann.errors import ConfigError
from dann.methods import REGULARIZERS, Batch, create_method
from dann.methods.base import Forward
from dann.methods.cdan import RANDOMIZED_DIM, MultilinearDiscriminator
from dann.methods.coral import coral_loss
from dann.methods.fixmatch import pseudo_label_loss
from dann.methods.mcc import mcc_loss
from dann.methods.mdd import mdd_loss
from dann.methods.mmd import BANDWIDTHS, mmd_loss
from dann.methods.regularizers import bnm_loss, entropy_loss
from dann.methods.shot import cluster_centres, information_maximization, nearest_centre
from dann.plan import build_network

G = torch.Generator().manual_seed(0)
Z = torch.randn(6, 3, generator=G) * 2  # logits of 6 samples, 3 classes
F_S, F_T = torch.randn(5, 4, generator=G), torch.randn(7, 4, generator=G) + 0.5


def softmax_rows(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_mcc_equals_the_papers_equations_written_out():
    z, t = Z.double().numpy(), 2.5
    p = softmax_rows(z / t)
    h = -(p * np.log(p)).sum(1)
    w = 1 + np.exp(-h)
    w = len(p) * w / w.sum()
    c = np.zeros((3, 3))
    for i in range(len(p)):
        c += w[i] * np.outer(p[i], p[i])
    c = c / c.sum(1, keepdims=True)
    expected = (c.sum() - np.trace(c)) / 3
    assert mcc_loss(Z, t).item() == pytest.approx(expected, rel=1e-5)
    confident = torch.eye(3).repeat(2, 1) * 50  # one sure prediction per class: no confusion
    assert mcc_loss(confident, 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_coral_equals_the_covariance_distance_over_4d2():
    cs, ct = np.cov(F_S.double().numpy(), rowvar=False), np.cov(F_T.double().numpy(), rowvar=False)
    expected = ((cs - ct) ** 2).sum() / (4 * 4**2)
    assert coral_loss(F_S, F_T).item() == pytest.approx(expected, rel=1e-5)
    assert coral_loss(F_S, F_S + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift has the same covariance


def test_mmd_equals_the_kernel_sums_written_out():
    f = torch.cat([F_S, F_T]).double().numpy()
    d2 = ((f[:, None] - f[None]) ** 2).sum(-1)
    sigma2 = d2.mean()
    k = np.mean([np.exp(-d2 / (m * sigma2)) for m in BANDWIDTHS], 0)
    expected = k[:5, :5].mean() + k[5:, 5:].mean() - 2 * k[:5, 5:].mean()
    assert mmd_loss(F_S, F_T).item() == pytest.approx(expected, rel=1e-4)
    assert mmd_loss(F_S, F_S).item() == pytest.approx(0.0, abs=1e-6)


def test_mdd_equals_margin_ce_on_source_plus_log_one_minus_p_on_target():
    z_s, z_t, y_s, y_t = Z[:3], Z[3:], torch.tensor([0, 2, 1]), torch.tensor([1, 1, 0])
    p_s, p_t = softmax_rows(z_s.double().numpy()), softmax_rows(z_t.double().numpy())
    source = -np.mean(np.log(p_s[np.arange(3), y_s.numpy()]))
    target = -np.mean(np.log(1 - p_t[np.arange(3), y_t.numpy()]))
    assert mdd_loss(z_s, z_t, y_s, y_t, 4.0).item() == pytest.approx(4 * source + target, rel=1e-5)


def test_cdan_map_is_the_outer_product_and_its_randomized_form_above_the_bound():
    f, p = F_S, torch.softmax(Z[:5], 1)
    full = MultilinearDiscriminator(4, 3, max_dim=12, hidden=(6,), dropout=0.0)
    assert not full.randomized
    expected = torch.stack([torch.outer(f[i], p[i]).flatten() for i in range(5)])
    torch.testing.assert_close(full.multilinear(f, p), expected)
    small = MultilinearDiscriminator(4, 3, max_dim=11, hidden=(6,), dropout=0.0)
    assert small.randomized and small.r_f.shape == (4, RANDOMIZED_DIM)
    expected = (f @ small.r_f) * (p @ small.r_g) / math.sqrt(RANDOMIZED_DIM)
    torch.testing.assert_close(small.multilinear(f, p), expected)
    again = MultilinearDiscriminator(4, 3, max_dim=11, hidden=(6,), dropout=0.0)
    assert torch.equal(again.r_f, small.r_f)  # fixed matrices: a rebuilt network maps the same way


def test_cdan_e_weighs_each_domain_by_one_plus_exp_minus_entropy():
    torch.manual_seed(0)
    cfg = MethodConfig(name="cdan_e")
    net = build_network(ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(6,)), cfg, (4,), 3)
    x_s, x_t = torch.randn(5, 4), torch.randn(7, 4)
    method = create_method(cfg)
    out = method.loss(net, Batch(x_s, torch.tensor([0, 1, 2, 0, 1]), x_t), 0.5)
    f = net.forward_features(torch.cat([x_s, x_t]))
    p = torch.softmax(net.forward_head(f), 1)
    d = net.discriminator(torch.cat([f, p], 1)).double()
    w = (1 + torch.exp((p * p.log()).sum(1))).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        d, torch.cat([torch.zeros(5), torch.ones(7)]).double(), reduction="none"
    )
    expected = 0.5 * ((w[:5] * bce[:5]).sum() / w[:5].sum() + (w[5:] * bce[5:]).sum() / w[5:].sum())
    assert out.terms["adv"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_shot_information_maximization_and_clustering():
    p = softmax_rows(Z.double().numpy())
    p_mean = p.mean(0)
    ent, neg_div = information_maximization(Z)
    assert ent.item() == pytest.approx(-(p * np.log(p)).sum(1).mean(), rel=1e-5)
    assert neg_div.item() == pytest.approx((p_mean * np.log(p_mean)).sum(), rel=1e-5)
    # two tight clusters; the third sample's prediction is wrong (class 0) but it sits in cluster 1: the clustered
    # pseudo-label corrects it, which a plain argmax of the predictions would not
    f = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]), dim=1)
    soft = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.1, 0.9]])
    centres = cluster_centres(f, soft)
    assert soft.argmax(1).tolist() == [0, 0, 0, 1] and nearest_centre(f, centres).tolist() == [0, 0, 1, 1]
    torch.testing.assert_close(centres, torch.stack([f[:2].mean(0), f[2:].mean(0)]))  # round 2: hard means


def test_entropy_bnm_and_pseudo_label_terms_written_out():
    p = softmax_rows(Z.double().numpy())
    assert entropy_loss(Z).item() == pytest.approx(-(p * np.log(p)).sum(1).mean(), rel=1e-5)
    assert bnm_loss(Z).item() == pytest.approx(-np.linalg.svd(p, compute_uv=False).sum() / 6, rel=1e-5)
    q = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.1, 0.85, 0.05]])
    z = Z[:3]
    loss, kept = pseudo_label_loss(z, q, threshold=0.8)
    logp = np.log(softmax_rows(z.double().numpy()))
    assert loss.item() == pytest.approx(-(logp[0, 0] + logp[2, 1]) / 3, rel=1e-5)
    assert kept.item() == pytest.approx(2 / 3)


def make(name: str, **method):
    torch.manual_seed(0)
    cfg = MethodConfig(name=name, **method)
    net = build_network(ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(6,)), cfg, (4,), 3)
    return net, create_method(cfg)


def term_value(net, method, batch, name):
    return method.loss(net, batch, 0.5).terms[name]


BATCH = Batch(torch.randn(16, 4, generator=G), torch.randint(0, 3, (16,), generator=G), torch.randn(16, 4, generator=G))


@pytest.mark.parametrize(("name", "term"), [("dann", "adv"), ("cdan", "adv"), ("cdan_e", "adv"), ("mdd", "mdd")])
def test_adversarial_terms_fall_for_the_discriminator_and_rise_for_the_features(name, term):
    """A step on the term alone: the discriminator's half lowers it, the feature extractor's half (through the GRL)
    raises it. A sign error in the loss or a missing GRL flips one of the two."""
    batch = Batch(BATCH.x_s.double(), BATCH.y_s, BATCH.x_t.double())
    for part, direction in (("discriminator", -1), ("backbone", +1)):
        net, method = make(name)
        net.double()  # the first-order change of a small step must not drown in float32 rounding
        before = term_value(net, method, batch, term)
        net.zero_grad()
        _, _, t = method.terms[0]
        t(forward(net, batch))[0].backward()  # the term alone (cls also moves the backbone)
        with torch.no_grad():
            for p in getattr(net, part).parameters():
                p -= 1e-3 * p.grad  # small: first order
        after = term_value(net, method, batch, term)
        assert direction * (after - before) > 0, (part, before, after)


def forward(net, batch):
    f = net.forward_features(torch.cat([batch.x_s, batch.x_t]))
    z = net.forward_head(f)
    n = len(batch.x_s)
    return Forward(net, batch, f[:n], f[n:], z[:n], z[n:], 0.5)


@pytest.mark.parametrize(
    ("name", "term"), [("mmd", "mmd"), ("coral", "coral"), ("mcc", "mcc"), ("fixmatch", "fixmatch"), ("shot", "shot")]
)
def test_a_descent_step_on_a_non_adversarial_term_lowers_it(name, term):
    net, method = make(name, **({"fixmatch_threshold": 0.0} if name == "fixmatch" else {}))
    method.prepare(net)
    torch.manual_seed(1)
    before = term_value(net, method, BATCH, term)
    net.zero_grad()
    torch.manual_seed(1)  # fixmatch: the same strong views
    _, _, t = method.terms[0]
    t(forward(net, BATCH))[0].backward()
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    torch.manual_seed(1)
    assert term_value(net, method, BATCH, term) < before


def test_regularizers_add_weighted_terms_to_any_method():
    net, plain = make("dann")
    _, regular = make("dann", regularizers={"mcc": 0.5, "entropy": 2.0})
    a, b = plain.loss(net, BATCH, 0.5), regular.loss(net, BATCH, 0.5)
    assert set(b.terms) == set(a.terms) | {"mcc", "entropy"}
    expected = a.total + 0.5 * b.terms["mcc"] + 2.0 * b.terms["entropy"]
    torch.testing.assert_close(b.total, expected)
    assert set(REGULARIZERS.names()) == {"bnm", "clip_distill", "entropy", "fixmatch", "mcc", "vat"}


REGULARIZER_NAMES = "valid regularizers: bnm, clip_distill, entropy, fixmatch, mcc, vat"


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"name": "dann", "regularizers": {"entrpy": 1.0}}, REGULARIZER_NAMES),
        ({"name": "source_only", "regularizers": {"mcc": 1.0}}, "reads no target batch"),
        ({"name": "mcc", "regularizers": {"mcc": 1.0}}, "already method 'mcc'"),
    ],
)
def test_bad_regularizers_are_named(method, message):
    with pytest.raises(ConfigError, match=message):
        create_method(MethodConfig(**method))


def test_a_negative_regularizer_weight_is_refused():
    with pytest.raises(ConfigError, match=r"method.regularizers.mcc must be >= 0"):
        MethodConfig(regularizers={"mcc": -1.0})


def bn_net(name: str, **method):
    torch.manual_seed(0)
    cfg = MethodConfig(name=name, **method)
    model = ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(6,), batchnorm=True)
    return build_network(model, cfg, (4,), 3), create_method(cfg)


def test_fixmatch_ema_teacher_follows_the_weights_and_is_kept_in_its_state():
    net, method = bn_net("fixmatch", ema_teacher=0.9)
    method.prepare(net)
    (_, _, term) = method.terms[0]
    start = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p += 1.0
        net(torch.randn(8, 4))  # moves BatchNorm's running statistics and its integer batch counter
    method.after_step(net)
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            # the first update's momentum is min(0.9, 1 − 1/2): Tarvainen & Valpola's ramp
            torch.testing.assert_close(term.teacher.weights[k], 0.5 * start[k] + 0.5 * v)
        else:
            assert torch.equal(term.teacher.weights[k], v), k  # num_batches_tracked is copied
    state = method.state_dict()
    fresh_net, fresh = bn_net("fixmatch", ema_teacher=0.9)
    fresh.prepare(fresh_net)
    fresh.load_state_dict(state)
    teacher = term.teacher.weights
    assert all(torch.equal(fresh.terms[0][2].teacher.weights[k], teacher[k]) for k in teacher)


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_fixmatch_extra_forwards_leave_batchnorm_running_statistics_to_the_main_forward(ema):
    net, method = bn_net("fixmatch", ema_teacher=ema)
    method.prepare(net)
    reference, _ = bn_net("fixmatch")
    reference.load_state_dict(net.state_dict())
    torch.manual_seed(1)
    method.loss(net, BATCH, 0.5)
    torch.manual_seed(1)  # the same strong views, drawn in the same order
    views = [BATCH.x_s, strong_augment(BATCH.x_s), BATCH.x_t, strong_augment(BATCH.x_t)]
    reference.forward_head(reference.forward_features(torch.cat(views)))  # the main (joint) forward only
    for (k, v), ref in zip(net.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(v, ref), k
    assert net.training


def test_fixmatch_takes_pseudo_labels_from_the_teacher_above_the_relative_threshold():
    net, method = make("fixmatch", ema_teacher=0.5, fixmatch_threshold=0.9)
    method.prepare(net)
    term = method.terms[0][2]
    fw = forward(net, BATCH)
    assert term(fw)[0] > 0 or term(fw)[1]["pseudo_kept"] == 0
    for k in term.teacher.weights:  # a teacher whose head predicts uniformly: no pseudo-label passes any threshold
        if k.startswith("head."):
            term.teacher.weights[k].zero_()
    loss, extra = term(forward(net, BATCH))
    assert loss.item() == 0.0 and extra["pseudo_kept"].item() == 0.0
    # relative threshold: 0.9 × the mean source confidence; a target confidence of 0.6 passes when the source's is 0.6
    _, plain = make("fixmatch", fixmatch_threshold=0.9)
    z_s = torch.log(torch.tensor([[0.6, 0.2, 0.2]])).repeat(4, 1)
    z_t = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(4, 1)
    x = torch.randn(4, 4)
    fw = Forward(net, Batch(x, torch.zeros(4, dtype=torch.int64), x), x, x, z_s, z_t, 0.5)
    assert plain.terms[0][2](fw)[1]["pseudo_kept"].item() == 1.0
    source_free = Forward(net, Batch(x[:0], torch.zeros(0, dtype=torch.int64), x), x[:0], x, z_s[:0], z_t, 0.5)
    assert plain.terms[0][2](source_free)[1]["pseudo_kept"].item() == 0.0  # τ alone: 0.6 < 0.9


@pytest.mark.parametrize(("name", "term"), [("cdan", "adv"), ("cdan_e", "adv"), ("mdd", "mdd")])
def test_the_label_head_gets_no_gradient_from_a_conditional_or_margin_term(name, term):
    """CDAN conditions on the predictions and MDD targets the head's argmax; neither may train the head."""
    net, method = make(name)
    _, _, t = method.terms[0]
    t(forward(net, BATCH))[0].backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in net.head.parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in net.backbone.parameters())


def test_shot_term_is_information_maximization_plus_beta_pseudo_label_ce():
    net, method = make("shot", shot_beta=0.3)
    fw = forward(net, BATCH)
    value, extra = method.terms[0][2](fw)
    p = torch.softmax(fw.z_t, 1)
    p_mean = p.mean(0)
    ent, div = -(p * p.log()).sum(1).mean(), -(p_mean * p_mean.log()).sum()
    expected = ent - div + 0.3 * extra["pseudo_ce"]
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(extra["div"], div)


@pytest.mark.parametrize("shape", [(8, 3, 12, 12), (8, 5)])
def test_strong_augmentation_changes_every_sample_and_is_seeded(shape):
    x = torch.rand(*shape)
    torch.manual_seed(3)
    a = strong_augment(x)
    torch.manual_seed(3)
    b = strong_augment(x)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert ((a - x).flatten(1).abs().amax(1) > 1e-3).all()
    assert not torch.equal(strong_augment(x), a)


@pytest.mark.parametrize(
    ("method", "unused"),
    [
        ({"name": "dann", "ema_teacher": 0.5}, "method.ema_teacher"),
        ({"name": "cdan", "shot_beta": 5.0, "mdd_margin": 2.0}, "method.mdd_margin, method.shot_beta"),
        ({"name": "source_only", "mcc_temperature": 1.0}, "method.mcc_temperature"),
    ],
)
def test_a_setting_that_only_other_methods_read_is_named_in_a_warning(method, unused):
    from dann.errors import DataWarning

    with pytest.warns(DataWarning, match=f"does not read {unused}: those settings have no effect"):
        create_method(MethodConfig(**method))


def test_settings_the_method_reads_give_no_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_method(MethodConfig(name="fixmatch", ema_teacher=0.5, fixmatch_threshold=0.8))
        create_method(MethodConfig(name="dann", regularizers={"mcc": 1.0}, mcc_temperature=2.0))
        create_method(MethodConfig(name="cdan_e", cdan_max_dim=100))
