import dataclasses
import os
import re
import shutil
import warnings

import pytest
import torch
from PIL import Image

from dann.config import DataConfig, ModelConfig, replace
from dann.data import Domain, data_paths, read_images
from dann.data import images as images_module
from dann.data.images import default_workers, to_rgb
from dann.data.loaders import ClassBalance, LoaderBatches, StepBatches, batch_indices
from dann.data.transforms import ToNormalizedTensor, resolve_image_config
from dann.errors import ConfigError, DataError, DataWarning
from dann.plan import build_run_data
from dann.training.distributed import World
from dann.training.trainer import batch_streams

from .shapes import LAYOUTS, LIST_LAYOUTS, unlabeled_target

TIMM = ModelConfig(backbone="test_resnet")


def folder_cfg(paths, **keys):
    values = {"source": str(paths["source"]), "target": str(paths["target"]), "image_size": 32, "num_workers": 0}
    return DataConfig(**(values | keys))


def test_class_folders_flat_folders_and_lists_agree(shape_folders, tmp_path):
    data = build_run_data(folder_cfg(shape_folders, val_fraction=0.25), TIMM)
    assert data.classes == ["circle", "square", "triangle"] and data.input_shape == (3, 32, 32)
    assert len(data.source_train) == 18 and len(data.source_val) == 6 and data.target_train.y is None
    assert data.target_eval.y.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # kept for evaluation only
    flat = build_run_data(folder_cfg(shape_folders, target=str(shape_folders["flat"])), TIMM)
    assert len(flat.target_train) == 12 and flat.target_eval is None
    listed = tmp_path / "lists" / "source.csv"
    listed.parent.mkdir()
    rows = ["path,label"] + [  # paths relative to the list file's folder
        f"{os.path.relpath(p, listed.parent)},{lab}"
        for p, lab in zip(*_paths_and_labels(shape_folders["source"]), strict=True)
    ]
    listed.write_text("\n".join(rows) + "\n")
    from_list = build_run_data(folder_cfg(shape_folders, source=str(listed), val_fraction=0.25), TIMM)
    assert from_list.source_train.paths == data.source_train.paths
    assert torch.equal(from_list.source_train.y, data.source_train.y)


def _paths_and_labels(root):
    images = read_images(root)
    return images.paths, images.labels


def test_txt_lists_and_root_relative_paths(shape_folders, tmp_path):
    paths, labels = _paths_and_labels(shape_folders["target"])
    (tmp_path / "target.txt").write_text("".join(f"{p} {lab}\n" for p, lab in zip(paths, labels, strict=True)))
    cfg = DataConfig(root=str(shape_folders["source"].parent), source="source", target=str(tmp_path / "target.txt"))
    data = build_run_data(cfg, TIMM)
    assert data.target_eval.y.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_nothing_is_decoded_when_a_dataset_is_built(shape_folders, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(images_module, "decode", lambda path: calls.append(path))
    garbage = tmp_path / "garbage"
    shutil.copytree(shape_folders["source"], garbage)
    for p in garbage.rglob("*.png"):
        p.write_bytes(b"not an image")
    build_run_data(folder_cfg(shape_folders, source=str(garbage)), TIMM)
    assert calls == []


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 200, (200, 200, 200)),
        ("I;16", 128 * 257, (128, 128, 128)),
        ("I", 40000, (156, 156, 156)),  # 16-bit content stored as 32-bit: 40000 / 257
        ("F", 0.5, (128, 128, 128)),
        ("RGBA", (10, 20, 30, 0), (0, 0, 0)),  # fully transparent → black
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("1", 1, (255, 255, 255)),
    ],
)
def test_every_mode_becomes_rgb(mode, value, expected):
    img = Image.new(mode, (4, 4), value)
    rgb = to_rgb(img)
    assert rgb.mode == "RGB" and rgb.getpixel((1, 1)) == expected


def test_palette_with_transparency_is_composited():
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    assert to_rgb(img).getpixel((0, 0)) == (255, 0, 0) and to_rgb(img).getpixel((1, 0)) == (0, 0, 0)


def test_generated_files_of_all_modes_load_as_normalized_rgb_tensors(shape_folders):
    data = build_run_data(folder_cfg(shape_folders, augment=False), TIMM)
    modes = {Image.open(p).mode for p in data.target_eval.paths}
    assert {"RGB", "L", "P", "RGBA", "I;16"} <= modes
    x, idx = next(data.target_eval.batches(64))
    assert x.shape == (18, 3, 32, 32) and idx.tolist() == list(range(18)) and x.dtype == torch.float32
    assert -1.01 <= x.min() and x.max() <= 1.01  # test_resnet's timm config: mean = std = 0.5


def test_image_config_follows_timm_and_config():
    cfg = resolve_image_config(DataConfig(), ModelConfig(backbone="resnet50"))
    assert cfg.size == 224 and cfg.interpolation == "bicubic" and cfg.mean == (0.485, 0.456, 0.406)
    assert resolve_image_config(DataConfig(), ModelConfig(backbone="test_resnet")).mean == (0.5, 0.5, 0.5)
    assert resolve_image_config(DataConfig(image_size=64), ModelConfig(backbone="test_resnet")).size == 64
    for small in ("auto", "lenet", "lenet_conv", "mlp"):  # no timm config: the paper's digit size, not 224
        assert resolve_image_config(DataConfig(), ModelConfig(backbone=small)).size == 28


def test_numpy_normalization_matches_torchvision():
    from torchvision.transforms import v2

    img = Image.fromarray(torch.randint(0, 256, (5, 7, 3), dtype=torch.uint8).numpy())
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    reference = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])(img)
    assert torch.allclose(ToNormalizedTensor(mean, std)(img), reference, atol=1e-5)


def _bad_copy(shape_folders, tmp_path, name="target"):
    folder = tmp_path / name
    shutil.copytree(shape_folders[name], folder)
    bad = folder / "circle" / "circle_0.png"
    bad.write_bytes(Image.new("RGB", (8, 8)).tobytes()[:20])  # not a PNG
    truncated = next((folder / "square").glob("*.jpg"))
    truncated.write_bytes(truncated.read_bytes()[:200])  # a JPEG cut short
    return folder, bad, truncated


def test_unreadable_files_fail_with_their_path_or_are_skipped_and_counted(shape_folders, tmp_path):
    folder, bad, truncated = _bad_copy(shape_folders, tmp_path)
    data = build_run_data(folder_cfg(shape_folders, target=str(folder)), TIMM)
    with pytest.raises(DataError, match=f"{bad}: cannot read this image file.*skip_bad_images=true"):
        list(data.target_eval.batches(64))
    data = build_run_data(folder_cfg(shape_folders, target=str(folder), skip_bad_images=True), TIMM)
    x, idx = zip(*data.target_eval.batches(5), strict=True)
    assert sum(len(b) for b in x) == 16 and data.skipped_images() == sorted([str(bad), str(truncated)])
    kept = torch.cat(idx).tolist()
    assert str(bad) not in [data.target_eval.paths[i] for i in kept]


def test_decompression_bomb_guard_stays_on(shape_folders, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32×32 images are now "bombs" (> 2 × 100 pixels)
    data = build_run_data(folder_cfg(shape_folders), TIMM)
    with pytest.raises(DataError, match="decompression-bomb guard"):
        list(data.target_eval.batches(4))


def test_class_matching_by_name(shape_folders, tmp_path):
    extra = tmp_path / "extra"
    shutil.copytree(shape_folders["target"], extra)
    shutil.copytree(extra / "circle", extra / "star")
    with pytest.raises(DataError, match=f"class 'star' of {extra} is not a class of {shape_folders['source']}"):
        build_run_data(folder_cfg(shape_folders, target_eval=str(extra)), TIMM)  # labeled evaluation: class folders
    unlabeled = f"{extra} is read as unlabeled images, so no target accuracy is reported: its subfolders star are not"
    with pytest.warns(
        DataWarning, match=f"{unlabeled} classes of {shape_folders['source']}, though circle, square, tri"
    ):
        data = build_run_data(folder_cfg(shape_folders, target=str(extra)), TIMM)  # the target of training: unlabeled
    assert len(data.target_train) == 24 and data.target_train.y is None and data.target_eval is None
    fewer = tmp_path / "fewer"
    shutil.copytree(shape_folders["target"], fewer)
    shutil.rmtree(fewer / "triangle")
    with pytest.warns(DataWarning, match=f"{fewer} has no images of 1 class.*triangle"):
        data = build_run_data(folder_cfg(shape_folders, target=str(fewer)), TIMM)
    assert data.classes == ["circle", "square", "triangle"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "no image files"),
        (lambda d: [(d / "c").mkdir(), (d / "a.png").write_bytes(b"x"), (d / "c" / "b.png").write_bytes(b"x")],
         "holds image files and also subfolders with images"),
        (lambda d: (d / "l.csv").write_text("path,label\nnope.png,a\n"), r"l\.csv names 1 missing file.*nope\.png"),
        (lambda d: (d / "l.csv").write_text("a.png,x,1,2\n"), r"l\.csv, row 1: expected 3 columns"),
        (lambda d: (d / "l.csv").write_text("a.png,x,1\nb.png,x\n"), r"l\.csv, row 2: expected 3 columns"),
        (lambda d: (d / "l.csv").write_text("a.png,x,heavy\n"), r"l\.csv, row 1: weight 'heavy' is not a number"),
        (lambda d: (d / "l.csv").write_text("a.png,x,1\nb.png,x,-2\n"), r"l\.csv, row 2: weight -2 is not allowed"),
        (lambda d: (d / "l.csv").write_text("a.png,x,1\nb.png,x,nan\n"), r"l\.csv, row 2: weight nan is not allow"),
        (lambda d: (d / "l.csv").write_text("a.png,x,0\nb.png,x,0\n"), r"l\.csv: every weight is zero"),
        (lambda d: (d / "l.csv").write_text("path,label\n"), r"l\.csv lists no images"),
        (lambda d: (d / "notes.md").write_text("hi"), r"notes\.md is neither a folder of images nor a list file"),
    ],
)  # fmt: skip
def test_bad_folders_and_lists_are_named(tmp_path, setup, message):
    folder = tmp_path / "d"
    folder.mkdir()
    setup(folder)
    target = next((p for p in folder.iterdir() if p.suffix in (".csv", ".md")), folder)
    with pytest.raises(DataError, match=message):
        read_images(target)


def test_source_without_labels_and_mixed_formats_are_refused(shape_folders, tmp_path):
    with pytest.raises(DataError, match="needs labels"):
        build_run_data(folder_cfg(shape_folders, source=str(shape_folders["flat"])), TIMM)
    with pytest.raises(ConfigError, match=r"mixing \.npz files with image folders"):
        build_run_data(folder_cfg(shape_folders, target=str(tmp_path / "t.npz")), TIMM)
    with pytest.raises(DataError, match=r"image folder .*nowhere does not exist"):
        build_run_data(folder_cfg(shape_folders, source=str(tmp_path / "nowhere")), TIMM)


def _stream(domain, start, steps, workers=0, augment=True):
    domain.pipeline = dataclasses.replace(domain.pipeline, num_workers=workers)
    batches = LoaderBatches(domain, 5, seed=3, device=torch.device("cpu"), start=start, augment=augment)
    return [batches.get(s) for s in range(start, start + steps)]


def test_folder_batches_are_a_pure_function_of_the_step_so_resume_is_exact(shape_folders):
    data = build_run_data(folder_cfg(shape_folders, color_jitter=0.4, vflip=0.5), TIMM)
    full = _stream(data.source_train, 0, 6)
    resumed = _stream(data.source_train, 4, 2)
    for (xa, ya), (xb, yb) in zip(full[4:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    n = len(data.source_train)
    labels = torch.cat([y for _, y in full])  # the same stream of seeded permutations as arrays use
    assert torch.equal(labels, data.source_train.y[torch.cat([batch_indices(n, 5, s, 3) for s in range(6)])])
    assert not torch.equal(full[0][0], _stream(data.source_train, 0, 1, augment=False)[0][0])  # augmented


def test_workers_deliver_the_same_batches(shape_folders):
    data = build_run_data(folder_cfg(shape_folders, color_jitter=0.4), TIMM)
    one = _stream(data.source_train, 2, 2, workers=0)
    two = _stream(data.source_train, 2, 2, workers=2)
    for (xa, _), (xb, _) in zip(one, two, strict=True):
        assert torch.equal(xa, xb)


def test_a_training_view_neither_seeds_nor_moves_the_global_generators(shape_folders, monkeypatch):
    """Augmentation draws from a generator of its own: seeding torch's global one would also seed every GPU's (and
    leave them seeded), changing what dropout draws on the device after each image."""
    domain = build_run_data(folder_cfg(shape_folders, color_jitter=0.4, vflip=0.5), TIMM).source_train
    calls = []
    for name in ("manual_seed", "seed", "set_rng_state"):
        monkeypatch.setattr(torch, name, lambda *a, name=name, **k: calls.append(f"torch.{name}"))
    for name in ("manual_seed", "manual_seed_all", "seed", "seed_all", "set_rng_state"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, name=name, **k: calls.append(f"torch.cuda.{name}"))
    before = torch.get_rng_state()
    views = [domain[(i, 1000 + i)][0] for i in range(6)]
    assert calls == [] and torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(view, domain[(i, 1000 + i)][0]) for i, view in enumerate(views))  # a pure function of seed
    assert not torch.equal(views[0], domain[(0, 999)][0])


@pytest.mark.parametrize("keys", [{}, {"color_jitter": 0.4, "vflip": 0.5, "hflip": 0.3}, {"crop_scale": (0.05, 0.1)}])
def test_augmentation_equals_torchvisions_transforms_seeded_the_same_way(shape_folders, keys):
    """The crop, flips and jitter are torchvision's, with their parameters drawn as torchvision draws them: from a
    local generator here, from the (seeded) global one in torchvision."""
    from torchvision.transforms import v2

    from dann.data.images import load_rgb
    from dann.data.transforms import ToNormalizedTensor, train_transform

    cfg = folder_cfg(shape_folders, **keys)
    image = resolve_image_config(cfg, TIMM)
    ops = [v2.RandomResizedCrop(image.size, scale=cfg.crop_scale, antialias=True)]
    ops += [v2.RandomHorizontalFlip(cfg.hflip)] if cfg.hflip else []
    ops += [v2.RandomVerticalFlip(cfg.vflip)] if cfg.vflip else []
    ops += [v2.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter)] if cfg.color_jitter else []
    reference = v2.Compose([*ops, ToNormalizedTensor(image.mean, image.std)])
    ours = train_transform(image, cfg)
    img = load_rgb(read_images(shape_folders["source"]).paths[0])
    for seed in range(20):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            expected = reference(img)
        assert torch.equal(ours(img, torch.Generator().manual_seed(seed)), expected), seed


def test_class_balanced_batches():
    y = torch.tensor([0] * 90 + [1] * 10)
    balance = ClassBalance(y)
    drawn = torch.cat([y[balance.indices(64, s, 0)] for s in range(50)])
    assert abs(drawn.float().mean().item() - 0.5) < 0.05  # rare class as often as the common one
    assert torch.equal(balance.indices(64, 7, 0), balance.indices(64, 7, 0))
    arrays = Domain(torch.arange(len(y), dtype=torch.float32)[:, None], y)
    batches = StepBatches(arrays, 64, 0, torch.device("cpu"), augment=False, balanced=True)  # arrays: same draws
    assert torch.equal(batches.get(7)[1], y[balance.indices(64, 7, 0)])


def test_relative_paths_resolve_against_root(tmp_path):
    cfg = DataConfig(root=str(tmp_path), source="a.npz", target="/abs/b.npz")
    assert data_paths(cfg) == (str(tmp_path / "a.npz"), "/abs/b.npz", "")


def test_default_loader_workers_share_the_cpus_between_streams_and_processes(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    monkeypatch.setattr(images_module, "CGROUP_CPU_MAX", tmp_path / "absent")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers(None) == 8 and default_workers(None, share=2) == 6  # DANN: source and target loaders
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes on this machine
    assert default_workers(None, share=2) == 1 and default_workers(None) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_workers(None, share=2) == 1  # never none
    assert default_workers(5, share=2) == 5 and default_workers(0) == 0  # data.num_workers, when set, is kept
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(images_module, "CGROUP_CPU_MAX", quota)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    quota.write_text("250000 100000\n")  # a container limited to 2.5 CPUs on a 12-core host
    assert images_module.usable_cpus() == 3 and default_workers(None) == 3
    quota.write_text("max 100000\n")
    assert images_module.usable_cpus() == 12


def test_training_loaders_get_their_share_of_the_workers(shape_folders, tiny_cfg, monkeypatch):
    """The trainer's two image streams each start ``default_workers(None, share=2)`` worker processes."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(images_module, "CGROUP_CPU_MAX", shape_folders["source"] / "absent")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    data = build_run_data(folder_cfg(shape_folders, num_workers=None), TIMM)
    cfg = replace(tiny_cfg, train={"batch_size": 4})
    for uses_target, expected in ((True, 2), (False, 4)):
        rows = World().rows(cfg.train.batch_size)
        streams = [s for s in batch_streams(cfg, data, uses_target, 0, torch.device("cpu"), rows) if s is not None]
        assert [s._batches._num_workers for s in streams] == [expected] * len(streams)
        del streams  # stops the workers


def test_a_source_folder_with_a_single_class_is_an_error(shape_folders, tmp_path):
    only = tmp_path / "only"
    shutil.copytree(shape_folders["source"] / "circle", only / "circle")
    with pytest.raises(DataError, match=r"only: every source sample has label 0 \('circle'\); a classifier needs"):
        build_run_data(folder_cfg(shape_folders, source=str(only), target=str(shape_folders["flat"])), TIMM)


def image_list_layout(shape_folders, root, list_dir="image_list", prefix="", ext=".txt"):
    """``root/src``, ``root/tgt`` (copies of the shape folders) and ``root/<list_dir>/{source,target}<ext>`` whose
    entries are relative to ``root``, in the layout other DANN tools' ImageList reads: ``src/circle/0.png 0``."""
    for name, folder in (("src", shape_folders["source"]), ("tgt", shape_folders["target"])):
        shutil.copytree(folder, root / name)
    lists = root / list_dir
    lists.mkdir(parents=True, exist_ok=True)
    for name, folder in (("source", "src"), ("target", "tgt")):
        images = read_images(root / folder)
        classes = sorted(set(images.labels))
        rows = [
            (f"{prefix}{os.path.relpath(p, root)}", str(classes.index(lab)))
            for p, lab in zip(images.paths, images.labels, strict=True)
        ]
        if ext == ".csv":
            text = "path,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows)
        else:
            text = "".join(f"{p} {lab}\n" for p, lab in rows)
        (lists / f"{name}{ext}").write_text(text)
    return lists


@pytest.mark.parametrize(
    ("list_dir", "prefix", "ext"),
    [("image_list", "", ".txt"), ("image_list", "./", ".csv"), ("lists/office/v2", "", ".txt"), (".", "", ".lst")],
)
def test_list_entries_resolve_against_data_root_when_it_is_set(shape_folders, tmp_path, list_dir, prefix, ext):
    root = tmp_path / "ds"
    lists = image_list_layout(shape_folders, root, list_dir, prefix, ext)
    rel = os.path.relpath(lists, root)
    cfg = folder_cfg(shape_folders, root=str(root), source=f"{rel}/source{ext}", target=f"{rel}/target{ext}")
    data = build_run_data(cfg, TIMM)
    assert data.classes == ["0", "1", "2"] and len(data.source_train) + len(data.source_val) == 24
    assert all(p.startswith(str(root / "src")) for p in data.source_train.paths)
    assert data.target_eval.y.tolist() == [0] * 6 + [1] * 6 + [2] * 6


@pytest.mark.parametrize("list_dir", ["image_list", "lists/office/v2"])
def test_list_entries_found_under_a_parent_folder_name_it_and_the_setting(shape_folders, tmp_path, list_dir):
    root = tmp_path / "ds"
    lists = image_list_layout(shape_folders, root, list_dir)
    source = lists / "source.txt"
    cfg = folder_cfg(shape_folders, source=str(source), target=str(lists / "target.txt"))
    message = (
        rf"list file {re.escape(str(source))} names 24 missing file\(s\), e\.g\. {re.escape(str(lists / 'src'))}.*; "
        rf"they exist under {re.escape(str(root))}: set data.root={re.escape(str(root))} to read them from there, "
        rf"and name the list relative to it \({re.escape(list_dir)}/source\.txt\)$"
    )
    with pytest.raises(DataError, match=message):
        build_run_data(cfg, TIMM)
    rel = os.path.relpath(source, root)
    fixed = folder_cfg(shape_folders, root=str(root), source=rel, target=os.path.relpath(lists / "target.txt", root))
    assert len(build_run_data(fixed, TIMM).target_train) == 18  # what the message says works


def test_list_entries_relative_to_the_list_with_data_root_set_say_where_they_are(shape_folders, tmp_path):
    lists = image_list_layout(shape_folders, tmp_path / "ds", "image_list")
    for name in ("source", "target"):  # entries relative to the list's own folder
        text = (lists / f"{name}.txt").read_text()
        (lists / f"{name}.txt").write_text(text.replace("src/", "../src/").replace("tgt/", "../tgt/"))
    root = str(tmp_path / "ds")
    cfg = folder_cfg(shape_folders, root=root, source="image_list/source.txt", target="image_list/target.txt")
    message = rf"; they exist under {re.escape(str(lists))}: with data.root set, relative entries are read from it"
    with pytest.raises(DataError, match=message):
        build_run_data(cfg, TIMM)
    (lists / "lost.txt").write_text("nowhere/a.png 0\nnowhere/b.png 1\n")
    cfg = folder_cfg(shape_folders, root=root, source="image_list/lost.txt", target="image_list/target.txt")
    with pytest.raises(
        DataError, match=rf"missing file.*\(relative entries are read from {re.escape(root)}, data.root"
    ):
        build_run_data(cfg, TIMM)


def test_lists_for_evaluate_and_predict_point_to_the_folder_they_are_read_from(shape_folders, tmp_path):
    lists = image_list_layout(shape_folders, tmp_path / "ds", "image_list")
    with pytest.raises(DataError, match=r"under .*ds: relative entries are read from the list file's folder; write"):
        read_images(lists / "target.txt", hint_root=False)


@pytest.mark.parametrize("layout", [*LAYOUTS, *LIST_LAYOUTS])
def test_an_unlabeled_target_is_read_whatever_its_layout(layout, shape_folders, tmp_path):
    """The target of training is unlabeled by definition: a folder is read whatever its depth (its subfolders are
    days or stations, not classes), a list as one path per line whatever the path holds (spaces, commas); every
    image keeps its path, subfolders included. ``dann check-data`` reads it as training does."""
    from dann.data.check import check_data

    target, expected = unlabeled_target(shape_folders["flat"], tmp_path, layout)
    cfg = folder_cfg(shape_folders, target=str(target))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # nothing to warn about: no labels were expected
        data = build_run_data(cfg, TIMM)
    assert sorted(data.target_train.paths) == sorted(map(str, expected)) and len(expected) == 12
    assert data.target_train.y is None and data.target_eval is None
    assert check_data(cfg, workers=1).files["target"] == 12


@pytest.mark.parametrize(
    "labels",
    [["day1", "day2"], ["circle", "day2"], ["night"]],
    ids=["days", "a-class-and-a-day", "one-name"],
)
def test_target_list_labels_that_are_not_all_classes_leave_it_unlabeled(labels, shape_folders, tmp_path):
    paths = sorted(str(p) for p in shape_folders["flat"].iterdir())
    listed = tmp_path / "target.txt"
    listed.write_text("".join(f"{p} {labels[i % len(labels)]}\n" for i, p in enumerate(paths)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = build_run_data(folder_cfg(shape_folders, target=str(listed)), TIMM)
    assert data.target_train.paths == paths and data.target_train.y is None and data.target_eval is None
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    warned = (
        f"{listed} is read as unlabeled images, so no target accuracy is reported: its labels day2 are not classes of "
        f"{shape_folders['source']}, though circle are; give labeled target images with data.target_eval to score them"
    )
    assert said == ([warned] if "circle" in labels else [])


@pytest.mark.parametrize("layout", ["one-level", "two-levels", "beside-subfolders", "flat"])
def test_a_labeled_evaluation_target_still_needs_class_subfolders(layout, shape_folders, tmp_path):
    target, _ = unlabeled_target(shape_folders["flat"], tmp_path, layout)
    says = "holds image files and also subfolders" if layout == "beside-subfolders" else "is not a class of"
    says = "the target evaluation data needs labels" if layout == "flat" else says
    with pytest.raises(DataError, match=says):
        build_run_data(folder_cfg(shape_folders, target_eval=str(target)), TIMM)
