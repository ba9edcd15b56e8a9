/* test_barrier.c: the saga idempotency barrier (saga.h, barrier.c) against a real PostgreSQL 15.
 *
 * The group setup starts PostgreSQL with scripts/services.sh (a failure to start fails the
 * tests, it never skips them), creates the barrier table (twice: the schema is idempotent) and a
 * business table `biz` that every business function appends one row to; the teardown stops it.
 * Each test uses its own gid, so the tests do not depend on their order.
 * Cases: an action runs once; a duplicate action is skipped; a compensation after the action
 * runs; a duplicate compensation is skipped; a compensation first is a null compensation
 * (recorded, business skipped), then the action is HANGING (skipped) and a second compensation
 * a duplicate; a failing business function rolls back its barrier row and its own writes (a
 * retry runs); a business function that breaks the transaction is reported and nothing stays;
 * concurrent duplicates from two connections (the second INSERT blocks on the first's
 * uncommitted row: checked in pg_stat_activity; then commit -> the second skips,
 * rollback -> the second runs; an action racing its compensation); argument checks; cleanup
 * deletes only rows older than the retention, in batches.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/saga.h"
#include "testsvc.h"

static tu_svc g_svc;
static char g_ci[512];
static int g_pgport;
static PGconn *g_c; /* the main test connection */

static PGconn *
connect_db(void)
{
    PGconn *c = PQconnectdb(g_ci);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connection: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int
exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
    return ok ? 0 : -1;
}

/* count_sql runs a SELECT count(*)-style query with one text parameter. */
static long
count_sql(PGconn *c, const char *sql, const char *p1)
{
    const char *v[1] = {p1};
    PGresult *r = PQexecParams(c, sql, p1 != NULL ? 1 : 0, NULL, v, NULL, NULL, 0);
    long n = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        n = atol(PQgetvalue(r, 0, 0));
    } else {
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    }
    PQclear(r);
    return n;
}

static long
biz_rows(const char *gid)
{
    return count_sql(g_c, "SELECT count(*) FROM biz WHERE gid = $1", gid);
}

static long
barrier_rows(const char *gid)
{
    return count_sql(g_c, "SELECT count(*) FROM dengbao_saga_barrier WHERE gid = $1", gid);
}

static int
group_setup(void **state)
{
    (void) state;
    if (tu_svc_init(&g_svc, "sbar-test") != 0 ||
        (g_pgport = tu_svc_start(&g_svc, "postgres", 0)) <= 0) {
        return -1;
    }
    snprintf(g_ci, sizeof g_ci, "host=%s/postgres port=%d user=postgres dbname=postgres", g_svc.dir,
             g_pgport);
    if ((g_c = connect_db()) == NULL) {
        return -1;
    }
    if (exec_ok(g_c, saga_barrier_schema()) != 0 || exec_ok(g_c, saga_barrier_schema()) != 0 ||
        exec_ok(g_c, "CREATE TABLE biz (gid text, branch text, op text, "
                     "at timestamptz DEFAULT clock_timestamp())") != 0) {
        return -1;
    }
    return 0;
}

static int
group_teardown(void **state)
{
    (void) state;
    PQfinish(g_c);
    g_c = NULL;
    return tu_svc_cleanup(&g_svc);
}

/* ---- the business function -------------------------------------------------------------- */

typedef struct bizarg {
    const char *gid, *branch, *op;
    int calls;    /* how many times it ran */
    int fail;     /* return this (< 0) after writing */
    int break_tx; /* run a failing statement and ignore it */
    /* concurrency: signal `inside` once inside, then wait for `go` */
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *inside, *go;
} bizarg;

static int
biz_fn(void *pgconn, void *arg, dbao_err *err)
{
    PGconn *c = pgconn;
    bizarg *b = arg;
    b->calls++;
    const char *v[3] = {b->gid, b->branch, b->op};
    PGresult *r = PQexecParams(c, "INSERT INTO biz (gid, branch, op) VALUES ($1, $2, $3)", 3, NULL,
                               v, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        return dbao_err_set(err, DBAO_EIO, "biz insert failed");
    }
    if (b->mu != NULL) {
        pthread_mutex_lock(b->mu);
        *b->inside = 1;
        pthread_cond_broadcast(b->cv);
        while (!*b->go) {
            pthread_cond_wait(b->cv, b->mu);
        }
        pthread_mutex_unlock(b->mu);
    }
    if (b->break_tx) {
        PQclear(PQexec(c, "SELECT 1/0"));
    }
    return b->fail;
}

static int
call(PGconn *c, const char *gid, const char *branch, saga_barrier_op op, bizarg *b,
     saga_barrier_outcome *oc)
{
    b->gid = gid;
    b->branch = branch;
    b->op = op == SAGA_OP_ACTION ? "action" : "compensate";
    dbao_err err;
    dbao_err_clear(&err);
    *oc = (saga_barrier_outcome) 99;
    int rc = saga_barrier_call(c, gid, branch, op, biz_fn, b, oc, &err);
    if (rc != 0) {
        fprintf(stderr, "    (barrier: %s)\n", err.msg);
    }
    return rc;
}

/* ---- sequential cases --------------------------------------------------------------------- */

static void
test_action_once_and_duplicate(void **state)
{
    (void) state;
    bizarg b = {0};
    saga_barrier_outcome oc;
    assert_int_equal(call(g_c, "g-once", "0", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_RAN);
    assert_int_equal(b.calls, 1);
    assert_int_equal(biz_rows("g-once"), 1);
    /* duplicate: skipped */
    assert_int_equal(call(g_c, "g-once", "0", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_DUPLICATE);
    assert_int_equal(b.calls, 1);
    assert_int_equal(biz_rows("g-once"), 1);
    /* another branch of the same gid is independent */
    assert_int_equal(call(g_c, "g-once", "1", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_RAN);
    assert_int_equal(b.calls, 2);
    assert_int_equal(PQtransactionStatus(g_c), PQTRANS_IDLE);
}

static void
test_compensate_after_action(void **state)
{
    (void) state;
    bizarg b = {0};
    saga_barrier_outcome oc;
    assert_int_equal(call(g_c, "g-comp", "0", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_RAN);
    assert_int_equal(call(g_c, "g-comp", "0", SAGA_OP_COMPENSATE, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_RAN);
    assert_int_equal(b.calls, 2);
    /* duplicate compensation: skipped */
    assert_int_equal(call(g_c, "g-comp", "0", SAGA_OP_COMPENSATE, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_DUPLICATE);
    assert_int_equal(b.calls, 2);
    /* a late duplicate of the action after the compensation: still only a duplicate (the
     * action ran for real, reason 'action'), skipped */
    assert_int_equal(call(g_c, "g-comp", "0", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_DUPLICATE);
    assert_int_equal(b.calls, 2);
    assert_int_equal(biz_rows("g-comp"), 2);
    assert_int_equal(barrier_rows("g-comp"), 2);
}

static void
test_null_compensation_then_hanging(void **state)
{
    (void) state;
    bizarg b = {0};
    saga_barrier_outcome oc;
    assert_int_equal(call(g_c, "g-null", "3", SAGA_OP_COMPENSATE, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_NULL_COMPENSATION);
    assert_int_equal(b.calls, 0);
    assert_int_equal(barrier_rows("g-null"), 2); /* recorded: both slots */
    assert_int_equal(count_sql(g_c,
                               "SELECT count(*) FROM dengbao_saga_barrier WHERE gid = $1 "
                               "AND op = 'action' AND reason = 'compensate'",
                               "g-null"),
                     1);
    /* the action arrives late: hanging, skipped */
    assert_int_equal(call(g_c, "g-null", "3", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_HANGING);
    assert_int_equal(b.calls, 0);
    /* and again */
    assert_int_equal(call(g_c, "g-null", "3", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_HANGING);
    /* a second compensation: a duplicate */
    assert_int_equal(call(g_c, "g-null", "3", SAGA_OP_COMPENSATE, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_DUPLICATE);
    assert_int_equal(b.calls, 0);
    assert_int_equal(biz_rows("g-null"), 0);
}

static void
test_business_error_rolls_back(void **state)
{
    (void) state;
    bizarg b = {.fail = DBAO_EIO};
    saga_barrier_outcome oc;
    assert_int_equal(call(g_c, "g-err", "0", SAGA_OP_ACTION, &b, &oc), DBAO_EIO);
    assert_int_equal(b.calls, 1);
    assert_int_equal(biz_rows("g-err"), 0);     /* its own write is gone */
    assert_int_equal(barrier_rows("g-err"), 0); /* and the barrier row with it */
    assert_int_equal(PQtransactionStatus(g_c), PQTRANS_IDLE);
    /* the retry runs again */
    b.fail = 0;
    assert_int_equal(call(g_c, "g-err", "0", SAGA_OP_ACTION, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_RAN);
    assert_int_equal(b.calls, 2);
    assert_int_equal(biz_rows("g-err"), 1);
    /* a failing compensation rolls back both of its slots: the retry runs it */
    b.fail = -5;
    assert_int_equal(call(g_c, "g-err", "0", SAGA_OP_COMPENSATE, &b, &oc), -5);
    assert_int_equal(barrier_rows("g-err"), 1);
    b.fail = 0;
    assert_int_equal(call(g_c, "g-err", "0", SAGA_OP_COMPENSATE, &b, &oc), 0);
    assert_int_equal(oc, SAGA_BARRIER_RAN);
    assert_int_equal(biz_rows("g-err"), 2);
    /* a positive return is a programming error: refused and rolled back */
    b.fail = 1;
    assert_int_equal(call(g_c, "g-err", "9", SAGA_OP_ACTION, &b, &oc), DBAO_EINVAL);
    assert_int_equal(count_sql(g_c,
                               "SELECT count(*) FROM dengbao_saga_barrier WHERE gid = $1 "
                               "AND branch = '9'",
                               "g-err"),
                     0);
}

static void
test_business_breaks_transaction(void **state)
{
    (void) state;
    bizarg b = {.break_tx = 1};
    saga_barrier_outcome oc;
    assert_int_equal(call(g_c, "g-break", "0", SAGA_OP_ACTION, &b, &oc), DBAO_EIO);
    assert_int_equal(biz_rows("g-break"), 0);
    assert_int_equal(barrier_rows("g-break"), 0);
    assert_int_equal(PQtransactionStatus(g_c), PQTRANS_IDLE);
}

static void
test_arguments(void **state)
{
    (void) state;
    bizarg b = {0};
    saga_barrier_outcome oc;
    dbao_err err;
    assert_int_equal(saga_barrier_call(NULL, "g", "0", SAGA_OP_ACTION, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    assert_int_equal(saga_barrier_call(g_c, "g", "0", SAGA_OP_ACTION, NULL, &b, &oc, &err),
                     DBAO_EINVAL);
    assert_int_equal(saga_barrier_call(g_c, "g", "0", SAGA_OP_ACTION, biz_fn, &b, NULL, &err),
                     DBAO_EINVAL);
    assert_int_equal(saga_barrier_call(g_c, "g", "0", (saga_barrier_op) 7, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    assert_int_equal(saga_barrier_call(g_c, "", "0", SAGA_OP_ACTION, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    assert_int_equal(saga_barrier_call(g_c, "g'; drop", "0", SAGA_OP_ACTION, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    assert_non_null(strstr(err.msg, "gid"));
    char big[SAGA_GID_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(saga_barrier_call(g_c, big, "0", SAGA_OP_ACTION, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    big[SAGA_GID_MAX] = 0; /* exactly 128: accepted */
    assert_int_equal(saga_barrier_call(g_c, big, "0", SAGA_OP_ACTION, biz_fn, &b, &oc, &err), 0);
    assert_int_equal(saga_barrier_call(g_c, "g", "", SAGA_OP_ACTION, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    assert_non_null(strstr(err.msg, "branch"));
    assert_int_equal(saga_barrier_call(g_c, "g", "a b", SAGA_OP_ACTION, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    /* the caller's open transaction is refused (the barrier must own the transaction) */
    assert_int_equal(exec_ok(g_c, "BEGIN"), 0);
    assert_int_equal(saga_barrier_call(g_c, "g-tx", "0", SAGA_OP_ACTION, biz_fn, &b, &oc, &err),
                     DBAO_EINVAL);
    assert_int_equal(exec_ok(g_c, "ROLLBACK"), 0);
    /* a connection whose server backend died: reported, never a crash */
    PGconn *dead = connect_db();
    assert_non_null(dead);
    char q[128];
    snprintf(q, sizeof q, "SELECT pg_terminate_backend(%d)", PQbackendPID(dead));
    assert_int_equal(exec_ok(g_c, q), 0);
    usleep(50000);
    int rc = saga_barrier_call(dead, "g-dead", "0", SAGA_OP_ACTION, biz_fn, &b, &oc, &err);
    assert_true(rc == DBAO_EIO || rc == DBAO_EINVAL);
    PQfinish(dead);
    assert_int_equal(barrier_rows("g-dead"), 0);
    assert_int_equal(saga_barrier_cleanup(NULL, 10, NULL, &err), DBAO_EINVAL);
    assert_int_equal(saga_barrier_cleanup(g_c, 0, NULL, &err), DBAO_EINVAL);
    assert_int_equal(saga_barrier_cleanup(g_c, -1, NULL, &err), DBAO_EINVAL);
}

/* ---- concurrency ------------------------------------------------------------------------ */

typedef struct racer {
    PGconn *c;
    const char *gid;
    saga_barrier_op op;
    bizarg b;
    saga_barrier_outcome oc;
    int rc;
    atomic_int done; /* set by the racer thread when its call returned */
} racer;

static void *
racer_main(void *arg)
{
    racer *r = arg;
    r->rc = call(r->c, r->gid, "0", r->op, &r->b, &r->oc);
    /* release: publishes rc/oc before `done`; the test thread's acquire load pairs with it
     * (it only needs `done` itself, but a reader that sees 1 may then read the results) */
    atomic_store_explicit(&r->done, 1, memory_order_release);
    return NULL;
}

/* waits until the backend of `c` waits on a lock (the INSERT blocked on the first row). */
static int
wait_blocked(PGconn *c)
{
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_stat_activity WHERE pid = %d AND wait_event_type = 'Lock'",
             PQbackendPID(c));
    for (int i = 0; i < 200; i++) {
        if (count_sql(g_c, q, NULL) == 1) {
            return 1;
        }
        usleep(10000);
    }
    return 0;
}

/* race: A (op_a) runs its business function and waits inside; B (op_b) on another connection
 * calls the barrier for the same gid/branch and must block; then A commits (a_fail = 0) or
 * rolls back (a_fail < 0); returns B's racer after both ended. */
static void
race(const char *gid, saga_barrier_op op_a, saga_barrier_op op_b, int a_fail, racer *ra, racer *rb)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int inside = 0, go = 0;
    memset(ra, 0, sizeof *ra);
    memset(rb, 0, sizeof *rb);
    atomic_init(&ra->done, 0);
    atomic_init(&rb->done, 0);
    ra->c = connect_db();
    rb->c = connect_db();
    assert_non_null(ra->c);
    assert_non_null(rb->c);
    ra->gid = rb->gid = gid;
    ra->op = op_a;
    rb->op = op_b;
    ra->b.fail = a_fail;
    ra->b.mu = &mu;
    ra->b.cv = &cv;
    ra->b.inside = &inside;
    ra->b.go = &go;
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, racer_main, ra), 0);
    pthread_mutex_lock(&mu);
    while (!inside) {
        pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
    /* A holds its uncommitted barrier row; B must now block in its INSERT */
    assert_int_equal(pthread_create(&tb, NULL, racer_main, rb), 0);
    int blocked = wait_blocked(rb->c);
    int b_done_early = atomic_load_explicit(&rb->done, memory_order_acquire);
    pthread_mutex_lock(&mu);
    go = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    PQfinish(ra->c);
    PQfinish(rb->c);
    assert_true(blocked);
    assert_false(b_done_early);
}

static void
test_concurrent_duplicates_commit(void **state)
{
    (void) state;
    racer a, b;
    race("g-race1", SAGA_OP_ACTION, SAGA_OP_ACTION, 0, &a, &b);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.oc, SAGA_BARRIER_RAN);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.oc, SAGA_BARRIER_DUPLICATE);
    assert_int_equal(b.b.calls, 0);
    assert_int_equal(biz_rows("g-race1"), 1);
}

static void
test_concurrent_duplicates_rollback(void **state)
{
    (void) state;
    racer a, b;
    race("g-race2", SAGA_OP_ACTION, SAGA_OP_ACTION, DBAO_EIO, &a, &b);
    assert_int_equal(a.rc, DBAO_EIO);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.oc, SAGA_BARRIER_RAN); /* the first rolled back: the second runs */
    assert_int_equal(b.b.calls, 1);
    assert_int_equal(biz_rows("g-race2"), 1);
}

static void
test_concurrent_action_and_compensation(void **state)
{
    (void) state;
    racer a, b;
    /* the action is in flight when its compensation arrives: the compensation waits, then
     * undoes the committed action (not a null compensation) */
    race("g-race3", SAGA_OP_ACTION, SAGA_OP_COMPENSATE, 0, &a, &b);
    assert_int_equal(a.oc, SAGA_BARRIER_RAN);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.oc, SAGA_BARRIER_RAN);
    assert_int_equal(biz_rows("g-race3"), 2);
}

/* ---- cleanup ------------------------------------------------------------------------------- */

static void
test_cleanup_retention(void **state)
{
    (void) state;
    assert_int_equal(exec_ok(g_c, "INSERT INTO dengbao_saga_barrier (gid, branch, op, reason, "
                                  "created_at) SELECT 'old-' || i, '0', 'action', 'action', "
                                  "now() - interval '2 hours' FROM generate_series(1, 25000) i"),
                     0);
    assert_int_equal(exec_ok(g_c, "INSERT INTO dengbao_saga_barrier (gid, branch, op, reason, "
                                  "created_at) VALUES ('edge', '0', 'action', 'action', "
                                  "now() - interval '50 minutes')"),
                     0);
    long before = count_sql(g_c, "SELECT count(*) FROM dengbao_saga_barrier", NULL);
    uint64_t deleted = 0;
    dbao_err err;
    dbao_err_clear(&err);
    assert_int_equal(saga_barrier_cleanup(g_c, 3600, &deleted, &err), 0);
    assert_int_equal(deleted, 25000); /* three batches */
    long after = count_sql(g_c, "SELECT count(*) FROM dengbao_saga_barrier", NULL);
    assert_int_equal(after, before - 25000);
    assert_int_equal(barrier_rows("edge"), 1);   /* younger than the retention: kept */
    assert_int_equal(barrier_rows("g-once"), 2); /* recent rows: kept */
    /* nothing old left: 0 */
    assert_int_equal(saga_barrier_cleanup(g_c, 3600, &deleted, &err), 0);
    assert_int_equal(deleted, 0);
    /* a shorter retention takes the 50-minute row */
    assert_int_equal(saga_barrier_cleanup(g_c, 1800, &deleted, &err), 0);
    assert_int_equal(deleted, 1);
    assert_int_equal(barrier_rows("edge"), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_action_once_and_duplicate),
        cmocka_unit_test(test_compensate_after_action),
        cmocka_unit_test(test_null_compensation_then_hanging),
        cmocka_unit_test(test_business_error_rolls_back),
        cmocka_unit_test(test_business_breaks_transaction),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_concurrent_duplicates_commit),
        cmocka_unit_test(test_concurrent_duplicates_rollback),
        cmocka_unit_test(test_concurrent_action_and_compensation),
        cmocka_unit_test(test_cleanup_retention),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
