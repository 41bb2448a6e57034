"""hpr.cpu's thread count: asking for more than one thread of kernels built without OpenMP warns, once
per process (the build's answer is faked here by replacing the compiled extension's info())."""
import warnings

import pytest

from hpr import cpu


class Kernels:
    def __init__(self, openmp):
        self.openmp = openmp

    def info(self):
        return {"openmp": self.openmp, "omp_max_threads": 4 if self.openmp else 1}


@pytest.fixture
def fake_build(monkeypatch):
    old = cpu.num_threads()

    def use(openmp):
        monkeypatch.setattr(cpu, "_kernels", Kernels(openmp))
        monkeypatch.setattr(cpu, "_warned_serial", False)
    yield use
    monkeypatch.undo()
    cpu.set_num_threads(old)


def serial_warnings(n):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        cpu.set_num_threads(n)
    return [str(w.message) for w in got if "without OpenMP" in str(w.message)]


def test_threads_without_openmp_warn_once(fake_build):
    fake_build(openmp=False)
    assert serial_warnings(1) == []  # one thread: nothing lost
    said = serial_warnings(4)
    assert len(said) == 1 and said[0].startswith("4 threads per rank were asked for") and "one thread" in said[0]
    assert serial_warnings(2) == []  # once per process


def test_threads_with_openmp_do_not_warn(fake_build):
    fake_build(openmp=True)
    assert serial_warnings(4) == []
