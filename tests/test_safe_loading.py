"""Files from elsewhere never run code: checkpoints and weight files carrying pickled objects are refused, YAML is
read with safe_load, .npz without pickle. The payload here would create a marker file if anything unpickled it."""

import re
import shutil
from pathlib import Path

import pytest
import torch

import dann
from dann.config import load_config
from dann.errors import ConfigError, UnsafeFileError
from dann.models.backbones import load_pretrained_file
from dann.runs import LAST_CHECKPOINT, PREV_CHECKPOINT

SRC = Path(dann.__file__).parent


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
    path.write_bytes(b"\x00" * 50)
    with pytest.raises(ConfigError, match=f"model.pretrained_file {path} is truncated or corrupt"):
        load_pretrained_file(torch.nn.Linear(3, 2), str(path))


def test_yaml_python_tags_are_never_constructed(tmp_path):
    marker = tmp_path / "PWNED"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]'
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  source: {payload}\n")
    with pytest.raises(ConfigError, match="holds a tag that is not plain YAML"):
        load_config(str(path))
    assert load_config(overrides=[f"data.source={payload}"]).data.source == payload  # kept as plain text
    assert not marker.exists()


def test_every_loader_in_the_source_is_a_safe_one():
    """An audit that fails when someone adds an unsafe load: every torch.load passes weights_only=True, YAML goes
    through safe_load, np.load through allow_pickle=False, and pickle is never used to read."""
    shutil.rmtree(SRC / "__pycache__", ignore_errors=True)
    code = {path: path.read_text() for path in SRC.rglob("*.py")}
    calls = {name: [] for name in ("torch.load", "np.load", "yaml")}
    for path, text in code.items():
        calls["torch.load"] += [(path, c) for c in re.findall(r"torch\.load\((.*?)\)", text, re.S)]
        calls["np.load"] += [(path, c) for c in re.findall(r"np\.load\((.*?)\)", text, re.S)]
        calls["yaml"] += [(path, c) for c in re.findall(r"yaml\.(\w*load\w*)\(", text)]
        assert not re.search(r"pickle\.loads?\(|weights_only=False|allow_pickle=True", text), path
    assert calls["torch.load"] and all("weights_only=True" in c for _, c in calls["torch.load"]), calls
    assert calls["np.load"] and all("allow_pickle=False" in c for _, c in calls["np.load"]), calls
    assert calls["yaml"] and all(c == "safe_load" for _, c in calls["yaml"]), calls
