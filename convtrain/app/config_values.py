"""Reading values out of the composed config the way every task does.

The schema declares choices as enums (``task``, ``eval.split``, ``export.format``, ...), which
OmegaConf hands back as enum members; the tasks want their names.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def config_name(value: Any) -> Any:
    """An enum member of the schema -> its value (``Task.eval`` -> ``"eval"``); anything else
    as it is (a plain string, a number, None)."""
    return getattr(value, "value", value)


def section_setting(cfg: DictConfig, section: str, key: str) -> Any:
    """``cfg.<section>.<key>``, an enum as its name (``section_setting(cfg, "export",
    "format")`` -> ``"onnx"``)."""
    return config_name(cfg[section][key])
