/* participant.c: the example saga participant, "a bank": accounts in its own PostgreSQL
 * database, debit / credit and their compensations called by the saga coordinator, each behind
 * the idempotency barrier (barrier.c), with deterministic fault injection for the tests.
 *
 * Endpoints (HTTP/1.1 via net.h; bodies JSON via jansson):
 *   POST /debit, /credit               action: body {"gid","step","branch","op":"action",
 *   POST /debit/undo, /credit/undo     compensation (op "compensate")       "payload":{...}}
 *        payload {"account": "A1", "amount": 1000 (integer fen > 0), "fault": "..." (optional,
 *        only with --faults)}. Answers: 200 {"outcome":"ran"|"duplicate"|"null_compensation",
 *        "balance":N?}; 409 {"error":"insufficient funds"|"unknown account"|"hanging"} (a
 *        definite failure: nothing changed); 400 malformed request (unknown keys refused);
 *        503 database unavailable (unknown outcome: the coordinator retries).
 *   POST /admin/seed {"accounts":{"A1":100000,...}}   sets balances (upsert)
 *   GET  /admin/balances -> {"A1":..,...,"sum":..}
 *   POST /admin/faults {"fault":"..."}                global faults ("" clears; --faults only)
 *   POST /admin/cleanup {"retention_s":N} -> {"deleted":n}   saga_barrier_cleanup
 *   GET  /healthz
 *
 * Schema (created if missing, in the bank's own database):
 *   accounts(id text PK, balance bigint NOT NULL CHECK (balance >= 0))
 *   movements(id bigserial PK, trace_id text, gid text, branch text, op text, account text,
 *             amount bigint (signed: - leaves the account), pre_balance, post_balance bigint,
 *             created_at timestamptz)  -- one row per balance change, the seed's audit fields
 *   dengbao_saga_barrier (saga_barrier_schema()).
 * Invariant: a balance change, its movement row and its barrier row commit together.
 *
 * Faults (--faults only; else a "fault" field is refused with 400): a comma-separated list of
 * items [scope "/"] kind, scope action (default) | compensate | both:
 *   fail          409 without effect
 *   5xx:N         503 for the first N calls of this gid+branch+op, then normal
 *   timeout:N[:MS]  the first N calls get no answer for MS ms (default 2000), then 504, having
 *                 done nothing (the coordinator's per-call timeout fires first)
 *   late:N[:MS]   like timeout, but after MS the call is executed for real (an action that
 *                 arrives after its compensation: the barrier answers HANGING, nothing happens)
 *   lost:N        do the work and commit, then answer 500 for the first N calls (the retry
 *                 finds DUPLICATE)
 *   dup           the participant runs the call twice itself (the second is a DUPLICATE)
 *   delay_ms:M    wait M ms (on the worker) before running the call
 * Counters are per gid+branch+op+kind in this process's memory (a restart resets them).
 *
 * Threads: net.h workers (default 8) each own one PostgreSQL connection (opened lazily on the
 * worker thread, reopened after a failure: a PostgreSQL restart costs 503s, then heals); the
 * handler runs the barrier synchronously on the worker. Timeout/late faults answer from a
 * detached thread so that a worker is never parked on a sleep.
 *
 * --barrier memory (benchmarks only): balances, movements and the barrier live in this
 * process's memory under one mutex, with the same run/skip rules, so that a benchmark can show
 * the coordinator's own ceiling without PostgreSQL round trips. Not durable; never for tests of
 * the invariant across restarts.
 *
 * Money is int64 fen throughout; no floating point.
 */
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/common.h"
#include "dengbao/net.h"
#include "dengbao/saga.h"
#include "participant.h"

#define AMOUNT_MAX   ((int64_t) 1000000000000000) /* 10^15 fen */
#define ACCOUNT_MAX  64
#define FAULT_MAX    256
#define FAULT_ITEMS  8
#define HASH_BUCKETS 65536

static const char SCHEMA_SQL[] =
    "CREATE TABLE IF NOT EXISTS accounts (id text PRIMARY KEY, balance bigint NOT NULL "
    "CHECK (balance >= 0));\n"
    "CREATE TABLE IF NOT EXISTS movements (id bigserial PRIMARY KEY, trace_id text NOT NULL, "
    "gid text NOT NULL, branch text NOT NULL, op text NOT NULL, account text NOT NULL, "
    "amount bigint NOT NULL, pre_balance bigint NOT NULL, post_balance bigint NOT NULL, "
    "created_at timestamptz NOT NULL DEFAULT now());\n"
    "CREATE INDEX IF NOT EXISTS movements_gid ON movements (gid, branch, op);\n";

/* ---- a small string-keyed hash map (fault counters, memory mode) --------------------------- */

typedef struct hent {
    struct hent *next;
    int64_t val;
    char key[];
} hent;

typedef struct hmap {
    hent **b;
} hmap;

static uint64_t
hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) {
        h = (h ^ (unsigned char) *s) * 1099511628211ull;
    }
    return h;
}

/* hmap_slot returns the entry for key, created with val 0 if absent (NULL: out of memory). */
static hent *
hmap_slot(hmap *m, const char *key, bool create, bool *created)
{
    if (m->b == NULL) {
        m->b = dbao_calloc(HASH_BUCKETS, sizeof *m->b);
        if (m->b == NULL) {
            return NULL;
        }
    }
    hent **p = &m->b[hash_str(key) % HASH_BUCKETS];
    for (hent *e = *p; e != NULL; e = e->next) {
        if (strcmp(e->key, key) == 0) {
            if (created) {
                *created = false;
            }
            return e;
        }
    }
    if (!create) {
        return NULL;
    }
    size_t n = strlen(key) + 1;
    hent *e = dbao_malloc(sizeof *e + n);
    if (e == NULL) {
        return NULL;
    }
    memcpy(e->key, key, n);
    e->val = 0;
    e->next = *p;
    *p = e;
    if (created) {
        *created = true;
    }
    return e;
}

static void
hmap_del(hmap *m, const char *key)
{
    for (hent **pp = &m->b[hash_str(key) % HASH_BUCKETS]; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            hent *e = *pp;
            *pp = e->next;
            dbao_free(e);
            return;
        }
    }
}

static void
hmap_free(hmap *m)
{
    if (m->b == NULL) {
        return;
    }
    for (size_t i = 0; i < HASH_BUCKETS; i++) {
        for (hent *e = m->b[i], *n; e != NULL; e = n) {
            n = e->next;
            dbao_free(e);
        }
    }
    dbao_free(m->b);
    m->b = NULL;
}

/* ---- the participant ------------------------------------------------------------------------ */

typedef struct wconn {
    PGconn *c;
} wconn;

#define WORKERS_MAX 256

typedef struct part {
    const char *db;
    const char *bank;
    bool faults_on;
    bool memory;
    pthread_mutex_t mu; /* fault counters, global fault, memory-mode state */
    hmap counters;
    char global_fault[FAULT_MAX];
    hmap mem_barrier;  /* memory mode: "gid\x1fbranch\x1fop" -> 1 (action) / 2 (compensate) */
    hmap mem_accounts; /* memory mode: id -> balance */
    uint64_t mem_movements;
    wconn wc[WORKERS_MAX]; /* one per worker, used on that worker's thread only */
} part;

typedef enum kind { K_DEBIT, K_CREDIT } kind;

/* One call, parsed. */
typedef struct call {
    kind k;
    saga_barrier_op op;
    char gid[SAGA_GID_MAX + 1];
    char branch[32];
    char account[ACCOUNT_MAX + 1];
    int64_t amount;
    char trace_id[33];
    char fault[FAULT_MAX];
} call;

/* Result of the business function. */
typedef struct biz {
    const call *cl;
    int refuse; /* 0, or 1 insufficient funds, 2 unknown account */
    int64_t post;
} biz;

static PGconn *
pg_open(const char *ci, dbao_err *err)
{
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        dbao_err_set(err, DBAO_EIO, "participant: cannot connect to --db: %.160s",
                     PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void
respond_json(net_request *req, int status, const char *body)
{
    net_request_respond(req, status, "application/json", body, strlen(body));
}

static void
respond_err(net_request *req, int status, const char *msg)
{
    json_t *o = json_pack("{ss}", "error", msg);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s != NULL) {
        respond_json(req, status, s);
    } else {
        respond_json(req, 500, "{\"error\":\"out of memory\"}");
    }
    free(s);
    json_decref(o);
}

/* ---- faults -------------------------------------------------------------------------------- */

typedef struct fault_item {
    int scope; /* 0 action, 1 compensate, 2 both */
    char kind[16];
    long n;
    long ms;
} fault_item;

/* parse_faults: "a,b,c" -> items; DBAO_EFORMAT on anything unknown. */
static int
parse_faults(const char *s, fault_item *it, size_t *num)
{
    *num = 0;
    if (s == NULL || s[0] == 0) {
        return 0;
    }
    char buf[FAULT_MAX];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        if (*num == FAULT_ITEMS) {
            return DBAO_EFORMAT;
        }
        fault_item *f = &it[(*num)++];
        memset(f, 0, sizeof *f);
        char *slash = strchr(t, '/');
        if (slash != NULL) {
            *slash = 0;
            if (strcmp(t, "action") == 0) {
                f->scope = 0;
            } else if (strcmp(t, "compensate") == 0) {
                f->scope = 1;
            } else if (strcmp(t, "both") == 0) {
                f->scope = 2;
            } else {
                return DBAO_EFORMAT;
            }
            t = slash + 1;
        }
        char *c1 = strchr(t, ':');
        char *c2 = NULL;
        if (c1 != NULL) {
            *c1++ = 0;
            c2 = strchr(c1, ':');
            if (c2 != NULL) {
                *c2++ = 0;
            }
        }
        if (strlen(t) >= sizeof f->kind) {
            return DBAO_EFORMAT;
        }
        strcpy(f->kind, t);
        char *end;
        if (c1 != NULL) {
            f->n = strtol(c1, &end, 10);
            if (*end != 0 || c1[0] == 0 || f->n < 0 || f->n > 1000000) {
                return DBAO_EFORMAT;
            }
        }
        if (c2 != NULL) {
            f->ms = strtol(c2, &end, 10);
            if (*end != 0 || c2[0] == 0 || f->ms < 0 || f->ms > 600000) {
                return DBAO_EFORMAT;
            }
        }
        bool needs_n = !strcmp(f->kind, "5xx") || !strcmp(f->kind, "timeout") ||
                       !strcmp(f->kind, "late") || !strcmp(f->kind, "lost") ||
                       !strcmp(f->kind, "delay_ms");
        bool no_n = !strcmp(f->kind, "fail") || !strcmp(f->kind, "dup");
        bool has_ms = !strcmp(f->kind, "timeout") || !strcmp(f->kind, "late");
        if (!(needs_n || no_n) || (needs_n && c1 == NULL) || (no_n && c1 != NULL) ||
            (!has_ms && c2 != NULL)) {
            return DBAO_EFORMAT;
        }
        if (has_ms && c2 == NULL) {
            f->ms = 2000;
        }
    }
    return 0;
}

/* fault_take: true if the counted fault `kind` (first n calls of this gid+branch+op) applies to
 * this call, counting it. */
static bool
fault_take(part *p, const call *cl, const fault_item *f)
{
    char key[SAGA_GID_MAX + 96];
    snprintf(key, sizeof key, "%s\x1f%s\x1f%d\x1f%s", cl->gid, cl->branch, (int) cl->op, f->kind);
    pthread_mutex_lock(&p->mu);
    hent *e = hmap_slot(&p->counters, key, true, NULL);
    bool take = false;
    if (e != NULL && e->val < f->n) {
        e->val++;
        take = true;
    }
    pthread_mutex_unlock(&p->mu);
    return take;
}

/* ---- business functions -------------------------------------------------------------------- */

static int
biz_pg(void *pgconn, void *arg, dbao_err *err)
{
    PGconn *c = pgconn;
    biz *b = arg;
    const call *cl = b->cl;
    /* The sign of the change: debit and credit-undo take money out, credit and debit-undo put
     * it back in. */
    bool out = (cl->k == K_DEBIT) == (cl->op == SAGA_OP_ACTION);
    char amt[32];
    snprintf(amt, sizeof amt, "%lld", (long long) (out ? -cl->amount : cl->amount));
    const char *v[2] = {cl->account, amt};
    /* Conditional update: the CHECK constraint would also refuse a negative balance, but as an
     * error that aborts the transaction; the WHERE clause makes "insufficient funds" a clean
     * zero-row answer. */
    PGresult *r = PQexecParams(c,
                               "UPDATE accounts SET balance = balance + $2::bigint WHERE id = $1 "
                               "AND balance + $2::bigint >= 0 RETURNING balance",
                               2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = dbao_err_set(err, DBAO_EIO, "participant: update failed: %.160s",
                              PQresultErrorMessage(r));
        PQclear(r);
        return rc;
    }
    if (PQntuples(r) == 0) {
        PQclear(r);
        r = PQexecParams(c, "SELECT 1 FROM accounts WHERE id = $1", 1, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            int rc = dbao_err_set(err, DBAO_EIO, "participant: lookup failed: %.160s",
                                  PQresultErrorMessage(r));
            PQclear(r);
            return rc;
        }
        b->refuse = PQntuples(r) == 0 ? 2 : 1;
        PQclear(r);
        return DBAO_ERANGE; /* roll back: nothing changed, the barrier row goes too */
    }
    b->post = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    char pre[32], post[32];
    snprintf(pre, sizeof pre, "%lld", (long long) (b->post - (out ? -cl->amount : cl->amount)));
    snprintf(post, sizeof post, "%lld", (long long) b->post);
    const char *mv[8] = {
        cl->trace_id, cl->gid, cl->branch, cl->op == SAGA_OP_ACTION ? "action" : "compensate",
        cl->account,  amt,     pre,        post};
    r = PQexecParams(c,
                     "INSERT INTO movements (trace_id, gid, branch, op, account, amount, "
                     "pre_balance, post_balance) VALUES ($1,$2,$3,$4,$5,$6::bigint,$7::bigint,"
                     "$8::bigint)",
                     8, NULL, mv, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        int rc = dbao_err_set(err, DBAO_EIO, "participant: movement insert failed: %.160s",
                              PQresultErrorMessage(r));
        PQclear(r);
        return rc;
    }
    PQclear(r);
    return 0;
}

/* run_memory: the barrier rules and the business change on in-memory state (benchmarks). */
static int
run_memory(part *p, const call *cl, biz *b, saga_barrier_outcome *oc)
{
    char ka[SAGA_GID_MAX + 64], kc[SAGA_GID_MAX + 64];
    snprintf(ka, sizeof ka,
             "%s\x1f%s\x1f"
             "a",
             cl->gid, cl->branch);
    snprintf(kc, sizeof kc,
             "%s\x1f%s\x1f"
             "c",
             cl->gid, cl->branch);
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    bool created_a = false, created_c = false;
    hent *a = hmap_slot(&p->mem_barrier, ka, true, &created_a);
    if (a == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (cl->op == SAGA_OP_ACTION) {
        if (!created_a) {
            *oc = a->val == 2 ? SAGA_BARRIER_HANGING : SAGA_BARRIER_DUPLICATE;
            goto out;
        }
        a->val = 1;
    } else {
        hent *c = hmap_slot(&p->mem_barrier, kc, true, &created_c);
        if (c == NULL) {
            rc = DBAO_ENOMEM;
            goto out;
        }
        if (created_a) {
            a->val = 2;
        }
        if (!created_c) {
            *oc = SAGA_BARRIER_DUPLICATE;
            goto out;
        }
        c->val = 2;
        if (created_a) {
            *oc = SAGA_BARRIER_NULL_COMPENSATION;
            goto out;
        }
    }
    bool out = (cl->k == K_DEBIT) == (cl->op == SAGA_OP_ACTION);
    int64_t delta = out ? -cl->amount : cl->amount;
    hent *acc = hmap_slot(&p->mem_accounts, cl->account, false, NULL);
    if (acc == NULL || acc->val + delta < 0) {
        b->refuse = acc == NULL ? 2 : 1;
        /* roll back the barrier entry made by this call (a retry runs again) */
        hmap_del(&p->mem_barrier, cl->op == SAGA_OP_ACTION ? ka : kc);
        rc = DBAO_ERANGE;
        goto out;
    }
    acc->val += delta;
    b->post = acc->val;
    p->mem_movements++;
    *oc = SAGA_BARRIER_RAN;
out:
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ---- request handling ---------------------------------------------------------------------- */

/* parse_call reads the coordinator's body; on error *why names the field (static text). */
static int
parse_call(part *p, net_request *req, call *cl, const char **why)
{
    size_t len = 0;
    const uint8_t *body = net_request_body(req, &len);
    json_error_t je;
    json_t *o = json_loadb((const char *) body, len, JSON_REJECT_DUPLICATES, &je);
    int rc = DBAO_EFORMAT;
    *why = "body: not a JSON object";
    if (o == NULL || !json_is_object(o)) {
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "gid") && strcmp(k, "step") && strcmp(k, "branch") && strcmp(k, "op") &&
            strcmp(k, "payload")) {
            *why = "body: unknown key (allowed: gid, step, branch, op, payload)";
            goto out;
        }
    }
    v = json_object_get(o, "gid");
    *why = "gid: a string of 1..128 characters is required";
    if (!json_is_string(v) || json_string_length(v) < 1 || json_string_length(v) > SAGA_GID_MAX) {
        goto out;
    }
    snprintf(cl->gid, sizeof cl->gid, "%s", json_string_value(v));
    *why = "gid: only [A-Za-z0-9._:-] is allowed";
    if (strspn(cl->gid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") !=
        strlen(cl->gid)) {
        goto out;
    }
    v = json_object_get(o, "branch");
    *why = "branch: a string of 1..31 characters is required";
    if (!json_is_string(v) || json_string_length(v) < 1 ||
        json_string_length(v) >= sizeof cl->branch) {
        goto out;
    }
    snprintf(cl->branch, sizeof cl->branch, "%s", json_string_value(v));
    *why = "branch: only [A-Za-z0-9._:-] is allowed";
    if (strspn(cl->branch, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") !=
        strlen(cl->branch)) {
        goto out;
    }
    v = json_object_get(o, "step");
    *why = "step: an integer 0..63 is required";
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) >= SAGA_STEPS_MAX) {
        goto out;
    }
    v = json_object_get(o, "op");
    const char *want = cl->op == SAGA_OP_ACTION ? "action" : "compensate";
    *why = "op: must match the endpoint (action for /debit, /credit; compensate for */undo)";
    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0) {
        goto out;
    }
    json_t *pl = json_object_get(o, "payload");
    *why = "payload: an object is required";
    if (!json_is_object(pl)) {
        goto out;
    }
    json_object_foreach(pl, k, v)
    {
        if (strcmp(k, "account") && strcmp(k, "amount") && strcmp(k, "fault")) {
            *why = "payload: unknown key (allowed: account, amount, fault)";
            goto out;
        }
    }
    v = json_object_get(pl, "account");
    *why = "payload.account: a string of 1..64 characters is required";
    if (!json_is_string(v) || json_string_length(v) < 1 || json_string_length(v) > ACCOUNT_MAX) {
        goto out;
    }
    snprintf(cl->account, sizeof cl->account, "%s", json_string_value(v));
    v = json_object_get(pl, "amount");
    *why = "payload.amount: an integer number of fen, 1..10^15, is required";
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > AMOUNT_MAX) {
        goto out;
    }
    cl->amount = json_integer_value(v);
    v = json_object_get(pl, "fault");
    if (v != NULL) {
        *why = "payload.fault: refused (the participant was started without --faults)";
        if (!p->faults_on) {
            goto out;
        }
        *why = "payload.fault: a string of at most 255 characters is required";
        if (!json_is_string(v) || json_string_length(v) >= FAULT_MAX) {
            goto out;
        }
        snprintf(cl->fault, sizeof cl->fault, "%s", json_string_value(v));
    }
    /* traceparent: 00-<32 hex trace id>-<16 hex>-<2 hex>; anything else is ignored. */
    const char *tp = net_request_header(req, "traceparent");
    if (tp != NULL && strlen(tp) >= 35 && tp[2] == '-' && tp[35] == '-') {
        bool hex = true;
        for (int i = 3; i < 35; i++) {
            char ch = tp[i];
            hex = hex && ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'));
        }
        if (hex) {
            memcpy(cl->trace_id, tp + 3, 32);
            cl->trace_id[32] = 0;
        }
    }
    rc = 0;
out:
    json_decref(o);
    return rc;
}

/* conn_ok makes sure *cp is an open connection (reopened if it broke); false if the database
 * is unreachable. */
static bool
conn_ok(part *p, PGconn **cp, dbao_err *err)
{
    if (*cp != NULL && PQstatus(*cp) == CONNECTION_OK) {
        return true;
    }
    PQfinish(*cp);
    *cp = pg_open(p->db, err);
    return *cp != NULL;
}

/* conn_broke: after a failure, drop a connection that broke (the next use reconnects). */
static bool
conn_broke(PGconn **cp)
{
    if (*cp != NULL && PQstatus(*cp) != CONNECTION_OK) {
        PQfinish(*cp);
        *cp = NULL;
        return true;
    }
    return false;
}

/* execute runs one call through the barrier; returns the HTTP status and fills body. A
 * connection that broke (PostgreSQL restarted since its last use) is reopened and the call
 * tried once more: safe because of the barrier itself (if the first attempt's COMMIT did land,
 * the second one is a DUPLICATE). */
static int
execute(part *p, PGconn **cp, const call *cl, char *body, size_t cap)
{
    biz b = {.cl = cl};
    saga_barrier_outcome oc = SAGA_BARRIER_RAN;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = 0;
    if (p->memory) {
        rc = run_memory(p, cl, &b, &oc);
    } else {
        for (int attempt = 0;; attempt++) {
            if (!conn_ok(p, cp, &err)) {
                snprintf(body, cap, "{\"error\":\"database unavailable\"}");
                return 503;
            }
            b = (biz){.cl = cl};
            rc = saga_barrier_call(*cp, cl->gid, cl->branch, cl->op, biz_pg, &b, &oc, &err);
            if (rc == 0 || !conn_broke(cp) || attempt == 1) {
                break;
            }
        }
    }
    if (rc == DBAO_ERANGE && b.refuse != 0) {
        snprintf(body, cap, "{\"error\":\"%s\"}",
                 b.refuse == 1 ? "insufficient funds" : "unknown account");
        return 409;
    }
    if (rc != 0) {
        /* The database failed: the outcome is unknown to the caller (503: it retries). */
        fprintf(stderr, "dengbao: saga participant %s: %s\n", p->bank, err.msg);
        conn_broke(cp);
        snprintf(body, cap, "{\"error\":\"database unavailable\"}");
        return 503;
    }
    switch (oc) {
    case SAGA_BARRIER_RAN:
        snprintf(body, cap, "{\"outcome\":\"ran\",\"balance\":%lld}", (long long) b.post);
        return 200;
    case SAGA_BARRIER_DUPLICATE:
        snprintf(body, cap, "{\"outcome\":\"duplicate\"}");
        return 200;
    case SAGA_BARRIER_NULL_COMPENSATION:
        snprintf(body, cap, "{\"outcome\":\"null_compensation\"}");
        return 200;
    case SAGA_BARRIER_HANGING:
    default:
        snprintf(body, cap, "{\"error\":\"hanging\"}");
        return 409;
    }
}

/* admin_exec runs an idempotent admin statement on the worker's connection, reconnecting and
 * trying once more if the connection broke. Returns the result (caller PQclear's) or NULL. */
static PGresult *
admin_exec(part *p, wconn *w, const char *sql, int n, const char *const *v, ExecStatusType want)
{
    dbao_err err;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!conn_ok(p, &w->c, &err)) {
            return NULL;
        }
        PGresult *r = PQexecParams(w->c, sql, n, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) == want) {
            return r;
        }
        PQclear(r);
        if (!conn_broke(&w->c)) {
            return NULL;
        }
    }
    return NULL;
}

typedef struct deferred {
    part *p;
    net_request *req;
    call cl;
    long ms;
    bool run; /* late: execute after the wait; timeout: answer 504 without effect */
} deferred;

static void *
deferred_main(void *arg)
{
    deferred *d = arg;
    struct timespec ts = {.tv_sec = d->ms / 1000, .tv_nsec = (d->ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    if (d->run) {
        PGconn *c = NULL;
        char body[256];
        int st = execute(d->p, &c, &d->cl, body, sizeof body);
        if (c != NULL) {
            PQfinish(c);
        }
        respond_json(d->req, st, body);
    } else {
        respond_err(d->req, 504, "injected timeout");
    }
    dbao_free(d);
    return NULL;
}

static void
handle_call(part *p, net_request *req, kind k, saga_barrier_op op)
{
    call cl;
    memset(&cl, 0, sizeof cl);
    cl.k = k;
    cl.op = op;
    const char *why = NULL;
    if (parse_call(p, req, &cl, &why) != 0) {
        respond_err(req, 400, why);
        return;
    }
    fault_item fi[2 * FAULT_ITEMS];
    size_t nf = 0, ng = 0;
    char global[FAULT_MAX];
    pthread_mutex_lock(&p->mu);
    memcpy(global, p->global_fault, sizeof global);
    pthread_mutex_unlock(&p->mu);
    if (parse_faults(cl.fault, fi, &nf) != 0) {
        respond_err(req, 400, "payload.fault: unknown fault (see participant.c)");
        return;
    }
    if (parse_faults(global, fi + nf, &ng) != 0) {
        ng = 0; /* checked when set */
    }
    nf += ng;
    bool dup = false, lost = false;
    for (size_t i = 0; i < nf; i++) {
        const fault_item *f = &fi[i];
        if (f->scope != 2 && f->scope != (int) op) {
            continue;
        }
        if (!strcmp(f->kind, "fail")) {
            respond_err(req, 409, "injected failure");
            return;
        }
        if (!strcmp(f->kind, "5xx") && fault_take(p, &cl, f)) {
            respond_err(req, 503, "injected 503");
            return;
        }
        if ((!strcmp(f->kind, "timeout") || !strcmp(f->kind, "late")) && fault_take(p, &cl, f)) {
            deferred *d = dbao_calloc(1, sizeof *d);
            pthread_t th;
            pthread_attr_t at;
            if (d == NULL) {
                respond_err(req, 500, "out of memory");
                return;
            }
            *d = (deferred){.p = p, .req = req, .cl = cl, .ms = f->ms, .run = f->kind[0] == 'l'};
            pthread_attr_init(&at);
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            if (pthread_create(&th, &at, deferred_main, d) != 0) {
                pthread_attr_destroy(&at);
                dbao_free(d);
                respond_err(req, 500, "cannot start a thread");
                return;
            }
            pthread_attr_destroy(&at);
            return;
        }
        if (!strcmp(f->kind, "delay_ms") && f->n > 0) {
            struct timespec ts = {.tv_sec = f->n / 1000, .tv_nsec = (f->n % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
        if (!strcmp(f->kind, "dup")) {
            dup = true;
        }
        if (!strcmp(f->kind, "lost") && fault_take(p, &cl, f)) {
            lost = true;
        }
    }
    wconn *w = net_worker_data(net_request_worker(req));
    char body[256];
    int st = execute(p, &w->c, &cl, body, sizeof body);
    if (dup) {
        char body2[256];
        (void) execute(p, &w->c, &cl, body2, sizeof body2);
    }
    if (lost && st == 200) {
        respond_err(req, 500, "injected lost response");
        return;
    }
    respond_json(req, st, body);
}

static void
handle_seed(part *p, net_request *req, wconn *w)
{
    size_t len = 0;
    const uint8_t *body = net_request_body(req, &len);
    json_t *o = json_loadb((const char *) body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *acc = json_object_get(o, "accounts");
    if (!json_is_object(o) || json_object_size(o) != 1 || !json_is_object(acc)) {
        json_decref(o);
        respond_err(req, 400, "seed: body must be {\"accounts\":{\"ID\":fen,...}}");
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(acc, k, v)
    {
        if (strlen(k) < 1 || strlen(k) > ACCOUNT_MAX || !json_is_integer(v) ||
            json_integer_value(v) < 0 || json_integer_value(v) > AMOUNT_MAX) {
            json_decref(o);
            respond_err(req, 400, "seed: accounts: ids of 1..64 bytes, balances 0..10^15 fen");
            return;
        }
    }
    int st = 200;
    if (p->memory) {
        pthread_mutex_lock(&p->mu);
        json_object_foreach(acc, k, v)
        {
            hent *e = hmap_slot(&p->mem_accounts, k, true, NULL);
            if (e == NULL) {
                st = 500;
                break;
            }
            e->val = json_integer_value(v);
        }
        pthread_mutex_unlock(&p->mu);
    } else {
        json_object_foreach(acc, k, v)
        {
            if (st != 200) {
                break;
            }
            char bal[32];
            snprintf(bal, sizeof bal, "%lld", (long long) json_integer_value(v));
            const char *pv[2] = {k, bal};
            PGresult *r = admin_exec(p, w,
                                     "INSERT INTO accounts (id, balance) VALUES ($1, "
                                     "$2::bigint) ON CONFLICT (id) DO UPDATE SET balance = "
                                     "EXCLUDED.balance",
                                     2, pv, PGRES_COMMAND_OK);
            if (r == NULL) {
                st = 503;
            }
            PQclear(r);
        }
    }
    json_decref(o);
    if (st == 200) {
        respond_json(req, 200, "{\"seeded\":true}");
    } else {
        respond_err(req, st, "seed failed");
    }
}

static void
handle_balances(part *p, net_request *req, wconn *w)
{
    json_t *o = json_object();
    int64_t sum = 0;
    int st = 200;
    if (p->memory) {
        pthread_mutex_lock(&p->mu);
        for (size_t i = 0; p->mem_accounts.b != NULL && i < HASH_BUCKETS; i++) {
            for (hent *e = p->mem_accounts.b[i]; e != NULL; e = e->next) {
                json_object_set_new(o, e->key, json_integer(e->val));
                sum += e->val;
            }
        }
        json_object_set_new(o, "movements", json_integer((json_int_t) p->mem_movements));
        pthread_mutex_unlock(&p->mu);
    } else {
        PGresult *r = admin_exec(p, w, "SELECT id, balance FROM accounts ORDER BY id", 0, NULL,
                                 PGRES_TUPLES_OK);
        if (r == NULL) {
            st = 503;
        } else {
            for (int i = 0; i < PQntuples(r); i++) {
                int64_t bal = strtoll(PQgetvalue(r, i, 1), NULL, 10);
                json_object_set_new(o, PQgetvalue(r, i, 0), json_integer(bal));
                sum += bal;
            }
        }
        PQclear(r);
    }
    json_object_set_new(o, "sum", json_integer(sum));
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (st == 200 && s != NULL) {
        respond_json(req, 200, s);
    } else {
        respond_err(req, st == 200 ? 500 : st, "balances unavailable");
    }
    free(s);
}

static void
handle_faults(part *p, net_request *req)
{
    size_t len = 0;
    const uint8_t *body = net_request_body(req, &len);
    json_t *o = json_loadb((const char *) body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *f = json_object_get(o, "fault");
    fault_item fi[FAULT_ITEMS];
    size_t n;
    if (!json_is_object(o) || json_object_size(o) != 1 || !json_is_string(f) ||
        json_string_length(f) >= FAULT_MAX || parse_faults(json_string_value(f), fi, &n) != 0) {
        json_decref(o);
        respond_err(req, 400, "faults: body must be {\"fault\":\"<known faults>\"}");
        return;
    }
    pthread_mutex_lock(&p->mu);
    snprintf(p->global_fault, sizeof p->global_fault, "%s", json_string_value(f));
    pthread_mutex_unlock(&p->mu);
    json_decref(o);
    respond_json(req, 200, "{\"set\":true}");
}

static void
handle_cleanup(part *p, net_request *req, wconn *w)
{
    size_t len = 0;
    const uint8_t *body = net_request_body(req, &len);
    json_t *o = json_loadb((const char *) body, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *r = json_object_get(o, "retention_s");
    if (!json_is_object(o) || json_object_size(o) != 1 || !json_is_integer(r) ||
        json_integer_value(r) < 1) {
        json_decref(o);
        respond_err(req, 400, "cleanup: body must be {\"retention_s\":N} with N >= 1");
        return;
    }
    int64_t ret = json_integer_value(r);
    json_decref(o);
    if (p->memory) {
        respond_err(req, 400, "cleanup: not available with --barrier memory");
        return;
    }
    dbao_err err;
    dbao_err_clear(&err);
    uint64_t deleted = 0;
    int rc = -1;
    for (int attempt = 0; attempt < 2 && rc != 0; attempt++) {
        if (!conn_ok(p, &w->c, &err)) {
            break;
        }
        rc = saga_barrier_cleanup(w->c, ret, &deleted, &err);
        if (rc != 0 && !conn_broke(&w->c)) {
            break;
        }
    }
    if (rc != 0) {
        fprintf(stderr, "dengbao: saga participant %s: %s\n", p->bank, err.msg);
        respond_err(req, 503, "cleanup failed");
        return;
    }
    char out[64];
    snprintf(out, sizeof out, "{\"deleted\":%llu}", (unsigned long long) deleted);
    respond_json(req, 200, out);
}

static void
handler(net_request *req, void *arg)
{
    part *p = arg;
    const char *m = net_request_method(req), *path = net_request_path(req);
    wconn *w = net_worker_data(net_request_worker(req));
    bool post = strcmp(m, "POST") == 0, get = strcmp(m, "GET") == 0;
    if (post && strcmp(path, "/debit") == 0) {
        handle_call(p, req, K_DEBIT, SAGA_OP_ACTION);
    } else if (post && strcmp(path, "/debit/undo") == 0) {
        handle_call(p, req, K_DEBIT, SAGA_OP_COMPENSATE);
    } else if (post && strcmp(path, "/credit") == 0) {
        handle_call(p, req, K_CREDIT, SAGA_OP_ACTION);
    } else if (post && strcmp(path, "/credit/undo") == 0) {
        handle_call(p, req, K_CREDIT, SAGA_OP_COMPENSATE);
    } else if (post && strcmp(path, "/admin/seed") == 0) {
        handle_seed(p, req, w);
    } else if (get && strcmp(path, "/admin/balances") == 0) {
        handle_balances(p, req, w);
    } else if (post && strcmp(path, "/admin/faults") == 0 && p->faults_on) {
        handle_faults(p, req);
    } else if (post && strcmp(path, "/admin/cleanup") == 0) {
        handle_cleanup(p, req, w);
    } else if (get && strcmp(path, "/healthz") == 0) {
        respond_json(req, 200, "{\"ok\":true}");
    } else {
        respond_err(req, 404, "no such endpoint");
    }
}

static void
worker_start(net_worker *w, void *arg)
{
    part *p = arg;
    net_worker_set_data(w, &p->wc[net_worker_index(w)]);
}

static void
worker_stop(net_worker *w, void *arg)
{
    (void) arg;
    wconn *c = net_worker_data(w);
    if (c != NULL) {
        PQfinish(c->c);
        c->c = NULL;
    }
}

static const char USAGE[] =
    "usage: dengbao saga participant --db CONNINFO --listen HOST:PORT --bank NAME [--faults]\n"
    "                                [--workers N] [--barrier pg|memory]\n";

int
saga_participant_main(int argc, char **argv)
{
    static part p;
    memset(&p, 0, sizeof p);
    const char *listen = NULL, *barrier = "pg";
    unsigned workers = 8;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--db") && has) {
            p.db = argv[++i];
        } else if (!strcmp(a, "--listen") && has) {
            listen = argv[++i];
        } else if (!strcmp(a, "--bank") && has) {
            p.bank = argv[++i];
        } else if (!strcmp(a, "--workers") && has) {
            char *end;
            unsigned long n = strtoul(argv[++i], &end, 10);
            if (*end != 0 || n < 1 || n > WORKERS_MAX) {
                fprintf(stderr, "dengbao: saga participant: --workers is 1..256\n%s", USAGE);
                return 2;
            }
            workers = (unsigned) n;
        } else if (!strcmp(a, "--barrier") && has) {
            barrier = argv[++i];
        } else if (!strcmp(a, "--faults")) {
            p.faults_on = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else {
            fprintf(stderr, "dengbao: saga participant: unknown or incomplete option '%s'\n%s", a,
                    USAGE);
            return 2;
        }
    }
    if (strcmp(barrier, "pg") != 0 && strcmp(barrier, "memory") != 0) {
        fprintf(stderr, "dengbao: saga participant: --barrier is pg or memory\n%s", USAGE);
        return 2;
    }
    p.memory = strcmp(barrier, "memory") == 0;
    if (listen == NULL || p.bank == NULL || (!p.memory && p.db == NULL)) {
        fprintf(stderr, "dengbao: saga participant: --listen, --bank and --db are required\n%s",
                USAGE);
        return 2;
    }
    const char *colon = strrchr(listen, ':');
    char host[64];
    char *end;
    unsigned long port = colon != NULL ? strtoul(colon + 1, &end, 10) : 0;
    if (colon == NULL || colon == listen || (size_t) (colon - listen) >= sizeof host ||
        colon[1] == 0 || *end != 0 || port > 65535) {
        fprintf(stderr, "dengbao: saga participant: --listen must be HOST:PORT\n%s", USAGE);
        return 2;
    }
    snprintf(host, sizeof host, "%.*s", (int) (colon - listen), listen);
    dbao_err err;
    dbao_err_clear(&err);
    if (!p.memory) {
        PGconn *c = pg_open(p.db, &err);
        if (c == NULL) {
            fprintf(stderr, "dengbao: saga participant: %s\n", err.msg);
            return 3;
        }
        char sql[2048];
        snprintf(sql, sizeof sql, "%s%s", SCHEMA_SQL, saga_barrier_schema());
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "dengbao: saga participant: schema: %.200s", PQresultErrorMessage(r));
            PQclear(r);
            PQfinish(c);
            return 3;
        }
        PQclear(r);
        PQfinish(c);
    }
    pthread_mutex_init(&p.mu, NULL);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    net_server *srv = NULL;
    net_server_opts so = {.host = host,
                          .port = (uint16_t) port,
                          .workers = workers,
                          .handler = handler,
                          .handler_arg = &p,
                          .body_max = 64 * 1024,
                          .worker_start = worker_start,
                          .worker_stop = worker_stop,
                          .worker_arg = &p};
    int rc = net_server_new(&srv, &so, &err);
    if (rc == 0) {
        rc = net_server_start(srv, &err);
    }
    if (rc != 0) {
        fprintf(stderr, "dengbao: saga participant: %s\n", err.msg[0] ? err.msg : "listen failed");
        net_server_free(srv);
        return 3;
    }
    printf("saga participant %s: listening on http://%s:%u\n", p.bank, host, net_server_port(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    net_server_stop(srv);
    net_server_wait(srv);
    net_server_free(srv);
    /* a request answered after worker_stop may have reopened a connection */
    for (unsigned i = 0; i < WORKERS_MAX; i++) {
        PQfinish(p.wc[i].c);
    }
    pthread_mutex_destroy(&p.mu);
    hmap_free(&p.counters);
    hmap_free(&p.mem_barrier);
    hmap_free(&p.mem_accounts);
    return 0;
}
