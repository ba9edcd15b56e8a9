/* coord.c: the saga coordinator's execution engine.
 *
 * What: one engine thread owns the store (saga.h: a saga_store belongs to one thread), the
 * participant caller (caller.c, libcurl multi) and every transaction it holds a lease on, in
 * memory. Each turn of its loop:
 *   1. takes the queued requests (submit, get, list, admin) from the HTTP threads;
 *   2. applies finished calls' results to the in-memory transactions and advances every
 *      transaction that is ready (a result arrived, a backoff timer or its deadline expired,
 *      it was just submitted or claimed): the state machine below decides the next calls
 *      and writes their "sent" state (step RUNNING / COMPENSATING, attempts + 1) in memory;
 *   3. writes every new and changed transaction in ONE store batch (group commit: one
 *      database transaction and one fsync for all of them; on PostgreSQL the batch's
 *      statements are pipelined, store_internal.h "deferred writes", and a lease found lost
 *      is reported at the commit: that transaction is dropped before any of its calls);
 *   4. only after the commit: answers the submits, starts the decided calls, hands the
 *      audit records of the turn to the audit log (one request), frees finished transactions;
 *   5. polls the caller (curl_multi_poll) until a transfer finishes, a request is queued
 *      (curl_multi_wakeup) or the next timer is due.
 * So a step's "sent" state is durable before its call, and its result is durable before any
 * call that depends on it (the result and the next call's "sent" state commit together).
 * No thread per transaction, no fsync per transaction: thousands run concurrently.
 *
 * State machine (per transaction; docs/saga.md has the prose):
 *   RUNNING: groups in increasing order; every step of the lowest unfinished group is called
 *     (2xx: SUCCEEDED; 409/422: FAILED, definite; anything else: unknown, retried after a
 *     full-jitter backoff, delay = random(0, min(max, initial * 2^(attempt-1))), up to
 *     max_attempts calls). Nothing new starts while a decision is pending; once no call is in
 *     flight: a FAILED step, an exhausted backward step, or the deadline -> COMPENSATING; an
 *     exhausted forward step -> PARKED; every step SUCCEEDED -> COMMITTED.
 *   COMPENSATING: every step that may have run (RUNNING, SUCCEEDED, COMPENSATING: the
 *     participants' barrier turns a compensation of an action that never ran into a null
 *     compensation) is compensated, highest group first (reverse order); 2xx: COMPENSATED;
 *     409/422: refused -> PARKED with "compensation refused: <status> <body>"; unknown:
 *     retried; exhausted -> PARKED. All done -> COMPENSATED.
 * Final and parked transactions are released (lease) and dropped from memory.
 *
 * Leases: every write renews the lease; an idle transaction (long backoff) is rewritten at a
 * third of the lease. SAGA_ELOST on a write drops the transaction at once: its in-flight
 * results are ignored and it is never called for again (another coordinator owns it).
 * Claims: at start and every claim interval saga_store_claim takes unfinished transactions
 * whose lease is free or expired (after a crash: ours; on PostgreSQL: a dead coordinator's).
 *
 * Audit (fail closed): every state change is an audit record (event_type "saga.<what>",
 * object = gid, details {gid, step, op, outcome, attempt, idempotency_key, reason?,
 * trace_id?}). The records of one turn go to the log in one audit_log_submit; a submit's 201
 * is sent only when that request is durable (its done callback answers). If the log fails,
 * submits are refused (503), no participant is called any more and /healthz says unhealthy.
 *
 * Crash points (tests): DENGBAO_SAGA_CRASH="<point>:<n>" raises SIGKILL the n-th time the
 * engine passes <point> (after_create, before_call, after_call, after_store, before_final,
 * after_final).
 *
 * Atomics: counters for /metrics are relaxed (monotonic statistics, no ordering needed);
 * `audit_failed` is set with release by the audit writer thread and read with acquire by the
 * engine and HTTP threads, so the failure is seen before any later decision that depends on it
 * (a stale read only delays refusal by one turn). The request queue uses a mutex.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coord.h"
#include "store_internal.h"

#define HASH_BUCKETS (1u << 16)
#define CLAIM_BATCH  512

typedef struct cstep {
    uint8_t state; /* saga_step_state */
    uint32_t attempts;
    int64_t next_at_ms;
    char *last_error;
    char *body[2]; /* action / compensate request bodies, built once */
    size_t body_len[2];
} cstep;

typedef struct csaga {
    char gid[SAGA_GID_MAX + 1];
    uint8_t state;
    int64_t created_ms, updated_ms, deadline_ms, last_write_ms;
    uint64_t version;
    char *reason;
    saga_spec spec;
    cstep *steps;
    uint64_t inflight_mask; /* steps with a call out */
    uint64_t refused_mask;  /* compensations definitely refused */
    uint64_t dsteps;        /* steps changed since the last write (only those are written) */
    unsigned inflight;
    bool dirty, dead, in_ready, is_new, was_final, blocked;
    uint64_t stored_results; /* results applied since the last commit (after_store point) */
    long heap_pos;           /* index in the timer heap, -1 if none */
    saga_req *waiters;
    struct csaga *hnext, *rnext, *dnext, *bnext;
} csaga;

typedef struct heap_ent {
    int64_t at;
    csaga *s;
} heap_ent;

typedef struct pending_call {
    csaga *s;
    uint32_t idx;
    uint8_t op; /* 0 action, 1 compensate */
    uint32_t attempt;
    struct pending_call *next;
} pending_call;

typedef struct audit_batch {
    audit_log_req req;
    dbao_buf data;
    uint32_t *lens;
    size_t num, cap;
    saga_req *replies; /* answered when the records are durable */
    saga_coord *c;
} audit_batch;

struct saga_coord {
    saga_coord_opts o;
    char owner[65];
    char *allow_store[SAGA_ALLOW_MAX];
    const char *allow_ptrs[SAGA_ALLOW_MAX];
    saga_store *store;
    saga_caller *caller;
    pthread_t thread;
    bool started, joined;
    pthread_mutex_t mu;
    saga_req *q_head, *q_tail;
    atomic_bool stop_req;
    uint32_t drain_ms;
    atomic_bool running;
    atomic_bool audit_failed;
    atomic_bool store_failed;
    /* engine-only state */
    csaga **buckets;
    size_t num_sagas;
    csaga *ready;
    heap_ent *heap;
    size_t heap_n, heap_cap;
    pending_call *calls, *calls_tail;
    saga_req *waiting; /* GET/submit waits on sagas not in memory: none; kept per saga */
    audit_batch *ab;
    uint64_t rng;
    int64_t next_claim_ms, next_purge_ms;
    bool claim_now;
    size_t calls_out;                   /* calls decided or in flight, bounded by max_inflight */
    csaga *blocked_head, *blocked_tail; /* waiting for call capacity, FIFO */
    /* crash points */
    char crash_point[32];
    long crash_n, crash_seen;
    /* metrics (relaxed) */
    atomic_uint_fast64_t m_submitted, m_committed, m_compensated, m_parked, m_calls_ok,
        m_calls_failed, m_calls_unknown, m_retries, m_store_commits, m_store_us, m_lost, m_inflight,
        m_active, m_turns, m_turn_us, m_poll_us, m_create_us, m_call_us, m_store_writes;
};

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t
rnd(saga_coord *c)
{
    uint64_t x = c->rng; /* xorshift64*: jitter only, not security */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void
crash_point(saga_coord *c, const char *point)
{
    if (c->crash_point[0] == 0 || strcmp(c->crash_point, point) != 0)
        return;
    if (++c->crash_seen == c->crash_n) {
        fprintf(stderr, "saga: crash point %s:%ld reached, SIGKILL\n", point, c->crash_n);
        fflush(stderr);
        raise(SIGKILL);
    }
}

/* ---- JSON helpers -------------------------------------------------------------------------- */

static int
json_str(dbao_buf *b, const char *s)
{
    int rc = dbao_buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *) s; *p && rc == 0; p++) {
        if (*p == '"' || *p == '\\')
            rc = dbao_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            rc = dbao_buf_printf(b, "\\u%04x", *p);
        else
            rc = dbao_buf_putc(b, (char) *p);
    }
    return rc | dbao_buf_putc(b, '"');
}

static const char *
op_name(int op)
{
    return op ? "compensate" : "action";
}

/* ---- saga objects ---------------------------------------------------------------------------- */

static uint32_t
gid_hash(const char *g)
{
    uint32_t h = 2166136261u;
    for (; *g; g++)
        h = (h ^ (uint8_t) *g) * 16777619u;
    return h & (HASH_BUCKETS - 1);
}

static csaga *
find_saga(saga_coord *c, const char *gid)
{
    for (csaga *s = c->buckets[gid_hash(gid)]; s != NULL; s = s->hnext)
        if (!s->dead && strcmp(s->gid, gid) == 0)
            return s;
    return NULL;
}

static void
saga_destroy(csaga *s)
{
    for (size_t i = 0; i < s->spec.num_steps; i++) {
        free(s->steps[i].last_error);
        free(s->steps[i].body[0]);
        free(s->steps[i].body[1]);
    }
    free(s->steps);
    free(s->reason);
    saga_spec_free(&s->spec);
    free(s);
}

static void
unlink_saga(saga_coord *c, csaga *s)
{
    csaga **pp = &c->buckets[gid_hash(s->gid)];
    while (*pp != NULL && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp == s) {
        *pp = s->hnext;
        c->num_sagas--;
        atomic_store_explicit(&c->m_active, c->num_sagas, memory_order_relaxed);
    }
}

static void
maybe_free(saga_coord *c, csaga *s)
{
    (void) c;
    if (s->dead && s->inflight == 0 && !s->in_ready && !s->dirty && !s->blocked)
        saga_destroy(s);
}

/* build_saga: the in-memory transaction from a parsed spec (takes ownership of *spec). */
static int
build_saga(csaga **out, saga_spec *spec)
{
    csaga *s = calloc(1, sizeof *s);
    if (s == NULL)
        return DBAO_ENOMEM;
    s->heap_pos = -1;
    s->spec = *spec;
    memset(spec, 0, sizeof *spec);
    snprintf(s->gid, sizeof s->gid, "%s", s->spec.gid);
    s->steps = calloc(s->spec.num_steps, sizeof *s->steps);
    if (s->steps == NULL) {
        saga_spec_free(&s->spec);
        free(s);
        return DBAO_ENOMEM;
    }
    for (size_t i = 0; i < s->spec.num_steps; i++) {
        for (int op = 0; op < 2; op++) {
            dbao_buf b = {0};
            int rc = dbao_buf_printf(&b,
                                     "{\"gid\":\"%s\",\"step\":%zu,\"branch\":\"%zu\","
                                     "\"op\":\"%s\",\"payload\":%s}",
                                     s->gid, i, i, op_name(op), s->spec.steps[i].payload);
            if (rc != 0) {
                dbao_buf_free(&b);
                saga_destroy(s);
                return DBAO_ENOMEM;
            }
            s->steps[i].body[op] = dbao_buf_take(&b, &s->steps[i].body_len[op]);
        }
    }
    *out = s;
    return 0;
}

static void
insert_saga(saga_coord *c, csaga *s)
{
    uint32_t h = gid_hash(s->gid);
    s->hnext = c->buckets[h];
    c->buckets[h] = s;
    c->num_sagas++;
    atomic_store_explicit(&c->m_active, c->num_sagas, memory_order_relaxed);
}

static void
set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = NULL;
    if (src != NULL) {
        size_t n = strlen(src);
        *dst = malloc(n + 1);
        if (*dst != NULL)
            memcpy(*dst, src, n + 1);
    }
}

static void
make_ready(saga_coord *c, csaga *s)
{
    if (s->in_ready || s->dead)
        return;
    s->in_ready = true;
    s->rnext = c->ready;
    c->ready = s;
}

static void
mark_dirty(saga_coord *c, csaga *s)
{
    (void) c;
    s->dirty = true;
}

/* ---- timers: an indexed binary heap, one entry per transaction (its earliest wake) --------- */

static void
heap_swap_in(saga_coord *c, size_t i, heap_ent e)
{
    c->heap[i] = e;
    e.s->heap_pos = (long) i;
}

static void
heap_sift(saga_coord *c, size_t i)
{
    heap_ent e = c->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (c->heap[p].at <= e.at)
            break;
        heap_swap_in(c, i, c->heap[p]);
        i = p;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        int64_t best = e.at;
        if (l < c->heap_n && c->heap[l].at < best) {
            m = l;
            best = c->heap[l].at;
        }
        if (r < c->heap_n && c->heap[r].at < best)
            m = r;
        if (m == i)
            break;
        heap_swap_in(c, i, c->heap[m]);
        i = m;
    }
    heap_swap_in(c, i, e);
}

/* heap_push: wake s at `at` or earlier (keeps the earlier of the two). */
static void
heap_push(saga_coord *c, csaga *s, int64_t at)
{
    if (s->dead)
        return;
    if (s->heap_pos >= 0) {
        if (c->heap[s->heap_pos].at <= at)
            return;
        c->heap[s->heap_pos].at = at;
        heap_sift(c, (size_t) s->heap_pos);
        return;
    }
    if (c->heap_n == c->heap_cap) {
        size_t nc = c->heap_cap ? c->heap_cap * 2 : 1024;
        heap_ent *nh = realloc(c->heap, nc * sizeof *nh);
        if (nh == NULL)
            return; /* lease renewal by claim later; the engine retries on the next turn */
        c->heap = nh;
        c->heap_cap = nc;
    }
    size_t i = c->heap_n++;
    c->heap[i] = (heap_ent){at, s};
    s->heap_pos = (long) i;
    heap_sift(c, i);
}

static void
heap_remove(saga_coord *c, csaga *s)
{
    if (s->heap_pos < 0)
        return;
    size_t i = (size_t) s->heap_pos;
    s->heap_pos = -1;
    heap_ent last = c->heap[--c->heap_n];
    if (i < c->heap_n) {
        c->heap[i] = last;
        last.s->heap_pos = (long) i;
        heap_sift(c, i);
    }
}

/* ---- audit ------------------------------------------------------------------------------------
 */

static void
audit_add(saga_coord *c, const csaga *s, const char *what, int step, int op, const char *outcome,
          uint32_t attempt, const char *reason, bool failure)
{
    if (c->o.log == NULL)
        return;
    if (c->ab == NULL) {
        c->ab = calloc(1, sizeof *c->ab);
        if (c->ab == NULL) {
            atomic_store_explicit(&c->audit_failed, true, memory_order_release);
            return;
        }
        c->ab->c = c;
    }
    audit_batch *ab = c->ab;
    audit_record r;
    audit_record_init(&r);
    r.time_ns = audit_now_ns();
    audit_uuid7_generate(r.event_id, r.time_ns);
    snprintf(r.subject.id, sizeof r.subject.id, "%s", c->owner);
    snprintf(r.event_type, sizeof r.event_type, "saga.%s", what);
    snprintf(r.action, sizeof r.action, "%s", what);
    snprintf(r.object, sizeof r.object, "%s", s->gid);
    snprintf(r.source, sizeof r.source, "%s", c->o.audit_source ? c->o.audit_source : "saga");
    r.result = failure ? AUDIT_RESULT_FAILURE : AUDIT_RESULT_SUCCESS;
    if (s->spec.trace_id[0])
        snprintf(r.trace_id, sizeof r.trace_id, "00-%s-%016llx-01", s->spec.trace_id,
                 (unsigned long long) ((rnd(c) | 1u)));
    dbao_buf d = {0};
    int rc = dbao_buf_printf(&d, "{\"gid\":\"%s\"", s->gid);
    if (step >= 0) {
        rc |= dbao_buf_printf(&d, ",\"step\":%d,\"op\":\"%s\",\"attempt\":%u", step, op_name(op),
                              attempt);
        rc |= dbao_buf_printf(&d, ",\"idempotency_key\":\"%s:%d:%s\"", s->gid, step, op_name(op));
    }
    rc |= dbao_buf_printf(&d, ",\"outcome\":\"%s\"", outcome);
    if (reason != NULL) {
        rc |= dbao_buf_printf(&d, ",\"reason\":");
        rc |= json_str(&d, reason);
    }
    if (s->spec.trace_id[0])
        rc |= dbao_buf_printf(&d, ",\"trace_id\":\"%s\"", s->spec.trace_id);
    rc |= dbao_buf_putc(&d, '}');
    dbao_err err;
    size_t len = 0;
    if (rc == 0)
        rc = audit_record_set_details(&r, d.data, d.len, &err);
    dbao_buf_free(&d);
    if (rc == 0)
        rc = dbao_buf_reserve(&ab->data, AUDIT_RECORD_MAX);
    if (rc == 0)
        rc = audit_record_encode(&r, (uint8_t *) ab->data.data + ab->data.len, &len,
                                 AUDIT_RECORD_MAX, &err);
    audit_record_cleanup(&r);
    if (rc == 0 && ab->num == ab->cap) {
        size_t nc = ab->cap ? ab->cap * 2 : 256;
        uint32_t *nl = realloc(ab->lens, nc * sizeof *nl);
        if (nl == NULL)
            rc = DBAO_ENOMEM;
        else {
            ab->lens = nl;
            ab->cap = nc;
        }
    }
    if (rc != 0) {
        atomic_store_explicit(&c->audit_failed, true, memory_order_release);
        return;
    }
    ab->data.len += len;
    ab->lens[ab->num++] = (uint32_t) len;
}

static void
reply_json(saga_req *r, int status, const char *body)
{
    r->reply(r, status, body, strlen(body));
}

static void
reply_err(saga_req *r, int status, const char *msg)
{
    dbao_buf b = {0};
    if (dbao_buf_printf(&b, "{\"error\":") == 0 && json_str(&b, msg) == 0 &&
        dbao_buf_putc(&b, '}') == 0)
        r->reply(r, status, b.data, b.len);
    else
        r->reply(r, 500, "{\"error\":\"out of memory\"}", 26);
    dbao_buf_free(&b);
}

static void
audit_done(audit_log_req *req)
{
    audit_batch *ab = req->arg;
    if (req->status != 0)
        atomic_store_explicit(&ab->c->audit_failed, true, memory_order_release);
    saga_req *r = ab->replies;
    while (r != NULL) {
        saga_req *n = r->next_;
        if (req->status == 0)
            r->reply(r, r->status_, r->reason, strlen(r->reason));
        else
            reply_err(r, 503, "the audit trail cannot be written");
        r = n;
    }
    dbao_buf_free(&ab->data);
    free(ab->lens);
    free(ab);
}

/* audit_flush submits the turn's records; replies queued on the batch are sent when durable. */
static void
audit_flush(saga_coord *c)
{
    audit_batch *ab = c->ab;
    c->ab = NULL;
    if (ab == NULL)
        return;
    if (ab->num == 0) {
        ab->req.status = 0;
        ab->req.arg = ab;
        audit_done(&ab->req);
        return;
    }
    ab->req.data = (const uint8_t *) ab->data.data;
    ab->req.lens = ab->lens;
    ab->req.num = ab->num;
    ab->req.done = audit_done;
    ab->req.arg = ab;
    if (audit_log_submit(c->o.log, &ab->req) != 0) {
        ab->req.status = DBAO_EIO;
        audit_done(&ab->req);
    }
}

/* ---- rendering ------------------------------------------------------------------------------ */

typedef struct view_step {
    const char *name;
    uint8_t state;
    uint32_t attempts;
    const char *last_error;
} view_step;

static int
render(dbao_buf *b, const char *gid, uint8_t state, const char *reason, int64_t created,
       int64_t updated, const view_step *st, size_t n)
{
    int rc = dbao_buf_printf(b, "{\"gid\":\"%s\",\"state\":\"%s\",\"reason\":", gid,
                             saga_state_name((saga_state) state));
    rc |= reason ? json_str(b, reason) : dbao_buf_printf(b, "null");
    rc |= dbao_buf_printf(b, ",\"created_ms\":%lld,\"updated_ms\":%lld,\"steps\":[",
                          (long long) created, (long long) updated);
    for (size_t i = 0; i < n; i++) {
        rc |= dbao_buf_printf(b,
                              "%s{\"idx\":%zu,\"name\":\"%s\",\"state\":\"%s\",\"attempts\":%u,"
                              "\"last_error\":",
                              i ? "," : "", i, st[i].name ? st[i].name : "",
                              saga_step_state_name((saga_step_state) st[i].state), st[i].attempts);
        rc |= st[i].last_error ? json_str(b, st[i].last_error) : dbao_buf_printf(b, "null");
        rc |= dbao_buf_putc(b, '}');
    }
    rc |= dbao_buf_printf(b, "]}");
    return rc;
}

static int
render_saga(dbao_buf *b, const csaga *s)
{
    view_step vs[SAGA_STEPS_MAX] = {{0}};
    for (size_t i = 0; i < s->spec.num_steps; i++)
        vs[i] = (view_step){s->spec.steps[i].name, s->steps[i].state, s->steps[i].attempts,
                            s->steps[i].last_error};
    return render(b, s->gid, s->state, s->reason, s->created_ms, s->updated_ms, vs,
                  s->spec.num_steps);
}

static int
render_tx(dbao_buf *b, const saga_tx *t)
{
    view_step vs[SAGA_STEPS_MAX] = {{0}};
    saga_spec sp;
    bool have = saga_spec_from_canonical(&sp, t->gid, t->spec, t->spec_len, NULL) == 0;
    size_t n = t->num_steps < SAGA_STEPS_MAX ? t->num_steps : SAGA_STEPS_MAX;
    for (size_t i = 0; i < n; i++)
        vs[i] = (view_step){have && i < sp.num_steps ? sp.steps[i].name : "", t->steps[i].state,
                            t->steps[i].attempts, t->steps[i].last_error};
    int rc = render(b, t->gid, t->state, t->reason, t->created_ms, t->updated_ms, vs, n);
    if (have)
        saga_spec_free(&sp);
    return rc;
}

static bool
is_final_or_parked(uint8_t st)
{
    return st == SAGA_COMMITTED || st == SAGA_COMPENSATED || st == SAGA_PARKED;
}

/* answer_state: reply with the saga's current view. */
static void
answer_saga(saga_req *r, int status, const csaga *s)
{
    dbao_buf b = {0};
    if (render_saga(&b, s) == 0)
        r->reply(r, status, b.data, b.len);
    else
        reply_err(r, 500, "out of memory");
    dbao_buf_free(&b);
}

/* queue_reply_after_audit: the reply is sent once this turn's audit records are durable (or at
 * once when there is no audit log). The body is kept in r->reason (truncated views are not
 * possible: it is stored in a separate buffer). */
static void
reply_after_audit(saga_coord *c, saga_req *r, int status, const char *body)
{
    if (c->o.log == NULL) {
        reply_json(r, status, body);
        return;
    }
    if (c->ab == NULL) {
        c->ab = calloc(1, sizeof *c->ab);
        if (c->ab == NULL) {
            reply_err(r, 503, "the audit trail cannot be written");
            return;
        }
        c->ab->c = c;
    }
    r->status_ = status;
    snprintf(r->reason, sizeof r->reason, "%s", body);
    r->next_ = c->ab->replies;
    c->ab->replies = r;
}

static void
wake_waiters(csaga *s)
{
    saga_req *w = s->waiters;
    s->waiters = NULL;
    while (w != NULL) {
        saga_req *n = w->next_;
        answer_saga(w, 200, s);
        w = n;
    }
}

/* ---- the state machine ----------------------------------------------------------------------- */

static void
set_step_error(cstep *st, const char *msg)
{
    set_str(&st->last_error, msg);
}

static void
queue_call(saga_coord *c, csaga *s, uint32_t idx, int op)
{
    cstep *st = &s->steps[idx];
    if (op == 0) {
        st->state = SAGA_STEP_RUNNING;
    } else if (st->state != SAGA_STEP_COMPENSATING) {
        st->state = SAGA_STEP_COMPENSATING;
        st->attempts = 0;
    }
    st->attempts++;
    if (st->attempts > 1)
        atomic_fetch_add_explicit(&c->m_retries, 1, memory_order_relaxed);
    st->next_at_ms = 0;
    pending_call *pc = calloc(1, sizeof *pc);
    if (pc == NULL) {
        /* keep the state: the call is made on the next wake (like a lost answer) */
        st->next_at_ms = now_ms() + 100;
        heap_push(c, s, st->next_at_ms);
        s->dsteps |= 1ull << idx;
        mark_dirty(c, s);
        return;
    }
    pc->s = s;
    pc->idx = idx;
    pc->op = (uint8_t) op;
    pc->attempt = st->attempts;
    if (c->calls_tail)
        c->calls_tail->next = pc;
    else
        c->calls = pc;
    c->calls_tail = pc;
    s->inflight_mask |= 1ull << idx; /* reserved: counts as in flight from now */
    s->dsteps |= 1ull << idx;
    s->inflight++;
    c->calls_out++;
    mark_dirty(c, s);
    audit_add(c, s, "step_sent", (int) idx, op, "sent", st->attempts, NULL, false);
}

static void
finish(saga_coord *c, csaga *s, uint8_t state, const char *reason)
{
    if (state != SAGA_PARKED)
        crash_point(c, "before_final");
    s->state = state;
    if (reason != s->reason && (reason != NULL || state == SAGA_PARKED))
        set_str(&s->reason, reason);
    s->was_final = true;
    mark_dirty(c, s);
    const char *what = state == SAGA_COMMITTED     ? "committed"
                       : state == SAGA_COMPENSATED ? "compensated"
                                                   : "parked";
    audit_add(c, s, what, -1, 0, what, 0, s->reason, state == SAGA_PARKED);
    atomic_fetch_add_explicit(state == SAGA_COMMITTED     ? &c->m_committed
                              : state == SAGA_COMPENSATED ? &c->m_compensated
                                                          : &c->m_parked,
                              1, memory_order_relaxed);
}

static void
start_backward(saga_coord *c, csaga *s, const char *reason)
{
    s->state = SAGA_COMPENSATING;
    set_str(&s->reason, reason);
    for (size_t i = 0; i < s->spec.num_steps; i++)
        s->steps[i].next_at_ms = 0;
    mark_dirty(c, s);
    audit_add(c, s, "compensating", -1, 0, "compensating", 0, reason, false);
}

static bool
may_have_run(uint8_t st)
{
    return st == SAGA_STEP_RUNNING || st == SAGA_STEP_SUCCEEDED || st == SAGA_STEP_COMPENSATING;
}

static void advance(saga_coord *c, csaga *s, int64_t now);

static void
block(saga_coord *c, csaga *s)
{
    if (s->blocked)
        return;
    s->blocked = true;
    s->bnext = NULL;
    if (c->blocked_tail)
        c->blocked_tail->bnext = s;
    else
        c->blocked_head = s;
    c->blocked_tail = s;
}

/* unblock: capacity came back; the sagas waiting longest go first */
static void
unblock(saga_coord *c)
{
    size_t room = c->calls_out < c->o.max_inflight ? c->o.max_inflight - c->calls_out : 0;
    while (room > 0 && c->blocked_head != NULL) {
        csaga *s = c->blocked_head;
        c->blocked_head = s->bnext;
        if (c->blocked_head == NULL)
            c->blocked_tail = NULL;
        s->blocked = false;
        if (s->dead) {
            maybe_free(c, s);
            continue;
        }
        make_ready(c, s);
        room--;
    }
}

static void
advance_forward(saga_coord *c, csaga *s, int64_t now)
{
    size_t n = s->spec.num_steps;
    char why[512];
    int failed = -1, exh_back = -1, exh_fwd = -1;
    for (size_t i = 0; i < n; i++) {
        cstep *st = &s->steps[i];
        bool out = (s->inflight_mask >> i) & 1;
        if (st->state == SAGA_STEP_FAILED && failed < 0)
            failed = (int) i;
        if (st->state == SAGA_STEP_RUNNING && !out && st->attempts >= s->spec.max_attempts) {
            if (s->spec.steps[i].recovery == SAGA_FORWARD) {
                if (exh_fwd < 0)
                    exh_fwd = (int) i;
            } else if (exh_back < 0) {
                exh_back = (int) i;
            }
        }
    }
    bool late = now >= s->deadline_ms;
    if (failed >= 0 || exh_fwd >= 0 || exh_back >= 0 || late) {
        if (s->inflight > 0)
            return; /* decide once every answer is in */
        if (exh_fwd >= 0) {
            snprintf(why, sizeof why, "step %d (%s): unknown outcome after %u attempts: %.200s",
                     exh_fwd, s->spec.steps[exh_fwd].name, s->steps[exh_fwd].attempts,
                     s->steps[exh_fwd].last_error ? s->steps[exh_fwd].last_error : "");
            finish(c, s, SAGA_PARKED, why);
            return;
        }
        if (failed >= 0)
            snprintf(why, sizeof why, "step %d (%s) failed: %.200s", failed,
                     s->spec.steps[failed].name,
                     s->steps[failed].last_error ? s->steps[failed].last_error : "");
        else if (exh_back >= 0)
            snprintf(why, sizeof why, "step %d (%s): unknown outcome after %u attempts: %.200s",
                     exh_back, s->spec.steps[exh_back].name, s->steps[exh_back].attempts,
                     s->steps[exh_back].last_error ? s->steps[exh_back].last_error : "");
        else
            snprintf(why, sizeof why, "timeout");
        start_backward(c, s, why);
        advance(c, s, now);
        return;
    }
    /* the lowest group with an unfinished step */
    size_t first = n;
    for (size_t i = 0; i < n; i++)
        if (s->steps[i].state != SAGA_STEP_SUCCEEDED) {
            first = i;
            break;
        }
    if (first == n) {
        if (s->inflight == 0)
            finish(c, s, SAGA_COMMITTED, NULL);
        return;
    }
    uint32_t g = s->spec.steps[first].group;
    int64_t wake = s->deadline_ms;
    for (size_t i = first; i < n && s->spec.steps[i].group == g; i++) {
        cstep *st = &s->steps[i];
        if (((s->inflight_mask >> i) & 1) || st->state == SAGA_STEP_SUCCEEDED)
            continue;
        if (st->next_at_ms > now) {
            if (st->next_at_ms < wake)
                wake = st->next_at_ms;
            continue;
        }
        if (c->calls_out >= c->o.max_inflight) {
            block(c, s); /* at the bound: woken when a call ends */
            break;
        }
        if (!atomic_load_explicit(&c->audit_failed, memory_order_acquire))
            queue_call(c, s, (uint32_t) i, 0);
    }
    heap_push(c, s, wake);
}

static void
advance_backward(saga_coord *c, csaga *s, int64_t now)
{
    size_t n = s->spec.num_steps;
    char why[512];
    int refused = -1, exh = -1;
    for (size_t i = 0; i < n; i++) {
        cstep *st = &s->steps[i];
        if (((s->refused_mask >> i) & 1) && refused < 0)
            refused = (int) i;
        if (st->state == SAGA_STEP_COMPENSATING && !((s->inflight_mask >> i) & 1) &&
            st->attempts >= s->spec.max_attempts && exh < 0)
            exh = (int) i;
    }
    if (refused >= 0 || exh >= 0) {
        if (s->inflight > 0)
            return;
        if (refused >= 0)
            snprintf(why, sizeof why, "compensation refused: step %d (%s): %.200s", refused,
                     s->spec.steps[refused].name,
                     s->steps[refused].last_error ? s->steps[refused].last_error : "");
        else
            snprintf(why, sizeof why,
                     "compensation of step %d (%s): unknown outcome after %u attempts: %.200s", exh,
                     s->spec.steps[exh].name, s->steps[exh].attempts,
                     s->steps[exh].last_error ? s->steps[exh].last_error : "");
        finish(c, s, SAGA_PARKED, why);
        return;
    }
    /* the highest group with a step that may have run */
    int last = -1;
    for (size_t i = n; i-- > 0;)
        if (may_have_run(s->steps[i].state)) {
            last = (int) i;
            break;
        }
    if (last < 0) {
        if (s->inflight == 0)
            finish(c, s, SAGA_COMPENSATED, s->reason);
        return;
    }
    uint32_t g = s->spec.steps[last].group;
    int64_t wake = INT64_MAX;
    for (int i = last; i >= 0 && s->spec.steps[i].group == g; i--) {
        cstep *st = &s->steps[i];
        if (((s->inflight_mask >> i) & 1) || !may_have_run(st->state))
            continue;
        if (st->state == SAGA_STEP_COMPENSATING && st->next_at_ms > now) {
            if (st->next_at_ms < wake)
                wake = st->next_at_ms;
            continue;
        }
        if (c->calls_out >= c->o.max_inflight) {
            block(c, s); /* at the bound: woken when a call ends */
            break;
        }
        if (!atomic_load_explicit(&c->audit_failed, memory_order_acquire))
            queue_call(c, s, (uint32_t) i, 1);
    }
    if (wake != INT64_MAX)
        heap_push(c, s, wake);
}

static void
advance(saga_coord *c, csaga *s, int64_t now)
{
    if (s->dead || is_final_or_parked(s->state))
        return;
    if (s->state == SAGA_SUBMITTED) {
        s->state = SAGA_RUNNING;
        mark_dirty(c, s);
    }
    if (s->state == SAGA_RUNNING)
        advance_forward(c, s, now);
    else
        advance_backward(c, s, now);
    /* keep the lease alive while waiting */
    if (!is_final_or_parked(s->state)) {
        int64_t idle = s->last_write_ms + (int64_t) c->o.lease_ms / 3;
        if (now >= idle && s->inflight == 0)
            mark_dirty(c, s);
        else
            heap_push(c, s, idle > now ? idle : now + (int64_t) c->o.lease_ms / 3);
    }
}

/* ---- call results ------------------------------------------------------------------------- */

typedef struct call_ctx {
    saga_coord *c;
    csaga *s;
    uint32_t idx;
    uint8_t op;
    uint32_t attempt;
} call_ctx;

static void
on_call_done(void *arg, const saga_call_result *r)
{
    call_ctx *x = arg;
    saga_coord *c = x->c;
    csaga *s = x->s;
    uint32_t idx = x->idx;
    int op = x->op;
    free(x);
    crash_point(c, "after_call");
    atomic_fetch_sub_explicit(&c->m_inflight, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->m_call_us, (uint64_t) r->elapsed_us, memory_order_relaxed);
    s->inflight--;
    c->calls_out--;
    s->inflight_mask &= ~(1ull << idx);
    unblock(c);
    if (s->dead) {
        maybe_free(c, s);
        return;
    }
    cstep *st = &s->steps[idx];
    char msg[300];
    const char *outcome;
    bool definite_fail = r->status == 409 || r->status == 422;
    if (r->status >= 200 && r->status < 300) {
        outcome = "succeeded";
        st->state = op ? SAGA_STEP_COMPENSATED : SAGA_STEP_SUCCEEDED;
        set_step_error(st, NULL);
        atomic_fetch_add_explicit(&c->m_calls_ok, 1, memory_order_relaxed);
    } else if (definite_fail) {
        outcome = "refused";
        snprintf(msg, sizeof msg, "%d %.200s", r->status, r->detail);
        set_step_error(st, msg);
        if (op)
            s->refused_mask |= 1ull << idx;
        else
            st->state = SAGA_STEP_FAILED;
        atomic_fetch_add_explicit(&c->m_calls_failed, 1, memory_order_relaxed);
    } else {
        outcome = "unknown";
        if (r->status != 0)
            snprintf(msg, sizeof msg, "status %d: %.200s", r->status, r->detail);
        else
            snprintf(msg, sizeof msg, "no answer: %.200s", r->detail);
        set_step_error(st, msg);
        uint64_t cap = (uint64_t) s->spec.retry_initial_ms
                       << (st->attempts > 20 ? 20 : (st->attempts ? st->attempts - 1 : 0));
        if (cap > s->spec.retry_max_ms)
            cap = s->spec.retry_max_ms;
        st->next_at_ms = now_ms() + (int64_t) (rnd(c) % (cap + 1));
        atomic_fetch_add_explicit(&c->m_calls_unknown, 1, memory_order_relaxed);
    }
    audit_add(c, s, "step_result", (int) idx, op, outcome, st->attempts,
              outcome[0] == 's' ? NULL : st->last_error, outcome[0] != 's');
    s->stored_results++;
    s->dsteps |= 1ull << idx;
    mark_dirty(c, s);
    make_ready(c, s);
}

/* ---- request handling ----------------------------------------------------------------------- */

saga_req *
saga_req_new(saga_req_kind kind)
{
    saga_req *r = calloc(1, sizeof *r);
    if (r != NULL) {
        r->kind = kind;
        r->list_state = -1;
    }
    return r;
}

void
saga_req_free(saga_req *r)
{
    if (r == NULL)
        return;
    saga_spec_free(&r->spec);
    free(r);
}

void
saga_coord_request(saga_coord *c, saga_req *r)
{
    r->next_ = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->q_tail)
        c->q_tail->next_ = r;
    else
        c->q_head = r;
    c->q_tail = r;
    pthread_mutex_unlock(&c->mu);
    saga_caller_wakeup(c->caller);
}

typedef struct turn {
    saga_req *creates, *creates_tail;
    saga_req *misc, *misc_tail;
    saga_req *after; /* existed submits: answered from the store after the commit */
} turn;

static void
append(saga_req **h, saga_req **t, saga_req *r)
{
    r->next_ = NULL;
    if (*t)
        (*t)->next_ = r;
    else
        *h = r;
    *t = r;
}

static void
do_get(saga_coord *c, saga_req *r, int64_t now)
{
    csaga *s = find_saga(c, r->gid);
    if (s != NULL) {
        if (r->wait_ms > 0 && !is_final_or_parked(s->state)) {
            r->wait_until_ms_ = now + r->wait_ms;
            r->next_ = s->waiters;
            s->waiters = r;
            heap_push(c, s, r->wait_until_ms_);
            return;
        }
        answer_saga(r, r->status_ ? r->status_ : 200, s);
        return;
    }
    saga_tx t;
    memset(&t, 0, sizeof t);
    dbao_err err;
    int rc = saga_store_get(c->store, r->gid, &t, &err);
    if (rc == SAGA_ENOENT) {
        reply_err(r, 404, "unknown gid");
        return;
    }
    if (rc != 0) {
        fprintf(stderr, "saga: get %s: %s\n", r->gid, err.msg);
        reply_err(r, 503, "store unavailable");
        return;
    }
    dbao_buf b = {0};
    int st = r->status_ ? r->status_ : 200;
    if (render_tx(&b, &t) == 0)
        r->reply(r, st, b.data, b.len);
    else
        reply_err(r, 500, "out of memory");
    dbao_buf_free(&b);
    saga_tx_free(&t);
}

static void
do_list(saga_coord *c, saga_req *r, int64_t now)
{
    size_t max = r->limit ? r->limit : 100;
    if (max > 1000)
        max = 1000;
    saga_tx *arr = calloc(max, sizeof *arr);
    if (arr == NULL) {
        reply_err(r, 500, "out of memory");
        return;
    }
    size_t num = 0;
    dbao_err err;
    int64_t before = r->older_than_ms > 0 ? now - r->older_than_ms : 0;
    int state = r->list_state;
    if (state == -2) /* stuck: unfinished and not updated for older_than */
        state = -1;
    int rc = saga_store_list(c->store, state, before, arr, max, &num, &err);
    if (rc != 0) {
        free(arr);
        reply_err(r, 503, "store unavailable");
        return;
    }
    dbao_buf b = {0};
    int wrc = dbao_buf_printf(&b, "{\"sagas\":[");
    bool first = true;
    for (size_t i = 0; i < num; i++) {
        if (r->list_state == -2 && arr[i].state == SAGA_PARKED)
            continue;
        if (!first)
            wrc |= dbao_buf_putc(&b, ',');
        first = false;
        wrc |= render_tx(&b, &arr[i]);
    }
    wrc |= dbao_buf_printf(&b, "]}");
    for (size_t i = 0; i < num; i++)
        saga_tx_free(&arr[i]);
    free(arr);
    if (wrc == 0)
        r->reply(r, 200, b.data, b.len);
    else
        reply_err(r, 500, "out of memory");
    dbao_buf_free(&b);
}

static void
do_admin(saga_coord *c, saga_req *r)
{
    saga_tx t;
    memset(&t, 0, sizeof t);
    dbao_err err;
    int rc = saga_store_get(c->store, r->gid, &t, &err);
    if (rc == SAGA_ENOENT) {
        reply_err(r, 404, "unknown gid");
        return;
    }
    if (rc != 0) {
        reply_err(r, 503, "store unavailable");
        return;
    }
    if (t.state != SAGA_PARKED) {
        saga_tx_free(&t);
        reply_err(r, 409, "only a parked transaction can be retried or resolved");
        return;
    }
    saga_state to = r->resolve_to;
    if (r->kind == SAGA_REQ_RETRY) {
        to = SAGA_RUNNING;
        for (size_t i = 0; i < t.num_steps; i++)
            if (t.steps[i].state == SAGA_STEP_COMPENSATING ||
                t.steps[i].state == SAGA_STEP_COMPENSATED || t.steps[i].state == SAGA_STEP_FAILED)
                to = SAGA_COMPENSATING;
    }
    /* the audit record needs the gid and trace id only */
    csaga tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.gid, sizeof tmp.gid, "%s", t.gid);
    saga_tx_free(&t);
    rc = saga_store_admin_set(c->store, r->gid, to, r->reason[0] ? r->reason : "admin", &err);
    if (rc != 0) {
        reply_err(r, rc == SAGA_ENOENT ? 404 : 503, "admin action not stored");
        return;
    }
    char why[300];
    snprintf(why, sizeof why, "%s -> %s: %s", r->kind == SAGA_REQ_RETRY ? "retry" : "resolve",
             saga_state_name(to), r->reason);
    audit_add(c, &tmp, "admin", -1, 0, r->kind == SAGA_REQ_RETRY ? "retry" : "resolve", 0, why,
              false);
    c->claim_now = true;
    char body[400];
    snprintf(body, sizeof body, "{\"gid\":\"%s\",\"state\":\"%s\"}", r->gid, saga_state_name(to));
    reply_after_audit(c, r, 200, body);
}

/* ---- store ----------------------------------------------------------------------------------- */

static int
store_saga(saga_coord *c, csaga *s, dbao_err *err)
{
    saga_step_rec recs[SAGA_STEPS_MAX];
    uint32_t idx[SAGA_STEPS_MAX];
    size_t n = s->spec.num_steps, k = 0;
    for (size_t i = 0; i < n; i++) {
        recs[i] = (saga_step_rec){.idx = (uint32_t) i,
                                  .state = s->steps[i].state,
                                  .attempts = s->steps[i].attempts,
                                  .next_at_ms = s->steps[i].next_at_ms,
                                  .last_error = s->steps[i].last_error};
        if ((s->dsteps >> i) & 1) /* only the steps that changed */
            idx[k++] = (uint32_t) i;
    }
    saga_tx t;
    memset(&t, 0, sizeof t);
    snprintf(t.gid, sizeof t.gid, "%s", s->gid);
    t.state = s->state;
    t.created_ms = s->created_ms;
    t.updated_ms = now_ms();
    t.deadline_ms = s->deadline_ms;
    t.version = s->version;
    t.spec = s->spec.canonical;
    t.spec_len = s->spec.canonical_len;
    t.reason = s->reason;
    t.steps = recs;
    t.num_steps = n;
    int rc = saga_store_update(c->store, &t, idx, k, err);
    if (rc == 0) {
        s->dsteps = 0;
        s->version++;
        s->updated_ms = t.updated_ms;
        s->last_write_ms = t.updated_ms;
    }
    return rc;
}

static void
drop_saga(saga_coord *c, csaga *s)
{
    if (s->dead)
        return;
    unlink_saga(c, s);
    heap_remove(c, s);
    s->dead = true;
    s->dirty = false;
    saga_req *w = s->waiters;
    s->waiters = NULL;
    while (w != NULL) {
        saga_req *n = w->next_;
        reply_err(w, 503, "the transaction moved to another coordinator");
        w = n;
    }
}

/* ---- the engine --------------------------------------------------------------------------------
 */

static void
load_claimed(saga_coord *c, saga_tx *t)
{
    if (find_saga(c, t->gid) != NULL)
        return;
    saga_spec sp;
    dbao_err err;
    if (saga_spec_from_canonical(&sp, t->gid, t->spec, t->spec_len, &err) != 0 ||
        sp.num_steps != t->num_steps) {
        fprintf(stderr, "saga: a claimed transaction has an unreadable spec: %s\n", err.msg);
        return;
    }
    csaga *s;
    if (build_saga(&s, &sp) != 0) {
        saga_spec_free(&sp);
        return;
    }
    s->state = t->state;
    s->created_ms = t->created_ms;
    s->updated_ms = t->updated_ms;
    s->last_write_ms = now_ms();
    s->deadline_ms = t->deadline_ms;
    s->version = t->version;
    set_str(&s->reason, t->reason);
    for (size_t i = 0; i < t->num_steps; i++) {
        uint32_t k = t->steps[i].idx < t->num_steps ? t->steps[i].idx : (uint32_t) i;
        s->steps[k].state = t->steps[i].state;
        s->steps[k].attempts = t->steps[i].attempts;
        s->steps[k].next_at_ms = t->steps[i].next_at_ms;
        set_str(&s->steps[k].last_error, t->steps[i].last_error);
    }
    insert_saga(c, s);
    make_ready(c, s);
}

static void
do_claim(saga_coord *c)
{
    saga_tx *arr = calloc(CLAIM_BATCH, sizeof *arr);
    if (arr == NULL)
        return;
    for (int round = 0; round < 64; round++) {
        size_t num = 0;
        dbao_err err;
        int rc = saga_store_claim(c->store, arr, CLAIM_BATCH, &num, &err);
        if (rc != 0) {
            fprintf(stderr, "saga: claim failed: %s\n", err.msg);
            break;
        }
        for (size_t i = 0; i < num; i++) {
            load_claimed(c, &arr[i]);
            saga_tx_free(&arr[i]);
        }
        if (num < CLAIM_BATCH)
            break;
    }
    free(arr);
}

static void
handle_creates(saga_coord *c, turn *tu, int64_t now)
{
    saga_req *r = tu->creates;
    tu->creates = tu->creates_tail = NULL;
    /* every create of the turn at once (one round trip on PostgreSQL: store_internal.h) */
    size_t n = 0, k = 0;
    for (saga_req *q = r; q != NULL; q = q->next_)
        n++;
    saga_create_item *items = calloc(n, sizeof *items);
    if (items == NULL) {
        while (r != NULL) {
            saga_req *next = r->next_;
            reply_err(r, 503, "out of memory");
            r = next;
        }
        return;
    }
    for (saga_req *q = r; q != NULL; q = q->next_, k++)
        items[k] = (saga_create_item){.gid = q->spec.gid,
                                      .spec = q->spec.canonical,
                                      .spec_len = q->spec.canonical_len,
                                      .num_steps = q->spec.num_steps,
                                      .deadline_ms = now + q->spec.timeout_ms};
    saga__store_create_many(c->store, items, n);
    k = 0;
    while (r != NULL) {
        saga_req *next = r->next_;
        saga_create_item *it = &items[k++];
        bool existed = it->existed;
        int64_t deadline = it->deadline_ms;
        int rc = it->rc;
        const dbao_err err = it->err;
        if (rc == SAGA_EEXIST) {
            reply_err(r, 409, "a transaction with this gid exists with another spec");
        } else if (rc != 0) {
            fprintf(stderr, "saga: create %s: %s\n", r->spec.gid, err.msg);
            reply_err(r, 503, "store unavailable");
        } else if (existed) {
            snprintf(r->gid, sizeof r->gid, "%s", r->spec.gid);
            r->status_ = 0;
            r->next_ = tu->after;
            tu->after = r;
        } else {
            csaga *s;
            saga_spec sp = r->spec;
            memset(&r->spec, 0, sizeof r->spec);
            if (build_saga(&s, &sp) != 0) {
                saga_spec_free(&sp);
                reply_err(r, 500, "out of memory");
            } else {
                s->state = SAGA_SUBMITTED;
                s->created_ms = s->updated_ms = s->last_write_ms = now;
                s->deadline_ms = deadline;
                s->is_new = true;
                insert_saga(c, s);
                atomic_fetch_add_explicit(&c->m_submitted, 1, memory_order_relaxed);
                audit_add(c, s, "submitted", -1, 0, "submitted", 0, NULL, false);
                /* the submit is answered after the commit (s->waiters holds it for now) */
                r->wait_until_ms_ = r->wait_ms > 0 ? now + r->wait_ms : 0;
                r->status_ = -1; /* marker: the submit itself */
                r->next_ = s->waiters;
                s->waiters = r;
                s->dirty = true;
                make_ready(c, s);
            }
        }
        r = next;
    }
    free(items);
}

static void
engine_turn(saga_coord *c, turn *tu, bool stopping)
{
    int64_t now = now_ms();
    /* timers */
    while (c->heap_n > 0 && c->heap[0].at <= now) {
        csaga *s = c->heap[0].s;
        heap_remove(c, s);
        /* expired waiters: 202, still running */
        int64_t next_wait = 0;
        saga_req **pp = &s->waiters;
        while (*pp != NULL) {
            saga_req *w = *pp;
            if (w->status_ != -1 && w->wait_until_ms_ != 0 && w->wait_until_ms_ <= now) {
                *pp = w->next_;
                answer_saga(w, 202, s);
            } else {
                if (w->wait_until_ms_ != 0 && (next_wait == 0 || w->wait_until_ms_ < next_wait))
                    next_wait = w->wait_until_ms_;
                pp = &w->next_;
            }
        }
        if (next_wait != 0)
            heap_push(c, s, next_wait);
        make_ready(c, s);
    }
    /* creates */
    bool any_write = tu->creates != NULL;
    dbao_err err;
    int brc = 0;
    bool batch = false;
    if (any_write || c->ready != NULL) {
        brc = saga_store_batch_begin(c->store, &err);
        batch = brc == 0;
    }
    if (batch && tu->creates) {
        int64_t tc = mono_us();
        handle_creates(c, tu, now);
        atomic_fetch_add_explicit(&c->m_create_us, (uint64_t) (mono_us() - tc),
                                  memory_order_relaxed);
    }
    if (!batch && (any_write || c->ready != NULL)) {
        /* the store is unavailable: refuse submits, keep the ready ones for the next turn,
         * start no call */
        fprintf(stderr, "saga: store batch failed: %s\n", err.msg);
        for (saga_req *r = tu->creates; r != NULL;) {
            saga_req *n = r->next_;
            reply_err(r, 503, "store unavailable");
            r = n;
        }
        tu->creates = tu->creates_tail = NULL;
        atomic_store_explicit(&c->store_failed, true, memory_order_release);
        goto misc;
    }
    /* advance the ready ones */
    csaga *dirty = NULL;
    while (c->ready != NULL) {
        csaga *s = c->ready;
        c->ready = s->rnext;
        s->in_ready = false;
        if (s->dead) {
            maybe_free(c, s);
            continue;
        }
        if (!stopping)
            advance(c, s, now);
        if (s->dirty) {
            s->dnext = dirty;
            dirty = s;
        }
    }
    int64_t t0 = mono_us();
    /* write */
    csaga *written = NULL;
    if (batch) {
        /* new ones are dirty but not in the ready list: scan the waiters' owners via is_new */
        for (csaga *s = dirty; s != NULL;) {
            csaga *n = s->dnext;
            int rc = store_saga(c, s, &err);
            if (rc == SAGA_ELOST) {
                atomic_fetch_add_explicit(&c->m_lost, 1, memory_order_relaxed);
                drop_saga(c, s);
            } else if (rc != 0) {
                atomic_store_explicit(&c->store_failed, true, memory_order_release);
                drop_saga(c, s);
            } else {
                /* a final or parked transaction gives its lease back in the same batch */
                if (s->was_final)
                    saga_store_release(c->store, s->gid, &err);
                s->dnext = written;
                written = s;
                atomic_fetch_add_explicit(&c->m_store_writes, 1, memory_order_relaxed);
            }
            s = n;
        }
        brc = saga_store_batch_commit(c->store, &err);
        atomic_fetch_add_explicit(&c->m_store_commits, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->m_store_us, (uint64_t) (mono_us() - t0),
                                  memory_order_relaxed);
        if (brc != 0) {
            fprintf(stderr, "saga: store commit failed: %s\n", err.msg);
            atomic_store_explicit(&c->store_failed, true, memory_order_release);
            /* nothing of this turn happened: drop the written sagas (a later claim reloads
             * them from the store once their lease expires) and forget their calls */
            for (csaga *s = written; s != NULL; s = s->dnext)
                drop_saga(c, s);
            written = NULL;
        } else {
            atomic_store_explicit(&c->store_failed, false, memory_order_release);
            /* deferred writes (PostgreSQL pipeline) that found no lease wrote nothing: as
             * SAGA_ELOST above, but known only now; dropped before any of their calls start */
            const char *lg;
            for (size_t i = 0; (lg = saga__store_lost_gid(c->store, i)) != NULL; i++) {
                csaga *s = find_saga(c, lg);
                if (s != NULL && !s->dead) {
                    atomic_fetch_add_explicit(&c->m_lost, 1, memory_order_relaxed);
                    drop_saga(c, s);
                }
            }
        }
    } else if (brc != 0) {
        atomic_store_explicit(&c->store_failed, true, memory_order_release);
    }
    /* after the commit */
    for (csaga *s = written; s != NULL;) {
        csaga *n = s->dnext;
        s->dirty = false;
        if (s->dead) { /* lost at commit (deferred write) */
            maybe_free(c, s);
            s = n;
            continue;
        }
        if (s->is_new) {
            s->is_new = false;
            crash_point(c, "after_create");
        }
        for (; s->stored_results > 0; s->stored_results--)
            crash_point(c, "after_store");
        /* the submit's own answer */
        saga_req **pp = &s->waiters;
        while (*pp != NULL) {
            saga_req *w = *pp;
            if (w->status_ == -1) {
                *pp = w->next_;
                w->status_ = 0;
                if (w->wait_until_ms_ != 0 && !is_final_or_parked(s->state)) {
                    w->next_ = s->waiters; /* keep waiting */
                    s->waiters = w;
                    heap_push(c, s, w->wait_until_ms_);
                    break;
                }
                if (w->wait_until_ms_ != 0) {
                    answer_saga(w, 200, s);
                } else {
                    char body[SAGA_GID_MAX + 64];
                    snprintf(body, sizeof body, "{\"gid\":\"%s\",\"state\":\"submitted\"}", s->gid);
                    reply_after_audit(c, w, 201, body);
                }
                break;
            }
            pp = &w->next_;
        }
        if (s->was_final) {
            crash_point(c, "after_final");
            wake_waiters(s);
            drop_saga(c, s);
            maybe_free(c, s);
        }
        s = n;
    }
    /* sagas dropped on failure: their reserved calls are forgotten */
    pending_call *pc = c->calls;
    c->calls = c->calls_tail = NULL;
    while (pc != NULL) {
        pending_call *n = pc->next;
        csaga *s = pc->s;
        if (s->dead || brc != 0) {
            s->inflight--;
            c->calls_out--;
            s->inflight_mask &= ~(1ull << pc->idx);
            maybe_free(c, s);
        } else {
            crash_point(c, "before_call");
            const saga_spec_step *sp = &s->spec.steps[pc->idx];
            char h[6][SAGA_GID_MAX + 96];
            const char *hp[6];
            const char *opn = op_name(pc->op);
            snprintf(h[0], sizeof h[0], "Content-Type: application/json");
            snprintf(h[1], sizeof h[1], "Idempotency-Key: %s:%u:%s", s->gid, pc->idx, opn);
            snprintf(h[2], sizeof h[2], "X-Dengbao-Gid: %s", s->gid);
            snprintf(h[3], sizeof h[3], "X-Dengbao-Branch: %u", pc->idx);
            snprintf(h[4], sizeof h[4], "X-Dengbao-Op: %s", opn);
            size_t nh = 5;
            if (s->spec.trace_id[0]) {
                snprintf(h[5], sizeof h[5], "traceparent: 00-%s-%016llx-01", s->spec.trace_id,
                         (unsigned long long) (rnd(c) | 1u));
                nh = 6;
            }
            for (size_t i = 0; i < nh; i++)
                hp[i] = h[i];
            call_ctx *x = malloc(sizeof *x);
            int rc = x == NULL ? DBAO_ENOMEM
                               : saga_caller_start(c->caller, pc->op ? sp->compensate : sp->action,
                                                   hp, nh, s->steps[pc->idx].body[pc->op],
                                                   s->steps[pc->idx].body_len[pc->op],
                                                   sp->timeout_ms, on_call_done, x);
            if (rc == 0) {
                *x = (call_ctx){c, s, pc->idx, pc->op, pc->attempt};
                atomic_fetch_add_explicit(&c->m_inflight, 1, memory_order_relaxed);
            } else {
                free(x);
                /* like a call without an answer: retried after a backoff */
                s->inflight--;
                c->calls_out--;
                s->inflight_mask &= ~(1ull << pc->idx);
                s->steps[pc->idx].next_at_ms = now + 100;
                heap_push(c, s, now + 100);
            }
        }
        free(pc);
        pc = n;
    }
    unblock(c);
misc:
    for (saga_req *r = tu->after; r != NULL;) {
        saga_req *n = r->next_;
        r->status_ = 200;
        r->wait_ms = r->wait_ms;
        do_get(c, r, now);
        r = n;
    }
    tu->after = NULL;
    /* queries and admin actions (outside the batch) */
    for (saga_req *r = tu->misc; r != NULL;) {
        saga_req *n = r->next_;
        if (r->kind == SAGA_REQ_GET)
            do_get(c, r, now);
        else if (r->kind == SAGA_REQ_LIST)
            do_list(c, r, now);
        else
            do_admin(c, r);
        r = n;
    }
    tu->misc = tu->misc_tail = NULL;
    audit_flush(c);
}

static void *
engine_main(void *arg)
{
    saga_coord *c = arg;
    turn tu;
    memset(&tu, 0, sizeof tu);
    bool stopping = false;
    int64_t drain_until = 0;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        saga_req *q = c->q_head;
        c->q_head = c->q_tail = NULL;
        pthread_mutex_unlock(&c->mu);
        if (!stopping && atomic_load(&c->stop_req)) {
            stopping = true;
            drain_until = now_ms() + c->drain_ms;
        }
        bool refuse = stopping || atomic_load_explicit(&c->audit_failed, memory_order_acquire);
        while (q != NULL) {
            saga_req *n = q->next_;
            if (q->kind == SAGA_REQ_SUBMIT) {
                if (refuse) {
                    reply_err(q, 503,
                              stopping ? "the coordinator is stopping"
                                       : "the audit trail cannot be written");
                } else {
                    append(&tu.creates, &tu.creates_tail, q);
                }
            } else {
                append(&tu.misc, &tu.misc_tail, q);
            }
            q = n;
        }
        int64_t tt = mono_us();
        engine_turn(c, &tu, stopping);
        atomic_fetch_add_explicit(&c->m_turns, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->m_turn_us, (uint64_t) (mono_us() - tt), memory_order_relaxed);
        int64_t now = now_ms();
        if (!stopping && (now >= c->next_claim_ms || c->claim_now)) {
            c->claim_now = false;
            c->next_claim_ms = now + c->o.claim_interval_ms;
            do_claim(c);
        }
        if (!stopping && now >= c->next_purge_ms) {
            uint64_t del = 0;
            dbao_err err;
            c->next_purge_ms = now + 60000;
            if (saga_store_purge(c->store, now - (int64_t) c->o.purge_after_ms, &del, &err) != 0)
                fprintf(stderr, "saga: purge failed: %s\n", err.msg);
        }
        size_t inflight = saga_caller_inflight(c->caller);
        if (stopping && (inflight == 0 || now >= drain_until))
            break;
        int timeout = 200;
        if (atomic_load_explicit(&c->store_failed, memory_order_acquire))
            timeout = 100;
        else if (c->ready != NULL)
            timeout = 0;
        else if (c->heap_n > 0) {
            int64_t d = c->heap[0].at - now;
            if (d < timeout)
                timeout = d < 0 ? 0 : (int) d;
        }
        tt = mono_us();
        saga_caller_poll(c->caller, timeout);
        atomic_fetch_add_explicit(&c->m_poll_us, (uint64_t) (mono_us() - tt), memory_order_relaxed);
    }
    /* store what the last answers changed, then release every lease we hold */
    engine_turn(c, &tu, true);
    dbao_err err;
    for (size_t b = 0; b < HASH_BUCKETS; b++) {
        csaga *s = c->buckets[b];
        while (s != NULL) {
            csaga *n = s->hnext;
            saga_store_release(c->store, s->gid, &err);
            saga_req *w = s->waiters;
            s->waiters = NULL;
            while (w != NULL) {
                saga_req *wn = w->next_;
                reply_err(w, 503, "the coordinator is stopping");
                w = wn;
            }
            s = n;
        }
    }
    /* late requests */
    pthread_mutex_lock(&c->mu);
    saga_req *q = c->q_head;
    c->q_head = c->q_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (q != NULL) {
        saga_req *n = q->next_;
        reply_err(q, 503, "the coordinator is stopping");
        q = n;
    }
    atomic_store(&c->running, false);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------------
 */

int
saga_coord_new(saga_coord **out, const saga_coord_opts *o, dbao_err *err)
{
    *out = NULL;
    if (o == NULL || o->store_url == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "saga: store url is required");
    saga_coord *c = calloc(1, sizeof *c);
    if (c == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "saga: out of memory");
    c->o = *o;
    if (o->owner != NULL && o->owner[0]) {
        snprintf(c->owner, sizeof c->owner, "%s", o->owner);
    } else {
        char host[64] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        snprintf(c->owner, sizeof c->owner, "%.50s:%d", host, (int) getpid());
    }
    if (c->o.lease_ms == 0)
        c->o.lease_ms = 10000;
    if (c->o.claim_interval_ms == 0)
        c->o.claim_interval_ms = 2000;
    if (c->o.max_inflight == 0)
        c->o.max_inflight = 1024;
    if (c->o.purge_after_ms == 0)
        c->o.purge_after_ms = 7ull * 24 * 3600 * 1000;
    saga_spec_defaults *d = &c->o.defaults;
    if (d->timeout_ms == 0)
        d->timeout_ms = 30000;
    if (d->call_timeout_ms == 0)
        d->call_timeout_ms = 3000;
    if (d->retry_initial_ms == 0)
        d->retry_initial_ms = 100;
    if (d->retry_max_ms == 0)
        d->retry_max_ms = 5000;
    if (d->max_attempts == 0)
        d->max_attempts = 6;
    if (d->num_allow > SAGA_ALLOW_MAX) {
        free(c);
        return dbao_err_set(err, DBAO_EINVAL, "saga: participants.allow: at most %d entries",
                            SAGA_ALLOW_MAX);
    }
    for (size_t i = 0; i < d->num_allow; i++) {
        c->allow_store[i] = NULL;
        set_str(&c->allow_store[i], d->allow[i]);
        c->allow_ptrs[i] = c->allow_store[i] ? c->allow_store[i] : "";
    }
    d->allow = c->allow_ptrs;
    c->buckets = calloc(HASH_BUCKETS, sizeof *c->buckets);
    pthread_mutex_init(&c->mu, NULL);
    c->rng = (uint64_t) audit_now_ns() ^ ((uint64_t) getpid() << 32) ^ (uintptr_t) c;
    if (c->rng == 0)
        c->rng = 88172645463325252ull;
    const char *cp = getenv("DENGBAO_SAGA_CRASH");
    if (cp != NULL) {
        const char *col = strrchr(cp, ':');
        if (col != NULL && (size_t) (col - cp) < sizeof c->crash_point) {
            memcpy(c->crash_point, cp, (size_t) (col - cp));
            c->crash_n = strtol(col + 1, NULL, 10);
            if (c->crash_n < 1)
                c->crash_point[0] = 0;
        }
    }
    int rc = c->buckets == NULL ? dbao_err_set(err, DBAO_ENOMEM, "saga: out of memory")
                                : saga_caller_new(&c->caller, o->max_host_conns, err);
    if (rc != 0) {
        saga_coord_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

const saga_spec_defaults *
saga_coord_defaults(const saga_coord *c)
{
    return &c->o.defaults;
}

int
saga_coord_start(saga_coord *c, dbao_err *err)
{
    saga_store_opts so = {.owner = c->owner, .lease_ms = c->o.lease_ms};
    int rc = saga_store_open(&c->store, c->o.store_url, &so, err);
    if (rc != 0)
        return rc;
    /* group commit on PostgreSQL: a turn's writes go out pipelined (store_internal.h); lost
     * leases are then reported at the commit (engine_turn) */
    saga__store_defer_writes(c->store, true);
    do_claim(c); /* recovery: every unfinished transaction whose lease is free or expired */
    c->next_claim_ms = now_ms() + c->o.claim_interval_ms;
    c->next_purge_ms = now_ms() + 1000;
    atomic_store(&c->running, true);
    rc = pthread_create(&c->thread, NULL, engine_main, c);
    if (rc != 0) {
        atomic_store(&c->running, false);
        return dbao_err_set(err, -rc, "saga: cannot start the engine thread");
    }
    c->started = true;
    return 0;
}

void
saga_coord_stop(saga_coord *c, uint32_t drain_ms)
{
    if (c == NULL || !c->started || c->joined)
        return;
    c->drain_ms = drain_ms ? drain_ms : 10000;
    atomic_store(&c->stop_req, true);
    saga_caller_wakeup(c->caller);
    pthread_join(c->thread, NULL);
    c->joined = true;
}

void
saga_coord_free(saga_coord *c)
{
    if (c == NULL)
        return;
    saga_coord_stop(c, 0);
    /* calls still out after the drain bound are abandoned: free their sagas */
    saga_caller_free(c->caller);
    for (csaga *s = c->blocked_head; s != NULL;) {
        csaga *n = s->bnext;
        s->blocked = false;
        if (s->dead)
            saga_destroy(s);
        s = n;
    }
    if (c->buckets != NULL) {
        for (size_t b = 0; b < HASH_BUCKETS; b++) {
            csaga *s = c->buckets[b];
            while (s != NULL) {
                csaga *n = s->hnext;
                saga_destroy(s);
                s = n;
            }
        }
    }
    free(c->buckets);
    free(c->heap);
    audit_batch *ab = c->ab;
    if (ab != NULL) {
        dbao_buf_free(&ab->data);
        free(ab->lens);
        free(ab);
    }
    saga_store_close(c->store);
    for (size_t i = 0; i < SAGA_ALLOW_MAX; i++)
        free(c->allow_store[i]);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool
saga_coord_healthy(const saga_coord *c)
{
    return atomic_load((atomic_bool *) &c->running) &&
           !atomic_load_explicit((atomic_bool *) &c->audit_failed, memory_order_acquire) &&
           !atomic_load_explicit((atomic_bool *) &c->store_failed, memory_order_acquire);
}

int
saga_coord_metrics(saga_coord *c, dbao_buf *b)
{
#define M(x) ((unsigned long long) atomic_load_explicit(&c->x, memory_order_relaxed))
    int rc = 0;
    rc |= dbao_buf_printf(b, "# TYPE dengbao_saga_transactions_total counter\n");
    rc |= dbao_buf_printf(b, "dengbao_saga_transactions_total{outcome=\"submitted\"} %llu\n",
                          M(m_submitted));
    rc |= dbao_buf_printf(b, "dengbao_saga_transactions_total{outcome=\"committed\"} %llu\n",
                          M(m_committed));
    rc |= dbao_buf_printf(b, "dengbao_saga_transactions_total{outcome=\"compensated\"} %llu\n",
                          M(m_compensated));
    rc |= dbao_buf_printf(b, "dengbao_saga_transactions_total{outcome=\"parked\"} %llu\n",
                          M(m_parked));
    rc |= dbao_buf_printf(b, "dengbao_saga_transactions_total{outcome=\"lost_lease\"} %llu\n",
                          M(m_lost));
    rc |= dbao_buf_printf(b, "# TYPE dengbao_saga_calls_total counter\n");
    rc |= dbao_buf_printf(b, "dengbao_saga_calls_total{result=\"success\"} %llu\n", M(m_calls_ok));
    rc |= dbao_buf_printf(b, "dengbao_saga_calls_total{result=\"refused\"} %llu\n",
                          M(m_calls_failed));
    rc |= dbao_buf_printf(b, "dengbao_saga_calls_total{result=\"unknown\"} %llu\n",
                          M(m_calls_unknown));
    rc |= dbao_buf_printf(b,
                          "# TYPE dengbao_saga_retries_total counter\n"
                          "dengbao_saga_retries_total %llu\n",
                          M(m_retries));
    rc |= dbao_buf_printf(b,
                          "# TYPE dengbao_saga_calls_in_flight gauge\n"
                          "dengbao_saga_calls_in_flight %llu\n",
                          M(m_inflight));
    rc |= dbao_buf_printf(b, "# TYPE dengbao_saga_active gauge\ndengbao_saga_active %llu\n",
                          M(m_active));
    rc |= dbao_buf_printf(b,
                          "# TYPE dengbao_saga_store_commits_total counter\n"
                          "dengbao_saga_store_commits_total %llu\n",
                          M(m_store_commits));
    rc |= dbao_buf_printf(b,
                          "# TYPE dengbao_saga_store_commit_seconds_total counter\n"
                          "dengbao_saga_store_commit_seconds_total %llu.%06llu\n",
                          M(m_store_us) / 1000000, M(m_store_us) % 1000000);
    rc |= dbao_buf_printf(b,
                          "# TYPE dengbao_saga_store_writes_total counter\n"
                          "dengbao_saga_store_writes_total %llu\n",
                          M(m_store_writes));
    rc |= dbao_buf_printf(b,
                          "# TYPE dengbao_saga_call_seconds_total counter\n"
                          "dengbao_saga_call_seconds_total %llu.%06llu\n",
                          M(m_call_us) / 1000000, M(m_call_us) % 1000000);
    rc |= dbao_buf_printf(b,
                          "# TYPE dengbao_saga_engine_turns_total counter\n"
                          "dengbao_saga_engine_turns_total %llu\n",
                          M(m_turns));
    rc |=
        dbao_buf_printf(b,
                        "# TYPE dengbao_saga_engine_seconds_total counter\n"
                        "dengbao_saga_engine_seconds_total{part=\"turn\"} %llu.%06llu\n"
                        "dengbao_saga_engine_seconds_total{part=\"poll\"} %llu.%06llu\n"
                        "dengbao_saga_engine_seconds_total{part=\"create\"} %llu.%06llu\n",
                        M(m_turn_us) / 1000000, M(m_turn_us) % 1000000, M(m_poll_us) / 1000000,
                        M(m_poll_us) % 1000000, M(m_create_us) / 1000000, M(m_create_us) % 1000000);
    rc |= dbao_buf_printf(b, "# TYPE dengbao_saga_healthy gauge\ndengbao_saga_healthy %d\n",
                          saga_coord_healthy(c) ? 1 : 0);
#undef M
    return rc;
}
