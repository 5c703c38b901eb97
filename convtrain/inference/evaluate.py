"""Score a trained run on labelled images: loss, accuracy, per-class metrics, confusion matrix.

:func:`evaluate` takes a :class:`~convtrain.inference.run.TrainedRun` and raw pixels ``(N, C,
H, W)`` as the dataset stores them (the run's own preprocessing is applied) with their labels
``(N,)``; :func:`write_results` writes what ``task=eval`` leaves in ``RUN_DIR/eval/``.

Definitions (K classes; "undefined" is ``null`` in JSON, an empty CSV cell, ``-`` on screen):

- **loss**: the training loss without its L2 term: the mean softmax cross-entropy of the
  logits against the labels.
- **accuracy**: the share of images whose most probable class is their label.
- **confusion matrix** ``(K, K)``: row = true class, column = predicted class, counts.
- per class ``k``: **support** (images of class k: row sum), **predicted** (images predicted
  as k: column sum), **correct** (diagonal), **precision** = correct / predicted (undefined
  when nothing was predicted as k), **recall** = correct / support (undefined when the split
  has no image of k), **f1** = 2 correct / (support + predicted), and **accuracy** = the share
  of class k's images classified correctly -- by this definition the same number as recall,
  reported under both names because "per-class accuracy" is what many readers look for.
- **macro** averages: the unweighted mean over the classes where the value is defined
  (scikit-learn's ``average="macro", zero_division=np.nan``); macro recall is the balanced
  accuracy.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convtrain.errors import ConfigError
from convtrain.inference.run import TrainedRun
from convtrain.ops.losses import log_softmax
from convtrain.training.atomic import atomic_write_bytes
from convtrain.training.metrics import json_safe
from convtrain.visuals.charts import confusion_matrix, render_confusion_matrix

#: the files :func:`write_results` writes, in the order written (metrics.json last: when it is
#: there and new, the others are too)
RESULT_FILES = ("per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "metrics.json")

#: per-class columns of per_class.csv and metrics.json's ``per_class`` records
PER_CLASS_COLUMNS = ("class", "name", "support", "predicted", "correct", "precision", "recall",
                     "f1", "accuracy")

#: the printed report shows the confusion matrix up to this many classes (the files always have it)
MAX_PRINTED_CLASSES = 20


def mean_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits ``(N, K)`` against labels ``(N,)``, in float64."""
    log_probs = log_softmax(np.asarray(logits, dtype=np.float64))
    return float(-log_probs[np.arange(labels.shape[0]), labels].mean())


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator`` as float64, NaN where the denominator is 0."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The scores of a model on one labelled split (see the module docstring for each one).

    Attributes:
        labels, predictions: true and predicted classes ``(N,)`` int64.
        loss: mean softmax cross-entropy.
        class_names: one per class (the dataset's).
        dataset, split: what was evaluated (``digits``, ``test``).
        checkpoint, epoch: the weights used (the file relative to the run directory,
            :attr:`TrainedRun.checkpoint_in_run`) and the epochs they had completed.
        details: anything else for metrics.json (data config, seed, preprocessing).
    """

    labels: np.ndarray
    predictions: np.ndarray
    loss: float
    class_names: tuple[str, ...]
    dataset: str = ""
    split: str = ""
    checkpoint: str = ""
    epoch: int | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return int(self.labels.shape[0])

    @property
    def confusion(self) -> np.ndarray:
        """``(K, K)`` counts, rows = true class, columns = predicted."""
        return confusion_matrix(self.labels, self.predictions, len(self.class_names))

    @property
    def correct(self) -> int:
        return int(np.count_nonzero(self.labels == self.predictions))

    @property
    def accuracy(self) -> float:
        return self.correct / self.num_images

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class arrays ``(K,)``: support, predicted, correct (int64) and precision, recall,
        f1, accuracy (float64, NaN where undefined)."""
        cm = self.confusion
        support, predicted, correct = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm).copy()
        recall = _ratio(correct, support)
        return {"support": support, "predicted": predicted, "correct": correct,
                "precision": _ratio(correct, predicted), "recall": recall,
                "f1": _ratio(2 * correct, support + predicted), "accuracy": recall}

    def macro(self) -> dict[str, float]:
        """Macro averages of precision, recall and f1 over the classes where they are defined."""
        per_class = self.per_class()
        return {name: _nanmean(per_class[name]) for name in ("precision", "recall", "f1")}

    def per_class_records(self) -> list[dict[str, Any]]:
        """One dict per class with the :data:`PER_CLASS_COLUMNS` (undefined values: None)."""
        per_class = self.per_class()
        records = []
        for k, name in enumerate(self.class_names):
            record: dict[str, Any] = {"class": k, "name": name}
            for column in PER_CLASS_COLUMNS[2:]:
                value = per_class[column][k]
                record[column] = (int(value) if column in ("support", "predicted", "correct")
                                  else None if np.isnan(value) else float(value))
            records.append(record)
        return records

    def as_dict(self) -> dict[str, Any]:
        """Everything, as metrics.json holds it."""
        macro = self.macro()
        return {
            "dataset": self.dataset, "split": self.split, "num_images": self.num_images,
            "checkpoint": self.checkpoint, "epoch": self.epoch,
            "loss": self.loss, "accuracy": self.accuracy, "correct": self.correct,
            "macro_precision": macro["precision"], "macro_recall": macro["recall"],
            "macro_f1": macro["f1"],
            **self.details,
            "class_names": list(self.class_names),
            "per_class": self.per_class_records(),
            "confusion_matrix": self.confusion.tolist(),
        }

    def report(self) -> str:
        """The readable summary ``task=eval`` prints: totals, a per-class table and the
        confusion matrix (up to :data:`MAX_PRINTED_CLASSES` classes, else a note)."""
        macro = self.macro()
        lines = [
            f"{self.dataset} {self.split} split: {self.num_images} images; checkpoint "
            f"{self.checkpoint}" + (f" (epoch {self.epoch})" if self.epoch is not None else ""),
            f"loss {self.loss:.4f}   accuracy {self.accuracy:.4f} "
            f"({self.correct}/{self.num_images})",
            f"macro averages: precision {_fmt(macro['precision'])}   recall "
            f"{_fmt(macro['recall'])}   f1 {_fmt(macro['f1'])}",
            "",
            *_per_class_table(self.per_class_records()),
            "(recall = per-class accuracy: the share of the class's images classified correctly;"
            " '-': undefined, no image predicted as / belonging to the class)",
            "",
        ]
        k = len(self.class_names)
        if k <= MAX_PRINTED_CLASSES:
            lines += ["confusion matrix (rows: true class, columns: predicted class):",
                      *_matrix_table(self.confusion)]
        else:
            lines.append(f"confusion matrix: {k} classes, too many to print; see "
                         "confusion_matrix.csv and confusion_matrix.png")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _per_class_table(records: Sequence[dict[str, Any]]) -> list[str]:
    header = ("class", "name", "images", "predicted", "correct", "precision", "recall", "f1")
    rows = [(str(r["class"]), r["name"], str(r["support"]), str(r["predicted"]),
             str(r["correct"]), _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["f1"]))
            for r in records]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    left = {1}  # names are text: left-aligned
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
            for line in (header, *rows)]


def _matrix_table(cm: np.ndarray) -> list[str]:
    k = cm.shape[0]
    width = max(len(str(int(cm.max()))) if cm.size else 1, len(str(k - 1)))
    label = max(len("true"), len(str(k - 1)))
    lines = [" " * label + " | " + " ".join(str(j).rjust(width) for j in range(k))]
    lines.append("-" * label + "-+-" + "-" * ((width + 1) * k - 1))
    lines += [str(i).rjust(label) + " | " + " ".join(str(int(v)).rjust(width) for v in row)
              for i, row in enumerate(cm)]
    return lines


def evaluate(run: TrainedRun, images: Any, labels: Any, *, split: str = "",
             dataset: str = "", batch_size: int = 256,
             details: dict[str, Any] | None = None) -> Evaluation:
    """Score ``run`` on raw images ``(N, C, H, W)`` (pixels as the dataset stores them) with
    integer labels ``(N,)``.

    Args:
        split, dataset: names recorded in the results (``test``, ``digits``).
        batch_size: images per forward pass (the scores do not depend on it beyond float
            rounding; the trainer's ``eval_batch_size`` reproduces its own evaluation exactly).
        details: extra entries for metrics.json.

    Raises:
        ConfigError: no images, images of another shape than the model's, labels that are not
            ``(N,)`` integers in ``[0, K)``.
    """
    y = np.asarray(labels)
    what = " ".join(part for part in (dataset, split) if part) or "the evaluation"
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ConfigError(f"{what}: expected integer labels of shape (N,), got dtype {y.dtype} "
                          f"shape {tuple(y.shape)}")
    if y.shape[0] == 0:
        raise ConfigError(f"{what}: no images to evaluate")
    num_classes = len(run.class_names)
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(y[(y < 0) | (y >= num_classes)][0])
        raise ConfigError(f"{what}: label {bad} is outside the model's {num_classes} classes "
                          f"(0..{num_classes - 1})")
    if np.shape(images)[:1] != y.shape:
        raise ConfigError(f"{what}: {np.shape(images)[0] if np.ndim(images) else 0} images for "
                          f"{y.shape[0]} labels")
    logits = run.logits(images, batch_size=batch_size)
    return Evaluation(labels=y.astype(np.int64), predictions=np.argmax(logits, axis=1),
                      loss=mean_cross_entropy(logits, y), class_names=run.class_names,
                      dataset=dataset, split=split, checkpoint=run.checkpoint_in_run,
                      epoch=run.epoch, details=dict(details or {}))


# --- the files ---

def metrics_json(evaluation: Evaluation) -> str:
    return json.dumps(json_safe(evaluation.as_dict()), indent=2, allow_nan=False) + "\n"


def _csv_text(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def per_class_csv(evaluation: Evaluation) -> str:
    """Header :data:`PER_CLASS_COLUMNS`, one row per class; undefined values are empty."""
    rows: list[Sequence[Any]] = [PER_CLASS_COLUMNS]
    for record in evaluation.per_class_records():
        rows.append(["" if record[c] is None else repr(record[c]) if isinstance(record[c], float)
                     else record[c] for c in PER_CLASS_COLUMNS])
    return _csv_text(rows)


def confusion_matrix_csv(evaluation: Evaluation) -> str:
    """First row: ``true \\ predicted`` then the class names; then one row per true class,
    its name first."""
    names = list(evaluation.class_names)
    rows: list[Sequence[Any]] = [["true \\ predicted", *names]]
    rows += [[name, *map(int, row)] for name, row in zip(names, evaluation.confusion)]
    return _csv_text(rows)


def confusion_matrix_png(evaluation: Evaluation) -> bytes:
    """The confusion matrix as a PNG heat map (:func:`convtrain.visuals.charts.render_confusion_matrix`,
    the drawing TensorBoard's ``classification/confusion_matrix`` shows too)."""
    image = render_confusion_matrix(evaluation.confusion, title=(
        f"{evaluation.dataset} {evaluation.split}: {evaluation.num_images} images, "
        f"accuracy {evaluation.accuracy:.4f}"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_results(evaluation: Evaluation, directory: str | Path) -> list[Path]:
    """Write :data:`RESULT_FILES` into ``directory`` (created if needed), each atomically,
    replacing earlier ones. Returns their paths.

    Raises:
        OSError: a file could not be written (``filename`` names it); the files written before
            it are complete, the others unchanged.
    """
    directory = Path(directory)
    contents = {
        "per_class.csv": lambda: per_class_csv(evaluation).encode(),
        "confusion_matrix.csv": lambda: confusion_matrix_csv(evaluation).encode(),
        "confusion_matrix.png": lambda: confusion_matrix_png(evaluation),
        "metrics.json": lambda: metrics_json(evaluation).encode(),
    }
    for name in RESULT_FILES:
        atomic_write_bytes(directory / name, contents[name]())
    return [directory / name for name in RESULT_FILES]
