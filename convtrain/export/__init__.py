"""After training: the model as a file that runs without convtrain.

Two routes, both starting with the training preprocessing (:class:`convtrain.data.splits.
Preprocessing`), so that they take raw pixels exactly as the dataset stores them (float32
``(N, C, H, W)``, 0..255 for the 8-bit image datasets, 0..16 for digits) and return logits:

* :mod:`.onnx` -- :func:`export_onnx` writes an ONNX graph (opset >= 17, dynamic batch) and
  checks it against convtrain's own forward pass with onnxruntime (:func:`verify_onnx`).
  Needs the optional dependencies ``pip install "convtrain[export]"`` (in a checkout:
  ``pip install -e ".[export]"``).
* :mod:`.torch_code` -- :func:`torch_module_source` writes the equivalent ``torch.nn.Module``
  as Python source and :func:`write_torch_export` saves it with the weights
  (``model.py`` + ``model.safetensors``); writing needs no torch, running it does.

Each route keeps one exporter per layer type in a table keyed by the layer's ``type`` name
(``ONNX_EXPORTERS``, ``TORCH_EXPORTERS``): a new layer type needs one entry in each.
Names are imported on first use, so ``import convtrain.export`` loads neither onnx nor torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_onnx": "onnx", "verify_onnx": "onnx", "onnx_model_proto": "onnx",
    "ONNX_EXPORTERS": "onnx",
    "torch_module_source": "torch_code", "write_torch_export": "torch_code",
    "verify_torch_export": "torch_code", "TORCH_EXPORTERS": "torch_code",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
