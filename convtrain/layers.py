"""The layer classes under their public import path (``from convtrain.layers import Conv2d``).

They live in :mod:`convtrain.nn`; this module only re-exports them for the public contract.
"""
from convtrain.nn import *  # noqa: F401,F403
from convtrain.nn import __all__  # noqa: F401
