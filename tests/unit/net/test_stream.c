/* test_stream.c: the net server's streaming mode (the gateway's side), worker hooks and ALPN,
 * end to end over loopback sockets.
 *
 * Each test starts a server with opts.stream on 127.0.0.1 with an ephemeral port and talks to
 * it with blocking sockets (OpenSSL for the TLS case). The handler picks its behaviour by
 * path: /echo reads the body and answers its length and checksum, /pause pauses the body after
 * each chunk and resumes from a timer, /late calls net_request_read_body from a timer, /auth
 * answers 401 from the head, /chunked, /cl, /head8, /304, /204, /abort, /short stream
 * responses, /big streams 32 MiB under back-pressure, /slow answers from a timer, /hold takes
 * a worker hold released by a timer. Everything the handler does runs on the worker's loop
 * thread; results go to the test through atomics.
 *
 * The checksum is order-sensitive (h = h * 31 + byte), so a reordered or missing byte shows.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <uv.h>

#include "dengbao/net.h"

/* ---- shared state ---- */

static atomic_int g_end_calls;    /* on_end calls */
static atomic_int g_data_calls;   /* on_data calls */
static atomic_int g_err;          /* last on_error code */
static atomic_int g_err_calls;    /* on_error calls */
static atomic_int g_pauses;       /* pauses made by /pause */
static atomic_int g_read_called;  /* /late called read_body */
static atomic_int g_auth_handled; /* /auth reached the handler */
static atomic_int g_drains;       /* drain callbacks for /big */
static atomic_size_t g_max_queued;
static atomic_int g_slow_done;  /* /slow answered */
static atomic_int g_fast_early; /* /fast reached the handler before /slow answered */

static uint32_t
cksum(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h = h * 31 + p[i];
    }
    return h;
}

static uint8_t
pat(uint64_t i)
{
    return (uint8_t) ((i * 7 + (i >> 16)) % 251);
}

typedef struct rctx {
    net_request *req;
    uint64_t n;
    uint32_t sum;
    uv_timer_t timer;
    bool timer_open;
    uint64_t sent; /* /big */
} rctx;

static void
free_on_close(uv_handle_t *h)
{
    free(h->data);
}

/* rctx_done frees the context (after its timer is closed, if one was opened).
 */
static void
rctx_done(rctx *x)
{
    if (x->timer_open) {
        x->timer.data = x;
        uv_close((uv_handle_t *) &x->timer, free_on_close);
    } else {
        free(x);
    }
}

static rctx *
rctx_new(net_request *req)
{
    rctx *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->req = req;
    return x;
}

/* ---- body callbacks ---- */

static void
echo_data(net_request *req, const uint8_t *d, size_t n, void *arg)
{
    (void) req;
    rctx *x = arg;
    atomic_fetch_add(&g_data_calls, 1);
    x->n += n;
    x->sum = cksum(x->sum, d, n);
}

static void
echo_end(net_request *req, void *arg)
{
    rctx *x = arg;
    atomic_fetch_add(&g_end_calls, 1);
    char out[128];
    int len = snprintf(out, sizeof out, "n=%llu sum=%u", (unsigned long long) x->n, x->sum);
    net_request_respond(req, 200, "text/plain", out, (size_t) len);
    rctx_done(x);
}

static void
echo_error(net_request *req, int err, void *arg)
{
    rctx *x = arg;
    atomic_store(&g_err, err);
    atomic_fetch_add(&g_err_calls, 1);
    net_request_respond(req, err == DBAO_ERANGE ? 413 : 400, "text/plain", "bad", 3);
    rctx_done(x);
}

static const net_body_cbs echo_cbs = {echo_data, echo_end, echo_error};

static void
resume_cb(uv_timer_t *t)
{
    rctx *x = t->data;
    net_request_resume_body(x->req);
}

static void
pause_data(net_request *req, const uint8_t *d, size_t n, void *arg)
{
    rctx *x = arg;
    echo_data(req, d, n, arg);
    /* pause after every chunk until 4 pauses were made; a timer resumes */
    if (atomic_load(&g_pauses) < 4) {
        atomic_fetch_add(&g_pauses, 1);
        net_request_pause_body(req);
        uv_timer_start(&x->timer, resume_cb, 20, 0);
    }
}

static const net_body_cbs pause_cbs = {pause_data, echo_end, echo_error};

static void
stall_data(net_request *req, const uint8_t *d, size_t n, void *arg)
{
    rctx *x = arg;
    echo_data(req, d, n, arg);
    /* one long pause (400 ms): the server must stop reading the socket meanwhile */
    if (x->sent == 0) {
        x->sent = 1;
        net_request_pause_body(req);
        uv_timer_start(&x->timer, resume_cb, 400, 0);
    }
}

static const net_body_cbs stall_cbs = {stall_data, echo_end, echo_error};

static void
late_cb(uv_timer_t *t)
{
    rctx *x = t->data;
    atomic_store(&g_read_called, 1);
    assert_int_equal(net_request_read_body(x->req, &echo_cbs, x), 0);
}

/* ---- streamed responses ---- */

static void big_fill(rctx *x);

static void
big_drain(net_request *req, void *arg)
{
    (void) req;
    atomic_fetch_add(&g_drains, 1);
    big_fill(arg);
}

#define BIG_TOTAL (32u << 20)
#define BIG_CHUNK (64u << 10)
#define BIG_WM    (256u << 10)

static void
big_fill(rctx *x)
{
    static __thread uint8_t chunk[BIG_CHUNK];
    while (x->sent < BIG_TOTAL) {
        size_t q = net_response_queued(x->req);
        if (q > BIG_WM) {
            net_response_on_drain(x->req, BIG_WM, big_drain, x);
            return;
        }
        for (size_t i = 0; i < BIG_CHUNK; i++) {
            chunk[i] = pat(x->sent + i);
        }
        int rc = net_response_write(x->req, chunk, BIG_CHUNK);
        if (rc != 0) {
            net_response_abort(x->req);
            rctx_done(x);
            return;
        }
        x->sent += BIG_CHUNK;
        q = net_response_queued(x->req);
        size_t m = atomic_load(&g_max_queued);
        while (q > m && !atomic_compare_exchange_weak(&g_max_queued, &m, q)) {
        }
    }
    net_response_end(x->req);
    rctx_done(x);
}

static void
slow_cb(uv_timer_t *t)
{
    rctx *x = t->data;
    atomic_store(&g_slow_done, 1);
    net_request_respond(x->req, 200, "text/plain", "slow", 4);
    rctx_done(x);
}

/* ---- worker hooks ---- */

typedef struct wstate {
    uv_timer_t tick;
    pthread_t thread;
    unsigned index;
} wstate;

static atomic_int g_wstart, g_wstop, g_wbad;
static atomic_uint g_index_mask;

static void
tick_cb(uv_timer_t *t)
{
    (void) t;
}

static void
worker_start(net_worker *w, void *arg)
{
    (void) arg;
    wstate *ws = calloc(1, sizeof *ws);
    ws->thread = pthread_self();
    ws->index = net_worker_index(w);
    atomic_fetch_or(&g_index_mask, 1u << ws->index);
    uv_timer_init(net_worker_loop(w), &ws->tick);
    uv_timer_start(&ws->tick, tick_cb, 5, 5); /* repeating: keeps the loop busy */
    net_worker_set_data(w, ws);
    if (net_worker_stopping(w)) {
        atomic_fetch_add(&g_wbad, 1);
    }
    atomic_fetch_add(&g_wstart, 1);
}

static void
worker_stop(net_worker *w, void *arg)
{
    (void) arg;
    wstate *ws = net_worker_data(w);
    if (ws == NULL || !pthread_equal(ws->thread, pthread_self()) ||
        ws->index != net_worker_index(w) || !net_worker_stopping(w)) {
        atomic_fetch_add(&g_wbad, 1);
    }
    ws->tick.data = ws;
    uv_close((uv_handle_t *) &ws->tick, free_on_close);
    atomic_fetch_add(&g_wstop, 1);
}

static void
hold_release_cb(uv_timer_t *t)
{
    net_worker *w = t->data;
    net_worker_release(w);
    uv_close((uv_handle_t *) t, (uv_close_cb) free);
}

/* ---- the handler ---- */

static void
handler(net_request *req, void *arg)
{
    (void) arg;
    const char *path = net_request_path(req);
    uv_loop_t *loop = net_worker_loop(net_request_worker(req));
    if (strcmp(path, "/echo") == 0) {
        assert_int_equal(net_request_read_body(req, &echo_cbs, rctx_new(req)), 0);
        /* a second call is refused */
        assert_int_equal(net_request_read_body(req, &echo_cbs, NULL), DBAO_EINVAL);
    } else if (strcmp(path, "/pause") == 0) {
        rctx *x = rctx_new(req);
        uv_timer_init(loop, &x->timer);
        x->timer.data = x;
        x->timer_open = true;
        net_request_read_body(req, &pause_cbs, x);
    } else if (strcmp(path, "/stall") == 0) {
        rctx *x = rctx_new(req);
        uv_timer_init(loop, &x->timer);
        x->timer.data = x;
        x->timer_open = true;
        net_request_read_body(req, &stall_cbs, x);
    } else if (strcmp(path, "/late") == 0) {
        rctx *x = rctx_new(req);
        uv_timer_init(loop, &x->timer);
        x->timer.data = x;
        x->timer_open = true;
        uv_timer_start(&x->timer, late_cb, 150, 0);
    } else if (strcmp(path, "/auth") == 0) {
        atomic_store(&g_auth_handled, 1);
        assert_true(net_request_expects_continue(req));
        assert_int_equal(net_request_content_length(req), 5);
        net_request_add_header(req, "WWW-Authenticate", "Bearer");
        net_request_respond(req, 401, "text/plain", "no", 2);
    } else if (strcmp(path, "/chunked") == 0) {
        assert_int_equal(net_request_add_header(req, "X-A", "1"), 0);
        assert_int_equal(net_response_add_header_block(req, "X-B: 2\r\nX-C: 3\r\n", 16), 0);
        assert_int_equal(net_response_add_header_block(req, "Content-Length: 2\r\n", 19),
                         DBAO_EINVAL);
        assert_int_equal(net_response_add_header_block(req, "X-D: a\nb\r\n", 10), DBAO_EINVAL);
        assert_int_equal(net_response_start(req, 200, "text/plain", NET_LEN_CHUNKED), 0);
        assert_int_equal(net_response_start(req, 200, "text/plain", 5), DBAO_EINVAL);
        assert_int_equal(net_request_add_header(req, "X-Late", "1"), DBAO_EINVAL);
        assert_int_equal(net_response_write(req, "hello ", 6), 0);
        assert_int_equal(net_response_write(req, "world", 5), 0);
        assert_int_equal(net_response_end(req), 0);
    } else if (strcmp(path, "/cl") == 0) {
        assert_int_equal(net_response_start(req, 200, NULL, 10), 0);
        assert_int_equal(net_response_write(req, "01234", 5), 0);
        assert_int_equal(net_response_write(req, "567890", 6), DBAO_EINVAL);
        assert_int_equal(net_response_write(req, "56789", 5), 0);
        assert_int_equal(net_response_end(req), 0);
    } else if (strcmp(path, "/head8") == 0) {
        assert_int_equal(net_response_start(req, 200, "text/plain", 8), 0);
        assert_int_equal(net_response_write(req, "12345678", 8), 0); /* dropped for HEAD */
        assert_int_equal(net_response_end(req), 0);
    } else if (strcmp(path, "/304") == 0) {
        assert_int_equal(net_response_start(req, 304, NULL, 42), 0);
        assert_int_equal(net_response_end(req), 0);
    } else if (strcmp(path, "/204") == 0) {
        assert_int_equal(net_response_start(req, 204, NULL, 5), 0);
        assert_int_equal(net_response_end(req), 0);
    } else if (strcmp(path, "/abort") == 0) {
        assert_int_equal(net_response_start(req, 200, NULL, NET_LEN_CHUNKED), 0);
        assert_int_equal(net_response_write(req, "partial", 7), 0);
        net_response_abort(req);
    } else if (strcmp(path, "/short") == 0) {
        assert_int_equal(net_response_start(req, 200, NULL, 100), 0);
        assert_int_equal(net_response_write(req, "abc", 3), 0);
        assert_int_equal(net_response_end(req), 0);
    } else if (strcmp(path, "/big") == 0) {
        assert_int_equal(net_response_start(req, 200, NULL, BIG_TOTAL), 0);
        big_fill(rctx_new(req));
    } else if (strcmp(path, "/slow") == 0) {
        rctx *x = rctx_new(req);
        uv_timer_init(loop, &x->timer);
        x->timer.data = x;
        x->timer_open = true;
        uv_timer_start(&x->timer, slow_cb, 80, 0);
    } else if (strcmp(path, "/fast") == 0) {
        if (!atomic_load(&g_slow_done)) {
            atomic_store(&g_fast_early, 1);
        }
        net_request_respond(req, 200, "text/plain", "fast", 4);
    } else if (strcmp(path, "/hold") == 0) {
        net_worker *w = net_request_worker(req);
        net_worker_hold(w);
        uv_timer_t *t = malloc(sizeof *t);
        uv_timer_init(loop, t);
        t->data = w;
        uv_timer_start(t, hold_release_cb, 300, 0);
        net_request_respond(req, 200, "text/plain", "held", 4);
    } else {
        net_request_respond(req, 404, "text/plain", "no", 2);
    }
}

/* ---- client helpers ---- */

static net_server *
start(net_server_opts *o)
{
    net_server *srv = NULL;
    dbao_err err;
    o->handler = handler;
    o->stream = true;
    if (net_server_new(&srv, o, &err) != 0) {
        fail_msg("net_server_new: %s", err.msg);
    }
    assert_int_equal(net_server_start(srv, &err), 0);
    return srv;
}

static void
reset_globals(void)
{
    atomic_store(&g_end_calls, 0);
    atomic_store(&g_data_calls, 0);
    atomic_store(&g_err, 0);
    atomic_store(&g_err_calls, 0);
    atomic_store(&g_pauses, 0);
    atomic_store(&g_read_called, 0);
    atomic_store(&g_auth_handled, 0);
    atomic_store(&g_drains, 0);
    atomic_store(&g_max_queued, 0);
    atomic_store(&g_slow_done, 0);
    atomic_store(&g_fast_early, 0);
}

static int
dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *) &sin, sizeof sin), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void
send_all(int fd, const void *p, size_t len)
{
    const char *s = p;
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return;
        }
        s += n;
        len -= (size_t) n;
    }
}

static void
send_str(int fd, const char *s)
{
    send_all(fd, s, strlen(s));
}

typedef struct rbuf {
    char b[1 << 16];
    size_t len;
} rbuf;

typedef struct resp {
    int status;
    char head[4096];
    char body[8192];
    size_t body_len;
} resp;

/* read_response reads one Content-Length framed response. Returns 0 or -1. */
static int
read_response(int fd, rbuf *rb, resp *r)
{
    for (;;) {
        char *end = memmem(rb->b, rb->len, "\r\n\r\n", 4);
        if (end != NULL) {
            size_t hl = (size_t) (end - rb->b) + 4;
            assert_true(hl < sizeof r->head);
            memcpy(r->head, rb->b, hl);
            r->head[hl] = '\0';
            r->status = atoi(r->head + 9);
            size_t cl = 0;
            char *p = strcasestr(r->head, "\r\ncontent-length:");
            if (p != NULL && r->status != 304 && r->status >= 200) {
                cl = (size_t) strtoul(p + 17, NULL, 10);
            }
            if (rb->len >= hl + cl) {
                assert_true(cl < sizeof r->body);
                memcpy(r->body, rb->b + hl, cl);
                r->body[cl] = '\0';
                r->body_len = cl;
                memmove(rb->b, rb->b + hl + cl, rb->len - hl - cl);
                rb->len -= hl + cl;
                return 0;
            }
        }
        if (rb->len == sizeof rb->b) {
            return -1;
        }
        ssize_t n = recv(fd, rb->b + rb->len, sizeof rb->b - rb->len, 0);
        if (n <= 0) {
            return -1;
        }
        rb->len += (size_t) n;
    }
}

/* read_all reads until EOF (or the timeout) into buf; returns the length. */
static size_t
read_all(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap - 1 && (n = recv(fd, buf + got, cap - 1 - got, 0)) > 0) {
        got += (size_t) n;
    }
    buf[got] = '\0';
    return got;
}

/* wait_for polls an atomic until it reaches `want` (up to 3 s). */
static bool
wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 300; i++) {
        if (atomic_load(v) >= want) {
            return true;
        }
        usleep(10000);
    }
    return false;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static char *
make_body(size_t n, uint32_t *sum)
{
    char *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        b[i] = (char) pat(i);
    }
    *sum = cksum(0, (const uint8_t *) b, n);
    return b;
}

/* ---- tests ---- */

static void
test_body_content_length(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0, .body_max = 4 << 20};
    net_server *srv = start(&o);
    int fd = dial(net_server_port(srv));
    size_t n = 1 << 20;
    uint32_t sum;
    char *body = make_body(n, &sum);
    char head[256];
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    send_str(fd, head);
    send_all(fd, body, n);
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_int_equal(r.status, 200);
    char want[128];
    snprintf(want, sizeof want, "n=%zu sum=%u", n, sum);
    assert_string_equal(r.body, want);
    assert_int_equal(atomic_load(&g_end_calls), 1);
    assert_true(atomic_load(&g_data_calls) >= 1);
    /* keep-alive: the next request on the same connection, without a body */
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "n=0 sum=0");
    assert_null(strcasestr(r.head, "connection: close"));
    assert_int_equal(atomic_load(&g_end_calls), 2);
    close(fd);
    free(rb);
    free(body);
    net_server_free(srv);
}

static void
test_body_chunked(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0, .body_max = 4 << 20};
    net_server *srv = start(&o);
    int fd = dial(net_server_port(srv));
    size_t n = 1 << 20;
    uint32_t sum;
    char *body = make_body(n, &sum);
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t off = 0, k = 0;
    while (off < n) {
        size_t c = 1000 + (k++ * 977) % 9000;
        if (c > n - off) {
            c = n - off;
        }
        char line[32];
        snprintf(line, sizeof line, "%zx\r\n", c);
        send_str(fd, line);
        send_all(fd, body + off, c);
        send_str(fd, "\r\n");
        off += c;
    }
    send_str(fd, "0\r\nX-Trailer: yes\r\n\r\n");
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    char want[128];
    snprintf(want, sizeof want, "n=%zu sum=%u", n, sum);
    assert_string_equal(r.body, want);
    assert_int_equal(atomic_load(&g_end_calls), 1);
    /* pipelined after a chunked body */
    send_str(fd, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "fast");
    close(fd);
    free(rb);
    free(body);
    net_server_free(srv);
}

static void
test_pause_resume(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0, .body_max = 4 << 20};
    net_server *srv = start(&o);
    int fd = dial(net_server_port(srv));
    size_t n = 1 << 20;
    uint32_t sum;
    char *body = make_body(n, &sum);
    char head[256];
    snprintf(head, sizeof head, "POST /pause HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             n);
    send_str(fd, head);
    send_all(fd, body, n);
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    char want[128];
    snprintf(want, sizeof want, "n=%zu sum=%u", n, sum);
    assert_string_equal(r.body, want);
    /* paused bytes wait in the input buffer and come as one span after the resume */
    assert_int_equal(atomic_load(&g_pauses), 4);
    assert_true(atomic_load(&g_data_calls) > atomic_load(&g_pauses));
    assert_int_equal(atomic_load(&g_end_calls), 1);
    close(fd);
    free(rb);
    free(body);
    net_server_free(srv);
}

static void
test_pause_stops_reading(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0, .body_max = 64 << 20};
    net_server *srv = start(&o);
    int fd = dial(net_server_port(srv));
    size_t n = 48 << 20;
    uint32_t sum;
    char *body = make_body(n, &sum);
    char head[256];
    snprintf(head, sizeof head, "POST /stall HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
             n);
    send_str(fd, head);
    /* while the body is paused, the client can fill the socket buffers and the server's
     * 64 KiB input buffer, not more: far from the whole body */
    struct timeval tv = {0, 20000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t sent = 0;
    double t0 = now_s();
    while (sent < n && now_s() - t0 < 0.25) {
        ssize_t k = send(fd, body + sent, n - sent < 65536 ? n - sent : 65536, MSG_NOSIGNAL);
        if (k > 0) {
            sent += (size_t) k;
        }
    }
    assert_true(sent < (size_t) 24 << 20);
    tv.tv_usec = 0;
    tv.tv_sec = 5;
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    send_all(fd, body + sent, n - sent);
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    char want[128];
    snprintf(want, sizeof want, "n=%zu sum=%u", n, sum);
    assert_string_equal(r.body, want);
    close(fd);
    free(rb);
    free(body);
    net_server_free(srv);
}

static void
test_expect_continue(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0};
    net_server *srv = start(&o);
    int fd = dial(net_server_port(srv));
    send_str(fd, "POST /late HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 "Content-Length: 5\r\n\r\n");
    /* nothing before the handler asks for the body (150 ms later) */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 80), 0);
    char buf[256];
    ssize_t got = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(got > 0);
    buf[got] = '\0';
    assert_int_equal(atomic_load(&g_read_called), 1);
    assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    send_str(fd, "hello");
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    char want[64];
    snprintf(want, sizeof want, "n=5 sum=%u", cksum(0, (const uint8_t *) "hello", 5));
    assert_string_equal(r.body, want);
    close(fd);
    /* refused from its head: no 100, the body is not read, the connection closes
     */
    fd = dial(net_server_port(srv));
    send_str(fd, "POST /auth HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 "Content-Length: 5\r\n\r\n");
    char all[4096];
    read_all(fd, all, sizeof all);
    assert_int_equal(atomic_load(&g_auth_handled), 1);
    assert_null(strstr(all, "100 Continue"));
    assert_true(strncmp(all, "HTTP/1.1 401 ", 13) == 0);
    assert_non_null(strcasestr(all, "connection: close"));
    assert_non_null(strstr(all, "WWW-Authenticate: Bearer\r\n"));
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_body_errors(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0, .body_max = 1000};
    net_server *srv = start(&o);
    /* chunked past body_max */
    int fd = dial(net_server_port(srv));
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[600];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 2; i++) {
        send_str(fd, "258\r\n");
        send_all(fd, chunk, sizeof chunk);
        send_str(fd, "\r\n");
    }
    char all[4096];
    read_all(fd, all, sizeof all);
    assert_true(strncmp(all, "HTTP/1.1 413 ", 13) == 0);
    assert_non_null(strcasestr(all, "connection: close"));
    assert_int_equal(atomic_load(&g_err), DBAO_ERANGE);
    assert_int_equal(atomic_load(&g_end_calls), 0);
    close(fd);
    /* the client goes away mid-body */
    atomic_store(&g_err, 0);
    fd = dial(net_server_port(srv));
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 900\r\n\r\n");
    send_all(fd, chunk, 100);
    usleep(50000);
    close(fd);
    assert_true(wait_for(&g_err_calls, 2));
    assert_int_equal(atomic_load(&g_err), DBAO_EIO);
    assert_int_equal(atomic_load(&g_end_calls), 0);
    net_server_free(srv);
    /* a body that goes silent: -ETIMEDOUT */
    net_server_opts o2 = {.port = 0, .body_timeout_ms = 200};
    srv = start(&o2);
    fd = dial(net_server_port(srv));
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 900\r\n\r\n");
    send_all(fd, chunk, 100);
    read_all(fd, all, sizeof all);
    assert_int_equal(atomic_load(&g_err), -ETIMEDOUT);
    assert_true(strncmp(all, "HTTP/1.1 400 ", 13) == 0);
    close(fd);
    net_server_free(srv);
}

/* dechunk parses a chunked body at `p`; returns the decoded length, or -1 if
 * the framing is incomplete or wrong. */
static long
dechunk(const char *p, size_t len, char *out, size_t cap)
{
    size_t off = 0, n = 0;
    for (;;) {
        char *eol = memmem(p + off, len - off, "\r\n", 2);
        if (eol == NULL) {
            return -1;
        }
        size_t sz = strtoul(p + off, NULL, 16);
        off = (size_t) (eol - p) + 2;
        if (sz == 0) {
            return (off + 2 == len && memcmp(p + off, "\r\n", 2) == 0) ? (long) n : -1;
        }
        if (off + sz + 2 > len || n + sz > cap || memcmp(p + off + sz, "\r\n", 2) != 0) {
            return -1;
        }
        memcpy(out + n, p + off, sz);
        n += sz;
        off += sz + 2;
    }
}

static void
get_all(uint16_t port, const char *req, char *all, size_t cap)
{
    int fd = dial(port);
    send_str(fd, req);
    read_all(fd, all, cap);
    close(fd);
}

static void
test_stream_responses(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0};
    net_server *srv = start(&o);
    uint16_t port = net_server_port(srv);
    char all[8192], dec[256];
    /* chunked to HTTP/1.1 */
    get_all(port, "GET /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", all, sizeof all);
    assert_true(strncmp(all, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(all, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(all, "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\n"));
    assert_null(strstr(all, "X-Late"));
    assert_null(strcasestr(all, "content-length"));
    char *b = strstr(all, "\r\n\r\n") + 4;
    long dl = dechunk(b, strlen(b), dec, sizeof dec);
    assert_int_equal(dl, 11);
    assert_memory_equal(dec, "hello world", 11);
    /* close-delimited to HTTP/1.0 */
    get_all(port, "GET /chunked HTTP/1.0\r\n\r\n", all, sizeof all);
    assert_null(strstr(all, "Transfer-Encoding"));
    assert_null(strcasestr(all, "content-length"));
    assert_non_null(strcasestr(all, "connection: close"));
    assert_string_equal(strstr(all, "\r\n\r\n") + 4, "hello world");
    /* Content-Length */
    get_all(port, "GET /cl HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", all, sizeof all);
    assert_non_null(strstr(all, "Content-Length: 10\r\n"));
    assert_string_equal(strstr(all, "\r\n\r\n") + 4, "0123456789");
    /* HEAD keeps the given length, sends no body */
    get_all(port, "HEAD /head8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", all, sizeof all);
    assert_non_null(strstr(all, "Content-Length: 8\r\n"));
    assert_string_equal(strstr(all, "\r\n\r\n") + 4, "");
    /* 304 keeps it too; 204 never has one */
    get_all(port, "GET /304 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", all, sizeof all);
    assert_true(strncmp(all, "HTTP/1.1 304 ", 13) == 0);
    assert_non_null(strstr(all, "Content-Length: 42\r\n"));
    assert_string_equal(strstr(all, "\r\n\r\n") + 4, "");
    get_all(port, "GET /204 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", all, sizeof all);
    assert_true(strncmp(all, "HTTP/1.1 204 ", 13) == 0);
    assert_null(strcasestr(all, "content-length"));
    assert_string_equal(strstr(all, "\r\n\r\n") + 4, "");
    /* abort: the connection ends without the last chunk (keep-alive was asked) */
    get_all(port, "GET /abort HTTP/1.1\r\nHost: t\r\n\r\n", all, sizeof all);
    b = strstr(all, "\r\n\r\n");
    if (b != NULL) {
        assert_int_equal(dechunk(b + 4, strlen(b + 4), dec, sizeof dec), -1);
        assert_null(strstr(b + 4, "0\r\n\r\n"));
    }
    /* end short of the Content-Length: the connection closes after the short body
     */
    get_all(port, "GET /short HTTP/1.1\r\nHost: t\r\n\r\n", all, sizeof all);
    assert_non_null(strstr(all, "Content-Length: 100\r\n"));
    assert_string_equal(strstr(all, "\r\n\r\n") + 4, "abc");
    /* one-shot respond on a keep-alive connection, twice */
    int fd = dial(port);
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    for (int i = 0; i < 2; i++) {
        send_str(fd, "GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_int_equal(read_response(fd, rb, &r), 0);
        assert_int_equal(r.status, 404);
        assert_string_equal(r.body, "no");
        assert_non_null(strstr(r.head, "Content-Length: 2\r\n"));
    }
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_backpressure(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0};
    net_server *srv = start(&o);
    int fd = dial(net_server_port(srv));
    int small = 64 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    send_str(fd, "GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    usleep(200000); /* a slow reader: the kernel buffers fill, the server queues */
    char *buf = malloc(1 << 16);
    size_t hl = 0;
    uint64_t pos = 0;
    bool in_body = false;
    char head[4096];
    ssize_t n;
    int reads = 0;
    while ((n = recv(fd, buf, 1 << 16, 0)) > 0) {
        size_t off = 0;
        if (!in_body) {
            /* the head arrives in the first segment (it is one small write) */
            char *e = memmem(buf, (size_t) n, "\r\n\r\n", 4);
            assert_non_null(e);
            hl = (size_t) (e + 4 - buf);
            assert_true(hl < sizeof head);
            memcpy(head, buf, hl);
            head[hl] = '\0';
            in_body = true;
            off = hl;
        }
        for (size_t i = off; i < (size_t) n; i++, pos++) {
            if ((uint8_t) buf[i] != pat(pos)) {
                fail_msg("byte %llu differs", (unsigned long long) pos);
            }
        }
        if (++reads % 64 == 0) {
            usleep(1000);
        }
    }
    assert_int_equal(pos, BIG_TOTAL);
    assert_true(strstr(head, "Content-Length: 33554432\r\n") != NULL);
    assert_true(atomic_load(&g_drains) >= 1);
    size_t mq = atomic_load(&g_max_queued);
    assert_true(mq <= BIG_WM + BIG_CHUNK);
    assert_true(mq > 0);
    free(buf);
    close(fd);
    net_server_free(srv);
}

static void
test_pipelining(void **state)
{
    (void) state;
    reset_globals();
    net_server_opts o = {.port = 0};
    net_server *srv = start(&o);
    int fd = dial(net_server_port(srv));
    send_str(fd, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "slow");
    assert_int_equal(read_response(fd, rb, &r), 0);
    char want[64];
    snprintf(want, sizeof want, "n=3 sum=%u", cksum(0, (const uint8_t *) "abc", 3));
    assert_string_equal(r.body, want);
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "fast");
    assert_int_equal(atomic_load(&g_fast_early), 0);
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_worker_hooks(void **state)
{
    (void) state;
    reset_globals();
    atomic_store(&g_wstart, 0);
    atomic_store(&g_wstop, 0);
    atomic_store(&g_wbad, 0);
    atomic_store(&g_index_mask, 0);
    net_server_opts o = {
        .port = 0, .workers = 2, .worker_start = worker_start, .worker_stop = worker_stop};
    net_server *srv = start(&o);
    assert_true(wait_for(&g_wstart, 2));
    /* a caller timer closed in worker_stop does not hang the stop */
    double t0 = now_s();
    net_server_stop(srv);
    net_server_wait(srv);
    double dt = now_s() - t0;
    assert_true(dt < 1.0);
    assert_int_equal(atomic_load(&g_wstart), 2);
    assert_int_equal(atomic_load(&g_wstop), 2);
    assert_int_equal(atomic_load(&g_wbad), 0);
    assert_int_equal(atomic_load(&g_index_mask), 3);
    net_server_free(srv);

    /* a hold delays the end of the stop until it is released (300 ms later) */
    atomic_store(&g_wstart, 0);
    atomic_store(&g_wstop, 0);
    o.workers = 1;
    srv = start(&o);
    int fd = dial(net_server_port(srv));
    send_str(fd, "GET /hold HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    char all[2048];
    read_all(fd, all, sizeof all);
    assert_non_null(strstr(all, "held"));
    close(fd);
    t0 = now_s();
    net_server_stop(srv);
    net_server_wait(srv);
    dt = now_s() - t0;
    assert_true(dt > 0.15);
    assert_true(dt < 1.5);
    assert_int_equal(atomic_load(&g_wstop), 1);
    assert_int_equal(atomic_load(&g_wbad), 0);
    net_server_free(srv);
}

/* ---- TLS ---- */

static char tdir[256];

static int
tls_setup(void **state)
{
    (void) state;
    snprintf(tdir, sizeof tdir, "/tmp/dbao-net-stream-XXXXXX");
    if (mkdtemp(tdir) == NULL) {
        return -1;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:prime256v1 "
             "-nodes -keyout srv.key -out srv.pem -subj /CN=localhost -days 2 "
             "-addext subjectAltName=IP:127.0.0.1 2>/dev/null",
             tdir);
    return system(cmd) == 0 ? 0 : -1;
}

static int
tls_teardown(void **state)
{
    (void) state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
    return system(cmd) == 0 ? 0 : -1;
}

static SSL *
tls_dial(SSL_CTX *ctx, uint16_t port, int *fd_out)
{
    int fd = dial(port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    *fd_out = fd;
    if (SSL_connect(ssl) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void
test_tls_stream(void **state)
{
    (void) state;
    reset_globals();
    char cert[300], key[300];
    snprintf(cert, sizeof cert, "%s/srv.pem", tdir);
    snprintf(key, sizeof key, "%s/srv.key", tdir);
    net_server_opts o = {.port = 0, .tls_cert = cert, .tls_key = key};
    net_server *srv = start(&o);
    uint16_t port = net_server_port(srv);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, cert, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    static const unsigned char offer[] = "\x02h2\x08http/1.1";
    assert_int_equal(SSL_CTX_set_alpn_protos(ctx, offer, sizeof offer - 1), 0);
    int fd;
    SSL *ssl = tls_dial(ctx, port, &fd);
    assert_non_null(ssl);
    const unsigned char *sel;
    unsigned sel_len;
    SSL_get0_alpn_selected(ssl, &sel, &sel_len);
    assert_int_equal(sel_len, 8);
    assert_memory_equal(sel, "http/1.1", 8);
    /* a streamed body in, a chunked response out, on one connection */
    size_t n = 200000;
    uint32_t sum;
    char *body = make_body(n, &sum);
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", n);
    assert_true(SSL_write(ssl, head, hl) == hl);
    assert_true(SSL_write(ssl, body, (int) n) == (int) n);
    const char g[] = "GET /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_true(SSL_write(ssl, g, sizeof g - 1) == (int) sizeof g - 1);
    char all[8192];
    size_t got = 0;
    int k;
    while (got < sizeof all - 1 &&
           (k = SSL_read(ssl, all + got, (int) (sizeof all - 1 - got))) > 0) {
        got += (size_t) k;
    }
    all[got] = '\0';
    char want[128];
    snprintf(want, sizeof want, "n=%zu sum=%u", n, sum);
    assert_non_null(strstr(all, want));
    char *second = strstr(all, "HTTP/1.1 200 OK\r\n");
    assert_non_null(second);
    second = strstr(second + 1, "HTTP/1.1 200 OK\r\n");
    assert_non_null(second);
    char *b = strstr(second, "\r\n\r\n") + 4;
    char dec[64];
    assert_int_equal(dechunk(b, strlen(b), dec, sizeof dec), 11);
    SSL_free(ssl);
    close(fd);
    /* a client offering only h2 is refused (no_application_protocol) */
    static const unsigned char only_h2[] = "\x02h2";
    assert_int_equal(SSL_CTX_set_alpn_protos(ctx, only_h2, sizeof only_h2 - 1), 0);
    ssl = tls_dial(ctx, port, &fd);
    assert_null(ssl);
    /* no ALPN at all is fine */
    SSL_CTX_free(ctx);
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    ssl = tls_dial(ctx, port, &fd);
    assert_non_null(ssl);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    free(body);
    net_server_free(srv);
    /* an empty or malformed ALPN list is refused */
    static const char *const empty[] = {NULL};
    static const char *const blank[] = {"", NULL};
    net_server_opts bad = {.handler = handler, .tls_cert = cert, .tls_key = key, .alpn = empty};
    net_server *s2 = NULL;
    dbao_err err;
    assert_int_equal(net_server_new(&s2, &bad, &err), DBAO_EINVAL);
    bad.alpn = blank;
    assert_int_equal(net_server_new(&s2, &bad, &err), DBAO_EINVAL);
    assert_null(s2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_content_length), cmocka_unit_test(test_body_chunked),
        cmocka_unit_test(test_pause_resume),        cmocka_unit_test(test_pause_stops_reading),
        cmocka_unit_test(test_expect_continue),     cmocka_unit_test(test_body_errors),
        cmocka_unit_test(test_stream_responses),    cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_pipelining),          cmocka_unit_test(test_worker_hooks),
    };
    const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_tls_stream),
    };
    int fails = cmocka_run_group_tests_name("net/stream", tests, NULL, NULL);
    fails += cmocka_run_group_tests_name("net/stream-tls", tls_tests, tls_setup, tls_teardown);
    return fails;
}
