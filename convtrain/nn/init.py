"""Weight initializers and the classic hand-crafted filter banks, by name.

Random initializers (``fan_in`` / ``fan_out`` as in PyTorch's ``_calculate_fan_in_and_fan_out``:
for a conv weight ``(F, C/groups, kh, kw)``, ``fan_in = C/groups·kh·kw`` and
``fan_out = F·kh·kw``; for a dense weight ``(out, in)``, ``fan_in = in``, ``fan_out = out``):

==================  =============================================  =========================
name                distribution                                   reference
==================  =============================================  =========================
``he_normal``       N(0, std = sqrt(2 / fan_in))                   He et al. 2015 (ReLU)
``he_uniform``      U(-b, b), b = sqrt(6 / fan_in)                 He et al. 2015
``xavier_normal``   N(0, std = sqrt(2 / (fan_in + fan_out)))       Glorot & Bengio 2010
``xavier_uniform``  U(-b, b), b = sqrt(6 / (fan_in + fan_out))     Glorot & Bengio 2010
``lecun_normal``    N(0, std = sqrt(1 / fan_in))                   LeCun et al. 1998
``lecun_uniform``   U(-b, b), b = sqrt(3 / fan_in)                 LeCun et al. 1998
``zeros``/``ones``  constants
==================  =============================================  =========================

``glorot_normal`` / ``glorot_uniform`` are aliases of the ``xavier_*`` names.

Note on the seed text (``foundations-of-cnns.md``): its "Xavier initialization"
``W ~ Normal(0, sqrt(1/n_in))`` is actually LeCun's rule. Glorot/Xavier averages the fan-in and
fan-out, std = sqrt(2 / (fan_in + fan_out)); here ``xavier_normal`` follows Glorot and the
seed's formula is available as ``lecun_normal``.

Classic filter banks (conv weights only, 3x3 kernels): ``sobel`` (x, y), ``edges`` (the seed's
vertical and horizontal edge detectors), ``box_blur``, ``gaussian_blur``, ``sharpen``,
``identity``, and ``classic`` (all of them, in that order). Filter ``f`` gets
``bank[f % len(bank)]`` on every input channel, scaled by ``1 / in_channels``: the filter then
responds to the channel *average*, so its output scale does not grow with the number of input
channels (an identity filter on a 3-channel image gives the grey-level image, not 3x it).
Combine with ``trainable: false`` to keep a fixed, interpretable first layer.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from convtrain.errors import ConfigError
from convtrain.registry import Registry

#: ``INITIALIZERS.get(name)`` -> ``fn(shape, *, fan_in, fan_out, rng, dtype, where) -> ndarray``.
INITIALIZERS: Registry[Callable[..., np.ndarray]] = Registry("initializer")


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight, with PyTorch's definitions.

    ``(out, in)`` -> ``(in, out)``; ``(F, C/groups, kh, kw)`` -> ``(C/groups·kh·kw, F·kh·kw)``.
    Grouping is already in the shape: the second axis holds the channels of one group.
    """
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return int(shape[1] * receptive), int(shape[0] * receptive)


def initialize(name: str, shape: Sequence[int], *, fan_in: int | None = None,
               fan_out: int | None = None, rng: np.random.Generator, dtype: Any = np.float32,
               where: str | None = None) -> np.ndarray:
    """A new host (NumPy) array of ``shape`` filled by the initializer called ``name``.

    Args:
        name: a registered initializer (``he_normal``, ``sobel``, ...).
        shape: weight shape, ``(F, C/groups, kh, kw)`` or ``(out, in)``.
        fan_in, fan_out: default to :func:`compute_fans` of ``shape``.
        rng: the NumPy Generator to draw from (the model's init stream).
        dtype: result dtype (float32 or float64).
        where: config key for error messages, e.g. ``"model.layers.conv1.init"``.

    Raises:
        ConfigError: unknown ``name`` (with a "did you mean"), a filter bank used on a
            weight that is not a 3x3 conv kernel, or a weight too large to allocate (naming
            the layer and the size in GiB).
    """
    initializer = INITIALIZERS.get(name, where=where)
    default_in, default_out = compute_fans(shape) if len(shape) >= 2 else (1, 1)
    fan_in = default_in if fan_in is None else fan_in
    fan_out = default_out if fan_out is None else fan_out
    dtype = np.dtype(dtype)
    try:
        values = initializer(tuple(shape), fan_in=fan_in, fan_out=fan_out, rng=rng, dtype=dtype,
                             where=where)
        return np.asarray(values, dtype=dtype)
    except MemoryError:
        # e.g. model.layers.fc1.units=1000000000: a config mistake, not a crash to debug
        gib = math.prod(int(d) for d in shape) * dtype.itemsize / 2**30
        layer = where[:-len(".init")] if where and where.endswith(".init") else where
        raise ConfigError(
            f"{layer or 'weight'}: cannot allocate its {dtype.name} weight of shape "
            f"{tuple(int(d) for d in shape)} ({gib:,.1f} GiB); make the layer smaller "
            "(units / filters / kernel_size) or its input smaller"
        ) from None


# --- random initializers ------------------------------------------------------------------
# Drawn directly in the target dtype where NumPy's Generator supports it (float32/float64):
# drawing float64 and casting would double the peak memory of a large layer.
def _draw_dtype(dtype: np.dtype) -> np.dtype:
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def _normal(std_of: Callable[[int, int], float]):
    def draw(shape, *, fan_in, fan_out, rng, dtype, where):
        values = rng.standard_normal(shape, dtype=_draw_dtype(dtype))
        values *= std_of(fan_in, fan_out)
        return values

    return draw


def _uniform(bound_of: Callable[[int, int], float]):
    def draw(shape, *, fan_in, fan_out, rng, dtype, where):
        bound = bound_of(fan_in, fan_out)
        values = rng.random(shape, dtype=_draw_dtype(dtype))  # [0, 1)
        values *= 2 * bound
        values -= bound  # [-bound, bound)
        return values

    return draw


INITIALIZERS.register("he_normal")(_normal(lambda fi, fo: math.sqrt(2.0 / fi)))
INITIALIZERS.register("he_uniform")(_uniform(lambda fi, fo: math.sqrt(6.0 / fi)))
INITIALIZERS.register("xavier_normal", "glorot_normal")(
    _normal(lambda fi, fo: math.sqrt(2.0 / (fi + fo))))
INITIALIZERS.register("xavier_uniform", "glorot_uniform")(
    _uniform(lambda fi, fo: math.sqrt(6.0 / (fi + fo))))
INITIALIZERS.register("lecun_normal")(_normal(lambda fi, fo: math.sqrt(1.0 / fi)))
INITIALIZERS.register("lecun_uniform")(_uniform(lambda fi, fo: math.sqrt(3.0 / fi)))


@INITIALIZERS.register("zeros")
def _zeros(shape, *, fan_in, fan_out, rng, dtype, where):
    return np.zeros(shape, dtype=dtype)


@INITIALIZERS.register("ones")
def _ones(shape, *, fan_in, fan_out, rng, dtype, where):
    return np.ones(shape, dtype=dtype)


# --- classic filter banks (the seed's hand-crafted 3x3 kernels) -----------------------------
_SOBEL_X = [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
_SOBEL_Y = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
_EDGE_VERTICAL = [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
_EDGE_HORIZONTAL = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
_BOX_BLUR = (np.ones((3, 3)) / 9.0).tolist()
_GAUSSIAN_BLUR = (np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0).tolist()
_SHARPEN = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
_IDENTITY = [[0, 0, 0], [0, 1, 0], [0, 0, 0]]

#: bank name -> list of 3x3 kernels (the order filters cycle through).
FILTER_BANKS: dict[str, list] = {
    "sobel": [_SOBEL_X, _SOBEL_Y],
    "edges": [_EDGE_VERTICAL, _EDGE_HORIZONTAL],
    "box_blur": [_BOX_BLUR],
    "gaussian_blur": [_GAUSSIAN_BLUR],
    "sharpen": [_SHARPEN],
    "identity": [_IDENTITY],
}
FILTER_BANKS["classic"] = [k for bank in list(FILTER_BANKS.values()) for k in bank]


def filter_bank_weight(bank_name: str, shape: Sequence[int], where: str | None = None) -> np.ndarray:
    """Conv weight ``(F, C, 3, 3)`` whose filter ``f`` is ``bank[f % len(bank)] / C`` on
    every one of its ``C`` input channels (see the module docstring for the scaling)."""
    label = f"{where}: " if where else ""
    if len(shape) != 4:
        raise ConfigError(f"{label}filter bank '{bank_name}' only initializes conv weights "
                          f"(F, C, kh, kw), not a weight of shape {tuple(shape)}")
    out_channels, in_channels, kh, kw = shape
    if (kh, kw) != (3, 3):
        raise ConfigError(f"{label}filter bank '{bank_name}' needs a 3x3 kernel, but the "
                          f"kernel is {kh}x{kw} (set kernel_size: 3)")
    bank = np.asarray(FILTER_BANKS[bank_name], dtype=np.float64)
    chosen = bank[np.arange(out_channels) % len(bank)]  # (F, 3, 3)
    return np.repeat(chosen[:, None], in_channels, axis=1) / in_channels


def _register_bank(bank_name: str) -> None:
    def draw(shape, *, fan_in, fan_out, rng, dtype, where):
        return filter_bank_weight(bank_name, shape, where)

    INITIALIZERS.register(bank_name)(draw)


for _bank_name in FILTER_BANKS:
    _register_bank(_bank_name)
