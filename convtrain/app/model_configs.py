"""A shipped (or user) model config as a plain mapping, composed as the command line would.

A model file may take shared pieces through its Hydra defaults list (``configs/model/resnet20.yaml``
takes its residual block from ``configs/blocks/basic_residual.yaml``), so reading the YAML file
alone does not give the model: compose it.

>>> import convtrain
>>> spec = convtrain.model_config("resnet20")
>>> model = convtrain.build_model(spec, (1, 28, 28))
"""
from __future__ import annotations

from typing import Any, Iterable

from convtrain.errors import ConfigError


def model_config(name: str, overrides: Iterable[str] = (), config_dir: str | None = None
                 ) -> dict[str, Any]:
    """The ``model`` section of ``convtrain model=NAME [overrides]`` as plain dicts and lists.

    Args:
        name: a model of the config directory's ``model`` group (``resnet20``, ``small_cnn``...).
        overrides: command-line overrides, e.g. ``["model.layers.conv1.filters=8"]``.
        config_dir: the config tree (default: the shipped configs).

    Raises:
        ConfigError: an unknown model or a bad override, in one line.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from convtrain.app.cli import config_dir as shipped_config_dir
    from convtrain.app.hydra_errors import config_error_line
    from convtrain.app.schema import register_configs

    register_configs()
    outer = GlobalHydra.instance().hydra  # a caller inside a Hydra app: compose beside it
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir or shipped_config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=[f"model={name}", *overrides])
        return OmegaConf.to_container(cfg.model, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(config_error_line(exc) or f"model={name}: {exc}") from None
    finally:
        GlobalHydra.instance().hydra = outer
