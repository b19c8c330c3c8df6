"""Image folders and list files → domains, without decoding a single image.

- a folder of class subfolders, ``root/<class>/**/*.png``: labeled (subfolders are searched recursively);
- a flat folder of images, ``root/*.jpg``: unlabeled;
- a list file, ``.csv`` (``path,label`` or ``path``; an optional header row ``path,label``) or ``.txt``/``.lst``
  (``path label`` or ``path`` per line, split at the last whitespace; a line that names an existing file, or every
  line under a ``path`` header, is one path whatever it holds): relative paths are resolved against
  ``data.root`` when it is set (the layout of other tools' ImageList: ``root/image_list/a.txt`` listing
  ``domain_a/class/1.jpg``), else against the list file's folder. A third column gives per-sample weights
  (``dann.data.weights``): ``path,label,weight`` rows in a ``.csv``; in a ``.txt``/``.lst`` after a first line
  ``path label weight``, each line split at its last two runs of whitespace.

The target of training is read by ``read_target``: every image below its folder, whatever the depth, unlabeled
unless its subfolders (or a list's labels) are all source classes, which then only score accuracy.

Classes are matched by name. The source's classes, sorted, are the model's classes; a labeled evaluation target with
a class the source lacks is an error naming both; source classes absent from the target are allowed, with a
warning."""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import DataError, DataWarning
from .cached import with_cache
from .domains import SOURCE_NAME, DomainData, make_domain_data
from .images import ImageDomain, Pipeline
from .transforms import ImageConfig, eval_transform, train_transform
from .weights import as_weights

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LIST_EXTENSIONS = (".csv", ".txt", ".lst")


@dataclass
class ImageList:
    """Image file paths and, when the source of them has labels, one class name per path."""

    paths: list[str]
    labels: list[str] | None
    origin: str  # the folder or list file, for messages
    weights: torch.Tensor | None = None  # (N,) per-sample weights, from a list file's weight column


def is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def walk_images(folder: Path) -> list[str]:
    """Every image file under ``folder``, recursively (hidden files and folders skipped), in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if is_image(f)]
    return found


def _no_images(folder: Path) -> DataError:
    return DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")


def scan_folder(folder: Path) -> ImageList:
    """Class subfolders (labeled) or images directly in ``folder`` (unlabeled); both at once is an error."""
    entries = sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)
    top = [e.path for e in entries if e.is_file() and is_image(e.name)]
    per_class = {e.name: walk_images(Path(e.path)) for e in entries if e.is_dir()}
    with_images = {name: files for name, files in per_class.items() if files}
    if top and with_images:
        raise DataError(
            f"{folder} holds image files and also subfolders with images ({', '.join(list(with_images)[:3])}): "
            "put every image in a class subfolder (labeled) or keep them all in the folder itself (unlabeled)"
        )
    if top:
        return ImageList(top, None, str(folder))
    if not with_images:
        raise _no_images(folder)
    for name in sorted(set(per_class) - set(with_images)):
        warnings.warn(f"{folder / name}: class folder without image files, ignored", DataWarning, stacklevel=2)
    return ImageList(
        [p for files in with_images.values() for p in files],
        [name for name, files in with_images.items() for _ in files],
        str(folder),
    )


WEIGHTED_HEADER = ["path", "label", "weight"]
HEADERS = (["path", "label"], ["path"], WEIGHTED_HEADER)


def _list_rows(path: Path) -> list[tuple[str, list[str]]]:
    """(line, its columns) per row with content: a ``.csv`` split by the csv module, a ``.txt``/``.lst`` at its last
    run of whitespace (its last two after a ``path label weight`` header)."""
    text = path.read_text(encoding="utf-8-sig")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if path.suffix.lower() == ".csv":
        rows = [[c.strip() for c in row] for row in csv.reader(lines)]
    else:
        weighted = bool(lines) and lines[0].lower().split() == WEIGHTED_HEADER
        rows = [line.rsplit(None, 2 if weighted else 1) for line in lines]
    return [(line, r) for line, r in zip(lines, rows, strict=True) if r and any(r)]


def _one_path_per_line(rows: list[tuple[str, list[str]]], base: str, header: list[str] | None) -> bool:
    """Whether a list is read as one path per line, whatever the path holds (spaces, commas): under a ``path``
    header, or when a line names an existing file that its first column alone does not (the separator is part of
    the path)."""
    if header == ["path"]:
        return True
    return any(
        len(cols) > 1 and not os.path.isfile(os.path.join(base, cols[0])) and os.path.isfile(os.path.join(base, line))
        for line, cols in rows
    )


def _weights(path: Path, rows: list[list[str]]) -> torch.Tensor:
    """The weight column (the third) of a list file's rows, numbers checked by ``as_weights``."""
    values = []
    for number, row in enumerate(rows, 1):
        try:
            values.append(float(row[2]))
        except ValueError:
            raise DataError(f"list file {path}, row {number}: weight {row[2]!r} is not a number") from None
    return as_weights(values, len(rows), f"list file {path}", lambda i: f"row {i + 1}")


def read_list(path: Path, root: str = "", hint_root: bool = True) -> ImageList:
    """A ``.csv``/``.txt``/``.lst`` list of ``path[,label]`` rows; every listed file must exist. Relative entries
    resolve against ``root`` (``data.root``) when it is given, else against the list file's folder. Missing entries
    that exist under another folder are named in the error, with the setting that reads them (``hint_root``: the
    caller takes ``data.root``)."""
    try:
        lines = _list_rows(path)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"list file {path} could not be read: {e}") from None
    header = [c.lower() for c in lines[0][1]] if lines else None
    if header in HEADERS:
        lines = lines[1:]
    else:
        header = None
    base = root or str(path.parent)
    bare = _one_path_per_line(lines, base, header)
    rows = [[line] if bare else cols for line, cols in lines]
    if not rows:
        raise DataError(f"list file {path} lists no images")
    width = len(rows[0])
    for number, row in enumerate(rows, 1):
        if len(row) != width or width > 3:
            columns = "path,label,weight" if width > 2 else "path,label"
            raise DataError(f"list file {path}, row {number}: expected {min(width, 3)} columns ({columns}), got {row}")
    weights = _weights(path, rows) if width == 3 else None
    paths = [os.path.normpath(os.path.join(base, row[0])) for row in rows]  # absolute paths stay
    missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
    if missing:
        found = _found_under(path, root, [rows[i][0] for i in missing[:20]])
        raise DataError(
            f"list file {path} names {len(missing)} missing file(s), e.g. {', '.join(paths[i] for i in missing[:3])}"
            f"{_where_hint(path, root, found, hint_root)}"
        )
    return ImageList(paths, [row[1] for row in rows] if width >= 2 else None, str(path), weights)


def _found_under(path: Path, root: str, entries: list[str]) -> str:
    """A folder other than the one ``entries`` were resolved against (the list's own, or one above it) under which
    every relative entry of ``entries`` exists, shown relative to the working folder when it lies below it; ""
    when there is none."""
    relative = [e for e in entries if not os.path.isabs(e)]
    folder = path.absolute().parent
    tried = os.path.abspath(root) if root else str(folder)
    for candidate in [folder, *folder.parents]:
        if str(candidate) != tried and relative and all(os.path.isfile(candidate / e) for e in relative):
            shown = os.path.relpath(candidate)
            return str(candidate) if shown.startswith("..") else shown
    return ""


def _where_hint(path: Path, root: str, found: str, hint_root: bool) -> str:
    """The end of a missing-entries error: where the entries are, and which setting reads them from there."""
    if not found:
        return f" (relative entries are read from {root}, data.root)" if root else ""
    where = f"; they exist under {found}"
    if root:
        return f"{where}: with data.root set, relative entries are read from it ({root}), not from the list's folder"
    if not hint_root:
        return f"{where}: relative entries are read from the list file's folder; write them relative to it"
    listed = os.path.relpath(path.absolute(), os.path.abspath(found))
    return f"{where}: set data.root={found} to read them from there, and name the list relative to it ({listed})"


def read_images(path: str | Path, recursive: bool = False, root: str = "", hint_root: bool = True) -> ImageList:
    """The images a path names: a list file (relative entries read from ``root`` when given, see ``read_list``), or
    a folder (``recursive``: every image below it, unlabeled)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
        return read_list(path, root, hint_root)
    if path.is_file():
        raise DataError(f"{path} is neither a folder of images nor a list file ({', '.join(LIST_EXTENSIONS)})")
    if not path.is_dir():
        raise DataError(f"image folder {path} does not exist")
    if recursive:
        files = walk_images(path)
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found, searched recursively")
        return ImageList(files, None, str(path))
    return scan_folder(path)


def read_target(path: str, classes: list[str], source: str, root: str = "") -> ImageList:
    """The target of training, unlabeled by definition: every image below a folder whatever its depth (per-day or
    per-station subfolders, images beside them), or every file a list names. Its labels (a folder's first-level
    subfolders, a list's label column) are kept, to score accuracy only, when every one is a class of ``source``
    (the transductive protocol of the benchmarks); otherwise the images are read unlabeled, with a warning when
    some of them are classes (a misnamed class folder: the target's accuracy is then not reported)."""
    images = read_images(path, recursive=True, root=root)
    folder = Path(path).is_dir()
    if folder:
        parts = [os.path.relpath(p, path).split(os.sep) for p in images.paths]
        labels = None if any(len(p) == 1 for p in parts) else [p[0] for p in parts]  # images beside subfolders: none
    else:
        labels = images.labels
    if labels is None:
        return images
    unknown = sorted(set(labels) - set(classes))
    if not unknown:
        return scan_folder(Path(path)) if folder else images
    known = sorted(set(labels) & set(classes))
    if known:
        what = "subfolders" if folder else "labels"
        warnings.warn(
            f"{images.origin} is read as unlabeled images, so no target accuracy is reported: its {what} "
            f"{', '.join(unknown[:5])} are not classes of {source}, though {', '.join(known[:5])} are; give labeled "
            "target images with data.target_eval to score them",
            DataWarning,
            stacklevel=2,
        )
    return dataclasses.replace(images, labels=None)


def unknown_classes(images: ImageList, classes: list[str]) -> list[str]:
    """The class names of ``images`` outside ``classes``, sorted."""
    return sorted(set(images.labels or ()) - set(classes))


def encode_labels(images: ImageList, classes: list[str], source: str, unknown_ok: bool = False) -> torch.Tensor | None:
    """Class names → indices into ``classes``; a name outside them is an error naming both origins, or with
    ``unknown_ok`` becomes ``len(classes) + j``, j its place in ``unknown_classes`` (for ``evaluate``, which counts
    them apart)."""
    if images.labels is None:
        return None
    unknown = unknown_classes(images, classes)
    index = {c: i for i, c in enumerate([*classes, *unknown])}
    if unknown and not unknown_ok:
        raise DataError(
            f"class {unknown[0]!r} of {images.origin} is not a class of {source} "
            f"({len(unknown)} unknown: {', '.join(unknown[:5])}); known classes: {', '.join(classes[:20])}"
        )
    missing = sorted(set(classes) - set(images.labels))
    if missing:
        warnings.warn(
            f"{images.origin} has no images of {len(missing)} class(es) of {source}: {', '.join(missing[:10])}",
            DataWarning,
            stacklevel=2,
        )
    return torch.tensor([index[c] for c in images.labels], dtype=torch.int64)


def make_pipeline(cfg: DataConfig, image: ImageConfig) -> Pipeline:
    return Pipeline(
        image,
        train_transform(image, cfg),
        eval_transform(image),
        cfg.num_workers,
        cfg.pin_memory,
        cfg.persistent_workers,
        cfg.skip_bad_images,
    )


def build_folder_data(
    cfg: DataConfig, image: ImageConfig, paths: tuple[str, str, str], sources: list[tuple[str, str]] | None = None
) -> DomainData:
    """DomainData of image folders or list files: ``paths`` are (source, target, target_eval or ""); ``sources``
    (name, path) the labeled domains when there are several (or one with a name). Classes are matched by name: the
    model's classes are every labeled domain's, sorted."""
    sources = sources or [(SOURCE_NAME, paths[0])]
    labeled = {name: read_images(path, root=cfg.root) for name, path in sources}
    for images in labeled.values():
        if images.labels is None:
            raise DataError(
                f"source {images.origin} needs labels: class subfolders, or a list file with path,label rows"
            )
    classes = sorted({label for images in labeled.values() for label in images.labels})  # type: ignore[union-attr]
    origin = " and ".join(images.origin for images in labeled.values())
    pipeline = make_pipeline(cfg, image)

    def domain(images: ImageList) -> ImageDomain:
        y = encode_labels(images, classes, origin)
        return ImageDomain(images.paths, y, pipeline, images.origin, w=images.weights)

    target = domain(read_target(paths[1], classes, origin, cfg.root))
    target_eval = domain(read_images(paths[2], root=cfg.root)) if paths[2] else None
    single = list(labeled) == [SOURCE_NAME]  # one unnamed labeled domain: as it always was
    if single:
        source, target, target_eval = with_cache([domain(labeled[SOURCE_NAME]), target, target_eval], cfg, image)
    else:  # each labeled domain with its own cache; pooled by ``CachedImageDomain.join`` (or from the files)
        names = list(labeled)
        *own, target, target_eval = with_cache(
            [*(_labeled(labeled[n], domain) for n in names), target, target_eval], cfg, image
        )
        source = dict(zip(names, own, strict=True))
    origins = None if single else {name: images.origin for name, images in labeled.items()}
    return make_domain_data(
        source, target, target_eval, classes, cfg.val_fraction, cfg.seed, paths, image, cfg.intermediate, origins
    )


def _labeled(images: ImageList, domain: Callable[[ImageList], ImageDomain]) -> ImageDomain:
    """A labeled domain of several: its classes are all the model's classes, and one lacking some is expected."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".* has no images of", DataWarning)
        return domain(images)
