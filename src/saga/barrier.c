/* barrier.c: the saga idempotency barrier for participants on PostgreSQL (saga.h, bottom part).
 *
 * What: a participant of a saga receives every call of the coordinator at least once, maybe
 * several times (retries after an unknown outcome), and maybe out of order (a compensation
 * sent after an action whose request is still in the network). The barrier makes the
 * participant's business change take effect exactly once per (gid, branch, op), and makes the
 * two out-of-order cases harmless:
 *   - duplicate:          the second call of the same op is skipped (answer success again);
 *   - null compensation:  a compensation of an action that never ran is recorded and skipped
 *                         (nothing to undo);
 *   - hanging action:     an action arriving after its (null) compensation is skipped and the
 *                         participant answers a definite failure (the saga already rolled back).
 *
 * Format: one table (saga_barrier_schema()), primary key (gid, branch, op), plus `reason` (the
 * op whose call inserted the row) and `created_at` (for cleanup). Rows:
 *   (g, b, 'action',     'action')      the action ran (or is running in an open transaction)
 *   (g, b, 'action',     'compensate')  a compensation came first: the action slot is burnt
 *   (g, b, 'compensate', 'compensate')  the compensation ran (or was a null compensation)
 *
 * Invariant: the barrier rows and the business change are written in ONE local transaction on
 * the caller's connection, so either both are durable or neither is: a business function that
 * fails (returns < 0, or its SQL fails) rolls the barrier rows back with it and a retry runs
 * again. The decision "run or skip" is taken by INSERT ... ON CONFLICT DO NOTHING on the
 * primary key, under READ COMMITTED: when two connections insert the same key concurrently, the
 * second one's INSERT waits on the first's uncommitted index entry (PostgreSQL's speculative
 * insertion waits for the other transaction to end); if the first commits, the second finds the
 * conflict and inserts nothing (skip); if the first rolls back, the second inserts and runs.
 * There is no read-then-write window: a plain SELECT-then-INSERT would let both run.
 *
 * Why hand-written: DTM's barrier (Go, MySQL/PostgreSQL) is the model; there is no C library
 * for it, and it is four SQL statements around the caller's function. libpq does the protocol;
 * statements go through PQexecParams (extended protocol, values as parameters, never spliced
 * into SQL text). Cleanup deletes in bounded batches (by ctid) so that it never holds a long
 * lock or a huge transaction on a busy table.
 *
 * Threading: per connection (a PGconn belongs to one thread at a time); no global state.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/saga.h"

#define BARRIER_BRANCH_MAX   64
#define BARRIER_DELETE_BATCH 10000

static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS dengbao_saga_barrier (\n"
    "  gid text NOT NULL, branch text NOT NULL, op text NOT NULL,\n"
    "  reason text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),\n"
    "  PRIMARY KEY (gid, branch, op));\n"
    "CREATE INDEX IF NOT EXISTS dengbao_saga_barrier_created ON dengbao_saga_barrier "
    "(created_at);\n";

static const char INSERT_SQL[] = "INSERT INTO dengbao_saga_barrier (gid, branch, op, reason) "
                                 "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
static const char REASON_SQL[] =
    "SELECT reason FROM dengbao_saga_barrier WHERE gid = $1 AND branch = $2 AND op = 'action'";

const char *
saga_barrier_schema(void)
{
    return SCHEMA_SQL;
}

/* pg_fail records a libpq failure: the SQLSTATE and the server's primary message only (it
 * names the statement's problem, never a parameter value: values travel as parameters). */
static int
pg_fail(dbao_err *err, PGconn *c, PGresult *r, const char *what)
{
    const char *state = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL) {
        msg = PQerrorMessage(c);
    }
    int rc = dbao_err_set(err, DBAO_EIO, "barrier: %s failed: %s%s%.160s", what,
                          state != NULL ? state : "", state != NULL ? " " : "",
                          msg != NULL ? msg : "unknown error");
    if (r != NULL) {
        PQclear(r);
    }
    return rc;
}

static int
exec_cmd(PGconn *c, const char *sql, const char *what, dbao_err *err)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        return pg_fail(err, c, r, what);
    }
    PQclear(r);
    return 0;
}

/* insert_row inserts one barrier row; *inserted = 1 if it was new, 0 on a conflict. */
static int
insert_row(PGconn *c, const char *gid, const char *branch, const char *op, const char *reason,
           int *inserted, dbao_err *err)
{
    const char *v[4] = {gid, branch, op, reason};
    PGresult *r = PQexecParams(c, INSERT_SQL, 4, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        return pg_fail(err, c, r, "insert");
    }
    *inserted = atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    return 0;
}

/* rollback ends the local transaction after a failure; its own failure is not reported (the
 * connection is then broken and the caller sees the first error; libpq discards an aborted
 * transaction when the session ends). */
static void
rollback(PGconn *c)
{
    PGresult *r = PQexec(c, "ROLLBACK");
    PQclear(r);
}

static int
check_key(const char *gid, const char *branch, dbao_err *err)
{
    if (gid == NULL || gid[0] == 0 || strlen(gid) > SAGA_GID_MAX) {
        return dbao_err_set(err, DBAO_EINVAL, "barrier: gid must be 1..%d bytes", SAGA_GID_MAX);
    }
    for (const char *p = gid; *p; p++) {
        char ch = *p;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-')) {
            return dbao_err_set(err, DBAO_EINVAL,
                                "barrier: gid has a character outside "
                                "[A-Za-z0-9._:-]");
        }
    }
    if (branch == NULL || branch[0] == 0 || strlen(branch) > BARRIER_BRANCH_MAX) {
        return dbao_err_set(err, DBAO_EINVAL, "barrier: branch must be 1..%d bytes",
                            BARRIER_BRANCH_MAX);
    }
    for (const char *p = branch; *p; p++) {
        if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e) {
            return dbao_err_set(err, DBAO_EINVAL, "barrier: branch must be printable ASCII");
        }
    }
    return 0;
}

int
saga_barrier_call(void *pgconn, const char *gid, const char *branch, saga_barrier_op op,
                  saga_barrier_fn fn, void *arg, saga_barrier_outcome *outcome, dbao_err *err)
{
    PGconn *c = pgconn;
    if (c == NULL || fn == NULL || outcome == NULL ||
        (op != SAGA_OP_ACTION && op != SAGA_OP_COMPENSATE)) {
        return dbao_err_set(err, DBAO_EINVAL, "barrier: conn, fn, outcome and op are required");
    }
    int rc = check_key(gid, branch, err);
    if (rc != 0) {
        return rc;
    }
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE) {
        return dbao_err_set(err, DBAO_EINVAL,
                            "barrier: the connection must be open and outside a transaction");
    }
    /* READ COMMITTED explicitly: the ON CONFLICT wait-then-skip behaviour above is what makes
     * concurrent duplicates safe; under REPEATABLE READ the waiting INSERT would instead fail
     * with a serialization error (40001) when the first transaction commits. */
    if ((rc = exec_cmd(c, "BEGIN ISOLATION LEVEL READ COMMITTED", "begin", err)) != 0) {
        return rc;
    }
    int ins_action = 0, ins_comp = 0;
    if (op == SAGA_OP_ACTION) {
        if ((rc = insert_row(c, gid, branch, "action", "action", &ins_action, err)) != 0) {
            goto fail;
        }
        if (!ins_action) {
            /* Already there: our own earlier action (duplicate) or a compensation that came
             * first (hanging). The row is committed (ON CONFLICT waited for its inserter), so
             * this new statement's snapshot sees it. */
            const char *v[2] = {gid, branch};
            PGresult *r = PQexecParams(c, REASON_SQL, 2, NULL, v, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
                rc = pg_fail(err, c, r, "reason lookup");
                goto fail;
            }
            *outcome = strcmp(PQgetvalue(r, 0, 0), "compensate") == 0 ? SAGA_BARRIER_HANGING
                                                                      : SAGA_BARRIER_DUPLICATE;
            PQclear(r);
            rollback(c); /* nothing was written */
            return 0;
        }
    } else {
        /* First burn the action slot (a later action is then hanging), then take the
         * compensation slot (a second compensation is then a duplicate). */
        if ((rc = insert_row(c, gid, branch, "action", "compensate", &ins_action, err)) != 0 ||
            (rc = insert_row(c, gid, branch, "compensate", "compensate", &ins_comp, err)) != 0) {
            goto fail;
        }
        if (!ins_comp) {
            *outcome = SAGA_BARRIER_DUPLICATE;
            rollback(c);
            return 0;
        }
        if (ins_action) {
            /* The action never ran: record the null compensation (both rows) and skip. */
            if ((rc = exec_cmd(c, "COMMIT", "commit", err)) != 0) {
                return rc;
            }
            *outcome = SAGA_BARRIER_NULL_COMPENSATION;
            return 0;
        }
    }
    rc = fn(c, arg, err);
    if (rc != 0) {
        if (rc > 0) {
            rc = dbao_err_set(err, DBAO_EINVAL, "barrier: business function returned %d > 0", rc);
        }
        rollback(c);
        return rc;
    }
    if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
        /* The function ended or broke the transaction (its own COMMIT/ROLLBACK, or a failed
         * statement it ignored): the barrier cannot vouch for atomicity any more. */
        rc = dbao_err_set(err, DBAO_EIO,
                          "barrier: the business function left the transaction "
                          "aborted or ended");
        goto fail;
    }
    if ((rc = exec_cmd(c, "COMMIT", "commit", err)) != 0) {
        return rc;
    }
    *outcome = SAGA_BARRIER_RAN;
    return 0;

fail:
    rollback(c);
    return rc;
}

int
saga_barrier_cleanup(void *pgconn, int64_t retention_s, uint64_t *deleted, dbao_err *err)
{
    PGconn *c = pgconn;
    if (deleted != NULL) {
        *deleted = 0;
    }
    if (c == NULL || retention_s <= 0 || retention_s > (int64_t) 100 * 365 * 86400) {
        return dbao_err_set(err, DBAO_EINVAL,
                            "barrier cleanup: conn and retention_s "
                            "(1 s .. 100 years) are required");
    }
    char secs[32], lim[32];
    snprintf(secs, sizeof secs, "%lld", (long long) retention_s);
    snprintf(lim, sizeof lim, "%d", BARRIER_DELETE_BATCH);
    const char *v[2] = {secs, lim};
    /* Autocommit per batch: each DELETE is its own short transaction. The cutoff is computed
     * by the server's clock (the rows' created_at came from it too). */
    static const char SQL[] =
        "DELETE FROM dengbao_saga_barrier WHERE ctid = ANY (ARRAY(SELECT ctid FROM "
        "dengbao_saga_barrier WHERE created_at < now() - make_interval(secs => $1::bigint) "
        "LIMIT $2::int))";
    for (;;) {
        PGresult *r = PQexecParams(c, SQL, 2, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            return pg_fail(err, c, r, "cleanup delete");
        }
        long n = atol(PQcmdTuples(r));
        PQclear(r);
        if (deleted != NULL) {
            *deleted += (uint64_t) n;
        }
        if (n < BARRIER_DELETE_BATCH) {
            return 0;
        }
    }
}
