"""The practitioner's path through the CLI: image folders → train (a small timm model, random init) → evaluate →
predict; a local pretrained file; each bad input gets one line naming the file or folder (exit 2)."""

import csv
import dataclasses
import json
import shutil

import pytest
import torch
from PIL import Image

import dann
from dann.cli import main
from dann.data import read_images
from dann.errors import DataError
from dann.plan import build_run_data

from .shapes import LAYOUTS, LIST_LAYOUTS, unlabeled_target

FAST = [
    "--backbone", "test_resnet", "--steps", "6", "--quiet",
    "--set", "data.image_size=32", "--set", "data.num_workers=0", "--set", "train.batch_size=8",
    "--set", "train.eval_every=3", "--set", "train.log_every=3", "--set", "train.device=cpu",
    "--set", "train.threads=1",  # runs compared bit for bit use one count (auto follows the free cores of the moment)
]  # fmt: skip


def train(shape_folders, run, *extra, target="target"):
    args = ["train", "--source", str(shape_folders["source"]), "--target", str(shape_folders[target])]
    return main([*args, "--out", str(run), *FAST, *extra])


@pytest.fixture(scope="module")
def run(shape_folders, tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "run"
    assert train(shape_folders, path) == 0
    return path


def test_train_evaluate_predict_on_folders(run, shape_folders, tmp_path, capsys):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6] and "oracle" in records[-1]
    model = dann.load_run(run)
    assert model.image.size == 32 and model.net.num_features == 256  # timm backbones get the 256-wide bottleneck

    assert main(["evaluate", "--run", str(run), "--data", str(shape_folders["target"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 18 and metrics["acc"] == pytest.approx(records[-1]["oracle"]["target_acc"])
    out_dir = run / "eval" / "target-last"
    assert (out_dir / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.reader((out_dir / "confusion.csv").open()))
    assert rows[0] == ["true \\ predicted", "circle", "square", "triangle"]
    assert [sum(map(int, r[1:])) for r in rows[1:]] == [6, 6, 6]
    assert main(["evaluate", "--run", str(run), "--data", str(shape_folders["target"])]) == 2
    assert f"{out_dir / 'metrics.json'} already exists; pass --overwrite to replace it" in capsys.readouterr().err

    preds = tmp_path / "preds.csv"
    assert main(["predict", "--run", str(run), "--images", str(shape_folders["target"]), "--out", str(preds)]) == 0
    table = list(csv.DictReader(preds.open()))
    header = ["path", "predicted_class", "confidence", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    assert list(table[0]) == header and len(table) == 18  # recursive over the class subfolders
    truth = dict(zip(*[getattr(read_images(shape_folders["target"]), k) for k in ("paths", "labels")], strict=True))
    assert sum(r["predicted_class"] == truth[r["path"]] for r in table) / 18 == pytest.approx(metrics["acc"])
    for r in table:
        probs = [float(r[f"prob_{j}"]) for j in (1, 2, 3)]
        assert r["class_1"] == r["predicted_class"] and probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)  # three classes: the top 3 are all of them


def test_files_whose_names_are_not_utf8_train_cache_and_predict(shape_folders, tmp_path, capsys):
    """A file name with a byte that is not UTF-8 (Python reads it as a lone surrogate) goes through the data check, the
    fingerprint, the decoded-image cache, the report and the predictions CSV, which writes it backslash-escaped."""
    import os

    folders = {k: tmp_path / k for k in ("source", "target")}
    for k, folder in folders.items():
        shutil.copytree(shape_folders[k], folder)
        first = sorted((folder / "circle").iterdir())[0]
        os.rename(os.fsencode(first), os.fsencode(first.parent) + b"/caf\xe9-\xff.png")  # Latin-1 bytes
    args = ["train", "--source", str(folders["source"]), "--target", str(folders["target"]), "--out"]
    assert main([*args, str(tmp_path / "run"), *FAST, "--set", "data.cache=on", "--check-data"]) == 0
    preds = tmp_path / "preds.csv"
    assert (
        main(["predict", "--run", str(tmp_path / "run"), "--images", str(folders["target"]), "--out", str(preds)]) == 0
    )
    text = preds.read_bytes().decode("utf-8")  # valid UTF-8
    assert "caf\\udce9-\\udcff.png" in text and len(text.splitlines()) == 19
    assert "Traceback" not in capsys.readouterr().err


def test_evaluate_counts_target_classes_unknown_to_the_model(run, shape_folders, tmp_path, capsys):
    folder = tmp_path / "target"
    shutil.copytree(shape_folders["target"], folder)
    shutil.copytree(folder / "circle", folder / "star")  # a class the source never had
    shutil.copytree(folder / "circle", folder / "moon")
    (next((folder / "moon").iterdir())).unlink()
    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(run), "--images", str(folder), "--out-dir", str(out), "--checkpoint", "best"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "11 image(s) of 2 class(es) unknown to the model (moon: 5, star: 6)" in captured.err
    assert "computed on the 18 images of its classes" in captured.err
    assert "  star: unknown to the model (6 images, left out of the accuracy; predicted as" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    known = dann.evaluate(run, shape_folders["target"], checkpoint="best")
    assert metrics["n"] == 18 and metrics["acc"] == known["acc"] and metrics["confusion"] == known["confusion"]
    assert {name: v["n"] for name, v in metrics["unknown_to_model"].items()} == {"moon": 5, "star": 6}
    assert sum(metrics["unknown_to_model"]["star"]["predicted"].values()) == 6
    rows = {r[0]: r[1:] for r in csv.reader((out / "confusion.csv").open())}
    assert sum(map(int, rows["star (unknown to the model)"])) == 6
    for name in ("circle", "square", "triangle"):
        shutil.rmtree(folder / name)
    assert main([*args, "--overwrite"]) == 2
    assert "none of its classes (moon, star) is a class of the run" in capsys.readouterr().err


def test_predict_top_k_is_capped_and_flat_folders_work(run, shape_folders, tmp_path, capsys):
    preds = tmp_path / "p.csv"
    args = ["predict", "--run", str(run), "--images", str(shape_folders["flat"]), "--out", str(preds), "--top-k", "1"]
    assert main(args) == 0
    assert capsys.readouterr().out == f"wrote {preds}: 12 predictions, by {run}/checkpoints/last.pt\n"
    table = list(csv.DictReader(preds.open()))
    assert len(table) == 12 and list(table[0])[-2:] == ["class_1", "prob_1"]
    assert main([*args[:-2], "--top-k", "9", "--overwrite"]) == 0
    assert next(csv.DictReader(preds.open())).keys() >= {"class_3", "prob_3"}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: d.mkdir(), "no image files"),
        (lambda d: [d.mkdir(), (d / "readme.txt").write_text("hi")], "no image files"),
    ],
)
def test_predict_on_an_empty_folder_names_it(run, tmp_path, capsys, setup, message):
    folder = tmp_path / "empty"
    setup(folder)
    assert main(["predict", "--run", str(run), "--images", str(folder), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert f"{folder}: {message}" in err and "Traceback" not in err and not (tmp_path / "p.csv").exists()


def test_unreadable_and_oversized_images_are_named(run, shape_folders, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "target"
    shutil.copytree(shape_folders["target"], folder)
    bad = next((folder / "square").glob("*.png"))
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    args = ["predict", "--run", str(run), "--images", str(folder), "--out", str(tmp_path / "p.csv")]
    assert main(args) == 2
    assert f"{bad}: cannot read this image file (" in (err := capsys.readouterr().err)
    assert err.endswith("; pass --skip-bad-images to skip unreadable files (`dann check-data` lists them all)\n")
    with pytest.raises(DataError, match=r"; pass `skip_bad=True` to skip unreadable files"):  # the API's parameter
        dann.predict(run, folder, tmp_path / "p.csv")
    assert main([*args, "--skip-bad-images"]) == 0
    assert f"skipped 1 unreadable image file(s): {bad}" in capsys.readouterr().err
    assert len(list(csv.DictReader((tmp_path / "p.csv").open()))) == 17
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert main(["evaluate", "--run", str(run), "--data", str(folder), "--out-dir", str(tmp_path / "e")]) == 2
    assert "refused by Pillow's decompression-bomb guard" in capsys.readouterr().err


def test_an_evaluation_batch_of_only_unreadable_files_is_skipped(run, shape_folders, tmp_path):
    """18 files in batches of 4: the last batch holds two files, both corrupt. Evaluation (the trainer's, evaluate's)
    skips it as training skips bad files, instead of running the network on an empty batch."""
    from dann.evaluation.metrics import evaluate_domain, predict_batches

    folder = tmp_path / "target"
    shutil.copytree(shape_folders["target"], folder)
    bad = sorted((folder / "triangle").iterdir())[-2:]
    for path in bad:
        path.write_bytes(b"\x89PNG\r\n\x1a\n corrupt")
    cfg = dataclasses.replace(dann.load_run(run).config.data, target=str(folder), skip_bad_images=True)
    domain = build_run_data(cfg, dann.load_run(run).config.model).target_eval
    assert [str(p) for p in bad] == domain.paths[-2:]
    net = dann.load_run(run).net
    metrics = evaluate_domain(net, domain, 3, batch_size=4)
    assert metrics["n"] == 16 and sorted(domain.bad) == [str(p) for p in bad]
    _, index = predict_batches(net, domain.batches(4))
    assert index.tolist() == list(range(16))
    for path in folder.rglob("*.*"):
        path.write_bytes(b"corrupt")
    with pytest.raises(DataError, match=f"{folder}: none of its 18 image file\\(s\\) could be read, e.g. {folder}/"):
        dann.predict(run, folder, tmp_path / "p.csv", skip_bad=True)


def test_training_skips_and_counts_unreadable_files(shape_folders, tmp_path, capsys):
    folder = tmp_path / "target"
    shutil.copytree(shape_folders["target"], folder)
    bad = next((folder / "circle").glob("*.jpg"))
    bad.write_bytes(b"\xff\xd8\xff broken")
    assert train({**shape_folders, "target": folder}, tmp_path / "r1") == 2
    assert f"{bad}: cannot read this image file" in capsys.readouterr().err
    skip = ["--set", "data.skip_bad_images=true", "--steps", "3"]
    assert train({**shape_folders, "target": folder}, tmp_path / "r2", *skip) == 0
    assert f"skipped 1 unreadable image file(s) (data.skip_bad_images): {bad}" in capsys.readouterr().out
    last = json.loads((tmp_path / "r2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped_images"] == {"count": 1, "first": [str(bad)]}


def test_class_mismatch_messages(shape_folders, tmp_path, capsys):
    extra = tmp_path / "extra"
    shutil.copytree(shape_folders["target"], extra)
    shutil.copytree(extra / "circle", extra / "star")
    assert train(shape_folders, tmp_path / "r", "--target-eval", str(extra)) == 2  # labeled evaluation: classes only
    err = capsys.readouterr().err
    assert f"class 'star' of {extra} is not a class of {shape_folders['source']}" in err
    assert not (tmp_path / "r").exists()  # nothing is created before the data is accepted


def test_local_pretrained_file_round_trip(shape_folders, tmp_path, capsys):
    import timm

    torch.manual_seed(123)
    weights = timm.create_model("test_resnet", num_classes=0).state_dict()
    torch.save(weights, tmp_path / "backbone.pth")
    extra = ["--set", f"model.pretrained_file={tmp_path / 'backbone.pth'}", "--set", "optim.lr=0.0001", "--steps", "2"]
    assert train(shape_folders, tmp_path / "run", *extra) == 0
    (tmp_path / "backbone.pth").unlink()  # the checkpoint holds the weights: nothing else is needed afterwards
    trained = dann.load_run(tmp_path / "run").net.backbone.state_dict()
    moved = max(
        (trained[k] - v).abs().max().item() for k, v in weights.items() if v.is_floating_point() and "running" not in k
    )
    assert moved < 1e-3  # started from the file (a fresh random init differs by ~0.1), trained at backbone lr × 0.1
    preds = tmp_path / "p.csv"
    assert (
        main(["predict", "--run", str(tmp_path / "run"), "--images", str(shape_folders["flat"]), "--out", str(preds)])
        == 0
    )

    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "other.pth")
    assert train(shape_folders, tmp_path / "bad", "--set", f"model.pretrained_file={tmp_path / 'other.pth'}") == 2
    assert f"model.pretrained_file {tmp_path / 'other.pth'} does not fit backbone" in capsys.readouterr().err


def test_folder_resume_reproduces_the_uninterrupted_run(shape_folders, run, tmp_path, crash_after_first_checkpoint):
    crash_after_first_checkpoint(train, shape_folders, tmp_path / "crashed")
    assert main(["train", "--out", str(tmp_path / "crashed"), "--resume"]) == 0
    full, resumed = dann.load_run(run), dann.load_run(tmp_path / "crashed")
    assert resumed.step == 6 and full.net.state_dict().keys() == resumed.net.state_dict().keys()
    assert all(torch.equal(v, resumed.net.state_dict()[k]) for k, v in full.net.state_dict().items())


def test_folder_resume_is_exact_when_training_draws_from_the_global_generator(
    shape_folders, tmp_path, crash_after_first_checkpoint
):
    """Dropout draws from the global generator, which the checkpoint restores; nothing else may draw from it in
    between (a DataLoader iterator takes its workers' base seed from its own generator, not the global one)."""
    dropout = ("--method", "dann", "--set", "model.dropout=0.5", "--set", "model.discriminator_dims=[16]")
    assert train(shape_folders, tmp_path / "full", *dropout) == 0
    crash_after_first_checkpoint(train, shape_folders, tmp_path / "crashed", *dropout)
    assert main(["train", "--out", str(tmp_path / "crashed"), "--resume"]) == 0
    full, resumed = dann.load_run(tmp_path / "full"), dann.load_run(tmp_path / "crashed")
    assert resumed.step == 6 and resumed.config.model.dropout == 0.5
    assert all(torch.equal(v, resumed.net.state_dict()[k]) for k, v in full.net.state_dict().items())


def test_arrays_run_refuses_image_files(npz_files, shape_folders, tmp_path, capsys):
    args = ["train", "--source", str(npz_files["source"]), "--target", str(npz_files["target"])]
    assert main([*args, "--out", str(tmp_path / "r"), "--backbone", "mlp", "--steps", "2", "--quiet"]) == 0
    out = str(tmp_path / "p.csv")
    assert main(["predict", "--run", str(tmp_path / "r"), "--images", str(shape_folders["flat"]), "--out", out]) == 2
    assert "this run was trained on arrays" in capsys.readouterr().err


def test_folder_resume_with_gradient_accumulation_is_exact(shape_folders, tmp_path, crash_after_first_checkpoint):
    """The DataLoader stream of a resumed run starts at micro-batch step * accumulate (see dann.steps)."""
    accumulate = ("--set", "train.accumulate=2")
    assert train(shape_folders, tmp_path / "full", *accumulate) == 0
    crash_after_first_checkpoint(train, shape_folders, tmp_path / "crashed", *accumulate)
    assert main(["train", "--out", str(tmp_path / "crashed"), "--resume"]) == 0
    full, resumed = dann.load_run(tmp_path / "full"), dann.load_run(tmp_path / "crashed")
    assert resumed.step == 6
    assert all(torch.equal(v, resumed.net.state_dict()[k]) for k, v in full.net.state_dict().items())


@pytest.mark.parametrize("method", ["dann", "cdan_e", "mdd", "mcc", "mmd", "coral", "fixmatch", "shot", "dann+mcc"])
def test_every_method_trains_on_image_folders(method, shape_folders, run, tmp_path):
    """A timm backbone (BatchNorm, a bottleneck) on decoded, augmented image batches; shot starts from a trained run."""
    name, _, regularizer = method.partition("+")
    extra = ["--method", name, "--set", "train.steps=4", "--set", "train.eval_every=4"]
    if regularizer:
        extra += ["--set", f"method.regularizers={{{regularizer}: 1.0}}"]
    if name == "shot":
        extra += ["--init-from", str(run)]
    assert train(shape_folders, tmp_path / method, *extra) == 0
    model = dann.load_run(tmp_path / method)
    assert model.config.method.name == name and model.step == 4
    assert all(torch.isfinite(v).all() for v in model.net.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("layout", [*LAYOUTS, *LIST_LAYOUTS])
def test_unlabeled_targets_train_and_predict_with_their_relative_paths(layout, shape_folders, tmp_path, capsys):
    """Per-day or per-station subfolders at any depth, images beside them, list files whose paths hold spaces or
    commas: the target trains as unlabeled images, and predict names each image by its path, subfolders kept."""
    target, expected = unlabeled_target(shape_folders["flat"], tmp_path / "data", layout)
    run, preds = tmp_path / "run", tmp_path / "preds.csv"
    tiny = ["--backbone", "mlp", "--steps", "2", "--quiet", "--no-report", "--set", "data.image_size=8"]
    tiny += ["--set", "data.num_workers=0", "--set", "train.batch_size=4", "--set", "train.device=cpu"]
    args = ["train", "--source", str(shape_folders["source"]), "--target", str(target), "--out", str(run)]
    assert main([*args, *tiny]) == 0, capsys.readouterr().err
    record = json.loads((run / "data.json").read_text())
    assert record["target_train"]["n"] == 12 and record["target_eval"] is None  # every image, none taken as labeled
    assert main(["predict", "--run", str(run), "--images", str(target), "--out", str(preds)]) == 0
    table = list(csv.DictReader(preds.open()))
    assert sorted(r["path"] for r in table) == sorted(map(str, expected))
