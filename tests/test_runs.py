import errno
import json
import os
import shutil
import warnings

import pytest
import torch

import dann
from dann import config
from dann.cli import main
from dann.config import load_config, replace
from dann.data.fingerprint import DATA_FILE
from dann.errors import CheckpointError, DannError, OutputError, OutputExistsError, RunDirError
from dann.reporting.verdicts import CONTROL_DIR
from dann.runs import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    LAST_CHECKPOINT,
    METRICS_FILE,
    PREV_CHECKPOINT,
    STARTUP_CONTROL,
    STARTUP_EVENTS,
    STARTUP_FILES,
    TRAIN_LOG_FILE,
    Checkpoint,
    atomic_write_text,
    guard_output,
    load_checkpoint,
    load_latest_checkpoint,
    read_jsonl,
    save_checkpoint,
)
from dann.training import trainer
from dann.training.tensorboard import EVENTS_DIR
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
    logged = read_jsonl(tmp_path / "crashed" / TRAIN_LOG_FILE)  # the lines after step 6 dropped, then written again
    assert [r["step"] for r in logged] == [3, 6, 9, 12, 15, 18] and logged == read_jsonl(full.run_dir / TRAIN_LOG_FILE)


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


# A run directory that a start left without a checkpoint (it failed, or was killed, first) is no run to protect: the
# retry its error suggests starts afresh there, with one line saying so. A folder with a checkpoint, or with files a
# run does not write, is still refused and left as it is.

TINY = [
    "model.backbone=mlp", "model.mlp_dims=[8]", "data.image_size=8", "data.num_workers=0", "train.steps=4",
    "train.batch_size=4", "train.eval_every=2", "train.log_every=1", "train.device=cpu", "train.progress=false",
]  # fmt: skip
AFRESH = "{out} held no checkpoint (a start that failed): starting afresh"


@pytest.fixture
def folders(shape_folders, tmp_path):
    """Labeled source folders and a flat target of 12 images (a copy: cases break some of its files)."""
    shutil.copytree(shape_folders["flat"], tmp_path / "target")
    return {"source": shape_folders["source"], "target": tmp_path / "target"}


def start(via, capsys, folders, out, *settings, resume=False):
    """Train on ``folders`` into ``out`` with ``settings`` (section.key=value) through ``dann.fit`` (the default
    method, as a user who names none) or the CLI (``--set``); returns (whether it trained, what it said: its error
    and warnings)."""
    data = [f"data.source={folders['source']}", f"data.target={folders['target']}"]
    settings = [*TINY, *settings]
    if via == "cli":
        given = [a for s in [*data, *settings] for a in ("--set", s)]
        code = main(["train", "--out", str(out), "--quiet", "--no-report", *given, *["--resume"] * resume])
        return code == 0, capsys.readouterr().err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dann.fit(load_config(overrides=[*data, *settings]), out, resume=resume)
            trained, error = True, ""
        except DannError as e:
            trained, error = False, str(e)
    return trained, "\n".join([error, *(str(w.message) for w in caught)])


def _break_half(folders):
    for path in sorted(folders["target"].iterdir())[::2]:
        path.write_bytes(b"not an image")


def _kill_before_config(out):
    """What a start killed before it wrote config.yaml leaves: the folders prepare_run_dir made, default.json."""
    (out / "checkpoints").mkdir(parents=True)
    (out / "default.json").write_text("{}")


def _kill_writing_config(out):
    _kill_before_config(out)
    (out / ".config.yaml.k2x_9q.tmp").write_text("data:\n  sour")  # the temporary file of an unfinished write


# (what makes the first start fail, or the folder it leaves; the settings of that start; the retry's, as its message
# advises: skip unreadable files, a lower optim.lr, or nothing for a start that was killed)
FAILED_STARTS = {
    "unreadable-first-batch": (_break_half, ["data.skip_bad_images=false"], ["data.skip_bad_images=true"]),
    "non-finite-first-steps": (None, ["optim.lr=1e38"], ["optim.lr=0.01"]),
    "killed-before-config": (_kill_before_config, None, []),
    "killed-writing-config": (_kill_writing_config, None, []),
}


def _fail_first(case, via, capsys, folders, out):
    """The first start of ``case``: run (and fail) it, or leave the folder a killed one leaves."""
    damage, first, _ = FAILED_STARTS[case]
    if first is None:
        damage(out)
        return
    if damage:
        damage(folders)
    trained, said = start(via, capsys, folders, out, *first)
    assert not trained and ("cannot read this image file" in said or "non-finite loss" in said), said
    assert out.is_dir() and not (out / LAST_CHECKPOINT).exists() and not (out / PREV_CHECKPOINT).exists()


@pytest.mark.parametrize("via", ["fit", "cli"])
@pytest.mark.parametrize("case", list(FAILED_STARTS))
def test_a_start_that_failed_is_retried_by_the_same_call(case, via, capsys, folders, tmp_path):
    out = tmp_path / "run"
    _fail_first(case, via, capsys, folders, out)
    trained, said = start(via, capsys, folders, out, *FAILED_STARTS[case][2])
    assert trained, said
    assert said.count(AFRESH.format(out=out)) == 1, said
    assert load_checkpoint(out / LAST_CHECKPOINT).step == 4 and not list(out.glob(".*.tmp"))
    assert [r["step"] for r in read_jsonl(out / METRICS_FILE)] == [2, 4]  # the retry's records only
    if case == "unreadable-first-batch":
        assert load_config(str(out / "config.yaml")).data.skip_bad_images  # the config.yaml of the retry


@pytest.mark.parametrize("via", ["fit", "cli"])
@pytest.mark.parametrize("case", list(FAILED_STARTS))
def test_resume_of_a_start_that_failed_says_nothing_is_resumed(case, via, capsys, folders, tmp_path):
    """With config.yaml (a failed start) it starts afresh from it and the settings given; without (killed before it
    was written) there is no record of what to train, and the error names the retry: the call without resume."""
    out = tmp_path / "run"
    _fail_first(case, via, capsys, folders, out)
    trained, said = start(via, capsys, folders, out, *FAILED_STARTS[case][2], resume=True)
    if FAILED_STARTS[case][1] is None:
        flag = "--resume" if via == "cli" else "`resume=True`"
        assert not trained and f"nothing to resume: {out} holds no checkpoint and no config.yaml" in said, said
        assert f"run the training command again without {flag}: it starts afresh there" in said
        assert sorted(p.name for p in out.iterdir()) != []  # left as it was
        return
    assert trained, said
    afresh = f"nothing to resume: {out} held no checkpoint (a start that failed); starting afresh from the config"
    assert said.count(f"{afresh}uration given") == 1 and AFRESH.format(out=out) not in said, said  # one line
    assert load_checkpoint(out / LAST_CHECKPOINT).step == 4


@pytest.mark.parametrize("via", ["fit", "cli"])
def test_resume_of_an_empty_folder_names_the_call_that_starts_it(via, capsys, folders, tmp_path):
    (tmp_path / "run").mkdir()
    trained, said = start(via, capsys, folders, tmp_path / "run", resume=True)
    assert not trained and "nothing to resume" in said and "cannot resume" not in said, said
    assert start(via, capsys, folders, tmp_path / "run") == (True, "")  # an empty folder never needed a word


def _only(*kept):
    def keep(out):
        for name in (LAST_CHECKPOINT, PREV_CHECKPOINT, BEST_CHECKPOINT):
            if name not in kept:
                (out / name).unlink()

    return keep


@pytest.mark.parametrize("via", ["fit", "cli"])
@pytest.mark.parametrize(
    "keep",
    [_only(LAST_CHECKPOINT, PREV_CHECKPOINT, BEST_CHECKPOINT), _only(PREV_CHECKPOINT), _only(BEST_CHECKPOINT)],
    ids=["finished", "prev-only", "best-only"],
)
def test_a_folder_with_a_checkpoint_is_still_refused_and_kept(keep, via, capsys, folders, tmp_path):
    out = tmp_path / "run"
    assert start(via, capsys, folders, out)[0]
    keep(out)
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    trained, said = start(via, capsys, folders, out, "optim.lr=0.02")
    flag = "--resume" if via == "cli" else "`resume=True`"
    assert not trained and f"run directory {out} already exists and is not empty; pass {flag} to continue it" in said
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before


def test_a_run_killed_after_its_first_checkpoint_is_still_refused(folders, tmp_path, crash_after_first_checkpoint):
    out = tmp_path / "run"
    cfg = load_config(overrides=[f"data.source={folders['source']}", f"data.target={folders['target']}", *TINY])
    crash_after_first_checkpoint(dann.fit, cfg, out)
    with pytest.raises(OutputExistsError, match="already exists and is not empty; pass `resume=True`"):
        dann.fit(cfg, out)
    assert load_checkpoint(out / LAST_CHECKPOINT).step == 2


def _user_files(out):
    out.mkdir()
    (out / "notes.txt").write_text("mine")


def _own_config(out):  # a user's own config.yaml, in the folder they then name as --out: no checkpoints/ beside it
    out.mkdir()
    (out / "config.yaml").write_text("train:\n  steps: 4\n")


def _failed_start_and_a_user_file(out):
    _kill_before_config(out)
    (out / "config.yaml").write_text("train:\n  steps: 4\n")
    (out / "notes.txt").write_text("mine")


def _user_file_in_checkpoints(out):
    _kill_before_config(out)
    (out / "checkpoints" / "weights.npz").write_bytes(b"mine")


@pytest.mark.parametrize("via", ["fit", "cli"])
@pytest.mark.parametrize(
    ("make", "named"),
    [
        (_user_files, "notes.txt"),
        (_own_config, "config.yaml"),
        (_failed_start_and_a_user_file, "notes.txt"),
        (_user_file_in_checkpoints, "checkpoints"),
    ],
    ids=["user-files", "own-config", "failed-start-and-a-user-file", "user-file-in-checkpoints"],
)
def test_a_folder_that_is_not_a_dann_run_is_refused_and_kept(make, named, via, capsys, folders, tmp_path):
    out = tmp_path / "run"
    make(out)
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    trained, said = start(via, capsys, folders, out)
    flag = "--overwrite" if via == "cli" else "`overwrite=True`"
    assert not trained and f"run directory {out} already exists and is not a dann run" in said, said
    assert f"files a run does not write: {named}" in said and f"pass {flag} to delete what it holds" in said
    assert not start(via, capsys, folders, out, resume=True)[0]
    assert sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before


def test_the_files_a_start_writes_are_those_the_modules_name():
    assert DATA_FILE in STARTUP_FILES and (STARTUP_EVENTS, STARTUP_CONTROL) == (EVENTS_DIR, CONTROL_DIR)
    recipe = getattr(config, "RECIPE_FILE", None)  # written by a run of the default method
    assert recipe is None or recipe in STARTUP_FILES
