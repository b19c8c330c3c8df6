import numpy as np
import pytest
from sklearn.base import clone

from dann import DANNClassifier

from .conftest import blobs


def test_clone_get_set_params_and_fit_predict_score():
    est = DANNClassifier(backbone="mlp", max_steps=30, batch_size=16, random_state=3, config={"model.mlp_dims": [8]})
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    twin.set_params(lambda_adv=0.5)
    assert twin.lambda_adv == 0.5 and est.lambda_adv == 1.0
    x_s, y_s = blobs(80, 0.0, 0)
    x_t, y_t = blobs(60, 1.0, 1)
    labels = np.array(["a", "b"])[y_s]  # arbitrary label values are mapped and mapped back
    est.fit(x_s, labels, X_target=x_t)
    proba = est.predict_proba(x_t)
    assert proba.shape == (60, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert set(est.predict(x_t)) <= {"a", "b"}
    assert 0.0 <= est.score(x_t, np.array(["a", "b"])[y_t]) <= 1.0
    again = clone(est).fit(x_s, labels, X_target=x_t)
    assert np.array_equal(again.predict_proba(x_t), proba)  # random_state makes fits repeatable


def test_dann_without_target_data_is_refused_and_source_only_is_allowed():
    x, y = blobs(40, 0.0, 0)
    with pytest.raises(ValueError, match="needs unlabeled target data"):
        DANNClassifier(backbone="mlp", max_steps=2).fit(x, y)
    DANNClassifier(backbone="mlp", method="source_only", max_steps=2, batch_size=8).fit(x, y)


@pytest.mark.parametrize("config", [{"optim.weight_decay": 1e-05}, {"optim.lr": 3e-4, "method.grl_gamma": 1e1}])
def test_config_floats_that_print_in_scientific_notation_are_numbers(config):
    x, y = blobs(40, 0.0, 0)
    x_t, _ = blobs(30, 1.0, 1)
    est = DANNClassifier(backbone="mlp", max_steps=2, batch_size=8, config=config).fit(x, y, X_target=x_t)
    assert est.predict(x_t).shape == (30,)


def test_one_sample_for_a_batchnorm_layer_is_refused_before_training():
    x, y = blobs(40, 0.0, 0)
    est = DANNClassifier(backbone="mlp", method="source_only", batch_size=1, config={"model.batchnorm": True})
    with pytest.raises(ValueError, match=r"train\.batch_size=1 hands the network's BatchNorm layers"):
        est.fit(x, y)


def test_a_single_class_is_refused():
    x, _ = blobs(20, 0.0, 0)
    with pytest.raises(ValueError, match="every source sample has label 0 \\('7'\\); a classifier needs"):
        DANNClassifier(backbone="mlp", method="source_only", max_steps=2, batch_size=8).fit(x, np.full(20, 7))


def test_source_and_target_stored_on_other_scales_are_refused():
    x, y = blobs(40, 0.0, 0)
    pixels = np.abs(x) * 60  # float values up to about 255
    est = DANNClassifier(backbone="mlp", max_steps=2, batch_size=8)
    with pytest.raises(ValueError, match=r"X \(float32, values .*X_target \(uint8, .*\) differ in scale by \d+x"):
        est.fit(pixels, y, X_target=np.clip(pixels, 0, 255).astype(np.uint8))
