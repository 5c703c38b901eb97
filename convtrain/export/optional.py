"""The optional packages the exporters run on, imported on demand with one clear line when
they are missing (the ``export`` extra holds onnx and onnxruntime: ``pip install
"convtrain[export]"`` where convtrain came from a wheel, ``pip install -e ".[export]"`` in a
checkout)."""
from __future__ import annotations

import importlib
from types import ModuleType

from convtrain.errors import ConfigError

#: the commands that install the ONNX route's packages (pyproject's `export` extra): both are
#: named, since a wheel user has no checkout to install in editable mode
EXPORT_EXTRA_COMMAND = 'pip install "convtrain[export]" (in a checkout: pip install -e ".[export]")'


def require(module: str, purpose: str, command: str = EXPORT_EXTRA_COMMAND) -> ModuleType:
    """``import module``, or a ConfigError naming what needs it and the install ``command``.

    Raises:
        ConfigError: ``onnxruntime is not installed (needed to verify the ONNX export); install
            it with: pip install "convtrain[export]" (in a checkout: pip install -e
            ".[export]")``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{module} is not installed (needed to {purpose}); install it "
                          f"with: {command}") from exc
