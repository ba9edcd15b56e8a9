/* server.c: workers, listeners, connections, TLS records, timeouts, completion and stop.
 *
 * Threads. Each worker owns one uv_loop, run by one thread; everything below happens on that
 * thread except three things: net_server_stop (any thread or a signal handler: an atomic flag
 * and uv_async_send, which is async-signal-safe), net_request_respond from a foreign thread
 * (the request goes onto the worker's completion list under worker->mu, and uv_async_send
 * wakes the loop), and the controlling thread's new/start/wait/free.
 *
 * Connection state machine (loop thread only):
 *
 *   reading    bytes from the socket (through SSL_read for TLS) go to the parser, or to the
 *              connection's input buffer when the parser may not run now (a request is
 *              outstanding, a write is in flight). Past NET__INBUF_MAX buffered bytes the
 *              connection stops reading: back-pressure on pipelining clients.
 *   outstanding  a complete request is with the handler; nothing more is parsed. An EOF or
 *              a reset from the client closes the connection and detaches the request
 *              (req->conn = NULL): its response, when it comes, is dropped. The request memory
 *              belongs to the handler until it responds, so nothing is freed under it.
 *   writing    the response goes out with uv_try_write (most of the time all of it) and
 *              uv_write for the rest; the next pipelined request is parsed only once the
 *              previous response is fully handed to the kernel.
 *   lingering  after a response with "Connection: close" (errors, HTTP/1.0, stop): TLS
 *              close_notify, shutdown(SHUT_WR), then read and discard until EOF or 2 s, so
 *              the client reads the response before any RST.
 *   closing    uv_close on the socket and the timer; the memory goes in the last close
 *              callback (libuv rule: handle memory is reusable only then).
 *
 * One uv_timer per connection enforces, by phase: the TLS handshake and a new connection's
 * first request head (header_timeout_ms), a request head from its first byte
 * (header_timeout_ms; slow-loris resistant: not re-armed per read), a body from the end of
 * the head (body_timeout_ms), the keep-alive wait (idle_timeout_ms) and the lingering close.
 * No timer runs while the handler holds a request.
 *
 * Completion accounting: worker->outstanding counts requests handed to the handler and not
 * yet completed on the loop. A stopping worker ends (closes its async handle, letting uv_run
 * return) only when it has no connection and nothing outstanding, so a foreign thread that
 * responds late always finds a live worker and async handle. The responding thread calls
 * uv_async_send while holding worker->mu, and the worker marks the handle closed under the
 * same mutex, so the two cannot cross.
 *
 * Listeners: one socket per worker, all bound to the same address with SO_REUSEPORT (set on
 * the fd from uv_tcp_init_ex + uv_fileno before uv_tcp_bind, as libuv 1.44 has no flag for
 * it); with a single worker the option is not set, so no other process of the same user can
 * join the port group.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <uv.h>

#include "internal.h"

#define NET__INBUF_MAX   (64 * 1024)
#define NET__READBUF     (64 * 1024)
#define NET__LINGER_MS   2000
#define NET__WORKERS_MAX 64

typedef enum tmode {
    TM_NONE = 0,
    TM_HEADER,
    TM_BODY,
    TM_IDLE,
    TM_LINGER,
} tmode;

struct net__conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    net__worker *w;
    net__conn *prev, *next; /* the worker's list of open connections */
    net__parser ps;
    net_peer peer;
    SSL *ssl; /* NULL for plain TCP */
    bool hs_done;
    char *inbuf; /* owned: plaintext not yet parsed */
    size_t in_len, in_cap;
    net_request *req; /* the outstanding request, or NULL */
    unsigned writes;  /* uv_write requests in flight */
    int closes;       /* handles whose close callback is still to come */
    unsigned served;  /* responses sent */
    tmode timer_mode;
    bool reading;
    bool in_parse;    /* conn_consume is on the stack */
    bool close_after; /* close once the current writes are done */
    bool lingering;
    bool closing;
};

struct net__worker {
    net_server *srv;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t async;
    uv_timer_t drain;
    pthread_t thread;   /* set by the controlling thread */
    pthread_t loop_tid; /* set by the worker itself before its loop runs */
    bool loop_ok, listener_ok, async_ok, drain_ok, started, joined;
    /* loop thread only */
    net__conn *conns;
    size_t num_conns;
    size_t max_conns;
    size_t outstanding;
    bool stopping;
    bool finished;
    char readbuf[NET__READBUF];
    char plainbuf[16384];
    /* under mu */
    pthread_mutex_t mu;
    net_request *done_head, *done_tail;
    bool async_closed;
};

struct net_server {
    net_server_opts o;
    net__limits lim;
    SSL_CTX *ssl_ctx;
    net__worker *workers;
    unsigned num_workers;
    uint16_t port;
    char host[64]; /* for messages */
    atomic_int stop_requested;
};

static void conn_close(net__conn *c);
static void conn_pump(net__conn *c);
static void conn_update_timer(net__conn *c);
static void worker_check_done(net__worker *w);
static void worker_complete(net_request *req);

/* ---- writing ---- */

typedef struct wreq {
    uv_write_t w;
    net__conn *c;
    net_request *owner; /* freed when the write is done (may be NULL) */
    char *buf;          /* freed when the write is done (may be NULL) */
} wreq;

static void
on_write(uv_write_t *w, int status)
{
    wreq *wr = (wreq *) w;
    net__conn *c = wr->c;
    net__request_free(wr->owner);
    dbao_free(wr->buf);
    dbao_free(wr);
    c->writes--;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->writes == 0) {
        conn_pump(c);
    }
}

/* raw_write writes bytes to the socket; `owner` and `buf` are freed once they are written. */
static void
raw_write(net__conn *c, const char *data, size_t len, net_request *owner, char *buf)
{
    if (c->closing) {
        net__request_free(owner);
        dbao_free(buf);
        return;
    }
    if (c->writes == 0) {
        uv_buf_t b = uv_buf_init((char *) data, (unsigned) len);
        int n = uv_try_write((uv_stream_t *) &c->tcp, &b, 1);
        if (n >= 0 && (size_t) n == len) {
            net__request_free(owner);
            dbao_free(buf);
            return;
        }
        if (n < 0 && n != UV_EAGAIN) {
            net__request_free(owner);
            dbao_free(buf);
            conn_close(c);
            return;
        }
        if (n > 0) {
            data += n;
            len -= (size_t) n;
        }
    }
    wreq *wr = dbao_calloc(1, sizeof *wr);
    if (wr == NULL) {
        net__request_free(owner);
        dbao_free(buf);
        conn_close(c);
        return;
    }
    wr->c = c;
    wr->owner = owner;
    wr->buf = buf;
    uv_buf_t b = uv_buf_init((char *) data, (unsigned) len);
    if (uv_write(&wr->w, (uv_stream_t *) &c->tcp, &b, 1, on_write) != 0) {
        net__request_free(owner);
        dbao_free(buf);
        dbao_free(wr);
        conn_close(c);
        return;
    }
    c->writes++;
}

/* tls_flush sends whatever OpenSSL has written into the connection's write BIO. */
static void
tls_flush(net__conn *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    size_t pending = BIO_ctrl_pending(wbio);
    if (pending == 0 || c->closing) {
        return;
    }
    char *buf = dbao_malloc(pending);
    if (buf == NULL) {
        conn_close(c);
        return;
    }
    int n = BIO_read(wbio, buf, (int) pending);
    if (n <= 0) {
        dbao_free(buf);
        return;
    }
    raw_write(c, buf, (size_t) n, NULL, buf);
}

/* conn_send sends response bytes (through TLS when on); `owner` is freed afterwards. */
static void
conn_send(net__conn *c, const char *data, size_t len, net_request *owner)
{
    if (c->ssl == NULL) {
        raw_write(c, data, len, owner, NULL);
        return;
    }
    while (len > 0 && !c->closing) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int) len;
        int n = SSL_write(c->ssl, data, chunk);
        if (n <= 0) {
            ERR_clear_error();
            conn_close(c);
            break;
        }
        data += n;
        len -= (size_t) n;
    }
    net__request_free(owner);
    tls_flush(c);
}

/* ---- closing ---- */

static void
conn_free(net__conn *c)
{
    net__worker *w = c->w;
    net__parser_cleanup(&c->ps);
    SSL_free(c->ssl);
    dbao_free(c->inbuf);
    dbao_free(c);
    w->num_conns--;
    worker_check_done(w);
}

static void
on_conn_close(uv_handle_t *h)
{
    net__conn *c = h->data;
    if (--c->closes == 0) {
        conn_free(c);
    }
}

static void
conn_close(net__conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = true;
    if (c->req != NULL) {
        c->req->conn = NULL; /* the handler still owns it; its response will be dropped */
        c->req = NULL;
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        c->w->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    uv_timer_stop(&c->timer);
    c->closes = 2;
    uv_close((uv_handle_t *) &c->timer, on_conn_close);
    uv_close((uv_handle_t *) &c->tcp, on_conn_close);
}

static void
on_shutdown(uv_shutdown_t *sr, int status)
{
    net__conn *c = sr->data;
    dbao_free(sr);
    if (status < 0) {
        conn_close(c);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

/* conn_linger starts the lingering close once the last response is written. */
static void
conn_linger(net__conn *c)
{
    if (c->lingering || c->closing) {
        return;
    }
    c->lingering = true;
    c->in_len = 0;
    if (c->ssl != NULL && c->hs_done) {
        SSL_shutdown(c->ssl);
        ERR_clear_error();
        tls_flush(c);
        if (c->closing) {
            return;
        }
    }
    uv_shutdown_t *sr = dbao_malloc(sizeof *sr);
    if (sr == NULL) {
        conn_close(c);
        return;
    }
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *) &c->tcp, on_shutdown) != 0) {
        dbao_free(sr);
        conn_close(c);
        return;
    }
    if (!c->reading) {
        if (uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    }
    conn_update_timer(c);
}

/* conn_fail answers a protocol error and closes the connection after it. */
static void
conn_fail(net__conn *c, int status)
{
    if (c->closing || c->close_after) {
        return;
    }
    c->close_after = true;
    c->in_len = 0;
    if (c->ssl == NULL || c->hs_done) {
        size_t len;
        const char *r = net__response_canned(status, &len);
        conn_send(c, r, len, NULL);
    }
    conn_pump(c);
}

/* ---- reading and parsing ---- */

static void
conn_dispatch(net__conn *c)
{
    net__worker *w = c->w;
    net_request *req = net__parser_take(&c->ps);
    req->peer = c->peer;
    req->worker = w;
    req->conn = c;
    c->req = req;
    w->outstanding++;
    conn_update_timer(c);
    w->srv->o.handler(req, w->srv->o.handler_arg);
}

/* conn_consume parses from `data` while the connection may take a request; returns the bytes
 * used. The handler may respond synchronously, in which case parsing goes on here. */
static size_t
conn_consume(net__conn *c, const char *data, size_t len)
{
    size_t off = 0;
    c->in_parse = true;
    while (off < len && c->req == NULL && !c->close_after && !c->closing && c->writes == 0) {
        size_t used = 0;
        int r = net__parser_feed(&c->ps, data + off, len - off, &used);
        off += used;
        if (c->ps.want_continue) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            c->ps.want_continue = false;
            conn_send(c, cont, sizeof cont - 1, NULL);
        }
        if (r == NET__PARSE_MESSAGE) {
            conn_dispatch(c);
        } else if (r == NET__PARSE_ERROR) {
            c->in_parse = false;
            conn_fail(c, c->ps.error_status);
            return len;
        }
    }
    c->in_parse = false;
    return off;
}

static int
inbuf_append(net__conn *c, const char *data, size_t len)
{
    if (c->in_len + len > c->in_cap) {
        size_t nc = c->in_cap ? c->in_cap : 4096;
        while (nc < c->in_len + len) {
            nc *= 2;
        }
        char *nb = dbao_realloc(c->inbuf, nc);
        if (nb == NULL) {
            return DBAO_ENOMEM;
        }
        c->inbuf = nb;
        c->in_cap = nc;
    }
    memcpy(c->inbuf + c->in_len, data, len);
    c->in_len += len;
    return 0;
}

/* conn_input takes plaintext from the peer. */
static void
conn_input(net__conn *c, const char *data, size_t len)
{
    if (c->closing || c->close_after || c->lingering) {
        return;
    }
    if (c->in_len == 0 && !c->in_parse) {
        size_t used = conn_consume(c, data, len);
        data += used;
        len -= used;
    }
    if (len > 0 && !c->closing && !c->close_after) {
        if (inbuf_append(c, data, len) != 0) {
            conn_close(c);
            return;
        }
        if (c->in_len >= NET__INBUF_MAX && c->reading) {
            uv_read_stop((uv_stream_t *) &c->tcp);
            c->reading = false;
        }
    }
    /* A response given synchronously by the handler could not pump while the parser ran. */
    conn_pump(c);
}

/* conn_pump makes progress after a response or a finished write: parse buffered input,
 * start the lingering close, resume reading. */
static void
conn_pump(net__conn *c)
{
    if (c->closing || c->in_parse) {
        return;
    }
    if (!c->close_after && c->req == NULL && c->writes == 0 && c->in_len > 0) {
        size_t used = conn_consume(c, c->inbuf, c->in_len);
        if (used >= c->in_len || c->close_after) {
            c->in_len = 0;
        } else {
            memmove(c->inbuf, c->inbuf + used, c->in_len - used);
            c->in_len -= used;
        }
    }
    if (c->closing) {
        return;
    }
    if (c->close_after) {
        if (c->writes == 0 && c->req == NULL) {
            conn_linger(c);
        }
        return;
    }
    if (!c->reading && c->in_len < NET__INBUF_MAX) {
        if (uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read) != 0) {
            conn_close(c);
            return;
        }
        c->reading = true;
    }
    conn_update_timer(c);
}

static void
tls_input(net__conn *c, const char *data, size_t len)
{
    if (BIO_write(SSL_get_rbio(c->ssl), data, (int) len) != (int) len) {
        conn_close(c);
        return;
    }
    if (!c->hs_done) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            tls_flush(c); /* the handshake's next flight, or an alert */
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                conn_close(c);
            }
            return;
        }
        c->hs_done = true;
        net__tls_peer(c->ssl, &c->peer);
        conn_update_timer(c);
    }
    while (!c->closing && !c->close_after && !c->lingering) {
        int n = SSL_read(c->ssl, c->w->plainbuf, (int) sizeof c->w->plainbuf);
        if (n > 0) {
            conn_input(c, c->w->plainbuf, (size_t) n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        ERR_clear_error();
        if (e != SSL_ERROR_WANT_READ) {
            /* close_notify (SSL_ERROR_ZERO_RETURN) or a fatal error */
            tls_flush(c);
            conn_close(c);
            return;
        }
        break;
    }
    tls_flush(c);
}

static void
on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void) hint;
    net__conn *c = h->data;
    buf->base = c->w->readbuf;
    buf->len = sizeof c->w->readbuf;
}

static void
on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    net__conn *c = s->data;
    if (nread < 0) {
        conn_close(c); /* EOF or error; an outstanding request is detached */
        return;
    }
    if (nread == 0 || c->lingering) {
        return;
    }
    if (c->ssl != NULL) {
        tls_input(c, buf->base, (size_t) nread);
    } else {
        conn_input(c, buf->base, (size_t) nread);
    }
    if (!c->closing) {
        conn_update_timer(c);
    }
}

/* ---- timers ---- */

static void
on_timer(uv_timer_t *t)
{
    net__conn *c = t->data;
    switch (c->timer_mode) {
    case TM_HEADER:
    case TM_BODY:
        if (c->ssl != NULL && !c->hs_done) {
            conn_close(c);
        } else if (c->ps.phase == NET__PHASE_IDLE && c->served == 0 && c->in_len == 0) {
            conn_close(c); /* nothing sent at all: just close */
        } else {
            c->timer_mode = TM_NONE;
            conn_fail(c, 408);
        }
        break;
    case TM_IDLE:
    case TM_LINGER:
    default:
        conn_close(c);
        break;
    }
}

static void
conn_update_timer(net__conn *c)
{
    if (c->closing) {
        return;
    }
    const net_server_opts *o = &c->w->srv->o;
    tmode m;
    uint64_t ms = 0;
    if (c->lingering) {
        m = TM_LINGER;
        ms = NET__LINGER_MS;
    } else if (c->req != NULL || c->close_after) {
        m = TM_NONE;
    } else if ((c->ssl != NULL && !c->hs_done) || c->ps.phase == NET__PHASE_HEAD ||
               (c->ps.phase == NET__PHASE_IDLE && c->served == 0)) {
        m = TM_HEADER;
        ms = o->header_timeout_ms;
    } else if (c->ps.phase == NET__PHASE_BODY) {
        m = TM_BODY;
        ms = o->body_timeout_ms;
    } else {
        m = TM_IDLE;
        ms = o->idle_timeout_ms;
    }
    if (m == c->timer_mode) {
        return;
    }
    c->timer_mode = m;
    if (m == TM_NONE) {
        uv_timer_stop(&c->timer);
    } else {
        uv_timer_start(&c->timer, on_timer, ms, 0);
    }
}

/* ---- completion ---- */

/* worker_complete runs on the loop thread for every responded request. */
static void
worker_complete(net_request *req)
{
    net__worker *w = req->worker;
    net__conn *c = req->conn;
    w->outstanding--;
    if (c == NULL) {
        net__request_free(req);
        worker_check_done(w);
        return;
    }
    req->conn = NULL;
    c->req = NULL;
    c->served++;
    if (req->resp == NULL) {
        net__request_free(req);
        c->close_after = false; /* let conn_fail answer */
        conn_fail(c, 500);
        return;
    }
    if (req->resp_close || !req->keep_alive || w->stopping) {
        c->close_after = true;
    }
    conn_send(c, req->resp, req->resp_len, req);
    conn_pump(c);
}

int
net_request_respond(net_request *req, int status, const char *content_type, const void *body,
                    size_t body_len)
{
    net__worker *w = req->worker;
    bool close = !req->keep_alive ||
                 atomic_load_explicit(&w->srv->stop_requested, memory_order_relaxed) != 0;
    int rc = DBAO_EINVAL;
    if (status >= 200 && status <= 599 && (body != NULL || body_len == 0)) {
        rc = net__response_build(req, status, content_type, body, body_len, close,
                                 req->method == HTTP_HEAD);
    }
    if (rc != 0) {
        dbao_free(req->resp);
        req->resp = NULL;
    }
    if (pthread_equal(pthread_self(), w->loop_tid)) {
        worker_complete(req);
        return rc;
    }
    req->next = NULL;
    pthread_mutex_lock(&w->mu);
    if (w->done_tail != NULL) {
        w->done_tail->next = req;
    } else {
        w->done_head = req;
    }
    w->done_tail = req;
    /* Under mu: the worker cannot close the async handle meanwhile (worker_check_done). */
    if (!w->async_closed) {
        uv_async_send(&w->async);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* ---- accepting ---- */

static void
on_reject_close(uv_handle_t *h)
{
    dbao_free(h);
}

static void
on_connection(uv_stream_t *server, int status)
{
    net__worker *w = server->data;
    if (status < 0) {
        return;
    }
    if (w->stopping || w->num_conns >= w->max_conns) {
        uv_tcp_t *t = dbao_malloc(sizeof *t);
        if (t == NULL) {
            return;
        }
        uv_tcp_init(&w->loop, t);
        (void) uv_accept(server, (uv_stream_t *) t);
        uv_close((uv_handle_t *) t, on_reject_close);
        return;
    }
    net__conn *c = dbao_calloc(1, sizeof *c);
    if (c == NULL) {
        return; /* stays in the backlog; retried on the next accept */
    }
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    net__parser_init(&c->ps, &w->srv->lim);
    c->next = w->conns;
    if (w->conns != NULL) {
        w->conns->prev = c;
    }
    w->conns = c;
    w->num_conns++;
    if (uv_accept(server, (uv_stream_t *) &c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *) &ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *) &ss;
            uv_ip4_name(sin, c->peer.addr, sizeof c->peer.addr);
            c->peer.port = ntohs(sin->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;
            uv_ip6_name(sin6, c->peer.addr, sizeof c->peer.addr);
            c->peer.port = ntohs(sin6->sin6_port);
        }
    }
    if (w->srv->ssl_ctx != NULL) {
        c->ssl = SSL_new(w->srv->ssl_ctx);
        BIO *rb = BIO_new(BIO_s_mem());
        BIO *wb = BIO_new(BIO_s_mem());
        if (c->ssl == NULL || rb == NULL || wb == NULL) {
            BIO_free(rb);
            BIO_free(wb);
            ERR_clear_error();
            conn_close(c);
            return;
        }
        SSL_set_bio(c->ssl, rb, wb);
        SSL_set_accept_state(c->ssl);
        c->peer.tls = true;
    }
    if (uv_read_start((uv_stream_t *) &c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
    conn_update_timer(c);
}

/* ---- worker life ---- */

static void
on_drain_timeout(uv_timer_t *t)
{
    net__worker *w = t->data;
    while (w->conns != NULL) {
        conn_close(w->conns);
    }
}

static void
worker_begin_stop(net__worker *w)
{
    w->stopping = true;
    if (w->listener_ok) {
        uv_close((uv_handle_t *) &w->listener, NULL);
        w->listener_ok = false;
    }
    net__conn *c = w->conns;
    while (c != NULL) {
        net__conn *next = c->next;
        if (c->req == NULL && c->ps.phase == NET__PHASE_IDLE && c->in_len == 0) {
            if (c->writes == 0) {
                conn_close(c);
            } else {
                c->close_after = true;
            }
        }
        c = next;
    }
    uint32_t ms = w->srv->o.drain_timeout_ms;
    uv_timer_start(&w->drain, on_drain_timeout, ms, 0);
    worker_check_done(w);
}

static void
worker_check_done(net__worker *w)
{
    if (!w->stopping || w->finished || w->num_conns > 0 || w->outstanding > 0) {
        return;
    }
    w->finished = true;
    pthread_mutex_lock(&w->mu);
    w->async_closed = true;
    pthread_mutex_unlock(&w->mu);
    uv_close((uv_handle_t *) &w->async, NULL);
    uv_timer_stop(&w->drain);
    uv_close((uv_handle_t *) &w->drain, NULL);
    w->async_ok = w->drain_ok = false;
}

static void
on_async(uv_async_t *a)
{
    net__worker *w = a->data;
    pthread_mutex_lock(&w->mu);
    net_request *list = w->done_head;
    w->done_head = w->done_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (list != NULL) {
        net_request *next = list->next;
        list->next = NULL;
        worker_complete(list);
        list = next;
    }
    if (!w->stopping && atomic_load_explicit(&w->srv->stop_requested, memory_order_relaxed) != 0) {
        worker_begin_stop(w);
    }
}

static void *
worker_main(void *arg)
{
    net__worker *w = arg;
    w->loop_tid = pthread_self();
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* worker_teardown closes what worker_init opened on a worker whose loop is not running. */
static void
worker_teardown(net__worker *w)
{
    if (!w->loop_ok) {
        return;
    }
    if (w->listener_ok) {
        uv_close((uv_handle_t *) &w->listener, NULL);
    }
    if (w->async_ok) {
        uv_close((uv_handle_t *) &w->async, NULL);
    }
    if (w->drain_ok) {
        uv_close((uv_handle_t *) &w->drain, NULL);
    }
    w->listener_ok = w->async_ok = w->drain_ok = false;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    w->loop_ok = false;
    pthread_mutex_destroy(&w->mu);
}

static int
worker_init(net_server *srv, net__worker *w, const struct sockaddr *addr, dbao_err *err)
{
    int rc;
    w->srv = srv;
    if ((rc = uv_loop_init(&w->loop)) != 0) {
        return dbao_err_set(err, rc, "cannot create an event loop: %s", uv_strerror(rc));
    }
    pthread_mutex_init(&w->mu, NULL);
    w->loop_ok = true;
    uv_async_init(&w->loop, &w->async, on_async);
    w->async.data = w;
    w->async_ok = true;
    uv_timer_init(&w->loop, &w->drain);
    w->drain.data = w;
    w->drain_ok = true;
    if ((rc = uv_tcp_init_ex(&w->loop, &w->listener, addr->sa_family)) != 0) {
        return dbao_err_set(err, rc, "cannot create a socket: %s", uv_strerror(rc));
    }
    w->listener.data = w;
    w->listener_ok = true;
    if (srv->num_workers > 1) {
        uv_os_fd_t fd;
        int one = 1;
        if ((rc = uv_fileno((uv_handle_t *) &w->listener, &fd)) != 0) {
            return dbao_err_set(err, rc, "cannot get the listening socket: %s", uv_strerror(rc));
        }
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            rc = -errno;
            return dbao_err_set(err, rc, "cannot set SO_REUSEPORT: %s", strerror(-rc));
        }
    }
    if ((rc = uv_tcp_bind(&w->listener, addr, 0)) != 0) {
        return dbao_err_set(err, rc, "cannot bind %s:%u: %s", srv->host, srv->port,
                            uv_strerror(rc));
    }
    if ((rc = uv_listen((uv_stream_t *) &w->listener, srv->o.backlog, on_connection)) != 0) {
        return dbao_err_set(err, rc, "cannot listen on %s:%u: %s", srv->host, srv->port,
                            uv_strerror(rc));
    }
    return 0;
}

int
net_server_new(net_server **out, const net_server_opts *opts, dbao_err *err)
{
    *out = NULL;
    if (opts == NULL || opts->handler == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "a server needs a handler");
    }
    if ((opts->tls_cert == NULL) != (opts->tls_key == NULL)) {
        return dbao_err_set(err, DBAO_EINVAL, "TLS needs both a certificate and a key");
    }
    if (opts->tls_client_ca != NULL && opts->tls_cert == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "a client CA needs TLS (a certificate and key)");
    }
    if (opts->client_verify != NET_CLIENT_VERIFY_NONE && opts->tls_client_ca == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "client certificate verification needs a CA file");
    }
    if (opts->workers > NET__WORKERS_MAX) {
        return dbao_err_set(err, DBAO_EINVAL, "at most %d workers", NET__WORKERS_MAX);
    }
    signal(SIGPIPE, SIG_IGN);
    net_server *srv = dbao_calloc(1, sizeof *srv);
    if (srv == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    net_server_opts *o = &srv->o;
    *o = *opts;
    o->host = NULL; /* borrowed strings are not kept */
    o->tls_cert = o->tls_key = o->tls_client_ca = NULL;
    o->workers = o->workers ? o->workers : 1;
    o->header_max = o->header_max ? o->header_max : 16384;
    o->headers_num_max = o->headers_num_max ? o->headers_num_max : 100;
    o->body_max = o->body_max ? o->body_max : (size_t) 16 << 20;
    o->header_timeout_ms = o->header_timeout_ms ? o->header_timeout_ms : 10000;
    o->body_timeout_ms = o->body_timeout_ms ? o->body_timeout_ms : 60000;
    o->idle_timeout_ms = o->idle_timeout_ms ? o->idle_timeout_ms : 60000;
    o->drain_timeout_ms = o->drain_timeout_ms ? o->drain_timeout_ms : 10000;
    o->max_connections = o->max_connections ? o->max_connections : 10000;
    o->backlog = o->backlog > 0 ? o->backlog : 1024;
    if (opts->tls_client_ca != NULL && o->client_verify == NET_CLIENT_VERIFY_NONE) {
        o->client_verify = NET_CLIENT_VERIFY_OPTIONAL;
    }
    srv->lim.header_max = o->header_max;
    srv->lim.headers_num_max = o->headers_num_max;
    srv->lim.body_max = o->body_max;
    srv->num_workers = o->workers;
    const char *host = opts->host ? opts->host : "127.0.0.1";
    snprintf(srv->host, sizeof srv->host, "%s", host);
    int rc;
    if (opts->tls_cert != NULL) {
        net_server_opts t = *o;
        t.tls_cert = opts->tls_cert;
        t.tls_key = opts->tls_key;
        t.tls_client_ca = opts->tls_client_ca;
        if ((rc = net__tls_ctx_new(&srv->ssl_ctx, &t, err)) != 0) {
            dbao_free(srv);
            return rc;
        }
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (uv_ip4_addr(host, opts->port, (struct sockaddr_in *) &ss) != 0 &&
        uv_ip6_addr(host, opts->port, (struct sockaddr_in6 *) &ss) != 0) {
        SSL_CTX_free(srv->ssl_ctx);
        dbao_free(srv);
        return dbao_err_set(err, DBAO_EINVAL, "'%s' is not a numeric IPv4 or IPv6 address", host);
    }
    srv->workers = dbao_calloc(srv->num_workers, sizeof *srv->workers);
    if (srv->workers == NULL) {
        SSL_CTX_free(srv->ssl_ctx);
        dbao_free(srv);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    srv->port = opts->port;
    size_t per = (o->max_connections + srv->num_workers - 1) / srv->num_workers;
    rc = 0;
    for (unsigned i = 0; i < srv->num_workers && rc == 0; i++) {
        net__worker *w = &srv->workers[i];
        w->max_conns = per;
        rc = worker_init(srv, w, (const struct sockaddr *) &ss, err);
        if (rc == 0 && i == 0) {
            struct sockaddr_storage bound;
            int bl = sizeof bound;
            uv_tcp_getsockname(&w->listener, (struct sockaddr *) &bound, &bl);
            srv->port =
                ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *) &bound)->sin_port
                                                 : ((struct sockaddr_in6 *) &bound)->sin6_port);
            if (ss.ss_family == AF_INET) {
                ((struct sockaddr_in *) &ss)->sin_port = htons(srv->port);
            } else {
                ((struct sockaddr_in6 *) &ss)->sin6_port = htons(srv->port);
            }
        }
    }
    if (rc != 0) {
        for (unsigned i = 0; i < srv->num_workers; i++) {
            worker_teardown(&srv->workers[i]);
        }
        SSL_CTX_free(srv->ssl_ctx);
        dbao_free(srv->workers);
        dbao_free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}

uint16_t
net_server_port(const net_server *srv)
{
    return srv->port;
}

int
net_server_start(net_server *srv, dbao_err *err)
{
    for (unsigned i = 0; i < srv->num_workers; i++) {
        net__worker *w = &srv->workers[i];
        int rc = pthread_create(&w->thread, NULL, worker_main, w);
        if (rc != 0) {
            net_server_stop(srv);
            net_server_wait(srv);
            return dbao_err_set(err, -rc, "cannot start a worker thread: %s", strerror(rc));
        }
        w->started = true;
    }
    return 0;
}

void
net_server_stop(net_server *srv)
{
    atomic_store_explicit(&srv->stop_requested, 1, memory_order_relaxed);
    for (unsigned i = 0; i < srv->num_workers; i++) {
        net__worker *w = &srv->workers[i];
        /* The async handle lives until the worker has nothing left to do; a send to a worker
         * that already finished only writes to its loop's still-open wake-up descriptor. */
        if (w->started && !w->joined) {
            uv_async_send(&w->async);
        }
    }
}

void
net_server_wait(net_server *srv)
{
    for (unsigned i = 0; i < srv->num_workers; i++) {
        net__worker *w = &srv->workers[i];
        if (w->started && !w->joined) {
            pthread_join(w->thread, NULL);
            w->joined = true;
        }
    }
}

void
net_server_free(net_server *srv)
{
    if (srv == NULL) {
        return;
    }
    net_server_stop(srv);
    net_server_wait(srv);
    for (unsigned i = 0; i < srv->num_workers; i++) {
        worker_teardown(&srv->workers[i]);
    }
    SSL_CTX_free(srv->ssl_ctx);
    dbao_free(srv->workers);
    dbao_free(srv);
}
