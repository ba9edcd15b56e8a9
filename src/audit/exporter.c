/* exporter.c: the audit trail streamed to NATS JetStream and to ClickHouse (issue 4), for
 * central collection and analysis (GB/T 22239-2019 8.1.5.4 集中管控) and a copy off the machine
 * (8.1.4.9 数据备份恢复).
 *
 * What is exported: only records covered by a signed checkpoint (index < the latest
 * checkpoint's size), so that whatever the other side holds can be checked against a signed
 * root. Each record goes out as its JSON (audit_record_to_json) plus "origin", "index" and
 * "leaf_hash" (hex SM3 leaf hash: with a proof from auditd anyone can check a row).
 *
 * Delivery: at least once, idempotent by index, and resumable without trusting local state
 * alone:
 *  - NATS JetStream (libnats): stream STREAM (created if missing: file storage, subject
 *    "STREAM.records", 2-minute duplicate window), one message per record with headers
 *    Nats-Msg-Id = "<origin>/<index>" (the server drops a duplicate inside the window) and
 *    Dengbao-Index. Messages are published asynchronously in batches; a batch counts only when
 *    every acknowledgement came back. Resume point: the smaller of the local state file
 *    (<log>/export/<target>.state, written after each acknowledged batch) and the index in the
 *    stream's last message + 1, so a wiped stream is refilled and a failed batch is resent.
 *  - ClickHouse over HTTP (libcurl; the 18.16 subset): table dengbao_audit, ReplacingMergeTree
 *    ordered by (origin, idx), so a row inserted twice is one row after merges (query with
 *    FINAL or uniqExact(idx)); one INSERT ... FORMAT JSONEachRow per batch (atomic); resume
 *    point max(idx) + 1 for the log's origin, asked from the server.
 *
 * Error messages never quote server responses or record contents (they may hold personal
 * data): only status codes and ClickHouse's numeric error code.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define STATE_PATH_MAX     4096
#define NATS_DUP_WINDOW_NS ((int64_t) 120 * 1000000000)

typedef struct exp_ctx {
    audit_log *log;
    const audit_export_opts *o;
    audit_export_stats *st;
    dbao_err *err;
    char origin[AUDIT_ORIGIN_MAX + 1];
    char origin_json[AUDIT_ORIGIN_MAX * 6 + 3]; /* the origin as a JSON string */
    uint64_t batch;
    /* target */
    bool nats;
    char host_port[256];
    char stream[128];
    char subject[160];
    char state_path[STATE_PATH_MAX];
    natsConnection *nc;
    jsCtx *js;
    int pub_errors;
    CURL *curl;
    char ch_url[300];
} exp_ctx;

/* ---- URL ---------------------------------------------------------------------------------- */

static int
parse_url(exp_ctx *c, const char *url)
{
    const char *rest;
    if (strncmp(url, "nats://", 7) == 0) {
        c->nats = true;
        rest = url + 7;
    } else if (strncmp(url, "http://", 7) == 0) {
        c->nats = false;
        rest = url + 7;
    } else {
        return dbao_err_set(c->err, DBAO_EINVAL,
                            "export target must be nats://HOST:PORT/STREAM or http://HOST:PORT "
                            "(ClickHouse)");
    }
    const char *slash = strchr(rest, '/');
    size_t hp = slash ? (size_t) (slash - rest) : strlen(rest);
    if (hp == 0 || hp >= sizeof c->host_port || memchr(rest, ':', hp) == NULL) {
        return dbao_err_set(c->err, DBAO_EINVAL, "export target needs HOST:PORT");
    }
    memcpy(c->host_port, rest, hp);
    c->host_port[hp] = '\0';
    if (c->nats) {
        const char *s = slash ? slash + 1 : "";
        size_t n = strlen(s);
        if (n == 0 || n >= 100) {
            return dbao_err_set(c->err, DBAO_EINVAL,
                                "nats target needs a stream name: nats://HOST:PORT/STREAM");
        }
        for (size_t i = 0; i < n; i++) {
            if (!isalnum((unsigned char) s[i]) && s[i] != '_' && s[i] != '-') {
                return dbao_err_set(c->err, DBAO_EINVAL,
                                    "stream name: letters, digits, '_' and '-' only");
            }
        }
        snprintf(c->stream, sizeof c->stream, "%s", s);
        snprintf(c->subject, sizeof c->subject, "%s.records", s);
    } else if (slash != NULL && slash[1] != '\0') {
        return dbao_err_set(c->err, DBAO_EINVAL,
                            "ClickHouse target is http://HOST:PORT (table dengbao_audit in the "
                            "default database)");
    } else {
        snprintf(c->ch_url, sizeof c->ch_url, "http://%s/", c->host_port);
    }
    return 0;
}

/* ---- record rendering --------------------------------------------------------------------- */

/* render writes the export form of one stored record into a new buffer (free()): the record's
 * JSON (audit_record_to_json) with "origin", "index" and "leaf_hash" spliced in front, or with
 * `row` the flat ClickHouse row built straight from the decoded fields. The record is decoded
 * once and nothing is parsed back. */
static int
render(exp_ctx *c, uint64_t index, const uint8_t *rec, size_t len, bool row, char **out,
       size_t *out_len)
{
    audit_record r;
    audit_record_init(&r);
    dbao_err e2;
    int rc = audit_record_decode(&r, rec, len, &e2);
    if (rc != 0) {
        audit_record_cleanup(&r);
        return dbao_err_set(c->err, rc, "record %" PRIu64 " cannot be rendered: %s", index, e2.msg);
    }
    uint8_t leaf[AUDIT_HASH_LEN];
    char leafhex[2 * AUDIT_HASH_LEN + 1];
    audit_leaf_hash(leaf, rec, len);
    dbao_hex_encode(leafhex, leaf, sizeof leaf);
    char *s = NULL;
    if (!row) {
        char *json = NULL;
        size_t jlen = 0;
        rc = audit_record_to_json(&r, &json, &jlen, &e2);
        if (rc == 0) {
            char head[AUDIT_ORIGIN_MAX * 6 + 160];
            int hl = snprintf(head, sizeof head,
                              "{\"origin\":%s,\"index\":%" PRIu64 ",\"leaf_hash\":\"%s\",",
                              c->origin_json, index, leafhex);
            s = malloc((size_t) hl + jlen);
            if (s != NULL) { /* json is "{...}": its "{" is replaced by the head */
                memcpy(s, head, (size_t) hl);
                memcpy(s + hl, json + 1, jlen - 1);
                s[(size_t) hl + jlen - 1] = '\0';
            }
            dbao_free(json);
        }
    } else {
        char ip[INET6_ADDRSTRLEN] = "";
        char uuid[37];
        static const char hx[] = "0123456789abcdef";
        for (int i = 0, j = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10) {
                uuid[j++] = '-';
            }
            uuid[j++] = hx[r.event_id[i] >> 4];
            uuid[j++] = hx[r.event_id[i] & 15];
            uuid[j] = '\0';
        }
        if (r.subject.ip_len == 4 || r.subject.ip_len == 16) {
            inet_ntop(r.subject.ip_len == 4 ? AF_INET : AF_INET6, r.subject.ip, ip, sizeof ip);
        }
        json_t *o = json_pack(
            "{s:s, s:I, s:s, s:I, s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, "
            "s:s}",
            "origin", c->origin, "idx", (json_int_t) index, "event_id", uuid, "ts",
            (json_int_t) (r.time_ns / 1000000000), "time_ns", (json_int_t) r.time_ns, "subject_id",
            r.subject.id, "subject_role", r.subject.role, "subject_ip", ip, "subject_device",
            r.subject.device, "event_type", r.event_type, "action", r.action, "object", r.object,
            "result", r.result == AUDIT_RESULT_SUCCESS ? "success" : "failure", "code",
            (int) r.code, "trace_id", r.trace_id, "source", r.source, "details",
            r.details ? r.details : "{}", "leaf_hash", leafhex);
        if (o != NULL) {
            s = json_dumps(o, JSON_COMPACT);
            json_decref(o);
        }
    }
    audit_record_cleanup(&r);
    if (rc != 0) {
        return dbao_err_set(c->err, rc, "record %" PRIu64 " cannot be rendered: %s", index, e2.msg);
    }
    if (s == NULL) {
        return dbao_err_set(c->err, DBAO_ENOMEM, "out of memory");
    }
    *out = s;
    *out_len = strlen(s);
    return 0;
}

/* ---- state file (NATS) -------------------------------------------------------------------- */

static bool
state_read(exp_ctx *c, uint64_t *next)
{
    FILE *f = fopen(c->state_path, "r");
    if (f == NULL) {
        return false;
    }
    unsigned long long v;
    bool ok = fscanf(f, "dengbao-export 1 next %llu", &v) == 1;
    fclose(f);
    if (ok) {
        *next = v;
    }
    return ok;
}

static int
state_write(exp_ctx *c, uint64_t next)
{
    char text[64];
    int n = snprintf(text, sizeof text, "dengbao-export 1 next %" PRIu64 "\n", next);
    dbao_err e2;
    if (dbao_file_write(c->state_path, text, (size_t) n, 0600, &e2) != 0) {
        return dbao_err_set(c->err, DBAO_EIO, "cannot write the export state: %s", e2.msg);
    }
    return 0;
}

/* ---- NATS JetStream ------------------------------------------------------------------------ */

static void
nats_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void) js;
    (void) pae;
    exp_ctx *c = closure;
    c->pub_errors++;
}

static int
nats_err(exp_ctx *c, const char *what, natsStatus s, jsErrCode jerr)
{
    return dbao_err_set(c->err, DBAO_EIO, "NATS %s failed: %s (JetStream error %d)", what,
                        natsStatus_GetText(s), (int) jerr);
}

static int
nats_open(exp_ctx *c, uint64_t *resume)
{
    natsOptions *opts = NULL;
    char url[300];
    snprintf(url, sizeof url, "nats://%s", c->host_port);
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK) {
        s = natsOptions_SetURL(opts, url);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetTimeout(opts, 5000);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetMaxReconnect(opts, 0);
    }
    if (s == NATS_OK) {
        s = natsConnection_Connect(&c->nc, opts);
    }
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        return dbao_err_set(c->err, DBAO_EIO, "cannot connect to NATS at %s: %s", c->host_port,
                            natsStatus_GetText(s));
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 10000;
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.ErrHandler = nats_pub_err;
    jo.PublishAsync.ErrHandlerClosure = c;
    s = natsConnection_JetStream(&c->js, c->nc, &jo);
    if (s != NATS_OK) {
        return nats_err(c, "JetStream context", s, 0);
    }
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    s = js_GetStreamInfo(&si, c->js, c->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND) {
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        const char *subjects[1] = {c->subject};
        cfg.Name = c->stream;
        cfg.Subjects = subjects;
        cfg.SubjectsLen = 1;
        cfg.Storage = js_FileStorage;
        cfg.Duplicates = NATS_DUP_WINDOW_NS;
        s = js_AddStream(&si, c->js, &cfg, NULL, &jerr);
        if (s != NATS_OK) {
            return nats_err(c, "stream creation", s, jerr);
        }
    } else if (s != NATS_OK) {
        return nats_err(c, "stream lookup", s, jerr);
    }
    jsStreamInfo_Destroy(si);
    /* where the stream stands */
    uint64_t stream_next = 0;
    natsMsg *m = NULL;
    s = js_GetLastMsg(&m, c->js, c->stream, c->subject, NULL, &jerr);
    if (s == NATS_OK) {
        const char *idx = NULL;
        if (natsMsgHeader_Get(m, "Dengbao-Index", &idx) == NATS_OK && idx != NULL) {
            stream_next = strtoull(idx, NULL, 10) + 1;
        }
        natsMsg_Destroy(m);
    } else if (s != NATS_NOT_FOUND) {
        return nats_err(c, "last message lookup", s, jerr);
    }
    uint64_t state_next = 0;
    if (state_read(c, &state_next) && state_next < stream_next) {
        *resume = state_next; /* a batch after it may have failed part way: resend */
    } else {
        *resume = stream_next;
    }
    return 0;
}

static int
nats_send(exp_ctx *c, audit_log_iter *it, uint64_t from, uint64_t to)
{
    char id[AUDIT_ORIGIN_MAX + 32], idx[24];
    for (uint64_t i = from; i < to; i++) {
        uint64_t at;
        const uint8_t *rec;
        size_t len;
        int rc = audit_log_iter_next(it, &at, &rec, &len, c->err);
        if (rc != 1) {
            return rc == 0 ? dbao_err_set(c->err, DBAO_EIO, "log ended early") : rc;
        }
        char *json = NULL;
        size_t jlen = 0;
        rc = render(c, at, rec, len, false, &json, &jlen);
        if (rc != 0) {
            return rc;
        }
        natsMsg *m = NULL;
        natsStatus s = natsMsg_Create(&m, c->subject, NULL, json, (int) jlen);
        free(json);
        snprintf(id, sizeof id, "%s/%" PRIu64, c->origin, at);
        snprintf(idx, sizeof idx, "%" PRIu64, at);
        if (s == NATS_OK) {
            s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
        }
        if (s == NATS_OK) {
            s = natsMsgHeader_Set(m, "Dengbao-Index", idx);
        }
        if (s == NATS_OK) {
            s = js_PublishMsgAsync(c->js, &m, NULL);
        }
        if (m != NULL) {
            natsMsg_Destroy(m);
        }
        if (s != NATS_OK) {
            return nats_err(c, "publish", s, 0);
        }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    natsStatus s = js_PublishAsyncComplete(c->js, &po);
    if (s != NATS_OK) {
        return nats_err(c, "waiting for acknowledgements", s, 0);
    }
    if (c->pub_errors > 0) {
        return dbao_err_set(c->err, DBAO_EIO,
                            "NATS refused %d messages of the batch from index %" PRIu64,
                            c->pub_errors, from);
    }
    return state_write(c, to);
}

/* ---- ClickHouse ----------------------------------------------------------------------------- */

typedef struct membuf {
    char *p;
    size_t len;
} membuf;

static size_t
mb_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    membuf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > 65536) {
        return n; /* only the start of a reply is ever read */
    }
    char *np = realloc(b->p, b->len + n + 1);
    if (np == NULL) {
        return 0;
    }
    memcpy(np + b->len, ptr, n);
    b->len += n;
    np[b->len] = '\0';
    b->p = np;
    return n;
}

/* ch_post sends `body` with `query` in the URL; the reply body in *reply (free). */
static int
ch_post(exp_ctx *c, const char *query, const char *body, size_t body_len, char **reply)
{
    char *q = curl_easy_escape(c->curl, query, 0);
    if (q == NULL) {
        return DBAO_ENOMEM;
    }
    size_t ulen = strlen(c->ch_url) + strlen(q) + 16;
    char *url = malloc(ulen);
    if (url == NULL) {
        curl_free(q);
        return DBAO_ENOMEM;
    }
    snprintf(url, ulen, "%s?query=%s", c->ch_url, q);
    curl_free(q);
    membuf b = {0};
    curl_easy_setopt(c->curl, CURLOPT_URL, url);
    curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) (body ? body_len : 0));
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, mb_write);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, &b);
    CURLcode cc = curl_easy_perform(c->curl);
    free(url);
    long status = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        free(b.p);
        return dbao_err_set(c->err, DBAO_EIO, "cannot reach ClickHouse at %s: %s", c->host_port,
                            curl_easy_strerror(cc));
    }
    if (status != 200) {
        int code = 0;
        const char *k = b.p ? strstr(b.p, "Code: ") : NULL;
        if (k != NULL) {
            code = atoi(k + 6);
        }
        free(b.p);
        return dbao_err_set(c->err, DBAO_EIO,
                            "ClickHouse refused the request: HTTP %ld, error code %d", status,
                            code);
    }
    if (reply) {
        *reply = b.p;
    } else {
        free(b.p);
    }
    return 0;
}

static void
sql_quote(char *out, size_t cap, const char *s)
{
    size_t j = 0;
    out[j++] = '\'';
    for (; *s && j + 3 < cap; s++) {
        if (*s == '\'' || *s == '\\') {
            out[j++] = '\\';
        }
        out[j++] = *s;
    }
    out[j++] = '\'';
    out[j] = '\0';
}

static int
ch_open(exp_ctx *c, uint64_t *resume)
{
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        return dbao_err_set(c->err, DBAO_ENOMEM, "libcurl failed to start");
    }
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http");
    int rc = ch_post(c,
                     "CREATE TABLE IF NOT EXISTS dengbao_audit (origin String, idx UInt64, "
                     "event_id String, ts DateTime, time_ns Int64, subject_id String, "
                     "subject_role String, subject_ip String, subject_device String, "
                     "event_type String, action String, object String, result String, code "
                     "Int32, trace_id String, source String, details String, leaf_hash String) "
                     "ENGINE = ReplacingMergeTree ORDER BY (origin, idx)",
                     NULL, 0, NULL);
    if (rc != 0) {
        return rc;
    }
    char quoted[2 * AUDIT_ORIGIN_MAX + 4], q[4 * AUDIT_ORIGIN_MAX + 128];
    sql_quote(quoted, sizeof quoted, c->origin);
    snprintf(q, sizeof q,
             "SELECT count(), max(idx) FROM dengbao_audit WHERE origin = %s FORMAT TSV", quoted);
    char *reply = NULL;
    rc = ch_post(c, q, NULL, 0, &reply);
    if (rc != 0) {
        return rc;
    }
    unsigned long long cnt = 0, mx = 0;
    if (reply == NULL || sscanf(reply, "%llu\t%llu", &cnt, &mx) != 2) {
        free(reply);
        return dbao_err_set(c->err, DBAO_EIO,
                            "ClickHouse gave an unexpected answer to the "
                            "resume query");
    }
    free(reply);
    *resume = cnt == 0 ? 0 : mx + 1;
    return 0;
}

static int
ch_send(exp_ctx *c, audit_log_iter *it, uint64_t from, uint64_t to)
{
    audit__buf b;
    audit__buf_init(&b, (size_t) 1 << 30);
    for (uint64_t i = from; i < to; i++) {
        uint64_t at;
        const uint8_t *rec;
        size_t len;
        int rc = audit_log_iter_next(it, &at, &rec, &len, c->err);
        if (rc != 1) {
            audit__buf_cleanup(&b);
            return rc == 0 ? dbao_err_set(c->err, DBAO_EIO, "log ended early") : rc;
        }
        char *row = NULL;
        size_t rl = 0;
        rc = render(c, at, rec, len, true, &row, &rl);
        if (rc != 0) {
            audit__buf_cleanup(&b);
            return rc;
        }
        audit__buf_put(&b, row, rl);
        audit__buf_putc(&b, '\n');
        free(row);
    }
    if (b.rc != 0) {
        audit__buf_cleanup(&b);
        return dbao_err_set(c->err, b.rc, "out of memory for a batch");
    }
    int rc =
        ch_post(c, "INSERT INTO dengbao_audit FORMAT JSONEachRow", (const char *) b.p, b.len, NULL);
    audit__buf_cleanup(&b);
    return rc;
}

/* ---- the loop ------------------------------------------------------------------------------ */

int
audit_export_run(audit_log *log, const audit_export_opts *o, audit_export_stats *st, dbao_err *err)
{
    exp_ctx c;
    memset(&c, 0, sizeof c);
    memset(st, 0, sizeof *st);
    c.log = log;
    c.o = o;
    c.st = st;
    c.err = err;
    c.batch = o->batch ? o->batch : 1000;
    if (o->follow && o->stop == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "follow needs a stop flag");
    }
    int rc = parse_url(&c, o->url);
    if (rc != 0) {
        return rc;
    }
    audit_checkpoint cp;
    rc = audit_log_checkpoint_latest(log, NULL, NULL, &cp, err);
    if (rc != 0) {
        return rc;
    }
    snprintf(c.origin, sizeof c.origin, "%s", cp.origin);
    json_t *oj = json_string(c.origin);
    char *ojs = oj ? json_dumps(oj, JSON_ENCODE_ANY) : NULL;
    json_decref(oj);
    if (ojs == NULL || strlen(ojs) >= sizeof c.origin_json) {
        free(ojs);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    snprintf(c.origin_json, sizeof c.origin_json, "%s", ojs);
    free(ojs);
    if (c.nats) {
        const char *dir = audit__log_dir(log);
        char edir[STATE_PATH_MAX];
        snprintf(edir, sizeof edir, "%s/export", dir);
        if (mkdir(edir, 0700) != 0 && errno != EEXIST) {
            return dbao_err_set(err, DBAO_EIO, "cannot create %s: %s", edir, strerror(errno));
        }
        char safe[300];
        size_t j = 0;
        for (const char *p = c.host_port; *p && j + 1 < sizeof safe; p++) {
            safe[j++] = isalnum((unsigned char) *p) ? *p : '_';
        }
        safe[j] = '\0';
        int n = snprintf(c.state_path, sizeof c.state_path, "%s/nats_%s_%s.state", edir, safe,
                         c.stream);
        if (n < 0 || (size_t) n >= sizeof c.state_path) {
            return dbao_err_set(err, DBAO_ERANGE, "log directory path too long");
        }
    }
    uint64_t next = 0;
    rc = c.nats ? nats_open(&c, &next) : ch_open(&c, &next);
    st->start_index = next;
    while (rc == 0) {
        uint64_t end = cp.size;
        if (next > end) {
            rc = dbao_err_set(err, DBAO_EVERIFY,
                              "the target holds index %" PRIu64
                              " but the log's latest checkpoint covers only %" PRIu64
                              " records: is it another log with the same origin?",
                              next - 1, end);
            break;
        }
        if (next < end) {
            audit_log_iter *it = NULL;
            rc = audit_log_iter_open(&it, log, next, err);
            while (rc == 0 && next < end) {
                uint64_t to = end - next > c.batch ? next + c.batch : end;
                c.pub_errors = 0;
                rc = c.nats ? nats_send(&c, it, next, to) : ch_send(&c, it, next, to);
                if (rc == 0) {
                    st->exported += to - next;
                    next = to;
                    st->next_index = next;
                }
                if (o->stop != NULL && *o->stop) {
                    break;
                }
            }
            audit_log_iter_close(it);
            if (rc != 0) {
                break;
            }
        }
        st->next_index = next;
        if (!o->follow || (o->stop != NULL && *o->stop)) {
            break;
        }
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
        rc = audit_log_refresh(log, err);
        if (rc == 0) {
            rc = audit_log_checkpoint_latest(log, NULL, NULL, &cp, err);
        }
    }
    if (c.js != NULL) {
        jsCtx_Destroy(c.js);
    }
    if (c.nc != NULL) {
        natsConnection_Destroy(c.nc);
    }
    if (c.curl != NULL) {
        curl_easy_cleanup(c.curl);
    }
    return rc;
}
