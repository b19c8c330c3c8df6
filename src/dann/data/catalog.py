"""Standard domain-adaptation benchmarks: the folders each one should have under ``data.root``, how many images each
holds, and where its archives can be fetched. ``check_dataset`` tells a user exactly what is missing from a local
copy; ``dann download NAME --root DIR`` (``download.py``) fetches, verifies and unpacks the archives.

Image counts are those the datasets' authors publish (Office-31: Saenko et al. 2010; Office-Home: Venkateswara et
al. 2017; VisDA-2017: Peng et al. 2017; DomainNet: the cleaned release on ai.bu.edu/M3SDA; the digits: the sizes
torchvision's readers produce). Checksums are given only where they could be checked against a published value
(see ``Archive.checksum``); an archive without one is refused unless the user passes ``--no-verify``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, DataWarning
from ..registry import Registry
from .archives import Archive
from .folders import walk_images

DATASETS: Registry = Registry("dataset")


@dataclass(frozen=True)
class Benchmark:
    name: str
    homepage: str
    domains: dict[str, int]  # folder (relative to data.root) → expected number of images below it
    num_classes: int  # class subfolders in each domain folder
    classes: tuple[str, ...] = ()  # their names, where checked
    archives: tuple[Archive, ...] = ()
    prepare: Callable[[Path], None] | None = field(default=None, repr=False)  # after unpacking (e.g. → PNG folders)
    parts: tuple[str, ...] = ()  # a family of benchmarks sharing one root: downloaded part by part


def register(b: Benchmark) -> Benchmark:
    return DATASETS.register(b.name)(b)


OFFICE31_CLASSES = (
    "back_pack bike bike_helmet bookcase bottle calculator desk_chair desk_lamp desktop_computer file_cabinet "
    "headphones keyboard laptop_computer letter_tray mobile_phone monitor mouse mug paper_notebook pen phone printer "
    "projector punchers ring_binder ruler scissors speaker stapler tape_dispenser trash_can"
).split()
OFFICEHOME_CLASSES = (
    "Alarm_Clock Backpack Batteries Bed Bike Bottle Bucket Calculator Calendar Candles Chair Clipboards Computer "
    "Couch Curtains Desk_Lamp Drill Eraser Exit_Sign Fan File_Cabinet Flipflops Flowers Folder Fork Glasses Hammer "
    "Helmet Kettle Keyboard Knives Lamp_Shade Laptop Marker Monitor Mop Mouse Mug Notebook Oven Pan Paper_Clip Pen "
    "Pencil Postit_Notes Printer Push_Pin Radio Refrigerator Ruler Scissors Screwdriver Shelf Sink Sneakers Soda "
    "Speaker Spoon TV Table Telephone ToothBrush Toys Trash_Can Webcam"
).split()
VISDA_CLASSES = "aeroplane bicycle bus car horse knife motorcycle person plant skateboard train truck".split()
DIGITS = tuple(str(d) for d in range(10))
DOMAINNET = "http://csr.bu.edu/ftp/visda/2019/multi-source"

register(
    Benchmark(
        "office31",
        "https://faculty.cc.gatech.edu/~judy/domainadapt/ (archive on Google Drive: fetch it by hand)",
        {"amazon/images": 2817, "dslr/images": 498, "webcam/images": 795},
        31,
        tuple(OFFICE31_CLASSES),
        (Archive("domain_adaptation_images.tar.gz"),),
    )
)
register(
    Benchmark(
        "officehome",
        "https://www.hemanthdv.org/officeHomeDataset.html (archive on Google Drive: fetch it by hand)",
        {
            f"OfficeHomeDataset_10072016/{d}": n
            for d, n in (("Art", 2427), ("Clipart", 4365), ("Product", 4439), ("Real World", 4357))
        },
        65,
        tuple(OFFICEHOME_CLASSES),
        (Archive("OfficeHomeDataset_10072016.zip"),),
    )
)
register(
    Benchmark(
        "visda2017",
        "https://github.com/VisionLearningGroup/taskcv-2017-public/tree/master/classification",
        {"train": 152397, "validation": 55388},
        12,
        tuple(VISDA_CLASSES),
        tuple(Archive(f"{s}.tar", f"http://csr.bu.edu/ftp/visda17/clf/{s}.tar") for s in ("train", "validation")),
    )
)
register(
    Benchmark(
        "domainnet",
        "http://ai.bu.edu/M3SDA/ (the cleaned release)",
        {"clipart": 48129, "infograph": 51605, "painting": 72266, "quickdraw": 172500, "real": 172947, "sketch": 69128},
        345,
        (),
        tuple(
            Archive(
                f"{d}.zip",
                f"{DOMAINNET}/groundtruth/{d}.zip" if d in ("clipart", "painting") else f"{DOMAINNET}/{d}.zip",
            )
            for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
        ),
    )
)


def _digits() -> None:
    """The digit benchmarks: converted to PNG class folders by ``digits.py`` after download."""
    from . import digits

    parts = digits.benchmarks()
    for name, counts, archives, prepare in parts:
        register(Benchmark(name, digits.HOMEPAGES[name], counts, 10, DIGITS, archives, prepare))
    every = {domain: n for _, counts, _, _ in parts for domain, n in counts.items()}
    names = tuple(name for name, *_ in parts)
    register(Benchmark("digits", "see its parts: " + ", ".join(names), every, 10, DIGITS, parts=names))


_digits()


def count_images(folder: Path) -> int:
    return len(walk_images(folder))


def _domain_problems(info: Benchmark, root: Path, domain: str) -> list[str]:
    folder = root / domain
    expected = info.domains[domain]
    if not folder.is_dir():
        return [f"{folder} is missing ({expected} images in {info.num_classes} class folders expected)"]
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    problems = []
    if info.classes and set(info.classes) - set(found):
        missing = sorted(set(info.classes) - set(found))
        problems.append(f"{folder} lacks {len(missing)} class folder(s): {', '.join(missing[:10])}")
    elif len(found) != info.num_classes:
        problems.append(f"{folder} has {len(found)} class folders, {info.num_classes} expected")
    n = count_images(folder)
    if n < expected:
        problems.append(f"{folder} has {n} images, {expected} expected ({expected - n} missing)")
    elif n > expected:
        warnings.warn(f"{folder} has {n} images, {expected} expected ({n - expected} extra)", DataWarning, stacklevel=3)
    return problems


def check_dataset(name: str, root: str | Path, domains: Sequence[str]) -> None:
    """Check that ``root`` holds the named benchmark's ``domains`` (folders relative to it) completely; raise one
    ``DataError`` listing every missing folder, class folder and image count, or warn about extra images."""
    info = DATASETS.get(name)
    if not root:
        raise ConfigError(f"data.dataset={name} needs data.root, the folder that holds {', '.join(info.domains)}")
    unknown = [d for d in domains if d not in info.domains]
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a domain of {name}; its domains: {', '.join(info.domains)}")
    problems = [p for d in domains for p in _domain_problems(info, Path(root), d)]
    if problems:
        raise DataError(
            f"{name} under {root} is incomplete: {'; '.join(problems)}. Get it with `dann download {name} --root "
            f"{root}` or from {info.homepage}"
        )
