"""The two kinds of error convtrain raises on purpose.

* A **user mistake** -- anything a user can cause through a config, a command-line override or
  a data file -- raises :class:`ConfigError` (or :class:`DataError`) with a message naming the
  offending key, file or value. The CLI prints that one line without a traceback, exit status 2.
* **Misuse of the Python API or a bug in convtrain** (backward before forward, a stale cache,
  arrays of the wrong shape handed to the math) raises :class:`InternalError`, which the CLI
  never shortens: its traceback is what a bug report needs (exit status 1).
* A **check that ran and found a problem** (``task=gradcheck`` above its threshold) raises
  :class:`CheckFailed` after printing its report: one line, exit status 1, no traceback.
"""


class ConfigError(ValueError):
    """A bad configuration value, override, shape combination or input file."""


class DataError(ConfigError):
    """A dataset file is missing, corrupt, or fails its checksum."""


class InternalError(RuntimeError):
    """Misuse of convtrain's Python API or a bug in convtrain; always keeps its traceback."""


class CheckFailed(Exception):
    """A check the user asked for ran and failed (``task=gradcheck``): not a mistake in the
    input and not a bug in the check; the CLI prints the message as one line, exit status 1."""
