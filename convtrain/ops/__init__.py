"""The math: pure forward/backward functions over NumPy or CuPy arrays (``xp``), readable first.

No state, no config and no threads. Start with :mod:`convtrain.ops.conv` (the convolution as
im2col + GEMM + col2im). The CPU speed paths, each tested equal to the function here, live in
:mod:`convtrain.ops.fast`, whose entry points the layers (:mod:`convtrain.nn`) call; the machine
(threads, BLAS, scratch memory) lives in :mod:`convtrain.runtime`.
Activations are ``(N, C, H, W)``; conv weights ``(F, C//groups, kh, kw)``; dense weights
``(out_features, in_features)``. Every ``*_forward`` returns its output plus a cache that the
matching ``*_backward`` consumes.
"""
from convtrain.ops.activations import (
    elu_backward,
    elu_forward,
    gelu_backward,
    gelu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    silu_backward,
    silu_forward,
    tanh_backward,
    tanh_forward,
)
from convtrain.ops.batchnorm import (
    batchnorm1d_backward,
    batchnorm1d_forward,
    batchnorm2d_backward,
    batchnorm2d_forward,
)
from convtrain.ops.conv import conv2d_backward, conv2d_forward, conv2d_naive
from convtrain.ops.dense import dense_backward, dense_forward
from convtrain.ops.dropout import dropout2d_forward, dropout_backward, dropout_forward
from convtrain.ops.im2col import col2im, conv_output_size, im2col, pair, resolve_padding
from convtrain.ops.losses import log_softmax, softmax_cross_entropy
from convtrain.ops.pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from convtrain.ops.softmax import softmax_backward, softmax_forward
from convtrain.ops.special import erf, erfc

__all__ = [
    "avgpool2d_backward",
    "avgpool2d_forward",
    "batchnorm1d_backward",
    "batchnorm1d_forward",
    "batchnorm2d_backward",
    "batchnorm2d_forward",
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_naive",
    "conv_output_size",
    "dense_backward",
    "dense_forward",
    "dropout2d_forward",
    "dropout_backward",
    "dropout_forward",
    "elu_backward",
    "elu_forward",
    "erf",
    "erfc",
    "gelu_backward",
    "gelu_forward",
    "im2col",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "log_softmax",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "pair",
    "relu_backward",
    "relu_forward",
    "resolve_padding",
    "sigmoid_backward",
    "sigmoid_forward",
    "silu_backward",
    "silu_forward",
    "softmax_backward",
    "softmax_cross_entropy",
    "softmax_forward",
    "tanh_backward",
    "tanh_forward",
]
