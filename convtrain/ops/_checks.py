"""Input validation shared by the engine functions.

Every check raises :class:`convtrain.errors.ConfigError` with a message that names the
operation, the argument and the offending shape / dtype, so that a bad model config surfaces
as a readable sentence instead of a NumPy broadcasting traceback deep inside a GEMM.
"""
from __future__ import annotations

from typing import Any

from convtrain.errors import ConfigError


def require_ndim(array: Any, ndim: int, op: str, arg: str, layout: str) -> None:
    """Raise unless ``array`` has ``ndim`` dimensions; ``layout`` is e.g. ``"(N, C, H, W)"``."""
    shape = getattr(array, "shape", None)
    if shape is None:
        raise ConfigError(f"{op}: {arg} must be an array {layout}, got {type(array).__name__}")
    if len(shape) != ndim:
        raise ConfigError(
            f"{op}: {arg} must be {ndim}-D {layout}, got shape {tuple(shape)}"
        )


def require_float(array: Any, op: str, arg: str) -> None:
    """Raise unless ``array`` holds floating-point numbers (gradients of ints are meaningless)."""
    if array.dtype.kind != "f":
        raise ConfigError(
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
            raise ConfigError(
                f"{op}: {name} has dtype {array.dtype} but {reference_name} has dtype "
                f"{reference.dtype}; cast them to the same float dtype"
            )


def require_shape(array: Any, shape: tuple[int, ...], op: str, arg: str) -> None:
    """Raise unless ``array.shape == shape``."""
    if tuple(array.shape) != tuple(shape):
        raise ConfigError(
            f"{op}: {arg} must have shape {tuple(shape)}, got {tuple(array.shape)}"
        )
