/* test_maskstep.c: the response-masking step (src/gateway/maskstep.c) in an in-process
 * gateway, in front of a tiny upstream written here (one thread, raw sockets, canned answers
 * chosen by path, sent in small pieces so that the step sees the body in several calls).
 *
 * Checked: JSON answers masked exactly as mask_apply_json masks them, for no principal (the
 * most masked view) and for a role with a clear override; the upstream's Content-Length
 * replaced by chunked framing; Accept-Encoding not forwarded; statistics for the audit step
 * (gw_maskstep_result, read from an earlier step's on_log); non-2xx and text answers passed;
 * an encoded (gzip) body, invalid JSON and a body over the limit aborted (the client never
 * gets the terminating chunk); over the limit with pass: the head of the document masked, the
 * rest as it came; routes without masking untouched; many requests reuse pooled states.
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

#include <jansson.h>

#include "dengbao/gateway.h"
#include "dengbao/mask.h"
#include "maskstep.h"

static const char POLICY[] = "detect:\n"
                             "  types: [CN_RID18, CN_MOBILE]\n"
                             "types:\n"
                             "  CN_RID18: {roles: {doctor: clear}}\n"
                             "fields:\n"
                             "  patient.name: {type: CN_NAME, roles: {doctor: clear}}\n"
                             "  patient.id_no: {type: CN_RID18}\n";

static const char DOC[] =
    "{\"patient\": {\"name\": \"张三丰\", \"id_no\": \"11010519491231002X\", \"age\": 70},\n"
    " \"notes\": [\"call 13800138000\", \"id 11010519491231002X\", \"\\u5f20\"],\n"
    " \"ok\": true, \"n\": 13800138000, \"r\": 1.50}";

/* ---- the upstream ---------------------------------------------------------------------- */

static int up_fd = -1;
static uint16_t up_port;
static pthread_t up_thread;
static char *big_doc;
static size_t big_len;
static atomic_int saw_accept_encoding;

static void
send_answer(int fd, int status, const char *ctype, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, ctype, len);
    if (write(fd, head, (size_t) n) != n)
        return;
    /* in pieces of 7 bytes for small bodies (tokens cut everywhere), 4 KiB for big ones */
    size_t step = len > 100000 ? 4096 : 7;
    for (size_t pos = 0; pos < len; pos += step) {
        size_t k = len - pos < step ? len - pos : step;
        if (write(fd, body + pos, k) != (ssize_t) k)
            return;
        if (len < 100000 && (pos / step) % 8 == 0)
            usleep(200);
    }
}

static void *
upstream(void *arg)
{
    (void) arg;
    for (;;) {
        int fd = accept(up_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        char req[8192];
        size_t len = 0;
        while (len < sizeof req - 1) {
            ssize_t k = read(fd, req + len, sizeof req - 1 - len);
            if (k <= 0)
                break;
            len += (size_t) k;
            req[len] = 0;
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        req[len] = 0;
        if (strcasestr(req, "\r\nAccept-Encoding:"))
            atomic_fetch_add(&saw_accept_encoding, 1);
        char path[256] = "";
        sscanf(req, "%*s %255s", path);
        const char *p = strchr(path + 1, '/'); /* the route prefix is /m/, /p/ or /n/ */
        p = p ? p : path;
        if (strcmp(p, "/quit") == 0) {
            close(fd);
            return NULL;
        } else if (strcmp(p, "/doc") == 0) {
            send_answer(fd, 200, "application/json", DOC, strlen(DOC));
        } else if (strcmp(p, "/doc404") == 0) {
            send_answer(fd, 404, "application/json", DOC, strlen(DOC));
        } else if (strcmp(p, "/text") == 0) {
            send_answer(fd, 200, "text/plain", "tel 13800138000\n", 16);
        } else if (strcmp(p, "/gzip") == 0) {
            send_answer(fd, 200, "application/json", "\x1f\x8b\x08\x00\x00\x00\x00\x00", 8);
        } else if (strcmp(p, "/br") == 0) {
            /* coded by name only: the bytes even look like JSON (brotli has no magic) */
            send_answer(fd, 200, "application/json\r\nContent-Encoding: br",
                        "{\"a\":\"13800138000\"}", 19);
        } else if (strcmp(p, "/etag") == 0) {
            send_answer(fd, 200, "application/json\r\nETag: \"v1\"\r\nDigest: sha-256=x", DOC,
                        strlen(DOC));
        } else if (strcmp(p, "/bad") == 0) {
            send_answer(fd, 200, "application/json", "{\"a\":\"13800138000\",,}", 21);
        } else if (strcmp(p, "/big") == 0) {
            send_answer(fd, 200, "application/json", big_doc, big_len);
        } else if (strcmp(p, "/empty") == 0) {
            send_answer(fd, 200, "application/json", "", 0);
        } else {
            send_answer(fd, 404, "text/plain", "nope\n", 5);
        }
        close(fd);
    }
}

/* ---- the client ------------------------------------------------------------------------ */

typedef struct resp {
    int status; /* 0: the connection closed before a head */
    char head[4096];
    char *body;
    size_t body_len;
    bool complete; /* chunked: the terminating chunk arrived; else Content-Length reached */
} resp;

static void
get(uint16_t port, const char *path, const char *extra, resp *r)
{
    memset(r, 0, sizeof(*r));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *) &a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n%sConnection: "
                     "close\r\n\r\n",
                     path, extra ? extra : "");
    assert_int_equal(write(fd, req, (size_t) n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t k = read(fd, buf + len, cap - len - 1);
        if (k <= 0)
            break;
        len += (size_t) k;
    }
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (sep == NULL) {
        /* an aborted answer may be cut before its head was written out: nothing arrived */
        r->body = calloc(1, 1);
        free(buf);
        return;
    }
    size_t hl = (size_t) (sep - buf);
    assert_true(hl < sizeof r->head);
    memcpy(r->head, buf, hl);
    r->status = atoi(buf + 9);
    char *p = sep + 4, *end = buf + len;
    r->body = malloc(len + 1);
    if (strcasestr(r->head, "Transfer-Encoding: chunked")) {
        for (;;) {
            char *e;
            if (p >= end)
                break;
            unsigned long sz = strtoul(p, &e, 16);
            char *crlf = strstr(e, "\r\n");
            if (crlf == NULL || e == p)
                break;
            p = crlf + 2;
            if (sz == 0) {
                r->complete = true;
                break;
            }
            if ((size_t) (end - p) < sz + 2) {
                memcpy(r->body + r->body_len, p, (size_t) (end - p));
                r->body_len += (size_t) (end - p);
                break;
            }
            memcpy(r->body + r->body_len, p, sz);
            r->body_len += sz;
            p += sz + 2;
        }
    } else {
        memcpy(r->body, p, (size_t) (end - p));
        r->body_len = (size_t) (end - p);
        const char *cl = strcasestr(r->head, "Content-Length: ");
        r->complete = cl && (size_t) atol(cl + 16) == r->body_len;
    }
    r->body[r->body_len] = 0;
    free(buf);
}

/* ---- steps: a principal from X-Test-Role, the mask step, results from on_log ----------- */

static const char *const DOCTOR[] = {"doctor"};
static const gw_principal P_DOCTOR = {.sub = "d1", .roles = DOCTOR, .num_roles = 1};

static pthread_mutex_t res_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int logged;
static bool res_masked, res_over;
static mask_stats res_st;
static const char *res_error;

static int
principal_step(gw_ctx *ctx, void *arg)
{
    (void) arg;
    const char *role = net_request_header(gw_ctx_request(ctx), "x-test-role");
    if (role != NULL && strcmp(role, "doctor") == 0)
        gw_ctx_set_principal(ctx, &P_DOCTOR);
    return GW_NEXT;
}

static void
principal_log(gw_ctx *ctx, void *arg)
{
    (void) arg;
    pthread_mutex_lock(&res_mu);
    res_masked = gw_maskstep_result(ctx, 1, &res_st, &res_over);
    res_error = gw_maskstep_error(ctx, 1);
    pthread_mutex_unlock(&res_mu);
    atomic_fetch_add(&logged, 1);
}

/* ---- fixture --------------------------------------------------------------------------- */

typedef struct fx {
    mask_policy *pol;
    gw_step steps[2];
    gw_server *gw;
    uint16_t port;
} fx;

static int
setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    dbao_err err = {0};
    assert_int_equal(mask_policy_parse(&f->pol, POLICY, strlen(POLICY), "gw.yaml", &err), 0);

    /* the big document: records until past 300 KiB */
    dbao_buf b = {0};
    dbao_buf_put(&b, "{\"items\":[", 10);
    for (int i = 0; b.len < 300000; i++)
        dbao_buf_printf(&b, "%s{\"i\":%d,\"tel\":\"13800138000\",\"t\":\"%s\"}", i ? "," : "", i,
                        "0123456789abcdefghijklmnopqrstuvwxyz");
    dbao_buf_put(&b, "]}", 2);
    big_doc = dbao_buf_take(&b, &big_len);

    up_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(up_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(bind(up_fd, (struct sockaddr *) &a, sizeof a), 0);
    socklen_t al = sizeof a;
    getsockname(up_fd, (struct sockaddr *) &a, &al);
    up_port = ntohs(a.sin_port);
    assert_int_equal(listen(up_fd, 64), 0);
    assert_int_equal(pthread_create(&up_thread, NULL, upstream, NULL), 0);

    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "listeners:\n  - listen: \"127.0.0.1:0\"\n"
             "workers: 2\n"
             "clusters:\n  - name: up\n    endpoints: [\"127.0.0.1:%u\"]\n"
             "routes:\n"
             "  - {name: masked, prefix: /m/, cluster: up}\n"
             "  - {name: passing, prefix: /p/, cluster: up}\n"
             "  - {name: plain, prefix: /n/, cluster: up}\n",
             up_port);
    gw_config *cfg = NULL;
    int rc = gw_config_parse(&cfg, yaml, strlen(yaml), "gw.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    for (size_t i = 0; i < cfg->num_routes; i++) {
        if (strcmp(cfg->routes[i].name, "masked") == 0) {
            cfg->routes[i].sec.mask = true;
            cfg->routes[i].sec.mask_body_max = 64 * 1024;
        } else if (strcmp(cfg->routes[i].name, "passing") == 0) {
            cfg->routes[i].sec.mask = true;
            cfg->routes[i].sec.mask_body_max = 64 * 1024;
            cfg->routes[i].sec.mask_over_pass = true;
        }
    }
    f->steps[0] =
        (gw_step){.name = "principal", .on_request = principal_step, .on_log = principal_log};
    assert_int_equal(gw_maskstep_new(&f->steps[1], f->pol, 1, &err), 0);
    gw_server_opts o = {.steps = f->steps, .num_steps = 2};
    rc = gw_server_new(&f->gw, cfg, &o, &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
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
    gw_maskstep_free(&f->steps[1]);
    mask_policy_free(f->pol);
    shutdown(up_fd, SHUT_RDWR);
    close(up_fd);
    pthread_join(up_thread, NULL);
    free(big_doc);
    free(f);
    return 0;
}

/* wait_logged: the on_log of request number n (1-based) ran */
static void
wait_logged(int n)
{
    for (int i = 0; i < 500 && atomic_load(&logged) < n; i++)
        usleep(2000);
    assert_true(atomic_load(&logged) >= n);
}

static char *
tree(const mask_policy *p, const char *const *roles, size_t nr, const char *in, size_t len)
{
    dbao_buf out = {0};
    assert_int_equal(mask_apply_json(p, roles, nr, in, len, &out, NULL, NULL), 0);
    return out.data;
}

static void
test_masked_json(void **state)
{
    fx *f = *state;
    resp r;
    int n0 = atomic_load(&logged);
    atomic_store(&saw_accept_encoding, 0);

    get(f->port, "/m/doc", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    assert_non_null(strcasestr(r.head, "Transfer-Encoding: chunked"));
    assert_null(strcasestr(r.head, "Content-Length"));
    char *want = tree(f->pol, NULL, 0, DOC, strlen(DOC));
    assert_string_equal(r.body, want);
    assert_null(strstr(r.body, "13800138000"));
    assert_null(strstr(r.body, "11010519491231002X"));
    free(want);
    free(r.body);
    wait_logged(n0 + 1);
    pthread_mutex_lock(&res_mu);
    assert_true(res_masked);
    assert_false(res_over);
    assert_null(res_error);
    assert_int_equal(res_st.fields, 2);   /* name, id_no */
    assert_int_equal(res_st.findings, 3); /* two mobiles (one an integer), one ID */
    pthread_mutex_unlock(&res_mu);
    assert_int_equal(atomic_load(&saw_accept_encoding), 0);

    /* validators and digests of the upstream's bytes are not sent with a masked body */
    get(f->port, "/m/etag", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    assert_null(strcasestr(r.head, "ETag"));
    assert_null(strcasestr(r.head, "Digest"));
    assert_null(strstr(r.body, "13800138000"));
    free(r.body);
    wait_logged(n0 + 2);
    n0++;

    /* a doctor sees names and IDs (clear overrides), still not the mobiles */
    get(f->port, "/m/doc", "X-Test-Role: doctor\r\n", &r);
    assert_int_equal(r.status, 200);
    want = tree(f->pol, DOCTOR, 1, DOC, strlen(DOC));
    assert_string_equal(r.body, want);
    assert_non_null(strstr(r.body, "11010519491231002X"));
    assert_null(strstr(r.body, "13800138000"));
    free(want);
    free(r.body);

    /* many requests: pooled states are reused with the right roles each time */
    for (int i = 0; i < 40; i++) {
        get(f->port, "/m/doc", i % 2 ? "X-Test-Role: doctor\r\n" : NULL, &r);
        assert_int_equal(r.status, 200);
        assert_true(r.complete);
        assert_true((strstr(r.body, "11010519491231002X") != NULL) == (i % 2 == 1));
        free(r.body);
    }

    /* an empty 200 body passes as it is */
    get(f->port, "/m/empty", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    free(r.body);
}

static void
test_passed(void **state)
{
    fx *f = *state;
    resp r;
    int n0 = atomic_load(&logged);

    /* non-2xx: not masked (only 2xx answers are) */
    get(f->port, "/m/doc404", NULL, &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, DOC);
    free(r.body);

    /* text: passed unmasked (documented limitation) */
    get(f->port, "/m/text", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    assert_string_equal(r.body, "tel 13800138000\n");
    free(r.body);
    wait_logged(n0 + 2);
    pthread_mutex_lock(&res_mu);
    assert_false(res_masked);
    pthread_mutex_unlock(&res_mu);

    /* a route without masking: untouched, Accept-Encoding forwarded */
    atomic_store(&saw_accept_encoding, 0);
    get(f->port, "/n/doc", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, DOC);
    assert_non_null(strcasestr(r.head, "Content-Length"));
    free(r.body);
    assert_int_equal(atomic_load(&saw_accept_encoding), 1);
}

static void
test_aborted(void **state)
{
    fx *f = *state;
    resp r;
    int n0 = atomic_load(&logged);

    /* an encoded body cannot be inspected: aborted before any byte of it */
    get(f->port, "/m/gzip", NULL, &r);
    assert_true(r.status == 200 || r.status == 0);
    assert_false(r.complete);
    assert_int_equal(r.body_len, 0);
    free(r.body);
    wait_logged(n0 + 1);
    pthread_mutex_lock(&res_mu);
    assert_true(res_masked);
    assert_string_equal(res_error, "encoded body");
    pthread_mutex_unlock(&res_mu);

    /* coded by Content-Encoding: aborted by name, before any byte */
    get(f->port, "/m/br", NULL, &r);
    assert_true(r.status == 200 || r.status == 0);
    assert_false(r.complete);
    assert_int_equal(r.body_len, 0);
    free(r.body);
    wait_logged(n0 + 2);
    pthread_mutex_lock(&res_mu);
    assert_string_equal(res_error, "encoded body");
    pthread_mutex_unlock(&res_mu);

    /* invalid JSON: aborted; what went out was masked */
    get(f->port, "/m/bad", NULL, &r);
    assert_true(r.status == 200 || r.status == 0);
    assert_false(r.complete);
    assert_null(strstr(r.body, "13800138000"));
    free(r.body);
    wait_logged(n0 + 3);
    pthread_mutex_lock(&res_mu);
    assert_string_equal(res_error, "not json");
    pthread_mutex_unlock(&res_mu);

    /* over the limit (64 KiB) with block: aborted after the masked head of the document */
    get(f->port, "/m/big", NULL, &r);
    assert_true(r.status == 200 || r.status == 0);
    assert_false(r.complete);
    assert_true(r.body_len < 70000);
    assert_null(strstr(r.body, "13800138000"));
    free(r.body);
    wait_logged(n0 + 4);
    pthread_mutex_lock(&res_mu);
    assert_true(res_over);
    assert_string_equal(res_error, "body over the masking limit");
    assert_true(res_st.findings > 100);
    pthread_mutex_unlock(&res_mu);
}

static void
test_over_limit_pass(void **state)
{
    fx *f = *state;
    resp r;
    int n0 = atomic_load(&logged);
    get(f->port, "/p/big", NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    /* the head is masked, the rest passed as it came; the whole is still one JSON document */
    static const char HEAD[] = "{\"items\":[{\"i\":0,\"tel\":\"138****8000\"";
    assert_memory_equal(r.body, HEAD, strlen(HEAD));
    assert_null(strstr(r.body, "\"13800138000\",\"t\":\"0123456789abcdefghijklmnopqrstuvwxyz\"},"
                               "{\"i\":1,"));
    assert_non_null(strstr(r.body + r.body_len - 1000, "13800138000"));
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    assert_non_null(j);
    json_decref(j);
    free(r.body);
    wait_logged(n0 + 1);
    pthread_mutex_lock(&res_mu);
    assert_true(res_masked);
    assert_true(res_over);
    assert_null(res_error);
    pthread_mutex_unlock(&res_mu);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masked_json),
        cmocka_unit_test(test_passed),
        cmocka_unit_test(test_aborted),
        cmocka_unit_test(test_over_limit_pass),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
