import json
import math

import pytest
import torch

import dann
from dann.config import replace
from dann.data import Domain, make_domain_data
from dann.errors import ConfigError, DataWarning
from dann.runs import load_checkpoint
from dann.selection.validators import (
    VALIDATORS,
    ValidationInputs,
    check_validator,
    density_ratio,
    running_best,
    score_validators,
    select_record,
)

K, N = 3, 150


def clustered_features(y: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, 8) features: one tight, well-separated cluster per class."""
    g = torch.Generator().manual_seed(seed)
    return 5.0 * torch.eye(8)[y] + 0.1 * torch.randn(len(y), 8, generator=g)


def good_inputs() -> ValidationInputs:
    """A confident predictor whose decisions follow the feature clusters, correct on the source held-out set."""
    y = torch.arange(N) % K
    logits = 8.0 * torch.eye(K)[y]
    return ValidationInputs(
        clustered_features(y, 0), clustered_features(y, 1), logits, y, clustered_features(y, 2), logits
    )


def random_inputs() -> ValidationInputs:
    """An uninformative predictor: probabilities scattered over the simplex, unrelated to features and labels."""
    g = torch.Generator().manual_seed(3)
    y = torch.arange(N) % K
    logits = 2.0 * torch.randn(N, K, generator=g)
    f = torch.randn(N, 8, generator=g)
    return ValidationInputs(f, f, logits[torch.randperm(N, generator=g)], y, f, logits)


@pytest.mark.parametrize("name", VALIDATORS.names())
def test_a_confident_clustered_predictor_scores_above_a_random_one(name):
    good, bad = VALIDATORS.get(name)(good_inputs()), VALIDATORS.get(name)(random_inputs())
    assert math.isfinite(good) and math.isfinite(bad)
    assert good > bad + 0.1, (good, bad)


def collapsed_inputs() -> ValidationInputs:
    """Confident, but every target sample in class 0."""
    v = good_inputs()
    return ValidationInputs(v.f_s, v.f_sv, v.logits_sv, v.y_sv, v.f_t, 8.0 * torch.eye(K)[torch.zeros(N).long()])


def test_im_and_bnm_penalize_a_collapsed_predictor_that_entropy_cannot_tell_apart():
    good, collapsed = good_inputs(), collapsed_inputs()
    assert VALIDATORS.get("entropy")(collapsed) == pytest.approx(VALIDATORS.get("entropy")(good), abs=1e-6)
    assert VALIDATORS.get("im")(good) == pytest.approx(math.log(K), abs=0.01)
    assert VALIDATORS.get("im")(collapsed) == pytest.approx(0.0, abs=0.01)
    assert VALIDATORS.get("bnm")(good) == pytest.approx(1.0, abs=0.01)
    assert VALIDATORS.get("bnm")(collapsed) == pytest.approx(1 / math.sqrt(K), abs=0.01)


def test_entropy_and_snd_endpoints():
    uniform = ValidationInputs(*[None] * 4, torch.randn(N, 4), torch.zeros(N, K))
    assert VALIDATORS.get("entropy")(uniform) == pytest.approx(-math.log(K))
    assert VALIDATORS.get("snd")(uniform) == pytest.approx(math.log(N - 1))  # all neighbours alike
    assert VALIDATORS.get("snd")(good_inputs()) == pytest.approx(math.log(N / K - 1), abs=0.01)  # its own class


def shifted_inputs(correct_near_target: bool) -> ValidationInputs:
    """Source samples in two regions (x0 = −3 and +3); the target lies only near +3. The model is right in one region
    and wrong in the other, so its source held-out accuracy is 50% either way."""
    g = torch.Generator().manual_seed(0)
    region = torch.arange(N) % 2  # 1: near the target

    def feats(r: torch.Tensor) -> torch.Tensor:
        return torch.stack([6.0 * r - 3.0, torch.zeros(len(r))], 1) + 0.5 * torch.randn(len(r), 2, generator=g)

    y = torch.zeros(N, dtype=torch.long)
    right = region == (1 if correct_near_target else 0)
    logits_sv = torch.where(right[:, None], torch.tensor([4.0, 0.0]), torch.tensor([0.0, 4.0]))
    f_t = feats(torch.ones(N))
    return ValidationInputs(feats(region), feats(region), logits_sv, y, f_t, torch.zeros(N, 2))


def test_dev_weights_the_source_samples_that_look_like_the_target():
    near, far = shifted_inputs(True), shifted_inputs(False)
    assert VALIDATORS.get("source_acc")(near) == VALIDATORS.get("source_acc")(far) == 0.5
    assert VALIDATORS.get("dev")(near) > VALIDATORS.get("dev")(far) + 1.0
    w = density_ratio(near.f_s, near.f_t, near.f_sv)
    region = torch.arange(N) % 2
    assert w[region == 1].median() > 1.5 and w[region == 0].max() < 0.2  # p_t/p_s: 2 near the target, 0 far


def test_validators_needing_source_labels_are_skipped_without_them_and_refused_for_selection():
    v = good_inputs()
    scores = score_validators(ValidationInputs(v.f_s, None, None, None, v.f_t, v.logits_t))
    assert set(scores) == set(VALIDATORS.names()) - {"source_acc", "dev"}
    with pytest.raises(ConfigError, match=r"selection.validator=dev needs a labeled source held-out set.*val_fraction"):
        check_validator("dev", has_source_val=False)
    check_validator("im", has_source_val=False)
    with pytest.raises(ConfigError, match="unknown validator 'acc'; valid validators: bnm, class_ami, dev"):
        check_validator("acc", has_source_val=True)


def test_running_best_keeps_the_first_of_ties_and_ignores_missing_or_nan_scores():
    history = [
        {"step": 1, "validators": {"im": 0.2}},
        {"step": 2, "validators": {"im": 0.5}},
        {"step": 3, "validators": {"im": float("nan")}},
        {"step": 4, "validators": {}},
        {"step": 5, "validators": {"im": 0.5}},
    ]
    best = None
    for record in history:
        best = running_best(best, record["step"], record["validators"], "im")
    assert best == {"validator": "im", "step": 2, "score": 0.5}
    assert select_record(history, "im") is history[1]
    assert select_record(history, "bnm") is None
    pooled = [{"step": 1, "validators": {"im": 0.1}}, {"step": 1, "validators": {"im": 0.3}}]  # two runs' records
    assert select_record(pooled, "im") is pooled[1]


def test_training_records_every_validator_and_keeps_the_selected_checkpoint(tiny_cfg, tiny_data, tmp_path):
    cfg = replace(tiny_cfg, selection={"validator": "im"}, train={"eval_every": 4})
    result = dann.fit(cfg, tmp_path / "run", data=tiny_data)
    assert all(set(r["validators"]) == set(VALIDATORS.names()) for r in result.history)
    assert all(math.isfinite(s) for r in result.history for s in r["validators"].values())
    chosen = max(result.history, key=lambda r: r["validators"]["im"])  # the first of equal scores, by hand
    assert result.history[-1]["selection"] == {
        "validator": "im",
        "step": chosen["step"],
        "score": chosen["validators"]["im"],
    }
    best = load_checkpoint(tmp_path / "run/checkpoints/best.pt")
    assert best.step == chosen["step"] and best.selection["validator"] == "im"
    assert dann.load_run(tmp_path / "run", "checkpoints/best.pt").step == chosen["step"]


def test_evaluations_and_validators_do_not_change_training(tiny_cfg):
    """Evaluating every 2 steps or once leaves the same weights and BatchNorm statistics, on a network where
    evaluation could leak into training: BatchNorm (eval mode must end, its statistics must not move), dropout
    (evaluation must draw no random number from the stream dropout uses) and shifted (augmented) images."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 2
    images = make_domain_data(
        Domain(torch.rand(24, 3, 16, 16, generator=g), y), Domain(torch.rand(24, 3, 16, 16, generator=g), y)
    )
    model = {"backbone": "lenet", "batchnorm": True, "dropout": 0.5, "discriminator_dims": [8]}
    cfg = replace(tiny_cfg, model=model, train={"steps": 6, "batch_size": 8})
    assert cfg.data.augment and min(images.input_shape[1:]) >= 14  # images of 14 px and more get random shifts
    often = dann.fit(replace(cfg, train={"eval_every": 2}), data=images).net.state_dict()
    once = dann.fit(replace(cfg, train={"eval_every": 6}), data=images).net.state_dict()
    assert any("running_mean" in k for k in once)
    assert all(torch.equal(often[k], once[k]) for k in often)


def small_inputs(n_t: int, n_sv: int, k: int, seed: int = 0) -> ValidationInputs:
    """Network outputs on ``n_t`` target and ``n_sv`` source held-out samples of a ``k``-class model."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(max(n_sv, 1))[:n_sv] % k
    return ValidationInputs(
        torch.randn(20, 8, generator=g),
        torch.randn(n_sv, 8, generator=g),
        torch.randn(n_sv, k, generator=g),
        y,
        torch.randn(n_t, 8, generator=g),
        torch.randn(n_t, k, generator=g),
    )


@pytest.mark.parametrize(
    ("n_t", "n_sv", "k", "null"),
    [
        (5, 30, 10, {"class_ami"}),  # fewer target samples than classes: k-means cannot make k clusters
        (9, 30, 10, {"class_ami"}),
        (10, 30, 10, set()),
        (1, 30, 3, {"class_ami", "snd"}),  # one target sample has no neighbours
        (2, 1, 3, {"class_ami", "dev"}),  # one held-out source sample: no covariance for DEV's control variate
        (4, 2, 2, set()),
    ],
)
def test_a_validator_that_cannot_be_computed_scores_none_with_the_reason(n_t, n_sv, k, null):
    problems = {}
    scores = score_validators(small_inputs(n_t, n_sv, k), problems=problems)
    assert set(scores) == set(VALIDATORS.names())
    assert {name for name, score in scores.items() if score is None} == null == set(problems)
    assert all(math.isfinite(score) for score in scores.values() if score is not None)
    if "class_ami" in null:
        assert problems["class_ami"] == f"k-means with k = {k} classes needs at least {k} target samples, got {n_t}"


def test_a_validator_that_fails_or_returns_nan_scores_none(monkeypatch):
    def broken(v):
        raise RuntimeError("linalg.svd: the algorithm failed to converge")

    monkeypatch.setitem(VALIDATORS._items, "bnm", broken)
    monkeypatch.setitem(VALIDATORS._items, "im", lambda v: float("nan"))
    problems = {}
    scores = score_validators(good_inputs(), problems=problems)
    assert scores["bnm"] is None and scores["im"] is None and math.isfinite(scores["entropy"])
    assert problems == {"bnm": "linalg.svd: the algorithm failed to converge", "im": "its score is nan"}


def test_selection_falls_back_to_the_first_validator_with_a_score_and_never_switches():
    from dann.selection.validators import FALLBACK_ORDER, selecting_validator

    assert set(FALLBACK_ORDER) == set(VALIDATORS.names())
    assert selecting_validator("class_ami", None, {"class_ami": None, "bnm": 0.5, "im": 0.1}) == "bnm"
    assert selecting_validator("bnm", None, {"bnm": None, "im": float("nan"), "entropy": -0.3}) == "entropy"
    assert selecting_validator("snd", None, {"snd": 2.0, "bnm": 0.5}) == "snd"
    assert selecting_validator("class_ami", {"validator": "bnm", "step": 2, "score": 0.4}, {"class_ami": 0.9}) == "bnm"
    assert selecting_validator("dev", None, {"dev": None}) == "dev"  # nothing has a score: no checkpoint wins


def few_target_samples(n_t: int = 5, k: int = 10):
    """A ``k``-class source of 60 feature vectors and a target of ``n_t`` (fewer than the classes)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % k
    x = torch.randn(60, 4, generator=g) + y[:, None].float()
    x_t = torch.randn(n_t, 4, generator=g) + torch.arange(n_t)[:, None].float()
    return make_domain_data(Domain(x, y), Domain(x_t, torch.arange(n_t) % k), val_fraction=0.2)


@pytest.mark.parametrize(("n_t", "k"), [(5, 10), (1, 3), (3, 4)])
def test_training_on_a_target_smaller_than_the_classes_finishes_and_warns_once(tiny_cfg, tmp_path, n_t, k):
    cfg = replace(tiny_cfg, selection={"validator": "class_ami"}, train={"eval_every": 4})
    with pytest.warns(DataWarning) as caught:
        result = dann.fit(cfg, tmp_path / "run", data=(data := few_target_samples(n_t, k)))
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(result.history) == 3 and all(r["validators"]["class_ami"] is None for r in result.history)
    assert sum(m.startswith("validator class_ami cannot be computed on this data (k-means") for m in messages) == 1
    fallback = [m for m in messages if m.startswith("selection.validator=class_ami has no score on this data")]
    assert len(fallback) == 1 and "best.pt is chosen by bnm" in fallback[0]
    assert all(r["selection"]["validator"] == "bnm" for r in result.history)
    best = load_checkpoint(tmp_path / "run/checkpoints/best.pt")
    assert best.step == result.history[-1]["selection"]["step"]
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert all(r["validators"]["class_ami"] is None for r in records)  # null in the file
    from dann.reporting.report import build_report, summarize

    assert summarize(tmp_path / "run").validator == "bnm"  # the report follows the validator that chose best.pt
    page = build_report(tmp_path / "run", data).with_suffix(".md").read_text()  # a tiny target leaves out the t-SNE
    assert ("Feature diagnostics left out: the proxy A-distance and t-SNE need at least 4" in page) == (n_t < 4)


def test_the_scikit_learn_estimator_fits_a_target_smaller_than_the_classes():
    data = few_target_samples()
    est = dann.DANNClassifier(backbone="mlp", max_steps=4, batch_size=8, config={"model.mlp_dims": [8]})
    with pytest.warns(DataWarning, match="validator class_ami cannot be computed on this data"):
        est.fit(data.source_train.x.numpy(), data.source_train.y.numpy(), X_target=data.target_train.x.numpy())
    assert est.predict(data.target_train.x.numpy()).shape == (5,)
