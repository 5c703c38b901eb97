"""Seeded, stratified index selection (train/val splits and class-balanced subsets).

"Stratified" means every class keeps (as nearly as integers allow) the same share in the
selected part as in the whole: per-class counts are allocated by the largest-remainder method,
so the selected total is exactly the number requested.
"""

from __future__ import annotations

import numpy as np


def allocate_per_class(class_counts: np.ndarray, n_take: int) -> np.ndarray:
    """Split ``n_take`` over classes proportionally to ``class_counts`` (largest remainder).

    Args:
        class_counts: ``(K,)`` number of samples in each class.
        n_take: total to select, ``0 <= n_take <= class_counts.sum()``.

    Returns:
        ``(K,)`` int64 counts summing to ``n_take``, each ``<= class_counts[k]``.
    """
    total = int(class_counts.sum())
    if not 0 <= n_take <= total:
        raise ValueError(f"cannot take {n_take} of {total} samples")
    if total == 0:
        return np.zeros_like(class_counts, dtype=np.int64)
    quota = class_counts.astype(np.float64) * (n_take / total)
    counts = np.floor(quota).astype(np.int64)
    shortfall = n_take - int(counts.sum())
    # Hand the remaining units to the largest fractional parts; a stable sort on the negated
    # remainders breaks ties by class index, so the allocation never depends on the RNG.
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[:shortfall]] += 1
    return counts


def stratified_split(
    labels: np.ndarray, n_take: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly split sample indices into a kept part and a taken part, stratified by label.

    Args:
        labels: ``(N,)`` integer labels.
        n_take: exact size of the taken part.
        rng: the generator that decides which samples of each class are taken.

    Returns:
        ``(keep, take)``: sorted int64 index arrays, disjoint, together covering ``0 .. N-1``;
        ``len(take) == n_take``.
    """
    labels = np.asarray(labels)
    classes, inverse, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    take_counts = allocate_per_class(class_counts, n_take)
    # Group indices by class once (stable, so each group is in ascending index order).
    grouped = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(class_counts)[:-1]))
    taken = []
    for start, count, n in zip(starts, class_counts, take_counts, strict=True):
        members = grouped[start : start + count]
        taken.append(members[rng.permutation(count)[:n]])
    take = np.sort(np.concatenate(taken)) if taken else np.empty(0, dtype=np.int64)
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[take] = False
    keep = np.flatnonzero(mask)
    return keep.astype(np.int64), take.astype(np.int64)
