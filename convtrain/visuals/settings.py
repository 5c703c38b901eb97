"""The ``logger`` config group: every key's default and check, declared once.

Two keys belong to the writing itself (:data:`OUTPUT_OPTIONS`); every other key is declared by
the visual that reads it (``period`` / ``options`` of a
:class:`~convtrain.visuals.hook.VisualHook`). :data:`LoggerSettings` is the dataclass of all of
them: the Hydra schema of the ``logger`` group (``convtrain.app.schema`` stores it) and what
:func:`parse_logger_settings` returns.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

from convtrain import validate
from convtrain.errors import InternalError
from convtrain.visuals import hooks as _hooks  # noqa: F401  (registers every visual)
from convtrain.visuals.hook import VISUAL_HOOKS, Option

#: where pictures and records go (read by the VisualLogger and VisualContext), with their
#: places among the visuals' keys (VisualHook.place)
OUTPUT_OPTIONS = (
    (0, Option("tensorboard", True, bool, validate.boolean,
               "false: no event files at all (PNGs still follow `png`)")),
    (80, Option("png", True, bool, validate.boolean,
                "also write the pictures to <run>/images/<kind>/")),
)


def _collect_options() -> dict[str, Option]:
    placed = list(OUTPUT_OPTIONS) + [(hook.place, o) for hook in VISUAL_HOOKS
                                     for o in hook.declared_options()]
    options: dict[str, Option] = {}
    for _, option in sorted(placed, key=lambda item: item[0]):  # stable: declaration order
        if option.key in options:
            raise InternalError(f"logger.{option.key} is declared twice")
        options[option.key] = option
    return options


#: logger key -> its declaration
LOGGER_OPTIONS: dict[str, Option] = _collect_options()

LoggerSettings = dataclasses.make_dataclass(
    "LoggerSettings",
    [(o.key, o.type, dataclasses.field(default=o.default)) for o in LOGGER_OPTIONS.values()])
LoggerSettings.__module__ = __name__
LoggerSettings.__doc__ = ("What a run logs to TensorBoard (run_dir/tensorboard) and as PNGs "
                          "(run_dir/images):\n\n" + "\n".join(
                              f"- {o.key} = {o.default!r}: {o.help}"
                              for o in LOGGER_OPTIONS.values()))


def parse_logger_settings(logger: Mapping[str, Any] | Any | None) -> Any:
    """Check the ``logger`` config group (a mapping or a :data:`LoggerSettings`); missing keys
    take their defaults.

    Raises:
        ConfigError: naming ``logger.<key>`` for an unknown key or a bad value.
    """
    if logger is None:
        return LoggerSettings()
    if dataclasses.is_dataclass(logger) and not isinstance(logger, type):
        logger = dataclasses.asdict(logger)
    logger = validate.mapping("logger", logger, expected="a mapping of logger settings")
    checked = {}
    for key, value in logger.items():
        if key not in LOGGER_OPTIONS:
            raise validate.unknown_key("logger", key, list(LOGGER_OPTIONS))
        # the schema may hold enum members: check their values
        value = value.value if isinstance(value, enum.Enum) else value
        checked[key] = LOGGER_OPTIONS[key].check(f"logger.{key}", value)
    return LoggerSettings(**checked)
