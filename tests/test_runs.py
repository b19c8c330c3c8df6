import errno
import json
import os

import pytest
import torch

import dann
from dann.config import replace
from dann.errors import CheckpointError, OutputError, RunDirError
from dann.runs import (
    LAST_CHECKPOINT,
    PREV_CHECKPOINT,
    atomic_write_text,
    load_checkpoint,
    load_latest_checkpoint,
    read_jsonl,
    save_checkpoint,
)
from dann.training.trainer import Trainer

from .test_trainer import assert_same, weights


def state(step: int) -> dict:
    model = {"w": torch.full((3,), float(step))}
    return {"step": step, "model": model, "optimizer": {}, "rng": torch.zeros(2), "config": {}, "meta": {}}


def save_two(run):
    for step in (1, 2):
        save_checkpoint(run / LAST_CHECKPOINT, state(step), previous=run / PREV_CHECKPOINT)


def test_the_previous_checkpoint_is_kept_and_no_temporary_file_is_left(tmp_path):
    save_two(tmp_path)
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["step"] == 2
    assert load_checkpoint(tmp_path / PREV_CHECKPOINT)["step"] == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "prev.pt"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated: a crash while copying, or a disk that filled up
        lambda b: b[:-1],
        lambda b: b"",  # zero bytes
        lambda b: b"\x00" * len(b),  # garbage
        None,  # missing: a crash between the two renames
    ],
    ids=["half", "last-byte", "empty", "zeros", "missing"],
)
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    save_two(tmp_path)
    last = tmp_path / LAST_CHECKPOINT
    if damage is None:
        last.unlink()
    else:
        last.write_bytes(damage(last.read_bytes()))
    with pytest.raises(CheckpointError, match=f"checkpoint {last} (is truncated or corrupt|does not exist)"):
        load_checkpoint(last)
    with pytest.warns(UserWarning, match=f"using the previous checkpoint {tmp_path / PREV_CHECKPOINT}"):
        assert load_latest_checkpoint(tmp_path)["step"] == 1
    (tmp_path / PREV_CHECKPOINT).unlink()
    with pytest.raises(CheckpointError, match=str(last)):
        load_latest_checkpoint(tmp_path)


def test_a_foreign_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)  # a bare state dict, not a dann checkpoint
    with pytest.raises(CheckpointError, match=f"{path} is not a dann checkpoint \\(missing: step, model"):
        load_checkpoint(path)


def test_resume_from_a_truncated_last_checkpoint_uses_the_previous_one(tiny_cfg, tiny_data, tmp_path, monkeypatch):
    cfg = replace(tiny_cfg, train={"steps": 18})
    full = dann.fit(cfg, tmp_path / "full", data=tiny_data)
    save = Trainer._save

    def crash_after_second_checkpoint(self, *args):
        save(self, *args)
        if args[4]["step"] == 12:  # the evaluation record
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", crash_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        dann.fit(cfg, tmp_path / "crashed", data=tiny_data)
    monkeypatch.setattr(Trainer, "_save", save)
    last = tmp_path / "crashed" / LAST_CHECKPOINT
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="is truncated or corrupt.*using the previous checkpoint"):
        resumed = dann.fit(out=tmp_path / "crashed", data=tiny_data, resume=True)
    assert_same(weights(full.net), weights(resumed.net))
    assert [r["step"] for r in read_jsonl(tmp_path / "crashed/metrics.jsonl")] == [6, 12, 18]


def test_a_torn_last_metrics_line_is_dropped_and_other_bad_lines_are_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "tr')  # killed in the middle of a write
    assert read_jsonl(path) == [{"step": 1}]
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(RunDirError, match=f"{path} line 2 is not a JSON record"):
        read_jsonl(path)


def test_a_full_disk_is_an_output_error_and_the_old_file_survives(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    atomic_write_text(path, "old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError, match=f"cannot write {path}: No space left on device"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_written_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        save_checkpoint(tmp_path / "c.pt", {"step": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o644
