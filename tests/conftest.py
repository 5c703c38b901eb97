"""Fixtures shared by the whole suite."""
from tests.strict_cupy.fixture import strict_cupy  # noqa: F401 - the CPU stand-in for CuPy
