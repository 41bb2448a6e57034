/* Element-wise reduction kernels (see reduce.h). Loops are written so GCC/Clang vectorise them at -O3;
 * OpenMP splits a call over `nthreads` threads when the caller asks for more than one. */
#include "reduce.h"
#include <math.h>
#include <string.h>
#ifdef HPR_HAVE_OPENMP
#include <omp.h>
#endif

/* below this many elements a call never uses threads: the fork/join costs more than it saves */
#define HPR_OMP_MIN 65536

int hpr_have_openmp(void) {
#ifdef HPR_HAVE_OPENMP
    return 1;
#else
    return 0;
#endif
}

int hpr_omp_max_threads(void) {
#ifdef HPR_HAVE_OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- half-precision conversions (round to nearest even, NaN kept quiet) ---- */

static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t bits;
    float f;
    if (em >= 0x7c00u) {                       /* inf or nan */
        bits = 0x7f800000u | ((em & 0x3ffu) << 13);
    } else if (em >= 0x0400u) {                /* normal: rebias exponent 15 -> 127 */
        bits = (em << 13) + (112u << 23);
    } else {                                   /* zero or subnormal: em * 2^-24, exact in float */
        f = (float)em * 5.9604644775390625e-08f;
        memcpy(&bits, &f, 4);
    }
    bits |= sign;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t f32_to_f16(float f) {
    uint32_t x, ax, sign;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)                     /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u)                     /* >= 65520 rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {                    /* below 2^-14: subnormal half, value / 2^-24 */
        float af;
        memcpy(&af, &ax, 4);
        return (uint16_t)(sign | (uint32_t)nearbyintf(af * 16777216.0f));
    }
    /* normal: drop 13 mantissa bits with round-to-nearest-even, rebias 127 -> 15 */
    ax = ax + 0x0fffu + ((ax >> 13) & 1u) - (112u << 23);
    return (uint16_t)(sign | (ax >> 13));
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)       /* nan: keep it a (quiet) nan */
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

void hpr_f16_to_f32(const uint16_t *in, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(in[i]);
}
void hpr_f32_to_f16(const float *in, uint16_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = f32_to_f16(in[i]);
}
void hpr_bf16_to_f32(const uint16_t *in, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(in[i]);
}
void hpr_f32_to_bf16(const float *in, uint16_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = f32_to_bf16(in[i]);
}

/* ---- the operators ---- */

#define OP_SUM(a, b) ((a) + (b))
#define OP_MAX(a, b) ((a) > (b) ? (a) : (b))
#define OP_MIN(a, b) ((a) < (b) ? (a) : (b))

/* ---- k-way reduction: out = (ins[0] op ins[1] op ...) * scale, in rank order ---- */

/* Blocks of B elements keep the running result in L1 while the k inputs stream through. A call that
 * runs on one thread never enters an OpenMP region: even a region whose if() clause is false costs
 * libgomp ~0.3 us (measured on the AMD EPYC, GCC 12), which is most of a small allreduce's work. */
#define KBLOCK 2048

#define DEF_MANY(NAME, T, OP)                                                                  \
    static inline void NAME##_block(T *out, const void *const *ins, int k, int64_t n, double scale, \
                                    int64_t blk) {                                            \
        int64_t lo = blk * KBLOCK, hi = lo + KBLOCK < n ? lo + KBLOCK : n;                    \
        T acc[KBLOCK];                                                                        \
        const T *s0 = (const T *)ins[0];                                                      \
        for (int64_t i = lo; i < hi; i++) acc[i - lo] = s0[i];                                \
        for (int r = 1; r < k; r++) {                                                         \
            const T *restrict s = (const T *)ins[r];                                          \
            for (int64_t i = lo; i < hi; i++) acc[i - lo] = OP(acc[i - lo], s[i]);            \
        }                                                                                     \
        if (scale != 1.0) {                                                                   \
            T sc = (T)scale;                                                                  \
            for (int64_t i = lo; i < hi; i++) acc[i - lo] = acc[i - lo] * sc;                 \
        }                                                                                     \
        for (int64_t i = lo; i < hi; i++) out[i] = acc[i - lo];                               \
    }                                                                                         \
    static void NAME(T *out, const void *const *ins, int k, int64_t n, double scale, int nthreads) { \
        int64_t nb = (n + KBLOCK - 1) / KBLOCK;                                               \
        if (nthreads > 1 && n >= HPR_OMP_MIN) {                                               \
            _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                \
            for (int64_t blk = 0; blk < nb; blk++) NAME##_block(out, ins, k, n, scale, blk);  \
        } else {                                                                              \
            for (int64_t blk = 0; blk < nb; blk++) NAME##_block(out, ins, k, n, scale, blk);  \
        }                                                                                     \
    }

#define DEF_MANY_HALF(NAME, TO, FROM, OP)                                                      \
    static inline void NAME##_block(uint16_t *out, const void *const *ins, int k, int64_t n,  \
                                    double scale, int64_t blk) {                              \
        int64_t lo = blk * KBLOCK, hi = lo + KBLOCK < n ? lo + KBLOCK : n;                    \
        float acc[KBLOCK];                                                                    \
        const uint16_t *s0 = (const uint16_t *)ins[0];                                        \
        for (int64_t i = lo; i < hi; i++) acc[i - lo] = TO(s0[i]);                            \
        for (int r = 1; r < k; r++) {                                                         \
            const uint16_t *restrict s = (const uint16_t *)ins[r];                            \
            for (int64_t i = lo; i < hi; i++) acc[i - lo] = OP(acc[i - lo], TO(s[i]));        \
        }                                                                                     \
        if (scale != 1.0) {                                                                   \
            float sc = (float)scale;                                                          \
            for (int64_t i = lo; i < hi; i++) acc[i - lo] = acc[i - lo] * sc;                 \
        }                                                                                     \
        for (int64_t i = lo; i < hi; i++) out[i] = FROM(acc[i - lo]);                         \
    }                                                                                         \
    static void NAME(uint16_t *out, const void *const *ins, int k, int64_t n, double scale, int nthreads) { \
        int64_t nb = (n + KBLOCK - 1) / KBLOCK;                                               \
        if (nthreads > 1 && n >= HPR_OMP_MIN) {                                               \
            _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                \
            for (int64_t blk = 0; blk < nb; blk++) NAME##_block(out, ins, k, n, scale, blk);  \
        } else {                                                                              \
            for (int64_t blk = 0; blk < nb; blk++) NAME##_block(out, ins, k, n, scale, blk);  \
        }                                                                                     \
    }

#ifndef HPR_HAVE_OPENMP
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#endif
DEF_MANY(many_sum_f32, float, OP_SUM)
DEF_MANY(many_max_f32, float, OP_MAX)
DEF_MANY(many_min_f32, float, OP_MIN)
DEF_MANY(many_sum_f64, double, OP_SUM)
DEF_MANY(many_max_f64, double, OP_MAX)
DEF_MANY(many_min_f64, double, OP_MIN)
DEF_MANY(many_sum_i32, int32_t, OP_SUM)
DEF_MANY(many_max_i32, int32_t, OP_MAX)
DEF_MANY(many_min_i32, int32_t, OP_MIN)
DEF_MANY(many_sum_i64, int64_t, OP_SUM)
DEF_MANY(many_max_i64, int64_t, OP_MAX)
DEF_MANY(many_min_i64, int64_t, OP_MIN)
DEF_MANY_HALF(many_sum_f16, f16_to_f32, f32_to_f16, OP_SUM)
DEF_MANY_HALF(many_max_f16, f16_to_f32, f32_to_f16, OP_MAX)
DEF_MANY_HALF(many_min_f16, f16_to_f32, f32_to_f16, OP_MIN)
DEF_MANY_HALF(many_sum_bf16, bf16_to_f32, f32_to_bf16, OP_SUM)
DEF_MANY_HALF(many_max_bf16, bf16_to_f32, f32_to_bf16, OP_MAX)
DEF_MANY_HALF(many_min_bf16, bf16_to_f32, f32_to_bf16, OP_MIN)

int hpr_reduce_many(void *out, const void *const *ins, int k, int64_t n, int dtype, int op,
                    double scale, int nthreads) {
    if (n <= 0) return 0;
    if (k < 1) return -1;
    if (scale != 1.0 && (op != HPR_SUM || dtype == HPR_I32 || dtype == HPR_I64)) return -1;
    switch (dtype * 3 + op) {
    case HPR_F16 * 3 + HPR_SUM: many_sum_f16(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F16 * 3 + HPR_MAX: many_max_f16(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F16 * 3 + HPR_MIN: many_min_f16(out, ins, k, n, scale, nthreads); return 0;
    case HPR_BF16 * 3 + HPR_SUM: many_sum_bf16(out, ins, k, n, scale, nthreads); return 0;
    case HPR_BF16 * 3 + HPR_MAX: many_max_bf16(out, ins, k, n, scale, nthreads); return 0;
    case HPR_BF16 * 3 + HPR_MIN: many_min_bf16(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F32 * 3 + HPR_SUM: many_sum_f32(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F32 * 3 + HPR_MAX: many_max_f32(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F32 * 3 + HPR_MIN: many_min_f32(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F64 * 3 + HPR_SUM: many_sum_f64(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F64 * 3 + HPR_MAX: many_max_f64(out, ins, k, n, scale, nthreads); return 0;
    case HPR_F64 * 3 + HPR_MIN: many_min_f64(out, ins, k, n, scale, nthreads); return 0;
    case HPR_I32 * 3 + HPR_SUM: many_sum_i32(out, ins, k, n, scale, nthreads); return 0;
    case HPR_I32 * 3 + HPR_MAX: many_max_i32(out, ins, k, n, scale, nthreads); return 0;
    case HPR_I32 * 3 + HPR_MIN: many_min_i32(out, ins, k, n, scale, nthreads); return 0;
    case HPR_I64 * 3 + HPR_SUM: many_sum_i64(out, ins, k, n, scale, nthreads); return 0;
    case HPR_I64 * 3 + HPR_MAX: many_max_i64(out, ins, k, n, scale, nthreads); return 0;
    case HPR_I64 * 3 + HPR_MIN: many_min_i64(out, ins, k, n, scale, nthreads); return 0;
    default: return -1;
    }
}

int hpr_scale(void *x, int64_t n, int dtype, double s, int nthreads) {
    const void *ins[1] = {x};
    if (dtype == HPR_I32 || dtype == HPR_I64) return -1;
    if (s == 1.0 || n <= 0) return 0;
    return hpr_reduce_many(x, ins, 1, n, dtype, HPR_SUM, s, nthreads);
}

/* a = a (op) b: the two-input case of the k-way reduction (a is both an input and the output). */
int hpr_reduce_into(void *inout, const void *in, int64_t n, int dtype, int op, int nthreads) {
    const void *ins[2] = {inout, in};
    return hpr_reduce_many(inout, ins, 2, n, dtype, op, 1.0, nthreads);
}
