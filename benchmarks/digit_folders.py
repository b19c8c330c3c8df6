"""Image folders shaped like a practitioner's first data set, for timing the recipe of docs/first-hour.md:
scikit-learn's 8×8 digits upscaled to 64×64, a "lab" source (dark digits on light paper, grayscale PNG) in class
subfolders and a "new instrument" target (light digits on a dark, tinted, noisy background, RGB JPEG) with class
subfolders, whose labels dann uses only to report accuracy.

    python benchmarks/digit_folders.py /tmp/first-hour          # writes /tmp/first-hour/lab and .../new_instrument
    python benchmarks/digit_folders.py /tmp/first-hour --source 900 --target 600
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from sklearn.datasets import load_digits

SIZE = 64  # pixels: larger than the network's 28×28, as real pictures are


def write_folders(out: Path, n_source: int, n_target: int, seed: int = 0) -> None:
    digits = load_digits()
    if n_source + n_target > len(digits.images):
        raise SystemExit(f"at most {len(digits.images)} images in all")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.images))
    for i, index in enumerate(order[: n_source + n_target]):
        label = int(digits.target[index])
        small = (digits.images[index] / 16.0 * 255).astype(np.uint8)
        img = Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        if i < n_source:  # the lab: dark ink on light paper
            folder, img, ext = out / "lab" / str(label), Image.fromarray(255 - np.asarray(img)), "png"
        else:  # the new instrument: light digits on a dark tinted background, blurred and noisy
            tint = rng.uniform(0.4, 1.0, 3)
            rgb = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64)[..., None] * tint
            rgb = np.clip(rgb + 40 * tint + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
            folder, img, ext = out / "new_instrument" / str(label), Image.fromarray(rgb), "jpg"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{index:04d}.{ext}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to create lab/ and new_instrument/ in")
    parser.add_argument("--source", type=int, default=900, help="lab images (900)")
    parser.add_argument("--target", type=int, default=600, help="new-instrument images (600)")
    args = parser.parse_args()
    write_folders(args.out, args.source, args.target)
    print(f"wrote {args.source} images to {args.out / 'lab'} and {args.target} to {args.out / 'new_instrument'}")


if __name__ == "__main__":
    main()
