"""Softmax layer (``type: softmax``): probabilities inside a model, never its output."""
from __future__ import annotations

from convtrain.ops.softmax import softmax_backward, softmax_forward
from convtrain.nn.base import Layer, Shape, register_layer


@register_layer("softmax")
class Softmax(Layer):
    """``exp(x) / sum(exp(x))`` over the first per-sample axis (the features of ``(F,)``, the
    channels of ``(C, H, W)`` at each pixel), like ``torch.nn.Softmax(dim=1)``.

    For gates and attention-style weights inside a model. It cannot end a model that is
    trained: the loss is softmax cross-entropy on *logits*, so a softmax output layer would
    apply the softmax twice; the trainer refuses it (``outputs_probabilities``).

    FLOPs per sample: 5 per element (maximum, subtraction, exp, sum, division).
    """

    outputs_probabilities = True

    def __init__(self, name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        self.cache = None

    def forward(self, x, training: bool = True):
        """``(N, K, ...)`` -> same shape, each ``y[n, :, ...]`` summing to 1."""
        y, self.cache = softmax_forward(x)
        return y

    def backward(self, dy):
        dx = softmax_backward(dy, self.require_cache(self.cache))
        self.cache = None
        return dx

    def flops(self, input_shape: Shape) -> int:
        count = 1
        for size in input_shape:
            count *= int(size)
        return 5 * count
