/* test_etcd.c: the etcd v3 client (etcd.h) against a real etcd 3.4.
 *
 * The group setup starts one etcd member with scripts/services.sh (found relative to this file
 * or through DBAO_SOURCE_DIR; a failure to start fails the tests) in a fresh folder, and the
 * teardown stops it by PID and removes the folder. Covered: put/get/delete and revisions, an
 * absent key, empty and binary values, errors that name the endpoint and the cause, failover
 * from a dead endpoint, watch events in order (PUT/DELETE), a watch that survives a restart of
 * etcd without losing the change written while it was away, a compacted start revision
 * (resync), and a prompt stop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/etcd.h"
#include "testsvc.h"

static tu_svc g_svc;
static int g_port;
static char g_ep[64];

static int
etcd_start(void)
{
    int port = tu_svc_start(&g_svc, "etcd", g_port);
    if (port <= 0) {
        return -1;
    }
    g_port = port;
    snprintf(g_ep, sizeof g_ep, "http://127.0.0.1:%d", g_port);
    return 0;
}

static int
etcd_stop(void)
{
    return tu_svc_stop(&g_svc);
}

static int
group_setup(void **state)
{
    (void) state;
    if (tu_svc_init(&g_svc, "etcd-test") != 0) {
        return -1;
    }
    return etcd_start();
}

static int
group_teardown(void **state)
{
    (void) state;
    return tu_svc_cleanup(&g_svc);
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static etcd *
client(void)
{
    const char *eps[] = {g_ep};
    etcd *h = NULL;
    dbao_err e = {0};
    int rc = etcd_new(&h, eps, 1, 2000, &e);
    if (rc != 0) {
        fail_msg("etcd_new: %s", e.msg);
    }
    return h;
}

static void
test_put_get_delete(void **state)
{
    (void) state;
    etcd *h = client();
    dbao_err e = {0};
    etcd_kv kv;
    assert_int_equal(etcd_get(h, &kv, "/t/absent", &e), 0);
    assert_false(kv.found);
    assert_null(kv.value);
    assert_true(kv.revision >= 1);
    etcd_kv_cleanup(&kv);

    int64_t r1 = 0, r2 = 0;
    assert_int_equal(etcd_put(h, &r1, "/t/a", "hello", 5, &e), 0);
    assert_int_equal(etcd_get(h, &kv, "/t/a", &e), 0);
    assert_true(kv.found);
    assert_int_equal(kv.value_len, 5);
    assert_string_equal(kv.value, "hello");
    assert_int_equal(kv.mod_revision, r1);
    assert_int_equal(kv.create_revision, r1);
    assert_int_equal(kv.version, 1);
    assert_int_equal(kv.revision, r1);
    etcd_kv_cleanup(&kv);

    /* Binary bytes (every length mod 3) and an empty value. */
    const char bin[] = {0, 1, 2, (char) 0xff, '\n', '"'};
    for (size_t n = 0; n <= sizeof bin; n++) {
        assert_int_equal(etcd_put(h, &r2, "/t/a", bin, n, &e), 0);
        assert_int_equal(etcd_get(h, &kv, "/t/a", &e), 0);
        assert_true(kv.found);
        assert_int_equal(kv.value_len, n);
        assert_memory_equal(kv.value, bin, n);
        assert_int_equal(kv.value[n], 0);
        assert_int_equal(kv.mod_revision, r2);
        etcd_kv_cleanup(&kv);
    }
    assert_true(r2 > r1);

    int64_t del = -1, r3 = 0;
    assert_int_equal(etcd_delete(h, &del, &r3, "/t/a", &e), 0);
    assert_int_equal(del, 1);
    assert_int_equal(r3, r2 + 1);
    assert_int_equal(etcd_delete(h, &del, NULL, "/t/a", &e), 0);
    assert_int_equal(del, 0);
    assert_int_equal(etcd_get(h, &kv, "/t/a", &e), 0);
    assert_false(kv.found);
    etcd_kv_cleanup(&kv);

    assert_int_equal(etcd_get(h, &kv, "", &e), DBAO_EINVAL);
    etcd_free(h);
    etcd_free(NULL);
}

static void
test_errors_and_failover(void **state)
{
    (void) state;
    char dead[64];
    int deadport = tu_svc_freeport(&g_svc);
    assert_true(deadport > 0);
    snprintf(dead, sizeof dead, "127.0.0.1:%d", deadport);

    dbao_err e = {0};
    etcd *h = NULL;
    const char *one[] = {dead};
    assert_int_equal(etcd_new(&h, one, 1, 1000, &e), 0);
    etcd_kv kv;
    assert_int_equal(etcd_get(h, &kv, "/t/x", &e), DBAO_EIO);
    char want[128];
    snprintf(want, sizeof want, "etcd: %s: connection refused", dead);
    assert_string_equal(e.msg, want);
    etcd_free(h);

    /* The dead endpoint first: the call moves on to the live one. */
    const char *two[] = {dead, g_ep};
    assert_int_equal(etcd_new(&h, two, 2, 2000, &e), 0);
    assert_int_equal(etcd_put(h, NULL, "/t/f", "v", 1, &e), 0);
    assert_int_equal(etcd_get(h, &kv, "/t/f", &e), 0);
    assert_true(kv.found);
    etcd_kv_cleanup(&kv);
    etcd_free(h);

    const char *bad[] = {"ftp://x:1"};
    assert_int_equal(etcd_new(&h, bad, 1, 0, &e), DBAO_EINVAL);
    assert_null(h);
    const char *bad2[] = {"http://x:1/path"};
    assert_int_equal(etcd_new(&h, bad2, 1, 0, &e), DBAO_EINVAL);
    assert_int_equal(etcd_new(&h, bad2, 0, 0, &e), DBAO_EINVAL);
}

/* ---- watch --------------------------------------------------------------------------------- */

#define MAX_EVENTS 64

typedef struct rec {
    etcd_event_type type;
    char value[64];
    int64_t rev;
    bool resync;
} rec;

typedef struct watcher {
    etcd *h;
    const char *key;
    int64_t start;
    atomic_bool stop;
    pthread_mutex_t mu;
    rec ev[MAX_EVENTS];
    int num;
    int errors;
    int rc;
    pthread_t t;
} watcher;

static int
on_ev(void *arg, const etcd_event *ev)
{
    watcher *w = arg;
    pthread_mutex_lock(&w->mu);
    if (w->num < MAX_EVENTS) {
        rec *r = &w->ev[w->num++];
        r->type = ev->type;
        snprintf(r->value, sizeof r->value, "%.*s", (int) ev->value_len,
                 ev->value != NULL ? ev->value : "");
        r->rev = ev->mod_revision;
        r->resync = ev->resync;
    }
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void
on_err(void *arg, int code, const char *msg)
{
    (void) code;
    (void) msg;
    watcher *w = arg;
    pthread_mutex_lock(&w->mu);
    w->errors++;
    pthread_mutex_unlock(&w->mu);
}

static void *
watch_thread(void *arg)
{
    watcher *w = arg;
    etcd_watch_opts o = {.start_revision = w->start,
                         .on_event = on_ev,
                         .on_error = on_err,
                         .arg = w,
                         .stop = &w->stop,
                         .backoff_min_ms = 300,
                         .backoff_max_ms = 1000};
    w->rc = etcd_watch(w->h, w->key, &o, NULL);
    return NULL;
}

static void
watcher_start(watcher *w, etcd *h, const char *key, int64_t start)
{
    memset(w, 0, sizeof *w);
    w->h = h;
    w->key = key;
    w->start = start;
    atomic_init(&w->stop, false);
    pthread_mutex_init(&w->mu, NULL);
    assert_int_equal(pthread_create(&w->t, NULL, watch_thread, w), 0);
}

static int
watcher_count(watcher *w)
{
    pthread_mutex_lock(&w->mu);
    int n = w->num;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static bool
wait_events(watcher *w, int n, uint32_t ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end) {
        if (watcher_count(w) >= n) {
            return true;
        }
        usleep(10000);
    }
    return watcher_count(w) >= n;
}

static uint64_t
watcher_stop(watcher *w)
{
    uint64_t t0 = now_ms();
    atomic_store(&w->stop, true);
    pthread_join(w->t, NULL);
    uint64_t took = now_ms() - t0;
    pthread_mutex_destroy(&w->mu);
    return took;
}

static void
test_watch_order(void **state)
{
    (void) state;
    etcd *h = client();
    dbao_err e = {0};
    etcd_kv kv;
    assert_int_equal(etcd_put(h, NULL, "/t/w", "v0", 2, &e), 0);
    assert_int_equal(etcd_get(h, &kv, "/t/w", &e), 0);
    int64_t base = kv.revision;
    etcd_kv_cleanup(&kv);

    watcher w;
    watcher_start(&w, h, "/t/w", base + 1);
    int64_t r[4];
    assert_int_equal(etcd_put(h, &r[0], "/t/w", "v1", 2, &e), 0);
    assert_int_equal(etcd_put(h, NULL, "/t/other", "x", 1, &e), 0); /* another key: not seen */
    assert_int_equal(etcd_put(h, &r[1], "/t/w", "v2", 2, &e), 0);
    assert_int_equal(etcd_delete(h, NULL, &r[2], "/t/w", &e), 0);
    assert_int_equal(etcd_put(h, &r[3], "/t/w", "v3", 2, &e), 0);
    assert_true(wait_events(&w, 4, 5000));
    usleep(200000);
    uint64_t took = watcher_stop(&w);
    assert_true(took < 500);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.num, 4);
    const char *vals[] = {"v1", "v2", "", "v3"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(w.ev[i].type, i == 2 ? ETCD_EVENT_DELETE : ETCD_EVENT_PUT);
        assert_string_equal(w.ev[i].value, vals[i]);
        assert_int_equal(w.ev[i].rev, r[i]);
        assert_false(w.ev[i].resync);
    }
    etcd_free(h);
}

static void
test_watch_resumes_after_restart(void **state)
{
    (void) state;
    etcd *h = client();
    dbao_err e = {0};
    watcher w;
    watcher_start(&w, h, "/t/r", 0);
    usleep(300000); /* the watch is created */
    int64_t r1 = 0, r2 = 0;
    assert_int_equal(etcd_put(h, &r1, "/t/r", "before", 6, &e), 0);
    assert_true(wait_events(&w, 1, 5000));

    assert_int_equal(etcd_stop(), 0);
    usleep(500000); /* the watcher notices and backs off */
    assert_int_equal(etcd_start(), 0);
    /* Written while the watcher is still away (its back-off is at least 300 ms). */
    assert_int_equal(etcd_put(h, &r2, "/t/r", "during", 6, &e), 0);
    assert_true(wait_events(&w, 2, 10000));
    usleep(300000);
    assert_true(watcher_stop(&w) < 500);
    assert_int_equal(w.num, 2);
    assert_string_equal(w.ev[0].value, "before");
    assert_int_equal(w.ev[0].rev, r1);
    assert_string_equal(w.ev[1].value, "during");
    assert_int_equal(w.ev[1].rev, r2);
    assert_true(w.errors >= 1);
    etcd_free(h);
}

static void
test_watch_compacted(void **state)
{
    (void) state;
    etcd *h = client();
    dbao_err e = {0};
    int64_t r1 = 0, r2 = 0, r3 = 0;
    assert_int_equal(etcd_put(h, &r1, "/t/c", "c1", 2, &e), 0);
    assert_int_equal(etcd_put(h, &r2, "/t/c", "c2", 2, &e), 0);
    assert_int_equal(etcd_put(h, &r3, "/t/c", "c3", 2, &e), 0);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "curl -sf -X POST %s/v3/kv/compaction -d '{\"revision\":\"%lld\"}' >/dev/null", g_ep,
             (long long) r3);
    assert_int_equal(system(cmd), 0);

    watcher w;
    watcher_start(&w, h, "/t/c", r1); /* compacted away: resync to the current value */
    assert_true(wait_events(&w, 1, 5000));
    int64_t r4 = 0;
    assert_int_equal(etcd_put(h, &r4, "/t/c", "c4", 2, &e), 0);
    assert_true(wait_events(&w, 2, 5000));
    usleep(200000);
    watcher_stop(&w);
    assert_int_equal(w.num, 2);
    assert_true(w.ev[0].resync);
    assert_int_equal(w.ev[0].type, ETCD_EVENT_PUT);
    assert_string_equal(w.ev[0].value, "c3");
    assert_int_equal(w.ev[0].rev, r3);
    assert_false(w.ev[1].resync);
    assert_string_equal(w.ev[1].value, "c4");
    assert_int_equal(w.ev[1].rev, r4);
    etcd_free(h);
}

static void
test_watch_stop_while_down(void **state)
{
    (void) state;
    /* A watch on a dead endpoint retries until told to stop, and stops promptly. */
    char dead[64];
    int deadport = tu_svc_freeport(&g_svc);
    assert_true(deadport > 0);
    snprintf(dead, sizeof dead, "127.0.0.1:%d", deadport);
    const char *eps[] = {dead};
    etcd *h = NULL;
    assert_int_equal(etcd_new(&h, eps, 1, 500, NULL), 0);
    watcher w;
    watcher_start(&w, h, "/t/d", 0);
    usleep(700000);
    assert_true(watcher_stop(&w) < 300);
    assert_int_equal(w.rc, 0);
    assert_true(w.errors >= 1);
    etcd_watch_opts o = {0};
    assert_int_equal(etcd_watch(h, "/t/d", &o, NULL), DBAO_EINVAL);
    etcd_free(h);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_delete),
        cmocka_unit_test(test_errors_and_failover),
        cmocka_unit_test(test_watch_order),
        cmocka_unit_test(test_watch_compacted),
        cmocka_unit_test(test_watch_stop_while_down),
        cmocka_unit_test(test_watch_resumes_after_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
