"""``cupy.random``'s Generator API: ``default_rng``, ``Generator``, the bit generators.

As in CuPy (``cupy/random/_bit_generator.pyx``) a bit generator's ``state`` is a METHOD that
returns the address of its device-side curand states, so NumPy's
``gen.bit_generator.state = {...}`` idiom does not restore anything: the attribute is
replaced by a dict and the generator's next use by code that calls ``state()`` fails.
Draws are reproducible per seed (NumPy PCG64 under the same ``SeedSequence``), not CuPy's.
"""
from __future__ import annotations

import types

import numpy as np

from tests.strict_cupy._device import _check_dtype, _out, _wrap, ndarray


class BitGenerator:
    """``cupy.random.BitGenerator(seed=None)``."""

    _stream_tag = 0

    def __init__(self, seed=None):
        if isinstance(seed, ndarray):
            seed = seed.get()
        seq = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._seed_seq = seq
        # the simulated device states: a host PCG64 keyed by the seed and the generator kind
        self._host = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, self._stream_tag))))
        self._state_address = 0x7F0000000000 + id(self) % 0x100000

    def random_raw(self, size=None, output=True):
        values = self._host.integers(0, 2**32, size=() if size is None else size, dtype=np.int64)
        return _wrap(values.astype(np.int32)) if output else None

    def state(self) -> int:
        """Device pointer of the curand states (as CuPy): not a serialisable state."""
        return self._state_address


class _cuRANDGenerator(BitGenerator):  # noqa: N801 - CuPy's name
    def __init__(self, seed=None, *, size=-1):
        super().__init__(seed)
        self._size = size


class XORWOW(_cuRANDGenerator):
    _stream_tag = 1


class MRG32k3a(_cuRANDGenerator):
    _stream_tag = 2


class Philox4x3210(_cuRANDGenerator):
    _stream_tag = 3


class Generator:
    """``cupy.random.Generator(bit_generator)``: the methods of CuPy's Generator that convtrain
    could use (CuPy's has no ``normal``, ``permutation``, ``shuffle`` or ``choice``)."""

    def __init__(self, bit_generator):
        if not isinstance(bit_generator, BitGenerator):
            raise TypeError(f"expected a cupy.random.BitGenerator, got {type(bit_generator)}")
        self.bit_generator = bit_generator

    def _draw(self, fill, size, dtype, out):
        dt = np.dtype(dtype)
        if dt.char not in "fd":
            raise TypeError(f"Unsupported dtype {dt.name} for random")
        shape = () if size is None else size
        values = _wrap(fill(self.bit_generator._host, shape, dt))
        if out is not None:
            _out(out)[...] = values._a
            return out
        return values

    def random(self, size=None, dtype=np.float64, out=None):
        return self._draw(lambda g, s, dt: g.random(s, dtype=dt), size, dtype, out)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return self._draw(lambda g, s, dt: g.standard_normal(s, dtype=dt), size, dtype, out)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return self._draw(lambda g, s, dt: g.uniform(low, high, s).astype(dt), size, dtype, None)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return _wrap(np.asarray(self.bit_generator._host.integers(
            low, high, size=size, dtype=_check_dtype(dtype), endpoint=endpoint)))


def default_rng(seed=None):
    """``cupy.random.default_rng``: a Generator over XORWOW (or the given BitGenerator)."""
    if isinstance(seed, Generator):
        return seed
    if isinstance(seed, BitGenerator):
        return Generator(seed)
    return Generator(XORWOW(seed))


def make_random_module() -> types.ModuleType:
    random = types.ModuleType("cupy.random")
    for obj in (BitGenerator, XORWOW, MRG32k3a, Philox4x3210, Generator, default_rng):
        setattr(random, obj.__name__, obj)
    return random
