"""``cupy.cuda``: one simulated device, enough for ``Device().synchronize()`` and
``runtime.getDeviceCount()``."""
from __future__ import annotations

import types


class Device:
    """``cupy.cuda.Device(device=None)``: the current device (id 0, the only one)."""

    def __init__(self, device=None):
        device = 0 if device is None else int(device)
        if device != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {device}")
        self.id = device

    def synchronize(self) -> None:
        """Nothing is queued on the CPU."""

    def use(self) -> None:
        return None

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


def get_device_id() -> int:
    return 0


def _make_runtime(device_count: int) -> types.ModuleType:
    runtime = types.ModuleType("cupy.cuda.runtime")

    def getDeviceCount() -> int:  # noqa: N802 - CUDA's name
        return device_count

    def deviceSynchronize() -> None:  # noqa: N802 - CUDA's name
        return None

    runtime.getDeviceCount = getDeviceCount
    runtime.deviceSynchronize = deviceSynchronize
    return runtime


def make_cuda_module(device_count: int = 1) -> types.ModuleType:
    cuda = types.ModuleType("cupy.cuda")
    cuda.Device = Device
    cuda.get_device_id = get_device_id
    cuda.runtime = _make_runtime(device_count)
    return cuda
