"""After training: load a trained run and use it (evaluate, predict, inspect).

:func:`load_run` is the entry point (also ``convtrain.load_run``)::

    run = convtrain.load_run("outputs/2026-12-02/10-00-00-000000")
    run.predict(raw_images)          # (N, C, H, W) pixels as the dataset stores them -> (N,)
    run.predict_proba(raw_images)    # -> (N, num_classes) probabilities
    run.model                        # the trained Model (weights of checkpoints/best)
"""
from __future__ import annotations

from convtrain.inference.run import TrainedRun, load_run, resolve_run_checkpoint

__all__ = ["TrainedRun", "load_run", "resolve_run_checkpoint"]
