"""Mini-batch iteration over an :class:`ArraySplit`.

Each batch is gathered with one fancy index (a fresh, C-contiguous float32 copy, so layers may
modify their input in place without touching the dataset), optionally augmented on the host,
then moved to the run's backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from convtrain import validate
from convtrain.data.augment import AugmentSpec, augment_batch, check_augment_fits, parse_augment
from convtrain.data.splits import ArraySplit
from convtrain.errors import ConfigError


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`iterate_batches` yields for ``n`` samples."""
    validate.positive_int("batch_size", batch_size)
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(
    split: ArraySplit,
    batch_size: int,
    *,
    shuffle: bool,
    rng: np.random.Generator | None = None,
    backend: Any = None,
    drop_last: bool = False,
    augment: AugmentSpec | Mapping[str, Any] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(xb, yb)`` batches covering ``split`` once (one epoch).

    Args:
        split: images ``(N, C, H, W)`` and labels ``(N,)``.
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: visit samples in ``rng.permutation(N)`` order instead of ``0..N-1``.
        rng: required when shuffling or augmenting. Draws happen in this order: the epoch's
            permutation, then each batch's augmentation draws, so a seeded generator
            reproduces the exact same batches.
        backend: a :class:`convtrain.runtime.backend.Backend`; batches go through ``backend.asarray``.
            ``None`` yields NumPy arrays.
        drop_last: skip a final batch smaller than ``batch_size`` (keeps BatchNorm statistics
            well-defined); with ``n < batch_size`` this yields nothing.
        augment: ``{random_crop: P, horizontal_flip: bool}`` or an :class:`AugmentSpec`; ``None``
            (the default) for none. Use it for training splits only.

    Yields:
        ``xb`` float32 ``(B, C, H, W)`` and ``yb`` int64 ``(B,)``, on the backend.
    """
    validate.positive_int("batch_size", batch_size)
    spec = parse_augment(augment, "augment")
    check_augment_fits(spec, split.x.shape, "augment")
    if (shuffle or spec is not None) and rng is None:
        raise ConfigError(
            "iterate_batches: shuffling or augmentation needs a seeded rng (np.random.Generator)"
        )
    n = len(split)
    order = rng.permutation(n) if shuffle else np.arange(n)
    x = split.x if split.x.dtype == np.float32 else split.x.astype(np.float32)
    to_backend = backend.asarray if backend is not None else (lambda a: a)
    for batch in range(num_batches(n, batch_size, drop_last)):
        indices = order[batch * batch_size : (batch + 1) * batch_size]
        xb = x[indices]
        if spec is not None:
            xb = augment_batch(xb, spec, rng)
        yield to_backend(xb), to_backend(split.y[indices].astype(np.int64, copy=False))

