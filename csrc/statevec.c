/* hpr's state-vector kernels (see statevec.h): the bodies live in statevec_impl.h, compiled here once
 * for float and once for double. Complex numbers are explicit (re, im) REAL pairs rather than C99
 * _Complex, whose multiply calls __muldc3 for C's Inf/NaN rules unless -ffast-math is on.
 *
 * Work layout. A gate on the sorted qubit positions p0 < p1 < ... < p(m-1) acts on "groups" of 2**m
 * amplitudes; a group is named by g in [0, 2**(N-m)) and its first amplitude is g with a zero bit
 * inserted at each p_k (sv_insert), OR the control mask. Consecutive g below 2**p0 give consecutive
 * amplitudes, so a work item of SV_CHUNK groups is walked as runs of min(2**p0, SV_CHUNK) groups, each
 * one "omp simd" loop; the (state, item) pairs are flattened into one OpenMP loop, so that one large state
 * and many small ones both split over threads. Qubit 0 (runs of length 1) has its own loops. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef HPR_HAVE_OPENMP
#include <omp.h>
#endif
#include "statevec.h"

#include "hpr_clones.h"  /* HPR_KERNEL: AVX-512, AVX2+FMA and baseline clones */
#define HPR_SV_OMP_MIN (1 << 15) /* amplitudes per call: below this a thread team costs more */
#define SV_CHUNK 2048            /* groups per work item (a SIMD run) */
#define KQ_T 8                   /* groups per tile of a dense k-qubit block (the vector lanes) */
#define SV_EZ_BITS 10            /* expval_z folds blocks of 2**10 probabilities */
#define HPR_PRAGMA(x) _Pragma(#x)
#define SIMD HPR_PRAGMA(omp simd)
#define SIMD_SUM2(a, b) HPR_PRAGMA(omp simd reduction(+ : a, b))
#define SIMD_SUM1(a) HPR_PRAGMA(omp simd reduction(+ : a))
#ifdef HPR_HAVE_OPENMP
#define OMP_ITEMS HPR_PRAGMA(omp parallel for schedule(static) num_threads(nthreads) if (par))
#define OMP_ITEMS_SUM2(a, b) \
    HPR_PRAGMA(omp parallel for schedule(static) num_threads(nthreads) if (par) reduction(+ : a, b))
#define OMP_ITEMS_ACC(acc, n, t) \
    HPR_PRAGMA(omp parallel for schedule(static) num_threads(nthreads) if (par) reduction(+ : acc[:n], t))
#else
#define OMP_ITEMS
#define OMP_ITEMS_SUM2(a, b)
#define OMP_ITEMS_ACC(acc, n, t)
#endif

/* Far pairs. Where the two amplitudes of a pair lie >= sv_far_bytes apart (a target qubit with 2**q
 * amplitudes >= 256 MiB: q >= 24 in complex128, q >= 25 in complex64), one loop that loads and stores
 * both runs element by element ran at 11 GB/s on the AMD EPYC here, against 45-53 GB/s for runs 2**25 to
 * 2**27 bytes apart; the same bytes moved one far run at a time through a buffer in L1 (copy in, apply,
 * copy out) ran at 26-30 GB/s at every distance (1 thread, CPU time; a property of the memory system's
 * address mapping, not of the page size: the same with 2 MiB and with 4 KiB pages, re-measured for issue
 * 21). The far loop's cost goes with its number of accesses, not its bytes: element-wise over runs 2**28
 * bytes apart, 16-byte (SSE2) accesses ran at 5.3 GB/s, 32-byte (AVX2) at 10.6, 64-byte (AVX-512) at 22,
 * and 64-byte accesses that straddle two lines (a buffer 16 bytes off a line, as numpy's are) at 14; so
 * every helper here is SV_INLINE (inlined into each target clone; sv_far_1q out of line ran the baseline
 * SSE2 code under the AVX-512 clone: H on qubit 24 at n = 25 took 65 ms, inlined 41) and hpr's states are
 * allocated 64-byte aligned (hpr.quantum.statevec.state_zeros). So such pairs are
 * staged: SV_FAR_STAGED copies chunks of SV_FAR_CHUNK amplitudes of both runs into bx, by, runs BODY
 * on them (L_ amplitudes, the chunk's first at amplitude s_ of the run) and copies them back. The
 * threshold is a setting (hpr_sv_far_bytes) so the tests can send small states down these paths. */
#define SV_FAR_CHUNK 512 /* amplitudes per staged chunk: 8 KiB per buffer in complex128 */
static int64_t sv_far_bytes = INT64_C(1) << 28;

int64_t hpr_sv_far_bytes(int64_t nbytes) {
    int64_t old = sv_far_bytes;
    if (nbytes > 0) sv_far_bytes = nbytes;
    return old;
}

/* X, Y: runs of LEN amplitudes; BODY sees the staged copies bx, by (L_ amplitudes, first at s_) */
#define SV_FAR_STAGED(X, Y, LEN, ...)                                                 \
    do {                                                                               \
        REAL bx[2 * SV_FAR_CHUNK], by[2 * SV_FAR_CHUNK];                               \
        REAL *fx_ = (X), *fy_ = (Y);                                                   \
        for (int64_t s_ = 0; s_ < (LEN); s_ += SV_FAR_CHUNK) {                         \
            const int64_t L_ = (LEN) - s_ < SV_FAR_CHUNK ? (LEN) - s_ : SV_FAR_CHUNK;  \
            const size_t nb_ = (size_t)(2 * L_) * sizeof(REAL);                        \
            memcpy(bx, fx_ + 2 * s_, nb_);                                             \
            memcpy(by, fy_ + 2 * s_, nb_);                                             \
            __VA_ARGS__                                                                \
            memcpy(fx_ + 2 * s_, bx, nb_);                                             \
            memcpy(fy_ + 2 * s_, by, nb_);                                             \
        }                                                                              \
    } while (0)

/* g with a zero bit inserted at each of the ascending positions pos[0..m-1]. */
static inline int64_t sv_insert(int64_t g, const int *pos, int m) {
    for (int k = 0; k < m; k++) {
        int64_t low = g & ((INT64_C(1) << pos[k]) - 1);
        g = ((g >> pos[k]) << (pos[k] + 1)) | low;
    }
    return g;
}

/* How a gate on the qubits of `bits` splits a (B, 2**N) batch: a work item is Gi consecutive groups
 * of one state (its matrix is loaded once per item), walked as runs of Lr contiguous groups. */
typedef struct {
    int pos[64], m;
    int64_t Gi, Lr, per, W; /* groups per item, groups per run, items per state, items in all */
} sv_plan;

static void sv_plan_make(sv_plan *p, int64_t B, int N, int64_t bits) {
    p->m = 0;
    for (int q = 0; q < N; q++)
        if ((bits >> q) & 1) p->pos[p->m++] = q;
    int64_t G = INT64_C(1) << (N - p->m), L = INT64_C(1) << p->pos[0];
    p->Gi = G < SV_CHUNK ? G : SV_CHUNK;
    p->Lr = L < p->Gi ? L : p->Gi;
    p->per = G / p->Gi;
    p->W = B * p->per;
}

/* first amplitude (complex index within the whole batch) of run r of work item w */
static inline int64_t sv_run_base(const sv_plan *p, int64_t w, int64_t r, int N, int64_t set) {
    int64_t b = w / p->per, g = (w - b * p->per) * p->Gi + r;
    return (b << N) + (sv_insert(g, p->pos, p->m) | set);
}

/* for each run of work item w: REAL *x = its first amplitude; BODY (runs of p.Lr amplitudes) */
#define SV_RUNS(p, w, set, ...)                                         \
    for (int64_t r_ = 0; r_ < (p).Gi; r_ += (p).Lr) {                   \
        REAL *x = psi + 2 * sv_run_base(&(p), (w), r_, N, (set));       \
        __VA_ARGS__                                                     \
    }

/* Re(i^ny (re + i im)) */
static inline double sv_phase_re(int ny, double re, double im) {
    switch (ny & 3) {
    case 0: return re;
    case 1: return -im;
    case 2: return -re;
    default: return im;
    }
}

/* the generator's Pauli masks of a parameterised op: G = X, Y, Z on q0, or Z Z on (q0, q1) */
static inline void sv_generator(const int64_t *op, int64_t *x, int64_t *z, int *ny) {
    int64_t b0 = INT64_C(1) << op[1];
    *x = *z = 0;
    *ny = 0;
    switch (op[0]) {
    case SV_OP_RX: *x = b0; break;
    case SV_OP_RY: *x = *z = b0; *ny = 1; break;
    case SV_OP_RZ: *z = b0; break;
    default: *z = b0 | (INT64_C(1) << op[2]); break;
    }
}

/* One small state a (2**N amplitudes, in cache, one thread): BODY runs for every amplitude pair
 * (i, i + h) of qubit q, h = 2**q, i with bit q clear. The runs of equal high bits have h pairs; the
 * short ones (q = 0, 1, 2) get loops of constant length, which the compiler unrolls and vectorizes.
 * RED: an omp simd clause (e.g. reduction) for the inner loops. */
#define SV1_PAIRS(N, q, RED, ...)                                                                   \
    do {                                                                                           \
        const int64_t h = INT64_C(1) << (q), M_ = INT64_C(1) << (N);                               \
        if (h == 1) {                                                                              \
            HPR_PRAGMA(omp simd RED)                                                               \
            for (int64_t i = 0; i < M_; i += 2) { __VA_ARGS__ }                                    \
        } else if (h == 2) {                                                                       \
            for (int64_t i0 = 0; i0 < M_; i0 += 4) {                                               \
                HPR_PRAGMA(omp simd RED)                                                           \
                for (int64_t i = i0; i < i0 + 2; i++) { __VA_ARGS__ }                              \
            }                                                                                      \
        } else if (h == 4) {                                                                       \
            for (int64_t i0 = 0; i0 < M_; i0 += 8) {                                               \
                HPR_PRAGMA(omp simd RED)                                                           \
                for (int64_t i = i0; i < i0 + 4; i++) { __VA_ARGS__ }                              \
            }                                                                                      \
        } else {                                                                                   \
            for (int64_t i0 = 0; i0 < M_; i0 += 2 * h) {                                           \
                HPR_PRAGMA(omp simd RED)                                                           \
                for (int64_t i = i0; i < i0 + h; i++) { __VA_ARGS__ }                              \
            }                                                                                      \
        }                                                                                          \
    } while (0)
#define SV1_NORED
/* every helper of statevec_impl.h is inlined into each target clone of its callers (HPR_KERNEL): one left
 * out of line is compiled once, for the baseline ISA, and runs that code under every clone */
#define SV_INLINE static inline __attribute__((always_inline))

/* compiled programs: states of at most 2**SV1_SMALL_N amplitudes take the one-state kernels (no
 * work plan to set up); the adjoint's fused rotation step takes states up to 2**SV1_MAX_N; a large
 * state applies runs of gates on its low SV1_MAX_N qubits chunk by chunk */
#define SV1_SMALL_N 10
#define SV1_MAX_N 14

/* the qubits a program op touches (targets, controls, a block's qubits) */
static inline int64_t sv_op_qubits(const int64_t *op) {
    int64_t m = (INT64_C(1) << op[1]) | op[3];
    if (op[0] == SV_OP_2Q || op[0] == SV_OP_D2 || op[0] == SV_OP_SWAP || op[0] == SV_OP_RZZ)
        m |= INT64_C(1) << op[2];
    return m;
}

/* Qubit 0 with no controls: the pairs are adjacent amplitudes, psi = (B * 2**(N-1)) pairs of 4 REALs.
 * Items are runs of Lc pairs inside one state (its matrix at U + b * ustride). */
#define SV_PAIRS_Q0(...)                                                                               \
    do {                                                                                               \
        int64_t half = INT64_C(1) << (N - 1), Lc = half < SV_CHUNK ? half : SV_CHUNK, per = half / Lc; \
        OMP_ITEMS                                                                                      \
        for (int64_t w = 0; w < B * per; w++) {                                                        \
            int64_t b = w / per;                                                                       \
            REAL *x = psi + 4 * (b * half + (w - b * per) * Lc);                                       \
            __VA_ARGS__                                                                                \
        }                                                                                              \
    } while (0)

/* GCC's vector extensions (a pair of amplitudes as one vector of 4 REALs; each target clone gets its own
 * code for them): the qubit-0 complex 2x2 as four vector multiply-adds over shuffles of the pair */
#if defined(__GNUC__) && !defined(__clang__)
#define HPR_SV_VECTOR_EXT 1
typedef float sv_v4_f32 __attribute__((vector_size(16)));
typedef int32_t sv_v4i_f32 __attribute__((vector_size(16)));
typedef double sv_v4_f64 __attribute__((vector_size(32)));
typedef int64_t sv_v4i_f64 __attribute__((vector_size(32)));
#else
#define HPR_SV_VECTOR_EXT 0
#endif

#define REAL float
#define FN(name) name##_f32
#include "statevec_impl.h"
#undef REAL
#undef FN

#define REAL double
#define FN(name) name##_f64
#include "statevec_impl.h"
#undef REAL
#undef FN
