"""The one place that answers "which layer type is this mapping, and which keys may it hold?".

:func:`build_layer` (the model), ``convtrain.app.preflight`` (the check before any data is read)
and ``convtrain.app.hydra_errors`` (composition errors) all ask here, so a missing or unknown
``type`` and an unknown key read the same wherever they are caught.
"""
from __future__ import annotations

from typing import Any, Mapping

from convtrain.errors import ConfigError
from convtrain.nn.base import LAYERS, Layer
from convtrain.nn.layer_order import POSITION_KEYS, WIRING_KEYS
from convtrain.nn.options import config_keys, reject_unknown_keys, unknown_key_message

#: keys a layer's mapping holds besides its options: the type, the placement keys and the
#: graph's wiring keys (``inputs``, ``enabled``: :mod:`convtrain.nn.graph`).
STRUCTURAL_KEYS = ("type", *POSITION_KEYS, *WIRING_KEYS)


def layer_class(where: str, spec: Any) -> type[Layer]:
    """The registered class named by ``spec["type"]`` for the layer at config path ``where``.

    Raises:
        ConfigError: ``<where>: expected a mapping like {type: conv2d, ...}, got ...``,
            ``<where>.type: missing (known types: ...)`` or
            ``<where>.type: Unknown layer type 'conv' (known types: ...); did you mean 'conv2d'?``.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {{type: conv2d, ...}}, got "
                          f"{spec!r} ({type(spec).__name__})")
    if spec.get("type") is None:
        raise ConfigError(f"{where}.type: missing (known types: {', '.join(LAYERS.names())})")
    return LAYERS.get(spec["type"], where=f"{where}.type")


def accepted_keys(layer_cls: type[Layer]) -> tuple[str, ...]:
    """Every key a raw config mapping of this layer type may hold: ``type``, ``after``,
    ``before``, ``inputs``, ``enabled`` and the type's option keys."""
    return (*STRUCTURAL_KEYS, *config_keys(layer_cls.options))


def unknown_key(where: str, layer_cls: type[Layer], key: Any) -> str:
    """The message for a key that ``layer_cls`` does not accept (see
    :func:`convtrain.nn.options.unknown_key_message`)."""
    return unknown_key_message(where, layer_cls.type_name, key, layer_cls.options,
                               STRUCTURAL_KEYS)


def check_layer_keys(where: str, spec: Any) -> type[Layer]:
    """Check a raw config mapping without building the layer (no input shape needed): a known
    ``type`` and only keys that type accepts. Returns the layer class."""
    layer_cls = layer_class(where, spec)
    reject_unknown_keys(where, layer_cls.type_name, spec, layer_cls.options, STRUCTURAL_KEYS)
    return layer_cls
