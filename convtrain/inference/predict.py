"""Predictions as rows: the top-k classes of each input with their probabilities, as a
terminal table and as ``predictions.csv`` / ``predictions.json``.

One row per (input, rank): ``input`` (the name from
:class:`~convtrain.inference.inputs.Inputs`), ``rank`` (1 = most probable), ``class_index``,
``class_name`` (empty where the dataset has no names) and ``probability``. Equal
probabilities rank the lower class index first. Files hold the probabilities as the shortest
decimal that reads back as the same float32.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from convtrain import validate
from convtrain.errors import ConfigError, InternalError
from convtrain.training.atomic import atomic_write_text

TOP_K_KEY = "predict.top_k"
#: classes listed per input when ``predict.top_k`` is not set (every class when there are fewer)
DEFAULT_TOP_K = 3
CSV_NAME = "predictions.csv"
JSON_NAME = "predictions.json"
COLUMNS = ("input", "rank", "class_index", "class_name", "probability")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One of the top-k classes of one input."""

    input: str
    rank: int
    class_index: int
    class_name: str
    probability: float


def check_top_k(top_k: Any, num_classes: int | None = None) -> int | None:
    """``predict.top_k`` as an int in ``1 .. num_classes``, or a ConfigError naming the key.
    None means :data:`DEFAULT_TOP_K` (at most ``num_classes``); without ``num_classes`` only
    the value itself is checked (None stays None)."""
    if top_k is None:
        return None if num_classes is None else min(DEFAULT_TOP_K, num_classes)
    k = validate.positive_int(TOP_K_KEY, top_k)
    if num_classes is None:
        return k
    if k > num_classes:
        raise ConfigError(f"{TOP_K_KEY}: must be at most the number of classes, "
                          f"{num_classes}; got {k}")
    return k


def top_k_predictions(probabilities: np.ndarray, names: Sequence[str],
                      class_names: Sequence[str] | None, top_k: Any) -> list[Prediction]:
    """The ``top_k`` most probable classes of each input, input by input, rank by rank.

    Args:
        probabilities: host ``(N, K)``, one row per input (the model's softmax output).
        names: ``N`` input names.
        class_names: ``K`` names, or None where the dataset has none.
        top_k: how many classes per input (checked by :func:`check_top_k`; None: the default).
    """
    probs = np.asarray(probabilities)
    if probs.ndim != 2 or probs.shape[0] != len(names):
        raise InternalError(f"top_k_predictions: expected probabilities (N={len(names)}, K), "
                            f"got shape {probs.shape}")
    num_classes = probs.shape[1]
    if class_names is not None and len(class_names) != num_classes:
        raise InternalError(f"top_k_predictions: {len(class_names)} class names for "
                            f"{num_classes} classes")
    k = check_top_k(top_k, num_classes)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # stable: ties -> lower index
    return [Prediction(input=name, rank=rank + 1, class_index=int(index),
                       class_name="" if class_names is None else str(class_names[index]),
                       probability=float(probs[row, index]))
            for row, name in enumerate(names) for rank, index in enumerate(order[row])]


def format_table(rows: Sequence[Prediction]) -> str:
    """An aligned table for the terminal: the input's name on its first row only, the class as
    ``index name`` (the index alone where that is the name), the probability with 4 decimals.

    >>> print(format_table([Prediction("a.png", 1, 7, "sneaker", 0.91),
    ...                     Prediction("a.png", 2, 5, "sandal", 0.06)]))
    input  rank  class      probability
    a.png     1  7 sneaker       0.9100
              2  5 sandal        0.0600
    """
    header = ("input", "rank", "class", "probability")
    cells = [(row.input if row.rank == 1 else "", str(row.rank),
              _class_cell(row), f"{row.probability:.4f}") for row in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    right = (False, True, False, True)  # numbers align right
    lines = ["  ".join(cell.rjust(width) if r else cell.ljust(width)
                       for cell, width, r in zip(line, widths, right)).rstrip()
             for line in [header, *cells]]
    return "\n".join(lines)


def _class_cell(row: Prediction) -> str:
    """``7 sneaker``; ``7`` alone where the class has no name or its name is its index
    (digits)."""
    if row.class_name in ("", str(row.class_index)):
        return str(row.class_index)
    return f"{row.class_index} {row.class_name}"


def _shortest(probability: float) -> float:
    """The shortest decimal that reads back as the same float32 (0.9 rather than
    0.8999999761581421)."""
    return float(str(np.float32(probability)))


def predictions_csv(rows: Sequence[Prediction]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.input, row.rank, row.class_index, row.class_name,
                         repr(_shortest(row.probability))])
    return buffer.getvalue()


def predictions_json(rows: Sequence[Prediction], header: Mapping[str, Any] | None = None) -> str:
    """``{"header": header, "predictions": [row, ...]}`` (the CSV holds the rows only)."""
    records = [dict(dataclasses.asdict(row), probability=_shortest(row.probability))
               for row in rows]
    return json.dumps({"header": dict(header or {}), "predictions": records}, indent=2,
                      ensure_ascii=False) + "\n"


def write_predictions(rows: Sequence[Prediction], directory: str | os.PathLike,
                      header: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``predictions.csv`` (the rows) and ``predictions.json`` (``header``: what
    ``task=predict`` ran -- checkpoint relative to the run directory, epoch, inputs, top_k,
    resize -- and the rows) into ``directory`` (created), each atomically (the previous files
    stay whole if a write fails).

    Returns:
        the two paths.

    Raises:
        OSError: a write failed, ``filename`` set to the file (see ``training/atomic.py``).
    """
    directory = Path(directory)
    csv_path, json_path = directory / CSV_NAME, directory / JSON_NAME
    atomic_write_text(csv_path, predictions_csv(rows))
    atomic_write_text(json_path, predictions_json(rows, header))
    return csv_path, json_path
