"""test_gpu.py's probe for a GPU: no CuPy or no device is a skip; a CuPy that imports but whose device
calls fail (a broken driver or install) is a failure, not "no GPU". Checked with stand-in CuPy modules."""
import sys
import types

import pytest

import test_gpu


class CudaError(Exception):
    def __init__(self, status):
        super().__init__(f"cudaError {status}")
        self.status = status


def fake_cupy(count=None, status=None, total=45):
    def get_count():
        if status is not None:
            raise CudaError(status)
        return count

    class Sum:
        def sum(self):
            return total
    cp = types.ModuleType("cupy")
    cp.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_count))
    cp.arange = lambda n: Sum()
    return cp


@pytest.mark.parametrize("cp,verdict", [
    (None, "no CuPy here"),
    (fake_cupy(count=0), "no GPU"),
    (fake_cupy(status=test_gpu.NO_DEVICE), "no GPU"),
    (fake_cupy(status=35), "broken: CuPy imports but the GPU does not answer: CudaError: cudaError 35"),
    (fake_cupy(count=1, total=0), "broken: a sum on the GPU came back wrong"),
    (fake_cupy(count=1), None),
], ids=["no-cupy", "no-device", "no-device-error", "insufficient-driver", "wrong-sum", "working"])
def test_gpu_probe_tells_no_gpu_from_a_broken_one(monkeypatch, cp, verdict):
    monkeypatch.setitem(sys.modules, "cupy", cp)  # None: `import cupy` raises ImportError
    got, why = test_gpu._device()
    if verdict is None:
        assert got is cp and why is None
    else:
        assert got is None and verdict in why, why
        assert why.startswith("broken:") == verdict.startswith("broken:")
