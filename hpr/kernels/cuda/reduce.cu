// The reduction kernels hpr's collectives use on device buffers: acc[k] = acc[k] op x[k] for float and
// double, op sum / max / min, and acc[k] *= s (the average's final scale). The twins of csrc/reduce.c
// (numpy twin: hpr/kernels/_ref.py reduce_into).
#include "common.cuh"

#define GRID(k, n) for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < (n); k += (i64)gridDim.x * blockDim.x)

#define HPR_REDUCE_KERNELS(T, SFX)                                                                   \
    extern "C" __global__ void hpr_reduce_sum##SFX(T *acc, const T *x, i64 n) { GRID(k, n) acc[k] += x[k]; } \
    extern "C" __global__ void hpr_reduce_max##SFX(T *acc, const T *x, i64 n) {                     \
        GRID(k, n) acc[k] = x[k] > acc[k] ? x[k] : acc[k];                                           \
    }                                                                                                \
    extern "C" __global__ void hpr_reduce_min##SFX(T *acc, const T *x, i64 n) {                     \
        GRID(k, n) acc[k] = x[k] < acc[k] ? x[k] : acc[k];                                           \
    }                                                                                                \
    extern "C" __global__ void hpr_scale##SFX(T *acc, double s, i64 n) { GRID(k, n) acc[k] *= (T)s; }

HPR_REDUCE_KERNELS(float, _f32)
HPR_REDUCE_KERNELS(double, _f64)
