"""Check a composed config completely before any data is read.

Hydra's schema catches wrong types and unknown keys at composition time, but ``+key=value``
deliberately gets past it, and ranges (``optimizer.lr > 0``, ``model.layers.drop1.p < 1``) and
per-layer keys are the registries' business. :func:`check` runs all of those checks (and builds
the model, the optimizer and the schedule, which is what checks every layer against its
registered class) in well under a second, so a mistake in a long run or a sweep fails at once
with one message naming the full key, instead of after the dataset has been loaded.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Any, Mapping

import numpy as np
from omegaconf import DictConfig, OmegaConf

from convtrain import validate
from convtrain.runtime.backend import Backend, get_backend
from convtrain.errors import ConfigError
from convtrain.validate import did_you_mean

log = logging.getLogger("convtrain")


@dataclasses.dataclass
class Plan:
    """The checked settings of one run (everything :func:`convtrain.app.run.run` needs)."""

    task: str
    seed: int
    backend: Backend
    dtype: np.dtype
    data: dict[str, Any]  # the data: mapping without `augment` (the loader applies that)
    augment: Any
    trainer: dict[str, Any]
    engine: dict[str, Any]  # checked engine settings, applied by :func:`apply_engine_settings`
    input_shape: tuple[int, ...] | None  # None: only known once the data is loaded


@dataclasses.dataclass
class Components:
    model: Any
    optimizer: Any
    schedule: Any


def _value(v: Any) -> Any:
    return v.value if isinstance(v, enum.Enum) else v


def check_schema_keys(node: Any, path: str = "") -> None:
    """Reject keys that ``+key=value`` added to a node typed by a dataclass schema.

    Walks typed nodes only. ``optimizer`` and ``scheduler`` are typed by the schema of the
    chosen option (derived from the settings declared in :mod:`convtrain.optim`), so they are
    checked here too; ``model.layers.*`` is free-form and checked by :func:`check_layers`.
    """
    if not isinstance(node, DictConfig):
        return
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in node.keys():
        full = f"{path}{key}"
        if key == "hydra" and not path:
            continue  # present when composed with return_hydra_config=True
        if key not in fields:
            raise ConfigError(f"{full}: unknown key{did_you_mean(str(key), fields, path)} "
                              f"(valid keys: {', '.join(fields)})")
        if not OmegaConf.is_missing(node, key):
            check_schema_keys(node[key], f"{full}.")


def check_layers(model_cfg: Any) -> None:
    """Every layer against its registered class: known ``type``, known keys, valid anchors, and
    the graph (``inputs``, blocks, one output, no cycle: :func:`convtrain.nn.graph.expand_graph`).

    This part needs no input shape, so it also runs first for datasets whose shape is only known
    once loaded; values and shapes are checked when the model is built (:func:`build`).
    """
    from convtrain.nn.graph import check_inputs_fit, expand_graph  # noqa: PLC0415
    from convtrain.nn.layer_types import check_layer_keys  # noqa: PLC0415

    def plain(node: Any) -> Any:
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node

    graph = expand_graph(plain(model_cfg.layers), plain(model_cfg.get("blocks")))
    for name, spec in graph.specs.items():
        layer_cls = check_layer_keys(f"model.layers.{name}", spec)
        check_inputs_fit(f"model.layers.{name}", layer_cls, graph.inputs[name])


def check_trainer(t: Mapping[str, Any]) -> dict[str, Any]:
    """The ``trainer:`` settings as Trainer keyword arguments, checked by the Trainer's own
    option checks (:func:`convtrain.training.options.check_trainer_options`)."""
    from convtrain.training.options import check_trainer_options  # noqa: PLC0415

    return check_trainer_options(t)


def check_engine(e: Mapping[str, Any]) -> dict[str, Any]:
    """The ``engine:`` settings, checked (``engine.num_threads`` >= 1, workspace > 0 or null)."""
    from convtrain.runtime.workspace import check_workspace_mb  # noqa: PLC0415

    return {
        "max_workspace_mb": check_workspace_mb(e.get("max_workspace_mb"), "engine.max_workspace_mb"),
        "num_threads": validate.positive_int("engine.num_threads", e.get("num_threads")),
        "keep_freed_memory": validate.boolean("engine.keep_freed_memory", e.get("keep_freed_memory")),
        "pin_threads": validate.boolean("engine.pin_threads", e.get("pin_threads", True)),
    }


def apply_engine_settings(settings: Mapping[str, Any]) -> None:
    """Make the checked ``engine:`` settings current for this process (once per run)."""
    from convtrain import runtime  # noqa: PLC0415

    runtime.set_max_workspace_mb(settings["max_workspace_mb"])
    runtime.set_num_threads(settings["num_threads"])
    runtime.set_pin_threads(settings["pin_threads"])
    if settings["keep_freed_memory"]:
        runtime.keep_freed_memory()


def check_overrides(overrides: list[str]) -> None:
    """Reject overrides that Hydra accepts but that would do nothing.

    ``model.layers={}`` merges an empty mapping into the model's layers, i.e. changes nothing;
    a user who wrote it meant to clear or replace them.
    """
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+") in ("model.layers", "model") and value.strip() in ("{}", ""):
            raise ConfigError(
                f"{key.lstrip('+')}: '{override}' merges an empty mapping and changes nothing; "
                "remove a layer with '~model.layers.NAME' (or model.layers.NAME=null), or choose "
                "another model with model=NAME / a model config of your own")


def check_logger_and_resume(cfg: DictConfig, resume: Any) -> None:
    """``logger.*`` values and that ``trainer.resume`` points at a checkpoint, before the data
    is loaded (the Trainer checks them again; here they fail in a second, not after loading)."""
    from convtrain.training.checkpoint import load_checkpoint  # noqa: PLC0415
    from convtrain.visuals.settings import parse_logger_settings  # noqa: PLC0415

    parse_logger_settings(OmegaConf.to_container(cfg.logger, resolve=True))
    if resume is not None:
        try:
            load_checkpoint(str(resume))  # found, readable, and its content checked
        except ConfigError as exc:
            raise ConfigError(f"trainer.resume: {exc}") from None


def check(cfg: DictConfig) -> Plan:
    """Check everything that does not need the data; raise ConfigError naming the key."""
    from convtrain.data import DATASETS, parse_data_config  # noqa: PLC0415
    from convtrain.app.tasks import works_on_trained_run  # noqa: PLC0415
    from convtrain.data.registry import declared_input_shape  # noqa: PLC0415

    check_schema_keys(cfg)
    check_layers(cfg.model)
    seed = validate.seed(cfg.seed)
    trainer = check_trainer(cfg.trainer)
    task = str(_value(cfg.task))
    # a task on a trained run resolves its own checkpoint (best or last: app/tasks/_trained.py)
    check_logger_and_resume(cfg, None if works_on_trained_run(task) else trainer["resume"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    parse_data_config(data)  # keys and ranges (data.val_fraction in [0, 1), ...)
    reader = DATASETS.get(data["name"], where="data.name")
    augment = data.pop("augment", None)
    backend = get_backend(str(_value(cfg.backend.name)))
    return Plan(task=task, seed=seed, backend=backend,
                dtype=np.dtype(str(_value(cfg.backend.dtype))), data=data, augment=augment,
                trainer=trainer, engine=check_engine(cfg.engine),
                input_shape=declared_input_shape(reader))


def warn_about_layers_after_the_logits(model: Any) -> None:
    """Log a warning for layers after the last layer that sets its width (``width_key``: dense),
    which makes the logits: a ReLU there clips
    them, dropout drops classes. Usually a layer added with ``+model.layers.X=...`` and no
    ``after:`` (new layers go last). Legal, so only a warning."""
    names = list(model.layers)
    dense = [i for i, name in enumerate(names) if model.layers[name].width_key is not None]
    if dense and dense[-1] < len(names) - 1:
        tail = names[dense[-1] + 1:]
        log.warning("model.layers: %s come(s) after the output layer '%s' and act on the logits; "
                    "place added layers with after:/before: (e.g. after: fc1)",
                    ", ".join(tail), names[dense[-1]])


def build(cfg: DictConfig, plan: Plan, input_shape: tuple[int, ...]) -> Components:
    """Model, optimizer and schedule for ``input_shape``: the registries check every layer,
    optimizer and schedule key here (``+model.layers.x.foo=1`` and ``+optimizer.foo=1``
    included)."""
    from convtrain.nn.model import build_model  # noqa: PLC0415
    from convtrain.optim import build_optimizer, build_schedule  # noqa: PLC0415

    model = build_model(cfg.model, input_shape, seed=plan.seed, dtype=plan.dtype,
                        backend=plan.backend)
    warn_about_layers_after_the_logits(model)
    optimizer = build_optimizer(OmegaConf.to_container(cfg.optimizer, resolve=True), model)
    schedule = build_schedule(OmegaConf.to_container(cfg.scheduler, resolve=True),
                              base_lr=optimizer.lr, max_epochs=plan.trainer["max_epochs"])
    check_resume_fits(plan, model, optimizer)
    return Components(model, optimizer, schedule)


def check_resume_fits(plan: Plan, model: Any, optimizer: Any) -> None:
    """``trainer.resume``'s checkpoint against the built model and optimizer (architecture,
    optimizer, epochs left), before the data is read where the input shape is declared.
    The checks are :func:`convtrain.training.resume.check_resumable`'s, the same as on
    resume; only the data-split checks wait for the data."""
    from convtrain.training.checkpoint import load_checkpoint  # noqa: PLC0415
    from convtrain.training.resume import check_resumable  # noqa: PLC0415

    # only training resumes: a summary ignores the checkpoint, a task on a trained run
    # (eval, predict, ...) loads it for what it is (app/tasks/_trained.py)
    if plan.trainer["resume"] is not None and plan.task == "train":
        check_resumable(load_checkpoint(str(plan.trainer["resume"])), model, optimizer,
                        plan.trainer["max_epochs"])
