"""One module per visual kind; each defines a :class:`~convtrain.visuals.hook.VisualHook`.

Every module of this package is imported here, in name order, so defining a visual in a new
module is all it takes to register it (and its ``logger.*`` keys).
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
