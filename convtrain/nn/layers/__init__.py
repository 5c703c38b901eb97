"""One module per layer kind; importing this package registers every one of them.

A new layer is one new module here (its math goes to :mod:`convtrain.ops`): the class
decorated with ``@register_layer("type_name")`` becomes a YAML ``type`` and, by its class name,
an attribute of :mod:`convtrain.nn` and :mod:`convtrain.layers`. Nothing else lists layers.
"""
from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
