"""The ways hpr splits work over ranks: the process grid, data parallelism (gradient buckets
overlapped with backward, ZeRO-1/2/3), tensor parallelism, and the pipeline schedules. Usage:
``from hpr.parallel import DataParallel``"""
from .data import DataParallel, check_replicas, check_same_params, param_checksum
from .grid import ProcessGrid, valid_layouts
from .pipeline import Pipeline
from .tensor import TensorParallel
from .zero import paged_zeros

__all__ = ["DataParallel", "check_replicas", "check_same_params", "param_checksum", "ProcessGrid", "valid_layouts",
           "TensorParallel", "Pipeline", "paged_zeros"]
