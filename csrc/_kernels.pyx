# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""hpr._kernels: the compiled CPU kernels. This layer only checks sizes, turns buffers into pointers and
releases the GIL; the work is in the C files beside it. Use it through hpr.kernels, not directly."""
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_ANY_CONTIGUOUS, PyBUF_C_CONTIGUOUS,
                             PyBUF_WRITABLE)
from libc.stdint cimport int64_t, uint16_t
from libc.stdlib cimport malloc, free

cdef extern from "reduce.h" nogil:
    int hpr_reduce_into(void *inout, const void *inp, int64_t n, int dtype, int op, int nthreads)
    int hpr_reduce_many(void *out, const void *const *ins, int k, int64_t n, int dtype, int op,
                        double scale, int nthreads)
    int hpr_scale(void *x, int64_t n, int dtype, double s, int nthreads)
    void hpr_f16_to_f32(const uint16_t *inp, float *out, int64_t n)
    void hpr_f32_to_f16(const float *inp, uint16_t *out, int64_t n)
    void hpr_bf16_to_f32(const uint16_t *inp, float *out, int64_t n)
    void hpr_f32_to_bf16(const float *inp, uint16_t *out, int64_t n)
    int hpr_have_openmp()
    int hpr_omp_max_threads()

cdef extern from "shm.h" nogil:
    ctypedef struct hpr_shm_t:
        char *base
        int64_t slot
        int64_t small
        int p, me
        unsigned long long seq
        unsigned long long uses
        unsigned long long progress
        int64_t spin_ns
    int HPR_SHM_TINY_BYTES
    int64_t hpr_shm_segment_bytes(int p, int64_t slot)
    int hpr_shm_barrier(hpr_shm_t *s, double timeout_s, int *missing)
    int hpr_shm_allreduce(hpr_shm_t *s, void *x, int64_t n, int dtype, int op, double scale,
                          double timeout_s, int *missing, int nthreads)
    int hpr_shm_reduce_part(hpr_shm_t *s, const void *x, int64_t n, int dtype, int op, double timeout_s,
                            int *missing, int64_t *part_off, int64_t *part_len, void **part_ptr, int nthreads)
    int hpr_shm_finish_round(hpr_shm_t *s, void *x, int64_t n, int dtype, double timeout_s, int *missing)
    int hpr_shm_allreduce_direct(hpr_shm_t *s, char *const *bases, int64_t byte_off, int64_t n, int dtype,
                                 int op, double scale, double timeout_s, int *missing)
    int hpr_dtype_size(int dtype)
    int hpr_set_timer_slack(long ns)

IF_OPENMP = bool(hpr_have_openmp())

SHM_TINY_BYTES = HPR_SHM_TINY_BYTES  # the node engine's one-line messages (csrc/shm.h)

# dtype codes (csrc/reduce.h)
F16, BF16, F32, F64, I32, I64 = 0, 1, 2, 3, 4, 5
SUM, MAX, MIN = 0, 1, 2


cdef class _View:
    """A contiguous buffer held for the length of one call."""
    cdef Py_buffer view
    cdef bint held

    def __cinit__(self, object obj, bint writable):
        PyObject_GetBuffer(obj, &self.view, PyBUF_ANY_CONTIGUOUS | (PyBUF_WRITABLE if writable else 0))
        self.held = True

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)


cdef inline int64_t _count(_View v, int dtype) except -1:
    cdef int isz = hpr_dtype_size(dtype)
    if isz == 0:
        raise ValueError(f"unknown dtype code {dtype}")
    if v.view.len % isz:
        raise ValueError(f"buffer of {v.view.len} bytes is not a whole number of {isz}-byte elements")
    return v.view.len // isz


def info():
    """What this build has: OpenMP, and OpenMP's default thread count."""
    return {"openmp": bool(hpr_have_openmp()), "omp_max_threads": hpr_omp_max_threads()}


def reduce_into(inout, src, int dtype, int op, int nthreads=1):
    """inout = inout (op) src, element-wise; both contiguous buffers of the same byte length."""
    cdef _View a = _View(inout, True)
    cdef _View b = _View(src, False)
    cdef int64_t n = _count(a, dtype)
    cdef int rc
    if b.view.len != a.view.len:
        raise ValueError(f"reduce_into: buffers differ in length ({a.view.len} vs {b.view.len} bytes)")
    with nogil:
        rc = hpr_reduce_into(a.view.buf, b.view.buf, n, dtype, op, nthreads)
    if rc:
        raise ValueError(f"reduce_into: unsupported dtype/op codes {dtype}/{op}")


def reduce_many(out, list ins, int dtype, int op, double scale=1.0, int nthreads=1):
    """out = (ins[0] (op) ins[1] (op) ...) * scale, in list order."""
    cdef _View o = _View(out, True)
    cdef int64_t n = _count(o, dtype)
    cdef int k = len(ins), i, rc
    cdef list views = [_View(x, False) for x in ins]
    cdef const void **ptrs
    if k < 1:
        raise ValueError("reduce_many needs at least one input")
    for i in range(k):
        if (<_View>views[i]).view.len != o.view.len:
            raise ValueError("reduce_many: inputs and output differ in length")
    ptrs = <const void **>malloc(k * sizeof(void *))
    if ptrs == NULL:
        raise MemoryError()
    for i in range(k):
        ptrs[i] = (<_View>views[i]).view.buf
    with nogil:
        rc = hpr_reduce_many(o.view.buf, ptrs, k, n, dtype, op, scale, nthreads)
    free(ptrs)
    if rc:
        raise ValueError(f"reduce_many: unsupported dtype/op/scale {dtype}/{op}/{scale}")


def scale(x, int dtype, double s, int nthreads=1):
    """x *= s for a floating buffer."""
    cdef _View a = _View(x, True)
    cdef int64_t n = _count(a, dtype)
    cdef int rc
    with nogil:
        rc = hpr_scale(a.view.buf, n, dtype, s, nthreads)
    if rc:
        raise ValueError("scale: integer buffers cannot be scaled")


def half_to_float(src, out, bint bfloat):
    """Widen float16 (or bfloat16) bits to float32: src uint16 buffer, out float32 buffer, same count."""
    cdef _View a = _View(src, False)
    cdef _View b = _View(out, True)
    if a.view.len * 2 != b.view.len:
        raise ValueError("half_to_float: out must hold as many float32 as src holds halves")
    with nogil:
        if bfloat:
            hpr_bf16_to_f32(<const uint16_t *>a.view.buf, <float *>b.view.buf, a.view.len // 2)
        else:
            hpr_f16_to_f32(<const uint16_t *>a.view.buf, <float *>b.view.buf, a.view.len // 2)


def float_to_half(src, out, bint bfloat):
    """Round float32 to float16 (or bfloat16) bits, nearest-even."""
    cdef _View a = _View(src, False)
    cdef _View b = _View(out, True)
    if a.view.len != b.view.len * 2:
        raise ValueError("float_to_half: out must hold as many halves as src holds float32")
    with nogil:
        if bfloat:
            hpr_f32_to_bf16(<const float *>a.view.buf, <uint16_t *>b.view.buf, b.view.len // 2)
        else:
            hpr_f32_to_f16(<const float *>a.view.buf, <uint16_t *>b.view.buf, b.view.len // 2)


def set_timer_slack(long ns):
    """Set the calling thread's timer slack (Linux); returns 0 on success."""
    return hpr_set_timer_slack(ns)


def shm_segment_bytes(int p, int64_t slot):
    return hpr_shm_segment_bytes(p, slot)


cdef class ShmEngine:
    """The node-local allreduce engine over a shared segment (csrc/shm.c).

    segment: a writable buffer (the MPI-3 shared window, same memory on every node rank), zeroed before
    first use; p, me: node size and rank. Methods return (reduce_part: first in its tuple) -1 on success
    or the node rank that did not arrive before the timeout; the caller turns that into hpr.CommTimeout."""
    cdef hpr_shm_t s
    cdef _View seg
    cdef object keep

    def __cinit__(self, segment, int p, int me, int64_t slot, int64_t small, double spin_us):
        self.keep = segment
        self.seg = _View(segment, True)
        if self.seg.view.len < hpr_shm_segment_bytes(p, slot):
            raise ValueError("shared segment is smaller than the layout needs")
        if p < 1 or p > 512 or me < 0 or me >= p or slot % 4096 or small > slot:
            raise ValueError("bad shared-memory engine geometry")
        self.s.base = <char *>self.seg.view.buf
        self.s.slot = slot
        self.s.small = small
        self.s.p = p
        self.s.me = me
        self.s.seq = 0
        self.s.uses = 0
        self.s.progress = 0
        self.s.spin_ns = <int64_t>(spin_us * 1000)

    @property
    def seq(self):
        return self.s.seq

    @property
    def slot(self):
        return self.s.slot

    def barrier(self, double timeout):
        cdef int missing = -1, rc
        with nogil:
            rc = hpr_shm_barrier(&self.s, timeout, &missing)
        return missing if rc else -1

    def allreduce(self, x, int dtype, int op, double scale, double timeout, int nthreads=1):
        """x (a writable C-contiguous buffer) becomes the op over the node; the buffer request is the
        only check (it raises before any rank is met), on the stack: this is small messages' hot path."""
        cdef Py_buffer v
        cdef int isz = hpr_dtype_size(dtype)
        cdef int missing = -1, rc
        if isz == 0:
            raise ValueError(f"unknown dtype code {dtype}")
        PyObject_GetBuffer(x, &v, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
        if v.len % isz:
            PyBuffer_Release(&v)
            raise ValueError(f"buffer of {v.len} bytes is not a whole number of {isz}-byte elements")
        with nogil:
            rc = hpr_shm_allreduce(&self.s, v.buf, v.len // isz, dtype, op, scale, timeout, &missing, nthreads)
        PyBuffer_Release(&v)
        if rc == -2:
            raise ValueError(f"shm allreduce: unsupported dtype/op {dtype}/{op}")
        return missing if rc else -1

    def allreduce_direct(self, list bases, Py_ssize_t byte_off, Py_ssize_t nbytes, int dtype, int op,
                         double scale, double timeout):
        """Allreduce of buffers in shared memory: bases are the addresses (in this process) of every
        node rank's buffer, in node-rank order. Returns -1, a missing node rank, or -3 when the ranks
        passed different offsets, lengths, dtypes or operations."""
        cdef int isz = hpr_dtype_size(dtype), missing = -1, rc, i
        cdef int64_t n
        cdef char **ptrs
        if isz == 0 or len(bases) != self.s.p or nbytes % isz:
            raise ValueError("allreduce_direct: bad arguments")
        n = nbytes // isz
        ptrs = <char **>malloc(self.s.p * sizeof(char *))
        if ptrs == NULL:
            raise MemoryError()
        for i in range(self.s.p):
            ptrs[i] = <char *><size_t>bases[i]
        with nogil:
            rc = hpr_shm_allreduce_direct(&self.s, ptrs, byte_off, n, dtype, op, scale, timeout, &missing)
        free(ptrs)
        if rc == -2:
            raise ValueError(f"shm allreduce: unsupported dtype/op {dtype}/{op}")
        if rc == -3:
            return -3
        return missing if rc else -1

    def reduce_part(self, x, int dtype, int op, double timeout, int nthreads=1):
        """First half of a hierarchical round: copies x into this rank's slot, waits for the node,
        and reduces this rank's part of every slot into its own slot. Returns (missing, part_offset,
        part_length, part_byte): the part is x[part_offset:part_offset + part_length] (elements); its
        reduced values lie part_byte bytes into the shared segment, where the caller reduces them
        across nodes in place before finish_round (part_byte is 0 when the part is empty)."""
        cdef _View a = _View(x, False)
        cdef int64_t n = _count(a, dtype), off = 0, ln = 0
        cdef void *ptr = NULL
        cdef int missing = -1, rc
        with nogil:
            rc = hpr_shm_reduce_part(&self.s, a.view.buf, n, dtype, op, timeout, &missing, &off, &ln, &ptr, nthreads)
        if rc == -2:
            raise ValueError("shm reduce_part: bad arguments")
        return (missing if rc else -1), off, ln, (<char *>ptr - self.s.base) if ptr != NULL else 0

    def finish_round(self, x, int dtype, double timeout):
        """Second half of the round reduce_part began: waits for the node, then copies every rank's
        reduced part from its slot into x. Returns missing (-1 on success)."""
        cdef _View a = _View(x, True)
        cdef int64_t n = _count(a, dtype)
        cdef int missing = -1, rc
        with nogil:
            rc = hpr_shm_finish_round(&self.s, a.view.buf, n, dtype, timeout, &missing)
        return missing if rc else -1
include "_nn.pxi"
include "_statevec.pxi"
