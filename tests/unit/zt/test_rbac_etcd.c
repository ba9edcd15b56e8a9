/* test_rbac_etcd.c: the RBAC policy watcher (zt.h, "Policy from etcd") against a real etcd.
 *
 * The group setup starts one etcd member with scripts/services.sh (found relative to this file
 * or through DBAO_SOURCE_DIR) and the teardown stops it by PID. Covered: start refuses an
 * absent key, a bad policy and an unreachable etcd (the slot keeps what it had); a good policy
 * is installed at start; a new good policy is seen through the slot within 1 s; a bad one is
 * rejected (event) and the old one still decides; a delete is reported and changes nothing;
 * the watcher follows the key across an etcd restart; stop is prompt.
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
#include "dengbao/zt.h"

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
    if (tu_svc_init(&g_svc, "rbac-etcd-test") != 0) {
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

static const char *POLICY_A = "roles:\n"
                              "  staff:\n"
                              "    - {id: a, methods: [GET], path: /a}\n";
static const char *POLICY_B = "roles:\n"
                              "  staff:\n"
                              "    - {id: b, methods: [GET], path: /b}\n";
static const char *POLICY_C = "roles:\n"
                              "  staff:\n"
                              "    - {id: c, methods: [GET], path: /c}\n";
static const char *POLICY_BAD = "roles:\n"
                                "  staff:\n"
                                "    - {id: x, methods: [GTE], path: /x}\n";

/* Events heard from the watcher. */
typedef struct events {
    pthread_mutex_t mu;
    int count[4];
    char last[4][512];
} events;

static void
on_event(void *arg, int kind, const char *msg)
{
    events *e = arg;
    if (kind < 0 || kind >= 4) {
        abort(); /* not an assert: this runs on the watcher's thread */
    }
    pthread_mutex_lock(&e->mu);
    e->count[kind]++;
    snprintf(e->last[kind], sizeof e->last[kind], "%s", msg);
    pthread_mutex_unlock(&e->mu);
}

static int
count(events *e, int kind)
{
    pthread_mutex_lock(&e->mu);
    int n = e->count[kind];
    pthread_mutex_unlock(&e->mu);
    return n;
}

static bool
wait_count(events *e, int kind, int n, uint32_t ms)
{
    uint64_t end = now_ms() + ms;
    while (count(e, kind) < n && now_ms() < end) {
        usleep(5000);
    }
    return count(e, kind) >= n;
}

static const char *ROLES[] = {"staff"};

static bool
allows(zt_rbac_slot *s, zt_rbac_local *l, const char *path)
{
    const zt_rbac *p = zt_rbac_slot_get(s, l);
    return zt_rbac_check(p, ROLES, 1, "GET", path, NULL, NULL) == ZT_RBAC_ALLOW;
}

/* wait_allows: how long until `path` is allowed through the slot (UINT64_MAX: not in `ms`). */
static uint64_t
wait_allows(zt_rbac_slot *s, zt_rbac_local *l, const char *path, uint32_t ms)
{
    uint64_t t0 = now_ms();
    while (now_ms() - t0 < ms) {
        if (allows(s, l, path)) {
            return now_ms() - t0;
        }
        usleep(1000);
    }
    return UINT64_MAX;
}

static etcd *
client(void)
{
    const char *eps[] = {g_ep};
    etcd *h = NULL;
    assert_int_equal(etcd_new(&h, eps, 1, 2000, NULL), 0);
    return h;
}

static void
put(etcd *h, const char *key, const char *text)
{
    dbao_err e = {0};
    if (etcd_put(h, NULL, key, text, strlen(text), &e) != 0) {
        fail_msg("put: %s", e.msg);
    }
}

static void
test_start_refusals(void **state)
{
    (void) state;
    etcd *h = client();
    zt_rbac_slot *slot = NULL;
    assert_int_equal(zt_rbac_slot_new(&slot, NULL), 0);
    zt_rbac_local l = {0};
    const char *eps[] = {g_ep};
    zt_rbac_etcd *w = NULL;
    dbao_err e = {0};

    assert_int_equal(zt_rbac_etcd_start(&w, slot, eps, 1, "/p/absent", 1000, NULL, NULL, &e),
                     -ENOENT);
    assert_null(w);
    assert_non_null(strstr(e.msg, "'/p/absent' does not exist"));

    put(h, "/p/bad", POLICY_BAD);
    assert_int_equal(zt_rbac_etcd_start(&w, slot, eps, 1, "/p/bad", 1000, NULL, NULL, &e),
                     DBAO_EFORMAT);
    assert_null(w);
    assert_non_null(strstr(e.msg, "/p/bad:"));

    char dead[64];
    int deadport = tu_svc_freeport(&g_svc);
    assert_true(deadport > 0);
    snprintf(dead, sizeof dead, "http://127.0.0.1:%d", deadport);
    const char *deads[] = {dead};
    assert_int_equal(zt_rbac_etcd_start(&w, slot, deads, 1, "/p/bad", 500, NULL, NULL, &e),
                     DBAO_EIO);
    assert_non_null(strstr(e.msg, "connection refused"));
    assert_null(w);

    assert_null(zt_rbac_slot_get(slot, &l)); /* nothing was installed */
    zt_rbac_local_cleanup(&l);
    zt_rbac_slot_free(slot);
    zt_rbac_etcd_stop(NULL);
    etcd_free(h);
}

static void
test_hot_swap(void **state)
{
    (void) state;
    etcd *h = client();
    const char *key = "/dengbao/gateway/policy";
    put(h, key, POLICY_A);
    zt_rbac_slot *slot = NULL;
    assert_int_equal(zt_rbac_slot_new(&slot, NULL), 0);
    zt_rbac_local l = {0};
    events ev = {0};
    pthread_mutex_init(&ev.mu, NULL);
    const char *eps[] = {g_ep};
    zt_rbac_etcd *w = NULL;
    dbao_err e = {0};
    int rc = zt_rbac_etcd_start(&w, slot, eps, 1, key, 2000, on_event, &ev, &e);
    if (rc != 0) {
        fail_msg("start: %s", e.msg);
    }
    assert_int_equal(count(&ev, ZT_RBAC_ETCD_LOADED), 1);
    assert_true(allows(slot, &l, "/a"));
    assert_false(allows(slot, &l, "/b"));
    int64_t rev_a = zt_rbac_etcd_revision(w);
    assert_true(rev_a > 0);

    /* good -> other good: visible through the slot within 1 s */
    put(h, key, POLICY_B);
    uint64_t took = wait_allows(slot, &l, "/b", 1000);
    assert_true(took < 1000);
    assert_false(allows(slot, &l, "/a"));
    assert_true(wait_count(&ev, ZT_RBAC_ETCD_LOADED, 2, 1000));
    assert_true(zt_rbac_etcd_revision(w) > rev_a);
    int64_t rev_b = zt_rbac_etcd_revision(w);

    /* bad -> rejected, the old policy still decides */
    put(h, key, POLICY_BAD);
    assert_true(wait_count(&ev, ZT_RBAC_ETCD_REJECTED, 1, 2000));
    assert_non_null(strstr(ev.last[ZT_RBAC_ETCD_REJECTED], "GTE"));
    assert_true(allows(slot, &l, "/b"));
    assert_int_equal(zt_rbac_etcd_revision(w), rev_b);

    /* delete -> reported, the old policy still decides */
    assert_int_equal(etcd_delete(h, NULL, NULL, key, NULL), 0);
    assert_true(wait_count(&ev, ZT_RBAC_ETCD_DELETED, 1, 2000));
    assert_true(allows(slot, &l, "/b"));
    assert_false(allows(slot, &l, "/a"));

    /* a put after the delete applies as usual */
    put(h, key, POLICY_C);
    assert_true(wait_allows(slot, &l, "/c", 1000) < 1000);
    assert_false(allows(slot, &l, "/b"));
    assert_int_equal(count(&ev, ZT_RBAC_ETCD_LOADED), 3);

    /* across an etcd restart */
    assert_int_equal(etcd_stop(), 0);
    assert_int_equal(etcd_start(), 0);
    put(h, key, POLICY_A);
    assert_true(wait_allows(slot, &l, "/a", 5000) < 5000);
    assert_false(allows(slot, &l, "/c"));
    assert_true(count(&ev, ZT_RBAC_ETCD_ERROR) >= 1);

    /* stop is prompt and leaves the last policy in the slot */
    uint64_t t0 = now_ms();
    zt_rbac_etcd_stop(w);
    assert_true(now_ms() - t0 < 300);
    assert_true(allows(slot, &l, "/a"));
    zt_rbac_local_cleanup(&l);
    zt_rbac_slot_free(slot);
    pthread_mutex_destroy(&ev.mu);
    etcd_free(h);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_refusals),
        cmocka_unit_test(test_hot_swap),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
