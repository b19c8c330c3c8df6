"""The project's own error types: every user-facing failure is one of these, with an actionable message."""


class DannError(Exception):
    """Base class; the CLI prints these as one clear line instead of a traceback. Messages name the Python API's
    parameters in backquotes (`overwrite=True`, `out`); the CLI prints them as its flags (--overwrite, --out)."""


class ConfigError(DannError, ValueError):
    """A configuration key, value or name is wrong."""


class DataError(DannError, ValueError):
    """An input file or array is missing, unreadable or inconsistent."""


class RunDirError(DannError):
    """A run directory cannot be used as asked (exists, missing, or incomplete)."""


class CheckpointError(RunDirError):
    """A checkpoint is missing, truncated or corrupt (e.g. a crash while it was written or copied); resuming falls
    back to the previous checkpoint."""


class DivergedError(DannError):
    """Training stopped because the loss or the weights became non-finite (``training.nonfinite``): a property of the
    hyper-parameters (too high a learning rate or λ_adv), not of the data. ``dann tune`` records it and goes on."""


class UnsafeFileError(DannError):
    """A checkpoint or weight file holds pickled Python objects, which could run code when loaded, where only
    tensors and plain data belong. Refused outright, never worked around."""


class OutputError(DannError):
    """An output file cannot be written (no space left, a read-only or missing folder)."""


class OutputExistsError(OutputError, RunDirError):
    """An output (a file, or a run directory with files in it) already exists and replacing it was not asked for
    (``overwrite``); see ``dann.runs.guard_output``."""


class DataWarning(UserWarning):
    """Something in the data deserves attention but does not stop the run (e.g. a class absent from the target)."""


class RunDirWarning(DataWarning):
    """A run directory is used otherwise than its command said, with nothing lost: a folder that a start left without
    a checkpoint (it failed or was killed first) is started afresh. A ``DataWarning``, so the CLI prints it as one
    line."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM after writing a checkpoint of the step it had reached
    (``training.interrupt``). ``checkpoint`` is None when the run has no run directory (nothing was written);
    ``signal`` is the signal's number (the exit status of ``dann train`` is 128 + it)."""

    def __init__(self, step: int, steps: int, checkpoint: str | None, signal: int) -> None:
        self.step, self.steps, self.checkpoint, self.signal = step, steps, checkpoint, signal
        saved = f"saved {checkpoint}" if checkpoint else "nothing saved (no run directory)"
        super().__init__(f"interrupted at step {step}/{steps}; {saved}")
