/* store.c: the saga store's dispatcher (saga.h, "durable store"): URL dispatch to a backend,
 * argument checks shared by both backends, the state names, and saga_tx_free.
 *
 * URLs: "sqlite:PATH" opens the embedded backend (store_sqlite.c: one coordinator per
 * database, WAL, synchronous=FULL); "postgresql://...", "postgres://..." or a key=value libpq
 * string containing "=" opens the shared backend (store_pg.c: several coordinators, leases
 * checked in every write). Anything else is refused (DBAO_EINVAL naming the scheme).
 *
 * Invariants checked here, once, so that the backends can trust their input:
 *   - gid: 1..SAGA_GID_MAX bytes of [A-Za-z0-9._:-];
 *   - spec: 1..SAGA_SPEC_MAX bytes, no NUL byte (it is stored as text);
 *   - num_steps <= SAGA_STEPS_MAX, step indexes < SAGA_STEPS_MAX, states in their enums;
 *   - batches do not nest, a commit needs a begin.
 * The schemas, the lease protocol and the durability settings are in docs/saga-store.md.
 *
 * Threading: a saga_store belongs to one thread at a time (saga.h); nothing here is global.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"

static const char *const STATE_NAMES[] = {"submitted", "running",     "compensating",
                                          "committed", "compensated", "parked"};
static const char *const STEP_NAMES[] = {"pending", "running",      "succeeded",
                                         "failed",  "compensating", "compensated"};

const char *
saga_state_name(saga_state s)
{
    return (unsigned) s < sizeof STATE_NAMES / sizeof STATE_NAMES[0] ? STATE_NAMES[s] : "unknown";
}

const char *
saga_step_state_name(saga_step_state s)
{
    return (unsigned) s < sizeof STEP_NAMES / sizeof STEP_NAMES[0] ? STEP_NAMES[s] : "unknown";
}

int
saga_state_parse(const char *s, saga_state *out)
{
    if (s == NULL || out == NULL) {
        return DBAO_EINVAL;
    }
    for (size_t i = 0; i < sizeof STATE_NAMES / sizeof STATE_NAMES[0]; i++) {
        if (strcmp(s, STATE_NAMES[i]) == 0) {
            *out = (saga_state) i;
            return 0;
        }
    }
    return DBAO_EINVAL;
}

void
saga_tx_free(saga_tx *t)
{
    if (t == NULL) {
        return;
    }
    dbao_free(t->spec);
    dbao_free(t->reason);
    for (size_t i = 0; i < t->num_steps && t->steps != NULL; i++) {
        dbao_free(t->steps[i].last_error);
    }
    dbao_free(t->steps);
    memset(t, 0, sizeof *t);
}

/* ---- helpers shared by the backends --------------------------------------------------------- */

int64_t
saga__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *
saga__strndup(const char *p, size_t len)
{
    char *d = dbao_malloc(len + 1);
    if (d != NULL) {
        if (len > 0) {
            memcpy(d, p, len);
        }
        d[len] = 0;
    }
    return d;
}

int
saga__tx_steps_alloc(saga_tx *t, size_t n, dbao_err *err)
{
    t->steps = NULL;
    t->num_steps = 0;
    if (n == 0) {
        return 0;
    }
    t->steps = dbao_calloc(n, sizeof *t->steps);
    if (t->steps == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "saga store: out of memory for %zu steps", n);
    }
    t->num_steps = n;
    return 0;
}

bool
saga__state_is_final(int state)
{
    return state == SAGA_COMMITTED || state == SAGA_COMPENSATED;
}

/* utf8_seq returns the length of the valid UTF-8 sequence at p (at most `left` bytes), 0 if
 * the bytes there are not one (overlong forms, surrogates and values above U+10FFFF too). */
static size_t
utf8_seq(const unsigned char *p, size_t left)
{
    unsigned c = p[0];
    if (c >= 0x01 && c < 0x80) {
        return 1;
    }
    size_t n;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, min = 0x10000;
    } else {
        return 0;
    }
    if (n > left) {
        return 0;
    }
    unsigned v = c & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        return 0;
    }
    return n;
}

const char *
saga__text_clean(const char *s, char *buf)
{
    if (s == NULL) {
        return NULL;
    }
    size_t len = strlen(s);
    const unsigned char *p = (const unsigned char *) s;
    bool clean = len <= SAGA_REASON_MAX;
    for (size_t i = 0; clean && i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n == 0) {
            clean = false;
        }
        i += n;
    }
    if (clean) {
        return s;
    }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        size_t take = n == 0 ? 1 : n;
        if (o + take > SAGA_REASON_MAX) {
            break;
        }
        if (n == 0) {
            buf[o++] = '?';
        } else {
            memcpy(buf + o, p + i, n);
            o += n;
        }
        i += take;
    }
    buf[o] = 0;
    return buf;
}

/* ---- argument checks ------------------------------------------------------------------------ */

static int
check_gid(const char *gid, dbao_err *err)
{
    size_t len = gid != NULL ? strnlen(gid, SAGA_GID_MAX + 1) : 0;
    if (len == 0 || len > SAGA_GID_MAX) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: gid must be 1..%d bytes", SAGA_GID_MAX);
    }
    for (size_t i = 0; i < len; i++) {
        char c = gid[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-')) {
            return dbao_err_set(err, DBAO_EINVAL,
                                "saga store: gid has a character outside [A-Za-z0-9._:-]");
        }
    }
    return 0;
}

static int
check_store(saga_store *s, dbao_err *err)
{
    if (s == NULL || s->ops == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: store is NULL");
    }
    return 0;
}

int
saga_store_open(saga_store **out, const char *url, const saga_store_opts *opts, dbao_err *err)
{
    if (out == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: out is NULL");
    }
    *out = NULL;
    if (url == NULL || url[0] == 0) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: url is empty");
    }
    if (opts == NULL || opts->owner == NULL || opts->owner[0] == 0 ||
        strnlen(opts->owner, SAGA_OWNER_MAX + 1) > SAGA_OWNER_MAX) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: owner must be 1..%d bytes",
                            SAGA_OWNER_MAX);
    }
    saga_store_opts o = *opts;
    if (o.lease_ms == 0) {
        o.lease_ms = SAGA_LEASE_DEFAULT_MS;
    }
    if (o.lease_ms > 24u * 3600u * 1000u) {
        return dbao_err_set(err, DBAO_ERANGE, "saga store: lease_ms above one day");
    }
    if (strncmp(url, "sqlite:", 7) == 0) {
        if (url[7] == 0) {
            return dbao_err_set(err, DBAO_EINVAL, "saga store: sqlite url has no path");
        }
        return saga__sqlite_open(out, url + 7, &o, err);
    }
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0 ||
        (strstr(url, "://") == NULL && strchr(url, '=') != NULL)) {
        return saga__pg_open(out, url, &o, err);
    }
    const char *colon = strchr(url, ':');
    int n = colon != NULL && colon - url < 32 ? (int) (colon - url) : 0;
    return dbao_err_set(err, DBAO_EINVAL,
                        "saga store: url scheme '%.*s' unknown (sqlite:PATH or postgresql://)", n,
                        url);
}

void
saga_store_close(saga_store *s)
{
    if (s != NULL && s->ops != NULL) {
        s->ops->close(s);
    }
}

int
saga_store_create(saga_store *s, const char *gid, const char *spec, size_t spec_len,
                  size_t num_steps, int64_t deadline_ms, bool *existed, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0 || (rc = check_gid(gid, err)) != 0) {
        return rc;
    }
    if (spec == NULL || spec_len == 0 || spec_len > SAGA_SPEC_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "saga store: spec must be 1..%u bytes",
                            SAGA_SPEC_MAX);
    }
    if (memchr(spec, 0, spec_len) != NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: spec contains a NUL byte");
    }
    if (num_steps > SAGA_STEPS_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "saga store: num_steps above %d", SAGA_STEPS_MAX);
    }
    bool ex = false;
    rc = s->ops->create(s, gid, spec, spec_len, num_steps, deadline_ms, &ex, err);
    if (existed != NULL) {
        *existed = rc == 0 && ex;
    }
    return rc;
}

void
saga__store_create_many(saga_store *s, saga_create_item *items, size_t n)
{
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        saga_create_item *it = &items[i];
        it->existed = false;
        it->err.msg[0] = 0;
        int rc = check_store(s, &it->err);
        if (rc == 0) {
            rc = check_gid(it->gid, &it->err);
        }
        if (rc == 0 && (it->spec == NULL || it->spec_len == 0 || it->spec_len > SAGA_SPEC_MAX)) {
            rc = dbao_err_set(&it->err, DBAO_ERANGE, "saga store: spec must be 1..%u bytes",
                              SAGA_SPEC_MAX);
        }
        if (rc == 0 && memchr(it->spec, 0, it->spec_len) != NULL) {
            rc = dbao_err_set(&it->err, DBAO_EINVAL, "saga store: spec contains a NUL byte");
        }
        if (rc == 0 && it->num_steps > SAGA_STEPS_MAX) {
            rc = dbao_err_set(&it->err, DBAO_ERANGE, "saga store: num_steps above %d",
                              SAGA_STEPS_MAX);
        }
        it->rc = rc;
        ok += rc == 0;
    }
    if (ok == 0) {
        return;
    }
    if (s->in_batch && s->defer_writes && s->ops->create_many != NULL && ok > 1) {
        s->ops->create_many(s, items, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        saga_create_item *it = &items[i];
        if (it->rc == 0) {
            bool ex = false;
            it->rc = s->ops->create(s, it->gid, it->spec, it->spec_len, it->num_steps,
                                    it->deadline_ms, &ex, &it->err);
            it->existed = it->rc == 0 && ex;
        }
    }
}

int
saga_store_update(saga_store *s, const saga_tx *t, const uint32_t *step_idx, size_t n,
                  dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0) {
        return rc;
    }
    if (t == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: update: tx is NULL");
    }
    if ((rc = check_gid(t->gid, err)) != 0) {
        return rc;
    }
    if (t->state > SAGA_PARKED) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: update: state %u unknown", t->state);
    }
    if (n > 0 && step_idx == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: update: step_idx is NULL");
    }
    if (n > SAGA_STEPS_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "saga store: update: more than %d steps listed",
                            SAGA_STEPS_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t k = step_idx[i];
        if (k >= t->num_steps || t->steps == NULL || t->steps[k].idx != k) {
            return dbao_err_set(err, DBAO_EINVAL,
                                "saga store: update: step %u not in the record (steps[i].idx "
                                "must be i)",
                                k);
        }
        if (t->steps[k].state > SAGA_STEP_COMPENSATED) {
            return dbao_err_set(err, DBAO_EINVAL, "saga store: update: step %u state %u unknown", k,
                                t->steps[k].state);
        }
    }
    return s->ops->update(s, t, step_idx, n, err);
}

int
saga_store_batch_begin(saga_store *s, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0) {
        return rc;
    }
    if (s->in_batch) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: batch already open");
    }
    if ((rc = s->ops->batch_begin(s, err)) == 0) {
        s->in_batch = true;
    }
    return rc;
}

int
saga_store_batch_commit(saga_store *s, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0) {
        return rc;
    }
    if (!s->in_batch) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: batch commit without a begin");
    }
    rc = s->ops->batch_commit(s, err);
    s->in_batch = false; /* committed or rolled back: either way the batch is over */
    return rc;
}

void
saga__store_defer_writes(saga_store *s, bool on)
{
    if (s != NULL) {
        s->defer_writes = on;
    }
}

const char *
saga__store_lost_gid(saga_store *s, size_t i)
{
    if (s == NULL || s->ops->lost_gid == NULL || s->in_batch) {
        return NULL;
    }
    return s->ops->lost_gid(s, i);
}

int
saga_store_claim(saga_store *s, saga_tx *out, size_t max, size_t *num, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0) {
        return rc;
    }
    if (num == NULL || (max > 0 && out == NULL)) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: claim: out or num is NULL");
    }
    *num = 0;
    if (max == 0) {
        return 0;
    }
    if (max > 100000) {
        max = 100000;
    }
    return s->ops->claim(s, out, max, num, err);
}

int
saga_store_release(saga_store *s, const char *gid, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0 || (rc = check_gid(gid, err)) != 0) {
        return rc;
    }
    return s->ops->release(s, gid, err);
}

int
saga_store_get(saga_store *s, const char *gid, saga_tx *out, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0 || (rc = check_gid(gid, err)) != 0) {
        return rc;
    }
    if (out == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: get: out is NULL");
    }
    memset(out, 0, sizeof *out);
    return s->ops->get(s, gid, out, err);
}

int
saga_store_list(saga_store *s, int state, int64_t older_than_ms, saga_tx *out, size_t max,
                size_t *num, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0) {
        return rc;
    }
    if (num == NULL || (max > 0 && out == NULL)) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: list: out or num is NULL");
    }
    if (state < -1 || state > SAGA_PARKED) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: list: state %d unknown", state);
    }
    if (older_than_ms < 0) {
        return dbao_err_set(err, DBAO_EINVAL, "saga store: list: older_than_ms is negative");
    }
    *num = 0;
    if (max == 0) {
        return 0;
    }
    if (max > 100000) {
        max = 100000;
    }
    return s->ops->list(s, state, older_than_ms, out, max, num, err);
}

int
saga_store_admin_set(saga_store *s, const char *gid, saga_state to, const char *reason,
                     dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0 || (rc = check_gid(gid, err)) != 0) {
        return rc;
    }
    if (to != SAGA_RUNNING && to != SAGA_COMPENSATING && to != SAGA_COMMITTED &&
        to != SAGA_COMPENSATED && to != SAGA_PARKED) {
        return dbao_err_set(err, DBAO_EINVAL,
                            "saga store: admin_set: state must be running, compensating, "
                            "committed, compensated or parked");
    }
    return s->ops->admin_set(s, gid, to, reason, err);
}

int
saga_store_purge(saga_store *s, int64_t before_ms, uint64_t *deleted, dbao_err *err)
{
    int rc;
    if ((rc = check_store(s, err)) != 0) {
        return rc;
    }
    uint64_t d = 0;
    rc = s->ops->purge(s, before_ms, &d, err);
    if (deleted != NULL) {
        *deleted = d;
    }
    return rc;
}
