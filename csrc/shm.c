/* Shared-memory allreduce engine (see shm.h for the layout and the rules). */
#include "shm.h"
#include "reduce.h"
#include <string.h>
#include <time.h>
#include <errno.h>
#include <sched.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <unistd.h>
#include <limits.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <emmintrin.h>
#define HPR_HAVE_NT 1
#endif

/* Messages at least this large are gathered with non-temporal stores: the result would not stay in
 * cache anyway, and streaming stores skip reading each destination line before overwriting it. */
#define NT_MIN_BYTES (48LL << 20)

static void copy_nt(char *dst, const char *src, int64_t bytes) {
#ifdef HPR_HAVE_NT
    int64_t head = (int64_t)((16 - ((uintptr_t)dst & 15)) & 15);
    if (head > bytes) head = bytes;
    memcpy(dst, src, (size_t)head);
    dst += head; src += head; bytes -= head;
    int64_t vec = bytes / 64 * 64;
    for (int64_t i = 0; i < vec; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_stream_si128((__m128i *)(dst + i), a);
        _mm_stream_si128((__m128i *)(dst + i + 16), b);
        _mm_stream_si128((__m128i *)(dst + i + 32), c);
        _mm_stream_si128((__m128i *)(dst + i + 48), d);
    }
    memcpy(dst + vec, src + vec, (size_t)(bytes - vec));
#else
    memcpy(dst, src, (size_t)bytes);
#endif
}

static void fence_nt(void) {
#ifdef HPR_HAVE_NT
    _mm_sfence();
#endif
}

int hpr_set_timer_slack(long ns) {
#if defined(__linux__) && defined(PR_SET_TIMERSLACK)
    return prctl(PR_SET_TIMERSLACK, (unsigned long)ns, 0, 0, 0);
#else
    (void)ns;
    return -1;
#endif
}

int hpr_dtype_size(int dtype) {
    switch (dtype) {
    case HPR_F16: case HPR_BF16: return 2;
    case HPR_F32: case HPR_I32: return 4;
    case HPR_F64: case HPR_I64: return 8;
    default: return 0;
    }
}

int64_t hpr_shm_header_bytes(int p) {
    int64_t h = (int64_t)p * HPR_SHM_FLAG_STRIDE + 128;  /* + the wake word and the sleeper count */
    return (h + 4095) / 4096 * 4096;
}

int64_t hpr_shm_segment_bytes(int p, int64_t slot) {
    return hpr_shm_header_bytes(p) + 2 * (int64_t)p * slot;
}

/* Fields (8-byte words) of a rank's flag lines: 0 the barrier count, 1-5 the direct path's call
 * signature; 8 the direct path's progress count; 16 and 24 the call numbers of the two tiny banks, each
 * followed by its data (HPR_SHM_TINY_BYTES). */
#define PROGRESS_FIELD 8
#define TINY_FIELD 16

static inline uint64_t *flag_of(hpr_shm_t *s, int r) {
    return (uint64_t *)(s->base + (int64_t)r * HPR_SHM_FLAG_STRIDE);
}

static inline char *slot_of(hpr_shm_t *s, int bank, int r) {
    return s->base + hpr_shm_header_bytes(s->p) + ((int64_t)bank * s->p + r) * s->slot;
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The wake word (bumped by every announcement) and the number of sleepers, after the flags. */
static inline uint32_t *wake_word(hpr_shm_t *s) {
    return (uint32_t *)(s->base + (int64_t)s->p * HPR_SHM_FLAG_STRIDE);
}
static inline uint32_t *sleepers(hpr_shm_t *s) {
    return (uint32_t *)(s->base + (int64_t)s->p * HPR_SHM_FLAG_STRIDE + 64);
}

/* Sleep on the wake word for up to ns nanoseconds unless *f has reached target. Linux: a futex on the
 * shared segment, woken the moment a rank announces. The waiter counts itself a sleeper BEFORE it reads
 * the wake word and looks at the flag once more; announce() stores the flag BEFORE it reads the sleeper
 * count. Both pairs are sequentially consistent (a Dekker handshake), so either the announcer sees the
 * sleeper (it then moves the wake word and wakes it: the futex refuses to sleep on a moved word), or
 * the waiter sees the flag and does not sleep. Elsewhere: a plain short sleep. */
static void sleep_until(hpr_shm_t *s, const uint64_t *f, uint64_t target, int64_t ns) {
#ifdef __linux__
    struct timespec ts;
    ts.tv_sec = (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    __atomic_add_fetch(sleepers(s), 1, __ATOMIC_SEQ_CST);
    uint32_t w = __atomic_load_n(wake_word(s), __ATOMIC_SEQ_CST);
    if (__atomic_load_n(f, __ATOMIC_SEQ_CST) < target)
        syscall(SYS_futex, wake_word(s), FUTEX_WAIT, w, &ts, NULL, 0);
    __atomic_sub_fetch(sleepers(s), 1, __ATOMIC_SEQ_CST);
#else
    struct timespec ts = {0, ns < 200000 ? (long)ns : 200000};
    (void)f; (void)target;
    nanosleep(&ts, NULL);
#endif
}

/* After storing a flag or a progress count (sequentially consistent): when someone sleeps, move the
 * wake word and wake them. With nobody asleep (the common case: waiters spin first) this is one read
 * of a line nobody writes, not a write to a line every rank writes. */
static void announce(hpr_shm_t *s) {
#ifdef __linux__
    if (__atomic_load_n(sleepers(s), __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(wake_word(s), 1, __ATOMIC_SEQ_CST);
        syscall(SYS_futex, wake_word(s), FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    }
#else
    (void)s;
#endif
}

/* While spinning, a short wait (a barrier, a small message's one meeting: its peers have microseconds
 * of work before they arrive) gives its core away (sched_yield) once, when it has waited YIELD_AFTER_NS:
 * when the scheduler has put the peer on this rank's core (a loaded machine), the peer runs now (and
 * arrives) instead of after the whole spin; on an idle machine peers arrive within the first
 * microseconds and the yield (~1 us in a VM) is never reached. Only once, and never in the rounds of
 * a large message (where a peer's reduce takes longer than that anyway): on a machine where other
 * programs wait for the core, every yield may cost a time slice. */
#define YIELD_AFTER_NS 4000

/* Wait until field `field` of every rank's flag line reaches target: spin for spin_ns (the peer is
 * probably about to arrive), then sleep on the wake word, so a waiting rank holds no core. The spin
 * looks at the flag after every pause (a pause is ~25 ns on Zen 4, ~40 ns on recent Intel: looking only
 * every 32 pauses would add up to a microsecond to every wait) and at the clock every 32 looks. */
static int wait_field(hpr_shm_t *s, int field, uint64_t target, double timeout_s, int *missing,
                      int short_wait) {
    int64_t t0 = -1, limit = (int64_t)(timeout_s * 1e9);
    int yielded = !short_wait;
    for (int r = 0; r < s->p; r++) {
        uint64_t *f = flag_of(s, r) + field;
        unsigned looks = 0;
        while (__atomic_load_n(f, __ATOMIC_ACQUIRE) < target) {
            int64_t t, waited;
            if (looks++ & 31) {
                cpu_relax();
                continue;
            }
            t = now_ns();
            if (t0 < 0) t0 = t;
            waited = t - t0;
            if (waited > limit) {
                *missing = r;
                return -1;
            }
            if (waited < s->spin_ns) {
                if (!yielded && waited >= YIELD_AFTER_NS) {
                    sched_yield();
                    yielded = 1;
                } else {
                    cpu_relax();
                }
            } else {
                int64_t left = limit - waited;
                sleep_until(s, f, target, left < 100000000LL ? left + 1000 : 100000000LL);
                looks = 0;  /* woken (or timed out): one look, then the clock, then asleep again */
            }
        }
    }
    return 0;
}

/* The barrier: this rank's count up, announced, then every rank's count awaited. short_wait: whether
 * the wait may yield its core once (see YIELD_AFTER_NS). */
static int barrier(hpr_shm_t *s, double timeout_s, int *missing, int short_wait) {
    uint64_t target = ++s->seq;
    __atomic_store_n(flag_of(s, s->me), target, __ATOMIC_SEQ_CST);
    announce(s);
    return wait_field(s, 0, target, timeout_s, missing, short_wait);
}

int hpr_shm_barrier(hpr_shm_t *s, double timeout_s, int *missing) {
    return barrier(s, timeout_s, missing, 1);
}

/* The part of a round of n elements that rank r reduces: equal shares, 64-byte aligned. */
static void part_of(int64_t n, int p, int r, int isz, int64_t *lo, int64_t *len) {
    int64_t align = 64 / isz;
    int64_t q = (n + p - 1) / p;
    int64_t a, b;
    q = (q + align - 1) / align * align;
    a = (int64_t)r * q;
    b = a + q;
    if (a > n) a = n;
    if (b > n) b = n;
    *lo = a;
    *len = b - a;
}

static int reduce_part_bank(hpr_shm_t *s, int bank, int64_t n, int dtype, int op, double scale,
                            int64_t *lo, int64_t *len, int nthreads) {
    const void *ins[512];
    int isz = hpr_dtype_size(dtype);
    part_of(n, s->p, s->me, isz, lo, len);
    if (*len == 0) return 0;
    for (int r = 0; r < s->p; r++) ins[r] = slot_of(s, bank, r) + *lo * isz;
    return hpr_reduce_many(slot_of(s, bank, s->me) + *lo * isz, ins, s->p, *len, dtype, op, scale, nthreads);
}

static void gather_parts(hpr_shm_t *s, int bank, char *x, int64_t n, int isz) {
    for (int r = 0; r < s->p; r++) {
        int64_t lo, len;
        part_of(n, s->p, r, isz, &lo, &len);
        if (len) memcpy(x + lo * isz, slot_of(s, bank, r) + lo * isz, (size_t)(len * isz));
    }
}

/* Rank r's part of a round of m elements when the call's parts are laid out for rounds of `first`
 * elements (the first round's length): the same region of the slot in every round, clipped to m. */
static void part_in_round(int64_t first, int64_t m, int p, int r, int isz, int64_t *lo, int64_t *len) {
    part_of(first, p, r, isz, lo, len);
    if (*lo > m) *lo = m;
    if (*len > m - *lo) *len = m - *lo;
}

/* Copy round k of x (rounds of per elements, n in all) into this rank's slot of bank: every element
 * but this rank's own part, which it reduces straight from x. */
static void stage_round(hpr_shm_t *s, int bank, const char *xb, int64_t n, int64_t per, int64_t first,
                        int isz, int64_t k) {
    int64_t off = k * per, m = n - off < per ? n - off : per, lo, len;
    char *mine = slot_of(s, bank, s->me);
    const char *xr = xb + off * isz;
    part_in_round(first, m, s->p, s->me, isz, &lo, &len);
    memcpy(mine, xr, (size_t)(lo * isz));
    memcpy(mine + (lo + len) * isz, xr + (lo + len) * isz, (size_t)((m - lo - len) * isz));
}

int hpr_shm_allreduce(hpr_shm_t *s, void *x, int64_t n, int dtype, int op, double scale,
                      double timeout_s, int *missing, int nthreads) {
    int isz = hpr_dtype_size(dtype);
    char *xb = (char *)x;
    if (isz == 0 || s->p > 512) return -2;
    if (n <= 0) return 0;
    if (s->p == 1) return scale != 1.0 ? hpr_scale(x, n, dtype, scale, nthreads) : 0;

    if (n * isz <= s->small && n * isz <= HPR_SHM_TINY_BYTES) {
        /* One meeting, one cache line per rank: this rank writes x and then the call's number into its
         * tiny line of the call's bank; a reader that sees the number has the data in the same line
         * (one miss per peer, where a slot and a flag cost two). The number is the bank-use count, the
         * same on every rank and rising, so a line's number only grows. Lines alternate between two
         * banks on every call: a rank writes bank b again only after a later call in which every rank
         * arrived, which each rank does only after reading bank b (a tiny call in the other bank, or
         * a call with a barrier). */
        uint64_t call = ++s->uses;
        int field = TINY_FIELD + 8 * (int)(call & 1);
        uint64_t *line = flag_of(s, s->me) + field;
        const void *ins[512];
        memcpy(line + 1, xb, (size_t)(n * isz));
        __atomic_store_n(line, call, __ATOMIC_SEQ_CST);
        announce(s);
        if (wait_field(s, field, call, timeout_s, missing, 1)) return -1;
        for (int r = 0; r < s->p; r++) ins[r] = flag_of(s, r) + field + 1;
        return hpr_reduce_many(xb, ins, s->p, n, dtype, op, scale, 1) ? -2 : 0;
    }

    if (n * isz <= s->small) {
        /* One barrier: everyone publishes, then everyone reduces all of it in rank order. */
        int bank = (int)(s->uses++ & 1);
        const void *ins[512];
        memcpy(slot_of(s, bank, s->me), xb, (size_t)(n * isz));
        if (hpr_shm_barrier(s, timeout_s, missing)) return -1;
        for (int r = 0; r < s->p; r++) ins[r] = slot_of(s, bank, r);
        return hpr_reduce_many(xb, ins, s->p, n, dtype, op, scale, 1) ? -2 : 0;
    }

    /* Rounds of one slot, pipelined so that one barrier per round does two jobs. A rank's slot in a
     * bank holds the round's chunk laid out like x: the regions of the other ranks' parts (copied in
     * from x for their owners to reduce) and its own part's region (its reduced result, which the
     * others copy out). Per rank:
     *   stage(0); barrier;
     *   for each round k: reduce own part of k; stage(k+1) into the other bank; barrier; gather(k)
     * The barrier after stage(k+1) tells everyone that all of round k is reduced (gather(k) may read)
     * and all of round k+1 is staged (reduce(k+1) may read). stage(k+1) writes the bank of round k-1,
     * whose readers are done except the others' gather(k-1), which reads only this rank's own region:
     * the parts are laid out once per call (from the first round's length), so stage never writes that
     * region. Across calls the bank alternates as before: a call's first stage writes the bank the last
     * one's final gather is not reading. R rounds cost R+1 barriers (they cost 2R unpipelined). */
    int64_t per = s->slot / isz, rounds = (n + per - 1) / per, first = n < per ? n : per;
    uint64_t u0 = s->uses;
    const void *ins[512];
    stage_round(s, (int)(u0 & 1), xb, n, per, first, isz, 0);
    if (barrier(s, timeout_s, missing, 0)) return -1;
    for (int64_t k = 0; k < rounds; k++) {
        int bank = (int)((u0 + (uint64_t)k) & 1);
        int64_t off = k * per, m = n - off < per ? n - off : per, lo, len;
        char *mine = slot_of(s, bank, s->me), *xr = xb + off * isz;
        part_in_round(first, m, s->p, s->me, isz, &lo, &len);
        if (len) {
            for (int r = 0; r < s->p; r++) ins[r] = r == s->me ? xr + lo * isz : slot_of(s, bank, r) + lo * isz;
            if (hpr_reduce_many(xr + lo * isz, ins, s->p, len, dtype, op, scale, nthreads)) return -2;
            memcpy(mine + lo * isz, xr + lo * isz, (size_t)(len * isz));
        }
        if (k + 1 < rounds) stage_round(s, bank ^ 1, xb, n, per, first, isz, k + 1);
        if (barrier(s, timeout_s, missing, 0)) return -1;
        for (int r = 0; r < s->p; r++) {
            int64_t a, l;
            if (r == s->me) continue;
            part_in_round(first, m, s->p, r, isz, &a, &l);
            if (l) memcpy(xr + a * isz, slot_of(s, bank, r) + a * isz, (size_t)(l * isz));
        }
    }
    s->uses = u0 + (uint64_t)rounds;
    return 0;
}

int hpr_shm_reduce_part(hpr_shm_t *s, const void *x, int64_t n, int dtype, int op, double timeout_s,
                        int *missing, int64_t *part_off, int64_t *part_len, void **part_ptr, int nthreads) {
    int isz = hpr_dtype_size(dtype);
    int bank;
    if (isz == 0 || s->p > 512 || n * isz > s->slot) return -2;
    bank = (int)(s->uses++ & 1);
    memcpy(slot_of(s, bank, s->me), x, (size_t)(n * isz));
    if (barrier(s, timeout_s, missing, 0)) return -1;
    if (reduce_part_bank(s, bank, n, dtype, op, 1.0, part_off, part_len, nthreads)) return -2;
    *part_ptr = slot_of(s, bank, s->me) + *part_off * isz;
    return 0;
}

int hpr_shm_finish_round(hpr_shm_t *s, void *x, int64_t n, int dtype, double timeout_s, int *missing) {
    int isz = hpr_dtype_size(dtype);
    int bank = (int)((s->uses - 1) & 1);
    if (isz == 0) return -2;
    if (barrier(s, timeout_s, missing, 0)) return -1;
    gather_parts(s, bank, (char *)x, n, isz);
    return 0;
}


static int wait_progress(hpr_shm_t *s, uint64_t target, double timeout_s, int *missing) {
    return wait_field(s, PROGRESS_FIELD, target, timeout_s, missing, 0);
}

/* Chunks of the pipelined direct path: small enough that a neighbour's freshly reduced part is still
 * in cache when this rank copies it, one chunk later. */
#define DIRECT_CHUNK_BYTES (1024 * 1024)

int hpr_shm_allreduce_direct(hpr_shm_t *s, char *const *bases, int64_t byte_off, int64_t n, int dtype,
                             int op, double scale, double timeout_s, int *missing) {
    int isz = hpr_dtype_size(dtype);
    const void *ins[512];
    uint64_t *mine = flag_of(s, s->me);
    int agree = 1;
    int64_t per, nchunks;
    uint64_t base;
    if (isz == 0 || s->p > 512) return -2;
    /* publish what this rank is reducing next to its flag; compare once everyone has arrived */
    uint64_t scale_bits;
    memcpy(&scale_bits, &scale, sizeof scale_bits);  /* avg and sum differ only in the scale */
    mine[1] = (uint64_t)n;
    mine[2] = (uint64_t)byte_off;
    mine[3] = (uint64_t)(uint32_t)dtype;
    mine[4] = (uint64_t)(uint32_t)op;
    mine[5] = scale_bits;
    if (barrier(s, timeout_s, missing, 0)) return -1;
    for (int r = 0; r < s->p; r++) {
        uint64_t *f = flag_of(s, r);
        if (f[1] != (uint64_t)n || f[2] != (uint64_t)byte_off || f[3] != mine[3] || f[4] != mine[4]
            || f[5] != scale_bits) agree = 0;
    }
    if (!agree) {
        if (barrier(s, timeout_s, missing, 0)) return -1;  /* nobody leaves while others read */
        return -3;
    }
    /* Chunk k: reduce this rank's part of it from every rank's buffer, announce progress, then copy
     * the other ranks' parts of chunk k-1 (announced by them) into this rank's buffer. */
    per = DIRECT_CHUNK_BYTES / isz * s->p;
    nchunks = (n + per - 1) / per;
    base = s->progress;
    int nt = n * isz >= NT_MIN_BYTES;
    for (int64_t k = 0; k <= nchunks; k++) {
        if (k < nchunks) {
            int64_t off = k * per, m = n - off < per ? n - off : per, lo, len;
            part_of(m, s->p, s->me, isz, &lo, &len);
            if (len) {
                for (int r = 0; r < s->p; r++) ins[r] = bases[r] + byte_off + (off + lo) * isz;
                if (hpr_reduce_many(bases[s->me] + byte_off + (off + lo) * isz, ins, s->p, len, dtype, op,
                                    scale, 1)) return -2;
            }
            __atomic_store_n(mine + PROGRESS_FIELD, base + (uint64_t)k + 1, __ATOMIC_SEQ_CST);
            announce(s);
        }
        if (k >= 1) {
            int64_t off = (k - 1) * per, m = n - off < per ? n - off : per;
            if (wait_progress(s, base + (uint64_t)k, timeout_s, missing)) return -1;
            for (int r = 0; r < s->p; r++) {
                int64_t a, l;
                if (r == s->me) continue;
                part_of(m, s->p, r, isz, &a, &l);
                if (!l) continue;
                if (nt)
                    copy_nt(bases[s->me] + byte_off + (off + a) * isz, bases[r] + byte_off + (off + a) * isz, l * isz);
                else
                    memcpy(bases[s->me] + byte_off + (off + a) * isz, bases[r] + byte_off + (off + a) * isz,
                           (size_t)(l * isz));
            }
        }
    }
    s->progress = base + (uint64_t)nchunks;
    if (nt) fence_nt();
    /* nobody returns (and writes its buffer again) while a neighbour may still be copying from it */
    return barrier(s, timeout_s, missing, 0) ? -1 : 0;
}
