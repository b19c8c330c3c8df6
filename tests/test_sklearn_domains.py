"""DANNClassifier with several labeled domains (positive sample_domain values) and sample_weight."""

import numpy as np
import pytest
import torch

from dann import DANNClassifier
from dann.errors import DataError

from .conftest import blobs
from .test_sklearn import TINY, same_weights

MULTICLASS = {**TINY, "config": {**TINY["config"], "method.domain_discriminator": "multiclass"}}


@pytest.fixture(scope="module")
def three():
    """Labeled domains 1 (40 rows) and 2 (20 rows, shifted a little), 30 unlabeled target rows."""
    x_a, y_a = blobs(40, 0.0, 0)
    x_b, y_b = blobs(20, 0.6, 1)
    x_t, y_t = blobs(30, 1.5, 2)
    return np.vstack([x_a, x_b]), np.concatenate([y_a, y_b]), np.repeat([1, 2], [40, 20]), x_t, y_t


def test_the_three_target_conventions_agree_with_several_labeled_domains(three):
    x_l, y_l, d_l, x_t, y_t = three
    given = DANNClassifier(**MULTICLASS).fit(x_l, y_l, X_target=x_t, sample_domain=d_l)
    X, d = np.vstack([x_l, x_t]), np.concatenate([d_l, np.full(len(x_t), -1)])
    marked = DANNClassifier(**MULTICLASS).fit(X, np.concatenate([y_l, np.full(len(x_t), -1)]), sample_domain=d)
    skada = DANNClassifier(**MULTICLASS).fit(X, np.concatenate([y_l, y_t]), sample_domain=d)  # target labels unread
    assert same_weights(given.net_, marked.net_) and same_weights(given.net_, skada.net_)
    f = torch.zeros(1, given.net_.num_features)  # the features the discriminator reads (the bottleneck's, under auto)
    assert given.net_.discriminator(f).shape == (1, 3)  # domains 1, 2 and the target
    pooled = DANNClassifier(**MULTICLASS).fit(x_l, y_l, X_target=x_t)  # one labeled domain
    assert pooled.net_.discriminator(f).shape == (1, 2)


def test_sample_weight_reaches_the_classification_loss(three):
    x_l, y_l, _, x_t, _ = three
    only_class_0 = np.where(y_l == 0, 1.0, 0.0)  # class 1 rows count for nothing
    est = DANNClassifier(**{**TINY, "max_steps": 40}).fit(x_l, y_l, X_target=x_t, sample_weight=only_class_0)
    assert (est.predict(x_l) == 0).mean() > 0.9
    plain = DANNClassifier(**{**TINY, "max_steps": 40}).fit(x_l, y_l, X_target=x_t)
    assert (plain.predict(x_l) == 0).mean() < 0.7


def test_stages_name_the_labeled_domains_by_their_sample_domain(three):
    x_l, y_l, d_l, x_t, _ = three
    stages = [
        {"name": "supervised", "fraction": 0.5, "method": {"name": "source_only"}, "classify": {"1": 1.0, "2": 1.0}},
        {"name": "adversarial", "fraction": 0.5, "classify": {"intermediate": 1.0}, "align": ["intermediate"]},
    ]
    config = {**TINY["config"], "data.intermediate": ["2"], "train.stages": stages}
    est = DANNClassifier(**{**TINY, "config": config}).fit(x_l, y_l, X_target=x_t, sample_domain=d_l)
    assert [s.name for s in est.config_.train.stages] == ["supervised", "adversarial"]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (lambda n: np.ones(n - 1), r"sample_weight must have shape \(60,\)"),
        (lambda n: np.where(np.arange(n) == 7, -1.0, 1.0), r"sample_weight, row 7: weight -1 is not allowed"),
        (lambda n: np.where(np.arange(n) < 40, 1.0, 0.0), r"X \(sample_domain=2\): every weight is zero"),
    ],
)
def test_bad_sample_weights_are_refused_naming_the_row(three, weights, message):
    x_l, y_l, d_l, x_t, _ = three
    with pytest.raises(DataError, match=message):
        DANNClassifier(**TINY).fit(x_l, y_l, X_target=x_t, sample_domain=d_l, sample_weight=weights(len(y_l)))
