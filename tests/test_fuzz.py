"""Property-based tests: whatever text, arrays or arguments come in, only the project's own errors come out (or
argparse's usage exit), never a traceback from deep inside. Example counts are modest so the file runs in
seconds (``DANN_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py`` hunts longer); hypothesis keeps the failing
examples it finds in .hypothesis/ and replays them first."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dann.cli import main
from dann.config import Config, load_config, parse_override, replace
from dann.data import build_data, load_npz
from dann.errors import ConfigError, DannError, DataError
from dann.training.trainer import Trainer

from .conftest import blobs

EXAMPLES = int(os.environ.get("DANN_FUZZ_EXAMPLES", 60))  # raise it for a longer hunt
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SECTIONS = {name: list(keys) for name, keys in Config().to_dict().items()}
KEYS = [f"{section}.{key}" for section, keys in SECTIONS.items() for key in keys]
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)  # any text argv or a file could hold
NUMBERS = st.one_of(st.integers(-(10**20), 10**20), st.floats(allow_nan=True, allow_infinity=True))
YAML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT), lambda inner: st.lists(inner, max_size=3), max_leaves=5
)


# --- config: overrides, YAML files -------------------------------------------------------------------------------


@FAST
@given(TEXT)
def test_parse_override_only_raises_config_errors(text):
    try:
        section, key, _ = parse_override(text)
    except ConfigError:
        return
    assert section and key and "=" in text


@FAST
@given(st.one_of(st.sampled_from(KEYS), TEXT), st.one_of(TEXT, YAML_VALUES.map(yaml.safe_dump)))
def test_overrides_give_a_config_or_a_config_error(key, value):
    try:
        cfg = load_config(overrides=[f"{key}={value}"])
    except ConfigError:
        return
    assert isinstance(cfg, Config)


@FAST
@given(
    st.one_of(
        TEXT,
        st.dictionaries(
            st.one_of(st.sampled_from(list(SECTIONS)), TEXT),
            st.one_of(
                YAML_VALUES,
                st.dictionaries(
                    st.one_of(st.sampled_from(KEYS).map(lambda k: k.split(".")[1]), TEXT), YAML_VALUES, max_size=4
                ),
            ),
            max_size=4,
        ).map(yaml.safe_dump),
    )
)
def test_any_yaml_file_gives_a_config_or_a_config_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        try:
            cfg = load_config(str(path))
        except ConfigError:
            return
    assert isinstance(cfg, Config)


# --- .npz files ----------------------------------------------------------------------------------------------------

ARRAYS = hnp.arrays(
    dtype=st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(), hnp.unicode_string_dtypes()),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4),
)
NPZ_CONTENTS = st.dictionaries(st.sampled_from(["x", "y", "classes", "other"]), ARRAYS, max_size=4)


def check_domain(domain, classes) -> None:
    """What load_npz promises about anything it accepts."""
    assert domain.x.dtype.is_floating_point and domain.x.ndim in (2, 4) and bool(domain.x.isfinite().all())
    assert domain.y is None or (domain.y.dtype.is_signed and domain.y.shape == (len(domain.x),))
    assert classes is None or (classes and all(isinstance(c, str) for c in classes))


@FAST
@given(NPZ_CONTENTS)
def test_any_npz_gives_a_domain_or_a_data_error(arrays):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        np.savez(path, **arrays)
        try:
            check_domain(*load_npz(path))
        except DataError:
            return


@FAST
@given(st.binary(max_size=200), st.sampled_from([b"", b"PK", b"PK\x03\x04", b"\x93NUMPY"]))
def test_any_bytes_give_a_domain_or_a_data_error(data, prefix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        path.write_bytes(prefix + data)
        with pytest.raises(DataError):
            load_npz(path)


@FAST
@given(NPZ_CONTENTS, st.sampled_from(["good", "bad"]))
def test_any_pair_of_npz_files_gives_data_or_a_clear_error(arrays, which):
    """Files that load on their own must also be checked against each other (shapes, labels, classes)."""
    x, y = blobs(10, 0.0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        good, bad = Path(tmp) / "good.npz", Path(tmp) / "bad.npz"
        np.savez(good, x=x, y=y)
        np.savez(bad, **arrays)
        source, target = (good, bad) if which == "good" else (bad, good)
        try:
            data = build_data(load_config(values={"data": {"source": str(source), "target": str(target)}}).data)
        except DannError:
            return
    assert len(data.source_train) > 0 and data.num_classes > int(data.source_train.y.max())


# --- the command line -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Good inputs the fuzzed command lines may point at: .npz files and a finished run."""
    tmp = tmp_path_factory.mktemp("fuzz")
    x_s, y_s = blobs(30, 0.0, 0)
    x_t, _ = blobs(20, 1.5, 1)
    np.savez(tmp / "s.npz", x=x_s, y=y_s)
    np.savez(tmp / "t.npz", x=x_t)
    run = tmp / "run"
    argv = ["train", "--source", str(tmp / "s.npz"), "--target", str(tmp / "t.npz"), "--out", str(run), "--quiet"]
    assert main([*argv, "--backbone", "mlp", "--steps", "2"]) == 0
    return {"source": str(tmp / "s.npz"), "target": str(tmp / "t.npz"), "run": str(run), "tmp": str(tmp)}


SMALL = st.one_of(
    TEXT,
    st.integers(-3, 40).map(str),
    st.floats(-2, 2).map(str),
    st.sampled_from(["true", "false", "null", "[8]", "[]", "[0]", ".nan", "-.inf", "mlp", "lenet", "skip", "cpu"]),
    st.sampled_from(["cuda", "cuda:7", "mps", "meta", "xpu", "cpu:1", "moons", "digits", "dann", "source_only"]),
)
PATHS = st.sampled_from(["source", "target", "run", "missing", "tmp"])
TRAIN_FLAGS = ["--config", "--task", "--source", "--target", "--target-eval", "--backbone", "--method", "--steps"]
TRAIN_FLAGS += ["--seed", "--device", "--set", "--set", "--set", "--out", "--resume", "--overwrite", "--quiet"]


FLAGS = {
    "train": TRAIN_FLAGS,
    "evaluate": ["--run", "--data", "--json"],
    "predict": ["--run", "--data", "--out", "--overwrite"],
}


def valid_args(command: str, files: dict[str, str], out: Path) -> list[str]:
    """A command line that works, which the drawn flags then change (the last occurrence of a flag wins)."""
    if command == "train":
        return ["--source", files["source"], "--target", files["target"], "--out", str(out), "--backbone", "mlp"]
    if command == "evaluate":
        return ["--run", files["run"], "--data", files["source"]]
    return ["--run", files["run"], "--data", files["target"], "--out", str(out.with_suffix(".csv"))]


@st.composite
def argv(draw, files: dict[str, str]) -> list[str]:
    """A command line from dann's own vocabulary: mostly a working one with a few flags changed to good paths,
    small values or any text, so that the run gets past argparse into loading, building and training."""
    command = draw(st.sampled_from(["train", "evaluate", "predict", "trian", ""]))
    out = Path(tempfile.mkdtemp(dir=files["tmp"])) / "o"
    args = [command] if command else []
    if command in FLAGS and draw(st.integers(0, 4)):
        args += valid_args(command, files, out)
    for flag in draw(st.lists(st.sampled_from(FLAGS.get(command, ["--help", "-x"])), max_size=5)):
        if flag in ("--resume", "--overwrite", "--quiet", "--json", "--help"):
            args.append(flag)
        elif flag == "--set":
            args += [flag, f"{draw(st.one_of(st.sampled_from(KEYS), TEXT))}={draw(SMALL)}"]
        elif flag in ("--source", "--target", "--target-eval", "--run", "--data", "--config"):
            args += [flag, files.get(draw(PATHS), "missing.npz") if draw(st.booleans()) else draw(TEXT)]
        elif flag == "--out":
            args += [flag, str(out)]
        else:
            args += [flag, draw(SMALL)]
    return args


@pytest.fixture
def one_step(monkeypatch):
    """Runs the fuzz does not stop train for one step with small batches; everything before that is untouched."""
    fit = Trainer.fit

    def short_fit(self, net, method, data, stages=None):  # the stages are planned again, for the one step
        self.cfg = replace(self.cfg, train={"steps": 1, "batch_size": min(self.cfg.train.batch_size, 8)})
        rows = self.world.rows(self.cfg.train.batch_size)  # the plan's rows of the smaller batch
        self.run_plan = dataclasses.replace(self.run_plan, config=self.cfg, rows=rows)
        return fit(self, net, method, data)

    monkeypatch.setattr(Trainer, "fit", short_fit)


def test_the_command_line_only_fails_with_its_own_errors(files, one_step, capsys):
    @settings(max_examples=EXAMPLES, deadline=None)
    @given(argv(files))
    def check(args):
        assume("\x00" not in "".join(args))  # a shell cannot pass a NUL byte in argv
        try:
            code = main(args)
        except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
            code = e.code
        err = capsys.readouterr().err
        assert code in (0, 2), err
        assert "Traceback" not in err

    check()
