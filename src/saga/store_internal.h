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
} saga_store_ops;

/* Owned by the thread that uses the store (saga.h: one thread at a time). */
struct saga_store {
    const saga_store_ops *ops;
    char owner[SAGA_OWNER_MAX + 1];
    uint32_t lease_ms;
    bool in_batch; /* between batch_begin and batch_commit; set by the dispatcher */
};

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
