"""The dense layer's math on the CPU: :mod:`convtrain.ops.dense`, with GEMMs below
``Routes.dense_single_thread_macs`` multiply-adds (:mod:`.plan`) run on one BLAS thread (after a multi-threaded GEMM
OpenBLAS's worker busy-waits on the other core, slowing the convolutions' own threads that
follow; small GEMMs gain less than that costs: benchmarks/RESULTS.md)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np  # only to tell NumPy arrays from CuPy ones (`xp is np`)

from convtrain.ops import dense as reference
from convtrain.ops.dense import DenseCache
from convtrain.ops.fast.plan import current_routes
from convtrain.runtime.backend import array_module
from convtrain.runtime.blas import blas_single_thread

def _blas_context(x: Any, macs: int) -> Any:
    """A single-threaded-BLAS block for a small NumPy GEMM, else a no-op context."""
    if array_module(x) is np and macs < current_routes().dense_single_thread_macs:
        return blas_single_thread()
    return nullcontext()


def dense_forward(x: Any, weight: Any, bias: Any = None) -> tuple[Any, DenseCache]:
    """:func:`convtrain.ops.dense.dense_forward`: ``y (N, out) = x @ W.T + b``."""
    macs = int(x.shape[0]) * int(weight.shape[0]) * int(weight.shape[-1]) if x.ndim == 2 else 0
    with _blas_context(x, macs):
        return reference.dense_forward(x, weight, bias)


def dense_backward(dy: Any, cache: DenseCache) -> tuple[Any, Any, Any]:
    """:func:`convtrain.ops.dense.dense_backward`: ``(dx, dweight, dbias)``."""
    macs = int(dy.shape[0]) * int(cache.x.shape[1]) * int(cache.weight.shape[0])
    with _blas_context(dy, macs):
        return reference.dense_backward(dy, cache)
