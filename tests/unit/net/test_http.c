/* test_http.c: the net layer's HTTP/1.1 server, end to end over loopback sockets.
 *
 * Each test starts a server on 127.0.0.1 with an ephemeral port (its workers are threads) and
 * talks to it with raw sockets, or with an OpenSSL client for TLS. The handler answers by
 * path: /hello (at once), /echo (the body back), /peer (the TLS identity), /defer (from another
 * thread after 30 ms), /hold (kept until the test answers it). Negative cases: every limit
 * and framing rule the server enforces (431, 413, 400, 408, 417, 505), a client that closes
 * while its response is pending (run under ASan by `make asan`), mTLS without or with a
 * foreign certificate. The parser is also driven directly (no sockets) for byte-by-byte feeds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "dengbao/net.h"
#include "internal.h"

/* ---- the handler ---- */

static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static net_request *held;
static atomic_int handled;

static void *
defer_thread(void *arg)
{
    net_request *req = arg;
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    net_request_add_header(req, "X-Deferred", "yes");
    net_request_respond(req, 200, "text/plain", "deferred", 8);
    return NULL;
}

static void
handler(net_request *req, void *arg)
{
    (void) arg;
    atomic_fetch_add(&handled, 1);
    const char *path = net_request_path(req);
    if (strcmp(path, "/hello") == 0) {
        net_request_respond(req, 200, "text/plain", "hello", 5);
    } else if (strcmp(path, "/echo") == 0) {
        size_t len;
        const uint8_t *b = net_request_body(req, &len);
        char q[128];
        if (net_query_get(net_request_query(req), "tag", q, sizeof q) == 0) {
            net_request_add_header(req, "X-Tag", q);
        }
        net_request_respond(req, 200, "application/octet-stream", b, len);
    } else if (strcmp(path, "/peer") == 0) {
        const net_peer *p = net_request_peer(req);
        char out[400];
        int n = snprintf(out, sizeof out, "tls=%d verified=%d cn=%s", p->tls, p->cert_verified,
                         p->cert_cn);
        net_request_respond(req, 200, "text/plain", out, (size_t) n);
    } else if (strcmp(path, "/defer") == 0) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, defer_thread, req), 0);
        pthread_detach(t);
    } else if (strcmp(path, "/hold") == 0) {
        pthread_mutex_lock(&hold_mu);
        held = req;
        pthread_cond_broadcast(&hold_cv);
        pthread_mutex_unlock(&hold_mu);
    } else {
        net_request_respond(req, 404, "text/plain", "no", 2);
    }
}

static net_request *
wait_held(void)
{
    pthread_mutex_lock(&hold_mu);
    while (held == NULL) {
        pthread_cond_wait(&hold_cv, &hold_mu);
    }
    net_request *r = held;
    held = NULL;
    pthread_mutex_unlock(&hold_mu);
    return r;
}

/* ---- server and client helpers ---- */

static net_server *
start(net_server_opts *o)
{
    net_server *srv = NULL;
    dbao_err err;
    o->handler = handler;
    int rc = net_server_new(&srv, o, &err);
    if (rc != 0) {
        fail_msg("net_server_new: %s", err.msg);
    }
    assert_int_equal(net_server_start(srv, &err), 0);
    return srv;
}

static net_server *
start_default(void)
{
    net_server_opts o = {.port = 0, .body_max = 1 << 20};
    return start(&o);
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
send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0) {
            return; /* the server may have closed: the test reads what it said */
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

typedef struct resp {
    int status;
    char head[4096];
    char body[65536];
    size_t body_len;
} resp;

/* read_response reads one response (Content-Length framed) from fd, keeping surplus bytes in
 * a per-call-site buffer. Returns 0, or -1 on EOF/timeout before a full response. */
typedef struct rbuf {
    char b[200000];
    size_t len;
} rbuf;

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
            if (p != NULL) {
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

/* expect_eof: the server closed the connection (after any pending bytes). */
static void
expect_eof(int fd)
{
    char b[4096];
    ssize_t n;
    while ((n = recv(fd, b, sizeof b, 0)) > 0) {
    }
    assert_int_equal(n, 0);
}

static rbuf rb_static;

static void
roundtrip(uint16_t port, const char *req, resp *r, bool want_close)
{
    int fd = dial(port);
    rb_static.len = 0;
    send_str(fd, req);
    assert_int_equal(read_response(fd, &rb_static, r), 0);
    if (want_close) {
        assert_non_null(strcasestr(r->head, "connection: close"));
        expect_eof(fd);
    }
    close(fd);
}

/* ---- tests ---- */

static void
test_simple_get(void **state)
{
    (void) state;
    net_server *srv = start_default();
    resp r;
    roundtrip(net_server_port(srv), "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r, false);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    assert_non_null(strstr(r.head, "Content-Type: text/plain\r\n"));
    assert_non_null(strstr(r.head, "Date: "));
    /* HEAD: same headers, no body. */
    int fd = dial(net_server_port(srv));
    send_str(fd, "HEAD /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    char b[2048];
    size_t got = 0;
    ssize_t n;
    while ((n = recv(fd, b + got, sizeof b - 1 - got, 0)) > 0) {
        got += (size_t) n;
    }
    b[got] = '\0';
    assert_non_null(strstr(b, "Content-Length: 5\r\n"));
    assert_true(got >= 4 && strcmp(b + got - 4, "\r\n\r\n") == 0);
    close(fd);
    net_server_free(srv);
}

static void
test_keepalive(void **state)
{
    (void) state;
    net_server *srv = start_default();
    int fd = dial(net_server_port(srv));
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_int_equal(r.status, 200);
    assert_null(strcasestr(r.head, "connection: close"));
    send_str(fd, "POST /echo?tag=a%20b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abc");
    assert_non_null(strstr(r.head, "X-Tag: a b\r\n"));
    /* HTTP/1.0 with keep-alive stays open and says so. */
    send_str(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_non_null(strcasestr(r.head, "connection: keep-alive"));
    /* Connection: close is honoured. */
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_non_null(strcasestr(r.head, "connection: close"));
    expect_eof(fd);
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_http10_close(void **state)
{
    (void) state;
    net_server *srv = start_default();
    resp r;
    roundtrip(net_server_port(srv), "GET /hello HTTP/1.0\r\n\r\n", &r, true);
    assert_int_equal(r.status, 200);
    net_server_free(srv);
}

static void
test_pipelining(void **state)
{
    (void) state;
    net_server *srv = start_default();
    int fd = dial(net_server_port(srv));
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    /* Four requests in one write; the second is answered later from another thread, the
     * others at once: the responses must still come in request order. */
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                 "GET /defer HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nping"
                 "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "hello");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "deferred");
    assert_non_null(strstr(r.head, "X-Deferred: yes\r\n"));
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "ping");
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "hello");
    /* A request split into single bytes. */
    const char *slow = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok";
    for (const char *p = slow; *p; p++) {
        send_all(fd, p, 1);
    }
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "ok");
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_chunked(void **state)
{
    (void) state;
    net_server *srv = start_default();
    resp r;
    roundtrip(net_server_port(srv),
              "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
              &r, false);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    /* A chunked body past the limit. */
    int fd = dial(net_server_port(srv));
    rbuf *rb = calloc(1, sizeof *rb);
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    char *chunk = malloc(300000);
    memset(chunk, 'x', 300000);
    for (int i = 0; i < 4; i++) {
        send_str(fd, "493e0\r\n"); /* 300000 */
        send_all(fd, chunk, 300000);
        send_str(fd, "\r\n");
    }
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_int_equal(r.status, 413);
    close(fd);
    free(chunk);
    free(rb);
    /* Transfer codings other than chunked: 501; bad chunk size: 400. */
    roundtrip(net_server_port(srv),
              "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
              &r, true);
    assert_int_equal(r.status, 501);
    roundtrip(net_server_port(srv),
              "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", &r,
              true);
    assert_int_equal(r.status, 400);
    net_server_free(srv);
}

static void
test_header_limits(void **state)
{
    (void) state;
    net_server *srv = start_default();
    uint16_t port = net_server_port(srv);
    resp r;
    /* 20 KB of header: 431 and close. */
    size_t big = 20000;
    char *req = malloc(big + 200);
    int n = snprintf(req, big + 200, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(req + n, 'a', big);
    strcpy(req + n + big, "\r\n\r\n");
    roundtrip(port, req, &r, true);
    assert_int_equal(r.status, 431);
    /* Just under the limit passes. */
    n = snprintf(req, big + 200, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ");
    size_t fill = 16384 - (size_t) n - 4;
    memset(req + n, 'a', fill);
    strcpy(req + n + fill, "\r\n\r\n");
    assert_int_equal(strlen(req), 16384);
    roundtrip(port, req, &r, false);
    assert_int_equal(r.status, 200);
    free(req);
    /* 101 header fields: 431. */
    char *many = malloc(4000);
    size_t off = (size_t) sprintf(many, "GET /hello HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 100; i++) {
        off += (size_t) sprintf(many + off, "X-%d: v\r\n", i);
    }
    strcpy(many + off, "\r\n");
    roundtrip(port, many, &r, true);
    assert_int_equal(r.status, 431);
    free(many);
    net_server_free(srv);
}

static void
test_body_limit(void **state)
{
    (void) state;
    net_server *srv = start_default();
    resp r;
    roundtrip(net_server_port(srv),
              "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", &r, true);
    assert_int_equal(r.status, 413);
    net_server_free(srv);
}

static void
test_framing_errors(void **state)
{
    (void) state;
    net_server *srv = start_default();
    uint16_t port = net_server_port(srv);
    resp r;
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: "
         "chunked\r\n\r\n0\r\n\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: "
         "3\r\n\r\n0\r\n\r\n",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
         400},
        {"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc", 400},
        /* obs-fold, in the framing header and in any other (llhttp alone accepts both) */
        {"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
        {"GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\r\n\tb\r\n\r\n", 400},
        {"\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400},
        /* bare CR inside a header value (llhttp strict mode) */
        {"GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400},
        {"GARBAGE\r\n\r\n", 400},
        {"GET /hello HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400},
        {"GET /hello\r\n\r\n", 400},
        {"GET hello HTTP/1.1\r\nHost: t\r\n\r\n", 400},
        {"GET http://x/hello HTTP/1.1\r\nHost: t\r\n\r\n", 400},
        {"GET /hello HTTP/1.1\r\n\r\n", 400},                       /* no Host */
        {"GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400}, /* two Hosts */
        {"GET /hello HTTP/1.1\r\nHost: t\r\nX: a\x01"
         "b\r\n\r\n",
         400},
        {"GET /hello HTTP/1.1\r\nHost: t\nX: y\r\n\r\n", 400},    /* bare LF */
        {"GET /hello HTTP/1.1\r\nHost: t\r\nX : y\r\n\r\n", 400}, /* space before colon */
        {"GET /hello HTTP/2.0\r\nHost: t\r\n\r\n", 505},
        {"GET /hello HTTP/1.2\r\nHost: t\r\n\r\n", 400}, /* llhttp: unknown version */
        {"GET /hello HTTP/0.9\r\nHost: t\r\n\r\n", 400},
        {"GET /hello HTTP/1.1\r\nHost: t\r\nExpect: magic\r\n\r\n", 417},
        {"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", 501},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        roundtrip(port, cases[i].req, &r, true);
        if (r.status != cases[i].status) {
            fail_msg("case %zu: status %d, want %d", i, r.status, cases[i].status);
        }
    }
    /* The server still serves after all that. */
    roundtrip(port, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r, false);
    assert_int_equal(r.status, 200);
    net_server_free(srv);
}

static void
test_expect_continue(void **state)
{
    (void) state;
    net_server *srv = start_default();
    int fd = dial(net_server_port(srv));
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: "
                 "100-continue\r\n\r\n");
    char b[64];
    ssize_t n = recv(fd, b, 25, MSG_WAITALL);
    assert_int_equal(n, 25);
    assert_memory_equal(b, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    send_str(fd, "body");
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "body");
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_timeouts(void **state)
{
    (void) state;
    net_server_opts o = {.header_timeout_ms = 200, .idle_timeout_ms = 300};
    net_server *srv = start(&o);
    resp r;
    /* An incomplete head: 408 after the header timeout, then close. */
    roundtrip(net_server_port(srv), "GET /hello HTTP/1.1\r\nHost: t\r\n", &r, true);
    assert_int_equal(r.status, 408);
    /* An idle keep-alive connection is closed without a word. */
    int fd = dial(net_server_port(srv));
    rbuf *rb = calloc(1, sizeof *rb);
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_response(fd, rb, &r), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_eof(fd);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double) (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s > 0.2 && s < 3.0);
    close(fd);
    /* A connection that sends nothing is closed after the header timeout. */
    fd = dial(net_server_port(srv));
    expect_eof(fd);
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_deferred_other_thread(void **state)
{
    (void) state;
    net_server *srv = start_default();
    resp r;
    roundtrip(net_server_port(srv), "GET /defer HTTP/1.1\r\nHost: t\r\n\r\n", &r, false);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "deferred");
    /* Answered from this (foreign) thread, after the handler returned. */
    int fd = dial(net_server_port(srv));
    send_str(fd, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nkeep!");
    net_request *req = wait_held();
    size_t len;
    const uint8_t *b = net_request_body(req, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(b, "keep!", 5);
    assert_string_equal(net_request_method(req), "POST");
    assert_string_equal(net_request_header(req, "HOST"), "t");
    assert_int_equal(net_request_add_header(req, "Content-Length", "1"), DBAO_EINVAL);
    assert_int_equal(net_request_add_header(req, "X-Bad", "a\r\nb"), DBAO_EINVAL);
    assert_int_equal(net_request_add_header(req, "X Bad", "a"), DBAO_EINVAL);
    assert_int_equal(net_request_respond(req, 202, NULL, "later", 5), 0);
    rbuf *rb = calloc(1, sizeof *rb);
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_int_equal(r.status, 202);
    assert_string_equal(r.body, "later");
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_client_gone(void **state)
{
    (void) state;
    net_server *srv = start_default();
    uint16_t port = net_server_port(srv);
    /* The client closes while its request is held; the response comes after: it must be
     * dropped without touching freed memory (ASan checks that in `make asan`). */
    int fd = dial(port);
    send_str(fd, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    net_request *req = wait_held();
    close(fd);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    assert_string_equal(net_request_path(req), "/hold"); /* still valid */
    assert_int_equal(net_request_respond(req, 200, "text/plain", "late", 4), 0);
    /* Same, with a reset (SO_LINGER 0) and the answer racing the close. */
    for (int i = 0; i < 20; i++) {
        fd = dial(port);
        send_str(fd, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
        req = wait_held();
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        net_request_respond(req, 200, "text/plain", "late", 4);
    }
    resp r;
    roundtrip(port, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r, false);
    assert_int_equal(r.status, 200);
    net_server_free(srv);
}

static void *
stop_later(void *arg)
{
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
    net_server_stop(arg);
    return NULL;
}

static void
test_graceful_stop(void **state)
{
    (void) state;
    net_server_opts o = {.workers = 2};
    net_server *srv = start(&o);
    uint16_t port = net_server_port(srv);
    int idle = dial(port);
    int fd = dial(port);
    send_str(fd, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    net_request *req = wait_held();
    pthread_t t;
    pthread_create(&t, NULL, stop_later, srv);
    pthread_join(t, NULL);
    /* The idle connection is closed; the in-flight request still gets its answer, with
     * Connection: close; then the server ends. */
    expect_eof(idle);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    net_request_respond(req, 200, "text/plain", "bye", 3);
    rbuf *rb = calloc(1, sizeof *rb);
    resp r;
    assert_int_equal(read_response(fd, rb, &r), 0);
    assert_string_equal(r.body, "bye");
    assert_non_null(strcasestr(r.head, "connection: close"));
    expect_eof(fd);
    net_server_wait(srv);
    /* New connections are refused once it stopped. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_not_equal(connect(s, (struct sockaddr *) &sin, sizeof sin), 0);
    close(s);
    close(idle);
    close(fd);
    free(rb);
    net_server_free(srv);
}

static void
test_max_connections(void **state)
{
    (void) state;
    net_server_opts o = {.max_connections = 2};
    net_server *srv = start(&o);
    uint16_t port = net_server_port(srv);
    int a = dial(port), b = dial(port);
    resp r;
    rbuf *rb = calloc(1, sizeof *rb);
    send_str(a, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_response(a, rb, &r), 0);
    send_str(b, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(read_response(b, rb, &r), 0);
    int c = dial(port);
    expect_eof(c); /* the third is closed at once */
    close(c);
    close(a);
    close(b);
    free(rb);
    net_server_free(srv);
}

static void
test_bad_options(void **state)
{
    (void) state;
    net_server *srv = NULL;
    dbao_err err;
    net_server_opts o = {.handler = handler, .tls_cert = "/nonexistent.pem"};
    assert_int_equal(net_server_new(&srv, &o, &err), DBAO_EINVAL);
    assert_null(srv);
    net_server_opts o2 = {.handler = handler, .host = "not-an-ip"};
    assert_int_equal(net_server_new(&srv, &o2, &err), DBAO_EINVAL);
    net_server_opts o3 = {
        .handler = handler, .tls_cert = "/nonexistent.pem", .tls_key = "/nonexistent.key"};
    assert_int_equal(net_server_new(&srv, &o3, &err), DBAO_EFORMAT);
    /* A port in use. */
    net_server *a = start_default();
    net_server_opts o4 = {.handler = handler, .port = net_server_port(a)};
    assert_int_equal(net_server_new(&srv, &o4, &err), -EADDRINUSE);
    net_server_free(a);
    /* Created but never started: free must still release everything. */
    net_server_opts o5 = {.handler = handler};
    assert_int_equal(net_server_new(&srv, &o5, &err), 0);
    net_server_free(srv);
}

/* ---- the parser alone ---- */

static void
test_parser_direct(void **state)
{
    (void) state;
    net__limits lim = {.header_max = 1024, .headers_num_max = 10, .body_max = 100};
    net__parser ps;
    net__parser_init(&ps, &lim);
    const char in[] = "POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                      "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t len = sizeof in - 1, off = 0, used;
    int got = 0;
    /* One byte at a time. */
    while (off < len) {
        int r = net__parser_feed(&ps, in + off, 1, &used);
        off += used;
        assert_int_not_equal(r, NET__PARSE_ERROR);
        if (r == NET__PARSE_MESSAGE) {
            net_request *m = net__parser_take(&ps);
            if (got == 0) {
                assert_string_equal(net_request_path(m), "/a");
                assert_string_equal(net_request_query(m), "x=1");
                assert_int_equal(m->body_len, 3);
            } else {
                assert_string_equal(net_request_target(m), "/b");
                assert_int_equal(m->body_len, 0);
            }
            got++;
            net__request_free(m);
        }
    }
    assert_int_equal(got, 2);
    net__parser_cleanup(&ps);
    /* The feed stops at the end of a message. */
    net__parser_init(&ps, &lim);
    assert_int_equal(net__parser_feed(&ps, in, len, &used), NET__PARSE_MESSAGE);
    assert_int_equal(used,
                     strlen("POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"));
    net__parser_cleanup(&ps);
    /* Regression (fuzz_net_http): a long target makes the path/query copies grow the head
     * buffer, which must not leave the copy reading freed memory. */
    char longreq[1200];
    char target[700];
    memset(target, ',', sizeof target - 1);
    target[0] = '/';
    target[300] = '?';
    target[sizeof target - 1] = '\0';
    snprintf(longreq, sizeof longreq, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", target);
    net__parser_init(&ps, &lim);
    assert_int_equal(net__parser_feed(&ps, longreq, strlen(longreq), &used), NET__PARSE_MESSAGE);
    net_request *m = net__parser_take(&ps);
    assert_int_equal(strlen(net_request_path(m)), 300);
    assert_int_equal(strlen(net_request_query(m)), 398);
    assert_string_equal(net_request_target(m), target);
    net__request_free(m);
    net__parser_cleanup(&ps);
}

/* Every allocation of the parser fails in turn: the parser answers 500 (or succeeds when the
 * failed allocation was retried elsewhere), never crashes, never leaks (ASan). */
static void
test_parser_alloc_failures(void **state)
{
    (void) state;
    net__limits lim = {.header_max = 16384, .headers_num_max = 100, .body_max = 1 << 20};
    const char in[] = "POST /a?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                      "X-1: a\r\nX-2: b\r\nX-3: c\r\nX-4: d\r\nX-5: e\r\nX-6: f\r\n"
                      "X-7: g\r\nX-8: h\r\nX-9: i\r\nX-10: j\r\nX-11: k\r\nX-12: l\r\n"
                      "X-13: m\r\nX-14: n\r\nX-15: o\r\nX-16: p\r\nX-17: q\r\n\r\n"
                      "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
                      "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
                      "0\r\n\r\n";
    int failures = 0;
    for (long n = 0; n < 40; n++) {
        net__parser ps;
        net__parser_init(&ps, &lim);
        size_t used;
        dbao_alloc_fail_after(n, false);
        int r = net__parser_feed(&ps, in, sizeof in - 1, &used);
        dbao_alloc_fail_after(-1, false);
        if (r == NET__PARSE_ERROR) {
            assert_int_equal(ps.error_status, 500);
            failures++;
        } else {
            assert_int_equal(r, NET__PARSE_MESSAGE);
            net_request *m = net__parser_take(&ps);
            size_t bl;
            net_request_body(m, &bl);
            assert_int_equal(bl, 128);
            net__request_free(m);
        }
        net__parser_cleanup(&ps);
    }
    assert_true(failures >= 4); /* the request, head, header table, body (and regrowths) */
}

static void
test_query_get(void **state)
{
    (void) state;
    char v[16];
    assert_int_equal(net_query_get("a=1&index=42&b", "index", v, sizeof v), 0);
    assert_string_equal(v, "42");
    assert_int_equal(net_query_get("a=1&b", "b", v, sizeof v), 0);
    assert_string_equal(v, "");
    assert_int_equal(net_query_get("a=x%41+y", "a", v, sizeof v), 0);
    assert_string_equal(v, "xA y");
    assert_int_equal(net_query_get("ab=1", "a", v, sizeof v), DBAO_EINVAL);
    assert_int_equal(net_query_get("a=%4", "a", v, sizeof v), DBAO_EFORMAT);
    assert_int_equal(net_query_get("a=%00", "a", v, sizeof v), DBAO_EFORMAT);
    assert_int_equal(net_query_get("a=0123456789abcdef", "a", v, sizeof v), DBAO_ERANGE);
}

/* ---- TLS ---- */

static char tdir[256];

static int
tls_setup(void **state)
{
    (void) state;
    snprintf(tdir, sizeof tdir, "/tmp/dbao-net-tls-XXXXXX");
    if (mkdtemp(tdir) == NULL) {
        return -1;
    }
    char cmd[4096];
    snprintf(
        cmd, sizeof cmd,
        "set -e; cd %s; "
        "K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';"
        "openssl req -x509 $K -keyout srv.key -out srv.pem -subj /CN=localhost -days 2 "
        "  -addext subjectAltName=IP:127.0.0.1 2>/dev/null;"
        "openssl req -x509 $K -keyout ca.key -out ca.pem -subj /CN=test-ca -days 2 2>/dev/null;"
        "openssl req $K -keyout cli.key -out cli.csr -subj /CN=gateway-1 2>/dev/null;"
        "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "  -out cli.pem -days 2 2>/dev/null;"
        "openssl req -x509 $K -keyout rogue-ca.key -out rogue-ca.pem -subj /CN=rogue "
        "  -days 2 2>/dev/null;"
        "openssl req $K -keyout rogue.key -out rogue.csr -subj /CN=gateway-1 2>/dev/null;"
        "openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key "
        "  -CAcreateserial -out rogue.pem -days 2 2>/dev/null",
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

static char *
tpath(const char *name)
{
    static char p[32][512];
    static int i;
    i = (i + 1) % 32;
    snprintf(p[i], sizeof p[i], "%s/%s", tdir, name);
    return p[i];
}

/* tls_get connects with OpenSSL (optionally presenting cert/key), sends a GET /peer and
 * returns the status (0 when the handshake or the exchange failed) and the body. */
static int
tls_get(uint16_t port, const char *cert, const char *key, char *body, size_t cap, int min_ver)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, tpath("srv.pem"), NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (min_ver) {
        SSL_CTX_set_max_proto_version(ctx, min_ver);
        SSL_CTX_set_min_proto_version(ctx, min_ver);
    }
    if (cert != NULL) {
        assert_int_equal(SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    }
    int fd = dial(port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    int status = 0;
    body[0] = '\0';
    if (SSL_connect(ssl) == 1) {
        const char req[] = "GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        if (SSL_write(ssl, req, sizeof req - 1) > 0) {
            char buf[8192];
            size_t got = 0;
            int n;
            while (got < sizeof buf - 1 &&
                   (n = SSL_read(ssl, buf + got, (int) (sizeof buf - 1 - got))) > 0) {
                got += (size_t) n;
            }
            buf[got] = '\0';
            if (got > 12) {
                status = atoi(buf + 9);
                char *b = strstr(buf, "\r\n\r\n");
                if (b != NULL) {
                    snprintf(body, cap, "%s", b + 4);
                }
            }
        }
    }
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return status;
}

static void
test_tls(void **state)
{
    (void) state;
    net_server_opts o = {.tls_cert = tpath("srv.pem"), .tls_key = tpath("srv.key")};
    net_server *srv = start(&o);
    char body[512];
    assert_int_equal(tls_get(net_server_port(srv), NULL, NULL, body, sizeof body, 0), 200);
    assert_string_equal(body, "tls=1 verified=0 cn=");
    assert_int_equal(tls_get(net_server_port(srv), NULL, NULL, body, sizeof body, TLS1_2_VERSION),
                     200);
    /* TLS 1.1 is refused. */
    assert_int_equal(tls_get(net_server_port(srv), NULL, NULL, body, sizeof body, TLS1_1_VERSION),
                     0);
    /* Plain HTTP to a TLS port gets nothing useful and no crash. */
    resp r;
    int fd = dial(net_server_port(srv));
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    rbuf *rb = calloc(1, sizeof *rb);
    assert_int_equal(read_response(fd, rb, &r), -1);
    close(fd);
    free(rb);
    net_server_free(srv);
    /* A key that does not match the certificate. */
    net_server_opts bad = {
        .handler = handler, .tls_cert = tpath("srv.pem"), .tls_key = tpath("cli.key")};
    net_server *s2 = NULL;
    dbao_err err;
    assert_int_equal(net_server_new(&s2, &bad, &err), DBAO_EFORMAT);
}

static void
test_mtls(void **state)
{
    (void) state;
    char body[512];
    /* require */
    net_server_opts o = {.tls_cert = tpath("srv.pem"),
                         .tls_key = tpath("srv.key"),
                         .tls_client_ca = tpath("ca.pem"),
                         .client_verify = NET_CLIENT_VERIFY_REQUIRE};
    net_server *srv = start(&o);
    uint16_t port = net_server_port(srv);
    assert_int_equal(tls_get(port, tpath("cli.pem"), tpath("cli.key"), body, sizeof body, 0), 200);
    assert_string_equal(body, "tls=1 verified=1 cn=gateway-1");
    assert_int_equal(tls_get(port, NULL, NULL, body, sizeof body, 0), 0);
    assert_int_equal(tls_get(port, NULL, NULL, body, sizeof body, TLS1_2_VERSION), 0);
    assert_int_equal(tls_get(port, tpath("rogue.pem"), tpath("rogue.key"), body, sizeof body, 0),
                     0);
    net_server_free(srv);
    /* optional: no certificate is fine (unverified), a foreign one is not */
    o.client_verify = NET_CLIENT_VERIFY_OPTIONAL;
    srv = start(&o);
    port = net_server_port(srv);
    assert_int_equal(tls_get(port, NULL, NULL, body, sizeof body, 0), 200);
    assert_string_equal(body, "tls=1 verified=0 cn=");
    assert_int_equal(tls_get(port, tpath("cli.pem"), tpath("cli.key"), body, sizeof body, 0), 200);
    assert_string_equal(body, "tls=1 verified=1 cn=gateway-1");
    assert_int_equal(tls_get(port, tpath("rogue.pem"), tpath("rogue.key"), body, sizeof body, 0),
                     0);
    net_server_free(srv);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_keepalive),
        cmocka_unit_test(test_http10_close),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_header_limits),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_framing_errors),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_timeouts),
        cmocka_unit_test(test_deferred_other_thread),
        cmocka_unit_test(test_client_gone),
        cmocka_unit_test(test_graceful_stop),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_parser_direct),
        cmocka_unit_test(test_parser_alloc_failures),
        cmocka_unit_test(test_query_get),
    };
    const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_mtls),
    };
    int fails = cmocka_run_group_tests_name("net/http", tests, NULL, NULL);
    fails += cmocka_run_group_tests_name("net/tls", tls_tests, tls_setup, tls_teardown);
    return fails;
}
