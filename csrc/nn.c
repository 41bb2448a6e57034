/* hpr's fused layer kernels (see nn.h), compiled once per instruction-set level and chosen at run time.
 *
 * The bodies live in nn_impl.h and attention_impl.h; nn_level.h compiles them for float and double
 * and fills one op table per (level, type). This file includes nn_level.h once per level, each inside
 * that level's target region (hpr_clones.h), and defines the public hpr_*_f32 / hpr_*_f64 functions
 * as calls through the table of the level in use: the widest this CPU has (chosen at import), or a
 * lower one that hpr_nn_set_isa asked for (HPR_ISA; tests run every level this way). A compiler
 * without target pragmas builds the baseline only. Never -march=native: the wheel runs anywhere.
 *
 * OpenMP splits rows over threads when there is enough work; "omp simd" (honoured with -fopenmp-simd
 * even without OpenMP) lets the row loops vectorise their sums. Products contract to FMA here
 * (fp-contract=fast, GCC's default outside ISO C mode) wherever the level has it. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef HPR_HAVE_OPENMP
#include <omp.h>
#endif
#include "nn.h"

#include "hpr_clones.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
/* no loop splitting: at -O3 GCC split the attention tile loops at their causal mask (j < n) into a
 * vector part and a scalar part that stored the masked zeros one at a time (~10% of the forward) */
#pragma GCC optimize("no-split-loops")
#endif

#define HPR_NN_OMP_MIN (1 << 16)  /* elements: below this a thread team costs more than it saves */
#define HPR_NN_BIAS_OMP_MIN (1 << 24)  /* bias_backward: memory-bound, see nn_impl.h */
#define HPR_NN_CHUNK 4096         /* element-wise kernels: threads take blocks, each one SIMD loop */
/* attention tiles: ATT_BQ queries by ATT_BK keys (BK a multiple of BQ, both of every level's MR);
 * head rows padded to ATT_PAD elements (a multiple of every level's vector) */
#ifndef ATT_BQ
#define ATT_BQ 32
#endif
#ifndef ATT_BK
#define ATT_BK 64
#endif
#define ATT_PAD 16
#ifndef ATT_PREFETCH
#define ATT_PREFETCH 16
#endif
/* ATT_PREFETCH: rows ahead the packing loops prefetch */
#define ATT_ROUND(n, m) (((n) + (m) - 1) / (m) * (m))
/* per thread, the larger of the two passes' needs, plus 16 elements of slack to align the thread's
 * block to 64 bytes (every term is a multiple of 16, so every buffer inside stays aligned too).
 * forward: Qs^T (D <= Dp, Tp), K and V (Tp, Dp), the O tile (BQ, Dp), the S^T tile (BK, BQ), m, l, a (BQ);
 * backward: 7 (Tp, Dp) buffers, the dQ tile (BQ, Dp), the S and dP tiles (BQ, BK), Di (Tp). */
#define ATT_SCRATCH_FWD(Tp, Dp) (3 * (Tp) * (Dp) + (Dp) * ATT_BQ + ATT_BK * ATT_BQ + 3 * ATT_BQ)
#define ATT_SCRATCH_BWD(Tp, Dp) (7 * (Tp) * (Dp) + ATT_BQ * (Dp) + 2 * ATT_BQ * ATT_BK + (Tp))
#define ATT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define HPR_ATT_SCRATCH(T, D)                                                                 \
    (ATT_MAX(ATT_SCRATCH_FWD(ATT_ROUND(T, ATT_BK), ATT_ROUND(D, ATT_PAD)),                     \
             ATT_SCRATCH_BWD(ATT_ROUND(T, ATT_BK), ATT_ROUND(D, ATT_PAD))) + 16)

#define HPR_PRAGMA(x) _Pragma(#x)
#define SIMD HPR_PRAGMA(omp simd)
#define SIMD_SUM(v) HPR_PRAGMA(omp simd reduction(+ : v))
#define SIMD_SUM2(a, b) HPR_PRAGMA(omp simd reduction(+ : a, b))
#define SIMD_MAX(v) HPR_PRAGMA(omp simd reduction(max : v))
#ifdef HPR_HAVE_OPENMP
/* Independent rows or blocks: guided, so a thread that the OS set aside (a core shared with another
 * process) leaves its remaining rows to the others. Loops that sum across rows (sumsq, LayerNorm's
 * dw/db partials) stay static: the same rows on the same thread, so results are bitwise repeatable. */
#define OMP_ROWS HPR_PRAGMA(omp parallel for schedule(guided) num_threads(nthreads) if (par))
#define OMP_ROWS_BAD \
    HPR_PRAGMA(omp parallel for schedule(guided) num_threads(nthreads) if (par) reduction(+ : bad))
#define OMP_ROWS_SUM(v) \
    HPR_PRAGMA(omp parallel for schedule(static) num_threads(nthreads) if (par) reduction(+ : v))
#define OMP_REGION HPR_PRAGMA(omp parallel num_threads(nt) if (par))
#define OMP_FOR HPR_PRAGMA(omp for schedule(static))
#define OMP_FOR_TASKS HPR_PRAGMA(omp for schedule(dynamic, 1))  /* attention: one (sequence, head) each */
#define OMP_TID omp_get_thread_num()
#else
#define OMP_ROWS
#define OMP_ROWS_BAD
#define OMP_ROWS_SUM(v)
#define OMP_REGION
#define OMP_FOR
#define OMP_FOR_TASKS
#define OMP_TID 0
#endif

/* exp for float in a form compilers vectorise: x = n ln2 + r, |r| <= ln2/2, exp(r) by its Taylor
 * polynomial to r^6 (relative error below 2e-7), 2^n put straight into the exponent bits. The
 * rounding n = nearest(x / ln2) uses the 1.5 * 2^23 trick, valid in the default rounding mode.
 * Defined outside the target regions: each level inlines it with its own instructions. */
static inline float hpr_expf_inrange(float x) {
    /* the polynomial alone, for |x| <= 80 (a caller that has clamped already: GELU) and NaN */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;  /* ln2 split in two for an exact product (Cody-Waite) */
    r = r + n * 2.12194440e-4f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { float f; int32_t i; } u;
    u.i = ((int32_t)n + 127) << 23;
    return p * u.f;
}

static inline float hpr_expf(float x) {
    /* Branch-free clamps (with -fno-trapping-math); NaN passes through. +-80 keeps exp(x), 1/exp(x)
     * and x/(1 + exp(x)) normal floats: denormals cost ~100 cycles each, and the compiler evaluates
     * the clamped branch for every element when it if-converts a caller's loop. */
    x = x < -80.0f ? -80.0f : x;
    x = x > 80.0f ? 80.0f : x;
    return hpr_expf_inrange(x);
}

/* tanh for float from the vectorisable exp: 2 sigmoid(2x) - 1 (absolute error ~1e-7 near 0, which
 * float's own rounding of the LSTM's sums already exceeds). */
static inline float hpr_tanhf(float x) { return 2.0f / (1.0f + hpr_expf(-2.0f * x)) - 1.0f; }

/* Every public kernel once, as OP(return type, name, (parameters), (arguments)) with R the element
 * type; the declarations with their contracts are in nn.h (the compiler checks the two agree). */
#define HPR_NN_OPS(OP, R)                                                                                    \
    OP(void, layernorm_forward, (R *out, R *mean, R *rstd, const R *x, const R *w, const R *b, int64_t N,     \
                                 int64_t C, double eps, int nthreads),                                       \
       (out, mean, rstd, x, w, b, N, C, eps, nthreads))                                                      \
    OP(void, layernorm_backward, (R *dx, R *dw, R *db, const R *dout, const R *x, const R *w, const R *mean,  \
                                  const R *rstd, int64_t N, int64_t C, R *scratch, int nthreads),             \
       (dx, dw, db, dout, x, w, mean, rstd, N, C, scratch, nthreads))                                        \
    OP(void, softmax_causal_forward, (R *att, const R *pre, int64_t BH, int64_t T, double scale, int nthreads), \
       (att, pre, BH, T, scale, nthreads))                                                                   \
    OP(void, softmax_causal_backward, (R *dpre, const R *datt, const R *att, int64_t BH, int64_t T,           \
                                       double scale, int nthreads),                                          \
       (dpre, datt, att, BH, T, scale, nthreads))                                                            \
    OP(void, gelu_forward, (R *out, R *x, const R *bias, int64_t N, int64_t C, int nthreads),                 \
       (out, x, bias, N, C, nthreads))                                                                       \
    OP(void, gelu_backward, (R *dx, const R *x, const R *dout, int64_t n, int nthreads), (dx, x, dout, n, nthreads)) \
    OP(int64_t, crossentropy, (R *losses, R *dlogits, const R *logits, const int32_t *targets, int64_t N,     \
                               int64_t V, double dscale, int nthreads),                                      \
       (losses, dlogits, logits, targets, N, V, dscale, nthreads))                                           \
    OP(int64_t, embedding_forward, (R *out, const int32_t *tokens, const R *wte, const R *wpe, int64_t B,     \
                                    int64_t T, int64_t C, int64_t V, int nthreads),                          \
       (out, tokens, wte, wpe, B, T, C, V, nthreads))                                                        \
    OP(void, embedding_backward, (R *dwte, R *dwpe, const R *dout, const int32_t *tokens, int64_t B,          \
                                  int64_t T, int64_t C),                                                     \
       (dwte, dwpe, dout, tokens, B, T, C))                                                                  \
    OP(void, bias_residual, (R *out, const R *a, const R *bias, const R *x, int64_t N, int64_t C, int nthreads), \
       (out, a, bias, x, N, C, nthreads))                                                                    \
    OP(void, bias_backward, (R *db, const R *dout, int64_t N, int64_t C, int nthreads), (db, dout, N, C, nthreads)) \
    OP(void, adamw, (R *p, const R *g, R *m, R *v, int64_t n, double lr, double beta1, double beta2,          \
                     double eps, double wd, double bc1, double bc2, double gscale, int nthreads),            \
       (p, g, m, v, n, lr, beta1, beta2, eps, wd, bc1, bc2, gscale, nthreads))                               \
    OP(void, adamw_segments, (R *p, const R *g, R *m, R *v, const int64_t *seg, const double *wd, int64_t nseg,  \
                              int64_t mlo, double lr, double beta1, double beta2, double eps, double bc1,    \
                              double bc2, double gscale, int nthreads),                                      \
       (p, g, m, v, seg, wd, nseg, mlo, lr, beta1, beta2, eps, bc1, bc2, gscale, nthreads))                  \
    OP(double, sumsq, (const R *x, int64_t n, int nthreads), (x, n, nthreads))                               \
    OP(void, attention_forward, (R *y, R *lse, const R *q, const R *k, const R *v, int64_t B, int64_t T,      \
                                 int64_t H, int64_t D, int64_t sq, int64_t sy, double scale, R *scratch,      \
                                 int nthreads),                                                              \
       (y, lse, q, k, v, B, T, H, D, sq, sy, scale, scratch, nthreads))                                      \
    OP(void, attention_backward, (R *dq, R *dk, R *dv, const R *dy, const R *y, const R *lse, const R *q,     \
                                  const R *k, const R *v, int64_t B, int64_t T, int64_t H, int64_t D,        \
                                  int64_t sq, int64_t sy, double scale, R *scratch, int nthreads),           \
       (dq, dk, dv, dy, y, lse, q, k, v, B, T, H, D, sq, sy, scale, scratch, nthreads))                      \
    OP(void, lstm_cell_forward, (R *a, R *c, R *tc, R *h, const R *c_prev, int64_t B, int64_t H),            \
       (a, c, tc, h, c_prev, B, H))                                                                          \
    OP(void, lstm_cell_backward, (R *da, R *dc_prev, const R *dh, const R *dc_next, const R *gates,          \
                                  const R *c_prev, const R *tc, int64_t B, int64_t H),                       \
       (da, dc_prev, dh, dc_next, gates, c_prev, tc, B, H))

#define HPR_CAT_(a, b) a##b
#define HPR_CAT(a, b) HPR_CAT_(a, b)
#define HPR_CAT3_(a, b, c) a##b##c
#define HPR_CAT3(a, b, c) HPR_CAT3_(a, b, c)
#define FN(name) HPR_CAT3(name, SFX, ISA)  /* hpr_gelu_forward -> hpr_gelu_forward_f32_avx2 */
#define NN_KERNEL static
#define NN_OP_FIELD(ret, name, params, args) ret(*name) params;
#define NN_OP_INIT(ret, name, params, args) .name = FN(hpr_##name),

struct hpr_nn_ops_f32 { HPR_NN_OPS(NN_OP_FIELD, float) };
struct hpr_nn_ops_f64 { HPR_NN_OPS(NN_OP_FIELD, double) };

/* the levels: baseline x86-64 (SSE2: 16 xmm registers), avx2 (16 ymm), avx512 (32 zmm) */
#define ISA _baseline
#define VBYTES 16
#define MR 4
#define NVMAX 3
#include "nn_level.h"
#undef ISA
#undef VBYTES
#undef MR
#undef NVMAX

#if HPR_ISA_VARIANTS
HPR_TARGET_AVX2_BEGIN
#define ISA _avx2
#define VBYTES 32
#define MR 4
#define NVMAX 3
#include "nn_level.h"
#undef ISA
#undef VBYTES
#undef MR
#undef NVMAX
HPR_TARGET_END

HPR_TARGET_AVX512_BEGIN
#define ISA _avx512
#define VBYTES 64
#define MR 8
#define NVMAX 3
#include "nn_level.h"
#undef ISA
#undef VBYTES
#undef MR
#undef NVMAX
HPR_TARGET_END
static const struct hpr_nn_ops_f32 *const nn_levels_f32[] = {&nn_ops_f32_baseline, &nn_ops_f32_avx2,
                                                             &nn_ops_f32_avx512};
static const struct hpr_nn_ops_f64 *const nn_levels_f64[] = {&nn_ops_f64_baseline, &nn_ops_f64_avx2,
                                                             &nn_ops_f64_avx512};
#else
static const struct hpr_nn_ops_f32 *const nn_levels_f32[] = {&nn_ops_f32_baseline};
static const struct hpr_nn_ops_f64 *const nn_levels_f64[] = {&nn_ops_f64_baseline};
#endif

/* the level in use: baseline until the extension's import chooses (hpr_nn_set_isa) */
static int nn_level = HPR_ISA_BASELINE;
static const struct hpr_nn_ops_f32 *nn_f32 = &nn_ops_f32_baseline;
static const struct hpr_nn_ops_f64 *nn_f64 = &nn_ops_f64_baseline;

int hpr_nn_isa_widest(void) { return hpr_isa_cpu(); }

int hpr_nn_set_isa(int level) {
    if (level < HPR_ISA_BASELINE || level > hpr_isa_cpu()) return -1;
    nn_f32 = nn_levels_f32[level];
    nn_f64 = nn_levels_f64[level];
    nn_level = level;
    return level;
}

int hpr_nn_isa(void) { return nn_level; }

/* the public functions: one call through the table of the level in use */
#define NN_RETURN_void
#define NN_RETURN_int64_t return
#define NN_RETURN_double return
#define NN_OP_WRAP_F32(ret, name, params, args) \
    ret hpr_##name##_f32 params { NN_RETURN_##ret nn_f32->name args; }
#define NN_OP_WRAP_F64(ret, name, params, args) \
    ret hpr_##name##_f64 params { NN_RETURN_##ret nn_f64->name args; }
HPR_NN_OPS(NN_OP_WRAP_F32, float)
HPR_NN_OPS(NN_OP_WRAP_F64, double)

int64_t hpr_attention_scratch(int64_t T, int64_t D) { return HPR_ATT_SCRATCH(T, D); }

/* ---- matmul split over the rank's threads (nn.h): each block one single-threaded gemm call ----
 * Row-major CBLAS: a row block [r0, r1) of out reads rows r0.. of op(a): a + r0 * lda plain, a + r0
 * transposed (op(a) = a^T: its row r is a's column r); a column block [c0, c1) reads columns c0.. of
 * op(b): b + c0 plain, b + c0 * ldb transposed. Threads take blocks in turn (a thread that the OS set
 * aside leaves its block to the other); every element comes from the same call whichever thread runs it. */
#define HPR_MATMUL_SPLIT(REAL, SFX, FNT)                                                                     \
    void hpr_matmul_split##SFX(FNT gemm, REAL *out, const REAL *a, const REAL *b, int64_t M, int64_t N,     \
                               int64_t K, int ta, int64_t lda, int tb, int64_t ldb, int64_t ldo, int by_rows, \
                               int64_t step, REAL *acc, int nthreads) {                                      \
        int64_t m = by_rows ? M : N, nb = (m + step - 1) / step;                                             \
        int par = nthreads > 1 && nb > 1;                                                                    \
        (void)par;                                                                                           \
        const int A_T = ta ? 112 : 111, B_T = tb ? 112 : 111; /* CblasTrans, CblasNoTrans */                 \
        HPR_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (par))                      \
        for (int64_t blk = 0; blk < nb; blk++) {                                                             \
            int64_t lo = blk * step, n = lo + step < m ? step : m - lo;                                       \
            if (by_rows)                                                                                     \
                gemm(101, A_T, B_T, n, N, K, 1, a + (ta ? lo : lo * lda), lda, b, ldb, 0, out + lo * ldo, ldo); \
            else                                                                                             \
                gemm(101, A_T, B_T, M, n, K, 1, a, lda, b + (tb ? lo * ldb : lo), ldb, 0, out + lo, ldo);     \
            if (acc) { /* this block's rows r0..r1 and columns c0..c1 of acc += out */                      \
                int64_t r0 = by_rows ? lo : 0, r1 = by_rows ? lo + n : M;                                    \
                int64_t c0 = by_rows ? 0 : lo, c1 = by_rows ? N : lo + n;                                    \
                for (int64_t r = r0; r < r1; r++) {                                                          \
                    REAL *ar = acc + r * N;                                                                  \
                    const REAL *orow = out + r * ldo;                                                        \
                    SIMD                                                                                     \
                    for (int64_t c = c0; c < c1; c++) ar[c] += orow[c];                                      \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
    }
HPR_MATMUL_SPLIT(float, _f32, hpr_sgemm_fn)
HPR_MATMUL_SPLIT(double, _f64, hpr_dgemm_fn)
