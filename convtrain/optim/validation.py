"""Value checks for optimizer and schedule settings.

Each check names the full config key (``optimizer.momentum``) in its ConfigError so that a bad
command-line override is easy to find. ``bool`` is rejected where a number is expected because
YAML's ``true`` would otherwise silently become 1.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from convtrain.errors import ConfigError


def as_plain_dict(cfg: Any, group: str) -> dict[str, Any]:
    """Copy a mapping (``dict`` or OmegaConf ``DictConfig``) into a plain ``dict``.

    Raises:
        ConfigError: when ``cfg`` is not a mapping (e.g. ``optimizer=0.1`` on the command line).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{group}: expected a mapping like {{name: ..., ...}}, got {cfg!r}")
    return {str(k): v for k, v in cfg.items()}


def real(key: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite float inside the given bounds.

    ``low_open`` / ``high_open`` make the corresponding bound exclusive.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if low is not None and (x < low or (low_open and x == low)):
        raise ConfigError(f"{key}: must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and (x > high or (high_open and x == high)):
        raise ConfigError(f"{key}: must be {'<' if high_open else '<='} {high:g}, got {value!r}")
    return x


def integer(key: str, value: Any, *, low: int | None = None) -> int:
    """Return ``value`` as an int (integral floats such as ``30.0`` are accepted) >= ``low``."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        n = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        n = int(value)
    else:
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if low is not None and n < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value!r}")
    return n


def boolean(key: str, value: Any) -> bool:
    """Return ``value`` if it is a real bool (YAML ``true``/``false``)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def real_sequence(key: str, value: Any, length: int) -> list[Any]:
    """Return ``value`` as a list of ``length`` items (each still to be checked by the caller)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != length:
        raise ConfigError(f"{key}: expected a list of {length} numbers, got {value!r}")
    return list(value)


def reject_unknown_keys(group: str, kind: str, name: str, given: Mapping[str, Any],
                        accepted: Sequence[str], elsewhere: Mapping[str, Sequence[str]]) -> None:
    """Raise ConfigError for the first key of ``given`` not in ``accepted``.

    ``elsewhere`` maps each registered variant to its accepted keys so that the message can say
    e.g. "optimizer.betas does not apply to optimizer 'sgd' (it is an option of adam, adamw)".
    """
    for key in given:
        if key in accepted:
            continue
        owners = sorted(n for n, keys in elsewhere.items() if key in keys)
        options = ", ".join(accepted) if accepted else "none"
        if owners:
            hint = f"it is an option of {', '.join(owners)}"
        else:
            import difflib  # noqa: PLC0415 - only on the error path

            close = difflib.get_close_matches(key, list(accepted), n=1)
            hint = f"did you mean '{close[0]}'?" if close else "unknown key"
        raise ConfigError(
            f"{group}.{key}: does not apply to {kind} '{name}' ({hint}; "
            f"options of '{name}': name, {options})"
        )
