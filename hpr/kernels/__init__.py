"""The faces of hpr's kernels, one module per family; each picks the compiled CPU kernel (or, later, the
CuPy one) from the array's type. _ref holds the numpy twin of every kernel: the spec tests hold them to.
Usage: ``from hpr.kernels import reduce; reduce.reduce_into(a, b, "sum")``."""
