"""The ``export.*`` keys of ``task=export``, declared once: the config schema takes this
dataclass (:mod:`convtrain.app.schema`), the exporters take their defaults from here.
Imports nothing heavy (the schema loads it with every command)."""
from __future__ import annotations

import dataclasses
import enum

#: the oldest ONNX opset the exporters are written for (issue #12 asks for >= 17).
MIN_OPSET = 17
#: the export-time check: the largest allowed |exported logit - convtrain logit| while the
#: logits stay within +-1, and that fraction of the largest |logit| beyond (see
#: :func:`allowed_difference`).
TOLERANCE = 1e-5


def allowed_difference(tolerance: float, largest_logit: float) -> float:
    """The bound of the export check: ``tolerance`` for logits within +-1, else ``tolerance``
    times the largest |logit|.

    float32 rounding grows with the values summed: two correct engines summing in another order
    (and convtrain against the exact float64 result) differ by 2e-7 to 5e-7 of the largest
    logit (measured: 7e-5 at a largest logit of 388, 6e-6 at 24). A fixed 1e-5 would fail
    correct exports of models with large logits, while a wrong padding, stride or constant
    moves logits by 1e-2 of their size or more.
    """
    return tolerance * max(1.0, float(largest_logit))


class ExportFormat(enum.Enum):
    onnx = "onnx"  # RUN_DIR/export/model.onnx
    torch = "torch"  # RUN_DIR/export/model.py + model.safetensors


@dataclasses.dataclass
class ExportSettings:
    """``convtrain task=export trainer.resume=RUN_DIR export.format=onnx``."""

    format: ExportFormat = ExportFormat.onnx
    opset: int = MIN_OPSET  # ONNX opset, >= 17
    # test images of the run's dataset the export is checked on (0: no check)
    verify_samples: int = 256
    # largest allowed max abs logit difference (times the largest |logit| when above 1)
    tolerance: float = TOLERANCE
