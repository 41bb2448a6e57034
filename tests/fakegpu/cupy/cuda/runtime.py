"""Fake cupy.cuda.runtime: the device count (env FAKECUPY_DEVICES, default 1; 0 = no device), device
properties, and the thread-local current device (a new thread starts on device 0, as in CUDA)."""
import os
import threading

is_hip = False
cudaErrorNoDevice, cudaErrorInvalidDevice = 100, 101
_MESSAGES = {cudaErrorNoDevice: "cudaErrorNoDevice: no CUDA-capable device is detected",
             cudaErrorInvalidDevice: "cudaErrorInvalidDevice: invalid device ordinal"}
_local = threading.local()


class CUDARuntimeError(RuntimeError):
    def __init__(self, status, msg=None):
        self.status = status
        super().__init__(msg or _MESSAGES.get(status, f"CUDA error {status}"))


def getDeviceCount():
    return int(os.environ.get("FAKECUPY_DEVICES", "1"))


def _check(i):
    n = getDeviceCount()
    if n == 0:
        raise CUDARuntimeError(cudaErrorNoDevice)
    if not 0 <= int(i) < n:
        raise CUDARuntimeError(cudaErrorInvalidDevice)
    return int(i)


def getDevice():
    return _check(getattr(_local, "device", 0))


def setDevice(i):
    _local.device = _check(i)


def getDeviceProperties(i):
    _check(i)
    return {"name": b"Fake GPU", "totalGlobalMem": 80 * 2**30, "multiProcessorCount": 1,
            "memoryClockRate": 1000000, "memoryBusWidth": 1024, "major": 9, "minor": 0}


def runtimeGetVersion():
    return 12000


def driverGetVersion():
    return 12000


def deviceSynchronize():
    getDevice()


def memGetInfo():
    getDevice()
    return 80 * 2**30, 80 * 2**30
