/* test_ring.c: unit tests for ring.h (lock-free SPSC and MPSC queues).
 *
 * Single-threaded semantics: argument checks, allocation failure, full / empty, wrap-around,
 * batch sizes, every element size class 1..256, close, size, timeouts. Multi-threaded stress:
 * SPSC 10 M items and MPSC 4 producers x 2 M items with RING_WAIT_BLOCK (the default), short
 * runs with YIELD and SPIN (this host has 2 cores; spinning threads share them, so those runs
 * are kept small to stay fast when the host is oversubscribed). Each item carries its producer
 * and a per-producer sequence number: the consumer checks that every item arrives exactly once
 * and in per-producer order. Batch sizes vary by a fixed splitmix64 stream so failures
 * reproduce. Close must wake a parked pop and a parked push; timeouts must return.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/common.h"
#include "dengbao/ring.h"
#include "testutil.h"

static uint64_t
mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const ring_wait all_waits[] = {RING_WAIT_BLOCK, RING_WAIT_YIELD, RING_WAIT_SPIN};

/* A tiny dispatch layer so that every semantic test runs on both queue kinds. */
typedef struct anyring {
    bool mp;
    void *r;
} anyring;

static int
any_new(anyring *a, bool mp, size_t cap, size_t esz, ring_wait w, dbao_err *err)
{
    a->mp = mp;
    return mp ? ring_mpsc_new((ring_mpsc **) &a->r, cap, esz, w, err)
              : ring_spsc_new((ring_spsc **) &a->r, cap, esz, w, err);
}
static void
any_free(anyring *a)
{
    if (a->mp)
        ring_mpsc_free(a->r);
    else
        ring_spsc_free(a->r);
}
static size_t
any_push(anyring *a, const void *e, size_t n)
{
    return a->mp ? ring_mpsc_push(a->r, e, n) : ring_spsc_push(a->r, e, n);
}
static size_t
any_pop(anyring *a, void *e, size_t n)
{
    return a->mp ? ring_mpsc_pop(a->r, e, n) : ring_spsc_pop(a->r, e, n);
}
static size_t
any_push_wait(anyring *a, const void *e, size_t n, int64_t t)
{
    return a->mp ? ring_mpsc_push_wait(a->r, e, n, t) : ring_spsc_push_wait(a->r, e, n, t);
}
static size_t
any_pop_wait(anyring *a, void *e, size_t n, int64_t t)
{
    return a->mp ? ring_mpsc_pop_wait(a->r, e, n, t) : ring_spsc_pop_wait(a->r, e, n, t);
}
static size_t
any_size(anyring *a)
{
    return a->mp ? ring_mpsc_size(a->r) : ring_spsc_size(a->r);
}
static void
any_close(anyring *a)
{
    if (a->mp)
        ring_mpsc_close(a->r);
    else
        ring_spsc_close(a->r);
}

/* ---- arguments --------------------------------------------------------------------------- */

static void
test_bad_args(void **state)
{
    (void) state;
    for (int mp = 0; mp < 2; mp++) {
        anyring a;
        dbao_err err;
        void *p = (void *) 1;
        dbao_err_clear(&err);
        assert_int_equal(mp ? ring_mpsc_new(NULL, 8, 8, RING_WAIT_BLOCK, &err)
                            : ring_spsc_new(NULL, 8, 8, RING_WAIT_BLOCK, &err),
                         DBAO_EINVAL);
        assert_non_null(strstr(err.msg, "'out'"));
        assert_int_equal(any_new(&a, mp, 8, 0, RING_WAIT_BLOCK, &err), DBAO_EINVAL);
        assert_non_null(strstr(err.msg, "'elem_size'"));
        assert_int_equal(any_new(&a, mp, 8, 257, RING_WAIT_BLOCK, &err), DBAO_EINVAL);
        assert_non_null(strstr(err.msg, "'elem_size'"));
        const size_t badcap[] = {0, 1, 3, 6, 100, (size_t) 1 << 31};
        for (size_t i = 0; i < sizeof badcap / sizeof badcap[0]; i++) {
            assert_int_equal(any_new(&a, mp, badcap[i], 8, RING_WAIT_BLOCK, &err), DBAO_EINVAL);
            assert_non_null(strstr(err.msg, "'capacity'"));
        }
        assert_int_equal(any_new(&a, mp, 8, 8, (ring_wait) 3, &err), DBAO_EINVAL);
        assert_non_null(strstr(err.msg, "'wait'"));
        assert_int_equal(any_new(&a, mp, 8, 8, (ring_wait) -1, NULL), DBAO_EINVAL);
        /* *out is NULL after an allocation failure */
        a.r = p;
        dbao_alloc_fail_after(0, false);
        int rc = any_new(&a, mp, 8, 8, RING_WAIT_BLOCK, &err);
        dbao_alloc_fail_after(-1, false);
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_null(a.r);
        /* extremes are accepted */
        assert_int_equal(any_new(&a, mp, 2, 1, RING_WAIT_SPIN, &err), 0);
        any_free(&a);
        assert_int_equal(any_new(&a, mp, 2, 256, RING_WAIT_YIELD, &err), 0);
        any_free(&a);
    }
    ring_spsc_free(NULL);
    ring_mpsc_free(NULL);
}

/* ---- single-threaded semantics ----------------------------------------------------------- */

static void
test_full_empty(void **state)
{
    (void) state;
    for (int mp = 0; mp < 2; mp++) {
        anyring a;
        uint64_t in[20], out[24];
        assert_int_equal(any_new(&a, mp, 16, 8, RING_WAIT_BLOCK, NULL), 0);
        for (uint64_t i = 0; i < 20; i++)
            in[i] = 1000 + i;
        assert_int_equal(any_pop(&a, out, 4), 0);
        assert_int_equal(any_size(&a), 0);
        assert_int_equal(any_push(&a, in, 0), 0);
        assert_int_equal(any_push(&a, in, 20), 16); /* only capacity fits */
        assert_int_equal(any_size(&a), 16);
        assert_int_equal(any_push(&a, in + 16, 1), 0); /* full */
        assert_int_equal(any_pop(&a, out, 0), 0);
        assert_int_equal(any_pop(&a, out, 5), 5);
        assert_int_equal(any_push(&a, in + 16, 4), 4);
        assert_int_equal(any_push(&a, in, 2), 1);
        assert_int_equal(any_pop(&a, out + 5, 20), 16);
        for (uint64_t i = 0; i < 20; i++)
            assert_int_equal(out[i], 1000 + i);
        assert_int_equal(out[20], 1000); /* the single element pushed last */
        assert_int_equal(any_pop(&a, out, 20), 0);
        assert_int_equal(any_size(&a), 0);
        /* non-waiting *_wait forms with timeout 0 */
        assert_int_equal(any_pop_wait(&a, out, 4, 0), 0);
        assert_int_equal(any_push_wait(&a, in, 20, 0), 16);
        assert_int_equal(any_push_wait(&a, in, 1, 0), 0);
        any_free(&a);
    }
}

/* Random batch pushes and pops over many laps; every element size class. */
static void
test_wrap_batches_sizes(void **state)
{
    (void) state;
    const size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 31, 64, 100, 128, 255, 256};
    for (int mp = 0; mp < 2; mp++) {
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            size_t esz = sizes[si], cap = 32;
            anyring a;
            assert_int_equal(any_new(&a, mp, cap, esz, RING_WAIT_BLOCK, NULL), 0);
            uint8_t *in = malloc(cap * 2 * esz), *out = malloc(cap * 2 * esz);
            assert_non_null(in);
            assert_non_null(out);
            uint64_t s = esz * 7 + (uint64_t) mp, gen = 0, chk = 0;
            size_t level = 0;
            for (int it = 0; it < 3000; it++) {
                size_t want = (size_t) (mix(&s) % (cap + 8));
                for (size_t j = 0; j < want * esz; j++)
                    in[j] = (uint8_t) ((gen * esz + j) * 131u + (gen * esz + j) / 251u);
                size_t k = any_push(&a, in, want);
                size_t expect = want < cap - level ? want : cap - level;
                assert_int_equal(k, expect);
                gen += k;
                level += k;
                want = (size_t) (mix(&s) % (cap + 8));
                k = any_pop(&a, out, want);
                expect = want < level ? want : level;
                assert_int_equal(k, expect);
                for (size_t j = 0; j < k * esz; j++)
                    assert_int_equal(out[j],
                                     (uint8_t) ((chk * esz + j) * 131u + (chk * esz + j) / 251u));
                chk += k;
                level -= k;
                assert_int_equal(any_size(&a), level);
            }
            assert_true(gen > 20 * cap); /* many laps */
            free(in);
            free(out);
            any_free(&a);
        }
    }
}

static void
test_close_semantics(void **state)
{
    (void) state;
    for (int mp = 0; mp < 2; mp++) {
        for (size_t wi = 0; wi < 3; wi++) {
            anyring a;
            uint32_t v[4] = {1, 2, 3, 4}, o[4];
            assert_int_equal(any_new(&a, mp, 4, 4, all_waits[wi], NULL), 0);
            assert_int_equal(any_push(&a, v, 3), 3);
            any_close(&a);
            assert_int_equal(any_push(&a, v, 1), 0);
            assert_int_equal(any_push_wait(&a, v, 1, -1), 0);
            assert_int_equal(any_pop_wait(&a, o, 4, -1), 3); /* remaining elements drain */
            assert_memory_equal(o, v, 3 * sizeof(uint32_t));
            assert_int_equal(any_pop_wait(&a, o, 4, -1), 0); /* closed and empty */
            assert_int_equal(any_pop(&a, o, 4), 0);
            any_close(&a); /* idempotent */
            any_free(&a);
        }
    }
}

static void
test_timeouts(void **state)
{
    (void) state;
    for (int mp = 0; mp < 2; mp++) {
        for (size_t wi = 0; wi < 3; wi++) {
            anyring a;
            uint64_t v[4] = {0}, o[4];
            assert_int_equal(any_new(&a, mp, 2, 8, all_waits[wi], NULL), 0);
            int64_t t0 = mono_ns();
            assert_int_equal(any_pop_wait(&a, o, 4, 20 * 1000000), 0);
            int64_t dt = mono_ns() - t0;
            assert_true(dt >= 20 * 1000000);
            assert_true(dt < 2000 * 1000000LL);
            t0 = mono_ns();
            assert_int_equal(any_push_wait(&a, v, 4, 20 * 1000000), 2); /* 2 fit, then time out */
            dt = mono_ns() - t0;
            assert_true(dt >= 20 * 1000000);
            assert_true(dt < 2000 * 1000000LL);
            assert_int_equal(any_pop_wait(&a, o, 4, 20 * 1000000), 2);
            any_free(&a);
        }
    }
}

/* ---- close wakes blocked waiters --------------------------------------------------------- */

typedef struct waiter_arg {
    anyring *a;
    bool push;
    size_t got;
} waiter_arg;

static void *
waiter_main(void *p)
{
    waiter_arg *w = p;
    uint64_t buf[8] = {0};
    w->got = w->push ? any_push_wait(w->a, buf, 8, -1) : any_pop_wait(w->a, buf, 8, -1);
    return NULL;
}

static void
test_close_wakes(void **state)
{
    (void) state;
    for (int mp = 0; mp < 2; mp++) {
        for (size_t wi = 0; wi < 3; wi++) {
            for (int push = 0; push < 2; push++) {
                anyring a;
                assert_int_equal(any_new(&a, mp, 4, 8, all_waits[wi], NULL), 0);
                waiter_arg w = {.a = &a, .push = push, .got = 99};
                pthread_t th;
                assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
                usleep(50 * 1000); /* long enough to reach the parked state under BLOCK */
                any_close(&a);
                assert_int_equal(pthread_join(th, NULL), 0);
                assert_int_equal(w.got, push ? 4 : 0); /* push: 4 of 8 fit before close */
                any_free(&a);
            }
        }
    }
}

/* A parked consumer is woken by a push (not by a timeout): the push arrives well before the
 * pop's generous timeout, and the pop must return promptly. */
static void *
late_push_main(void *p)
{
    anyring *a = p;
    uint64_t v = 42;
    usleep(30 * 1000);
    return (void *) (uintptr_t) any_push(a, &v, 1); /* no cmocka asserts off the main thread */
}

static void
test_push_wakes_parked_pop(void **state)
{
    (void) state;
    for (int mp = 0; mp < 2; mp++) {
        anyring a;
        uint64_t o = 0;
        assert_int_equal(any_new(&a, mp, 4, 8, RING_WAIT_BLOCK, NULL), 0);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, late_push_main, &a), 0);
        int64_t t0 = mono_ns();
        assert_int_equal(any_pop_wait(&a, &o, 1, 10LL * 1000000000), 1);
        assert_true(mono_ns() - t0 < 5LL * 1000000000);
        assert_int_equal(o, 42);
        void *pushed = NULL;
        assert_int_equal(pthread_join(th, &pushed), 0);
        assert_int_equal((uintptr_t) pushed, 1);
        any_free(&a);
    }
}

/* ---- stress ------------------------------------------------------------------------------ */

typedef struct item {
    uint64_t producer;
    uint64_t seq;
} item;

typedef struct stress {
    anyring a;
    size_t nprod;
    uint64_t per_prod;
    uint64_t next[8]; /* consumer: next expected seq per producer */
    bool bad;
} stress;

typedef struct prod_arg {
    stress *s;
    uint64_t id;
} prod_arg;

static void *
producer_main(void *p)
{
    prod_arg *pa = p;
    stress *s = pa->s;
    uint64_t rs = 0x1234 + pa->id, seq = 0;
    item batch[64];
    while (seq < s->per_prod) {
        size_t n = 1 + (size_t) (mix(&rs) % 64);
        if (n > s->per_prod - seq)
            n = (size_t) (s->per_prod - seq);
        for (size_t i = 0; i < n; i++)
            batch[i] = (item){pa->id, seq + i};
        size_t k = any_push_wait(&s->a, batch, n, -1);
        if (k != n) {
            s->bad = true;
            return NULL;
        }
        seq += n;
    }
    return NULL;
}

static void
run_stress(bool mp, ring_wait w, size_t nprod, uint64_t per_prod, size_t cap)
{
    stress *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->nprod = nprod;
    s->per_prod = per_prod;
    assert_int_equal(any_new(&s->a, mp, cap, sizeof(item), w, NULL), 0);
    pthread_t th[8];
    prod_arg pa[8];
    for (size_t i = 0; i < nprod; i++) {
        pa[i] = (prod_arg){s, i};
        assert_int_equal(pthread_create(&th[i], NULL, producer_main, &pa[i]), 0);
    }
    uint64_t total = 0, want = nprod * per_prod, rs = 99;
    item buf[128];
    while (total < want) {
        size_t max = 1 + (size_t) (mix(&rs) % 128);
        size_t k = any_pop_wait(&s->a, buf, max, 30LL * 1000000000);
        if (k == 0) {
            fail_msg("stress: consumer timed out at %llu of %llu", (unsigned long long) total,
                     (unsigned long long) want);
        }
        for (size_t i = 0; i < k; i++) {
            if (buf[i].producer >= nprod || buf[i].seq != s->next[buf[i].producer]) {
                fail_msg("stress: item out of order or duplicated (producer %llu seq %llu)",
                         (unsigned long long) buf[i].producer, (unsigned long long) buf[i].seq);
            }
            s->next[buf[i].producer]++;
        }
        total += k;
    }
    for (size_t i = 0; i < nprod; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_false(s->bad);
    assert_int_equal(any_pop(&s->a, buf, 128), 0);
    for (size_t i = 0; i < nprod; i++)
        assert_int_equal(s->next[i], per_prod);
    any_free(&s->a);
    free(s);
}

/* Sanitizer builds run ~10x slower: scale the big runs down there (same code paths). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STRESS_SCALE 10
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define STRESS_SCALE 10
#endif
#endif
#ifndef STRESS_SCALE
#define STRESS_SCALE 1
#endif

static void
test_spsc_stress_block(void **state)
{
    (void) state;
    run_stress(false, RING_WAIT_BLOCK, 1, 10000000 / STRESS_SCALE, 1024);
    run_stress(false, RING_WAIT_BLOCK, 1, 200000 / STRESS_SCALE, 4); /* tiny ring: parks a lot */
}

static void
test_spsc_stress_yield_spin(void **state)
{
    (void) state;
    /* short: spinning threads on an oversubscribed host progress one time slice at a time */
    run_stress(false, RING_WAIT_YIELD, 1, 100000 / STRESS_SCALE, 1024);
    run_stress(false, RING_WAIT_SPIN, 1, 100000 / STRESS_SCALE, 1024);
}

static void
test_mpsc_stress_block(void **state)
{
    (void) state;
    run_stress(true, RING_WAIT_BLOCK, 4, 2000000 / STRESS_SCALE, 1024);
    run_stress(true, RING_WAIT_BLOCK, 4, 50000 / STRESS_SCALE, 4);
}

static void
test_mpsc_stress_yield_spin(void **state)
{
    (void) state;
    run_stress(true, RING_WAIT_YIELD, 4, 25000 / STRESS_SCALE, 1024);
    run_stress(true, RING_WAIT_SPIN, 4, 10000 / STRESS_SCALE, 1024);
}

/* The same BLOCK stress with the portable fence protocol instead of membarrier (the ring
 * picks the protocol at creation; DBAO_RING_FENCE=1 forces fences). */
static void
test_stress_fence_protocol(void **state)
{
    (void) state;
    assert_int_equal(setenv("DBAO_RING_FENCE", "1", 1), 0);
    run_stress(false, RING_WAIT_BLOCK, 1, 2000000 / STRESS_SCALE, 1024);
    run_stress(false, RING_WAIT_BLOCK, 1, 100000 / STRESS_SCALE, 4);
    run_stress(true, RING_WAIT_BLOCK, 4, 500000 / STRESS_SCALE, 1024);
    run_stress(true, RING_WAIT_BLOCK, 4, 25000 / STRESS_SCALE, 4);
    assert_int_equal(unsetenv("DBAO_RING_FENCE"), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_full_empty),
        cmocka_unit_test(test_wrap_batches_sizes),
        cmocka_unit_test(test_close_semantics),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_close_wakes),
        cmocka_unit_test(test_push_wakes_parked_pop),
        cmocka_unit_test(test_spsc_stress_block),
        cmocka_unit_test(test_spsc_stress_yield_spin),
        cmocka_unit_test(test_mpsc_stress_block),
        cmocka_unit_test(test_mpsc_stress_yield_spin),
        cmocka_unit_test(test_stress_fence_protocol),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
