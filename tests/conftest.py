"""Shared test setup: the tests exercise the installed hpr (with its compiled kernels), as a user would."""
import os

import pytest


def pytest_configure(config):
    import hpr

    try:
        from hpr.cpu import cpu_kernels

        cpu_kernels()
    except hpr.KernelsMissing as e:
        raise pytest.UsageError(f"{e}\n(hpr imported from {os.path.dirname(hpr.__file__)})")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)
