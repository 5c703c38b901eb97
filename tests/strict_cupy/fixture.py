"""The ``strict_cupy`` pytest fixture: import it into a test module to use it."""
from __future__ import annotations

import pytest

from tests.strict_cupy import install


@pytest.fixture
def strict_cupy(monkeypatch):
    """The stand-in installed as ``cupy``: ``convtrain.get_backend("cupy")`` succeeds and
    ``array_module`` recognises its arrays. Yields the module."""
    yield install(monkeypatch)
