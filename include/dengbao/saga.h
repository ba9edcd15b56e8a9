/* saga.h: a saga coordinator (global transactions of steps with compensations), its durable
 * store, and the idempotency barrier for participants.
 *
 * A global transaction (gid) is an ordered list of steps; each step has an action and a
 * compensation (HTTP URLs and a JSON payload). Steps of the same `group` run in parallel; groups
 * run in increasing order. The coordinator calls each action; when all succeed the transaction
 * is COMMITTED. A *definite* failure of an action (the participant answered 409 or 422) rolls
 * back: the compensations of every step that may have run, in reverse order, then
 * COMPENSATED. An *unknown* outcome (timeout, connection failure, 5xx, any other status) is
 * retried with exponential backoff and full jitter up to `max_attempts`; a step whose
 * recovery is `forward` keeps retrying its action, one whose recovery is `backward` (the
 * default) turns to compensation once retries are exhausted; a compensation that exhausts its
 * retries, or that is definitely refused, PARKS the transaction with the reason for an operator
 * (admin API), never loops forever. A transaction whose deadline passes while running forward
 * is rolled back. Every state change is written to the store before the next call is made, and
 * is an audit record.
 *
 * Participants receive POST <url> with the JSON body
 *   {"gid":G,"step":I,"branch":"I","op":"action"|"compensate","payload":{...}}
 * and the headers Idempotency-Key: G:I:op, X-Dengbao-Gid, X-Dengbao-Branch, X-Dengbao-Op. They
 * make their effect idempotent with the barrier below (one local database transaction holds
 * the barrier row and the business change).
 *
 * Threading: a saga_store belongs to one thread at a time. Barrier calls are per connection.
 * Errors: 0 or a negative DBAO_E* code; SAGA_ELOST when a lease was lost (another coordinator
 * took the transaction: stop working on it).
 */
#ifndef DENGBAO_SAGA_H
#define DENGBAO_SAGA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SAGA_ELOST  (-1101) /* the lease on a transaction is held by another owner */
#define SAGA_EEXIST (-1102) /* a transaction with this gid exists (with a different spec) */
#define SAGA_ENOENT (-1103) /* no such transaction */

#define SAGA_GID_MAX   128 /* bytes: [A-Za-z0-9._:-] */
#define SAGA_STEPS_MAX 64
#define SAGA_SPEC_MAX  (1u << 20) /* bytes of the submitted JSON */

typedef enum saga_state {
    SAGA_SUBMITTED = 0,    /* stored, not started */
    SAGA_RUNNING = 1,      /* forward */
    SAGA_COMPENSATING = 2, /* backward */
    SAGA_COMMITTED = 3,    /* final */
    SAGA_COMPENSATED = 4,  /* final */
    SAGA_PARKED = 5,       /* stopped for an operator, with a reason; admin may retry/resolve */
} saga_state;

typedef enum saga_step_state {
    SAGA_STEP_PENDING = 0,
    SAGA_STEP_RUNNING = 1, /* action sent at least once, outcome not known yet */
    SAGA_STEP_SUCCEEDED = 2,
    SAGA_STEP_FAILED = 3,       /* action definitely failed (no effect) */
    SAGA_STEP_COMPENSATING = 4, /* compensation sent, outcome not known yet */
    SAGA_STEP_COMPENSATED = 5,
} saga_step_state;

const char *saga_state_name(saga_state s);           /* "submitted", "running", ... */
const char *saga_step_state_name(saga_step_state s); /* "pending", "running", ... */
int saga_state_parse(const char *s, saga_state *out);

/* ---- durable store ----------------------------------------------------------------------- */

/* Backends: "sqlite:PATH" (embedded, one coordinator: WAL, synchronous=FULL) and a libpq
 * connection string "postgresql://..." or "host=... dbname=..." (several coordinators share
 * the work: a transaction is worked on only under a lease, claimed with
 * SELECT ... FOR UPDATE SKIP LOCKED and renewed; every write checks the lease in the same
 * statement, so a coordinator that lost its lease changes nothing and gets SAGA_ELOST).
 * The schema is created if missing and versioned (a newer one is refused). */
typedef struct saga_store saga_store;

typedef struct saga_store_opts {
    const char *owner; /* this coordinator's id (lease holder), required, <= 64 bytes */
    uint32_t lease_ms; /* lease duration; default 10000 */
} saga_store_opts;

int saga_store_open(saga_store **out, const char *url, const saga_store_opts *opts, dbao_err *err);
void saga_store_close(saga_store *s);

/* The persistent view of a transaction and its steps. Strings are owned by the record
 * (saga_tx_free). `spec` is the canonical JSON of the submitted transaction (steps, URLs,
 * payloads, options) exactly as stored. */
typedef struct saga_step_rec {
    uint32_t idx;
    uint8_t state;      /* saga_step_state */
    uint32_t attempts;  /* calls made in the current direction */
    int64_t next_at_ms; /* earliest next call, Unix ms (backoff) */
    char *last_error;   /* last unknown outcome or failure, short text, or NULL */
} saga_step_rec;

typedef struct saga_tx {
    char gid[SAGA_GID_MAX + 1];
    uint8_t state; /* saga_state */
    int64_t created_ms, updated_ms, deadline_ms;
    uint64_t version; /* incremented by every write */
    char *spec;       /* canonical JSON */
    size_t spec_len;
    char *reason; /* why it was parked / compensated, or NULL */
    saga_step_rec *steps;
    size_t num_steps;
} saga_tx;
void saga_tx_free(saga_tx *t); /* frees the members, not t */

/* saga_store_create inserts a new transaction (state SUBMITTED, steps PENDING) and gives this
 * owner its lease. Idempotent on gid: the same gid with the same spec returns 0 and sets
 * *existed; with another spec SAGA_EEXIST. */
int saga_store_create(saga_store *s, const char *gid, const char *spec, size_t spec_len,
                      size_t num_steps, int64_t deadline_ms, bool *existed, dbao_err *err);

/* saga_store_update writes the transaction's state, reason and the listed steps, checking
 * that this owner holds the lease (SAGA_ELOST otherwise) and renewing it. One database
 * transaction; durable when it returns 0. */
int saga_store_update(saga_store *s, const saga_tx *t, const uint32_t *step_idx, size_t n,
                      dbao_err *err);

/* Group commit: between saga_store_batch_begin and saga_store_batch_commit, create and update
 * calls join one database transaction and are durable only when the commit returns 0 (if it
 * fails, none of them happened). The coordinator batches the writes of many transactions this
 * way; an SAGA_ELOST inside a batch fails only that call (a savepoint), not the batch. */
int saga_store_batch_begin(saga_store *s, dbao_err *err);
int saga_store_batch_commit(saga_store *s, dbao_err *err);

/* saga_store_claim takes up to `max` unfinished transactions (SUBMITTED, RUNNING,
 * COMPENSATING) whose lease is free or expired, gives them to this owner, and loads them into
 * out[0..*num) (caller saga_tx_free's each). Used at start (recovery after a crash) and
 * periodically (work of a dead coordinator). */
int saga_store_claim(saga_store *s, saga_tx *out, size_t max, size_t *num, dbao_err *err);

/* saga_store_release gives a lease back (the transaction is final or parked, or this
 * coordinator stops). */
int saga_store_release(saga_store *s, const char *gid, dbao_err *err);

/* saga_store_get loads one transaction (any state), no lease needed. SAGA_ENOENT if absent. */
int saga_store_get(saga_store *s, const char *gid, saga_tx *out, dbao_err *err);

/* saga_store_list: transactions in `state` (or every unfinished and parked one when state is
 * -1) updated before `older_than_ms` (0: any), newest first, at most max. */
int saga_store_list(saga_store *s, int state, int64_t older_than_ms, saga_tx *out, size_t max,
                    size_t *num, dbao_err *err);

/* saga_store_admin_set: an operator's action on a parked transaction (or a stuck one):
 * state -> RUNNING / COMPENSATING (resume), or a final state (resolved by hand), with a
 * reason; steps' attempts reset. Clears the lease so that a coordinator claims it. */
int saga_store_admin_set(saga_store *s, const char *gid, saga_state to, const char *reason,
                         dbao_err *err);

/* saga_store_purge deletes final transactions last updated before `before_ms`; *deleted. */
int saga_store_purge(saga_store *s, int64_t before_ms, uint64_t *deleted, dbao_err *err);

/* ---- idempotency barrier (participants, PostgreSQL) ---------------------------------------- */

/* The barrier table, created by saga_barrier_schema() (also in docs/saga.md):
 *   CREATE TABLE IF NOT EXISTS dengbao_saga_barrier (
 *     gid text NOT NULL, branch text NOT NULL, op text NOT NULL,
 *     reason text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
 *     PRIMARY KEY (gid, branch, op));
 *   CREATE INDEX IF NOT EXISTS dengbao_saga_barrier_created ON dengbao_saga_barrier (created_at);
 * saga_barrier_call runs, in one local transaction on `conn` (libpq PGconn *):
 *   action:     INSERT (gid, branch, 'action', 'action') ON CONFLICT DO NOTHING;
 *               0 rows: a duplicate, or the compensation came first -> skip the business
 *               function (SAGA_BARRIER_DUPLICATE / SAGA_BARRIER_HANGING).
 *   compensate: INSERT (gid, branch, 'action', 'compensate') ON CONFLICT DO NOTHING;
 *               1 row: the action never ran -> a null compensation, recorded, business skipped
 *               (SAGA_BARRIER_NULL_COMPENSATION) and any later action is hanging;
 *               then INSERT (gid, branch, 'compensate', 'compensate') ON CONFLICT DO NOTHING;
 *               0 rows: a duplicate compensation -> skip.
 *   otherwise the business function runs on the same connection inside the transaction; it
 *   returns 0 to commit or a negative code to roll back (the barrier rows go with it, so a
 *   retry runs again). */
typedef enum saga_barrier_op { SAGA_OP_ACTION = 0, SAGA_OP_COMPENSATE = 1 } saga_barrier_op;

typedef enum saga_barrier_outcome {
    SAGA_BARRIER_RAN = 0,               /* the business function ran and committed */
    SAGA_BARRIER_DUPLICATE = 1,         /* already done: skipped (answer success again) */
    SAGA_BARRIER_NULL_COMPENSATION = 2, /* compensate before any action: recorded, skipped */
    SAGA_BARRIER_HANGING = 3,           /* action after its compensation: skipped; the
                                           participant must answer a definite failure (409) */
} saga_barrier_outcome;

const char *saga_barrier_schema(void);
typedef int (*saga_barrier_fn)(void *pgconn, void *arg, dbao_err *err);
int saga_barrier_call(void *pgconn, const char *gid, const char *branch, saga_barrier_op op,
                      saga_barrier_fn fn, void *arg, saga_barrier_outcome *outcome, dbao_err *err);
/* Delete barrier rows older than retention_s (> the coordinator's longest retry horizon). */
int saga_barrier_cleanup(void *pgconn, int64_t retention_s, uint64_t *deleted, dbao_err *err);

#ifdef __cplusplus
}
#endif

#endif /* DENGBAO_SAGA_H */
