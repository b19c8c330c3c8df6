import re
import warnings

import numpy as np
import pytest
import torch

from dann.config import DataConfig
from dann.data import Domain, build_data, load_npz, make_domain_data
from dann.data.loaders import StepBatches, batch_indices, random_invert, random_shift
from dann.errors import DataError, DataWarning


def test_batch_stream_covers_each_pass_once_and_is_a_pure_function_of_the_step():
    n, b = 10, 4
    stream = torch.cat([batch_indices(n, b, s, seed=3) for s in range(5)])  # 20 = two full passes
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, b, 3, seed=3), batch_indices(n, b, 3, seed=3))
    assert not torch.equal(batch_indices(n, b, 3, seed=3), batch_indices(n, b, 3, seed=4))
    assert len(batch_indices(3, 8, 0, seed=0)) == 8  # batches larger than the domain wrap around


def test_random_shift_moves_whole_images_by_uniform_independent_offsets():
    """Each image moves as a whole by (dy, dx), each uniform on {-2, ..., 2} and independent: on 5000 images every
    one of the 25 offsets is drawn near 1/25 of the time, and the lit pixel lands where its offset says."""
    n, side, at = 5000, 9, 4
    x = torch.zeros(n, 2, side, side)
    x[:, :, at, at] = 1.0  # one lit pixel in the centre of both channels: where it lands is the shift
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.all(out.sum((2, 3)) == 1.0)  # moved, never cut: the pixel stays inside
    assert torch.equal(out[:, 0], out[:, 1])  # the channels of an image move together
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1:].T
    offsets = (rows - at + 2) * 5 + (cols - at + 2)  # which of the 25 (dy, dx) each image got
    counts = torch.bincount(offsets, minlength=25).double()
    assert counts.min() > 0  # every offset, including the diagonal corners
    chi2 = ((counts - n / 25) ** 2 / (n / 25)).sum().item()
    assert chi2 < 52.6  # the 99.9% quantile of chi-square with 24 degrees of freedom: uniform, independent offsets
    assert (rows != at).float().mean().item() == pytest.approx(0.8, abs=0.03)  # 4 of the 5 vertical offsets move
    assert StepBatches(Domain(x[:2], None), 2, 0, torch.device("cpu"), augment=True).get(0)[0].shape == (2, 2, 9, 9)


def test_make_domain_data_strips_target_labels_and_splits_source():
    x, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    data = make_domain_data(Domain(x, y), Domain(x[:20], y[:20]), val_fraction=0.2)
    assert data.target_train.y is None
    assert torch.equal(data.target_eval.y, y[:20])  # kept for evaluation only
    assert len(data.source_train) == 40 and len(data.source_val) == 10


def save(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.zeros(3, int)}, "has no array 'x'"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(4, int)}, r"y must have shape \(3,\)"),
        ({"x": np.zeros(3)}, r"x must have shape \(N, D\) or \(N, C, H, W\)"),
        ({"x": np.array([[1.0, np.nan]])}, "NaN or infinite"),
        ({"x": np.array([["a", "b"]])}, "must hold real numbers"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, "integer class indices"),
    ],
)
def test_bad_npz_contents_are_named(tmp_path, arrays, message):
    path = save(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message) as err:
        load_npz(path)
    assert str(tmp_path) in str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match=r"garbage.npz is not a \.npz file"):
        load_npz(garbage)
    garbage.write_bytes(b"PK" + b"not a zip file at all")
    with pytest.raises(DataError, match=r"garbage.npz could not be read as \.npz"):
        load_npz(garbage)


def test_inconsistent_domains_are_refused(tmp_path):
    src = save(tmp_path / "s.npz", x=np.zeros((4, 3)), y=np.array([0, 1, 2, 1]))
    tgt = save(tmp_path / "t.npz", x=np.zeros((4, 5)))
    with pytest.raises(DataError, match=r"t.npz: samples have shape \(5,\) but the source samples have shape \(3,\)"):
        build_data(DataConfig(source=src, target=tgt))
    out_of_range = save(tmp_path / "o.npz", x=np.zeros((2, 3)), y=np.array([0, 7]))
    with pytest.raises(DataError, match=r"o.npz.*labels must lie in \[0, 3\)"):
        build_data(DataConfig(source=src, target=out_of_range))
    negative = save(tmp_path / "n.npz", x=np.zeros((2, 3)), y=np.array([0, -1]))
    with pytest.raises(DataError, match=r"n\.npz: labels must lie in"):
        build_data(DataConfig(source=negative, target=src))
    unlabeled = save(tmp_path / "u.npz", x=np.zeros((2, 3)))
    with pytest.raises(DataError, match="source data needs labels"):
        build_data(DataConfig(source=unlabeled, target=src))


def test_uint8_images_are_scaled_and_class_names_read(tmp_path):
    path = save(
        tmp_path / "img.npz",
        x=np.full((2, 1, 4, 4), 255, np.uint8),
        y=np.array([0, 1]),
        classes=np.array(["cat", "dog"]),
    )
    domain, classes = load_npz(path)
    assert domain.x.dtype == torch.float32 and domain.x.max() == 1.0 and classes == ["cat", "dog"]


def test_embedded_tasks_follow_their_recipes():
    moons = build_data(DataConfig(task="moons"))
    assert moons.input_shape == (2,) and moons.num_classes == 2 and moons.target_train.y is None
    digits = build_data(DataConfig(task="digits"))
    assert digits.input_shape == (3, 28, 28) and digits.num_classes == 10
    n_total = len(digits.source_train) + len(digits.source_val) + len(digits.target_train)
    assert n_total == 1797  # the two halves are disjoint and together are all of load_digits
    src = digits.source_train.x
    assert torch.equal(src[:, 0], src[:, 1]) and src[:, :, :4].abs().max() == 0  # grey, MNIST-like border
    tgt = digits.target_train.x
    assert 0 <= tgt.min() and tgt.max() <= 1 and not torch.equal(tgt[:, 0], tgt[:, 1])  # colour photo blends


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_label_shift_skews_only_the_targets_class_proportions(seed):
    plain = build_data(DataConfig(task="digits", seed=seed))
    shifted = build_data(DataConfig(task="digits_label_shift", seed=seed))
    assert torch.equal(plain.source_train.x, shifted.source_train.x)  # the same balanced source
    assert shifted.target_train.y is None
    counts = torch.bincount(shifted.target_eval.y, minlength=10).float()
    every = torch.bincount(plain.target_eval.y, minlength=10).float()
    share = counts / every  # the share of each class's target digits kept: all for one class, a tenth for another
    assert share.max() == 1.0 and 0.09 < share.min() < 0.12
    assert sorted(share.tolist()) == pytest.approx(sorted(10 ** (-r / 9) for r in range(10)), abs=0.02)
    assert 300 < counts.sum() < 420  # about 370 of the 899 target digits
    x_t = shifted.target_train.x  # the target images are digits' MNIST-M style, a subset of the same recipe
    assert x_t.shape[1:] == (3, 28, 28) and not torch.equal(x_t[:, 0], x_t[:, 1])
    assert torch.equal(build_data(DataConfig(task="digits_label_shift", seed=seed)).target_train.x, x_t)


@pytest.mark.parametrize("task", ["digits_scanner", "digits_inverted"])
def test_digit_shift_tasks_keep_the_source_and_shift_the_other_half(task):
    plain, shifted = build_data(DataConfig(task="digits")), build_data(DataConfig(task=task))
    assert torch.equal(plain.source_train.x, shifted.source_train.x)  # the same source, the same split
    assert torch.equal(plain.target_eval.y, shifted.target_eval.y) and shifted.target_train.y is None
    x_t = shifted.target_train.x
    assert x_t.shape == (899, 3, 28, 28) and 0 <= x_t.min() and x_t.max() <= 1
    border = x_t[:, :, :2].mean().item()  # the digits' empty border: black in the source
    if task == "digits_scanner":  # grey ground, strokes no brighter than 0.75, blurred (fewer sharp steps)
        assert 0.24 < border < 0.26 and x_t.max() <= 0.75 + 1e-6
        assert x_t.diff(dim=3).abs().mean() < plain.source_train.x.diff(dim=3).abs().mean()
    else:  # light tinted ground, dark strokes, colours differ between channels
        assert border > 0.3 and not torch.equal(x_t[:, 0], x_t[:, 1])
        assert x_t[:, :, 12:16, 12:16].mean() < border
    again = build_data(DataConfig(task=task))
    assert torch.equal(again.target_train.x, x_t)  # a pure function of the seed


def test_the_gradual_task_has_a_few_labeled_mid_digits_between_source_and_target():
    plain, gradual = build_data(DataConfig(task="digits")), build_data(DataConfig(task="digits_gradual"))
    source, mid = gradual.domains
    assert (source.name, source.intermediate, mid.name, mid.intermediate) == ("source", False, "mid", True)
    assert torch.equal(torch.cat([source.train.x, source.val.x]).sum(0), torch.cat([plain.source_train.x,
                       plain.source_val.x]).sum(0))  # fmt: skip
    assert torch.bincount(torch.cat([mid.train.y, mid.val.y])).tolist() == [5] * 10
    assert len(gradual.target_train) == 899 - 50 and gradual.target_train.y is None
    x_m, x_t = torch.cat([mid.train.x, mid.val.x]), gradual.target_train.x
    ratio = (x_m[:, :, :2].mean() / x_t[:, :, :2].mean()).item()  # the empty border: the photo alone
    assert 0.3 < ratio < 0.5  # mid's photo at 0.4 of the target's strength: a lighter shift


def test_the_tabular_task_is_a_covariate_shift_of_the_breast_cancer_table():
    data = build_data(DataConfig(task="cancer", val_fraction=0.0))
    from sklearn.datasets import load_breast_cancer

    assert data.input_shape == (30,) and data.classes == ["malignant", "benign"]
    assert len(data.source_train) + len(data.target_train) == len(load_breast_cancer().target)
    x_s, x_t = data.source_train.x, data.target_train.x
    torch.testing.assert_close(x_s.mean(0), torch.zeros(30), atol=1e-5, rtol=0)  # standardized by the source only
    assert x_t[:, 1].mean() < x_s[:, 1].mean() - 0.5  # selected on mean texture: the target has lower values
    assert x_t[:, 0].mean() > x_s[:, 0].mean() + 0.5  # and reads sizes 30 % larger


def test_step_batches_follow_the_index_stream_across_passes():
    domain = Domain(torch.arange(10.0)[:, None], torch.arange(10))
    batches = StepBatches(domain, 4, seed=5, device=torch.device("cpu"), augment=False)
    for step in [0, 1, 2, 3, 7, 2]:  # crossing pass boundaries, and going back
        x, y = batches.get(step)
        assert torch.equal(y, batch_indices(10, 4, step, seed=5)) and torch.equal(x[:, 0].long(), y)


@pytest.mark.parametrize(("side", "max_shift"), [(8, 0), (13, 0), (28, 2), (64, 4)])
def test_array_shifts_scale_with_the_image_side(side, max_shift):
    x = torch.zeros(64, 1, side, side)
    x[:, :, side // 2, side // 2] = 1.0  # one lit pixel in the centre: where it lands is the shift
    batches = StepBatches(Domain(x, torch.zeros(64, dtype=torch.int64)), 64, 0, torch.device("cpu"), augment=True)
    moved, _ = batches.get(0)
    rows, cols = (moved[:, 0] == 1).nonzero()[:, 1:].T
    shifts = torch.cat([rows, cols]) - side // 2
    assert len(rows) == 64 and shifts.abs().max() == max_shift


def rare_digits(tmp_path, counts=(10, 182, 1), classes=None):
    """source.npz: scikit-learn digits, ``counts[d]`` images of digit d in digit order; target.npz: 30 others."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pick = np.concatenate([np.flatnonzero(bunch.target == d)[:n] for d, n in enumerate(counts)])
    names = {} if classes is None else {"classes": np.array(classes)}
    src = save(tmp_path / "source.npz", x=bunch.data[pick].astype(np.float32), y=bunch.target[pick], **names)
    tgt = save(tmp_path / "target.npz", x=bunch.data[-30:].astype(np.float32))
    return src, tgt


def test_a_class_with_one_image_stays_in_training(tmp_path):
    src, tgt = rare_digits(tmp_path)  # a plain random split with data.seed=10 held the only '2' out
    data = build_data(DataConfig(source=src, target=tgt, seed=10, val_fraction=0.1))
    assert torch.bincount(data.source_train.y).tolist() == [9, 164, 1]
    assert torch.bincount(data.source_val.y, minlength=3).tolist() == [1, 18, 0]


LABELINGS = [  # class sizes: rare classes, singletons, one large class, many classes
    [10, 182, 1],
    [1, 1, 1, 50],
    [2, 2, 2, 2, 2],
    [3, 1, 40, 7, 1, 1, 9],
    [1, 100],
    [25, 25],
]


@pytest.mark.parametrize("sizes", LABELINGS)
@pytest.mark.parametrize("val_fraction", [0.1, 0.3, 0.6, 0.9])
@pytest.mark.parametrize("seed", [0, 10, 123])
def test_the_held_out_split_is_stratified_and_every_class_keeps_a_training_sample(sizes, val_fraction, seed):
    from dann.data.domains import stratified_split

    y = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 1))]
    train, val = stratified_split(y, val_fraction, seed)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(len(y)))  # disjoint, and together all samples
    assert torch.equal(torch.unique(y[train]), torch.arange(len(sizes)))  # every class is trained on
    held = torch.bincount(y[val], minlength=len(sizes))
    room = torch.tensor(sizes) - 1
    assert len(val) == min(round(val_fraction * len(y)), int(room.sum()))
    assert torch.all(held <= room)
    shares = val_fraction * torch.tensor(sizes, dtype=torch.float64)
    if torch.all(shares.ceil() <= room):  # no class is capped: each holds out its share, rounded up or down
        assert torch.all((held - shares).abs() < 1)
    again = stratified_split(y, val_fraction, seed)
    assert torch.equal(again[0], train) and torch.equal(again[1], val)


@pytest.mark.parametrize(
    ("y", "classes", "named"),
    [
        ([0, 2, 0, 2, 2], None, "label 1 (1 of 3 classes)"),
        ([0, 1, 0, 4, 4, 1], None, "label 2, 3 (2 of 5 classes)"),
        ([0, 1, 1], ["cat", "dog", "eel"], "label 2 ('eel') (1 of 3 classes)"),
    ],
)
def test_a_class_index_without_a_source_sample_is_a_warning_naming_it(tmp_path, y, classes, named):
    names = {} if classes is None else {"classes": np.array(classes)}
    src = save(tmp_path / "s.npz", x=np.random.default_rng(0).normal(size=(len(y), 3)), y=np.array(y), **names)
    with pytest.warns(DataWarning, match=rf"s\.npz: no source sample has {re.escape(named)}; the model gets an"):
        data = build_data(DataConfig(source=src, target=src, val_fraction=0.0))
    assert data.num_classes == len(classes or range(max(y) + 1))


@pytest.mark.parametrize(
    ("y", "classes", "label"),
    [([0, 0, 0], None, "0"), ([1, 1], ["a", "b"], "1 ('b')"), ([0] * 5, ["only"], "0 ('only')")],
)
def test_a_single_class_source_is_an_error(tmp_path, y, classes, label):
    names = {} if classes is None else {"classes": np.array(classes)}
    src = save(tmp_path / "s.npz", x=np.ones((len(y), 3)), y=np.array(y), **names)
    message = rf"s\.npz: every source sample has label {re.escape(label)}; a classifier needs labeled samples of at"
    with pytest.raises(DataError, match=message):
        build_data(DataConfig(source=src, target=src))


def test_no_held_out_sample_when_every_class_has_one_is_a_warning(tmp_path):
    src = save(tmp_path / "s.npz", x=np.ones((3, 2)), y=np.array([0, 1, 2]))
    with pytest.warns(DataWarning, match=r"data.val_fraction=0.5 holds out no source sample for validation"):
        data = build_data(DataConfig(source=src, target=src, val_fraction=0.5))
    assert data.source_val is None and len(data.source_train) == 3


def pixels(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 64) scikit-learn digits as 0-255 pixel values (float64) and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pick = np.random.default_rng(seed).permutation(len(bunch.target))[:n]
    return bunch.data[pick] * 255 / 16, bunch.target[pick]


def scaled(kind: str, x: np.ndarray) -> np.ndarray:
    """The same 0-255 pixel values stored another way."""
    stored = {
        "uint8": lambda: np.rint(x).astype(np.uint8),
        "float32 0-255": lambda: x.astype(np.float32),
        "int64 0-255": lambda: np.rint(x).astype(np.int64),
        "float32 0-1": lambda: (x / 255).astype(np.float32),
        "float64 0-1000": lambda: x / 0.255,
        "float32 0-20": lambda: (x / 12.75).astype(np.float32),
        "float16 0-1": lambda: (x / 255).astype(np.float16),
    }
    return stored[kind]()


@pytest.mark.parametrize(
    ("source", "target", "target_eval"),
    [
        ("float32 0-255", "uint8", None),
        ("uint8", "float32 0-255", None),
        ("int64 0-255", "uint8", None),
        ("float32 0-1", "float64 0-1000", None),
        ("uint8", "uint8", "float32 0-255"),
        ("float32 0-255", "float32 0-255", "float32 0-1"),
    ],
)
def test_domains_orders_of_magnitude_apart_are_refused_naming_files_dtypes_and_ranges(
    tmp_path, source, target, target_eval
):
    (x_s, y_s), (x_t, y_t) = pixels(60, 0), pixels(40, 1)
    files = [save(tmp_path / "s.npz", x=scaled(source, x_s), y=y_s), save(tmp_path / "t.npz", x=scaled(target, x_t))]
    if target_eval:
        files.append(save(tmp_path / "e.npz", x=scaled(target_eval, x_t), y=y_t))
    odd = files[2] if target_eval else files[1]
    kinds = {files[0]: source, files[1]: target} | ({files[2]: target_eval} if target_eval else {})
    with pytest.raises(DataError, match=r"differ in scale by \d+x \(mean \|x\|") as error:
        build_data(DataConfig(source=files[0], target=files[1], target_eval=files[2] if target_eval else ""))
    message = str(error.value)
    assert f"{odd} ({kinds[odd].split()[0]}, values " in message
    assert "uint8 arrays are read as value/255, every other dtype as stored" in message
    if "uint8" in kinds.values():
        assert "(uint8, values 0 to 255, read as 0 to 1)" in message


def test_domains_an_order_of_magnitude_apart_give_a_warning(tmp_path):
    (x_s, y_s), (x_t, _) = pixels(60, 0), pixels(40, 1)
    src = save(tmp_path / "s.npz", x=scaled("float32 0-1", x_s), y=y_s)
    tgt = save(tmp_path / "t.npz", x=scaled("float32 0-20", x_t))
    with pytest.warns(DataWarning, match=r"s\.npz \(float32, values 0 to 1\) and .*t\.npz \(float32, values 0 to 20\)"):
        build_data(DataConfig(source=src, target=tgt))


@pytest.mark.parametrize(
    ("source", "target"),
    [("uint8", "uint8"), ("float32 0-1", "uint8"), ("float16 0-1", "float32 0-1"), ("float32 0-255", "int64 0-255")],
)
def test_domains_on_one_scale_pass_without_a_word(tmp_path, source, target):
    (x_s, y_s), (x_t, _) = pixels(60, 0), pixels(40, 1)
    src, tgt = save(tmp_path / "s.npz", x=scaled(source, x_s), y=y_s), save(tmp_path / "t.npz", x=scaled(target, x_t))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        build_data(DataConfig(source=src, target=tgt))
    standardized = save(tmp_path / "z.npz", x=np.random.default_rng(0).normal(size=(40, 64)) + 1.5)  # a shift
    build_data(
        DataConfig(
            source=save(tmp_path / "n.npz", x=np.random.default_rng(1).normal(size=(40, 64)), y=y_s[:40]),
            target=standardized,
        )
    )
    build_data(DataConfig(source=src, target=save(tmp_path / "zero.npz", x=np.zeros((5, 64)))))  # nothing to compare


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_refuse_data_on_another_scale_than_training(tiny_cfg, tmp_path, command):
    import dann
    from dann.config import replace

    (x_s, y_s), (x_t, y_t) = pixels(60, 0), pixels(40, 1)
    src = save(tmp_path / "s.npz", x=scaled("float32 0-255", x_s), y=y_s)
    tgt = save(tmp_path / "t.npz", x=scaled("float32 0-255", x_t))
    cfg = replace(tiny_cfg, data={"source": src, "target": tgt}, train={"steps": 2, "eval_every": 2})
    dann.fit(cfg, tmp_path / "run")
    same = save(tmp_path / "same.npz", x=scaled("int64 0-255", x_t), y=y_t)
    other = save(tmp_path / "d.npz", x=scaled("uint8", x_t), y=y_t)
    run = dann.api.evaluate if command == "evaluate" else lambda r, d: dann.api.predict(r, d, tmp_path / f"{d}.csv")
    run(tmp_path / "run", same)
    message = (
        r"d\.npz \(uint8, values 0 to 255, read as 0 to 1\) differs in scale by \d+x from the run's training data, "
        r".*s\.npz \(float32, values 0 to 255\)"
    )
    with pytest.raises(DataError, match=message):
        run(tmp_path / "run", other)


def test_array_images_are_inverted_with_their_own_range_drawn_per_step_and_row():

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 5, 5) * 0.5 + 0.25  # each image within [0.25, 0.75]
    flipped = random_invert(x, 1.0, g)
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(flipped, lo + hi - x) and torch.allclose(flipped.amin((1, 2, 3)), x.amin((1, 2, 3)))
    assert torch.equal(random_invert(x, 0.0, g), x)
    whole = random_invert(x, 0.5, torch.Generator().manual_seed(3))
    halves = [random_invert(x[a:b], 0.5, torch.Generator().manual_seed(3), (a, b, 6)) for a, b in ((0, 3), (3, 6))]
    assert torch.equal(torch.cat(halves), whole)  # a process's rows get what they get in the whole batch

    domain = Domain(torch.rand(40, 1, 28, 28), torch.arange(40) % 2)
    plain = StepBatches(domain, 8, 0, torch.device("cpu"), augment=True)
    off = StepBatches(domain, 8, 0, torch.device("cpu"), augment=True, invert=0.0)
    on = StepBatches(domain, 8, 0, torch.device("cpu"), augment=True, invert=0.5)
    unaugmented = StepBatches(domain, 8, 0, torch.device("cpu"), augment=False, invert=0.5)
    inverted = 0
    for step in range(5):
        base = plain.get(step)[0]
        assert torch.equal(off.get(step)[0], base)  # no inversion: the stream is the one before the option
        x_on = on.get(step)[0]
        assert torch.equal(x_on, on.get(step)[0])  # a function of (seed, step): resume is exact
        mirrored = base.amin((1, 2, 3), keepdim=True) + base.amax((1, 2, 3), keepdim=True) - base
        same = (x_on == base).flatten(1).all(1)
        flipped = torch.isclose(x_on, mirrored).flatten(1).all(1)
        assert bool((same | flipped).all())
        inverted += int(flipped.sum())
        assert torch.equal(unaugmented.get(step)[0], domain.x[unaugmented._indices(step)])  # evaluation-like: never
    assert 5 < inverted < 35
