"""The layer classes under their public import path (``from convtrain.layers import Conv2d``).

They live in :mod:`convtrain.nn.layers` (one module per kind); this module re-exports every
registered layer class for the public contract, so a new layer appears here by itself.
"""
from convtrain.nn import *  # noqa: F401,F403
from convtrain.nn import __all__  # noqa: F401
