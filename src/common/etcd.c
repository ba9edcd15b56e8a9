/* etcd.c: the etcd v3 client of etcd.h, over libcurl and etcd's JSON gateway.
 *
 * Requests (one curl easy handle each, so the handle needs no lock):
 *   POST /v3/kv/range        {"key":B64}                       -> {"header":{"revision":"N"},
 *                                                                  "kvs":[{...}], "count":"1"}
 *   POST /v3/kv/put          {"key":B64,"value":B64}           -> {"header":{"revision":"N"}}
 *   POST /v3/kv/deleterange  {"key":B64}                       -> {"header":..,"deleted":"1"}
 *   POST /v3/watch           {"create_request":{"key":B64,"start_revision":"N"}}
 * B64 is standard base64 with padding, every int64 a JSON string. The gateway omits fields at
 * their default value: an empty range has no "kvs", an empty value no "value", a PUT event no
 * "type", a delete of nothing no "deleted". Errors come back as HTTP 4xx/5xx with
 * {"error":"...","code":N,"message":"..."}.
 *
 * The watch answer is a chunked stream of newline-separated JSON messages, each wrapped in
 * {"result":...}: first {"created":true} (its header revision is where the watch starts when
 * no start revision was given), then {"events":[{"type":"DELETE"?,"kv":{...}}]} messages, and
 * when the start revision was compacted {"compact_revision":"N","canceled":true}. The watch is
 * driven through a curl multi handle polled every 50 ms, so a stop flag is seen promptly
 * without any signal or extra thread. Invariant: next_rev is always one more than the last
 * revision reported (or the first one not yet seen), so a reopened stream neither repeats nor
 * skips a change; after a compaction a fresh read stands in for the lost changes.
 */
#include "dengbao/etcd.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct etcd {
    char **url;  /* "http://host:port", no trailing slash */
    char **name; /* "host:port", for messages */
    size_t num;
    uint32_t timeout_ms;
    atomic_size_t cur; /* the endpoint that answered last (relaxed: a hint only) */
};

#define STREAM_MAX ((size_t) ETCD_MAX_VALUE / 3 * 4 + 65536)

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_rc;

static void
curl_init_once(void)
{
    g_curl_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static char *
dup_str(const char *s, size_t len)
{
    char *p = dbao_malloc(len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = 0;
    }
    return p;
}

/* ---- handle -------------------------------------------------------------------------------- */

void
etcd_free(etcd *h)
{
    if (h == NULL) {
        return;
    }
    for (size_t i = 0; i < h->num; i++) {
        dbao_free(h->url != NULL ? h->url[i] : NULL);
        dbao_free(h->name != NULL ? h->name[i] : NULL);
    }
    dbao_free(h->url);
    dbao_free(h->name);
    dbao_free(h);
}

int
etcd_new(etcd **out, const char *const *endpoints, size_t num_endpoints, uint32_t timeout_ms,
         dbao_err *err)
{
    *out = NULL;
    if (endpoints == NULL || num_endpoints == 0 || num_endpoints > ETCD_MAX_ENDPOINTS) {
        return dbao_err_set(err, DBAO_EINVAL, "etcd: between 1 and %d endpoints needed",
                            ETCD_MAX_ENDPOINTS);
    }
    pthread_once(&g_curl_once, curl_init_once);
    if (g_curl_rc != CURLE_OK) {
        return dbao_err_set(err, DBAO_EIO, "etcd: libcurl initialisation failed: %s",
                            curl_easy_strerror(g_curl_rc));
    }
    etcd *h = dbao_calloc(1, sizeof *h);
    if (h == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "etcd: out of memory");
    }
    h->timeout_ms = timeout_ms != 0 ? timeout_ms : 2000;
    h->url = dbao_calloc(num_endpoints, sizeof *h->url);
    h->name = dbao_calloc(num_endpoints, sizeof *h->name);
    if (h->url == NULL || h->name == NULL) {
        etcd_free(h);
        return dbao_err_set(err, DBAO_ENOMEM, "etcd: out of memory");
    }
    h->num = num_endpoints;
    for (size_t i = 0; i < num_endpoints; i++) {
        const char *e = endpoints[i];
        if (e == NULL || *e == 0) {
            etcd_free(h);
            return dbao_err_set(err, DBAO_EINVAL, "etcd: endpoint %zu is empty", i + 1);
        }
        const char *host = e;
        bool has_scheme = false;
        if (strncmp(e, "http://", 7) == 0) {
            host = e + 7;
            has_scheme = true;
        } else if (strncmp(e, "https://", 8) == 0) {
            host = e + 8;
            has_scheme = true;
        } else if (strstr(e, "://") != NULL) {
            etcd_free(h);
            return dbao_err_set(err, DBAO_EINVAL, "etcd: endpoint '%s': only http and https", e);
        }
        size_t hlen = strlen(host);
        while (hlen > 0 && host[hlen - 1] == '/') {
            hlen--;
        }
        if (hlen == 0 || memchr(host, '/', hlen) != NULL || strpbrk(e, " \t\r\n") != NULL) {
            etcd_free(h);
            return dbao_err_set(err, DBAO_EINVAL, "etcd: endpoint '%s' is not host:port", e);
        }
        size_t slen = has_scheme ? (size_t) (host - e) : 0;
        h->name[i] = dup_str(host, hlen);
        h->url[i] = dbao_malloc(hlen + slen + 8);
        if (h->name[i] == NULL || h->url[i] == NULL) {
            etcd_free(h);
            return dbao_err_set(err, DBAO_ENOMEM, "etcd: out of memory");
        }
        snprintf(h->url[i], hlen + slen + 8, "%.*s%.*s", (int) (has_scheme ? slen : 7),
                 has_scheme ? e : "http://", (int) hlen, host);
    }
    atomic_init(&h->cur, 0);
    *out = h;
    return 0;
}

void
etcd_kv_cleanup(etcd_kv *kv)
{
    if (kv == NULL) {
        return;
    }
    dbao_free(kv->value);
    memset(kv, 0, sizeof *kv);
}

/* ---- encoding ------------------------------------------------------------------------------ */

static char *
b64_encode(const void *data, size_t len)
{
    if (len > ETCD_MAX_VALUE) {
        return NULL;
    }
    char *out = dbao_malloc(4 * ((len + 2) / 3) + 1);
    if (out != NULL) {
        EVP_EncodeBlock((unsigned char *) out, data, (int) len);
    }
    return out;
}

/* b64_decode: standard base64 with padding into a new NUL-terminated buffer. */
static int
b64_decode(char **out, size_t *out_len, const char *s, size_t len)
{
    *out = NULL;
    *out_len = 0;
    if (len % 4 != 0) {
        return DBAO_EFORMAT;
    }
    if (len / 4 * 3 > ETCD_MAX_VALUE) {
        return DBAO_ERANGE;
    }
    char *buf = dbao_malloc(len / 4 * 3 + 1);
    if (buf == NULL) {
        return DBAO_ENOMEM;
    }
    int n =
        len == 0 ? 0 : EVP_DecodeBlock((unsigned char *) buf, (const unsigned char *) s, (int) len);
    if (n < 0) {
        dbao_free(buf);
        return DBAO_EFORMAT;
    }
    size_t pad = 0;
    if (len >= 1 && s[len - 1] == '=') {
        pad++;
    }
    if (len >= 2 && s[len - 2] == '=') {
        pad++;
    }
    size_t m = (size_t) n - pad;
    buf[m] = 0;
    *out = buf;
    *out_len = m;
    return 0;
}

/* get_i64: an int64 field, a JSON string of digits (or a number); absent means 0. */
static int
get_i64(const json_t *obj, const char *field, int64_t *out)
{
    *out = 0;
    const json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        return 0;
    }
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v)) {
        return DBAO_EFORMAT;
    }
    const char *s = json_string_value(v);
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (*s == 0 || *end != 0 || errno != 0) {
        return DBAO_EFORMAT;
    }
    *out = (int64_t) x;
    return 0;
}

/* get_b64: a base64 field into a new NUL-terminated buffer; absent means "". */
static int
get_b64(const json_t *obj, const char *field, char **out, size_t *out_len)
{
    const json_t *v = json_object_get(obj, field);
    if (v == NULL) {
        return b64_decode(out, out_len, "", 0);
    }
    if (!json_is_string(v)) {
        *out = NULL;
        return DBAO_EFORMAT;
    }
    return b64_decode(out, out_len, json_string_value(v), json_string_length(v));
}

/* ---- one request --------------------------------------------------------------------------- */

typedef struct sink {
    dbao_buf buf;
    size_t max;
    bool over;
} sink;

static size_t
sink_write(char *p, size_t size, size_t nmemb, void *arg)
{
    sink *s = arg;
    size_t n = size * nmemb;
    if (s->buf.len + n > s->max) {
        s->over = true;
        return 0;
    }
    return dbao_buf_put(&s->buf, p, n) == 0 ? n : 0;
}

/* transport_error describes a failed transfer: the system's reason when there is one
 * ("connection refused"), else curl's. */
static void
transport_error(char *out, size_t cap, CURL *c, CURLcode rc)
{
    long os = 0;
    const char *why = NULL;
    if (rc != CURLE_OPERATION_TIMEDOUT &&
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os) == CURLE_OK) {
        switch (os) {
        case ECONNREFUSED:
            why = "connection refused";
            break;
        case ECONNRESET:
            why = "connection reset";
            break;
        case EHOSTUNREACH:
            why = "host unreachable";
            break;
        case ENETUNREACH:
            why = "network unreachable";
            break;
        case ETIMEDOUT:
            why = "timed out";
            break;
        case EPIPE:
            why = "broken pipe";
            break;
        default:
            break;
        }
    }
    if (why == NULL) {
        why = rc == CURLE_OPERATION_TIMEDOUT ? "timed out" : curl_easy_strerror(rc);
    }
    snprintf(out, cap, "%s", why);
    if (out[0] >= 'A' && out[0] <= 'Z') {
        out[0] = (char) (out[0] - 'A' + 'a');
    }
}

/* setup_easy: the options every request shares. */
static int
setup_easy(CURL *c, const char *url, const char *body, uint32_t connect_ms)
{
    CURLcode rc = CURLE_OK;
    rc |= curl_easy_setopt(c, CURLOPT_URL, url);
    rc |= curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    rc |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    rc |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long) connect_ms);
    rc |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    rc |= curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
    rc |= curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 5L);
    rc |= curl_easy_setopt(c, CURLOPT_PROXY, "");
    return rc == CURLE_OK ? 0 : DBAO_EIO;
}

/* api_error: "message" or "error" of a gateway error answer. */
static const char *
api_error(const json_t *root)
{
    const char *m = json_string_value(json_object_get(root, "message"));
    if (m == NULL) {
        m = json_string_value(json_object_get(root, "error"));
    }
    return m != NULL ? m : "unexpected answer";
}

/* request: POST `body` to `path` on the endpoints in turn until one answers; *out gets the
 * parsed JSON of a 200 answer. */
static int
request(etcd *h, json_t **out, const char *path, const char *body, dbao_err *err)
{
    *out = NULL;
    uint64_t deadline = now_ms() + h->timeout_ms;
    size_t start = atomic_load_explicit(&h->cur, memory_order_relaxed) % h->num;
    int code = DBAO_EIO;
    char why[160] = "no endpoint tried";
    const char *who = h->name[start];
    for (size_t i = 0; i < h->num; i++) {
        size_t idx = (start + i) % h->num;
        uint64_t now = now_ms();
        if (now >= deadline) {
            code = -ETIMEDOUT;
            break;
        }
        uint64_t remain = deadline - now;
        uint64_t conn = remain / (h->num - i);
        conn = conn < 100 ? (remain < 100 ? remain : 100) : conn;
        who = h->name[idx];
        char url[512];
        if ((size_t) snprintf(url, sizeof url, "%s%s", h->url[idx], path) >= sizeof url) {
            return dbao_err_set(err, DBAO_EINVAL, "etcd: %s: url too long", who);
        }
        CURL *c = curl_easy_init();
        if (c == NULL) {
            return dbao_err_set(err, DBAO_ENOMEM, "etcd: out of memory");
        }
        sink s = {.max = STREAM_MAX};
        int rc = setup_easy(c, url, body, (uint32_t) conn);
        rc |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long) remain) != CURLE_OK;
        rc |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write) != CURLE_OK;
        rc |= curl_easy_setopt(c, CURLOPT_WRITEDATA, &s) != CURLE_OK;
        if (rc != 0) {
            curl_easy_cleanup(c);
            return dbao_err_set(err, DBAO_EIO, "etcd: %s: curl option refused", who);
        }
        CURLcode cr = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (cr != CURLE_OK) {
            if (s.over) {
                snprintf(why, sizeof why, "answer over %zu bytes", s.max);
                code = DBAO_ERANGE;
            } else {
                transport_error(why, sizeof why, c, cr);
                code = cr == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : DBAO_EIO;
            }
            curl_easy_cleanup(c);
            dbao_buf_free(&s.buf);
            if (code == DBAO_ERANGE) {
                break;
            }
            continue;
        }
        curl_easy_cleanup(c);
        json_error_t je;
        json_t *root = s.buf.len > 0 ? json_loadb(s.buf.data, s.buf.len, 0, &je) : NULL;
        dbao_buf_free(&s.buf);
        if (status >= 500 || status == 0) {
            snprintf(why, sizeof why, "http %ld: %s", status,
                     root != NULL ? api_error(root) : "no answer");
            json_decref(root);
            code = DBAO_EIO;
            continue;
        }
        atomic_store_explicit(&h->cur, idx, memory_order_relaxed);
        if (status != 200) {
            code = dbao_err_set(err, DBAO_EIO, "etcd: %s: http %ld: %s", who, status,
                                root != NULL ? api_error(root) : "no answer");
            json_decref(root);
            return code;
        }
        if (!json_is_object(root)) {
            json_decref(root);
            return dbao_err_set(err, DBAO_EFORMAT, "etcd: %s: answer is not a json object", who);
        }
        *out = root;
        return 0;
    }
    if (code == -ETIMEDOUT && strcmp(why, "no endpoint tried") == 0) {
        snprintf(why, sizeof why, "timed out");
    }
    return dbao_err_set(err, code, "etcd: %s: %s", who, why);
}

/* key_body: {"key":B64} plus, for a put, "value":B64 (value != NULL). */
static char *
key_body(const char *key, const void *value, size_t len)
{
    char *k = b64_encode(key, strlen(key));
    char *v = value != NULL ? b64_encode(value, len) : NULL;
    char *out = NULL;
    if (k != NULL && (value == NULL || v != NULL)) {
        json_t *o = value != NULL ? json_pack("{s:s,s:s}", "key", k, "value", v)
                                  : json_pack("{s:s}", "key", k);
        if (o != NULL) {
            char *d = json_dumps(o, JSON_COMPACT);
            if (d != NULL) {
                out = dup_str(d, strlen(d));
                free(d);
            }
            json_decref(o);
        }
    }
    dbao_free(k);
    dbao_free(v);
    return out;
}

static int
check_key(const char *key, dbao_err *err)
{
    if (key == NULL || *key == 0 || strlen(key) > 4096) {
        return dbao_err_set(err, DBAO_EINVAL, "etcd: key is empty or too long");
    }
    return 0;
}

/* parse_kv: one {"key","value","mod_revision",...} object. */
static int
parse_kv(const json_t *kv, etcd_kv *out)
{
    int rc = get_b64(kv, "value", &out->value, &out->value_len);
    if (rc == 0) {
        rc = get_i64(kv, "mod_revision", &out->mod_revision);
    }
    if (rc == 0) {
        rc = get_i64(kv, "create_revision", &out->create_revision);
    }
    if (rc == 0) {
        rc = get_i64(kv, "version", &out->version);
    }
    return rc;
}

int
etcd_get(etcd *h, etcd_kv *out, const char *key, dbao_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_key(key, err);
    if (rc != 0) {
        return rc;
    }
    char *body = key_body(key, NULL, 0);
    if (body == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "etcd: out of memory");
    }
    json_t *root = NULL;
    rc = request(h, &root, "/v3/kv/range", body, err);
    dbao_free(body);
    if (rc != 0) {
        return rc;
    }
    const char *who = h->name[atomic_load_explicit(&h->cur, memory_order_relaxed) % h->num];
    const json_t *kvs = json_object_get(root, "kvs");
    rc = get_i64(json_object_get(root, "header"), "revision", &out->revision);
    if (rc == 0 && kvs != NULL) {
        if (!json_is_array(kvs) || json_array_size(kvs) > 1) {
            rc = DBAO_EFORMAT;
        } else if (json_array_size(kvs) == 1) {
            out->found = true;
            rc = parse_kv(json_array_get(kvs, 0), out);
        }
    }
    json_decref(root);
    if (rc != 0) {
        etcd_kv_cleanup(out);
        return dbao_err_set(err, rc, "etcd: %s: range answer for '%s': %s", who, key,
                            rc == DBAO_ERANGE ? "value too large" : "malformed");
    }
    return 0;
}

int
etcd_put(etcd *h, int64_t *out_revision, const char *key, const void *value, size_t len,
         dbao_err *err)
{
    if (out_revision != NULL) {
        *out_revision = 0;
    }
    int rc = check_key(key, err);
    if (rc != 0) {
        return rc;
    }
    if (len > ETCD_MAX_VALUE) {
        return dbao_err_set(err, DBAO_ERANGE, "etcd: value for '%s' over %u bytes", key,
                            ETCD_MAX_VALUE);
    }
    char *body = key_body(key, value != NULL ? value : "", value != NULL ? len : 0);
    if (body == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "etcd: out of memory");
    }
    json_t *root = NULL;
    rc = request(h, &root, "/v3/kv/put", body, err);
    dbao_free(body);
    if (rc != 0) {
        return rc;
    }
    int64_t rev = 0;
    rc = get_i64(json_object_get(root, "header"), "revision", &rev);
    json_decref(root);
    if (rc != 0) {
        return dbao_err_set(err, rc, "etcd: put answer for '%s' malformed", key);
    }
    if (out_revision != NULL) {
        *out_revision = rev;
    }
    return 0;
}

int
etcd_delete(etcd *h, int64_t *out_deleted, int64_t *out_revision, const char *key, dbao_err *err)
{
    if (out_deleted != NULL) {
        *out_deleted = 0;
    }
    if (out_revision != NULL) {
        *out_revision = 0;
    }
    int rc = check_key(key, err);
    if (rc != 0) {
        return rc;
    }
    char *body = key_body(key, NULL, 0);
    if (body == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "etcd: out of memory");
    }
    json_t *root = NULL;
    rc = request(h, &root, "/v3/kv/deleterange", body, err);
    dbao_free(body);
    if (rc != 0) {
        return rc;
    }
    int64_t rev = 0, del = 0;
    rc = get_i64(json_object_get(root, "header"), "revision", &rev);
    if (rc == 0) {
        rc = get_i64(root, "deleted", &del);
    }
    json_decref(root);
    if (rc != 0) {
        return dbao_err_set(err, rc, "etcd: delete answer for '%s' malformed", key);
    }
    if (out_deleted != NULL) {
        *out_deleted = del;
    }
    if (out_revision != NULL) {
        *out_revision = rev;
    }
    return 0;
}

/* ---- watch --------------------------------------------------------------------------------- */

typedef struct watch_ctx {
    etcd *h;
    const char *key;
    const etcd_watch_opts *o;
    int64_t next_rev;  /* first revision not reported yet (0: not known yet) */
    int present;       /* the key's last reported state: -1 unknown, 0 absent, 1 present */
    dbao_buf line;     /* the stream's unfinished message */
    bool created;      /* this stream's watch was created */
    int64_t compacted; /* > 0: the stream ended because next_rev was compacted */
    int user_rc;       /* on_event's non-zero return */
    int fail;          /* a stream error (code) */
    char why[200];
} watch_ctx;

static int
deliver(watch_ctx *w, etcd_event_type type, const char *value, size_t len, int64_t rev, bool resync)
{
    etcd_event ev = {.type = type,
                     .key = w->key,
                     .value = type == ETCD_EVENT_PUT ? value : NULL,
                     .value_len = type == ETCD_EVENT_PUT ? len : 0,
                     .mod_revision = rev,
                     .resync = resync};
    w->present = type == ETCD_EVENT_PUT;
    if (rev >= w->next_rev) {
        w->next_rev = rev + 1;
    }
    return w->o->on_event(w->o->arg, &ev);
}

/* handle_message: one JSON message of the stream; non-zero ends the stream. */
static int
handle_message(watch_ctx *w, const char *text, size_t len)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    if (root == NULL) {
        snprintf(w->why, sizeof w->why, "watch stream: malformed json");
        w->fail = DBAO_EFORMAT;
        return 1;
    }
    int stop = 0;
    const json_t *res = json_object_get(root, "result");
    if (!json_is_object(res)) {
        const json_t *e = json_object_get(root, "error");
        snprintf(w->why, sizeof w->why, "watch stream: %s",
                 json_is_object(e) ? api_error(e) : "message without result");
        w->fail = DBAO_EIO;
        stop = 1;
        goto out;
    }
    int64_t compact = 0, hrev = 0;
    if (get_i64(res, "compact_revision", &compact) != 0 ||
        get_i64(json_object_get(res, "header"), "revision", &hrev) != 0) {
        snprintf(w->why, sizeof w->why, "watch stream: malformed revision");
        w->fail = DBAO_EFORMAT;
        stop = 1;
        goto out;
    }
    if (compact > 0) {
        w->compacted = compact;
        stop = 1;
        goto out;
    }
    if (json_is_true(json_object_get(res, "canceled"))) {
        const char *r = json_string_value(json_object_get(res, "cancel_reason"));
        snprintf(w->why, sizeof w->why, "watch canceled: %s", r != NULL ? r : "no reason");
        w->fail = DBAO_EIO;
        stop = 1;
        goto out;
    }
    if (json_is_true(json_object_get(res, "created"))) {
        w->created = true;
        if (w->next_rev == 0) {
            w->next_rev = hrev + 1;
        }
    }
    const json_t *evs = json_object_get(res, "events");
    size_t i;
    const json_t *ev;
    json_array_foreach(evs, i, ev)
    {
        const char *type = json_string_value(json_object_get(ev, "type"));
        const json_t *kv = json_object_get(ev, "kv");
        etcd_kv k = {0};
        int rc = json_is_object(kv) ? parse_kv(kv, &k) : DBAO_EFORMAT;
        if (rc != 0) {
            etcd_kv_cleanup(&k);
            snprintf(w->why, sizeof w->why, "watch stream: %s event",
                     rc == DBAO_ERANGE ? "value too large in" : "malformed");
            w->fail = rc;
            stop = 1;
            goto out;
        }
        bool del = type != NULL && strcmp(type, "DELETE") == 0;
        if (k.mod_revision >= w->next_rev || w->next_rev == 0) {
            w->user_rc = deliver(w, del ? ETCD_EVENT_DELETE : ETCD_EVENT_PUT, k.value, k.value_len,
                                 k.mod_revision, false);
        }
        etcd_kv_cleanup(&k);
        if (w->user_rc != 0) {
            stop = 1;
            goto out;
        }
    }
out:
    json_decref(root);
    return stop;
}

static size_t
watch_write(char *p, size_t size, size_t nmemb, void *arg)
{
    watch_ctx *w = arg;
    size_t n = size * nmemb;
    if (w->line.len + n > STREAM_MAX) {
        snprintf(w->why, sizeof w->why, "watch stream: message over %zu bytes",
                 (size_t) STREAM_MAX);
        w->fail = DBAO_ERANGE;
        return 0;
    }
    if (dbao_buf_put(&w->line, p, n) != 0) {
        snprintf(w->why, sizeof w->why, "out of memory");
        w->fail = DBAO_ENOMEM;
        return 0;
    }
    /* Every complete line is one message. */
    size_t off = 0;
    for (;;) {
        char *nl = memchr(w->line.data + off, '\n', w->line.len - off);
        if (nl == NULL) {
            break;
        }
        size_t len = (size_t) (nl - (w->line.data + off));
        const char *msg = w->line.data + off;
        off += len + 1;
        bool blank = true;
        for (size_t i = 0; i < len && blank; i++) {
            blank = msg[i] == ' ' || msg[i] == '\r' || msg[i] == '\t';
        }
        if (!blank && handle_message(w, msg, len) != 0) {
            return 0;
        }
    }
    if (off > 0) {
        memmove(w->line.data, w->line.data + off, w->line.len - off);
        w->line.len -= off;
        w->line.data[w->line.len] = 0;
    }
    return n;
}

typedef struct feed_count {
    const etcd_watch_opts *o;
    int n;
} feed_count;

static int
feed_event(void *arg, const etcd_event *ev)
{
    feed_count *fc = arg;
    fc->n++;
    return fc->o->on_event ? fc->o->on_event(fc->o->arg, ev) : 0;
}

int
etcd__watch_feed(const uint8_t *data, size_t len, size_t cut, const etcd_watch_opts *opts)
{
    feed_count fc = {.o = opts};
    etcd_watch_opts o = {.on_event = feed_event, .arg = &fc};
    watch_ctx w = {.key = "/fuzz", .o = &o, .present = -1};
    dbao_buf_init(&w.line);
    if (cut > len) {
        cut = len;
    }
    int rc = 0;
    if (watch_write((char *) data, 1, cut, &w) != cut ||
        watch_write((char *) data + cut, 1, len - cut, &w) != len - cut) {
        /* the stream ended: an error, the callback, or a compaction notice (not an error) */
        rc = w.fail != 0 ? w.fail : (w.user_rc != 0 ? w.user_rc : 0);
    }
    dbao_buf_free(&w.line);
    return rc != 0 ? rc : fc.n;
}

static bool
stopped(const watch_ctx *w)
{
    /* Pairs with the store of the thread that asks the watch to stop. */
    return atomic_load_explicit(w->o->stop, memory_order_acquire);
}

/* watch_stream: one watch POST on endpoint `idx` until the stream ends or the watch stops. */
static int
watch_stream(watch_ctx *w, size_t idx)
{
    etcd *h = w->h;
    char *k = b64_encode(w->key, strlen(w->key));
    if (k == NULL) {
        return DBAO_ENOMEM;
    }
    char rev[32];
    snprintf(rev, sizeof rev, "%" PRId64, w->next_rev);
    json_t *o = w->next_rev > 0
                    ? json_pack("{s:{s:s,s:s}}", "create_request", "key", k, "start_revision", rev)
                    : json_pack("{s:{s:s}}", "create_request", "key", k);
    dbao_free(k);
    char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    char url[512];
    snprintf(url, sizeof url, "%s/v3/watch", h->url[idx]);
    CURL *c = curl_easy_init();
    CURLM *m = curl_multi_init();
    int rc = 0;
    if (body == NULL || c == NULL || m == NULL) {
        rc = DBAO_ENOMEM;
        snprintf(w->why, sizeof w->why, "out of memory");
        goto out;
    }
    if (setup_easy(c, url, body, h->timeout_ms) != 0 ||
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, watch_write) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEDATA, w) != CURLE_OK ||
        curl_multi_add_handle(m, c) != CURLM_OK) {
        rc = DBAO_EIO;
        snprintf(w->why, sizeof w->why, "curl option refused");
        goto out;
    }
    w->created = false;
    w->compacted = 0;
    w->fail = 0;
    dbao_buf_reset(&w->line);
    CURLcode result = CURLE_OK;
    bool done = false;
    while (!done && !stopped(w)) {
        int running = 0;
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            rc = DBAO_EIO;
            snprintf(w->why, sizeof w->why, "curl multi failed");
            break;
        }
        int left = 0;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE) {
                result = msg->data.result;
                done = true;
            }
        }
        if (!done && running == 0) {
            done = true;
        }
        if (!done) {
            curl_multi_poll(m, NULL, 0, 50, NULL);
        }
    }
    if (stopped(w) || w->user_rc != 0 || w->compacted > 0) {
        rc = 0;
    } else if (w->fail != 0) {
        rc = w->fail;
    } else if (rc == 0) {
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        if (result != CURLE_OK) {
            transport_error(w->why, sizeof w->why, c, result);
        } else if (status != 200) {
            snprintf(w->why, sizeof w->why, "watch: http %ld", status);
        } else {
            snprintf(w->why, sizeof w->why, "watch stream closed");
        }
        rc = DBAO_EIO;
    }
    curl_multi_remove_handle(m, c);
out:
    if (m != NULL) {
        curl_multi_cleanup(m);
    }
    if (c != NULL) {
        curl_easy_cleanup(c);
    }
    free(body);
    return rc;
}

/* resync: after a compaction, a fresh read stands in for the changes that are gone. */
static int
resync(watch_ctx *w, dbao_err *err)
{
    etcd_kv kv;
    int rc = etcd_get(w->h, &kv, w->key, err);
    if (rc != 0) {
        return rc;
    }
    if (kv.found && (w->present != 1 || kv.mod_revision >= w->next_rev)) {
        w->user_rc = deliver(w, ETCD_EVENT_PUT, kv.value, kv.value_len, kv.mod_revision, true);
    } else if (!kv.found && w->present != 0) {
        w->user_rc = deliver(w, ETCD_EVENT_DELETE, NULL, 0, kv.revision, true);
    }
    w->next_rev = kv.revision + 1;
    etcd_kv_cleanup(&kv);
    return 0;
}

static void
sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int
etcd_watch(etcd *h, const char *key, const etcd_watch_opts *opts, dbao_err *err)
{
    if (opts == NULL || opts->stop == NULL || opts->on_event == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "etcd: watch needs a stop flag and a callback");
    }
    int rc = check_key(key, err);
    if (rc != 0) {
        return rc;
    }
    watch_ctx w = {.h = h, .key = key, .o = opts, .next_rev = opts->start_revision, .present = -1};
    uint32_t bmin = opts->backoff_min_ms != 0 ? opts->backoff_min_ms : 100;
    uint32_t bmax = opts->backoff_max_ms != 0 ? opts->backoff_max_ms : 2000;
    uint32_t backoff = bmin;
    size_t idx = atomic_load_explicit(&h->cur, memory_order_relaxed) % h->num;
    while (!stopped(&w)) {
        w.why[0] = 0;
        rc = watch_stream(&w, idx);
        if (w.user_rc != 0) {
            rc = w.user_rc;
            break;
        }
        if (stopped(&w)) {
            rc = 0;
            break;
        }
        if (rc == DBAO_ENOMEM) {
            dbao_err_set(err, rc, "etcd: out of memory");
            break;
        }
        if (w.created) {
            atomic_store_explicit(&h->cur, idx, memory_order_relaxed);
            backoff = bmin;
        }
        if (w.compacted > 0) {
            dbao_err e = {0};
            rc = resync(&w, &e);
            if (w.user_rc != 0) {
                rc = w.user_rc;
                break;
            }
            if (rc == 0) {
                continue; /* reopen at once from the read's revision */
            }
            if (opts->on_error != NULL) {
                opts->on_error(opts->arg, rc, e.msg);
            }
        } else if (opts->on_error != NULL) {
            char msg[DBAO_ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "etcd: %s: %.200s", h->name[idx], w.why);
            opts->on_error(opts->arg, rc, msg);
        }
        if (!w.created) {
            idx = (idx + 1) % h->num;
        }
        for (uint32_t slept = 0; slept < backoff && !stopped(&w); slept += 50) {
            sleep_ms(backoff - slept < 50 ? backoff - slept : 50);
        }
        backoff = backoff >= bmax / 2 ? bmax : backoff * 2;
    }
    if (stopped(&w) && rc != DBAO_ENOMEM && w.user_rc == 0) {
        rc = 0;
    }
    dbao_buf_free(&w.line);
    return rc;
}
