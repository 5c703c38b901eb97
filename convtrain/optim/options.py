"""The one declaration of an optimizer's or schedule's settings, and what follows from it.

Each optimizer and schedule class lists its settings once, in ``options``: the config key, the
default, the accepted values and a one-line meaning::

    class SGD(Optimizer):
        options = {"lr": LR, "momentum": Real(0.0, "momentum factor", low=0.0, high=1.0,
                                              high_open=True), ...}

From that dict follow:

- the constructor: :meth:`Configurable.set_options` fills defaults and checks every value
  (``optimizer.momentum: must be < 1, got 1.0``), and ``help(SGD)`` lists every setting with
  its default and meaning;
- the config: :func:`parse_config` reads ``{name: sgd, ...}`` (unknown keys get "did you mean"
  or "it is an option of adam");
- the Hydra schema: :func:`config_dataclass` derives the typed dataclass that
  :mod:`convtrain.app.schema` registers, so ``convtrain --cfg job`` prints every default and a
  wrong type fails while Hydra composes the config.

This module uses :mod:`dataclasses` only: the optimizers import neither Hydra nor OmegaConf.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, List, Optional

from convtrain import validate
from convtrain.errors import ConfigError
from convtrain.registry import Registry


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its default, a one-line meaning and how a value is checked.

    Subclasses fix the kind of value (:class:`Real`, :class:`Integer`, :class:`Flag`,
    :class:`Reals`, :class:`Epochs`); ``dataclasses.replace(option, default=...)`` reuses a
    setting with another default (``lr`` is 1e-3 for Adam, 1e-2 for RMSprop, as in PyTorch).
    """

    default: Any
    meaning: str

    #: the type of the field in the Hydra schema
    annotation: ClassVar[Any] = Any

    def check(self, key: str, value: Any) -> Any:
        """``value`` converted to a plain Python value; ConfigError naming ``key`` if invalid."""
        raise NotImplementedError

    def schema_field(self) -> dataclasses.Field:
        """The dataclass field of the Hydra schema (lists need a factory)."""
        if isinstance(self.default, (list, tuple)):
            items = list(self.default)
            return dataclasses.field(default_factory=lambda: list(items),
                                     metadata={"meaning": self.meaning})
        return dataclasses.field(default=self.default, metadata={"meaning": self.meaning})


@dataclasses.dataclass(frozen=True)
class Real(Option):
    """A finite number within bounds (``*_open`` excludes the bound itself)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    annotation: ClassVar[Any] = float

    def check(self, key: str, value: Any) -> float:
        return validate.real(key, value, low=self.low, high=self.high, low_open=self.low_open,
                             high_open=self.high_open)


@dataclasses.dataclass(frozen=True)
class Integer(Option):
    """An integer >= ``low``; with ``optional`` also None (a default decided elsewhere)."""

    low: int | None = None
    optional: bool = False

    @property
    def annotation(self) -> Any:  # type: ignore[override]
        return Optional[int] if self.optional else int

    def check(self, key: str, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        return validate.integer(key, value, low=self.low)


@dataclasses.dataclass(frozen=True)
class Flag(Option):
    """``true`` or ``false``."""

    annotation: ClassVar[Any] = bool

    def check(self, key: str, value: Any) -> bool:
        return validate.boolean(key, value)


@dataclasses.dataclass(frozen=True)
class Reals(Option):
    """A fixed-length list of numbers, each within the bounds (Adam's ``betas``)."""

    length: int = 2
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    annotation: ClassVar[Any] = List[float]

    def check(self, key: str, value: Any) -> tuple[float, ...]:
        items = validate.real_sequence(key, value, self.length)
        return tuple(validate.real(f"{key}[{i}]", item, low=self.low, high=self.high,
                                   low_open=self.low_open, high_open=self.high_open)
                     for i, item in enumerate(items))


@dataclasses.dataclass(frozen=True)
class Epochs(Option):
    """A non-empty, strictly increasing list of epochs >= 1 (``[30, 60]``)."""

    annotation: ClassVar[Any] = List[int]

    def check(self, key: str, value: Any) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise ConfigError(f"{key}: expected a non-empty list of epochs like [30, 60], "
                              f"got {value!r}")
        epochs = [validate.integer(f"{key}[{i}]", e, low=1) for i, e in enumerate(value)]
        if any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ConfigError(f"{key}: must be strictly increasing, got {epochs}")
        return tuple(epochs)


class Configurable:
    """Base of optimizers and schedules: settings declared once in :attr:`options`.

    Subclasses set :attr:`name` (the registry name) and :attr:`options`; their ``__init__``
    takes the settings as keyword arguments and calls :meth:`set_options`.
    """

    #: the config section whose keys these are (``optimizer``, ``scheduler``)
    group: ClassVar[str] = ""
    #: what one entry is called in messages (``optimizer``, ``schedule``)
    kind: ClassVar[str] = ""
    #: the registry name (the config's ``name:``)
    name: ClassVar[str] = ""
    #: every setting a config may give besides ``name``, in the order messages list them
    options: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # help(SGD) / inspect.signature show the declared settings and their defaults
        leading = [p for name, p in inspect.signature(cls.__init__).parameters.items()
                   if name != "self" and p.kind is not p.VAR_KEYWORD]
        settings = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=o.default,
                                      annotation=o.annotation)
                    for key, o in cls.options.items()]
        cls.__signature__ = inspect.Signature(leading + settings)  # type: ignore[attr-defined]
        # ... and each setting's meaning, under the class's own docstring
        if cls.__dict__.get("__doc__") and cls.options:
            # indented like the docstring's own continuation lines (inspect.getdoc dedents all)
            lines = [f"        {key} = {o.default!r}: {o.meaning}" for key, o in cls.options.items()]
            cls.__doc__ = (cls.__doc__.rstrip() + "\n\n    Settings (key = default: meaning):\n"
                           + "\n".join(lines) + "\n")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{key: default}`` of every declared setting."""
        return {key: option.default for key, option in cls.options.items()}

    def set_options(self, settings: Mapping[str, Any]) -> None:
        """Set every declared setting as an attribute: the given value, checked, or the default.

        Raises:
            TypeError: for a keyword that is not a setting of this class (a call from Python;
                configs are screened by :func:`parse_config` with a friendlier message).
            ConfigError: naming ``<group>.<key>`` for a bad value.
        """
        for key in settings:
            if key not in self.options:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument "
                                f"'{key}' (settings: {', '.join(self.options) or 'none'})")
        for key, option in self.options.items():
            setattr(self, key, option.check(f"{self.group}.{key}",
                                            settings.get(key, option.default)))

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={getattr(self, key, None)!r}" for key in self.options)
        return f"{type(self).__name__}({settings})"


def parse_config(registry: Registry[type[Configurable]], group: str, cfg: Any, *,
                 default_name: str | None = None) -> tuple[type[Configurable], dict[str, Any]]:
    """The class named by ``cfg["name"]`` and the other keys of ``cfg``, screened.

    ``cfg`` is a mapping (``dict`` or OmegaConf ``DictConfig``) like ``{name: sgd, lr: 0.05}``;
    a missing ``name`` (or ``cfg`` None) means ``default_name``; without one it is an error.

    Raises:
        ConfigError: naming ``<group>`` or ``<group>.<key>``: not a mapping, a missing or
            unknown name, a key the chosen class does not take (with "did you mean" or the
            classes that do take it).
    """
    if cfg is None and default_name is not None:
        cfg = {}
    settings = validate.mapping(group, cfg, expected="a mapping like {name: ..., ...}")
    if "name" not in settings and default_name is None:
        raise ConfigError(f"{group}.name: missing (choose one of: {', '.join(registry.names())})")
    name = settings.pop("name", default_name)
    cls = registry.get(name, where=f"{group}.name")
    validate.reject_unknown_keys(group, cls.kind, name, settings, list(cls.options),
                                 {n: list(registry.get(n).options) for n in registry.names()})
    return cls, settings


def config_dataclass(cls: type[Configurable]) -> type:
    """The Hydra schema of ``cls``: ``name`` (defaulting to ``cls.name``) and every setting.

    >>> [f.name for f in dataclasses.fields(config_dataclass(SGD))]  # doctest: +SKIP
    ['name', 'lr', 'momentum', 'dampening', 'nesterov', 'weight_decay']
    """
    fields = [("name", str, dataclasses.field(default=cls.name))]
    fields += [(key, option.annotation, option.schema_field())
               for key, option in cls.options.items()]
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


__all__ = ["Configurable", "Epochs", "Flag", "Integer", "Option", "Real", "Reals",
           "config_dataclass", "parse_config"]
