"""Softmax layer (``type: softmax``): probabilities inside a model, never its output."""
from __future__ import annotations

from convtrain.ops.softmax import softmax_backward, softmax_forward
from convtrain.nn.base import register_layer
from convtrain.nn.layers.activation import _Activation


@register_layer("softmax")
class Softmax(_Activation):
    """``exp(x) / sum(exp(x))`` over the first per-sample axis (the features of ``(F,)``, the
    channels of ``(C, H, W)`` at each pixel), like ``torch.nn.Softmax(dim=1)``:
    ``(N, K, ...)`` -> same shape, each ``y[n, :, ...]`` summing to 1.

    For gates and attention-style weights inside a model. It cannot end a model that is
    trained: the loss is softmax cross-entropy on *logits*, so a softmax output layer would
    apply the softmax twice; the trainer refuses it (``outputs_probabilities``).

    FLOPs per sample: 5 per element (maximum, subtraction, exp, sum, division).
    """

    outputs_probabilities = True
    flops_per_element = 5
    forward_fn = staticmethod(softmax_forward)
    backward_fn = staticmethod(softmax_backward)
