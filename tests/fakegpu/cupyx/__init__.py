"""Fake cupyx: pinned host buffers (plain numpy arrays) and scatter_add/max/min on fake device arrays."""
import numpy as np

import cupy


def empty_pinned(shape, dtype=float, order="C"):
    return np.empty(shape, dtype, order)


def zeros_pinned(shape, dtype=float, order="C"):
    return np.zeros(shape, dtype, order)


def empty_like_pinned(a, dtype=None, order="K", subok=None, shape=None):
    return np.empty(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


def zeros_like_pinned(a, dtype=None, order="K", subok=None, shape=None):
    return np.zeros(a.shape if shape is None else shape, a.dtype if dtype is None else dtype)


def _scatter(ufunc):
    def scatter(a, slices, value):
        if not isinstance(a, cupy.ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        ufunc.at(cupy._dev(a), cupy._index(slices), cupy._host(value))
    scatter.__name__ = f"scatter_{ufunc.__name__.replace('imum', '')}"
    return scatter


scatter_add, scatter_max, scatter_min = _scatter(np.add), _scatter(np.maximum), _scatter(np.minimum)
