"""From ``model.layers`` (and ``model.blocks``) to a graph: which layer feeds which.

The config stays a mapping keyed by layer name (every key overridable from the command line).
A layer names what feeds it with ``inputs``: one earlier layer or a list (merge layers take 2+);
without it a layer takes the previous layer in config order, so a plain stack needs no
``inputs`` at all. ``input`` is the model's input (inside a block: the block's input), so no
layer may be called ``input``. Block instances (:mod:`convtrain.nn.blocks`) expand into layers
named ``<instance>.block<i>.<layer>``; naming the instance as an input means its last repeat's
output, and a top-level layer may name an expanded layer by its dotted name.

Editing the graph from the command line:

* ``after: X`` (on a layer without its own ``inputs``) splices the layer onto every edge
  leaving ``X``: it takes ``X``'s output and every layer that took ``X`` takes it instead;
  ``before: Y`` splices it onto the edge entering ``Y`` (it takes ``Y``'s input, ``Y`` takes
  it; ``Y`` must have a single input). With its own ``inputs`` a layer is only placed.
* ``enabled: false`` switches a layer (or instance) off: whatever took its output takes its
  input instead (it must have exactly one input).
* ``model.layers.X=null`` removes ``X`` the same way for the layer that follows it in config
  order (its default input); a layer naming ``X`` in its ``inputs`` is an error, since a null
  entry no longer says what fed it (use ``enabled: false`` there).

The graph must have one output (the layer that feeds no other: normally the last one) and no
cycle; every layer's output must reach the output. :func:`expand_graph` checks all of it
without input shapes; the shapes are the model's business (:func:`convtrain.nn.model.build_model`).
"""
from __future__ import annotations

import dataclasses
import heapq
from typing import Any, Callable, Mapping

from convtrain import validate
from convtrain.errors import ConfigError
from convtrain.nn.blocks import Block, instance_repeats, is_instance, parse_blocks
from convtrain.nn.layer_order import POSITION_KEYS, WIRING_KEYS, place_layers
from convtrain.validate import did_you_mean

#: the name of the model's input (inside a block: the block's input) in ``inputs``.
INPUT = "input"


@dataclasses.dataclass(frozen=True)
class Graph:
    """A checked, expanded model graph.

    Attributes:
        specs: ``{name: layer spec}`` (``type`` and the layer's options; the wiring keys
            removed), in topological order; expanded block layers carry dotted names.
        inputs: ``{name: (input names, ...)}``; :data:`INPUT` is the model input.
        output: the name of the layer whose output is the model's output (the last one).
        origins: for expanded block layers, ``{name: {key: "model.layers.stage2.filters
            through $filters"}}``: where a ``$`` value came from (for error messages).
    """

    specs: dict[str, dict[str, Any]]
    inputs: dict[str, tuple[str, ...]]
    output: str
    origins: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        return list(self.specs)

    @property
    def is_chain(self) -> bool:
        """True for a plain stack: each layer takes the one before it (the first: the input)."""
        previous = INPUT
        for name, inputs in self.inputs.items():
            if inputs != (previous,):
                return False
            previous = name
        return True


def _strip(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in POSITION_KEYS and k not in WIRING_KEYS}


def _names_list(path: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if (not isinstance(items, (list, tuple)) or not items
            or not all(isinstance(i, str) and i for i in items)):
        raise ConfigError(f"{path}.inputs: expected a layer name or a list of layer names, got "
                          f"{value!r}")
    return list(items)


@dataclasses.dataclass
class _Wired:
    """One scope (``model.layers`` or one repeat of a block) wired in local names."""

    order: list[str]  # active entries, config order after placement
    inputs: dict[str, list[str]]  # active entry -> local names, INPUT, or dotted names
    output: str  # the local name whose output leaves the scope
    specs: dict[str, Mapping[str, Any]]


def _wire_scope(where: str, entries: Mapping[str, Any], path_of: Callable[[str], str],
                top: bool) -> _Wired:
    """Place, wire, splice and drop the entries of one scope (see the module docstring)."""
    placed, anchors = place_layers(entries, where)
    names = list(placed)
    for name in names:
        if not isinstance(name, str) or not name or "." in name:
            raise ConfigError(f"{where}: layer names must be non-empty strings without '.', "
                              f"got {name!r}")
        if name == INPUT:
            raise ConfigError(f"{where}.{name}: '{INPUT}' names the model's (a block's) input "
                              f"in 'inputs'; call the layer something else")
        spec = placed[name]
        if spec is not None and not isinstance(spec, Mapping):
            raise ConfigError(f"{path_of(name)}: expected a mapping like {{type: conv2d, ...}}, "
                              f"got {spec!r} ({type(spec).__name__})")
    removed: dict[str, str] = {}
    for name in names:
        spec = placed[name]
        if spec is None:
            removed[name] = "null"
        elif not validate.is_bool(spec.get("enabled", True)):
            raise ConfigError(f"{path_of(name)}.enabled: expected true or false, got "
                              f"{spec.get('enabled')!r}")
        elif not spec.get("enabled", True):
            removed[name] = "disabled"
    if len(removed) == len(names):
        raise ConfigError(f"{where}: no layers given (every entry is empty, null or disabled)")

    inputs: dict[str, list[str]] = {}
    explicit: set[str] = set()
    previous = INPUT
    for name in names:
        spec = placed[name]
        if spec is not None and spec.get("inputs") is not None:
            inputs[name] = _names_list(path_of(name), spec["inputs"])
            explicit.add(name)
        else:
            inputs[name] = [previous]
        previous = name

    known = [*names, INPUT]
    for name in names:
        if removed.get(name) == "null":
            continue
        for ref in inputs[name]:
            if ref == name:
                raise ConfigError(f"{path_of(name)}.inputs: a layer cannot take its own output")
            if ref not in known and not (top and "." in ref):
                raise ConfigError(f"{path_of(name)}.inputs: unknown layer '{ref}'"
                                  f"{did_you_mean(ref, known)} (layers: {', '.join(known)})")

    for name in names:  # after: / before: splice a layer without its own inputs
        if name not in anchors or name in explicit or name in removed:
            continue
        key, target = anchors[name]
        if key == "after":
            source = inputs[name][0]
            for other in explicit:
                inputs[other] = [name if ref == source else ref for ref in inputs[other]]
        elif target in explicit:
            if len(inputs[target]) != 1:
                raise ConfigError(f"{path_of(name)}.before: '{target}' has "
                                  f"{len(inputs[target])} inputs ({', '.join(inputs[target])}); "
                                  f"place the layer after one of them instead")
            inputs[name], inputs[target] = list(inputs[target]), [name]

    def resolve(ref: str, by: str, named: bool) -> str:
        seen = set()
        while ref in removed:
            if ref in seen:
                raise ConfigError(f"{path_of(by)}.inputs: the switched-off layers pass their "
                                  f"inputs round in a cycle ({', '.join(sorted(seen))})")
            seen.add(ref)
            if removed[ref] == "null" and named:
                raise ConfigError(f"{path_of(by)}.inputs: '{ref}' is removed (null), so "
                                  f"nothing says what fed it; name another input, or switch "
                                  f"'{ref}' off with enabled: false (it then passes its own "
                                  f"input on)")
            if len(inputs[ref]) != 1:
                raise ConfigError(f"{path_of(by)}.inputs: '{ref}' is switched off and has "
                                  f"{len(inputs[ref])} inputs, so there is no single one to "
                                  f"pass on; name another input")
            named = named or ref in explicit
            ref = inputs[ref][0]
        return ref

    order = [name for name in names if name not in removed]
    wired = {name: [resolve(ref, name, name in explicit) for ref in inputs[name]]
             for name in order}
    output = resolve(names[-1], names[-1], False)
    return _Wired(order, wired, output, {name: placed[name] for name in order})


class _Expander:
    """Expands the top scope and every block instance into one flat graph (full names)."""

    def __init__(self, blocks: Mapping[str, Block]):
        self.blocks = blocks
        self.specs: dict[str, dict[str, Any]] = {}  # full name -> spec, in expansion order
        self.inputs: dict[str, tuple[str, ...]] = {}
        self.dotted: list[tuple[str, int, str]] = []  # (layer, position, dotted ref) to check
        self.stack: list[str] = []  # blocks being expanded (a block may not contain itself)
        self.origins: dict[str, dict[str, str]] = {}

    def scope(self, where: str, prefix: str, entries: Mapping[str, Any], input_full: str,
              path_of: Callable[[str], str], top: bool,
              origins: Mapping[str, dict[str, str]] | None = None) -> str:
        """Expand one scope; returns the full name of its output."""
        wired = _wire_scope(where, entries, path_of, top)
        outputs: dict[str, str] = {}  # local name -> full output name, once known
        expanding: list[str] = []

        def full(ref: str, by: str) -> str:
            if ref == INPUT:
                return input_full
            if "." in ref:  # top level: an expanded layer, checked once all are known
                head = ref.split(".", 1)[0]
                if head in wired.specs and is_instance(wired.specs[head]):
                    expand(head)
                return ref
            if ref not in outputs:
                if is_instance(wired.specs[ref]):
                    expand(ref)
                else:
                    outputs[ref] = prefix + ref
            return outputs[ref]

        def expand(name: str) -> None:
            if name in outputs:
                return
            if name in expanding:
                cycle = " -> ".join(expanding[expanding.index(name):] + [name])
                raise ConfigError(f"{where}: the inputs form a cycle ({cycle})")
            expanding.append(name)
            spec = wired.specs[name]
            at = f"{where}.{name}"
            if len(wired.inputs[name]) != 1:
                raise ConfigError(f"{at}.inputs: a block instance takes one input, got "
                                  f"{len(wired.inputs[name])} ({', '.join(wired.inputs[name])}); "
                                  f"join them first with an add or concat layer")
            current = full(wired.inputs[name][0], name)
            block, repeats = instance_repeats(at, spec, self.blocks)
            if block.name in self.stack:
                raise ConfigError(f"{block.where}: a block cannot contain itself "
                                  f"({' -> '.join(self.stack + [block.name])})")
            self.stack.append(block.name)
            for index, repeat in enumerate(repeats, 1):
                repeat_prefix = f"{prefix}{name}.block{index}."
                repeat_where = f"model.layers.{repeat_prefix[:-1]}"
                overridden = set((spec.get(f"block{index}") or {}))

                def path_of_layer(local: str, overridden: set = overridden,
                                  repeat_where: str = repeat_where) -> str:
                    if local in block.layers and local not in overridden:
                        return f"{block.where}.layers.{local}"
                    return f"{repeat_where}.{local}"

                current = self.scope(repeat_where, repeat_prefix, repeat.layers, current,
                                     path_of_layer, top=False, origins=repeat.origins)
            self.stack.pop()
            expanding.remove(name)
            outputs[name] = current

        for name in wired.order:
            if is_instance(wired.specs[name]):
                expand(name)
                continue
            resolved = []
            for position, ref in enumerate(wired.inputs[name]):
                resolved.append(full(ref, name))
                if "." in ref:
                    self.dotted.append((prefix + name, position, ref))
            self.specs[prefix + name] = _strip(wired.specs[name])
            if origins and origins.get(name):
                self.origins[prefix + name] = origins[name]
            self.inputs[prefix + name] = tuple(resolved)
            outputs[name] = prefix + name
        return full(wired.output, wired.output)


def expand_graph(layers: Any, blocks: Any = None) -> Graph:
    """Check and expand ``model.layers`` (with the block definitions ``model.blocks``) into a
    :class:`Graph`. Needs no input shapes and builds no layer.

    Raises:
        ConfigError: one line naming the key: an unknown input (did-you-mean), a cycle, an
            unused layer, more than one output, an unknown block or a block parameter not
            given, a bad ``after``/``before``/``enabled``/``inputs``.
    """
    if layers is None or not isinstance(layers, Mapping):
        raise ConfigError(f"model.layers: expected a mapping of layer name -> layer config, got "
                          f"{layers!r}")
    if not layers:
        raise ConfigError("model.layers: no layers given (every entry is empty or null)")
    for name, spec in layers.items():
        if isinstance(spec, Mapping):
            for key in POSITION_KEYS:
                target = spec.get(key)
                if isinstance(target, str) and "." in target:
                    head, rest = target.split(".", 1)
                    hint = rest.split(".", 1)
                    where = f"+model.layers.{head}.{hint[0]}.<name>" if len(hint) == 2 else \
                        "the block"
                    raise ConfigError(
                        f"model.layers.{name}.{key}: '{target}' is a layer inside block "
                        f"instance '{head}'; add the layer to that repeat instead "
                        f"({where}={{type: ..., {key}: {hint[-1]}}})")
    expander = _Expander(parse_blocks(blocks))
    output = expander.scope("model.layers", "", layers, INPUT,
                            lambda local: f"model.layers.{local}", top=True)
    specs, inputs = expander.specs, expander.inputs
    for name, position, ref in expander.dotted:
        if ref not in specs:
            known = list(specs)
            raise ConfigError(f"model.layers.{name}.inputs: unknown layer '{ref}'"
                              f"{did_you_mean(ref, known)}")
    order = _topological_order(specs, inputs)
    consumers: dict[str, list[str]] = {name: [] for name in specs}
    for name, refs in inputs.items():
        for ref in refs:
            if ref != INPUT:
                consumers[ref].append(name)
    sinks = [name for name in order if not consumers[name]]
    if len(sinks) > 1:
        if output not in sinks:
            raise ConfigError(f"model.layers: the graph has {len(sinks)} outputs "
                              f"({', '.join(sinks)}); a model has one: join them with an add "
                              f"or concat layer, or remove all but one")
        reaching = _ancestors(output, inputs)
        unused = [name for name in order if name not in reaching]
        dead = [name for name in sinks if name != output][0]
        raise ConfigError(f"model.layers.{dead}: unused: its output reaches no other layer and "
                          f"is not the model's output (the last layer, '{output}'); name it in "
                          f"a layer's inputs or remove it (unused layers: {', '.join(unused)})")
    output = sinks[0]
    return Graph({name: specs[name] for name in order}, {name: inputs[name] for name in order},
                 output, expander.origins)


def _ancestors(name: str, inputs: Mapping[str, tuple[str, ...]]) -> set[str]:
    seen, todo = {name}, [name]
    while todo:
        for ref in inputs[todo.pop()]:
            if ref != INPUT and ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return seen


def _topological_order(specs: Mapping[str, Any], inputs: Mapping[str, tuple[str, ...]]
                       ) -> list[str]:
    """Kahn's algorithm, taking the earliest layer in config order whenever several are ready,
    so that a config already in a valid order runs exactly in that order.

    Raises:
        ConfigError: ``model.layers: the inputs form a cycle (a -> b -> a)``.
    """
    index = {name: i for i, name in enumerate(specs)}
    waiting = {name: sum(ref != INPUT for ref in refs) for name, refs in inputs.items()}
    consumers: dict[str, list[str]] = {name: [] for name in specs}
    for name, refs in inputs.items():
        for ref in refs:
            if ref != INPUT:
                consumers[ref].append(name)
    ready = [(index[name], name) for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for consumer in consumers[name]:
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, (index[consumer], consumer))
    if len(order) < len(specs):
        left = [name for name in specs if waiting[name] > 0]
        path, node = [], left[0]
        while node not in path:  # walk back along inputs that are still waiting
            path.append(node)
            node = next(ref for ref in inputs[node] if ref != INPUT and waiting.get(ref, 0) > 0)
        cycle = path[path.index(node):][::-1]
        raise ConfigError(f"model.layers: the inputs form a cycle "
                          f"({' -> '.join(cycle + [cycle[0]])})")
    return order


def check_inputs_fit(where: str, layer_cls: type, inputs: tuple[str, ...]) -> None:
    """Raise unless a layer of ``layer_cls`` can take this many inputs: merge layers 2+, every
    other layer exactly one."""
    if getattr(layer_cls, "merges_inputs", False):
        if len(inputs) < 2:
            raise ConfigError(f"{where}.inputs: {layer_cls.type_name} joins 2 or more inputs, "
                              f"got {len(inputs)} ({', '.join(inputs)})")
    elif len(inputs) != 1:
        raise ConfigError(f"{where}.inputs: {layer_cls.type_name} takes one input, got "
                          f"{len(inputs)} ({', '.join(inputs)}); join them first with an add "
                          f"or concat layer")


__all__ = ["Graph", "INPUT", "check_inputs_fit", "expand_graph"]
