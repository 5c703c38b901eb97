"""Reading one layer's YAML mapping with error messages that name the full config key.

Every ``from_config`` goes through :class:`LayerSpec`, so that a typo, a wrong type or an
impossible value is reported as ``model.layers.conv1.kernel_size: ...`` rather than as a NumPy
traceback deep inside the first forward pass.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Mapping

from convtrain import validate
from convtrain.errors import ConfigError
from convtrain.validate import did_you_mean

#: keys every parametrised layer accepts (Caffe-style per-layer decay multiplier; freezing).
PARAM_LAYER_KEYS = ("weight_decay_mult", "trainable")


# the project-wide rules: integers exclude bools and floats, reals exclude bools
is_int, is_real = validate.is_int, validate.is_real


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


class LayerSpec:
    """Typed, validated access to the keys of one layer's config mapping.

    Construction rejects unknown keys (with a "did you mean" hint); each getter checks one
    key's type and range and raises :class:`ConfigError` naming ``<where>.<key>``.

    Args:
        where: config path of the layer, e.g. ``"model.layers.conv1"``.
        layer_type: the registry name (``"conv2d"``), for the unknown-key message.
        spec: the layer's mapping without ``type``.
        valid_keys: keys this layer type accepts.
    """

    def __init__(self, where: str, layer_type: str, spec: Mapping[str, Any],
                 valid_keys: tuple[str, ...]):
        self.where = where
        self.spec = dict(spec)
        for key in self.spec:
            if key not in valid_keys:
                valid = ", ".join(sorted(valid_keys)) or "none"
                raise ConfigError(f"{key_path(where, str(key))}: unknown key for layer type "
                                  f"'{layer_type}'{did_you_mean(key, valid_keys, where + '.')} "
                                  f"(valid keys: {valid})")

    def key(self, key: str) -> str:
        """Full config path of ``key`` (``model.layers.conv1.filters``)."""
        return key_path(self.where, key)

    def _value(self, key: str, default: Any) -> Any:
        value = self.spec.get(key, default)
        # An explicit ``null`` means "use the default" (Hydra ``key=null`` overrides).
        return default if value is None else value

    def required(self, key: str) -> Any:
        if self.spec.get(key) is None:
            raise ConfigError(f"{self.key(key)}: missing required key '{key}'")
        return self.spec[key]

    def integer(self, key: str, default: Any = None, *, minimum: int = 1) -> int:
        """An integer >= ``minimum``; ``default=None`` makes the key required."""
        value = self.required(key) if default is None else self._value(key, default)
        if not is_int(value):
            raise ConfigError(f"{self.key(key)}: expected an integer, got {value!r} "
                              f"({type(value).__name__})")
        if value < minimum:
            raise ConfigError(f"{self.key(key)}: must be >= {minimum}, got {value}")
        return int(value)

    def pair(self, key: str, default: Any = None, *, minimum: int = 1) -> tuple[int, int]:
        """An integer or a two-element list ``[h, w]`` of integers, each >= ``minimum``."""
        value = self.required(key) if default is None else self._value(key, default)
        if is_int(value):
            items = (value, value)
        elif (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
              and all(map(is_int, value))):  # lists, tuples and OmegaConf ListConfigs
            items = tuple(value)
        else:
            raise ConfigError(f"{self.key(key)}: expected an integer or a list [height, width] "
                              f"of two integers, got {value!r}")
        if min(items) < minimum:
            raise ConfigError(f"{self.key(key)}: must be >= {minimum}, got {value!r}")
        return int(items[0]), int(items[1])

    def padding(self, key: str = "padding", default: Any = 0) -> int | tuple[int, int] | str:
        """``"same"``, ``"valid"``, an integer >= 0 or ``[ph, pw]``; returned unresolved."""
        value = self._value(key, default)
        if isinstance(value, str):
            if value.lower() not in ("same", "valid"):
                raise ConfigError(f"{self.key(key)}: expected 'same', 'valid', an integer or "
                                  f"[height, width], got {value!r}")
            return value.lower()
        return self.pair(key, default, minimum=0)

    def number(self, key: str, default: float, *, low: float | None = None,
             high: float | None = None, low_open: bool = False, high_open: bool = False,
             expected: str = "") -> float:
        """A finite number within the given bounds (``*_open`` excludes the bound itself);
        ``expected`` describes the valid range for the message."""
        value = self._value(key, default)
        if not is_real(value):
            raise ConfigError(f"{self.key(key)}: expected a number, got {value!r} "
                              f"({type(value).__name__})")
        value = float(value)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or not math.isfinite(value):
            raise ConfigError(f"{self.key(key)}: must be {expected}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._value(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(key)}: expected true or false, got {value!r} "
                              f"({type(value).__name__})")
        return value

    def text(self, key: str, default: str) -> str:
        value = self._value(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self.key(key)}: expected a name (string), got {value!r} "
                              f"({type(value).__name__})")
        return value

    def param_layer_options(self) -> dict[str, Any]:
        """``weight_decay_mult`` (>= 0, default 1) and ``trainable`` (default true)."""
        return {
            "weight_decay_mult": self.number("weight_decay_mult", 1.0, low=0.0,
                                           expected="a number >= 0"),
            "trainable": self.flag("trainable", True),
        }
