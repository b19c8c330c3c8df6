"""Benchmark layouts, checks and ``dann download``, run against small local archives (never the network)."""

import bz2
import gzip
import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dann.cli import main
from dann.config import load_config
from dann.data import catalog, digits
from dann.data.catalog import DATASETS, Archive, Benchmark, check_dataset
from dann.data.download import download, extract, fetch_url, verify_checksum
from dann.errors import ConfigError, DataError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads_and_names_catalog_domains(path):
    cfg = load_config(str(path))
    if cfg.data.dataset:
        info = DATASETS.get(cfg.data.dataset)
        assert {cfg.data.source, cfg.data.target} <= set(info.domains)


@pytest.mark.parametrize("name", DATASETS.names())
def test_catalog_entries_are_consistent(name):
    info = DATASETS.get(name)
    assert info.domains and all(n > 0 for n in info.domains.values())
    assert not info.classes or len(info.classes) == len(set(info.classes)) == info.num_classes
    for archive in info.archives:
        assert archive.checksum == "" or archive.checksum.split(":")[0] in ("sha256", "md5")


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buffer, "PNG")
    return buffer.getvalue()


def test_check_lists_everything_missing(tmp_path):
    for cls in ("bike", "mug"):
        (tmp_path / "amazon" / "images" / cls).mkdir(parents=True)
        (tmp_path / "amazon" / "images" / cls / "1.jpg").write_bytes(png_bytes())
    with pytest.raises(DataError) as err:
        check_dataset("office31", tmp_path, ["amazon/images", "webcam/images"])
    message = str(err.value)
    assert "amazon/images lacks 29 class folder(s): back_pack, bike_helmet" in message
    assert "amazon/images has 2 images, 2817 expected (2815 missing)" in message
    assert f"{tmp_path / 'webcam/images'} is missing (795 images in 31 class folders expected)" in message
    assert f"dann download office31 --root {tmp_path}" in message
    with pytest.raises(ConfigError, match="'amazon' is not a domain of office31; its domains: amazon/images"):
        check_dataset("office31", tmp_path, ["amazon"])
    with pytest.raises(ConfigError, match="unknown dataset 'office'; valid datasets: digits, domainnet"):
        check_dataset("office", tmp_path, ["amazon"])


def make_archive(path: Path, members: dict[str, bytes]) -> str:
    """A .tar.gz or .zip holding ``members``; returns its sha256 checksum string."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_benchmark(tmp_path, monkeypatch):
    """A two-domain benchmark whose archives are served from a local folder by file:// URLs."""
    served = tmp_path / "served"
    served.mkdir()
    members = {f"tiny/{d}/{c}/{i}.png": png_bytes() for d in ("a", "b") for c in ("x", "y") for i in range(2)}
    checksums = [make_archive(served / "a.tar.gz", {k: v for k, v in members.items() if "/a/" in k})]
    checksums.append(make_archive(served / "b.zip", {k: v for k, v in members.items() if "/b/" in k}))
    archives = tuple(
        Archive(name, (served / name).as_uri(), checksum)
        for name, checksum in zip(("a.tar.gz", "b.zip"), checksums, strict=True)
    )
    info = Benchmark("tiny", "https://example.org", {"tiny/a": 4, "tiny/b": 4}, 2, ("x", "y"), archives)
    monkeypatch.setitem(DATASETS._items, "tiny", info)
    return info


def test_download_fetches_verifies_unpacks_and_checks(tiny_benchmark, tmp_path):
    fetched = []

    def fetch(url, dest):
        fetched.append(url)
        fetch_url(url, dest)

    lines = list(download("tiny", tmp_path / "data", fetch=fetch))
    assert len(fetched) == 2 and sum("sha256 verified" in line for line in lines) == 2
    assert lines[-1].startswith("tiny is complete") and (tmp_path / "data/tiny/b/y/1.png").is_file()
    assert list(download("tiny", tmp_path / "data", fetch=fetch))[-1].startswith("tiny is complete")
    assert len(fetched) == 2  # archives already there are verified, not fetched again
    cfg = load_config(values={"data": {"dataset": "tiny", "root": str(tmp_path / "data"), "source": "tiny/a"}})
    check_dataset(cfg.data.dataset, cfg.data.root, [cfg.data.source])


def test_download_through_the_cli(tiny_benchmark, tmp_path, capsys):
    assert main(["download", "tiny", "--root", str(tmp_path / "d")]) == 0
    assert "tiny is complete under" in capsys.readouterr().out
    assert main(["download", "tinyy", "--root", str(tmp_path / "d")]) == 2
    assert "unknown dataset 'tinyy'; valid datasets:" in capsys.readouterr().err


def test_damaged_and_unverifiable_archives_are_refused(tiny_benchmark, tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.tar.gz").write_bytes(b"something else")
    with pytest.raises(DataError, match=r"a\.tar\.gz: sha256 is [0-9a-f]{64} but [0-9a-f]{64} was published"):
        list(download("tiny", root))
    unverified = Archive("a.tar.gz", tiny_benchmark.archives[0].url)
    monkeypatch.setitem(DATASETS._items, "tiny", Benchmark("tiny", "h", {"tiny/a": 4}, 2, archives=(unverified,)))
    (root / "a.tar.gz").unlink()
    with pytest.raises(
        DataError, match=r"no published checksum is known.*its sha256 is [0-9a-f]{64}.*pass `verify=False`"
    ):
        list(download("tiny", root))
    assert list(download("tiny", root, verify=False))[-1].startswith("tiny is complete")


def test_datasets_without_a_public_address_explain_themselves(tmp_path):
    with pytest.raises(DataError, match=r"domain_adaptation_images\.tar\.gz has no direct public address.*gatech"):
        list(download("office31", tmp_path))


@pytest.mark.parametrize(
    "members",
    [{"../evil.txt": b"x"}, {"/tmp/evil.txt": b"x"}, {"a/../../evil.txt": b"x"}],
    ids=["dotdot", "absolute", "nested-dotdot"],
)
@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_unpacking_refuses_paths_outside_the_root(tmp_path, members, suffix):
    archive = tmp_path / f"bad{suffix}"
    make_archive(archive, members)
    with pytest.raises(DataError, match="would be written outside the target folder"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_unpacking_refuses_links_out_and_devices(tmp_path):
    for name, kind, link in (("link", tarfile.SYMTYPE, "/etc/passwd"), ("dev", tarfile.CHRTYPE, "")):
        archive = tmp_path / f"{name}.tar"
        with tarfile.open(archive, "w") as tf:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tf.addfile(info)
        with pytest.raises(DataError, match=r"outside the target folder|device or pipe"):
            extract(archive, tmp_path / "out")


def test_verify_checksum_accepts_md5_and_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert verify_checksum(path, "md5:900150983cd24fb0d6963f7d28e17f72").endswith("md5 verified")
    assert "sha256 verified" in verify_checksum(path, "sha256:" + hashlib.sha256(b"abc").hexdigest())


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_digit_files_become_png_class_folders(tmp_path):
    raw = tmp_path / "mnist" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 3), ("t10k", 2)):
        _idx(raw / f"{prefix}-images-idx3-ubyte.gz", np.arange(n * 28 * 28).reshape(n, 28, 28) % 256)
        _idx(raw / f"{prefix}-labels-idx1-ubyte.gz", np.array([7, 1, 7][:n]))
    digits.prepare_mnist(tmp_path)
    assert sorted(p.name for p in (tmp_path / "mnist/train/7").iterdir()) == ["00000.png", "00002.png"]
    img = np.asarray(Image.open(tmp_path / "mnist/train/1/00001.png"))
    assert img.shape == (28, 28) and img[0, 1] == (28 * 28 + 1) % 256

    (tmp_path / "usps" / "raw").mkdir(parents=True)
    for name in ("usps.bz2", "usps.t.bz2"):
        row = "10 " + " ".join(f"{i + 1}:{-1 if i else 1}" for i in range(256)) + "\n"  # label 10 → digit 9
        (tmp_path / "usps" / "raw" / name).write_bytes(bz2.compress(row.encode()))
    digits.prepare_usps(tmp_path)
    usps = np.asarray(Image.open(tmp_path / "usps/train/9/00000.png"))
    assert usps.shape == (16, 16) and usps[0, 0] == 255 and usps[0, 1] == 0


def test_mnistm_label_files_become_class_folders(tmp_path):
    base = tmp_path / "mnist_m"
    for split in ("train", "test"):
        (base / f"mnist_m_{split}").mkdir(parents=True)
        (base / f"mnist_m_{split}" / "00000000.png").write_bytes(png_bytes())
        (base / f"mnist_m_{split}_labels.txt").write_text("00000000.png 5\n")
    digits.prepare_mnistm(tmp_path)
    assert (base / "train" / "5" / "00000000.png").is_file() and (base / "test" / "5" / "00000000.png").is_file()


def test_digits_family_covers_its_parts():
    family = catalog.DATASETS.get("digits")
    assert set(family.parts) == {"mnist", "usps", "svhn", "mnistm"}
    assert all(set(DATASETS.get(p).domains) <= set(family.domains) for p in family.parts)
