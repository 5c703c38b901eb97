"""Input validation shared by the engine functions.

Every check raises :class:`convtrain.errors.InternalError` with a message that names the
operation, the argument and the offending shape / dtype. Layers check what a config or a data
file can get wrong (and raise ConfigError / DataError naming the key); an array of the wrong
shape or dtype that still reaches the math is a programming error, so it keeps its traceback.
"""
from __future__ import annotations

from typing import Any

from convtrain.errors import InternalError


def require_ndim(array: Any, ndim: int, op: str, arg: str, layout: str) -> None:
    """Raise unless ``array`` has ``ndim`` dimensions; ``layout`` is e.g. ``"(N, C, H, W)"``."""
    shape = getattr(array, "shape", None)
    if shape is None:
        raise InternalError(f"{op}: {arg} must be an array {layout}, got {type(array).__name__}")
    if len(shape) != ndim:
        raise InternalError(
            f"{op}: {arg} must be {ndim}-D {layout}, got shape {tuple(shape)}"
        )


def require_float(array: Any, op: str, arg: str) -> None:
    """Raise unless ``array`` holds floating-point numbers (gradients of ints are meaningless)."""
    if array.dtype.kind != "f":
        raise InternalError(
            f"{op}: {arg} must be a floating-point array (float32 or float64), "
            f"got dtype {array.dtype}"
        )


def require_same_dtype(op: str, reference_name: str, reference: Any, **others: Any) -> None:
    """Raise if any of ``others`` (None allowed) has a dtype other than ``reference``'s.

    Mixed dtypes would silently upcast float32 work to float64 (twice the memory, half the
    speed), so the engine refuses them instead.
    """
    for name, array in others.items():
        if array is not None and array.dtype != reference.dtype:
            raise InternalError(
                f"{op}: {name} has dtype {array.dtype} but {reference_name} has dtype "
                f"{reference.dtype}; cast them to the same float dtype"
            )


def require_shape(array: Any, shape: tuple[int, ...], op: str, arg: str) -> None:
    """Raise unless ``array.shape == shape``."""
    if tuple(array.shape) != tuple(shape):
        raise InternalError(
            f"{op}: {arg} must have shape {tuple(shape)}, got {tuple(array.shape)}"
        )
