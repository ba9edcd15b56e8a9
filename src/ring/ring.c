/* ring.c: bounded lock-free SPSC and MPSC queues of fixed-size elements (include/dengbao/ring.h).
 *
 * What and why. The clearing daemon moves events from intake threads to one writer thread per
 * shard, and results back. A mutex+condvar queue costs two lock round trips and often a
 * futex call per item; a ring whose sides touch only their own cache line costs a few
 * nanoseconds per item and, with batch drain, a few loads and stores per batch. Everything here
 * is hand-written on C11 <stdatomic.h>: the rings are ~200 lines each, the bench compares them
 * with Concurrency Kit's ck_ring (bench/bench_ring.c), and owning the code lets the rings park
 * instead of spinning (ck_ring has no wait strategy) and copy elements of any size 1..256.
 *
 * SPSC layout. Four cache-line-aligned groups: the producer's line (tail, which only it writes,
 * and its cached copy of head), the consumer's line (head and its cached copy of tail), the
 * read-only line (mask, element size, buffer pointer, strategy, closed flag) and two wait
 * queues. Indices are free-running size_t counters (slot = index & mask); tail - head is the
 * fill level even across unsigned wrap-around, since capacity <= 2^30. A side re-reads the
 * other side's index (one cache miss) only when its cached copy says full / empty, so in steady
 * state each batch costs one release store and no shared reads.
 *
 * MPSC layout (Vyukov's bounded queue). Each slot carries a sequence number: seq == pos means
 * "free for the producer that reserves position pos", seq == pos + 1 means "published at pos".
 * A producer reserves k consecutive positions with one CAS on the shared tail (when the last
 * of them is free, all earlier ones are: the single consumer frees slots in order), copies its
 * elements and publishes each slot with a release store of seq = pos + 1. The consumer reads
 * slots in position order while seq == head + 1, copies them out and frees each slot with
 * seq = head + capacity (free for the next lap). Each producer's elements therefore arrive in
 * its own order. As with every Vyukov queue, a producer descheduled between reservation and
 * publication delays the consumer (not lock-free in the strict sense, never incorrect).
 *
 * Waiting. RING_WAIT_SPIN retries with a CPU relax hint; RING_WAIT_YIELD with sched_yield;
 * RING_WAIT_BLOCK spins RING_SPINS times, yields up to RING_YIELDS times, then parks on a futex
 * (Linux; a pthread condvar elsewhere or with -DRING_NO_FUTEX). BLOCK stops yielding as soon as
 * one sched_yield takes longer than RING_YIELD_BUSY_NS: then another thread wanted this CPU
 * (an oversubscribed host), a yield costs a whole time slice, and parking is what lets the
 * scheduler run the other side of the ring at once; for the next RING_NO_YIELD_NS waits on that
 * side spin only RING_SPINS_CONTENDED times and park without yielding, then one probes again (a
 * probe on a contended host costs one time slice, so probing by time bounds that cost to a few
 * per cent and keeps it out of p99).
 * (Measured with two CPU hogs on the 2-core host: with 16 unconditional yields the ring fell to 0.4
 * M items/s against 9 M for a mutex queue; see docs/ring.md.) A wait queue is {epoch, parked}. The
 * lost-wake-up argument, for a consumer parking on an empty ring (the other three cases are the
 * same with the roles and indices renamed): consumer                                  producer e =
 * epoch (acquire)                       store tail (release)        [publish] parked = 1 (seq_cst)
 * fence(seq_cst) fence(seq_cst)                            if load(parked, acquire) != 0 and if
 * tail != head or closed: retry              exchange(parked, 0) != 0: futex_wait(epoch, e) epoch
 * += 1; futex_wake(epoch, all) The two seq_cst fences are totally ordered. If the consumer's fence
 * is first, the producer's load after its own fence sees parked = 1 and wakes; if the producer's
 * fence is first, the consumer's load of tail after its fence sees the new tail and does not park
 * (the store-buffer pattern with seq_cst fences on both sides is forbidden by C11). If it wakes,
 * the increment of epoch comes after the consumer's read of e (the parked store is a release that
 * the producer's acquire load synchronises with), so futex_wait(epoch, e) either sees the new value
 * and returns at once or is woken by the futex_wake that follows. The exchange makes one waker
 * responsible for a wake-up: later pushes see parked = 0 and make no system call while the woken
 * consumer is still on its way (no wake-up storm), and while the consumer is awake no push makes
 * one. Several parkers (MPSC producers on a full ring) share the flag: a wake-up wakes them all,
 * and one that sets the flag after the exchange is covered by the same argument against the next
 * publish. A parker that returns without sleeping leaves the flag set: one spare wake-up later.
 * The epoch is 32 bits (the futex word); a stale e would need 2^32 wake-ups between read and
 * wait to be mistaken for current.
 * A seq_cst fence per push and per pop is expensive (it drains the store buffer, whose tail
 * store waits for the cache line the other side just read: measured 20 M items/s against ~80 M
 * without). So on Linux the rings use the asymmetric form (see heavy_barrier): the parker calls
 * membarrier(PRIVATE_EXPEDITED) after its fence, and the wakers' fence becomes a compiler
 * barrier. The argument above holds with "the waker's fence" read as "the barrier membarrier
 * forces on the waker's CPU". SPIN and YIELD rings never park and skip the check entirely.
 *
 * Close. ring_*_close stores closed (seq_cst) and runs the same fence-and-wake on both wait
 * queues; every waiter re-checks closed after its fence. Pushes that start after close returns
 * push nothing; a push racing with close may still land, so close after the last push (the
 * producer, or the owner once producers have stopped), and the consumer drains what remains.
 *
 * Portability: no x86 assumption; the relax hint is `pause` on x86-64, `yield` on aarch64 and
 * nothing elsewhere; the cache-line alignment is 128 bytes on aarch64 (big-core lines and
 * prefetch pairs) and 64 elsewhere.
 */
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__linux__) && !defined(RING_NO_FUTEX)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#define RING_FUTEX 1
#else
#define RING_FUTEX 0
#endif
#if defined(__linux__)
#define RING_COND_CLOCK CLOCK_MONOTONIC /* the fallback condvar's clock */
#else
#define RING_COND_CLOCK CLOCK_REALTIME
#endif

#if defined(__linux__) && !defined(RING_NO_MEMBARRIER)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#define RING_MEMBARRIER 1
#else
#define RING_MEMBARRIER 0
#endif

#include "dengbao/common.h"
#include "dengbao/ring.h"

#if defined(__aarch64__)
#define RING_CL 128
#else
#define RING_CL 64
#endif

#define RING_SPINS            128         /* BLOCK: relax-spins before yielding */
#define RING_YIELDS           16          /* BLOCK: sched_yield calls before parking */
#define RING_PARK_FALLBACK_NS 1000000     /* park cap if membarrier ever fails */
#define RING_YIELD_BUSY_NS    20000       /* a yield this long means another thread ran */
#define RING_NO_YIELD_NS      100000000   /* then waits park without yielding for 100 ms */
#define RING_SPINS_CONTENDED  16          /* and spin only this much first */
#define RING_STEP_CONTENDED   0x80000000u /* flag bit in a backoff step counter */

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst); /* a compiler barrier only */
#endif
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- wait queue -------------------------------------------------------------------------- */

typedef struct waitq {
    _Atomic uint32_t epoch;         /* the futex word: bumped by every wake-up */
    _Atomic uint32_t parked;        /* 1: some thread may be parked (or about to park) here */
    _Atomic int64_t no_yield_until; /* BLOCK: until then (monotonic ns) skip the yields */
#if !RING_FUTEX
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
} waitq;

static int
waitq_init(waitq *q)
{
    atomic_init(&q->epoch, 0);
    atomic_init(&q->parked, 0);
    atomic_init(&q->no_yield_until, 0);
#if !RING_FUTEX
    if (pthread_mutex_init(&q->mu, NULL) != 0)
        return DBAO_ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
#if defined(__linux__)
    pthread_condattr_setclock(&ca, RING_COND_CLOCK);
#endif
    int rc = pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&q->mu);
        return DBAO_ENOMEM;
    }
#endif
    return 0;
}

static void
waitq_destroy(waitq *q)
{
#if !RING_FUTEX
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
#else
    (void) q;
#endif
}

/* ---- the asymmetric barrier ---------------------------------------------------------------
 * With membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (Linux >= 4.14) the parking side, which is
 * slow anyway, pays for the whole store-buffer argument: the system call makes every running
 * thread of the process execute a full memory barrier before it returns, which is as if each
 * waker had a seq_cst fence at that point; a thread that is not running has one implied by its
 * context switch. The waker's fast path then needs only a compiler barrier between its
 * publishing store and its load of parked: no mfence / dmb per push or pop. This is the
 * technique of liburcu and folly's asymmetric barriers. Without membarrier (other kernels,
 * seccomp, -DRING_NO_MEMBARRIER, or DBAO_RING_FENCE=1 in the environment, which the tests use to
 * cover both paths) both sides use seq_cst fences. The choice is made per ring at creation. */

#if RING_MEMBARRIER
static atomic_int g_membarrier = -1; /* -1 not probed, 0 unavailable, 1 registered */
#endif

static bool
membarrier_ready(void)
{
#if RING_MEMBARRIER
    /* relaxed: the value is a cache of an idempotent probe; racing probes agree. */
    int v = atomic_load_explicit(&g_membarrier, memory_order_relaxed);
    if (v < 0) {
        long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        v = q > 0 && (q & MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 &&
            syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
        atomic_store_explicit(&g_membarrier, v, memory_order_relaxed);
    }
    return v == 1;
#else
    return false;
#endif
}

static bool
use_asym(void)
{
    const char *f = getenv("DBAO_RING_FENCE");
    if (f != NULL && f[0] == '1')
        return false;
    return membarrier_ready();
}

/* heavy_barrier: the parking side's half. Returns false if the membarrier call failed (it
 * cannot once registered); the caller then parks for at most RING_PARK_FALLBACK_NS, so a
 * missed wake-up costs bounded latency, never a hang. */
static bool
heavy_barrier(bool asym)
{
    /* seq_cst fence: orders the parked store before the re-check on this thread. */
    atomic_thread_fence(memory_order_seq_cst);
#if RING_MEMBARRIER
    if (asym)
        return syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
    (void) asym;
#endif
    return true;
}

/* waitq_wake: called by the side that just made progress, after its publishing store. */
static void
waitq_wake(waitq *q, bool asym)
{
    if (asym) {
        /* compiler barrier only: the parker's membarrier supplies the hardware fence. */
        atomic_signal_fence(memory_order_seq_cst);
    } else {
        /* seq_cst fence: orders our publishing store before the parked load (essay). */
        atomic_thread_fence(memory_order_seq_cst);
    }
    /* acquire: synchronises with the parker's seq_cst (so release) store, so its read of
     * epoch happens before our increment below. A plain load first: the common case (nobody
     * parked) then leaves the line shared and costs no RMW. */
    if (atomic_load_explicit(&q->parked, memory_order_acquire) == 0)
        return;
    /* acq_rel: the acquire half as above; only the thread that swaps 1 -> 0 wakes. */
    if (atomic_exchange_explicit(&q->parked, 0, memory_order_acq_rel) == 0)
        return;
#if RING_FUTEX
    /* release: nothing is published through epoch; release keeps the increment after our
     * data stores for a waiter that reads epoch with acquire and then re-checks the ring. */
    atomic_fetch_add_explicit(&q->epoch, 1, memory_order_release);
    syscall(SYS_futex, (uint32_t *) &q->epoch, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    pthread_mutex_lock(&q->mu);
    /* relaxed: the mutex orders this increment with the waiter's check. */
    atomic_fetch_add_explicit(&q->epoch, 1, memory_order_relaxed);
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
#endif
}

typedef bool (*ready_fn)(const void *ring);

/* waitq_park: one parking attempt. Returns false if the deadline (< 0: none) has passed. The
 * caller re-tries its operation after any return. */
static bool
waitq_park(waitq *q, bool asym, ready_fn ready, const void *ring, int64_t deadline)
{
    int64_t left = -1;
    if (deadline >= 0) {
        left = deadline - now_ns();
        if (left <= 0)
            return false;
    }
    /* acquire: pairs with the waker's release increment; read before announcing ourselves. */
    uint32_t e = atomic_load_explicit(&q->epoch, memory_order_acquire);
    /* seq_cst: the "parked" announcement; a release the waker's acquire load pairs with. */
    atomic_store_explicit(&q->parked, 1, memory_order_seq_cst);
    /* the other half of the store-buffer argument (see the essay and heavy_barrier). */
    if (!heavy_barrier(asym) && (left < 0 || left > RING_PARK_FALLBACK_NS))
        left = RING_PARK_FALLBACK_NS;
    if (!ready(ring)) {
#if RING_FUTEX
        struct timespec ts, *tsp = NULL;
        if (left >= 0) {
            ts.tv_sec = (time_t) (left / 1000000000);
            ts.tv_nsec = (long) (left % 1000000000);
            tsp = &ts;
        }
        /* EAGAIN (epoch already moved), EINTR, ETIMEDOUT: all mean "re-check". */
        syscall(SYS_futex, (uint32_t *) &q->epoch, FUTEX_WAIT_PRIVATE, e, tsp, NULL, 0);
#else
        pthread_mutex_lock(&q->mu);
        if (left >= 0) {
            struct timespec now;
            clock_gettime(RING_COND_CLOCK, &now); /* the condvar's clock (see waitq_init) */
            int64_t abs = (int64_t) now.tv_sec * 1000000000 + now.tv_nsec + left;
            struct timespec ts = {.tv_sec = (time_t) (abs / 1000000000),
                                  .tv_nsec = (long) (abs % 1000000000)};
            /* relaxed: the mutex orders this load with the waker's increment. */
            if (atomic_load_explicit(&q->epoch, memory_order_relaxed) == e)
                pthread_cond_timedwait(&q->cv, &q->mu, &ts);
        } else if (atomic_load_explicit(&q->epoch, memory_order_relaxed) == e) { /* mutex */
            pthread_cond_wait(&q->cv, &q->mu);
        }
        pthread_mutex_unlock(&q->mu);
#endif
    }
    /* parked stays as the waker left it (0) or as we set it (1: one spare wake-up later);
     * clearing it here could cancel another parker's announcement. */
    return true;
}

/* backoff: one waiting step by strategy; *step counts the steps of this wait. Returns false
 * once the deadline (< 0: none) has passed. */
static bool
backoff(unsigned *step, ring_wait w, waitq *q, bool asym, ready_fn ready, const void *ring,
        int64_t deadline)
{
    unsigned s = (*step)++;
    if (w == RING_WAIT_BLOCK && s == 0) {
        /* relaxed: no_yield_until is a heuristic shared by the threads waiting on this side;
         * a lost or stale update only changes when the next probe happens. */
        int64_t until = atomic_load_explicit(&q->no_yield_until, memory_order_relaxed);
        if (until != 0 && now_ns() < until) {
            /* contended recently: a short spin, no yields, then park */
            *step = RING_SPINS - RING_SPINS_CONTENDED + 1;
            *step |= RING_STEP_CONTENDED;
        }
    }
    unsigned contended = s & RING_STEP_CONTENDED;
    s &= ~RING_STEP_CONTENDED;
    if (w == RING_WAIT_SPIN || (w == RING_WAIT_BLOCK && s < RING_SPINS)) {
        cpu_relax();
        if (deadline >= 0 && (s & 63) == 63 && now_ns() >= deadline)
            return false;
        return true;
    }
    if (w == RING_WAIT_YIELD) {
        sched_yield();
        return deadline < 0 || now_ns() < deadline;
    }
    if (s < RING_SPINS + RING_YIELDS && !contended) {
        int64_t t0 = now_ns();
        sched_yield();
        int64_t t1 = now_ns();
        if (t1 - t0 > RING_YIELD_BUSY_NS) {
            /* another thread ran: the CPU is contended; for a while, park without yielding */
            atomic_store_explicit(&q->no_yield_until, t1 + RING_NO_YIELD_NS, memory_order_relaxed);
            *step = RING_SPINS + RING_YIELDS;
        }
        return deadline < 0 || t1 < deadline;
    }
    return waitq_park(q, asym, ready, ring, deadline);
}

static int64_t
deadline_of(int64_t timeout_ns)
{
    if (timeout_ns < 0)
        return -1;
    int64_t now = now_ns();
    return timeout_ns > INT64_MAX - now ? -1 : now + timeout_ns;
}

/* copy_in / copy_out: element copies with constant-size fast paths the compiler inlines. */
static inline void
copy_bytes(void *dst, const void *src, size_t len)
{
    switch (len) {
    case 4:
        memcpy(dst, src, 4);
        break;
    case 8:
        memcpy(dst, src, 8);
        break;
    case 16:
        memcpy(dst, src, 16);
        break;
    default:
        memcpy(dst, src, len);
    }
}

static int
check_args(void *out, size_t capacity, size_t elem_size, ring_wait wait, dbao_err *err)
{
    if (out == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "ring: field 'out' is null");
    if (elem_size < 1 || elem_size > RING_ELEM_MAX)
        return dbao_err_set(err, DBAO_EINVAL, "ring: field 'elem_size' not in 1..%u",
                            RING_ELEM_MAX);
    if (capacity < 2 || capacity > RING_CAPACITY_MAX || (capacity & (capacity - 1)) != 0)
        return dbao_err_set(err, DBAO_EINVAL,
                            "ring: field 'capacity' not a power of two in 2..2^30");
    if (wait != RING_WAIT_BLOCK && wait != RING_WAIT_YIELD && wait != RING_WAIT_SPIN)
        return dbao_err_set(err, DBAO_EINVAL, "ring: field 'wait' not a known strategy");
    return 0;
}

/* aligned_new: dbao_malloc (so tests can inject failures) aligned by hand to RING_CL. */
static void *
aligned_new(size_t size, void **raw)
{
    if (size > SIZE_MAX - RING_CL)
        return NULL;
    *raw = dbao_malloc(size + RING_CL);
    if (*raw == NULL)
        return NULL;
    uintptr_t p = ((uintptr_t) *raw + RING_CL - 1) & ~(uintptr_t) (RING_CL - 1);
    memset((void *) p, 0, size);
    return (void *) p;
}

/* ---- SPSC -------------------------------------------------------------------------------- */

struct ring_spsc {
    /* producer's line */
    alignas(RING_CL) _Atomic size_t tail; /* next position to write; written by the producer */
    size_t head_cache;                    /* producer's last seen head */
    /* consumer's line */
    alignas(RING_CL) _Atomic size_t head; /* next position to read; written by the consumer */
    size_t tail_cache;                    /* consumer's last seen tail */
    /* read-mostly line */
    alignas(RING_CL) size_t mask;
    size_t esz;
    uint8_t *buf;
    ring_wait wait;
    bool asym; /* membarrier-based wake-up protocol (see heavy_barrier) */
    void *raw;
    _Atomic bool closed;
    alignas(RING_CL) waitq cons_wq; /* consumer parked on empty */
    alignas(RING_CL) waitq prod_wq; /* producer parked on full */
};

int
ring_spsc_new(ring_spsc **out, size_t capacity, size_t elem_size, ring_wait wait, dbao_err *err)
{
    int rc = check_args(out, capacity, elem_size, wait, err);
    if (rc != 0)
        return rc;
    *out = NULL;
    size_t hdr = (sizeof(ring_spsc) + RING_CL - 1) & ~(size_t) (RING_CL - 1);
    if (capacity > (SIZE_MAX - hdr) / elem_size)
        return dbao_err_set(err, DBAO_ERANGE, "ring: field 'capacity' too large for memory");
    void *raw;
    ring_spsc *r = aligned_new(hdr + capacity * elem_size, &raw);
    if (r == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "ring: out of memory for the ring");
    r->raw = raw;
    r->mask = capacity - 1;
    r->esz = elem_size;
    r->buf = (uint8_t *) r + hdr;
    r->wait = wait;
    r->asym = wait == RING_WAIT_BLOCK && use_asym();
    atomic_init(&r->tail, 0);
    atomic_init(&r->head, 0);
    atomic_init(&r->closed, false);
    if (waitq_init(&r->cons_wq) != 0) {
        dbao_free(raw);
        return dbao_err_set(err, DBAO_ENOMEM, "ring: cannot set up the wait queue");
    }
    if (waitq_init(&r->prod_wq) != 0) {
        waitq_destroy(&r->cons_wq);
        dbao_free(raw);
        return dbao_err_set(err, DBAO_ENOMEM, "ring: cannot set up the wait queue");
    }
    *out = r;
    return 0;
}

void
ring_spsc_free(ring_spsc *r)
{
    if (r == NULL)
        return;
    waitq_destroy(&r->cons_wq);
    waitq_destroy(&r->prod_wq);
    dbao_free(r->raw);
}

size_t
ring_spsc_push(ring_spsc *r, const void *elems, size_t n)
{
    /* relaxed: only this (producer) thread writes tail. */
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t cap = r->mask + 1;
    size_t room = cap - (t - r->head_cache);
    if (room < n) {
        /* acquire: pairs with the consumer's release store of head, so its reads of the
         * freed slots happen before we overwrite them. */
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        room = cap - (t - r->head_cache);
    }
    size_t k = n < room ? n : room;
    /* relaxed: closed is a one-way flag; a push racing with close may land (see the essay). */
    if (k == 0 || atomic_load_explicit(&r->closed, memory_order_relaxed))
        return 0;
    size_t i = t & r->mask, first = cap - i < k ? cap - i : k;
    const uint8_t *src = elems;
    if (k == 1) {
        copy_bytes(r->buf + i * r->esz, src, r->esz);
    } else {
        memcpy(r->buf + i * r->esz, src, first * r->esz);
        if (k > first)
            memcpy(r->buf, src + first * r->esz, (k - first) * r->esz);
    }
    /* release: the element bytes above become visible before the consumer sees the new tail. */
    atomic_store_explicit(&r->tail, t + k, memory_order_release);
    if (r->wait == RING_WAIT_BLOCK)
        waitq_wake(&r->cons_wq, r->asym);
    return k;
}

size_t
ring_spsc_pop(ring_spsc *r, void *elems, size_t max)
{
    /* relaxed: only this (consumer) thread writes head. */
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t avail = r->tail_cache - h;
    if (avail < max) {
        /* acquire: pairs with the producer's release store of tail, so the element bytes
         * written before it are visible to our copies below. */
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        avail = r->tail_cache - h;
    }
    size_t k = max < avail ? max : avail;
    if (k == 0)
        return 0;
    size_t cap = r->mask + 1, i = h & r->mask, first = cap - i < k ? cap - i : k;
    uint8_t *dst = elems;
    if (k == 1) {
        copy_bytes(dst, r->buf + i * r->esz, r->esz);
    } else {
        memcpy(dst, r->buf + i * r->esz, first * r->esz);
        if (k > first)
            memcpy(dst + first * r->esz, r->buf, (k - first) * r->esz);
    }
    /* release: our reads of the slots complete before the producer may reuse them. */
    atomic_store_explicit(&r->head, h + k, memory_order_release);
    if (r->wait == RING_WAIT_BLOCK)
        waitq_wake(&r->prod_wq, r->asym);
    return k;
}

/* Ready predicates, evaluated after the parking fence. Relaxed loads suffice there: the fence
 * supplies the ordering, and the caller re-runs push/pop (with their acquire loads) anyway. */
static bool
spsc_cons_ready(const void *p)
{
    const ring_spsc *r = p;
    return atomic_load_explicit(&r->tail, memory_order_relaxed) !=
               atomic_load_explicit(&r->head, memory_order_relaxed) ||
           atomic_load_explicit(&r->closed, memory_order_relaxed);
}

static bool
spsc_prod_ready(const void *p)
{
    const ring_spsc *r = p;
    return atomic_load_explicit(&r->tail, memory_order_relaxed) -
                   atomic_load_explicit(&r->head, memory_order_relaxed) <=
               r->mask ||
           atomic_load_explicit(&r->closed, memory_order_relaxed);
}

size_t
ring_spsc_push_wait(ring_spsc *r, const void *elems, size_t n, int64_t timeout_ns)
{
    const uint8_t *src = elems;
    size_t done = ring_spsc_push(r, src, n);
    if (done == n || timeout_ns == 0)
        return done;
    int64_t deadline = deadline_of(timeout_ns);
    unsigned step = 0;
    while (done < n) {
        /* acquire: a close seen here is final; nothing is read through it. */
        if (atomic_load_explicit(&r->closed, memory_order_acquire))
            break;
        if (!backoff(&step, r->wait, &r->prod_wq, r->asym, spsc_prod_ready, r, deadline)) {
            done += ring_spsc_push(r, src + done * r->esz, n - done);
            break;
        }
        size_t k = ring_spsc_push(r, src + done * r->esz, n - done);
        if (k > 0)
            step = 0;
        done += k;
    }
    return done;
}

size_t
ring_spsc_pop_wait(ring_spsc *r, void *elems, size_t max, int64_t timeout_ns)
{
    size_t k = ring_spsc_pop(r, elems, max);
    if (k > 0 || timeout_ns == 0 || max == 0)
        return k;
    int64_t deadline = deadline_of(timeout_ns);
    unsigned step = 0;
    for (;;) {
        /* acquire: pairs with close's seq_cst store; the pop below then sees every element
         * pushed before close. */
        if (atomic_load_explicit(&r->closed, memory_order_acquire))
            return ring_spsc_pop(r, elems, max);
        if (!backoff(&step, r->wait, &r->cons_wq, r->asym, spsc_cons_ready, r, deadline))
            return ring_spsc_pop(r, elems, max);
        k = ring_spsc_pop(r, elems, max);
        if (k > 0)
            return k;
    }
}

size_t
ring_spsc_size(const ring_spsc *r)
{
    /* acquire on head, then tail: tail read later is >= the head read first, so the
     * difference never goes negative. */
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t n = t - h;
    return n > r->mask + 1 ? r->mask + 1 : n;
}

void
ring_spsc_close(ring_spsc *r)
{
    /* seq_cst: the store half of the wake-up argument for every parked waiter. */
    atomic_store_explicit(&r->closed, true, memory_order_seq_cst);
    waitq_wake(&r->cons_wq, false); /* close is rare: always the full fence */
    waitq_wake(&r->prod_wq, false);
}

/* ---- MPSC -------------------------------------------------------------------------------- */

struct ring_mpsc {
    /* producers' shared line */
    alignas(RING_CL) _Atomic size_t tail; /* next position to reserve; CAS by producers */
    /* consumer's line */
    alignas(RING_CL) _Atomic size_t head; /* next position to read; written by the consumer */
    /* read-mostly line */
    alignas(RING_CL) size_t mask;
    size_t esz;
    size_t stride; /* bytes per slot: the sequence word, then the element, 8-byte aligned */
    uint8_t *slots;
    ring_wait wait;
    bool asym; /* membarrier-based wake-up protocol (see heavy_barrier) */
    void *raw;
    _Atomic bool closed;
    alignas(RING_CL) waitq cons_wq;
    alignas(RING_CL) waitq prod_wq;
};

#define MPSC_SEQ(r, pos)  ((_Atomic size_t *) ((r)->slots + ((pos) & (r)->mask) * (r)->stride))
#define MPSC_DATA(r, pos) ((r)->slots + ((pos) & (r)->mask) * (r)->stride + sizeof(_Atomic size_t))

int
ring_mpsc_new(ring_mpsc **out, size_t capacity, size_t elem_size, ring_wait wait, dbao_err *err)
{
    int rc = check_args(out, capacity, elem_size, wait, err);
    if (rc != 0)
        return rc;
    *out = NULL;
    size_t hdr = (sizeof(ring_mpsc) + RING_CL - 1) & ~(size_t) (RING_CL - 1);
    size_t stride = (sizeof(_Atomic size_t) + elem_size + 7) & ~(size_t) 7;
    if (capacity > (SIZE_MAX - hdr) / stride)
        return dbao_err_set(err, DBAO_ERANGE, "ring: field 'capacity' too large for memory");
    void *raw;
    ring_mpsc *r = aligned_new(hdr + capacity * stride, &raw);
    if (r == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "ring: out of memory for the ring");
    r->raw = raw;
    r->mask = capacity - 1;
    r->esz = elem_size;
    r->stride = stride;
    r->slots = (uint8_t *) r + hdr;
    r->wait = wait;
    r->asym = wait == RING_WAIT_BLOCK && use_asym();
    atomic_init(&r->tail, 0);
    atomic_init(&r->head, 0);
    atomic_init(&r->closed, false);
    for (size_t i = 0; i < capacity; i++)
        atomic_init(MPSC_SEQ(r, i), i); /* free for position i of lap 0 */
    if (waitq_init(&r->cons_wq) != 0) {
        dbao_free(raw);
        return dbao_err_set(err, DBAO_ENOMEM, "ring: cannot set up the wait queue");
    }
    if (waitq_init(&r->prod_wq) != 0) {
        waitq_destroy(&r->cons_wq);
        dbao_free(raw);
        return dbao_err_set(err, DBAO_ENOMEM, "ring: cannot set up the wait queue");
    }
    *out = r;
    return 0;
}

void
ring_mpsc_free(ring_mpsc *r)
{
    if (r == NULL)
        return;
    waitq_destroy(&r->cons_wq);
    waitq_destroy(&r->prod_wq);
    dbao_free(r->raw);
}

size_t
ring_mpsc_push(ring_mpsc *r, const void *elems, size_t n)
{
    size_t cap = r->mask + 1;
    /* relaxed: closed is a one-way flag; a push racing with close may land (see the essay). */
    if (n == 0 || atomic_load_explicit(&r->closed, memory_order_relaxed))
        return 0;
    size_t k = n < cap ? n : cap;
    /* relaxed: the CAS below validates pos; the slot sequence load carries the ordering. */
    size_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    for (;;) {
        /* acquire: pairs with the consumer's release store freeing the slot (seq = pos), so
         * its read of the old element happens before our write. The consumer frees slots in
         * order, so the last of our k slots being free means all k are. */
        size_t seq = atomic_load_explicit(MPSC_SEQ(r, pos + k - 1), memory_order_acquire);
        intptr_t dif = (intptr_t) (seq - (pos + k - 1));
        if (dif == 0) {
            /* relaxed: the reservation publishes nothing; the data is published per slot. */
            if (atomic_compare_exchange_weak_explicit(&r->tail, &pos, pos + k, memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
            /* pos now holds the current tail; retry */
        } else if (dif < 0) {
            /* the last slot is still in use (ring too full for k): shrink k to what is free.
             * acquire: pairs with the consumer's release store of head (after it freed the
             * slots below head). */
            size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
            size_t used = pos - h;
            if ((intptr_t) used < 0 || used > cap) {
                /* pos is stale (other producers and the consumer moved on): reload. */
                pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
                continue;
            }
            size_t room = cap - used;
            if (room == 0) {
                /* relaxed: only compared with pos; the slot sequences carry the ordering. */
                size_t now = atomic_load_explicit(&r->tail, memory_order_relaxed);
                if (now == pos)
                    return 0; /* full */
                pos = now;
                continue;
            }
            k = (n < room ? n : room);
        } else {
            /* another producer took this position: reload the tail. */
            pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
        }
    }
    const uint8_t *src = elems;
    for (size_t j = 0; j < k; j++) {
        copy_bytes(MPSC_DATA(r, pos + j), src + j * r->esz, r->esz);
        /* release: the element bytes become visible before the consumer sees seq = pos+j+1. */
        atomic_store_explicit(MPSC_SEQ(r, pos + j), pos + j + 1, memory_order_release);
    }
    if (r->wait == RING_WAIT_BLOCK)
        waitq_wake(&r->cons_wq, r->asym);
    return k;
}

size_t
ring_mpsc_pop(ring_mpsc *r, void *elems, size_t max)
{
    size_t cap = r->mask + 1;
    /* relaxed: only the consumer writes head. */
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint8_t *dst = elems;
    size_t k = 0;
    while (k < max) {
        _Atomic size_t *sq = MPSC_SEQ(r, h);
        /* acquire: pairs with the producer's release publish, so the bytes are visible. */
        if (atomic_load_explicit(sq, memory_order_acquire) != h + 1)
            break;
        copy_bytes(dst + k * r->esz, MPSC_DATA(r, h), r->esz);
        /* release: our read of the slot completes before a producer of the next lap (which
         * acquires seq) writes it. */
        atomic_store_explicit(sq, h + cap, memory_order_release);
        h++;
        k++;
    }
    if (k == 0)
        return 0;
    /* release: head is read by producers (acquire) to size a reservation and by size(). */
    atomic_store_explicit(&r->head, h, memory_order_release);
    if (r->wait == RING_WAIT_BLOCK)
        waitq_wake(&r->prod_wq, r->asym);
    return k;
}

/* Relaxed loads, as in the SPSC predicates: the parking fence orders them. */
static bool
mpsc_cons_ready(const void *p)
{
    const ring_mpsc *r = p;
    size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    return atomic_load_explicit(MPSC_SEQ(r, h), memory_order_relaxed) == h + 1 ||
           atomic_load_explicit(&r->closed, memory_order_relaxed);
}

static bool
mpsc_prod_ready(const void *p)
{
    const ring_mpsc *r = p;
    size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    /* the slot at tail is free for this lap */
    return atomic_load_explicit(MPSC_SEQ(r, t), memory_order_relaxed) == t ||
           atomic_load_explicit(&r->closed, memory_order_relaxed);
}

size_t
ring_mpsc_push_wait(ring_mpsc *r, const void *elems, size_t n, int64_t timeout_ns)
{
    const uint8_t *src = elems;
    size_t done = ring_mpsc_push(r, src, n);
    if (done == n || timeout_ns == 0)
        return done;
    int64_t deadline = deadline_of(timeout_ns);
    unsigned step = 0;
    while (done < n) {
        /* acquire: a close seen here is final; nothing is read through it. */
        if (atomic_load_explicit(&r->closed, memory_order_acquire))
            break;
        if (!backoff(&step, r->wait, &r->prod_wq, r->asym, mpsc_prod_ready, r, deadline)) {
            done += ring_mpsc_push(r, src + done * r->esz, n - done);
            break;
        }
        size_t k = ring_mpsc_push(r, src + done * r->esz, n - done);
        if (k > 0)
            step = 0;
        done += k;
    }
    return done;
}

size_t
ring_mpsc_pop_wait(ring_mpsc *r, void *elems, size_t max, int64_t timeout_ns)
{
    size_t k = ring_mpsc_pop(r, elems, max);
    if (k > 0 || timeout_ns == 0 || max == 0)
        return k;
    int64_t deadline = deadline_of(timeout_ns);
    unsigned step = 0;
    for (;;) {
        /* acquire: pairs with close's seq_cst store; the pop below then sees every element
         * pushed before close. */
        if (atomic_load_explicit(&r->closed, memory_order_acquire))
            return ring_mpsc_pop(r, elems, max);
        if (!backoff(&step, r->wait, &r->cons_wq, r->asym, mpsc_cons_ready, r, deadline))
            return ring_mpsc_pop(r, elems, max);
        k = ring_mpsc_pop(r, elems, max);
        if (k > 0)
            return k;
    }
}

size_t
ring_mpsc_size(const ring_mpsc *r)
{
    /* acquire on head, then tail, as in ring_spsc_size. Counts reserved slots too. */
    size_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    size_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t n = t - h;
    return n > r->mask + 1 ? r->mask + 1 : n;
}

void
ring_mpsc_close(ring_mpsc *r)
{
    /* seq_cst: the store half of the wake-up argument for every parked waiter. */
    atomic_store_explicit(&r->closed, true, memory_order_seq_cst);
    waitq_wake(&r->cons_wq, false); /* close is rare: always the full fence */
    waitq_wake(&r->prod_wq, false);
}
