"""The training loop, checkpoints and run metrics (see :mod:`convtrain.training.trainer`)."""
from convtrain.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from convtrain.training.metrics import METRIC_KEYS
from convtrain.training.trainer import MONITORS, Trainer, TrainingDiverged

__all__ = ["Checkpoint", "METRIC_KEYS", "MONITORS", "Trainer", "TrainingDiverged",
           "load_checkpoint", "save_checkpoint"]
