"""Layer options, declared once per layer class and checked the same way from YAML and Python.

A layer class lists its options as a tuple of :class:`Option` (``Conv2d.options``). From that one
declaration convtrain derives

* the config keys a layer type accepts (``model.layers.conv1.<key>``) and the did-you-mean hint
  for a typo (:mod:`convtrain.nn.layer_types`);
* the checking of every value, by its *kind* (an integer, an ``[h, w]`` pair, a padding, a
  number in a range, a flag, a name), with one wording whether the value came from a config
  (``model.layers.conv1.filters: must be >= 1, got 0``) or from a constructor call
  (``layer 'conv2d' argument 'out_channels': must be >= 1, got 0``);
* the defaults: a constructor argument's default is the one in the public signature
  (``Conv2d(..., stride=1)``), read once when the class is defined;
* the generic :meth:`convtrain.nn.base.Layer.from_config`.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Sequence
from typing import Any

from convtrain import validate
from convtrain.errors import ConfigError

#: marks an option without a default (``Option.default``): the key must be given.
REQUIRED = inspect.Parameter.empty

#: the kinds of value an option can hold (what :meth:`Option.check` accepts).
KINDS = ("int", "pair", "padding", "number", "flag", "name")


def key_path(where: str, key: str) -> str:
    """How messages name one setting of a layer.

    ``("model.layers.conv1", "filters")`` -> ``"model.layers.conv1.filters"`` (a config key the
    user can search for); ``("layer 'conv2d'", "out_channels")`` ->
    ``"layer 'conv2d' argument 'out_channels'"`` (a directly constructed layer).
    """
    if where.startswith("layer '"):
        return f"{where} argument '{key}'"
    return f"{where}.{key}"


def format_pair(hw: tuple[int, int]) -> str:
    """``(3, 3)`` -> ``"3x3"`` (the notation of error messages and ``summary()``)."""
    return f"{hw[0]}x{hw[1]}"


def format_padding(padding: tuple[int, int]) -> str:
    """``(2, 2)`` -> ``"2"``, ``(1, 2)`` -> ``"(1, 2)"``."""
    return str(padding[0]) if padding[0] == padding[1] else str(tuple(padding))


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting of a layer type.

    Args:
        key: the config key (``"filters"``).
        kind: one of :data:`KINDS`.
        meaning: one line for documentation (``"number of filters F"``).
        argument: the constructor argument when it is named differently (``"out_channels"``);
            ``None``: the same as ``key``.
        attribute: the instance attribute that keeps the checked value (default: the argument
            name); e.g. ``"use_bias"`` so that ``bias`` never shadows the bias parameter.
        default: :data:`REQUIRED`, or the value used when the key is absent or ``null``. For a
            constructor argument it is taken from the signature when the class is defined.
        config: False for a constructor argument that is not a config key (``in_channels``:
            the input shape gives it, see ``input_axis``).
        constructor: False for a config key that is not a constructor argument
            (``weight_decay_mult``, ``trainable``: applied by ``Layer.build``).
        input_axis: for ``config=False`` arguments, the per-sample input axis giving the value
            (``in_channels`` = ``input_shape[0]``).
        model_default: the model-wide setting that replaces the constructor default in a
            config (``init`` defaults to ``model.init``).
        minimum: smallest allowed integer (kinds ``int`` and ``pair``).
        low, high, low_open, high_open: bounds of a ``number`` (``*_open`` excludes the bound).
        expected: how a ``number`` range reads in messages (``"in [0, 1)"``).
    """

    key: str
    kind: str
    meaning: str
    argument: str | None = None
    attribute: str | None = None
    default: Any = REQUIRED
    config: bool = True
    constructor: bool = True
    input_axis: int | None = None
    model_default: str | None = None
    minimum: int = 1
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    expected: str = "a finite number"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option '{self.key}': unknown kind {self.kind!r} (kinds: "
                             f"{', '.join(KINDS)})")

    @property
    def arg(self) -> str:
        """The constructor argument's name."""
        return self.argument or self.key

    @property
    def attr(self) -> str:
        """The instance attribute's name."""
        return self.attribute or self.arg

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def label(self, where: str) -> str:
        """How messages name this option of the layer at ``where``: the constructor argument
        of a directly constructed layer, the config key otherwise (see :func:`key_path`)."""
        return key_path(where, self.arg if where.startswith("layer '") else self.key)

    def check(self, label: str, value: Any) -> Any:
        """``value`` checked and converted (``[3, 3]`` -> ``(3, 3)``); ``None`` means the
        default. ``label`` names the setting in messages (see :func:`key_path`).

        Raises:
            ConfigError: ``<label>: expected ..., got ...`` / ``must be ...`` /
                ``missing required key '<key>'``.
        """
        if value is None:
            if self.required:
                raise ConfigError(f"{label}: missing required key '{self.key}'")
            if self.default is None:
                return None  # "not set": the layer derives it (pool stride = kernel size)
            value = self.default
        return getattr(self, f"_check_{self.kind}")(label, value)

    # --- one checker per kind --------------------------------------------------------
    def _check_int(self, label: str, value: Any) -> int:
        if not validate.is_int(value):
            raise ConfigError(f"{label}: expected an integer, got {value!r} "
                              f"({type(value).__name__})")
        if value < self.minimum:
            raise ConfigError(f"{label}: must be >= {self.minimum}, got {value}")
        return int(value)

    def _check_pair(self, label: str, value: Any) -> tuple[int, int]:
        if validate.is_int(value):
            items = (value, value)
        elif (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
              and all(map(validate.is_int, value))):  # lists, tuples and OmegaConf ListConfigs
            items = tuple(value)
        else:
            raise ConfigError(f"{label}: expected an integer or a list [height, width] of two "
                              f"integers, got {value!r}")
        if min(items) < self.minimum:
            raise ConfigError(f"{label}: must be >= {self.minimum}, got {value!r}")
        return int(items[0]), int(items[1])

    def _check_padding(self, label: str, value: Any) -> tuple[int, int] | str:
        """``"same"``, ``"valid"``, an integer >= 0 or ``[ph, pw]``; words stay unresolved."""
        if isinstance(value, str):
            if value.lower() not in ("same", "valid"):
                raise ConfigError(f"{label}: expected 'same', 'valid', an integer or "
                                  f"[height, width], got {value!r}")
            return value.lower()
        return dataclasses.replace(self, kind="pair", minimum=0)._check_pair(label, value)

    def _check_number(self, label: str, value: Any) -> float:
        if not validate.is_real(value):
            raise ConfigError(f"{label}: expected a number, got {value!r} "
                              f"({type(value).__name__})")
        number = float(value)
        too_low = self.low is not None and (number <= self.low if self.low_open
                                            else number < self.low)
        too_high = self.high is not None and (number >= self.high if self.high_open
                                              else number > self.high)
        if too_low or too_high or not math.isfinite(number):
            raise ConfigError(f"{label}: must be {self.expected}, got {number!r}")
        return number

    def _check_flag(self, label: str, value: Any) -> bool:
        if not validate.is_bool(value):
            raise ConfigError(f"{label}: expected true or false, got {value!r} "
                              f"({type(value).__name__})")
        return bool(value)

    def _check_name(self, label: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigError(f"{label}: expected a name (string), got {value!r} "
                              f"({type(value).__name__})")
        return value


#: config keys of every layer with parameters (Caffe-style per-layer decay multiplier; freezing).
PARAMETER_OPTIONS = (
    Option("weight_decay_mult", "number", "multiplier of optimizer.weight_decay for this layer",
           default=1.0, constructor=False, low=0.0, expected="a number >= 0"),
    Option("trainable", "flag", "false freezes the layer (its gradients are still computed)",
           default=True, constructor=False),
)


def config_keys(options: Sequence[Option]) -> tuple[str, ...]:
    """The config keys among ``options``, in declaration order."""
    return tuple(option.key for option in options if option.config)


def unknown_key_message(where: str, type_name: str, key: Any, options: Sequence[Option],
                        also_accepted: Sequence[str] = ()) -> str:
    """``model.layers.conv1.filtrs: unknown key for layer type 'conv2d'; did you mean
    'model.layers.conv1.filters'? (valid keys: bias, dilation, ...)``.

    ``also_accepted``: keys that are valid in the mapping without being options (``type``,
    ``after``, ``before`` in a raw config); they are suggested but not listed.
    """
    keys = config_keys(options)
    valid = ", ".join(sorted(keys)) or "none"
    hint = validate.did_you_mean(key, (*keys, *also_accepted), where + ".")
    return (f"{key_path(where, str(key))}: unknown key for layer type '{type_name}'{hint} "
            f"(valid keys: {valid})")


def reject_unknown_keys(where: str, type_name: str, spec: Any, options: Sequence[Option],
                        also_accepted: Sequence[str] = ()) -> None:
    """Raise ConfigError (:func:`unknown_key_message`) for the first key of ``spec`` that is
    neither a config key of ``options`` nor in ``also_accepted``."""
    accepted = set(config_keys(options)) | set(also_accepted)
    for key in spec:
        if key not in accepted:
            raise ConfigError(unknown_key_message(where, type_name, key, options, also_accepted))
