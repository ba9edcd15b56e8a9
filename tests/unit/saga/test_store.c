/* test_store.c: the saga store (saga.h, "durable store") on both backends with one suite:
 * SQLite in a temporary folder, and a real PostgreSQL 15 started through scripts/services.sh
 * (testsvc.h; a failure to start fails the group). Each test gets a fresh database (a new file,
 * or a new schema on the server, selected with search_path in the connection string).
 *
 * Suite (both backends): create idempotent / SAGA_EEXIST; update + get round trip (only the
 * listed steps written, reasons with quotes, backslashes and invalid UTF-8); two handles with
 * different owners claiming concurrently from two threads never get the same gid; an expired
 * lease is claimable by another owner and the old owner then gets SAGA_ELOST; list by state and
 * age, newest first; admin_set; purge; a batch with a SAGA_ELOST inside commits the others, an
 * uncommitted batch leaves nothing; reopen keeps everything; a newer schema version is refused;
 * argument checks. SQLite only: a second process is refused; kill -9 of a writer at a random
 * moment loses no acknowledged saga. PostgreSQL only: a server restart during use (the store
 * reconnects; a batch open across the restart fails whole).
 *
 * With DBAO_SAGA_STORE_BENCH=N in the environment, each backend also measures N sagas of
 * create + 3 updates in batches of 1, 16 and 128 and prints sagas/s (SQLite with
 * synchronous=FULL and NORMAL; PostgreSQL with fsync on and off). DBAO_TEST_FILTER=t_bench
 * runs only the measurement.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store_internal.h"
#include "testsvc.h"

enum { BE_SQLITE, BE_PG };

static int g_be;
static tu_svc g_svc;
static int g_pgport;
static char g_tmp[64];
static int g_dbn;
static char g_url[512];

static const char SPEC[] = "{\"steps\":[{\"action\":\"http://a\"},{\"action\":\"http://b\"},"
                           "{\"action\":\"http://c\"}]}";

static void
pg_admin(const char *sql)
{
    char ci[512];
    snprintf(ci, sizeof ci, "host=%s/postgres port=%d user=postgres dbname=postgres", g_svc.dir,
             g_pgport);
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
}

/* fresh_url makes a new empty database and stores its URL in g_url. */
static const char *
fresh_url(void)
{
    g_dbn++;
    if (g_be == BE_SQLITE) {
        snprintf(g_url, sizeof g_url, "sqlite:%s/s%d.db", g_tmp, g_dbn);
    } else {
        /* A schema per test (CREATE DATABASE checkpoints: seconds under load). */
        char sql[128];
        snprintf(sql, sizeof sql, "CREATE SCHEMA t%d", g_dbn);
        pg_admin(sql);
        snprintf(g_url, sizeof g_url,
                 "host=%s/postgres port=%d user=postgres dbname=postgres "
                 "options='-csearch_path=t%d'",
                 g_svc.dir, g_pgport, g_dbn);
    }
    return g_url;
}

static saga_store *
open_as(const char *owner, uint32_t lease_ms)
{
    saga_store *s = NULL;
    dbao_err e = {0};
    saga_store_opts o = {.owner = owner, .lease_ms = lease_ms};
    if (saga_store_open(&s, g_url, &o, &e) != 0) {
        fail_msg("open %s: %s", g_url, e.msg);
    }
    return s;
}

static void
create_ok(saga_store *s, const char *gid, size_t steps)
{
    dbao_err e = {0};
    bool ex = true;
    if (saga_store_create(s, gid, SPEC, strlen(SPEC), steps, 123456, &ex, &e) != 0) {
        fail_msg("create %s: %s", gid, e.msg);
    }
    assert_false(ex);
}

static void
get_ok(saga_store *s, const char *gid, saga_tx *t)
{
    dbao_err e = {0};
    if (saga_store_get(s, gid, t, &e) != 0) {
        fail_msg("get %s: %s", gid, e.msg);
    }
}

/* set_state: get, change the state (and reason), write with no steps listed. */
static int
set_state(saga_store *s, const char *gid, int state, const char *reason)
{
    saga_tx t;
    get_ok(s, gid, &t);
    t.state = (uint8_t) state;
    dbao_free(t.reason);
    t.reason = reason != NULL ? saga__strndup(reason, strlen(reason)) : NULL;
    int rc = saga_store_update(s, &t, NULL, 0, NULL);
    saga_tx_free(&t);
    return rc;
}

static int
setup_test(void **state)
{
    (void) state;
    fresh_url();
    return 0;
}

/* ---- the suite ------------------------------------------------------------------------------ */

static void
t_create_idempotent(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 0);
    dbao_err e = {0};
    bool ex = false;
    create_ok(s, "g-1", 3);
    assert_int_equal(saga_store_create(s, "g-1", SPEC, strlen(SPEC), 3, 123456, &ex, &e), 0);
    assert_true(ex);
    assert_int_equal(saga_store_create(s, "g-1", "{\"other\":1}", 11, 3, 1, &ex, &e), SAGA_EEXIST);
    assert_false(ex);
    saga_tx t;
    get_ok(s, "g-1", &t);
    assert_string_equal(t.gid, "g-1");
    assert_int_equal(t.state, SAGA_SUBMITTED);
    assert_int_equal(t.spec_len, strlen(SPEC));
    assert_memory_equal(t.spec, SPEC, strlen(SPEC));
    assert_int_equal(t.deadline_ms, 123456);
    assert_int_equal(t.version, 1);
    assert_null(t.reason);
    assert_true(t.created_ms > 0 && t.created_ms == t.updated_ms);
    assert_int_equal(t.num_steps, 3);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(t.steps[i].idx, i);
        assert_int_equal(t.steps[i].state, SAGA_STEP_PENDING);
        assert_int_equal(t.steps[i].attempts, 0);
        assert_null(t.steps[i].last_error);
    }
    saga_tx_free(&t);
    assert_int_equal(saga_store_get(s, "nope", &t, &e), SAGA_ENOENT);
    saga_store_close(s);
}

static void
t_update_roundtrip(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 0);
    dbao_err e = {0};
    create_ok(s, "g:2", 3);
    saga_tx t;
    get_ok(s, "g:2", &t);
    t.state = SAGA_RUNNING;
    static const char why[] = "why \"quoted\" \\ back";
    static const char le[] = "503 \"busy\" {x} \\ \xff\xfe end";
    t.reason = saga__strndup(why, sizeof why - 1);
    t.steps[1].state = SAGA_STEP_SUCCEEDED;
    t.steps[1].attempts = 2;
    t.steps[1].next_at_ms = 987654321012;
    t.steps[1].last_error = saga__strndup(le, sizeof le - 1);
    t.steps[2].state = SAGA_STEP_RUNNING;
    t.steps[0].state = SAGA_STEP_FAILED; /* not listed: must not be written */
    uint32_t idx[2] = {1, 2};
    if (saga_store_update(s, &t, idx, 2, &e) != 0) {
        fail_msg("update: %s", e.msg);
    }
    saga_tx_free(&t);
    get_ok(s, "g:2", &t);
    assert_int_equal(t.state, SAGA_RUNNING);
    assert_string_equal(t.reason, "why \"quoted\" \\ back");
    assert_int_equal(t.version, 2);
    assert_int_equal(t.steps[0].state, SAGA_STEP_PENDING);
    assert_int_equal(t.steps[1].state, SAGA_STEP_SUCCEEDED);
    assert_int_equal(t.steps[1].attempts, 2);
    assert_int_equal(t.steps[1].next_at_ms, 987654321012);
    assert_string_equal(t.steps[1].last_error, "503 \"busy\" {x} \\ ?? end");
    assert_int_equal(t.steps[2].state, SAGA_STEP_RUNNING);
    assert_null(t.steps[2].last_error);
    /* A reason longer than the cap is cut. */
    char big[3000];
    memset(big, 'r', sizeof big - 1);
    big[sizeof big - 1] = 0;
    dbao_free(t.reason);
    t.reason = saga__strndup(big, strlen(big));
    assert_int_equal(saga_store_update(s, &t, NULL, 0, &e), 0);
    saga_tx_free(&t);
    get_ok(s, "g:2", &t);
    assert_int_equal(strlen(t.reason), SAGA_REASON_MAX);
    /* Argument checks. */
    t.state = 9;
    assert_int_equal(saga_store_update(s, &t, NULL, 0, &e), DBAO_EINVAL);
    t.state = SAGA_RUNNING;
    uint32_t bad = 7;
    assert_int_equal(saga_store_update(s, &t, &bad, 1, &e), DBAO_EINVAL);
    snprintf(t.gid, sizeof t.gid, "absent");
    assert_int_equal(saga_store_update(s, &t, NULL, 0, &e), SAGA_ENOENT);
    saga_tx_free(&t);
    saga_store_close(s);
}

typedef struct claimer {
    saga_store *s;
    char (*got)[SAGA_GID_MAX + 1];
    size_t n;
    int rc;
} claimer;

static void *
claim_thread(void *arg)
{
    claimer *c = arg;
    saga_tx out[7];
    for (int empty = 0; empty < 3;) {
        size_t n = 0;
        dbao_err e = {0};
        c->rc = saga_store_claim(c->s, out, 7, &n, &e);
        if (c->rc != 0) {
            fprintf(stderr, "claim: %s\n", e.msg);
            return NULL;
        }
        empty = n == 0 ? empty + 1 : 0;
        for (size_t i = 0; i < n; i++) {
            memcpy(c->got[c->n++], out[i].gid, sizeof out[i].gid);
            saga_tx_free(&out[i]);
        }
        if (n > 0) {
            usleep(500); /* let the other claimer in */
        }
    }
    return NULL;
}

static int
cmp_gid(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void
t_claim_exclusive(void **state)
{
    (void) state;
    enum { N = 200 };
    saga_store *c = open_as("creator", 0);
    dbao_err e = {0};
    assert_int_equal(saga_store_batch_begin(c, &e), 0);
    for (int i = 0; i < N; i++) {
        char g[32];
        snprintf(g, sizeof g, "c-%04d", i);
        create_ok(c, g, 2);
        assert_int_equal(saga_store_release(c, g, &e), 0);
    }
    create_ok(c, "final", 1);
    assert_int_equal(set_state(c, "final", SAGA_COMMITTED, NULL), 0);
    assert_int_equal(saga_store_release(c, "final", &e), 0);
    assert_int_equal(saga_store_batch_commit(c, &e), 0);
    saga_store_close(c);

    claimer a = {.s = open_as("A", 60000)}, b = {.s = open_as("B", 60000)};
    a.got = calloc(N + 1, sizeof *a.got);
    b.got = calloc(N + 1, sizeof *b.got);
    pthread_t ta, tb;
    pthread_create(&ta, NULL, claim_thread, &a);
    pthread_create(&tb, NULL, claim_thread, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(b.rc, 0);
    assert_int_equal(a.n + b.n, N); /* every unfinished one, never the committed one */
    char(*all)[SAGA_GID_MAX + 1] = calloc(N, sizeof *all);
    memcpy(all, a.got, a.n * sizeof *all);
    memcpy(all + a.n, b.got, b.n * sizeof *all);
    qsort(all, N, sizeof *all, cmp_gid);
    for (int i = 0; i < N; i++) {
        char g[32];
        snprintf(g, sizeof g, "c-%04d", i);
        assert_string_equal(all[i], g); /* each exactly once */
    }
    printf("# claim split: A %zu, B %zu\n", a.n, b.n);
    /* A's transactions: B cannot write them, A can. */
    saga_tx t;
    get_ok(b.s, a.n > 0 ? a.got[0] : b.got[0], &t);
    saga_store *holder = a.n > 0 ? a.s : b.s, *other = a.n > 0 ? b.s : a.s;
    assert_int_equal(saga_store_update(other, &t, NULL, 0, &e), SAGA_ELOST);
    assert_int_equal(saga_store_update(holder, &t, NULL, 0, &e), 0);
    saga_tx_free(&t);
    free(all);
    free(a.got);
    free(b.got);
    saga_store_close(a.s);
    saga_store_close(b.s);
}

static void
t_lease_expiry(void **state)
{
    (void) state;
    saga_store *a = open_as("A", 1000), *b = open_as("B", 5000);
    dbao_err e = {0};
    saga_tx out[4];
    size_t n = 9;
    create_ok(a, "lease-1", 2);
    assert_int_equal(saga_store_claim(b, out, 4, &n, &e), 0);
    assert_int_equal(n, 0); /* A's lease is valid */
    usleep(1150 * 1000);
    assert_int_equal(saga_store_claim(b, out, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(out[0].gid, "lease-1");
    assert_int_equal(out[0].num_steps, 2);
    out[0].state = SAGA_RUNNING;
    /* The old owner lost it: nothing written, SAGA_ELOST. */
    assert_int_equal(saga_store_update(a, &out[0], NULL, 0, &e), SAGA_ELOST);
    assert_int_equal(saga_store_release(a, "lease-1", &e), SAGA_ELOST);
    saga_tx t;
    get_ok(a, "lease-1", &t);
    assert_int_equal(t.state, SAGA_SUBMITTED);
    saga_tx_free(&t);
    assert_int_equal(saga_store_update(b, &out[0], NULL, 0, &e), 0);
    /* Released: A may claim it again at once. */
    assert_int_equal(saga_store_release(b, "lease-1", &e), 0);
    saga_tx_free(&out[0]);
    assert_int_equal(saga_store_claim(a, out, 4, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].state, SAGA_RUNNING);
    saga_tx_free(&out[0]);
    saga_store_close(a);
    saga_store_close(b);
}

static void
t_list(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 0);
    dbao_err e = {0};
    const char *g[5] = {"l-0", "l-1", "l-2", "l-3", "l-4"};
    const int st[5] = {SAGA_PARKED, SAGA_RUNNING, SAGA_COMMITTED, SAGA_PARKED, SAGA_SUBMITTED};
    int64_t mid = 0;
    for (int i = 0; i < 5; i++) {
        create_ok(s, g[i], 1);
        if (st[i] != SAGA_SUBMITTED) {
            assert_int_equal(set_state(s, g[i], st[i], "r"), 0);
        }
        usleep(5000);
        if (i == 2) {
            mid = saga__now_ms();
            usleep(5000);
        }
    }
    saga_tx out[8];
    size_t n = 0;
    assert_int_equal(saga_store_list(s, SAGA_PARKED, 0, out, 8, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(out[0].gid, "l-3"); /* newest first */
    assert_string_equal(out[1].gid, "l-0");
    assert_string_equal(out[1].reason, "r");
    assert_int_equal(out[1].num_steps, 1);
    for (size_t i = 0; i < n; i++) {
        saga_tx_free(&out[i]);
    }
    assert_int_equal(saga_store_list(s, -1, 0, out, 8, &n, &e), 0);
    assert_int_equal(n, 4); /* not the committed one */
    assert_string_equal(out[0].gid, "l-4");
    for (size_t i = 0; i < n; i++) {
        saga_tx_free(&out[i]);
    }
    assert_int_equal(saga_store_list(s, -1, mid, out, 8, &n, &e), 0);
    assert_int_equal(n, 2); /* l-1 and l-0 are older than mid */
    assert_string_equal(out[0].gid, "l-1");
    assert_string_equal(out[1].gid, "l-0");
    for (size_t i = 0; i < n; i++) {
        saga_tx_free(&out[i]);
    }
    assert_int_equal(saga_store_list(s, -1, 0, out, 1, &n, &e), 0);
    assert_int_equal(n, 1);
    saga_tx_free(&out[0]);
    assert_int_equal(saga_store_list(s, 17, 0, out, 8, &n, &e), DBAO_EINVAL);
    saga_store_close(s);
}

static void
t_admin_set(void **state)
{
    (void) state;
    saga_store *a = open_as("A", 60000), *b = open_as("B", 60000);
    dbao_err e = {0};
    create_ok(a, "adm", 2);
    saga_tx t;
    get_ok(a, "adm", &t);
    t.state = SAGA_PARKED;
    t.steps[0].attempts = 5;
    t.steps[0].state = SAGA_STEP_COMPENSATING;
    uint32_t i0 = 0;
    assert_int_equal(saga_store_update(a, &t, &i0, 1, &e), 0);
    saga_tx_free(&t);
    saga_tx out[2];
    size_t n = 9;
    assert_int_equal(saga_store_claim(b, out, 2, &n, &e), 0);
    assert_int_equal(n, 0); /* parked is not claimable */
    if (saga_store_admin_set(b, "adm", SAGA_COMPENSATING, "retry by hand", &e) != 0) {
        fail_msg("admin_set: %s", e.msg);
    }
    get_ok(a, "adm", &t);
    assert_int_equal(t.state, SAGA_COMPENSATING);
    assert_string_equal(t.reason, "retry by hand");
    assert_int_equal(t.steps[0].attempts, 0);
    assert_int_equal(t.steps[0].state, SAGA_STEP_COMPENSATING);
    /* The lease was cleared: A lost it, B claims it at once. */
    assert_int_equal(saga_store_update(a, &t, NULL, 0, &e), SAGA_ELOST);
    saga_tx_free(&t);
    assert_int_equal(saga_store_claim(b, out, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    saga_tx_free(&out[0]);
    assert_int_equal(saga_store_admin_set(b, "adm", SAGA_COMPENSATED, "fixed", &e), 0);
    assert_int_equal(saga_store_admin_set(b, "adm", SAGA_RUNNING, "again", &e), DBAO_EINVAL);
    assert_int_equal(saga_store_admin_set(b, "none", SAGA_RUNNING, "x", &e), SAGA_ENOENT);
    assert_int_equal(saga_store_admin_set(b, "adm", SAGA_SUBMITTED, "x", &e), DBAO_EINVAL);
    saga_store_close(a);
    saga_store_close(b);
}

static void
t_purge(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 0);
    dbao_err e = {0};
    create_ok(s, "p-done", 2);
    create_ok(s, "p-comp", 2);
    create_ok(s, "p-run", 2);
    create_ok(s, "p-park", 2);
    assert_int_equal(set_state(s, "p-done", SAGA_COMMITTED, NULL), 0);
    assert_int_equal(set_state(s, "p-comp", SAGA_COMPENSATED, "x"), 0);
    assert_int_equal(set_state(s, "p-run", SAGA_RUNNING, NULL), 0);
    assert_int_equal(set_state(s, "p-park", SAGA_PARKED, "x"), 0);
    usleep(5000);
    int64_t cut = saga__now_ms();
    usleep(5000);
    create_ok(s, "p-new", 1);
    assert_int_equal(set_state(s, "p-new", SAGA_COMMITTED, NULL), 0);
    uint64_t d = 99;
    assert_int_equal(saga_store_purge(s, cut, &d, &e), 0);
    assert_int_equal(d, 2);
    saga_tx t;
    assert_int_equal(saga_store_get(s, "p-done", &t, &e), SAGA_ENOENT);
    assert_int_equal(saga_store_get(s, "p-comp", &t, &e), SAGA_ENOENT);
    get_ok(s, "p-run", &t);
    saga_tx_free(&t);
    get_ok(s, "p-park", &t);
    saga_tx_free(&t);
    get_ok(s, "p-new", &t);
    saga_tx_free(&t);
    /* The purged gid can be created again, with fresh steps. */
    create_ok(s, "p-done", 1);
    get_ok(s, "p-done", &t);
    assert_int_equal(t.num_steps, 1);
    saga_tx_free(&t);
    saga_store_close(s);
}

static void
t_batch(void **state)
{
    (void) state;
    saga_store *a = open_as("A", 300), *b = open_as("B", 60000);
    dbao_err e = {0};
    create_ok(a, "b-lost", 1);
    usleep(450 * 1000);
    saga_tx out[2];
    size_t n = 0;
    assert_int_equal(saga_store_claim(b, out, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    saga_tx_free(&out[0]);
    /* The same owner again with a long lease (so that timing cannot fail the rest). */
    saga_store_close(a);
    a = open_as("A", 60000);
    /* A batch in which one call loses its lease: the others commit. */
    assert_int_equal(saga_store_batch_begin(a, &e), 0);
    assert_int_equal(saga_store_batch_begin(a, &e), DBAO_EINVAL);
    create_ok(a, "b-1", 2);
    saga_tx t = {0};
    snprintf(t.gid, sizeof t.gid, "b-lost");
    t.state = SAGA_COMMITTED;
    assert_int_equal(saga_store_update(a, &t, NULL, 0, &e), SAGA_ELOST);
    create_ok(a, "b-2", 2);
    assert_int_equal(set_state(a, "b-2", SAGA_RUNNING, NULL), 0);
    assert_int_equal(saga_store_batch_commit(a, &e), 0);
    assert_int_equal(saga_store_batch_commit(a, &e), DBAO_EINVAL);
    get_ok(b, "b-2", &t);
    assert_int_equal(t.state, SAGA_RUNNING);
    saga_tx_free(&t);
    get_ok(b, "b-1", &t);
    saga_tx_free(&t);
    get_ok(b, "b-lost", &t);
    assert_int_equal(t.state, SAGA_SUBMITTED);
    saga_tx_free(&t);
    /* A batch never committed (the coordinator dies): none of it happened. */
    assert_int_equal(saga_store_batch_begin(a, &e), 0);
    create_ok(a, "b-3", 2);
    assert_int_equal(set_state(a, "b-1", SAGA_PARKED, "p"), 0);
    saga_store_close(a);
    assert_int_equal(saga_store_get(b, "b-3", &t, &e), SAGA_ENOENT);
    get_ok(b, "b-1", &t);
    assert_int_equal(t.state, SAGA_SUBMITTED);
    saga_tx_free(&t);
    saga_store_close(b);
}

static void
t_reopen(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 60000);
    dbao_err e = {0};
    create_ok(s, "r-1", 3);
    create_ok(s, "r-2", 1);
    saga_tx t;
    get_ok(s, "r-1", &t);
    t.state = SAGA_COMPENSATING;
    t.steps[2].state = SAGA_STEP_COMPENSATED;
    t.steps[2].attempts = 3;
    uint32_t i2 = 2;
    assert_int_equal(saga_store_update(s, &t, &i2, 1, &e), 0);
    saga_tx_free(&t);
    assert_int_equal(set_state(s, "r-2", SAGA_COMMITTED, NULL), 0);
    saga_store_close(s);
    s = open_as("c1", 60000);
    get_ok(s, "r-1", &t);
    assert_int_equal(t.state, SAGA_COMPENSATING);
    assert_int_equal(t.version, 2);
    assert_int_equal(t.steps[2].state, SAGA_STEP_COMPENSATED);
    assert_int_equal(t.steps[2].attempts, 3);
    assert_memory_equal(t.spec, SPEC, strlen(SPEC));
    saga_tx_free(&t);
    get_ok(s, "r-2", &t);
    assert_int_equal(t.state, SAGA_COMMITTED);
    saga_tx_free(&t);
    if (g_be == BE_SQLITE) {
        /* The lock proves the previous coordinator is gone: its leases were cleared, so
         * recovery claims at once. (On PostgreSQL the lease must expire first.) */
        saga_tx out[4];
        size_t n = 0;
        saga_store_close(s);
        s = open_as("restarted", 60000);
        assert_int_equal(saga_store_claim(s, out, 4, &n, &e), 0);
        assert_int_equal(n, 1);
        assert_string_equal(out[0].gid, "r-1");
        saga_tx_free(&out[0]);
    }
    saga_store_close(s);
}

static void
t_newer_schema(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 0);
    saga_store_close(s);
    if (g_be == BE_SQLITE) {
        sqlite3 *db = NULL;
        assert_int_equal(sqlite3_open(g_url + 7, &db), SQLITE_OK);
        assert_int_equal(
            sqlite3_exec(db, "UPDATE dengbao_saga_schema SET version = 2", NULL, NULL, NULL),
            SQLITE_OK);
        sqlite3_close(db);
    } else {
        PGconn *c = PQconnectdb(g_url);
        assert_int_equal(PQstatus(c), CONNECTION_OK);
        PQclear(PQexec(c, "UPDATE dengbao_saga_schema SET version = 2"));
        PQfinish(c);
    }
    dbao_err e = {0};
    saga_store_opts o = {.owner = "c1"};
    assert_int_equal(saga_store_open(&s, g_url, &o, &e), DBAO_ENOTSUP);
    assert_non_null(strstr(e.msg, "newer"));
    assert_null(s);
}

static void
t_args(void **state)
{
    (void) state;
    saga_store *s = NULL;
    dbao_err e = {0};
    saga_store_opts o = {.owner = "c1"};
    assert_int_equal(saga_store_open(&s, "mysql://x", &o, &e), DBAO_EINVAL);
    assert_non_null(strstr(e.msg, "mysql"));
    assert_int_equal(saga_store_open(&s, "sqlite:", &o, &e), DBAO_EINVAL);
    saga_store_opts no = {0};
    assert_int_equal(saga_store_open(&s, g_url, &no, &e), DBAO_EINVAL);
    char longo[80];
    memset(longo, 'o', sizeof longo - 1);
    longo[sizeof longo - 1] = 0;
    saga_store_opts lo = {.owner = longo};
    assert_int_equal(saga_store_open(&s, g_url, &lo, &e), DBAO_EINVAL);
    s = open_as("c1", 0);
    bool ex;
    assert_int_equal(saga_store_create(s, "", SPEC, strlen(SPEC), 1, 0, &ex, &e), DBAO_EINVAL);
    assert_int_equal(saga_store_create(s, "a b", SPEC, strlen(SPEC), 1, 0, &ex, &e), DBAO_EINVAL);
    assert_int_equal(saga_store_create(s, "a'b", SPEC, strlen(SPEC), 1, 0, &ex, &e), DBAO_EINVAL);
    char g129[130];
    memset(g129, 'g', 129);
    g129[129] = 0;
    assert_int_equal(saga_store_create(s, g129, SPEC, strlen(SPEC), 1, 0, &ex, &e), DBAO_EINVAL);
    g129[128] = 0;
    assert_int_equal(saga_store_create(s, g129, SPEC, strlen(SPEC), 1, 0, &ex, &e), 0);
    assert_int_equal(saga_store_create(s, "ok", SPEC, 0, 1, 0, &ex, &e), DBAO_ERANGE);
    assert_int_equal(saga_store_create(s, "ok", "a\0b", 3, 1, 0, &ex, &e), DBAO_EINVAL);
    assert_int_equal(saga_store_create(s, "ok", SPEC, strlen(SPEC), 65, 0, &ex, &e), DBAO_ERANGE);
    assert_int_equal(saga_store_batch_commit(s, &e), DBAO_EINVAL);
    saga_state st;
    assert_int_equal(saga_state_parse("compensating", &st), 0);
    assert_int_equal(st, SAGA_COMPENSATING);
    assert_int_equal(saga_state_parse("bogus", &st), DBAO_EINVAL);
    assert_string_equal(saga_state_name(SAGA_PARKED), "parked");
    assert_string_equal(saga_step_state_name(SAGA_STEP_COMPENSATED), "compensated");
    assert_string_equal(saga_state_name((saga_state) 42), "unknown");
    saga_store_close(s);
    saga_store_close(NULL);
    saga_tx_free(NULL);
}

/* ---- SQLite only ---------------------------------------------------------------------------- */

static void
t_sqlite_second_process(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        saga_store *s2 = NULL;
        saga_store_opts o = {.owner = "c2"};
        dbao_err e = {0};
        int rc = saga_store_open(&s2, g_url, &o, &e);
        _exit(rc != 0 && strstr(e.msg, "another process") != NULL ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    saga_store_close(s);
    /* Closed: another process may open it now. */
    pid = fork();
    if (pid == 0) {
        saga_store *s2 = NULL;
        saga_store_opts o = {.owner = "c2"};
        int rc = saga_store_open(&s2, g_url, &o, NULL);
        saga_store_close(s2);
        _exit(rc == 0 ? 0 : 1);
    }
    waitpid(pid, &st, 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void
t_sqlite_kill9(void **state)
{
    (void) state;
    for (int round = 0; round < 3; round++) {
        fresh_url();
        int p[2];
        assert_int_equal(pipe(p), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            saga_store *s = NULL;
            saga_store_opts o = {.owner = "victim"};
            if (saga_store_open(&s, g_url, &o, NULL) != 0) {
                _exit(2);
            }
            for (int i = 0;; i += 8) {
                saga_store_batch_begin(s, NULL);
                for (int k = i; k < i + 8; k++) {
                    char g[32];
                    snprintf(g, sizeof g, "k-%d", k);
                    saga_store_create(s, g, SPEC, strlen(SPEC), 3, 0, NULL, NULL);
                }
                if (saga_store_batch_commit(s, NULL) == 0) {
                    int last = i + 7; /* acknowledged */
                    if (write(p[1], &last, sizeof last) != sizeof last) {
                        _exit(3);
                    }
                }
            }
        }
        close(p[1]);
        usleep((useconds_t) (80000 + 37000 * round));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        int last = -1, v;
        while (read(p[0], &v, sizeof v) == sizeof v) {
            last = v;
        }
        close(p[0]);
        assert_true(WIFSIGNALED(st));
        saga_store *s = open_as("survivor", 0);
        for (int k = 0; k <= last; k++) {
            char g[32];
            saga_tx t;
            snprintf(g, sizeof g, "k-%d", k);
            get_ok(s, g, &t);
            assert_int_equal(t.num_steps, 3);
            saga_tx_free(&t);
        }
        /* Whatever is there beyond the last acknowledgement is whole (batch atomicity). */
        size_t n = 0;
        saga_tx out[16];
        dbao_err e = {0};
        assert_int_equal(saga_store_claim(s, out, 16, &n, &e), 0);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(out[i].num_steps, 3);
            saga_tx_free(&out[i]);
        }
        printf("# kill -9 round %d: %d acknowledged sagas all present\n", round, last + 1);
        saga_store_close(s);
    }
}

/* ---- PostgreSQL only ------------------------------------------------------------------------ */

static void
t_pg_restart(void **state)
{
    (void) state;
    saga_store *s = open_as("c1", 60000);
    dbao_err e = {0};
    create_ok(s, "pr-1", 2);
    assert_int_equal(tu_svc_stop(&g_svc), 0);
    assert_int_equal(tu_svc_start(&g_svc, "postgres", g_pgport), g_pgport);
    /* The next call reconnects (a read: retried). */
    saga_tx t;
    get_ok(s, "pr-1", &t);
    t.state = SAGA_RUNNING;
    saga_tx_free(&t);
    assert_int_equal(set_state(s, "pr-1", SAGA_RUNNING, NULL), 0);
    /* A write across a restart: retried once after the reconnect. */
    assert_int_equal(tu_svc_stop(&g_svc), 0);
    assert_int_equal(tu_svc_start(&g_svc, "postgres", g_pgport), g_pgport);
    create_ok(s, "pr-2", 1);
    /* A batch across a restart fails whole, and the store works again after it. */
    assert_int_equal(saga_store_batch_begin(s, &e), 0);
    create_ok(s, "pr-3", 1);
    assert_int_equal(tu_svc_stop(&g_svc), 0);
    assert_int_equal(tu_svc_start(&g_svc, "postgres", g_pgport), g_pgport);
    bool ex;
    assert_int_equal(saga_store_create(s, "pr-4", SPEC, strlen(SPEC), 1, 0, &ex, &e), DBAO_EIO);
    assert_int_equal(saga_store_batch_commit(s, &e), DBAO_EIO);
    assert_int_equal(saga_store_get(s, "pr-3", &t, &e), SAGA_ENOENT);
    assert_int_equal(saga_store_get(s, "pr-4", &t, &e), SAGA_ENOENT);
    get_ok(s, "pr-1", &t);
    assert_int_equal(t.state, SAGA_RUNNING);
    saga_tx_free(&t);
    get_ok(s, "pr-2", &t);
    saga_tx_free(&t);
    /* A server that stays down: DBAO_EIO, no hang, and recovery afterwards. */
    assert_int_equal(tu_svc_stop(&g_svc), 0);
    assert_int_equal(saga_store_get(s, "pr-1", &t, &e), DBAO_EIO);
    assert_int_equal(tu_svc_start(&g_svc, "postgres", g_pgport), g_pgport);
    get_ok(s, "pr-1", &t);
    saga_tx_free(&t);
    saga_store_close(s);
}

/* ---- measurement ---------------------------------------------------------------------------- */

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* bench_run: n sagas of create + 3 updates (RUNNING with step 0, step 1, COMMITTED with step
 * 2), written in batches of `batch` sagas (each batch: every saga's create, then their
 * updates one round at a time, as a coordinator's group commit does). */
static double
bench_run(saga_store *s, int n, int batch, const char *tag)
{
    saga_tx *tx = calloc((size_t) batch, sizeof *tx);
    saga_step_rec *steps = calloc((size_t) batch * 3, sizeof *steps);
    double t0 = now_s();
    for (int i = 0; i < n; i += batch) {
        int m = n - i < batch ? n - i : batch;
        dbao_err e = {0};
        if (batch > 1) {
            assert_int_equal(saga_store_batch_begin(s, &e), 0);
        }
        for (int k = 0; k < m; k++) {
            saga_tx *t = &tx[k];
            snprintf(t->gid, sizeof t->gid, "%s-%d", tag, i + k);
            t->steps = &steps[k * 3];
            t->num_steps = 3;
            for (uint32_t j = 0; j < 3; j++) {
                t->steps[j] = (saga_step_rec){.idx = j};
            }
            if (saga_store_create(s, t->gid, SPEC, strlen(SPEC), 3, 0, NULL, &e) != 0) {
                fail_msg("bench create: %s", e.msg);
            }
        }
        for (uint32_t r = 0; r < 3; r++) {
            for (int k = 0; k < m; k++) {
                saga_tx *t = &tx[k];
                t->state = r == 2 ? SAGA_COMMITTED : SAGA_RUNNING;
                t->steps[r].state = SAGA_STEP_SUCCEEDED;
                t->steps[r].attempts = 1;
                if (saga_store_update(s, t, &r, 1, &e) != 0) {
                    fail_msg("bench update: %s", e.msg);
                }
            }
        }
        if (batch > 1) {
            assert_int_equal(saga_store_batch_commit(s, &e), 0);
        }
    }
    double rate = n / (now_s() - t0);
    free(tx);
    free(steps);
    return rate;
}

static void
t_bench(void **state)
{
    (void) state;
    const char *env = getenv("DBAO_SAGA_STORE_BENCH");
    int n = env != NULL ? atoi(env) : 0;
    if (n <= 0) {
        printf("# measurement skipped (set DBAO_SAGA_STORE_BENCH=N)\n");
        return;
    }
    const int batches[3] = {1, 16, 128};
    for (int mode = 0; mode < 2; mode++) {
        const char *mname = g_be == BE_SQLITE
                                ? (mode == 0 ? "synchronous=FULL" : "synchronous=NORMAL")
                                : (mode == 0 ? "fsync=on" : "fsync=off");
        if (g_be == BE_PG) {
            /* services.sh starts PostgreSQL with fsync and synchronous_commit off. */
            pg_admin(mode == 0 ? "ALTER SYSTEM SET fsync = on" : "ALTER SYSTEM SET fsync = off");
            pg_admin(mode == 0 ? "ALTER SYSTEM SET synchronous_commit = on"
                               : "ALTER SYSTEM SET synchronous_commit = off");
            pg_admin("SELECT pg_reload_conf()");
            usleep(200 * 1000);
        }
        for (int b = 0; b < 3; b++) {
            fresh_url();
            saga_store *s = open_as("bench", 60000);
            if (g_be == BE_SQLITE && mode == 1) {
                assert_int_equal(saga__sqlite_set_synchronous(s, "NORMAL"), 0);
            }
            int cnt = batches[b] == 1 ? (n / 8 > 200 ? n / 8 : 200) : n;
            double rate = bench_run(s, cnt, batches[b], "bn");
            printf("# bench %s %s batch %3d: %d sagas (create + 3 updates): %.0f sagas/s\n",
                   g_be == BE_SQLITE ? "sqlite" : "postgresql", mname, batches[b], cnt, rate);
            saga_store_close(s);
        }
    }
    if (g_be == BE_PG) {
        pg_admin("ALTER SYSTEM SET fsync = off");
        pg_admin("ALTER SYSTEM SET synchronous_commit = off");
        pg_admin("SELECT pg_reload_conf()");
    }
}

/* ---- groups --------------------------------------------------------------------------------- */

static int
sqlite_group_setup(void **state)
{
    (void) state;
    g_be = BE_SQLITE;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/sagastore.XXXXXX");
    return mkdtemp(g_tmp) != NULL ? 0 : -1;
}

static int
sqlite_group_teardown(void **state)
{
    (void) state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return tu_run(cmd, NULL, 0) == 0 ? 0 : -1;
}

static int
pg_group_setup(void **state)
{
    (void) state;
    g_be = BE_PG;
    if (tu_svc_init(&g_svc, "sagastore-pg") != 0 ||
        (g_pgport = tu_svc_start(&g_svc, "postgres", 0)) <= 0) {
        return -1;
    }
    return 0;
}

static int
pg_group_teardown(void **state)
{
    (void) state;
    return tu_svc_cleanup(&g_svc);
}

#define SUITE                                                                                      \
    cmocka_unit_test_setup(t_create_idempotent, setup_test),                                       \
        cmocka_unit_test_setup(t_update_roundtrip, setup_test),                                    \
        cmocka_unit_test_setup(t_claim_exclusive, setup_test),                                     \
        cmocka_unit_test_setup(t_lease_expiry, setup_test),                                        \
        cmocka_unit_test_setup(t_list, setup_test),                                                \
        cmocka_unit_test_setup(t_admin_set, setup_test),                                           \
        cmocka_unit_test_setup(t_purge, setup_test), cmocka_unit_test_setup(t_batch, setup_test),  \
        cmocka_unit_test_setup(t_reopen, setup_test),                                              \
        cmocka_unit_test_setup(t_newer_schema, setup_test),                                        \
        cmocka_unit_test_setup(t_args, setup_test)

int
main(void)
{
    const struct CMUnitTest sqlite_tests[] = {
        SUITE,
        cmocka_unit_test_setup(t_sqlite_second_process, setup_test),
        cmocka_unit_test(t_sqlite_kill9),
        cmocka_unit_test(t_bench),
    };
    const struct CMUnitTest pg_tests[] = {
        SUITE,
        cmocka_unit_test_setup(t_pg_restart, setup_test),
        cmocka_unit_test(t_bench),
    };
    const char *filter = getenv("DBAO_TEST_FILTER"); /* e.g. t_bench */
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    int rc = cmocka_run_group_tests_name("saga_store_sqlite", sqlite_tests, sqlite_group_setup,
                                         sqlite_group_teardown);
    rc |= cmocka_run_group_tests_name("saga_store_pg", pg_tests, pg_group_setup, pg_group_teardown);
    return rc;
}
