"""Dropout layer (``type: dropout``)."""
from __future__ import annotations

import numpy as np

from convtrain.ops.dropout import dropout_backward, dropout_forward
from convtrain.nn.base import Layer, register_layer
from convtrain.nn.options import Option


@register_layer("dropout")
class Dropout(Layer):
    """Inverted dropout, like ``torch.nn.Dropout``: in training, each element is zeroed with
    probability ``p`` and the survivors are scaled by ``1/(1-p)``; in evaluation
    (``training=False``) the layer is the identity.

    Masks come from ``self.rng``, a Generator on the activations' backend. The model seeds it
    (:meth:`seed_rng`) from the run seed, so that a run is reproducible; a directly constructed
    layer gets an unseeded one unless ``seed`` is given.

    Args: the option ``p``, and
        seed: seed of the mask generator (None: fresh entropy).
    """

    # p = 1 would drop everything and divide by 0
    options = (Option("p", "number", "drop probability", low=0.0, high=1.0, high_open=True,
                      expected="in [0, 1)"),)
    uses_random_stream = True

    def __init__(self, p: float = 0.5, name: str | None = None, seed: int | None = None, *,
                 where: str | None = None):
        super().__init__(name, where)
        self.set_options(locals())
        self.mask = None
        self.backend_name = "numpy"
        self.seed_rng(seed)

    def seed_rng(self, seed: int | None, backend=None) -> None:
        """(Re)create the mask generator from ``seed``, on ``backend`` (default NumPy)."""
        self.seed = seed
        self.backend_name = backend.name if backend is not None else "numpy"
        self.rng = backend.rng(seed) if backend is not None else np.random.default_rng(seed)

    def forward(self, x, training: bool = True):
        """Any ``(N, ...)`` -> same shape; random only when ``training``."""
        if not training or self.p == 0:
            self.mask = None
            return x
        y, self.mask = dropout_forward(x, self.p, self.rng)
        return y

    def backward(self, dy):
        # mask None means the forward pass was the identity (eval mode or p == 0).
        dx = dropout_backward(dy, self.mask, self.p) if self.mask is not None else dy
        self.mask = None
        return dx

    def to_backend(self, backend) -> None:
        """Masks must be drawn on the activations' device: move the generator too (reseeded
        from ``seed``, so a NumPy and a CuPy run are each reproducible, not identical)."""
        super().to_backend(backend)
        if backend.name != self.backend_name:
            self.seed_rng(self.seed, backend)

    def describe(self) -> str:
        return f"p={self.p:g}"

