/* client.c: upstream HTTP/1.1 client for the gateway: keep-alive connection pools on one
 * libuv loop, request/response exchanges, optional TLS to the upstream.
 *
 * What is written by hand and why: the pool (idle LIFO list, FIFO wait queue, connection
 * limits, timeouts), the exchange state machine and the TLS glue (OpenSSL over two memory
 * BIOs fed from uv reads), because they sit on the gateway's hot path and must hand the
 * connection back before on_end (so that on_end may reuse it) with no allocation per exchange.
 * llhttp parses the responses (resp.h: the strict parser, driven event by event).
 *
 * Invariants:
 * - A connection (conn) is in exactly one state: CONNECTING (TCP connect or TLS handshake,
 *   bound to the exchange that asked for it), ACTIVE (bound to one exchange), IDLE (in the
 *   pool's LIFO idle list, still reading: EOF or any byte closes it), CLOSING (uv_close
 *   called; freed in the last close callback). pool->nconns counts the non-CLOSING ones;
 *   pool->nalloc all that still have handles.
 * - An exchange is in one place: the pool's start list (net_exchange_start defers its
 *   dispatch through the pool's zero timer, which also batches the head and a small body
 *   into one write), the wait queue (max_conns reached), or bound to a connection. It is
 *   freed (back to the pool's free list) right after on_end / on_error, or at abort.
 * - No user callback runs inside net_exchange_start/_write/_end/_resume/_abort or
 *   net_pool_close: anything they need to report goes through the pool's zero timer.
 * - Request bytes: x->pend (plaintext not yet given to the transport, owned by the
 *   exchange); c->fly (wire bytes of the one uv_write in flight, owned by the connection so
 *   that a cancelled write never touches a freed exchange).
 * - Timeouts: one uv_timer per connection. While ACTIVE it fires at last_io + timeout and
 *   re-arms itself for the remainder when I/O happened meanwhile (no re-arm per read).
 */
#include <errno.h>
#include <llhttp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "dengbao/common.h"
#include "dengbao/net.h"
#include "fold.h"
#include "resp.h"

/* ---- the strict response parser (resp.h) ---- */

static net_resp *
resp_of(llhttp_t *p)
{
    return (net_resp *) ((char *) p - offsetof(net_resp, p));
}

static int
resp_put(net_resp *r, const char *at, size_t len)
{
    if (len >= r->buf_cap - r->buf_len) {
        r->failed = true;
        return -1;
    }
    memcpy(r->buf + r->buf_len, at, len);
    r->buf_len += len;
    return 0;
}

static int
resp_on_message_begin(llhttp_t *p)
{
    net_resp *r = resp_of(p);
    r->buf_len = 0;
    r->nh = 0;
    r->name_open = false;
    r->head_done = false;
    r->n_cl = 0;
    r->n_te = 0;
    return 0;
}

static int
resp_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    net_resp *r = resp_of(p);
    if (!r->name_open) {
        if (r->nh >= r->headers_num_max) {
            r->failed = true;
            return -1;
        }
        r->offs[2 * r->nh] = r->buf_len;
        r->offs[2 * r->nh + 1] = r->buf_len;
        r->nh++;
        r->name_open = true;
    }
    return resp_put(r, at, len);
}

static int
resp_nul(net_resp *r)
{
    if (r->buf_len >= r->buf_cap) {
        r->failed = true;
        return -1;
    }
    r->buf[r->buf_len++] = '\0';
    return 0;
}

static int
resp_on_header_field_complete(llhttp_t *p)
{
    net_resp *r = resp_of(p);
    /* the non-strict llhttp build accepts an empty name (":x"): no span came, refuse it */
    if (!r->name_open || r->buf_len == r->offs[2 * (r->nh - 1)] || resp_nul(r) != 0) {
        r->failed = true;
        return -1;
    }
    r->offs[2 * r->nh - 1] = r->buf_len;
    r->name_open = false;
    return 0;
}

static int
resp_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    net_resp *r = resp_of(p);
    /* strict llhttp accepts obs-fold in responses: refuse it (no CR/LF inside a value) */
    if (memchr(at, '\r', len) != NULL || memchr(at, '\n', len) != NULL) {
        r->failed = true;
        return -1;
    }
    return resp_put(r, at, len);
}

static bool
ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        unsigned char x = (unsigned char) *a, y = (unsigned char) *b;
        if (x >= 'A' && x <= 'Z') {
            x += 32;
        }
        if (x != y) {
            return false;
        }
    }
    return *a == *b;
}

static int
resp_on_header_value_complete(llhttp_t *p)
{
    net_resp *r = resp_of(p);
    if (r->nh == 0 || resp_nul(r) != 0) {
        return -1;
    }
    const char *name = r->buf + r->offs[2 * (r->nh - 1)];
    if (ieq(name, "content-length")) {
        if (++r->n_cl > 1) {
            r->failed = true;
            return -1;
        }
    } else if (ieq(name, "transfer-encoding")) {
        if (++r->n_te > 1) {
            r->failed = true;
            return -1;
        }
    }
    return 0;
}

static int
resp_on_headers_complete(llhttp_t *p)
{
    net_resp *r = resp_of(p);
    int st = p->status_code;
    if (st == 101 || st < 100 || st > 599 || p->http_major != 1 || p->http_minor > 1) {
        r->failed = true;
        return -1;
    }
    if (r->n_cl > 0 && r->n_te > 0) {
        r->failed = true;
        return -1;
    }
    if ((p->flags & F_TRANSFER_ENCODING) && !(p->flags & F_CHUNKED)) {
        r->failed = true; /* the final coding is not chunked */
        return -1;
    }
    bool no_body = r->head_only || st < 200 || st == 204 || st == 304;
    for (size_t i = 0; i < r->nh; i++) {
        r->ptrs[i] = r->buf + r->offs[2 * i];
        r->ptrs[r->headers_num_max + i] = r->buf + r->offs[2 * i + 1];
    }
    net_resp_head *h = &r->head;
    h->status = st;
    h->http_minor = p->http_minor;
    if (no_body) {
        h->content_length = 0;
    } else if (p->flags & F_CHUNKED) {
        h->content_length = -1;
    } else if (p->flags & F_CONTENT_LENGTH) {
        h->content_length = (int64_t) p->content_length;
    } else {
        h->content_length = -2;
    }
    h->keep_alive = h->content_length != -2 && llhttp_should_keep_alive(p);
    h->num_headers = r->nh;
    h->names = r->ptrs;
    h->values = r->ptrs + r->headers_num_max;
    r->head_done = true;
    r->head_ready = true;
    return no_body ? 1 : 0;
}

static int
resp_on_body(llhttp_t *p, const char *at, size_t len)
{
    net_resp *r = resp_of(p);
    if (len == 0) {
        return 0; /* llhttp flushes an empty open span at the end of a buffer */
    }
    r->body_p = (const uint8_t *) at;
    r->body_n = len;
    r->body_ready = true;
    return HPE_PAUSED;
}

static int
resp_on_message_complete(llhttp_t *p)
{
    net_resp *r = resp_of(p);
    r->msg_done = true;
    return HPE_PAUSED;
}

int
net__resp_init(net_resp *r, size_t header_max, size_t headers_num_max)
{
    memset(r, 0, sizeof *r);
    r->header_max = header_max;
    r->headers_num_max = headers_num_max;
    r->buf_cap = header_max + 2 * headers_num_max + 2;
    r->buf = malloc(r->buf_cap);
    r->offs = malloc(2 * (headers_num_max + 1) * sizeof *r->offs);
    r->ptrs = malloc(2 * (headers_num_max + 1) * sizeof *r->ptrs);
    if (r->buf == NULL || r->offs == NULL || r->ptrs == NULL) {
        net__resp_free(r);
        return DBAO_ENOMEM;
    }
    llhttp_settings_init(&r->s);
    r->s.on_message_begin = resp_on_message_begin;
    r->s.on_header_field = resp_on_header_field;
    r->s.on_header_field_complete = resp_on_header_field_complete;
    r->s.on_header_value = resp_on_header_value;
    r->s.on_header_value_complete = resp_on_header_value_complete;
    r->s.on_headers_complete = resp_on_headers_complete;
    r->s.on_body = resp_on_body;
    r->s.on_message_complete = resp_on_message_complete;
    llhttp_init(&r->p, HTTP_RESPONSE, &r->s);
    return 0;
}

void
net__resp_free(net_resp *r)
{
    free(r->buf);
    free(r->offs);
    free(r->ptrs);
    r->buf = NULL;
    r->offs = NULL;
    r->ptrs = NULL;
}

void
net__resp_reset(net_resp *r, bool head_only)
{
    llhttp_init(&r->p, HTTP_RESPONSE, &r->s);
    r->head_only = head_only;
    r->buf_len = 0;
    r->nh = 0;
    r->head_seen = 0;
    r->fold_state = NET__FS_START;
    r->name_open = false;
    r->head_done = false;
    r->head_ready = false;
    r->msg_done = false;
    r->failed = false;
    r->cr_pending = false;
    r->body_ready = false;
    r->n_cl = 0;
    r->n_te = 0;
}

/* bare_cr scans framing bytes (everything but body spans) for a CR not followed by LF: the
 * llhttp build here is not LLHTTP_STRICT_MODE, which skips the byte after a CR at the end of
 * the status line, header lines and chunk-size lines. Returns true if one is found. */
static bool
bare_cr(net_resp *r, const uint8_t *p, size_t n)
{
    size_t i = 0;
    if (n == 0) {
        return false;
    }
    if (r->cr_pending) {
        if (p[0] != '\n') {
            return true;
        }
        r->cr_pending = false;
        i = 1;
    }
    while (i < n) {
        const uint8_t *q = memchr(p + i, '\r', n - i);
        if (q == NULL) {
            break;
        }
        size_t k = (size_t) (q - p);
        if (k + 1 == n) {
            r->cr_pending = true;
            break;
        }
        if (p[k + 1] != '\n') {
            return true;
        }
        i = k + 2;
    }
    return false;
}

int
net__resp_feed(net_resp *r, const uint8_t *data, size_t len, size_t *used, net_resp_ev *ev)
{
    ev->head = NULL;
    ev->data = NULL;
    ev->len = 0;
    *used = 0;
    if (r->failed) {
        return DBAO_EFORMAT;
    }
    size_t n = len;
    bool in_head = !r->head_done;
    if (in_head && n > r->header_max - r->head_seen) {
        n = r->header_max - r->head_seen; /* the head must complete within its budget */
    }
    r->head_ready = false;
    r->body_ready = false;
    r->msg_done = false;
    llhttp_errno_t e = llhttp_execute(&r->p, (const char *) data, n);
    size_t took = n;
    if (e == HPE_PAUSED) {
        took = (size_t) ((const uint8_t *) llhttp_get_error_pos(&r->p) - data);
        llhttp_resume(&r->p);
    } else if (e != HPE_OK) {
        r->failed = true;
        return DBAO_EFORMAT;
    }
    *used = took;
    if (r->body_ready) {
        if (bare_cr(r, data, (size_t) (r->body_p - data)) || r->cr_pending) {
            r->failed = true;
            return DBAO_EFORMAT;
        }
    } else if (bare_cr(r, data, took)) {
        r->failed = true;
        return DBAO_EFORMAT;
    }
    /* obs-fold in the head: the bytes taken while the head was open, up to its end (llhttp
     * pauses at the end of the head; the scan stops at the empty line in any case) */
    if (in_head && r->fold_state != NET__FS_DONE &&
        net__fold_scan(&r->fold_state, (const char *) data, took)) {
        r->failed = true;
        return DBAO_EFORMAT;
    }
    if (r->head_ready) {
        ev->head = &r->head;
    }
    if (in_head && !r->head_done && !r->msg_done) {
        r->head_seen += took;
        if (r->head_seen >= r->header_max) {
            r->failed = true;
            return DBAO_EFORMAT;
        }
    }
    if (r->body_ready) {
        ev->data = r->body_p;
        ev->len = r->body_n;
        return NET_RESP_DATA;
    }
    if (r->msg_done) {
        if (r->head.status < 200) {
            /* the next head gets its own budget */
            r->head_seen = 0;
            r->fold_state = NET__FS_START;
            r->head_done = false;
            ev->head = &r->head;
            return NET_RESP_INFO;
        }
        return NET_RESP_DONE;
    }
    return NET_RESP_MORE;
}

int
net__resp_eof(net_resp *r)
{
    if (r->failed) {
        return DBAO_EFORMAT;
    }
    if (!r->head_done || !llhttp_message_needs_eof(&r->p)) {
        return DBAO_EIO;
    }
    r->msg_done = false;
    llhttp_errno_t e = llhttp_finish(&r->p);
    if ((e == HPE_OK || e == HPE_PAUSED) && r->msg_done) {
        return NET_RESP_DONE;
    }
    return DBAO_EIO;
}

bool
net__resp_needs_eof(const net_resp *r)
{
    return r->head_done && r->head.content_length == -2;
}

/* ---- pool, connections, exchanges ---- */

#define X_DRAIN_MARK (64u * 1024u)
#define RBUF_SIZE    (64u * 1024u)
#define PBUF_SIZE    (16u * 1024u)
#define BUF_KEEP_MAX (1024u * 1024u)

typedef struct bytes {
    uint8_t *p;
    size_t len, cap, off; /* off: bytes of p already written (c->fly only) */
} bytes;

enum { C_CONNECTING, C_ACTIVE, C_IDLE, C_CLOSING };
enum { T_NONE, T_CONNECT, T_IO, T_IDLE };
/* deferred work on an exchange, run by the pool's zero timer */
enum { XP_START = 1, XP_ERROR = 2, XP_RESUME = 4, XP_CANCEL = 8, XP_DRAIN = 16, XP_FLUSH = 32 };

typedef struct conn conn;

struct net_exchange {
    net_pool *pool;
    conn *c;
    net_exchange *qnext, *qprev; /* wait queue */
    net_exchange *dnext, *dprev; /* deferred list */
    net_exchange *fnext;         /* free list */
    unsigned deferred;           /* XP_* */
    int deferred_err;
    net_exchange_cbs cbs;
    void *arg;
    bytes pend;
    int64_t body_len;
    uint64_t body_sent; /* body bytes accepted from the caller */
    bool head_only, ended, reused, sent, got_response, paused, aborted, finished, in_queue;
    bool want_drain;
    int in_cb;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_write_t wreq;
    net_pool *pool;
    net_exchange *x;
    conn *next, *prev; /* idle list */
    conn *fnext;       /* free list */
    int state;
    int tmode;
    int handles; /* open handles (tcp, timer) */
    bool writing, reading, tls_up, feed_again;
    int held_rc; /* NET_RESP_DATA / _DONE held back by a pause in on_head, or 0 */
    const uint8_t *held_p;
    size_t held_n;
    uint32_t nreq;
    uint64_t last_io;
    uint64_t t_due; /* deadline the libuv timer is armed for (with t_armed) */
    bool t_armed;
    net_resp resp;
    bytes fly;
    uint8_t *rbuf;       /* socket reads */
    uint8_t *pbuf;       /* TLS plaintext */
    const uint8_t *in_p; /* plaintext not parsed yet (paused) */
    size_t in_n;
    SSL *ssl;
    BIO *rbio, *wbio;
};

struct net_pool {
    uv_loop_t *loop;
    net_pool_opts o;
    char host[64];
    char sni[256];
    struct sockaddr_storage addr;
    uv_timer_t kick;
    bool kick_armed, closing, kick_closed;
    void (*done)(void *);
    void *done_arg;
    conn *idle; /* LIFO: head is the most recent */
    size_t nidle, nconns, nalloc, nactive;
    net_exchange *qhead, *qtail;
    size_t nqueued;
    net_exchange *dhead, *dtail; /* deferred */
    net_exchange *xfree;
    size_t nxfree;
    conn *cfree;
    size_t ncfree;
    uint64_t connects, reuses, connect_errors;
};

static void conn_close(conn *c);
static void conn_flush(conn *c);
static void conn_input(conn *c);
static void pool_dispatch(net_pool *p);
static void pool_maybe_free(net_pool *p);
static void x_attach(net_exchange *x, conn *c);
static void kick_cb(uv_timer_t *t);
static void conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

/* ---- small helpers ---- */

static int
bytes_reserve(bytes *b, size_t add)
{
    if (add <= b->cap - b->len) {
        return 0;
    }
    size_t need = b->len + add;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t *np = realloc(b->p, cap);
    if (np == NULL) {
        return DBAO_ENOMEM;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

static int
bytes_add(bytes *b, const void *d, size_t n)
{
    if (n == 0) {
        return 0;
    }
    int rc = bytes_reserve(b, n);
    if (rc == 0) {
        memcpy(b->p + b->len, d, n);
        b->len += n;
    }
    return rc;
}

static void
bytes_trim(bytes *b)
{
    b->len = 0;
    b->off = 0;
    if (b->cap > BUF_KEEP_MAX) {
        free(b->p);
        b->p = NULL;
        b->cap = 0;
    }
}

static size_t
x_queued(const net_exchange *x)
{
    size_t n = x->pend.len;
    if (x->c != NULL && x->c->writing) {
        n += x->c->fly.len - x->c->fly.off;
    }
    return n;
}

static void
kick_arm(net_pool *p)
{
    if (!p->kick_armed && !p->kick_closed) {
        p->kick_armed = true;
        uv_timer_start(&p->kick, kick_cb, 0, 0);
    }
}

static void
defer(net_exchange *x, unsigned what)
{
    net_pool *p = x->pool;
    if (x->deferred == 0) {
        x->dnext = NULL;
        x->dprev = p->dtail;
        if (p->dtail) {
            p->dtail->dnext = x;
        } else {
            p->dhead = x;
        }
        p->dtail = x;
    }
    x->deferred |= what;
    kick_arm(p);
}

static void
undefer(net_exchange *x)
{
    net_pool *p = x->pool;
    if (x->deferred == 0) {
        return;
    }
    if (x->dprev) {
        x->dprev->dnext = x->dnext;
    } else {
        p->dhead = x->dnext;
    }
    if (x->dnext) {
        x->dnext->dprev = x->dprev;
    } else {
        p->dtail = x->dprev;
    }
    x->deferred = 0;
}

static void
queue_push(net_exchange *x)
{
    net_pool *p = x->pool;
    x->qnext = NULL;
    x->qprev = p->qtail;
    if (p->qtail) {
        p->qtail->qnext = x;
    } else {
        p->qhead = x;
    }
    p->qtail = x;
    x->in_queue = true;
    p->nqueued++;
}

static void
queue_remove(net_exchange *x)
{
    net_pool *p = x->pool;
    if (!x->in_queue) {
        return;
    }
    if (x->qprev) {
        x->qprev->qnext = x->qnext;
    } else {
        p->qhead = x->qnext;
    }
    if (x->qnext) {
        x->qnext->qprev = x->qprev;
    } else {
        p->qtail = x->qprev;
    }
    x->in_queue = false;
    p->nqueued--;
}

static void
idle_remove(conn *c)
{
    net_pool *p = c->pool;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        p->idle = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->next = c->prev = NULL;
    p->nidle--;
}

/* x_release returns a finished exchange to the pool's free list. */
static void
x_release(net_exchange *x)
{
    net_pool *p = x->pool;
    undefer(x);
    queue_remove(x);
    bytes_trim(&x->pend);
    if (p->nxfree < 256) {
        x->fnext = p->xfree;
        p->xfree = x;
        p->nxfree++;
    } else {
        free(x->pend.p);
        free(x);
    }
    pool_maybe_free(p);
}

/* x_detach unbinds x from its connection (the connection is closed or handed on by the
 * caller). */
static void
x_detach(net_exchange *x)
{
    if (x->c != NULL) {
        if (x->c->x == x) {
            x->c->x = NULL;
        }
        x->c = NULL;
    }
}

/* x_fail reports err to the caller and frees x; its connection (if any) is closed first. */
static void
x_fail(net_exchange *x, int err, unsigned flags)
{
    conn *c = x->c;
    if (x->finished) {
        return;
    }
    x->finished = true;
    if (x->reused) {
        flags |= NET_X_REUSED;
    }
    if (!x->sent) {
        flags |= NET_X_NOT_SENT;
    }
    if (!x->got_response) {
        flags |= NET_X_NO_RESPONSE;
    }
    x_detach(x);
    undefer(x);
    queue_remove(x);
    if (c != NULL) {
        conn_close(c);
    }
    if (x->cbs.on_error) {
        x->in_cb++;
        x->cbs.on_error(x, err, flags, x->arg);
        x->in_cb--;
    }
    x_release(x);
}

static uint64_t
conn_timeout(const conn *c)
{
    const net_pool_opts *o = &c->pool->o;
    switch (c->tmode) {
    case T_CONNECT:
        return o->connect_timeout_ms;
    case T_IDLE:
        return o->idle_timeout_ms;
    case T_IO:
        return c->writing ? o->write_timeout_ms : o->read_timeout_ms;
    default:
        return 0;
    }
}

static void conn_timer_cb(uv_timer_t *t);

/* The timer is lazy: a mode change (every exchange: idle -> I/O -> idle) only records the
 * mode and the time; the libuv timer is re-armed only when the new deadline is earlier than
 * the armed one. When it fires, the callback computes the deadline of the current mode and
 * re-arms for the rest if it is not due yet (two timer-heap operations per exchange saved). */
static void
conn_set_timer(conn *c, int mode)
{
    c->tmode = mode;
    uint64_t now = uv_now(c->pool->loop);
    c->last_io = now;
    if (mode == T_NONE) {
        return; /* an armed timer fires and finds nothing to do */
    }
    uint64_t due = now + conn_timeout(c);
    if (c->t_armed && c->t_due <= due) {
        return;
    }
    c->t_armed = true;
    c->t_due = due;
    uv_timer_start(&c->timer, conn_timer_cb, due - now, 0);
}

static void
conn_timer_cb(uv_timer_t *t)
{
    conn *c = t->data;
    c->t_armed = false;
    if (c->tmode == T_NONE) {
        return;
    }
    uint64_t now = uv_now(c->pool->loop);
    uint64_t to = conn_timeout(c);
    if (now < c->last_io + to) {
        c->t_armed = true;
        c->t_due = c->last_io + to;
        uv_timer_start(&c->timer, conn_timer_cb, c->last_io + to - now, 0);
        return;
    }
    if (c->tmode == T_IO && c->x != NULL && c->x->paused && !c->writing) {
        return; /* not reading: no read timeout; resume re-arms */
    }
    if (c->tmode == T_IO && c->x != NULL && !c->x->ended && !c->writing) {
        /* waiting for the caller's body, not for the upstream: the caller times that */
        c->last_io = now;
        c->t_armed = true;
        c->t_due = now + to;
        uv_timer_start(&c->timer, conn_timer_cb, to, 0);
        return;
    }
    if (c->tmode == T_CONNECT) {
        c->pool->connect_errors++;
    }
    if (c->x != NULL) {
        x_fail(c->x, -ETIMEDOUT, 0);
    } else {
        conn_close(c);
    }
}

/* ---- connection teardown ---- */

static void
conn_free(conn *c)
{
    net_pool *p = c->pool;
    if (c->ssl) {
        SSL_free(c->ssl); /* frees both BIOs */
        c->ssl = NULL;
        c->rbio = c->wbio = NULL;
    }
    p->nalloc--;
    if (p->ncfree < 64) {
        c->fnext = p->cfree;
        p->cfree = c;
        p->ncfree++;
    } else {
        net__resp_free(&c->resp);
        free(c->fly.p);
        free(c->rbuf);
        free(c->pbuf);
        free(c);
    }
    pool_maybe_free(p);
}

static void
conn_close_cb(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles == 0) {
        conn_free(c);
    }
}

static void
conn_close(conn *c)
{
    net_pool *p = c->pool;
    if (c->state == C_CLOSING) {
        return;
    }
    if (c->state == C_IDLE) {
        idle_remove(c);
    }
    if (c->state == C_ACTIVE || c->state == C_CONNECTING) {
        p->nactive--;
    }
    c->state = C_CLOSING;
    p->nconns--;
    if (c->x != NULL) {
        c->x->c = NULL;
        c->x = NULL;
    }
    uv_close((uv_handle_t *) &c->tcp, conn_close_cb);
    uv_close((uv_handle_t *) &c->timer, conn_close_cb);
    /* a freed slot may let a queued exchange connect */
    if (p->qhead != NULL && !p->closing) {
        kick_arm(p);
    }
}

/* ---- writing ---- */

static void conn_write_cb(uv_write_t *req, int status);

static void
conn_write_fail(conn *c)
{
    if (c->x != NULL) {
        net_exchange *x = c->x;
        x->deferred_err = DBAO_EIO;
        defer(x, XP_ERROR);
    } else {
        conn_close(c);
    }
}

/* conn_send_fly writes c->fly: uv_try_write first, then uv_write for the rest. */
static void
conn_send_fly(conn *c)
{
    uv_buf_t b = uv_buf_init((char *) c->fly.p + c->fly.off, (unsigned) (c->fly.len - c->fly.off));
    int r = uv_try_write((uv_stream_t *) &c->tcp, &b, 1);
    if (r == UV_EAGAIN || r == UV_ENOSYS) {
        r = 0;
    }
    if (r < 0) {
        c->fly.len = c->fly.off = 0;
        conn_write_fail(c);
        return;
    }
    c->last_io = uv_now(c->pool->loop);
    c->fly.off += (size_t) r;
    if (r > 0 && c->x != NULL && c->state == C_ACTIVE) {
        c->x->sent = true; /* some request byte reached the kernel */
    }
    if (c->fly.off == c->fly.len) {
        c->fly.len = c->fly.off = 0;
        /* all taken at once: no write callback will report the drain */
        net_exchange *x = c->x;
        if (x != NULL && x->want_drain && x_queued(x) < X_DRAIN_MARK) {
            defer(x, XP_DRAIN);
        }
        return;
    }
    b = uv_buf_init((char *) c->fly.p + c->fly.off, (unsigned) (c->fly.len - c->fly.off));
    r = uv_write(&c->wreq, (uv_stream_t *) &c->tcp, &b, 1, conn_write_cb);
    if (r < 0) {
        c->fly.len = c->fly.off = 0;
        conn_write_fail(c);
        return;
    }
    c->writing = true;
    if (c->x != NULL && c->state == C_ACTIVE) {
        c->x->sent = true;
    }
}

/* conn_tls_out moves the TLS engine's output into c->fly. */
static int
conn_tls_out(conn *c)
{
    size_t n = BIO_ctrl_pending(c->wbio);
    if (n == 0) {
        return 0;
    }
    if (bytes_reserve(&c->fly, n) != 0) {
        return DBAO_ENOMEM;
    }
    int r = BIO_read(c->wbio, c->fly.p + c->fly.len, (int) n);
    if (r > 0) {
        c->fly.len += (size_t) r;
    }
    return 0;
}

/* conn_flush hands the pending request bytes to the transport, unless a write is in flight
 * (its callback flushes again). Never calls a user callback. */
static void
conn_flush(conn *c)
{
    if (c->writing || c->state == C_CLOSING) {
        return;
    }
    net_exchange *x = c->x;
    if (c->ssl != NULL) {
        if (c->state == C_CONNECTING) {
            /* handshake output only */
        } else if (x != NULL && x->pend.len > 0) {
            int r = SSL_write(c->ssl, x->pend.p, (int) x->pend.len);
            if (r <= 0) {
                conn_write_fail(c);
                return;
            }
            x->pend.len = 0;
        }
        if (conn_tls_out(c) != 0) {
            conn_write_fail(c);
            return;
        }
        if (c->fly.len > 0) {
            conn_send_fly(c);
        }
        return;
    }
    if (x == NULL || x->pend.len == 0 || c->state != C_ACTIVE) {
        return;
    }
    /* hand the pending buffer to the connection (swap, no copy) and write it */
    bytes t = c->fly;
    c->fly = x->pend;
    c->fly.off = 0;
    x->pend = t;
    x->pend.len = 0;
    x->pend.off = 0;
    conn_send_fly(c);
}

/* x_maybe_drain calls on_drain if due; false if the caller aborted x in it (x is freed). */
static bool
x_maybe_drain(net_exchange *x)
{
    if (x->want_drain && x_queued(x) < X_DRAIN_MARK && x->cbs.on_drain && !x->finished) {
        x->want_drain = false;
        x->in_cb++;
        x->cbs.on_drain(x, x->arg);
        x->in_cb--;
        if (x->aborted) {
            x_release(x);
            return false;
        }
    }
    return true;
}

static void
conn_write_cb(uv_write_t *req, int status)
{
    conn *c = req->data;
    c->writing = false;
    c->fly.len = c->fly.off = 0;
    if (c->state == C_CLOSING) {
        return;
    }
    if (status < 0) {
        if (c->x != NULL) {
            x_fail(c->x, DBAO_EIO, 0);
        } else {
            conn_close(c);
        }
        return;
    }
    c->last_io = uv_now(c->pool->loop);
    conn_flush(c);
    net_exchange *x = c->x;
    if (x != NULL) {
        x_maybe_drain(x);
    }
}

/* ---- reading ---- */

static void
conn_alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void) hint;
    conn *c = h->data;
    *b = uv_buf_init((char *) c->rbuf, RBUF_SIZE);
}

/* x_complete: the response is complete. Hand the connection back (idle list, a queued
 * exchange, or close), then on_end, then free the exchange. */
static void
x_complete(net_exchange *x, bool leftover)
{
    conn *c = x->c;
    net_pool *p = x->pool;
    const net_resp_head *h = &c->resp.head;
    bool reuse = !leftover && h->keep_alive && x->ended && x->pend.len == 0 && !c->writing &&
                 !p->closing && c->state == C_ACTIVE && p->nidle < p->o.max_idle &&
                 (p->o.max_requests_per_conn == 0 || c->nreq < p->o.max_requests_per_conn);
    x->finished = true;
    x_detach(x);
    undefer(x);
    if (reuse) {
        c->state = C_IDLE;
        p->nactive--;
        c->next = p->idle;
        c->prev = NULL;
        if (p->idle) {
            p->idle->prev = c;
        }
        p->idle = c;
        p->nidle++;
        conn_set_timer(c, T_IDLE);
        if (c->in_n > 0 || (c->ssl != NULL && SSL_pending(c->ssl) > 0)) {
            conn_close(c);
        } else if (!c->reading) {
            c->reading = true;
            uv_read_start((uv_stream_t *) &c->tcp, conn_alloc_cb, conn_read_cb);
        }
        if (c->state == C_IDLE && p->qhead != NULL) {
            kick_arm(p);
        }
    } else {
        conn_close(c);
    }
    if (x->cbs.on_end) {
        x->in_cb++;
        x->cbs.on_end(x, x->arg);
        x->in_cb--;
    }
    x_release(x);
}

/* conn_parse runs the pending plaintext through the parser and delivers the events. */
static void
conn_parse(conn *c)
{
    /* After a body span llhttp may end the message without another byte: feed again. An
     * event that follows a head during which the caller paused is held until resume. Both
     * live in the connection because a pause may come in between. */
    while (c->state != C_CLOSING) {
        net_exchange *x = c->x;
        if (c->held_rc == 0) {
            if (c->in_n == 0 && !c->feed_again) {
                return;
            }
            if (x == NULL || c->state != C_ACTIVE) {
                conn_close(c); /* bytes nobody asked for */
                return;
            }
            if (x->paused) {
                return;
            }
            size_t used;
            net_resp_ev ev;
            int rc = net__resp_feed(&c->resp, c->in_p, c->in_n, &used, &ev);
            c->in_p += used;
            c->in_n -= used;
            if (used > 0) {
                x->got_response = true;
            }
            if (ev.head != NULL && x->cbs.on_head) {
                x->in_cb++;
                x->cbs.on_head(x, ev.head, x->arg);
                x->in_cb--;
                if (x->aborted) {
                    x_release(x);
                    return;
                }
            }
            if (rc < 0) {
                x_fail(x, rc, 0);
                return;
            }
            c->feed_again = rc == NET_RESP_DATA;
            if (rc != NET_RESP_DATA && rc != NET_RESP_DONE) {
                continue;
            }
            c->held_rc = rc;
            c->held_p = ev.data;
            c->held_n = ev.len;
        }
        if (x->paused) {
            return;
        }
        int rc = c->held_rc;
        c->held_rc = 0;
        if (rc == NET_RESP_DATA) {
            if (x->cbs.on_data) {
                x->in_cb++;
                x->cbs.on_data(x, c->held_p, c->held_n, x->arg);
                x->in_cb--;
                if (x->aborted) {
                    x_release(x);
                    return;
                }
            }
        } else {
            x_complete(x, c->in_n > 0);
            return;
        }
    }
}

static void
conn_eof(conn *c, int status)
{
    net_exchange *x = c->x;
    if (x == NULL || c->state != C_ACTIVE) {
        conn_close(c);
        return;
    }
    if (status == UV_EOF && c->in_n == 0) {
        int rc = net__resp_eof(&c->resp);
        if (rc == NET_RESP_DONE) {
            c->state = C_ACTIVE;
            x_complete(x, true); /* close-delimited: never reused */
            return;
        }
        x_fail(x, rc == DBAO_EFORMAT ? DBAO_EFORMAT : DBAO_EIO, 0);
        return;
    }
    x_fail(x, DBAO_EIO, 0);
}

/* conn_input: parse what is pending, then (TLS) decrypt more, until paused or out of bytes. */
static void
conn_input(conn *c)
{
    for (;;) {
        conn_parse(c);
        if (c->state == C_CLOSING || c->in_n > 0 || c->feed_again || c->held_rc != 0) {
            return; /* closed, or paused with bytes left */
        }
        if (c->ssl == NULL) {
            return;
        }
        int r = SSL_read(c->ssl, c->pbuf, PBUF_SIZE);
        if (r > 0) {
            c->in_p = c->pbuf;
            c->in_n = (size_t) r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            if (BIO_ctrl_pending(c->wbio) > 0) {
                conn_flush(c);
            }
            return;
        }
        ERR_clear_error();
        conn_eof(c, e == SSL_ERROR_ZERO_RETURN ? UV_EOF : UV_ECONNRESET);
        return;
    }
}

static void conn_tls_handshake(conn *c);

static void
conn_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void) b;
    conn *c = s->data;
    if (c->state == C_CLOSING || n == 0) {
        return;
    }
    if (n < 0) {
        if (c->state == C_CONNECTING) {
            c->pool->connect_errors++;
            x_fail(c->x, DBAO_EIO, 0);
            return;
        }
        conn_eof(c, (int) n);
        return;
    }
    c->last_io = uv_now(c->pool->loop);
    if (c->ssl == NULL) {
        c->in_p = c->rbuf;
        c->in_n = (size_t) n;
    } else {
        if (BIO_write(c->rbio, c->rbuf, (int) n) != (int) n) {
            if (c->x) {
                x_fail(c->x, DBAO_ENOMEM, 0);
            } else {
                conn_close(c);
            }
            return;
        }
        if (c->state == C_CONNECTING) {
            conn_tls_handshake(c);
            if (c->state != C_ACTIVE) {
                return;
            }
        }
    }
    conn_input(c);
    if (c->state == C_ACTIVE && c->x != NULL && c->x->paused && c->reading) {
        uv_read_stop(s);
        c->reading = false;
    }
}

/* ---- connecting ---- */

static void
conn_ready(conn *c)
{
    net_exchange *x = c->x;
    c->state = C_ACTIVE;
    conn_set_timer(c, T_IO);
    conn_flush(c);
    if (x != NULL && x->paused && c->reading) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->reading = false;
    }
}

static void
conn_tls_handshake(conn *c)
{
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_up = true;
        conn_ready(c);
        conn_flush(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        conn_flush(c);
        return;
    }
    ERR_clear_error();
    c->pool->connect_errors++;
    x_fail(c->x, DBAO_EIO, 0);
}

static void
conn_connect_cb(uv_connect_t *req, int status)
{
    conn *c = req->data;
    net_pool *p = c->pool;
    if (c->state == C_CLOSING) {
        return;
    }
    if (status < 0) {
        p->connect_errors++;
        if (c->x != NULL) {
            x_fail(c->x, DBAO_EIO, 0);
        } else {
            conn_close(c);
        }
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->reading = true;
    uv_read_start((uv_stream_t *) &c->tcp, conn_alloc_cb, conn_read_cb);
    if (c->x == NULL) {
        conn_close(c);
        return;
    }
    if (c->ssl != NULL) {
        conn_tls_handshake(c);
        return;
    }
    conn_ready(c);
}

static conn *
conn_get(net_pool *p)
{
    conn *c = p->cfree;
    if (c != NULL) {
        p->cfree = c->fnext;
        p->ncfree--;
    } else {
        c = calloc(1, sizeof *c);
        if (c == NULL) {
            return NULL;
        }
        c->rbuf = malloc(RBUF_SIZE);
        if (c->rbuf == NULL || net__resp_init(&c->resp, p->o.header_max, p->o.headers_num_max)) {
            free(c->rbuf);
            free(c);
            return NULL;
        }
    }
    c->pool = p;
    c->x = NULL;
    c->next = c->prev = NULL;
    c->writing = c->reading = c->tls_up = false;
    c->nreq = 0;
    c->in_n = 0;
    c->feed_again = false;
    c->held_rc = 0;
    c->fly.len = c->fly.off = 0;
    c->tmode = T_NONE;
    c->t_armed = false;
    return c;
}

static void
conn_put_back(net_pool *p, conn *c)
{
    c->fnext = p->cfree;
    p->cfree = c;
    p->ncfree++;
}

/* conn_start opens a new connection for x. Errors are reported to x (we run from the zero
 * timer, so a callback is allowed). */
static void
conn_start(net_pool *p, net_exchange *x)
{
    conn *c = conn_get(p);
    if (c == NULL) {
        x_fail(x, DBAO_ENOMEM, 0);
        return;
    }
    if (p->o.tls_ctx != NULL) {
        if (c->pbuf == NULL && (c->pbuf = malloc(PBUF_SIZE)) == NULL) {
            conn_put_back(p, c);
            x_fail(x, DBAO_ENOMEM, 0);
            return;
        }
        c->ssl = SSL_new(p->o.tls_ctx);
        c->rbio = BIO_new(BIO_s_mem());
        c->wbio = BIO_new(BIO_s_mem());
        if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
            BIO_free(c->rbio);
            BIO_free(c->wbio);
            SSL_free(c->ssl);
            c->ssl = NULL;
            conn_put_back(p, c);
            x_fail(x, DBAO_ENOMEM, 0);
            return;
        }
        BIO_set_mem_eof_return(c->rbio, -1);
        BIO_set_mem_eof_return(c->wbio, -1);
        SSL_set_bio(c->ssl, c->rbio, c->wbio);
        SSL_set_connect_state(c->ssl);
        if (p->sni[0] != '\0') {
            SSL_set_tlsext_host_name(c->ssl, p->sni);
            SSL_set1_host(c->ssl, p->sni);
        }
    }
    uv_tcp_init(p->loop, &c->tcp);
    uv_timer_init(p->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->creq.data = c;
    c->wreq.data = c;
    c->handles = 2;
    c->state = C_CONNECTING;
    p->nconns++;
    p->nalloc++;
    p->nactive++;
    p->connects++;
    x->reused = false;
    x_attach(x, c);
    conn_set_timer(c, T_CONNECT);
    int r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *) &p->addr, conn_connect_cb);
    if (r < 0) {
        p->connect_errors++;
        x_fail(x, DBAO_EIO, 0);
    }
}

/* x_attach binds x to c (connecting, or taken from the idle list) and readies the parser. */
static void
x_attach(net_exchange *x, conn *c)
{
    x->c = c;
    c->x = x;
    c->nreq++;
    c->feed_again = false;
    c->held_rc = 0;
    net__resp_reset(&c->resp, x->head_only);
}

/* take_idle binds x to the most recent idle connection (no write yet). */
static void
take_idle(net_pool *p, net_exchange *x)
{
    conn *c = p->idle;
    idle_remove(c);
    c->state = C_ACTIVE;
    p->nactive++;
    p->reuses++;
    x->reused = true;
    x_attach(x, c);
    conn_set_timer(c, T_IO);
    if (x->paused && c->reading) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->reading = false;
    }
}

/* pool_take runs x now: an idle connection, a new one, or the wait queue. */
static void
pool_take(net_pool *p, net_exchange *x)
{
    if (p->idle != NULL) {
        take_idle(p, x);
        conn_flush(x->c);
        return;
    }
    if (p->o.max_conns != 0 && p->nconns >= p->o.max_conns) {
        queue_push(x);
        return;
    }
    conn_start(p, x);
}

static void
pool_dispatch(net_pool *p)
{
    while (p->qhead != NULL && !p->closing &&
           (p->idle != NULL || p->o.max_conns == 0 || p->nconns < p->o.max_conns)) {
        net_exchange *x = p->qhead;
        queue_remove(x);
        pool_take(p, x);
    }
}

static void
kick_cb(uv_timer_t *t)
{
    net_pool *p = t->data;
    p->kick_armed = false;
    /* queued exchanges first (FIFO), then the deferred work present now: at most that many
     * items, so that work deferred meanwhile waits for the next round */
    pool_dispatch(p);
    size_t n = 0;
    for (net_exchange *x = p->dhead; x != NULL; x = x->dnext) {
        n++;
    }
    while (n-- > 0 && p->dhead != NULL) {
        net_exchange *x = p->dhead;
        unsigned what = x->deferred;
        undefer(x);
        if (what & XP_CANCEL) {
            x_fail(x, -ECANCELED, NET_X_NOT_SENT);
            continue;
        }
        if (what & XP_ERROR) {
            x_fail(x, x->deferred_err, 0);
            continue;
        }
        if (what & XP_START) {
            if (p->qhead != NULL) {
                queue_push(x); /* behind those already waiting */
            } else {
                pool_take(p, x);
            }
            continue;
        }
        if ((what & XP_FLUSH) && x->c != NULL) {
            conn_flush(x->c); /* the head alone: the caller may wait for 100 Continue */
        }
        if ((what & XP_DRAIN) && !x_maybe_drain(x)) {
            continue; /* aborted in on_drain: freed */
        }
        if ((what & XP_RESUME) && x->c != NULL && x->c->state == C_ACTIVE && !x->paused) {
            conn *c = x->c;
            conn_set_timer(c, T_IO);
            conn_input(c);
            if (c->state == C_ACTIVE && c->x == x && !x->paused && !c->reading) {
                c->reading = true;
                uv_read_start((uv_stream_t *) &c->tcp, conn_alloc_cb, conn_read_cb);
            }
        }
    }
    pool_dispatch(p);
    if (p->dhead != NULL) {
        kick_arm(p);
    }
    pool_maybe_free(p);
}

/* ---- public API ---- */

int
net_pool_new(net_pool **out, struct uv_loop_s *loop, const net_pool_opts *o, dbao_err *err)
{
    *out = NULL;
    if (loop == NULL || o == NULL || o->host == NULL || o->port == 0) {
        return dbao_err_set(err, DBAO_EINVAL, "pool needs a loop, a host and a port");
    }
    if (o->tls_sni != NULL && strlen(o->tls_sni) >= 256) {
        return dbao_err_set(err, DBAO_EINVAL, "tls_sni too long");
    }
    net_pool *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    if (uv_ip4_addr(o->host, o->port, (struct sockaddr_in *) &p->addr) != 0 &&
        uv_ip6_addr(o->host, o->port, (struct sockaddr_in6 *) &p->addr) != 0) {
        free(p);
        return dbao_err_set(err, DBAO_EINVAL, "host is not a numeric address: %s", o->host);
    }
    p->loop = loop;
    p->o = *o;
    snprintf(p->host, sizeof p->host, "%s", o->host);
    p->o.host = p->host;
    if (o->tls_sni != NULL) {
        snprintf(p->sni, sizeof p->sni, "%s", o->tls_sni);
    }
    p->o.tls_sni = p->sni;
    if (p->o.max_idle == 0) {
        p->o.max_idle = 64;
    }
    if (p->o.connect_timeout_ms == 0) {
        p->o.connect_timeout_ms = 5000;
    }
    if (p->o.read_timeout_ms == 0) {
        p->o.read_timeout_ms = 60000;
    }
    if (p->o.write_timeout_ms == 0) {
        p->o.write_timeout_ms = 60000;
    }
    if (p->o.idle_timeout_ms == 0) {
        p->o.idle_timeout_ms = 60000;
    }
    if (p->o.header_max == 0) {
        p->o.header_max = 16 * 1024;
    }
    if (p->o.headers_num_max == 0) {
        p->o.headers_num_max = 100;
    }
    uv_timer_init(loop, &p->kick);
    p->kick.data = p;
    *out = p;
    return 0;
}

static void
pool_kick_close_cb(uv_handle_t *h)
{
    net_pool *p = h->data;
    void (*done)(void *) = p->done;
    void *arg = p->done_arg;
    while (p->xfree) {
        net_exchange *x = p->xfree;
        p->xfree = x->fnext;
        free(x->pend.p);
        free(x);
    }
    while (p->cfree) {
        conn *c = p->cfree;
        p->cfree = c->fnext;
        net__resp_free(&c->resp);
        free(c->fly.p);
        free(c->rbuf);
        free(c->pbuf);
        free(c);
    }
    free(p);
    if (done) {
        done(arg);
    }
}

static void
pool_maybe_free(net_pool *p)
{
    if (!p->closing || p->kick_closed || p->nalloc > 0 || p->dhead != NULL || p->qhead != NULL ||
        p->nactive > 0) {
        return;
    }
    p->kick_closed = true;
    uv_close((uv_handle_t *) &p->kick, pool_kick_close_cb);
}

void
net_pool_close(net_pool *p, void (*done)(void *arg), void *arg)
{
    if (p == NULL || p->closing) {
        return;
    }
    p->closing = true;
    p->done = done;
    p->done_arg = arg;
    while (p->idle != NULL) {
        conn_close(p->idle);
    }
    while (p->qhead != NULL) {
        net_exchange *x = p->qhead;
        queue_remove(x);
        defer(x, XP_CANCEL);
    }
    for (net_exchange *x = p->dhead; x != NULL; x = x->dnext) {
        if (x->deferred & XP_START) {
            x->deferred |= XP_CANCEL;
        }
    }
    kick_arm(p);
}

void
net_pool_get_stats(const net_pool *p, net_pool_stats *st)
{
    st->idle = p->nidle;
    st->active = p->nactive;
    st->queued = p->nqueued;
    st->connects = p->connects;
    st->reuses = p->reuses;
    st->connect_errors = p->connect_errors;
}

int
net_exchange_start(net_exchange **out, net_pool *p, const char *head, size_t head_len,
                   int64_t body_len, bool head_only, const net_exchange_cbs *cbs, void *arg)
{
    *out = NULL;
    if (p == NULL || p->closing || head == NULL || head_len == 0 || body_len < -1 || cbs == NULL) {
        return DBAO_EINVAL;
    }
    net_exchange *x = p->xfree;
    if (x != NULL) {
        p->xfree = x->fnext;
        p->nxfree--;
        bytes keep = x->pend;
        memset(x, 0, sizeof *x);
        x->pend = keep;
        x->pend.len = x->pend.off = 0;
    } else if ((x = calloc(1, sizeof *x)) == NULL) {
        return DBAO_ENOMEM;
    }
    x->pool = p;
    x->cbs = *cbs;
    x->arg = arg;
    x->body_len = body_len;
    x->head_only = head_only;
    if (bytes_add(&x->pend, head, head_len) != 0) {
        free(x->pend.p);
        free(x);
        return DBAO_ENOMEM;
    }
    *out = x;
    if (p->idle != NULL && p->qhead == NULL) {
        /* fast path: bind an idle connection now; the head goes out with the first body
         * bytes or at net_exchange_end (one write for head and small body), and no loop
         * turn is spent. Nothing here calls back: write errors are deferred. */
        take_idle(p, x);
        defer(x, XP_FLUSH); /* unless _write / _end come first in this turn */
        return 0;
    }
    defer(x, XP_START);
    return 0;
}

static const char hexd[] = "0123456789abcdef";

/* flushed: the pending bytes went to the connection, so a deferred head-only flush is moot;
 * stop the zero timer when nothing else needs it (saves a loop turn per exchange). */
static void
x_flushed(net_exchange *x)
{
    net_pool *p = x->pool;
    if (x->deferred == XP_FLUSH) {
        undefer(x);
        if (p->dhead == NULL && p->qhead == NULL && !p->closing && p->kick_armed) {
            uv_timer_stop(&p->kick);
            p->kick_armed = false;
        }
    }
}

int
net_exchange_write(net_exchange *x, const void *data, size_t len)
{
    if (x == NULL || x->ended || x->finished) {
        return DBAO_EINVAL;
    }
    if (len == 0) {
        return 0;
    }
    if (x->body_len >= 0) {
        if ((uint64_t) x->body_len - x->body_sent < len) {
            return DBAO_EINVAL;
        }
        if (bytes_add(&x->pend, data, len) != 0) {
            return DBAO_ENOMEM;
        }
    } else {
        char pre[20];
        size_t n = 0;
        char tmp[16];
        size_t v = len;
        do {
            tmp[n++] = hexd[v & 15];
            v >>= 4;
        } while (v != 0);
        for (size_t i = 0; i < n; i++) {
            pre[i] = tmp[n - 1 - i];
        }
        pre[n] = '\r';
        pre[n + 1] = '\n';
        if (bytes_reserve(&x->pend, n + 2 + len + 2) != 0) {
            return DBAO_ENOMEM;
        }
        bytes_add(&x->pend, pre, n + 2);
        bytes_add(&x->pend, data, len);
        bytes_add(&x->pend, "\r\n", 2);
    }
    x->body_sent += len;
    if (x->c != NULL) {
        conn_flush(x->c);
        x_flushed(x);
    }
    if (x_queued(x) >= X_DRAIN_MARK) {
        x->want_drain = true;
    }
    return 0;
}

int
net_exchange_end(net_exchange *x)
{
    if (x == NULL || x->ended || x->finished) {
        return DBAO_EINVAL;
    }
    if (x->body_len >= 0 && x->body_sent != (uint64_t) x->body_len) {
        return DBAO_EINVAL;
    }
    if (x->body_len == -1 && bytes_add(&x->pend, "0\r\n\r\n", 5) != 0) {
        return DBAO_ENOMEM;
    }
    x->ended = true;
    if (x->c != NULL) {
        conn_flush(x->c);
        x_flushed(x);
    }
    return 0;
}

size_t
net_exchange_queued(const net_exchange *x)
{
    return x_queued(x);
}

void
net_exchange_pause(net_exchange *x)
{
    if (x == NULL || x->finished || x->paused) {
        return;
    }
    x->paused = true;
    conn *c = x->c;
    if (c != NULL && c->state == C_ACTIVE && c->reading) {
        uv_read_stop((uv_stream_t *) &c->tcp);
        c->reading = false;
    }
}

void
net_exchange_resume(net_exchange *x)
{
    if (x == NULL || x->finished || !x->paused) {
        return;
    }
    x->paused = false;
    defer(x, XP_RESUME);
}

void
net_exchange_abort(net_exchange *x)
{
    if (x == NULL || x->finished) {
        return;
    }
    x->finished = true;
    x->aborted = true;
    conn *c = x->c;
    x_detach(x);
    undefer(x);
    queue_remove(x);
    if (c != NULL) {
        conn_close(c);
    }
    if (x->in_cb == 0) {
        x_release(x);
    }
}
