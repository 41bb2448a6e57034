/* The intra-node engine of hpr's collectives: ranks of one node reduce through one shared-memory
 * segment (an MPI-3 shared window allocated by the Python side). This file only touches that memory:
 * no MPI, no allocation, no Python. Ranks synchronise through per-rank sequence flags (C11 atomics) and
 * wait politely: a short spin, then sleeps that grow with the time already waited, so a waiting rank
 * gives its core to a computing one under any launcher.
 *
 * Segment layout (p ranks, S = slot bytes):
 *   [0, 256*p)            the flag lines of rank r at byte 256*r (its own four cache lines: no false
 *                         sharing): the barrier count and the direct path's call signature; the direct
 *                         path's progress count; two banks of one line each for tiny messages, a call
 *                         number and up to HPR_SHM_TINY_BYTES of data side by side
 *   [HDR, HDR + 2*p*S)    two banks of p slots; bank b, rank r at HDR + (b*p + r)*S
 * Banks alternate on every use, so a rank may refill a bank once one barrier separates it from the
 * last readers of that bank (the argument is written out in docs/architecture.md). */
#ifndef HPR_SHM_H
#define HPR_SHM_H
#include <stdint.h>

typedef struct {
    char *base;         /* the segment, mapped in this process */
    int64_t slot;       /* bytes per rank per bank (a multiple of 4096) */
    int64_t small;      /* messages up to this many bytes use the one-barrier path */
    int p, me;          /* ranks on the node, this rank */
    uint64_t seq;       /* barriers passed; the same on every rank */
    uint64_t uses;      /* bank uses; the same on every rank */
    uint64_t progress;  /* chunks reduced by the direct path so far; the same on every rank */
    int64_t spin_ns;    /* how long a wait spins before it starts to sleep */
} hpr_shm_t;

#define HPR_SHM_FLAG_STRIDE 256
#define HPR_SHM_TINY_BYTES 56  /* a tiny message and the call number that publishes it share a line */
int64_t hpr_shm_header_bytes(int p);
int64_t hpr_shm_segment_bytes(int p, int64_t slot);

/* All functions return 0, or -1 on timeout with *missing set to a node rank that did not arrive,
 * or -2 for bad arguments (unknown dtype/op). */
int hpr_shm_barrier(hpr_shm_t *s, double timeout_s, int *missing);

/* In-place allreduce of n elements of x over the node's ranks; scale != 1 for avg. Up to
 * min(small, HPR_SHM_TINY_BYTES) bytes: each rank publishes x in its tiny line, one meeting; up to
 * `small` bytes: one barrier; beyond, rounds of one slot with one barrier each (plus one), pipelined
 * (see shm.c). Every rank reduces in rank order: the results are the same bits on every rank. */
int hpr_shm_allreduce(hpr_shm_t *s, void *x, int64_t n, int dtype, int op, double scale,
                      double timeout_s, int *missing, int nthreads);

/* Two halves of one round for a hierarchical allreduce (Python runs the inter-node step between them):
 * reduce_part copies x[0:n) into this rank's slot, waits, reduces this rank's part of the round and
 * reports where it lies (*part_off elements into the slot/x, *part_len elements) and a pointer to it
 * in the segment; finish_round waits and copies every rank's reduced part back into x. n must fit one
 * slot. */
int hpr_shm_reduce_part(hpr_shm_t *s, const void *x, int64_t n, int dtype, int op, double timeout_s,
                        int *missing, int64_t *part_off, int64_t *part_len, void **part_ptr, int nthreads);
int hpr_shm_finish_round(hpr_shm_t *s, void *x, int64_t n, int dtype, double timeout_s, int *missing);

/* In-place allreduce of buffers that live in shared memory: bases[r] is where rank r's buffer starts
 * (in this process's mapping) and every rank passes the same byte_off and n. Each rank reduces its part
 * straight from every rank's buffer into its own, then copies the other parts from their owners: no
 * staging copies. Three barriers: data ready, parts reduced, everyone done reading (so a rank may write
 * its buffer again as soon as the call returns). Returns -3 on every rank when ranks disagree on
 * byte_off, n, dtype, op or scale (avg vs sum). */
int hpr_shm_allreduce_direct(hpr_shm_t *s, char *const *bases, int64_t byte_off, int64_t n, int dtype,
                             int op, double scale, double timeout_s, int *missing);

int hpr_dtype_size(int dtype);

/* Linux: this thread's timer slack (how late a sleep may wake; 50 us by default). hpr's waiting
 * threads set 1 us so their short sleeps stay short. Returns -1 where unsupported. */
int hpr_set_timer_slack(long ns);
#endif
