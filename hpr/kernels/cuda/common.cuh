// Shared device helpers of hpr's CUDA kernels (included by the .cu files; compiled by NVRTC through
// CuPy's RawModule, so no system headers). Block reductions assume blockDim.x is a multiple of 32,
// at most 1024, and that every thread of the block calls them.
#pragma once

typedef long long i64;

template <typename T> __device__ __forceinline__ T hpr_warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ __forceinline__ T hpr_warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

// the sum over the block, returned to every thread; sh: 32 Ts of shared memory
template <typename T> __device__ T hpr_block_sum(T v, T *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = hpr_warp_sum(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T u = lane < nw ? sh[lane] : T(0);
        u = hpr_warp_sum(u);
        if (lane == 0) sh[0] = u;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();  // sh may be reused at once
    return v;
}

template <typename T> __device__ T hpr_block_max(T v, T *sh) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = hpr_warp_max(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T u = lane < nw ? sh[lane] : sh[0];
        u = hpr_warp_max(u);
        if (lane == 0) sh[0] = u;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}
