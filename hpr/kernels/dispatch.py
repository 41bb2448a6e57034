"""The one numpy/CuPy seam of hpr's kernels (DESIGN.md decision 5: arrays decide the device). Every kernel
family (nn, statevec, reduce) marks its CPU functions with one of two decorators, and nothing else in
hpr.kernels asks where an array lives:

- ``@device_twin``: when the call's FIRST argument is a CuPy array (hpr.device.is_device_array), the
  call goes, with the same arguments, to the GPU twin: the function of the same name in
  hpr/kernels/gpu.py, or the one named there (``@device_twin(twin="apply_1q")``), or a function given
  (``@device_twin(twin=attention_bmm_forward)``: array operations of any array module). The twin is looked up in
  hpr.kernels.gpu at each call, so tests/fakegpu/route.py can swap its launchers. Otherwise the
  decorated CPU body runs; it stays reachable as ``fn.__wrapped__``.
- ``@host_only(hint)``: the CPU kernel has no GPU twin; a CuPy array in any positional argument is a
  ConfigError saying so (with what to do instead), raised before anything is touched.

Owns only the choice; the launchers are hpr/kernels/gpu.py, the CPU faces the family modules, moving
arrays between host and device hpr/device.py. Usage::

    @device_twin
    def gelu_backward(dout, x, out): ...   # cupy dout -> gpu.gelu_backward(dout, x, out)
"""
import functools

import numpy as np

from ..device import is_device_array
from ..errors import ConfigError
from . import gpu


def _on_device(a):
    # the common case (a numpy array) decided without looking at the type's module
    return type(a) is not np.ndarray and is_device_array(a)


def device_twin(fn=None, *, twin=None):
    """Decorator, bare or ``@device_twin(twin=<name in hpr.kernels.gpu, or a function>)``: a face whose
    first argument is a CuPy array runs its GPU twin with the same arguments; see the module docstring."""
    if fn is None:
        return functools.partial(device_twin, twin=twin)
    if callable(twin):
        def gpu_twin():
            return twin
    else:
        name = twin or fn.__name__
        if not hasattr(gpu, name):
            raise AttributeError(f"{fn.__qualname__}: hpr.kernels.gpu has no twin {name!r}")

        def gpu_twin():
            return getattr(gpu, name)

    @functools.wraps(fn)
    def face(*args, **kwargs):
        if args and _on_device(args[0]):
            return gpu_twin()(*args, **kwargs)
        return fn(*args, **kwargs)
    face.gpu_twin = gpu_twin
    return face


def host_only(hint="pass numpy arrays (cupy.asnumpy)"):
    """Decorator: a CPU kernel without a GPU twin refuses CuPy arrays with a ConfigError:
    "<name> has no GPU kernel: <hint>"."""
    def wrap(fn):
        @functools.wraps(fn)
        def face(*args, **kwargs):
            for a in (*args, *kwargs.values()):
                if _on_device(a):
                    raise ConfigError(f"{fn.__name__} has no GPU kernel: {hint}")
            return fn(*args, **kwargs)
        return face
    return wrap
