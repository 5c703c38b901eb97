"""One-line messages (with "did you mean") for config mistakes that Hydra or OmegaConf catch.

Hydra reports composition errors itself (``hydra._internal.utils.run_and_report``): several
lines, an OmegaConf dump (``object_type=...``) and no hint for typos. :func:`friendly_errors`
wraps that reporter for the duration of one CLI call: a config mistake becomes
``convtrain: error: optimizer.lrr: unknown key; did you mean 'optimizer.lr'?`` on stderr and
exit status 2 (like every other :class:`~convtrain.errors.ConfigError`); anything else, and
everything under ``HYDRA_FULL_ERROR=1``, still goes through Hydra's own reporter.

The hook is the one private Hydra name convtrain touches; pyproject pins hydra-core to 1.3.x
and tests/app/test_schema.py fails if the name disappears.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from convtrain.app import sweep
from convtrain.app.yaml_errors import yaml_error_line
from convtrain.validate import did_you_mean

#: groups whose options come from pip-installed Hydra plugins.
_PLUGIN_GROUPS = {"hydra/sweeper": "hydra-optuna-sweeper",
                  "hydra/launcher": "hydra-joblib-launcher / hydra-submitit-launcher"}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _append_hint(exc: Exception) -> str | None:
    """The ``+key=value`` Hydra suggests ("To append to your config use +a.b=1")."""
    match = re.search(r"use (\+.+)$", str(exc), re.MULTILINE)
    return match.group(1) if match else None


def _layer_key_message(full_key: str, key: str, layer: DictConfig, exc: Exception) -> str | None:
    """A key missing from one layer's mapping: valid for its type (needs ``+``) or a typo."""
    from convtrain.nn import LAYERS  # noqa: PLC0415 - only on this error path
    from convtrain.nn.layer_types import accepted_keys, unknown_key  # noqa: PLC0415

    layer_type = layer.get("type") if "type" in layer else None
    if not isinstance(layer_type, str) or layer_type not in LAYERS:
        return None
    layer_cls = LAYERS.get(layer_type)
    if key in accepted_keys(layer_cls):
        add = _append_hint(exc) or f"+{full_key}=..."
        return (f"{full_key}: not set in this model's config, but '{layer_type}' layers accept "
                f"it: add it with {add}")
    return unknown_key(full_key.rsplit(".", 1)[0], layer_cls, key)


def _unknown_key_message(cause: OmegaConfBaseException, exc: Exception) -> str:
    full_key = str(cause.full_key)
    key = str(cause.key)
    parent = cause.parent_node
    prefix = full_key[: len(full_key) - len(key)]  # "optimizer." (empty at the top level)
    if isinstance(parent, DictConfig):
        if (re.fullmatch(r"model\.layers\..+\.block[1-9][0-9]*", full_key)
                and "block" in parent):
            # the expanded layers of a block instance are not keys of the YAML (yet)
            instance = full_key[len("model.layers."):].rsplit(".", 1)[0]
            add = _append_hint(exc) or f"+{full_key}.<layer>.<key>=..."
            return (f"{full_key}: the layers of block instance '{instance}' exist only once it "
                    f"is expanded, so setting one needs a '+': {add}")
        if re.fullmatch(r"model\.layers\.[^.]+\.[^.]+", full_key):
            message = _layer_key_message(full_key, key, parent, exc)
            if message:
                return message
        # `hydra` sits next to the top-level keys but is not for overriding by mistake
        valid = [str(k) for k in parent.keys() if prefix or k != "hydra"]
        if full_key == f"model.layers.{key}":
            return (f"{full_key}: no layer '{key}' in this model{did_you_mean(key, valid, prefix)} "
                    f"(layers: {', '.join(valid)}); to add one use "
                    f"+{full_key}={{type: ..., after: <layer>}}")
        message = f"{full_key}: unknown key{did_you_mean(key, valid, prefix)}"
        if valid:
            message += f" (valid keys: {', '.join(valid)})"
        if not dataclasses.is_dataclass(OmegaConf.get_type(parent)):
            # a free-form mapping (not a schema): new keys are allowed with `+`
            message += f"; to add it use {_append_hint(exc) or '+' + full_key + '=...'}"
        return message
    return f"{full_key}: unknown key"


def _missing_option_message(exc: MissingConfigException) -> str:
    group, _, name = str(exc.missing_cfg_file or "").rpartition("/")
    options = list(exc.options or [])
    if not group or exc.options is None:
        return _first_line(str(exc))
    message = (f"{group}={name}: no option '{name}' in config group "
               f"'{group}' (options: {', '.join(options) or 'none'}){did_you_mean(name, options)}")
    if group in _PLUGIN_GROUPS:
        message += f"; more come with pip install 'convtrain[sweep]' ({_PLUGIN_GROUPS[group]})"
    return message


def _config_file_read_by(exc: BaseException) -> str | None:
    """The config file Hydra was reading when ``exc`` came up: the ``full_path`` of its
    ``FileConfigSource.load_config`` frame, None when ``exc`` came from elsewhere."""
    tb, path = exc.__traceback__, None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "load_config" and "file_config_source" in \
                frame.f_code.co_filename and isinstance(frame.f_locals.get("full_path"), str):
            path = frame.f_locals["full_path"]
        tb = tb.tb_next
    return path


def _unreadable_file_message(exc: BaseException) -> str | None:
    """A config file that is not UTF-8 text, cannot be read, or whose YAML is a lone number
    or string instead of a mapping; None for any other error."""
    path = _config_file_read_by(exc)
    if path is None:
        return None
    if isinstance(exc, UnicodeDecodeError):
        try:  # the error's offset counts from the decoded chunk: find it in the whole file
            raw = Path(path).read_bytes()
            raw.decode("utf-8")
        except UnicodeDecodeError as whole:
            line = raw.count(b"\n", 0, whole.start) + 1
            column = whole.start - (raw.rfind(b"\n", 0, whole.start) + 1) + 1
            return (f"{path}, line {line}, column {column}: not UTF-8 text (byte "
                    f"0x{raw[whole.start]:02x}); config files are UTF-8 YAML")
        except OSError:
            pass
        return f"{path}: not UTF-8 text; config files are UTF-8 YAML"
    if isinstance(exc, OSError):
        if str(exc).startswith("Invalid loaded object type"):
            return f"{path}: a config file must hold a YAML mapping ({exc})"
        return f"{path}: cannot be read ({exc.strerror or exc})"
    return None


def explain(exc: BaseException) -> str | None:
    """One line describing a config mistake, or None when ``exc`` is not one (a bug, I/O)."""
    if isinstance(exc, yaml.YAMLError):
        return yaml_error_line(exc)
    if isinstance(exc, MissingConfigException):
        return _missing_option_message(exc)
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override: {_first_line(str(exc))} (syntax: " \
               "https://hydra.cc/docs/advanced/override_grammar/basic/)"
    cause = exc.__cause__ if isinstance(exc, HydraException) else exc
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.key is not None \
                and "not in" in str(cause.msg):
            return _unknown_key_message(cause, exc)
        return f"{cause.full_key}: {_first_line(str(cause.msg))}"
    if isinstance(exc, HydraException):
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        if isinstance(cause, OmegaConfBaseException):
            lines.append(_first_line(str(cause.msg)))
        return " ".join(lines) or type(exc).__name__
    if isinstance(exc, OmegaConfBaseException):
        return _first_line(str(exc))
    return None


def config_error_line(exc: BaseException) -> str | None:
    """The one line of a config mistake caught by Hydra, OmegaConf or PyYAML (a bad
    override, a broken or unreadable config file), None for anything else (a bug)."""
    if isinstance(exc, (HydraException, OmegaConfBaseException, yaml.YAMLError)):
        return explain(exc)
    return _unreadable_file_message(exc)


def print_error(message: str) -> None:
    print(f"convtrain: error: {message}", file=sys.stderr)


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Route Hydra's error reporting through :func:`explain` while the block runs."""
    from hydra._internal import utils as hydra_utils  # noqa: PLC0415

    original: Callable[[Any], Any] | None = getattr(hydra_utils, "run_and_report", None)
    if original is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 - sorted below; the rest goes to Hydra
            sweep.exit_if_interrupted()  # a launcher failing on the way out of an interrupt
            message = config_error_line(exc)
            if message is not None:
                print_error(message)
                sys.exit(2)
            if sweep.failed_jobs():
                # e.g. Optuna's "No trials are completed yet": the failed jobs are the cause,
                # and the CLI lists them next
                print_error(f"the sweep stopped: {type(exc).__name__}: {exc}")
                sys.exit(1)

            def reraise(error: BaseException = exc) -> None:
                raise error  # bound now: `exc` itself is unbound when the except block ends
            return original(reraise)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


__all__ = ["config_error_line", "explain", "did_you_mean", "friendly_errors", "print_error"]
