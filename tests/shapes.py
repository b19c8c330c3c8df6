"""A generated image-folder dataset: circles, squares and triangles drawn in two visual styles (dark shapes on a
light background; bright random colours on a dark noisy background), saved as PNG, JPEG and TIFF files in the modes
real collections mix: RGB, L (grayscale), P (palette), RGBA, I;16 (16-bit grayscale)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
FORMATS = (("png", "RGB"), ("jpg", "RGB"), ("png", "L"), ("png", "P"), ("png", "RGBA"), ("tif", "I;16"), ("tif", "RGB"))


def draw(shape: str, style: int, rng: np.random.Generator, size: int = 32) -> Image.Image:
    """One RGB picture of ``shape``; style 0 is the lab look, style 1 the new instrument's."""
    if style == 0:
        background, colour = (235, 235, 235), (30, 30, 30)
    else:
        background = tuple(int(v) for v in rng.integers(0, 80, 3))
        colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    img = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(img)
    cx, cy = size / 2 + rng.uniform(-3, 3, 2)
    r = rng.uniform(7, 11)
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    if style == 1:
        noisy = np.asarray(img).astype(np.int16) + rng.integers(-30, 30, (size, size, 3))
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return img


def save(img: Image.Image, path: Path, mode: str) -> None:
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)


def make_folder(
    root: Path, style: int, per_class: int, seed: int, labeled: bool = True, shapes: tuple[str, ...] = SHAPES
) -> Path:
    """``root/<shape>/<shape>_<i>.<ext>`` (labeled) or ``root/<shape>_<i>.<ext>`` (flat), formats cycling."""
    rng = np.random.default_rng(seed)
    for shape in shapes:
        folder = root / shape if labeled else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext, mode = FORMATS[(i + SHAPES.index(shape)) % len(FORMATS)]
            save(draw(shape, style, rng), folder / f"{shape}_{i}.{ext}", mode)
    return root
