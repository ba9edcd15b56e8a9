/* test_server.c: the gateway server in process: the proxy path against the built-in demo
 * upstream, the step chain (answer, asynchronous resume, response headers, body filters, log
 * hooks), gateway-made errors and reload. Real sockets on 127.0.0.1, ephemeral ports. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "dengbao/gateway.h"

typedef struct resp {
    int status;
    char head[8192];
    char *body;
    size_t body_len;
} resp;

static int
connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *) &a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* read_all reads until the peer closes (requests are sent with Connection: close) */
static void
request(uint16_t port, const char *raw, resp *r)
{
    int fd = connect_to(port);
    size_t n = strlen(raw);
    assert_int_equal(write(fd, raw, n), (ssize_t) n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t k = read(fd, buf + len, cap - len - 1);
        if (k <= 0) {
            break;
        }
        len += (size_t) k;
    }
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    size_t hl = (size_t) (sep - buf);
    assert_true(hl < sizeof r->head);
    memcpy(r->head, buf, hl);
    r->head[hl] = 0;
    r->status = atoi(buf + 9);
    char *body = sep + 4;
    size_t blen = len - hl - 4;
    if (strstr(r->head, "Transfer-Encoding: chunked")) {
        /* de-chunk */
        char *out = malloc(blen + 1);
        size_t ol = 0;
        char *p = body;
        for (;;) {
            unsigned long sz = strtoul(p, &p, 16);
            p = strstr(p, "\r\n") + 2;
            if (sz == 0) {
                break;
            }
            memcpy(out + ol, p, sz);
            ol += sz;
            p += sz + 2;
        }
        out[ol] = 0;
        free(buf);
        r->body = out;
        r->body_len = ol;
        return;
    }
    r->body = malloc(blen + 1);
    memcpy(r->body, body, blen);
    r->body[blen] = 0;
    r->body_len = blen;
    free(buf);
}

static void
resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* ---- steps ---- */

static atomic_int logged;
static atomic_int last_status;

static int
step_deny(gw_ctx *ctx, void *arg)
{
    (void) arg;
    if (strcmp(gw_ctx_path(ctx), "/deny") == 0) {
        gw_ctx_respond(ctx, 403, "text/plain", "denied\n", 7);
        return GW_DONE;
    }
    gw_ctx_add_response_header(ctx, "X-Step", "seen");
    gw_ctx_add_upstream_header(ctx, "X-Auth-Identity", "tester");
    gw_ctx_set_identity(ctx, "tester");
    return GW_NEXT;
}

static void
on_timer_close(uv_handle_t *h)
{
    free(h);
}

static void
on_async_timer(uv_timer_t *t)
{
    gw_ctx *ctx = t->data;
    uv_close((uv_handle_t *) t, on_timer_close);
    gw_ctx_resume(ctx, GW_NEXT);
}

static int
step_async(gw_ctx *ctx, void *arg)
{
    (void) arg;
    if (strncmp(gw_ctx_path(ctx), "/patients", 9) != 0) {
        return GW_NEXT;
    }
    uv_loop_t *loop = net_worker_loop(net_request_worker(gw_ctx_request(ctx)));
    uv_timer_t *t = malloc(sizeof *t);
    uv_timer_init(loop, t);
    t->data = ctx;
    uv_timer_start(t, on_async_timer, 5, 0);
    return GW_ASYNC;
}

static void
upper_head(gw_ctx *ctx, int status, void *arg)
{
    (void) arg;
    if (status == 200 && strcmp(gw_ctx_path(ctx), "/patients/1") == 0) {
        gw_ctx_filter_body(ctx);
    }
}

static int
upper_body(gw_ctx *ctx, const uint8_t *data, size_t len, bool last, void *arg)
{
    (void) arg;
    (void) last;
    char tmp[4096];
    while (len) {
        size_t n = len < sizeof tmp ? len : sizeof tmp;
        for (size_t i = 0; i < n; i++) {
            tmp[i] = (char) toupper(data[i]);
        }
        int rc = gw_ctx_emit(ctx, tmp, n);
        if (rc != 0) {
            return rc;
        }
        data += n;
        len -= n;
    }
    return 0;
}

static void
log_step(gw_ctx *ctx, void *arg)
{
    (void) arg;
    atomic_fetch_add(&logged, 1);
    atomic_store(&last_status, gw_ctx_status(ctx));
}

static const gw_step steps[] = {
    {.name = "deny", .on_request = step_deny},
    {.name = "async", .on_request = step_async},
    {.name = "upper", .on_response_head = upper_head, .on_response_body = upper_body},
    {.name = "log", .on_log = log_step},
};

/* ---- fixture ---- */

typedef struct fx {
    net_server *demo;
    gw_server *gw;
    uint16_t port;
} fx;

static int
setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    dbao_err err = {0};
    assert_int_equal(gw_demo_start(&f->demo, "127.0.0.1", 0, &err), 0);
    char up[64];
    snprintf(up, sizeof up, "127.0.0.1:%u", net_server_port(f->demo));
    const char *ups[] = {up};
    gw_config *cfg;
    assert_int_equal(gw_config_quick(&cfg, "127.0.0.1:0", ups, 1, 2, NULL, NULL, &err), 0);
    gw_server_opts o = {.steps = steps, .num_steps = 4};
    int rc = gw_server_new(&f->gw, cfg, &o, &err);
    if (rc != 0) {
        fprintf(stderr, "%s\n", err.msg);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(gw_server_start(f->gw, &err), 0);
    f->port = gw_server_listener_port(f->gw, 0);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx *f = *state;
    gw_server_free(f->gw);
    net_server_free(f->demo);
    free(f);
    return 0;
}

static void
test_proxy_and_chain(void **state)
{
    fx *f = *state;
    resp r = {0};
    atomic_store(&logged, 0);
    request(f->port, "GET /patients/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "X-Step: seen"));
    assert_non_null(strstr(r.body, "\"id\""));
    resp_free(&r);

    request(f->port, "GET /deny HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.body, "denied\n");
    resp_free(&r);

    /* body filter: upper-cased, sent chunked */
    request(f->port, "GET /patients/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "Transfer-Encoding: chunked"));
    assert_non_null(strstr(r.body, "\"ID\""));
    assert_null(strstr(r.body, "\"id\""));
    resp_free(&r);

    /* upstream 404 passes through */
    request(f->port, "GET /patients/999999 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    resp_free(&r);

    /* gateway-made 400 for a path above the root */
    request(f->port, "GET /../etc/passwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 400);
    resp_free(&r);

    /* POST with a body through the echo endpoint */
    request(f->port,
            "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 11\r\n"
            "X-Forwarded-For: 6.6.6.6\r\n\r\nhello world",
            &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "hello world"));
    assert_null(strstr(r.body, "6.6.6.6")); /* an untrusted peer's XFF is not believed */
    resp_free(&r);

    /* on_log ran for each request (the last one may still be logging: poll) */
    for (int i = 0; i < 100 && atomic_load(&logged) < 6; i++) {
        usleep(10000);
    }
    assert_int_equal(atomic_load(&logged), 6);
}

static void
test_keepalive_many(void **state)
{
    fx *f = *state;
    int fd = connect_to(f->port);
    char buf[65536];
    for (int i = 0; i < 200; i++) {
        const char *rq = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
        assert_int_equal(write(fd, rq, strlen(rq)), (ssize_t) strlen(rq));
        /* read one response: head, then Content-Length bytes */
        size_t len = 0;
        char *sep = NULL;
        while (sep == NULL) {
            ssize_t k = read(fd, buf + len, sizeof buf - len - 1);
            assert_true(k > 0);
            len += (size_t) k;
            buf[len] = 0;
            sep = strstr(buf, "\r\n\r\n");
        }
        assert_int_equal(atoi(buf + 9), 200);
        char *cl = strcasestr(buf, "content-length:");
        assert_non_null(cl);
        size_t want = (size_t) (sep + 4 - buf) + (size_t) atoi(cl + 15);
        while (len < want) {
            ssize_t k = read(fd, buf + len, sizeof buf - len - 1);
            assert_true(k > 0);
            len += (size_t) k;
        }
        assert_int_equal(len, want);
    }
    close(fd);
}

static void
test_reload_and_down(void **state)
{
    fx *f = *state;
    dbao_err err = {0};
    /* reload onto a dead upstream: 502, then back onto the demo */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    bind(s, (struct sockaddr *) &a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *) &a, &al);
    close(s); /* nothing listens there now */
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%u", ntohs(a.sin_port));
    const char *ups[] = {dead};
    gw_config *cfg;
    assert_int_equal(gw_config_quick(&cfg, "127.0.0.1:0", ups, 1, 2, NULL, NULL, &err), 0);
    cfg->listeners[0].addr.port = 0;
    assert_int_equal(gw_server_reload(f->gw, cfg, &err), 0);
    resp r = {0};
    request(f->port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_true(r.status == 502 || r.status == 503);
    resp_free(&r);

    /* a configuration with other listeners is refused; the running one stays */
    assert_int_equal(gw_config_quick(&cfg, "127.0.0.1:1", ups, 1, 2, NULL, NULL, &err), 0);
    assert_int_equal(gw_server_reload(f->gw, cfg, &err), DBAO_EINVAL);

    char up[64];
    snprintf(up, sizeof up, "127.0.0.1:%u", net_server_port(f->demo));
    const char *ups2[] = {up};
    assert_int_equal(gw_config_quick(&cfg, "127.0.0.1:0", ups2, 1, 2, NULL, NULL, &err), 0);
    assert_int_equal(gw_server_reload(f->gw, cfg, &err), 0);
    request(f->port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_proxy_and_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_and_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
