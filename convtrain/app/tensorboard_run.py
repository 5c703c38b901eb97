"""How a run presents itself in TensorBoard: its run name, its command line and the
hyperparameters that set it apart, read from Hydra's record of the overrides.

- **Differing keys**: in a ``-m`` sweep, the keys the sweep varies (the sweep overrides of
  ``<sweep dir>/multirun.yaml``, which Hydra's basic sweeper writes before the jobs start, plus
  ``hydra.sweeper.params``, where Optuna's search space lives); every job of the sweep finds
  the same ones. In a single run, the keys set on its command line.
- **Run name** (the directory under ``<run>/tensorboard/``): ``key=value`` of the job's
  differing overrides, joined by ``,`` (``optimizer.lr=0.01,seed=2``); ``defaults`` when there
  are none.
- **Columns** of the HParams table: a sweep's differing keys only (constant keys would push
  them out of the 5 columns TensorBoard shows); a single run's overrides, then
  :data:`IDENTIFYING_KEYS`.

Overrides that do not describe the model or its training (:data:`NOT_HYPERPARAMETERS`) are left
out everywhere, and a config group override (``model=lenet5``) stands for its ``<group>.name``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger("convtrain")

#: keys never named in a run name or listed as a differing hyperparameter
NOT_HYPERPARAMETERS = ("trainer.resume", "trainer.progress", "overwrite_run_dir", "task")
#: the columns a single run shows after its overrides (TensorBoard shows the first 5)
IDENTIFYING_KEYS = ("model.name", "data.name", "optimizer.name", "optimizer.lr", "seed",
                    "trainer.max_epochs", "trainer.batch_size")
#: a run name longer than this (bytes) is cut and ends in a hash of the whole
MAX_NAME_BYTES = 160
DEFAULT_NAME = "defaults"


@dataclasses.dataclass(frozen=True)
class RunIdentity:
    name: str
    command: str
    columns: tuple[str, ...]
    differing: tuple[str, ...]


def _parse(overrides: Iterable[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415

    return OverridesParser.create().parse_overrides(list(overrides))


def _is_hyperparameter(key: str) -> bool:
    return not (key.startswith("hydra.") or key.startswith("hydra/")
                or key in NOT_HYPERPARAMETERS)


def config_key(override_key: str, flat: Mapping[str, Any]) -> list[str]:
    """The flattened config keys an override key stands for: itself, a group's
    ``<group>.name``, or every key below it (``model.layers.conv1``)."""
    if override_key in flat:
        return [override_key]
    if f"{override_key}.name" in flat:
        return [f"{override_key}.name"]
    prefix = override_key + "."
    return [k for k in flat if k.startswith(prefix)]


def safe_name(text: str) -> str:
    """``text`` as one directory name: ``/`` becomes ``%2F`` (``%`` is ``%25``); longer than
    :data:`MAX_NAME_BYTES` bytes: cut, then ``~`` and 8 hex digits of its SHA-1."""
    name = text.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if name in (".", ".."):
        name = name.replace(".", "%2E")
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        cut = name.encode()[:MAX_NAME_BYTES - 9].decode(errors="ignore")
        name = f"{cut}~{digest}"
    return name


def _swept_keys(hydra_cfg: Any) -> list[str]:
    """The keys a ``-m`` sweep varies (see the module docstring); [] if none are found."""
    keys: list[str] = []
    sweep_file = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    if sweep_file.is_file():
        from omegaconf import OmegaConf  # noqa: PLC0415

        try:
            task = OmegaConf.load(sweep_file).hydra.overrides.task
            keys += [o.key_or_group for o in _parse(task) if o.is_sweep_override()]
        except Exception as exc:  # noqa: BLE001 - a name is not worth failing the run for
            log.warning("cannot read the sweep's overrides from %s: %s", sweep_file, exc)
    params = getattr(hydra_cfg.sweeper, "params", None)
    keys += [str(k) for k in (params or {})]
    return list(dict.fromkeys(keys))


def run_identity(flat: Mapping[str, Any]) -> RunIdentity | None:
    """The identity of the Hydra job in progress (None outside Hydra). ``flat``: the run's
    flattened config (the HParams values)."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415
    from hydra.types import RunMode  # noqa: PLC0415

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    task = list(hydra_cfg.overrides.task)
    parsed = [o for o in _parse(task) if _is_hyperparameter(o.key_or_group)]
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    own = {o.key_or_group: o for o in parsed}
    differing_overrides = list(own)
    command = "convtrain " + " ".join(task)
    if in_sweep:
        swept = [k for k in _swept_keys(hydra_cfg) if _is_hyperparameter(k)]
        if swept:
            differing_overrides = [k for k in own if k in swept] + \
                [k for k in swept if k not in own]
        sweep_file = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
        command += f"    (job {hydra_cfg.job.num} of the sweep in {sweep_file.parent})"
    name = ",".join(f"{k}={own[k].get_value_element_as_str()}"
                    for k in differing_overrides if k in own) or DEFAULT_NAME
    differing = [key for k in differing_overrides for key in config_key(k, flat)]
    columns = list(dict.fromkeys(
        differing if in_sweep and differing else
        differing + [k for k in IDENTIFYING_KEYS if k in flat]))
    return RunIdentity(name=safe_name(name), command=command, columns=tuple(columns),
                       differing=tuple(dict.fromkeys(differing)))
