"""The model: a graph of layers (a plain stack being the common case), built from a YAML-like
mapping.

``build_model(config, input_shape)`` turns ``{"init": ..., "blocks": ..., "layers": {"conv1":
{...}, ...}}`` into a :class:`Model` (the graph is read by :mod:`convtrain.nn.graph`); the model
runs ``forward`` / ``backward`` over ``(N, C, H, W)`` batches,
exposes its parameters to optimizers (:meth:`Model.named_parameters`), saves and loads PyTorch-
compatible ``state_dict`` s, and describes itself (:meth:`Model.summary`).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from convtrain.runtime.backend import Backend, get_backend, to_host
from convtrain import validate
from convtrain.errors import ConfigError, InternalError
from convtrain.validate import did_you_mean
from convtrain.nn.init import INITIALIZERS
from convtrain.nn import LAYERS, Layer, Shape, build_layer
from convtrain.nn.graph import INPUT, check_inputs_fit, expand_graph
from convtrain.nn.layer_types import layer_class

#: top-level keys of the ``model`` config group.
MODEL_KEYS = ("name", "init", "input_shape", "blocks", "layers")
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class LoadResult(NamedTuple):
    """What :meth:`Model.load_state_dict` skipped (non-strict mode only; strict raises)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _forward_named(layer: Layer, x, training: bool):
    """``layer.forward``, with the layer's config key in front of any ConfigError."""
    try:
        return layer.forward(x, training=training)
    except ConfigError as exc:
        raise _naming(layer, exc) from None


def _drop_cache(layer: Layer) -> None:
    """Forget what ``layer``'s forward kept for its backward (its ``cache``: im2col columns,
    a batch norm's normalised input, a ReLU's mask...), once nothing will call its backward."""
    if getattr(layer, "cache", None) is not None:
        layer.cache = None


def _naming(layer: Layer, exc: ConfigError) -> ConfigError:
    """``exc`` with the layer's config key in front (engine errors only know the operation:
    ``batchnorm2d: training needs more than 1 value per channel`` -> ``model.layers.bn1: ...``)."""
    where = getattr(layer, "where", None) or layer.name
    message = str(exc)
    if message.startswith(where):
        return exc
    try:
        return type(exc)(f"{where}: {message}")
    except TypeError:  # a subclass with extra constructor arguments
        return ConfigError(f"{where}: {message}")


def layer_type_name(layer: Layer) -> str:
    """The registry name of ``layer``'s class (``"conv2d"``), or its class name if unregistered."""
    registered = layer.type_name in LAYERS and LAYERS.get(layer.type_name) is type(layer)
    return layer.type_name if registered else type(layer).__name__


def format_shape(shape: Shape | None) -> str:
    """``(6, 28, 28)`` -> ``"6x28x28"``."""
    return "-" if shape is None else "x".join(str(int(s)) for s in shape)


def _short(ref: str, name: str) -> str:
    """``ref`` as the summary's inputs column shows it next to layer ``name``: relative to
    their common block repeat (``stage2.block1.bn2`` next to ``stage2.block1.add``: ``bn2``)."""
    prefix = name.rpartition(".")[0]
    if prefix and ref.startswith(prefix + "."):
        return ref[len(prefix) + 1:]
    return ref


class _Step(NamedTuple):
    """One layer call of a graph's forward pass: the layer reads the activations stored under
    ``reads`` and its output is stored under ``writes``; afterwards the activations under
    ``frees`` (whose last reader this was) are dropped."""

    name: str
    layer: Layer
    reads: tuple[str, ...]
    writes: str
    frees: tuple[str, ...]


class Model:
    """A graph of layers; a plain stack (PyTorch's ``nn.Sequential``) is the special case where
    each layer takes the one before it.

    Args:
        layers: ``{name: Layer}`` in a topological order (a layer after every layer it takes;
            for a stack: application order); names become ``state_dict`` prefixes.
        input_shape: per-sample input shape, e.g. ``(C, H, W)``.
        name: a label for summaries (the config's ``name``).
        dtype: the float dtype of parameters and activations (float32 or float64).
        inputs: ``{name: (input names, ...)}`` with :data:`~convtrain.nn.graph.INPUT`
            (``"input"``) for the model input; None: a stack. The last layer is the output.

    Attributes:
        layers: the ``{name: Layer}`` dict, in :attr:`order`.
        order: the layer names in a topological order (config order whenever that is one):
            the order of ``state_dict``, ``named_parameters`` and ``summary``.
        output_name: the layer whose output is the model's output (the last in ``order``).
        is_chain: True for a plain stack (each layer takes the previous one).
        input_shape / output_shape: per-sample shapes of the model's input and logits.
        layer_shapes: ``{name: (input shape, output shape)}``; a merge layer's input shape is
            the tuple of its inputs' shapes.
        backend: the :class:`~convtrain.runtime.backend.Backend` holding the arrays (NumPy at first).

    Use :meth:`inputs_of` and :meth:`consumers_of` to walk the graph (an exporter does).

    Raises:
        ConfigError: when a layer cannot take its inputs' shapes.
    """

    def __init__(self, layers: Mapping[str, Layer], input_shape: Shape, name: str | None = None,
                 dtype: Any = np.float32, inputs: Mapping[str, Any] | None = None):
        if not layers:
            raise ConfigError("model.layers: a model needs at least one layer")
        self.layers: dict[str, Layer] = dict(layers)
        self.order: list[str] = list(self.layers)
        self._inputs: dict[str, tuple[str, ...]] = self._check_inputs(inputs)
        self.output_name: str = self.order[-1]
        self.is_chain = all(self._inputs[n] == ((INPUT,) if i == 0 else (self.order[i - 1],))
                            for i, n in enumerate(self.order))
        self._order: list[Layer] | None = None
        self._plan: list[_Step] | None = None
        #: False after a forward pass that kept nothing for backward (see :meth:`forward`)
        self._kept_for_backward = True
        self.input_shape: Shape = tuple(int(s) for s in input_shape)
        self.name = name
        self.dtype = np.dtype(dtype)
        self.backend: Backend = get_backend("numpy")
        #: per-layer ``(input_shape, output_shape)``, in order.
        self.layer_shapes: dict[str, tuple[Any, Shape]] = {}
        shapes: dict[str, Shape] = {INPUT: self.input_shape}
        for layer_name, layer in self.layers.items():
            if layer.merges_inputs:
                shape: Any = tuple(shapes[ref] for ref in self._inputs[layer_name])
            else:
                shape = shapes[self._inputs[layer_name][0]]
            if layer.input_shape is None:
                layer.build(shape)
            out = tuple(layer.output_shape(shape))
            self.layer_shapes[layer_name] = (shape, out)
            shapes[layer_name] = out
        self.output_shape: Shape = shapes[self.output_name]

    def _check_inputs(self, inputs: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
        """The graph's edges: a stack's when ``inputs`` is None; else checked to run in
        ``order`` with one output (what :func:`~convtrain.nn.graph.expand_graph` makes)."""
        if inputs is None:
            return {n: ((INPUT,) if i == 0 else (self.order[i - 1],))
                    for i, n in enumerate(self.order)}
        checked: dict[str, tuple[str, ...]] = {}
        for name in self.order:
            refs = inputs.get(name)
            refs = (refs,) if isinstance(refs, str) else tuple(refs or ())
            if not refs or any(ref != INPUT and ref not in checked for ref in refs):
                raise InternalError(f"Model: layer '{name}' must come after its inputs "
                                    f"{refs} (layers in a topological order)")
            layer = self.layers[name]
            if not layer.merges_inputs and len(refs) != 1:
                raise InternalError(f"Model: layer '{name}' takes one input, got {refs}")
            checked[name] = refs
        used = {ref for refs in checked.values() for ref in refs}
        if [n for n in self.order if n not in used] != [self.order[-1]]:
            raise InternalError(f"Model: the last layer must be the only one that feeds no "
                                f"other (unused: {[n for n in self.order if n not in used]})")
        return checked

    # --- the graph ---------------------------------------------------------------------
    def inputs_of(self, name: str) -> tuple[str, ...]:
        """The names of the layers feeding ``name`` (``"input"``: the model input), in the
        order its ``forward`` receives them."""
        return self._inputs[name]

    def consumers_of(self, name: str) -> tuple[str, ...]:
        """The names of the layers that take ``name``'s output (``"input"``: the model input's
        readers), in :attr:`order`."""
        return tuple(n for n in self.order if name in self._inputs[n])

    # --- computation -------------------------------------------------------------------
    def forward(self, x, training: bool = True, *, keep_for_backward: bool | None = None):
        """``x`` ``(N, *input_shape)`` -> logits ``(N, *output_shape)``.

        ``x`` is moved to the model's backend and dtype first (so uint8 or float64 host
        batches are accepted). ``training`` switches dropout and BatchNorm batch statistics.
        A graph holds each activation until its last reader has run, no longer.

        ``keep_for_backward`` (default: ``training``): keep what :meth:`backward` needs (each
        layer's cache: im2col columns, a batch norm's normalised input, ReLU masks). So an
        evaluation or prediction pass (``training=False``) drops each layer's cache as soon
        as the layer has run, and a large evaluation batch holds one layer's columns at a time
        instead of every layer's (ResNet-20 at batch 512: 2.2 GB of columns). Gradients in inference
        mode (saliency maps) pass True; :meth:`backward` after a pass that kept nothing is an
        error naming this option.
        """
        out = self._as_input(x)
        keep = training if keep_for_backward is None else bool(keep_for_backward)
        self._kept_for_backward = keep
        if self.is_chain:
            for layer in self._run_order():
                out = _forward_named(layer, out, training)
                if not keep:
                    _drop_cache(layer)
            return out
        values = {INPUT: out}
        for step in self._graph_plan():
            values[step.writes] = self._run_step(step, values, training, keep)
        return values[self._graph_plan()[-1].writes]

    def _run_step(self, step: _Step, values: dict[str, Any], training: bool, keep: bool = True):
        """Run one step of the graph plan on ``values`` (gradcheck replays steps with it);
        ``keep``: keep the layer's cache for :meth:`backward`."""
        self._kept_for_backward = keep
        if step.layer.merges_inputs:
            out = _forward_named(step.layer, [values[key] for key in step.reads], training)
        else:
            out = _forward_named(step.layer, values[step.reads[0]], training)
        if not keep:
            _drop_cache(step.layer)
        for key in step.frees:
            del values[key]
        return out

    def layer_outputs(self, x, names, training: bool = False) -> dict[str, Any]:
        """The outputs of the layers called ``names`` (e.g. conv layers, for feature-map
        pictures) for the batch ``x``, on the model's backend; runs only as far as the last of
        them. A layer's buffers may be reused by its next call: copy what you keep. Keeps
        nothing for :meth:`backward` unless ``training`` (like :meth:`forward`)."""
        wanted = set(names)
        found: dict[str, Any] = {}
        out = self._as_input(x)
        keep = self._kept_for_backward = bool(training)
        if self.is_chain:
            name_of = {id(layer): name for name, layer in self.layers.items()}
            for layer in self._run_order():
                if len(found) == len(wanted):
                    break
                out = _forward_named(layer, out, training)
                if not keep:
                    _drop_cache(layer)
                if name_of[id(layer)] in wanted:
                    found[name_of[id(layer)]] = out
            return found
        values = {INPUT: out}
        for step in self._graph_plan():
            if len(found) == len(wanted):
                break
            values[step.writes] = out = self._run_step(step, values, training, keep)
            if step.name in wanted:
                found[step.name] = out
        return found

    def _as_input(self, x):
        """``x`` checked against ``(N, *input_shape)`` and moved to the model's backend/dtype."""
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != len(self.input_shape) + 1 or shape[1:] != self.input_shape:
            raise ConfigError(f"model input: expected a batch of shape "
                              f"(N, {', '.join(map(str, self.input_shape))}), got {shape}")
        return self.backend.asarray(x, dtype=self.dtype)

    def backward(self, dlogits, input_grad: bool = True):
        """``dlogits`` ``(N, *output_shape)`` -> ``dx`` ``(N, *input_shape)``; fills every
        layer's ``grads`` (frozen layers too: their input gradient is still needed).

        ``input_grad=False`` lets the layers reading the model input skip the gradient w.r.t.
        it (training never uses it; for a first convolution that saves a GEMM and a col2im)
        and returns None when every one of them supports skipping it.

        In a graph the gradients reaching a layer from several readers are summed: the first
        arrives as is (it may be another layer's array, e.g. ``add`` hands the same one to all
        its inputs), the second makes a new array, later ones are added into that array in
        place. No layer writes into a gradient it received (the aliasing rule of
        :mod:`convtrain.nn.layers.merge`).
        """
        if not self._kept_for_backward:
            raise InternalError("Model.backward: the last forward pass kept nothing for "
                                "backward (training=False, or layer_outputs); to take "
                                "gradients in inference mode run forward(x, training=False, "
                                "keep_for_backward=True) first")
        grad = self.backend.asarray(dlogits, dtype=self.dtype)
        if not self.is_chain:
            return self._graph_backward(grad, input_grad)
        layers = self._run_order()
        try:
            for layer in reversed(layers[1:]):
                grad = layer.backward(grad)
            layer = layers[0]
            if not input_grad and layer.can_skip_input_grad:
                return layer.backward(grad, input_grad=False)
            return layer.backward(grad)
        except ConfigError as exc:
            raise _naming(layer, exc) from None

    def _graph_backward(self, grad, input_grad: bool):
        plan = self._graph_plan()
        readers = [step.layer for step in plan if INPUT in step.reads]
        skip = not input_grad and all(
            layer.can_skip_input_grad and not layer.merges_inputs for layer in readers)
        grads: dict[str, Any] = {plan[-1].writes: grad}
        owned: set[str] = set()  # keys whose array this method allocated (safe to add into)
        for step in reversed(plan):
            dy = grads.pop(step.writes)
            owned.discard(step.writes)
            try:
                if skip and step.reads == (INPUT,):
                    step.layer.backward(dy, input_grad=False)
                    continue
                dxs = step.layer.backward(dy)
            except ConfigError as exc:
                raise _naming(step.layer, exc) from None
            for key, dx in zip(step.reads, dxs if step.layer.merges_inputs else (dxs,)):
                if key not in grads:
                    grads[key] = dx
                elif key in owned:
                    grads[key] += dx
                else:
                    grads[key] = grads[key] + dx
                    owned.add(key)
        return None if skip else grads[INPUT]

    def _run_order(self) -> list[Layer]:
        """The forward execution order (computed once: the layers never change after build)."""
        if self._order is None:
            self._order = (self._compute_run_order() if self.is_chain
                           else [step.layer for step in self._graph_plan()])
        return self._order

    def _compute_run_order(self) -> list[Layer]:
        """The layers of a stack in the order forward runs them: config order, except that a
        layer that ``commutes_with_max_pool`` (ReLU) directly followed by one that
        ``takes_window_maximum`` (MaxPool2d) runs after it. They commute exactly
        (``relu(max(window)) == max(relu(window))``; the gradient reaches the same element,
        and windows with no positive value get zero either way), and the ReLU then works on
        the pooled map, a quarter of the elements for 2x2 pooling (LeNet-5: ~0.6 ms of a
        15 ms step)."""
        order = list(self.layers.values())
        i = 0
        while i + 1 < len(order):
            if order[i].commutes_with_max_pool and order[i + 1].takes_window_maximum:
                order[i], order[i + 1] = order[i + 1], order[i]
                i += 2
            else:
                i += 1
        return order

    def _graph_plan(self) -> list[_Step]:
        """A graph's steps (computed once). The ReLU/max-pool swap of :meth:`_compute_run_order`
        applies where the max pooling is the ReLU's only reader and reads nothing else (never
        across a branch point): the pooling reads the ReLU's input and the ReLU writes under
        the pooling's name, so the readers of the pooling get the same values."""
        if self._plan is not None:
            return self._plan
        steps: list[tuple[str, Layer, tuple[str, ...], str]] = []
        swapped: set[str] = set()
        for name in self.order:
            if name in swapped:
                continue
            layer, reads = self.layers[name], self._inputs[name]
            readers = self.consumers_of(name)
            if (layer.commutes_with_max_pool and len(readers) == 1
                    and self.layers[readers[0]].takes_window_maximum
                    and self._inputs[readers[0]] == (name,)
                    and self.order.index(readers[0]) == self.order.index(name) + 1):
                pool = readers[0]
                steps.append((pool, self.layers[pool], reads, name))
                steps.append((name, layer, (name,), pool))
                swapped.add(pool)
            else:
                steps.append((name, layer, reads, name))
        last_read: dict[str, int] = {}
        for index, (_, _, reads, _) in enumerate(steps):
            for key in reads:
                last_read[key] = index
        self._plan = [_Step(name, layer, reads, writes,
                            tuple(sorted({k for k in reads if last_read[k] == index})))
                      for index, (name, layer, reads, writes) in enumerate(steps)]
        return self._plan

    # --- parameters --------------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, Layer, str]]:
        """Yield ``(qualified_name, layer, key)`` for every trainable parameter; the value is
        ``layer.params[key]`` and its gradient ``layer.grads[key]`` (optimizers write back
        through ``layer.params[key]``, which also works for CuPy arrays)."""
        for layer_name, layer in self.layers.items():
            if not layer.trainable:
                continue
            for key in layer.params:
                yield f"{layer_name}.{key}", layer, key

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameter elements (buffers such as running statistics excluded)."""
        return sum(layer.num_params() for layer in self.layers.values()
                   if layer.trainable or not trainable_only)

    def _state_entries(self) -> dict[str, tuple[dict, str]]:
        """``{"conv1.weight": (layer.params, "weight"), ...}`` over params and buffers."""
        entries = {}
        for layer_name, layer in self.layers.items():
            for store in (layer.params, layer.buffers):
                for key in store:
                    entries[f"{layer_name}.{key}"] = (store, key)
        return entries

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of every parameter and buffer, named ``"<layer>.<key>"``.

        Names and shapes are PyTorch's (conv ``(F, C/groups, kh, kw)``, dense ``(out, in)``,
        BatchNorm ``weight``/``bias``/``running_mean``/``running_var``), so the dict loads into
        the equivalent ``nn.Sequential(OrderedDict(...))`` after ``torch.from_numpy``.
        """
        return {qualified: np.array(self.backend.to_numpy(store[key]), copy=True)
                for qualified, (store, key) in self._state_entries().items()}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> LoadResult:
        """Copy arrays from ``state_dict`` into the model (cast to its dtype and backend).

        Every shape is checked before anything is written, so a failed load leaves the model
        unchanged.

        Args:
            state_dict: ``{"conv1.weight": array, ...}`` (NumPy arrays or array-likes).
            strict: missing or unexpected names are an error; otherwise they are skipped and
                returned.

        Raises:
            ConfigError: listing missing / unexpected names (strict), or naming a key whose
                shape differs, with both shapes.
        """
        entries = self._state_entries()
        missing = [name for name in entries if name not in state_dict]
        unexpected = [name for name in state_dict if name not in entries]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected keys: {', '.join(map(str, unexpected))}")
            raise ConfigError(f"load_state_dict: {'; '.join(parts)} "
                              f"(model keys: {', '.join(entries)})")
        staged = []
        for qualified, (store, key) in entries.items():
            if qualified not in state_dict:
                continue
            value = to_host(state_dict[qualified])  # device arrays too (no np.asarray on them)
            expected = tuple(store[key].shape)
            if tuple(value.shape) != expected:
                raise ConfigError(f"load_state_dict: '{qualified}' has shape "
                                  f"{tuple(value.shape)} in the state dict but {expected} in "
                                  f"the model")
            if value.dtype.kind not in "fiub":
                raise ConfigError(f"load_state_dict: '{qualified}' has non-numeric dtype "
                                  f"{value.dtype}")
            staged.append((store, key, value))
        for store, key, value in staged:
            store[key] = self.backend.asarray(np.array(value, dtype=self.dtype, copy=True))
        return LoadResult(missing, unexpected)

    def to_backend(self, backend: Backend | str) -> "Model":
        """Move every parameter, gradient and buffer to ``backend`` (a Backend or its name);
        dropout generators stay host NumPy Generators (device masks are seeded from them, so
        their state survives the move and checkpoints). Returns ``self``."""
        if isinstance(backend, str):
            backend = get_backend(backend)  # ConfigError naming backend.name for unknown names
        for layer in self.layers.values():
            layer.to_backend(backend)
        self.backend = backend
        return self

    # --- description -------------------------------------------------------------------
    def summary_rows(self) -> list[dict[str, Any]]:
        """One dict per layer, in :attr:`order`: ``name``, ``type``, ``inputs`` (the names
        feeding it), ``description`` (hyperparameters), ``input_shape`` (a merge layer: the
        tuple of its inputs' shapes), ``output_shape``, ``params``, ``trainable``, ``flops``
        (forward, per sample), ``receptive_field`` ``(rh, rw)`` in input pixels and ``jump``
        ``(jh, jw)`` (input pixels between neighbouring outputs), both None when the model
        input is not an image ``(C, H, W)``; ``whole_input`` is True once a layer (Dense) sees
        every position.

        Receptive field recurrence per spatial axis, starting from ``r = j = 1``:
        ``k_eff = d·(k-1) + 1``, ``r_out = r_in + (k_eff - 1)·j_in``, ``j_out = j_in·s``.
        A layer whose outputs see every input position (Dense) gets the whole input, and
        so does everything after it. A layer with several inputs continues from the input
        with the largest field (the largest path through the graph).
        """
        spatial = len(self.input_shape) == 3
        whole = [self.input_shape[1], self.input_shape[2]] if spatial else None
        # per activation: (field, jump, sees_everything)
        states: dict[str, tuple[list[int], list[int], bool]] = {INPUT: ([1, 1], [1, 1], False)}
        rows = []
        for layer_name, layer in self.layers.items():
            in_shape, out_shape = self.layer_shapes[layer_name]
            field, jump, sees_everything = max(
                (states[ref] for ref in self._inputs[layer_name]),
                key=lambda state: (state[2], state[0][0] * state[0][1]))
            field, jump = list(field), list(jump)
            if spatial:
                if layer.global_receptive_field:
                    sees_everything = True
                if sees_everything:
                    field = list(whole)
                elif not layer.merges_inputs and len(in_shape) == 3:
                    for axis, (kernel, stride, dilation) in enumerate(layer.receptive_field_step()):
                        field[axis] += (dilation * (kernel - 1)) * jump[axis]
                        jump[axis] *= stride
            states[layer_name] = (field, jump, sees_everything)
            rows.append({
                "name": layer_name,
                "type": layer_type_name(layer),
                "inputs": self._inputs[layer_name],
                "description": layer.describe(),
                "input_shape": in_shape,
                "output_shape": out_shape,
                "params": layer.num_params(),
                "trainable": bool(layer.trainable),
                "flops": int(layer.flops(in_shape)),
                "receptive_field": tuple(field) if spatial else None,
                "jump": tuple(jump) if spatial else None,
                "whole_input": sees_everything,
            })
        return rows

    def summary(self) -> str:
        """A text table: layer, (for a graph: its inputs,) type, hyperparameters, output shape,
        params, FLOPs and receptive field per layer, then the totals (params, trainable
        params, FLOPs per sample, input shape)."""
        graph = not self.is_chain
        header = ("layer", *(("inputs",) if graph else ()), "type", "hyperparameters", "output",
                  "params", "FLOPs", "RF")
        table = [header, ("input", *(("",) if graph else ()), "", "", format_shape(self.input_shape),
                          "", "", "1x1" if len(self.input_shape) == 3 else "-")]
        rows = self.summary_rows()
        for row in rows:
            field = "-" if row["receptive_field"] is None else "x".join(
                map(str, row["receptive_field"]))
            if row["whole_input"]:
                field += " (all)"
            description = row["description"] + ("" if row["trainable"] or not row["params"]
                                                else " [frozen]")
            inputs = (", ".join(_short(ref, row["name"]) for ref in row["inputs"]),) if graph else ()
            table.append((row["name"], *inputs, row["type"], description.strip(),
                          format_shape(row["output_shape"]), f"{row['params']:,}",
                          f"{row['flops']:,}", field))
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        numeric = {len(header) - 3, len(header) - 2}  # right-align the counts

        def render(cells) -> str:
            return "  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(render(header))
        total_flops = sum(row["flops"] for row in rows)
        lines = [f"Model: {self.name}" if self.name else "Model", rule, render(header), rule]
        lines += [render(r) for r in table[1:]]
        lines += [rule,
                  f"Total params:         {self.num_params():,}",
                  f"Trainable params:     {self.num_params(trainable_only=True):,}",
                  f"Non-trainable params: {self.num_params() - self.num_params(True):,}",
                  f"Total FLOPs / sample: {total_flops:,} (multiply-add = 2)",
                  f"Input shape:          {self.input_shape}",
                  f"Output shape:         {self.output_shape}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={layer_type_name(layer)}" for n, layer in self.layers.items())
        return f"Model({inner}; input {self.input_shape})"


# --- building from config --------------------------------------------------------------------
def _plain(config: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (interpolations resolved)."""
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config


def _check_input_shape(input_shape: Any) -> Shape:
    values = _plain(input_shape)
    if (not isinstance(values, (list, tuple)) or not values
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                       for s in values)):
        raise ConfigError(f"input_shape: expected positive integers like (C, H, W), got "
                          f"{input_shape!r}")
    return tuple(int(s) for s in values)


def _check_top_level_keys(config: Mapping[str, Any]) -> None:
    for key in config:
        if key not in MODEL_KEYS:
            raise ConfigError(f"model.{key}: unknown key{did_you_mean(key, MODEL_KEYS, 'model.')} "
                              f"(valid keys: {', '.join(MODEL_KEYS)})")


def _layer_seeds(root_seed: int) -> tuple[np.random.Generator, np.random.SeedSequence]:
    """Independent streams for weight init and dropout masks: adding or removing a dropout
    layer must not change any initial weight (and vice versa)."""
    init_seq, dropout_seq = np.random.SeedSequence(root_seed).spawn(2)
    return np.random.default_rng(init_seq), dropout_seq


def _with_origin(exc: ConfigError, name: str, origins: Mapping[str, str] | None) -> ConfigError:
    """``exc`` about ``model.layers.<name>.<key>`` with where the key's value came from when a
    block parameter gave it: ``... (set by model.layers.stage2.filters through $filters)``."""
    message = str(exc)
    for key, origin in (origins or {}).items():
        if message.startswith(f"model.layers.{name}.{key}:"):
            return ConfigError(f"{message} (set by {origin})")
    return exc


def build_model(config: Mapping[str, Any], input_shape: Shape, *, seed: int = 0,
                dtype: Any = np.float32, backend: Backend | str | None = None) -> Model:
    """Build a :class:`Model` from a model config.

    Args:
        config: ``{"name": ..., "init": "he_normal", "blocks": {...}, "layers": {"conv1":
            {"type": "conv2d", ...}, ...}}`` (dict or OmegaConf ``DictConfig``). ``init`` is
            the default initializer of every layer without its own ``init``. A layer set to
            ``null`` is skipped (``model.layers.drop1=null`` disables it). Layers may name
            their ``inputs`` and ``blocks`` may be instantiated: see :mod:`convtrain.nn.graph`
            and :mod:`convtrain.nn.blocks`; layers are built in a topological order. An
            ``input_shape`` in the config must equal ``input_shape`` (a model drawn for one
            input size: ``task=summary`` builds it for that shape).
        input_shape: per-sample input shape, e.g. ``(1, 28, 28)``.
        seed: seeds the initial weights (one Generator, drawn in the model's layer order:
            config order for a stack) and, through an
            independent stream, one child generator per dropout layer.
        dtype: float32 (default) or float64.
        backend: a :class:`~convtrain.runtime.backend.Backend`, ``"numpy"``/``"cupy"``, or None (NumPy).

    Raises:
        ConfigError: naming the offending key (``model.<key>`` or ``model.layers.<name>...``).
    """
    config = _plain(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"model: expected a mapping with a 'layers' key, got {config!r}")
    _check_top_level_keys(config)
    shape = _check_input_shape(input_shape)
    declared = config.get("input_shape")
    if declared is not None:
        try:
            declared = _check_input_shape(declared)
        except ConfigError:
            raise ConfigError(f"model.input_shape: expected positive integers like [C, H, W], "
                              f"got {declared!r}") from None
        if declared != shape:
            raise ConfigError(f"model.input_shape: this model is drawn for inputs of shape "
                              f"{format_shape(declared)}, but is built for "
                              f"{format_shape(shape)} (the data's shape); set "
                              f"model.input_shape=null to build it for the data")
    seed = validate.seed(seed)
    try:
        resolved_dtype = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        resolved_dtype = None
    if resolved_dtype not in _FLOAT_DTYPES:
        raise ConfigError(f"dtype: expected float32 or float64, got {dtype!r}")
    dtype = resolved_dtype

    init = config.get("init") or "he_normal"
    if not isinstance(init, str):
        raise ConfigError(f"model.init: expected an initializer name, got {init!r}")
    INITIALIZERS.get(init, where="model.init")
    name = config.get("name")
    layer_specs = config.get("layers")
    if layer_specs is None or not isinstance(layer_specs, Mapping):
        raise ConfigError(f"model.layers: expected a mapping of layer name -> layer config, got "
                          f"{layer_specs!r}")
    graph = expand_graph(layer_specs, config.get("blocks"))

    init_rng, dropout_seq = _layer_seeds(int(seed))
    defaults = {"init": init, "rng": init_rng, "dtype": dtype}
    layers: dict[str, Layer] = {}
    shapes: dict[str, Any] = {INPUT: shape}
    for layer_name, spec in graph.specs.items():
        inputs = graph.inputs[layer_name]
        layer_cls = layer_class(f"model.layers.{layer_name}", spec)
        check_inputs_fit(f"model.layers.{layer_name}", layer_cls, inputs)
        try:
            if layer_cls.merges_inputs:
                options = {key: value for key, value in spec.items() if key != "type"}
                layer = layer_cls.from_config(layer_name, options,
                                              tuple(shapes[ref] for ref in inputs),
                                              {**defaults, "input_names": inputs})
            else:
                layer = build_layer(layer_name, spec, shapes[inputs[0]], defaults)
        except ConfigError as exc:
            raise _with_origin(exc, layer_name, graph.origins.get(layer_name)) from None
        layers[layer_name] = layer
        shapes[layer_name] = tuple(layer.output_shape())

    random = [layer for layer in layers.values() if layer.uses_random_stream]
    for layer, child in zip(random, dropout_seq.spawn(len(random))):
        layer.seed_rng(int(child.generate_state(1)[0]))

    model = Model(layers, shape, name=name, dtype=dtype,
                  inputs=None if graph.is_chain else graph.inputs)
    if backend is not None:
        model.to_backend(backend)
    return model


__all__ = ["Model", "LoadResult", "build_model", "layer_type_name", "format_shape"]
