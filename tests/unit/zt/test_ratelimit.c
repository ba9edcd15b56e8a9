/* test_ratelimit.c: token buckets per key (src/zt/ratelimit.c).
 *
 * All but the concurrency test drive the clock by hand (now_ns), so the figures are exact:
 * burst then rate, Retry-After values (rounded up to whole milliseconds), fractional rates
 * (rate per period), many independent keys including long (digested) and empty keys,
 * occupancy (no key overflows at 50% load, under 1% at 80%), a full table sending new keys to
 * the shared overflow bucket (never unlimited), exact eviction of refilled buckets (lazily and
 * by sweep), a clock going back, option checks and allocation failures. Concurrency: threads
 * hammer one key on the real monotonic clock and the total admitted must stay within
 * burst + rate * elapsed. The last test prints the cost of a take.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dengbao/zt.h"

#define MS 1000000ull
#define S  1000000000ull

static zt_ratelimit *
table(uint32_t rate, uint32_t period_ms, uint32_t burst, size_t max_keys)
{
    zt_ratelimit_opts o = {
        .rate = rate, .period_ms = period_ms, .burst = burst, .max_keys = max_keys};
    zt_ratelimit *t = NULL;
    dbao_err err = {0};
    if (zt_ratelimit_new(&t, &o, &err) != 0) {
        fail_msg("zt_ratelimit_new: %s", err.msg);
    }
    return t;
}

static bool
take(zt_ratelimit *t, const char *key, uint64_t now, uint32_t *retry)
{
    return zt_ratelimit_take(t, key, strlen(key), now, retry);
}

static void
test_burst_then_rate(void **state)
{
    (void) state;
    zt_ratelimit *t = table(10, 0, 5, 0); /* 10/s, burst 5: one token per 100 ms */
    uint32_t retry = 77;
    uint64_t t0 = 1000 * S;
    for (int i = 0; i < 5; i++) {
        assert_true(take(t, "alice", t0, &retry));
        assert_int_equal(retry, 0);
    }
    assert_false(take(t, "alice", t0, &retry));
    assert_int_equal(retry, 100);
    assert_false(take(t, "alice", t0 + 40 * MS, &retry));
    assert_int_equal(retry, 60);
    assert_false(take(t, "alice", t0 + 100 * MS - 1, &retry));
    assert_int_equal(retry, 1); /* 1 ns left: rounded up */
    assert_true(take(t, "alice", t0 + 100 * MS, &retry));
    assert_false(take(t, "alice", t0 + 100 * MS, &retry));
    assert_int_equal(retry, 100);
    /* steady state: one per 100 ms */
    int ok = 0;
    for (uint64_t ms = 101; ms <= 1100; ms++) {
        ok += take(t, "alice", t0 + ms * MS, NULL);
    }
    assert_int_equal(ok, 10);
    /* after a long pause the bucket is full again, never fuller */
    ok = 0;
    for (int i = 0; i < 20; i++) {
        ok += take(t, "alice", t0 + 3600 * S, NULL);
    }
    assert_int_equal(ok, 5);
    /* other keys are independent */
    assert_true(take(t, "bob", t0, NULL));
    zt_ratelimit_free(t);
}

static void
test_retry_after(void **state)
{
    (void) state;
    zt_ratelimit *t = table(1, 60000, 1, 0); /* one per minute */
    uint32_t retry;
    assert_true(take(t, "k", 0, &retry));
    assert_false(take(t, "k", 0, &retry));
    assert_int_equal(retry, 60000);
    assert_false(take(t, "k", 59500 * MS, &retry));
    assert_int_equal(retry, 500);
    assert_false(take(t, "k", 59500 * MS + 1, &retry));
    assert_int_equal(retry, 500); /* 499.999999 ms rounded up */
    assert_true(take(t, "k", 60 * S, &retry));
    zt_ratelimit_free(t);

    /* fractional rate: 3 per second (interval rounded up to 333333334 ns) */
    t = table(3, 1000, 2, 0);
    int ok = 0;
    for (uint64_t now = 0; now <= 10 * S; now += MS) {
        ok += take(t, "k", now, NULL);
    }
    assert_int_equal(ok, 2 + 29); /* burst + floor(10 s / 333333334 ns) */
    zt_ratelimit_free(t);

    /* a huge interval (one per day) reports a long but representable wait */
    t = table(1, 86400000, 1, 0);
    assert_true(take(t, "k", 5, &retry));
    assert_false(take(t, "k", 5, &retry));
    assert_int_equal(retry, 86400000);
    zt_ratelimit_free(t);
}

static void
test_many_keys(void **state)
{
    (void) state;
    zt_ratelimit *t = table(1, 1000, 3, 1 << 16);
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof(key), "10.0.%d.%d", i / 256, i % 256);
        for (int j = 0; j < 3; j++) {
            assert_true(take(t, key, 0, NULL));
        }
        assert_false(take(t, key, 0, NULL));
    }
    zt_ratelimit_stats st;
    zt_ratelimit_get_stats(t, 0, &st);
    assert_int_equal(st.slots, 1 << 16);
    assert_int_equal(st.keys, 20000);
    assert_int_equal(st.overflow_hits, 0);
    /* long keys are digested: equal ones share a bucket, different ones do not */
    char a[200], b[200];
    memset(a, 'x', sizeof(a));
    memcpy(b, a, sizeof(b));
    b[199] = 'y';
    for (int j = 0; j < 3; j++) {
        assert_true(zt_ratelimit_take(t, a, sizeof(a), 0, NULL));
    }
    assert_false(zt_ratelimit_take(t, a, sizeof(a), 0, NULL));
    assert_true(zt_ratelimit_take(t, b, sizeof(b), 0, NULL));
    /* a 48-byte key is inline, a 49-byte key digested: they are different keys */
    assert_true(zt_ratelimit_take(t, a, 48, 0, NULL));
    assert_true(zt_ratelimit_take(t, a, 49, 0, NULL));
    assert_true(zt_ratelimit_take(t, a, 49, 0, NULL));
    assert_true(zt_ratelimit_take(t, a, 49, 0, NULL));
    assert_false(zt_ratelimit_take(t, a, 49, 0, NULL));
    assert_true(zt_ratelimit_take(t, a, 48, 0, NULL));
    /* binary keys and the empty key */
    assert_true(zt_ratelimit_take(t, "\0\1", 2, 0, NULL));
    assert_true(zt_ratelimit_take(t, "\0\2", 2, 0, NULL));
    assert_true(zt_ratelimit_take(t, NULL, 0, 0, NULL));
    zt_ratelimit_free(t);
}

/* occupancy: two-choice buckets keep every key in its own bucket up to high loads */
static void
test_occupancy(void **state)
{
    (void) state;
    static const struct {
        int pct;
        double max_overflow; /* fraction of new keys sent to the overflow bucket */
    } L[] = {{50, 0.0}, {80, 0.01}};
    for (size_t l = 0; l < sizeof(L) / sizeof(L[0]); l++) {
        zt_ratelimit *t = table(1, 1000, 5, 1 << 16);
        int n = (1 << 16) * L[l].pct / 100;
        char key[32];
        for (int i = 0; i < n; i++) {
            snprintf(key, sizeof(key), "key-%d", i);
            zt_ratelimit_take(t, key, strlen(key), 0, NULL);
        }
        zt_ratelimit_stats st;
        zt_ratelimit_get_stats(t, 0, &st);
        printf("ratelimit: %d%% of %zu slots: %llu keys overflowed\n", L[l].pct, st.slots,
               (unsigned long long) st.overflow_hits);
        assert_true((double) st.overflow_hits <= L[l].max_overflow * n);
        assert_int_equal(st.keys + st.overflow_hits, (size_t) n);
        zt_ratelimit_free(t);
    }
}

static void
test_overflow(void **state)
{
    (void) state;
    zt_ratelimit_opts o = {
        .rate = 1, .burst = 2, .max_keys = 8, .overflow_rate = 10, .overflow_burst = 3};
    zt_ratelimit *t = NULL;
    assert_int_equal(zt_ratelimit_new(&t, &o, NULL), 0);
    char key[16];
    /* 8 slots in one shard, every key's window covers them all: fill them */
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_true(take(t, key, 0, NULL));
    }
    zt_ratelimit_stats st;
    zt_ratelimit_get_stats(t, 0, &st);
    assert_int_equal(st.slots, 8);
    assert_int_equal(st.keys, 8);
    /* a flood of new keys shares the overflow bucket: 3 in all, then 100 ms per token */
    int ok = 0;
    uint32_t retry = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "new%d", i);
        ok += take(t, key, 0, &retry);
    }
    assert_int_equal(ok, 3);
    assert_int_equal(retry, 100);
    zt_ratelimit_get_stats(t, 0, &st);
    assert_int_equal(st.overflow_hits, 100);
    /* the old keys keep their own buckets */
    assert_true(take(t, "k0", 0, NULL));
    assert_false(take(t, "k0", 0, NULL));
    zt_ratelimit_free(t);
}

static void
test_idle_eviction(void **state)
{
    (void) state;
    zt_ratelimit *t = table(1, 1000, 2, 8);
    char key[16];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_true(take(t, key, 0, NULL)); /* tat = 1 s: refilled at 1 s */
    }
    zt_ratelimit_stats st;
    /* before the buckets refill, a new key overflows */
    assert_true(take(t, "early", S - 1, NULL));
    zt_ratelimit_get_stats(t, S - 1, &st);
    assert_int_equal(st.overflow_hits, 1);
    /* once they have refilled, their slots are free: new keys get their own buckets */
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof(key), "n%d", i);
        assert_true(take(t, key, S, NULL));
        assert_true(take(t, key, S, NULL));
        assert_false(take(t, key, S, NULL));
    }
    zt_ratelimit_get_stats(t, S, &st);
    assert_int_equal(st.overflow_hits, 1);
    assert_int_equal(st.keys, 8);
    /* an evicted key comes back with a full bucket: exactly what it would have had */
    assert_true(take(t, "k0", 10 * S, NULL));
    /* sweep empties refilled slots (all 8 at 100 s) */
    assert_int_equal(zt_ratelimit_sweep(t, 100 * S), 8);
    assert_int_equal(zt_ratelimit_sweep(t, 100 * S), 0);
    zt_ratelimit_get_stats(t, 100 * S, &st);
    assert_int_equal(st.keys, 0);
    zt_ratelimit_free(t);
}

static void
test_clock_back(void **state)
{
    (void) state;
    zt_ratelimit *t = table(1, 1000, 1, 0);
    uint32_t retry;
    assert_true(take(t, "k", 10 * S, &retry));
    assert_false(take(t, "k", 5 * S, &retry)); /* earlier than seen: no token appears */
    assert_int_equal(retry, 6000);
    assert_false(take(t, "k", 10 * S, &retry));
    assert_true(take(t, "k", 11 * S, &retry));
    zt_ratelimit_free(t);
}

static void
test_bad_opts(void **state)
{
    (void) state;
    zt_ratelimit *t = (zt_ratelimit *) 1;
    dbao_err err = {0};
    zt_ratelimit_opts o = {.rate = 0, .burst = 1};
    assert_int_equal(zt_ratelimit_new(&t, &o, &err), DBAO_EINVAL);
    assert_null(t);
    o = (zt_ratelimit_opts){.rate = 1, .burst = 0};
    assert_int_equal(zt_ratelimit_new(&t, &o, &err), DBAO_EINVAL);
    o = (zt_ratelimit_opts){.rate = 1, .burst = 1, .period_ms = 86400001};
    assert_int_equal(zt_ratelimit_new(&t, &o, &err), DBAO_EINVAL);
    o = (zt_ratelimit_opts){.rate = 1, .burst = 1, .max_keys = (1u << 24) + 1};
    assert_int_equal(zt_ratelimit_new(&t, &o, &err), DBAO_EINVAL);
    o = (zt_ratelimit_opts){.rate = 1, .burst = UINT32_MAX, .period_ms = 86400000};
    assert_int_equal(zt_ratelimit_new(&t, &o, &err), DBAO_EINVAL); /* tau overflows */
    assert_int_equal(zt_ratelimit_new(&t, NULL, &err), DBAO_EINVAL);
    /* a rate above one per nanosecond is capped at one per nanosecond */
    o = (zt_ratelimit_opts){.rate = UINT32_MAX, .burst = 1, .period_ms = 1};
    assert_int_equal(zt_ratelimit_new(&t, &o, &err), 0);
    assert_true(take(t, "k", 0, NULL));
    assert_false(take(t, "k", 0, NULL));
    assert_true(take(t, "k", 1, NULL));
    zt_ratelimit_free(t);
    zt_ratelimit_free(NULL);
}

static void
test_alloc_failures(void **state)
{
    (void) state;
    zt_ratelimit_opts o = {.rate = 1, .burst = 1, .max_keys = 1 << 12};
    for (long n = 0;; n++) {
        zt_ratelimit *t = NULL;
        dbao_alloc_fail_after(n, false);
        int rc = zt_ratelimit_new(&t, &o, NULL);
        dbao_alloc_fail_after(-1, false);
        if (rc == 0) {
            assert_true(take(t, "k", 0, NULL));
            zt_ratelimit_free(t);
            assert_true(n > 2);
            break;
        }
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_null(t);
    }
}

/* ---- concurrency ---- */

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * S + (uint64_t) ts.tv_nsec;
}

typedef struct hammer {
    zt_ratelimit *t;
    uint64_t until;
    long allowed, calls;
    uint64_t first, last;
} hammer;

static void *
hammer_main(void *arg)
{
    hammer *h = arg;
    h->first = mono_ns();
    uint64_t now = h->first;
    while (now < h->until) {
        now = mono_ns();
        h->allowed += zt_ratelimit_take(h->t, "same-key", 8, now, NULL);
        h->calls++;
    }
    h->last = now;
    return NULL;
}

static void
test_concurrency(void **state)
{
    (void) state;
    enum { NT = 4 };
    const uint32_t rate = 2000, burst = 50; /* one token per 500 us */
    zt_ratelimit *t = table(rate, 1000, burst, 1024);
    hammer h[NT];
    pthread_t th[NT];
    uint64_t start = mono_ns();
    for (int i = 0; i < NT; i++) {
        h[i] = (hammer){.t = t, .until = start + 300 * MS};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    long allowed = 0, calls = 0;
    uint64_t first = UINT64_MAX, last = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        allowed += h[i].allowed;
        calls += h[i].calls;
        first = h[i].first < first ? h[i].first : first;
        last = h[i].last > last ? h[i].last : last;
    }
    uint64_t elapsed = last - first;
    uint64_t bound = burst + elapsed / (S / rate) + 1;
    printf("ratelimit: %d threads, %ld calls, %ld allowed in %.1f ms (bound %llu)\n", NT, calls,
           allowed, (double) elapsed / MS, (unsigned long long) bound);
    assert_true((uint64_t) allowed <= bound);
    /* and the limiter did admit about what it should (calls are far more than tokens) */
    assert_true(calls > allowed);
    assert_true((uint64_t) allowed >= bound / 2);
    zt_ratelimit_free(t);
}

static void
test_speed(void **state)
{
    (void) state;
    zt_ratelimit *t = table(1000000, 1000, 1000, 1 << 16);
    char key[16];
    enum { N = 200000 };
    uint64_t t0 = mono_ns();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "10.1.%d.%d", (i >> 8) & 63, i & 255);
        zt_ratelimit_take(t, key, 13, t0 + (uint64_t) i * 1000, NULL);
    }
    uint64_t t1 = mono_ns();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "10.1.%d.%d", (i >> 8) & 63, i & 255);
    }
    uint64_t t2 = mono_ns();
    double ns = ((double) (t1 - t0) - (double) (t2 - t1)) / N;
    printf("ratelimit: %.0f ns per take (16384 keys, uncontended)\n", ns);
    zt_ratelimit_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate), cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_many_keys),       cmocka_unit_test(test_occupancy),
        cmocka_unit_test(test_overflow),        cmocka_unit_test(test_idle_eviction),
        cmocka_unit_test(test_clock_back),      cmocka_unit_test(test_bad_opts),
        cmocka_unit_test(test_alloc_failures),  cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
