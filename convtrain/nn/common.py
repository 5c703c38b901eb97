"""Plumbing shared by convtrain's own layers (on top of :class:`convtrain.nn.base.Layer`).

It adds three things every concrete layer needs:

* ``where`` — the prefix of this layer's error messages: ``"model.layers.conv1"`` when built
  from a config, ``"layer 'conv2d'"`` when constructed directly;
* ``input_shape`` and ``output_shape()`` remembered once :meth:`build` has run (the model builds
  every layer; ``output_shape(shape)`` still answers for any other shape);
* a cheap per-sample shape check at the start of ``forward``, so that a mismatch reports the
  layer and both shapes instead of a broadcasting error deep inside the engine.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from convtrain.errors import ConfigError
from convtrain.nn.init import initialize
from convtrain.nn.base import Layer, Shape
from convtrain.nn.spec import key_path


class ConcreteLayer(Layer):
    """Base of the built-in layers.

    Attributes:
        where: error-message prefix naming this layer (its config path when built from YAML).
        input_shape: per-sample input shape once built, else ``None``.
        global_receptive_field: True for layers whose every output sees the whole input
            (Dense); ``summary()`` then reports the full input size as receptive field.
    """

    global_receptive_field: ClassVar[bool] = False

    def __init__(self, name: str | None = None, where: str | None = None):
        super().__init__(name)
        self.where = where or f"layer '{self.name}'"
        self.input_shape: Shape | None = None

    def init_weight_and_bias(self, weight_shape: tuple[int, ...], init: str, use_bias: bool,
                             rng: np.random.Generator, dtype: Any) -> None:
        """``weight`` drawn by initializer ``init``, ``bias`` zeros (when used), zero grads.

        Host NumPy arrays; :meth:`to_backend` moves them to the GPU when needed.
        """
        self.params["weight"] = initialize(init, weight_shape, rng=rng, dtype=dtype,
                                           where=key_path(self.where, "init"))
        self.grads["weight"] = np.zeros(weight_shape, dtype=dtype)
        if use_bias:
            self.params["bias"] = np.zeros(weight_shape[0], dtype=dtype)
            self.grads["bias"] = np.zeros(weight_shape[0], dtype=dtype)

    def build(self, input_shape: Shape, where: str | None = None,
              param_options: Mapping[str, Any] | None = None) -> "ConcreteLayer":
        """Validate ``input_shape`` (per sample) and remember it; returns ``self``.

        ``param_options`` (from ``LayerSpec.param_layer_options()``) sets ``trainable`` and
        ``weight_decay_mult`` of a layer with parameters.

        Raises:
            ConfigError: the layer cannot take this shape (message names ``where``).
        """
        if where is not None:
            self.where = where
        shape = tuple(int(s) for s in input_shape)
        self.compute_output_shape(shape)  # raises for impossible shapes
        self.input_shape = shape
        if param_options is not None:
            self.trainable = param_options["trainable"]
            self.weight_decay_mult = param_options["weight_decay_mult"]
        return self

    def output_shape(self, input_shape: Shape | None = None) -> Shape:
        """Per-sample output shape for ``input_shape`` (default: the built input shape)."""
        if input_shape is None:
            if self.input_shape is None:
                raise ConfigError(f"{self.where}: output_shape() needs an input shape until "
                                  f"the layer is built")
            input_shape = self.input_shape
        return self.compute_output_shape(tuple(int(s) for s in input_shape))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """Subclasses override; the default keeps the shape (pointwise layers)."""
        return tuple(input_shape)

    def check_rank(self, input_shape: Shape, rank: int, what: str) -> None:
        """Raise unless the per-sample shape has ``rank`` dimensions (``what`` names them)."""
        if len(input_shape) != rank:
            raise ConfigError(f"{self.where}: expects per-sample input {what}, got shape "
                              f"{tuple(input_shape)}")

    def check_batch(self, x: Any, rank: int, axis_size: tuple[int, int] | None = None,
                    what: str = "") -> None:
        """Cheap forward-time check of a batch ``x``: ``rank`` per-sample dims and, when
        ``axis_size=(axis, size)`` is given, ``x.shape[axis] == size``."""
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != rank + 1 or (axis_size and shape[axis_size[0]] != axis_size[1]):
            raise ConfigError(f"{self.where}: expects batches of per-sample shape {what}, got "
                              f"a batch of shape {shape} (per-sample {shape[1:]})")
