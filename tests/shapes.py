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


# Unlabeled target layouts: image i of a flat folder → its path relative to the target (a folder, or a list file's
# folder). The same file names recur in other subfolders, so only the relative path tells the images apart.
LAYOUTS = {
    "flat": lambda i: f"{i}",
    "one-level": lambda i: f"day{i // 4}/{i % 4}",
    "two-levels": lambda i: f"day{i // 6}/station {i // 3 % 2}/{i % 3}",
    "beside-subfolders": lambda i: f"{i}" if i < 4 else f"day{i // 4}/{i % 4}",
}
LIST_LAYOUTS = {  # list file name → (its first line or None, where image i goes); the list names one path per line
    "spaces.txt": (None, lambda i: f"day {i // 4}/img {i % 4}"),
    "commas.csv": (None, lambda i: f"day,{i // 4}/{i % 4}"),
    "path-header.txt": ("path", lambda i: f"station {i // 6}/day {i % 6} 2"),
}


def nest(flat: Path, root: Path, where) -> list[str]:
    """Copy the images of ``flat`` under ``root`` at ``where(i)`` (+ the file's extension); their relative paths."""
    placed = []
    for i, path in enumerate(sorted(p for p in flat.iterdir() if p.is_file())):
        rel = where(i) + path.suffix
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(path.read_bytes())
        placed.append(rel)
    return placed


def unlabeled_target(flat: Path, root: Path, layout: str) -> tuple[Path, list[Path]]:
    """A target of ``layout`` (a ``LAYOUTS`` folder or a ``LIST_LAYOUTS`` list file) made of the images of ``flat``
    under ``root``: (what to name as the target, every image's path as it is read, relative path kept)."""
    if layout in LAYOUTS:
        target = root / layout
        return target, [target / rel for rel in nest(flat, target, LAYOUTS[layout])]
    header, where = LIST_LAYOUTS[layout]
    placed = nest(flat, root, where)
    (root / layout).write_text("".join(f"{line}\n" for line in [*[header] * (header is not None), *placed]))
    return root / layout, [root / rel for rel in placed]
