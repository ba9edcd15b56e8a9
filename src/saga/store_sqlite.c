/* store_sqlite.c: the saga store's embedded backend, SQLite (saga.h "sqlite:PATH").
 *
 * What: the durable state of one coordinator on one machine: every transaction (gid, state,
 * canonical spec, times, version, lease owner and expiry, reason) and its steps (state,
 * attempts, next call time, last error), so that a coordinator killed with -9 resumes every
 * unfinished transaction when it starts again (saga_store_claim).
 *
 * Which library does what: SQLite (libsqlite3, the system library) does the file format, the
 * B-trees, the write-ahead log and crash recovery; this file is the schema, the prepared
 * statements and the one-coordinator guard, hand-written because they are the contract of
 * saga.h and nothing more.
 *
 * File format: a SQLite 3 database with PRAGMA application_id = 0x44425347 ("DBSG", the magic:
 * a database with another non-zero application id is refused) and a table
 * dengbao_saga_schema(version) holding SAGA_SCHEMA_VERSION (1); a newer version is refused
 * (DBAO_ENOTSUP), so an old binary never writes a layout it does not know. Tables (text
 * columns are UTF-8; times are Unix milliseconds of this machine's clock):
 *   dengbao_sagas(gid TEXT PRIMARY KEY, state INT, spec TEXT, created_ms, updated_ms,
 *                 deadline_ms, version INT, owner TEXT NULL, lease_until_ms INT, reason TEXT NULL)
 *   dengbao_saga_steps(gid, idx, state, attempts, next_at_ms, last_error, PRIMARY KEY(gid, idx))
 *   index dengbao_sagas_state_updated (state, updated_ms): claim (oldest first) and list.
 * docs/saga-store.md has the full DDL.
 *
 * Durability: journal_mode=WAL (readers never block the writer; one fsync of the log per
 * commit, not two as with a rollback journal) and synchronous=FULL: the WAL is fsync'ed at
 * every commit, so a transaction acknowledged to a client survives kill -9 AND a power loss.
 * With NORMAL the WAL is fsync'ed only at checkpoints: a kill -9 loses nothing (the log is in
 * the page cache), but a power loss can lose the last commits, i.e. sagas whose submission was
 * answered 201 and whose participants may already have been called. Group commit
 * (saga_store_batch_begin/commit) is what makes FULL affordable: one fsync per batch.
 * busy_timeout is 5 s (a checkpoint or a second handle of this process may hold the lock).
 *
 * One coordinator: a second process opening the same database is refused. The guard is an
 * flock(LOCK_EX | LOCK_NB) on PATH.lock, held while any handle of this process has the
 * database open (a process-wide table counts the handles, so that tests may open two handles
 * with different owners in one process; SQLite serialises their writes). The kernel drops the
 * lock when the process dies, so kill -9 needs no clean-up. Leases are still written (owner,
 * lease_until_ms) so that recovery is the same code as on PostgreSQL; and because the lock
 * proves that no other coordinator is alive, the first handle of a process clears every lease
 * at open: a restarted coordinator claims its unfinished work at once instead of waiting for
 * its previous incarnation's leases to expire.
 *
 * Transactions: outside a batch every write is one BEGIN IMMEDIATE ... COMMIT (IMMEDIATE takes
 * the write lock first, so a read-then-write such as claim cannot be overtaken). Inside a batch
 * (BEGIN IMMEDIATE at batch_begin, COMMIT at batch_commit) the calls run in the batch's
 * transaction without savepoints: a SAGA_ELOST (the lease check is the UPDATE's WHERE clause,
 * 0 rows changed) or any other logical refusal is decided by the call's first statement, before
 * it writes anything, so it fails only that call; an I/O-class failure loses the whole batch
 * (every later call and the commit fail, the commit rolls back), as on PostgreSQL. A savepoint
 * per call would add two statements to every call and buy nothing here. Reads outside a
 * batch run in a deferred BEGIN so that a record and its steps come from one snapshot. Every
 * statement is prepared once at open and reset after use.
 *
 * Threading: a handle belongs to one thread at a time (saga.h); the lock table has a mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_internal.h"

#define APP_ID          0x44425347 /* "DBSG" */
#define BUSY_TIMEOUT_MS 5000

enum {
    Q_INS_SAGA,
    Q_INS_STEP,
    Q_SEL_SPEC,
    Q_UPD_SAGA,
    Q_UPD_STEP,
    Q_EXISTS,
    Q_CLAIM_SEL,
    Q_CLAIM_UPD,
    Q_GET_SAGA,
    Q_GET_STEPS,
    Q_LIST,
    Q_RELEASE,
    Q_ADMIN,
    Q_ADMIN_STEPS,
    Q_PURGE_STEPS,
    Q_PURGE,
    Q_BEGIN_IMM,
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_COUNT
};

static const char *const SQL[Q_COUNT] = {
    [Q_INS_SAGA] = "INSERT INTO dengbao_sagas (gid, state, spec, created_ms, updated_ms, "
                   "deadline_ms, version, owner, lease_until_ms, reason) VALUES (?1, 0, ?2, ?3, "
                   "?3, ?4, 1, ?5, ?6, NULL) ON CONFLICT (gid) DO NOTHING",
    [Q_INS_STEP] = "INSERT INTO dengbao_saga_steps (gid, idx, state, attempts, next_at_ms, "
                   "last_error) VALUES (?1, ?2, 0, 0, 0, NULL)",
    [Q_SEL_SPEC] = "SELECT spec FROM dengbao_sagas WHERE gid = ?1",
    [Q_UPD_SAGA] = "UPDATE dengbao_sagas SET state = ?2, reason = ?3, updated_ms = ?4, "
                   "version = version + 1, lease_until_ms = ?5 WHERE gid = ?1 AND owner = ?6 "
                   "AND lease_until_ms >= ?4",
    [Q_UPD_STEP] = "UPDATE dengbao_saga_steps SET state = ?3, attempts = ?4, next_at_ms = ?5, "
                   "last_error = ?6 WHERE gid = ?1 AND idx = ?2",
    [Q_EXISTS] = "SELECT state FROM dengbao_sagas WHERE gid = ?1",
    [Q_CLAIM_SEL] = "SELECT gid FROM dengbao_sagas WHERE state IN (0, 1, 2) AND (owner IS NULL "
                    "OR lease_until_ms < ?1) ORDER BY updated_ms LIMIT ?2",
    [Q_CLAIM_UPD] = "UPDATE dengbao_sagas SET owner = ?2, lease_until_ms = ?3, version = "
                    "version + 1 WHERE gid = ?1",
    [Q_GET_SAGA] = "SELECT gid, state, created_ms, updated_ms, deadline_ms, version, spec, "
                   "reason FROM dengbao_sagas WHERE gid = ?1",
    [Q_GET_STEPS] = "SELECT idx, state, attempts, next_at_ms, last_error FROM "
                    "dengbao_saga_steps WHERE gid = ?1 ORDER BY idx",
    [Q_LIST] = "SELECT gid FROM dengbao_sagas WHERE ((?1 = -1 AND state IN (0, 1, 2, 5)) OR "
               "state = ?1) AND (?2 = 0 OR updated_ms < ?2) ORDER BY updated_ms DESC LIMIT ?3",
    [Q_RELEASE] = "UPDATE dengbao_sagas SET owner = NULL, lease_until_ms = 0, version = version "
                  "+ 1 WHERE gid = ?1 AND owner = ?2",
    [Q_ADMIN] = "UPDATE dengbao_sagas SET state = ?2, reason = ?3, owner = NULL, lease_until_ms "
                "= 0, version = version + 1, updated_ms = ?4 WHERE gid = ?1 AND state NOT IN "
                "(3, 4)",
    [Q_ADMIN_STEPS] = "UPDATE dengbao_saga_steps SET attempts = 0, next_at_ms = 0 WHERE gid = ?1",
    [Q_PURGE_STEPS] = "DELETE FROM dengbao_saga_steps WHERE gid IN (SELECT gid FROM "
                      "dengbao_sagas WHERE state IN (3, 4) AND updated_ms < ?1)",
    [Q_PURGE] = "DELETE FROM dengbao_sagas WHERE state IN (3, 4) AND updated_ms < ?1",
    [Q_BEGIN_IMM] = "BEGIN IMMEDIATE",
    [Q_BEGIN] = "BEGIN",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
};

static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS dengbao_sagas (\n"
    "  gid TEXT PRIMARY KEY NOT NULL, state INTEGER NOT NULL, spec TEXT NOT NULL,\n"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL,\n"
    "  version INTEGER NOT NULL, owner TEXT, lease_until_ms INTEGER NOT NULL DEFAULT 0,\n"
    "  reason TEXT) WITHOUT ROWID;\n"
    "CREATE TABLE IF NOT EXISTS dengbao_saga_steps (\n"
    "  gid TEXT NOT NULL, idx INTEGER NOT NULL, state INTEGER NOT NULL,\n"
    "  attempts INTEGER NOT NULL, next_at_ms INTEGER NOT NULL, last_error TEXT,\n"
    "  PRIMARY KEY (gid, idx)) WITHOUT ROWID;\n"
    "CREATE INDEX IF NOT EXISTS dengbao_sagas_state_updated ON dengbao_sagas (state, "
    "updated_ms);\n";

/* ---- the process-wide lock table ------------------------------------------------------------ */

typedef struct lock_ent {
    struct lock_ent *next;
    dev_t dev;
    ino_t ino;
    pid_t pid; /* a child forked with a handle open inherits the table: not its lock */
    int fd;
    int refs;
} lock_ent;

/* g_locks and every lock_ent are guarded by g_locks_mu. */
static pthread_mutex_t g_locks_mu = PTHREAD_MUTEX_INITIALIZER;
static lock_ent *g_locks;

/* lock_take opens PATH.lock and holds an exclusive flock on it for this process; *first is
 * true when this process had no handle on it before (the previous holder, if any, is dead). */
static int
lock_take(const char *path, lock_ent **out, bool *first, dbao_err *err)
{
    char lp[4096];
    if ((size_t) snprintf(lp, sizeof lp, "%s.lock", path) >= sizeof lp) {
        return dbao_err_set(err, DBAO_ERANGE, "saga sqlite: path too long");
    }
    int fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        return dbao_err_set(err, -e, "saga sqlite: open lock file '%s': %s", lp, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return dbao_err_set(err, -e, "saga sqlite: stat lock file '%s': %s", lp, strerror(e));
    }
    pthread_mutex_lock(&g_locks_mu);
    for (lock_ent *l = g_locks; l != NULL; l = l->next) {
        if (l->dev == st.st_dev && l->ino == st.st_ino && l->pid == getpid()) {
            l->refs++;
            pthread_mutex_unlock(&g_locks_mu);
            close(fd);
            *out = l;
            *first = false;
            return 0;
        }
    }
    int rc = 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        rc = e == EWOULDBLOCK
                 ? dbao_err_set(err, DBAO_EIO,
                                "saga sqlite: '%s' is open by another process (one coordinator "
                                "per embedded store)",
                                path)
                 : dbao_err_set(err, -e, "saga sqlite: flock '%s': %s", lp, strerror(e));
    } else {
        lock_ent *l = dbao_calloc(1, sizeof *l);
        if (l == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "saga sqlite: out of memory");
        } else {
            l->dev = st.st_dev;
            l->ino = st.st_ino;
            l->pid = getpid();
            l->fd = fd;
            l->refs = 1;
            l->next = g_locks;
            g_locks = l;
            *out = l;
            *first = true;
        }
    }
    pthread_mutex_unlock(&g_locks_mu);
    if (rc != 0) {
        close(fd);
    }
    return rc;
}

static void
lock_drop(lock_ent *l)
{
    if (l == NULL) {
        return;
    }
    pthread_mutex_lock(&g_locks_mu);
    if (--l->refs == 0) {
        for (lock_ent **p = &g_locks; *p != NULL; p = &(*p)->next) {
            if (*p == l) {
                *p = l->next;
                break;
            }
        }
        close(l->fd); /* drops the flock */
        dbao_free(l);
    }
    pthread_mutex_unlock(&g_locks_mu);
}

/* ---- the handle ----------------------------------------------------------------------------- */

typedef struct sq_store {
    saga_store base; /* first: the dispatcher's pointer is this one */
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT];
    lock_ent *lock;
    bool batch_failed; /* a call inside the open batch failed with a possible partial write */
} sq_store;

static int
sq_fail(sq_store *st, dbao_err *err, int src, const char *what)
{
    int code = src == SQLITE_NOTADB || src == SQLITE_CORRUPT ? DBAO_EFORMAT : DBAO_EIO;
    return dbao_err_set(err, code, "saga sqlite: %s failed: %s", what,
                        st->db != NULL ? sqlite3_errmsg(st->db) : sqlite3_errstr(src));
}

/* step_done runs a statement that returns no rows and resets it. */
static int
run(sq_store *st, int q, dbao_err *err, const char *what)
{
    sqlite3_stmt *s = st->q[q];
    int r = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (r != SQLITE_DONE && r != SQLITE_ROW) {
        return sq_fail(st, err, r, what);
    }
    return 0;
}

static void
done(sq_store *st, int q)
{
    sqlite3_reset(st->q[q]);
    sqlite3_clear_bindings(st->q[q]);
}

static int
bind_text(sqlite3_stmt *s, int i, const char *v, size_t len)
{
    if (v == NULL) {
        return sqlite3_bind_null(s, i);
    }
    return sqlite3_bind_text64(s, i, v, len, SQLITE_STATIC, SQLITE_UTF8);
}

/* A write's transaction: BEGIN IMMEDIATE alone; inside a batch the batch's transaction. A call
 * that ends with a logical outcome (SAGA_ELOST, SAGA_ENOENT, SAGA_EEXIST, DBAO_EINVAL) has
 * written nothing (each is decided by the first, guarded statement, which changed 0 rows), so
 * it needs no savepoint; any other failure inside a batch (I/O, corruption, memory) may have
 * written part of the call, so the whole batch is lost: later calls fail and the commit rolls
 * back. */
static bool
is_logical(int rc)
{
    return rc == SAGA_ELOST || rc == SAGA_ENOENT || rc == SAGA_EEXIST || rc == DBAO_EINVAL;
}

static int
wtx_begin(sq_store *st, dbao_err *err)
{
    if (st->base.in_batch) {
        return st->batch_failed
                   ? dbao_err_set(err, DBAO_EIO, "saga sqlite: the open batch failed earlier")
                   : 0;
    }
    return run(st, Q_BEGIN_IMM, err, "begin");
}

static int
wtx_end(sq_store *st, int rc, dbao_err *err)
{
    if (st->base.in_batch) {
        if (rc != 0 && !is_logical(rc)) {
            st->batch_failed = true;
        }
        return rc;
    }
    if (rc == 0) {
        rc = run(st, Q_COMMIT, err, "commit");
        if (rc == 0) {
            return 0;
        }
    }
    if (!sqlite3_get_autocommit(st->db)) {
        run(st, Q_ROLLBACK, NULL, "rollback");
    }
    return rc;
}

static int
rtx_begin(sq_store *st, dbao_err *err)
{
    return st->base.in_batch ? 0 : run(st, Q_BEGIN, err, "begin");
}

static void
rtx_end(sq_store *st)
{
    if (!st->base.in_batch && !sqlite3_get_autocommit(st->db)) {
        run(st, Q_COMMIT, NULL, "commit");
    }
}

static char *
col_dup(sqlite3_stmt *s, int c)
{
    if (sqlite3_column_type(s, c) == SQLITE_NULL) {
        return NULL;
    }
    const char *p = (const char *) sqlite3_column_text(s, c);
    return saga__strndup(p != NULL ? p : "", (size_t) sqlite3_column_bytes(s, c));
}

/* load reads one transaction and its steps into out (zeroed by the caller). */
static int
load(sq_store *st, const char *gid, saga_tx *out, dbao_err *err)
{
    sqlite3_stmt *s = st->q[Q_GET_SAGA];
    bind_text(s, 1, gid, strlen(gid));
    int r = sqlite3_step(s);
    if (r == SQLITE_DONE) {
        done(st, Q_GET_SAGA);
        return dbao_err_set(err, SAGA_ENOENT, "saga sqlite: no transaction '%s'", gid);
    }
    if (r != SQLITE_ROW) {
        done(st, Q_GET_SAGA);
        return sq_fail(st, err, r, "get");
    }
    snprintf(out->gid, sizeof out->gid, "%s", (const char *) sqlite3_column_text(s, 0));
    out->state = (uint8_t) sqlite3_column_int(s, 1);
    out->created_ms = sqlite3_column_int64(s, 2);
    out->updated_ms = sqlite3_column_int64(s, 3);
    out->deadline_ms = sqlite3_column_int64(s, 4);
    out->version = (uint64_t) sqlite3_column_int64(s, 5);
    out->spec = col_dup(s, 6);
    out->spec_len = (size_t) sqlite3_column_bytes(s, 6);
    out->reason = col_dup(s, 7);
    bool oom = out->spec == NULL || (sqlite3_column_type(s, 7) != SQLITE_NULL && !out->reason);
    done(st, Q_GET_SAGA);
    if (oom) {
        saga_tx_free(out);
        return dbao_err_set(err, DBAO_ENOMEM, "saga sqlite: out of memory");
    }
    s = st->q[Q_GET_STEPS];
    bind_text(s, 1, gid, strlen(gid));
    size_t cap = 0;
    int rc = 0;
    while ((r = sqlite3_step(s)) == SQLITE_ROW) {
        if (out->num_steps == cap) {
            size_t nc = cap == 0 ? 8 : cap * 2;
            saga_step_rec *ns = dbao_realloc(out->steps, nc * sizeof *ns);
            if (ns == NULL) {
                rc = dbao_err_set(err, DBAO_ENOMEM, "saga sqlite: out of memory");
                break;
            }
            out->steps = ns;
            cap = nc;
        }
        saga_step_rec *p = &out->steps[out->num_steps];
        memset(p, 0, sizeof *p);
        p->idx = (uint32_t) sqlite3_column_int64(s, 0);
        p->state = (uint8_t) sqlite3_column_int(s, 1);
        p->attempts = (uint32_t) sqlite3_column_int64(s, 2);
        p->next_at_ms = sqlite3_column_int64(s, 3);
        p->last_error = col_dup(s, 4);
        out->num_steps++;
        if (sqlite3_column_type(s, 4) != SQLITE_NULL && p->last_error == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "saga sqlite: out of memory");
            break;
        }
    }
    if (rc == 0 && r != SQLITE_DONE) {
        rc = sq_fail(st, err, r, "get steps");
    }
    done(st, Q_GET_STEPS);
    if (rc != 0) {
        saga_tx_free(out);
    }
    return rc;
}

/* ---- operations ----------------------------------------------------------------------------- */

static int
sq_create(saga_store *base, const char *gid, const char *spec, size_t spec_len, size_t num_steps,
          int64_t deadline_ms, bool *existed, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    int rc = wtx_begin(st, err);
    if (rc != 0) {
        return rc;
    }
    int64_t now = saga__now_ms();
    size_t gl = strlen(gid);
    sqlite3_stmt *s = st->q[Q_INS_SAGA];
    bind_text(s, 1, gid, gl);
    bind_text(s, 2, spec, spec_len);
    sqlite3_bind_int64(s, 3, now);
    sqlite3_bind_int64(s, 4, deadline_ms);
    bind_text(s, 5, base->owner, strlen(base->owner));
    sqlite3_bind_int64(s, 6, now + base->lease_ms);
    if ((rc = run(st, Q_INS_SAGA, err, "insert transaction")) != 0) {
        return wtx_end(st, rc, err);
    }
    if (sqlite3_changes(st->db) == 0) {
        s = st->q[Q_SEL_SPEC];
        bind_text(s, 1, gid, gl);
        int r = sqlite3_step(s);
        if (r != SQLITE_ROW) {
            rc = sq_fail(st, err, r, "read existing spec");
        } else if ((size_t) sqlite3_column_bytes(s, 0) != spec_len ||
                   memcmp(sqlite3_column_blob(s, 0), spec, spec_len) != 0) {
            rc = dbao_err_set(err, SAGA_EEXIST,
                              "saga sqlite: transaction '%s' exists with another spec", gid);
        } else {
            *existed = true;
        }
        done(st, Q_SEL_SPEC);
        return wtx_end(st, rc, err);
    }
    s = st->q[Q_INS_STEP];
    for (size_t i = 0; i < num_steps && rc == 0; i++) {
        bind_text(s, 1, gid, gl);
        sqlite3_bind_int64(s, 2, (int64_t) i);
        rc = run(st, Q_INS_STEP, err, "insert step");
    }
    return wtx_end(st, rc, err);
}

/* missing_or_lost: after a guarded write changed 0 rows, tells SAGA_ENOENT from SAGA_ELOST. */
static int
missing_or_lost(sq_store *st, const char *gid, dbao_err *err)
{
    sqlite3_stmt *s = st->q[Q_EXISTS];
    bind_text(s, 1, gid, strlen(gid));
    int r = sqlite3_step(s);
    done(st, Q_EXISTS);
    if (r == SQLITE_DONE) {
        return dbao_err_set(err, SAGA_ENOENT, "saga sqlite: no transaction '%s'", gid);
    }
    if (r != SQLITE_ROW) {
        return sq_fail(st, err, r, "exists");
    }
    return dbao_err_set(err, SAGA_ELOST, "saga sqlite: lease on '%s' lost", gid);
}

static int
sq_update(saga_store *base, const saga_tx *t, const uint32_t *step_idx, size_t n, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    char rbuf[SAGA_REASON_MAX + 1];
    int rc = wtx_begin(st, err);
    if (rc != 0) {
        return rc;
    }
    int64_t now = saga__now_ms();
    size_t gl = strlen(t->gid);
    const char *reason = saga__text_clean(t->reason, rbuf);
    sqlite3_stmt *s = st->q[Q_UPD_SAGA];
    bind_text(s, 1, t->gid, gl);
    sqlite3_bind_int(s, 2, t->state);
    bind_text(s, 3, reason, reason != NULL ? strlen(reason) : 0);
    sqlite3_bind_int64(s, 4, now);
    sqlite3_bind_int64(s, 5, now + base->lease_ms);
    bind_text(s, 6, base->owner, strlen(base->owner));
    if ((rc = run(st, Q_UPD_SAGA, err, "update transaction")) == 0 &&
        sqlite3_changes(st->db) == 0) {
        rc = missing_or_lost(st, t->gid, err);
    }
    s = st->q[Q_UPD_STEP];
    for (size_t i = 0; i < n && rc == 0; i++) {
        const saga_step_rec *p = &t->steps[step_idx[i]];
        const char *le = saga__text_clean(p->last_error, rbuf);
        bind_text(s, 1, t->gid, gl);
        sqlite3_bind_int64(s, 2, p->idx);
        sqlite3_bind_int(s, 3, p->state);
        sqlite3_bind_int64(s, 4, p->attempts);
        sqlite3_bind_int64(s, 5, p->next_at_ms);
        bind_text(s, 6, le, le != NULL ? strlen(le) : 0);
        rc = run(st, Q_UPD_STEP, err, "update step");
    }
    return wtx_end(st, rc, err);
}

static int
sq_batch_begin(saga_store *base, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    st->batch_failed = false;
    return run(st, Q_BEGIN_IMM, err, "batch begin");
}

static int
sq_batch_commit(saga_store *base, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    int rc = st->batch_failed
                 ? dbao_err_set(err, DBAO_EIO, "saga sqlite: batch failed: rolled back")
                 : run(st, Q_COMMIT, err, "batch commit");
    st->batch_failed = false;
    if (rc != 0 && !sqlite3_get_autocommit(st->db)) {
        run(st, Q_ROLLBACK, NULL, "rollback");
    }
    return rc;
}

/* load_many loads the transactions whose gids statement q yields (already bound). */
static int
load_many(sq_store *st, int q, saga_tx *out, size_t max, size_t *num, bool claim, dbao_err *err)
{
    sqlite3_stmt *s = st->q[q];
    char(*gids)[SAGA_GID_MAX + 1] = dbao_malloc(max * sizeof *gids);
    if (gids == NULL) {
        done(st, q);
        return dbao_err_set(err, DBAO_ENOMEM, "saga sqlite: out of memory");
    }
    size_t n = 0;
    int r, rc = 0;
    while (n < max && (r = sqlite3_step(s)) == SQLITE_ROW) {
        snprintf(gids[n++], SAGA_GID_MAX + 1, "%s", (const char *) sqlite3_column_text(s, 0));
    }
    if (n < max && r != SQLITE_DONE) {
        rc = sq_fail(st, err, r, claim ? "claim" : "list");
    }
    done(st, q);
    int64_t until = saga__now_ms() + st->base.lease_ms;
    for (size_t i = 0; i < n && rc == 0 && claim; i++) {
        sqlite3_stmt *u = st->q[Q_CLAIM_UPD];
        bind_text(u, 1, gids[i], strlen(gids[i]));
        bind_text(u, 2, st->base.owner, strlen(st->base.owner));
        sqlite3_bind_int64(u, 3, until);
        rc = run(st, Q_CLAIM_UPD, err, "claim");
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        memset(&out[i], 0, sizeof out[i]);
        if ((rc = load(st, gids[i], &out[i], err)) == 0) {
            *num = i + 1;
        }
    }
    dbao_free(gids);
    if (rc != 0) {
        for (size_t i = 0; i < *num; i++) {
            saga_tx_free(&out[i]);
        }
        *num = 0;
    }
    return rc;
}

static int
sq_claim(saga_store *base, saga_tx *out, size_t max, size_t *num, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    int rc = wtx_begin(st, err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_stmt *s = st->q[Q_CLAIM_SEL];
    sqlite3_bind_int64(s, 1, saga__now_ms());
    sqlite3_bind_int64(s, 2, (int64_t) max);
    rc = load_many(st, Q_CLAIM_SEL, out, max, num, true, err);
    rc = wtx_end(st, rc, err);
    if (rc != 0) {
        for (size_t i = 0; i < *num; i++) {
            saga_tx_free(&out[i]);
        }
        *num = 0;
    }
    return rc;
}

static int
sq_release(saga_store *base, const char *gid, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    int rc = wtx_begin(st, err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_stmt *s = st->q[Q_RELEASE];
    bind_text(s, 1, gid, strlen(gid));
    bind_text(s, 2, base->owner, strlen(base->owner));
    if ((rc = run(st, Q_RELEASE, err, "release")) == 0 && sqlite3_changes(st->db) == 0) {
        rc = missing_or_lost(st, gid, err);
    }
    return wtx_end(st, rc, err);
}

static int
sq_get(saga_store *base, const char *gid, saga_tx *out, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    int rc = rtx_begin(st, err);
    if (rc == 0) {
        rc = load(st, gid, out, err);
        rtx_end(st);
    }
    return rc;
}

static int
sq_list(saga_store *base, int state, int64_t older_than_ms, saga_tx *out, size_t max, size_t *num,
        dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    int rc = rtx_begin(st, err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_stmt *s = st->q[Q_LIST];
    sqlite3_bind_int(s, 1, state);
    sqlite3_bind_int64(s, 2, older_than_ms);
    sqlite3_bind_int64(s, 3, (int64_t) max);
    rc = load_many(st, Q_LIST, out, max, num, false, err);
    rtx_end(st);
    return rc;
}

static int
sq_admin_set(saga_store *base, const char *gid, saga_state to, const char *reason, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    char rbuf[SAGA_REASON_MAX + 1];
    int rc = wtx_begin(st, err);
    if (rc != 0) {
        return rc;
    }
    const char *r = saga__text_clean(reason, rbuf);
    sqlite3_stmt *s = st->q[Q_ADMIN];
    bind_text(s, 1, gid, strlen(gid));
    sqlite3_bind_int(s, 2, to);
    bind_text(s, 3, r, r != NULL ? strlen(r) : 0);
    sqlite3_bind_int64(s, 4, saga__now_ms());
    if ((rc = run(st, Q_ADMIN, err, "admin set")) == 0 && sqlite3_changes(st->db) == 0) {
        rc = missing_or_lost(st, gid, err);
        if (rc == SAGA_ELOST) {
            rc = dbao_err_set(err, DBAO_EINVAL,
                              "saga sqlite: transaction '%s' is final: admin_set refused", gid);
        }
    }
    if (rc == 0) {
        bind_text(st->q[Q_ADMIN_STEPS], 1, gid, strlen(gid));
        rc = run(st, Q_ADMIN_STEPS, err, "admin reset steps");
    }
    return wtx_end(st, rc, err);
}

static int
sq_purge(saga_store *base, int64_t before_ms, uint64_t *deleted, dbao_err *err)
{
    sq_store *st = (sq_store *) base;
    int rc = wtx_begin(st, err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st->q[Q_PURGE_STEPS], 1, before_ms);
    if ((rc = run(st, Q_PURGE_STEPS, err, "purge steps")) == 0) {
        sqlite3_bind_int64(st->q[Q_PURGE], 1, before_ms);
        if ((rc = run(st, Q_PURGE, err, "purge")) == 0) {
            *deleted = (uint64_t) sqlite3_changes64(st->db);
        }
    }
    return wtx_end(st, rc, err);
}

static void
sq_close(saga_store *base)
{
    sq_store *st = (sq_store *) base;
    if (st->db != NULL && !sqlite3_get_autocommit(st->db)) {
        run(st, Q_ROLLBACK, NULL, "rollback"); /* an uncommitted batch never happened */
    }
    for (int i = 0; i < Q_COUNT; i++) {
        sqlite3_finalize(st->q[i]);
    }
    sqlite3_close_v2(st->db);
    lock_drop(st->lock);
    dbao_free(st);
}

static const saga_store_ops SQ_OPS = {
    .name = "sqlite",
    .close = sq_close,
    .create = sq_create,
    .update = sq_update,
    .batch_begin = sq_batch_begin,
    .batch_commit = sq_batch_commit,
    .claim = sq_claim,
    .release = sq_release,
    .get = sq_get,
    .list = sq_list,
    .admin_set = sq_admin_set,
    .purge = sq_purge,
};

/* exec runs SQL text (set-up only: pragmas and DDL, no parameters). */
static int
exec_sql(sq_store *st, const char *sql, dbao_err *err, const char *what)
{
    int r = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return r == SQLITE_OK ? 0 : sq_fail(st, err, r, what);
}

static int
int_query(sq_store *st, const char *sql, int64_t *out, bool *is_null, dbao_err *err)
{
    sqlite3_stmt *s = NULL;
    int r = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (r != SQLITE_OK) {
        return sq_fail(st, err, r, "prepare");
    }
    r = sqlite3_step(s);
    int rc = 0;
    if (r == SQLITE_ROW) {
        *is_null = sqlite3_column_type(s, 0) == SQLITE_NULL;
        *out = sqlite3_column_int64(s, 0);
    } else {
        rc = sq_fail(st, err, r, "read schema");
    }
    sqlite3_finalize(s);
    return rc;
}

/* schema_setup checks the magic and the version, and creates the schema when missing, in one
 * IMMEDIATE transaction. */
static int
schema_setup(sq_store *st, bool first, dbao_err *err)
{
    int64_t v = 0;
    bool null = false;
    int rc = exec_sql(st, "BEGIN IMMEDIATE", err, "begin schema");
    if (rc != 0) {
        return rc;
    }
    if ((rc = int_query(st, "PRAGMA application_id", &v, &null, err)) != 0) {
        goto out;
    }
    if (v != 0 && v != APP_ID) {
        rc = dbao_err_set(err, DBAO_EFORMAT,
                          "saga sqlite: database has application_id %lld, not a saga store",
                          (long long) v);
        goto out;
    }
    if ((rc = exec_sql(st,
                       "PRAGMA application_id = 1145197383;" /* 0x44425347 */
                       "CREATE TABLE IF NOT EXISTS dengbao_saga_schema (version INTEGER NOT "
                       "NULL)",
                       err, "create schema table")) != 0) {
        goto out;
    }
    if ((rc = int_query(st, "SELECT max(version) FROM dengbao_saga_schema", &v, &null, err)) != 0) {
        goto out;
    }
    if (!null && v > SAGA_SCHEMA_VERSION) {
        rc = dbao_err_set(err, DBAO_ENOTSUP,
                          "saga sqlite: schema version %lld is newer than %d: refused",
                          (long long) v, SAGA_SCHEMA_VERSION);
        goto out;
    }
    if (!null && v < 1) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "saga sqlite: schema version %lld unknown",
                          (long long) v);
        goto out;
    }
    if ((rc = exec_sql(st, SCHEMA_SQL, err, "create schema")) != 0) {
        goto out;
    }
    if (null) {
        rc = exec_sql(st, "INSERT INTO dengbao_saga_schema (version) VALUES (1)", err,
                      "write schema version");
    }
    if (rc == 0 && first) {
        /* No other coordinator can be alive (we hold the lock): leases of a dead one go. */
        rc = exec_sql(st,
                      "UPDATE dengbao_sagas SET owner = NULL, lease_until_ms = 0 WHERE owner "
                      "IS NOT NULL",
                      err, "clear leases");
    }
out:
    if (rc == 0) {
        return exec_sql(st, "COMMIT", err, "commit schema");
    }
    sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int
saga__sqlite_open(saga_store **out, const char *path, const saga_store_opts *opts, dbao_err *err)
{
    sq_store *st = dbao_calloc(1, sizeof *st);
    if (st == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "saga sqlite: out of memory");
    }
    st->base.ops = &SQ_OPS;
    snprintf(st->base.owner, sizeof st->base.owner, "%s", opts->owner);
    st->base.lease_ms = opts->lease_ms;
    bool first = false;
    int rc = lock_take(path, &st->lock, &first, err);
    if (rc != 0) {
        dbao_free(st);
        return rc;
    }
    int r = sqlite3_open_v2(path, &st->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (r != SQLITE_OK) {
        rc = sq_fail(st, err, r, "open");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(st->db, 0);
    /* journal_mode answers with the mode it got: WAL must be confirmed (a read-only or
     * in-memory file could not switch). */
    int64_t dummy;
    bool null;
    {
        sqlite3_stmt *s = NULL;
        r = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode=WAL", -1, &s, NULL);
        if (r == SQLITE_OK) {
            r = sqlite3_step(s);
        }
        bool wal = r == SQLITE_ROW && strcmp((const char *) sqlite3_column_text(s, 0), "wal") == 0;
        sqlite3_finalize(s);
        if (!wal) {
            rc = r == SQLITE_ROW
                     ? dbao_err_set(err, DBAO_EIO, "saga sqlite: cannot switch '%s' to WAL", path)
                     : sq_fail(st, err, r, "journal_mode");
            goto fail;
        }
    }
    if ((rc = exec_sql(st, "PRAGMA synchronous=FULL", err, "synchronous")) != 0 ||
        (rc = int_query(st, "PRAGMA synchronous", &dummy, &null, err)) != 0) {
        goto fail;
    }
    if ((rc = schema_setup(st, first, err)) != 0) {
        goto fail;
    }
    for (int i = 0; i < Q_COUNT; i++) {
        r = sqlite3_prepare_v3(st->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i], NULL);
        if (r != SQLITE_OK) {
            rc = sq_fail(st, err, r, "prepare");
            goto fail;
        }
    }
    *out = &st->base;
    return 0;
fail:
    for (int i = 0; i < Q_COUNT; i++) {
        sqlite3_finalize(st->q[i]);
    }
    sqlite3_close_v2(st->db);
    lock_drop(st->lock);
    dbao_free(st);
    return rc;
}

int
saga__sqlite_set_synchronous(saga_store *s, const char *mode)
{
    if (s == NULL || s->ops != &SQ_OPS) {
        return DBAO_EINVAL;
    }
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA synchronous=%s",
             strcmp(mode, "NORMAL") == 0 ? "NORMAL" : "FULL");
    return exec_sql((sq_store *) s, sql, NULL, "synchronous");
}
