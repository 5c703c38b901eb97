"""The CPU speed paths, each equal to its reference in :mod:`convtrain.ops` up to float
rounding, and the one entry point per operation that layers call: it plans the call and runs a
speed path on NumPy arrays, the reference on any other backend (CuPy).

Convolution routes are decided by :func:`~convtrain.ops.fast.plan.plan_conv` alone;
:func:`~convtrain.ops.fast.plan.force_routes` forces them (tests, experiments).
"""
from convtrain.ops.fast.activations import relu_backward, relu_forward
from convtrain.ops.fast.batchnorm import (batchnorm1d_backward, batchnorm1d_forward,
                                          batchnorm2d_backward, batchnorm2d_forward)
from convtrain.ops.fast.conv import conv2d_backward, conv2d_forward
from convtrain.ops.fast.dense import dense_backward, dense_forward
from convtrain.ops.fast.plan import ConvPlan, Routes, force_routes, plan_conv
from convtrain.ops.fast.pool import maxpool2d_backward, maxpool2d_forward

__all__ = [
    "ConvPlan", "Routes", "batchnorm1d_backward", "batchnorm1d_forward",
    "batchnorm2d_backward", "batchnorm2d_forward", "conv2d_backward", "conv2d_forward", "dense_backward",
    "dense_forward", "force_routes", "maxpool2d_backward", "maxpool2d_forward", "plan_conv",
    "relu_backward", "relu_forward",
]
