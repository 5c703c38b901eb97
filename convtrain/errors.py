"""User-facing errors.

Anything a user can cause through a config, a command-line override or a data file raises
:class:`ConfigError` (or a subclass) with a message naming the offending key, file or value.
The CLI prints these messages without a traceback and exits non-zero.
"""


class ConfigError(ValueError):
    """A bad configuration value, override, shape combination or input file."""


class DataError(ConfigError):
    """A dataset file is missing, corrupt, or fails its checksum."""
