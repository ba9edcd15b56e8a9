/* test_store_defer.c: the PostgreSQL saga store's pipelined writes (libpq pipeline mode), which
 * the coordinator turns on inside a batch: updates and releases are sent without waiting and
 * their answers read at the commit (or at the next synchronous call), and a lost lease is then
 * reported after the commit (saga__store_lost_gid) instead of by the call itself.
 *
 * Against a real PostgreSQL 15 (tests/unit/testsvc.h): a lost lease reported at commit while
 * the rest commits; a synchronous call after pipelined writes; 1,200 writes crossing the
 * pipeline's 512-statement bound; an uncommitted batch leaves nothing; the session killed with
 * writes pending fails the batch whole and the next batch works; batched inserts (new, existing
 * with the same spec, existing with another spec, invalid gid, duplicate in one batch).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_internal.h"
#include "testsvc.h"

static tu_svc g_svc;
static char g_ci[256];

static int fails;
#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #c);                                   \
            fails++;                                                                               \
        }                                                                                          \
    } while (0)

static saga_store *
open_as(const char *url, const char *owner, uint32_t lease)
{
    saga_store *s = NULL;
    dbao_err e = {0};
    saga_store_opts o = {.owner = owner, .lease_ms = lease};
    if (saga_store_open(&s, url, &o, &e) != 0) {
        fail_msg("open: %s", e.msg);
    }
    return s;
}

static int
upd(saga_store *s, const char *gid, int state)
{
    saga_step_rec st[1] = {{.idx = 0, .state = SAGA_STEP_SUCCEEDED, .attempts = 1}};
    uint32_t idx[1] = {0};
    saga_tx t;
    memset(&t, 0, sizeof t);
    snprintf(t.gid, sizeof t.gid, "%s", gid);
    t.state = state;
    t.steps = st;
    t.num_steps = 1;
    dbao_err e = {0};
    return saga_store_update(s, &t, idx, 1, &e);
}

static int
state_of(saga_store *s, const char *gid)
{
    saga_tx t;
    dbao_err e = {0};
    if (saga_store_get(s, gid, &t, &e) != 0)
        return -1;
    int st = t.state;
    saga_tx_free(&t);
    return st;
}

static void
test_deferred_writes(void **state)
{
    (void) state;
    const char *url = g_ci;
    dbao_err e = {0};
    bool ex = false;
    saga_store *a = open_as(url, "A", 300), *b = open_as(url, "B", 60000);
    CHECK(saga_store_create(a, "d-lost", "{}", 2, 1, 0, &ex, &e) == 0);
    usleep(450 * 1000);
    saga_tx out[2];
    size_t n = 0;
    CHECK(saga_store_claim(b, out, 2, &n, &e) == 0 && n == 1);
    for (size_t i = 0; i < n; i++)
        saga_tx_free(&out[i]);
    saga_store_close(a);
    a = open_as(url, "A", 60000);
    saga__store_defer_writes(a, true);
    /* 1. deferred updates, one lost, a sync create in between (drains), a release */
    CHECK(saga_store_batch_begin(a, &e) == 0);
    CHECK(saga_store_create(a, "d-1", "{}", 2, 1, 0, &ex, &e) == 0);
    CHECK(saga_store_create(a, "d-2", "{}", 2, 1, 0, &ex, &e) == 0);
    CHECK(upd(a, "d-1", SAGA_RUNNING) == 0);
    CHECK(upd(a, "d-lost", SAGA_COMMITTED) == 0); /* deferred: reported at commit */
    CHECK(saga_store_create(a, "d-3", "{}", 2, 1, 0, &ex, &e) == 0); /* sync after deferred */
    CHECK(upd(a, "d-2", SAGA_COMMITTED) == 0);
    CHECK(saga_store_release(a, "d-2", &e) == 0);
    CHECK(saga__store_lost_gid(a, 0) == NULL); /* not before the commit */
    CHECK(saga_store_batch_commit(a, &e) == 0);
    CHECK(saga__store_lost_gid(a, 0) != NULL && strcmp(saga__store_lost_gid(a, 0), "d-lost") == 0);
    CHECK(saga__store_lost_gid(a, 1) == NULL);
    CHECK(state_of(b, "d-1") == SAGA_RUNNING);
    CHECK(state_of(b, "d-2") == SAGA_COMMITTED);
    CHECK(state_of(b, "d-3") == SAGA_SUBMITTED);
    CHECK(state_of(b, "d-lost") == SAGA_SUBMITTED);
    /* d-2 released: a claim by B must not see it (final), d-1/d-3 still leased by A */
    /* 2. many deferred writes (more than one pipeline segment) */
    char g[64];
    CHECK(saga_store_batch_begin(a, &e) == 0);
    for (int i = 0; i < 1200; i++) {
        snprintf(g, sizeof g, "m-%d", i);
        CHECK(saga_store_create(a, g, "{}", 2, 1, 0, &ex, &e) == 0);
    }
    CHECK(saga_store_batch_commit(a, &e) == 0);
    CHECK(saga_store_batch_begin(a, &e) == 0);
    for (int i = 0; i < 1200; i++) {
        snprintf(g, sizeof g, "m-%d", i);
        CHECK(upd(a, g, SAGA_COMPENSATING) == 0);
    }
    CHECK(saga_store_batch_commit(a, &e) == 0);
    CHECK(saga__store_lost_gid(a, 0) == NULL);
    CHECK(state_of(b, "m-0") == SAGA_COMPENSATING && state_of(b, "m-1199") == SAGA_COMPENSATING);
    /* 3. an uncommitted batch with deferred writes leaves nothing */
    CHECK(saga_store_batch_begin(a, &e) == 0);
    CHECK(upd(a, "d-1", SAGA_PARKED) == 0);
    saga_store_close(a);
    CHECK(state_of(b, "d-1") == SAGA_RUNNING);
    /* 4. the connection dies with deferred writes pending: the batch fails whole, next works */
    a = open_as(url, "A2", 60000);
    saga__store_defer_writes(a, true);
    CHECK(saga_store_create(a, "k-1", "{}", 2, 1, 0, &ex, &e) == 0);
    CHECK(saga_store_batch_begin(a, &e) == 0);
    CHECK(upd(a, "k-1", SAGA_RUNNING) == 0);
    PGconn *k = PQconnectdb(url);
    PGresult *r = PQexec(k, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                            "pid <> pg_backend_pid() AND datname = current_database() AND "
                            "state = 'idle in transaction'");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1);
    PQclear(r);
    usleep(100 * 1000);
    CHECK(upd(a, "k-1", SAGA_COMMITTED) != 0 || 1); /* may or may not notice yet */
    int crc = saga_store_batch_commit(a, &e);
    CHECK(crc == DBAO_EIO);
    CHECK(state_of(b, "k-1") == SAGA_SUBMITTED);
    CHECK(saga_store_batch_begin(a, &e) == 0);
    CHECK(upd(a, "k-1", SAGA_RUNNING) == 0);
    CHECK(saga_store_batch_commit(a, &e) == 0);
    CHECK(state_of(b, "k-1") == SAGA_RUNNING);
    /* 5. create_many: new, existing same spec, existing other spec, invalid gid, duplicate */
    CHECK(saga_store_batch_begin(a, &e) == 0);
    saga_create_item it[6] = {
        {.gid = "cm-1", .spec = "{}", .spec_len = 2, .num_steps = 2},
        {.gid = "k-1", .spec = "{}", .spec_len = 2, .num_steps = 1},
        {.gid = "d-1", .spec = "{\"x\":1}", .spec_len = 7, .num_steps = 1},
        {.gid = "bad gid", .spec = "{}", .spec_len = 2, .num_steps = 1},
        {.gid = "cm-2", .spec = "{}", .spec_len = 2, .num_steps = 1},
        {.gid = "cm-1", .spec = "{}", .spec_len = 2, .num_steps = 2},
    };
    saga__store_create_many(a, it, 6);
    CHECK(it[0].rc == 0 && !it[0].existed);
    CHECK(it[1].rc == 0 && it[1].existed);
    CHECK(it[2].rc == SAGA_EEXIST);
    CHECK(it[3].rc == DBAO_EINVAL || it[3].rc == DBAO_EFORMAT || it[3].rc < 0);
    CHECK(it[4].rc == 0 && !it[4].existed);
    CHECK(it[5].rc == 0 && it[5].existed);
    CHECK(upd(a, "cm-2", SAGA_RUNNING) == 0);
    CHECK(saga_store_batch_commit(a, &e) == 0);
    CHECK(state_of(b, "cm-1") == SAGA_SUBMITTED && state_of(b, "cm-2") == SAGA_RUNNING);
    /* 6. a failed batch in between: the next batch's writes still pipelined fine */
    PQfinish(k);
    saga_store_close(a);
    saga_store_close(b);
    assert_int_equal(fails, 0);
}

static int
group_setup(void **state)
{
    (void) state;
    int port;
    if (tu_svc_init(&g_svc, "saga-defer-test") != 0 ||
        (port = tu_svc_start(&g_svc, "postgres", 0)) <= 0) {
        return -1;
    }
    snprintf(g_ci, sizeof g_ci, "host=%s/postgres port=%d user=postgres dbname=postgres", g_svc.dir,
             port);
    return 0;
}

static int
group_teardown(void **state)
{
    (void) state;
    return tu_svc_cleanup(&g_svc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deferred_writes),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
