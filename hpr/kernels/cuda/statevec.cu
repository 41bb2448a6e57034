// hpr's state-vector kernels on the GPU: the twins of csrc/statevec.c, with the same conventions
// (qubit 0 the least significant bit; a 4x4 on (q1, q2) has q1 as its low bit; amplitudes interleaved
// (re, im) T pairs; a matrix per state at U + b * ustride Ts, ustride 0 = shared) and the same
// compiled-program rows {kind, q0, q1, mask, src, idx, off, 0} (csrc/statevec.h). Gate kernels take one
// thread per amplitude pair / group over the whole batch. A program over many small states runs as
// one launch with one block per state, the state in shared memory for the whole circuit (and, for the
// adjoint sweep, the adjoint state beside it), so thousands of circuits are not launch-bound.
#include "common.cuh"

enum { OP_1Q, OP_2Q, OP_D1, OP_D2, OP_X, OP_SWAP, OP_KQ, OP_RX, OP_RY, OP_RZ, OP_RZZ };
enum { SRC_NONE, SRC_FIXED, SRC_INPUT, SRC_WEIGHT };

__device__ __forceinline__ i64 ins0(i64 k, int q) { return ((k >> q) << (q + 1)) | (k & ((1ll << q) - 1)); }
__device__ __forceinline__ i64 ins00(i64 k, int lo, int hi) { return ins0(ins0(k, lo), hi); }

template <typename T> __device__ __forceinline__ void cmul_add(T ur, T ui, T xr, T xi, T &sr, T &si) {
    sr += ur * xr - ui * xi;
    si += ur * xi + ui * xr;
}

// (x, y) <- U (x, y) for the pair at a[2 i], a[2 (i + h)]
template <typename T> __device__ __forceinline__ void pair_1q(T *a, i64 i, i64 h, const T *u) {
    T *x = a + 2 * i, *y = a + 2 * (i + h);
    T xr = x[0], xi = x[1], yr = y[0], yi = y[1], sr = 0, si = 0, tr = 0, ti = 0;
    cmul_add(u[0], u[1], xr, xi, sr, si);
    cmul_add(u[2], u[3], yr, yi, sr, si);
    cmul_add(u[4], u[5], xr, xi, tr, ti);
    cmul_add(u[6], u[7], yr, yi, tr, ti);
    x[0] = sr; x[1] = si; y[0] = tr; y[1] = ti;
}

template <typename T> __device__ __forceinline__ void group_2q(T *a, i64 i, i64 o1, i64 o2, const T *u) {
    i64 idx[4] = {i, i + o1, i + o2, i + o1 + o2};
    T xr[4], xi[4];
    for (int c = 0; c < 4; c++) { xr[c] = a[2 * idx[c]]; xi[c] = a[2 * idx[c] + 1]; }
    for (int r = 0; r < 4; r++) {
        T sr = 0, si = 0;
        for (int c = 0; c < 4; c++) cmul_add(u[2 * (4 * r + c)], u[2 * (4 * r + c) + 1], xr[c], xi[c], sr, si);
        a[2 * idx[r]] = sr;
        a[2 * idx[r] + 1] = si;
    }
}

template <typename T> __device__ __forceinline__ void scale(T *a, i64 i, T dr, T di) {
    T xr = a[2 * i], xi = a[2 * i + 1];
    a[2 * i] = dr * xr - di * xi;
    a[2 * i + 1] = dr * xi + di * xr;
}

#define GRID_LOOP(k, n) for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < (n); k += (i64)gridDim.x * blockDim.x)

// ---- gate kernels over a batch (B states of 2**N amplitudes) ------------------------------------
template <typename T> __device__ void apply_1q(T *psi, i64 B, int N, int q, i64 cmask, const T *U, i64 us) {
    const i64 half = 1ll << (N - 1), h = 1ll << q;
    GRID_LOOP(k, B * half) {
        i64 b = k / half, i = ins0(k % half, q);
        if ((i & cmask) == cmask) pair_1q(psi + 2 * (b << N), i, h, U + b * us);
    }
}

template <typename T> __device__ void apply_2q(T *psi, i64 B, int N, int q1, int q2, const T *U, i64 us) {
    const i64 quarter = 1ll << (N - 2);
    const int lo = q1 < q2 ? q1 : q2, hi = q1 < q2 ? q2 : q1;
    GRID_LOOP(k, B * quarter) {
        i64 b = k / quarter, i = ins00(k % quarter, lo, hi);
        group_2q(psi + 2 * (b << N), i, 1ll << q1, 1ll << q2, U + b * us);
    }
}

// amplitude *= d[b(q1) + 2 b(q2)] (m = 2) or d[b(q1)] (m = 1)
template <typename T> __device__ void apply_diag(T *psi, i64 B, int N, int q1, int q2, int m, const T *d, i64 ds) {
    const i64 M = 1ll << N;
    GRID_LOOP(k, B * M) {
        i64 b = k >> N, i = k & (M - 1);
        int c = (int)((i >> q1) & 1) | (m == 2 ? (int)((i >> q2) & 1) << 1 : 0);
        const T *e = d + b * ds;
        scale(psi, k, e[2 * c], e[2 * c + 1]);
    }
}

template <typename T> __device__ void apply_x(T *psi, i64 B, int N, int q, i64 cmask) {
    const i64 half = 1ll << (N - 1), h = 1ll << q;
    GRID_LOOP(k, B * half) {
        i64 b = k / half, i = ins0(k % half, q);
        if ((i & cmask) != cmask) continue;
        T *x = psi + 2 * ((b << N) + i), *y = x + 2 * h, tr = x[0], ti = x[1];
        x[0] = y[0]; x[1] = y[1]; y[0] = tr; y[1] = ti;
    }
}

template <typename T> __device__ void apply_swap(T *psi, i64 B, int N, int q1, int q2) {
    const i64 quarter = 1ll << (N - 2);
    const int lo = q1 < q2 ? q1 : q2, hi = q1 < q2 ? q2 : q1;
    GRID_LOOP(k, B * quarter) {
        i64 b = k / quarter, i = ins00(k % quarter, lo, hi);
        T *x = psi + 2 * ((b << N) + i + (1ll << q1)), *y = psi + 2 * ((b << N) + i + (1ll << q2));
        T tr = x[0], ti = x[1];
        x[0] = y[0]; x[1] = y[1]; y[0] = tr; y[1] = ti;
    }
}

// out[b, q] = sum_i |psi_b[i]|^2 (1 - 2 bit_q(i)): one block per state, N <= 62
template <typename T> __device__ void expval_z(double *out, const T *psi, i64 B, int N) {
    __shared__ double sh[32];
    const i64 b = blockIdx.x;
    if (b >= B) return;
    const T *a = psi + 2 * (b << N);
    const i64 M = 1ll << N;
    double tot = 0;
    for (i64 i = threadIdx.x; i < M; i += blockDim.x) tot += (double)a[2 * i] * a[2 * i] + (double)a[2 * i + 1] * a[2 * i + 1];
    tot = hpr_block_sum(tot, sh);
    for (int q = 0; q < N; q++) {
        double s = 0;
        for (i64 i = threadIdx.x; i < M; i += blockDim.x)
            if ((i >> q) & 1) s += (double)a[2 * i] * a[2 * i] + (double)a[2 * i + 1] * a[2 * i + 1];
        s = hpr_block_sum(s, sh);
        if (threadIdx.x == 0) out[b * N + q] = tot - 2 * s;
    }
}

// ---- compiled programs: one block per small state, in shared memory ------------------------------
template <typename T> __device__ __forceinline__ double op_angle(const i64 *op, const double *fixed, const double *in_b,
                                                                 const double *w) {
    return op[4] == SRC_INPUT ? in_b[op[5]] : op[4] == SRC_WEIGHT ? w[op[5]] : fixed[op[5]];
}

// the 2x2 (RX, RY: 8 Ts) or diagonal (RZ: 4, RZZ: 8 Ts) of a rotation by sign * theta
template <typename T> __device__ void rot_matrix(const i64 *op, double theta, int sign, T *u) {
    double c = cos(0.5 * sign * theta), s = sin(0.5 * sign * theta);
    switch (op[0]) {
    case OP_RX: u[0] = c; u[1] = 0; u[2] = 0; u[3] = -s; u[4] = 0; u[5] = -s; u[6] = c; u[7] = 0; break;
    case OP_RY: u[0] = c; u[1] = 0; u[2] = -s; u[3] = 0; u[4] = s; u[5] = 0; u[6] = c; u[7] = 0; break;
    case OP_RZ: u[0] = c; u[1] = -s; u[2] = c; u[3] = s; break;
    default: u[0] = c; u[1] = -s; u[2] = c; u[3] = s; u[4] = c; u[5] = s; u[6] = c; u[7] = -s; break;
    }
}

// one op on the block's state a (2**N amplitudes in shared memory); every thread calls it
template <typename T>
__device__ void block_op(T *a, int N, const i64 *op, const T *mats, const double *fixed, const double *in_b,
                         const double *w, int sign) {
    const i64 M = 1ll << N;
    const int kind = (int)op[0], q0 = (int)op[1], q1 = (int)op[2];
    const i64 mask = op[3];
    T r[8];
    const T *u = mats + op[6];
    if (kind >= OP_RX) {
        rot_matrix<T>(op, op_angle<T>(op, fixed, in_b, w), sign, r);
        u = r;
    }
    if (kind == OP_1Q || kind == OP_RX || kind == OP_RY) {
        for (i64 k = threadIdx.x; k < M / 2; k += blockDim.x) {
            i64 i = ins0(k, q0);
            if ((i & mask) == mask) pair_1q(a, i, 1ll << q0, u);
        }
    } else if (kind == OP_2Q) {
        const int lo = q0 < q1 ? q0 : q1, hi = q0 < q1 ? q1 : q0;
        for (i64 k = threadIdx.x; k < M / 4; k += blockDim.x) group_2q(a, ins00(k, lo, hi), 1ll << q0, 1ll << q1, u);
    } else if (kind == OP_D1 || kind == OP_RZ || kind == OP_D2 || kind == OP_RZZ) {
        const int two = kind == OP_D2 || kind == OP_RZZ;
        for (i64 i = threadIdx.x; i < M; i += blockDim.x) {
            int c = (int)((i >> q0) & 1) | (two ? (int)((i >> q1) & 1) << 1 : 0);
            scale(a, i, u[2 * c], u[2 * c + 1]);
        }
    } else if (kind == OP_X) {
        for (i64 k = threadIdx.x; k < M / 2; k += blockDim.x) {
            i64 i = ins0(k, q0);
            if ((i & mask) != mask) continue;
            T *x = a + 2 * i, *y = a + 2 * (i + (1ll << q0)), tr = x[0], ti = x[1];
            x[0] = y[0]; x[1] = y[1]; y[0] = tr; y[1] = ti;
        }
    } else if (kind == OP_SWAP) {
        const int lo = q0 < q1 ? q0 : q1, hi = q0 < q1 ? q1 : q0;
        for (i64 k = threadIdx.x; k < M / 4; k += blockDim.x) {
            i64 i = ins00(k, lo, hi);
            T *x = a + 2 * (i + (1ll << q0)), *y = a + 2 * (i + (1ll << q1)), tr = x[0], ti = x[1];
            x[0] = y[0]; x[1] = y[1]; y[0] = tr; y[1] = ti;
        }
    } else {  // OP_KQ: a dense block on the qubits of mask, the lowest the low bit
        int pos[5], K = 0;
        for (int q = 0; q < N && K < 5; q++)
            if ((mask >> q) & 1) pos[K++] = q;
        const int D = 1 << K;
        for (i64 g = threadIdx.x; g < (M >> K); g += blockDim.x) {
            i64 base = g;
            for (int t = 0; t < K; t++) base = ins0(base, pos[t]);
            T xr[32], xi[32];
            for (int c = 0; c < D; c++) {
                i64 o = base;
                for (int t = 0; t < K; t++)
                    if ((c >> t) & 1) o += 1ll << pos[t];
                xr[c] = a[2 * o];
                xi[c] = a[2 * o + 1];
            }
            for (int rr = 0; rr < D; rr++) {
                T sr = 0, si = 0;
                for (int c = 0; c < D; c++) cmul_add(u[2 * (rr * D + c)], u[2 * (rr * D + c) + 1], xr[c], xi[c], sr, si);
                i64 o = base;
                for (int t = 0; t < K; t++)
                    if ((rr >> t) & 1) o += 1ll << pos[t];
                a[2 * o] = sr;
                a[2 * o + 1] = si;
            }
        }
    }
    __syncthreads();
}

// psi <- the program on every state; launch with B blocks and 2 * 2**N * sizeof(T) bytes of dynamic
// shared memory (N <= 11 for float, 10 for double on a 48 KiB default)
template <typename T>
__device__ void run_program(T *psi, i64 B, int N, const i64 *ops, i64 nops, const T *mats, const double *fixed,
                            const double *inputs, i64 nin, const double *weights) {
    extern __shared__ __align__(16) unsigned char smem[];
    T *a = (T *)smem;
    const i64 b = blockIdx.x, M = 1ll << N;
    if (b >= B) return;
    T *g = psi + 2 * (b << N);
    for (i64 i = threadIdx.x; i < 2 * M; i += blockDim.x) a[i] = g[i];
    __syncthreads();
    for (i64 k = 0; k < nops; k++) block_op<T>(a, N, ops + 8 * k, mats, fixed, inputs + b * nin, weights, 1);
    for (i64 i = threadIdx.x; i < 2 * M; i += blockDim.x) g[i] = a[i];
}

// Im <lam| G |psi> over the block's states, G the generator (X, Y, Z on q0, or Z Z on q0, q1)
template <typename T> __device__ double generator_overlap(const T *l, const T *a, int N, const i64 *op, double *sh) {
    const i64 M = 1ll << N, b0 = 1ll << op[1];
    const i64 xm = op[0] == OP_RX || op[0] == OP_RY ? b0 : 0;
    const i64 zm = op[0] == OP_RY || op[0] == OP_RZ ? b0 : op[0] == OP_RZZ ? b0 | (1ll << op[2]) : 0;
    double re = 0, im = 0;
    for (i64 i = threadIdx.x; i < M; i += blockDim.x) {  // sum conj(l[i ^ x]) (-1)^popc(i & z) a[i]
        i64 j = i ^ xm;
        double sg = (__popcll(i & zm) & 1) ? -1.0 : 1.0;
        double pr = l[2 * j], pi = l[2 * j + 1], vr = a[2 * i], vi = a[2 * i + 1];
        re += sg * (pr * vr + pi * vi);
        im += sg * (pr * vi - pi * vr);
    }
    re = hpr_block_sum(re, sh);
    im = hpr_block_sum(im, sh);
    // <l|P|a> with P = i^ny X^x Z^z, ny = 1 for Y: Im(i (re + i im)) = re; else Im = im
    return op[0] == OP_RY ? re : im;
}

// the adjoint sweep, one block per state: psi (final states, undone in place), g (B, N) upstream
// gradient of <Z_q>; adds d/d inputs into din (B, nin) and each state's d/d weights into dw (B, nw).
// Dynamic shared memory: 4 * 2**N * sizeof(T) bytes (psi and lam).
template <typename T>
__device__ void adjoint(T *psi, i64 B, int N, const double *g, const i64 *ops, i64 nops, const T *imats,
                        const double *fixed, const double *inputs, i64 nin, const double *weights, i64 nw, double *din,
                        double *dw) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ double sh[32];
    const i64 b = blockIdx.x, M = 1ll << N;
    if (b >= B) return;
    T *a = (T *)smem, *l = a + 2 * M, *gp = psi + 2 * (b << N);
    const double *gb = g + b * N, *in_b = inputs + b * nin;
    for (i64 i = threadIdx.x; i < M; i += blockDim.x) {
        double o = 0;
        for (int q = 0; q < N; q++) o += ((i >> q) & 1) ? -gb[q] : gb[q];
        a[2 * i] = gp[2 * i];
        a[2 * i + 1] = gp[2 * i + 1];
        l[2 * i] = (T)o * gp[2 * i];
        l[2 * i + 1] = (T)o * gp[2 * i + 1];
    }
    __syncthreads();
    for (i64 k = nops - 1; k >= 0; k--) {
        const i64 *op = ops + 8 * k;
        if (op[4] == SRC_INPUT || op[4] == SRC_WEIGHT) {
            double d = generator_overlap<T>(l, a, N, op, sh);
            if (threadIdx.x == 0) {
                if (op[4] == SRC_INPUT) din[b * nin + op[5]] += d;
                else dw[b * nw + op[5]] += d;
            }
        }
        block_op<T>(a, N, op, imats, fixed, in_b, weights, -1);
        block_op<T>(l, N, op, imats, fixed, in_b, weights, -1);
    }
    for (i64 i = threadIdx.x; i < 2 * M; i += blockDim.x) gp[i] = a[i];
}

#define HPR_SV_KERNELS(T, SFX)                                                                                 \
    extern "C" __global__ void hpr_sv_apply_1q##SFX(T *psi, i64 B, int N, int q, i64 cmask, const T *U, i64 us) { \
        apply_1q<T>(psi, B, N, q, cmask, U, us);                                                                \
    }                                                                                                           \
    extern "C" __global__ void hpr_sv_apply_2q##SFX(T *psi, i64 B, int N, int q1, int q2, const T *U, i64 us) {  \
        apply_2q<T>(psi, B, N, q1, q2, U, us);                                                                  \
    }                                                                                                           \
    extern "C" __global__ void hpr_sv_apply_diag##SFX(T *psi, i64 B, int N, int q1, int q2, int m, const T *d,  \
                                                      i64 ds) {                                                 \
        apply_diag<T>(psi, B, N, q1, q2, m, d, ds);                                                             \
    }                                                                                                           \
    extern "C" __global__ void hpr_sv_apply_x##SFX(T *psi, i64 B, int N, int q, i64 cmask) {                  \
        apply_x<T>(psi, B, N, q, cmask);                                                                        \
    }                                                                                                           \
    extern "C" __global__ void hpr_sv_apply_swap##SFX(T *psi, i64 B, int N, int q1, int q2) {                 \
        apply_swap<T>(psi, B, N, q1, q2);                                                                       \
    }                                                                                                           \
    extern "C" __global__ void hpr_sv_expval_z##SFX(double *out, const T *psi, i64 B, int N) {                \
        expval_z<T>(out, psi, B, N);                                                                            \
    }                                                                                                           \
    extern "C" __global__ void hpr_sv_run##SFX(T *psi, i64 B, int N, const i64 *ops, i64 nops, const T *mats,   \
                                               const double *fixed, const double *inputs, i64 nin,             \
                                               const double *weights) {                                        \
        run_program<T>(psi, B, N, ops, nops, mats, fixed, inputs, nin, weights);                                \
    }                                                                                                           \
    extern "C" __global__ void hpr_sv_adjoint##SFX(T *psi, i64 B, int N, const double *g, const i64 *ops,       \
                                                   i64 nops, const T *imats, const double *fixed,               \
                                                   const double *inputs, i64 nin, const double *weights, i64 nw,\
                                                   double *din, double *dw) {                                   \
        adjoint<T>(psi, B, N, g, ops, nops, imats, fixed, inputs, nin, weights, nw, din, dw);                   \
    }

HPR_SV_KERNELS(float, _f32)
HPR_SV_KERNELS(double, _f64)
