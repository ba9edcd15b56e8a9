/* store_pg.c: the saga store's shared backend, PostgreSQL (saga.h: a libpq connection string,
 * "postgresql://..." or "host=... dbname=...").
 *
 * What: the same durable state as store_sqlite.c, in a database that several coordinators
 * share. A coordinator works on a transaction only while it holds its lease (owner,
 * lease_until_ms); work is handed out by saga_store_claim, and a coordinator that dies stops
 * renewing, so its transactions become claimable by the others when their leases expire.
 *
 * Which library does what: libpq does the protocol, PostgreSQL the storage, the row locks and
 * durability. Hand-written here: the schema, the prepared statements and the lease protocol
 * (the contract of saga.h; there is no C library for it).
 *
 * Schema (created if missing, docs/saga-store.md has the DDL): dengbao_saga_schema(version),
 * dengbao_sagas(gid PK, state, spec, created_ms, updated_ms, deadline_ms, version, owner,
 * lease_until_ms, reason), dengbao_saga_steps(gid, idx, state, attempts, next_at_ms,
 * last_error, PK (gid, idx)), a partial index on updated_ms of the unfinished ones (claim) and
 * one on (state, updated_ms) (list). Creation runs in one transaction holding
 * pg_advisory_xact_lock(0x44425347): two coordinators starting together do not race on the
 * DDL. A version above SAGA_SCHEMA_VERSION is refused (DBAO_ENOTSUP).
 *
 * Time: every time this backend writes (created_ms, updated_ms, lease_until_ms) and every lease
 * comparison uses the DATABASE's clock, statement_timestamp() in ms: all coordinators then compare
 * leases against one clock, so a coordinator whose clock runs ahead cannot steal a lease that
 * is still valid, and one that runs behind cannot keep a lease that has expired. (deadline_ms
 * is the coordinator's own value and is only stored.)
 *
 * Lease protocol:
 *   claim:  WITH c AS (SELECT gid ... WHERE state IN (0,1,2) AND (owner IS NULL OR
 *           lease_until_ms < now) ORDER BY updated_ms LIMIT n FOR UPDATE SKIP LOCKED)
 *           UPDATE ... SET owner = me, lease_until_ms = now + lease FROM c ... RETURNING ...
 *           One statement: the row lock taken by FOR UPDATE is held until the UPDATE commits,
 *           and rows locked by a concurrent claimer are skipped (no waiting, no double claim);
 *           a row committed by another claimer in between is re-checked against the WHERE
 *           clause under its newest version (READ COMMITTED's re-check of locked rows).
 *   write:  every update is UPDATE ... WHERE gid = $1 AND owner = me AND lease_until_ms >= now,
 *           renewing the lease in the same statement; 0 rows means the lease is gone:
 *           SAGA_ELOST, and nothing was written. The steps are updated in the same statement
 *           (a data-modifying CTE joined to the saga row the first part returned), so a
 *           coordinator that lost its lease cannot change a step either.
 *   release / admin_set: owner = NULL, lease_until_ms = 0 (claimable at once).
 * Because a lost lease is "0 rows" and not an SQL error, it never aborts the surrounding
 * transaction: a batch needs no savepoint per call for it (one round trip saved per call). Any
 * real SQL error inside a batch aborts the batch: every later call of the batch fails with
 * DBAO_EIO and the commit rolls back and returns DBAO_EIO (none of the batch happened).
 *
 * Round trips: create is one statement (INSERT of the saga and its steps in data-modifying
 * CTEs; a second one only when the gid exists), update one statement (the steps travel as
 * arrays unnested in SQL), claim two (claim, then the steps), get/list four (a REPEATABLE READ
 * read-only transaction so that a record and its steps come from one snapshot). With deferred
 * writes (store_internal.h; the coordinator turns them on) a batch's updates and releases go
 * out in libpq pipeline mode and its creates as one pipelined group: a turn of the coordinator
 * costs a handful of round trips instead of one per statement; a lost lease is then reported
 * after the commit (saga__store_lost_gid) instead of by the call.
 *
 * Lost connection (PostgreSQL restart): the next call on a broken connection reconnects
 * (PQreset, statements prepared again). A call whose connection breaks while it runs is retried
 * once after a reconnect when that is safe: reads; create (idempotent on gid and spec, and a
 * retry that finds its own row - owner = me, version 1 - reports it as new); update and release
 * (absolute assignments under the lease check: running them twice writes the same thing).
 * claim, admin_set and purge are not retried (a claim's rows might be leased to us unseen; an
 * admin change would then be refused as final): DBAO_EIO, the caller retries later. Inside a
 * batch nothing is retried: the batch is lost (DBAO_EIO now and at commit). A COMMIT whose
 * answer is lost is the one case whose outcome is unknown to the client (as for any database).
 *
 * Threading: a handle (one PGconn) belongs to one thread at a time (saga.h).
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

#define PG_CONNLOST  (-1999)      /* internal: the connection broke during the call */
#define ADVISORY_KEY "1145197383" /* 0x44425347, "DBSG" */
/* The database's clock in ms, one value for the whole statement (statement_timestamp(): the
 * arrival of the statement, also inside a batch's transaction, unlike now()). */
#define NOWMS "(extract(epoch from statement_timestamp()) * 1000)::bigint"

enum {
    P_CREATE,
    P_SEL_SPEC,
    P_UPDATE,
    P_EXISTS,
    P_CLAIM,
    P_STEPS,
    P_GET,
    P_LIST,
    P_RELEASE,
    P_ADMIN,
    P_PURGE,
    P_COUNT
};

static const char *const PNAME[P_COUNT] = {
    "dbs_create", "dbs_sel_spec", "dbs_update",  "dbs_exists", "dbs_claim", "dbs_steps",
    "dbs_get",    "dbs_list",     "dbs_release", "dbs_admin",  "dbs_purge",
};

#define SAGA_COLS                                                                                  \
    "s.gid, s.state, s.created_ms, s.updated_ms, s.deadline_ms, s.version, s.spec, s.reason"

static const char *const PSQL[P_COUNT] = {
    /* $1 gid, $2 spec, $3 deadline, $4 owner, $5 lease_ms, $6 num_steps */
    [P_CREATE] =
        "WITH ins AS (INSERT INTO dengbao_sagas (gid, state, spec, created_ms, updated_ms, "
        "deadline_ms, version, owner, lease_until_ms, reason) VALUES ($1, 0, $2, " NOWMS ", " NOWMS
        ", $3::bigint, 1, $4, " NOWMS " + $5::bigint, NULL) ON CONFLICT (gid) DO "
        "NOTHING RETURNING gid), st AS (INSERT INTO dengbao_saga_steps (gid, idx, state, "
        "attempts, next_at_ms, last_error) SELECT ins.gid, i, 0, 0, 0, NULL FROM ins, "
        "generate_series(0, $6::int - 1) AS i RETURNING 1) SELECT (SELECT count(*) FROM ins)",
    [P_SEL_SPEC] = "SELECT spec, owner, version FROM dengbao_sagas WHERE gid = $1",
    /* $1 gid, $2 owner, $3 state, $4 reason, $5 lease_ms, $6..$10 step arrays */
    [P_UPDATE] =
        "WITH s AS (UPDATE dengbao_sagas SET state = $3::smallint, reason = $4, updated_ms = "
        "" NOWMS ", version = version + 1, lease_until_ms = " NOWMS " + $5::bigint WHERE gid = "
        "$1 AND owner = $2 AND lease_until_ms >= " NOWMS " RETURNING gid), u AS (SELECT * "
        "FROM unnest($6::int[], $7::smallint[], $8::bigint[], $9::bigint[], $10::text[]) AS "
        "u(idx, state, attempts, next_at_ms, last_error)), st AS (UPDATE dengbao_saga_steps t "
        "SET state = u.state, attempts = u.attempts, next_at_ms = u.next_at_ms, last_error = "
        "u.last_error FROM s, u WHERE t.gid = s.gid AND t.idx = u.idx RETURNING 1) SELECT "
        "(SELECT count(*) FROM s)",
    [P_EXISTS] = "SELECT state FROM dengbao_sagas WHERE gid = $1",
    /* $1 owner, $2 max, $3 lease_ms */
    [P_CLAIM] = "WITH c AS (SELECT gid FROM dengbao_sagas WHERE state IN (0, 1, 2) AND (owner "
                "IS NULL OR lease_until_ms < " NOWMS ") ORDER BY updated_ms LIMIT $2::int FOR "
                "UPDATE SKIP LOCKED) UPDATE dengbao_sagas s SET owner = $1, lease_until_ms = "
                "" NOWMS " + $3::bigint, version = s.version + 1 FROM c WHERE s.gid = c.gid "
                "RETURNING " SAGA_COLS,
    [P_STEPS] = "SELECT gid, idx, state, attempts, next_at_ms, last_error FROM "
                "dengbao_saga_steps WHERE gid = ANY ($1::text[]) ORDER BY gid COLLATE \"C\", "
                "idx",
    [P_GET] = "SELECT " SAGA_COLS " FROM dengbao_sagas s WHERE s.gid = $1",
    /* $1 state (-1: unfinished and parked), $2 older_than (0: any), $3 max */
    [P_LIST] = "SELECT " SAGA_COLS " FROM dengbao_sagas s WHERE (($1::int = -1 AND s.state IN "
               "(0, 1, 2, 5)) OR s.state = $1::int) AND ($2::bigint = 0 OR s.updated_ms < "
               "$2::bigint) ORDER BY s.updated_ms DESC LIMIT $3::int",
    [P_RELEASE] = "UPDATE dengbao_sagas SET owner = NULL, lease_until_ms = 0, version = version "
                  "+ 1 WHERE gid = $1 AND owner = $2",
    /* $1 gid, $2 state, $3 reason */
    [P_ADMIN] = "WITH s AS (UPDATE dengbao_sagas SET state = $2::smallint, reason = $3, owner "
                "= NULL, lease_until_ms = 0, version = version + 1, updated_ms = " NOWMS
                " WHERE gid = $1 AND state NOT IN (3, 4) RETURNING gid), st AS (UPDATE "
                "dengbao_saga_steps t SET attempts = 0, next_at_ms = 0 FROM s WHERE t.gid = "
                "s.gid RETURNING 1) SELECT (SELECT count(*) FROM s)",
    [P_PURGE] = "WITH d AS (DELETE FROM dengbao_sagas WHERE state IN (3, 4) AND updated_ms < "
                "$1::bigint RETURNING gid), ds AS (DELETE FROM dengbao_saga_steps t USING d "
                "WHERE t.gid = d.gid RETURNING 1) SELECT (SELECT count(*) FROM d)",
};

static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS dengbao_sagas (\n"
    "  gid text PRIMARY KEY, state smallint NOT NULL, spec text NOT NULL,\n"
    "  created_ms bigint NOT NULL, updated_ms bigint NOT NULL, deadline_ms bigint NOT NULL,\n"
    "  version bigint NOT NULL, owner text, lease_until_ms bigint NOT NULL DEFAULT 0,\n"
    "  reason text);\n"
    "CREATE TABLE IF NOT EXISTS dengbao_saga_steps (\n"
    "  gid text NOT NULL, idx integer NOT NULL, state smallint NOT NULL,\n"
    "  attempts bigint NOT NULL, next_at_ms bigint NOT NULL, last_error text,\n"
    "  PRIMARY KEY (gid, idx));\n"
    "CREATE INDEX IF NOT EXISTS dengbao_sagas_claim ON dengbao_sagas (updated_ms)\n"
    "  WHERE state IN (0, 1, 2);\n"
    "CREATE INDEX IF NOT EXISTS dengbao_sagas_state_updated ON dengbao_sagas (state, "
    "updated_ms);\n";

/* A deferred write (store_internal.h, saga__store_defer_writes): sent in pipeline mode inside
 * a batch, its answer read later. */
enum { PEND_UPDATE = 0, PEND_RELEASE = 1 };
#define PIPE_MAX 512 /* answers read at the latest every PIPE_MAX deferred writes */
typedef struct pg_pend {
    int kind;
    char gid[SAGA_GID_MAX + 1];
} pg_pend;

typedef struct pg_store {
    saga_store base; /* first: the dispatcher's pointer is this one */
    PGconn *c;
    bool batch_failed; /* a call inside the open batch failed: the batch is lost */
    bool piped;        /* the connection is in pipeline mode with npend unread answers */
    pg_pend *pend;     /* the deferred writes whose answers are not read yet */
    size_t npend, cap_pend;
    char (*lost)[SAGA_GID_MAX + 1]; /* deferred writes of this batch that found no lease */
    size_t nlost, cap_lost;
} pg_store;

static bool
conn_lost(pg_store *st, PGresult *r)
{
    if (PQstatus(st->c) != CONNECTION_OK) {
        return true;
    }
    const char *ss = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    /* 08xxx connection exceptions, 57P01..57P03 admin/crash shutdown, cannot connect now. */
    return ss == NULL || strncmp(ss, "08", 2) == 0 || strncmp(ss, "57P0", 4) == 0;
}

/* pg_fail records a failure: the SQLSTATE and the server's primary message (which names the
 * statement's problem, never a value: values travel as parameters). */
static int
pg_fail(pg_store *st, PGresult *r, dbao_err *err, const char *what)
{
    const char *ss = r != NULL ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r != NULL ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (msg == NULL) {
        msg = PQerrorMessage(st->c);
    }
    bool lost = conn_lost(st, r);
    dbao_err_set(err, DBAO_EIO, "saga pg: %s failed: %s%s%.160s", what, ss != NULL ? ss : "",
                 ss != NULL ? " " : "", msg != NULL ? msg : "unknown error");
    if (st->base.in_batch) {
        st->batch_failed = true;
    }
    if (r != NULL) {
        PQclear(r);
    }
    return lost ? PG_CONNLOST : DBAO_EIO;
}

/* ---- deferred writes (libpq pipeline mode) ---------------------------------------------------
 * Why: on PostgreSQL every statement is a round trip, and a turn of the coordinator writes one
 * statement per changed transaction; in pipeline mode the statements of a turn go out without
 * waiting and their answers come back together (one round trip for the lot). Order and
 * atomicity are the server's: the statements run in the batch's transaction in the order sent,
 * an error aborts that transaction (every later statement answers PGRES_PIPELINE_ABORTED) and
 * the commit then rolls back. The Sync that ends a pipeline does not commit (an explicit BEGIN
 * is open). A lease check that matches 0 rows is not an error: the gid goes to the lost list. */

static int64_t val_i64(PGresult *r, int row, int col);
static int reconnect(pg_store *st, dbao_err *err);

static int
lost_add(pg_store *st, const char *gid)
{
    if (st->nlost == st->cap_lost) {
        size_t cap = st->cap_lost ? st->cap_lost * 2 : 16;
        void *p = realloc(st->lost, cap * sizeof *st->lost);
        if (p == NULL) {
            return DBAO_ENOMEM;
        }
        st->lost = p;
        st->cap_lost = cap;
    }
    snprintf(st->lost[st->nlost++], sizeof st->lost[0], "%s", gid);
    return 0;
}

/* pipe_end reads every deferred answer, ends the pipeline and leaves pipeline mode. Any failure
 * fails the open batch (DBAO_EIO, message in err). */
static int
pipe_end(pg_store *st, dbao_err *err)
{
    if (!st->piped) {
        return 0;
    }
    int rc = 0;
    const char *why = NULL;
    if (PQpipelineSync(st->c) != 1) {
        why = "pipeline sync";
    }
    for (size_t i = 0; i < st->npend && why == NULL; i++) {
        PGresult *r = PQgetResult(st->c);
        if (r == NULL) {
            why = "deferred write (no answer)";
            break;
        }
        ExecStatusType es = PQresultStatus(r);
        bool ok;
        if (st->pend[i].kind == PEND_UPDATE && es == PGRES_TUPLES_OK) {
            ok = PQntuples(r) == 1 && val_i64(r, 0, 0) == 1;
        } else if (st->pend[i].kind == PEND_RELEASE && es == PGRES_COMMAND_OK) {
            ok = atoi(PQcmdTuples(r)) == 1;
        } else {
            const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            dbao_err_set(err, DBAO_EIO, "saga pg: deferred %s failed: %.160s",
                         st->pend[i].kind == PEND_UPDATE ? "update" : "release",
                         m != NULL ? m : PQresStatus(es));
            rc = DBAO_EIO;
            why = "";
            PQclear(r);
            /* read the rest of this answer and the others (aborted) below */
            while ((r = PQgetResult(st->c)) != NULL) {
                PQclear(r);
            }
            for (i++; i < st->npend; i++) {
                while ((r = PQgetResult(st->c)) != NULL) {
                    PQclear(r);
                }
            }
            break;
        }
        PQclear(r);
        if (!ok && lost_add(st, st->pend[i].gid) != 0) {
            why = "lost list (out of memory)";
        }
        while ((r = PQgetResult(st->c)) != NULL) { /* the NULL that ends each answer */
            PQclear(r);
        }
    }
    if (PQstatus(st->c) == CONNECTION_OK) {
        PGresult *r = PQgetResult(st->c); /* PGRES_PIPELINE_SYNC */
        if (r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            if (why == NULL) {
                why = "pipeline sync (unexpected answer)";
            }
        }
        PQclear(r);
        if (PQexitPipelineMode(st->c) != 1 && why == NULL) {
            why = "pipeline exit";
        }
    } else if (why == NULL) {
        why = "deferred write (connection lost)";
    }
    st->piped = false;
    st->npend = 0;
    if (PQpipelineStatus(st->c) != PQ_PIPELINE_OFF) {
        /* answers left unread after a failure: a fresh session (the server rolls the batch
         * back when the old one ends; the batch is failed below anyway) */
        dbao_err e2;
        reconnect(st, &e2);
        if (why == NULL) {
            why = "pipeline exit";
        }
    }
    if (why != NULL) {
        if (rc == 0) {
            rc = dbao_err_set(err, DBAO_EIO, "saga pg: %s failed: %.160s", why,
                              PQerrorMessage(st->c));
        }
        st->batch_failed = true;
    }
    return rc;
}

/* pipe_send sends one deferred write (the batch is open and not failed: ensure()). */
static int
pipe_send(pg_store *st, int q, int n, const char *const *v, int kind, const char *gid,
          dbao_err *err)
{
    if (st->npend == PIPE_MAX) {
        int rc = pipe_end(st, err);
        if (rc != 0) {
            return rc;
        }
    }
    if (st->npend == st->cap_pend) {
        size_t cap = st->cap_pend ? st->cap_pend * 2 : 64;
        void *p = realloc(st->pend, cap * sizeof *st->pend);
        if (p == NULL) {
            st->batch_failed = true;
            return dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
        }
        st->pend = p;
        st->cap_pend = cap;
    }
    if (!st->piped) {
        if (PQenterPipelineMode(st->c) != 1) {
            st->batch_failed = true;
            return dbao_err_set(err, DBAO_EIO, "saga pg: pipeline mode failed: %.160s",
                                PQerrorMessage(st->c));
        }
        st->piped = true;
    }
    if (PQsendQueryPrepared(st->c, PNAME[q], n, v, NULL, NULL, 0) != 1) {
        st->batch_failed = true;
        return dbao_err_set(err, DBAO_EIO, "saga pg: deferred write failed: %.160s",
                            PQerrorMessage(st->c));
    }
    st->pend[st->npend].kind = kind;
    snprintf(st->pend[st->npend].gid, sizeof st->pend[0].gid, "%s", gid);
    st->npend++;
    /* libpq holds pipelined statements until its buffer is full; pushing them out every few
     * lets the server run them while the engine prepares the next ones */
    if ((st->npend & 7) == 0 && PQflush(st->c) < 0) {
        st->batch_failed = true;
        return dbao_err_set(err, DBAO_EIO, "saga pg: deferred write failed: %.160s",
                            PQerrorMessage(st->c));
    }
    return 0;
}

static const char *
pg_lost_gid(saga_store *base, size_t i)
{
    pg_store *st = (pg_store *) base;
    return i < st->nlost ? st->lost[i] : NULL;
}

static int
pexec(pg_store *st, int q, int n, const char *const *v, PGresult **out, dbao_err *err,
      const char *what)
{
    if (st->piped && pipe_end(st, err) != 0) {
        return DBAO_EIO;
    }
    PGresult *r = PQexecPrepared(st->c, PNAME[q], n, v, NULL, NULL, 0);
    ExecStatusType es = PQresultStatus(r);
    if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
        *out = r;
        return 0;
    }
    return pg_fail(st, r, err, what);
}

static int
pcmd(pg_store *st, const char *sql, dbao_err *err, const char *what)
{
    if (st->piped && pipe_end(st, err) != 0) {
        return DBAO_EIO;
    }
    PGresult *r = PQexec(st->c, sql);
    ExecStatusType es = PQresultStatus(r);
    if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
        PQclear(r);
        return 0;
    }
    return pg_fail(st, r, err, what);
}

static int
prepare_all(pg_store *st, dbao_err *err)
{
    for (int i = 0; i < P_COUNT; i++) {
        PGresult *r = PQprepare(st->c, PNAME[i], PSQL[i], 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            return pg_fail(st, r, err, "prepare");
        }
        PQclear(r);
    }
    return 0;
}

static int
reconnect(pg_store *st, dbao_err *err)
{
    PQreset(st->c);
    if (PQstatus(st->c) != CONNECTION_OK) {
        return dbao_err_set(err, DBAO_EIO, "saga pg: reconnect failed: %.160s",
                            PQerrorMessage(st->c));
    }
    int rc = prepare_all(st, err);
    return rc == PG_CONNLOST ? DBAO_EIO : rc;
}

/* ensure: before a call. In a lost batch every call fails; outside a batch a broken
 * connection is re-established first. */
static int
ensure(pg_store *st, dbao_err *err)
{
    if (st->base.in_batch) {
        if (st->batch_failed || PQstatus(st->c) != CONNECTION_OK) {
            st->batch_failed = true;
            return dbao_err_set(err, DBAO_EIO, "saga pg: the open batch failed earlier");
        }
        return 0;
    }
    return PQstatus(st->c) == CONNECTION_OK ? 0 : reconnect(st, err);
}

/* CALL runs `call` (an expression returning 0, a DBAO_E or SAGA_E code or PG_CONNLOST) once,
 * and once more after a reconnect when the connection broke, `safe` is true and no batch is
 * open. PG_CONNLOST never leaves this file. */
#define CALL(st, safe, call, err)                                                                  \
    do {                                                                                           \
        rc = ensure((st), (err));                                                                  \
        if (rc == 0) {                                                                             \
            rc = (call);                                                                           \
            if (rc == PG_CONNLOST && (safe) && !(st)->base.in_batch &&                             \
                reconnect((st), (err)) == 0) {                                                     \
                retried = true;                                                                    \
                rc = (call);                                                                       \
            }                                                                                      \
            if (rc == PG_CONNLOST) {                                                               \
                rc = DBAO_EIO;                                                                     \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static char *
val_dup(PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) {
        return NULL;
    }
    return saga__strndup(PQgetvalue(r, row, col), (size_t) PQgetlength(r, row, col));
}

static int64_t
val_i64(PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* ---- array literals ------------------------------------------------------------------------- */

static int
arr_text(dbao_buf *b, const char *s)
{
    if (s == NULL) {
        return dbao_buf_put(b, "NULL", 4);
    }
    int rc = dbao_buf_putc(b, '"');
    for (const char *p = s; *p && rc == 0; p++) {
        if (*p == '"' || *p == '\\') {
            rc = dbao_buf_putc(b, '\\');
        }
        if (rc == 0) {
            rc = dbao_buf_putc(b, *p);
        }
    }
    return rc == 0 ? dbao_buf_putc(b, '"') : rc;
}

/* ---- loading records ------------------------------------------------------------------------ */

static int
cmp_tx(const void *a, const void *b)
{
    return strcmp(((const saga_tx *) a)->gid, ((const saga_tx *) b)->gid);
}

/* rows_load fills out[0..n) from SAGA_COLS rows of r (cleared here) and then their steps
 * (one more query); out is sorted by gid when `sort`. On failure everything is freed. */
static int
rows_load(pg_store *st, PGresult *r, saga_tx *out, size_t *num, bool sort, dbao_err *err)
{
    int n = PQntuples(r), rc = 0;
    *num = 0;
    for (int i = 0; i < n; i++) {
        saga_tx *t = &out[i];
        memset(t, 0, sizeof *t);
        snprintf(t->gid, sizeof t->gid, "%s", PQgetvalue(r, i, 0));
        t->state = (uint8_t) val_i64(r, i, 1);
        t->created_ms = val_i64(r, i, 2);
        t->updated_ms = val_i64(r, i, 3);
        t->deadline_ms = val_i64(r, i, 4);
        t->version = (uint64_t) val_i64(r, i, 5);
        t->spec = val_dup(r, i, 6);
        t->spec_len = (size_t) PQgetlength(r, i, 6);
        t->reason = val_dup(r, i, 7);
        *num = (size_t) i + 1;
        if (t->spec == NULL || (!PQgetisnull(r, i, 7) && t->reason == NULL)) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
            break;
        }
    }
    PQclear(r);
    if (rc != 0 || n == 0) {
        goto out;
    }
    if (sort) {
        qsort(out, *num, sizeof *out, cmp_tx);
    }
    dbao_buf arr = {0};
    rc = dbao_buf_putc(&arr, '{');
    for (size_t i = 0; i < *num && rc == 0; i++) {
        if (i > 0) {
            rc = dbao_buf_putc(&arr, ',');
        }
        if (rc == 0) {
            rc = arr_text(&arr, out[i].gid);
        }
    }
    if (rc == 0) {
        rc = dbao_buf_putc(&arr, '}');
    }
    if (rc != 0) {
        dbao_buf_free(&arr);
        rc = dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
        goto out;
    }
    const char *v[1] = {arr.data};
    PGresult *sr = NULL;
    rc = pexec(st, P_STEPS, 1, v, &sr, err, "load steps");
    dbao_buf_free(&arr);
    if (rc != 0) {
        goto out;
    }
    /* Count the steps of each record first (rows are ordered like out when sorted, else we
     * search), then fill. */
    int m = PQntuples(sr);
    size_t k = 0;
    for (int j = 0; j < m && rc == 0; j++) {
        const char *g = PQgetvalue(sr, j, 0);
        if (sort) {
            while (k < *num && strcmp(out[k].gid, g) < 0) {
                k++;
            }
        } else {
            for (k = 0; k < *num && strcmp(out[k].gid, g) != 0; k++) {
            }
        }
        if (k >= *num || strcmp(out[k].gid, g) != 0) {
            continue;
        }
        saga_tx *t = &out[k];
        size_t ns0 = t->num_steps;
        if (ns0 == 0 || (ns0 >= 8 && (ns0 & (ns0 - 1)) == 0)) { /* capacity 8, 16, 32, ... */
            size_t nc = ns0 == 0 ? 8 : ns0 * 2;
            saga_step_rec *ns = dbao_realloc(t->steps, nc * sizeof *ns);
            if (ns == NULL) {
                rc = dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
                break;
            }
            t->steps = ns;
        }
        saga_step_rec *p = &t->steps[t->num_steps];
        memset(p, 0, sizeof *p);
        p->idx = (uint32_t) val_i64(sr, j, 1);
        p->state = (uint8_t) val_i64(sr, j, 2);
        p->attempts = (uint32_t) val_i64(sr, j, 3);
        p->next_at_ms = val_i64(sr, j, 4);
        p->last_error = val_dup(sr, j, 5);
        t->num_steps++;
        if (!PQgetisnull(sr, j, 5) && p->last_error == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
        }
    }
    PQclear(sr);
out:
    if (rc != 0) {
        for (size_t i = 0; i < *num; i++) {
            saga_tx_free(&out[i]);
        }
        *num = 0;
    }
    return rc;
}

/* ---- operations ----------------------------------------------------------------------------- */

static int
missing_or_lost(pg_store *st, const char *gid, dbao_err *err)
{
    const char *v[1] = {gid};
    PGresult *r = NULL;
    int rc = pexec(st, P_EXISTS, 1, v, &r, err, "exists");
    if (rc != 0) {
        return rc;
    }
    int n = PQntuples(r);
    PQclear(r);
    if (n == 0) {
        return dbao_err_set(err, SAGA_ENOENT, "saga pg: no transaction '%s'", gid);
    }
    return dbao_err_set(err, SAGA_ELOST, "saga pg: lease on '%s' lost", gid);
}

static int create_existing(pg_store *st, const char *gid, const char *spec, size_t spec_len,
                           bool retried, bool *existed, dbao_err *err);

static int
create_once(pg_store *st, const char *gid, const char *spec, size_t spec_len, size_t num_steps,
            int64_t deadline_ms, bool retried, bool *existed, dbao_err *err)
{
    char dl[24], lease[16], ns[16];
    snprintf(dl, sizeof dl, "%lld", (long long) deadline_ms);
    snprintf(lease, sizeof lease, "%u", st->base.lease_ms);
    snprintf(ns, sizeof ns, "%zu", num_steps);
    (void) spec_len; /* NUL-free, checked by the dispatcher; libpq sends text to its NUL */
    char *sp = saga__strndup(spec, spec_len);
    if (sp == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
    }
    const char *v[6] = {gid, sp, dl, st->base.owner, lease, ns};
    PGresult *r = NULL;
    int rc = pexec(st, P_CREATE, 6, v, &r, err, "create");
    dbao_free(sp);
    if (rc != 0) {
        return rc;
    }
    bool inserted = PQntuples(r) == 1 && val_i64(r, 0, 0) == 1;
    PQclear(r);
    if (inserted) {
        return 0;
    }
    return create_existing(st, gid, spec, spec_len, retried, existed, err);
}

/* create_existing: the gid was not inserted: the same spec is the same transaction (existed),
 * another one SAGA_EEXIST. */
static int
create_existing(pg_store *st, const char *gid, const char *spec, size_t spec_len, bool retried,
                bool *existed, dbao_err *err)
{
    const char *v[1] = {gid};
    PGresult *r = NULL;
    int rc = pexec(st, P_SEL_SPEC, 1, v, &r, err, "read existing spec");
    if (rc != 0) {
        return rc;
    }
    if (PQntuples(r) != 1) {
        PQclear(r);
        return dbao_err_set(err, DBAO_EIO, "saga pg: '%s' neither inserted nor found", gid);
    }
    if ((size_t) PQgetlength(r, 0, 0) != spec_len ||
        memcmp(PQgetvalue(r, 0, 0), spec, spec_len) != 0) {
        PQclear(r);
        return dbao_err_set(err, SAGA_EEXIST, "saga pg: transaction '%s' exists with another spec",
                            gid);
    }
    /* A retry after a lost connection that finds the row it wrote itself: it is new. */
    bool mine = retried && !PQgetisnull(r, 0, 1) &&
                strcmp(PQgetvalue(r, 0, 1), st->base.owner) == 0 && val_i64(r, 0, 2) == 1;
    PQclear(r);
    *existed = !mine;
    return 0;
}

static int
pg_create(saga_store *base, const char *gid, const char *spec, size_t spec_len, size_t num_steps,
          int64_t deadline_ms, bool *existed, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    int rc;
    bool retried = false;
    CALL(st, true,
         create_once(st, gid, spec, spec_len, num_steps, deadline_ms, retried, existed, err), err);
    return rc;
}

/* pg_create_many (deferred writes, in a batch): the INSERTs of every item go out pipelined and
 * their answers are read together; an item not inserted is then checked alone
 * (create_existing). A failure fails the batch: that item and every later one get DBAO_EIO. */
static void
pg_create_many(saga_store *base, saga_create_item *items, size_t n)
{
    pg_store *st = (pg_store *) base;
    char lease[16];
    snprintf(lease, sizeof lease, "%u", st->base.lease_ms);
    dbao_err e;
    int rc = ensure(st, &e);
    if (rc == 0 && st->piped) {
        rc = pipe_end(st, &e);
    }
    if (rc == 0 && PQenterPipelineMode(st->c) != 1) {
        rc = dbao_err_set(&e, DBAO_EIO, "saga pg: pipeline mode failed: %.160s",
                          PQerrorMessage(st->c));
    }
    size_t sent = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        saga_create_item *it = &items[i];
        if (it->rc != 0) {
            continue;
        }
        char dl[24], ns[24];
        snprintf(dl, sizeof dl, "%lld", (long long) it->deadline_ms);
        snprintf(ns, sizeof ns, "%zu", it->num_steps);
        char *sp = saga__strndup(it->spec, it->spec_len);
        if (sp == NULL) {
            rc = dbao_err_set(&e, DBAO_ENOMEM, "saga pg: out of memory");
            break;
        }
        const char *v[6] = {it->gid, sp, dl, st->base.owner, lease, ns};
        /* libpq copies the parameters into its output buffer here */
        if (PQsendQueryPrepared(st->c, PNAME[P_CREATE], 6, v, NULL, NULL, 0) != 1) {
            rc =
                dbao_err_set(&e, DBAO_EIO, "saga pg: create failed: %.160s", PQerrorMessage(st->c));
        } else {
            sent++;
            if ((sent & 7) == 0 && PQflush(st->c) < 0) {
                rc = dbao_err_set(&e, DBAO_EIO, "saga pg: create failed: %.160s",
                                  PQerrorMessage(st->c));
            }
        }
        dbao_free(sp);
    }
    if (sent > 0 || PQpipelineStatus(st->c) != PQ_PIPELINE_OFF) {
        if (PQpipelineSync(st->c) != 1 && rc == 0) {
            rc = dbao_err_set(&e, DBAO_EIO, "saga pg: pipeline sync failed: %.160s",
                              PQerrorMessage(st->c));
        }
        /* the answers, in the order sent; item k waits for a second look when not inserted */
        size_t got = 0;
        for (size_t i = 0; i < n && got < sent; i++) {
            saga_create_item *it = &items[i];
            if (it->rc != 0) {
                continue;
            }
            got++;
            PGresult *r = PQgetResult(st->c);
            if (r == NULL) {
                if (rc == 0) {
                    rc = dbao_err_set(&e, DBAO_EIO, "saga pg: create failed: %.160s",
                                      PQerrorMessage(st->c));
                }
                break;
            }
            if (rc == 0) {
                if (PQresultStatus(r) != PGRES_TUPLES_OK) {
                    const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
                    rc = dbao_err_set(&e, DBAO_EIO, "saga pg: create failed: %.160s",
                                      m != NULL ? m : PQresStatus(PQresultStatus(r)));
                } else if (!(PQntuples(r) == 1 && val_i64(r, 0, 0) == 1)) {
                    it->existed = true; /* marker: check below */
                }
            }
            PQclear(r);
            while ((r = PQgetResult(st->c)) != NULL) {
                PQclear(r);
            }
        }
        if (PQstatus(st->c) == CONNECTION_OK) {
            PGresult *r = PQgetResult(st->c);
            if ((r == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC) && rc == 0) {
                rc = dbao_err_set(&e, DBAO_EIO, "saga pg: pipeline sync: unexpected answer");
            }
            PQclear(r);
        }
        if (PQexitPipelineMode(st->c) != 1) {
            if (rc == 0) {
                rc = dbao_err_set(&e, DBAO_EIO, "saga pg: pipeline exit failed: %.160s",
                                  PQerrorMessage(st->c));
            }
            dbao_err e2;
            reconnect(st, &e2); /* unread answers: a fresh session (the batch is lost) */
        }
    }
    if (rc != 0) {
        st->batch_failed = true;
        for (size_t i = 0; i < n; i++) {
            if (items[i].rc == 0) {
                items[i].rc = DBAO_EIO;
                items[i].existed = false;
                items[i].err = e;
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        saga_create_item *it = &items[i];
        if (it->rc == 0 && it->existed) {
            bool ex = false;
            it->rc = ensure(st, &it->err);
            if (it->rc == 0) {
                it->rc = create_existing(st, it->gid, it->spec, it->spec_len, false, &ex, &it->err);
            }
            if (it->rc == PG_CONNLOST) {
                it->rc = DBAO_EIO;
            }
            it->existed = it->rc == 0 && ex;
        }
    }
}

static int
update_once(pg_store *st, const saga_tx *t, const char *const *v, dbao_err *err)
{
    PGresult *r = NULL;
    int rc = pexec(st, P_UPDATE, 10, v, &r, err, "update");
    if (rc != 0) {
        return rc;
    }
    bool ok = PQntuples(r) == 1 && val_i64(r, 0, 0) == 1;
    PQclear(r);
    return ok ? 0 : missing_or_lost(st, t->gid, err);
}

static int
pg_update(saga_store *base, const saga_tx *t, const uint32_t *step_idx, size_t n, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    char rbuf[SAGA_REASON_MAX + 1], ebuf[SAGA_REASON_MAX + 1], state[8], lease[16];
    dbao_buf a[5] = {{0}};
    int rc = 0;
    for (int k = 0; k < 5 && rc == 0; k++) {
        rc = dbao_buf_putc(&a[k], '{');
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const saga_step_rec *p = &t->steps[step_idx[i]];
        const char *sep = i > 0 ? "," : "";
        if ((rc = dbao_buf_printf(&a[0], "%s%u", sep, p->idx)) == 0 &&
            (rc = dbao_buf_printf(&a[1], "%s%u", sep, p->state)) == 0 &&
            (rc = dbao_buf_printf(&a[2], "%s%u", sep, p->attempts)) == 0 &&
            (rc = dbao_buf_printf(&a[3], "%s%lld", sep, (long long) p->next_at_ms)) == 0 &&
            (rc = dbao_buf_put(&a[4], sep, strlen(sep))) == 0) {
            rc = arr_text(&a[4], saga__text_clean(p->last_error, ebuf));
        }
    }
    for (int k = 0; k < 5 && rc == 0; k++) {
        rc = dbao_buf_putc(&a[k], '}');
    }
    if (rc != 0) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
        goto out;
    }
    snprintf(state, sizeof state, "%u", t->state);
    snprintf(lease, sizeof lease, "%u", base->lease_ms);
    const char *v[10] = {t->gid,    base->owner, state,     saga__text_clean(t->reason, rbuf),
                         lease,     a[0].data,   a[1].data, a[2].data,
                         a[3].data, a[4].data};
    if (base->in_batch && base->defer_writes) {
        if ((rc = ensure(st, err)) == 0) {
            rc = pipe_send(st, P_UPDATE, 10, v, PEND_UPDATE, t->gid, err);
        }
        goto out;
    }
    bool retried = false;
    CALL(st, true, update_once(st, t, v, err), err);
    (void) retried;
out:
    for (int k = 0; k < 5; k++) {
        dbao_buf_free(&a[k]);
    }
    return rc;
}

static int
pg_batch_begin(saga_store *base, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    st->nlost = 0;
    int rc = ensure(st, err);
    if (rc == 0) {
        rc = pcmd(st, "BEGIN", err, "batch begin");
    }
    st->batch_failed = false;
    return rc == PG_CONNLOST ? DBAO_EIO : rc;
}

static int
pg_batch_commit(saga_store *base, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    dbao_err perr;
    if (st->piped && pipe_end(st, &perr) != 0) {
        fprintf(stderr, "%s\n", perr.msg); /* the batch is lost: say why once */
    }
    if (st->batch_failed || PQstatus(st->c) != CONNECTION_OK) {
        if (PQstatus(st->c) == CONNECTION_OK) {
            PQclear(PQexec(st->c, "ROLLBACK"));
        }
        st->batch_failed = false;
        return dbao_err_set(err, DBAO_EIO, "saga pg: batch failed: rolled back");
    }
    PGresult *r = PQexec(st->c, "COMMIT");
    /* COMMIT of an aborted transaction answers "ROLLBACK" with PGRES_COMMAND_OK. */
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "COMMIT") == 0;
    if (ok) {
        PQclear(r);
        return 0;
    }
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK
                 ? (PQclear(r), dbao_err_set(err, DBAO_EIO, "saga pg: batch commit rolled back"))
                 : pg_fail(st, r, err, "batch commit");
    st->batch_failed = false;
    return rc == PG_CONNLOST ? DBAO_EIO : rc;
}

static int
claim_once(pg_store *st, saga_tx *out, size_t max, size_t *num, dbao_err *err)
{
    char mx[24], lease[16];
    snprintf(mx, sizeof mx, "%zu", max);
    snprintf(lease, sizeof lease, "%u", st->base.lease_ms);
    const char *v[3] = {st->base.owner, mx, lease};
    PGresult *r = NULL;
    int rc = pexec(st, P_CLAIM, 3, v, &r, err, "claim");
    if (rc != 0) {
        return rc;
    }
    return rows_load(st, r, out, num, true, err);
}

static int
pg_claim(saga_store *base, saga_tx *out, size_t max, size_t *num, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    int rc;
    bool retried = false;
    CALL(st, false, claim_once(st, out, max, num, err), err);
    (void) retried;
    return rc;
}

static int
release_once(pg_store *st, const char *gid, dbao_err *err)
{
    const char *v[2] = {gid, st->base.owner};
    PGresult *r = NULL;
    int rc = pexec(st, P_RELEASE, 2, v, &r, err, "release");
    if (rc != 0) {
        return rc;
    }
    bool ok = atoi(PQcmdTuples(r)) == 1;
    PQclear(r);
    return ok ? 0 : missing_or_lost(st, gid, err);
}

static int
pg_release(saga_store *base, const char *gid, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    int rc;
    if (base->in_batch && base->defer_writes) {
        const char *v[2] = {gid, st->base.owner};
        if ((rc = ensure(st, err)) == 0) {
            rc = pipe_send(st, P_RELEASE, 2, v, PEND_RELEASE, gid, err);
        }
        return rc;
    }
    bool retried = false;
    CALL(st, true, release_once(st, gid, err), err);
    (void) retried;
    return rc;
}

/* read_once runs one read statement and its steps in a REPEATABLE READ snapshot (outside a
 * batch; inside one, the batch's transaction is the snapshot). */
static int
read_once(pg_store *st, int q, int nv, const char *const *v, saga_tx *out, size_t *num,
          dbao_err *err)
{
    int rc = 0;
    bool tx = !st->base.in_batch;
    if (tx &&
        (rc = pcmd(st, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, "begin")) != 0) {
        return rc;
    }
    PGresult *r = NULL;
    rc = pexec(st, q, nv, v, &r, err, q == P_GET ? "get" : "list");
    if (rc == 0) {
        rc = rows_load(st, r, out, num, false, err);
    }
    if (tx && PQstatus(st->c) == CONNECTION_OK) {
        int r2 = pcmd(st, rc == 0 ? "COMMIT" : "ROLLBACK", rc == 0 ? err : NULL, "end read");
        if (rc == 0 && r2 != 0) {
            for (size_t i = 0; i < *num; i++) {
                saga_tx_free(&out[i]);
            }
            *num = 0;
            rc = r2;
        }
    }
    return rc;
}

static int
pg_get(saga_store *base, const char *gid, saga_tx *out, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    int rc;
    bool retried = false;
    size_t n = 0;
    const char *v[1] = {gid};
    CALL(st, true, read_once(st, P_GET, 1, v, out, &n, err), err);
    (void) retried;
    if (rc == 0 && n == 0) {
        rc = dbao_err_set(err, SAGA_ENOENT, "saga pg: no transaction '%s'", gid);
    }
    return rc;
}

static int
pg_list(saga_store *base, int state, int64_t older_than_ms, saga_tx *out, size_t max, size_t *num,
        dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    char sv[8], ov[24], mv[24];
    snprintf(sv, sizeof sv, "%d", state);
    snprintf(ov, sizeof ov, "%lld", (long long) older_than_ms);
    snprintf(mv, sizeof mv, "%zu", max);
    const char *v[3] = {sv, ov, mv};
    int rc;
    bool retried = false;
    CALL(st, true, read_once(st, P_LIST, 3, v, out, num, err), err);
    (void) retried;
    return rc;
}

static int
admin_once(pg_store *st, const char *gid, const char *const *v, dbao_err *err)
{
    PGresult *r = NULL;
    int rc = pexec(st, P_ADMIN, 3, v, &r, err, "admin set");
    if (rc != 0) {
        return rc;
    }
    bool ok = PQntuples(r) == 1 && val_i64(r, 0, 0) == 1;
    PQclear(r);
    if (ok) {
        return 0;
    }
    rc = missing_or_lost(st, gid, err);
    if (rc == SAGA_ELOST) {
        rc = dbao_err_set(err, DBAO_EINVAL, "saga pg: transaction '%s' is final: admin_set refused",
                          gid);
    }
    return rc;
}

static int
pg_admin_set(saga_store *base, const char *gid, saga_state to, const char *reason, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    char rbuf[SAGA_REASON_MAX + 1], sv[8];
    snprintf(sv, sizeof sv, "%d", (int) to);
    const char *v[3] = {gid, sv, saga__text_clean(reason, rbuf)};
    int rc;
    bool retried = false;
    CALL(st, false, admin_once(st, gid, v, err), err);
    (void) retried;
    return rc;
}

static int
purge_once(pg_store *st, const char *const *v, uint64_t *deleted, dbao_err *err)
{
    PGresult *r = NULL;
    int rc = pexec(st, P_PURGE, 1, v, &r, err, "purge");
    if (rc == 0) {
        *deleted = PQntuples(r) == 1 ? (uint64_t) val_i64(r, 0, 0) : 0;
        PQclear(r);
    }
    return rc;
}

static int
pg_purge(saga_store *base, int64_t before_ms, uint64_t *deleted, dbao_err *err)
{
    pg_store *st = (pg_store *) base;
    char bv[24];
    snprintf(bv, sizeof bv, "%lld", (long long) before_ms);
    const char *v[1] = {bv};
    int rc;
    bool retried = false;
    CALL(st, false, purge_once(st, v, deleted, err), err);
    (void) retried;
    return rc;
}

static void
pg_close(saga_store *base)
{
    pg_store *st = (pg_store *) base;
    PQfinish(st->c); /* an open batch is rolled back by the server when the session ends */
    free(st->pend);
    free(st->lost);
    dbao_free(st);
}

static const saga_store_ops PG_OPS = {
    .name = "postgresql",
    .close = pg_close,
    .create = pg_create,
    .update = pg_update,
    .batch_begin = pg_batch_begin,
    .batch_commit = pg_batch_commit,
    .claim = pg_claim,
    .release = pg_release,
    .get = pg_get,
    .list = pg_list,
    .admin_set = pg_admin_set,
    .purge = pg_purge,
    .lost_gid = pg_lost_gid,
    .create_many = pg_create_many,
};

/* schema_setup: one transaction under the advisory lock; a newer version is refused. */
static int
schema_setup(pg_store *st, dbao_err *err)
{
    int rc = pcmd(st, "BEGIN", err, "begin schema");
    if (rc != 0) {
        return rc;
    }
    PGresult *r = NULL;
    if ((rc = pcmd(st, "SELECT pg_advisory_xact_lock(" ADVISORY_KEY ")", err, "schema lock")) !=
            0 ||
        (rc = pcmd(st, "CREATE TABLE IF NOT EXISTS dengbao_saga_schema (version integer NOT NULL)",
                   err, "create schema table")) != 0) {
        goto out;
    }
    r = PQexec(st->c, "SELECT max(version) FROM dengbao_saga_schema");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = pg_fail(st, r, err, "read schema version");
        goto out;
    }
    bool null = PQgetisnull(r, 0, 0);
    long long v = null ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (!null && v > SAGA_SCHEMA_VERSION) {
        rc = dbao_err_set(err, DBAO_ENOTSUP,
                          "saga pg: schema version %lld is newer than %d: refused", v,
                          SAGA_SCHEMA_VERSION);
        goto out;
    }
    if (!null && v < 1) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "saga pg: schema version %lld unknown", v);
        goto out;
    }
    if ((rc = pcmd(st, SCHEMA_SQL, err, "create schema")) != 0) {
        goto out;
    }
    if (null) {
        rc = pcmd(st, "INSERT INTO dengbao_saga_schema (version) VALUES (1)", err,
                  "write schema version");
    }
out:
    if (rc == 0) {
        rc = pcmd(st, "COMMIT", err, "commit schema");
    } else if (PQstatus(st->c) == CONNECTION_OK) {
        PQclear(PQexec(st->c, "ROLLBACK"));
    }
    return rc == PG_CONNLOST ? DBAO_EIO : rc;
}

int
saga__pg_open(saga_store **out, const char *conninfo, const saga_store_opts *opts, dbao_err *err)
{
    pg_store *st = dbao_calloc(1, sizeof *st);
    if (st == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "saga pg: out of memory");
    }
    st->base.ops = &PG_OPS;
    snprintf(st->base.owner, sizeof st->base.owner, "%s", opts->owner);
    st->base.lease_ms = opts->lease_ms;
    int rc;
    st->c = PQconnectdb(conninfo);
    if (st->c == NULL || PQstatus(st->c) != CONNECTION_OK) {
        rc = dbao_err_set(err, DBAO_EIO, "saga pg: connect failed: %.160s",
                          st->c != NULL ? PQerrorMessage(st->c) : "out of memory");
        goto fail;
    }
    if ((rc = pcmd(st, "SET client_min_messages = warning", err, "set")) != 0 ||
        (rc = schema_setup(st, err)) != 0 || (rc = prepare_all(st, err)) != 0) {
        rc = rc == PG_CONNLOST ? DBAO_EIO : rc;
        goto fail;
    }
    *out = &st->base;
    return 0;
fail:
    PQfinish(st->c);
    dbao_free(st);
    return rc;
}
