// hpr's layer kernels on the GPU: the twins of csrc/nn.c (same arguments and semantics, numpy twins
// in hpr/kernels/_ref.py). Each is a template instantiated for float (_f32) and double (_f64) under
// extern "C" names, loaded by hpr/kernels/gpu.py through CuPy's RawModule. Row kernels take one block
// per row; element kernels a grid-stride loop. Backward kernels ADD into parameter gradients.
#include "common.cuh"

#define HPR_GELU_K 0.7978845608028654  // sqrt(2 / pi)

template <typename T> __device__ __forceinline__ T hpr_exp(T x);
template <> __device__ __forceinline__ float hpr_exp<float>(float x) { return __expf(x); }
template <> __device__ __forceinline__ double hpr_exp<double>(double x) { return exp(x); }
template <typename T> __device__ __forceinline__ T hpr_log(T x);
template <> __device__ __forceinline__ float hpr_log<float>(float x) { return logf(x); }
template <> __device__ __forceinline__ double hpr_log<double>(double x) { return log(x); }
template <typename T> __device__ __forceinline__ T hpr_tanh(T x);
template <> __device__ __forceinline__ float hpr_tanh<float>(float x) { return tanhf(x); }
template <> __device__ __forceinline__ double hpr_tanh<double>(double x) { return tanh(x); }
template <typename T> __device__ __forceinline__ T hpr_sqrt(T x);
template <> __device__ __forceinline__ float hpr_sqrt<float>(float x) { return sqrtf(x); }
template <> __device__ __forceinline__ double hpr_sqrt<double>(double x) { return sqrt(x); }

// out = (x - mean) * rstd * w + b per row (one block per row); mean, rstd kept for backward
template <typename T>
__device__ void layernorm_forward(T *out, T *mean, T *rstd, const T *x, const T *w, const T *b, i64 N, i64 C,
                                  double eps) {
    __shared__ T sh[32];
    const i64 r = blockIdx.x;
    if (r >= N) return;
    const T *xr = x + r * C;
    T s = 0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
    const T mu = hpr_block_sum(s, sh) / (T)C;
    T q = 0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) q += (xr[c] - mu) * (xr[c] - mu);
    const T rs = (T)1 / hpr_sqrt(hpr_block_sum(q, sh) / (T)C + (T)eps);
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = (xr[c] - mu) * rs * w[c] + b[c];
    if (threadIdx.x == 0) { mean[r] = mu; rstd[r] = rs; }
}

// dx += dL/dx per row; dw += sum_rows dout * xhat, db += sum_rows dout (atomics across rows)
template <typename T>
__device__ void layernorm_backward(T *dx, T *dw, T *db, const T *dout, const T *x, const T *w, const T *mean,
                                   const T *rstd, i64 N, i64 C) {
    __shared__ T sh[32];
    const i64 r = blockIdx.x;
    if (r >= N) return;
    const T mu = mean[r], rs = rstd[r];
    const T *xr = x + r * C, *dr = dout + r * C;
    T s1 = 0, s2 = 0;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
        T xh = (xr[c] - mu) * rs, dn = dr[c] * w[c];
        s1 += dn;
        s2 += dn * xh;
    }
    const T m1 = hpr_block_sum(s1, sh) / (T)C, m2 = hpr_block_sum(s2, sh) / (T)C;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
        T xh = (xr[c] - mu) * rs, dn = dr[c] * w[c];
        dx[r * C + c] += (dn - m1 - xh * m2) * rs;
        atomicAdd(dw + c, dr[c] * xh);
        atomicAdd(db + c, dr[c]);
    }
}

// att[r, i, j] = softmax_{j <= i}(scale * pre[r, i, j]), 0 above the diagonal; one block per (r, i)
template <typename T> __device__ void softmax_causal_forward(T *att, const T *pre, i64 BH, i64 Tn, double scale) {
    __shared__ T sh[32];
    const i64 row = blockIdx.x;
    if (row >= BH * Tn) return;
    const i64 i = row % Tn;
    const T *p = pre + row * Tn;
    T *a = att + row * Tn;
    const T sc = (T)scale;
    T mx = -3.0e38;
    for (i64 j = threadIdx.x; j <= i; j += blockDim.x) mx = p[j] * sc > mx ? p[j] * sc : mx;
    mx = hpr_block_max(mx, sh);
    T s = 0;
    for (i64 j = threadIdx.x; j <= i; j += blockDim.x) s += hpr_exp(p[j] * sc - mx);
    const T inv = (T)1 / hpr_block_sum(s, sh);  // every read of p is done: att may be pre
    for (i64 j = threadIdx.x; j < Tn; j += blockDim.x) a[j] = j <= i ? hpr_exp(p[j] * sc - mx) * inv : (T)0;
}

// dpre = scale * att * (datt - sum_{j <= i} att * datt) on j <= i, 0 above; dpre may be datt
template <typename T>
__device__ void softmax_causal_backward(T *dpre, const T *datt, const T *att, i64 BH, i64 Tn, double scale) {
    __shared__ T sh[32];
    const i64 row = blockIdx.x;
    if (row >= BH * Tn) return;
    const i64 i = row % Tn;
    const T *a = att + row * Tn, *d = datt + row * Tn;
    T s = 0;
    for (i64 j = threadIdx.x; j <= i; j += blockDim.x) s += a[j] * d[j];
    s = hpr_block_sum(s, sh);
    for (i64 j = threadIdx.x; j < Tn; j += blockDim.x)
        dpre[row * Tn + j] = j <= i ? (T)scale * a[j] * (d[j] - s) : (T)0;
}

// x[n, c] += bias[c] (when has_bias), then out = gelu_tanh(x)
template <typename T> __device__ void gelu_forward(T *out, T *x, const T *bias, int has_bias, i64 N, i64 C) {
    for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < N * C; k += (i64)gridDim.x * blockDim.x) {
        T v = x[k];
        if (has_bias) x[k] = v = v + bias[k % C];
        T u = (T)HPR_GELU_K * (v + (T)0.044715 * v * v * v);
        out[k] = (T)0.5 * v * ((T)1 + hpr_tanh(u));
    }
}

// dx = dout * gelu_tanh'(x); dx may be dout
template <typename T> __device__ void gelu_backward(T *dx, const T *x, const T *dout, i64 n) {
    for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) {
        T v = x[k], th = hpr_tanh((T)HPR_GELU_K * (v + (T)0.044715 * v * v * v));
        T d = (T)0.5 * ((T)1 + th) + (T)0.5 * v * ((T)1 - th * th) * (T)HPR_GELU_K * ((T)1 + (T)3 * (T)0.044715 * v * v);
        dx[k] = dout[k] * d;
    }
}

// per row (one block): losses[n] = logsumexp(logits[n]) - logits[n, t]; with has_d, dlogits[n] =
// (softmax - onehot(t)) * dscale (dlogits may be logits); a target outside [0, V) adds 1 to *bad and
// leaves its row alone
template <typename T>
__device__ void crossentropy(T *losses, T *dlogits, const T *logits, const int *targets, i64 N, i64 V,
                             double dscale, int has_d, unsigned long long *bad) {
    __shared__ T sh[32];
    const i64 r = blockIdx.x;
    if (r >= N) return;
    const int t = targets[r];
    if (t < 0 || t >= V) {
        if (threadIdx.x == 0) atomicAdd(bad, 1ull);
        return;
    }
    const T *l = logits + r * V;
    T mx = -3.0e38;
    for (i64 j = threadIdx.x; j < V; j += blockDim.x) mx = l[j] > mx ? l[j] : mx;
    mx = hpr_block_max(mx, sh);
    T s = 0;
    for (i64 j = threadIdx.x; j < V; j += blockDim.x) s += hpr_exp(l[j] - mx);
    s = hpr_block_sum(s, sh);
    const T lt = l[t];
    __syncthreads();  // l[t] read by all before dlogits (which may be logits) is written
    if (threadIdx.x == 0) losses[r] = hpr_log(s) + mx - lt;
    if (has_d) {
        const T inv = (T)1 / s, ds = (T)dscale;
        for (i64 j = threadIdx.x; j < V; j += blockDim.x)
            dlogits[r * V + j] = (hpr_exp(l[j] - mx) * inv - (j == t ? (T)1 : (T)0)) * ds;
    }
}

// out[b, t] = wte[tokens[b, t]] + wpe[t] (one block per token); bad tokens counted, rows left alone
template <typename T>
__device__ void embedding_forward(T *out, const int *tokens, const T *wte, const T *wpe, i64 B, i64 Tn, i64 C, i64 V,
                                  unsigned long long *bad) {
    const i64 r = blockIdx.x;
    if (r >= B * Tn) return;
    const int tok = tokens[r];
    if (tok < 0 || tok >= V) {
        if (threadIdx.x == 0) atomicAdd(bad, 1ull);
        return;
    }
    const i64 t = r % Tn;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = wte[tok * C + c] + wpe[t * C + c];
}

// dwte[tokens[b, t]] += dout[b, t]; dwpe[t] += dout[b, t] (atomics: rows collide)
template <typename T>
__device__ void embedding_backward(T *dwte, T *dwpe, const T *dout, const int *tokens, i64 B, i64 Tn, i64 C) {
    const i64 r = blockIdx.x;
    if (r >= B * Tn) return;
    const i64 tok = tokens[r], t = r % Tn;
    for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
        atomicAdd(dwte + tok * C + c, dout[r * C + c]);
        atomicAdd(dwpe + t * C + c, dout[r * C + c]);
    }
}

// AdamW as csrc/nn_impl.h: g scaled by gscale; bc1 = 1 - beta1^t, bc2 = 1 - beta2^t
template <typename T>
__device__ void adamw(T *p, const T *g, T *m, T *v, i64 n, double lr, double beta1, double beta2, double eps, double wd,
                      double bc1, double bc2, double gscale) {
    const T b1 = (T)beta1, b2 = (T)beta2, gs = (T)gscale, ep = (T)eps, decay = (T)(1.0 - lr * wd);
    const T ib1 = (T)(1.0 / bc1), ib2 = (T)(1.0 / bc2), step = (T)lr;
    for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) {
        T gi = g[k] * gs, mi = b1 * m[k] + ((T)1 - b1) * gi, vi = b2 * v[k] + ((T)1 - b2) * gi * gi;
        m[k] = mi;
        v[k] = vi;
        p[k] = p[k] * decay - step * (mi * ib1) / (hpr_sqrt(vi * ib2) + ep);
    }
}

// *out += sum of x[k]^2, accumulated in double
template <typename T> __device__ void sumsq(double *out, const T *x, i64 n) {
    __shared__ double sh[32];
    double s = 0;
    for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x)
        s += (double)x[k] * (double)x[k];
    s = hpr_block_sum(s, sh);
    if (threadIdx.x == 0) atomicAdd(out, s);
}

#define HPR_NN_KERNELS(T, SFX)                                                                                \
    extern "C" __global__ void hpr_layernorm_forward##SFX(T *out, T *mean, T *rstd, const T *x, const T *w,   \
                                                          const T *b, i64 N, i64 C, double eps) {             \
        layernorm_forward<T>(out, mean, rstd, x, w, b, N, C, eps);                                             \
    }                                                                                                          \
    extern "C" __global__ void hpr_layernorm_backward##SFX(T *dx, T *dw, T *db, const T *dout, const T *x,    \
                                                           const T *w, const T *mean, const T *rstd, i64 N,  \
                                                           i64 C) {                                            \
        layernorm_backward<T>(dx, dw, db, dout, x, w, mean, rstd, N, C);                                      \
    }                                                                                                          \
    extern "C" __global__ void hpr_softmax_causal_forward##SFX(T *att, const T *pre, i64 BH, i64 Tn,          \
                                                               double scale) {                                \
        softmax_causal_forward<T>(att, pre, BH, Tn, scale);                                                    \
    }                                                                                                          \
    extern "C" __global__ void hpr_softmax_causal_backward##SFX(T *dpre, const T *datt, const T *att, i64 BH,  \
                                                                i64 Tn, double scale) {                       \
        softmax_causal_backward<T>(dpre, datt, att, BH, Tn, scale);                                            \
    }                                                                                                          \
    extern "C" __global__ void hpr_gelu_forward##SFX(T *out, T *x, const T *bias, int has_bias, i64 N, i64 C) { \
        gelu_forward<T>(out, x, bias, has_bias, N, C);                                                         \
    }                                                                                                          \
    extern "C" __global__ void hpr_gelu_backward##SFX(T *dx, const T *x, const T *dout, i64 n) {              \
        gelu_backward<T>(dx, x, dout, n);                                                                      \
    }                                                                                                          \
    extern "C" __global__ void hpr_crossentropy##SFX(T *losses, T *dlogits, const T *logits, const int *targets, \
                                                     i64 N, i64 V, double dscale, int has_d,                  \
                                                     unsigned long long *bad) {                               \
        crossentropy<T>(losses, dlogits, logits, targets, N, V, dscale, has_d, bad);                           \
    }                                                                                                          \
    extern "C" __global__ void hpr_embedding_forward##SFX(T *out, const int *tokens, const T *wte, const T *wpe, \
                                                          i64 B, i64 Tn, i64 C, i64 V, unsigned long long *bad) { \
        embedding_forward<T>(out, tokens, wte, wpe, B, Tn, C, V, bad);                                        \
    }                                                                                                          \
    extern "C" __global__ void hpr_embedding_backward##SFX(T *dwte, T *dwpe, const T *dout, const int *tokens, \
                                                           i64 B, i64 Tn, i64 C) {                            \
        embedding_backward<T>(dwte, dwpe, dout, tokens, B, Tn, C);                                             \
    }                                                                                                          \
    extern "C" __global__ void hpr_adamw##SFX(T *p, const T *g, T *m, T *v, i64 n, double lr, double beta1,    \
                                              double beta2, double eps, double wd, double bc1, double bc2,    \
                                              double gscale) {                                                 \
        adamw<T>(p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, gscale);                                  \
    }                                                                                                          \
    extern "C" __global__ void hpr_sumsq##SFX(double *out, const T *x, i64 n) { sumsq<T>(out, x, n); }

HPR_NN_KERNELS(float, _f32)
HPR_NN_KERNELS(double, _f64)
