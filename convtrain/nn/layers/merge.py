"""Layers that join branches of a graph: ``add`` (residual sums), ``concat`` (channels), and
``identity`` (a named pass-through).

``add`` and ``concat`` are merge layers (``merges_inputs``): their ``forward`` takes the list of
their inputs' batches, in the order of the layer's ``inputs`` key, and ``backward`` returns one
gradient per input, in the same order. Their input shape is the tuple of the inputs' per-sample
shapes.

**Aliasing rule.** Gradients and activations are never written in place by a layer that did
not allocate them: every ``backward`` reads ``dy`` and returns a new array (or ``dy`` itself, or
a view of it), and every ``forward`` reads ``x`` without writing it. So the merge layers copy
nothing the math does not need: ``add``'s forward allocates its output once and its backward
hands the *same* ``dy`` array to each of its inputs; ``concat``'s forward allocates its output
once and its backward returns views of ``dy`` (one channel slice per input); ``identity``
returns its input and its ``dy`` themselves. The model sums the gradients of a layer whose
output feeds several layers into one new array, and only adds in place into arrays it
allocated itself (:meth:`convtrain.nn.model.Model.backward`). ``tests/nn/test_graph.py`` checks
for every layer type that ``forward`` and ``backward`` leave their arguments untouched;
``tests/nn/test_merge_copies.py`` bounds the bytes the merge layers and the summing allocate.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from convtrain.errors import ConfigError, InternalError
from convtrain.runtime.backend import array_module
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import reject_unknown_keys


def _format(shape: Shape) -> str:
    return "x".join(str(int(s)) for s in shape)


class _Merge(Layer):
    """A layer of two or more inputs and no options or parameters."""

    merges_inputs = True

    def __init__(self, name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        #: the names of the layers feeding this one (for messages), in input order.
        self.input_names: tuple[str, ...] = ()
        self.cache: Any = None

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any], input_shape: Any,
                    defaults: Mapping[str, Any]) -> "Layer":
        """Build ``model.layers.<name>`` for the per-sample shapes of its inputs
        (``input_shape``: a tuple of shapes); ``defaults["input_names"]`` names them in
        messages."""
        where = f"model.layers.{name}"
        reject_unknown_keys(where, cls.type_name, spec, cls.options)
        layer = cls(name=name, where=where)
        layer.input_names = tuple(defaults.get("input_names") or ())
        return layer.build(input_shape)

    def build(self, input_shape: Any, where: str | None = None,
              layer_settings: Mapping[str, Any] | None = None) -> "Layer":
        if where is not None:
            self.where = where
        shapes = self._shapes(input_shape)
        self.compute_output_shape(shapes)
        self.input_shape = shapes  # type: ignore[assignment] - a tuple of shapes
        return self

    def output_shape(self, input_shape: Any = None) -> Shape:
        if input_shape is None:
            if self.input_shape is None:
                raise InternalError(f"{self.where}: output_shape() needs input shapes until "
                                    f"the layer is built")
            input_shape = self.input_shape
        return self.compute_output_shape(self._shapes(input_shape))

    def _shapes(self, input_shape: Any) -> tuple[Shape, ...]:
        shapes = tuple(tuple(int(s) for s in shape) for shape in input_shape)
        if len(shapes) < 2:
            raise ConfigError(f"{self.where}: {self.type_name} joins 2 or more inputs, got "
                              f"{len(shapes)}; name them in {self.where}.inputs")
        return shapes

    def _listing(self, shapes: Sequence[Shape]) -> str:
        """``'a' 16x8x8, 'b' 32x4x4`` (names when known, else input positions)."""
        names = (self.input_names if len(self.input_names) == len(shapes)
                 else tuple(f"input {i + 1}" for i in range(len(shapes))))
        return ", ".join(f"'{n}' {_format(s)}" for n, s in zip(names, shapes))

    def _check_inputs(self, xs: Any) -> None:
        shapes = self.input_shape or ()
        if not isinstance(xs, (list, tuple)) or len(xs) != len(shapes):
            raise InternalError(f"{self.where}: expects a list of {len(shapes)} batches, got "
                                f"{type(xs).__name__}")


@register_layer("add")
class Add(_Merge):
    """The elementwise sum of 2 or more inputs of one shape: the join of a residual block
    (``y = F(x) + x``). YAML: ``{type: add, inputs: [bn2, shortcut]}``; no options, no
    parameters.

    PyTorch equivalent: ``a + b``. FLOPs per sample: one addition per element per extra input.
    ``backward(dy)`` returns ``[dy, dy, ...]``: the same array for every input (see the
    aliasing rule of this module).
    """

    def forward(self, xs, training: bool = True):
        """``[x1, x2, ...]`` each ``(N, *shape)`` -> ``x1 + x2 + ...`` ``(N, *shape)``."""
        self._check_inputs(xs)
        y = xs[0] + xs[1]  # a new array: the inputs stay untouched
        for x in xs[2:]:
            y += x  # in place into the array made above
        self.cache = len(xs)
        return y

    def backward(self, dy):
        """``dy`` -> ``[dy] * number of inputs`` (one array, not copies)."""
        count = self.require_cache(self.cache)
        self.cache = None
        return [dy] * count

    def compute_output_shape(self, input_shape: Any) -> Shape:
        shapes = tuple(input_shape)
        if any(shape != shapes[0] for shape in shapes[1:]):
            raise ConfigError(f"{self.where}: add needs inputs of one shape, got "
                              f"{self._listing(shapes)}")
        return shapes[0]

    def flops(self, input_shape: Any) -> int:
        shapes = tuple(input_shape)
        return (len(shapes) - 1) * math.prod(shapes[0])

    def describe(self) -> str:
        return f"{len(self.input_shape or ())} inputs"


@register_layer("concat")
class Concat(_Merge):
    """The inputs joined along the channel axis (axis 1 of ``(N, C, H, W)``; features of
    ``(N, F)``), in the order of ``inputs``: the join of Inception / DenseNet-style branches.
    Every input has the same rank and the same size on every other axis (one spatial size).
    YAML: ``{type: concat, inputs: [branch1, branch2]}``; no options, no parameters.

    PyTorch equivalent: ``torch.cat([a, b], dim=1)``. No FLOPs (a copy). ``backward(dy)``
    returns each input's channel slice of ``dy`` as a view, no copy: a layer that needs its
    gradient in another layout makes that copy itself (a convolution gathers ``dy`` into its
    GEMM layout anyway), and the others (ReLU, batch norm, pooling, add) read strided views.
    """

    def forward(self, xs, training: bool = True):
        """``[x1 (N, C1, ...), x2 (N, C2, ...)]`` -> ``(N, C1 + C2, ...)``."""
        self._check_inputs(xs)
        xp = array_module(xs[0])
        self.cache = tuple(int(x.shape[1]) for x in xs)
        return xp.concatenate(xs, axis=1)

    def backward(self, dy):
        """``dy`` ``(N, C1 + C2, ...)`` -> ``[dy[:, :C1], dy[:, C1:]]`` (views of ``dy``)."""
        sizes = self.require_cache(self.cache)
        self.cache = None
        grads, start = [], 0
        for size in sizes:
            grads.append(dy[:, start:start + size])
            start += size
        return grads

    def compute_output_shape(self, input_shape: Any) -> Shape:
        shapes = tuple(input_shape)
        if any(len(shape) != len(shapes[0]) for shape in shapes[1:]):
            raise ConfigError(f"{self.where}: concat needs inputs of one rank, got "
                              f"{self._listing(shapes)}")
        if any(shape[1:] != shapes[0][1:] for shape in shapes[1:]):
            what = "spatial size" if len(shapes[0]) == 3 else "size after the first axis"
            raise ConfigError(f"{self.where}: concat joins channels and needs one {what}, got "
                              f"{self._listing(shapes)}")
        return (sum(shape[0] for shape in shapes),) + shapes[0][1:]

    def describe(self) -> str:
        return f"{len(self.input_shape or ())} inputs, channels"


@register_layer("identity")
class Identity(Layer):
    """Passes its input on unchanged (``torch.nn.Identity``): a named point in a graph, e.g.
    the shortcut of a residual block that needs no projection, or the place a later
    ``after:`` insertion anchors to. Returns its input and its gradient themselves, no copy.
    No options, no parameters, no FLOPs."""

    def forward(self, x, training: bool = True):
        return x

    def backward(self, dy):
        return dy
