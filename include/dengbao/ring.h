/* ring.h: bounded lock-free queues of fixed-size elements (issue 8, "ring").
 *
 * Two queues share one contract:
 *   ring_spsc  single producer, single consumer. Head and tail indices live on their own cache
 *              lines; each side keeps a cached copy of the other side's index and re-reads the
 *              shared one only when the cached value says the ring looks full (producer) or
 *              empty (consumer). Batch push and batch drain move many elements per index update.
 *   ring_mpsc  many producers, one consumer. Producers reserve a slot with a CAS on the tail and
 *              publish it through a per-slot sequence number (Vyukov's bounded queue); the
 *              consumer drains published slots in order.
 *
 * Elements are elem_size bytes (1..256), copied in and out. Capacity is a power of two
 * (2..2^30). Design, memory-order arguments and measured figures: docs/ring.md.
 *
 * Waiting (the *_wait functions) follows the ring's ring_wait strategy. RING_WAIT_BLOCK (the
 * default) spins briefly, yields, then parks on a futex; a parked side sets a "parked" flag
 * and the other side issues a wake-up only when it sees that flag, so a busy consumer costs
 * producers no system call. When a yield shows the CPU is contended, BLOCK stops yielding for
 * a while and parks sooner (on a shared host a yield costs a time slice). On Linux the parking
 * side uses membarrier() so that push and pop need no hardware fence; DBAO_RING_FENCE=1 in the
 * environment (read when a ring is created) selects plain seq_cst fences instead.
 *
 * Threading: for ring_spsc exactly one thread pushes and one thread pops at a time (they may be
 * different threads from call to call if the caller orders the hand-over). For ring_mpsc any
 * number of threads push and exactly one pops. ring_*_size and ring_*_close may be called from
 * any thread. ring_*_free must not race with any other call.
 * Errors: ring_*_new returns 0 or DBAO_EINVAL / DBAO_ERANGE / DBAO_ENOMEM with a message in the
 * optional dbao_err. The data functions cannot fail; they return counts.
 */
#ifndef DENGBAO_RING_H
#define DENGBAO_RING_H

#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RING_ELEM_MAX     256u       /* largest elem_size */
#define RING_CAPACITY_MAX (1u << 30) /* largest capacity */

typedef enum ring_wait {
    RING_WAIT_BLOCK = 0, /* default: brief spin, then yield, then park (futex on Linux via
                            syscall(SYS_futex); portable fallback pthread cond) — idle burns no
                            CPU */
    RING_WAIT_YIELD = 1, /* spin with sched_yield: low latency, a core when idle */
    RING_WAIT_SPIN = 2,  /* busy spin with a CPU relax hint (pause on x86-64, yield on aarch64,
                            else nothing): lowest latency, needs a dedicated core */
} ring_wait;

/* Fixed-size elements (elem_size bytes, 1..256, copied in and out), capacity a power of two
 * (2..2^30). Single producer, single consumer: cached head/tail indices, each on its own
 * cache line, batch push and drain. */
typedef struct ring_spsc ring_spsc;

/* ring_spsc_new allocates a ring in *out. DBAO_EINVAL: out NULL, elem_size out of 1..256,
 * capacity not a power of two or out of 2..2^30, unknown wait; DBAO_ENOMEM. */
int ring_spsc_new(ring_spsc **out, size_t capacity, size_t elem_size, ring_wait wait,
                  dbao_err *err);
void ring_spsc_free(ring_spsc *r); /* NULL is a no-op */
/* Non-blocking: push copies up to n elements in and returns how many went in (0 when full or
 * closed); pop copies up to max elements out (a batch drain) and returns how many. */
size_t ring_spsc_push(ring_spsc *r, const void *elems, size_t n);
size_t ring_spsc_pop(ring_spsc *r, void *elems, size_t max);
/* Blocking forms, waiting by the ring's strategy; timeout_ns < 0: no limit. push_wait returns
 * when all n are in (n), the timeout passed or the ring was closed (fewer). pop_wait returns
 * >= 1 element, or 0 on timeout or when the ring is closed and empty. */
size_t ring_spsc_push_wait(ring_spsc *r, const void *elems, size_t n, int64_t timeout_ns);
size_t ring_spsc_pop_wait(ring_spsc *r, void *elems, size_t max, int64_t timeout_ns);
size_t ring_spsc_size(const ring_spsc *r); /* approximate, any thread */
void ring_spsc_close(ring_spsc *r);        /* wakes every waiter; pushes then fail */

/* Multi-producer single-consumer: same contract; producers reserve slots with a CAS on the
 * tail and publish each slot with a per-slot sequence (Vyukov), the consumer drains published
 * slots in order. Elements pushed by one producer arrive in that producer's order; a batch
 * push by one producer may interleave with other producers' elements. */
typedef struct ring_mpsc ring_mpsc;

int ring_mpsc_new(ring_mpsc **out, size_t capacity, size_t elem_size, ring_wait wait,
                  dbao_err *err);
void ring_mpsc_free(ring_mpsc *r);
size_t ring_mpsc_push(ring_mpsc *r, const void *elems, size_t n);
size_t ring_mpsc_pop(ring_mpsc *r, void *elems, size_t max);
size_t ring_mpsc_push_wait(ring_mpsc *r, const void *elems, size_t n, int64_t timeout_ns);
size_t ring_mpsc_pop_wait(ring_mpsc *r, void *elems, size_t max, int64_t timeout_ns);
size_t ring_mpsc_size(const ring_mpsc *r);
void ring_mpsc_close(ring_mpsc *r);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_RING_H */
