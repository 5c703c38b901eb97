"""The shipped model configs as the command line composes them (``model=NAME``), for tests.

A model file may take shared pieces through its Hydra defaults list (resnet20's residual block
lives in configs/blocks/), so tests compose it instead of reading the YAML; each model is
composed once per test process and handed out as a fresh copy.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

from convtrain.app.model_configs import model_config

SHIPPED_MODELS = sorted(path.stem for path in
                        (Path(__file__).resolve().parents[1] / "configs" / "model").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _composed(name: str) -> dict:
    return model_config(name)


def shipped_config(name: str) -> dict:
    """``model=NAME``'s section (a fresh copy: callers may change it)."""
    return copy.deepcopy(_composed(name))
