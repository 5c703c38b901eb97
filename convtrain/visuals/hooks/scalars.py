"""The run's numbers: loss and accuracy of each split, the best epoch so far, lr, time and speed.

TensorBoard overlays runs, not tags, so each split writes to its own run (a child directory of
the run's event directory, see :mod:`convtrain.visuals.run_logger`) under the same tags; the
groups (the part before ``/``; TensorBoard sorts them by name, so ``epoch`` comes first) keep
different x axes and kinds apart (x = epochs completed unless said otherwise):

- ``epoch/loss``, ``epoch/accuracy`` in the runs ``train``, ``val``, ``test``: the split's mean
  loss and accuracy (metrics.json ``<split>_loss``, ``<split>_accuracy``): one chart each,
  a curve per split;
- ``step/loss`` in ``train``: the batch's loss every ``trainer.log_every_n_steps`` batches
  (x = batches done);
- ``monitor/best_<monitor>``, ``monitor/best_epoch``, ``monitor/best_val_accuracy``,
  ``monitor/best_test_accuracy`` in the run itself: the best value of ``trainer.monitor`` so
  far, its epoch and the accuracies at that epoch (metrics.json ``best_*``);
- ``optimizer/lr``; ``performance/epoch_time_s``, ``performance/images_per_s`` (training
  images per second) in the run itself.

A split without data writes nothing. ``metrics.json`` keeps its own keys
(:mod:`convtrain.training.metrics`).
"""
from __future__ import annotations

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook

#: the runs of the splits (TensorBoard run names: <run name>/<split>)
SPLITS = ("train", "val", "test")
#: tag -> metrics.json key suffix of each split's epoch scalars
EPOCH_TAGS = {"epoch/loss": "loss", "epoch/accuracy": "accuracy"}
STEP_LOSS_TAG = "step/loss"


def best_tags(monitor: str) -> list[str]:
    """The ``monitor/*`` tags for ``trainer.monitor = monitor``: the best value of the
    monitored metric first (named like metrics.json's keys)."""
    tags = [f"monitor/best_{monitor}", "monitor/best_epoch"]
    return tags + [t for t in ("monitor/best_val_accuracy", "monitor/best_test_accuracy")
                   if t not in tags]


class Scalars(VisualHook):
    def on_train_batch_end(self, state: TrainState) -> None:
        every = self.ctx.log_every_n_steps
        if every and state.global_step % every == 0:
            self.ctx.writer.child("train").add_scalar(STEP_LOSS_TAG, state.batch_loss,
                                                      state.global_step)

    def on_epoch_end(self, state: TrainState) -> None:
        writer, step, metrics = self.ctx.writer, state.step, state.metrics
        for split in SPLITS:
            values = {tag: metrics[f"{split}_{suffix}"] for tag, suffix in EPOCH_TAGS.items()
                      if metrics.get(f"{split}_{suffix}") is not None}
            if values:  # a split without data gets no run directory
                writer.child(split).add_scalars(values, step)
        values = {}
        best = state.best
        if best.epoch is not None:
            best_values = {f"monitor/best_{state.monitor}": best.value,
                           "monitor/best_epoch": best.epoch,
                           "monitor/best_val_accuracy": best.val_accuracy,
                           "monitor/best_test_accuracy": best.test_accuracy}
            values.update({tag: best_values[tag] for tag in best_tags(state.monitor)
                           if best_values.get(tag) is not None})
        values["optimizer/lr"] = state.lr
        values["performance/epoch_time_s"] = state.epoch_time_s
        values["performance/images_per_s"] = (state.running.count / state.epoch_train_s
                                              if state.epoch_train_s > 0 else 0.0)
        writer.add_scalars(values, step)
