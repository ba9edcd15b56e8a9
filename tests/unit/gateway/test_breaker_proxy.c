/* test_breaker_proxy.c: the gateway's resilience and the context API of issue 6, in process.
 *
 * Two small upstreams (net_server in buffered mode on ephemeral ports: "primary", whose answer
 * status the test sets, and "backup") sit behind a gateway built from YAML with the breaker and
 * fallback fields set directly on the parsed structures (so the proxy is tested on its own,
 * whatever the parser's state). Each case starts its own gateway (one worker, so that the
 * per-worker last-good cache is deterministic) with test steps that set a principal from a test
 * header, buffer bodies (gw_ctx_read_body), remove headers and note what on_log saw:
 *   - the breaker opens after min_requests 5xx answers; fail mode answers 503 + Retry-After;
 *     after open_ms a half-open probe that succeeds closes it; on_breaker and the metrics see
 *     every transition;
 *   - static fallback: status, type, body, Retry-After, X-Dengbao-Fallback;
 *   - upstream fallback: the backup cluster answers;
 *   - cache fallback: the last good answer for the same subject is served with Age, another
 *     subject gets 503, Set-Cookie / no-store answers are never kept;
 *   - gw_ctx_read_body: the upstream gets exactly the bytes, with Content-Length, also for a
 *     chunked request; over the route's body_max: 413;
 *   - gw_ctx_remove_upstream_header: exact and prefix;
 *   - mTLS: gw_ctx_peer()->cert_sha256 is SHA-256 of the client certificate's DER;
 *   - worker hooks run once per worker, start and stop.
 * Real sockets on 127.0.0.1.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
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
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dengbao/gateway.h"
#include "dengbao/zt.h"

/* ---- HTTP client helpers ---- */

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

static void
parse_resp(char *buf, size_t len, resp *r)
{
    char *sep = strstr(buf, "\r\n\r\n");
    assert_non_null(sep);
    size_t hl = (size_t) (sep - buf);
    assert_true(hl < sizeof r->head);
    memcpy(r->head, buf, hl);
    r->head[hl] = 0;
    r->status = atoi(buf + 9);
    char *body = sep + 4;
    size_t blen = len - hl - 4;
    r->body = malloc(blen + 1);
    size_t ol = 0;
    if (strstr(r->head, "Transfer-Encoding: chunked")) {
        char *p = body;
        for (;;) {
            unsigned long sz = strtoul(p, &p, 16);
            p = strstr(p, "\r\n") + 2;
            if (sz == 0) {
                break;
            }
            memcpy(r->body + ol, p, sz);
            ol += sz;
            p += sz + 2;
        }
    } else {
        memcpy(r->body, body, blen);
        ol = blen;
    }
    r->body[ol] = 0;
    r->body_len = ol;
}

/* request sends raw bytes (with Connection: close) and reads until the peer closes */
static void
request_n(uint16_t port, const char *raw, size_t n, resp *r)
{
    int fd = connect_to(port);
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
    parse_resp(buf, len, r);
    free(buf);
}

static void
request(uint16_t port, const char *raw, resp *r)
{
    request_n(port, raw, strlen(raw), r);
}

/* get sends a GET of `path` (optional subject header) */
static void
get(uint16_t port, const char *path, const char *sub, resp *r)
{
    char raw[1024];
    snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s%s%s\r\n", path,
             sub ? "X-Test-Sub: " : "", sub ? sub : "", sub ? "\r\n" : "");
    request(port, raw, r);
}

static void
resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

static uint16_t
free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(s, (struct sockaddr *) &a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *) &a, &al);
    close(s);
    return ntohs(a.sin_port);
}

/* ---- the upstreams ---- */

static atomic_int up_status = 200; /* what "primary" answers on ordinary paths */
static atomic_int up_hits;

static void
primary_handler(net_request *req, void *arg)
{
    (void) arg;
    atomic_fetch_add(&up_hits, 1);
    const char *path = net_request_path(req);
    if (strcmp(path, "/echo") == 0 || strncmp(path, "/rb", 3) == 0) {
        size_t len;
        const uint8_t *b = net_request_body(req, &len);
        const char *cl = net_request_header(req, "content-length");
        const char *te = net_request_header(req, "transfer-encoding");
        net_request_add_header(req, "X-Got-CL", cl ? cl : "none");
        net_request_add_header(req, "X-Got-TE", te ? te : "none");
        net_request_respond(req, 200, "application/octet-stream", b, len);
        return;
    }
    if (strcmp(path, "/hdrs") == 0) {
        char out[8192];
        size_t n = 0;
        for (size_t i = 0; i < net_request_num_headers(req); i++) {
            const char *name, *value;
            net_request_header_at(req, i, &name, &value);
            n += (size_t) snprintf(out + n, sizeof out - n, "%s: %s\n", name, value);
            if (n >= sizeof out) {
                n = sizeof out - 1;
                break;
            }
        }
        net_request_respond(req, 200, "text/plain", out, n);
        return;
    }
    int st = atomic_load(&up_status);
    if (strstr(path, "cookie")) {
        net_request_add_header(req, "Set-Cookie", "s=1");
    }
    if (strstr(path, "nostore")) {
        net_request_add_header(req, "Cache-Control", "no-store");
    }
    const char *sub = net_request_header(req, "x-test-sub");
    char body[512];
    int n = snprintf(body, sizeof body, "{\"path\":\"%s\",\"sub\":\"%s\",\"status\":%d}", path,
                     sub ? sub : "-", st);
    net_request_add_header(req, "X-Upstream", "primary");
    net_request_respond(req, st, "application/json", body, (size_t) n);
}

static void
backup_handler(net_request *req, void *arg)
{
    (void) arg;
    net_request_respond(req, 200, "text/plain", "backup", 6);
}

static net_server *primary, *backup;

static net_server *
start_upstream(void (*h)(net_request *, void *))
{
    net_server_opts o = {.host = "127.0.0.1", .port = 0, .workers = 1, .handler = h};
    net_server *s = NULL;
    dbao_err err = {0};
    assert_int_equal(net_server_new(&s, &o, &err), 0);
    assert_int_equal(net_server_start(s, &err), 0);
    return s;
}

/* ---- test steps ---- */

typedef struct pstate {
    gw_principal p;
    char sub[64];
} pstate;

static pthread_mutex_t note_mu = PTHREAD_MUTEX_INITIALIZER;
static char last_fallback[32], last_error[128];
static int last_up_status, last_status;
static atomic_int logged;
static uint8_t rb_copy[8192];
static size_t rb_copy_len;
static int rb_status_seen = 1;
static uint8_t peer_sha[32];
static bool peer_has_sha;
static atomic_int hook_start, hook_stop;
static atomic_uint hook_mask;

static void
rb_done(gw_ctx *ctx, int status, const uint8_t *body, size_t len, void *arg)
{
    (void) arg;
    pthread_mutex_lock(&note_mu);
    rb_status_seen = status;
    rb_copy_len = len < sizeof rb_copy ? len : sizeof rb_copy;
    if (len) {
        memcpy(rb_copy, body, rb_copy_len);
    }
    pthread_mutex_unlock(&note_mu);
    if (status == 0) {
        gw_ctx_resume(ctx, GW_NEXT);
    }
}

static int
st_request(gw_ctx *ctx, void *arg)
{
    (void) arg;
    net_request *req = gw_ctx_request(ctx);
    const char *sub = net_request_header(req, "x-test-sub");
    if (sub) {
        pstate *ps = calloc(1, sizeof *ps);
        snprintf(ps->sub, sizeof ps->sub, "%s", sub);
        ps->p.sub = ps->sub;
        gw_ctx_set_principal(ctx, &ps->p);
        gw_ctx_set_user(ctx, 0, ps);
    }
    const char *path = gw_ctx_path(ctx);
    if (strcmp(path, "/peer") == 0) {
        const net_peer *p = gw_ctx_peer(ctx);
        pthread_mutex_lock(&note_mu);
        peer_has_sha = p->has_cert_sha256;
        memcpy(peer_sha, p->cert_sha256, 32);
        pthread_mutex_unlock(&note_mu);
        gw_ctx_respond(ctx, 200, "text/plain", "peer", 4);
        return GW_DONE;
    }
    if (strncmp(path, "/rm", 3) == 0) {
        assert_int_equal(gw_ctx_remove_upstream_header(ctx, "X-Auth-", true), 0);
        assert_int_equal(gw_ctx_remove_upstream_header(ctx, "x-user", false), 0);
        assert_int_equal(gw_ctx_remove_upstream_header(ctx, "bad name", false), DBAO_EINVAL);
        assert_int_equal(gw_ctx_add_upstream_header(ctx, "X-Auth-Identity", "signed"), 0);
        return GW_NEXT;
    }
    if (strncmp(path, "/rb", 3) == 0) {
        assert_ptr_equal(gw_ctx_loop(ctx), net_worker_loop(net_request_worker(req)));
        assert_int_equal(gw_ctx_read_body(ctx, rb_done, NULL), 0);
        assert_int_equal(gw_ctx_read_body(ctx, rb_done, NULL), DBAO_EINVAL); /* once */
        return GW_ASYNC;
    }
    return GW_NEXT;
}

static void
st_log(gw_ctx *ctx, void *arg)
{
    (void) arg;
    pthread_mutex_lock(&note_mu);
    const char *fb = gw_ctx_fallback(ctx);
    const char *er = gw_ctx_error(ctx);
    snprintf(last_fallback, sizeof last_fallback, "%s", fb ? fb : "");
    snprintf(last_error, sizeof last_error, "%s", er ? er : "");
    last_up_status = gw_ctx_upstream_status(ctx);
    last_status = gw_ctx_status(ctx);
    pthread_mutex_unlock(&note_mu);
    free(gw_ctx_user(ctx, 0));
    atomic_fetch_add(&logged, 1);
}

static void
hook_on_start(unsigned worker, struct uv_loop_s *loop, void *arg)
{
    (void) arg;
    assert_non_null(loop);
    atomic_fetch_add(&hook_start, 1);
    atomic_fetch_or(&hook_mask, 1u << worker);
}

static void
hook_on_stop(unsigned worker, struct uv_loop_s *loop, void *arg)
{
    (void) arg;
    (void) worker;
    assert_non_null(loop);
    atomic_fetch_add(&hook_stop, 1);
}

static const gw_step steps[] = {
    {.name = "test",
     .on_request = st_request,
     .on_log = st_log,
     .on_worker_start = hook_on_start,
     .on_worker_stop = hook_on_stop},
};

/* ---- breaker events ---- */

static int events[32][2];
static int num_events;

static void
on_breaker(void *arg, const char *cluster, int from, int to)
{
    (void) arg;
    pthread_mutex_lock(&note_mu);
    if (strcmp(cluster, "primary") == 0 && num_events < 32) {
        events[num_events][0] = from;
        events[num_events][1] = to;
        num_events++;
    }
    pthread_mutex_unlock(&note_mu);
}

static int
n_events(void)
{
    pthread_mutex_lock(&note_mu);
    int n = num_events;
    pthread_mutex_unlock(&note_mu);
    return n;
}

/* wait_logged waits until on_log has run `n` times in all (the answer may reach the client
 * just before on_log runs) */
static void
wait_logged(int n)
{
    for (int i = 0; i < 500 && atomic_load(&logged) < n; i++) {
        usleep(2000);
    }
    assert_true(atomic_load(&logged) >= n);
}

/* ---- the gateway under test ---- */

typedef struct gwfx {
    gw_server *gw;
    uint16_t port, admin;
} gwfx;

static const char *tls_dir;

/* mkcfg builds the configuration: route "main" (prefix /) -> cluster primary (with a
 * breaker: min 4 calls, 50% errors, open `open_ms`, one probe closes it) and cluster backup,
 * with the given fallback on "main" */
static gw_config *
mkcfg(uint16_t admin, const gw_fallback *fb, bool tls, uint32_t open_ms)
{
    char yaml[2048];
    char tlsconf[512] = "";
    if (tls) {
        snprintf(tlsconf, sizeof tlsconf,
                 "    tls: {cert: %s/srv.pem, key: %s/srv.key, client_ca: %s/ca.pem,\n"
                 "          client_verify: require}\n",
                 tls_dir, tls_dir, tls_dir);
    }
    snprintf(yaml, sizeof yaml,
             "workers: 1\n"
             "listeners:\n"
             "  - listen: \"127.0.0.1:0\"\n"
             "%s"
             "admin: \"127.0.0.1:%u\"\n"
             "clusters:\n"
             "  - name: primary\n"
             "    endpoints: [\"127.0.0.1:%u\"]\n"
             "    retries: 0\n"
             "    health: {passive_failures: 0}\n"
             "  - name: backup\n"
             "    endpoints: [\"127.0.0.1:%u\"]\n"
             "routes:\n"
             "  - name: main\n"
             "    prefix: /\n"
             "    cluster: primary\n"
             "    body_max: 1k\n",
             tlsconf, admin, net_server_port(primary), net_server_port(backup));
    gw_config *cfg = NULL;
    dbao_err err = {0};
    int rc = gw_config_parse(&cfg, yaml, strlen(yaml), "/tmp/test-gw.yaml", &err);
    if (rc != 0) {
        fail_msg("%s", err.msg);
    }
    cfg->clusters[0].breaker = (gw_breaker_conf){.enabled = true,
                                                 .window_ms = 10000,
                                                 .buckets = 10,
                                                 .min_requests = 4,
                                                 .error_permille = 500,
                                                 .open_ms = open_ms,
                                                 .probes = 1,
                                                 .successes = 1};
    if (fb) {
        gw_fallback *d = &cfg->routes[0].fallback;
        free(d->content_type);
        free(d->body);
        *d = *fb;
        d->content_type = fb->content_type ? strdup(fb->content_type) : NULL;
        d->body = fb->body ? strdup(fb->body) : NULL;
    }
    return cfg;
}

static void
gw_start(gwfx *f, const gw_fallback *fb, bool tls)
{
    f->admin = free_port();
    gw_config *cfg = mkcfg(f->admin, fb, tls, 400);
    dbao_err err = {0};
    pthread_mutex_lock(&note_mu);
    num_events = 0;
    pthread_mutex_unlock(&note_mu);
    atomic_store(&up_status, 200);
    gw_server_opts o = {.steps = steps, .num_steps = 1, .on_breaker = on_breaker};
    int rc = gw_server_new(&f->gw, cfg, &o, &err);
    if (rc != 0) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(gw_server_num_workers(f->gw), 1);
    assert_int_equal(gw_server_start(f->gw, &err), 0);
    f->port = gw_server_listener_port(f->gw, 0);
}

/* trip sends 4 requests answered 500 by the primary: the breaker opens */
static void
trip(gwfx *f, const char *sub)
{
    atomic_store(&up_status, 500);
    for (int i = 0; i < 4; i++) {
        resp r = {0};
        get(f->port, "/trip", sub, &r);
        assert_int_equal(r.status, 500);
        assert_non_null(strstr(r.head, "X-Upstream: primary"));
        resp_free(&r);
    }
}

static char *
metrics(gwfx *f)
{
    resp r = {0};
    request(f->admin, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    return r.body;
}

/* ---- cases ---- */

static void
test_breaker_fail_and_close(void **state)
{
    (void) state;
    gwfx f;
    gw_start(&f, NULL, false); /* fallback: fail (the default) */
    resp r = {0};
    trip(&f, NULL);
    assert_int_equal(n_events(), 1);
    assert_int_equal(events[0][0], ZT_CIRCUIT_CLOSED);
    assert_int_equal(events[0][1], ZT_CIRCUIT_OPEN);

    int hits = atomic_load(&up_hits);
    int lg = atomic_load(&logged);
    get(f.port, "/x", NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.head, "Retry-After: 1"));
    assert_non_null(strstr(r.head, "X-Dengbao-Fallback: fail"));
    assert_non_null(strstr(r.body, "circuit breaker open"));
    resp_free(&r);
    assert_int_equal(atomic_load(&up_hits), hits); /* the upstream was not asked */
    wait_logged(lg + 1);
    pthread_mutex_lock(&note_mu);
    assert_string_equal(last_fallback, "fail");
    assert_string_equal(last_error, "circuit breaker open");
    assert_int_equal(last_up_status, 0);
    pthread_mutex_unlock(&note_mu);

    char *m = metrics(&f);
    assert_non_null(strstr(m, "dengbao_gateway_breaker_state{cluster=\"primary\"} 1\n"));
    assert_null(strstr(m, "dengbao_gateway_breaker_state{cluster=\"backup\"}"));
    assert_non_null(strstr(
        m, "dengbao_gateway_breaker_transitions_total{cluster=\"primary\",to=\"open\"} 1\n"));
    assert_non_null(strstr(m, "dengbao_gateway_fallbacks_total{route=\"main\",mode=\"fail\"} 1\n"));
    free(m);

    /* after open_ms: one probe is admitted; its success closes the breaker */
    usleep(450 * 1000);
    atomic_store(&up_status, 200);
    get(f.port, "/probe", NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(n_events(), 3);
    assert_int_equal(events[1][1], ZT_CIRCUIT_HALF_OPEN);
    assert_int_equal(events[2][0], ZT_CIRCUIT_HALF_OPEN);
    assert_int_equal(events[2][1], ZT_CIRCUIT_CLOSED);
    get(f.port, "/again", NULL, &r);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    m = metrics(&f);
    assert_non_null(strstr(m, "dengbao_gateway_breaker_state{cluster=\"primary\"} 0\n"));
    assert_non_null(strstr(
        m, "dengbao_gateway_breaker_transitions_total{cluster=\"primary\",to=\"closed\"} 1\n"));
    free(m);

    /* a failed probe opens it again (the window holds the one success above: the breaker
     * opens after the third error, the fourth call is refused) */
    atomic_store(&up_status, 500);
    for (int i = 0; i < 4; i++) {
        get(f.port, "/trip", NULL, &r);
        assert_int_equal(r.status, i < 3 ? 500 : 503);
        resp_free(&r);
    }
    assert_int_equal(n_events(), 4);
    usleep(450 * 1000);
    get(f.port, "/probe", NULL, &r);
    assert_int_equal(r.status, 500);
    resp_free(&r);
    get(f.port, "/x", NULL, &r);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    assert_int_equal(n_events(), 6);
    assert_int_equal(events[5][0], ZT_CIRCUIT_HALF_OPEN);
    assert_int_equal(events[5][1], ZT_CIRCUIT_OPEN);
    gw_server_free(f.gw);
}

/* a reload keeps an open breaker when the cluster keeps its name and breaker options, and
 * starts a closed one when they change */
static void
test_reload_breaker(void **state)
{
    (void) state;
    gwfx f;
    gw_start(&f, NULL, false);
    trip(&f, NULL);
    dbao_err err = {0};
    assert_int_equal(gw_server_reload(f.gw, mkcfg(f.admin, NULL, false, 400), &err), 0);
    resp r = {0};
    get(f.port, "/x", NULL, &r);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    assert_int_equal(gw_server_reload(f.gw, mkcfg(f.admin, NULL, false, 60000), &err), 0);
    get(f.port, "/x", NULL, &r);
    assert_int_equal(r.status, 500); /* a new, closed breaker: the upstream answers */
    resp_free(&r);
    char *m = metrics(&f);
    assert_non_null(strstr(m, "dengbao_gateway_breaker_state{cluster=\"primary\"} 0\n"));
    free(m);
    gw_server_free(f.gw);
}

static void
test_static(void **state)
{
    (void) state;
    gwfx f;
    gw_fallback fb = {.mode = GW_FALLBACK_STATIC,
                      .status = 200,
                      .content_type = "application/json",
                      .body = "{\"degraded\":true}",
                      .body_len = 17};
    gw_start(&f, &fb, false);
    trip(&f, NULL);
    resp r = {0};
    int lg = atomic_load(&logged);
    get(f.port, "/x", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"degraded\":true}");
    assert_non_null(strstr(r.head, "Content-Type: application/json"));
    assert_non_null(strstr(r.head, "X-Dengbao-Fallback: static"));
    assert_non_null(strstr(r.head, "Retry-After: 1"));
    resp_free(&r);
    wait_logged(lg + 1);
    pthread_mutex_lock(&note_mu);
    assert_string_equal(last_fallback, "static");
    assert_int_equal(last_status, 200);
    pthread_mutex_unlock(&note_mu);
    char *m = metrics(&f);
    assert_non_null(
        strstr(m, "dengbao_gateway_fallbacks_total{route=\"main\",mode=\"static\"} 1\n"));
    free(m);
    gw_server_free(f.gw);
}

static void
test_upstream_fallback(void **state)
{
    (void) state;
    gwfx f;
    gw_fallback fb = {.mode = GW_FALLBACK_UPSTREAM, .cluster = 1};
    gw_start(&f, &fb, false);
    trip(&f, NULL);
    resp r = {0};
    int lg = atomic_load(&logged);
    get(f.port, "/x", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "backup");
    assert_non_null(strstr(r.head, "X-Dengbao-Fallback: upstream"));
    resp_free(&r);
    wait_logged(lg + 1);
    pthread_mutex_lock(&note_mu);
    assert_string_equal(last_fallback, "upstream");
    assert_int_equal(last_up_status, 200);
    pthread_mutex_unlock(&note_mu);
    char *m = metrics(&f);
    assert_non_null(
        strstr(m, "dengbao_gateway_fallbacks_total{route=\"main\",mode=\"upstream\"} 1\n"));
    free(m);
    gw_server_free(f.gw);
}

static void
test_cache(void **state)
{
    (void) state;
    gwfx f;
    gw_fallback fb = {.mode = GW_FALLBACK_CACHE, .cache_ttl_ms = 60000, .cache_max = 1 << 20};
    gw_start(&f, &fb, false);
    resp r = {0};
    get(f.port, "/c/1?q=a", "alice", &r);
    assert_int_equal(r.status, 200);
    char *good = strdup(r.body);
    assert_non_null(strstr(good, "\"sub\":\"alice\""));
    resp_free(&r);
    get(f.port, "/c/cookie", "alice", &r); /* Set-Cookie: never kept */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    get(f.port, "/c/nostore", "alice", &r); /* no-store: never kept */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    get(f.port, "/c/anon", NULL, &r); /* no principal: kept under "no subject" */
    assert_int_equal(r.status, 200);
    resp_free(&r);

    trip(&f, "alice");
    int lg = atomic_load(&logged);
    get(f.port, "/c/1?q=a", "alice", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, good);
    assert_non_null(strstr(r.head, "X-Dengbao-Fallback: cache"));
    assert_non_null(strstr(r.head, "Age: "));
    assert_non_null(strstr(r.head, "Content-Type: application/json"));
    assert_non_null(strstr(r.head, "X-Upstream: primary"));
    resp_free(&r);
    wait_logged(lg + 1);
    pthread_mutex_lock(&note_mu);
    assert_string_equal(last_fallback, "cache");
    pthread_mutex_unlock(&note_mu);

    /* another subject, another query, no subject, a POST: not served from the cache */
    get(f.port, "/c/1?q=a", "bob", &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.head, "X-Dengbao-Fallback: fail"));
    resp_free(&r);
    get(f.port, "/c/1?q=b", "alice", &r);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    get(f.port, "/c/1?q=a", NULL, &r);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    get(f.port, "/c/anon", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.head, "X-Dengbao-Fallback: cache"));
    resp_free(&r);
    get(f.port, "/c/cookie", "alice", &r);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    get(f.port, "/c/nostore", "alice", &r);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    request(f.port,
            "POST /c/1?q=a HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Test-Sub: alice\r\n"
            "Content-Length: 0\r\n\r\n",
            &r);
    assert_int_equal(r.status, 503);
    resp_free(&r);
    char *m = metrics(&f);
    assert_non_null(
        strstr(m, "dengbao_gateway_fallbacks_total{route=\"main\",mode=\"cache\"} 2\n"));
    assert_non_null(strstr(m, "dengbao_gateway_fallbacks_total{route=\"main\",mode=\"fail\"} 6\n"));
    free(m);
    free(good);
    gw_server_free(f.gw);
}

static void
test_read_body(void **state)
{
    (void) state;
    gwfx f;
    gw_start(&f, NULL, false);
    resp r = {0};
    /* Content-Length */
    request(f.port,
            "POST /rb HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 11\r\n\r\n"
            "hello world",
            &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    assert_non_null(strstr(r.head, "X-Got-CL: 11"));
    assert_non_null(strstr(r.head, "X-Got-TE: none"));
    resp_free(&r);
    pthread_mutex_lock(&note_mu);
    assert_int_equal(rb_status_seen, 0);
    assert_int_equal(rb_copy_len, 11);
    assert_memory_equal(rb_copy, "hello world", 11);
    pthread_mutex_unlock(&note_mu);

    /* chunked, with binary bytes: forwarded as exactly those bytes with a Content-Length */
    char raw[2048];
    uint8_t bin[600];
    for (size_t i = 0; i < sizeof bin; i++) {
        bin[i] = (uint8_t) (i * 7 + 3);
    }
    int n = snprintf(raw, sizeof raw,
                     "POST /rb HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n%x\r\n",
                     200);
    memcpy(raw + n, bin, 200);
    n += 200;
    n += snprintf(raw + n, sizeof raw - (size_t) n, "\r\n%x\r\n", 400);
    memcpy(raw + n, bin + 200, 400);
    n += 400;
    n += snprintf(raw + n, sizeof raw - (size_t) n, "\r\n0\r\n\r\n");
    request_n(f.port, raw, (size_t) n, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 600);
    assert_memory_equal(r.body, bin, 600);
    assert_non_null(strstr(r.head, "X-Got-CL: 600"));
    assert_non_null(strstr(r.head, "X-Got-TE: none"));
    resp_free(&r);

    /* no body at all: the step still gets its callback (empty) */
    get(f.port, "/rb", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    resp_free(&r);
    pthread_mutex_lock(&note_mu);
    assert_int_equal(rb_status_seen, 0);
    assert_int_equal(rb_copy_len, 0);
    pthread_mutex_unlock(&note_mu);

    /* over the route's body_max (1k), chunked: the step hears DBAO_ERANGE, the client 413 */
    n = snprintf(raw, sizeof raw,
                 "POST /rb HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n%x\r\n",
                 1100);
    char big[1100];
    memset(big, 'x', sizeof big);
    memcpy(raw + n, big, sizeof big);
    n += (int) sizeof big;
    n += snprintf(raw + n, sizeof raw - (size_t) n, "\r\n0\r\n\r\n");
    int hits = atomic_load(&up_hits);
    request_n(f.port, raw, (size_t) n, &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    pthread_mutex_lock(&note_mu);
    assert_int_equal(rb_status_seen, DBAO_ERANGE);
    pthread_mutex_unlock(&note_mu);
    assert_int_equal(atomic_load(&up_hits), hits);
    /* declared over it: 413 from the head, before the steps */
    request(f.port,
            "POST /rb HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2000\r\n\r\n",
            &r);
    assert_int_equal(r.status, 413);
    resp_free(&r);
    gw_server_free(f.gw);
}

static void
test_remove_headers_upstream(void **state)
{
    (void) state;
    gwfx f;
    gw_start(&f, NULL, false);
    /* a route that strips "/rm" so that the primary's /hdrs shows what it received */
    gw_config *cfg = NULL;
    dbao_err err = {0};
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "workers: 1\nlisteners:\n  - listen: \"127.0.0.1:0\"\nadmin: \"127.0.0.1:%u\"\n"
             "clusters:\n  - name: primary\n    endpoints: [\"127.0.0.1:%u\"]\n"
             "routes:\n  - name: rm\n    prefix: /rm\n    cluster: primary\n"
             "    strip_prefix: true\n",
             f.admin, net_server_port(primary));
    assert_int_equal(gw_config_parse(&cfg, yaml, strlen(yaml), "/tmp/t.yaml", &err), 0);
    assert_int_equal(gw_server_reload(f.gw, cfg, &err), 0);
    resp r = {0};
    request(f.port,
            "GET /rm/hdrs HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Auth-Identity: forged\r\n"
            "X-AUTH-Roles: admin\r\nX-User: mallory\r\nX-User-Agent-Extra: kept\r\n\r\n",
            &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, "forged"));
    assert_null(strstr(r.body, "X-AUTH-Roles"));
    assert_null(strstr(r.body, "mallory"));
    assert_non_null(strstr(r.body, "X-User-Agent-Extra: kept"));
    assert_non_null(strstr(r.body, "X-Auth-Identity: signed"));
    resp_free(&r);
    gw_server_free(f.gw);
}

static void
test_worker_hooks(void **state)
{
    (void) state;
    atomic_store(&hook_start, 0);
    atomic_store(&hook_stop, 0);
    atomic_store(&hook_mask, 0);
    gwfx f;
    gw_start(&f, NULL, false);
    resp r = {0};
    get(f.port, "/ok", NULL, &r); /* the worker has started by the time it answers */
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_int_equal(atomic_load(&hook_start), 1);
    assert_int_equal(atomic_load(&hook_mask), 1);
    assert_int_equal(atomic_load(&hook_stop), 0);
    gw_server_free(f.gw);
    assert_int_equal(atomic_load(&hook_stop), 1);
}

/* ---- mTLS: the client certificate's SHA-256 ---- */

static char tdir[256];

static int
tls_setup(void **state)
{
    (void) state;
    snprintf(tdir, sizeof tdir, "/tmp/dbao-gw-tls-XXXXXX");
    if (mkdtemp(tdir) == NULL) {
        return -1;
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; "
             "K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';"
             "openssl req -x509 $K -keyout srv.key -out srv.pem -subj /CN=localhost -days 2 "
             "  -addext subjectAltName=IP:127.0.0.1 2>/dev/null;"
             "openssl req -x509 $K -keyout ca.key -out ca.pem -subj /CN=test-ca -days 2 "
             "  2>/dev/null;"
             "openssl req $K -keyout cli.key -out cli.csr -subj /O=no-cn 2>/dev/null;"
             "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "  -out cli.pem -days 2 2>/dev/null",
             tdir);
    tls_dir = tdir;
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

static void
test_mtls_cert_sha256(void **state)
{
    (void) state;
    gwfx f;
    gw_start(&f, NULL, true);
    char p[600];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    snprintf(p, sizeof p, "%s/srv.pem", tdir);
    SSL_CTX_load_verify_locations(ctx, p, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    snprintf(p, sizeof p, "%s/cli.pem", tdir);
    assert_int_equal(SSL_CTX_use_certificate_file(ctx, p, SSL_FILETYPE_PEM), 1);
    /* the expected hash: SHA-256 over the certificate's DER */
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    X509 *cert = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(cert);
    uint8_t want[32];
    unsigned int wl = 0;
    assert_int_equal(X509_digest(cert, EVP_sha256(), want, &wl), 1);
    X509_free(cert);
    snprintf(p, sizeof p, "%s/cli.key", tdir);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, p, SSL_FILETYPE_PEM), 1);
    int fd = connect_to(f.port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1);
    const char rq[] = "GET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_true(SSL_write(ssl, rq, sizeof rq - 1) > 0);
    char buf[4096];
    size_t got = 0;
    int k;
    while (got < sizeof buf - 1 &&
           (k = SSL_read(ssl, buf + got, (int) (sizeof buf - 1 - got))) > 0) {
        got += (size_t) k;
    }
    buf[got] = 0;
    assert_int_equal(atoi(buf + 9), 200);
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    pthread_mutex_lock(&note_mu);
    assert_true(peer_has_sha); /* also without a CN in the subject */
    assert_memory_equal(peer_sha, want, 32);
    pthread_mutex_unlock(&note_mu);
    gw_server_free(f.gw);
}

static int
group_setup(void **state)
{
    (void) state;
    primary = start_upstream(primary_handler);
    backup = start_upstream(backup_handler);
    return 0;
}

static int
group_teardown(void **state)
{
    (void) state;
    net_server_free(primary);
    net_server_free(backup);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_fail_and_close),
        cmocka_unit_test(test_reload_breaker),
        cmocka_unit_test(test_static),
        cmocka_unit_test(test_upstream_fallback),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_read_body),
        cmocka_unit_test(test_remove_headers_upstream),
        cmocka_unit_test(test_worker_hooks),
        cmocka_unit_test_setup_teardown(test_mtls_cert_sha256, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
