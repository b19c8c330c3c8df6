import errno
import json
import os
import shutil

import pytest
import torch

import dann
from dann.config import replace
from dann.errors import CheckpointError, OutputError, OutputExistsError, RunDirError
from dann.runs import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    LAST_CHECKPOINT,
    METRICS_FILE,
    PREV_CHECKPOINT,
    Checkpoint,
    atomic_write_text,
    guard_output,
    load_checkpoint,
    load_latest_checkpoint,
    read_jsonl,
    save_checkpoint,
)
from dann.training import trainer
from dann.training.trainer import Trainer

from .test_trainer import assert_same, weights


def state(step: int) -> dict:
    model = {"w": torch.full((3,), float(step))}
    return Checkpoint(step, model, {}, torch.zeros(2), {}, {}).to_dict()


def save_two(run):
    for step in (1, 2):
        save_checkpoint(run / LAST_CHECKPOINT, state(step), previous=run / PREV_CHECKPOINT)


def test_the_previous_checkpoint_is_kept_and_no_temporary_file_is_left(tmp_path):
    save_two(tmp_path)
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT).step == 2
    assert load_checkpoint(tmp_path / PREV_CHECKPOINT).step == 1
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
        assert load_latest_checkpoint(tmp_path).step == 1
    (tmp_path / PREV_CHECKPOINT).unlink()
    with pytest.raises(CheckpointError, match=str(last)):
        load_latest_checkpoint(tmp_path)


def test_a_foreign_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)  # a bare state dict, not a dann checkpoint
    with pytest.raises(CheckpointError, match=f"{path} is not a dann checkpoint \\(missing: step, model"):
        load_checkpoint(path)


def test_a_checkpoint_round_trips_and_its_format_is_checked(tmp_path):
    path = tmp_path / "c.pt"
    saved = Checkpoint(3, {"w": torch.ones(2)}, {"state": {}}, torch.zeros(2), {"train": {}}, {"classes": ["a"]})
    saved.save(path)
    loaded = load_checkpoint(path)
    assert loaded.format == CHECKPOINT_FORMAT == torch.load(path, weights_only=True)["format"]
    assert loaded.step == 3 and torch.equal(loaded.model["w"], saved.model["w"]) and loaded.meta == saved.meta
    assert loaded.scaler is None and loaded.method == {} and loaded.selection is None  # defaults of optional fields
    newer = saved.to_dict() | {"format": CHECKPOINT_FORMAT + 1, "field_of_the_future": 1}
    torch.save(newer, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} has format {CHECKPOINT_FORMAT + 1}, newer than"):
        load_checkpoint(path)
    # every version of dann has written "format": a file without it was made elsewhere
    torch.save({k: v for k, v in saved.to_dict().items() if k != "format"}, path)
    with pytest.raises(CheckpointError, match=f"{path} is not a dann checkpoint \\(missing: format\\)"):
        load_checkpoint(path)
    torch.save(saved.to_dict() | {"format": "1"}, path)
    with pytest.raises(CheckpointError, match="has an unknown format '1'; it was not written by dann"):
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


@pytest.mark.parametrize("chosen", [12, 6, None], ids=["resumed-step", "lost-step", "none-yet"])
def test_resume_makes_best_pt_agree_with_the_records_it_keeps(tiny_cfg, tiny_data, tmp_path, monkeypatch, chosen):
    """What a crash can leave: best.pt written at step 18, last.pt (18) cut short, so the run resumes from prev.pt
    (12) and keeps the records up to 12, whose best step is ``chosen``. The best.pt of step 18 must not outlive
    them: it becomes the resumed checkpoint when that is the chosen step, else it is removed."""
    run = dann.fit(replace(tiny_cfg, train={"steps": 18}), tmp_path / "run", data=tiny_data).run_dir
    shutil.copy(run / LAST_CHECKPOINT, run / BEST_CHECKPOINT)
    (run / LAST_CHECKPOINT).write_bytes((run / LAST_CHECKPOINT).read_bytes()[:1000])
    records = read_jsonl(run / METRICS_FILE)
    records[1]["selection"] = {"validator": "im", "step": chosen, "score": 1.0} if chosen else None
    atomic_write_text(run / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))

    def stop(*args, **kwargs):  # a second crash, right after the restore: what is on disk stays
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train_step", stop)
    with pytest.warns(UserWarning) as caught, pytest.raises(KeyboardInterrupt):
        dann.fit(out=run, data=tiny_data, resume=True)
    removed = [str(w.message) for w in caught if str(w.message).startswith(f"removed {run / BEST_CHECKPOINT}")]
    if chosen == 12:
        best, prev = load_checkpoint(run / BEST_CHECKPOINT), load_checkpoint(run / PREV_CHECKPOINT)
        assert best.step == 12 and not removed
        assert_same(best.model, prev.model)
    else:
        assert not (run / BEST_CHECKPOINT).exists()
        assert removed == [
            f"removed {run / BEST_CHECKPOINT} (step 18): it was written after the checkpoint resumed from (step 12), "
            f"and the records kept choose {'step 6 by im' if chosen else 'no step yet'}; best.pt is written again "
            "at the next step the validator prefers"
        ]


def test_the_output_guard_refuses_existing_files_and_non_empty_folders_unless_asked(tmp_path):
    (tmp_path / "empty").mkdir()
    guard_output([tmp_path / "empty", tmp_path / "missing.csv"], overwrite=False)  # nothing to lose: no refusal
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    (tmp_path / "p.csv").write_text("x")
    for path, says in ((tmp_path / "full", "already exists and is not empty"), (tmp_path / "p.csv", "already exists")):
        with pytest.raises(OutputExistsError, match=f"^{path} {says}; pass `overwrite=True` to replace it$"):
            guard_output([tmp_path / "missing.csv", path], overwrite=False)
        guard_output([path], overwrite=True)
    assert (tmp_path / "p.csv").read_text() == "x"  # the guard only refuses; replacing is the caller's work


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
