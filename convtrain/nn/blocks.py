"""Reusable blocks: a group of layers defined once under ``model.blocks`` and instantiated in
``model.layers`` with ``repeat``.

A block definition::

    blocks:
      basic:
        params: {filters: ???, stride: 1, project: false}   # ??? = must be given
        first_only: [stride, project]   # later repeats get these parameters' defaults
        layers:
          conv1: {type: conv2d, filters: $filters, kernel_size: 3, stride: $stride, padding: 1}
          ...

A block's layers are ordinary layers (``inputs``, ``after``/``before``, ``enabled`` included)
or instances of other blocks (``stage.block1.down.block1.conv1``; a block may not contain
itself).
Inside them a value that is exactly ``$name`` is replaced by parameter ``name`` of the instance
(``$`` without braces is plain text to OmegaConf, so it never clashes with ``${...}``
interpolation); it may stand for a whole value or an item of a list (``[$k, $k]``). The name
``input`` in a block layer's ``inputs`` is the block's input. The block's output is its last
layer in config order.

An instance::

    layers:
      stage2: {block: basic, repeat: 3, filters: 32, stride: 2, project: true}

expands into ``stage2.block1.conv1``, ``stage2.block1.bn1``, ..., ``stage2.block3.relu2``: each
repeat (``block1`` .. ``blockN``) takes the previous one's output. A parameter listed in the
block's ``first_only`` takes the instance's value in ``block1`` only and its declared default in
the later repeats (a ResNet stage downsamples once). ``stage2.block1: {conv1: {filters: 64}}``
in the instance changes one expanded layer (a key merged over the definition after
``$`` substitution), ``{relu2: null}`` removes one, ``{extra: {type: ..., after: relu1}}`` adds
one to that repeat only; from the command line these need a ``+``
(``+model.layers.stage2.block1.conv1.filters=64``: the key is not in the YAML until then).
"""
from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, Mapping

from convtrain.errors import ConfigError
from convtrain.nn.layer_order import POSITION_KEYS, WIRING_KEYS
from convtrain.nn.layer_types import check_layer_keys
from convtrain.validate import did_you_mean, is_int

#: the keys of a block definition under ``model.blocks.<name>``.
BLOCK_KEYS = ("params", "first_only", "layers")
#: the keys of an instance besides its block's parameters and ``block<i>`` overrides.
INSTANCE_KEYS = ("block", "repeat", *WIRING_KEYS, *POSITION_KEYS)
#: a parameter without a default (OmegaConf's "missing" marker).
REQUIRED = "???"
_REFERENCE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_REPEAT_KEY = re.compile(r"^block([1-9][0-9]*)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One checked definition of ``model.blocks.<name>``."""

    name: str
    params: dict[str, Any]  # name -> default, or REQUIRED
    first_only: tuple[str, ...]
    layers: dict[str, Any]  # local name -> layer spec (with ``$`` references), config order

    @property
    def where(self) -> str:
        return f"model.blocks.{self.name}"


def is_instance(spec: Any) -> bool:
    """True for a ``model.layers`` entry that instantiates a block (it has a ``block`` key)."""
    return isinstance(spec, Mapping) and "block" in spec


def parse_blocks(config: Any) -> dict[str, Block]:
    """Check ``model.blocks`` and return its definitions.

    Raises:
        ConfigError: an unknown key, a parameter name that is not an identifier or is
            reserved, a ``first_only`` entry that is no parameter, or a ``$name`` that names no
            parameter (with a did-you-mean), each naming its ``model.blocks...`` key.
    """
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"model.blocks: expected a mapping of block name -> "
                          f"{{params, first_only, layers}}, got {config!r}")
    return {str(name): _parse_block(str(name), spec) for name, spec in config.items()
            if spec is not None}


def _parse_block(name: str, spec: Any) -> Block:
    where = f"model.blocks.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with 'layers' (and 'params', "
                          f"'first_only'), got {spec!r}")
    for key in spec:
        if key not in BLOCK_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key{did_you_mean(str(key), BLOCK_KEYS, where + '.')} "
                              f"(valid keys: {', '.join(BLOCK_KEYS)})")
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}.params: expected a mapping of parameter -> default "
                          f"(??? for none), got {params!r}")
    for param in params:
        if not isinstance(param, str) or not _NAME.match(param):
            raise ConfigError(f"{where}.params.{param}: a parameter name is a word of letters, "
                              f"digits and _ (it is referenced as $name)")
        if param in INSTANCE_KEYS or _REPEAT_KEY.match(param):
            raise ConfigError(f"{where}.params.{param}: '{param}' is reserved for instances "
                              f"(reserved: {', '.join(INSTANCE_KEYS)}, block1, block2, ...)")
    first_only = spec.get("first_only") or []
    if isinstance(first_only, str):
        first_only = [first_only]
    if not isinstance(first_only, (list, tuple)):
        raise ConfigError(f"{where}.first_only: expected a list of parameter names, got "
                          f"{first_only!r}")
    for param in first_only:
        if param not in params:
            raise ConfigError(f"{where}.first_only: '{param}' is not a parameter of block "
                              f"'{name}'{did_you_mean(str(param), list(params))} "
                              f"(parameters: {', '.join(params) or 'none'})")
        if params[param] == REQUIRED:
            raise ConfigError(f"{where}.first_only: '{param}' needs a default in "
                              f"{where}.params (the later repeats use it)")
    layers = spec.get("layers")
    if not isinstance(layers, Mapping) or not layers:
        raise ConfigError(f"{where}.layers: expected a non-empty mapping of layer name -> "
                          f"layer config, got {layers!r}")
    block = Block(name, dict(params), tuple(first_only), dict(layers))
    for layer_name, layer in block.layers.items():
        _check_references(f"{where}.layers.{layer_name}", layer, block)
        if (isinstance(layer, Mapping) and not is_instance(layer)
                and not _REFERENCE.match(str(layer.get("type")))):
            # a typo in the definition is named there, not in each expanded copy
            check_layer_keys(f"{where}.layers.{layer_name}", layer)
    return block


def _check_references(where: str, value: Any, block: Block) -> None:
    """Raise for a ``$name`` anywhere in ``value`` that is not a parameter of ``block``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_references(f"{where}.{key}", item, block)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_references(where, item, block)
    elif isinstance(value, str):
        match = _REFERENCE.match(value)
        if match and match.group(1) not in block.params:
            refs = [f"${p}" for p in block.params]
            raise ConfigError(f"{where}: '{value}' names no parameter of block "
                              f"'{block.name}'{did_you_mean(value, refs)} (parameters: "
                              f"{', '.join(block.params) or 'none'}; declare it in "
                              f"{block.where}.params)")


def _substitute(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, Mapping):
        return {key: _substitute(item, values) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_substitute(item, values) for item in value]
    if isinstance(value, str):
        match = _REFERENCE.match(value)
        if match:
            return copy.deepcopy(values[match.group(1)])
    return value


@dataclasses.dataclass(frozen=True)
class Repeat:
    """One repeat of an instance: its layers and where their ``$`` values came from."""

    layers: dict[str, Any]  # local layer name -> layer spec, parameters substituted
    #: local layer name -> {key: the config key that gave its value (for messages)}
    origins: dict[str, dict[str, str]]


def instance_repeats(where: str, spec: Mapping[str, Any], blocks: Mapping[str, Block]
                     ) -> tuple[Block, list[Repeat]]:
    """The block of instance ``spec`` (at config path ``where``, e.g. ``model.layers.stage2``)
    and one :class:`Repeat` per repeat: parameters substituted, the ``block<i>`` overrides
    merged in.

    Raises:
        ConfigError: an unknown block (did-you-mean), a bad ``repeat``, an unknown key, a
            parameter not given, a ``block<i>`` beyond ``repeat``, or an override of a layer
            that is no mapping.
    """
    name = spec.get("block")
    if not isinstance(name, str) or name not in blocks:
        known = list(blocks)
        raise ConfigError(f"{where}.block: unknown block {name!r}{did_you_mean(str(name), known)} "
                          f"(blocks defined in model.blocks: {', '.join(known) or 'none'})")
    block = blocks[name]
    repeat = spec.get("repeat", 1)
    if not is_int(repeat) or repeat < 1:
        raise ConfigError(f"{where}.repeat: expected an integer >= 1, got {repeat!r}")
    repeat = int(repeat)
    valid = (*INSTANCE_KEYS, *block.params)
    overrides: dict[int, Mapping[str, Any]] = {}
    for key, value in spec.items():
        match = _REPEAT_KEY.match(str(key))
        if match:
            index = int(match.group(1))
            if index > repeat:
                raise ConfigError(f"{where}.{key}: instance '{where.rsplit('.', 1)[-1]}' repeats "
                                  f"block '{name}' {repeat} time(s) (block1..block{repeat})")
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(f"{where}.{key}: expected a mapping of layer name -> changes, "
                                  f"got {value!r}")
            overrides[index] = value or {}
        elif key not in valid:
            raise ConfigError(f"{where}.{key}: unknown key for an instance of block "
                              f"'{name}'{did_you_mean(str(key), valid, where + '.')} (valid keys: "
                              f"{', '.join(valid)}, block1..block{repeat})")
    given = {param: spec[param] for param in block.params if spec.get(param) is not None}
    for param, default in block.params.items():
        if param not in given and default == REQUIRED:
            raise ConfigError(f"{where}.{param}: missing: block '{name}' needs parameter "
                              f"'{param}' (no default in {block.where}.params)")
    repeats = []
    for index in range(1, repeat + 1):
        values = dict(block.params)
        values.update(given)
        if index > 1:
            values.update({param: block.params[param] for param in block.first_only})
        layers = copy.deepcopy(block.layers)
        for layer_name, change in overrides.get(index, {}).items():
            at = f"{where}.block{index}.{layer_name}"
            if change is None or layer_name not in layers or layers[layer_name] is None:
                layers[layer_name] = copy.deepcopy(change)  # removed, or a new layer
            elif not isinstance(change, Mapping):
                raise ConfigError(f"{at}: expected a mapping of keys to change (or null to "
                                  f"remove the layer), got {change!r}")
            else:
                layers[layer_name] = {**layers[layer_name], **change}
            _check_references(at, layers[layer_name], block)
        sources = {param: (f"{where}.{param}" if param in given and not (
            index > 1 and param in block.first_only) else f"{block.where}.params.{param}")
            for param in block.params}
        origins = {layer_name: {key: f"{sources[match.group(1)]} through ${match.group(1)}"
                                for key, value in (layer or {}).items()
                                for match in [_first_reference(value)] if match}
                   for layer_name, layer in layers.items() if isinstance(layer, Mapping)}
        repeats.append(Repeat(_substitute(layers, values), origins))
    return block, repeats


def _first_reference(value: Any) -> "re.Match[str] | None":
    """The first ``$name`` in ``value`` (a string or a list of them), or None."""
    for item in value if isinstance(value, (list, tuple)) else [value]:
        match = _REFERENCE.match(item) if isinstance(item, str) else None
        if match:
            return match
    return None


__all__ = ["Block", "BLOCK_KEYS", "INSTANCE_KEYS", "REQUIRED", "Repeat", "instance_repeats",
           "is_instance", "parse_blocks"]
