"""The CUDA sources of the GPU path (hpr/kernels/cuda/*.cu) without a GPU: each compiles with nvcc, every
kernel the launchers in hpr/kernels/gpu.py ask for is defined in its source for float and double, and
importing hpr (and hpr.kernels.gpu) never imports CuPy. The GPU's own parity tests are test_gpu.py."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from hpr.kernels import gpu

NVCC = shutil.which("nvcc")


def defined(src):
    with open(os.path.join(gpu.HERE, src)) as f:
        text = f.read()
    names = set(re.findall(r'extern "C" __global__ void (hpr_\w+?)##SFX', text))  # inside the macros
    sfx = set(re.findall(r"^HPR_\w+_KERNELS\((?:float|double), (_f\d\d)\)", text, re.M))
    return {n + s for n in names for s in sfx}


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH (the CUDA toolkit is not installed)")
@pytest.mark.parametrize("src", gpu.SOURCES)
def test_each_source_compiles_with_nvcc(src, tmp_path):
    p = subprocess.run([NVCC, "-std=c++17", "-arch=sm_80", f"-I{gpu.HERE}", "-c", os.path.join(gpu.HERE, src),
                        "-o", str(tmp_path / "k.o")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    syms = subprocess.run(["nm", str(tmp_path / "k.o")], capture_output=True, text=True).stdout
    for name in defined(src):
        assert name in syms, f"{name} missing from {src}'s object"


def _nvrtc():
    """libnvrtc from PyPI's nvidia-cuda-nvrtc-cu12 (what CuPy's RawModule compiles with), or None."""
    try:
        import nvidia.cuda_nvrtc as pkg
    except ImportError:
        return None
    import ctypes
    import glob

    found = sorted(glob.glob(os.path.join(list(pkg.__path__)[0], "lib", "libnvrtc.so*")))
    return ctypes.CDLL(found[0]) if found else None


@pytest.mark.skipif(_nvrtc() is None, reason="NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12)")
@pytest.mark.parametrize("src", gpu.SOURCES)
def test_each_source_compiles_with_nvrtc(src):
    """The compiler CuPy's RawModule uses, with the options gpu.module passes: no system headers."""
    import ctypes

    lib = _nvrtc()
    with open(os.path.join(gpu.HERE, src), "rb") as f:
        code = f.read()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), code, src.encode(), 0, None, None) == 0
    opts = [b"-std=c++17", f"-I{gpu.HERE}".encode(), b"--gpu-architecture=compute_80"]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    assert rc == 0, log.value.decode(errors="replace")


def test_every_launched_kernel_is_defined():
    with open(gpu.__file__) as f:
        text = f.read()
    asked = re.findall(r'kernel\("(\w+\.cu)", "(\w+)"', text)
    asked += [("reduce.cu", f"reduce_{op}") for op in ("sum", "max", "min")]  # kernel(..., f"reduce_{op}")
    assert len(asked) >= 23  # 11 nn (the bias gradient is CuPy's own sum), 8 state-vector, 4 reduce
    for src, name in asked:
        have = defined(src)
        for sfx in ("_f32", "_f64"):
            assert f"hpr_{name}{sfx}" in have, f"gpu.py launches hpr_{name}{sfx}, which {src} does not define"


def test_sources_are_installed_with_the_package():
    for src in gpu.SOURCES + ("common.cuh",):
        assert os.path.exists(os.path.join(gpu.HERE, src)), src


def test_importing_hpr_never_imports_cupy():
    code = "import sys, hpr, hpr.kernels.gpu, hpr.quantum; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(__file__))
    assert out.stdout.strip() == "False", out.stderr


def test_without_cupy_the_gpu_path_says_what_to_install(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_cupy(name, *a, **k):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    import hpr

    with pytest.raises(hpr.KernelsMissing, match="pip install cupy"):
        gpu.cupy()
    assert hpr.device.cupy_status() == "not installed (the GPU path needs cupy)"  # python -m hpr config
    assert not hpr.device.is_device_array([1.0]) and not hpr.device.is_device_array(None)


def test_every_launcher_is_reached_through_the_dispatch():
    """Each launcher of hpr/kernels/gpu.py is the GPU twin of a CPU function of nn, statevec or reduce
    (hpr.kernels.dispatch.device_twin), except the compiled programs, which hpr.quantum.Circuit launches
    itself; and the twins exist. A launcher nothing dispatches to would be dead or reached some other way."""
    import inspect

    from hpr.kernels import nn, reduce, statevec

    twins = set()
    for mod in (nn, statevec, reduce):
        for name, fn in vars(mod).items():
            if callable(getattr(fn, "gpu_twin", None)):
                t = fn.gpu_twin()
                assert callable(t), name
                if inspect.getmodule(t) is gpu:
                    twins.add(t.__name__)
    launchers = {n for n, f in vars(gpu).items() if inspect.isfunction(f) and f.__module__ == gpu.__name__
                 and not n.startswith("_") and n not in ("module", "kernel", "cupy")}
    assert launchers - twins == {"run_program", "adjoint_program"}
    assert twins <= launchers
