"""Label shift: BBSE and EM recover known class proportions and their band covers the truth; IWDAN and IWCDAN
estimate the class weights from the steps' predictions, weigh each source sample's BCE and cross-entropy by them,
wait for their warm-up and resume exactly."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dann
from dann.cli import main
from dann.config import MethodConfig, ModelConfig, replace
from dann.errors import ConfigError, DataError
from dann.evaluation.label_shift import (
    LARGE_TV,
    joint_confusion,
    label_shift_from_probabilities,
    mean_prediction,
    solve_weights,
)
from dann.methods import Batch, create_method
from dann.methods.base import Forward
from dann.plan import build_network
from dann.runs import LAST_CHECKPOINT, load_checkpoint

from .test_distributed import MOONS, assert_close, model_weights, torchrun
from .test_method_runs import tiny
from .test_trainer import assert_same, weights

# P(ŷ = i | y = j): column j is class j's prediction distribution; not symmetric
M = np.array([[0.7, 0.2, 0.1], [0.2, 0.6, 0.3], [0.1, 0.2, 0.6]])
P_S, Q_T = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])


def hard_predictions(props: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n samples with labels drawn from ``props`` and predictions from M's columns, as near one-hot probabilities."""
    y = rng.choice(3, n, p=props)
    pred = np.array([rng.choice(3, p=M[:, k]) for k in y])
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), pred] = 0.9
    return probs, y


def test_the_program_inverts_the_confusion_matrix_when_the_solution_is_feasible():
    c = M * P_S  # C[i, j] = P(ŷ = i | y = j) p_s[j]
    w_true = Q_T / P_S
    np.testing.assert_allclose(solve_weights(c, c @ w_true), w_true, atol=1e-5)
    np.testing.assert_allclose(solve_weights(7 * c, 3 * (c @ w_true)), w_true, atol=1e-5)  # any scale
    np.testing.assert_allclose(np.linalg.solve(c, c @ w_true), w_true)  # what the program stands for: C⁻¹ μ


def test_the_program_keeps_proportions_a_distribution_and_is_optimal_when_c_inverse_mu_is_not():
    c, mu = M * P_S, np.array([0.9, 0.02, 0.08])
    assert (np.linalg.solve(c, mu) < 0).any()  # the plain inverse would give a negative weight
    w = solve_weights(c, mu)
    assert (w >= 0).all() and w @ P_S == pytest.approx(1.0, abs=1e-8)
    grid = np.array([(a, b, 1 - a - b) for a in np.linspace(0, 1, 101) for b in np.linspace(0, 1 - a, 101)])
    best = ((grid @ M.T - mu) ** 2).sum(1).min()  # over q = w ⊙ p_s on a grid of the simplex
    assert ((c @ w - mu) ** 2).sum() <= best + 1e-9


def test_bbse_recovers_known_proportions_within_its_band_where_counting_predictions_does_not():
    rng = np.random.default_rng(0)
    (probs_s, y_s), (probs_t, y_t) = hard_predictions(P_S, 3000, rng), hard_predictions(Q_T, 3000, rng)
    truth = np.bincount(y_t, minlength=3) / len(y_t)
    est = label_shift_from_probabilities(probs_s, y_s, probs_t, "bbse", bootstrap=100)
    assert np.abs(est.proportions - truth).max() < 0.05
    assert (est.low <= truth).all() and (truth <= est.high).all()
    assert np.abs(mean_prediction(probs_t) - truth).max() > 0.08  # classify-and-count is off by the confusion
    np.testing.assert_allclose(est.source, np.bincount(y_s, minlength=3) / len(y_s))
    np.testing.assert_allclose(est.weights, est.proportions / est.source)
    assert joint_confusion(probs_s, y_s).sum() == pytest.approx(1.0)


def test_em_recovers_known_proportions_from_calibrated_posteriors():
    rng = np.random.default_rng(1)
    means = np.array([-2.0, 0.0, 2.0])

    def posteriors(props: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(3, n, p=props)
        x = rng.normal(means[y], 1.0)
        joint = P_S * np.exp(-0.5 * (x[:, None] - means) ** 2)  # Bayes posteriors under the source prior
        return joint / joint.sum(1, keepdims=True), y

    (probs_s, y_s), (probs_t, y_t) = posteriors(P_S, 2000), posteriors(Q_T, 2000)
    truth = np.bincount(y_t, minlength=3) / len(y_t)
    est = label_shift_from_probabilities(probs_s, y_s, probs_t, "em", prior=P_S, bootstrap=100)
    assert np.abs(est.proportions - truth).max() < 0.03
    assert (est.low <= truth).all() and (truth <= est.high).all()
    assert np.abs(probs_t.mean(0) - truth).max() > 0.05  # the posteriors alone still carry the source prior


@pytest.mark.parametrize("method", ["bbse", "em"])
def test_the_band_covers_the_truth_on_digits_resampled_to_skewed_proportions(method):
    """scikit-learn's digits (the source of the embedded ``digits`` task), a logistic regression as the model: held-out
    samples at their own proportions, the target resampled so that 0 and 9 are four times as frequent."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    train, held, pool = idx[:600], idx[600:1100], idx[1100:]
    model = LogisticRegression(max_iter=500, C=0.05).fit(x[train] / 16, y[train])
    skew = np.array([4, 1, 1, 1, 1, 1, 1, 1, 1, 4]) / 16
    n = np.round(skew * 600).astype(int)
    target = np.concatenate([rng.choice(pool[y[pool] == k], n[k]) for k in range(10)])
    truth = n / n.sum()
    probs_t = model.predict_proba(x[target] / 16)
    est = label_shift_from_probabilities(model.predict_proba(x[held] / 16), y[held], probs_t, method)
    assert (est.low <= truth).all() and (truth <= est.high).all()
    assert np.abs(est.proportions - truth).max() < 0.04 < np.abs(probs_t.mean(0) - truth).max()
    assert est.large and est.tv == pytest.approx(0.5 * np.abs(est.proportions - est.source).sum())


def test_no_shift_is_not_called_large_and_the_band_is_seeded():
    rng = np.random.default_rng(2)
    (probs_s, y_s), (probs_t, _) = hard_predictions(P_S, 1500, rng), hard_predictions(P_S, 1500, rng)
    a = label_shift_from_probabilities(probs_s, y_s, probs_t, bootstrap=50, seed=3)
    assert not a.large and a.tv_band[0] < LARGE_TV
    b = label_shift_from_probabilities(probs_s, y_s, probs_t, bootstrap=50, seed=3)
    c = label_shift_from_probabilities(probs_s, y_s, probs_t, bootstrap=50, seed=4)
    assert np.array_equal(a.low, b.low) and not np.array_equal(a.low, c.low)
    assert "not shown to be large" in str(a) and a.to_dict()["large_threshold"] == LARGE_TV


def test_bad_arguments_are_named():
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="unknown label-shift method 'kmm'; valid: bbse, em"):
        label_shift_from_probabilities(probs, np.zeros(4, int), probs, "kmm")
    with pytest.raises(ValueError, match="expected probabilities"):
        label_shift_from_probabilities(probs, np.zeros(4, int), probs[:, :2])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        label_shift_from_probabilities(probs, np.full(4, 3), probs)


def test_estimate_label_shift_of_a_run_reads_its_held_out_source_and_target(tiny_cfg, tmp_path):
    dann.fit(replace(tiny_cfg, method={"name": "source_only"}), tmp_path / "run", data=tiny())
    # the run's config names no data here (it was given as arrays): pass both sets
    data = tiny()
    x_v, y_v = data.source_val.x.numpy(), data.source_val.y.numpy()
    x_t = data.target_train.x.numpy()
    est = dann.estimate_label_shift(tmp_path / "run", x_t, (x_v, y_v), bootstrap=20)
    model = dann.load_run(tmp_path / "run")
    with torch.no_grad():
        probs_s, probs_t = (torch.softmax(model.net(torch.tensor(x)), 1).numpy() for x in (x_v, x_t))
    expected = label_shift_from_probabilities(probs_s, y_v, probs_t, bootstrap=20, classes=model.classes)
    np.testing.assert_allclose(est.proportions, expected.proportions, atol=1e-6)
    assert est.classes == tuple(model.classes) and est.proportions.sum() == pytest.approx(1.0)
    em = dann.estimate_label_shift(model, x_t, (x_v, y_v), "em", bootstrap=0)
    assert em.method == "em" and np.array_equal(em.low, em.proportions)
    with pytest.raises(DataError, match="shape"):
        dann.estimate_label_shift(model, x_t[:, :2], (x_v, y_v))


def test_estimate_label_shift_needs_held_out_source_samples(tmp_path):
    cfg = dann.load_config(
        values={
            "data": {"task": "cancer", "val_fraction": 0.0},
            "model": {"backbone": "mlp", "mlp_dims": [8]},
            "method": {"name": "source_only"},
            "train": {"steps": 2, "batch_size": 8, "eval_every": 2, "progress": False, "device": "cpu"},
        }
    )
    dann.fit(cfg, tmp_path / "run")
    with pytest.raises(DataError, match="no held-out source samples"):
        dann.estimate_label_shift(tmp_path / "run")


# ---- IWDAN / IWCDAN -------------------------------------------------------------------------------------------------

MODEL = ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(6,))
# the seed's network: at initialisation the auto bottleneck (256, BatchNorm) leaves the discriminator's logits so
# alike across samples that weighing them hardly moves the mean, and the test could not tell the weights were applied
SEED_MODEL = ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(6,), bottleneck_dim=0)


def iw_term(name: str = "iwdan", **options):
    method = create_method(MethodConfig(name=name, **options))
    return method, method.terms[0][2]


def step(term, y_s: torch.Tensor, y_t: torch.Tensor, z_s: torch.Tensor, z_t: torch.Tensor) -> None:
    """One training step as the term sees it: accumulate the batch's predictions, then the optimizer step."""
    batch = Batch(torch.zeros(len(y_s), 4), y_s, torch.zeros(len(y_t), 4))
    term.accumulate(Forward(None, batch, torch.zeros(len(y_s), 2), torch.zeros(len(y_t), 2), z_s, z_t, 0.5))
    term.after_step(None)


def test_iw_weights_recover_known_class_proportions_from_the_steps_predictions():
    rng = np.random.default_rng(0)
    _, term = iw_term(iw_every=10, iw_ma=0.0)
    for _ in range(10):
        (probs_s, y_s), (probs_t, _) = hard_predictions(np.full(3, 1 / 3), 64, rng), hard_predictions(Q_T, 64, rng)
        step(
            term,
            torch.tensor(y_s),
            torch.zeros(64, dtype=torch.int64),
            *(torch.log(torch.tensor(p)).float() for p in (probs_s, probs_t)),
        )
    p_window = (term.labels / term.labels.sum()).numpy()
    q = term.w.numpy() * p_window
    assert q.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(q - Q_T).max() < 0.06  # 640 target samples; their predicted classes alone are off by > 0.1
    assert np.abs(M @ Q_T - Q_T).max() > 0.1


def test_iw_weights_are_the_windows_proportions_mixed_by_the_moving_average_every_iw_every_steps():
    _, term = iw_term(iw_every=4, iw_ma=0.25)
    logm = torch.tensor(np.log(M.T), dtype=torch.float32)  # row y: log P(ŷ | y), so the soft confusion is exact
    y_s = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0])
    p_s = np.bincount(y_s, minlength=3) / 8
    w = np.ones(3)
    for y_t in (torch.tensor([2, 2, 2, 1, 0, 2, 2, 1]), torch.tensor([0, 0, 0, 0, 1, 2, 0, 1])):
        for _ in range(3):
            step(term, y_s, y_t, logm[y_s], logm[y_t])
        np.testing.assert_allclose(term.w.numpy(), w, atol=1e-6)  # no estimate before iw_every steps
        step(term, y_s, y_t, logm[y_s], logm[y_t])
        w = 0.75 * (np.bincount(y_t, minlength=3) / 8) / p_s + 0.25 * w  # this window's alone, then averaged
        np.testing.assert_allclose(term.w.numpy(), w, atol=1e-4)
        assert term.confusion.sum() == 0 and term.target.sum() == 0  # the window starts again
    fresh = iw_term(iw_every=4, iw_ma=0.25)[1]
    fresh.load_state_dict(term.state_dict())
    assert torch.equal(fresh.w, term.w) and torch.equal(fresh.labels, term.labels) and fresh.step == term.step == 8


@pytest.mark.parametrize("name", ["iwdan", "iwcdan"])
def test_iw_multiplies_each_source_samples_bce_by_its_class_weight(name):
    torch.manual_seed(0)
    net = build_network(SEED_MODEL, MethodConfig(name=name), (4,), 3).eval()
    method, term = iw_term(name, iw_cls="none")
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(5, 4, generator=g), torch.tensor([0, 2, 1, 1, 0]), torch.randn(7, 4, generator=g))
    term.start(3, torch.device("cpu"))
    term.w = torch.tensor([0.5, 2.0, 1.0])
    out = method.loss(net, batch, 0.5)
    with torch.no_grad():
        f = net.forward_features(torch.cat([batch.x_s, batch.x_t]))
        h = f if name == "iwdan" else torch.cat([f, torch.softmax(net.forward_head(f), 1)], 1)
        d = net.domain_logits(h, 1.0)
    bce_s, bce_t = F.softplus(d[:5]), F.softplus(-d[5:])  # -log(1 - σ(d)) for source 0, -log σ(d) for target 1
    w = term.w[batch.y_s]
    expected = 0.5 * ((w * bce_s).sum() / w.sum() + bce_t.mean())
    assert out.terms["adv"] == pytest.approx(expected.item(), rel=1e-5)
    assert abs(expected - 0.5 * (bce_s.mean() + bce_t.mean())) > 1e-3  # the weights change it
    assert out.terms["iw_max"] == 2.0 and out.terms["iw_min"] == 0.5


@pytest.mark.parametrize("name", ["iwdan", "iwcdan"])
def test_the_adversarial_term_waits_for_the_warmup(name):
    torch.manual_seed(0)
    net = build_network(MODEL, MethodConfig(name=name), (4,), 3)
    method, _ = iw_term(name, iw_warmup=0.2)
    batch = Batch(torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0]), torch.randn(7, 4))
    early = method.loss(net, batch, 0.1)
    assert early.terms["adv"] == 0 and torch.equal(early.total, early.terms["cls"])
    early.total.backward()
    assert all(p.grad is None or not p.grad.any() for p in net.discriminator.parameters())
    assert method.loss(net, batch, 0.2).terms["adv"] > 0


@pytest.mark.parametrize("mode", ["balanced", "iw", "none"])
def test_iw_cls_weighs_the_source_cross_entropy(mode):
    torch.manual_seed(0)
    net = build_network(MODEL, MethodConfig(name="iwdan"), (4,), 3).eval()
    method, term = iw_term(iw_cls=mode)
    batch = Batch(torch.randn(5, 4), torch.tensor([0, 2, 1, 1, 0]), torch.randn(7, 4))
    term.start(3, torch.device("cpu"))
    term.w = torch.tensor([0.5, 2.0, 1.0])
    ce = F.cross_entropy(net(batch.x_s), batch.y_s, reduction="none", label_smoothing=0.1)
    w = {"none": torch.ones(5), "iw": term.w[batch.y_s]}.get(mode)
    if mode == "balanced":  # w[y] / p_s[y], p_s = this batch's labels (2, 2 and 1 of 5)
        w = term.w[batch.y_s] / torch.tensor([0.4, 0.4, 0.2])[batch.y_s]
    expected = (w * ce).sum() / w.sum()
    assert method.loss(net, batch, 0.5).terms["cls"] == pytest.approx(expected.item(), rel=1e-5)


def test_iwdan_resumes_exactly_with_its_class_weights(tiny_cfg, tmp_path, crash_after_first_checkpoint):
    cfg = replace(tiny_cfg, method={"name": "iwdan", "iw_every": 4, "iw_warmup": 0.0})
    crash_after_first_checkpoint(dann.fit, cfg, tmp_path / "crashed", data=tiny())
    saved = load_checkpoint(tmp_path / "crashed" / LAST_CHECKPOINT).method["adv"]
    assert saved["step"] == 6 and not torch.equal(saved["w"], torch.ones(2))  # an estimate made at step 4, saved
    assert saved["confusion"].sum() > 0  # with the window of steps 5 and 6 that the next estimate continues
    resumed = dann.fit(out=tmp_path / "crashed", resume=True, data=tiny())
    assert_same(weights(resumed.net), weights(dann.fit(cfg, data=tiny()).net))


def test_two_processes_sum_their_predictions_into_the_one_process_class_weights(tmp_path):
    """Until the first estimate (step 12, after the last update) w = 1, every loss is a plain mean and 2 processes
    train the one-process weights; the estimate then reads the predictions of both processes' shards. On the seed's
    network: iwdan's auto BatchNorm bottleneck would normalise each process's shard by its own statistics."""
    iw = ["--method", "iwdan", "--set", "method.iw_every=12", "--set", "method.iw_cls=none"]
    iw += ["--set", "model.bottleneck_dim=0"]
    torchrun(*MOONS, *iw, "--out", str(tmp_path / "two"))
    assert main(["train", *MOONS, *iw, "--out", str(tmp_path / "one")]) == 0
    assert_close(model_weights(tmp_path / "two"), model_weights(tmp_path / "one"))
    w_two, w_one = (load_checkpoint(tmp_path / r / LAST_CHECKPOINT).method["adv"]["w"] for r in ("two", "one"))
    assert not torch.equal(w_one, torch.ones(2))
    torch.testing.assert_close(w_two, w_one, rtol=1e-4, atol=1e-5)


def test_iw_options_are_checked():
    with pytest.raises(ConfigError, match=r"method\.iw_cls"):
        MethodConfig(name="iwdan", iw_cls="uniform")
    with pytest.raises(ConfigError, match=r"method\.iw_every"):
        MethodConfig(name="iwdan", iw_every=0)
    with pytest.raises(ConfigError, match="domain_discriminator=binary"):
        create_method(MethodConfig(name="iwdan", domain_discriminator="multiclass"))
