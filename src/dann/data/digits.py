"""The digit benchmarks as image folders. MNIST, USPS and SVHN ship as binary files (IDX, libsvm, MATLAB); after
``dann download`` fetches them, ``prepare`` writes one PNG per digit into ``<name>/<split>/<digit>/``, the layout
every other dataset here uses. MNIST-M ships as PNGs with label files; ``prepare`` moves them into class folders.

Checksums are the MD5 values torchvision's dataset readers publish for the same files."""

from __future__ import annotations

import bz2
import gzip
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .archives import Archive


def _write_pngs(images: Iterable[np.ndarray], labels: Iterable[int], folder: Path) -> None:
    """uint8 (H, W) or (H, W, 3) images → ``folder/<label>/<index>.png``."""
    for d in range(10):
        (folder / str(d)).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(folder / str(int(label)) / f"{i:05d}.png", compress_level=1)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format; gzipped): uint8 data of the shape its header gives."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def prepare_mnist(root: Path) -> None:
    raw = root / "mnist" / "raw"
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(raw / f"{prefix}-images-idx3-ubyte.gz")
        _write_pngs(images, read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz"), root / "mnist" / split)


def prepare_usps(root: Path) -> None:
    """libsvm rows ``label i:v ...``: labels 1..10 stand for the digits 0..9 (torchvision reads them as label - 1),
    256 pixel values in [-1, 1]."""
    for split, name in (("train", "usps.bz2"), ("test", "usps.t.bz2")):
        with bz2.open(root / "usps" / "raw" / name, "rt") as f:
            rows = [line.split() for line in f if line.strip()]
        labels = [int(float(r[0])) - 1 for r in rows]
        pixels = np.array([[float(v.split(":")[1]) for v in r[1:]] for r in rows], dtype=np.float64)
        images = np.clip(np.rint((pixels + 1) / 2 * 255), 0, 255).astype(np.uint8).reshape(-1, 16, 16)
        _write_pngs(images, labels, root / "usps" / split)


def prepare_svhn(root: Path) -> None:
    """MATLAB files: X (32, 32, 3, N), y (N, 1) with 10 standing for the digit 0."""
    from scipy.io import loadmat

    for split in ("train", "test"):
        mat = loadmat(root / "svhn" / "raw" / f"{split}_32x32.mat")
        images = np.ascontiguousarray(mat["X"].transpose(3, 0, 1, 2))
        _write_pngs(images, mat["y"].ravel() % 10, root / "svhn" / split)


def prepare_mnistm(root: Path) -> None:
    """``mnist_m/mnist_m_<split>/*.png`` listed with labels in ``mnist_m_<split>_labels.txt`` → class folders."""
    base = root / "mnist_m"
    for split in ("train", "test"):
        for line in (base / f"mnist_m_{split}_labels.txt").read_text().splitlines():
            if line.strip():
                name, label = line.split()
                (base / split / label).mkdir(parents=True, exist_ok=True)
                (base / f"mnist_m_{split}" / name).replace(base / split / label / name)


def _archives(name: str, files: Iterable[tuple[str, str, str]]) -> tuple:
    return tuple(Archive(f"{name}/raw/{f}", url, f"md5:{md5}", extract=False) for f, url, md5 in files)


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
USPS_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
)
HOMEPAGES = {
    "mnist": "https://yann.lecun.com/exdb/mnist/",
    "usps": "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps",
    "svhn": "http://ufldl.stanford.edu/housenumbers/",
    "mnistm": "https://yaroslav.ganin.net/ (mnist_m.tar.gz, hosted on Google Drive: fetch it by hand)",
}


def benchmarks() -> list[tuple]:
    """(name, domain folders → image counts, archives, prepare) of each digit benchmark."""
    return [
        (
            "mnist",
            {"mnist/train": 60000, "mnist/test": 10000},
            _archives("mnist", ((f, MNIST_URL + f, md5) for f, md5 in MNIST_FILES)),
            prepare_mnist,
        ),
        (
            "usps",
            {"usps/train": 7291, "usps/test": 2007},
            _archives("usps", (("usps.bz2", USPS_URL + "usps.bz2", "ec16c51db3855ca6c91edd34d0e9b197"),
                               ("usps.t.bz2", USPS_URL + "usps.t.bz2", "8ea070ee2aca1ac39742fdd1ef5ed118"))),
            prepare_usps,
        ),
        (
            "svhn",
            {"svhn/train": 73257, "svhn/test": 26032},
            _archives("svhn", (("train_32x32.mat", SVHN_URL + "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
                               ("test_32x32.mat", SVHN_URL + "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"))),
            prepare_svhn,
        ),
        ("mnistm", {"mnist_m/train": 59001, "mnist_m/test": 9001}, (Archive("mnist_m.tar.gz"),), prepare_mnistm),
    ]  # fmt: skip
