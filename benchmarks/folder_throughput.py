"""Which limits training on image folders here: reading the images, or the model? Prints images/s of the folder
pipeline (JPEG decode + training transform, through the DataLoader that ``dann train`` uses, in the main process and
with the default workers) beside images/s of the model (forward + backward + optimizer step of one DANN step on a
source and a target batch of the same size), with the hardware.

    python benchmarks/folder_throughput.py                                  # resnet50 at its timm size (224)
    python benchmarks/folder_throughput.py --backbone resnet18 --photo-size 500x375 --batch-size 32

The images are generated photos (smooth random colour fields, JPEG quality 90) in two class folders. On a machine
without a GPU the pipeline's workers and the model share the same cores, so during training each gets less than
measured here alone; with a GPU the model runs elsewhere and the pipeline figure is the ceiling it can be fed at.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

import dann
from dann.config import DataConfig, MethodConfig, ModelConfig, OptimConfig
from dann.data import build_data
from dann.data.images import default_workers
from dann.data.loaders import LoaderBatches
from dann.methods import create_method
from dann.methods.base import Batch
from dann.models import create_network
from dann.training.trainer import build_optimizer


def make_photos(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    """``count`` JPEGs of ``size`` (width, height) in two class folders: upsampled random colour fields + noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(count):
        folder = root / f"class_{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(coarse).astype(np.int16) + rng.integers(-20, 20, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def pipeline_rate(folder: Path, backbone: str, batch_size: int, steps: int, workers: int, image_size: int) -> float:
    """Images/s of ``LoaderBatches`` (decode + train transform + collate), after a first, untimed batch (the workers'
    prefetching, at most 2 batches per worker, makes the figure up to that many batches optimistic)."""
    cfg = DataConfig(
        source=str(folder), target=str(folder), val_fraction=0.0, num_workers=workers, image_size=image_size
    )
    data = build_data(cfg, ModelConfig(backbone=backbone))
    batches = LoaderBatches(data.source_train, batch_size, 0, torch.device("cpu"), 0, augment=True)
    batches.get(0)
    tic = time.perf_counter()
    for step in range(1, steps + 1):
        batches.get(step)
    return steps * batch_size / (time.perf_counter() - tic)


def model_rate(backbone: str, input_shape: tuple[int, ...], batch_size: int, steps: int) -> float:
    """Images/s of DANN training steps (source + target batch: 2 × batch_size images per step), after a warm-up."""
    torch.manual_seed(0)
    net = create_network(ModelConfig(backbone=backbone), input_shape, 2).train()
    method = create_method(MethodConfig())
    optimizer = build_optimizer(OptimConfig(), net, pretrained=False)
    x = torch.randn(batch_size, *input_shape)
    batch = Batch(x, torch.randint(0, 2, (batch_size,)), x.flip(0))

    def step() -> None:
        out = method.loss(net, batch, 0.5)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        optimizer.step()

    step()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 2 * batch_size / (time.perf_counter() - tic)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=0, help="network input side; 0: the backbone's timm size")
    parser.add_argument("--photo-size", default="400x300", help="size of the generated JPEGs, WIDTHxHEIGHT")
    parser.add_argument("--images", type=int, default=256, help="generated JPEGs")
    parser.add_argument("--batch-size", type=int, default=32, help="per domain, as train.batch_size")
    parser.add_argument("--pipeline-steps", type=int, default=24)
    parser.add_argument("--model-steps", type=int, default=2)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.photo_size.split("x"))
    workers = default_workers(None)
    print(
        f"# dann {dann.__version__}, torch {torch.__version__}, Pillow {PIL.__version__}; {cpu_name()}, "
        f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; "
        f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none (model on the CPU)'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        make_photos(Path(tmp), args.images, size)  # type: ignore[arg-type]
        shape = build_data(
            DataConfig(source=tmp, target=tmp, image_size=args.image_size), ModelConfig(backbone=args.backbone)
        ).input_shape
        print(f"# {args.images} JPEGs of {size[0]}×{size[1]} → {args.backbone} input {shape}, batch {args.batch_size}")
        print("| stage | images/s |\n| --- | --- |")
        for n in sorted({0, workers}):
            rate = pipeline_rate(Path(tmp), args.backbone, args.batch_size, args.pipeline_steps, n, args.image_size)
            print(f"| folder pipeline, {n} worker{'s' if n != 1 else ''} (decode + augment + collate) | {rate:.0f} |")
    rate = model_rate(args.backbone, shape, args.batch_size, args.model_steps)
    print(f"| model: DANN step, forward + backward, {args.batch_size} + {args.batch_size} images | {rate:.1f} |")


if __name__ == "__main__":
    main()
