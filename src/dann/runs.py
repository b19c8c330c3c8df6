"""Run directories and atomic file writes. A run directory holds ``config.yaml``, ``metrics.jsonl``, ``train.jsonl``,
``checkpoints/last.pt`` (and ``checkpoints/prev.pt``, the one before it), ``checkpoints/best.pt`` and the
reports. Files are written to a temporary sibling, flushed and fsynced, then renamed, so a crash never leaves a
half-written file; an existing run is never replaced unless asked."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .errors import (
    CheckpointError,
    ConfigError,
    DannError,
    OutputError,
    OutputExistsError,
    RunDirError,
    RunDirWarning,
    UnsafeFileError,
)

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"  # one record per evaluation
TRAIN_LOG_FILE = "train.jsonl"  # one record per log step (train.log_every, and every evaluation): the training terms
LAST_CHECKPOINT = "checkpoints/last.pt"
PREV_CHECKPOINT = "checkpoints/prev.pt"
CHECKPOINT_FORMAT = 1  # the layout of Checkpoint.to_dict(); written in every checkpoint since the first version
# what torch's weights-only unpickler says when a file asks for an object it does not allow (any other refusal, such
# as an unknown opcode, means damaged bytes); read only by refused_as_unsafe
RISKY_PICKLE = re.compile(r"GLOBAL|reduce|new object|Can only build")
BEST_CHECKPOINT = "checkpoints/best.pt"  # the best step by the run's selection.validator (no target labels)
# What a start writes before its first checkpoint, besides checkpoints/ (made first, by prepare_run_dir): the files
# (data.json: data.fingerprint.DATA_FILE; default.json: config.RECIPE_FILE), TensorBoard's folder
# (training.tensorboard.EVENTS_DIR) and the control's (reporting.verdicts.CONTROL_DIR); tests/test_runs.py checks the
# names against those modules. A start that stopped before its first checkpoint leaves nothing else.
STARTUP_FILES = (CONFIG_FILE, METRICS_FILE, TRAIN_LOG_FILE, "data.json", "default.json")
STARTUP_EVENTS, STARTUP_CONTROL = "tensorboard", "control"
# temporary files of a write that never finished (``_write_temp``): ".<name>.<random>.tmp"
STARTUP_TEMPORARY = re.compile(rf"\.({'|'.join(map(re.escape, STARTUP_FILES))})\.\w+\.tmp")
CHECKPOINT_TEMPORARY = re.compile(r"\.[\w.-]+\.pt\.\w+\.tmp")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _output_errors(path: Path) -> Iterator[None]:
    """An ``OSError`` in the block (a full disk, no permission) becomes an ``OutputError`` naming ``path``."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


@contextlib.contextmanager
def _temp_file(path: Path) -> Iterator[tuple[Callable[[bytes], None], Path]]:
    """A new temporary file beside ``path``, as ``(write, its path)``: ``write(data)`` appends bytes. When the block
    ends the file is flushed and fsynced; if the block or a write raises, the file is removed. Raises
    ``OutputError`` when the file cannot be made or written."""
    if path.parent.is_file():
        raise OutputError(f"cannot write {path}: {path.parent} is a file, not a folder")
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    f = os.fdopen(fd, "wb")

    def write(data: bytes) -> None:
        with _output_errors(path):
            f.write(data)

    try:
        with _output_errors(path):
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the mode open() would give
        yield write, Path(tmp)
        with _output_errors(path):
            f.flush()
            os.fsync(fd)
            f.close()
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()  # a failed flush leaves bytes in the buffer: closing still releases the file
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``path``, flushed and fsynced; return its path."""
    with _temp_file(path) as (write, tmp):
        write(data)
    return tmp


def _replace(tmp: Path, path: Path) -> None:
    """Rename the complete temporary file ``tmp`` onto ``path`` (removing ``tmp`` if that fails), durably."""
    try:
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    _replace(_write_temp(path, data), path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8; a lone surrogate (a file name's undecodable byte, as Python reads
    it) is written as its backslash escape, so a report or CSV naming such a file is still written and valid UTF-8."""
    atomic_write_bytes(path, utf8(text))


def utf8(text: str) -> bytes:
    """``text`` in UTF-8, a lone surrogate written as its backslash escape (``\\udcff``) instead of raising."""
    return text.encode("utf-8", "backslashreplace")


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[Callable[[str], None]]:
    """Write ``path`` piece by piece, atomically: ``with atomic_writer(path) as write: write(text)`` appends UTF-8
    text (``utf8``) to a temporary file beside ``path``, renamed onto it only when the block ends without an error;
    if it raises (or is interrupted), the temporary file is removed and ``path`` is left as it was. Memory stays that
    of one piece. Raises ``OutputError`` when the file cannot be written (a full disk, a parent that is a file)."""
    path = Path(path)
    with _temp_file(path) as (write, tmp):
        yield lambda text: write(utf8(text))
    _replace(tmp, path)


def save_checkpoint(path: str | Path, state: dict[str, Any], previous: str | Path | None = None) -> None:
    """``torch.save`` to bytes, then an atomic write; ``state`` must hold only tensors and plain data.

    With ``previous``, the checkpoint being replaced is kept there, and only once the new one is complete on disk:
    the new file is fsynced under a temporary name, the old ``path`` is renamed to ``previous``, then the temporary
    file to ``path``. At every moment at least one complete checkpoint exists (``path`` or ``previous``)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    if previous is None or not path.exists():
        atomic_write_bytes(path, buffer.getvalue())
        return
    tmp = _write_temp(path, buffer.getvalue())
    try:
        os.replace(path, previous)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    _fsync_dir(path.parent)


def refused_as_unsafe(error: Exception) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a file because it holds pickled objects other than tensors
    and plain data (a file that could run code), rather than because its bytes are damaged. The one place that reads
    torch's wording (``RISKY_PICKLE``)."""
    unpickler_says = str(error).split("WeightsUnpickler error:")[-1]  # after torch's general advice, if any
    return isinstance(error, pickle.UnpicklingError) and bool(RISKY_PICKLE.search(unpickler_says))


def missing_file(path: Path, what: str, error: type[DannError], hint: str = "") -> DannError | None:
    """The error for a ``path`` that is no readable file (None when it is one): absent, a folder, a link to nowhere,
    or one the process may not read. ``what`` names the file in the message ("checkpoint",
    "model.pretrained_file"); ``hint`` follows "does not exist". Unreadable files raise a plain ``DannError``, never
    ``error``: a checkpoint that cannot be read for want of permission is not damaged (no fallback to ``prev.pt``)."""
    if path.is_symlink() and not path.exists():
        return error(f"{what} {path} is a link to {os.readlink(path)}, which does not exist")
    if path.is_dir():
        return error(f"{what} {path} is a folder, not a file")
    if not path.exists():
        return error(f"{what} {path} does not exist{hint}")
    if not os.access(path, os.R_OK):
        return DannError(f"cannot read {what} {path}: permission denied")
    return None


def _file_kind(path: Path) -> str:
    """What a weights file is by its first bytes: "torch" (a zip archive holding torch.save's data.pkl), "zip" (another
    zip archive: .npz data, another program's), "safetensors" (an 8-byte header length, then JSON), "empty", or
    "unknown"."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
        if not head:
            return "empty"
        if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
            return "safetensors"
        if head[:4] != b"PK\x03\x04":
            return "unknown"
        with zipfile.ZipFile(path) as archive:  # a damaged central directory raises: then it is a damaged zip
            return "torch" if any(n.endswith("data.pkl") for n in archive.namelist()) else "zip"
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return "torch"  # it starts as a zip archive (every torch.save since 1.6) but cannot be read as one


def weights_error(error: Exception, path: Path, what: str, corrupt: type[DannError] = CheckpointError) -> DannError:
    """The error to raise for ``error``, raised while reading the weights file ``path`` (``what`` names it in the
    message: "checkpoint", "model.pretrained_file"): ``UnsafeFileError`` for a file that holds pickled objects other
    than tensors and plain data (nothing in it was run); a plain ``DannError`` for a file the system would not let the
    process read; else ``corrupt``, saying what the file is instead (empty, another format than its name says, a zip
    archive torch did not write) or, for a damaged file of its own format, the reader's reason. The one place that
    turns torch's and safetensors' reading errors into words."""
    if isinstance(error, OSError) and not isinstance(error, EOFError):
        return DannError(f"cannot read {what} {path}: {error.strerror or error}")
    problem = str(error).split("WeightsUnpickler error:")[-1].strip()  # torch's wording: keep its first sentence
    problem = re.split(r"\. |\n", problem, maxsplit=1)[0]
    if not isinstance(error, RuntimeError | pickle.UnpicklingError) or not problem:  # EOFError, KeyError: 101, ...
        problem = f"{type(error).__name__}: {problem}" if problem else type(error).__name__
    if refused_as_unsafe(error):
        return UnsafeFileError(
            f"refused to load {what} {path}: it holds Python objects other than tensors and plain data, which "
            f"could run code when loaded ({problem}); nothing in it was run"
        )
    size = path.stat().st_size if path.is_file() else 0
    kind, named = _file_kind(path), "safetensors" if path.suffix == ".safetensors" else "torch"
    if kind == "empty":
        return corrupt(f"{what} {path} is truncated or corrupt: it is empty")
    if kind == "zip":
        return corrupt(
            f"{what} {path} is truncated or corrupt: a zip archive without the data.pkl that torch.save writes (.npz "
            f"data, or another program's; {size:,} bytes)"
        )
    if kind != named and kind != "unknown":
        saved = ".safetensors" if kind == "safetensors" else "torch.save"
        return corrupt(
            f"{what} {path} is a {saved} file, but its name ends in {path.suffix or 'no suffix'}: files are read by "
            "their suffix (.safetensors, else as torch.save writes)"
        )
    if kind == "unknown" and named == "torch":
        return corrupt(
            f"{what} {path} is truncated or corrupt: neither a zip archive, as torch.save writes, nor .safetensors "
            f"({size:,} bytes)"  # torch's words on such bytes ("Unsupported operand 109") would only puzzle
        )
    reader = "safetensors" if named == "safetensors" else "torch"
    return corrupt(f"{what} {path} is truncated or corrupt ({size:,} bytes; {reader}: {problem})")


def load_weights_only(
    path: Path, what: str, corrupt: type[DannError] = CheckpointError, map_location: str | torch.device = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never arbitrary code. A file carrying
    other pickled objects raises ``UnsafeFileError`` (nothing in it is run); an unreadable one raises ``corrupt``
    (``weights_error``). ``what`` names the file in messages ("checkpoint", "model.pretrained_file")."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise weights_error(e, path, what, corrupt) from None


def load_state_file(path: Path, what: str, corrupt: type[DannError] = ConfigError) -> dict[str, Any]:
    """A state dict from a ``.safetensors`` file or a ``torch.save``d one (``weights_only``; a dict under
    ``state_dict`` or ``model`` is taken), for the weights a user names (``model.pretrained_file``). Raises
    ``corrupt`` naming ``what`` and the file when it is missing, unreadable or holds no dict of tensors, and
    ``UnsafeFileError`` for pickled objects."""
    if (missing := missing_file(path, what, corrupt)) is not None:
        raise missing
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as e:
            raise weights_error(e, path, what, corrupt) from None
    else:
        state = load_weights_only(path, what, corrupt)
        if isinstance(state, dict):
            state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not state:
        held = f"a {type(state).__name__}" if not isinstance(state, dict) else "an empty dict"
        raise corrupt(f"{what} {path} holds no state dict (a dict of tensors), but {held}")
    odd = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        raise corrupt(
            f"{what} {path} holds no state dict (a dict of tensors): its entry {odd!r} is a {type(state[odd]).__name__}"
        )
    return state


@dataclass
class Checkpoint:
    """Everything a run needs to continue, and everything ``load_run`` needs to rebuild its model: the one type for
    ``last.pt``, ``prev.pt`` and ``best.pt``. Only tensors and plain data, so it loads with ``weights_only=True``.

    ``rng`` is rank 0's CPU generator state (``torch.get_rng_state()``), ``rng_cuda`` its GPU generator's (None on
    CPUs), ``rng_ranks`` every rank's ``{"cpu", "cuda"}`` states under torchrun; ``meta`` holds ``classes``,
    ``input_shape``, ``image`` (how image files become inputs) and ``scale`` (how arrays were stored)."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: torch.Tensor
    config: dict[str, Any]
    meta: dict[str, Any]
    rng_cuda: torch.Tensor | None = None
    rng_ranks: list[dict[str, torch.Tensor | None]] | None = None
    scaler: dict[str, Any] | None = None  # the GradScaler's state under train.precision=fp16, else None
    method: dict[str, Any] = field(default_factory=dict)  # state a method keeps across steps (EMA teacher, centres)
    skipped_steps: int = 0  # steps whose update was discarded (train.on_nonfinite=skip), whole run
    selection: dict[str, Any] | None = None  # the best step so far by selection.validator, as in metrics.jsonl
    # the weights the run evaluates and predicts with, when they are not the trained ones in ``model`` (a method's EMA
    # teacher: mean_teacher, adamatch); None: ``model``. ``model`` is always what a resume continues from.
    eval_model: dict[str, torch.Tensor] | None = None
    format: int = CHECKPOINT_FORMAT

    @property
    def predicting(self) -> dict[str, torch.Tensor]:
        """The weights to evaluate and predict with: ``eval_model`` when the method keeps one, else ``model``."""
        return self.eval_model if self.eval_model is not None else self.model

    def to_dict(self) -> dict[str, Any]:
        """The plain dict that is saved (no copies of the tensors)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: Any, path: str | Path) -> Checkpoint:
        """Check what a file held: a dict with every required key, of a format this version reads. Raises
        ``CheckpointError`` naming ``path``: a foreign file (missing keys, or no ``format``, which every dann
        checkpoint has), or one of a newer format than ``CHECKPOINT_FORMAT``. Keys of no field are ignored."""
        names = [f.name for f in fields(cls)]
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in state] if isinstance(state, dict) else required
        missing = missing or (["format"] if "format" not in state else [])
        if missing:
            raise CheckpointError(f"{path} is not a dann checkpoint (missing: {', '.join(missing)})")
        version = state["format"]
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CheckpointError(f"checkpoint {path} has an unknown format {version!r}; it was not written by dann")
        if version > CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint {path} has format {version}, newer than this version of dann reads (format "
                f"{CHECKPOINT_FORMAT}); load it with the dann version that wrote it, or a newer one"
            )
        return cls(**{k: v for k, v in state.items() if k in names})

    def save(self, path: str | Path, previous: str | Path | None = None) -> None:
        """Write atomically (``save_checkpoint``; with ``previous``, the replaced file is kept there)."""
        save_checkpoint(path, self.to_dict(), previous)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load a run's checkpoint safely (``load_weights_only``, then ``Checkpoint.from_dict``). Raises
    ``UnsafeFileError`` for a file carrying pickled objects and ``CheckpointError`` for a missing, truncated, corrupt,
    foreign or newer-format file."""
    path = Path(path)
    hint = "; was the run trained to its first evaluation?"
    if (missing := missing_file(path, "checkpoint", CheckpointError, hint)) is not None:
        raise missing
    return Checkpoint.from_dict(load_weights_only(path, "checkpoint", CheckpointError, map_location), path)


def load_latest_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The newest complete checkpoint of a run: ``last.pt``, or, when that is missing, truncated or corrupt (a
    crash while it was written), ``prev.pt`` with a warning. An unsafe file is refused, never skipped over."""
    run_dir = Path(run_dir)
    try:
        return load_checkpoint(run_dir / LAST_CHECKPOINT, map_location)
    except CheckpointError as e:
        if not (run_dir / PREV_CHECKPOINT).is_file():
            raise
        warnings.warn(f"{e}; using the previous checkpoint {run_dir / PREV_CHECKPOINT}", stacklevel=2)
        return load_checkpoint(run_dir / PREV_CHECKPOINT, map_location)


def reconcile_best(run_dir: str | Path, resumed: Checkpoint, selection: dict[str, Any] | None) -> None:
    """On resume from ``resumed``, make ``best.pt`` agree with ``selection``, the best step of the evaluation records
    kept (those up to ``resumed.step``; None: no step chosen yet). A crash can leave a ``best.pt`` written after the
    checkpoint resumed from (``best.pt`` is written before ``last.pt``, and a damaged ``last.pt`` resumes from
    ``prev.pt``): its step is then in no kept record. Such a file is replaced by ``resumed`` when the best step is
    the resumed one, else removed with a warning (the best step's weights are lost; the next step the validator
    prefers writes ``best.pt`` again)."""
    path = Path(run_dir) / BEST_CHECKPOINT
    if selection is not None and selection["step"] == resumed.step:
        resumed.save(path)
        return
    if not path.is_file():
        return
    step = load_checkpoint(path).step
    if selection is not None and step == selection["step"]:
        return
    path.unlink()
    kept = f"step {selection['step']} by {selection['validator']}" if selection else "no step yet"
    warnings.warn(
        f"removed {path} (step {step}): it was written after the checkpoint resumed from (step {resumed.step}), and "
        f"the records kept choose {kept}; best.pt is written again at the next step the validator prefers",
        stacklevel=2,
    )


def guard_output(
    paths: Sequence[str | Path], overwrite: bool, label: str = "", advice: str = "pass `overwrite=True` to replace it"
) -> None:
    """The one guard of every command that writes (train's run directory, evaluate, predict, compare): unless
    ``overwrite``, refuse when any of ``paths`` exists, a file or a folder with anything in it. Raises
    ``OutputExistsError`` naming the first such path (after ``label``), then ``advice``. Call it before any work."""
    if overwrite:
        return
    for path in map(Path, paths):
        if path.is_dir() and any(path.iterdir()):
            raise OutputExistsError(f"{label}{path} already exists and is not empty; {advice}")
        if path.exists() and not path.is_dir():
            raise OutputExistsError(f"{label}{path} already exists; {advice}")


def has_checkpoint(path: str | Path) -> bool:
    """Whether the run directory ``path`` holds a checkpoint: ``last.pt``, ``prev.pt``, ``best.pt`` or a stage's, any
    finished ``checkpoints/*.pt`` (never a temporary file)."""
    return any(p.is_file() for p in (Path(path) / "checkpoints").glob("[!.]*.pt"))


def _written_at_start(entry: Path) -> bool:
    """Whether ``entry`` of a run directory is something a start writes before its first checkpoint."""
    if entry.name == "checkpoints":
        return entry.is_dir() and all(f.is_file() and CHECKPOINT_TEMPORARY.fullmatch(f.name) for f in entry.iterdir())
    if entry.name == STARTUP_EVENTS:
        return entry.is_dir() and all(
            f.is_file() and f.name.startswith("events.out.tfevents.") for f in entry.iterdir()
        )
    if entry.name == STARTUP_CONTROL:
        return entry.is_dir() and not not_of_a_start(entry)
    return entry.is_file() and (entry.name in STARTUP_FILES or bool(STARTUP_TEMPORARY.fullmatch(entry.name)))


def not_of_a_start(path: str | Path) -> list[str]:
    """The entries of the folder ``path`` that a start of a dann run does not leave before its first checkpoint,
    sorted: what a retry must not delete. Empty for an empty folder, and for what a start that failed or was killed
    leaves: ``checkpoints/`` with no checkpoint in it (``prepare_run_dir`` makes it first), ``STARTUP_FILES``,
    TensorBoard's event files, a control folder of the same kind and the temporary files of unfinished writes.
    Without ``checkpoints/`` every entry counts (a lone ``config.yaml`` may be the user's own)."""
    entries = sorted(Path(path).iterdir())
    if not any(e.name == "checkpoints" and e.is_dir() for e in entries):
        return [e.name for e in entries]
    return [e.name for e in entries if not _written_at_start(e)]


def failed_start(path: str | Path) -> bool:
    """Whether ``path`` is a folder with nothing a retry could lose: empty, or left by a start that failed (an
    unreadable image, a non-finite loss) or was killed before its first checkpoint (``not_of_a_start``)."""
    return Path(path).is_dir() and not not_of_a_start(path)


def prepare_run_dir(path: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Create (or check, on resume) a run directory. A folder that holds a checkpoint is refused unless ``resume``
    (continue it) or ``overwrite`` (delete it first) is given, and so is one holding files a dann run does not write
    (a user's own) unless ``overwrite``. A folder a start left with no checkpoint (``failed_start``) holds nothing
    to keep: it is started afresh, with a ``RunDirWarning``."""
    path = Path(path)
    if resume and overwrite:
        raise RunDirError("`resume=True` and `overwrite=True` exclude each other")
    if resume:
        if not any((path / name).is_file() for name in (LAST_CHECKPOINT, PREV_CHECKPOINT)):
            raise RunDirError(f"cannot resume: {path / LAST_CHECKPOINT} does not exist")
        for tmp in (path / "checkpoints").glob(".*.tmp"):  # left by a crash in the middle of a write
            tmp.unlink(missing_ok=True)
        return path
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} exists and is not a directory")
    if not overwrite and path.is_dir() and any(path.iterdir()) and not has_checkpoint(path):
        foreign = not_of_a_start(path)
        if foreign:
            raise OutputExistsError(
                f"run directory {path} already exists and is not a dann run (it holds no checkpoint, and files a run "
                f"does not write: {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); choose another "
                "`out`, or pass `overwrite=True` to delete what it holds"
            )
        warnings.warn(f"{path} held no checkpoint (a start that failed): starting afresh", RunDirWarning, stacklevel=3)
        overwrite = True
    advice = "pass `resume=True` to continue it, `overwrite=True` to replace it, or choose another `out`"
    guard_output([path], overwrite, "run directory ", advice)
    if path.is_dir() and any(path.iterdir()):
        shutil.rmtree(path)
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create run directory {path}: {e.strerror}") from None
    return path


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file. A last line without its newline (torn by a crash mid-write) is dropped;
    any other unreadable line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise RunDirError(f"{path} line {number} is not a JSON record: {line[:80]!r}")
        records.append(record)
    return records


def truncate_metrics(path: str | Path, last_step: int) -> None:
    """On resume, drop the lines of ``metrics.jsonl`` or ``train.jsonl`` written after the checkpoint being resumed
    from (they will be rewritten)."""
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
