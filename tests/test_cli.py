import csv
import json
import subprocess
import sys

import pytest

from dann.cli import main
from dann.config import load_config

FAST = ["--backbone", "mlp", "--steps", "8", "--quiet", "--set", "train.eval_every=4", "--set", "train.batch_size=16"]


def train_args(npz_files, out, *extra):
    """``dann train`` on the npz pair into ``out``, with ``extra`` options."""
    return ["train", "--source", str(npz_files["source"]), "--target", str(npz_files["target"]), "--out", str(out),
            *extra]  # fmt: skip


def test_train_evaluate_predict_round_trip(npz_files, tmp_path, capsys):
    run = tmp_path / "run"
    args = train_args(npz_files, run)
    assert main(args + FAST) == 0
    out = capsys.readouterr().out
    assert "checkpoints/last.pt" in out and "uses target labels" in out
    assert (run / "checkpoints/last.pt").is_file()

    assert main(["evaluate", "--run", str(run), "--data", str(npz_files["target"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["acc"] <= 1.0 and metrics["n"] == 60 and len(metrics["confusion"]) == 2
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["acc"] == pytest.approx(last["oracle"]["target_acc"])  # evaluate loads the trained weights

    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--data", str(npz_files["target"]), "--out", str(preds)]) == 0
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 60 and rows[0].keys() == {"index", "predicted_class", "confidence"}
    assert all(0.5 <= float(r["confidence"]) <= 1.0 for r in rows)
    accuracy = sum(r["predicted_class"] == str(y) for r, y in zip(rows, _labels(npz_files["target"]), strict=True))
    assert accuracy / 60 == pytest.approx(metrics["acc"])

    assert main(["predict", "--run", str(run), "--data", str(npz_files["target"]), "--out", str(preds)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_one_set_flag_takes_several_values_as_repeated_flags_do(npz_files, tmp_path):
    values = ["train.steps=4", "train.eval_every=2", "model.bottleneck_dim=8"]
    assert main(train_args(npz_files, tmp_path / "a", "--backbone", "mlp", "--quiet", "--set", *values)) == 0
    repeated = [x for v in values for x in ("--set", v)]
    assert main(train_args(npz_files, tmp_path / "b", "--backbone", "mlp", "--quiet", *repeated)) == 0
    a, b = (load_config(str(tmp_path / n / "config.yaml")) for n in "ab")
    assert a == b and (a.train.steps, a.train.eval_every, a.model.bottleneck_dim) == (4, 2, 8)


def _labels(path):
    import numpy as np

    return np.load(path)["y"].tolist()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "optim.lrr=1"], "unknown key optim.lrr"),
        (["--method", "dan"], "unknown method 'dan'; valid methods: adamatch, cdan, cdan_e, clip_distill, coral"),
        (["--backbone", "lenett"], "unknown backbone 'lenett'"),
    ],
)
def test_bad_options_exit_2_with_one_clear_line(npz_files, tmp_path, capsys, extra, message):
    assert main(train_args(npz_files, tmp_path / "r", "--quiet", "--backbone", "mlp", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_existing_run_is_refused_and_resume_takes_the_same_command(npz_files, tmp_path, capsys):
    run = tmp_path / "run"
    args = train_args(npz_files, run)
    assert main(args + FAST) == 0
    assert main(args + FAST) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + FAST + ["--resume"]) == 0  # the same command + --resume (finished: nothing to do)
    free = ["data.skip_bad_images=true", "data.num_workers=0", "train.eval_every=2", "train.log_every=1"]
    assert main(["train", "--out", str(run), "--resume", *(f for k in free for f in ("--set", k))]) == 0
    saved = load_config(str(run / "config.yaml"))
    assert saved.data.skip_bad_images and (saved.train.eval_every, saved.data.num_workers) == (2, 0)  # recorded
    capsys.readouterr()
    changed = [
        (["--steps", "9"], "train.steps (saved 8, given 9)"),
        (["--backbone", "lenet"], "model.backbone (saved 'mlp', given 'lenet')"),
        (["--set", "train.batch_size=8"], "train.batch_size (saved 16, given 8)"),
        (["--method", "coral"], "method.name (saved 'source_only', given 'coral')"),
        (["--set", "optim.lr=0.1"], "optim.lr (saved 0.01, given 0.1)"),
        (["--target", str(npz_files["source"])], f"data.target (saved '{npz_files['target']}', given"),
    ]
    for extra, named in changed:
        assert main(["train", "--out", str(run), "--resume", *extra]) == 2
        err = capsys.readouterr().err
        assert f"cannot resume {run} with {named}" in err and "data.skip_bad_images" in err, err
    assert main([*args, *FAST, "--resume", "--steps", "9", "--set", "optim.lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr (saved 0.01, given 0.1), train.steps (saved 8, given 9): they change" in err


def test_missing_data_file_is_named(tmp_path, capsys):
    assert (
        main(["train", "--source", str(tmp_path / "none.npz"), "--target", "t.npz", "--out", str(tmp_path / "r")]) == 2
    )
    assert f"data file {tmp_path / 'none.npz'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ["r\U00010000s.npz", "r\udcffs.npz", "r\u00e9s.npz"])  # beyond ASCII; undecodable
def test_a_path_the_terminal_cannot_encode_is_printed_escaped_not_a_crash(npz_files, tmp_path, monkeypatch, name):
    import io

    streams = {k: io.TextIOWrapper(io.BytesIO(), encoding="ascii") for k in ("stdout", "stderr")}  # errors: strict
    for k, stream in streams.items():
        monkeypatch.setattr(sys, k, stream)
    assert main(["train", "--source", str(tmp_path / name), "--target", "t.npz", "--out", str(tmp_path / "r")]) == 2
    out = tmp_path / name.replace(".npz", "")  # a run whose folder name the terminal cannot show
    assert main(train_args(npz_files, out, *FAST)) == 0
    for stream in streams.values():
        stream.flush()
    err, said = streams["stderr"].buffer.getvalue().decode(), streams["stdout"].buffer.getvalue().decode()
    escaped = name.encode("ascii", "backslashreplace").decode()
    assert f"data file {tmp_path}/{escaped} does not exist" in err
    assert escaped.removesuffix(".npz") in said  # the run's summary names its folder
    assert all(s.errors == "strict" for s in streams.values())  # the streams' own handling is back


def test_python_dash_m_entry_point_starts_without_the_slow_optional_imports():
    # scikit-learn and torchvision take seconds to import; the command line loads them only when a command needs them
    slow = ("sklearn", "torchvision", "matplotlib")
    code = f"import sys, dann.cli; print([m for m in {slow} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    result = subprocess.run([sys.executable, "-m", "dann", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--target-eval" in result.stdout


def test_evaluate_and_predict_can_use_the_validator_selected_checkpoint(npz_files, tmp_path, capsys):
    run = tmp_path / "run"
    args = train_args(npz_files, run)
    assert main(args + FAST) == 0
    selected = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["selection"]["step"]
    capsys.readouterr()
    assert (
        main(["evaluate", "--run", str(run), "--data", str(npz_files["target"]), "--checkpoint", "best", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["step"] == selected
    preds = tmp_path / "best.csv"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--data",
                str(npz_files["target"]),
                "--out",
                str(preds),
                "--checkpoint",
                "best",
            ]
        )
        == 0
    )
    assert len(list(csv.DictReader(preds.open()))) == 60


def test_library_errors_name_parameters_and_the_cli_prints_its_flags(tmp_path, capsys):
    """The Python API's errors speak of its parameters; the CLI says the same with its flags, once."""
    from dann.cli import as_flags
    from dann.runs import prepare_run_dir

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_text("x")  # a run, with a checkpoint
    with pytest.raises(Exception, match="pass `resume=True` to continue it, `overwrite=True` to replace it") as error:
        prepare_run_dir(tmp_path / "run")
    assert as_flags(str(error.value)).endswith(
        "pass --resume to continue it, --overwrite to replace it, or choose another --out"
    )
    assert as_flags("`bnm` score; `batch_size` and `verify=False`") == "`bnm` score; --batch-size and --no-verify"
    assert main(["bench", "--images", str(tmp_path / "nowhere"), "--steps", "1"]) == 2
    assert (
        capsys.readouterr().err
        == f"dann bench: error: --images {tmp_path / 'nowhere'} is not a folder (expected class subfolders of images)\n"
    )


def test_a_run_s_config_trains_again_from_another_folder_and_resumes_as_typed(npz_files, tmp_path, monkeypatch,
                                                                               capsys):  # fmt: skip
    here, elsewhere = npz_files["source"].parent, tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    relative = ["train", "--source", "source.npz", "--target", "target.npz", "--out", "run", *FAST]
    assert main(relative) == 0
    saved = load_config(str(here / "run" / "config.yaml"))
    assert (saved.data.source, saved.data.target) == (str(here / "source.npz"), str(here / "target.npz"))
    assert main([*relative, "--resume"]) == 0  # the same relative paths name the same files: nothing changed
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", str(here / "run" / "config.yaml"), "--out", "again", "--quiet"]) == 0
    first, again = (
        json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in (here / "run", elsewhere / "again")
    )
    assert again["oracle"]["target_acc"] == first["oracle"]["target_acc"]  # the same files, the same run
    assert main(["train", "--out", str(here / "run"), "--resume", "--steps", "10"]) == 2  # from here, paths agree
    assert "train.steps (saved 8, given 10)" in capsys.readouterr().err
    assert (
        main(["train", "--source", "source.npz", "--target", "target.npz", "--out", str(here / "run"), "--resume"]) == 2
    )
    assert f"data.source (saved '{here / 'source.npz'}', given '{elsewhere / 'source.npz'}')" in capsys.readouterr().err


@pytest.mark.parametrize("method", [[], ["--method", "dann"]])  # the default's selection (default.json), one method
def test_a_resume_from_another_folder_reads_paths_as_the_files_they_name(method, npz_files, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    data = ["--source", "../source.npz", "--target", "../target.npz"]
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", *data, *method, "--out", "run", *FAST]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", "a/run", "--resume", "--quiet"]) == 0  # the recorded paths, from elsewhere
    monkeypatch.chdir(tmp_path / "b")  # the same files spelled from b, and once absolute with a trailing slash
    assert main(["train", *data, *method, "--out", "../a/run", "--resume", *FAST]) == 0
    spelled = ["--source", f"{tmp_path}/./source.npz", "--target", f"{tmp_path}/b/../target.npz"]
    assert main(["train", *spelled, *method, "--out", "../a/run", "--resume", *FAST]) == 0


def test_a_run_older_than_a_key_resumes_with_options_as_it_trained(npz_files, tmp_path):
    import yaml

    run = tmp_path / "run"
    args = train_args(npz_files, run, "--method", "mean_teacher")
    assert main(args + FAST) == 0
    old = yaml.safe_load((run / "config.yaml").read_text())
    del old["method"]["intensity_augment"]  # as a version before the key wrote it: the views had no colour jitter
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    assert main(["train", "--out", str(run), "--resume", "--set", "train.progress=false"]) == 0  # a resumable option
    assert main(args + FAST + ["--resume"]) == 0  # the run's own options again
    assert load_config(str(run / "config.yaml")).method.intensity_augment is False
