"""Unreadable image files found before training: ``dann check-data`` decodes every file once, in a process pool;
``dann train --check-data`` runs it first; each command's error names its own way to skip them."""

import shutil

import pytest

from dann.api import check_data
from dann.cli import main
from dann.config import load_config


@pytest.fixture
def damaged(shape_folders, tmp_path):
    """A copy of the target folder with one truncated PNG and one file that is no image at all."""
    folder = tmp_path / "target"
    shutil.copytree(shape_folders["target"], folder)
    truncated = next((folder / "square").glob("*.png"))
    truncated.write_bytes(truncated.read_bytes()[:40])
    garbage = next((folder / "circle").glob("*.jpg"))
    garbage.write_bytes(b"\xff\xd8\xff broken")
    return folder, sorted([str(truncated), str(garbage)])


def test_check_data_lists_every_unreadable_file_with_its_reason(shape_folders, damaged, capsys):
    folder, bad = damaged
    args = ["check-data", "--source", str(shape_folders["source"]), "--target", str(folder), "--quiet"]
    assert main([*args, "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert f"source {shape_folders['source']}: 24 image file(s) read" in out
    assert f"target {folder}: 18 image file(s) read" in out
    assert "unreadable: 2 file(s)" in out
    listed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert sorted(line.split(": ", 1)[0] for line in listed) == bad
    assert all(": cannot read this image file (" in line for line in listed)
    assert main(["check-data", "--source", str(shape_folders["source"]), "--target", str(shape_folders["target"])]) == 0
    assert "every file is readable" in capsys.readouterr().out


def test_the_pool_finds_what_one_process_finds_and_npz_files_are_loaded(shape_folders, damaged, npz_files, capsys):
    folder, _ = damaged
    cfg = load_config(values={"data": {"source": str(shape_folders["source"]), "target": str(folder)}})
    assert check_data(cfg, workers=2).bad == check_data(cfg, workers=1).bad
    arrays = ["check-data", "--source", str(npz_files["source"]), "--target", str(npz_files["target"]), "--quiet"]
    assert main(arrays) == 0
    assert f"source {npz_files['source']}: 60 sample(s) read" in capsys.readouterr().out
    assert main([*arrays, "--workers", "0"]) == 2
    assert "workers (--workers) must be at least 1, got 0" in capsys.readouterr().err


def test_train_check_data_stops_before_the_run_directory_and_skipping_goes_on(shape_folders, damaged, tmp_path, capsys):
    folder, bad = damaged
    args = ["train", "--source", str(shape_folders["source"]), "--target", str(folder), "--check-data", "--quiet"]
    fast = ["--steps", "2", "--set", "train.batch_size=4", "--set", "data.num_workers=0", "--no-report"]
    assert main([*args, *fast, "--out", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert all(path in captured.out for path in bad)
    assert "2 unreadable image file(s), listed above" in captured.err
    assert "--set data.skip_bad_images=true" in captured.err
    assert not (tmp_path / "r").exists()
    skip = ["--set", "data.skip_bad_images=true"]
    assert main([*args, *fast, *skip, "--out", str(tmp_path / "r")]) == 0


def test_predict_names_its_own_flag_for_unreadable_files(shape_folders, damaged, tmp_path, capsys):
    folder, _ = damaged
    run = tmp_path / "run"
    fast = ["--steps", "2", "--set", "train.batch_size=4", "--set", "data.num_workers=0", "--quiet", "--no-report"]
    args = ["train", "--source", str(shape_folders["source"]), "--target", str(shape_folders["target"])]
    assert main([*args, "--out", str(run), *fast]) == 0
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--images", str(folder), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "cannot read this image file" in err and "pass --skip-bad-images" in err
    assert "data.skip_bad_images" not in err


@pytest.mark.parametrize(("counts", "large"), [([420, 120, 60], True), ([200, 200, 200], False)])
def test_check_data_with_a_trained_run_estimates_the_targets_class_proportions(counts, large, tmp_path, capsys):
    import numpy as np

    from dann.cli import main

    from .test_report import separated

    x_s, y_s = separated([300, 300, 300], 0)
    x_t, _ = separated(counts, 1)
    np.savez(tmp_path / "s.npz", x=x_s, y=y_s)
    np.savez(tmp_path / "t.npz", x=x_t)
    files = ["--source", str(tmp_path / "s.npz"), "--target", str(tmp_path / "t.npz")]
    quick = ["--backbone", "mlp", "--steps", "150", "--quiet", "--no-report", "--set", "train.eval_every=150"]
    assert main(["train", *files, "--method", "source_only", *quick, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["check-data", *files, "--run", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "label shift (bbse, 100 bootstrap resamples" in out and "assumes each class looks the same" in out
    assert (": large" in out) is large and ("not shown to be large" in out) is not large


@pytest.mark.parametrize(
    ("classes", "handed"),
    [
        (["0", "1", "2", "3"], True),  # digits
        (["10", "11", "12"], True),  # numbered classes of glyphs
        (["A", "b", "C"], True),  # letters
        (["handwritten_digit_7", "other"], True),
        (["circle", "square"], False),  # shapes, plankton taxa: a mirror image is the same class
        (["Calanus", "Oithona", "detritus"], False),
        (["charcoal", "textile", "sword"], False),  # whole words only
        (["letters_a", "digits-b"], True),
        ([], False),
    ],
)
def test_class_names_that_look_like_glyphs(classes, handed):
    from dann.data.check import flip_note, looks_handed

    assert looks_handed(classes) is handed
    assert (flip_note(classes, 0.5) is not None) is handed
    assert flip_note(classes, 0.0) is None  # flips already off: nothing to say


def test_check_data_says_to_turn_flips_off_for_digit_folders(shape_folders, tmp_path, capsys):
    digits = tmp_path / "digits"
    for name, shape in (("3", "circle"), ("7", "square")):
        shutil.copytree(shape_folders["source"] / shape, digits / name)
    args = ["check-data", "--source", str(digits), "--target", str(shape_folders["target"]), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: the source classes (3, 7) look like digits, letters or text" in out and "set data.hflip=0" in out
    assert main([*args, "--set", "data.hflip=0"]) == 0
    assert "note:" not in capsys.readouterr().out
    assert main(["check-data", "--source", str(shape_folders["source"]), "--target", str(shape_folders["target"])]) == 0
    assert "note:" not in capsys.readouterr().out  # circle, square
