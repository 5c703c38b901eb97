"""Dropout layers: ``dropout`` (single elements), ``dropout2d`` (whole feature maps)."""
from __future__ import annotations

import numpy as np

from convtrain.ops.dropout import dropout2d_forward, dropout_backward, dropout_forward
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import Option
from convtrain.runtime.backend import array_module


@register_layer("dropout")
class Dropout(Layer):
    """Inverted dropout, like ``torch.nn.Dropout``: in training, each element is zeroed with
    probability ``p`` and the survivors are scaled by ``1/(1-p)``; in evaluation
    (``training=False``) the layer is the identity.

    ``self.rng`` is a host NumPy Generator on every backend, and it is the layer's only random
    state: checkpoints save and restore it, whichever backend wrote or reads them. On NumPy
    masks are drawn from it directly; on CuPy each draw uses a device Generator seeded from
    it (CuPy keeps generator state in device memory, where it cannot be saved). The model
    seeds it (:meth:`seed_rng`) from the run seed, so that a run is reproducible; a directly
    constructed layer gets an unseeded one unless ``seed`` is given.

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
        self.seed_rng(seed)

    def seed_rng(self, seed: int | None) -> None:
        """(Re)create the mask generator (a host NumPy Generator) from ``seed``."""
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def _mask_generator(self, x):
        """The Generator drawing the mask for ``x``: ``self.rng`` for NumPy arrays; for device
        arrays a Philox generator seeded from ``self.rng`` (counter-based, so creating one per
        draw is cheap, unlike the default XORWOW whose curand states need skip-aheads)."""
        xp = array_module(x)
        if xp is np:
            return self.rng
        return xp.random.Generator(xp.random.Philox4x3210(int(self.rng.integers(2**63))))

    def forward(self, x, training: bool = True):
        """Any ``(N, ...)`` -> same shape; random only when ``training``."""
        if not training or self.p == 0:
            self.mask = None
            return x
        y, self.mask = self._dropout(x, self.p, self._mask_generator(x))
        return y

    def _dropout(self, x, p, rng):
        """The engine's ``(y, mask)`` for ``x`` (one mask element per input element here)."""
        return dropout_forward(x, p, rng)

    def backward(self, dy):
        # mask None means the forward pass was the identity (eval mode or p == 0).
        dx = dropout_backward(dy, self.mask, self.p) if self.mask is not None else dy
        self.mask = None
        return dx

    def describe(self) -> str:
        return f"p={self.p:g}"



@register_layer("dropout2d")
class Dropout2d(Dropout):
    """Channel dropout, like ``torch.nn.Dropout2d``: in training, each feature map
    ``x[n, c]`` of a ``(N, C, H, W)`` batch is zeroed as a whole with probability ``p`` and the
    kept maps are scaled by ``1/(1-p)``; in evaluation the layer is the identity.

    Neighbouring pixels of a map are strongly correlated, so element-wise dropout barely
    regularises convolutions (Tompson et al., 2015); dropping whole maps does. The random
    stream, its seeding and its checkpointing are those of ``dropout`` (one ``(N, C)`` draw per
    batch instead of ``(N, C, H, W)``).
    """

    input_rank = 3
    input_layout = "per-sample input (C, H, W)"
    input_hint = "use dropout after flatten or dense layers"

    def forward(self, x, training: bool = True):
        """``(N, C, H, W)`` -> same shape; random only when ``training``."""
        self.check_batch(x, 3, what="(C, H, W)")
        return super().forward(x, training)

    def _dropout(self, x, p, rng):
        return dropout2d_forward(x, p, rng)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self.check_input_rank(self.where, input_shape)
        return tuple(input_shape)
