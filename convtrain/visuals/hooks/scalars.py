"""The run's numbers per epoch: loss and accuracy of each split, lr, time and speed.

Tags (step = epochs completed): ``train/loss``, ``train/accuracy``, ``val/…``, ``test/…``
(a split without data has no points), ``lr``, ``epoch_time_s``, ``images_per_s``; and
``train/loss_step`` every ``trainer.log_every_n_steps`` training batches (step = global step).
"""
from __future__ import annotations

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook

#: TensorBoard tag -> metrics.json key
_EPOCH_TAGS = {"train/loss": "train_loss", "train/accuracy": "train_accuracy",
               "val/loss": "val_loss", "val/accuracy": "val_accuracy",
               "test/loss": "test_loss", "test/accuracy": "test_accuracy"}


class Scalars(VisualHook):
    def on_train_batch_end(self, state: TrainState) -> None:
        every = self.ctx.log_every_n_steps
        if every and state.global_step % every == 0:
            self.ctx.writer.add_scalar("train/loss_step", state.batch_loss, state.global_step)

    def on_epoch_end(self, state: TrainState) -> None:
        writer, step, metrics = self.ctx.writer, state.step, state.metrics
        for tag, key in _EPOCH_TAGS.items():
            if metrics[key] is not None:
                writer.add_scalar(tag, metrics[key], step)
        writer.add_scalar("lr", state.lr, step)
        writer.add_scalar("epoch_time_s", state.epoch_time_s, step)
        images = state.running.count
        writer.add_scalar("images_per_s",
                          images / state.epoch_train_s if state.epoch_train_s > 0 else 0.0, step)
