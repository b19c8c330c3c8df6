"""Files from elsewhere never run code: checkpoints and weight files carrying pickled objects are refused, YAML is
read with safe_load, .npz without pickle. The payload here would create a marker file if anything unpickled it."""

import errno
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import dann
from dann.config import load_config
from dann.data import load_npz
from dann.errors import CheckpointError, ConfigError, DannError, DataError, UnsafeFileError
from dann.models.backbones import load_pretrained_file
from dann.runs import BEST_CHECKPOINT, LAST_CHECKPOINT, PREV_CHECKPOINT, load_latest_checkpoint

from .conftest import blobs, damaged_weight_files, tiny_config, tiny_domains


class Payload:
    """Unpickling this runs ``exec``, which creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture
def run(tiny_cfg, tiny_data, tmp_path):
    """A finished run, with last.pt and prev.pt."""
    return dann.fit(tiny_cfg, tmp_path / "run", data=tiny_data).run_dir


def plant(path: Path, marker: Path) -> None:
    """Rewrite the checkpoint at ``path`` with a payload inside, as a tampered download would be."""
    state = torch.load(path, weights_only=True)
    state["meta"]["note"] = Payload(marker)
    torch.save(state, path)


def test_a_checkpoint_with_a_pickled_object_is_refused_and_its_code_never_runs(run, tmp_path, tiny_data):
    marker = tmp_path / "PWNED"
    plant(run / LAST_CHECKPOINT, marker)
    with pytest.raises(UnsafeFileError, match=f"refused to load checkpoint {run / LAST_CHECKPOINT}: it holds Python"):
        dann.load_run(run)
    # resuming does not fall back to prev.pt past a tampered file: it stops
    assert (run / PREV_CHECKPOINT).is_file()
    with pytest.raises(UnsafeFileError, match="nothing in it was run"):
        dann.fit(out=run, data=tiny_data, resume=True)
    assert not marker.exists()
    torch.load(run / LAST_CHECKPOINT, weights_only=False)  # the control: an unsafe loader runs the payload
    assert marker.exists()


def test_a_weight_file_with_a_pickled_object_is_refused(tmp_path):
    marker, path = tmp_path / "PWNED", tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(2, 3), "bias": Payload(marker)}, path)
    with pytest.raises(UnsafeFileError, match=f"refused to load model.pretrained_file {path}"):
        load_pretrained_file(torch.nn.Linear(3, 2), str(path))
    assert not marker.exists()


def test_every_damaged_weights_file_is_one_clear_error_naming_the_file(tmp_path, run):
    """Each reader of weights (a run's checkpoint for load_run, resume and init_from; model.pretrained_file, .pt or
    .safetensors) says which file, and what is wrong with it: empty, another format, damaged, a folder, a link to
    nowhere; never a bare KeyError: 101 or a traceback."""
    good = tmp_path / "good.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), good)
    load_pretrained_file(torch.nn.Linear(3, 2), str(good))  # the control: the good file loads
    for path, says in damaged_weight_files(tmp_path, good).values():
        with pytest.raises(ConfigError, match=f"^model.pretrained_file {re.escape(str(path))} {says}"):
            load_pretrained_file(torch.nn.Linear(3, 2), str(path))
        if path.suffix != ".pt":
            continue
        copy = tmp_path / f"run-{path.stem}"
        shutil.copytree(run, copy)
        for checkpoint in (LAST_CHECKPOINT, PREV_CHECKPOINT, BEST_CHECKPOINT):
            (copy / checkpoint).unlink()
            if path.is_symlink():
                (copy / checkpoint).symlink_to(path.readlink())
            elif path.is_dir():
                (copy / checkpoint).mkdir()
            else:
                shutil.copyfile(path, copy / checkpoint)
        last = copy / LAST_CHECKPOINT
        with pytest.raises(CheckpointError, match=f"^checkpoint {re.escape(str(last))} {says.replace(str(path), '')}"):
            dann.load_run(copy)
    for content, held in (([torch.zeros(2)], "but a list"), ({}, "but an empty dict"), ({"w": 1}, "'w' is a int")):
        torch.save(content, good)
        with pytest.raises(ConfigError, match=f"^model.pretrained_file {good} holds no state dict .*{held}$"):
            load_pretrained_file(torch.nn.Linear(3, 2), str(good))


def test_a_checkpoint_the_system_will_not_let_us_read_is_not_replaced_by_the_previous_one(run, monkeypatch):
    """A permission error is no damage: resuming must stop (the newer last.pt intact) rather than fall back to
    prev.pt and train over last.pt's steps; every reader says so in one line."""
    real = torch.load

    def refused(path, *args, **kwargs):
        if Path(path).name == "last.pt":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", refused)
    with pytest.raises(DannError, match=f"^cannot read checkpoint {run / LAST_CHECKPOINT}: Permission denied$") as e:
        load_latest_checkpoint(run)
    assert not isinstance(e.value, CheckpointError)  # the error the fallback to prev.pt catches
    with pytest.raises(DannError, match=r"cannot read model\.pretrained_file .*last\.pt: Permission denied"):
        load_pretrained_file(torch.nn.Linear(3, 2), str(run / LAST_CHECKPOINT))


def test_yaml_python_tags_are_never_constructed(tmp_path):
    marker = tmp_path / "PWNED"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]'
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  source: {payload}\n")
    with pytest.raises(ConfigError, match="holds a tag that is not plain YAML"):
        load_config(str(path))
    assert load_config(overrides=[f"data.source={payload}"]).data.source == payload  # kept as plain text
    assert not marker.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (last.pt, prev.pt, best.pt), copied before any file is tampered with."""
    return dann.fit(tiny_config(), tmp_path_factory.mktemp("runs") / "run", data=tiny_domains()).run_dir


def _tampered_run(run: Path, tmp_path: Path, marker: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in (LAST_CHECKPOINT, PREV_CHECKPOINT, BEST_CHECKPOINT):
        plant(copy / name, marker)
    return copy


def _pickled_npz(path: Path, marker: Path) -> Path:
    np.savez(path, x=np.array([Payload(marker)], dtype=object))  # an object array: np.save pickles it
    return path


LOADERS = {  # every way a file from elsewhere gets read: (what raises, the call)
    "load_run": (UnsafeFileError, lambda run, tmp, m, data: dann.load_run(run)),
    "load_run best": (UnsafeFileError, lambda run, tmp, m, data: dann.load_run(run, BEST_CHECKPOINT)),
    "resume": (UnsafeFileError, lambda run, tmp, m, data: dann.fit(out=run, data=data, resume=True)),
    "init_from": (
        UnsafeFileError,
        lambda run, tmp, m, data: dann.fit(load_config(overrides=[f"model.init_from={run}"]), data=data),
    ),
    "evaluate": (UnsafeFileError, lambda run, tmp, m, data: dann.evaluate(run, _clean_npz(tmp))),
    "predict": (UnsafeFileError, lambda run, tmp, m, data: dann.predict(run, _clean_npz(tmp), tmp / "p.csv")),
    "report": (UnsafeFileError, lambda run, tmp, m, data: dann.build_report(run, data)),
    "data .npz": (DataError, lambda run, tmp, m, data: load_npz(_pickled_npz(tmp / "x.npz", m))),
    "data .npy": (DataError, lambda run, tmp, m, data: load_npz(_npy(tmp / "x.npy", m))),
    "evaluate .npz": (
        DataError,
        lambda run, tmp, m, data: dann.evaluate(tmp / "clean", _pickled_npz(tmp / "x.npz", m)),
    ),
    "weights file": (
        UnsafeFileError,
        lambda run, tmp, m, data: load_pretrained_file(torch.nn.Linear(3, 2), _pth(tmp, m)),
    ),
}


def _clean_npz(tmp: Path) -> Path:
    x, y = blobs(10, 0.0, 0)
    np.savez(tmp / "clean.npz", x=x, y=y)
    return tmp / "clean.npz"


def _npy(path: Path, marker: Path) -> Path:
    np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)  # the attacker's side
    return path


def _pth(tmp: Path, marker: Path) -> str:
    torch.save({"weight": torch.zeros(2, 3), "bias": Payload(marker)}, tmp / "w.pth")
    return str(tmp / "w.pth")


@pytest.mark.parametrize("name", LOADERS)
def test_every_loader_refuses_a_pickled_payload_without_running_it(name, finished, tiny_data, tmp_path):
    """Behaviour, not a reading of the source: each entry point that reads a checkpoint, a weight file or an array
    file is handed one carrying a pickled object whose unpickling would create ``marker``."""
    marker = tmp_path / "PWNED"
    error, load = LOADERS[name]
    shutil.copytree(finished, tmp_path / "clean")
    run = _tampered_run(finished, tmp_path, marker)
    with pytest.raises(error):
        load(run, tmp_path, marker, tiny_data)
    assert not marker.exists()
