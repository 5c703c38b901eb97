"""Shared checks for config values, with one rule set for the whole package.

Every check takes the full config key (``trainer.max_epochs``, ``optimizer.betas[1]``) and the
value, returns the value converted to a plain Python type, and raises
:class:`~convtrain.errors.ConfigError` with a message that starts with the key, so a bad
command-line override is easy to find.

The rules:

- **integers** (:func:`is_int`, :func:`integer`): Python and NumPy integers. Not bools (YAML's
  ``true`` must not silently become 1) and not floats, even integral ones: ``30.0`` is rejected
  with a hint to write ``30``.
- **reals** (:func:`is_real`, :func:`real`): ints and floats, NumPy scalars included; not bools
  and not strings. :func:`real` also requires a finite value.
- **bools** (:func:`is_bool`, :func:`boolean`): ``bool`` and ``np.bool_`` only; ``"yes"`` and
  ``1`` are not flags.

Range failures read ``<key>: must be >= 1, got 0``. Where a setting has its own wording, pass
``expected=`` (``"a positive integer"``): every failure, type or range, then reads
``<key>: expected a positive integer, got 0``.

:func:`did_you_mean` / :func:`closest` give the one "did you mean" hint used by every
unknown-name message.
"""
from __future__ import annotations

import difflib
import enum
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from convtrain.errors import ConfigError

__all__ = [
    "boolean", "closest", "did_you_mean", "integer", "is_bool", "is_int", "is_real", "mapping",
    "non_negative_int", "positive_int", "progress", "real", "real_sequence",
    "reject_unknown_keys", "seed", "unknown_key",
]


# --- predicates (drop-in replacements for convtrain.nn.spec.is_int / is_real) -------------
def is_int(value: Any) -> bool:
    """True for Python/NumPy integers; False for bools, floats (``3.0`` too) and strings."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """True for Python/NumPy ints and floats; False for bools and strings."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_bool(value: Any) -> bool:
    """True for ``bool`` and ``np.bool_`` only."""
    return isinstance(value, (bool, np.bool_))


# --- checks ------------------------------------------------------------------------------------
def _float_hint(value: Any, low: int | None) -> str:
    """`` (write 30, not 30.0)`` for an integral float that would otherwise be valid."""
    if isinstance(value, (float, np.floating)) and math.isfinite(value) \
            and float(value).is_integer() and (low is None or value >= low):
        return f" (write {int(value)}, not {float(value)!r})"
    return ""


def integer(key: str, value: Any, *, low: int | None = None, expected: str | None = None) -> int:
    """``value`` as an ``int`` >= ``low`` (see the module docstring for what counts as one).

    Messages: ``<key>: expected an integer, got 1.5`` / ``<key>: must be >= 1, got 0``, or
    ``<key>: expected <expected>, got ...`` for both when ``expected`` is given.
    """
    if not is_int(value):
        what = expected or "an integer"
        raise ConfigError(f"{key}: expected {what}, got {value!r}{_float_hint(value, low)}")
    if low is not None and value < low:
        if expected:
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        raise ConfigError(f"{key}: must be >= {low}, got {value!r}")
    return int(value)


def positive_int(key: str, value: Any) -> int:
    """An integer >= 1 (``<key>: expected a positive integer, got ...``)."""
    return integer(key, value, low=1, expected="a positive integer")


def non_negative_int(key: str, value: Any, *, zero_means: str | None = None) -> int:
    """An integer >= 0; ``zero_means="off"`` adds ``(0 = off)`` to the message."""
    note = f" (0 = {zero_means})" if zero_means else ""
    return integer(key, value, low=0, expected=f"an integer >= 0{note}")


def seed(value: Any, key: str = "seed") -> int:
    """A random seed: an integer >= 0 (``seed: expected a non-negative integer, got -1``)."""
    return integer(key, value, low=0, expected="a non-negative integer")


def real(key: str, value: Any, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False, expected: str | None = None) -> float:
    """``value`` as a finite ``float`` inside the bounds (``*_open`` excludes the bound).

    Messages: ``<key>: expected a number`` / ``expected a finite number`` / ``must be > 0``,
    or ``<key>: expected <expected>, got ...`` for all of them when ``expected`` is given.
    """
    if not is_real(value):
        raise ConfigError(f"{key}: expected {expected or 'a number'}, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ConfigError(f"{key}: expected {expected or 'a finite number'}, got {value!r}")
    too_low = low is not None and (x < low or (low_open and x == low))
    too_high = high is not None and (x > high or (high_open and x == high))
    if (too_low or too_high) and expected:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    if too_low:
        raise ConfigError(f"{key}: must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if too_high:
        raise ConfigError(f"{key}: must be {'<' if high_open else '<='} {high:g}, got {value!r}")
    return x


def boolean(key: str, value: Any, *, expected: str = "true or false") -> bool:
    """``value`` as a ``bool`` (YAML ``true`` / ``false``; ``"yes"`` or ``1`` are rejected)."""
    if not is_bool(value):
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return bool(value)


def progress(key: str, value: Any) -> bool | str:
    """A progress-bar setting: ``"auto"``, ``True`` or ``False``.

    Accepts bools and the strings ``auto`` / ``true`` / ``false`` in any case (also as an Enum
    member's value), as the ``trainer.progress`` schema field and command line give them.
    """
    raw = value.value if isinstance(value, enum.Enum) else value
    if is_bool(raw):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in ("auto", "true", "false"):
            return {"auto": "auto", "true": True, "false": False}[word]
    raise ConfigError(f"{key}: expected auto, true or false, got {value!r}")


def real_sequence(key: str, value: Any, length: int) -> list[Any]:
    """``value`` as a list of ``length`` items (each still to be checked by the caller)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != length:
        raise ConfigError(f"{key}: expected a list of {length} numbers, got {value!r}")
    return list(value)


def mapping(key: str, value: Any, *, expected: str = "a mapping") -> dict[str, Any]:
    """A plain ``dict`` copy of a mapping (``dict`` or OmegaConf ``DictConfig``), keys as str."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return {str(k): v for k, v in value.items()}


# --- unknown names -----------------------------------------------------------------------------
def closest(name: Any, candidates: Iterable[Any]) -> str | None:
    """The candidate closest to ``name`` (:func:`difflib.get_close_matches`), or None."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1)
    return close[0] if close else None


def did_you_mean(name: Any, candidates: Iterable[Any], prefix: str = "") -> str:
    """``"; did you mean '<prefix><closest>'?"`` or ``""`` when nothing is close.

    >>> did_you_mean("lrr", ["lr", "momentum"], "optimizer.")
    "; did you mean 'optimizer.lr'?"
    """
    match = closest(name, candidates)
    return f"; did you mean '{prefix}{match}'?" if match is not None else ""


def unknown_key(group: str, key: Any, known: Sequence[str]) -> ConfigError:
    """The error for ``<group>.<key>`` not among a fixed group's ``known`` keys:
    ``trainer.max_epoch: unknown key; did you mean 'trainer.max_epochs'? (valid keys: ...)``."""
    hint = did_you_mean(str(key), known, f"{group}.")
    return ConfigError(f"{group}.{key}: unknown key{hint} (valid keys: {', '.join(known)})")


def reject_unknown_keys(group: str, kind: str, name: str, given: Mapping[str, Any],
                        accepted: Sequence[str], elsewhere: Mapping[str, Sequence[str]]) -> None:
    """Raise ConfigError for the first key of ``given`` not in ``accepted``.

    For registries whose entries accept different options (optimizers, schedules): ``elsewhere``
    maps each registered name to its accepted keys, so the message can say e.g.
    ``optimizer.betas: does not apply to optimizer 'sgd' (it is an option of adam, adamw; ...)``.
    """
    for key in given:
        if key in accepted:
            continue
        owners = sorted(n for n, keys in elsewhere.items() if key in keys)
        options = ", ".join(accepted) if accepted else "none"
        if owners:
            hint = f"it is an option of {', '.join(owners)}"
        else:
            match = closest(key, accepted)
            hint = f"did you mean '{match}'?" if match is not None else "unknown key"
        raise ConfigError(
            f"{group}.{key}: does not apply to {kind} '{name}' ({hint}; "
            f"options of '{name}': name, {options})"
        )
