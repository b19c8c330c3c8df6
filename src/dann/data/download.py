"""``dann download NAME --root DIR``: fetch a benchmark's archives (urllib), verify their checksums, unpack them
safely, convert them where needed, then check the result with ``catalog.check_dataset``.

An archive already in ``DIR`` is not fetched again (this is also how datasets without a direct public address are
installed: put the file there by hand, then run the command). An archive without a published checksum is refused
unless ``verify=False`` (``--no-verify``); its SHA-256 is printed so it can be compared by hand. Unpacking refuses
any member that would land outside ``DIR`` (absolute paths, ``..``, links pointing out) and any device file."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from ..errors import DataError
from .archives import Archive
from .catalog import DATASETS, check_dataset

CHUNK = 1 << 20


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Stream ``url`` (http, https or file) to ``dest`` through a temporary file, renamed when complete."""
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f, CHUNK)
    except (OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot fetch {url}: {e}") from None
    os.replace(tmp, dest)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, checksum: str, required: bool = True) -> str:
    """Compare ``path`` with ``checksum`` (``"sha256:<hex>"`` or ``"md5:<hex>"``); returns a line for the log.
    Without a known checksum: raise when ``required``, else report the file's SHA-256 as unverified."""
    if checksum:
        algorithm, _, expected = checksum.partition(":")
        actual = file_digest(path, algorithm)
        if actual != expected.lower():
            raise DataError(
                f"{path}: {algorithm} is {actual} but {expected} was published: the file is damaged or not the "
                "expected one; delete it and run the command again"
            )
        return f"{path}: {algorithm} verified"
    actual = file_digest(path, "sha256")
    if required:
        raise DataError(
            f"{path}: no published checksum is known for this file (its sha256 is {actual}); "
            "check it against the dataset's homepage and pass `verify=False` to use it"
        )
    return f"{path}: sha256 {actual} (not verified: --no-verify)"


def _safe_name(name: str, archive: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or parts[0] == "/" or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"{archive}: member {name!r} would be written outside the target folder; refusing to unpack")


def extract(archive: Path, dest: Path) -> None:
    """Unpack a .zip or .tar(.gz/.bz2/.xz) into ``dest`` after checking every member."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _safe_name(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise DataError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to unpack")
            zf.extractall(dest)
        return
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError as e:
        raise DataError(f"{archive} is neither a zip nor a tar archive: {e}") from None
    with tf:
        for member in tf.getmembers():
            _safe_name(member.name, archive)
            if member.issym() or member.islnk():
                target = PurePosixPath(member.name).parent / member.linkname if member.issym() else member.linkname
                _safe_name(str(target), archive)
            elif not (member.isfile() or member.isdir()):
                raise DataError(f"{archive}: member {member.name!r} is a device or pipe; refusing to unpack")
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, filter="data")
        else:  # Python without extraction filters: the members were checked above
            tf.extractall(dest)


def _install(archive: Archive, root: Path, homepage: str, verify: bool, fetch: Callable) -> Iterator[str]:
    path = root / archive.filename
    if not path.is_file():
        if not archive.url:
            raise DataError(
                f"{archive.filename} has no direct public address: download it from {homepage} into {root}, "
                "then run this command again to verify and unpack it"
            )
        yield f"fetching {archive.url}"
        path.parent.mkdir(parents=True, exist_ok=True)
        fetch(archive.url, path)
    yield verify_checksum(path, archive.checksum, verify)
    done = path.with_name(f".{path.name}.unpacked")
    if archive.extract and not done.exists():
        extract(path, root)
        done.touch()
        yield f"unpacked {path} into {root}"


def download(name: str, root: str | Path, verify: bool = True, fetch: Callable = fetch_url) -> Iterator[str]:
    """Install the benchmark ``name`` under ``root``; yields one line per step done. ``fetch(url, dest)`` is the
    downloader (tests pass a local one)."""
    info = DATASETS.get(name)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for part in info.parts:
        yield from download(part, root, verify, fetch)
    if info.parts:
        return
    for archive in info.archives:
        yield from _install(archive, root, info.homepage, verify, fetch)
    marker = root / f".{name}.prepared"
    if info.prepare is not None and not marker.exists():
        info.prepare(root)
        marker.touch()
        yield f"converted {name} to image folders"
    check_dataset(name, root, list(info.domains))
    yield f"{name} is complete under {root}: {', '.join(f'{d} ({n} images)' for d, n in info.domains.items())}"
