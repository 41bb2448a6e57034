/* State-vector kernels for hpr's quantum simulator: gates and measurements on a batch of B states of
 * N qubits, stored C-contiguous as (B, 2**N) complex numbers, each an interleaved (re, im) pair of
 * REALs (numpy's complex64 / complex128 layout). Qubit 0 is the LEAST significant bit of the amplitude
 * index (Qiskit, Qulacs). A 4x4 two-qubit matrix on (q1, q2) has q1 as its low bit: its row/column
 * index is b(q1) + 2 b(q2). Matrices are row-major, complex (interleaved) REALs.
 *
 * Batched parameters: every gate takes its matrix / diagonal for state 0 at U and for state b at
 * U + b * ustride REALs: ustride = 0 shares one matrix, ustride = 8 (2x2), 32 (4x4), 4 (2-diag) or
 * 8 (4-diag) gives one per state. cmask: a bitmask of control qubits (0 = none); the gate acts where
 * all of them are 1. The caller checks qubits (distinct, < N, N <= 62) and sizes; the kernels trust
 * them. nthreads: OpenMP threads (1 = serial; ignored without OpenMP). Buffers in, no allocation. */
#ifndef HPR_STATEVEC_H
#define HPR_STATEVEC_H
#include <stdint.h>

#define HPR_SV_DECLARE(REAL, SFX)                                                                    \
    /* psi <- U on qubit q where the qubits of cmask are 1 (U: 2x2). */                             \
    void hpr_sv_apply_1q##SFX(REAL *psi, int64_t B, int N, int q, int64_t cmask, const REAL *U,     \
                              int64_t ustride, int nthreads);                                        \
    /* psi <- U on (q1, q2), q1 the low bit of U's index (U: 4x4). */                               \
    void hpr_sv_apply_2q##SFX(REAL *psi, int64_t B, int N, int q1, int q2, const REAL *U,           \
                              int64_t ustride, int nthreads);                                        \
    /* amplitude *= d[bit q] (d: 2 complex). Entries exactly 1 are skipped. */                       \
    void hpr_sv_apply_diag_1q##SFX(REAL *psi, int64_t B, int N, int q, const REAL *d,               \
                                   int64_t dstride, int nthreads);                                   \
    /* amplitude *= d[b(q1) + 2 b(q2)] (d: 4 complex). Entries exactly 1 are skipped. */             \
    void hpr_sv_apply_diag_2q##SFX(REAL *psi, int64_t B, int N, int q1, int q2, const REAL *d,      \
                                   int64_t dstride, int nthreads);                                   \
    /* swap the amplitude pairs of qubit q where the qubits of cmask are 1 (X, CNOT, Toffoli). */    \
    void hpr_sv_apply_x##SFX(REAL *psi, int64_t B, int N, int q, int64_t cmask, int nthreads);      \
    /* exchange qubits q1 and q2. */                                                                 \
    void hpr_sv_apply_swap##SFX(REAL *psi, int64_t B, int N, int q1, int q2, int nthreads);         \
    /* out[b, q] = sum_i |psi[b, i]|^2 (1 - 2 bit_q(i)), out: (B, N) doubles, one pass. */          \
    void hpr_sv_expval_z##SFX(double *out, const REAL *psi, int64_t B, int N, int nthreads);        \
    /* out[b, i] = |psi[b, i]|^2, out: (B, 2**N) REALs. */                                           \
    void hpr_sv_probabilities##SFX(REAL *out, const REAL *psi, int64_t B, int N, int nthreads);     \
    /* out[b] = Re <psi_b| P |psi_b> for P = i^ny X^xmask Z^zmask (ny = number of Y factors). */    \
    void hpr_sv_expval_pauli##SFX(double *out, const REAL *psi, int64_t B, int N, int64_t xmask,    \
                                  int64_t zmask, int ny, int nthreads);                                                                \
    void hpr_sv_pauli_overlap##SFX(double *out, const REAL *lam, const REAL *psi, int64_t B, int N,   \
                                   int64_t xmask, int64_t zmask, int ny, int nthreads);

HPR_SV_DECLARE(float, _f32)
HPR_SV_DECLARE(double, _f64)
#endif
