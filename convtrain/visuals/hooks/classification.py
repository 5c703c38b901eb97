"""``predictions/*``: what the network gets wrong, on the validation split (the test split when
there is no validation data), at the visual period and the final epoch.

- ``predictions/confusion_matrix``: the counts, rows = true class, columns = predicted, each
  cell coloured by its share of the row (the drawing ``task=eval`` writes too,
  :func:`convtrain.visuals.charts.render_confusion_matrix`);
- ``predictions/per_class_accuracy``: one bar per class (share of its images classified
  correctly) on a fixed scale, with its image count;
- ``predictions/misclassified``: up to ``logger.misclassified_images`` wrongly classified
  images, the most confident mistakes first, each captioned with its true class (black) and the
  prediction with its probability (red).

PNG copies: ``<run>/images/predictions/<view>_epoch<NNN>.png``. Not at step 0 (an untrained
network's predictions say nothing). The predictions are the logits of the epoch's own
evaluation (``state.eval_logits``, kept for this visual), so a record costs no forward pass
during training, only three PNGs (``task=inspect`` runs its own forward pass): ~12 ms on the
default digits run, every 15 epochs by default (half-way and at the end of the default 30
epochs: issue #11's budget for logging).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from convtrain import validate
from convtrain.training.hooks import TrainState
from convtrain.visuals.charts import (confusion_matrix, render_confusion_matrix,
                                      render_labelled_grid, render_message,
                                      render_per_class_bars)
from convtrain.visuals.hook import Option, VisualHook, period_option


def predictions_split(data: Any) -> tuple[str, Any] | None:
    """``("val", split)``, else ``("test", split)``; None when both are empty."""
    for name in ("val", "test"):
        split = getattr(data, name)
        if len(split) > 0:
            return name, split
    return None


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Classification(VisualHook):
    place = 25
    period = period_option("classification_every_n_epochs",
                           "predictions/{confusion_matrix,per_class_accuracy,misclassified} "
                           "on the val split", default=15)
    options = (Option("misclassified_images", 16, int,
                      lambda key, v: validate.non_negative_int(key, v),
                      "images in predictions/misclassified (most confident mistakes first)"),)

    def wants_eval_logits(self, state: TrainState) -> tuple[str, ...]:
        """The split :meth:`log` reads, at the epochs it is due."""
        found = predictions_split(state.data)
        if (found is None or not self.ctx.pictures_wanted
                or not self.due(state.step, state.max_epochs)):
            return ()
        return (found[0],)

    def on_fit_start(self, state: TrainState) -> None:
        pass  # no step 0: see the module docstring

    def log(self, state: TrainState, step: int) -> None:
        found = predictions_split(state.data)
        if not self.ctx.pictures_wanted or found is None:
            return
        split_name, split = found
        logits = state.eval_logits.get(split_name)
        if logits is None or len(logits) != len(split):  # task=inspect: no evaluation ran
            logits = self._logits(state, split)
        probabilities = softmax_rows(logits)
        labels = np.asarray(split.y, dtype=np.int64)
        predictions = probabilities.argmax(axis=1)
        k = int(state.data.num_classes)
        names = tuple(getattr(state.data, "class_names", None) or map(str, range(k)))
        cm = confusion_matrix(labels, predictions, k)
        accuracy = float(np.trace(cm)) / len(labels)
        where = f"{split_name}, epoch {step}"
        self._write("confusion_matrix", render_confusion_matrix(cm, title=(
            f"{where}: {len(labels)} images, accuracy {accuracy:.4f}")), step)
        support = cm.sum(axis=1)
        per_class = np.full(k, np.nan)
        np.divide(np.diag(cm), support, out=per_class, where=support > 0)
        self._write("per_class_accuracy", render_per_class_bars(
            per_class, support, names, title=f"accuracy per class ({where})"), step)
        self._write("misclassified", self._mistakes(split, labels, predictions, probabilities,
                                                    names, where), step)

    def _mistakes(self, split: Any, labels: np.ndarray, predictions: np.ndarray,
                  probabilities: np.ndarray, names: tuple[str, ...], where: str) -> Any:
        wrong = np.flatnonzero(predictions != labels)
        limit = int(self.ctx.settings.misclassified_images)
        if wrong.size == 0 or limit == 0:
            return render_message(f"no misclassified images ({where})" if wrong.size == 0
                                  else "logger.misclassified_images=0")
        confidence = probabilities[wrong, predictions[wrong]]
        chosen = wrong[np.argsort(-confidence, kind="stable")[:limit]]
        captions = [(f"true: {names[labels[i]]}",
                     f"pred: {names[predictions[i]]} ({probabilities[i, predictions[i]]:.2f})")
                    for i in chosen]
        return render_labelled_grid(np.asarray(split.x[chosen]), captions)

    def _write(self, view: str, image: Any, step: int) -> None:
        self.ctx.write_image("predictions", view, np.asarray(image.convert("RGB")), step)

    @staticmethod
    def _logits(state: TrainState, split: Any) -> np.ndarray:
        """The model's logits (eval mode) for the split's images, host ``(N, K)``."""
        batch = 4 * int(state.batch_size)
        return np.concatenate([
            np.array(state.backend.to_numpy(state.model.forward(split.x[i:i + batch],
                                                                 training=False)), copy=True)
            for i in range(0, len(split), batch)])
