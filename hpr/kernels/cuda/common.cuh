// Shared device helpers of hpr's CUDA kernels (included by the .cu files; compiled by NVRTC through
// CuPy's RawModule, so no system headers). Block reductions assume blockDim.x is a multiple of 32,
// at most 1024, and that every thread of the block calls them.
#pragma once

typedef long long i64;

struct HprSum {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct HprMax {
    template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return b > a ? b : a; }
};

template <typename T, typename Op> __device__ __forceinline__ T hpr_warp_reduce(T v, Op op) {
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// op over the block, returned to every thread; sh: 32 Ts of shared memory; identity: op's neutral value
template <typename T, typename Op> __device__ T hpr_block_reduce(T v, T *sh, Op op, T identity) {
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = hpr_warp_reduce(v, op);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T u = hpr_warp_reduce(lane < nw ? sh[lane] : identity, op);
        if (lane == 0) sh[0] = u;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads();  // sh may be reused at once
    return v;
}

template <typename T> __device__ __forceinline__ T hpr_block_sum(T v, T *sh) { return hpr_block_reduce(v, sh, HprSum(), T(0)); }
template <typename T> __device__ __forceinline__ T hpr_block_max(T v, T *sh) {
    return hpr_block_reduce(v, sh, HprMax(), T(-3.0e38));  // below any logit the kernels see
}
