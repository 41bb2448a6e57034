/* hpr's fused layer kernels (see nn.h): the bodies live in nn_impl.h, compiled here once for float
 * and once for double. OpenMP splits rows over threads when there is enough work; "omp simd"
 * (honoured with -fopenmp-simd even without OpenMP) lets the row loops vectorise their sums. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef HPR_HAVE_OPENMP
#include <omp.h>
#endif
#include "nn.h"

#include "hpr_clones.h"

#define HPR_NN_OMP_MIN (1 << 16)  /* elements: below this a thread team costs more than it saves */
#define HPR_ATT_SCRATCH(T, D) (((T) + 15) / 16 * 16 * (D) + 4 * 128 + (T) * (T))  /* per thread */
#define HPR_NN_CHUNK 4096         /* element-wise kernels: threads take blocks, each one SIMD loop */
#define HPR_PRAGMA(x) _Pragma(#x)
#define SIMD HPR_PRAGMA(omp simd)
#define SIMD_SUM(v) HPR_PRAGMA(omp simd reduction(+ : v))
#define SIMD_SUM2(a, b) HPR_PRAGMA(omp simd reduction(+ : a, b))
#define SIMD_MAX(v) HPR_PRAGMA(omp simd reduction(max : v))
#ifdef HPR_HAVE_OPENMP
#define OMP_ROWS HPR_PRAGMA(omp parallel for schedule(static) num_threads(nthreads) if (par))
#define OMP_ROWS_BAD \
    HPR_PRAGMA(omp parallel for schedule(static) num_threads(nthreads) if (par) reduction(+ : bad))
#define OMP_ROWS_SUM(v) \
    HPR_PRAGMA(omp parallel for schedule(static) num_threads(nthreads) if (par) reduction(+ : v))
#define OMP_REGION HPR_PRAGMA(omp parallel num_threads(nt) if (par))
#define OMP_FOR HPR_PRAGMA(omp for schedule(static))
#define OMP_TID omp_get_thread_num()
#else
#define OMP_ROWS
#define OMP_ROWS_BAD
#define OMP_ROWS_SUM(v)
#define OMP_REGION
#define OMP_FOR
#define OMP_TID 0
#endif

/* exp for float in a form compilers vectorise: x = n ln2 + r, |r| <= ln2/2, exp(r) by its Taylor
 * polynomial to r^6 (relative error below 2e-7), 2^n put straight into the exponent bits. The
 * rounding n = nearest(x / ln2) uses the 1.5 * 2^23 trick, valid in the default rounding mode. */
static inline float hpr_expf(float x) {
    /* Branch-free clamps (with -fno-trapping-math); NaN passes through. +-80 keeps exp(x), 1/exp(x)
     * and x/(1 + exp(x)) normal floats: denormals cost ~100 cycles each, and the compiler evaluates
     * the clamped branch for every element when it if-converts a caller's loop. */
    x = x < -80.0f ? -80.0f : x;
    x = x > 80.0f ? 80.0f : x;
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

/* tanh for float from the vectorisable exp: 2 sigmoid(2x) - 1 (absolute error ~1e-7 near 0, which
 * float's own rounding of the LSTM's sums already exceeds). */
static inline float hpr_tanhf(float x) { return 2.0f / (1.0f + hpr_expf(-2.0f * x)) - 1.0f; }

/* GELU clamps its sigmoid's argument to +-GELU_ZMAX: sigmoid(30) is 1 in float, and the compiler
 * evaluates the clamped branch for every element, so its constant must not push products with
 * ordinary gradients into denormals (1 / (1 + e^30) ~ 1e-13 does not). */
#define REAL float
#define LEXP hpr_expf
#define LTANH hpr_tanhf
#define GELU_ZMAX 30.0f
#define FN(name) name##_f32
#define EXP hpr_expf
#define LOG logf
#define SQRT sqrtf
#include "nn_impl.h"
#undef REAL
#undef LEXP
#undef LTANH
#undef GELU_ZMAX
#undef FN
#undef AB
#undef ADMAX
#undef VL
#undef EXP
#undef LOG
#undef SQRT

#define REAL double
#define LEXP exp
#define LTANH tanh
#define GELU_ZMAX 700.0
#define FN(name) name##_f64
#define EXP exp
#define LOG log
#define SQRT sqrt
#include "nn_impl.h"

int64_t hpr_attention_scratch(int64_t T, int64_t D) { return HPR_ATT_SCRATCH(T, D); }
