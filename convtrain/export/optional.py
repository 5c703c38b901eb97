"""The optional packages the exporters run on, imported on demand with one clear line when
they are missing (the extra ``pip install -e ".[export]"`` holds onnx and onnxruntime)."""
from __future__ import annotations

import importlib
from types import ModuleType

from convtrain.errors import ConfigError

#: the command that installs the ONNX route's packages (pyproject's `export` extra).
EXPORT_EXTRA_COMMAND = 'pip install -e ".[export]"'


def require(module: str, purpose: str, command: str = EXPORT_EXTRA_COMMAND) -> ModuleType:
    """``import module``, or a ConfigError naming what needs it and the install ``command``.

    Raises:
        ConfigError: ``onnxruntime is not installed (needed to verify the ONNX export); install
            it with: pip install -e ".[export]"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{module} is not installed (needed to {purpose}); install it "
                          f"with: {command}") from exc
