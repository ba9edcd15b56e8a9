/* server.c: workers, listeners, connections, TLS records, timeouts, completion, streaming and
 * stop.
 *
 * Threads. Each worker owns one uv_loop, run by one thread; everything below happens on that
 * thread except three things: net_server_stop (any thread or a signal handler: an atomic flag
 * and uv_async_send, which is async-signal-safe), net_request_respond from a foreign thread
 * (non-stream servers only: the request goes onto the worker's completion list under
 * worker->mu, and uv_async_send wakes the loop), and the controlling thread's
 * new/start/wait/free.
 *
 * Connection state machine (loop thread only):
 *
 *   reading    bytes from the socket (through SSL_read for TLS) go to the parser, or to the
 *              connection's input buffer when the parser may not run now (a request is
 *              outstanding, a write is in flight, a streamed body is paused or not asked for
 *              yet). Past NET__INBUF_MAX buffered bytes the connection stops reading:
 *              back-pressure on pipelining clients and on paused bodies.
 *   outstanding  a request is with the handler; nothing more is parsed (except the body of a
 *              streamed request that the handler reads). An EOF or a reset from the client
 *              closes the connection and detaches the request (req->conn = NULL): its
 *              response, when it comes, is dropped. The request memory belongs to the handler
 *              until it responds, so nothing is freed under it.
 *   writing    the response goes out with uv_try_write (most of the time all of it) and
 *              uv_write for the rest; the next pipelined request is parsed only once the
 *              previous response is fully handed to the kernel.
 *   lingering  after a response with "Connection: close" (errors, HTTP/1.0, stop): TLS
 *              close_notify, shutdown(SHUT_WR), then read and discard until EOF or 2 s, so
 *              the client reads the response before any RST.
 *   closing    uv_close on the socket and the timer; the memory goes in the last close
 *              callback (libuv rule: handle memory is reusable only then).
 *
 * Streaming mode (opts.stream, the gateway). The parser hands out the head at once
 * (NET__PARSE_HEAD) and then body spans; a span is given to on_data straight from the read
 * buffer (no copy) when the handler reads the body and has not paused it, else the bytes wait
 * in the input buffer. Every body and drain callback runs from the parse loop or from the
 * worker's deferred queue (a uv_prepare handle, active only while the queue is not empty, runs
 * it just before the loop polls, so deferring costs no extra loop iteration; if work remains
 * after a pass, a no-op uv_idle handle makes that poll non-blocking; entries
 * are embedded in the request and the connection, so queueing never allocates), never from
 * inside the net_request_* / net_response_* call that caused it. A callback may end or abort
 * the request: `cb_depth` counts the request's callbacks on the stack and the request leaves
 * its connection (req_finish) only when the handler released it and no callback of it is on
 * the stack. A streamed request is finished when its response ended; if its body was not read
 * to the end by then, the connection closes after the response (the unread rest cannot be
 * told apart from a next request without reading it).
 *
 * Output. Streamed responses are corked: the head and small writes go into the connection's
 * staging buffer (obuf, reused), which is flushed by net_response_end, by a write that does
 * not fit, or from the deferred queue at the end of the loop iteration, so start + write + end
 * of a small response is one uv_try_write (one send syscall). A large write goes out with the
 * staged bytes in one writev. Whatever the kernel does not take is queued with uv_write (the
 * staging buffer is handed to the write, or the caller's bytes are copied). `queued` is the
 * bytes in uv_write requests not yet completed plus the staged bytes; TLS output is encrypted
 * at once into the memory BIO and moved to the socket at once, so nothing stays there.
 *
 * Request reuse: a finished request goes back to the connection's parser (net__parser_recycle)
 * and the next message is read into it with its buffers, so a keep-alive request allocates
 * nothing on the hot path (plain TCP, the response taken by the kernel at once).
 *
 * One uv_timer per connection enforces, by phase: the TLS handshake and a new connection's
 * first request head (header_timeout_ms), a request head from its first byte
 * (header_timeout_ms; slow-loris resistant: not re-armed per read), a body from the end of
 * the head (body_timeout_ms; for a streamed body the longest silence while it is read and not
 * paused), the keep-alive wait (idle_timeout_ms) and the lingering close. No timer runs while
 * the handler holds a request. The timer is lazy: a phase change only moves `deadline`; the
 * uv timer is restarted only when the new deadline is earlier than the armed one, and when it
 * fires early it re-arms for what remains. A keep-alive request therefore costs no timer heap
 * operation.
 *
 * Completion accounting: worker->outstanding counts requests handed to the handler and not
 * yet completed on the loop. A stopping worker ends (closes its async, drain and idle
 * handles, letting uv_run return once the caller's own handles are closed too) only when it
 * has no connection, nothing outstanding and no hold, so a foreign thread that responds late
 * always finds a live worker and async handle. The responding thread calls uv_async_send
 * while holding worker->mu, and the worker marks the handle closed under the same mutex, so
 * the two cannot cross.
 *
 * Listeners: one socket per worker, all bound to the same address with SO_REUSEPORT (set on
 * the fd from uv_tcp_init_ex + uv_fileno before uv_tcp_bind, as libuv 1.44 has no flag for
 * it); with a single worker the option is not set, so no other process of the same user can
 * join the port group.
 *
 * ALPN (TLS): the server selects the first of its protocols (opts.alpn, default "http/1.1")
 * that the client offers; a client that offers ALPN without any of them gets a fatal
 * no_application_protocol alert (SSL_TLSEXT_ERR_ALERT_FATAL, OpenSSL's standard answer); a
 * client that offers no ALPN proceeds without it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <uv.h>

#include "internal.h"

#define NET__INBUF_MAX   (64 * 1024)
#define NET__READBUF     (64 * 1024)
#define NET__OBUF_MAX    (32 * 1024) /* staged output beyond which writes go out at once */
#define NET__LINGER_MS   2000
#define NET__WORKERS_MAX 64
#define NET__ALPN_MAX    256

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
    char *obuf; /* owned: staged output (streamed responses) */
    size_t ob_len, ob_cap;
    net_request *req; /* the outstanding request, or NULL */
    unsigned writes;  /* uv_write requests in flight */
    size_t wq_bytes;  /* bytes in them */
    int closes;       /* handles whose close callback is still to come */
    unsigned served;  /* responses sent */
    tmode timer_mode;
    uint64_t deadline;  /* loop time when the current phase times out; 0: none */
    uint64_t timer_due; /* loop time the uv timer fires; 0: not armed */
    bool reading;
    bool in_parse;    /* conn_consume is on the stack */
    bool close_after; /* close once the current writes are done */
    bool lingering;
    bool closing;
    net__pend pend; /* deferred: flush staged output, parse buffered input */
};

struct net__worker {
    net_server *srv;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_async_t async;
    uv_timer_t drain;
    uv_prepare_t prep;  /* runs the deferred queue; active only while it is not empty */
    uv_idle_t idle;     /* active while work remains after a pass: the poll must not block */
    pthread_t thread;   /* set by the controlling thread */
    pthread_t loop_tid; /* set by the worker itself before its loop runs */
    unsigned index;
    bool loop_ok, listener_ok, async_ok, drain_ok, idle_ok, prep_ok, started, joined;
    /* loop thread only */
    net__conn *conns;
    size_t num_conns;
    size_t max_conns;
    size_t outstanding;
    size_t holds;
    void *data; /* the caller's (net_worker_set_data) */
    net__pend *pend_head, *pend_tail;
    size_t pend_count;
    bool idle_active, prep_active;
    bool stopping;
    bool finished;
    char readbuf[NET__READBUF];
    char plainbuf[16384];
    char tlsout[NET__READBUF]; /* TLS records on their way to the socket (tls_flush) */
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
    char host[64];                     /* for messages */
    unsigned char alpn[NET__ALPN_MAX]; /* ALPN wire format: length-prefixed names */
    unsigned alpn_len;
    atomic_int stop_requested;
};

static void conn_close(net__conn *c);
static void conn_pump(net__conn *c);
static void conn_flush(net__conn *c);
static void conn_update_timer(net__conn *c);
static void worker_check_done(net__worker *w);
static void worker_complete(net_request *req);
static void req_finish(net_request *req);
static void on_prepare(uv_prepare_t *h);

/* ---- the deferred queue ---- */

static void
pend_add(net__worker *w, net__pend *p)
{
    if (p->queued || w->finished) {
        return;
    }
    p->queued = true;
    p->next = NULL;
    if (w->pend_tail != NULL) {
        w->pend_tail->next = p;
    } else {
        w->pend_head = p;
    }
    w->pend_tail = p;
    w->pend_count++;
    if (!w->prep_active) {
        uv_prepare_start(&w->prep, on_prepare);
        w->prep_active = true;
    }
}

static void
pend_remove(net__worker *w, net__pend *p)
{
    if (!p->queued) {
        return;
    }
    net__pend *prev = NULL, *it = w->pend_head;
    while (it != NULL && it != p) {
        prev = it;
        it = it->next;
    }
    if (it == p) {
        if (prev != NULL) {
            prev->next = p->next;
        } else {
            w->pend_head = p->next;
        }
        if (w->pend_tail == p) {
            w->pend_tail = prev;
        }
        w->pend_count--;
    }
    p->queued = false;
    p->next = NULL;
}

/* ---- writing ---- */

typedef struct wreq {
    uv_write_t w;
    net__conn *c;
    net_request *owner; /* recycled or freed when the write is done (may be NULL) */
    char *buf;          /* freed when the write is done (may be NULL) */
    size_t len;
} wreq;

/* req_dispose takes back a non-streamed request whose response was written. */
static void
req_dispose(net__conn *c, net_request *req)
{
    if (req == NULL) {
        return;
    }
    if (c != NULL && !c->closing) {
        net__parser_recycle(&c->ps, req);
    } else {
        net__request_free(req);
    }
}

static void
on_write(uv_write_t *w, int status)
{
    wreq *wr = (wreq *) w;
    net__conn *c = wr->c;
    c->writes--;
    c->wq_bytes -= wr->len;
    req_dispose(c, wr->owner);
    dbao_free(wr->buf);
    dbao_free(wr);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->req != NULL && c->req->drain_fn != NULL) {
        pend_add(c->w, &c->req->pend);
    }
    if (c->writes == 0) {
        conn_pump(c);
    }
}

/* raw_queue queues bytes with uv_write; `owner` and `buf` (which keep `data` alive) are
 * released once they are written. */
static void
raw_queue(net__conn *c, const char *data, size_t len, net_request *owner, char *buf)
{
    wreq *wr = dbao_malloc(sizeof *wr);
    if (wr == NULL) {
        req_dispose(NULL, owner);
        dbao_free(buf);
        conn_close(c);
        return;
    }
    wr->c = c;
    wr->owner = owner;
    wr->buf = buf;
    wr->len = len;
    uv_buf_t b = uv_buf_init((char *) data, (unsigned) len);
    if (uv_write(&wr->w, (uv_stream_t *) &c->tcp, &b, 1, on_write) != 0) {
        req_dispose(NULL, owner);
        dbao_free(buf);
        dbao_free(wr);
        conn_close(c);
        return;
    }
    c->writes++;
    c->wq_bytes += len;
}

/* raw_write writes bytes to the socket; `owner` and `buf` are released once written. */
static void
raw_write(net__conn *c, const char *data, size_t len, net_request *owner, char *buf)
{
    if (c->closing) {
        req_dispose(NULL, owner);
        dbao_free(buf);
        return;
    }
    if (c->writes == 0) {
        uv_buf_t b = uv_buf_init((char *) data, (unsigned) len);
        int n = uv_try_write((uv_stream_t *) &c->tcp, &b, 1);
        if (n >= 0 && (size_t) n == len) {
            req_dispose(c, owner);
            dbao_free(buf);
            return;
        }
        if (n < 0 && n != UV_EAGAIN) {
            req_dispose(NULL, owner);
            dbao_free(buf);
            conn_close(c);
            return;
        }
        if (n > 0) {
            data += n;
            len -= (size_t) n;
        }
    }
    raw_queue(c, data, len, owner, buf);
}

/* raw_write_copy writes transient bytes: what the kernel does not take at once is copied. */
static void
raw_write_copy(net__conn *c, const char *data, size_t len)
{
    if (c->closing || len == 0) {
        return;
    }
    if (c->writes == 0) {
        uv_buf_t b = uv_buf_init((char *) data, (unsigned) len);
        int n = uv_try_write((uv_stream_t *) &c->tcp, &b, 1);
        if (n >= 0 && (size_t) n == len) {
            return;
        }
        if (n < 0 && n != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (n > 0) {
            data += n;
            len -= (size_t) n;
        }
    }
    char *copy = dbao_malloc(len);
    if (copy == NULL) {
        conn_close(c);
        return;
    }
    memcpy(copy, data, len);
    raw_queue(c, copy, len, NULL, copy);
}

/* tls_flush sends whatever OpenSSL has written into the connection's write BIO, through the
 * worker's scratch buffer (copied again only if the kernel does not take it all). BIO_reset
 * would avoid the copy but clears the BIO's whole buffer each time. */
static void
tls_flush(net__conn *c)
{
    BIO *wbio = SSL_get_wbio(c->ssl);
    size_t pending = BIO_ctrl_pending(wbio);
    while (pending > 0 && !c->closing) {
        size_t want = pending < sizeof c->w->tlsout ? pending : sizeof c->w->tlsout;
        int n = BIO_read(wbio, c->w->tlsout, (int) want);
        if (n <= 0) {
            return;
        }
        raw_write_copy(c, c->w->tlsout, (size_t) n);
        pending -= (size_t) n;
    }
}

/* ssl_put encrypts bytes into the write BIO (not flushed). */
static void
ssl_put(net__conn *c, const char *data, size_t len)
{
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
}

/* conn_send sends response bytes (through TLS when on); `owner` is released afterwards. */
static void
conn_send(net__conn *c, const char *data, size_t len, net_request *owner)
{
    if (c->ob_len > 0) {
        conn_flush(c);
    }
    if (c->ssl == NULL) {
        raw_write(c, data, len, owner, NULL);
        return;
    }
    ssl_put(c, data, len);
    req_dispose(c, owner);
    tls_flush(c);
}

/* ob_put stages output bytes; the deferred queue flushes them if nothing else does first. */
static int
ob_put(net__conn *c, const char *data, size_t len)
{
    if (c->ob_len + len > c->ob_cap) {
        size_t nc = c->ob_cap ? c->ob_cap : 4096;
        while (nc < c->ob_len + len) {
            nc *= 2;
        }
        char *nb = dbao_realloc(c->obuf, nc);
        if (nb == NULL) {
            return DBAO_ENOMEM;
        }
        c->obuf = nb;
        c->ob_cap = nc;
    }
    memcpy(c->obuf + c->ob_len, data, len);
    c->ob_len += len;
    pend_add(c->w, &c->pend);
    return 0;
}

/* conn_flush writes the staged output. */
static void
conn_flush(net__conn *c)
{
    if (c->ob_len == 0 || c->closing) {
        return;
    }
    if (c->ssl != NULL) {
        size_t len = c->ob_len;
        c->ob_len = 0;
        ssl_put(c, c->obuf, len);
        tls_flush(c);
        return;
    }
    size_t off = 0;
    if (c->writes == 0) {
        uv_buf_t b = uv_buf_init(c->obuf, (unsigned) c->ob_len);
        int n = uv_try_write((uv_stream_t *) &c->tcp, &b, 1);
        if (n >= 0 && (size_t) n == c->ob_len) {
            c->ob_len = 0;
            return;
        }
        if (n < 0 && n != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        off = n > 0 ? (size_t) n : 0;
    }
    /* The staging buffer goes with the write; a new one is made for the next bytes. */
    char *buf = c->obuf;
    size_t len = c->ob_len;
    c->obuf = NULL;
    c->ob_len = c->ob_cap = 0;
    raw_queue(c, buf + off, len - off, NULL, buf);
}

/* conn_out writes transient body bytes after the staged ones: staged too if they fit, else
 * in one writev with the staged bytes. */
static int
conn_out(net__conn *c, const char *data, size_t len)
{
    if (c->ob_len + len <= NET__OBUF_MAX) {
        return ob_put(c, data, len);
    }
    if (c->ssl != NULL) {
        conn_flush(c);
        ssl_put(c, data, len);
        tls_flush(c);
        return 0;
    }
    if (c->writes > 0) {
        conn_flush(c);
        raw_write_copy(c, data, len);
        return 0;
    }
    uv_buf_t b[2] = {uv_buf_init(c->obuf, (unsigned) c->ob_len),
                     uv_buf_init((char *) data, (unsigned) len)};
    int n = c->ob_len > 0 ? uv_try_write((uv_stream_t *) &c->tcp, b, 2)
                          : uv_try_write((uv_stream_t *) &c->tcp, b + 1, 1);
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return 0;
    }
    size_t done = n > 0 ? (size_t) n : 0;
    if (done < c->ob_len) {
        char *buf = c->obuf;
        size_t blen = c->ob_len;
        c->obuf = NULL;
        c->ob_len = c->ob_cap = 0;
        raw_queue(c, buf + done, blen - done, NULL, buf);
        raw_write_copy(c, data, len);
        return 0;
    }
    done -= c->ob_len;
    c->ob_len = 0;
    raw_write_copy(c, data + done, len - done);
    return 0;
}

/* ---- closing ---- */

static void
conn_free(net__conn *c)
{
    net__worker *w = c->w;
    pend_remove(w, &c->pend);
    net__parser_cleanup(&c->ps);
    SSL_free(c->ssl);
    dbao_free(c->inbuf);
    dbao_free(c->obuf);
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
    net_request *req = c->req;
    if (req != NULL) {
        c->req->conn = NULL; /* the handler still owns it; its response will be dropped */
        c->req = NULL;
        if (req->stream && !req->released) {
            if (!req->body_complete && req->body_err == 0) {
                req->body_err = DBAO_EIO;
            }
            if (req->bstate == NET__B_READING && !req->body_done_cb) {
                pend_add(c->w, &req->pend); /* on_error (or a due on_end) from the loop */
            }
            if (req->drain_fn != NULL) {
                pend_add(c->w, &req->pend);
            }
        }
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

/* ---- streamed requests: callbacks ---- */

/* req_leave ends a stretch where the request's callbacks may run (cb_depth was raised).
 * Returns true if the caller may go on using the request (it was not released); when it was
 * released and no other callback of it is on the stack, it is finished here (and may be
 * freed or reused). */
static bool
req_leave(net_request *req)
{
    req->cb_depth--;
    if (!req->released) {
        return true;
    }
    if (req->cb_depth == 0 && !req->finished) {
        req_finish(req);
    }
    return false;
}

static int
body_err_of(int status)
{
    switch (status) {
    case 413:
        return DBAO_ERANGE;
    case 500:
        return DBAO_ENOMEM;
    default:
        return DBAO_EFORMAT;
    }
}

/* cb_end_or_error calls on_error (a pending error) or on_end, once. cb_depth is raised. */
static void
cb_end_or_error(net_request *req)
{
    req->body_done_cb = true;
    if (req->body_err != 0) {
        if (req->bcbs.on_error != NULL) {
            req->bcbs.on_error(req, req->body_err, req->barg);
        }
    } else if (req->bcbs.on_end != NULL) {
        req->bcbs.on_end(req, req->barg);
    }
}

static bool
req_feedable(const net_request *req)
{
    return req->stream && req->bstate == NET__B_READING && !req->paused && !req->body_complete &&
           req->body_err == 0 && !req->released;
}

static size_t
queued_of(const net_request *req)
{
    const net__conn *c = req->conn;
    return c != NULL ? c->wq_bytes + c->ob_len : 0;
}

/* req_run is a request's deferred work: body bytes buffered while it was paused or not read
 * yet, a due on_end / on_error, a due drain callback. */
static void
req_run(net_request *req)
{
    if (req->released || req->finished) {
        return;
    }
    req->cb_depth++;
    net__conn *c = req->conn;
    if (c != NULL && c->ob_len > 0) {
        conn_flush(c);
    }
    if (req->bstate == NET__B_READING && !req->paused && !req->body_done_cb) {
        c = req->conn;
        if (c != NULL && c->req == req && (c->in_len > 0 || c->ps.kick)) {
            conn_pump(c);
        }
        if (!req->released && !req->paused && !req->body_done_cb &&
            (req->body_err != 0 || req->body_complete)) {
            cb_end_or_error(req);
        }
    }
    if (!req->released && req->drain_fn != NULL && req->rstate == NET__R_STARTED &&
        queued_of(req) <= req->drain_low) {
        net_drain_fn fn = req->drain_fn;
        req->drain_fn = NULL;
        fn(req, req->drain_arg);
    }
    req_leave(req);
}

static void
conn_run(net__conn *c)
{
    if (c->closing) {
        return;
    }
    conn_flush(c);
    conn_pump(c);
}

static void
on_idle(uv_idle_t *h)
{
    (void) h; /* its being active is what matters: the loop polls without blocking */
}

static void
on_prepare(uv_prepare_t *h)
{
    net__worker *w = h->data;
    size_t n = w->pend_count;
    while (n-- > 0 && w->pend_head != NULL) {
        net__pend *p = w->pend_head;
        w->pend_head = p->next;
        if (w->pend_head == NULL) {
            w->pend_tail = NULL;
        }
        w->pend_count--;
        p->queued = false;
        p->next = NULL;
        if (p->is_conn) {
            conn_run((net__conn *) ((char *) p - offsetof(net__conn, pend)));
        } else {
            req_run((net_request *) ((char *) p - offsetof(net_request, pend)));
        }
    }
    if (w->pend_head == NULL) {
        uv_prepare_stop(&w->prep);
        w->prep_active = false;
        if (w->idle_active) {
            uv_idle_stop(&w->idle);
            w->idle_active = false;
        }
    } else if (!w->idle_active) {
        uv_idle_start(&w->idle, on_idle);
        w->idle_active = true;
    }
}

/* ---- reading and parsing ---- */

static void
conn_dispatch(net__conn *c, bool complete)
{
    net__worker *w = c->w;
    net_request *req = net__parser_take(&c->ps);
    req->peer = c->peer;
    req->worker = w;
    req->conn = c;
    c->req = req;
    w->outstanding++;
    if (!w->srv->o.stream) {
        conn_update_timer(c);
        w->srv->o.handler(req, w->srv->o.handler_arg);
        return;
    }
    req->stream = true;
    req->pend.is_conn = false;
    req->body_complete = complete;
    conn_update_timer(c);
    req->cb_depth++;
    w->srv->o.handler(req, w->srv->o.handler_arg);
    req_leave(req);
}

/* conn_consume parses from `data` while the connection may take a request or a streamed body;
 * returns the bytes used. The handler may respond synchronously, in which case parsing goes on
 * here. */
static size_t
conn_consume(net__conn *c, const char *data, size_t len)
{
    size_t off = 0;
    c->in_parse = true;
    while ((off < len || c->ps.kick) && !c->close_after && !c->closing) {
        net_request *req = c->req;
        if (req != NULL ? !req_feedable(req) : c->writes > 0) {
            break;
        }
        size_t used = 0;
        /* data is NULL when only a kick (resume) is pending */
        int r = net__parser_feed(&c->ps, data != NULL ? data + off : NULL, len - off, &used);
        off += used;
        if (c->ps.want_continue) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            c->ps.want_continue = false;
            conn_send(c, cont, sizeof cont - 1, NULL);
        }
        switch (r) {
        case NET__PARSE_MESSAGE:
            conn_dispatch(c, true);
            break;
        case NET__PARSE_HEAD:
            conn_dispatch(c, false);
            break;
        case NET__PARSE_BODY:
            req->cb_depth++;
            if (req->bcbs.on_data != NULL) {
                req->bcbs.on_data(req, (const uint8_t *) c->ps.span, c->ps.span_len, req->barg);
            }
            req_leave(req);
            break;
        case NET__PARSE_END:
            req->body_complete = true;
            conn_update_timer(c);
            req->cb_depth++;
            cb_end_or_error(req);
            req_leave(req);
            break;
        case NET__PARSE_ERROR:
            if (req != NULL) {
                /* a streamed body went wrong: the handler answers, then the connection closes */
                req->body_err = body_err_of(c->ps.error_status);
                c->close_after = true;
                conn_update_timer(c);
                req->cb_depth++;
                cb_end_or_error(req);
                req_leave(req);
                c->in_parse = false;
                return len;
            }
            c->in_parse = false;
            conn_fail(c, c->ps.error_status);
            return len;
        default:
            break;
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
    if (!c->close_after && (c->in_len > 0 || c->ps.kick) &&
        (c->req != NULL ? req_feedable(c->req) : c->writes == 0)) {
        size_t used = conn_consume(c, c->inbuf, c->in_len);
        if (c->closing) {
            return;
        }
        if (used >= c->in_len || (c->close_after && c->req == NULL)) {
            c->in_len = 0;
        } else if (used > 0) {
            memmove(c->inbuf, c->inbuf + used, c->in_len - used);
            c->in_len -= used;
        }
    }
    if (c->closing) {
        return;
    }
    if (c->close_after) {
        if (c->req == NULL) {
            conn_flush(c);
            if (!c->closing && c->writes == 0) {
                conn_linger(c);
            }
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

static void timer_arm(net__conn *c, uint64_t deadline);

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
        if (c->timer_mode == TM_BODY) {
            /* a streamed body: the timeout is the longest silence */
            timer_arm(c, uv_now(&c->w->loop) + c->w->srv->o.body_timeout_ms);
        }
    }
}

/* ---- timers ---- */

static void
on_timer(uv_timer_t *t)
{
    net__conn *c = t->data;
    c->timer_due = 0;
    if (c->deadline == 0) {
        return;
    }
    uint64_t now = uv_now(&c->w->loop);
    if (now < c->deadline) {
        uv_timer_start(&c->timer, on_timer, c->deadline - now, 0);
        c->timer_due = c->deadline;
        return;
    }
    c->deadline = 0;
    switch (c->timer_mode) {
    case TM_HEADER:
    case TM_BODY:
        if (c->req != NULL) {
            /* a streamed body went silent: the handler hears it and still answers */
            net_request *req = c->req;
            req->body_err = -ETIMEDOUT;
            c->close_after = true;
            c->timer_mode = TM_NONE;
            pend_add(c->w, &req->pend);
        } else if (c->ssl != NULL && !c->hs_done) {
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

/* timer_arm sets the deadline (loop time; 0: none) and starts the uv timer only if it would
 * fire later than that. */
static void
timer_arm(net__conn *c, uint64_t deadline)
{
    c->deadline = deadline;
    if (deadline == 0 || (c->timer_due != 0 && c->timer_due <= deadline)) {
        return;
    }
    uint64_t now = uv_now(&c->w->loop);
    uv_timer_start(&c->timer, on_timer, deadline > now ? deadline - now : 0, 0);
    c->timer_due = deadline;
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
    } else if (c->req != NULL) {
        if (req_feedable(c->req)) {
            m = TM_BODY;
            ms = o->body_timeout_ms;
        } else {
            m = TM_NONE;
        }
    } else if (c->close_after) {
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
    timer_arm(c, m == TM_NONE ? 0 : uv_now(&c->w->loop) + ms);
}

/* ---- completion ---- */

/* worker_complete runs on the loop thread for every responded (non-streamed) request. */
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

/* req_finish takes a released streamed request off its connection (no callback of it is on
 * the stack). The next request is parsed from the deferred queue, not from inside the call
 * that ended this one (unless the parse loop is already running below us). */
static void
req_finish(net_request *req)
{
    net__worker *w = req->worker;
    net__conn *c = req->conn;
    req->finished = true;
    pend_remove(w, &req->pend);
    w->outstanding--;
    if (c == NULL) {
        net__request_free(req);
        worker_check_done(w);
        return;
    }
    req->conn = NULL;
    c->req = NULL;
    c->served++;
    if (!req->body_complete || req->r_close || !req->keep_alive || w->stopping) {
        c->close_after = true;
    }
    net__parser_recycle(&c->ps, req);
    if (!c->in_parse) {
        pend_add(w, &c->pend);
    }
    conn_update_timer(c);
}

int
net_request_respond(net_request *req, int status, const char *content_type, const void *body,
                    size_t body_len)
{
    net__worker *w = req->worker;
    if (req->stream) {
        if (req->released) {
            return DBAO_EINVAL;
        }
        int rc = DBAO_EINVAL;
        if (status >= 200 && status <= 599 && (body != NULL || body_len == 0) &&
            req->rstate == NET__R_NONE) {
            rc = net_response_start(req, status, content_type, (int64_t) body_len);
            if (rc == 0) {
                if (body_len > 0) {
                    (void) net_response_write(req, body, body_len);
                }
                (void) net_response_end(req);
                return 0;
            }
        }
        if (req->rstate == NET__R_NONE && req->conn != NULL && !req->conn->closing) {
            req->xhdr_len = 0;
            req->r_close = true;
            if (net_response_start(req, 500, NULL, 0) == 0) {
                req->r_close = true;
                (void) net_response_end(req);
                return rc;
            }
        }
        net_response_abort(req);
        return rc;
    }
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
        req->resp_cap = req->resp_len = 0;
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

/* ---- streaming ---- */

int64_t
net_request_content_length(const net_request *req)
{
    return req->content_length;
}

bool
net_request_expects_continue(const net_request *req)
{
    return req->expect_continue;
}

int
net_request_read_body(net_request *req, const net_body_cbs *cbs, void *arg)
{
    if (!req->stream || req->bstate != NET__B_NONE || req->released || cbs == NULL) {
        return DBAO_EINVAL;
    }
    req->bcbs = *cbs;
    req->barg = arg;
    req->bstate = NET__B_READING;
    net__conn *c = req->conn;
    if (c != NULL && !c->closing && req->expect_continue && req->http_minor == 1 &&
        !req->body_complete && req->body_err == 0 && req->rstate == NET__R_NONE) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (ob_put(c, cont, sizeof cont - 1) == 0) {
            conn_flush(c);
        }
    }
    pend_add(req->worker, &req->pend);
    if (c != NULL) {
        conn_update_timer(c);
    }
    return 0;
}

void
net_request_pause_body(net_request *req)
{
    if (!req->stream || req->paused) {
        return;
    }
    req->paused = true;
    if (req->conn != NULL) {
        conn_update_timer(req->conn);
    }
}

void
net_request_resume_body(net_request *req)
{
    if (!req->stream || !req->paused) {
        return;
    }
    req->paused = false;
    pend_add(req->worker, &req->pend);
    if (req->conn != NULL) {
        conn_update_timer(req->conn);
    }
}

int
net_response_start(net_request *req, int status, const char *content_type, int64_t content_length)
{
    if (!req->stream || req->released || req->rstate != NET__R_NONE || status < 200 ||
        status > 599 || content_length < NET_LEN_CHUNKED) {
        return DBAO_EINVAL;
    }
    size_t ct_len = 0;
    if (content_type != NULL && !net__content_type_ok(content_type, &ct_len)) {
        return DBAO_EINVAL;
    }
    net__conn *c = req->conn;
    bool nobody = req->method == HTTP_HEAD || status == 204 || status == 304;
    bool close = req->r_close || !req->keep_alive || req->worker->stopping ||
                 (c != NULL && c->close_after) ||
                 (!req->body_complete && req->bstate == NET__B_NONE);
    bool chunked = false;
    int64_t cl_hdr = content_length;
    if (status == 204) {
        cl_hdr = -1;
    } else if (content_length == NET_LEN_CHUNKED && !nobody) {
        if (req->http_minor == 1) {
            chunked = true;
        } else {
            close = true; /* HTTP/1.0: the body ends when the connection does */
        }
    }
    if (c != NULL && !c->closing) {
        static const char c_close[] = "Connection: close\r\n";
        static const char c_keep[] = "Connection: keep-alive\r\n";
        const char *conn = close ? c_close : (req->http_minor == 0 ? c_keep : "");
        size_t conn_len =
            close ? sizeof c_close - 1 : (req->http_minor == 0 ? sizeof c_keep - 1 : 0);
        size_t need = net__head_max(ct_len, req);
        if (c->ob_len + need > c->ob_cap) {
            size_t nc = c->ob_cap ? c->ob_cap : 4096;
            while (nc < c->ob_len + need) {
                nc *= 2;
            }
            char *nb = dbao_realloc(c->obuf, nc);
            if (nb == NULL) {
                return DBAO_ENOMEM;
            }
            c->obuf = nb;
            c->ob_cap = nc;
        }
        char *end = net__head_write(c->obuf + c->ob_len, req, status, content_type, ct_len, cl_hdr,
                                    chunked, conn, conn_len);
        c->ob_len = (size_t) (end - c->obuf);
        pend_add(c->w, &c->pend);
    }
    req->rstate = NET__R_STARTED;
    req->resp_status = status;
    req->r_nobody = nobody;
    req->r_chunked = chunked;
    req->r_close = close;
    req->r_len = content_length;
    req->r_sent = 0;
    return 0;
}

static bool
is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int
net_response_add_header_block(net_request *req, const char *block, size_t len)
{
    static const char *const reserved[] = {"content-length", "transfer-encoding", "connection",
                                           "date"};
    if (req->released || req->rstate != NET__R_NONE || (block == NULL && len > 0)) {
        return DBAO_EINVAL;
    }
    size_t i = 0;
    while (i < len) {
        size_t ns = i;
        while (i < len && is_tchar((unsigned char) block[i])) {
            i++;
        }
        size_t nl = i - ns;
        if (nl == 0 || i >= len || block[i] != ':') {
            return DBAO_EINVAL;
        }
        for (size_t k = 0; k < sizeof reserved / sizeof reserved[0]; k++) {
            if (strlen(reserved[k]) == nl && strncasecmp(block + ns, reserved[k], nl) == 0) {
                return DBAO_EINVAL;
            }
        }
        i++;
        while (i < len && block[i] != '\r') {
            unsigned char ch = (unsigned char) block[i];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
                return DBAO_EINVAL;
            }
            i++;
        }
        if (i + 1 >= len || block[i + 1] != '\n') {
            return DBAO_EINVAL;
        }
        i += 2;
    }
    return len > 0 ? net__xhdr_append(req, block, len) : 0;
}

int
net_response_write(net_request *req, const void *data, size_t len)
{
    if (!req->stream || req->released || req->rstate != NET__R_STARTED ||
        (data == NULL && len > 0)) {
        return DBAO_EINVAL;
    }
    if (!req->r_nobody && req->r_len >= 0 && len > (uint64_t) req->r_len - req->r_sent) {
        return DBAO_EINVAL;
    }
    net__conn *c = req->conn;
    if (c == NULL || c->closing) {
        return DBAO_EIO;
    }
    if (len == 0 || req->r_nobody) {
        return 0;
    }
    req->r_sent += len;
    int rc = 0;
    if (req->r_chunked) {
        static const char hex[] = "0123456789abcdef";
        char line[24];
        size_t n = 0;
        char tmp[20];
        size_t v = len;
        do {
            tmp[n++] = hex[v & 15];
            v >>= 4;
        } while (v != 0);
        size_t k = 0;
        while (n > 0) {
            line[k++] = tmp[--n];
        }
        line[k++] = '\r';
        line[k++] = '\n';
        rc = ob_put(c, line, k);
        if (rc == 0) {
            rc = conn_out(c, data, len);
        }
        if (rc == 0 && !c->closing) {
            rc = ob_put(c, "\r\n", 2);
        }
    } else {
        rc = conn_out(c, data, len);
    }
    if (rc != 0) {
        conn_close(c);
        return rc;
    }
    return c->closing ? DBAO_EIO : 0;
}

size_t
net_response_queued(const net_request *req)
{
    return queued_of(req);
}

void
net_response_on_drain(net_request *req, size_t low_watermark, net_drain_fn fn, void *arg)
{
    if (!req->stream || req->released || req->rstate != NET__R_STARTED) {
        return;
    }
    req->drain_fn = fn;
    req->drain_arg = arg;
    req->drain_low = low_watermark;
    if (fn != NULL) {
        pend_add(req->worker, &req->pend);
    }
}

int
net_response_end(net_request *req)
{
    if (!req->stream || req->released || req->rstate != NET__R_STARTED) {
        return DBAO_EINVAL;
    }
    req->rstate = NET__R_ENDED;
    req->drain_fn = NULL;
    net__conn *c = req->conn;
    int rc = 0;
    if (c == NULL || c->closing) {
        rc = DBAO_EIO;
    } else {
        if (req->r_chunked) {
            if (ob_put(c, "0\r\n\r\n", 5) != 0) {
                conn_close(c);
                rc = DBAO_EIO;
            }
        } else if (!req->r_nobody && req->r_len >= 0 && req->r_sent < (uint64_t) req->r_len) {
            req->r_close = true; /* short: the client must see the connection end */
        }
        if (rc == 0) {
            conn_flush(c);
            if (c->closing) {
                rc = DBAO_EIO;
            }
        }
    }
    req->released = true;
    if (req->cb_depth == 0) {
        req_finish(req);
    }
    return rc;
}

void
net_response_abort(net_request *req)
{
    if (!req->stream || req->released) {
        return;
    }
    req->rstate = NET__R_ENDED;
    req->drain_fn = NULL;
    req->released = true;
    if (req->conn != NULL) {
        conn_close(req->conn); /* detaches the request */
    }
    if (req->cb_depth == 0) {
        req_finish(req);
    }
}

/* ---- workers ---- */

net_worker *
net_request_worker(const net_request *req)
{
    return req->worker;
}

unsigned
net_worker_index(const net_worker *w)
{
    return w->index;
}

struct uv_loop_s *
net_worker_loop(net_worker *w)
{
    return &w->loop;
}

void
net_worker_set_data(net_worker *w, void *data)
{
    w->data = data;
}

void *
net_worker_data(const net_worker *w)
{
    return w->data;
}

void
net_worker_hold(net_worker *w)
{
    w->holds++;
}

void
net_worker_release(net_worker *w)
{
    if (w->holds > 0) {
        w->holds--;
    }
    worker_check_done(w);
}

bool
net_worker_stopping(const net_worker *w)
{
    return w->stopping;
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
    c->ps.stream = w->srv->o.stream;
    c->pend.is_conn = true;
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
    if (w->srv->o.worker_stop != NULL) {
        w->srv->o.worker_stop(w, w->srv->o.worker_arg);
    }
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
    if (!w->stopping || w->finished || w->num_conns > 0 || w->outstanding > 0 || w->holds > 0) {
        return;
    }
    w->finished = true;
    pthread_mutex_lock(&w->mu);
    w->async_closed = true;
    pthread_mutex_unlock(&w->mu);
    uv_close((uv_handle_t *) &w->async, NULL);
    uv_timer_stop(&w->drain);
    uv_close((uv_handle_t *) &w->drain, NULL);
    uv_idle_stop(&w->idle);
    uv_close((uv_handle_t *) &w->idle, NULL);
    uv_prepare_stop(&w->prep);
    uv_close((uv_handle_t *) &w->prep, NULL);
    w->idle_active = w->prep_active = false;
    w->async_ok = w->drain_ok = w->idle_ok = w->prep_ok = false;
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
    if (w->srv->o.worker_start != NULL) {
        w->srv->o.worker_start(w, w->srv->o.worker_arg);
    }
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
    if (w->idle_ok) {
        uv_close((uv_handle_t *) &w->idle, NULL);
    }
    if (w->prep_ok) {
        uv_close((uv_handle_t *) &w->prep, NULL);
    }
    w->listener_ok = w->async_ok = w->drain_ok = w->idle_ok = w->prep_ok = false;
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
    uv_idle_init(&w->loop, &w->idle);
    w->idle.data = w;
    w->idle_ok = true;
    uv_prepare_init(&w->loop, &w->prep);
    w->prep.data = w;
    w->prep_ok = true;
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

/* alpn_select picks the first of the server's protocols that the client offers. */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *out_len, const unsigned char *in,
            unsigned in_len, void *arg)
{
    (void) ssl;
    net_server *srv = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, out_len, srv->alpn, srv->alpn_len, in, in_len) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
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
    o->alpn = NULL;
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
        static const char *const alpn_default[] = {"http/1.1", NULL};
        const char *const *alpn = opts->alpn != NULL ? opts->alpn : alpn_default;
        for (size_t i = 0; alpn[i] != NULL; i++) {
            size_t l = strlen(alpn[i]);
            if (l == 0 || l > 255 || srv->alpn_len + 1 + l > sizeof srv->alpn) {
                dbao_free(srv);
                return dbao_err_set(err, DBAO_EINVAL, "bad ALPN protocol list");
            }
            srv->alpn[srv->alpn_len++] = (unsigned char) l;
            memcpy(srv->alpn + srv->alpn_len, alpn[i], l);
            srv->alpn_len += (unsigned) l;
        }
        if (srv->alpn_len == 0) {
            dbao_free(srv);
            return dbao_err_set(err, DBAO_EINVAL, "empty ALPN protocol list");
        }
        net_server_opts t = *o;
        t.tls_cert = opts->tls_cert;
        t.tls_key = opts->tls_key;
        t.tls_client_ca = opts->tls_client_ca;
        if ((rc = net__tls_ctx_new(&srv->ssl_ctx, &t, err)) != 0) {
            dbao_free(srv);
            return rc;
        }
        SSL_CTX_set_alpn_select_cb(srv->ssl_ctx, alpn_select, srv);
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
        w->index = i;
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
