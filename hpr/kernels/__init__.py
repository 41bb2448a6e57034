"""The faces of hpr's kernels, one module per family (nn, statevec, reduce): each runs the compiled CPU
kernel (hpr._kernels) on numpy arrays and hands a call whose first argument is a CuPy array to its GPU
twin in gpu.py, by the one seam in dispatch.py. _ref holds the numpy twin of every kernel: the spec the
tests hold them to; cuda/ the CUDA sources gpu.py loads. Usage:
``from hpr.kernels import reduce; reduce.reduce_into(a, b, "sum")``."""
