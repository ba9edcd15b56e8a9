/* test_client.c: the upstream client (src/net/client.c) against scripted upstreams on
 * 127.0.0.1, and its strict response parser (resp.h) driven directly.
 *
 * The upstream is a blocking-socket thread that accepts connections and follows a script: for
 * each request it reads the head and the framed body (recording every byte), then does what
 * the step says (send canned bytes and keep the connection, send and close, close without an
 * answer, hang, or send an 8 MiB body). Canned bytes can be anything, so broken responses are
 * easy. The pool runs on a uv_loop owned by the test; run_until() turns it until a flag is set
 * (with a 10 s guard). TLS: the upstream is an OpenSSL server with a self-signed P-256
 * certificate made in memory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include "dengbao/common.h"
#include "dengbao/net.h"
#include "resp.h"

/* ---- scripted upstream ---- */

enum { A_KEEP, A_CLOSE, A_NOREPLY_CLOSE, A_HANG, A_BIG, A_TRICKLE };

typedef struct step {
    const char *bytes; /* NULL: no reply */
    size_t len;        /* 0: strlen(bytes) */
    int action;
} step;

#define BIG_LEN (8u * 1024u * 1024u)
#define GOT_CAP (4u * 1024u * 1024u)

typedef struct srv {
    int lfd;
    uint16_t port;
    pthread_t th;
    const step *steps;
    int nsteps;
    SSL_CTX *tls;
    char *got; /* request bytes received, all connections (GOT_CAP) */
    size_t got_len;
    int accepted;
    int served;
    volatile int stop;
} srv;

static int
io_read(SSL *ssl, int fd, char *b, size_t n)
{
    if (ssl) {
        return SSL_read(ssl, b, (int) n);
    }
    return (int) recv(fd, b, n, 0);
}

static int
io_write(SSL *ssl, int fd, const char *b, size_t n)
{
    size_t off = 0;
    while (off < n) {
        int r = ssl ? SSL_write(ssl, b + off, (int) (n - off))
                    : (int) send(fd, b + off, n - off, MSG_NOSIGNAL);
        if (r <= 0) {
            return -1;
        }
        off += (size_t) r;
    }
    return 0;
}

/* read_request reads one request (head and framed body) into s->got; 0 or -1 at EOF. */
static int
read_request(srv *s, SSL *ssl, int fd)
{
    size_t start = s->got_len;
    size_t head_end = 0;
    long cl = 0;
    bool chunked = false;
    for (;;) {
        if (head_end == 0) {
            char *e = memmem(s->got + start, s->got_len - start, "\r\n\r\n", 4);
            if (e != NULL) {
                head_end = (size_t) (e + 4 - s->got);
                s->got[s->got_len] = '\0';
                char *h = strcasestr(s->got + start, "\r\ncontent-length:");
                if (h != NULL && h < e) {
                    cl = strtol(h + 17, NULL, 10);
                }
                h = strcasestr(s->got + start, "\r\ntransfer-encoding: chunked");
                chunked = h != NULL && h < e;
            }
        }
        if (head_end != 0) {
            if (chunked) {
                if (s->got_len >= head_end + 5 &&
                    memcmp(s->got + s->got_len - 5, "0\r\n\r\n", 5) == 0) {
                    return 0;
                }
            } else if (s->got_len - head_end >= (size_t) cl) {
                return 0;
            }
        }
        if (s->got_len + 1 >= GOT_CAP) {
            return -1;
        }
        int r = io_read(ssl, fd, s->got + s->got_len, GOT_CAP - 1 - s->got_len);
        if (r <= 0) {
            return -1;
        }
        s->got_len += (size_t) r;
    }
}

static void *
srv_main(void *arg)
{
    srv *s = arg;
    int i = 0;
    while (i < s->nsteps && !s->stop) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) {
            break;
        }
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        s->accepted++;
        SSL *ssl = NULL;
        if (s->tls) {
            ssl = SSL_new(s->tls);
            SSL_set_fd(ssl, fd);
            if (SSL_accept(ssl) != 1) {
                SSL_free(ssl);
                close(fd);
                continue;
            }
        }
        bool open = true;
        while (open && i < s->nsteps) {
            const step *st = &s->steps[i];
            if (read_request(s, ssl, fd) != 0) {
                break;
            }
            i++;
            s->served++;
            size_t n = st->bytes ? (st->len ? st->len : strlen(st->bytes)) : 0;
            switch (st->action) {
            case A_KEEP:
                io_write(ssl, fd, st->bytes, n);
                break;
            case A_CLOSE:
                io_write(ssl, fd, st->bytes, n);
                open = false;
                break;
            case A_NOREPLY_CLOSE:
                open = false;
                break;
            case A_HANG: {
                char b[16];
                while (!s->stop && recv(fd, b, sizeof b, 0) != 0) {
                }
                open = false;
                break;
            }
            case A_TRICKLE:
                /* head, then the body slowly: the client aborts in the middle */
                io_write(ssl, fd, st->bytes, n);
                for (int k = 0; k < 50 && !s->stop; k++) {
                    if (io_write(ssl, fd, "x", 1) != 0) {
                        break;
                    }
                    usleep(10000);
                }
                open = false;
                break;
            case A_BIG: {
                const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 8388608\r\n\r\n";
                io_write(ssl, fd, h, strlen(h));
                char *blk = malloc(65536);
                for (size_t k = 0; k < 65536; k++) {
                    blk[k] = (char) (k * 7 + 3);
                }
                for (size_t off = 0; off < BIG_LEN; off += 65536) {
                    if (io_write(ssl, fd, blk, 65536) != 0) {
                        break;
                    }
                }
                free(blk);
                break;
            }
            }
        }
        if (ssl) {
            SSL_shutdown(ssl);
            SSL_free(ssl);
        }
        close(fd);
    }
    return NULL;
}

static void
srv_start(srv *s, const step *steps, int n, SSL_CTX *tls)
{
    memset(s, 0, sizeof *s);
    s->steps = steps;
    s->nsteps = n;
    s->tls = tls;
    s->got = malloc(GOT_CAP);
    assert_non_null(s->got);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(s->lfd, (struct sockaddr *) &a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 16), 0);
    socklen_t al = sizeof a;
    getsockname(s->lfd, (struct sockaddr *) &a, &al);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void
srv_stop(srv *s)
{
    s->stop = 1;
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->th, NULL);
    close(s->lfd);
    free(s->got);
}

/* ---- client side ---- */

typedef struct rec {
    int heads, datas, ends, errors;
    int status[4];
    int64_t cl;
    bool ka;
    size_t nh;
    char h0name[32], h0value[32];
    char body[4096];
    size_t body_len;
    size_t total;
    uint32_t sum;
    int err;
    unsigned flags;
    bool done;
    int order; /* set from a global counter at the end */
    bool pause_each;
    bool pause_in_head;
    bool paused_now;
    bool abort_on_data;
    net_exchange *x;
    uv_loop_t *loop;
    int pauses;
} rec;

static int g_order;

static void resume_cb(uv_timer_t *t);

static void
on_head(net_exchange *x, const net_resp_head *h, void *arg)
{
    rec *r = arg;
    if (r->pause_in_head) {
        net_exchange_pause(x);
        r->paused_now = true;
        uv_timer_t *t = malloc(sizeof *t);
        uv_timer_init(r->loop, t);
        t->data = r;
        uv_timer_start(t, resume_cb, 30, 0);
    }
    if (r->heads < 4) {
        r->status[r->heads] = h->status;
    }
    r->heads++;
    r->cl = h->content_length;
    r->ka = h->keep_alive;
    r->nh = h->num_headers;
    if (h->num_headers > 0) {
        snprintf(r->h0name, sizeof r->h0name, "%s", h->names[0]);
        snprintf(r->h0value, sizeof r->h0value, "%s", h->values[0]);
    }
}

static void
resume_cb(uv_timer_t *t)
{
    rec *r = t->data;
    r->paused_now = false;
    net_exchange_resume(r->x);
    uv_close((uv_handle_t *) t, (uv_close_cb) free);
}

static void
on_data(net_exchange *x, const uint8_t *d, size_t n, void *arg)
{
    rec *r = arg;
    assert_false(r->done);
    assert_false(r->paused_now);
    r->datas++;
    if (r->body_len + n < sizeof r->body) {
        memcpy(r->body + r->body_len, d, n);
        r->body_len += n;
    }
    for (size_t i = 0; i < n; i++) {
        r->sum = r->sum * 31 + d[i];
    }
    r->total += n;
    if (r->abort_on_data) {
        net_exchange_abort(x);
        r->done = true;
        return;
    }
    if (r->pause_each) {
        net_exchange_pause(x);
        r->pauses++;
        uv_timer_t *t = malloc(sizeof *t);
        uv_timer_init(r->loop, t);
        t->data = r;
        uv_timer_start(t, resume_cb, 0, 0);
    }
}

static void
dbg_rec(const rec *r)
{
    if (getenv("TDEBUG")) {
        fprintf(stderr, "rec: heads %d datas %d ends %d errors %d err %d flags %u total %zu\n",
                r->heads, r->datas, r->ends, r->errors, r->err, r->flags, r->total);
    }
}

static void
on_end(net_exchange *x, void *arg)
{
    (void) x;
    rec *r = arg;
    assert_false(r->done);
    assert_false(r->paused_now);
    r->ends++;
    r->done = true;
    r->order = ++g_order;
}

static void
on_error(net_exchange *x, int err, unsigned flags, void *arg)
{
    (void) x;
    rec *r = arg;
    assert_false(r->done);
    dbg_rec(r);
    r->errors++;
    r->err = err;
    r->flags = flags;
    r->done = true;
    r->order = ++g_order;
}

static const net_exchange_cbs CBS = {on_head, on_data, on_end, on_error, NULL};

static void
guard_cb(uv_timer_t *t)
{
    *(bool *) t->data = true;
}

/* run_until turns the loop until *flag (or 10 s passed: fails). */
static void
run_until(uv_loop_t *loop, const bool *flag)
{
    bool expired = false;
    uv_timer_t g;
    uv_timer_init(loop, &g);
    g.data = &expired;
    uv_timer_start(&g, guard_cb, 10000, 0);
    while (!*flag && !expired) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *) &g, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_false(expired);
}

static void
run_ms(uv_loop_t *loop, unsigned ms)
{
    bool expired = false;
    uv_timer_t g;
    uv_timer_init(loop, &g);
    g.data = &expired;
    uv_timer_start(&g, guard_cb, ms, 0);
    while (!expired) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *) &g, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

typedef struct env {
    uv_loop_t loop;
    net_pool *pool;
    srv s;
    bool closed;
} env;

static void
pool_done(void *arg)
{
    ((env *) arg)->closed = true;
}

static void
env_open(env *e, const step *steps, int n, net_pool_opts *o, SSL_CTX *tls)
{
    memset(e, 0, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    srv_start(&e->s, steps, n, tls);
    net_pool_opts d = {0};
    if (o == NULL) {
        o = &d;
    }
    o->host = "127.0.0.1";
    o->port = e->s.port;
    dbao_err err;
    assert_int_equal(net_pool_new(&e->pool, &e->loop, o, &err), 0);
}

static void
env_close(env *e)
{
    net_pool_close(e->pool, pool_done, e);
    run_until(&e->loop, &e->closed);
    srv_stop(&e->s);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

static void
start(env *e, rec *r, const char *head, int64_t body_len, bool head_only)
{
    memset(r, 0, sizeof *r);
    r->loop = &e->loop;
    assert_int_equal(
        net_exchange_start(&r->x, e->pool, head, strlen(head), body_len, head_only, &CBS, r), 0);
}

static void
get(env *e, rec *r)
{
    start(e, r, "GET / HTTP/1.1\r\nHost: u\r\n\r\n", 0, false);
    assert_int_equal(net_exchange_end(r->x), 0);
}

#define OK2 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

/* ---- tests ---- */

static void
test_keepalive_reuse(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP},
                              {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 0, A_KEEP}};
    env e;
    env_open(&e, st, 2, NULL, NULL);
    rec a, b;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.status[0], 200);
    assert_int_equal(a.cl, 2);
    assert_true(a.ka);
    assert_int_equal(a.body_len, 2);
    assert_memory_equal(a.body, "ok", 2);
    assert_string_equal(a.h0name, "Content-Length");
    assert_string_equal(a.h0value, "2");
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.idle, 1);
    assert_int_equal(ps.active, 0);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    assert_memory_equal(b.body, "abc", 3);
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 1);
    assert_int_equal(ps.reuses, 1);
    assert_int_equal(e.s.accepted, 1);
    env_close(&e);
}

/* max_requests_per_conn and the idle timeout retire connections */
static void
test_conn_limits(void **state)
{
    (void) state;
    /* the 4th step is never asked for: it keeps the upstream from closing the last one */
    static const step st[] = {
        {OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}};
    net_pool_opts o = {.max_requests_per_conn = 2, .idle_timeout_ms = 50};
    env e;
    env_open(&e, st, 4, &o, NULL);
    rec a, b, c;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.idle, 0); /* second request on it: retired */
    assert_int_equal(ps.connects, 1);
    get(&e, &c);
    run_until(&e.loop, &c.done);
    assert_int_equal(c.ends, 1);
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 2);
    assert_int_equal(ps.idle, 1);
    run_ms(&e.loop, 120);
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.idle, 0); /* idle timeout */
    env_close(&e);
}

/* on_end starts the next exchange: it must get the connection just released */
static rec g_chain[3];
static env *g_chain_env;
static int g_chain_n;

static void
chain_end(net_exchange *x, void *arg)
{
    on_end(x, arg);
    net_pool_stats ps;
    net_pool_get_stats(g_chain_env->pool, &ps);
    assert_int_equal(ps.idle, 1); /* already back */
    if (++g_chain_n < 3) {
        static const net_exchange_cbs cb = {on_head, on_data, chain_end, on_error, NULL};
        rec *r = &g_chain[g_chain_n];
        memset(r, 0, sizeof *r);
        const char *h = "GET / HTTP/1.1\r\n\r\n";
        assert_int_equal(
            net_exchange_start(&r->x, g_chain_env->pool, h, strlen(h), 0, false, &cb, r), 0);
        assert_int_equal(net_exchange_end(r->x), 0);
    }
}

static void
test_reuse_from_on_end(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}};
    env e;
    env_open(&e, st, 3, NULL, NULL);
    g_chain_env = &e;
    g_chain_n = 0;
    static const net_exchange_cbs cb = {on_head, on_data, chain_end, on_error, NULL};
    memset(g_chain, 0, sizeof g_chain);
    const char *h = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(
        net_exchange_start(&g_chain[0].x, e.pool, h, strlen(h), 0, false, &cb, &g_chain[0]), 0);
    assert_int_equal(net_exchange_end(g_chain[0].x), 0);
    run_until(&e.loop, &g_chain[2].done);
    assert_int_equal(g_chain[2].ends, 1);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 1);
    assert_int_equal(ps.reuses, 2);
    env_close(&e);
}

static void
test_framings(void **state)
{
    (void) state;
    static const step st[] = {
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n"
         "Trailer: t\r\n\r\n",
         0, A_KEEP},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, A_KEEP},
        {"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil close", 0, A_CLOSE},
        {"HTTP/1.0 200 OK\r\n\r\nold", 0, A_CLOSE},
    };
    env e;
    env_open(&e, st, 4, NULL, NULL);
    rec a, b, c, d;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.cl, -1);
    assert_int_equal(a.body_len, 5);
    assert_memory_equal(a.body, "abcde", 5);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    assert_memory_equal(b.body, "hello", 5);
    get(&e, &c);
    run_until(&e.loop, &c.done);
    assert_int_equal(c.ends, 1);
    assert_int_equal(c.errors, 0);
    assert_int_equal(c.cl, -2);
    assert_false(c.ka);
    assert_int_equal(c.body_len, 11);
    assert_memory_equal(c.body, "until close", 11);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.idle, 0); /* close-delimited: not reused */
    get(&e, &d);
    run_until(&e.loop, &d.done);
    assert_int_equal(d.ends, 1);
    assert_int_equal(d.cl, -2);
    assert_memory_equal(d.body, "old", 3);
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 2);
    env_close(&e);
}

static void
test_no_body(void **state)
{
    (void) state;
    static const step st[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0, A_KEEP},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 0, A_KEEP},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0, A_KEEP},
        {OK2, 0, A_KEEP},
    };
    env e;
    env_open(&e, st, 4, NULL, NULL);
    rec a, b, c, d;
    start(&e, &a, "HEAD / HTTP/1.1\r\n\r\n", 0, true);
    assert_int_equal(net_exchange_end(a.x), 0);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.cl, 0);
    assert_int_equal(a.total, 0);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    assert_int_equal(b.status[0], 204);
    assert_int_equal(b.cl, 0);
    get(&e, &c);
    run_until(&e.loop, &c.done);
    assert_int_equal(c.ends, 1);
    assert_int_equal(c.status[0], 304);
    assert_int_equal(c.total, 0);
    get(&e, &d);
    run_until(&e.loop, &d.done);
    assert_int_equal(d.ends, 1);
    assert_memory_equal(d.body, "ok", 2);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 1);
    env_close(&e);
}

static void
test_continue(void **state)
{
    (void) state;
    static const step st[] = {
        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" OK2, 0,
         A_KEEP}};
    env e;
    env_open(&e, st, 1, NULL, NULL);
    rec a;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.heads, 3);
    assert_int_equal(a.status[0], 100);
    assert_int_equal(a.status[1], 103);
    assert_int_equal(a.status[2], 200);
    assert_memory_equal(a.body, "ok", 2);
    env_close(&e);
}

static void
test_request_bodies(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}};
    env e;
    env_open(&e, st, 2, NULL, NULL);
    rec a, b;
    start(&e, &a, "POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 11, false);
    assert_int_equal(net_exchange_write(a.x, "hello ", 6), 0);
    assert_int_equal(net_exchange_write(a.x, "world!", 6), DBAO_EINVAL); /* over body_len */
    assert_int_equal(net_exchange_end(a.x), DBAO_EINVAL);                /* short */
    assert_int_equal(net_exchange_write(a.x, "world", 5), 0);
    assert_int_equal(net_exchange_end(a.x), 0);
    assert_int_equal(net_exchange_end(a.x), DBAO_EINVAL);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    start(&e, &b, "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", -1, false);
    assert_int_equal(net_exchange_write(b.x, "abc", 3), 0);
    char big[300];
    memset(big, 'z', sizeof big);
    assert_int_equal(net_exchange_write(b.x, big, sizeof big), 0);
    assert_int_equal(net_exchange_end(b.x), 0);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    char want[1024];
    int n = snprintf(want, sizeof want,
                     "POST /a HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"
                     "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                     "12c\r\n%.300s\r\n0\r\n\r\n",
                     big);
    assert_int_equal(e.s.got_len, (size_t) n);
    assert_memory_equal(e.s.got, want, (size_t) n);
    env_close(&e);
}

static void
test_large_pause_resume(void **state)
{
    (void) state;
    static const step st[] = {{NULL, 0, A_BIG}, {OK2, 0, A_KEEP}};
    env e;
    env_open(&e, st, 2, NULL, NULL);
    rec a, b;
    get(&e, &a);
    a.pause_each = true;
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_int_equal(a.total, BIG_LEN);
    assert_true(a.pauses > 1);
    uint32_t want = 0;
    for (size_t off = 0; off < BIG_LEN; off += 65536) {
        for (size_t k = 0; k < 65536; k++) {
            want = want * 31 + (uint8_t) (k * 7 + 3);
        }
    }
    assert_int_equal(a.sum, want);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 1);
    env_close(&e);
}

/* a pause in on_head holds back the body (and the end) until resume */
static void
test_pause_in_head(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP}, {"HTTP/1.1 204 No Content\r\n\r\n", 0, A_KEEP}};
    env e;
    env_open(&e, st, 2, NULL, NULL);
    rec a, b;
    get(&e, &a);
    a.pause_in_head = true;
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_memory_equal(a.body, "ok", 2);
    get(&e, &b);
    b.pause_in_head = true;
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 1);
    env_close(&e);
}

/* request body streamed like the gateway does: write until more than 256 KiB is queued, then
 * wait for on_drain */
typedef struct feeder {
    rec r;
    size_t sent, total;
    int drains;
    uint8_t blk[32768];
} feeder;

static void
feed_body(feeder *f)
{
    while (f->sent < f->total && net_exchange_queued(f->r.x) <= 256 * 1024) {
        size_t n = f->total - f->sent < sizeof f->blk ? f->total - f->sent : sizeof f->blk;
        for (size_t i = 0; i < n; i++) {
            f->blk[i] = (uint8_t) ((f->sent + i) * 13);
        }
        assert_int_equal(net_exchange_write(f->r.x, f->blk, n), 0);
        f->sent += n;
    }
    if (f->sent == f->total) {
        assert_int_equal(net_exchange_end(f->r.x), 0);
        f->sent++; /* once */
    }
}

static void
feeder_drain(net_exchange *x, void *arg)
{
    (void) x;
    feeder *f = arg;
    f->drains++;
    assert_true(net_exchange_queued(x) < 64 * 1024);
    if (f->sent <= f->total) {
        feed_body(f);
    }
}

static void
test_request_drain(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP}};
    env e;
    env_open(&e, st, 1, NULL, NULL);
    static feeder f;
    memset(&f, 0, sizeof f);
    f.total = 3u * 1024u * 1024u;
    f.r.loop = &e.loop;
    static const net_exchange_cbs cb = {on_head, on_data, on_end, on_error, feeder_drain};
    const char *h = "PUT /big HTTP/1.1\r\nContent-Length: 3145728\r\n\r\n";
    assert_int_equal(
        net_exchange_start(&f.r.x, e.pool, h, strlen(h), (int64_t) f.total, false, &cb, &f.r), 0);
    feed_body(&f);
    assert_int_equal(f.drains, 0);
    run_until(&e.loop, &f.r.done);
    assert_int_equal(f.r.ends, 1);
    assert_true(f.drains >= 1);
    size_t hl = strlen(h);
    assert_int_equal(e.s.got_len, hl + f.total);
    for (size_t i = 0; i < f.total; i += 4099) {
        assert_int_equal((uint8_t) e.s.got[hl + i], (uint8_t) (i * 13));
    }
    env_close(&e);
}

static void
test_refused(void **state)
{
    (void) state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* a port that was just free */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *) &a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *) &a, &al);
    close(fd);
    net_pool_opts o = {.host = "127.0.0.1", .port = ntohs(a.sin_port)};
    net_pool *p;
    assert_int_equal(net_pool_new(&p, &loop, &o, NULL), 0);
    rec r;
    memset(&r, 0, sizeof r);
    const char *h = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(net_exchange_start(&r.x, p, h, strlen(h), 0, false, &CBS, &r), 0);
    assert_int_equal(net_exchange_end(r.x), 0);
    assert_int_equal(r.errors, 0); /* never from inside start/end */
    run_until(&loop, &r.done);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, DBAO_EIO);
    assert_true(r.flags & NET_X_NOT_SENT);
    assert_false(r.flags & NET_X_REUSED);
    net_pool_stats ps;
    net_pool_get_stats(p, &ps);
    assert_int_equal(ps.connect_errors, 1);
    net_pool_close(p, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void
test_read_timeout(void **state)
{
    (void) state;
    static const step st[] = {{NULL, 0, A_HANG}};
    net_pool_opts o = {.read_timeout_ms = 100};
    env e;
    env_open(&e, st, 1, &o, NULL);
    rec a;
    get(&e, &a);
    uint64_t t0 = uv_now(&e.loop);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.errors, 1);
    assert_int_equal(a.err, -ETIMEDOUT);
    assert_true(a.flags & NET_X_NO_RESPONSE);
    assert_true(uv_now(&e.loop) - t0 >= 90);
    env_close(&e);
}

static void
test_idle_close_noticed(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_CLOSE}, {OK2, 0, A_KEEP}};
    env e;
    env_open(&e, st, 2, NULL, NULL);
    rec a, b;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    /* the upstream closes the idle connection: the pool notices */
    net_pool_stats ps;
    for (int i = 0; i < 200; i++) {
        net_pool_get_stats(e.pool, &ps);
        if (ps.idle == 0) {
            break;
        }
        run_ms(&e.loop, 5);
    }
    assert_int_equal(ps.idle, 0);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 2);
    env_close(&e);
}

static void
test_idle_close_race(void **state)
{
    (void) state;
    /* the upstream reads the second request on the kept-alive connection, then closes it
     * without a byte: as if it had closed just before the request arrived */
    static const step st[] = {{OK2, 0, A_KEEP}, {NULL, 0, A_NOREPLY_CLOSE}};
    env e;
    env_open(&e, st, 2, NULL, NULL);
    rec a, b;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.errors, 1);
    assert_int_equal(b.err, DBAO_EIO);
    assert_int_equal(b.flags & (NET_X_REUSED | NET_X_NO_RESPONSE),
                     NET_X_REUSED | NET_X_NO_RESPONSE);
    assert_false(b.flags & NET_X_NOT_SENT);
    env_close(&e);
}

static void
test_malformed(void **state)
{
    (void) state;
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: "
         "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
         0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nX: a\0b\r\nContent-Length: 2\r\n\r\nok", 43},
        {"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 2\r\n\r\nok", 0},
        {"HTTP/1.1 200 OK\rContent-Length: 2\r\n\r\nok", 0},
        {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
         0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "chunked\r\n\r\n0\r\n\r\n",
         0},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nok", 0},
        {"HTTP/2.0 200 OK\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\n:ransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\rxok\r\n0\r\n\r\n", 0},
        /* obs-fold: in the framing header, and in any other */
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 0},
        {"HTTP/1.1 200 OK\r\nX-A: a\r\n\tb\r\nContent-Length: 2\r\n\r\nok", 0},
        {NULL, 0}, /* too many headers: filled in below */
        {NULL, 0}, /* head too large */
    };
    size_t nbad = sizeof bad / sizeof bad[0];
    static char many[4096], huge[20000];
    size_t n = (size_t) snprintf(many, sizeof many, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < 9; i++) {
        n += (size_t) snprintf(many + n, sizeof many - n, "X-%d: v\r\n", i);
    }
    snprintf(many + n, sizeof many - n, "Content-Length: 0\r\n\r\n");
    n = (size_t) snprintf(huge, sizeof huge, "HTTP/1.1 200 OK\r\nX: ");
    memset(huge + n, 'a', 5000);
    snprintf(huge + n + 5000, sizeof huge - n - 5000, "\r\nContent-Length: 0\r\n\r\n");
    for (size_t i = 0; i < nbad; i++) {
        step st[1] = {{bad[i].bytes, bad[i].len, A_KEEP}};
        if (i == nbad - 2) {
            st[0].bytes = many;
        } else if (i == nbad - 1) {
            st[0].bytes = huge;
        }
        net_pool_opts o = {.headers_num_max = 8, .header_max = 4096};
        env e;
        env_open(&e, st, 1, &o, NULL);
        rec a;
        get(&e, &a);
        run_until(&e.loop, &a.done);
        if (a.errors != 1 || a.err != DBAO_EFORMAT) {
            fail_msg("case %zu: errors %d err %d ends %d", i, a.errors, a.err, a.ends);
        }
        assert_int_equal(a.ends, 0);
        net_pool_stats ps;
        net_pool_get_stats(e.pool, &ps);
        assert_int_equal(ps.idle, 0);
        env_close(&e);
    }
}

static void
test_extra_bytes(void **state)
{
    (void) state;
    /* the 2nd step is never asked for: the upstream keeps the connection open */
    static const step st[] = {{OK2 "HTTP/1.1 200 OK\r\n", 0, A_KEEP}, {OK2, 0, A_KEEP}};
    env e;
    env_open(&e, st, 2, NULL, NULL);
    rec a;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_memory_equal(a.body, "ok", 2);
    run_ms(&e.loop, 20);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.idle, 0);
    env_close(&e);
}

static void
test_fifo_queue(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}, {OK2, 0, A_KEEP}};
    net_pool_opts o = {.max_conns = 1};
    env e;
    env_open(&e, st, 3, &o, NULL);
    rec a, b, c;
    g_order = 0;
    get(&e, &a);
    get(&e, &b);
    get(&e, &c);
    uv_run(&e.loop, UV_RUN_NOWAIT);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.queued, 2);
    assert_int_equal(ps.active, 1);
    run_until(&e.loop, &c.done);
    assert_int_equal(a.order, 1);
    assert_int_equal(b.order, 2);
    assert_int_equal(c.order, 3);
    assert_int_equal(a.ends + b.ends + c.ends, 3);
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 1);
    assert_int_equal(e.s.accepted, 1);
    env_close(&e);
}

static void
test_close_active_and_queued(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP}};
    net_pool_opts o = {.max_conns = 1};
    env e;
    env_open(&e, st, 1, &o, NULL);
    rec a, b;
    get(&e, &a);
    get(&e, &b);
    uv_run(&e.loop, UV_RUN_NOWAIT);
    net_pool_close(e.pool, pool_done, &e);
    assert_int_equal(b.errors, 0); /* not from inside close */
    run_until(&e.loop, &e.closed);
    assert_int_equal(a.ends, 1);
    assert_int_equal(b.errors, 1);
    assert_int_equal(b.err, -ECANCELED);
    assert_true(b.flags & NET_X_NOT_SENT);
    assert_true(b.order < a.order);
    srv_stop(&e.s);
    assert_int_equal(uv_loop_close(&e.loop), 0);
}

static void
test_abort(void **state)
{
    (void) state;
    static const step st[] = {{"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 0, A_TRICKLE}};
    env e;
    env_open(&e, st, 1, NULL, NULL);
    rec a;
    get(&e, &a);
    a.abort_on_data = true;
    run_until(&e.loop, &a.done);
    assert_int_equal(a.datas, 1);
    run_ms(&e.loop, 50);
    assert_int_equal(a.ends + a.errors, 0);
    /* abort from outside a callback, while queued behind nothing: before any I/O */
    rec b;
    get(&e, &b);
    net_exchange_abort(b.x);
    run_ms(&e.loop, 20);
    assert_int_equal(b.ends + b.errors + b.heads, 0);
    env_close(&e);
}

/* ---- TLS ---- */

static SSL_CTX *
make_server_ctx(void)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(k);
    X509 *c = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(c), 1);
    X509_gmtime_adj(X509_getm_notBefore(c), -60);
    X509_gmtime_adj(X509_getm_notAfter(c), 3600);
    X509_set_pubkey(c, k);
    X509_NAME *n = X509_get_subject_name(c);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *) "up.test", -1, -1, 0);
    X509_set_issuer_name(c, n);
    assert_true(X509_sign(c, k, EVP_sha256()) > 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(ctx, c), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, k), 1);
    X509_free(c);
    EVP_PKEY_free(k);
    return ctx;
}

static void
test_tls(void **state)
{
    (void) state;
    static const step st[] = {{OK2, 0, A_KEEP},
                              {"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", 0, A_KEEP}};
    SSL_CTX *sctx = make_server_ctx();
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
    net_pool_opts o = {.tls_ctx = cctx, .tls_sni = "up.test"};
    env e;
    env_open(&e, st, 2, &o, sctx);
    rec a, b;
    get(&e, &a);
    run_until(&e.loop, &a.done);
    assert_int_equal(a.ends, 1);
    assert_memory_equal(a.body, "ok", 2);
    get(&e, &b);
    run_until(&e.loop, &b.done);
    assert_int_equal(b.ends, 1);
    assert_memory_equal(b.body, "abc", 3);
    net_pool_stats ps;
    net_pool_get_stats(e.pool, &ps);
    assert_int_equal(ps.connects, 1);
    assert_true(memmem(e.s.got, e.s.got_len, "GET / HTTP/1.1", 14) != NULL);
    env_close(&e);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

/* ---- the parser alone ---- */

typedef struct pres {
    int heads, dones, infos;
    size_t body;
    int err;
} pres;

static pres
parse_all(const char *in, size_t len, size_t step_size, bool head_only)
{
    net_resp r;
    pres out = {0};
    assert_int_equal(net__resp_init(&r, 4096, 16), 0);
    net__resp_reset(&r, head_only);
    size_t off = 0;
    while (off < len && out.err == 0 && out.dones == 0) {
        size_t n = len - off < step_size ? len - off : step_size;
        size_t fed = 0;
        bool again = false;
        while ((fed < n || again) && out.dones == 0) {
            size_t used;
            net_resp_ev ev;
            int rc = net__resp_feed(&r, (const uint8_t *) in + off + fed, n - fed, &used, &ev);
            fed += used;
            if (ev.head) {
                out.heads++;
            }
            if (rc < 0) {
                out.err = rc;
                break;
            }
            again = rc == NET_RESP_DATA;
            if (rc == NET_RESP_DATA) {
                out.body += ev.len;
            } else if (rc == NET_RESP_DONE) {
                out.dones++;
            } else if (rc == NET_RESP_INFO) {
                out.infos++;
            } else {
                assert_int_equal(fed, n);
            }
        }
        off += n;
    }
    if (out.err == 0 && out.dones == 0 && net__resp_eof(&r) == NET_RESP_DONE) {
        out.dones++;
    }
    net__resp_free(&r);
    return out;
}

static void
test_parser_splits(void **state)
{
    (void) state;
    const char *chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n"
                          "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    for (size_t step_size = 1; step_size < 80; step_size++) {
        pres p = parse_all(chunked, strlen(chunked), step_size, false);
        assert_int_equal(p.err, 0);
        assert_int_equal(p.heads, 1);
        assert_int_equal(p.dones, 1);
        assert_int_equal(p.body, 11);
    }
    const char *cont =
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    for (size_t step_size = 1; step_size < 70; step_size++) {
        pres p = parse_all(cont, strlen(cont), step_size, false);
        assert_int_equal(p.err, 0);
        assert_int_equal(p.heads, 2);
        assert_int_equal(p.infos, 1);
        assert_int_equal(p.body, 3);
    }
    /* HEAD: no body even with Content-Length */
    const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    pres p = parse_all(head, strlen(head), 1, true);
    assert_int_equal(p.dones, 1);
    assert_int_equal(p.body, 0);
    /* truncated body: EIO at EOF */
    const char *cut = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc";
    p = parse_all(cut, strlen(cut), 7, false);
    assert_int_equal(p.dones, 0);
    /* bare CR in framing: after the status line, a header line, a chunk size */
    const char *cr1 = "HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n";
    const char *cr2 = "HTTP/1.1 200 OK\r\nX: 1\rContent-Length: 0\r\n\r\n";
    const char *cr3 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\rxok\r\n0\r\n\r\n";
    const char *cr4 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\rx0\r\n\r\n";
    const char *crs[] = {cr1, cr2, cr3, cr4};
    for (size_t i = 0; i < 4; i++) {
        for (size_t step_size = 1; step_size < 8; step_size++) {
            p = parse_all(crs[i], strlen(crs[i]), step_size, false);
            assert_int_equal(p.err, DBAO_EFORMAT);
        }
    }
    /* a CR inside a body is data */
    const char *crb = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\na\rb";
    p = parse_all(crb, strlen(crb), 1, false);
    assert_int_equal(p.err, 0);
    assert_int_equal(p.body, 3);
    /* an empty header value is fine */
    const char *empty = "HTTP/1.1 200 OK\r\nX:\r\nContent-Length: 0\r\n\r\n";
    p = parse_all(empty, strlen(empty), 2, false);
    assert_int_equal(p.err, 0);
    assert_int_equal(p.dones, 1);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parser_splits),
        cmocka_unit_test(test_keepalive_reuse),
        cmocka_unit_test(test_reuse_from_on_end),
        cmocka_unit_test(test_conn_limits),
        cmocka_unit_test(test_framings),
        cmocka_unit_test(test_no_body),
        cmocka_unit_test(test_continue),
        cmocka_unit_test(test_request_bodies),
        cmocka_unit_test(test_large_pause_resume),
        cmocka_unit_test(test_pause_in_head),
        cmocka_unit_test(test_request_drain),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_read_timeout),
        cmocka_unit_test(test_idle_close_noticed),
        cmocka_unit_test(test_idle_close_race),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_extra_bytes),
        cmocka_unit_test(test_fifo_queue),
        cmocka_unit_test(test_close_active_and_queued),
        cmocka_unit_test(test_abort),
        cmocka_unit_test(test_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
