"""The project's own error types: every user-facing failure is one of these, with an actionable message."""


class DannError(Exception):
    """Base class; the CLI prints these as one clear line instead of a traceback."""


class ConfigError(DannError, ValueError):
    """A configuration key, value or name is wrong."""


class DataError(DannError, ValueError):
    """An input file or array is missing, unreadable or inconsistent."""


class RunDirError(DannError):
    """A run directory cannot be used as asked (exists, missing, or incomplete)."""


class DataWarning(UserWarning):
    """Something in the data deserves attention but does not stop the run (e.g. a class absent from the target)."""
