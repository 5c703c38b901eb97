"""Where layers added from the command line go: the ``after:`` / ``before:`` keys.

Layers are a mapping keyed by name, so ``+model.layers.drop2={type: dropout, p: 0.5}`` appends
``drop2`` at the end. A layer that carries ``after: fc1`` (or ``before: fc2``) is moved right
after (before) that layer instead; the keys are consumed here and never reach the layer class.
Anchors may themselves be positioned layers (``b`` after ``a`` after ``fc1``), and layers
disabled with ``null`` still count as anchors (they keep their place, they just do not run).

In a graph (layers naming their ``inputs``, see :mod:`convtrain.nn.graph`) the placement is
the same; what a placed layer is then wired to is the graph's business
(:func:`convtrain.nn.graph.expand_graph`): ``after: X`` splices the layer onto every edge
leaving ``X``, ``before: Y`` onto the one edge entering ``Y``.
"""
from __future__ import annotations

from typing import Any, Mapping

from convtrain.errors import ConfigError
from convtrain.validate import did_you_mean

POSITION_KEYS = ("after", "before")
#: the keys that wire a layer into a graph (:mod:`convtrain.nn.graph`): which earlier layers
#: feed it, and whether it runs at all (``enabled: false`` passes its input on).
WIRING_KEYS = ("inputs", "enabled")


def _anchor(name: str, spec: Mapping[str, Any], where: str) -> tuple[str, str] | None:
    """``("after", "fc1")`` for a positioned layer, None for one that stays where it is."""
    given = [key for key in POSITION_KEYS if spec.get(key) is not None]
    if len(given) > 1:
        raise ConfigError(f"{where}.{name}: give either 'after' or 'before', not both")
    if not given:
        return None
    key = given[0]
    target = spec[key]
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}.{name}.{key}: expected a layer name, got {target!r}")
    if target == name:
        raise ConfigError(f"{where}.{name}.{key}: a layer cannot be placed {key} itself")
    return key, target


def _unknown_anchor(name: str, key: str, target: str, known: list[str],
                    where: str) -> ConfigError:
    return ConfigError(f"{where}.{name}.{key}: unknown layer '{target}' "
                       f"(layers: {', '.join(known)}){did_you_mean(target, known)}")


def order_layers(layers: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``layers`` in application order, with ``after`` / ``before`` removed.

    (:func:`place_layers` without the record of who was placed where.)
    """
    ordered, _ = place_layers(layers)
    return {name: _without_position(spec) for name, spec in ordered.items()}


def place_layers(layers: Mapping[str, Any], where: str = "model.layers"
                 ) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """``(layers in application order, {placed name: ("after" | "before", anchor)})``; the
    specs are returned as given (with their ``after`` / ``before`` keys). ``where`` is the
    config path of the mapping, for messages (a block's layers are elsewhere).

    Layers without a position keep their config order; each positioned layer is inserted next
    to its anchor (several after the same anchor keep their config order). ``None`` entries
    (disabled layers) are kept, so callers can still skip them.

    Raises:
        ConfigError: an anchor that names no layer (with a "did you mean"), both keys on one
            layer, a non-string anchor, or a cycle (``a`` after ``b`` after ``a``).
    """
    anchors = {}
    for name, spec in layers.items():
        if isinstance(spec, Mapping):
            position = _anchor(str(name), spec, where)
            if position is not None:
                anchors[name] = position
    if not anchors:
        return dict(layers), {}

    known = [str(n) for n in layers]
    for name, (key, target) in anchors.items():
        if target not in layers:
            raise _unknown_anchor(str(name), key, target, known, where)

    order = [name for name in layers if name not in anchors]
    pending = [name for name in layers if name in anchors]
    # Place layers whose anchor is already placed; repeat for chains of anchors.
    while pending:
        placed_any = False
        for name in list(pending):
            key, target = anchors[name]
            if target not in order:
                continue
            index = order.index(target)
            if key == "after":
                index += 1
                # after earlier layers positioned after the same anchor: keep config order
                while index < len(order) and anchors.get(order[index], (None, None)) == (key, target):
                    index += 1
            order.insert(index, name)
            pending.remove(name)
            placed_any = True
        if not placed_any:
            cycle = ", ".join(f"{n} {anchors[n][0]} {anchors[n][1]}" for n in pending)
            raise ConfigError(f"{where}: the positions form a cycle ({cycle})")

    return {name: layers[name] for name in order}, anchors


def _without_position(spec: Any) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    return {key: value for key, value in spec.items() if key not in POSITION_KEYS}
