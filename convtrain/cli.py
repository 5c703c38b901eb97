"""The ``convtrain`` command: a Hydra app that composes ``configs/train.yaml`` and trains.

``convtrain task=summary`` prints the model table without training. Errors a user can cause
(bad values, impossible shapes, missing data files) are printed as one line naming the key,
without a traceback; ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from convtrain.config import register_configs
from convtrain.errors import ConfigError

log = logging.getLogger("convtrain")


def config_dir() -> str:
    """Absolute path of the shipped configs: inside the installed package, else the repo's."""
    package_configs = Path(__file__).resolve().parent / "configs"
    if (package_configs / "train.yaml").is_file():
        return str(package_configs)
    return str(Path(__file__).resolve().parent.parent / "configs")


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _in_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _app(cfg: DictConfig) -> float | None:
    from convtrain.run import run  # noqa: PLC0415 - keeps `convtrain --help` fast

    try:
        return run(cfg, run_dir=_run_dir())
    except ConfigError as exc:
        log.error("%s", exc)
        if _in_multirun() or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # a sweep records the failed job and goes on; HYDRA_FULL_ERROR wants the trace
        print(f"convtrain: error: {exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console-script entry point."""
    _app()


if __name__ == "__main__":
    main()
