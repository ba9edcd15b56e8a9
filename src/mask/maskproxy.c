/* maskproxy.c: the masking policy on top of the protocol engine (pgproxy.c) and
 * the SQL rewriter (sql.c): `dengbao maskproxy`.
 *
 * Per statement (a Query, or a Parse: so prepared statements are analysed
 * once):
 *   1. the catalog of the session's database must be known: it is loaded off
 * the event loop (libpq in the libuv thread pool) at first use, refreshed in
 * the background after `catalog.refresh`, and reloaded at once (at most once a
 * second) when a statement names a relation the catalog does not have. Until it
 * is known the statement waits; if it cannot be loaded the statement is refused
 * (nothing is known, so nothing is passed).
 *   2. mask_sql_rewrite decides for the user's roles: pass, rewrite (outputs
 * wrapped so the server returns marker + action index + hex of the value), or
 * refuse.
 *   3. a statement that touches a sensitive column, and every refusal, is an
 * audit record (user, roles, client address, database, fingerprint, the
 * statement with its literals normalised away, each sensitive output with the
 * function applied and its key id). audit.mode durable: the statement reaches
 * the server only once its record is on disk; a failed audit write refuses the
 * statement and every later one that touches sensitive data (fail closed,
 * 等保 8.1.3.5 / 8.1.4.3).
 *   4. refusals are executed by the server, not faked by the proxy: the text is
 * replaced by `SELECT "<marker>R<n>"`, which fails at parse analysis (before
 * any parameter is bound), and the proxy turns that ErrorResponse into the real
 * one (SQLSTATE and message). So the server's transaction state and the
 * extended protocol's error recovery stay exact.
 *
 * Server to client:
 *   DataRow   fields that start with the marker are decoded and masked with
 * their action; with scan_results, other text-typed, text-format fields go
 * through the detectors too (a second line of defence) and findings are masked
 * by their type's rule. CopyData  every marker occurrence is replaced by the
 * masked value; characters that COPY text or CSV would have to escape (tab, CR,
 * LF, backslash, comma, quote) are written as '*' in masked values (the
 * rewriter refuses non-default delimiters). Errors    a masked session's errors
 * lose DETAIL, HINT, CONTEXT and internal query, and the quoted parts of the
 * message ("invalid input syntax ...: \"<value>\"") become
 *             "***", because the server quotes the values it choked on;
 * detectors run on the rest. ParameterStatus client_encoding: masked values are
 * produced in UTF-8, so a masked role whose client_encoding is not UTF8 gets
 * its sensitive statements refused.
 *
 * The marker is 0x1f + 12 random hex digits per process; clients never see it
 * (any value that carries it is masked or, if malformed, replaced by "***":
 * never passed).
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "dengbao/audit.h"
#include "dengbao/mask.h"
#include "maskproxy.h"
#include "pgproxy.h"
#include "pgwire.h"
#include "sqlmask.h"

#define MARKER_LEN    13 /* 0x1f + 12 hex digits */
#define REFUSALS      16
#define STATEMENT_MAX 4000 /* bytes of normalised statement kept in an audit record */
#define RELOAD_MIN_MS 1000
#define FINDINGS_MAX  64
#define SHAPES        4096 /* per worker: statement shapes known to pass untouched */
#define SHAPE_MAX     1024 /* longer texts are not cached */

typedef struct mp_worker mp_worker;
typedef struct mp_sess mp_sess;

typedef struct mp_db {
    struct mp_db *next;
    mp_worker *w;
    char *name;
    mask_catalog *cat; /* current, bound; NULL until first loaded */
    uint32_t gen;      /* incremented at each load: shapes of older catalogs do not match */
    uint64_t loaded_ms;
    uint64_t tried_ms; /* when the last load started */
    uv_timer_t timer;  /* a fresh load that must wait for RELOAD_MIN_MS */
    bool timer_init;
    bool loading;
    uv_work_t work;
    mask_catalog *new_cat;
    int load_rc;
    dbao_err load_err;
    mp_sess *waiters;
} mp_db;

typedef struct mp_done {
    struct mp_done *next;
    mask_proxy *mp;
    mp_sess *ss; /* durable requests only (they hold a reference) */
    int status;
    audit_log_req req;
    uint32_t len;
    uint8_t data[];
} mp_done;

/* A statement shape: the text with its numeric and simple string literals replaced (see
 * shape_of), for one database, catalog generation and role set, known to PASS with nothing
 * sensitive in it. */
typedef struct mp_shape {
    uint64_t hash;
    const void *db;
    const void *roles;
    uint32_t gen;
    uint32_t len;
    bool parse; /* decided for a Parse (extended protocol) rather than a Query */
    char *text;
} mp_shape;

struct mp_worker {
    struct mp_worker *next;
    mp_shape *shapes; /* SHAPES entries, direct-mapped by hash */
    mask_proxy *mp;
    uv_loop_t *loop;
    mp_db *dbs;
    uv_async_t async;
    bool async_open;
    pthread_mutex_t mu;
    mp_done *done; /* completed durable audit requests, for this loop */
    bool dead;     /* the loop has ended (mask_proxy_stop): no more async sends */
};

typedef struct refusal {
    uint32_t id;
    char sqlstate[6];
    char msg[240];
} refusal;

struct mp_sess {
    mask_proxy *mp;
    mp_worker *w;
    pgp_session *ps; /* NULL once closed */
    int refs;
    char user[AUDIT_SUBJECT_ID_MAX + 1];
    char database[128];
    char peer_ip[64];
    const char *const *roles;
    size_t num_roles;
    char roles_joined[AUDIT_SUBJECT_ROLE_MAX + 1];
    bool utf8;
    bool strict_errors;
    /* a statement waiting for the catalog or for its audit record */
    char *pend_sql;
    size_t pend_len;
    bool pend_parse;
    bool pend_retried;
    bool pend_fresh; /* waits for a load that started after pend_arrival */
    uint64_t pend_arrival;
    mp_sess *next_waiter;
    int resume_how;
    dbao_buf resume_text;
    /* the current row description */
    uint32_t *col_type;
    uint8_t *col_fmt;
    size_t ncols, capcols;
    refusal refusals[REFUSALS];
    uint32_t next_refusal;
    dbao_buf tmp, tmp2;
};

struct mask_proxy {
    const mask_proxy_config *cfg;
    const mask_policy *pol;
    const mask_detector *det;
    audit_log *log;
    pgp_server *srv;
    SSL_CTX *client_tls;
    pgp_hooks hooks;
    char marker[MARKER_LEN + 1];
    pthread_mutex_t mu; /* workers list */
    mp_worker *workers;
    atomic_bool audit_failed;
    _Atomic long inflight; /* durable audit requests not yet completed */
    _Atomic uint64_t st_shape_hits;
    _Atomic uint64_t st_sessions, st_statements, st_rewritten, st_refused, st_values, st_findings,
        st_audit, st_audit_fail;
};

/* ---- small helpers --------------------------------------------------------------------------- */

static int
put32(dbao_buf *b, uint32_t v)
{
    uint8_t x[4];
    pgw_put32(x, v);
    return dbao_buf_put(b, x, 4);
}

static void
sess_unref(mp_sess *ss)
{
    if (--ss->refs > 0)
        return;
    free(ss->pend_sql);
    dbao_buf_free(&ss->resume_text);
    dbao_buf_free(&ss->tmp);
    dbao_buf_free(&ss->tmp2);
    free(ss->col_type);
    free(ss->col_fmt);
    free(ss);
}

/* copy_text copies src into dst[cap], cut on a UTF-8 character boundary if too long */
static void
copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char) src[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- refusals -------------------------------------------------------------------------------- */

/* refusal_sql puts the text that makes the server fail with our refusal into
 * `out`. */
static int
refusal_sql(mp_sess *ss, const char *sqlstate, const char *msg, dbao_buf *out)
{
    refusal *r = &ss->refusals[ss->next_refusal % REFUSALS];
    r->id = ++ss->next_refusal;
    copy_text(r->sqlstate, sizeof r->sqlstate, sqlstate);
    copy_text(r->msg, sizeof r->msg, msg);
    atomic_fetch_add(&ss->mp->st_refused, 1);
    dbao_buf_reset(out);
    return dbao_buf_printf(out, "SELECT \"%sR%u\"", ss->mp->marker, r->id);
}

/* ---- audit ----------------------------------------------------------------------------------- */

static void
json_set_str(json_t *o, const char *k, const char *v)
{
    json_t *s = json_string(v);
    if (s == NULL) /* not UTF-8: never put raw bytes in a record */
        s = json_string("(not utf-8)");
    json_object_set_new(o, k, s);
}

static int
build_record(mp_sess *ss, const mask_sql_result *res, bool parse, const char *sqlstate,
             const char *reason, uint8_t *out, size_t *out_len, dbao_err *err)
{
    audit_record r;
    audit_record_init(&r);
    r.time_ns = audit_now_ns();
    audit_uuid7_generate(r.event_id, r.time_ns);
    snprintf(r.subject.id, sizeof r.subject.id, "%s", ss->user);
    snprintf(r.subject.role, sizeof r.subject.role, "%s", ss->roles_joined);
    if (ss->peer_ip[0] != '\0')
        (void) audit_record_set_ip(&r, ss->peer_ip, NULL);
    snprintf(r.event_type, sizeof r.event_type, "mask.sql");
    bool refused = sqlstate != NULL;
    snprintf(r.action, sizeof r.action, "%s",
             refused ? "refuse" : (res->masked ? "mask" : "clear"));
    snprintf(r.object, sizeof r.object, "postgresql:%s", ss->database);
    r.result = refused ? AUDIT_RESULT_FAILURE : AUDIT_RESULT_SUCCESS;
    snprintf(r.source, sizeof r.source, "maskproxy");

    json_t *d = json_object();
    if (d == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    json_set_str(d, "protocol", parse ? "extended" : "simple");
    if (res != NULL && res->fingerprint[0] != '\0')
        json_set_str(d, "fingerprint", res->fingerprint);
    if (res != NULL && res->normalized != NULL) {
        size_t n = strlen(res->normalized);
        if (n > STATEMENT_MAX) {
            n = STATEMENT_MAX;
            while (n > 0 && ((unsigned char) res->normalized[n] & 0xc0) == 0x80)
                n--; /* cut on a character boundary */
        }
        json_t *s = json_stringn(res->normalized, n);
        json_object_set_new(d, "statement", s ? s : json_string("(not utf-8)"));
    }
    if (refused) {
        json_set_str(d, "sqlstate", sqlstate);
        json_set_str(d, "reason", reason);
    }
    if (res != NULL && res->num_decisions > 0) {
        json_t *a = json_array();
        for (size_t i = 0; i < res->num_decisions && a != NULL; i++) {
            const mask_sql_decision *m = &res->decisions[i];
            json_t *o = json_object();
            if (o == NULL)
                break;
            json_set_str(o, "column", m->column ? m->column : "");
            json_set_str(o, "label", m->label ? m->label : "");
            json_object_set_new(o, "derived", json_boolean(m->derived));
            if (m->action < 0) {
                json_set_str(o, "function", "clear");
            } else {
                const mask_action *act = mask_policy_action(ss->mp->pol, (size_t) m->action);
                dbao_buf fb = {0};
                if (act != NULL && mask_fn_format(&act->fn, &fb) == 0)
                    json_set_str(o, "function", fb.data ? fb.data : "");
                if (act != NULL && act->fn.key_id[0] != '\0')
                    json_set_str(o, "key_id", act->fn.key_id);
                if (act != NULL && act->type != MASK_T_NONE)
                    json_set_str(o, "type", mask_type_name(act->type));
                dbao_buf_free(&fb);
            }
            json_array_append_new(a, o);
        }
        if (a != NULL)
            json_object_set_new(d, "outputs", a);
    }
    char *txt = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(d);
    if (txt == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    int rc = audit_record_set_details(&r, txt, strlen(txt), err);
    free(txt);
    if (rc == 0)
        rc = audit_record_encode(&r, out, out_len, AUDIT_RECORD_MAX, err);
    audit_record_cleanup(&r);
    return rc;
}

static void
on_audit_done(audit_log_req *req)
{
    mp_done *d = req->arg;
    mp_worker *w = d->ss->w;
    mask_proxy *mp = d->mp;
    d->status = req->status;
    if (req->status != 0) {
        atomic_store(&d->mp->audit_failed, true);
        atomic_fetch_add(&d->mp->st_audit_fail, 1);
    } else {
        atomic_fetch_add(&d->mp->st_audit, 1);
    }
    pthread_mutex_lock(&w->mu);
    d->next = w->done;
    w->done = d;
    if (!w->dead)
        uv_async_send(&w->async);
    pthread_mutex_unlock(&w->mu);
    atomic_fetch_sub(&mp->inflight, 1);
}

static void
on_async_free(audit_log_req *req)
{
    mp_done *d = req->arg;
    if (req->status != 0) {
        atomic_store(&d->mp->audit_failed, true);
        atomic_fetch_add(&d->mp->st_audit_fail, 1);
    } else {
        atomic_fetch_add(&d->mp->st_audit, 1);
    }
    free(d);
}

/* audit submits the record; durable: returns 1 when the caller must wait
 * (on_audit_done). */
static int
audit(mp_sess *ss, const mask_sql_result *res, bool parse, const char *sqlstate, const char *reason)
{
    mask_proxy *mp = ss->mp;
    mp_done *d = malloc(sizeof *d + AUDIT_RECORD_MAX);
    if (d == NULL)
        return -1;
    memset(d, 0, sizeof *d);
    size_t len = 0;
    dbao_err err;
    if (build_record(ss, res, parse, sqlstate, reason, d->data, &len, &err) != 0) {
        free(d);
        return -1;
    }
    d->len = (uint32_t) len;
    d->mp = mp;
    d->req.data = d->data;
    d->req.lens = &d->len;
    d->req.num = 1;
    d->req.arg = d;
    bool durable = mp->cfg->audit_durable && sqlstate == NULL;
    d->req.done = durable ? on_audit_done : on_async_free;
    if (durable) {
        d->ss = ss;
        ss->refs++;
        atomic_fetch_add(&mp->inflight, 1);
    }
    if (audit_log_submit(mp->log, &d->req) != 0) {
        if (durable) {
            ss->refs--;
            atomic_fetch_sub(&mp->inflight, 1);
        }
        atomic_store(&mp->audit_failed, true);
        atomic_fetch_add(&mp->st_audit_fail, 1);
        free(d);
        return -1;
    }
    return durable ? 1 : 0;
}

/* ---- the shape cache ------------------------------------------------------------------------
 *
 * Most traffic touches nothing sensitive, and in the simple query protocol every statement
 * arrives as new text (`... WHERE aid = 48213`). Analysing each costs 20-70 us; the cache
 * makes the common case a lexical pass and a hash lookup. A shape is the text with every
 * numeric literal and every plain '...' string literal replaced by one placeholder byte; only
 * a PASS verdict with nothing sensitive is remembered, for the database, the catalog generation
 * and the role set it was decided for. Why a literal's value cannot turn such a PASS into
 * anything else: the analyser's verdicts depend on statement kinds, relation, column and
 * function names (identifiers, kept in the shape), comments (a "@PII:" tag: texts with
 * comments are not shaped at all) and predicate shapes — never on the value of a constant.
 * Functions that run a string as SQL (query_to_xml, ts_stat, dblink, ...) are refused by name,
 * so their string argument does not matter either. Texts with anything the small lexer below
 * does not fully understand (dollar quotes, E'' / U&'' / B'' / X'' strings, comments, quoted
 * identifiers, backslashes, non-ASCII bytes) are not shaped and always analysed. */

static uint64_t
shape_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char) p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* shape_of writes the shape of sql into out; false if the text must not be shaped */
static bool
shape_of(const char *sql, size_t len, dbao_buf *out)
{
    if (len == 0 || len > SHAPE_MAX)
        return false;
    dbao_buf_reset(out);
    if (dbao_buf_reserve(out, len) != 0)
        return false;
    char *o = out->data;
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char) sql[i];
        if (c >= 0x80 || c == '"' || c == '\\' || c == '$' || c == 0)
            return false;
        if (c == '-' && i + 1 < len && sql[i + 1] == '-')
            return false;
        if (c == '/' && i + 1 < len && sql[i + 1] == '*')
            return false;
        if (c == '\'') {
            /* a plain string: no prefix letter glued before it (E'', U&'', B'', X'', N'') */
            if (k > 0 &&
                ((o[k - 1] >= 'A' && o[k - 1] <= 'Z') || (o[k - 1] >= 'a' && o[k - 1] <= 'z') ||
                 o[k - 1] == '&' || o[k - 1] == '_' || (o[k - 1] >= '0' && o[k - 1] <= '9')))
                return false;
            i++;
            for (;;) {
                if (i >= len)
                    return false;
                unsigned char d = (unsigned char) sql[i];
                if (d >= 0x80 || d == '\\' || d == 0)
                    return false;
                if (d == '\'') {
                    if (i + 1 < len && sql[i + 1] == '\'') {
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                i++;
            }
            o[k++] = '\x01';
            continue;
        }
        bool word_before = k > 0 && ((o[k - 1] >= 'A' && o[k - 1] <= 'Z') ||
                                     (o[k - 1] >= 'a' && o[k - 1] <= 'z') || o[k - 1] == '_' ||
                                     (o[k - 1] >= '0' && o[k - 1] <= '9'));
        if (c >= '0' && c <= '9' && !word_before) {
            /* a number: digits, one dot, an exponent */
            while (i < len && ((sql[i] >= '0' && sql[i] <= '9') || sql[i] == '.' || sql[i] == 'e' ||
                               sql[i] == 'E' ||
                               ((sql[i] == '+' || sql[i] == '-') && i > 0 &&
                                (sql[i - 1] == 'e' || sql[i - 1] == 'E'))))
                i++;
            if (i < len && ((sql[i] >= 'A' && sql[i] <= 'Z') || (sql[i] >= 'a' && sql[i] <= 'z') ||
                            sql[i] == '_'))
                return false; /* 0x1F, 1_000, 12abc: leave to the real lexer */
            o[k++] = '\x02';
            continue;
        }
        o[k++] = (char) c;
        i++;
    }
    out->len = k;
    o[k] = '\0';
    return true;
}

static mp_shape *
shape_slot(mp_worker *w, uint64_t h)
{
    if (w->shapes == NULL) {
        w->shapes = calloc(SHAPES, sizeof *w->shapes);
        if (w->shapes == NULL)
            return NULL;
    }
    return &w->shapes[h % SHAPES];
}

static bool
shape_known(mp_sess *ss, mp_db *db, bool parse, const dbao_buf *sh, uint64_t h)
{
    mp_shape *e = shape_slot(ss->w, h);
    return e != NULL && e->text != NULL && e->hash == h && e->db == db && e->gen == db->gen &&
           e->roles == ss->roles && e->parse == parse && e->len == sh->len &&
           memcmp(e->text, sh->data, sh->len) == 0;
}

static void
shape_remember(mp_sess *ss, mp_db *db, bool parse, const dbao_buf *sh, uint64_t h)
{
    mp_shape *e = shape_slot(ss->w, h);
    if (e == NULL)
        return;
    char *t = malloc(sh->len + 1);
    if (t == NULL)
        return;
    memcpy(t, sh->data, sh->len + 1);
    free(e->text);
    *e = (mp_shape){.hash = h,
                    .db = db,
                    .roles = ss->roles,
                    .gen = db->gen,
                    .len = (uint32_t) sh->len,
                    .parse = parse,
                    .text = t};
}

/* ---- deciding -------------------------------------------------------------------------------- */

static mp_db *db_get(mp_worker *w, const char *name);
static void db_load(mp_db *db);
static void db_want_fresh(mp_db *db);

/* decide: the verdict for one statement. Returns PGP_FORWARD / PGP_REPLACE
 * (text in out) / PGP_PENDING (the session resumes later). */
static int
decide(mp_sess *ss, mp_db *db, bool parse, const char *sql, size_t len, dbao_buf *out)
{
    mask_proxy *mp = ss->mp;
    atomic_fetch_add(&mp->st_statements, 1);
    if (db->cat == NULL) {
        char msg[DBAO_ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg,
                 "dengbao maskproxy: the catalog of database \"%.64s\" is "
                 "unavailable, so no statement can be checked",
                 ss->database);
        (void) audit(ss, NULL, parse, "58000", msg);
        return refusal_sql(ss, "58000", msg, out) == 0 ? PGP_REPLACE : -1;
    }
    mask_sql_opts o = {.catalog = db->cat,
                       .policy = mp->pol,
                       .roles = ss->roles,
                       .num_roles = ss->num_roles,
                       .marker = mp->marker,
                       .extended = parse};
    mask_sql_result res;
    memset(&res, 0, sizeof res);
    dbao_err err;
    dbao_err_clear(&err);
    int rc = mask_sql_rewrite(&o, sql, len, &res, &err);
    if (rc != 0) {
        mask_sql_result_cleanup(&res);
        return -1;
    }
    if (res.verdict == MASK_SQL_REFUSE && res.unknown_relation && !ss->pend_retried) {
        /* a relation created since the last load: wait for a load that started after this
         * statement arrived (at most one load a second per database), then decide again */
        mask_sql_result_cleanup(&res);
        free(ss->pend_sql);
        ss->pend_sql = malloc(len + 1);
        if (ss->pend_sql == NULL)
            return -1;
        memcpy(ss->pend_sql, sql, len);
        ss->pend_sql[len] = '\0';
        ss->pend_len = len;
        ss->pend_parse = parse;
        ss->pend_fresh = true;
        ss->pend_arrival = uv_now(db->w->loop);
        ss->next_waiter = db->waiters;
        db->waiters = ss;
        ss->refs++;
        db_want_fresh(db);
        return PGP_PENDING;
    }
    ss->pend_retried = false;
    const char *sqlstate = NULL, *reason = NULL;
    char reason_buf[240];
    if (res.verdict == MASK_SQL_REFUSE) {
        sqlstate = res.sqlstate;
        reason = res.message ? res.message : "refused by the masking policy";
    } else if (res.masked && !ss->utf8) {
        sqlstate = "22021";
        reason = "dengbao maskproxy: masked values need client_encoding UTF8";
    } else if ((res.sensitive || res.masked) && atomic_load(&mp->audit_failed)) {
        sqlstate = "58030";
        reason = "dengbao maskproxy: the audit trail cannot be written; statements on "
                 "sensitive data are refused";
    }
    if (sqlstate != NULL) {
        copy_text(reason_buf, sizeof reason_buf, reason);
        char st[6];
        copy_text(st, sizeof st, sqlstate);
        (void) audit(ss, &res, parse, st, reason_buf);
        mask_sql_result_cleanup(&res);
        return refusal_sql(ss, st, reason_buf, out) == 0 ? PGP_REPLACE : -1;
    }
    int how = PGP_FORWARD;
    if (res.verdict == MASK_SQL_PASS && !res.sensitive && !res.masked && res.num_decisions == 0 &&
        shape_of(sql, len, &ss->tmp))
        shape_remember(ss, db, parse, &ss->tmp, shape_hash(ss->tmp.data, ss->tmp.len));
    if (res.verdict == MASK_SQL_REWRITE) {
        dbao_buf_reset(out);
        if (dbao_buf_put(out, res.sql, res.sql_len) != 0) {
            mask_sql_result_cleanup(&res);
            return -1;
        }
        how = PGP_REPLACE;
        atomic_fetch_add(&mp->st_rewritten, 1);
    }
    if (res.masked)
        ss->strict_errors = true;
    if (res.sensitive || res.masked) {
        int a = audit(ss, &res, parse, NULL, NULL);
        if (a < 0) {
            mask_sql_result_cleanup(&res);
            const char *m = "dengbao maskproxy: the audit trail cannot be written; statements "
                            "on sensitive data are refused";
            return refusal_sql(ss, "58030", m, out) == 0 ? PGP_REPLACE : -1;
        }
        if (a == 1) { /* durable: wait for the record */
            ss->resume_how = how;
            dbao_buf_reset(&ss->resume_text);
            if (how == PGP_REPLACE && dbao_buf_put(&ss->resume_text, out->data, out->len) != 0) {
                mask_sql_result_cleanup(&res);
                return -1;
            }
            mask_sql_result_cleanup(&res);
            return PGP_PENDING;
        }
    }
    mask_sql_result_cleanup(&res);
    return how;
}

static void
resume_with(mp_sess *ss, int how, dbao_buf *text)
{
    if (ss->ps == NULL)
        return;
    if (how == PGP_REPLACE)
        pgp_session_resume(ss->ps, PGP_REPLACE, text->data, text->len);
    else if (how == PGP_FORWARD)
        pgp_session_resume(ss->ps, PGP_FORWARD, NULL, 0);
    else if (how != PGP_PENDING)
        pgp_session_resume(ss->ps, -1, NULL, 0);
}

static void
on_async(uv_async_t *h)
{
    mp_worker *w = h->data;
    pthread_mutex_lock(&w->mu);
    mp_done *d = w->done;
    w->done = NULL;
    pthread_mutex_unlock(&w->mu);
    while (d != NULL) {
        mp_done *next = d->next;
        mp_sess *ss = d->ss;
        if (ss->ps != NULL) {
            if (d->status == 0) {
                resume_with(ss, ss->resume_how, &ss->resume_text);
            } else {
                const char *m = "dengbao maskproxy: the audit trail cannot be written; "
                                "statements on sensitive data are refused";
                if (refusal_sql(ss, "58030", m, &ss->resume_text) == 0)
                    resume_with(ss, PGP_REPLACE, &ss->resume_text);
                else
                    resume_with(ss, -1, NULL);
            }
        }
        sess_unref(ss);
        free(d);
        d = next;
    }
}

/* ---- catalogs -------------------------------------------------------------------------------- */

static void
load_work(uv_work_t *req)
{
    mp_db *db = req->data;
    mask_proxy *mp = db->w->mp;
    dbao_err_clear(&db->load_err);
    db->new_cat = NULL;
    /* conninfo + dbname='<db>' (a later keyword wins in a libpq connection
     * string) */
    dbao_buf ci = {0};
    int rc = dbao_buf_printf(&ci, "%s dbname='", mp->cfg->catalog_conninfo);
    for (const char *p = db->name; rc == 0 && *p; p++) {
        if (*p == '\'' || *p == '\\')
            rc = dbao_buf_putc(&ci, '\\');
        if (rc == 0)
            rc = dbao_buf_putc(&ci, *p);
    }
    if (rc == 0)
        rc = dbao_buf_putc(&ci, '\'');
    mask_catalog *c = NULL;
    if (rc == 0)
        rc = mask_catalog_new(&c);
    if (rc == 0)
        rc = mask_catalog_load_pg(c, ci.data, &db->load_err);
    if (rc == 0)
        rc = mask_catalog_bind(c, mp->pol, &db->load_err);
    dbao_buf_free_secret(&ci);
    if (rc != 0) {
        mask_catalog_free(c);
        c = NULL;
    }
    db->load_rc = rc;
    db->new_cat = c;
}

static void
load_done(uv_work_t *req, int status)
{
    mp_db *db = req->data;
    db->loading = false;
    if (status == 0 && db->load_rc == 0 && db->new_cat != NULL) {
        mask_catalog_free(db->cat);
        db->cat = db->new_cat;
        db->gen++;
        db->loaded_ms = uv_now(db->w->loop);
    } else {
        fprintf(stderr, "dengbao: maskproxy: cannot load the catalog of database '%.64s': %s\n",
                db->name, db->load_err.msg[0] ? db->load_err.msg : "failed");
    }
    db->new_cat = NULL;
    uint64_t started = db->tried_ms;
    bool again = false;
    mp_sess *ss = db->waiters;
    db->waiters = NULL;
    while (ss != NULL) {
        mp_sess *next = ss->next_waiter;
        ss->next_waiter = NULL;
        if (ss->ps != NULL && ss->pend_sql != NULL && ss->pend_fresh &&
            ss->pend_arrival >= started && db->load_rc == 0) {
            /* this load may predate the statement's relation: wait for the next one */
            ss->next_waiter = db->waiters;
            db->waiters = ss;
            again = true;
            ss = next;
            continue;
        }
        if (ss->ps != NULL && ss->pend_sql != NULL) {
            char *sql = ss->pend_sql;
            ss->pend_sql = NULL;
            ss->pend_retried = ss->pend_fresh;
            ss->pend_fresh = false;
            dbao_buf out = {0};
            int how = decide(ss, db, ss->pend_parse, sql, ss->pend_len, &out);
            free(sql);
            resume_with(ss, how, &out);
            dbao_buf_free(&out);
        }
        sess_unref(ss);
        ss = next;
    }
    if (again)
        db_want_fresh(db);
}

static void
on_reload_timer(uv_timer_t *t)
{
    db_load(t->data);
}

/* db_want_fresh starts a load now, or when RELOAD_MIN_MS has passed since the last one */
static void
db_want_fresh(mp_db *db)
{
    if (db->loading)
        return; /* load_done looks at the waiters */
    uint64_t now = uv_now(db->w->loop);
    if (now - db->tried_ms >= RELOAD_MIN_MS) {
        db_load(db);
        return;
    }
    if (!db->timer_init) {
        if (uv_timer_init(db->w->loop, &db->timer) != 0) {
            db_load(db); /* cannot wait: load now */
            return;
        }
        db->timer.data = db;
        db->timer_init = true;
    }
    uv_timer_start(&db->timer, on_reload_timer, RELOAD_MIN_MS - (now - db->tried_ms), 0);
}

static void
db_load(mp_db *db)
{
    if (db->loading)
        return;
    db->loading = true;
    db->tried_ms = uv_now(db->w->loop);
    db->work.data = db;
    if (uv_queue_work(db->w->loop, &db->work, load_work, load_done) != 0) {
        db->loading = false;
        db->load_rc = DBAO_EIO;
        dbao_err_set(&db->load_err, DBAO_EIO, "cannot queue the catalog load");
        /* waiters are resumed (refused) by load_done's logic: run it now */
        load_done(&db->work, -1);
    }
}

static mp_db *
db_get(mp_worker *w, const char *name)
{
    for (mp_db *d = w->dbs; d != NULL; d = d->next)
        if (strcmp(d->name, name) == 0)
            return d;
    mp_db *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->name = strdup(name);
    if (d->name == NULL) {
        free(d);
        return NULL;
    }
    d->w = w;
    d->next = w->dbs;
    w->dbs = d;
    return d;
}

static mp_worker *
worker_get(mask_proxy *mp, uv_loop_t *loop)
{
    pthread_mutex_lock(&mp->mu);
    mp_worker *w = mp->workers;
    while (w != NULL && w->loop != loop)
        w = w->next;
    if (w == NULL) {
        w = calloc(1, sizeof *w);
        if (w != NULL) {
            w->mp = mp;
            w->loop = loop;
            pthread_mutex_init(&w->mu, NULL);
            if (uv_async_init(loop, &w->async, on_async) == 0) {
                w->async.data = w;
                w->async_open = true;
                w->next = mp->workers;
                mp->workers = w;
            } else {
                pthread_mutex_destroy(&w->mu);
                free(w);
                w = NULL;
            }
        }
    }
    pthread_mutex_unlock(&mp->mu);
    return w;
}

/* ---- hooks ----------------------------------------------------------------------------------- */

static int
hk_startup(pgp_session *s, void *arg, const char *const *params, char sqlstate[6], dbao_buf *msg)
{
    mask_proxy *mp = arg;
    const char *user = NULL, *db = NULL, *enc = NULL;
    for (size_t i = 0; params[i] != NULL && params[i + 1] != NULL; i += 2) {
        if (strcmp(params[i], "user") == 0)
            user = params[i + 1];
        else if (strcmp(params[i], "database") == 0)
            db = params[i + 1];
        else if (strcmp(params[i], "client_encoding") == 0)
            enc = params[i + 1];
    }
    if (user == NULL || user[0] == '\0' || strlen(user) > AUDIT_SUBJECT_ID_MAX) {
        memcpy(sqlstate, "28000", 6);
        return dbao_buf_printf(msg, "dengbao maskproxy: a user name is required") == 0 ? -1 : -1;
    }
    if (db == NULL || db[0] == '\0')
        db = user;
    if (strlen(db) >= 128) {
        memcpy(sqlstate, "3D000", 6);
        (void) dbao_buf_printf(msg, "dengbao maskproxy: database name too long");
        return -1;
    }
    mp_worker *w = worker_get(mp, pgp_session_loop(s));
    mp_sess *ss = w ? calloc(1, sizeof *ss) : NULL;
    if (ss == NULL) {
        memcpy(sqlstate, "53200", 6);
        (void) dbao_buf_printf(msg, "dengbao maskproxy: out of memory");
        return -1;
    }
    ss->mp = mp;
    ss->w = w;
    ss->ps = s;
    ss->refs = 1;
    snprintf(ss->user, sizeof ss->user, "%s", user);
    snprintf(ss->database, sizeof ss->database, "%s", db);
    const char *peer = pgp_session_peer(s);
    if (peer != NULL) {
        /* "ip:port" or "[v6]:port" */
        const char *c = strrchr(peer, ':');
        size_t n = c ? (size_t) (c - peer) : strlen(peer);
        if (n > 0 && peer[0] == '[' && peer[n - 1] == ']') {
            peer++;
            n -= 2;
        }
        if (n < sizeof ss->peer_ip) {
            memcpy(ss->peer_ip, peer, n);
            ss->peer_ip[n] = '\0';
        }
    }
    ss->roles = mp_config_roles(mp->cfg, user, &ss->num_roles);
    size_t off = 0;
    for (size_t i = 0; i < ss->num_roles; i++) {
        int k = snprintf(ss->roles_joined + off, sizeof ss->roles_joined - off, "%s%s",
                         i ? "," : "", ss->roles[i]);
        if (k < 0 || (size_t) k >= sizeof ss->roles_joined - off)
            break;
        off += (size_t) k;
    }
    /* PostgreSQL's default client_encoding is the database's; the server reports
     * the real one in ParameterStatus before the session is ready, and again
     * whenever it changes. */
    ss->utf8 = enc == NULL || strcasecmp(enc, "UTF8") == 0 || strcasecmp(enc, "UTF-8") == 0;
    pgp_session_set_data(s, ss);
    pgp_session_filter(s, 'S', true);
    pgp_session_filter(s, 'T', true);
    pgp_session_filter(s, 'D', true);
    pgp_session_filter(s, 'd', true);
    pgp_session_filter(s, 'E', true);
    pgp_session_filter(s, 'N', true);
    atomic_fetch_add(&mp->st_sessions, 1);
    return 0;
}

static int
hk_query(pgp_session *s, void *arg, bool parse, const char *sql, size_t len, dbao_buf *repl)
{
    (void) arg;
    mp_sess *ss = pgp_session_data(s);
    if (ss == NULL)
        return -1;
    mp_db *db = db_get(ss->w, ss->database);
    if (db == NULL)
        return -1;
    uint64_t now = uv_now(ss->w->loop);
    if (db->cat == NULL) {
        /* first statement on this database (or the last load failed): load and wait
         */
        if (!db->loading && db->tried_ms != 0 && now - db->tried_ms < RELOAD_MIN_MS)
            return decide(ss, db, parse, sql, len, repl); /* refuses: catalog unavailable */
        free(ss->pend_sql);
        ss->pend_sql = malloc(len + 1);
        if (ss->pend_sql == NULL)
            return -1;
        memcpy(ss->pend_sql, sql, len);
        ss->pend_sql[len] = '\0';
        ss->pend_len = len;
        ss->pend_parse = parse;
        ss->pend_retried = false;
        ss->pend_fresh = false;
        ss->next_waiter = db->waiters;
        db->waiters = ss;
        ss->refs++;
        db_load(db);
        return PGP_PENDING;
    }
    if (!db->loading && now - db->loaded_ms >= ss->mp->cfg->catalog_refresh_ms)
        db_load(db); /* background refresh; this statement uses the current catalog */
    if (shape_of(sql, len, &ss->tmp) &&
        shape_known(ss, db, parse, &ss->tmp, shape_hash(ss->tmp.data, ss->tmp.len))) {
        atomic_fetch_add(&ss->mp->st_statements, 1);
        atomic_fetch_add(&ss->mp->st_shape_hits, 1);
        return PGP_FORWARD;
    }
    return decide(ss, db, parse, sql, len, repl);
}

static bool
text_type(uint32_t oid)
{
    switch (oid) {
    case 25:   /* text */
    case 1043: /* varchar */
    case 1042: /* bpchar */
    case 19:   /* name */
    case 114:  /* json */
    case 3802: /* jsonb (text format only) */
    case 142:  /* xml */
    case 705:  /* unknown */
    case 18:   /* char */
        return true;
    default:
        return false;
    }
}

/* mask_marked: value v (starts with the marker) -> masked text appended to out
 */
static void
mask_marked(mp_sess *ss, const uint8_t *v, size_t n, dbao_buf *out, bool copy_safe)
{
    mask_proxy *mp = ss->mp;
    size_t i = MARKER_LEN;
    size_t k = 0;
    bool ok = i < n && v[i] >= '0' && v[i] <= '9';
    while (ok && i < n && v[i] >= '0' && v[i] <= '9' && k < 1000000)
        k = k * 10 + (size_t) (v[i++] - '0');
    ok = ok && i < n && v[i] == ':' && ((n - i - 1) % 2) == 0;
    i++;
    const mask_action *act = ok ? mask_policy_action(mp->pol, k) : NULL;
    dbao_buf *clear = &ss->tmp2;
    dbao_buf_reset(clear);
    if (act != NULL && dbao_buf_reserve(clear, (n - i) / 2) == 0 &&
        dbao_hex_decode_fixed((uint8_t *) clear->data, (n - i) / 2, (const char *) v + i, n - i,
                              NULL) == 0) {
        clear->len = (n - i) / 2;
    } else {
        act = NULL;
    }
    size_t start = out->len;
    if (act == NULL || mask_fn_apply(&act->fn, act->type, mask_policy_keys(mp->pol),
                                     clear->data ? clear->data : "", clear->len, out, NULL) != 0) {
        out->len = start;
        (void) dbao_buf_put(out, "***", 3);
    }
    dbao_cleanse(clear->data, clear->len);
    clear->len = 0;
    if (copy_safe) {
        for (size_t j = start; j < out->len; j++) {
            char c = out->data[j];
            if (c == '\t' || c == '\n' || c == '\r' || c == '\\' || c == ',' || c == '"')
                out->data[j] = '*';
        }
    }
    atomic_fetch_add(&mp->st_values, 1);
}

/* scan_text: detectors over v; findings masked by their type's rule for the
 * roles. Returns true if anything was masked (out then holds the whole masked
 * value). */
static bool
scan_text(mp_sess *ss, const uint8_t *v, size_t n, dbao_buf *out)
{
    mask_proxy *mp = ss->mp;
    mask_finding f[FINDINGS_MAX];
    size_t nf = mask_detect(mp->det, (const char *) v, n, f, FINDINGS_MAX);
    if (nf == 0)
        return false;
    if (nf > FINDINGS_MAX)
        nf = FINDINGS_MAX; /* the rest is masked on the next pass below */
    size_t start = out->len, pos = 0;
    bool any = false;
    for (size_t i = 0; i < nf; i++) {
        const mask_rule *r = mask_policy_type_rule(mp->pol, f[i].type);
        int a = r ? mask_rule_action_for(r, ss->roles, ss->num_roles) : -1;
        if (a < 0)
            continue;
        const mask_action *act = mask_policy_action(mp->pol, (size_t) a);
        (void) dbao_buf_put(out, v + pos, f[i].start - pos);
        size_t s0 = out->len;
        if (act == NULL ||
            mask_fn_apply(&act->fn, f[i].type, mask_policy_keys(mp->pol),
                          (const char *) v + f[i].start, f[i].end - f[i].start, out, NULL) != 0) {
            out->len = s0;
            (void) dbao_buf_put(out, "***", 3);
        }
        pos = f[i].end;
        any = true;
        atomic_fetch_add(&mp->st_findings, 1);
    }
    if (!any) {
        out->len = start;
        return false;
    }
    (void) dbao_buf_put(out, v + pos, n - pos);
    return true;
}

static bool
has_marker(const mask_proxy *mp, const uint8_t *v, size_t n)
{
    return n >= MARKER_LEN && v[0] == 0x1f && memcmp(v, mp->marker, MARKER_LEN) == 0;
}

/* data_row: returns 1 with the new payload in out, 0 if unchanged, <0 on a
 * malformed row */
static int
data_row(mp_sess *ss, const uint8_t *p, size_t len, dbao_buf *out)
{
    mask_proxy *mp = ss->mp;
    if (len < 2)
        return -1;
    size_t nf = pgw_get16(p), off = 2;
    bool scan = mp->cfg->scan_results;
    bool changed = false;
    dbao_buf_reset(out);
    for (size_t i = 0; i < nf; i++) {
        if (off + 4 > len)
            return -1;
        size_t fstart = off;
        uint32_t fl = pgw_get32(p + off);
        off += 4;
        if (fl == 0xffffffffu) {
            if (changed)
                (void) dbao_buf_put(out, p + fstart, 4);
            continue;
        }
        if (fl > len - off)
            return -1;
        const uint8_t *v = p + off;
        off += fl;
        bool marked = has_marker(mp, v, fl);
        bool scannable =
            scan && !marked && i < ss->ncols && ss->col_fmt[i] == 0 && text_type(ss->col_type[i]);
        if (!marked && !scannable) {
            if (changed)
                (void) dbao_buf_put(out, p + fstart, 4 + fl);
            continue;
        }
        dbao_buf *val = &ss->tmp;
        dbao_buf_reset(val);
        if (marked)
            mask_marked(ss, v, fl, val, false);
        else if (!scan_text(ss, v, fl, val)) {
            if (changed)
                (void) dbao_buf_put(out, p + fstart, 4 + fl);
            continue;
        }
        if (!changed) {
            changed = true;
            (void) dbao_buf_put(out, p, fstart); /* count + earlier fields unchanged */
        }
        (void) put32(out, (uint32_t) val->len);
        (void) dbao_buf_put(out, val->data ? val->data : "", val->len);
    }
    if (off != len)
        return -1;
    if (changed && out->data == NULL)
        return -1;
    return changed ? 1 : 0;
}

static int
copy_data(mp_sess *ss, const uint8_t *p, size_t len, dbao_buf *out)
{
    mask_proxy *mp = ss->mp;
    dbao_buf_reset(out);
    size_t pos = 0;
    bool changed = false;
    for (;;) {
        const uint8_t *m = memmem(p + pos, len - pos, mp->marker, MARKER_LEN);
        if (m == NULL)
            break;
        size_t at = (size_t) (m - p);
        size_t e = at + MARKER_LEN;
        while (e < len &&
               ((p[e] >= '0' && p[e] <= '9') || p[e] == ':' || (p[e] >= 'a' && p[e] <= 'f')))
            e++;
        (void) dbao_buf_put(out, p + pos, at - pos);
        mask_marked(ss, p + at, e - at, out, true);
        pos = e;
        changed = true;
    }
    if (changed)
        (void) dbao_buf_put(out, p + pos, len - pos);
    if (mp->cfg->scan_results) {
        const uint8_t *src = changed ? (const uint8_t *) out->data : p;
        size_t sl = changed ? out->len : len;
        dbao_buf *t = &ss->tmp;
        dbao_buf_reset(t);
        if (scan_text(ss, src, sl, t)) {
            dbao_buf_reset(out);
            (void) dbao_buf_put(out, t->data, t->len);
            changed = true;
        }
    }
    return changed ? 1 : 0;
}

static void
row_description(mp_sess *ss, const uint8_t *p, size_t len)
{
    ss->ncols = 0;
    if (len < 2)
        return;
    size_t n = pgw_get16(p), off = 2;
    if (n > ss->capcols) {
        uint32_t *t = realloc(ss->col_type, n * sizeof *t);
        if (t != NULL)
            ss->col_type = t;
        uint8_t *f = realloc(ss->col_fmt, n);
        if (f != NULL)
            ss->col_fmt = f;
        if (t == NULL || f == NULL)
            return;
        ss->capcols = n;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *z = memchr(p + off, 0, len - off);
        if (z == NULL)
            return;
        off = (size_t) (z - p) + 1;
        if (off + 18 > len)
            return;
        ss->col_type[i] = pgw_get32(p + off + 6);
        ss->col_fmt[i] = (uint8_t) (pgw_get16(p + off + 16) != 0);
        off += 18;
    }
    ss->ncols = n;
}

/* scrub_quoted: every "..." part of s becomes "***" */
static void
scrub_quoted(const char *s, dbao_buf *out)
{
    bool in = false;
    for (; *s; s++) {
        if (*s == '"') {
            (void) dbao_buf_putc(out, '"');
            if (!in)
                (void) dbao_buf_put(out, "***", 3);
            in = !in;
        } else if (!in) {
            (void) dbao_buf_putc(out, *s);
        }
    }
    if (in)
        (void) dbao_buf_putc(out, '"');
}

static int
error_msg(mp_sess *ss, uint8_t type, const uint8_t *p, size_t len, dbao_buf *out)
{
    mask_proxy *mp = ss->mp;
    if (len == 0 || p[len - 1] != 0)
        return -1;
    /* a refusal of ours? */
    for (size_t off = 0; off < len && p[off] != 0;) {
        const char *f = (const char *) p + off + 1;
        size_t fl = strlen(f);
        if (p[off] == 'M') {
            const char *m = strstr(f, mp->marker);
            if (m != NULL && m[MARKER_LEN] == 'R') {
                uint32_t id = (uint32_t) strtoul(m + MARKER_LEN + 1, NULL, 10);
                const refusal *r = NULL;
                for (size_t i = 0; i < REFUSALS; i++)
                    if (ss->refusals[i].id == id && id != 0)
                        r = &ss->refusals[i];
                dbao_buf_reset(out);
                (void) dbao_buf_put(out, "SERROR", 7);
                (void) dbao_buf_put(out, "VERROR", 7);
                (void) dbao_buf_putc(out, 'C');
                (void) dbao_buf_put(out, r ? r->sqlstate : "42501", 6);
                (void) dbao_buf_putc(out, 'M');
                const char *msg = r ? r->msg : "dengbao maskproxy: statement refused";
                (void) dbao_buf_put(out, msg, strlen(msg) + 1);
                (void) dbao_buf_putc(out, 0);
                return out->data ? 1 : -1;
            }
        }
        off += 1 + fl + 1;
    }
    (void) type;
    /* scrub: strict sessions lose detail, hint, context and internal query, and
     * quoted values; every text field goes through the detectors */
    dbao_buf_reset(out);
    bool changed = false;
    for (size_t off = 0; off < len && p[off] != 0;) {
        uint8_t code = p[off];
        const char *f = (const char *) p + off + 1;
        size_t fl = strlen(f);
        off += 1 + fl + 1;
        bool text = code == 'M' || code == 'D' || code == 'H' || code == 'W' || code == 'q' ||
                    code == 'p' || code == 'w';
        if (ss->strict_errors && code != 'M' && text) {
            changed = true;
            continue;
        }
        (void) dbao_buf_putc(out, (char) code);
        if (!text) {
            (void) dbao_buf_put(out, f, fl + 1);
            continue;
        }
        dbao_buf *t = &ss->tmp;
        dbao_buf_reset(t);
        const char *src = f;
        size_t sl = fl;
        if (ss->strict_errors) {
            scrub_quoted(f, t);
            if (t->len != fl || (t->data && memcmp(t->data, f, fl) != 0))
                changed = true;
            src = t->data ? t->data : "";
            sl = t->len;
        }
        dbao_buf *t2 = &ss->tmp2;
        dbao_buf_reset(t2);
        if (scan_text(ss, (const uint8_t *) src, sl, t2)) {
            changed = true;
            src = t2->data;
            sl = t2->len;
        }
        (void) dbao_buf_put(out, src, sl);
        (void) dbao_buf_putc(out, 0);
    }
    (void) dbao_buf_putc(out, 0);
    if (out->data == NULL)
        return -1;
    return changed ? 1 : 0;
}

static int
hk_server_msg(pgp_session *s, void *arg, uint8_t type, const uint8_t *payload, size_t len,
              dbao_buf *out)
{
    (void) arg;
    mp_sess *ss = pgp_session_data(s);
    if (ss == NULL)
        return 0;
    switch (type) {
    case 'D':
        return data_row(ss, payload, len, out);
    case 'd':
        return copy_data(ss, payload, len, out);
    case 'T':
        row_description(ss, payload, len);
        return 0;
    case 'E':
    case 'N':
        return error_msg(ss, type, payload, len, out);
    case 'S': {
        const uint8_t *z = memchr(payload, 0, len);
        if (z != NULL && strcmp((const char *) payload, "client_encoding") == 0) {
            const char *v = (const char *) z + 1;
            size_t vl = len - (size_t) (z + 1 - payload);
            ss->utf8 = vl > 0 && memchr(v, 0, vl) != NULL &&
                       (strcasecmp(v, "UTF8") == 0 || strcasecmp(v, "UTF-8") == 0);
        }
        return 0;
    }
    default:
        return 0;
    }
}

static void
hk_close(pgp_session *s, void *arg)
{
    (void) arg;
    mp_sess *ss = pgp_session_data(s);
    if (ss == NULL)
        return;
    pgp_session_set_data(s, NULL);
    ss->ps = NULL;
    sess_unref(ss);
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

static int
client_tls_ctx(SSL_CTX **out, const mask_proxy_config *c, dbao_err *err)
{
    *out = NULL;
    if (c->tls_cert == NULL)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return dbao_err_set(err, DBAO_ECRYPTO, "cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, c->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return dbao_err_set(err, DBAO_EINVAL, "tls: cannot load the certificate or key");
    }
    *out = ctx;
    return 0;
}

int
mask_proxy_start(mask_proxy **out, const mask_proxy_config *cfg, audit_log *log, dbao_err *err)
{
    *out = NULL;
    if (log == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "maskproxy: an audit log is required");
    mask_proxy *mp = calloc(1, sizeof *mp);
    if (mp == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    mp->cfg = cfg;
    mp->pol = cfg->policy;
    mp->det = mask_policy_detector(cfg->policy);
    mp->log = log;
    pthread_mutex_init(&mp->mu, NULL);
    uint8_t rnd[6];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        free(mp);
        return dbao_err_set(err, DBAO_ECRYPTO, "no randomness for the marker");
    }
    mp->marker[0] = 0x1f;
    dbao_hex_encode(mp->marker + 1, rnd, sizeof rnd);
    int rc = client_tls_ctx(&mp->client_tls, cfg, err);
    if (rc != 0) {
        free(mp);
        return rc;
    }
    mp->hooks.on_startup = hk_startup;
    mp->hooks.on_query = hk_query;
    mp->hooks.on_server_msg = hk_server_msg;
    mp->hooks.on_close = hk_close;
    pgp_opts o = {.listen_host = cfg->listen_host,
                  .listen_port = cfg->listen_port,
                  .server_host = cfg->server_host,
                  .server_port = cfg->server_port,
                  .workers = cfg->workers,
                  .client_tls = mp->client_tls,
                  .require_client_tls = cfg->tls_require,
                  .server_tls = cfg->server_tls,
                  .server_ca_file = cfg->server_ca,
                  .server_name = cfg->server_name,
                  .max_message = cfg->max_message,
                  .hooks = &mp->hooks,
                  .hook_arg = mp};
    rc = pgp_server_start(&mp->srv, &o, err);
    if (rc != 0) {
        SSL_CTX_free(mp->client_tls);
        free(mp);
        return rc;
    }
    *out = mp;
    return 0;
}

uint16_t
mask_proxy_port(const mask_proxy *mp)
{
    return pgp_server_port(mp->srv);
}

void
mask_proxy_stop(mask_proxy *mp)
{
    if (mp == NULL)
        return;
    pgp_server_stop(mp->srv);
    /* the loops have ended: completions still in the audit log's hands must not
     * wake them */
    for (mp_worker *x = mp->workers; x != NULL; x = x->next) {
        pthread_mutex_lock(&x->mu);
        x->dead = true;
        pthread_mutex_unlock(&x->mu);
    }
    for (int i = 0; i < 30000 && atomic_load(&mp->inflight) > 0; i++)
        usleep(1000);
    mp_worker *w = mp->workers;
    while (w != NULL) {
        mp_worker *next = w->next;
        mp_db *d = w->dbs;
        while (d != NULL) {
            mp_db *dn = d->next;
            mask_catalog_free(d->cat);
            free(d->name);
            free(d);
            d = dn;
        }
        mp_done *x = w->done;
        while (x != NULL) {
            mp_done *xn = x->next;
            sess_unref(x->ss);
            free(x);
            x = xn;
        }
        if (w->shapes != NULL) {
            for (size_t i = 0; i < SHAPES; i++)
                free(w->shapes[i].text);
            free(w->shapes);
        }
        pthread_mutex_destroy(&w->mu);
        free(w);
        w = next;
    }
    SSL_CTX_free(mp->client_tls);
    pthread_mutex_destroy(&mp->mu);
    free(mp);
}

void
mask_proxy_get_stats(mask_proxy *mp, mask_proxy_stats *st)
{
    st->sessions = atomic_load(&mp->st_sessions);
    st->statements = atomic_load(&mp->st_statements);
    st->rewritten = atomic_load(&mp->st_rewritten);
    st->refused = atomic_load(&mp->st_refused);
    st->values_masked = atomic_load(&mp->st_values);
    st->findings = atomic_load(&mp->st_findings);
    st->audit_records = atomic_load(&mp->st_audit);
    st->audit_failures = atomic_load(&mp->st_audit_fail);
    st->shape_hits = atomic_load(&mp->st_shape_hits);
}
