"""A decoded-image cache for image folders: each domain's files are decoded once, shrunk, and kept on disk as one
uint8 array that every later pass reads instead of the files (``data.cache``; ``dann cache`` builds it ahead).

What it stores. Each image is decoded with Pillow (JPEGs at a reduced DCT scale, ``Image.draft``, never below the
target side), converted to RGB as ``images.to_rgb`` does, and resized, aspect ratio ignored, to ``side`` × ``side``
pixels (``cache_side``: the network input divided by the square root of the smallest ``data.crop_scale``, rounded
up to a multiple of 8, so the smallest random crop still covers about ``image_size`` cached pixels). Its original
(height, width) is kept beside it, so crops are drawn in the original image's coordinates, as the uncached pipeline
draws them, and then sampled from the cached pixels (``cached.TensorTransform``). A domain's cache is
``<cache dir>/<folder name>-<key>.npy`` (N, side, side, 3) uint8, read as a memory map, plus ``.json`` (sizes and
unreadable files) and ``.lock``. The cache dir is ``data.cache_dir``, else ``$DANN_CACHE``, else ``~/.cache/dann``.

Keys. The key hashes the file list (absolute paths, in order), each file's size and modification time, the side,
the resampling filter and the cache format: a changed, added or removed file gives a new key, hence a new cache;
old caches are never overwritten (delete the folder to reclaim the space).

Atomic builds. The array is written under a temporary name (``.partial``), flushed and fsynced, the ``.json`` is
written atomically, and only then is the array renamed to its final name, which is what marks a cache whole: an
interrupted build leaves a ``.partial`` file that is never read, and the next build removes it and starts over.
Builds hold a file lock (``filelock``) on ``<key>.lock``: of several processes that need the same cache (torchrun
ranks, two runs at once), one builds and the others wait for the lock, then read what it built. The lock is an OS
lock, released if the builder dies. On shared network file systems without working locks, build the cache ahead
with ``dann cache`` (or give each node a local ``data.cache_dir``).

``data.cache: auto`` turns the cache on when it takes no more disk space than the files, does not enlarge them and
does not squeeze them much (``worth_it``, from up to 32 sampled files), and the array fits in half the free disk
space, or when a whole cache of the same files already exists (``dann cache`` built it); otherwise (e.g. 224 px
JPEGs for a 224 px network) the files are read as they are. See ``docs/speed.md`` for the measurements behind it."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap
from PIL import Image

from ..config import DataConfig
from ..errors import DataError, DataWarning
from ..runs import _fsync_dir, atomic_write_text
from .images import decode, usable_cpus
from .transforms import ImageConfig

CACHE_ENV = "DANN_CACHE"
FORMAT = 1  # bump when what a cache holds changes: old caches then get new keys
FILES_SAMPLED = 32  # files whose headers and sizes auto reads (worth_it)
CHUNK = 64  # files per task of the build's process pool
MAX_ASPECT = 2.0  # auto: wider images lose detail along their long side in the square cache (docs/speed.md)
POOL_MIN_FILES = 256  # below this many files a build decodes in this process (starting a pool costs more)


class CacheFolderError(DataError):
    """The cache folder cannot be created or written; ``data.cache: auto`` then reads the files instead."""


def cache_root(cache_dir: str = "") -> Path:
    """Where caches live: ``cache_dir`` (``data.cache_dir``), else ``$DANN_CACHE``, else ``~/.cache/dann``."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dann").expanduser()


def root_origin(cache_dir: str = "") -> str:
    """What set the cache folder, as a message names it."""
    return (
        "data.cache_dir" if cache_dir else f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the default cache folder"
    )


def cache_path(paths: Sequence[str], side: int, resample: str, root: Path, name: str) -> Path:
    """Where the cache of ``paths`` lives (whether or not it is built): ``<root>/<name>-<key>.npy``."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40] or "images"
    return root / f"{stem}-{cache_key(paths, side, resample)}.npy"


def cache_side(image: ImageConfig, crop_scale: Sequence[float]) -> int:
    """The side of cached images: ``image.size / sqrt(min crop_scale)``, rounded up to a multiple of 8 (pixels)."""
    return 8 * math.ceil(image.size / math.sqrt(min(crop_scale)) / 8)


def resample_filter(image: ImageConfig) -> str:
    """Pillow's filter for shrinking to the cache: the backbone's interpolation, but never ``nearest`` (aliasing)."""
    return "bicubic" if image.interpolation == "bicubic" else "bilinear"


def cache_key(paths: Sequence[str], side: int, resample: str) -> str:
    """20 hex digits of SHA-256 over the format, side, filter and every file's (absolute path, size, mtime in ns).
    Raises ``DataError`` naming a file that cannot be read."""
    digest = hashlib.sha256(json.dumps([FORMAT, side, resample]).encode())
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as e:
            raise DataError(f"{path}: cannot read this image file ({e.strerror or e})") from None
        digest.update(b"\0" + os.fsencode(os.path.abspath(path)) + f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def shrink(path: str, side: int, resample: str) -> tuple[np.ndarray | None, tuple[int, int], str]:
    """Decode one file for the cache: ((side, side, 3) uint8 or None, original (height, width), error or "")."""
    image, error = decode(path, draft=side)
    if image is None:
        return None, (0, 0), error
    original = image.info["original_size"]  # (width, height) before the JPEG draft scale
    small = image.resize((side, side), Image.Resampling[resample.upper()])
    return np.asarray(small, dtype=np.uint8), (original[1], original[0]), ""


def _shrink_chunk(job: tuple[list[str], int, str]) -> tuple[np.ndarray, list[tuple[int, int]], list[str]]:
    paths, side, resample = job
    pixels = np.zeros((len(paths), side, side, 3), dtype=np.uint8)
    sizes, errors = [], []
    for k, path in enumerate(paths):
        small, size, error = shrink(path, side, resample)
        if small is not None:
            pixels[k] = small
        sizes.append(size)
        errors.append(error)
    return pixels, sizes, errors


@dataclass
class DecodedImages:
    """One built cache: ``pixels`` (N, side, side, 3) uint8, read as a memory map (opened lazily in each process),
    ``sizes`` (N, 2) int64 original (height, width), ``errors`` {row: message} of unreadable files."""

    path: Path
    side: int
    sizes: np.ndarray
    errors: dict[int, str]
    seconds: float | None = None  # build time, None when an existing cache was read
    cores: int = 0  # processes that decoded it (build rate per core = len / seconds / cores); 0 when read
    _pixels: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            self._pixels = np.load(self.path, mmap_mode="r")
        return self._pixels

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Pixels (len(rows), side, side, 3) uint8 of these rows."""
        return self.pixels[rows]

    @property
    def nbytes(self) -> int:
        return len(self) * self.side * self.side * 3

    def __getstate__(self) -> dict[str, Any]:  # a worker opens its own map instead of receiving the array
        return self.__dict__ | {"_pixels": None}

    @classmethod
    def open(cls, path: Path) -> DecodedImages | None:
        """The cache at ``path`` if it is whole (its array renamed into place, its ``.json`` matching), else None."""
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            sizes = np.asarray(meta["sizes"], dtype=np.int64).reshape(-1, 2)
            images = cls(path, int(meta["side"]), sizes, {int(k): v for k, v in meta["errors"].items()})
            ok = meta["format"] == FORMAT and images.pixels.shape == (len(sizes), images.side, images.side, 3)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return images if ok else None


def build(
    paths: Sequence[str], side: int, resample: str, root: Path, name: str, workers: int | None = None
) -> DecodedImages:
    """The cache of ``paths``: opened if a whole one exists under ``root``, else built (see the module docstring)
    with ``workers`` processes (None: the CPUs this process may use; 0: in this process), with a progress bar."""
    from filelock import FileLock

    path = cache_path(paths, side, resample, root, name)
    images = DecodedImages.open(path)
    if images is not None:
        return images
    try:
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.with_suffix(".lock"))):
            images = DecodedImages.open(path)  # another process may have built it while this one waited
            if images is not None:
                return images
            for stale in root.glob(f"{path.name}.*.partial"):  # left by an interrupted build: we hold the lock
                stale.unlink(missing_ok=True)
            return _write(list(paths), side, resample, path, workers)
    except OSError as e:  # a read-only or foreign folder, a file where the folder should be...
        raise CacheFolderError(
            f"the decoded-image cache folder {root} cannot be written ({e.strerror or e}); set data.cache_dir to a "
            "writable folder, or data.cache=off"
        ) from None


def _write(paths: list[str], side: int, resample: str, path: Path, workers: int | None) -> DecodedImages:
    from tqdm.auto import tqdm

    tic = time.perf_counter()
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    sizes: list[tuple[int, int]] = []
    errors: dict[int, str] = {}
    jobs = [(paths[i : i + CHUNK], side, resample) for i in range(0, len(paths), CHUNK)]
    workers = (usable_cpus() if len(paths) >= POOL_MIN_FILES else 0) if workers is None else workers
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    cores = workers if pool is not None else 1
    try:
        pixels = open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(paths), side, side, 3))
        _reserve(partial)
        bar = tqdm(total=len(paths), desc=f"caching {path.name}", unit="img", disable=None, leave=False)
        for pixels_k, sizes_k, errors_k in pool.map(_shrink_chunk, jobs) if pool else map(_shrink_chunk, jobs):
            start = len(sizes)
            pixels[start : start + len(sizes_k)] = pixels_k
            errors |= {start + k: e for k, e in enumerate(errors_k) if e}
            sizes += sizes_k
            bar.update(len(sizes_k))
        bar.close()
        pixels.flush()
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        del pixels
        meta = {"format": FORMAT, "side": side, "count": len(paths), "first": paths[0] if paths else "",
                "sizes": [list(s) for s in sizes], "errors": {str(k): v for k, v in errors.items()}}  # fmt: skip
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta))
        os.replace(partial, path)  # the array is whole from this rename on
        _fsync_dir(path.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    images = DecodedImages(path, side, np.asarray(sizes, dtype=np.int64).reshape(-1, 2), errors)
    images.seconds, images.cores = time.perf_counter() - tic, cores
    return images


def _reserve(path: Path) -> None:
    """Allocate the whole (sparse) array file now, so a full disk fails here with an error naming the folder, not
    later with SIGBUS inside a write to the memory map (Linux; elsewhere a no-op)."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            message = f"no space left for the decoded-image cache in {path.parent}: set data.cache_dir"
            raise CacheFolderError(message) from None
        # file systems without fallocate (EOPNOTSUPP, EINVAL): the up-front free-space check in `wanted` remains
    finally:
        os.close(fd)


def sample_files(paths: Sequence[str], sample: int = FILES_SAMPLED) -> tuple[float, float, float]:
    """(median pixel count, mean bytes, median aspect ratio long side / short side) of up to ``sample`` evenly spaced
    files, read from their headers and sizes only (nothing is decoded); zeros when none can be read."""
    step = max(1, len(paths) // sample)
    areas, sizes, aspects = [], [], []
    for path in list(paths)[::step][:sample]:
        try:
            with Image.open(path) as img:
                width, height = img.size
            sizes.append(os.path.getsize(path))
        except Exception:  # an unreadable file is reported when it is used, not here
            continue
        areas.append(width * height)
        aspects.append(max(width, height) / max(1, min(width, height)))
    return (float(np.median(areas)), float(np.mean(sizes)), float(np.median(aspects))) if areas else (0.0, 0.0, 0.0)


def worth_it(paths: Sequence[str], side: int) -> bool:
    """``auto``'s rule: the cache takes no more disk space than the files (side² × 3 bytes per image against the
    files' mean size), never enlarges them (median file pixels ≥ side²), and does not squeeze them much (median
    aspect ratio at most ``MAX_ASPECT``: the cache stores squares). Reading the cache was faster than decoding the
    files at every file size measured (``benchmarks/image_cache.py``), so disk space and fidelity, not speed, decide:
    a 224 px network on 224 px JPEGs (cache side 320: 300 KB per image against some 20 KB, and enlarged) reads the
    files; a 32 px LeNet on 500x375 photos (7 KB against about 50 KB) reads the cache (``docs/speed.md``)."""
    area, size, aspect = sample_files(paths)
    return area >= side * side and side * side * 3 <= size and aspect <= MAX_ASPECT


def built(paths: Sequence[str], side: int, resample: str, root: Path, name: str) -> DecodedImages | None:
    """The whole cache of ``paths`` if one already exists (``dann cache`` built it, or an earlier run), else None."""
    try:
        return DecodedImages.open(cache_path(paths, side, resample, root, name))
    except DataError:  # a file that cannot be read: reported where the files are read
        return None


def wanted(mode: str, paths: Sequence[str], side: int, root: Path, what: str) -> bool:
    """Whether a domain's files go through the cache under ``data.cache`` = ``mode`` (see the module docstring).
    ``on`` raises ``DataError`` when the cache cannot fit on the disk; ``auto`` then warns and reads the files."""
    if mode == "off" or not paths:
        return False
    if mode == "auto" and not worth_it(paths, side):
        return False
    need = len(paths) * side * side * 3
    free = shutil.disk_usage(_existing(root)).free
    if need > free // 2:
        message = (
            f"{what}: its decoded-image cache needs {need / 2**30:.1f} GiB and {root} has {free / 2**30:.1f} GiB free "
            "(at most half is used); set data.cache_dir to a larger disk"
        )
        if mode == "on":
            raise DataError(f"{message}, or data.cache=off")
        warnings.warn(f"{message}; reading the files without the cache", DataWarning, stacklevel=3)
        return False
    return True


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def cache_settings(cfg: DataConfig, image: ImageConfig) -> tuple[int, str, Path]:
    """(side, resampling filter, cache folder) of a data config."""
    return cache_side(image, cfg.crop_scale), resample_filter(image), cache_root(cfg.cache_dir)
