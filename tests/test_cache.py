"""The decoded-image cache: keyed by the files, built atomically, waited for under a lock, and read as the same files,
order, labels and crops as the uncached pipeline."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch
from filelock import FileLock
from PIL import Image

import dann
from dann.cli import main
from dann.config import DataConfig, ModelConfig, load_config, replace
from dann.data import cache as cache_module
from dann.data.cache import DecodedImages, build, cache_key, wanted
from dann.data.cached import CachedImageDomain
from dann.data.loaders import LoaderBatches
from dann.errors import DataError, DataWarning
from dann.plan import build_run_data

SIDE = 24  # cache_side of a 16 px input with crop_scale (0.5, 1): 16 / sqrt(0.5) = 22.6, rounded up to 8s
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255  # normalized units → 0..255
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255


def photos(root, count: int = 16, size: tuple[int, int] = (120, 90), seed: int = 0):
    """``count`` JPEGs of ``size`` in two class folders: smooth random colour fields plus noise."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
        noisy = np.asarray(coarse).astype(np.int16) + rng.integers(-10, 10, (size[1], size[0], 3))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    return photos(tmp_path_factory.mktemp("photos"))


def folder_data(folder, cache: str, cache_dir, workers: int = 0, **data):
    cfg = DataConfig(
        source=str(folder), target=str(folder), num_workers=workers, cache=cache, cache_dir=str(cache_dir),
        **{"image_size": 16, **data},
    )  # fmt: skip
    return build_run_data(cfg, ModelConfig(backbone="lenet"))


def per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of each image of two normalized batches (N, 3, H, W), in 0..255 units: (N,)."""
    return ((a - b).abs() * STD).mean(dim=(1, 2, 3))


def files(folder) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.jpg"))


def test_the_cache_is_reused_while_the_files_stay_and_rebuilt_when_one_changes(photo_folder, tmp_path):
    folder = shutil.copytree(photo_folder, tmp_path / "photos")
    first = build(files(folder), SIDE, "bilinear", tmp_path / "cache", "photos", workers=0)
    assert first.seconds is not None and first.pixels.shape == (16, SIDE, SIDE, 3) and first.nbytes == 16 * SIDE**2 * 3
    assert tuple(first.sizes[0]) == (90, 120)  # original (height, width), before the JPEG draft scale
    again = build(files(folder), SIDE, "bilinear", tmp_path / "cache", "photos", workers=0)
    assert again.seconds is None and again.path == first.path  # read, not rebuilt
    changed = files(folder)[3]
    Image.new("RGB", (60, 80), (255, 0, 0)).save(changed)
    rebuilt = build(files(folder), SIDE, "bilinear", tmp_path / "cache", "photos", workers=0)
    assert rebuilt.seconds is not None and rebuilt.path != first.path and first.path.exists()  # never overwritten
    assert tuple(rebuilt.sizes[3]) == (80, 60) and np.abs(rebuilt.pixels[3].mean(axis=(0, 1)) - [255, 0, 0]).max() < 3
    assert np.array_equal(rebuilt.pixels[2], first.pixels[2])
    os.utime(changed, ns=(0, 0))  # the same bytes with another modification time: a new key too
    assert cache_key(files(folder), SIDE, "bilinear") != cache_key(files(folder)[:-1], SIDE, "bilinear")
    assert build(files(folder), SIDE, "bilinear", tmp_path / "cache", "photos", workers=0).path != rebuilt.path


def build_then_die(paths: list[str], root, how: type[BaseException] | None) -> None:
    """Build, but stop at the ninth file: raise ``how``, or (None) be killed with SIGKILL, which runs no cleanup."""
    shrink, calls = cache_module.shrink, []

    def stops_at_the_ninth_file(*args):
        calls.append(args[0])
        if len(calls) == 9:
            if how is None:
                os.kill(os.getpid(), signal.SIGKILL)
            raise how
        return shrink(*args)

    cache_module.shrink = stops_at_the_ninth_file
    try:
        build(paths, SIDE, "bilinear", root, "photos", workers=0)
    finally:
        cache_module.shrink = shrink


def test_an_interrupted_build_is_never_read_as_whole_and_the_next_one_starts_over(photo_folder, tmp_path):
    root, paths = tmp_path / "cache", files(photo_folder)
    final = root / f"photos-{cache_key(paths, SIDE, 'bilinear')}.npy"
    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C, or any failure, in the middle: the partial array is removed
        build_then_die(paths, root, KeyboardInterrupt)
    assert sorted(p.suffix for p in root.iterdir()) == [".lock"]
    killed = multiprocessing.get_context("fork").Process(target=build_then_die, args=(paths, root, None))
    killed.start()
    killed.join(timeout=120)
    assert killed.exitcode == -signal.SIGKILL
    (partial,) = root.glob("*.partial")  # what the killed build left: never taken for a cache
    assert DecodedImages.open(final) is None
    images = build(paths, SIDE, "bilinear", root, "photos", workers=0)
    assert images.path == final and images.seconds is not None and not partial.exists()
    assert DecodedImages.open(final) is not None and images.pixels.std() > 10  # real pixels, not zeros


def test_a_process_that_finds_the_build_locked_waits_and_reads_what_the_other_built(photo_folder, tmp_path):
    """Under torchrun every rank asks for the cache: the one holding the lock builds, the others wait on it."""
    root, paths = tmp_path / "cache", files(photo_folder)
    root.mkdir()
    key = cache_key(paths, SIDE, "bilinear")
    result = {}
    with FileLock(str(root / f"photos-{key}.lock")):  # another process (here: this test) is building
        waiter = threading.Thread(target=lambda: result.update(images=build(paths, SIDE, "bilinear", root, "photos")))
        waiter.start()
        time.sleep(0.5)
        assert waiter.is_alive() and not (root / f"photos-{key}.npy").exists()
        built = cache_module._write(paths, SIDE, "bilinear", root / f"photos-{key}.npy", workers=0)
    waiter.join(timeout=60)
    assert result["images"].path == built.path and result["images"].seconds is None  # read, not built again


def test_cached_and_uncached_streams_give_the_same_files_labels_and_crops(photo_folder, tmp_path):
    # the cached stream is read in a DataLoader worker (its own memory map), the files in this process
    cached = folder_data(photo_folder, "on", tmp_path / "cache", workers=1)
    plain = folder_data(photo_folder, "off", tmp_path / "cache", workers=0)
    assert isinstance(cached.source_train, CachedImageDomain) and not isinstance(plain.source_train, CachedImageDomain)
    for part in ("source_train", "source_val", "target_eval"):
        a, b = getattr(cached, part), getattr(plain, part)
        assert a.paths == b.paths and torch.equal(a.y, b.y)
    (x_c, i_c), (x_p, i_p) = next(cached.target_eval.batches(64)), next(plain.target_eval.batches(64))
    assert torch.equal(i_c, i_p)
    assert per_image(x_c, x_p).max() < 3  # evaluation view: the same centre crop, resampled elsewhere
    streams = [LoaderBatches(d.source_train, 8, 0, torch.device("cpu"), 0, augment=True) for d in (cached, plain)]
    batches = [[s.get(step) for step in range(3)] for s in streams]
    for (x_c, y_c), (x_p, y_p) in zip(*batches, strict=True):
        assert torch.equal(y_c, y_p)
        assert per_image(x_c, x_p).max() < 3  # the same random crops and flips: only resampling differs
    # another step's batch (other images and crops) differs far more, image by image
    other = LoaderBatches(plain.source_train, 8, 0, torch.device("cpu"), 1, augment=True).get(1)[0]
    assert per_image(batches[0][0][0], other).min() > 6


def test_training_reads_the_cache_and_resumes_exactly(photo_folder, tmp_path, crash_after_first_checkpoint):
    values = {
        "data": {"source": str(photo_folder), "target": str(photo_folder), "image_size": 16, "cache": "on",
                 "cache_dir": str(tmp_path / "cache"), "num_workers": 0},
        "model": {"backbone": "lenet"},
        "method": {"name": "dann"},
        "train": {"steps": 4, "batch_size": 4, "eval_every": 2, "progress": False, "device": "cpu",
                  "precision": "fp32"},
    }  # fmt: skip
    cfg = load_config(values=values)
    lines: list[str] = []
    full = dann.fit(cfg, tmp_path / "full", echo=lines.append)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1  # source and target: one folder, one cache
    said = next(line for line in lines if line.startswith("images:   "))
    assert said.startswith(f"images:   read from 1 decoded-image cache(s) in {tmp_path / 'cache'} (0.0 MiB); ")
    assert said.endswith("evaluations read them too (data.cache)") and full.summary["images"] in said
    seen: list[str] = []
    dann.fit(replace(cfg, data={"cache": "off"}), echo=seen.append)
    assert "images:   read from the files as they are (data.cache)" in seen
    crash_after_first_checkpoint(dann.fit, cfg, tmp_path / "crashed")
    resumed = dann.fit(out=tmp_path / "crashed", resume=True)
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key


def test_unreadable_files_stop_the_run_or_are_skipped_as_without_the_cache(photo_folder, tmp_path):
    folder = shutil.copytree(photo_folder, tmp_path / "photos")
    bad = files(folder)[5]
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8\xff broken")
    data = folder_data(folder, "on", tmp_path / "cache")
    assert [e.split(":")[0] for e in data.target_eval.images.errors.values()] == [bad]  # recorded at build time
    with pytest.raises(DataError, match=f"{bad}: cannot read this image file.*data.skip_bad_images=true"):
        list(data.target_eval.batches(64))
    skipping = folder_data(folder, "on", tmp_path / "cache", skip_bad_images=True)
    (x, index), *_ = skipping.target_eval.batches(64)
    assert len(x) == 15 and skipping.target_eval.paths.index(bad) not in index.tolist()
    assert skipping.target_eval.bad == {bad}


def test_auto_caches_when_the_cache_is_no_larger_than_the_files_and_does_not_enlarge_them(
    photo_folder, tmp_path, monkeypatch
):
    paths = files(photo_folder)  # 120 × 90 = 10,800 pixels, about 3 KB each
    assert 2_000 < np.mean([os.path.getsize(p) for p in paths]) < 8_000
    assert wanted("auto", paths, 24, tmp_path, "photos")  # 1.7 KB per image, shrunk: cached
    assert not wanted("auto", paths, 48, tmp_path, "photos")  # 6.9 KB per image: more disk than the files
    assert not wanted("auto", paths, 96, tmp_path, "photos")  # 27.6 KB, though not enlarged (96² < 10,800)
    assert not wanted("auto", paths, 112, tmp_path, "photos")  # 112² > 10,800 pixels: enlarged
    assert not wanted("off", paths, 24, tmp_path, "photos") and wanted("on", paths, 112, tmp_path, "photos")
    for size, cached in [((160, 90), True), ((90, 160), True), ((240, 80), False), ((60, 240), False)]:
        folder = photos(tmp_path / f"{size[0]}x{size[1]}", count=4, size=size)  # aspect 1.8: kept; 3 and 4: squeezed
        assert wanted("auto", files(folder), 24, tmp_path, "photos") is cached, size
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: usage._replace(free=10_000))
    needs = rf"photos: its decoded-image cache needs .* GiB and {tmp_path} has .* set data\.cache_dir.*data\.cache=off"
    with pytest.raises(DataError, match=needs):
        wanted("on", paths, 24, tmp_path, "photos")
    with pytest.warns(DataWarning, match="reading the files without the cache"):
        assert not wanted("auto", paths, 24, tmp_path, "photos")


def test_dann_cache_builds_ahead_and_says_where(photo_folder, tmp_path, capsys):
    args = ["cache", "--source", str(photo_folder), "--target", str(photo_folder), "--backbone", "lenet"]
    args += ["--set", "data.image_size=16", "--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    out = capsys.readouterr().out
    (built,) = list((tmp_path / "cache").glob("*.npy"))
    assert f"{built} (16 images, {SIDE}x{SIDE} px, {16 * SIDE * SIDE * 3 / 2**20:.1f} MiB), built in" in out
    assert main(args) == 0
    assert "already built" in capsys.readouterr().out


def test_a_transform_the_cache_cannot_apply_reads_the_files_under_auto_and_stops_under_on(
    photo_folder, tmp_path, monkeypatch
):
    from torchvision.transforms import v2

    from dann.data import folders

    plain = folders.train_transform
    monkeypatch.setattr(folders, "train_transform", lambda *a: v2.Compose([v2.RandomGrayscale(0.5), plain(*a)]))
    with pytest.warns(DataWarning, match="cannot apply the image transform RandomGrayscale.*without the cache"):
        data = folder_data(photo_folder, "auto", tmp_path / "cache")  # 1.7 KB per cached image: auto wants it
    assert not isinstance(data.source_train, CachedImageDomain) and not (tmp_path / "cache").exists()
    with pytest.raises(DataError, match=r"data\.cache cannot apply the image transform RandomGrayscale"):
        folder_data(photo_folder, "on", tmp_path / "cache")


@pytest.mark.parametrize("where", ["a file", "under a file", "from the environment"])
def test_a_cache_folder_that_cannot_be_written_reads_the_files_under_auto_and_stops_under_on(
    photo_folder, tmp_path, monkeypatch, where
):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    folder = {"a file": blocker, "under a file": blocker / "cache", "from the environment": blocker}[where]
    setting = "" if where == "from the environment" else str(folder)
    monkeypatch.setenv("DANN_CACHE", str(folder))
    origin = r"\$DANN_CACHE" if where == "from the environment" else r"data\.cache_dir"
    with pytest.warns(DataWarning, match=rf"cannot be written .*comes from {origin}\).*reading the files"):
        data = folder_data(photo_folder, "auto", setting)  # 1.7 KB per cached image: auto wants it
    assert not isinstance(data.source_train, CachedImageDomain)
    message = rf"^the decoded-image cache folder {folder} cannot be written \(.*\); set data\.cache_dir to a writable"
    with pytest.raises(DataError, match=message + rf" folder, or data\.cache=off \(the folder comes from {origin}\)$"):
        folder_data(photo_folder, "on", setting)
    assert blocker.read_text() == "not a folder"  # nothing written over


def test_auto_reads_a_cache_built_ahead_even_where_it_would_not_build_one(photo_folder, tmp_path):
    args = ["cache", "--source", str(photo_folder), "--target", str(photo_folder), "--backbone", "lenet"]
    args += ["--set", "data.image_size=48", "--cache-dir", str(tmp_path / "cache")]  # side 72: more disk than files
    assert not isinstance(folder_data(photo_folder, "auto", tmp_path / "cache", image_size=48).source_train,
                          CachedImageDomain)  # fmt: skip
    assert main(args) == 0
    data = folder_data(photo_folder, "auto", tmp_path / "cache", image_size=48)
    assert isinstance(data.source_train, CachedImageDomain) and data.source_train.images.seconds is None  # read
    assert not isinstance(folder_data(photo_folder, "off", tmp_path / "cache", image_size=48).source_train,
                          CachedImageDomain)  # fmt: skip


def test_several_labeled_domains_each_read_their_own_cache_with_the_same_crops(photo_folder, tmp_path, capsys):
    other = photos(tmp_path / "other", count=8, seed=1)
    sources = {"lab": str(photo_folder), "sea": str(other)}

    def several(cache: str):
        cfg = DataConfig(source=sources, target=str(other), image_size=16, num_workers=0, cache=cache,
                         cache_dir=str(tmp_path / "cache"))  # fmt: skip
        return build_run_data(cfg, ModelConfig(backbone="lenet"))

    cached, plain = several("on"), several("off")
    assert isinstance(cached.source_train, CachedImageDomain) and len(cached.source_train.caches) == 2
    assert cached.source_train.paths == plain.source_train.paths and torch.equal(cached.source_train.d,
                                                                                plain.source_train.d)  # fmt: skip
    streams = [LoaderBatches(d.source_train, 8, 0, torch.device("cpu"), 0, augment=True) for d in (cached, plain)]
    for step in range(3):
        (x_c, y_c), (x_p, y_p) = streams[0].get(step), streams[1].get(step)
        assert torch.equal(y_c, y_p) and per_image(x_c, x_p).max() < 3
    (x_c, _), (x_p, _) = next(cached.source_val.batches(64)), next(plain.source_val.batches(64))
    assert per_image(x_c, x_p).max() < 3
    args = ["cache", "--source", f"lab={photo_folder}", "--source", f"sea={other}", "--target", str(other)]
    assert main([*args, "--backbone", "lenet", "--set", "data.image_size=16", "--cache-dir", str(tmp_path / "c2")]) == 0
    out = capsys.readouterr().out
    assert f"{photo_folder}: " in out and out.count(f"{other}: ") == 1  # each folder once, sources included
    assert len(list((tmp_path / "c2").glob("*.npy"))) == 2


@pytest.mark.parametrize("invert", [0.5, 1.0])
def test_inversion_is_drawn_and_applied_alike_from_the_files_and_the_cache(photo_folder, tmp_path, invert):
    cached = folder_data(photo_folder, "on", tmp_path / "cache", invert=invert, color_jitter=0.3)
    plain = folder_data(photo_folder, "off", tmp_path / "cache", invert=invert, color_jitter=0.3)
    still = folder_data(photo_folder, "off", tmp_path / "cache", color_jitter=0.3)
    streams = [
        LoaderBatches(d.source_train, 8, 0, torch.device("cpu"), 0, augment=True) for d in (cached, plain, still)
    ]
    flipped = 0
    for step in range(3):
        (x_c, _), (x_p, _), (x_s, _) = (s.get(step) for s in streams)
        assert per_image(x_c, x_p).max() < 3  # the same draws, inversion included: only resampling differs
        raw = lambda x: x * STD + MEAN  # noqa: E731  back to 0..255
        inverted = (raw(x_p) + raw(x_s) - 255).abs().mean(dim=(1, 2, 3)) < 1  # 255 - x of the image without it
        same = per_image(x_p, x_s) < 1e-3
        assert bool((inverted | same).all())  # every image is as it was, or its inverse (the other draws unchanged)
        flipped += int(inverted.sum())
    assert flipped == 24 if invert == 1.0 else 0 < flipped < 24
