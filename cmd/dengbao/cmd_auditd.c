/* cmd_auditd.c: dengbao auditd, the audit log service (issue 4).
 *
 *   dengbao auditd --dir D --listen HOST:PORT --auth FILE
 *                  [--tls-cert F --tls-key F [--client-ca F [--client-verify optional|require]]]
 *                  [--workers N] [--parse-threads N]
 *
 * HTTP/1.1 on the net layer (include/dengbao/net.h). The log is opened read-write with its own
 * signer key (log.conf's key_path, relative to D; note key name = origin). PORT 0 picks a free
 * port; the chosen address is printed on stdout as "auditd: listening on http[s]://HOST:PORT".
 *
 * API (JSON bodies are one line; errors are {"error":"..."}):
 *
 *   POST /v1/records          application/json (one record) or application/x-ndjson (one per
 *                             line, blank lines skipped). Every line is parsed and encoded
 *                             first; any bad line: 400 {"error","line","field"} and nothing is
 *                             appended. Otherwise the whole body is ONE log request (atomic:
 *                             consecutive indices in one batch) and the answer,
 *                             201 {"first":I,"count":N}, is sent from the log's completion, i.e.
 *                             only after the batch is durable (fdatasync returned).
 *   GET /v1/records/{i}       the record as JSON (audit_record_to_json)
 *   GET /v1/checkpoint        the latest signed checkpoint (text/plain, the signed note)
 *   GET /v1/proof/inclusion?index=I[&size=S]     S defaults to the latest checkpoint's size
 *   GET /v1/proof/consistency?from=A&to=B
 *                             the CLI's proof JSON (audit_proof_to_json):
 *                             {"type":"inclusion","index":N,"size":S,"leaf_hash":"<b64>",
 *                              "hashes":[...]} / {"type":"consistency","from":A,"to":B,...}
 *   GET /metrics              Prometheus text
 *   GET /healthz              200 "ok", 503 once the log has failed (no authentication)
 *
 * Authentication (the auth file, JSON; refused if group- or world-writable):
 *   {"tokens":[{"sm3":"<hex SM3 of the token>","subject":"svc-gateway","roles":[...]}],
 *    "clients":[{"cn":"gateway-1","roles":["audit-writer","audit-admin"]}]}
 * A bearer token ("Authorization: Bearer T") is hashed with SM3 and compared in constant time
 * with every entry (the loop never exits early, the match is selected with a mask). Without an
 * Authorization header, a client certificate that verified against --client-ca identifies the
 * client by its CN. Identity headers from clients are never trusted. Roles: audit-writer may
 * POST; audit-admin may read (records, checkpoint, proofs, metrics). 401 without valid
 * credentials, 403 without the role.
 *
 * Auditing the auditor (fail closed): every authenticated read appends an "audit.read" record
 * (action = method, object = request target, subject = the identity, result and code = the
 * HTTP outcome) and the response is released only when that record is durable; every 401/403
 * appends an "auth.failure" record first. If such an append fails, the client gets 503 and
 * not the data. Once the log has failed, everything but /healthz answers 503.
 *
 * Threads: one net worker (or --workers N) runs the handlers; POST bodies go to a parse pool
 * (--parse-threads N, default 2; 0 parses on the loop) that parses, encodes and submits them,
 * so a large batch never stalls the loop; the log's writer thread runs the completions, which
 * respond through net_request_respond (thread-safe). SIGINT and SIGTERM are blocked in every thread
 * and taken by sigwait in the main thread: graceful stop (in-flight requests finish), then
 * audit_log_close (final checkpoint).
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>

#include "cli.h"
#include "dengbao/audit.h"
#include "dengbao/gm.h"
#include "dengbao/net.h"

#define ROLE_WRITER 0x1u
#define ROLE_ADMIN  0x2u

#define AUTH_FILE_MAX ((size_t) 1 << 20)

static const char auditd_usage[] =
    "usage: dengbao auditd --dir D --listen HOST:PORT --auth FILE\n"
    "           [--tls-cert F --tls-key F [--client-ca F [--client-verify optional|require]]]\n"
    "           [--workers N] [--parse-threads N]\n"
    "  (without TLS only a loopback address is accepted)\n"
    "\n"
    "The audit log service: POST /v1/records, GET /v1/records/{i}, /v1/checkpoint,\n"
    "/v1/proof/inclusion, /v1/proof/consistency, /metrics, /healthz.\n";

typedef struct auth_token {
    uint8_t sm3[GM_SM3_DIGEST_LEN];
    char subject[AUDIT_SUBJECT_ID_MAX + 1];
    unsigned roles;
} auth_token;

typedef struct auth_client {
    char cn[256];
    unsigned roles;
} auth_client;

typedef struct post_job {
    net_request *req;
    struct post_job *next;
} post_job;

typedef struct auditd {
    audit_log *log;
    /* The parse pool: POST bodies are parsed, encoded and submitted off the loop thread. */
    pthread_mutex_t pq_mu;
    pthread_cond_t pq_cv;
    post_job *pq_head, *pq_tail; /* under pq_mu */
    bool pq_stop;                /* under pq_mu */
    pthread_t pq_threads[16];
    unsigned pq_num;
    auth_token *tokens;
    size_t num_tokens;
    auth_client *clients;
    size_t num_clients;
    /* Counters: updated by the worker and the log's writer thread. */
    atomic_uint_fast64_t http[600];
    atomic_uint_fast64_t auth_failures;
} auditd;

typedef struct ident {
    const char *subject; /* borrowed from the auth tables or the request's peer */
    unsigned roles;
} ident;

/* ---- responses ---- */

static void
reply(auditd *d, net_request *req, int status, const char *ctype, const char *body, size_t len)
{
    atomic_fetch_add_explicit(&d->http[status], 1, memory_order_relaxed);
    net_request_add_header(req, "Cache-Control", "no-store");
    net_request_add_header(req, "X-Content-Type-Options", "nosniff");
    net_request_respond(req, status, ctype, body, len);
}

/* json_body builds {"error":msg} (and line/field when line > 0) into a new string. */
static char *
error_json(const char *msg, long line, const char *field)
{
    json_t *o = json_object();
    json_object_set_new(o, "error", json_string(msg));
    if (line > 0) {
        json_object_set_new(o, "line", json_integer(line));
        json_object_set_new(o, "field", field ? json_string(field) : json_null());
    }
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

static void
reply_error(auditd *d, net_request *req, int status, const char *msg)
{
    char *s = error_json(msg, 0, NULL);
    if (s == NULL) {
        reply(d, req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    reply(d, req, status, "application/json", s, strlen(s));
    free(s);
}

/* ---- deferred responses: released by the log's completion ---- */

typedef enum pend_kind {
    PEND_WRITE = 1, /* the client's records: answer 201 with the indices */
    PEND_META = 2,  /* our own audit record: answer the prepared response */
} pend_kind;

typedef struct pending {
    audit_log_req lr; /* first: the completion gets a pointer to it */
    auditd *d;
    net_request *req;
    pend_kind kind;
    int status; /* PEND_META: the prepared response */
    char *ctype;
    char *body;
    size_t body_len;
    bool www_auth; /* add WWW-Authenticate: Bearer */
    uint8_t *data; /* owned: the encodings */
    uint32_t *lens;
    uint32_t one_len;
} pending;

static void
pending_free(pending *p)
{
    free(p->ctype);
    free(p->body);
    dbao_free(p->data);
    if (p->lens != &p->one_len) {
        dbao_free(p->lens);
    }
    dbao_free(p);
}

/* on_durable runs on the log's writer thread. */
static void
on_durable(audit_log_req *lr)
{
    pending *p = (pending *) lr;
    auditd *d = p->d;
    if (lr->status != 0) {
        reply_error(d, p->req, 503, "the audit log cannot record this request");
    } else if (p->kind == PEND_WRITE) {
        char out[96];
        int n = snprintf(out, sizeof out, "{\"first\":%" PRIu64 ",\"count\":%zu}", lr->first_index,
                         lr->num);
        reply(d, p->req, 201, "application/json", out, (size_t) n);
    } else {
        if (p->www_auth) {
            net_request_add_header(p->req, "WWW-Authenticate", "Bearer realm=\"dengbao-audit\"");
        }
        reply(d, p->req, p->status, p->ctype, p->body, p->body_len);
    }
    pending_free(p);
}

/* submit hands a filled pending to the log; on an immediate failure it answers 503. */
static void
submit(pending *p)
{
    p->lr.done = on_durable;
    p->lr.arg = p;
    if (audit_log_submit(p->d->log, &p->lr) != 0) {
        reply_error(p->d, p->req, 503, "the audit log cannot record this request");
        pending_free(p);
    }
}

/* meta_encode builds our own record about this request into p->data. */
static int
meta_encode(pending *p, const char *event_type, const char *subject, const char *role, int status,
            const char *reason)
{
    const net_request *req = p->req;
    audit_record r;
    audit_record_init(&r);
    int64_t now = audit_now_ns();
    int rc = audit_uuid7_generate(r.event_id, now);
    r.time_ns = now;
    snprintf(r.subject.id, sizeof r.subject.id, "%s", subject);
    snprintf(r.subject.role, sizeof r.subject.role, "%s", role ? role : "");
    if (rc == 0) {
        audit_record_set_ip(&r, net_request_peer(req)->addr, NULL);
    }
    snprintf(r.event_type, sizeof r.event_type, "%s", event_type);
    snprintf(r.action, sizeof r.action, "%s", net_request_method(req));
    snprintf(r.object, sizeof r.object, "%s", net_request_target(req));
    r.result = status < 400 ? AUDIT_RESULT_SUCCESS : AUDIT_RESULT_FAILURE;
    r.code = status;
    snprintf(r.source, sizeof r.source, "auditd");
    if (rc == 0 && reason != NULL) {
        char det[160];
        int n = snprintf(det, sizeof det, "{\"reason\":\"%s\"}", reason); /* static text */
        rc = audit_record_set_details(&r, det, (size_t) n, NULL);
    }
    p->data = dbao_malloc(AUDIT_RECORD_MAX);
    size_t len = 0;
    if (rc == 0 && p->data == NULL) {
        rc = DBAO_ENOMEM;
    }
    if (rc == 0) {
        rc = audit_record_encode(&r, p->data, &len, AUDIT_RECORD_MAX, NULL);
        if (rc != 0) {
            /* A request target that is not a valid object (over-long, odd bytes): keep the
             * path only, else nothing. */
            snprintf(r.object, sizeof r.object, "%.*s", (int) (sizeof r.object - 1),
                     net_request_path(req));
            rc = audit_record_encode(&r, p->data, &len, AUDIT_RECORD_MAX, NULL);
            if (rc != 0) {
                r.object[0] = '\0';
                rc = audit_record_encode(&r, p->data, &len, AUDIT_RECORD_MAX, NULL);
            }
        }
    }
    audit_record_cleanup(&r);
    p->one_len = (uint32_t) len;
    p->lens = &p->one_len;
    p->lr.data = p->data;
    p->lr.lens = p->lens;
    p->lr.num = 1;
    return rc;
}

/* respond_audited records (event_type, ...) and then answers status/body. Takes `body`
 * (malloc'd, may be NULL). */
static void
respond_audited(auditd *d, net_request *req, const char *event_type, const char *subject,
                const char *role, int status, const char *ctype, char *body, size_t body_len,
                const char *reason)
{
    pending *p = dbao_calloc(1, sizeof *p);
    if (p == NULL) {
        free(body);
        reply_error(d, req, 503, "out of memory");
        return;
    }
    p->d = d;
    p->req = req;
    p->kind = PEND_META;
    p->status = status;
    p->ctype = ctype ? strdup(ctype) : NULL;
    p->body = body;
    p->body_len = body_len;
    p->www_auth = status == 401;
    if (meta_encode(p, event_type, subject, role, status, reason) != 0 ||
        (ctype != NULL && p->ctype == NULL)) {
        reply_error(d, req, 503, "cannot build the audit record for this request");
        pending_free(p);
        return;
    }
    submit(p);
}

static void
deny(auditd *d, net_request *req, int status, const char *subject, const char *reason)
{
    atomic_fetch_add_explicit(&d->auth_failures, 1, memory_order_relaxed);
    char *body = error_json(reason, 0, NULL);
    respond_audited(d, req, "auth.failure", subject, NULL, status, "application/json", body,
                    body ? strlen(body) : 0, reason);
}

/* ---- authentication ---- */

/* authenticate returns 0 with *id filled, or 401 with *why (static text) and *subject_out the
 * best name for the failure record. */
static int
authenticate(auditd *d, const net_request *req, ident *id, const char **why, const char **who)
{
    const char *h = net_request_header(req, "authorization");
    const net_peer *peer = net_request_peer(req);
    *who = "anonymous";
    if (h != NULL) {
        if (strncasecmp(h, "Bearer ", 7) != 0) {
            *why = "unsupported authorization scheme";
            return 401;
        }
        const char *tok = h + 7;
        while (*tok == ' ') {
            tok++;
        }
        size_t tlen = strlen(tok);
        if (tlen == 0) {
            *why = "empty bearer token";
            return 401;
        }
        uint8_t dig[GM_SM3_DIGEST_LEN];
        gm_sm3(dig, tok, tlen);
        /* Constant time over the table: every entry is compared, the match is selected with a
         * mask, and nothing depends on where (or whether) it matched until the end. */
        size_t match = 0, found = 0;
        for (size_t i = 0; i < d->num_tokens; i++) {
            size_t eq = (size_t) dbao_ct_memeq(dig, d->tokens[i].sm3, sizeof dig);
            size_t mask = (size_t) 0 - eq;
            match = (match & ~mask) | (i & mask);
            found |= eq;
        }
        dbao_cleanse(dig, sizeof dig);
        if (!found) {
            *why = "invalid bearer token";
            return 401;
        }
        id->subject = d->tokens[match].subject;
        id->roles = d->tokens[match].roles;
        return 0;
    }
    if (peer->cert_verified) {
        for (size_t i = 0; i < d->num_clients; i++) {
            if (strcmp(d->clients[i].cn, peer->cert_cn) == 0) {
                id->subject = d->clients[i].cn;
                id->roles = d->clients[i].roles;
                return 0;
            }
        }
        *why = "client certificate not authorised";
        return 401;
    }
    *why = "credentials required (bearer token or client certificate)";
    return 401;
}

/* ---- handlers ---- */

static void
handle_post(auditd *d, net_request *req)
{
    const char *ct = net_request_header(req, "content-type");
    bool ndjson;
    size_t ctl = ct ? strcspn(ct, "; \t") : 0;
    if (ct != NULL && ctl == 16 && strncasecmp(ct, "application/json", 16) == 0) {
        ndjson = false;
    } else if (ct != NULL && ctl == 20 && strncasecmp(ct, "application/x-ndjson", 20) == 0) {
        ndjson = true;
    } else {
        reply_error(d, req, 415, "Content-Type must be application/json or application/x-ndjson");
        return;
    }
    size_t blen;
    const char *body = (const char *) net_request_body(req, &blen);
    pending *p = dbao_calloc(1, sizeof *p);
    size_t cap = 0, used = 0, n = 0, ncap = 0;
    audit_record r;
    audit_record_init(&r);
    dbao_err err;
    dbao_err_clear(&err);
    if (p == NULL) {
        goto oom;
    }
    p->d = d;
    p->req = req;
    p->kind = PEND_WRITE;
    size_t off = 0;
    long line = 0;
    while (off < blen) {
        size_t ll;
        const char *nl = ndjson ? memchr(body + off, '\n', blen - off) : NULL;
        ll = nl ? (size_t) (nl - (body + off)) : blen - off;
        const char *s = body + off;
        off += ll + (nl ? 1 : 0);
        line++;
        size_t sl = ll;
        while (sl > 0 &&
               (s[sl - 1] == '\r' || (!ndjson && (s[sl - 1] == '\n' || s[sl - 1] == ' ')))) {
            sl--;
        }
        if (sl == 0) {
            continue;
        }
        if (n == AUDIT_REQ_RECORDS_MAX) {
            reply_error(d, req, 413, "too many records in one request");
            goto fail;
        }
        if (audit_record_from_json(&r, s, sl, AUDIT_JSON_ASSIGN, &err) != 0) {
            const char *f = strstr(err.msg, "field '");
            char field[128] = "";
            if (f != NULL) {
                f += 7;
                size_t fl = strcspn(f, "'");
                snprintf(field, sizeof field, "%.*s", (int) (fl < 127 ? fl : 127), f);
            }
            char *msg =
                error_json(err.msg[0] ? err.msg : "invalid record", line, field[0] ? field : NULL);
            if (msg == NULL) {
                goto oom;
            }
            reply(d, req, 400, "application/json", msg, strlen(msg));
            free(msg);
            goto fail;
        }
        if (used + AUDIT_RECORD_MAX > cap) {
            size_t nc = cap ? cap * 2 : 64 * 1024;
            while (nc < used + AUDIT_RECORD_MAX) {
                nc *= 2;
            }
            uint8_t *nb = dbao_realloc(p->data, nc);
            if (nb == NULL) {
                goto oom;
            }
            p->data = nb;
            cap = nc;
        }
        if (n == ncap) {
            size_t nc = ncap ? ncap * 2 : 16;
            uint32_t *nl2 = dbao_realloc(p->lens, nc * sizeof *nl2);
            if (nl2 == NULL) {
                goto oom;
            }
            p->lens = nl2;
            ncap = nc;
        }
        size_t el = 0;
        if (audit_record_encode(&r, p->data + used, &el, cap - used, &err) != 0) {
            char *msg = error_json(err.msg, line, NULL);
            reply(d, req, 400, "application/json", msg ? msg : "{}", msg ? strlen(msg) : 2);
            free(msg);
            goto fail;
        }
        p->lens[n++] = (uint32_t) el;
        used += el;
        if (used > AUDIT_REQ_BYTES_MAX) {
            reply_error(d, req, 413, "records larger than one request may hold");
            goto fail;
        }
    }
    audit_record_cleanup(&r);
    if (n == 0) {
        reply_error(d, req, 400, "no records in the body");
        pending_free(p);
        return;
    }
    p->lr.data = p->data;
    p->lr.lens = p->lens;
    p->lr.num = n;
    submit(p);
    return;
oom:
    reply_error(d, req, 503, "out of memory");
fail:
    audit_record_cleanup(&r);
    if (p != NULL) {
        pending_free(p);
    }
}

static int
parse_u64(const char *s, uint64_t *out)
{
    if (s[0] < '0' || s[0] > '9' || strlen(s) > 19 || (s[0] == '0' && s[1] != '\0')) {
        return -1;
    }
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t) (*p - '0');
    }
    if (v > AUDIT_TREE_SIZE_MAX) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
query_u64(const net_request *req, const char *key, uint64_t *out, bool *present)
{
    char v[32];
    int rc = net_query_get(net_request_query(req), key, v, sizeof v);
    *present = rc != DBAO_EINVAL;
    if (rc != 0) {
        return rc == DBAO_EINVAL ? 0 : -1;
    }
    return parse_u64(v, out);
}

/* read_* compute the response to an authorised read: status, content type and body (malloc'd;
 * NULL body means out of memory). */
typedef struct answer {
    int status;
    const char *ctype;
    char *body;
    size_t len;
} answer;

static void
answer_error(answer *a, int status, const char *msg)
{
    a->status = status;
    a->ctype = "application/json";
    a->body = error_json(msg, 0, NULL);
    a->len = a->body ? strlen(a->body) : 0;
}

static void
answer_take(answer *a, int status, const char *ctype, char *dbao_text, size_t len)
{
    /* Copy from dbao_malloc'd text to malloc'd (the pending frees with free()). */
    a->status = status;
    a->ctype = ctype;
    a->body = malloc(len + 1);
    if (a->body != NULL) {
        memcpy(a->body, dbao_text, len);
        a->body[len] = '\0';
    }
    a->len = len;
    dbao_free(dbao_text);
}

static void
read_record(auditd *d, const char *idx, answer *a)
{
    uint64_t i;
    if (parse_u64(idx, &i) != 0) {
        answer_error(a, 400, "the record index must be a decimal integer");
        return;
    }
    uint8_t *buf = dbao_malloc(AUDIT_RECORD_MAX);
    size_t len = 0;
    dbao_err err;
    dbao_err_clear(&err);
    if (buf == NULL) {
        answer_error(a, 503, "out of memory");
        return;
    }
    int rc = audit_log_get(d->log, i, buf, AUDIT_RECORD_MAX, &len, &err);
    if (rc == DBAO_ERANGE) {
        answer_error(a, 404, "no such record");
    } else if (rc != 0) {
        answer_error(a, 500, "cannot read the record");
    } else {
        audit_record r;
        audit_record_init(&r);
        char *json = NULL;
        size_t jl = 0;
        rc = audit_record_decode(&r, buf, len, &err);
        if (rc == 0) {
            rc = audit_record_to_json(&r, &json, &jl, &err);
        }
        audit_record_cleanup(&r);
        if (rc != 0) {
            answer_error(a, 500, "cannot decode the stored record");
        } else {
            answer_take(a, 200, "application/json", json, jl);
        }
    }
    dbao_free(buf);
}

static void
read_checkpoint(auditd *d, answer *a)
{
    char *note = NULL;
    size_t len = 0;
    dbao_err err;
    int rc = audit_log_checkpoint_latest(d->log, &note, &len, NULL, &err);
    if (rc == DBAO_ERANGE) {
        answer_error(a, 404, "no checkpoint yet");
    } else if (rc != 0) {
        answer_error(a, 500, "cannot read the checkpoint");
    } else {
        answer_take(a, 200, "text/plain; charset=utf-8", note, len);
    }
}

static void
read_proof(auditd *d, const net_request *req, bool inclusion, answer *a)
{
    audit_proof p;
    memset(&p, 0, sizeof p);
    dbao_err err;
    dbao_err_clear(&err);
    bool has1, has2;
    int rc;
    if (inclusion) {
        p.type = AUDIT_PROOF_INCLUSION;
        if (query_u64(req, "index", &p.index, &has1) != 0 || !has1 ||
            query_u64(req, "size", &p.size, &has2) != 0) {
            answer_error(a, 400, "give index=N and optionally size=S (decimal integers)");
            return;
        }
        if (!has2) {
            audit_checkpoint cp;
            rc = audit_log_checkpoint_latest(d->log, NULL, NULL, &cp, &err);
            if (rc != 0) {
                answer_error(a, 404, "no checkpoint yet: pass size=S");
                return;
            }
            p.size = cp.size;
        }
        if (p.index >= p.size || p.size > audit_log_size(d->log)) {
            answer_error(a, 400, "index must be below size, and size at most the log size");
            return;
        }
        rc = audit_log_prove_inclusion(d->log, p.index, p.size, &p.hashes[0][0], &p.num, &err);
        if (rc == 0) {
            rc = audit_log_hash(d->log, p.leaf_hash, 0, p.index);
            p.has_leaf = rc == 0;
        }
    } else {
        p.type = AUDIT_PROOF_CONSISTENCY;
        if (query_u64(req, "from", &p.from, &has1) != 0 || !has1 ||
            query_u64(req, "to", &p.to, &has2) != 0 || !has2) {
            answer_error(a, 400, "give from=A and to=B (decimal integers)");
            return;
        }
        if (p.from > p.to || p.to > audit_log_size(d->log)) {
            answer_error(a, 400, "need from <= to <= the log size");
            return;
        }
        rc = audit_log_prove_consistency(d->log, p.from, p.to, &p.hashes[0][0], &p.num, &err);
    }
    char *json = NULL;
    size_t jl = 0;
    if (rc == 0) {
        rc = audit_proof_to_json(&p, &json, &jl, &err);
    }
    if (rc == DBAO_ERANGE || rc == DBAO_EINVAL) {
        answer_error(a, 400, err.msg[0] ? err.msg : "invalid proof parameters");
    } else if (rc != 0) {
        answer_error(a, 500, "cannot build the proof");
    } else {
        answer_take(a, 200, "application/json", json, jl);
    }
}

static void
read_metrics(auditd *d, answer *a)
{
    audit_log_stats st;
    audit_log_get_stats(d->log, &st);
    size_t cap = 8192, len = 0;
    char *b = malloc(cap);
    if (b == NULL) {
        answer_error(a, 503, "out of memory");
        return;
    }
#define M(...)                                                                                     \
    do {                                                                                           \
        int n_ = snprintf(b + len, cap - len, __VA_ARGS__);                                        \
        if (n_ > 0 && (size_t) n_ < cap - len) {                                                   \
            len += (size_t) n_;                                                                    \
        }                                                                                          \
    } while (0)
    M("# HELP dengbao_audit_log_size Durable records in the log.\n"
      "# TYPE dengbao_audit_log_size gauge\ndengbao_audit_log_size %" PRIu64 "\n",
      st.size);
    M("# HELP dengbao_audit_batches_total Batches made durable since start.\n"
      "# TYPE dengbao_audit_batches_total counter\ndengbao_audit_batches_total %" PRIu64 "\n",
      st.batches);
    M("# HELP dengbao_audit_appended_total Records appended since start.\n"
      "# TYPE dengbao_audit_appended_total counter\ndengbao_audit_appended_total %" PRIu64 "\n",
      st.appended);
    M("# HELP dengbao_audit_bytes_total Bytes written to segments since start.\n"
      "# TYPE dengbao_audit_bytes_total counter\ndengbao_audit_bytes_total %" PRIu64 "\n",
      st.bytes);
    M("# HELP dengbao_audit_checkpoint_size Tree size of the latest signed checkpoint.\n"
      "# TYPE dengbao_audit_checkpoint_size gauge\ndengbao_audit_checkpoint_size %" PRIu64 "\n",
      st.checkpoint_size);
    M("# HELP dengbao_audit_checkpoint_timestamp_seconds When the latest checkpoint was cut.\n"
      "# TYPE dengbao_audit_checkpoint_timestamp_seconds gauge\n"
      "dengbao_audit_checkpoint_timestamp_seconds %.3f\n",
      (double) st.checkpoint_time_ns / 1e9);
    M("# HELP dengbao_audit_fsync_seconds_total Time spent in fdatasync.\n"
      "# TYPE dengbao_audit_fsync_seconds_total counter\n"
      "dengbao_audit_fsync_seconds_total %.6f\n",
      (double) st.fsync_ns_total / 1e9);
    M("# HELP dengbao_audit_failed 1 once the log has failed (fail closed).\n"
      "# TYPE dengbao_audit_failed gauge\ndengbao_audit_failed %d\n",
      st.failed != 0);
    M("# HELP dengbao_auditd_auth_failures_total Requests refused with 401 or 403.\n"
      "# TYPE dengbao_auditd_auth_failures_total counter\n"
      "dengbao_auditd_auth_failures_total %" PRIu64 "\n",
      (uint64_t) atomic_load_explicit(&d->auth_failures, memory_order_relaxed));
    M("# HELP dengbao_auditd_http_requests_total HTTP responses by status code.\n"
      "# TYPE dengbao_auditd_http_requests_total counter\n");
    for (int s = 100; s < 600; s++) {
        uint64_t v = atomic_load_explicit(&d->http[s], memory_order_relaxed);
        if (v != 0) {
            M("dengbao_auditd_http_requests_total{code=\"%d\"} %" PRIu64 "\n", s, v);
        }
    }
#undef M
    a->status = 200;
    a->ctype = "text/plain; version=0.0.4; charset=utf-8";
    a->body = b;
    a->len = len;
}

static void
handler(net_request *req, void *arg)
{
    auditd *d = arg;
    const char *path = net_request_path(req);
    const char *method = net_request_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(path, "/healthz") == 0) {
        if (!get) {
            net_request_add_header(req, "Allow", "GET, HEAD");
            reply_error(d, req, 405, "method not allowed");
        } else if (audit_log_failed(d->log) != 0) {
            reply(d, req, 503, "text/plain", "failed\n", 7);
        } else {
            reply(d, req, 200, "text/plain", "ok\n", 3);
        }
        return;
    }
    if (audit_log_failed(d->log) != 0) {
        reply_error(d, req, 503, "the audit log has failed and accepts nothing (fail closed)");
        return;
    }
    ident id = {NULL, 0};
    const char *why = NULL, *who = NULL;
    if (authenticate(d, req, &id, &why, &who) != 0) {
        deny(d, req, 401, who, why);
        return;
    }
    if (strcmp(path, "/v1/records") == 0) {
        if (strcmp(method, "POST") != 0) {
            net_request_add_header(req, "Allow", "POST");
            reply_error(d, req, 405, "method not allowed");
            return;
        }
        if (!(id.roles & ROLE_WRITER)) {
            deny(d, req, 403, id.subject, "role audit-writer required");
            return;
        }
        if (d->pq_num > 0) {
            post_job *j = dbao_malloc(sizeof *j);
            if (j != NULL) {
                j->req = req;
                j->next = NULL;
                pthread_mutex_lock(&d->pq_mu);
                if (d->pq_tail != NULL) {
                    d->pq_tail->next = j;
                } else {
                    d->pq_head = j;
                }
                d->pq_tail = j;
                pthread_cond_signal(&d->pq_cv);
                pthread_mutex_unlock(&d->pq_mu);
                return;
            }
        }
        handle_post(d, req);
        return;
    }
    /* Everything else is a read: audit-admin only, and audited. */
    if (!(id.roles & ROLE_ADMIN)) {
        deny(d, req, 403, id.subject, "role audit-admin required");
        return;
    }
    answer a = {0, NULL, NULL, 0};
    if (!get) {
        net_request_add_header(req, "Allow", "GET, HEAD");
        answer_error(&a, 405, "method not allowed");
    } else if (strncmp(path, "/v1/records/", 12) == 0) {
        read_record(d, path + 12, &a);
    } else if (strcmp(path, "/v1/checkpoint") == 0) {
        read_checkpoint(d, &a);
    } else if (strcmp(path, "/v1/proof/inclusion") == 0) {
        read_proof(d, req, true, &a);
    } else if (strcmp(path, "/v1/proof/consistency") == 0) {
        read_proof(d, req, false, &a);
    } else if (strcmp(path, "/metrics") == 0) {
        read_metrics(d, &a);
    } else {
        answer_error(&a, 404, "no such endpoint");
    }
    if (a.body == NULL) {
        reply_error(d, req, 503, "out of memory");
        return;
    }
    respond_audited(d, req, "audit.read", id.subject, "audit-admin", a.status, a.ctype, a.body,
                    a.len, NULL);
}

/* parse_thread: one of the parse pool's threads. The JSON parse and validation of a batch
 * (about 7 us per record) and its leaf hashes (in audit_log_submit) run here, in parallel, so
 * that a large batch never holds up the loop (other clients, /healthz). */
static void *
parse_thread(void *arg)
{
    auditd *d = arg;
    for (;;) {
        pthread_mutex_lock(&d->pq_mu);
        while (d->pq_head == NULL && !d->pq_stop) {
            pthread_cond_wait(&d->pq_cv, &d->pq_mu);
        }
        post_job *j = d->pq_head;
        if (j != NULL) {
            d->pq_head = j->next;
            if (d->pq_head == NULL) {
                d->pq_tail = NULL;
            }
        }
        pthread_mutex_unlock(&d->pq_mu);
        if (j == NULL) {
            return NULL; /* stopping and drained */
        }
        net_request *req = j->req;
        dbao_free(j);
        handle_post(d, req);
    }
}

static void
parse_pool_stop(auditd *d)
{
    pthread_mutex_lock(&d->pq_mu);
    d->pq_stop = true;
    pthread_cond_broadcast(&d->pq_cv);
    pthread_mutex_unlock(&d->pq_mu);
    for (unsigned i = 0; i < d->pq_num; i++) {
        pthread_join(d->pq_threads[i], NULL);
    }
    d->pq_num = 0;
}

/* ---- the auth file ---- */

static int
parse_roles(json_t *arr, unsigned *out, const char *where, dbao_err *err)
{
    *out = 0;
    if (!json_is_array(arr)) {
        return dbao_err_set(err, DBAO_EFORMAT, "%s: 'roles' must be an array", where);
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        if (s != NULL && strcmp(s, "audit-writer") == 0) {
            *out |= ROLE_WRITER;
        } else if (s != NULL && strcmp(s, "audit-admin") == 0) {
            *out |= ROLE_ADMIN;
        } else {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "%s: unknown role (known: audit-writer, audit-admin)", where);
        }
    }
    return 0;
}

static bool
printable_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    return true;
}

static int
load_auth(auditd *d, const char *path, dbao_err *err)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        return dbao_err_set(err, -errno, "cannot read the auth file '%s': %s", path,
                            strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        return dbao_err_set(err, DBAO_EINVAL, "the auth file '%s' is not a regular file", path);
    }
    if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
        return dbao_err_set(err, DBAO_EINVAL,
                            "the auth file '%s' is group- or world-writable: chmod go-w it", path);
    }
    if (sb.st_mode & S_IROTH) {
        fprintf(stderr, "dengbao: warning: the auth file '%s' is world-readable\n", path);
    }
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = dbao_file_read(&text, &len, path, AUTH_FILE_MAX, err);
    if (rc != 0) {
        return rc;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *) text, len, JSON_REJECT_DUPLICATES, &je);
    dbao_free(text);
    if (root == NULL || !json_is_object(root)) {
        json_decref(root);
        return dbao_err_set(err, DBAO_EFORMAT, "auth file '%s': not a JSON object (line %d)", path,
                            je.line);
    }
    const char *key;
    json_t *v;
    rc = 0;
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "tokens") != 0 && strcmp(key, "clients") != 0) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "auth file '%s': unknown key '%s'", path, key);
            goto out;
        }
        if (!json_is_array(v)) {
            rc =
                dbao_err_set(err, DBAO_EFORMAT, "auth file '%s': '%s' must be an array", path, key);
            goto out;
        }
    }
    json_t *tokens = json_object_get(root, "tokens");
    json_t *clients = json_object_get(root, "clients");
    d->num_tokens = tokens ? json_array_size(tokens) : 0;
    d->num_clients = clients ? json_array_size(clients) : 0;
    d->tokens = dbao_calloc(d->num_tokens + 1, sizeof *d->tokens);
    d->clients = dbao_calloc(d->num_clients + 1, sizeof *d->clients);
    if (d->tokens == NULL || d->clients == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < d->num_tokens; i++) {
        json_t *t = json_array_get(tokens, i);
        char where[64];
        snprintf(where, sizeof where, "auth file: tokens[%zu]", i);
        const char *hex = json_string_value(json_object_get(t, "sm3"));
        const char *sub = json_string_value(json_object_get(t, "subject"));
        if (!json_is_object(t) || json_object_size(t) != 3 || hex == NULL || sub == NULL) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "%s: needs exactly sm3, subject and roles", where);
            goto out;
        }
        if (dbao_hex_decode_fixed(d->tokens[i].sm3, GM_SM3_DIGEST_LEN, hex, strlen(hex), NULL) !=
            0) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "%s: 'sm3' must be 64 hex digits", where);
            goto out;
        }
        if (!printable_name(sub, AUDIT_SUBJECT_ID_MAX)) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "%s: 'subject' must be 1..%d printable bytes",
                              where, AUDIT_SUBJECT_ID_MAX);
            goto out;
        }
        snprintf(d->tokens[i].subject, sizeof d->tokens[i].subject, "%s", sub);
        if ((rc = parse_roles(json_object_get(t, "roles"), &d->tokens[i].roles, where, err)) != 0) {
            goto out;
        }
    }
    for (size_t i = 0; i < d->num_clients; i++) {
        json_t *c = json_array_get(clients, i);
        char where[64];
        snprintf(where, sizeof where, "auth file: clients[%zu]", i);
        const char *cn = json_string_value(json_object_get(c, "cn"));
        if (!json_is_object(c) || json_object_size(c) != 2 || cn == NULL) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "%s: needs exactly cn and roles", where);
            goto out;
        }
        if (!printable_name(cn, sizeof d->clients[i].cn - 1)) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "%s: 'cn' must be 1..255 printable bytes", where);
            goto out;
        }
        snprintf(d->clients[i].cn, sizeof d->clients[i].cn, "%s", cn);
        if ((rc = parse_roles(json_object_get(c, "roles"), &d->clients[i].roles, where, err)) !=
            0) {
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}

/* ---- main ---- */

static void
on_alarm(void *arg, int code, const char *what)
{
    (void) arg;
    fprintf(stderr, "dengbao: auditd: the audit log failed (%s): %s; refusing everything\n",
            dbao_strerror(code), what);
}

static int
parse_listen(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s) {
        return -1;
    }
    const char *h = s;
    size_t hl = (size_t) (colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= cap) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || colon[1] == '\0' || p > 65535) {
        return -1;
    }
    *port = (uint16_t) p;
    return 0;
}

int
cmd_auditd(int argc, char **argv)
{
    const char *dir = NULL, *listen = NULL, *auth = NULL, *cert = NULL, *key_file = NULL;
    const char *ca = NULL, *verify = NULL, *workers_s = NULL, *parse_s = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(auditd_usage, stdout);
            return CLI_OK;
        }
        const char **slot = strcmp(a, "--dir") == 0             ? &dir
                            : strcmp(a, "--listen") == 0        ? &listen
                            : strcmp(a, "--auth") == 0          ? &auth
                            : strcmp(a, "--tls-cert") == 0      ? &cert
                            : strcmp(a, "--tls-key") == 0       ? &key_file
                            : strcmp(a, "--client-ca") == 0     ? &ca
                            : strcmp(a, "--client-verify") == 0 ? &verify
                            : strcmp(a, "--workers") == 0       ? &workers_s
                            : strcmp(a, "--parse-threads") == 0 ? &parse_s
                                                                : NULL;
        if (slot == NULL) {
            return cli_usage_error("dengbao auditd --help", "unknown option '%s'", a);
        }
        if (i + 1 >= argc) {
            return cli_usage_error("dengbao auditd --help", "option %s needs a value", a);
        }
        *slot = argv[++i];
    }
    if (dir == NULL || listen == NULL || auth == NULL) {
        return cli_usage_error("dengbao auditd --help", "--dir, --listen and --auth are required");
    }
    char host[64];
    uint16_t port;
    if (parse_listen(listen, host, sizeof host, &port) != 0) {
        return cli_usage_error("dengbao auditd --help", "--listen wants HOST:PORT, not '%s'",
                               listen);
    }
    if ((cert == NULL) != (key_file == NULL)) {
        return cli_usage_error("dengbao auditd --help", "--tls-cert and --tls-key go together");
    }
    /* Tokens and audit data never cross a network in clear (GB/T 22239-2019 8.1.2.2): plain
     * HTTP only on a loopback address. */
    bool loopback =
        strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 || strcmp(host, "localhost") == 0;
    if (cert == NULL && !loopback) {
        return cli_usage_error("dengbao auditd --help",
                               "plain HTTP is only served on a loopback address: give "
                               "--tls-cert and --tls-key to listen on %s",
                               host);
    }
    if (ca != NULL && cert == NULL) {
        return cli_usage_error("dengbao auditd --help", "--client-ca needs --tls-cert");
    }
    net_client_verify cv = ca ? NET_CLIENT_VERIFY_OPTIONAL : NET_CLIENT_VERIFY_NONE;
    if (verify != NULL) {
        if (ca == NULL) {
            return cli_usage_error("dengbao auditd --help", "--client-verify needs --client-ca");
        }
        if (strcmp(verify, "require") == 0) {
            cv = NET_CLIENT_VERIFY_REQUIRE;
        } else if (strcmp(verify, "optional") != 0) {
            return cli_usage_error("dengbao auditd --help",
                                   "--client-verify is 'optional' or 'require'");
        }
    }
    unsigned workers = 1;
    if (workers_s != NULL) {
        char *end;
        unsigned long w = strtoul(workers_s, &end, 10);
        if (*end != '\0' || w < 1 || w > 64) {
            return cli_usage_error("dengbao auditd --help", "--workers is 1..64");
        }
        workers = (unsigned) w;
    }
    unsigned parse_threads = 2;
    if (parse_s != NULL) {
        char *end;
        unsigned long n = strtoul(parse_s, &end, 10);
        if (*end != '\0' || parse_s[0] == '\0' || n > 16) {
            return cli_usage_error("dengbao auditd --help", "--parse-threads is 0..16");
        }
        parse_threads = (unsigned) n;
    }

    /* Every thread created from here on (the log's writer, the net workers) inherits this
     * mask; the signals are taken by sigwait below. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    static auditd d; /* large (counters): not on the stack */
    memset(&d, 0, sizeof d);
    pthread_mutex_init(&d.pq_mu, NULL);
    pthread_cond_init(&d.pq_cv, NULL);
    dbao_err err;
    dbao_err_clear(&err);
    gm_sm2_key *key = NULL;
    cli_audit_trust trust = {0}; /* earlier signers' keys (rotation), for recovery */
    char *holder = NULL;
    net_server *srv = NULL;
    int rc = load_auth(&d, auth, &err);
    if (rc != 0) {
        rc = cli_report(rc, &err);
        goto out;
    }
    audit_log_config cfg;
    rc = cli_audit_keys_load(dir, true, NULL, &key, &cfg, &holder, &err);
    if (rc != 0) {
        rc = cli_report(rc, &err);
        goto out;
    }
    audit_note_key nk = {.name = cfg.origin, .key = key};
    rc = cli_audit_trust_load(&trust, dir, &cfg, &err);
    if (rc != 0) {
        rc = cli_report(rc, &err);
        goto out;
    }
    audit_log_open_opts oo = {.signers = &nk,
                              .num_signers = 1,
                              .trusted = trust.nk,
                              .num_trusted = trust.n,
                              .alarm = on_alarm,
                              .alarm_arg = &d};
    rc = audit_log_open(&d.log, dir, &oo, &err);
    if (rc != 0) {
        rc = cli_report(rc, &err);
        goto out;
    }
    const char *note = audit_log_recovery_note(d.log);
    if (note != NULL) {
        fprintf(stderr, "dengbao: auditd: recovery: %s\n", note);
    }
    for (unsigned i = 0; i < parse_threads; i++) {
        if (pthread_create(&d.pq_threads[i], NULL, parse_thread, &d) != 0) {
            break;
        }
        d.pq_num++;
    }
    net_server_opts so = {
        .host = host,
        .port = port,
        .workers = workers,
        .handler = handler,
        .handler_arg = &d,
        .body_max = AUDIT_REQ_BYTES_MAX,
        .tls_cert = cert,
        .tls_key = key_file,
        .tls_client_ca = ca,
        .client_verify = cv,
    };
    rc = net_server_new(&srv, &so, &err);
    if (rc == 0) {
        rc = net_server_start(srv, &err);
    }
    if (rc != 0) {
        rc = cli_report(rc, &err);
        goto out;
    }
    printf("auditd: listening on %s://%s%s%s:%u\n", cert ? "https" : "http",
           strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", net_server_port(srv));
    fflush(stdout);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "dengbao: auditd: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    net_server_stop(srv);
    net_server_wait(srv);
    rc = audit_log_failed(d.log) != 0 ? CLI_INTERNAL : CLI_OK;
out:
    net_server_free(srv); /* every request has been answered: the parse queue is empty */
    parse_pool_stop(&d);
    if (audit_log_close(d.log) != 0 && rc == CLI_OK) { /* queued work, final checkpoint */
        rc = CLI_INTERNAL;
    }
    gm_sm2_key_free(key);
    cli_audit_trust_free(&trust);
    dbao_free(holder);
    dbao_free(d.tokens);
    dbao_free(d.clients);
    pthread_mutex_destroy(&d.pq_mu);
    pthread_cond_destroy(&d.pq_cv);
    return rc;
}
