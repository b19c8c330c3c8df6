"""mean_teacher (self-ensembling, French et al. ICLR 2018): the teacher is an EMA of the student's parameters with its
own target-only BatchNorm statistics, the consistency mask reads the teacher's confidence, and the run evaluates,
saves and predicts with the teacher."""

import pytest
import torch

import dann
from dann.config import MethodConfig, ModelConfig, replace
from dann.data.strong import self_ensembling_augment
from dann.methods import Batch, create_method
from dann.methods.mean_teacher import class_balance_loss, consistency_loss
from dann.plan import build_network
from dann.runs import load_checkpoint

from .conftest import tiny_config, tiny_domains

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def bn_net(**method):
    torch.manual_seed(0)
    cfg = MethodConfig(name="mean_teacher", **method)
    model = ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(6,), batchnorm=True)
    net, mt = build_network(model, cfg, (4,), 3), create_method(cfg)
    mt.prepare(net)
    return net, mt, mt.terms[0][2]


def batch(seed: int, shift_t: float = 0.0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(7, 4, generator=torch.Generator().manual_seed(100)) + shift_t
    return Batch(torch.randn(5, 4, generator=g) * 3, torch.randint(0, 3, (5,), generator=g), x_t)


def test_defaults_are_the_papers():
    cfg = create_method(MethodConfig(name="mean_teacher")).cfg
    assert (cfg.lambda_adv, cfg.teacher_momentum, cfg.teacher_threshold, cfg.class_balance) == (3.0, 0.99, 0.968, 0.0)


def test_by_default_every_view_gets_the_colour_augmentation_which_leaves_feature_vectors_alone(monkeypatch):
    import dann.methods.mean_teacher as mt

    drawn = []
    monkeypatch.setattr(mt, "self_ensembling_augment", lambda x, intensity=False: drawn.append(intensity) or x)
    method = create_method(MethodConfig(name="mean_teacher"))
    net = build_network(ModelConfig(backbone="lenet"), method.cfg, (1, 28, 28), 3)
    method.prepare(net)
    x = torch.rand(4, 1, 28, 28)
    method.loss(net, Batch(x, torch.tensor([0, 1, 2, 0]), x), 0.5)
    assert drawn == [True, True, True]  # the source view, the student's and the teacher's target views
    v = torch.randn(64, 5)
    torch.manual_seed(0)
    plain = self_ensembling_augment(v, intensity=False)
    torch.manual_seed(0)
    assert torch.equal(self_ensembling_augment(v, intensity=True), plain)  # on vectors: noise only, either way


def test_teacher_parameters_are_the_hand_computed_ema_and_its_buffers_are_its_own():
    net, method, term = bn_net(teacher_momentum=0.9, teacher_threshold=0.0)
    ema = {k: p.detach().clone() for k, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for step in range(3):
        optimizer.zero_grad()
        method.loss(net, batch(step), 0.1 * step).total.backward()
        optimizer.step()
        buffers = {k: v.clone() for k, v in term.teacher.items() if k.endswith(BN_STATS)}
        method.after_step(net)
        for k, p in net.named_parameters():
            ema[k] = 0.9 * ema[k] + 0.1 * p.detach()
        assert all(torch.equal(term.teacher[k], v) for k, v in buffers.items())  # after_step leaves buffers alone
    for k in ema:
        torch.testing.assert_close(term.teacher[k], ema[k])
    assert not torch.allclose(term.teacher["head.0.weight"], net.state_dict()["head.0.weight"])
    tracked = [k for k in term.teacher if k.endswith("num_batches_tracked")]
    assert tracked and all(term.teacher[k].item() == 3 for k in tracked)  # one target forward per step
    assert all(net.state_dict()[k].item() == 6 for k in tracked)  # the student: source, then target


def test_teacher_batchnorm_statistics_move_with_target_batches_only():
    def teacher_stats(b: Batch):
        net, method, term = bn_net()
        torch.manual_seed(1)
        method.loss(net, b, 0.5)
        return {k: v for k, v in term.teacher.items() if k.endswith(BN_STATS)}, net

    base, student = teacher_stats(batch(0))
    other_source, other_student = teacher_stats(batch(1))  # another source batch, the same target batch
    assert all(torch.equal(v, other_source[k]) for k, v in base.items())
    key = "bottleneck.1.running_mean"
    assert not torch.equal(student.state_dict()[key], other_student.state_dict()[key])  # the source reached the student
    other_target, _ = teacher_stats(batch(0, shift_t=2.0))
    assert not torch.equal(base["bottleneck.1.running_mean"], other_target["bottleneck.1.running_mean"])


def test_student_forwards_source_and_target_as_separate_batchnorm_batches():
    net, method, _ = bn_net()
    seen = []
    norm = net.bottleneck[1]
    norm.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    method.loss(net, batch(0), 0.5)
    assert seen == [5, 7, 7]  # student source, student target, teacher target


def test_the_mask_keeps_rows_whose_teacher_max_probability_exceeds_0968():
    q = torch.tensor([[0.97, 0.02, 0.01], [0.96, 0.03, 0.01], [0.5, 0.3, 0.2]])  # teacher
    p = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.99, 0.005, 0.005], [0.0, 0.0, 1.0]])  # student, confident in row 2
    loss, kept = consistency_loss(p, q, 0.968)
    by_hand = ((0.97 - 1 / 3) ** 2 + (0.02 - 1 / 3) ** 2 + (0.01 - 1 / 3) ** 2) / 3 / 3  # row 1 only, / K, / B
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert kept.item() == pytest.approx(1 / 3)
    assert consistency_loss(p, q, 0.95)[1].item() == pytest.approx(2 / 3)


def test_class_balance_is_the_bce_of_the_mean_prediction_against_uniform():
    p = torch.tensor([[0.8, 0.2], [0.6, 0.4]])  # mean (0.7, 0.3), K = 2
    by_hand = -2 * (0.5 * torch.log(torch.tensor(0.7)) + 0.5 * torch.log(torch.tensor(0.3)))
    assert class_balance_loss(p).item() == pytest.approx(by_hand.item(), rel=1e-4)
    assert class_balance_loss(p).item() > class_balance_loss(torch.full((2, 2), 0.5)).item()


def test_the_run_evaluates_saves_and_predicts_with_the_teacher(tmp_path):
    method = {"name": "mean_teacher", "teacher_threshold": 0.5}
    cfg = replace(tiny_config(), method=method, model={"bottleneck_dim": 256})
    result = dann.fit(cfg, tmp_path / "run", data=tiny_domains())
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    teacher = state.method["consistency"]["teacher"]
    loaded = dann.load_run(tmp_path / "run").net.state_dict()
    for k, v in loaded.items():
        assert torch.equal(v, teacher[k]), k
        assert torch.equal(result.net.state_dict()[k], v), k
    assert not torch.equal(state.model["head.0.weight"], teacher["head.0.weight"])  # the student is another net
    assert state.model["bottleneck.1.num_batches_tracked"].item() == 2 * teacher["bottleneck.1.num_batches_tracked"]


@pytest.mark.parametrize("intensity", [False, True])
def test_augmentation_keeps_shape_and_dtype_and_is_seeded(intensity):
    x = torch.rand(6, 3, 12, 10)
    torch.manual_seed(3)
    a = self_ensembling_augment(x, intensity)
    torch.manual_seed(3)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, self_ensembling_augment(x, intensity))
    assert not torch.equal(a, self_ensembling_augment(x, intensity))  # a fresh draw: another view


def test_augmentation_noise_is_relative_and_the_intensity_option_flips_polarity():
    flat = torch.full((4, 1, 8, 8), 0.3)
    torch.testing.assert_close(self_ensembling_augment(flat), flat, rtol=0, atol=1e-5)  # no std: no noise
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(400, 1, 16, 16).contiguous()
    torch.manual_seed(0)
    plain = self_ensembling_augment(ramp)
    flipped = self_ensembling_augment(ramp, intensity=True)
    corr = lambda y: ((y - y.mean((1, 2, 3), keepdim=True)) * ramp).sum((1, 2, 3))  # noqa: E731
    assert (corr(plain) > 0).all()
    assert 0.35 < (corr(flipped) < 0).float().mean().item() < 0.65  # p = 0.5
    x = torch.randn(20000, 3) * torch.tensor([1.0, 10.0, 100.0])
    ratio = (self_ensembling_augment(x) - x).std(0) / x.std(0)
    torch.testing.assert_close(ratio, torch.full((3,), 0.1), rtol=0.05, atol=0.0)
