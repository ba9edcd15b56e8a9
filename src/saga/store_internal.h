/* store_internal.h: the vtable between the saga store's dispatcher (store.c) and its two
 * backends (store_sqlite.c, store_pg.c). Private to src/saga and its unit tests.
 *
 * The dispatcher checks every argument once (gid syntax, lengths, states, batch nesting) and
 * then calls the backend; a backend may assume valid input. A backend's handle embeds
 * `struct saga_store` as its first member, so the dispatcher's pointer is the backend's.
 * docs/saga-store.md describes both schemas and the lease protocol.
 */
#ifndef DENGBAO_SAGA_STORE_INTERNAL_H
#define DENGBAO_SAGA_STORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"
#include "dengbao/saga.h"

#define SAGA_OWNER_MAX        64
#define SAGA_LEASE_DEFAULT_MS 10000u
#define SAGA_SCHEMA_VERSION   1
#define SAGA_REASON_MAX       1024 /* bytes of a stored reason or last_error; longer is cut */

typedef struct saga_create_item saga_create_item;

typedef struct saga_store_ops {
    const char *name;
    void (*close)(saga_store *s); /* rolls back an open batch */
    int (*create)(saga_store *s, const char *gid, const char *spec, size_t spec_len,
                  size_t num_steps, int64_t deadline_ms, bool *existed, dbao_err *err);
    int (*update)(saga_store *s, const saga_tx *t, const uint32_t *step_idx, size_t n,
                  dbao_err *err);
    int (*batch_begin)(saga_store *s, dbao_err *err);
    int (*batch_commit)(saga_store *s, dbao_err *err);
    int (*claim)(saga_store *s, saga_tx *out, size_t max, size_t *num, dbao_err *err);
    int (*release)(saga_store *s, const char *gid, dbao_err *err);
    int (*get)(saga_store *s, const char *gid, saga_tx *out, dbao_err *err);
    int (*list)(saga_store *s, int state, int64_t older_than_ms, saga_tx *out, size_t max,
                size_t *num, dbao_err *err);
    int (*admin_set)(saga_store *s, const char *gid, saga_state to, const char *reason,
                     dbao_err *err);
    int (*purge)(saga_store *s, int64_t before_ms, uint64_t *deleted, dbao_err *err);
    /* optional (deferred writes, see below): the i-th gid whose deferred write found no lease */
    const char *(*lost_gid)(saga_store *s, size_t i);
    /* optional: pipelined creates of checked items whose rc is 0 on entry */
    void (*create_many)(saga_store *s, saga_create_item *items, size_t n);
} saga_store_ops;

/* Owned by the thread that uses the store (saga.h: one thread at a time). */
struct saga_store {
    const saga_store_ops *ops;
    char owner[SAGA_OWNER_MAX + 1];
    uint32_t lease_ms;
    bool in_batch;     /* between batch_begin and batch_commit; set by the dispatcher */
    bool defer_writes; /* saga__store_defer_writes */
};

/* Deferred writes (the coordinator's group commit on PostgreSQL, where every call is a round
 * trip). saga__store_defer_writes(s, true) lets a backend that supports it (PostgreSQL) send
 * saga_store_update and saga_store_release INSIDE A BATCH without waiting for their answers
 * (libpq pipeline mode): they then return 0 at once unless the batch already failed, and their
 * answers are read at the next synchronous call or at saga_store_batch_commit. A real error
 * fails the batch as before (the commit rolls back and returns DBAO_EIO: none of it happened).
 * A write that found no lease (0 rows: lost, or the row is gone) wrote nothing and does not
 * fail the batch; after a successful commit saga__store_lost_gid(s, i) names them (i = 0, 1,
 * ...; NULL at the end; valid until the next batch_begin), and the caller must treat each as
 * SAGA_ELOST (drop it, call nothing for it). Outside a batch, and on SQLite, every call stays
 * synchronous. Off by default: the public contract of saga.h (SAGA_ELOST from the call itself)
 * holds unless the owner of the handle asks for this. */
void saga__store_defer_writes(saga_store *s, bool on);

/* saga__store_create_many: saga_store_create for n transactions, with the same checks and the
 * same outcome per item (rc, existed, err), in the order given. With deferred writes inside a
 * batch, PostgreSQL sends the n INSERTs pipelined and reads their answers together (one round
 * trip, plus one per gid that already existed); otherwise one saga_store_create each. The
 * answers are known when it returns (the coordinator needs `existed` before it advances). */
struct saga_create_item {
    const char *gid, *spec;
    size_t spec_len, num_steps;
    int64_t deadline_ms;
    int rc;       /* out */
    bool existed; /* out */
    dbao_err err; /* out (when rc != 0) */
};
void saga__store_create_many(saga_store *s, saga_create_item *items, size_t n);
const char *saga__store_lost_gid(saga_store *s, size_t i);

/* Backends' constructors: `target` is the URL without the "sqlite:" prefix for SQLite, the
 * whole libpq connection string for PostgreSQL. `opts` is checked (owner set, lease_ms > 0). */
int saga__sqlite_open(saga_store **out, const char *path, const saga_store_opts *opts,
                      dbao_err *err);
int saga__pg_open(saga_store **out, const char *conninfo, const saga_store_opts *opts,
                  dbao_err *err);

/* saga__sqlite_set_synchronous switches an open SQLite store to PRAGMA synchronous "NORMAL" or
 * "FULL" (the default). For the durability measurement in the unit test only. */
int saga__sqlite_set_synchronous(saga_store *s, const char *mode);

/* Helpers shared by the backends (store.c). */
int64_t saga__now_ms(void);                     /* CLOCK_REALTIME in Unix ms */
char *saga__strndup(const char *p, size_t len); /* NUL-terminated copy, NULL on ENOMEM */
/* saga__tx_steps_alloc gives t->steps room for n zeroed steps (n may be 0). */
int saga__tx_steps_alloc(saga_tx *t, size_t n, dbao_err *err);
/* saga__text_clean returns `s` itself when it is valid UTF-8 of at most SAGA_REASON_MAX bytes,
 * else a copy in `buf` (SAGA_REASON_MAX + 1 bytes) cut at a character boundary, with every byte
 * of an invalid sequence replaced by '?'. NULL stays NULL. (PostgreSQL refuses invalid UTF-8 in
 * text; a participant's answer quoted in a reason must never make a write fail.) */
const char *saga__text_clean(const char *s, char *buf);
bool saga__state_is_final(int state);

#endif /* DENGBAO_SAGA_STORE_INTERNAL_H */
