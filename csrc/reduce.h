/* Element-wise reductions for hpr's collectives. Buffers in, buffers out: no allocation, no MPI,
 * no Python. Half types (float16, bfloat16) are accumulated in float32 and rounded once. */
#ifndef HPR_REDUCE_H
#define HPR_REDUCE_H
#include <stdint.h>

enum hpr_dtype { HPR_F16 = 0, HPR_BF16 = 1, HPR_F32 = 2, HPR_F64 = 3, HPR_I32 = 4, HPR_I64 = 5 };
enum hpr_op { HPR_SUM = 0, HPR_MAX = 1, HPR_MIN = 2 };

/* inout[i] = inout[i] (op) in[i], i < n. Returns 0, or -1 for an unknown dtype/op. */
int hpr_reduce_into(void *inout, const void *in, int64_t n, int dtype, int op, int nthreads);

/* out[i] = (ins[0][i] (op) ins[1][i] (op) ... ins[k-1][i]) * scale, summed in the order 0..k-1.
 * scale != 1 only for floating sums (avg). out may alias one of ins. */
int hpr_reduce_many(void *out, const void *const *ins, int k, int64_t n, int dtype, int op,
                    double scale, int nthreads);

/* x[i] *= s (floating dtypes only). */
int hpr_scale(void *x, int64_t n, int dtype, double s, int nthreads);

/* Conversions used by the kernels, exposed for their tests. */
void hpr_f16_to_f32(const uint16_t *in, float *out, int64_t n);
void hpr_f32_to_f16(const float *in, uint16_t *out, int64_t n);
void hpr_bf16_to_f32(const uint16_t *in, float *out, int64_t n);
void hpr_f32_to_bf16(const float *in, uint16_t *out, int64_t n);

int hpr_have_openmp(void);
int hpr_omp_max_threads(void);
#endif
