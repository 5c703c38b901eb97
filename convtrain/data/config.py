"""Validation of the ``data:`` config group.

The mapping mirrors ``configs/data/*.yaml``::

    name: digits          # registry name (digits, mnist, fashion_mnist, cifar10)
    val_fraction: 0.1     # share of the training set held out for validation, in [0, 1)
    normalize: true       # per-channel mean/std from the training split
    root: null            # directory holding this dataset's files (see convtrain.data.paths)
    download: false       # fetch missing files from the official URLs (or `mirror`)
    subset: null          # keep only N stratified training samples (before the val split)
    mirror: null          # base URL replacing the official download locations
    augment: null         # {random_crop: 4, horizontal_flip: true}; used by the loader
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from convtrain import validate
from convtrain.data.augment import AugmentSpec, parse_augment
from convtrain.errors import ConfigError

_URL_SCHEMES = ("http://", "https://", "file://")


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """A validated ``data:`` config (see the module docstring for the meaning of each key)."""

    name: str = "digits"
    val_fraction: float = 0.1
    normalize: bool = True
    root: str | None = None
    download: bool = False
    subset: int | None = None
    mirror: str | None = None
    augment: AugmentSpec | None = None


_KNOWN_KEYS = tuple(f.name for f in dataclasses.fields(DataOptions))


def to_plain_mapping(cfg: Any, where: str = "data") -> dict[str, Any]:
    """Turn an OmegaConf ``DictConfig`` (or any mapping) into a plain ``dict``."""
    if cfg is None:
        return {}
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # noqa: PLC0415 - only needed for DictConfig input

        cfg = OmegaConf.to_container(cfg, resolve=True)
    return validate.mapping(where, cfg, expected="a mapping of data options")


def parse_data_config(cfg: Any) -> DataOptions:
    """Validate ``cfg`` and fill defaults.

    Raises:
        ConfigError: naming ``data.<key>`` and the offending value.
    """
    raw = to_plain_mapping(cfg)
    for key in raw:
        if key not in _KNOWN_KEYS:
            raise ConfigError(
                f"data.{key}: unknown key (known keys: {', '.join(_KNOWN_KEYS)})"
                f"{validate.did_you_mean(key, _KNOWN_KEYS, 'data.')}"
            )
    # Missing keys take the dataclass defaults, so `{name: mnist}` alone is a valid config.
    merged = {**dataclasses.asdict(DataOptions()), **raw}

    name = merged["name"]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"data.name: expected a dataset name, got {name!r}")

    val_fraction = validate.real(
        "data.val_fraction", merged["val_fraction"], low=0.0, high=1.0, high_open=True,
        expected="a number in [0, 1) (0 disables validation)",
    )
    subset = merged["subset"]
    if subset is not None:
        subset = validate.integer("data.subset", subset, low=1,
                                  expected="a positive number of samples or null")

    root = merged["root"]
    if root is not None and (not isinstance(root, (str, os.PathLike)) or not str(root)):
        raise ConfigError(f"data.root: expected a directory path or null, got {root!r}")

    mirror = merged["mirror"]
    if mirror is not None:
        if not isinstance(mirror, str) or not mirror.startswith(_URL_SCHEMES):
            raise ConfigError(
                f"data.mirror: expected a base URL starting with {', '.join(_URL_SCHEMES)} "
                f"or null, got {mirror!r}"
            )
        mirror = mirror if mirror.endswith("/") else mirror + "/"

    return DataOptions(
        name=name,
        val_fraction=val_fraction,
        normalize=validate.boolean("data.normalize", merged["normalize"]),
        root=None if root is None else os.path.expanduser(str(root)),
        download=validate.boolean("data.download", merged["download"]),
        subset=subset,
        mirror=mirror,
        augment=parse_augment(merged["augment"], "data.augment"),
    )

