"""A name -> object registry with Caffe-style error messages.

Layers, initializers, optimizers, schedules, losses and datasets each keep one.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from convtrain.errors import ConfigError
from convtrain.validate import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes or factory functions.

    >>> LAYERS = Registry("layer type")
    >>> @LAYERS.register("relu")
    ... class ReLU: ...
    >>> LAYERS.get("relu")  # doctest: +ELLIPSIS
    <class '...ReLU'>
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator registering an object under one or more names (aliases)."""

        def decorate(obj: T) -> T:
            for name in names:
                if name in self._entries:
                    raise ValueError(f"{self.kind} '{name}' is registered twice")
                self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str, where: str | None = None) -> T:
        """Return the entry called ``name``.

        Raises:
            ConfigError: ``Unknown layer type 'conv' (known types: ...; did you mean 'conv2d'?)``,
                prefixed by ``where`` (e.g. the config key) when given.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(self.unknown_message(name, where)) from None

    def unknown_message(self, name: object, where: str | None = None) -> str:
        known = ", ".join(sorted(self._entries))
        msg = (f"Unknown {self.kind} '{name}' (known {self.kind.split()[-1]}s: {known})"
               f"{did_you_mean(name, self._entries)}")
        return f"{where}: {msg}" if where else msg

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
