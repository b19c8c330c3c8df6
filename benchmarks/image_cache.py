"""The decoded-image cache (``data.cache``) on a folder of photos: what it costs to build, how far its pixels are from
the files', and how fast training reads it. Prints, with the hardware:

1. the build rate per core (JPEG draft decode + shrink, a process pool over the usable CPUs) beside today's loader
   per core (full decode + training transform, ``LoaderBatches`` in the main process, one thread), and the cache's
   size;
2. the largest and mean absolute pixel difference (0..255 units) between the cached and the uncached views of the
   same images: the evaluation view of every image, and the training view (same seeds, same crops) of a few steps;
3. the same for the evaluation view of photos of several aspect ratios (the cache stores squares);
4. the loader alone (one thread, as in a DataLoader worker), files vs cache, at several file sizes, in alternating
   rounds, with the files' and the cache's bytes per image and what ``data.cache: auto`` decides (``worth_it``);
5. ``dann bench --images`` on the folder: the supervised and DANN steps read from the files and from the cache, in
   alternating rounds (img/s, data wait, speed-up).

    python benchmarks/image_cache.py                           # 512 photos of 500x375, LeNet at 32 px
    python benchmarks/image_cache.py --photos 256 --image-size 64 --backbone resnet18

The photos are 500x375 JPEG crops (quality 90, random offsets and flips) of scikit-learn's two sample photographs
(``load_sample_images``: nothing is downloaded), in two class folders."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dann.config import DataConfig, ModelConfig
from dann.data import build_data
from dann.data.cache import build, cache_side, worth_it
from dann.data.images import usable_cpus
from dann.data.loaders import LoaderBatches
from dann.data.transforms import ImageConfig
from dann.plan import plan_bench
from dann.training.bench import INPUTS, device_name, format_bench, run_bench

STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255  # normalized units → 0..255


def make_photos(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """``count`` JPEGs of ``size`` (width, height), crops of scikit-learn's sample photographs, in two folders."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    width, height = size
    for i in range(count):
        photo = photos[i % len(photos)]
        scale = max(width / photo.width, height / photo.height) * rng.uniform(1.0, 1.3)
        big = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1), Image.Resampling.BICUBIC)
        x, y = rng.integers(0, big.width - width + 1), rng.integers(0, big.height - height + 1)
        crop = big.crop((x, y, x + width, y + height))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"{i:05d}.jpg", quality=90)
    return sorted(str(p) for p in root.rglob("*.jpg"))


def data(folder: Path, backbone: str, size: int, cache: str, cache_dir: Path, workers: int = 0):
    cfg = DataConfig(source=str(folder), target=str(folder), val_fraction=0.0, image_size=size, num_workers=workers,
                     cache=cache, cache_dir=str(cache_dir))  # fmt: skip
    return build_data(cfg, ModelConfig(backbone=backbone))


def loader_rate(domain, batch_size: int, steps: int) -> float:
    """Images/s of the training stream of ``domain`` (after one untimed batch)."""
    batches = LoaderBatches(domain, batch_size, 0, torch.device("cpu"), 0, augment=True)
    batches.get(0)
    tic = time.perf_counter()
    for step in range(1, steps + 1):
        batches.get(step)
    return steps * batch_size / (time.perf_counter() - tic)


def build_and_loader(folder: Path, paths: list[str], args: argparse.Namespace, tmp: Path) -> None:
    side = cache_side(ImageConfig(size=args.image_size), DataConfig().crop_scale)
    tic = time.perf_counter()
    images = build(paths, side, "bilinear", tmp / "build", "photos", workers=usable_cpus())
    rate, cores = len(paths) / (time.perf_counter() - tic), usable_cpus()
    plain = data(folder, args.backbone, args.image_size, "off", tmp)
    today = loader_rate(plain.source_train, 32, max(2, 128 // 32))
    print("\n| stage | images/s | per core |\n| --- | --- | --- |")
    stage = f"cache build ({len(paths)} files → {side}x{side} px, {cores} processes)"
    print(f"| {stage} | {rate:.0f} | {rate / cores:.0f} |")
    print(f"| today's loader (full decode + training transform, main process) | {today:.0f} | {today:.0f} |")
    print(f"cache: {images.path} ({images.nbytes / 2**20:.1f} MiB for {len(paths)} images)")


def pixel_differences(folder: Path, args: argparse.Namespace, tmp: Path) -> None:
    cached, plain = (data(folder, args.backbone, args.image_size, mode, tmp / "build") for mode in ("on", "off"))
    diffs = []
    for (x_c, _), (x_p, _) in zip(cached.target_eval.batches(128), plain.target_eval.batches(128), strict=True):
        diffs.append(((x_c - x_p).abs() * STD).flatten())
    streams = [LoaderBatches(d.source_train, 32, 0, torch.device("cpu"), 0, augment=True) for d in (cached, plain)]
    train = [((streams[0].get(s)[0] - streams[1].get(s)[0]).abs() * STD).flatten() for s in range(4)]
    print("\n| view | max abs difference | mean abs difference |\n| --- | --- | --- |")
    views = {"evaluation (every image)": torch.cat(diffs), "training (4 steps of 32, same crops)": torch.cat(train)}
    for name, d in views.items():
        print(f"| {name} | {d.max():.1f} | {d.mean():.2f} |")


def aspect_differences(args: argparse.Namespace, tmp: Path) -> None:
    """The evaluation view, cached vs files, of 32 photos at each aspect ratio: the cache stores squares."""
    print("\n| files | aspect | mean abs difference | max abs difference | `auto` reads |")
    print("| --- | --- | --- | --- | --- |")
    side = cache_side(ImageConfig(size=args.image_size), DataConfig().crop_scale)
    for size in [(400, 300), (480, 320), (480, 270), (480, 240), (480, 160), (480, 96)]:
        folder = tmp / f"aspect{size[0]}x{size[1]}"
        paths = make_photos(folder, 32, size, seed=2)
        cached, plain = (data(folder, args.backbone, args.image_size, mode, tmp / "aspects").target_eval
                         for mode in ("on", "off"))  # fmt: skip
        d = torch.cat([((x_c - x_p).abs() * STD).flatten()
                       for (x_c, _), (x_p, _) in zip(cached.batches(64), plain.batches(64), strict=True)])  # fmt: skip
        auto = "cache" if worth_it(paths, side) else "files"
        print(f"| {size[0]}x{size[1]} | {size[0] / size[1]:.2f} | {d.mean():.2f} | {d.max():.1f} | {auto} |")


def file_sizes(args: argparse.Namespace, tmp: Path) -> None:
    side = cache_side(ImageConfig(size=args.image_size), DataConfig().crop_scale)
    print(f"\n| files | pixels: files / cache ({side}²) | KB per image: files / cache | files img/s | cache img/s | "
          "cache / files | auto |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    sizes = [(w, w * 3 // 4) for w in (side, int(1.5 * side), 2 * side, 4 * side, 500)] + [(256, 256), (1024, 768)]
    for size in sizes:
        folder = tmp / f"size{size[0]}x{size[1]}"
        paths = make_photos(folder, 128, size, seed=1)
        domains = [data(folder, args.backbone, args.image_size, mode, tmp / f"c{size[0]}").source_train
                   for mode in ("off", "on")]  # fmt: skip
        rates = [0.0, 0.0]
        for _ in range(3):  # alternating rounds, the fastest of each counts: a busy machine slows both alike
            rates = [max(r, loader_rate(d, 32, 4)) for r, d in zip(rates, domains, strict=True)]
        area = size[0] * size[1] / side**2
        kb = f"{np.mean([os.path.getsize(p) for p in paths]) / 1000:.1f} / {side * side * 3 / 1000:.1f}"
        auto = "cache" if worth_it(paths, side) else "files"
        speed = f"{rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.1f}"
        print(f"| {size[0]}x{size[1]} | {area:.1f} | {kb} | {speed} | {auto} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=512, help="generated 500x375 JPEGs (512)")
    parser.add_argument("--backbone", default="lenet", help="lenet | resnet18 | resnet50 (dann bench's)")
    parser.add_argument("--image-size", type=int, default=32, help="network input side (32)")
    parser.add_argument("--steps", type=int, default=10, help="dann bench: timed steps per round (10)")
    parser.add_argument("--rounds", type=int, default=3, help="dann bench: rounds (3)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["build", "pixels", "aspects", "sizes", "bench"])
    args = parser.parse_args()
    print(f"# torch {torch.__version__}, {device_name(torch.device('cpu'))}, {os.cpu_count()} CPUs, "
          f"{usable_cpus()} usable; {args.backbone} at {args.image_size} px")  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the loader measurements: one thread, as in a DataLoader worker
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder = tmp / "photos"
        paths = make_photos(folder, args.photos, (500, 375))
        if "build" not in args.skip:
            build_and_loader(folder, paths, args, tmp)
        if "pixels" not in args.skip:
            pixel_differences(folder, args, tmp)
        if "aspects" not in args.skip:
            aspect_differences(args, tmp)
        if "sizes" not in args.skip:
            file_sizes(args, tmp)
        if "bench" not in args.skip:
            torch.set_num_threads(threads)  # the count this process started with (bench times at the caller's)
            os.environ["DANN_CACHE"] = str(tmp / "bench-cache")
            plan = plan_bench(args.backbone, INPUTS[args.backbone], threads=0, image_size=args.image_size)
            result = run_bench(args.backbone, plan, steps=args.steps, rounds=args.rounds, images=str(folder))
            print(f"\n```\n{format_bench(result)}\n```")


if __name__ == "__main__":
    main()
