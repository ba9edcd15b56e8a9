/* request.c: the request object's accessors and the response writer.
 *
 * A response is serialised in full by net_request_respond on the responding thread (which is
 * often not the loop thread), into one buffer (the request's, reused across the keep-alive
 * requests of a connection):
 *
 *   HTTP/1.1 <status> <reason>\r\n
 *   Date: <IMF-fixdate>\r\n
 *   Content-Type: <type>\r\n                 (when given)
 *   Content-Length: <n>\r\n
 *   Connection: close | keep-alive\r\n       (keep-alive only for HTTP/1.0 clients)
 *   <extra headers added with net_request_add_header>
 *   \r\n
 *   <body>                                   (not for HEAD)
 *
 * so that the loop thread only writes bytes. The connection closes after the response if the
 * client asked for it (HTTP/1.0 without keep-alive, "Connection: close"), if the status is one
 * after which the server cannot trust the framing, or if the server is stopping; the worker
 * also forces "close" itself by replacing the response for protocol errors.
 *
 * Date is formatted once per second per thread (a thread-local cache). The head is written by
 * hand (net__head_write), not with snprintf: this runs once per request on the hot path, and
 * the format is fixed. Streamed responses (server.c) use the same head writer.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "internal.h"

void
net__request_free(net_request *req)
{
    if (req == NULL) {
        return;
    }
    dbao_free(req->head);
    dbao_free(req->hdrs);
    dbao_free(req->body);
    dbao_free(req->xhdr);
    dbao_free(req->resp);
    dbao_free(req);
}

#define NET__KEEP_MAX (64 * 1024) /* larger buffers are not kept for the next request */

void
net__request_reset(net_request *req)
{
    char *head = req->head, *xhdr = req->xhdr, *resp = req->resp;
    size_t head_cap = req->head_cap, xhdr_cap = req->xhdr_cap, resp_cap = req->resp_cap;
    net__hdr *hdrs = req->hdrs;
    size_t hdrs_cap = req->hdrs_cap;
    uint8_t *body = req->body;
    size_t body_cap = req->body_cap;
    if (body_cap > NET__KEEP_MAX) {
        dbao_free(body);
        body = NULL;
        body_cap = 0;
    }
    if (resp_cap > NET__KEEP_MAX) {
        dbao_free(resp);
        resp = NULL;
        resp_cap = 0;
    }
    memset(req, 0, sizeof *req);
    req->head = head;
    req->head_cap = head_cap;
    req->xhdr = xhdr;
    req->xhdr_cap = xhdr_cap;
    req->resp = resp;
    req->resp_cap = resp_cap;
    req->hdrs = hdrs;
    req->hdrs_cap = hdrs_cap;
    req->body = body;
    req->body_cap = body_cap;
}

const char *
net_request_method(const net_request *req)
{
    return req->method_name;
}

const char *
net_request_target(const net_request *req)
{
    return req->head + req->target_off;
}

const char *
net_request_path(const net_request *req)
{
    return req->head + req->path_off;
}

const char *
net_request_query(const net_request *req)
{
    return req->head + req->query_off;
}

const char *
net_request_header(const net_request *req, const char *name)
{
    for (size_t i = 0; i < req->num_hdrs; i++) {
        if (strcasecmp(req->head + req->hdrs[i].name_off, name) == 0) {
            return req->head + req->hdrs[i].value_off;
        }
    }
    return NULL;
}

size_t
net_request_num_headers(const net_request *req)
{
    return req->num_hdrs;
}

void
net_request_header_at(const net_request *req, size_t i, const char **name, const char **value)
{
    *name = req->head + req->hdrs[i].name_off;
    *value = req->head + req->hdrs[i].value_off;
}

const uint8_t *
net_request_body(const net_request *req, size_t *len)
{
    *len = req->body_len;
    return req->body != NULL ? req->body : (const uint8_t *) "";
}

const net_peer *
net_request_peer(const net_request *req)
{
    return &req->peer;
}

int
net_request_http_minor(const net_request *req)
{
    return req->http_minor;
}

static bool
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int
net__xhdr_append(net_request *req, const char *data, size_t len)
{
    if (req->xhdr_len + len > req->xhdr_cap) {
        size_t nc = req->xhdr_cap ? req->xhdr_cap * 2 : 256;
        while (nc < req->xhdr_len + len) {
            nc *= 2;
        }
        char *nb = dbao_realloc(req->xhdr, nc);
        if (nb == NULL) {
            return DBAO_ENOMEM;
        }
        req->xhdr = nb;
        req->xhdr_cap = nc;
    }
    memcpy(req->xhdr + req->xhdr_len, data, len);
    req->xhdr_len += len;
    return 0;
}

int
net_request_add_header(net_request *req, const char *name, const char *value)
{
    static const char *const reserved[] = {"content-length", "content-type", "connection", "date",
                                           "transfer-encoding"};
    size_t nl = strlen(name), vl = strlen(value);
    if (req->rstate != NET__R_NONE || nl == 0 || nl > 256 || vl > 8192) {
        return DBAO_EINVAL;
    }
    for (size_t i = 0; i < nl; i++) {
        if (!is_tchar((unsigned char) name[i])) {
            return DBAO_EINVAL;
        }
    }
    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char) value[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return DBAO_EINVAL;
        }
    }
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (strcasecmp(name, reserved[i]) == 0) {
            return DBAO_EINVAL;
        }
    }
    size_t need = nl + 2 + vl + 2;
    if (req->xhdr_len + need > req->xhdr_cap) {
        size_t nc = req->xhdr_cap ? req->xhdr_cap * 2 : 256;
        while (nc < req->xhdr_len + need) {
            nc *= 2;
        }
        char *nb = dbao_realloc(req->xhdr, nc);
        if (nb == NULL) {
            return DBAO_ENOMEM;
        }
        req->xhdr = nb;
        req->xhdr_cap = nc;
    }
    char *w = req->xhdr + req->xhdr_len;
    memcpy(w, name, nl);
    memcpy(w + nl, ": ", 2);
    memcpy(w + nl + 2, value, vl);
    memcpy(w + nl + 2 + vl, "\r\n", 2);
    req->xhdr_len += need;
    return 0;
}

const char *
net_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* date_now returns "Sun, 06 Nov 1994 08:49:37 GMT" (29 bytes) for the current second
 * (thread-local cache). */
static const char *
date_now(void)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[40];
    time_t now = time(NULL);
    if (now != cached_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_sec = now;
    }
    return cached;
}

static char *
put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUTS(p, lit) put((p), (lit), sizeof(lit) - 1)

/* put_dec writes v in decimal. */
static char *
put_dec(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) {
        *p++ = tmp[--n];
    }
    return p;
}

size_t
net__head_max(size_t ct_len, const net_request *req)
{
    return 256 + ct_len + req->xhdr_len;
}

bool
net__content_type_ok(const char *ct, size_t *out_len)
{
    size_t n = strlen(ct);
    if (n > 256) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) ct[i];
        if (c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    *out_len = n;
    return true;
}

char *
net__head_write(char *p, const net_request *req, int status, const char *ct, size_t ct_len,
                int64_t content_length, bool chunked, const char *conn, size_t conn_len)
{
    p = PUTS(p, "HTTP/1.1 ");
    *p++ = (char) ('0' + status / 100);
    *p++ = (char) ('0' + status / 10 % 10);
    *p++ = (char) ('0' + status % 10);
    *p++ = ' ';
    const char *reason = net_status_reason(status);
    p = put(p, reason, strlen(reason));
    p = PUTS(p, "\r\nDate: ");
    p = put(p, date_now(), 29);
    p = PUTS(p, "\r\n");
    if (ct != NULL) {
        p = PUTS(p, "Content-Type: ");
        p = put(p, ct, ct_len);
        p = PUTS(p, "\r\n");
    }
    if (content_length >= 0) {
        p = PUTS(p, "Content-Length: ");
        p = put_dec(p, (uint64_t) content_length);
        p = PUTS(p, "\r\n");
    }
    if (chunked) {
        p = PUTS(p, "Transfer-Encoding: chunked\r\n");
    }
    p = put(p, conn, conn_len);
    if (req->xhdr_len > 0) {
        p = put(p, req->xhdr, req->xhdr_len);
    }
    return PUTS(p, "\r\n");
}

int
net__response_build(net_request *req, int status, const char *content_type, const void *body,
                    size_t body_len, bool close, bool head_only)
{
    static const char c_close[] = "Connection: close\r\n";
    static const char c_keep[] = "Connection: keep-alive\r\n";
    const char *conn = close ? c_close : (req->http_minor == 0 ? c_keep : "");
    size_t conn_len = close ? sizeof c_close - 1 : (req->http_minor == 0 ? sizeof c_keep - 1 : 0);
    size_t ct_len = 0;
    if (content_type != NULL && !net__content_type_ok(content_type, &ct_len)) {
        return DBAO_EINVAL;
    }
    size_t blen = head_only ? 0 : body_len;
    size_t need = net__head_max(ct_len, req) + blen;
    if (need > req->resp_cap) {
        char *out = dbao_malloc(need);
        if (out == NULL) {
            return DBAO_ENOMEM;
        }
        dbao_free(req->resp);
        req->resp = out;
        req->resp_cap = need;
    }
    char *p = net__head_write(req->resp, req, status, content_type, ct_len, (int64_t) body_len,
                              false, conn, conn_len);
    if (blen > 0) {
        p = put(p, body, blen);
    }
    req->resp_len = (size_t) (p - req->resp);
    req->resp_close = close;
    req->resp_status = status;
    return 0;
}

const char *
net__response_canned(int status, size_t *len)
{
    /* Bodies are short plain text so that a human with curl sees what went wrong. */
#define CANNED(code, text, body)                                                                   \
    case code: {                                                                                   \
        static const char r[] = "HTTP/1.1 " #code " " text "\r\nContent-Type: text/plain\r\n"      \
                                "Content-Length: " #body "\r\nConnection: close\r\n\r\n";          \
        *len = sizeof r - 1;                                                                       \
        return r;                                                                                  \
    }
    switch (status) {
        CANNED(400, "Bad Request", 0)
        CANNED(408, "Request Timeout", 0)
        CANNED(413, "Content Too Large", 0)
        CANNED(417, "Expectation Failed", 0)
        CANNED(431, "Request Header Fields Too Large", 0)
        CANNED(501, "Not Implemented", 0)
        CANNED(503, "Service Unavailable", 0)
        CANNED(505, "HTTP Version Not Supported", 0)
    default:
        CANNED(500, "Internal Server Error", 0)
    }
#undef CANNED
}

static int
hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int
net_query_get(const char *query, const char *key, char *out, size_t out_cap)
{
    size_t kl = strlen(key);
    const char *p = query;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, '&');
        size_t plen = end ? (size_t) (end - p) : strlen(p);
        if (plen >= kl && memcmp(p, key, kl) == 0 && (plen == kl || p[kl] == '=')) {
            const char *v = plen == kl ? p + plen : p + kl + 1;
            const char *vend = p + plen;
            size_t n = 0;
            while (v < vend) {
                int c = (unsigned char) *v;
                if (c == '%') {
                    if (vend - v < 3 || hexval(v[1]) < 0 || hexval(v[2]) < 0) {
                        return DBAO_EFORMAT;
                    }
                    c = hexval(v[1]) * 16 + hexval(v[2]);
                    if (c == 0) {
                        return DBAO_EFORMAT;
                    }
                    v += 3;
                } else {
                    if (c == '+') {
                        c = ' ';
                    }
                    v++;
                }
                if (n + 1 >= out_cap) {
                    return DBAO_ERANGE;
                }
                out[n++] = (char) c;
            }
            if (out_cap == 0) {
                return DBAO_ERANGE;
            }
            out[n] = '\0';
            return 0;
        }
        p = end ? end + 1 : NULL;
    }
    return DBAO_EINVAL;
}
