"""The array engine: pure forward/backward functions over NumPy or CuPy arrays.

No state and no config: layers (``convtrain.layers``) own parameters and call these.
Activations are ``(N, C, H, W)``; conv weights ``(F, C//groups, kh, kw)``; dense weights
``(out_features, in_features)``. Every ``*_forward`` returns its output plus a cache that the
matching ``*_backward`` consumes.
"""
from convtrain.engine.activations import (
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    tanh_backward,
    tanh_forward,
)
from convtrain.engine.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from convtrain.engine.conv import conv2d_backward, conv2d_forward
from convtrain.engine.dense import dense_backward, dense_forward
from convtrain.engine.dropout import dropout_backward, dropout_forward
from convtrain.engine.im2col import col2im, conv_output_size, im2col, pair, resolve_padding
from convtrain.engine.losses import log_softmax, softmax_cross_entropy
from convtrain.engine.parallel import (get_num_threads, get_pin_threads, set_num_threads,
                                       set_pin_threads)
from convtrain.engine.pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from convtrain.engine.workspace import (Workspace, get_max_workspace_mb, keep_freed_memory,
                                        set_max_workspace_mb)

__all__ = [
    "Workspace",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "batchnorm2d_backward",
    "batchnorm2d_forward",
    "col2im",
    "conv2d_backward",
    "conv2d_forward",
    "conv_output_size",
    "dense_backward",
    "dense_forward",
    "dropout_backward",
    "dropout_forward",
    "get_max_workspace_mb",
    "get_num_threads",
    "get_pin_threads",
    "im2col",
    "keep_freed_memory",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "log_softmax",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "pair",
    "relu_backward",
    "relu_forward",
    "resolve_padding",
    "set_max_workspace_mb",
    "set_num_threads",
    "set_pin_threads",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax_cross_entropy",
    "tanh_backward",
    "tanh_forward",
]
