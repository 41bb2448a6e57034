/* Fused kernels for hpr's GPT layers: LayerNorm, causal softmax, GELU, cross-entropy, embeddings,
 * bias gradients and the AdamW update. Each exists for float (_f32) and double (_f64); both are
 * generated from nn_impl.h. Buffers in, buffers out: no allocation, no MPI, no Python. Backward
 * kernels ADD into parameter gradients (and into dx where the name says so), as llm.c's do.
 *
 * Names of dimensions: N rows (= B*T tokens), C channels, V vocabulary, BH = batch*heads, T time.
 * nthreads: OpenMP threads for the row loops (1 = serial; ignored without OpenMP). Each kernel is
 * compiled for every instruction-set level and called through the table of the level in use
 * (hpr_nn_set_isa, below). */
#ifndef HPR_NN_H
#define HPR_NN_H
#include <stdint.h>

#define HPR_NN_DECLARE(REAL, SFX)                                                                     \
    /* out = (x - mean) * rstd * w + b per row; mean, rstd (N) kept for backward. */                \
    void hpr_layernorm_forward##SFX(REAL *out, REAL *mean, REAL *rstd, const REAL *x, const REAL *w, \
                                    const REAL *b, int64_t N, int64_t C, double eps, int nthreads);  \
    /* dx += dL/dx; dw += sum dout*xhat; db += sum dout. scratch: 2*C*nthreads REALs. */            \
    void hpr_layernorm_backward##SFX(REAL *dx, REAL *dw, REAL *db, const REAL *dout, const REAL *x,  \
                                     const REAL *w, const REAL *mean, const REAL *rstd, int64_t N,   \
                                     int64_t C, REAL *scratch, int nthreads);                        \
    /* att[r, i, j] = softmax_{j<=i}(scale * pre[r, i, j]), 0 for j > i; att may be pre. */         \
    void hpr_softmax_causal_forward##SFX(REAL *att, const REAL *pre, int64_t BH, int64_t T,          \
                                         double scale, int nthreads);                                \
    /* dpre = scale * att * (datt - sum_j att*datt) on j <= i, 0 above; dpre may be datt. */        \
    void hpr_softmax_causal_backward##SFX(REAL *dpre, const REAL *datt, const REAL *att, int64_t BH, \
                                          int64_t T, double scale, int nthreads);                    \
    /* x[n, c] += bias[c] (bias may be NULL), then out = gelu_tanh(x). */                            \
    void hpr_gelu_forward##SFX(REAL *out, REAL *x, const REAL *bias, int64_t N, int64_t C,           \
                               int nthreads);                                                        \
    /* dx = dout * gelu_tanh'(x); dx may be dout. */                                                 \
    void hpr_gelu_backward##SFX(REAL *dx, const REAL *x, const REAL *dout, int64_t n, int nthreads); \
    /* Per row: losses[n] = logsumexp(logits[n]) - logits[n, t]; if dlogits != NULL,                 \
     * dlogits[n] = (softmax(logits[n]) - onehot(t)) * dscale (dlogits may be logits).               \
     * Returns the number of targets outside [0, V) (those rows are left untouched). */             \
    int64_t hpr_crossentropy##SFX(REAL *losses, REAL *dlogits, const REAL *logits,                   \
                                  const int32_t *targets, int64_t N, int64_t V, double dscale,       \
                                  int nthreads);                                                     \
    /* out[b, t] = wte[tokens[b, t]] + wpe[t]. Returns the count of tokens outside [0, V). */        \
    int64_t hpr_embedding_forward##SFX(REAL *out, const int32_t *tokens, const REAL *wte,            \
                                       const REAL *wpe, int64_t B, int64_t T, int64_t C, int64_t V,  \
                                       int nthreads);                                                \
    /* dwte[tokens[b, t]] += dout[b, t]; dwpe[t] += sum_b dout[b, t] (serial: rows collide). */      \
    void hpr_embedding_backward##SFX(REAL *dwte, REAL *dwpe, const REAL *dout, const int32_t *tokens,\
                                     int64_t B, int64_t T, int64_t C);                               \
    /* out[n, c] = x[n, c] + (a[n, c] + bias[c]), or a[n, c] + bias[c] when x is NULL (a Linear's bias   \
     * and the residual add after it in one pass); out may be a or x. */                            \
    void hpr_bias_residual##SFX(REAL *out, const REAL *a, const REAL *bias, const REAL *x, int64_t N,   \
                                int64_t C, int nthreads);                                            \
    /* db[c] += sum_n dout[n, c]. */                                                                 \
    void hpr_bias_backward##SFX(REAL *db, const REAL *dout, int64_t N, int64_t C, int nthreads);     \
    /* AdamW (decoupled decay) on n elements; g is multiplied by gscale (clipping) first;           \
     * bc1 = 1 - beta1^t, bc2 = 1 - beta2^t. */                                                      \
    void hpr_adamw##SFX(REAL *p, const REAL *g, REAL *m, REAL *v, int64_t n, double lr, double beta1,\
                        double beta2, double eps, double wd, double bc1, double bc2, double gscale,  \
                        int nthreads);                                                               \
    /* adamw over nseg segments [seg[2k], seg[2k+1]) of p and g (m and v indexed from mlo: m[i - mlo]), \
     * segment k decayed by wd[k]: element for element the bits of one hpr_adamw call per segment,      \
     * in one thread team (the optimizer's ~33 segments of preset S in one call). */                   \
    void hpr_adamw_segments##SFX(REAL *p, const REAL *g, REAL *m, REAL *v, const int64_t *seg,          \
                                 const double *wd, int64_t nseg, int64_t mlo, double lr, double beta1,  \
                                 double beta2, double eps, double bc1, double bc2, double gscale,       \
                                 int nthreads);                                                      \
    /* sum of squares, accumulated in double. */                                                     \
    double hpr_sumsq##SFX(const REAL *x, int64_t n, int nthreads);                                   \
    /* causal attention over (sequence, head) pairs in the flash style (attention_impl.h): y and the  \
     * row log-sum-exp lse (B, H, T) out; backward recomputes the probabilities from lse. */        \
    void hpr_attention_forward##SFX(REAL *y, REAL *lse, const REAL *q, const REAL *k, const REAL *v, \
                                    int64_t B, int64_t T, int64_t H, int64_t D, int64_t sq,          \
                                    int64_t sy, double scale, REAL *scratch, int nthreads);          \
    void hpr_attention_backward##SFX(REAL *dq, REAL *dk, REAL *dv, const REAL *dy, const REAL *y,    \
                                     const REAL *lse, const REAL *q, const REAL *k, const REAL *v,   \
                                     int64_t B, int64_t T, int64_t H, int64_t D, int64_t sq,         \
                                     int64_t sy, double scale, REAL *scratch, int nthreads);         \
    /* one LSTM time step, gates [i | f | g | o] (see nn_impl.h) */                                  \
    void hpr_lstm_cell_forward##SFX(REAL *a, REAL *c, REAL *tc, REAL *h, const REAL *c_prev,         \
                                    int64_t B, int64_t H);                                           \
    void hpr_lstm_cell_backward##SFX(REAL *da, REAL *dc_prev, const REAL *dh, const REAL *dc_next,   \
                                     const REAL *gates, const REAL *c_prev, const REAL *tc,          \
                                     int64_t B, int64_t H);

HPR_NN_DECLARE(float, _f32)
HPR_NN_DECLARE(double, _f64)

/* The signature of a CBLAS gemm with 64-bit integers (OpenBLAS's ILP64 interface: numpy's bundled
 * scipy_cblas_sgemm64_ / scipy_cblas_dgemm64_), row-major: C = alpha op(A) op(B) + beta C. */
typedef void (*hpr_sgemm_fn)(int order, int transa, int transb, int64_t m, int64_t n, int64_t k, float alpha,
                             const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                             int64_t ldc);
typedef void (*hpr_dgemm_fn)(int order, int transa, int transb, int64_t m, int64_t n, int64_t k, double alpha,
                             const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                             double *c, int64_t ldc);
/* out (M, N), row stride ldo, = op(a) (M, K) @ op(b) (K, N) through the given gemm, out cut along
 * `by_rows` ? its rows : its columns into blocks of `step` (the last shorter), one gemm call per block,
 * the blocks spread over nthreads OpenMP threads (each call single-threaded: the caller holds the BLAS to
 * one thread). ta / tb: 1 when a / b is stored transposed (a column-major view), with leading
 * dimensions lda / ldb. The same calls on the same blocks as a loop of numpy products: the same bits.
 * acc (M, N), C-contiguous, or NULL: acc += out, each block by the thread that computed it, right after
 * its gemm (a weight gradient's W.grad += x^T dy: the same additions as numpy's, in cache). */
void hpr_matmul_split_f32(hpr_sgemm_fn gemm, float *out, const float *a, const float *b, int64_t M, int64_t N,
                          int64_t K, int ta, int64_t lda, int tb, int64_t ldb, int64_t ldo, int by_rows,
                          int64_t step, float *acc, int nthreads);
void hpr_matmul_split_f64(hpr_dgemm_fn gemm, double *out, const double *a, const double *b, int64_t M,
                          int64_t N, int64_t K, int ta, int64_t lda, int tb, int64_t ldb, int64_t ldo,
                          int by_rows, int64_t step, double *acc, int nthreads);

/* REALs of scratch one thread of the attention kernels needs: O(T D) (head size D <= 128). */
int64_t hpr_attention_scratch(int64_t T, int64_t D);

/* Instruction-set levels (hpr_clones.h: 0 baseline, 1 avx2, 2 avx512). hpr_nn_isa_widest: the widest
 * this build runs on this CPU; hpr_nn_set_isa(level): use that level's kernels from now on (every
 * level up to the widest exists; returns the level, or -1 if it is above the widest and nothing
 * changed); hpr_nn_isa: the level in use. Not to be called while kernels run on other threads. */
int hpr_nn_isa_widest(void);
int hpr_nn_set_isa(int level);
int hpr_nn_isa(void);
#endif
