/* parser.c: the HTTP/1.1 request parser: llhttp in strict mode plus the rules llhttp leaves
 * to its user. No sockets, no loop: bytes in, messages or a status code out, so that the
 * fuzz target (tests/fuzz/fuzz_net_http.c) drives exactly the code the server runs.
 *
 * llhttp (chosen library) does the tokenising and the framing (Content-Length, chunked). It is
 * never given a lenient flag. Written here, because llhttp leaves them to the application:
 *
 *   limit                        answer
 *   request line + header bytes  431 once header_max raw bytes are fed without the head ending
 *                                (the feed is cut at the budget, so the count is exact)
 *   header count                 431 above headers_num_max
 *   body bytes                   413 on a Content-Length above body_max, or when chunked data
 *                                passes it
 *   Content-Length twice         400 (llhttp rejects it too; checked again here)
 *   Content-Length + Transfer-Encoding   400 (request smuggling)
 *   Transfer-Encoding other than exactly "chunked", or on HTTP/1.0   501 / 400
 *   Host missing or repeated in HTTP/1.1, repeated in 1.0   400 (RFC 9112 section 3.2)
 *   HTTP version other than 1.0 / 1.1                        505
 *   control characters in header values (except HTAB)        400
 *   a header name that is not a token (e.g. "Name : v")      400 (RFC 9112 5.1)
 *   request-target not origin-form (or "*" for OPTIONS)      400
 *   CONNECT                                                  501
 *   Expect other than 100-continue                           417
 *
 * An Upgrade request is served as plain HTTP/1.1 (the header is ignored, RFC 9110 7.8).
 *
 * Message memory: each message is one net_request. Its `head` buffer receives the target and
 * every "name\0value\0" pair as they arrive (llhttp may split any token across reads), then
 * the path and query copies; its size is bounded by about twice header_max. The body buffer is
 * sized from Content-Length up front, or grows geometrically for chunked bodies.
 *
 * Pipelining: on_message_complete pauses llhttp (HPE_PAUSED), so net__parser_feed returns at
 * the end of each message with *consumed pointing just past it; the caller keeps the rest.
 *
 * Stream mode (the gateway): a message with a body pauses at on_headers_complete
 * (NET__PARSE_HEAD: the head is handed out at once), then each on_body pauses too and its span
 * of the fed bytes is returned as NET__PARSE_BODY (no copy, no callback into the server from
 * inside llhttp: the caller decides when to feed again, which is how pausing a body works),
 * and the end is NET__PARSE_END. A message without a body is one NET__PARSE_MESSAGE as usual.
 * After a span, llhttp may need to run with no input to reach on_message_complete (the last
 * Content-Length byte): `kick` tells the caller to feed zero bytes. Trailer fields of a streamed
 * message are checked and counted against header_max but not stored (the head is already with
 * the handler and must not move). body_max counts streamed bytes too (413).
 *
 * Request objects are reused: a finished request comes back with net__parser_recycle and the
 * next message is read into it, buffers included (no allocation per keep-alive request).
 */
#include <string.h>
#include <strings.h>

#include "fold.h"
#include "internal.h"

static int on_message_begin(llhttp_t *p);
static int on_url(llhttp_t *p, const char *at, size_t len);
static int on_url_complete(llhttp_t *p);
static int on_header_field(llhttp_t *p, const char *at, size_t len);
static int on_header_field_complete(llhttp_t *p);
static int on_header_value(llhttp_t *p, const char *at, size_t len);
static int on_header_value_complete(llhttp_t *p);
static int on_headers_complete(llhttp_t *p);
static int on_body(llhttp_t *p, const char *at, size_t len);
static int on_message_complete(llhttp_t *p);

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void
net__parser_init(net__parser *ps, const net__limits *lim)
{
    memset(ps, 0, sizeof *ps);
    ps->lim = *lim;
    llhttp_init(&ps->http, HTTP_REQUEST, &settings);
    ps->http.data = ps;
}

void
net__parser_cleanup(net__parser *ps)
{
    net__request_free(ps->msg);
    net__request_free(ps->done);
    net__request_free(ps->spare);
    ps->msg = NULL;
    ps->done = NULL;
    ps->spare = NULL;
}

void
net__parser_recycle(net__parser *ps, net_request *req)
{
    if (req == NULL) {
        return;
    }
    if (ps->spare != NULL) {
        net__request_free(req);
        return;
    }
    net__request_reset(req);
    ps->spare = req;
}

/* fail records the status to answer and makes llhttp stop (HPE_USER from data callbacks, -1
 * from the others: both end llhttp_execute with an error). */
static int
fail(net__parser *ps, int status, const char *reason)
{
    if (!ps->failed) {
        ps->failed = true;
        ps->error_status = status;
        ps->error_reason = reason;
    }
    return -1;
}

/* head_reserve makes room for `len` more bytes (and a NUL) in the message's head buffer. */
static int
head_reserve(net__parser *ps, size_t len)
{
    net_request *m = ps->msg;
    /* The head holds the raw head's tokens, trailer fields, one NUL per token and the path and
     * query copies: never more than this for a request within the limits. */
    size_t max = 3 * ps->lim.header_max + 2 * ps->lim.headers_num_max + 64;
    if (len > max - m->head_len) {
        return fail(ps, 431, "request header fields larger than the limit");
    }
    if (m->head_len + len + 1 > m->head_cap) {
        size_t nc = m->head_cap ? m->head_cap : 512;
        while (nc < m->head_len + len + 1) {
            nc *= 2;
        }
        char *nb = dbao_realloc(m->head, nc);
        if (nb == NULL) {
            return fail(ps, 500, "out of memory");
        }
        m->head = nb;
        m->head_cap = nc;
    }
    return 0;
}

/* head_put appends bytes from outside the head buffer. */
static int
head_put(net__parser *ps, const char *at, size_t len)
{
    if (head_reserve(ps, len) != 0) {
        return -1;
    }
    net_request *m = ps->msg;
    memcpy(m->head + m->head_len, at, len);
    m->head_len += len;
    return 0;
}

/* head_put_self appends a copy of bytes already in the head buffer, named by offset: the
 * buffer may move when it grows, so a pointer into it would dangle (found by fuzz_net_http;
 * regression test in test_parser_direct). */
static int
head_put_self(net__parser *ps, size_t off, size_t len)
{
    if (head_reserve(ps, len) != 0) {
        return -1;
    }
    net_request *m = ps->msg;
    memmove(m->head + m->head_len, m->head + off, len);
    m->head_len += len;
    return 0;
}

static int
head_nul(net__parser *ps)
{
    return head_put(ps, "", 1);
}

static bool
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static net__parser *
ps_of(llhttp_t *p)
{
    return (net__parser *) p->data;
}

static int
on_message_begin(llhttp_t *p)
{
    net__parser *ps = ps_of(p);
    ps->phase = NET__PHASE_HEAD;
    ps->head_raw = 0;
    ps->fold_state = NET__FS_START;
    ps->cl_count = ps->te_count = ps->host_count = ps->expect_count = 0;
    ps->te_chunked_only = true;
    ps->expect_continue = ps->expect_other = false;
    ps->field_open = ps->value_open = false;
    ps->head_taken = false;
    ps->body_seen = 0;
    ps->trailer_raw = 0;
    if (ps->msg == NULL && ps->spare != NULL) {
        ps->msg = ps->spare;
        ps->spare = NULL;
    }
    if (ps->msg == NULL) {
        ps->msg = dbao_calloc(1, sizeof *ps->msg);
        if (ps->msg == NULL) {
            return fail(ps, 500, "out of memory");
        }
    }
    ps->msg->target_off = 0;
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    return head_put(ps_of(p), at, len) == 0 ? 0 : HPE_USER;
}

static int
on_url_complete(llhttp_t *p)
{
    return head_nul(ps_of(p));
}

/* trailer_count counts the bytes of a streamed message's trailer section (not stored). */
static int
trailer_count(net__parser *ps, size_t len)
{
    ps->trailer_raw += len;
    if (ps->trailer_raw > ps->lim.header_max) {
        fail(ps, 431, "trailer section larger than the limit");
        return HPE_USER;
    }
    return 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    net__parser *ps = ps_of(p);
    net_request *m = ps->msg;
    if (ps->head_taken) {
        return trailer_count(ps, len);
    }
    if (!ps->field_open) {
        if (m->num_hdrs >= ps->lim.headers_num_max) {
            fail(ps, 431, "too many header fields");
            return HPE_USER;
        }
        if (m->num_hdrs == m->hdrs_cap) {
            size_t nc = m->hdrs_cap ? m->hdrs_cap * 2 : 16;
            net__hdr *nh = dbao_realloc(m->hdrs, nc * sizeof *nh);
            if (nh == NULL) {
                fail(ps, 500, "out of memory");
                return HPE_USER;
            }
            m->hdrs = nh;
            m->hdrs_cap = nc;
        }
        m->hdrs[m->num_hdrs].name_off = (uint32_t) m->head_len;
        m->hdrs[m->num_hdrs].value_off = 0;
        ps->field_open = true;
    }
    return head_put(ps, at, len) == 0 ? 0 : HPE_USER;
}

static int
on_header_field_complete(llhttp_t *p)
{
    net__parser *ps = ps_of(p);
    net_request *m = ps->msg;
    if (ps->head_taken) {
        return 0;
    }
    ps->field_open = false;
    /* RFC 9112 5.1: no white space between name and colon (llhttp 8.1 lets it by). */
    for (size_t i = m->hdrs[m->num_hdrs].name_off; i < m->head_len; i++) {
        if (!is_tchar((unsigned char) m->head[i])) {
            return fail(ps, 400, "invalid character in a header name");
        }
    }
    if (m->head_len == m->hdrs[m->num_hdrs].name_off) {
        return fail(ps, 400, "empty header name");
    }
    if (head_nul(ps) != 0) {
        return -1;
    }
    m->hdrs[m->num_hdrs].value_off = (uint32_t) m->head_len;
    ps->value_open = true;
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    net__parser *ps = ps_of(p);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) at[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            fail(ps, 400, "control character in a header value");
            return HPE_USER;
        }
    }
    if (ps->head_taken) {
        return trailer_count(ps, len);
    }
    return head_put(ps, at, len) == 0 ? 0 : HPE_USER;
}

static bool
token_list_is(const char *v, const char *want)
{
    return strcasecmp(v, want) == 0;
}

static int
on_header_value_complete(llhttp_t *p)
{
    net__parser *ps = ps_of(p);
    net_request *m = ps->msg;
    if (ps->head_taken) {
        return 0;
    }
    if (!ps->value_open) {
        /* A value without a name cannot happen with llhttp; be safe anyway. */
        return fail(ps, 400, "header value without a name");
    }
    ps->value_open = false;
    /* Trim trailing optional white space (llhttp already skipped the leading one). */
    size_t start = m->hdrs[m->num_hdrs].value_off;
    while (m->head_len > start &&
           (m->head[m->head_len - 1] == ' ' || m->head[m->head_len - 1] == '\t')) {
        m->head_len--;
    }
    if (head_nul(ps) != 0) {
        return -1;
    }
    const char *name = m->head + m->hdrs[m->num_hdrs].name_off;
    const char *value = m->head + start;
    m->num_hdrs++;
    if (strcasecmp(name, "content-length") == 0) {
        ps->cl_count++;
    } else if (strcasecmp(name, "transfer-encoding") == 0) {
        ps->te_count++;
        if (!token_list_is(value, "chunked")) {
            ps->te_chunked_only = false;
        }
    } else if (strcasecmp(name, "host") == 0) {
        ps->host_count++;
    } else if (strcasecmp(name, "expect") == 0) {
        ps->expect_count++;
        if (token_list_is(value, "100-continue")) {
            ps->expect_continue = true;
        } else {
            ps->expect_other = true;
        }
    }
    return 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    net__parser *ps = ps_of(p);
    net_request *m = ps->msg;
    if (p->http_major == 0) {
        return fail(ps, 400, "HTTP/0.9 request");
    }
    if (p->http_major != 1 || p->http_minor > 1) {
        return fail(ps, 505, "HTTP version not supported");
    }
    if (p->method == HTTP_CONNECT) {
        return fail(ps, 501, "CONNECT is not supported");
    }
    const char *target = m->head + m->target_off;
    if (!(target[0] == '/' || (strcmp(target, "*") == 0 && p->method == HTTP_OPTIONS))) {
        return fail(ps, 400, "request-target is not in origin form");
    }
    if (ps->cl_count > 1) {
        return fail(ps, 400, "duplicate Content-Length");
    }
    if ((p->flags & F_CONTENT_LENGTH) && (p->flags & F_TRANSFER_ENCODING)) {
        return fail(ps, 400, "both Content-Length and Transfer-Encoding");
    }
    if (ps->cl_count > 0 && ps->te_count > 0) {
        return fail(ps, 400, "both Content-Length and Transfer-Encoding");
    }
    if (ps->te_count > 0) {
        if (p->http_minor == 0) {
            return fail(ps, 400, "Transfer-Encoding in an HTTP/1.0 request");
        }
        if (ps->te_count != 1 || !ps->te_chunked_only || !(p->flags & F_CHUNKED)) {
            return fail(ps, 501, "transfer coding other than chunked");
        }
    }
    if (p->http_minor == 1 ? ps->host_count != 1 : ps->host_count > 1) {
        return fail(ps, 400, "Host header missing or repeated");
    }
    if (ps->expect_other || ps->expect_count > 1) {
        return fail(ps, 417, "unsupported expectation");
    }
    bool has_body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > ps->lim.body_max) {
        return fail(ps, 413, "body larger than the limit");
    }
    /* Upgrade (e.g. h2c) is not offered: serve the request as HTTP/1.1. */
    p->upgrade = 0;
    m->method = p->method;
    m->method_name = llhttp_method_name((llhttp_method_t) p->method);
    m->http_minor = p->http_minor;
    m->keep_alive = llhttp_should_keep_alive(p) != 0;
    m->expect_continue = ps->expect_continue;
    m->content_length = (p->flags & F_CHUNKED)          ? -1
                        : (p->flags & F_CONTENT_LENGTH) ? (int64_t) p->content_length
                                                        : 0;
    /* Split the target into NUL-terminated path and query copies. */
    size_t tlen = strlen(m->head + m->target_off);
    size_t qpos = strcspn(m->head + m->target_off, "?");
    m->path_off = m->head_len;
    if (head_put_self(ps, m->target_off, qpos) != 0 || head_nul(ps) != 0) {
        return -1;
    }
    m->query_off = m->head_len;
    if (qpos < tlen) {
        if (head_put_self(ps, m->target_off + qpos + 1, tlen - qpos - 1) != 0) {
            return -1;
        }
    }
    if (head_nul(ps) != 0) {
        return -1;
    }
    m->body_len = 0;
    ps->phase = NET__PHASE_BODY;
    if (ps->stream) {
        ps->want_continue = false; /* the server sends it when the body is asked for */
        if (!has_body) {
            return 0; /* on_message_complete follows at once: one NET__PARSE_MESSAGE */
        }
        ps->done = m;
        ps->msg = NULL;
        ps->head_taken = true;
        ps->ev = NET__PARSE_HEAD;
        return HPE_PAUSED;
    }
    size_t cap = 64;
    if ((p->flags & F_CONTENT_LENGTH) && !(p->flags & F_CHUNKED)) {
        cap = (size_t) p->content_length + 1;
    }
    if (m->body == NULL || m->body_cap < cap) {
        dbao_free(m->body);
        m->body_cap = 0;
        m->body = dbao_malloc(cap);
        if (m->body == NULL) {
            return fail(ps, 500, "out of memory");
        }
        m->body_cap = cap;
    }
    ps->want_continue = ps->expect_continue && has_body && p->http_minor == 1;
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    net__parser *ps = ps_of(p);
    net_request *m = ps->msg;
    if (ps->stream) {
        if (len > ps->lim.body_max - ps->body_seen) {
            fail(ps, 413, "body larger than the limit");
            return HPE_USER;
        }
        if (len == 0) {
            return 0;
        }
        ps->body_seen += len;
        ps->span = at;
        ps->span_len = len;
        ps->ev = NET__PARSE_BODY;
        return HPE_PAUSED;
    }
    if (len > ps->lim.body_max - m->body_len) {
        fail(ps, 413, "body larger than the limit");
        return HPE_USER;
    }
    if (m->body_len + len + 1 > m->body_cap) {
        size_t nc = m->body_cap * 2;
        while (nc < m->body_len + len + 1) {
            nc *= 2;
        }
        if (nc > ps->lim.body_max + 1) {
            nc = ps->lim.body_max + 1;
        }
        uint8_t *nb = dbao_realloc(m->body, nc);
        if (nb == NULL) {
            fail(ps, 500, "out of memory");
            return HPE_USER;
        }
        m->body = nb;
        m->body_cap = nc;
    }
    memcpy(m->body + m->body_len, at, len);
    m->body_len += len;
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    net__parser *ps = ps_of(p);
    net_request *m = ps->msg;
    if (ps->head_taken) {
        ps->head_taken = false;
        ps->phase = NET__PHASE_IDLE;
        ps->ev = NET__PARSE_END;
        return HPE_PAUSED;
    }
    if (m->body != NULL) {
        m->body[m->body_len] = '\0';
    }
    ps->ev = NET__PARSE_MESSAGE;
    ps->done = m;
    ps->msg = NULL;
    ps->phase = NET__PHASE_IDLE;
    ps->want_continue = false;
    return HPE_PAUSED;
}

int
net__parser_feed(net__parser *ps, const char *data, size_t len, size_t *consumed)
{
    size_t off = 0;
    *consumed = 0;
    if (ps->failed) {
        return NET__PARSE_ERROR;
    }
    bool kick = ps->kick;
    if (kick) {
        ps->kick = false;
        llhttp_resume(&ps->http);
    }
    if (data == NULL) {
        data = "";
    }
    while (off < len || kick) {
        kick = false;
        size_t n = len - off;
        bool in_head = ps->phase != NET__PHASE_BODY;
        if (in_head && ps->phase == NET__PHASE_HEAD) {
            size_t budget = ps->lim.header_max - ps->head_raw;
            if (n > budget) {
                n = budget;
            }
        } else if (in_head && n > ps->lim.header_max) {
            n = ps->lim.header_max;
        }
        llhttp_errno_t e = llhttp_execute(&ps->http, data + off, n);
        size_t used = n;
        if (e == HPE_PAUSED) {
            used = (size_t) (llhttp_get_error_pos(&ps->http) - (data + off));
        } else if (e != HPE_OK) {
            if (!ps->failed) {
                ps->failed = true;
                ps->error_status = 400;
                ps->error_reason = llhttp_get_error_reason(&ps->http);
                if (ps->error_reason == NULL) {
                    ps->error_reason = llhttp_errno_name(e);
                }
            }
            *consumed = off;
            return NET__PARSE_ERROR;
        }
        if (in_head) {
            ps->head_raw += used;
            if (ps->fold_state != NET__FS_DONE &&
                net__fold_scan(&ps->fold_state, data + off, used)) {
                fail(ps, 400, "obs-fold (a header line continued on the next line)");
                *consumed = off;
                return NET__PARSE_ERROR;
            }
        }
        off += used;
        if (e == HPE_PAUSED && ps->ev != NET__PARSE_MESSAGE && ps->ev != NET__PARSE_HEAD) {
            ps->kick = true; /* BODY or END: resume on the next feed */
            *consumed = off;
            return ps->ev;
        }
        if (ps->done != NULL) {
            *consumed = off;
            return ps->ev == NET__PARSE_HEAD ? NET__PARSE_HEAD : NET__PARSE_MESSAGE;
        }
        if (ps->phase == NET__PHASE_HEAD && ps->head_raw >= ps->lim.header_max) {
            fail(ps, 431, "request header section larger than the limit");
            *consumed = off;
            return NET__PARSE_ERROR;
        }
    }
    *consumed = off;
    return NET__PARSE_MORE;
}

net_request *
net__parser_take(net__parser *ps)
{
    net_request *m = ps->done;
    ps->done = NULL;
    if (m != NULL) {
        llhttp_resume(&ps->http);
    }
    return m;
}
