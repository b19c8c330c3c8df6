import atexit
import io
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

from dann.config import load_config
from dann.data import as_domain, make_domain_data
from dann.training.trainer import Trainer

# The suite trains tiny models: one intra-op thread is faster for them, and it keeps the suite's time steady on a
# loaded machine (a busy 2-core box makes torch's spinning thread pool many times slower).
torch.set_num_threads(1)

# Decoded-image caches (data.cache) of the suite, and of the commands it launches, go to a folder of its own
os.environ["DANN_CACHE"] = tempfile.mkdtemp(prefix="dann-test-cache-")
atexit.register(shutil.rmtree, os.environ["DANN_CACHE"], True)


@pytest.fixture(scope="session", autouse=True)
def _one_run_per_default():
    """With no method named, dann trains the selecting default: the control and every candidate, then the rule's
    pick (``dann.selection.default``). The tests of other mechanics that leave the method to the default, and their
    shared fixtures, train the fixed recipe alone, one run, as ``--method`` would; the tests marked ``selecting``
    train the real default (``_the_real_default``)."""
    from dann.config import SELECTION

    candidates = SELECTION["candidates"]
    SELECTION["candidates"] = {}
    yield candidates
    SELECTION["candidates"] = candidates


@pytest.fixture(autouse=True)
def _the_real_default(request, monkeypatch, _one_run_per_default):
    if request.node.get_closest_marker("selecting") is not None:
        from dann.config import SELECTION

        monkeypatch.setitem(SELECTION, "candidates", _one_run_per_default)


def blobs(n: int, shift: float, seed: int, dims: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes in ``dims`` dimensions, the whole cloud moved by ``shift`` (a domain shift)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dims)) + 2.0 * y[:, None] + shift
    return x.astype(np.float32), y


def tiny_domains():
    x_s, y_s = blobs(80, 0.0, 0)
    x_t, y_t = blobs(60, 1.5, 1)
    return make_domain_data(as_domain(x_s, y_s), as_domain(x_t, y_t), val_fraction=0.2)


def tiny_config():
    """A config that trains the `mlp` backbone for a few steps on the CPU."""
    return load_config(
        values={
            # the seed's network (no bottleneck): exact per-sample tests need no BatchNorm coupling the batch's rows
            "model": {"backbone": "mlp", "mlp_dims": [16], "discriminator_dims": [8], "bottleneck_dim": 0},
            "method": {"name": "dann"},
            "train": {
                "steps": 12,
                "batch_size": 16,
                "eval_every": 6,
                "log_every": 3,
                "progress": False,
                "device": "cpu",
                "precision": "fp32",  # tests compare exact numbers: the same arithmetic on every machine
            },
        }
    )


@pytest.fixture
def tiny_data():
    return tiny_domains()


@pytest.fixture
def tiny_cfg():
    return tiny_config()


@pytest.fixture
def npz_files(tmp_path):
    """source.npz (x, y), target.npz (x, y: labels kept for evaluation only)."""
    paths = {}
    for name, shift, seed in (("source", 0.0, 0), ("target", 1.5, 1)):
        x, y = blobs(60, shift, seed)
        paths[name] = tmp_path / f"{name}.npz"
        np.savez(paths[name], x=x, y=y)
    return paths


@pytest.fixture(scope="session")
def shape_folders(tmp_path_factory):
    """Generated image folders (read-only: copy before changing): ``source`` (3 classes × 8, lab style), ``target``
    (3 classes × 6, new-instrument style, labeled for evaluation) and ``flat`` (12 unlabeled target images)."""
    from .shapes import make_folder

    root = tmp_path_factory.mktemp("shapes")
    return {
        "source": make_folder(root / "source", style=0, per_class=8, seed=0),
        "target": make_folder(root / "target", style=1, per_class=6, seed=1),
        "flat": make_folder(root / "flat", style=1, per_class=4, seed=2, labeled=False),
    }


class Killed(BaseException):
    """Stands for a kill (SIGKILL, power loss): nothing in dann catches it, as nothing can catch a kill."""


@pytest.fixture
def crash_after_first_checkpoint(monkeypatch):
    """``crash(train, *args, **kwargs)`` runs ``train`` so that it dies (``Killed``) right after writing its first
    checkpoint, as a killed run would, then restores the trainer."""

    def crash(train, *args, **kwargs):
        save = Trainer._save

        def save_then_die(self, *a):
            save(self, *a)
            raise Killed

        monkeypatch.setattr(Trainer, "_save", save_then_die)
        try:
            with pytest.raises(Killed):
                train(*args, **kwargs)
        finally:
            monkeypatch.setattr(Trainer, "_save", save)

    return crash


def npz_bytes() -> bytes:
    """An .npz file's bytes: a zip archive, but not one torch.save writes."""
    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros(3))
    return buffer.getvalue()


def damaged_weight_files(folder, good) -> dict[str, tuple[object, str]]:
    """Every kind of file that is not readable weights, made from the readable ``good`` (a ``torch.save`` file):
    name → (path, what the error must say after the file's name). Shared by the tests of every weights reader."""
    from safetensors.torch import save_file

    data = good.read_bytes()
    tail = bytearray(data)
    tail[-1024:-512] = bytes(512)  # a zeroed sector in the zip's central directory
    files = {
        "empty": (b"", "is truncated or corrupt: it is empty$"),
        "text": (b"model: resnet50\n", "is truncated or corrupt: neither a zip archive"),
        "random bytes": (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "is truncated"),
        "truncated": (data[: len(data) // 2], r"is truncated or corrupt \([0-9,]+ bytes; torch: "),
        "zip cut at its header": (data[:40], r"is truncated or corrupt \([0-9,]+ bytes; torch: "),
        "damaged central directory": (bytes(tail), r"is truncated or corrupt \([0-9,]+ bytes; torch: "),
        "another zip archive": (npz_bytes(), "is truncated or corrupt: a zip archive without the data.pkl"),
    }
    out = {}
    for name, (content, says) in files.items():
        path = folder / f"{name.replace(' ', '-')}.pt"
        path.write_bytes(content)
        out[name] = (path, says)
    junk = folder / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    out["safetensors"] = (junk, r"is truncated or corrupt \([0-9,]+ bytes; safetensors: ")
    renamed = folder / "safetensors-named.pt"
    save_file({"w": torch.zeros(2)}, str(renamed))
    out["safetensors under .pt"] = (renamed, "is a .safetensors file, but its name ends in .pt")
    torch_named = folder / "torch-named.safetensors"
    torch_named.write_bytes(data)
    out["torch.save under .safetensors"] = (torch_named, "is a torch.save file, but its name ends in .safetensors")
    (folder / "a-folder.pt").mkdir()
    out["folder"] = (folder / "a-folder.pt", "is a folder, not a file$")
    (folder / "dangling.pt").symlink_to(folder / "gone.pt")
    out["dangling link"] = (folder / "dangling.pt", f"is a link to {folder / 'gone.pt'}, which does not exist$")
    return out
