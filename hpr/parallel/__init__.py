"""The ways hpr splits work over ranks: the process grid and data parallelism (gradient buckets
overlapped with backward, ZeRO-1). Tensor and pipeline parallelism join here. Usage:
``from hpr.parallel import DataParallel``"""
from .data import DataParallel, check_same_params, param_checksum

__all__ = ["DataParallel", "check_same_params", "param_checksum"]
