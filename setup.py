"""setuptools build of hpr, the alternative to meson-python (``HPR_BUILD_BACKEND=setuptools pip install .``).

It compiles the same extension as meson.build from the same list, csrc/sources.txt, and probes the
compiler for OpenMP so a compiler without it still builds (serial kernels).
"""
import os
import sys
import tempfile

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def read_sources():
    with open(os.path.join(HERE, "csrc", "sources.txt")) as f:
        return [line.strip() for line in f if line.strip()]


class BuildExt(build_ext):
    """Adds OpenMP flags when a tiny test program compiles and links with them."""

    def _has_openmp(self):
        src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "omp_probe.c")
            with open(path, "w") as f:
                f.write(src)
            try:
                objs = self.compiler.compile([path], output_dir=tmp, extra_postargs=["-fopenmp"])
                self.compiler.link_executable(objs, os.path.join(tmp, "omp_probe"), extra_postargs=["-fopenmp"])
            except Exception:
                return False
        return True

    def build_extensions(self):
        omp = sys.platform != "win32" and self._has_openmp()
        for ext in self.extensions:
            ext.extra_compile_args += ["-O3", "-std=c11", "-D_GNU_SOURCE", "-fno-math-errno", "-fno-trapping-math", "-fwrapv", "-fopenmp-simd", "-Wno-psabi"]
            if omp:
                ext.extra_compile_args += ["-fopenmp", "-DHPR_HAVE_OPENMP=1"]
                ext.extra_link_args += ["-fopenmp"]
            ext.libraries += ["m"]
        super().build_extensions()


setup(
    packages=find_packages(include=["hpr", "hpr.*"]),
    package_data={"hpr": ["kernels/cuda/*.cu", "kernels/cuda/*.cuh"]},
    ext_modules=[Extension("hpr._kernels", read_sources(), include_dirs=["csrc"])],
    cmdclass={"build_ext": BuildExt},
)
