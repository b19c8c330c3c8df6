import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import dann
from dann import DANNClassifier
from dann.config import load_config
from dann.data import build_task
from dann.errors import ConfigError, DataError, DataWarning
from dann.evaluation.metrics import embed
from dann.selection.validators import VALIDATORS, ValidationInputs, bnm
from dann.sklearn import EXPECTED_FAILED_CHECKS, SourceKFold, make_validator_scorer

from .conftest import blobs

ROOT = Path(__file__).parents[1]
README, ARRAYS_PAGE = ROOT / "README.md", ROOT / "docs" / "arrays.md"
TINY = {
    "backbone": "mlp",
    "method": "dann",  # adapts (the recommended default is source-only: see docs/benchmarks.md)
    "max_steps": 20,
    "batch_size": 16,
    "device": "cpu",
    "config": {"model.mlp_dims": [8], "model.discriminator_dims": [8]},
}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def domains():
    """(x_s, y_s, x_t): 60 labeled source rows and 40 unlabeled target rows, shifted."""
    x_s, y_s = blobs(60, 0.0, 0)
    x_t, _ = blobs(40, 1.5, 1)
    return x_s, y_s, x_t


@pytest.fixture(scope="module")
def fitted(domains):
    x_s, y_s, x_t = domains
    return DANNClassifier(**TINY).fit(x_s, y_s, X_target=x_t)


def stacked(x_s: np.ndarray, y_s: np.ndarray, x_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One array of source rows then target rows; the target rows labeled -1."""
    return np.vstack([x_s, x_t]), np.concatenate([y_s, np.full(len(x_t), -1)])


@pytest.mark.filterwarnings("ignore::dann.errors.DataWarning")  # fit(X, y) without target rows warns every time
def test_passes_scikit_learns_estimator_checks():
    est = DANNClassifier(backbone="mlp", max_steps=20, batch_size=16, device="cpu")
    results = check_estimator(est, expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None, on_skip=None)
    failed = [f"{r['check_name']}: {r['exception']!r}" for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert {r["check_name"] for r in results if r["status"] == "xfail"} == set(EXPECTED_FAILED_CHECKS)


def test_the_three_target_conventions_train_the_same_weights(domains):
    x_s, y_s, x_t = domains
    given = DANNClassifier(**TINY).fit(x_s, y_s, X_target=x_t)
    X, y = stacked(x_s, y_s, x_t)
    marked = DANNClassifier(**TINY).fit(X, y)  # scikit-learn's semi-supervised convention
    y_t = np.random.default_rng(0).integers(0, 2, len(x_t))  # target labels, which must not be read
    domain = np.concatenate([np.full(len(x_s), 1), np.full(len(x_t), -2)])
    skada = DANNClassifier(**TINY).fit(X, np.concatenate([y_s, y_t]), sample_domain=domain)
    assert same_weights(given.net_, marked.net_) and same_weights(given.net_, skada.net_)
    assert given.config_.method.name == "dann"
    other = DANNClassifier(**TINY).fit(x_s, y_s, X_target=x_t + 1.0)
    assert not same_weights(given.net_, other.net_)  # the target rows do shape the weights


def test_no_target_rows_trains_the_source_only_model_and_warns_once(domains):
    x_s, y_s, _ = domains
    with pytest.warns(DataWarning, match="no adaptation happened") as caught:
        est = DANNClassifier(**TINY).fit(x_s, y_s)
    assert len(caught) == 1 and est.config_.method.name == "source_only"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asking for the source-only model is no surprise
        control = DANNClassifier(**{**TINY, "method": "source_only"}).fit(x_s, y_s)
    assert same_weights(est.net_, control.net_)


@pytest.mark.parametrize(
    "case, match",
    [
        ("two targets", "several target domains"),
        ("domain 0", "0 is no domain"),
        ("short domain", "sample_domain must have shape \\(100,\\)"),
        ("domain and X_target", "one way: a negative sample_domain or X_target"),
        ("-1 rows and X_target", "one way: rows with y == -1 or X_target"),
        ("unlabeled source row", "1 source row\\(s\\) \\(sample_domain > 0\\) have y == -1"),
        ("no source", "no labeled source rows"),
    ],
)
def test_ambiguous_or_unsupported_domains_are_refused(domains, case, match):
    x_s, y_s, x_t = domains
    X, y = stacked(x_s, y_s, x_t)
    domain = np.concatenate([np.full(len(x_s), 1), np.full(len(x_t), -1)])
    kwargs = {
        "two targets": {"sample_domain": np.where(np.arange(len(y)) >= 90, -2, domain)},
        "domain 0": {"sample_domain": np.where(np.arange(len(y)) == 0, 0, domain)},
        "short domain": {"sample_domain": domain[:-1]},
        "domain and X_target": {"sample_domain": domain, "X_target": x_t},
        "-1 rows and X_target": {"X_target": x_t},
        "unlabeled source row": {"sample_domain": domain, "y": np.where(np.arange(len(y)) == 0, -1, y)},
        "no source": {"y": np.full(len(y), -1)},
    }[case]
    y = kwargs.pop("y", y)
    with pytest.raises(DataError, match=match):
        DANNClassifier(**TINY).fit(X, y, **kwargs)


def test_labels_of_any_type_and_the_string_marker(domains):
    x_s, y_s, x_t = domains
    names = np.array(["cat", "dog"])[y_s]
    reference = DANNClassifier(**TINY).fit(x_s, names, X_target=x_t)
    assert list(reference.classes_) == ["cat", "dog"]
    assert set(reference.predict(x_t)) <= {"cat", "dog"}
    as_text = np.concatenate([names, np.full(len(x_t), "-1")])
    as_object = np.concatenate([names.astype(object), np.full(len(x_t), -1, dtype=object)])
    for y in (as_text, as_object):
        est = DANNClassifier(**TINY).fit(np.vstack([x_s, x_t]), y)
        assert list(est.classes_) == ["cat", "dog"] and same_weights(est.net_, reference.net_)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba", "decision_function", "transform"])
def test_methods_before_fit_raise_not_fitted(method):
    with pytest.raises(NotFittedError):
        getattr(DANNClassifier(), method)(np.zeros((3, 4), np.float32))


def test_transform_gives_the_adapted_features(fitted, domains):
    x_t = domains[2]
    f = fitted.transform(x_t)
    assert f.shape == (len(x_t), fitted.net_.num_features) and f.dtype == np.float32
    expected, _, _ = embed(fitted.net_, torch.from_numpy(x_t))
    assert np.array_equal(f, expected.numpy())
    assert len(fitted.get_feature_names_out()) == f.shape[1]


def test_predict_proba_decision_function_and_score_as_scikit_learn_defines_them(fitted, domains):
    x_s, y_s, x_t = domains
    proba = fitted.predict_proba(x_t)
    assert proba.shape == (len(x_t), 2) and proba.dtype == np.float64 and np.allclose(proba.sum(1), 1)
    assert np.allclose(np.exp(fitted.predict_log_proba(x_t)), proba)
    d = fitted.decision_function(x_t)  # two classes: (N,), positive for classes_[1]
    assert d.shape == (len(x_t),) and np.array_equal(fitted.predict(x_t), fitted.classes_[(d > 0).astype(int)])
    assert fitted.score(x_s, y_s) == np.mean(fitted.predict(x_s) == y_s)


def test_wrong_inputs_at_predict_are_value_errors(fitted):
    with pytest.raises(ValueError, match="X has 3 features, but DANNClassifier is expecting 4"):
        fitted.predict(np.zeros((2, 3)))
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 4, 4), dtype=np.uint8)
    est = DANNClassifier(**TINY).fit(images, np.arange(40) % 2, X_target=images[:10])
    with pytest.raises(ValueError, match=re.escape("samples of shape (1, 4, 5), but DANNClassifier was fitted on")):
        est.predict(np.zeros((2, 1, 4, 5), np.uint8))


def test_pickle_and_clone_round_trip(fitted, domains):
    x_s, y_s, x_t = domains
    back = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(back.predict_proba(x_t), fitted.predict_proba(x_t))
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params() and not hasattr(twin, "net_")
    twin.set_params(lambda_adv=0.5)
    assert twin.lambda_adv == 0.5 and fitted.lambda_adv is None  # None (the default): the method's reference weight
    again = clone(fitted).fit(x_s, y_s, X_target=x_t)
    assert same_weights(again.net_, fitted.net_)  # random_state makes fits repeatable


def test_pipeline_adapts_to_the_rows_labeled_minus_one(domains):
    x_s, y_s, x_t = domains
    X, y = stacked(x_s, y_s, x_t)
    pipe = Pipeline([("scale", StandardScaler()), ("dann", DANNClassifier(**TINY))]).fit(X, y)
    scaler = StandardScaler().fit(X)
    direct = DANNClassifier(**TINY).fit(scaler.transform(x_s), y_s, X_target=scaler.transform(x_t))
    assert pipe[-1].config_.method.name == "dann" and same_weights(pipe[-1].net_, direct.net_)
    assert np.array_equal(pipe.predict(x_t), direct.predict(scaler.transform(x_t)))


TARGET_ONLY = set(VALIDATORS.names()) - {"source_acc", "dev"}  # these two also read the fold's labeled source rows


@pytest.mark.parametrize("name", VALIDATORS.names())
def test_validator_scorers_read_the_unlabeled_target_rows_of_the_fold(fitted, domains, name):
    x_s, y_s, x_t = domains
    scorer = make_validator_scorer(name)
    score = scorer(fitted, *stacked(x_s[:30], y_s[:30], x_t))
    assert np.isfinite(score)
    if name in TARGET_ONLY:  # other source rows in the fold change nothing
        assert scorer(fitted, *stacked(x_s[30:], y_s[30:], x_t)) == score
    else:
        with pytest.raises(ValueError, match="needs labeled source rows"):
            scorer(fitted, x_t, np.full(len(x_t), -1))
    with pytest.raises(ValueError, match="no target rows"):
        scorer(fitted, x_s, y_s)


def test_scorers_equal_what_the_estimators_public_outputs_say(fitted, domains):
    """Computed without the validator machinery: ``source_acc`` is scikit-learn's accuracy on the fold's source
    rows, ``entropy`` minus the mean entropy of ``predict_proba`` on its target rows."""
    x_s, y_s, x_t = domains
    X, y = stacked(x_s[:30], y_s[:30], x_t)
    assert make_validator_scorer("source_acc")(fitted, X, y) == pytest.approx(fitted.score(x_s[:30], y_s[:30]))
    p = fitted.predict_proba(x_t)
    expected = np.mean(np.sum(p * np.log(np.clip(p, 1e-12, None)), axis=1))
    assert make_validator_scorer("entropy")(fitted, X, y) == pytest.approx(expected, rel=1e-5)


def test_a_scorer_is_its_validator_on_the_target_rows(fitted, domains):
    x_s, y_s, x_t = domains
    f_t, logits_t, _ = embed(fitted.net_, torch.from_numpy(x_t))
    expected = bnm(ValidationInputs(f_t, None, None, None, f_t, logits_t))
    assert make_validator_scorer("bnm")(fitted, *stacked(x_s, y_s, x_t)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="unknown validator 'nope'; valid validators: "):
        make_validator_scorer("nope")


def test_source_kfold_keeps_every_target_row_in_every_fold():
    y = np.concatenate([np.tile([0, 1], 10), np.full(7, -1)])
    target, source = np.flatnonzero(y == -1), np.flatnonzero(y != -1)
    splitter = SourceKFold(4)
    folds = list(splitter.split(np.zeros((len(y), 1)), y))
    assert len(folds) == splitter.get_n_splits() == 4
    for train, test in folds:
        assert set(target) <= set(train) and set(target) <= set(test)
        assert not (set(train) & set(test)) - set(target)
    assert sorted(i for _, test in folds for i in test if y[i] != -1) == list(source)  # the source is partitioned
    with pytest.raises(ValueError, match="no target rows"):
        next(SourceKFold(2).split(np.zeros((4, 1)), np.array([0, 1, 0, 1])))


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


@pytest.fixture(scope="module")
def moons_arrays() -> dict[str, np.ndarray]:
    """The names the documented examples use, bound to the moons task."""
    moons = build_task("moons", val_fraction=0.0)
    return {
        "X_source": moons.source_train.x.numpy(),
        "y_source": moons.source_train.y.numpy(),
        "X_target": moons.target_train.x.numpy(),
        "X_test": moons.target_eval.x.numpy()[:200],
        "y_test": moons.target_eval.y.numpy()[:200],
    }


def run_example(code: str, filename: str, arrays: dict[str, np.ndarray], fits: int) -> dict:
    """Execute a documented example with the arrays bound, at a few steps (the calls, not accuracy); its names."""
    code, n = re.subn(r"max_steps=\d+", "max_steps=20", code)
    assert n == fits
    names = dict(arrays)
    exec(compile(code, filename, "exec"), names)
    return names


def test_the_docs_examples_run_a_pipeline_and_a_grid_search_on_moons(moons_arrays):
    section = ARRAYS_PAGE.read_text().split("## scikit-learn: `DANNClassifier`")[1].split("\n## ")[0]
    blocks = python_blocks(section)
    assert len(blocks) == 2
    names = run_example("\n".join(blocks), "docs/arrays.md", moons_arrays, fits=2)
    search = names["search"]
    assert search.best_params_["dann__lambda_adv"] in (0.1, 1.0) and len(search.cv_results_["params"]) == 2
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_[-1].config_.method.name == "dann"
    assert names["features"].shape == (len(moons_arrays["X_target"]), names["clf"].net_.num_features)


def test_the_readme_example_runs(moons_arrays, capsys):
    (code,) = python_blocks(README.read_text())
    names = run_example(code, "README.md", moons_arrays, fits=1)
    clf, n_target = names["clf"], len(moons_arrays["X_target"])
    assert clf.config_.method.name == "dann"
    assert names["y_pred"].shape == (n_target,) and set(names["y_pred"]) <= set(clf.classes_)
    assert names["features"].shape == (n_target, clf.net_.num_features)
    assert 0.0 <= float(capsys.readouterr().out) <= 1.0  # the printed score


def test_defaults_are_the_clis_for_the_same_data(npz_files):
    mine, cli = DANNClassifier()._config().to_dict(), load_config().to_dict()
    differ = {f"{s}.{k}" for s in cli for k in cli[s] if mine[s][k] != cli[s][k]}
    assert differ <= {"data.val_fraction", "train.eval_every", "train.progress"}  # as the docstring says
    values = {
        "data": {"source": str(npz_files["source"]), "target": str(npz_files["target"]), "val_fraction": 0.0},
        "model": {"backbone": "mlp", "mlp_dims": [8]},
        "train": {"steps": 10, "batch_size": 16, "seed": 2, "device": "cpu", "progress": False},
    }
    run = dann.fit(load_config(values=values))
    source, target = np.load(npz_files["source"]), np.load(npz_files["target"])
    params = {"max_steps": 10, "batch_size": 16, "random_state": 2, "device": "cpu"}
    est = DANNClassifier("mlp", **params, config={"model.mlp_dims": [8]})
    assert same_weights(est.fit(source["x"], source["y"], X_target=target["x"]).net_, run.net)


def test_verbose_shows_the_progress_bar(domains, capsys):
    x_s, y_s, x_t = domains
    DANNClassifier(**TINY, verbose=True).fit(x_s, y_s, X_target=x_t)
    assert "20/20" in capsys.readouterr().err
    DANNClassifier(**TINY).fit(x_s, y_s, X_target=x_t)
    assert capsys.readouterr().err == ""


def test_config_takes_typed_values_and_the_method_is_checked_at_fit(domains):
    cfg = DANNClassifier(max_steps=np.int64(7), config={"model.mlp_dims": [8], "optim.name": "adam"})._config()
    assert cfg.train.steps == 7 and cfg.model.mlp_dims == (8,) and cfg.optim.name == "adam"
    with pytest.raises(ConfigError, match=re.escape("model.mlp_dims must be a list")):
        DANNClassifier(config={"model.mlp_dims": "[8]"})._config()  # a value, never text to parse
    with pytest.raises(ConfigError, match=re.escape("'train.steps' is the parameter max_steps=")):
        DANNClassifier(config={"train.steps": 5})._config()
    with pytest.raises(ConfigError, match=re.escape("must look like section.key")):
        DANNClassifier(config={"steps": 5})._config()
    with pytest.raises(ConfigError, match=re.escape("config={'method.uratio': 3}")):  # options go through config
        DANNClassifier(method={"name": "adamatch", "uratio": 3})._config()
    assert DANNClassifier(method="adamatch", config={"method.uratio": 3})._config().method.uratio == 3
    est = DANNClassifier(**{**TINY, "method": "nope"})  # constructing never checks: scikit-learn's rule
    with pytest.raises(ConfigError, match="unknown method 'nope'; valid methods: "):
        est.fit(*domains[:2], X_target=domains[2])


@pytest.mark.parametrize("config", [{"optim.weight_decay": 1e-05}, {"optim.momentum": 9e-1, "method.grl_gamma": 1e1}])
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
    with pytest.raises(ValueError, match=r"the labeled rows hold only one class \(7\): 2 classes are needed"):
        DANNClassifier(backbone="mlp", method="source_only", max_steps=2, batch_size=8).fit(x, np.full(20, 7))


def test_source_and_target_stored_on_other_scales_are_refused():
    x, y = blobs(40, 0.0, 0)
    pixels = np.abs(x) * 60  # float values up to about 255
    est = DANNClassifier(backbone="mlp", max_steps=2, batch_size=8)
    with pytest.raises(ValueError, match=r"X \(float32, values .*X_target \(uint8, .*\) differ in scale by \d+x"):
        est.fit(pixels, y, X_target=np.clip(pixels, 0, 255).astype(np.uint8))
