/* test_coord.c: the saga coordinator (src/saga/coord.c, caller.c) against in-process fake
 * participants: a net.h server in this test whose answers are scripted per URL path (a list of
 * statuses, the last repeated; status 0 = answer 200 only after `delay_ms`, past the call
 * timeout). Every call is recorded (path, Idempotency-Key, X-Dengbao-Op, arrival time) so the
 * tests check order, retries and headers. The store is SQLite in a fresh folder.
 *
 * Cases: happy path, definite failure -> compensations in reverse order, 5xx then success,
 * timeout then success, unknown outcome exhausted -> rollback (backward) / park (forward),
 * compensation refused -> parked with reason, deadline -> rollback, parallel group, a restart of
 * the coordinator object over the same store resumes a saga mid-way, admin retry and resolve,
 * idempotent submit (same spec 200, other spec 409).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "coord.h"
#include "dengbao/net.h"

/* ---- the fake participant ---------------------------------------------------------------- */

#define MAX_SCRIPTS 32
#define MAX_LOG     512

typedef struct script {
    char path[64];
    int statuses[16];
    int n;
    int calls;
} script;

typedef struct logent {
    char path[64];
    char key[200];
    char op[16];
    int64_t at_us, answered_us;
} logent;

typedef struct delayed {
    net_request *req;
    int64_t due_us;
    int log_idx;
} delayed;

static struct {
    pthread_mutex_t mu;
    script scripts[MAX_SCRIPTS];
    int num_scripts;
    logent log[MAX_LOG];
    int num_log;
    delayed dl[64];
    int num_dl;
    int delay_ms;
    net_server *srv;
    uint16_t port;
    pthread_t th;
    volatile int stop;
} F;

static int64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
fake_reset(void)
{
    pthread_mutex_lock(&F.mu);
    F.num_scripts = 0;
    F.num_log = 0;
    F.delay_ms = 400;
    pthread_mutex_unlock(&F.mu);
}

/* script("/a/0/action", 503, 200, -1) */
static void
fake_script(const char *path, ...)
{
    pthread_mutex_lock(&F.mu);
    script *s = &F.scripts[F.num_scripts++];
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    va_list ap;
    va_start(ap, path);
    for (int v = va_arg(ap, int); v >= 0 && s->n < 16; v = va_arg(ap, int))
        s->statuses[s->n++] = v;
    va_end(ap);
    pthread_mutex_unlock(&F.mu);
}

static void
fake_handler(net_request *req, void *arg)
{
    (void) arg;
    const char *p = net_request_path(req);
    pthread_mutex_lock(&F.mu);
    int status = 200;
    for (int i = 0; i < F.num_scripts; i++) {
        script *s = &F.scripts[i];
        if (strcmp(s->path, p) == 0) {
            status = s->statuses[s->calls < s->n ? s->calls : s->n - 1];
            s->calls++;
        }
    }
    int li = -1;
    if (F.num_log < MAX_LOG) {
        li = F.num_log++;
        logent *e = &F.log[li];
        memset(e, 0, sizeof *e);
        snprintf(e->path, sizeof e->path, "%s", p);
        const char *k = net_request_header(req, "Idempotency-Key");
        const char *o = net_request_header(req, "X-Dengbao-Op");
        snprintf(e->key, sizeof e->key, "%s", k ? k : "");
        snprintf(e->op, sizeof e->op, "%s", o ? o : "");
        e->at_us = mono_us();
    }
    if (status == 0 && F.num_dl < 64) {
        F.dl[F.num_dl++] = (delayed){req, mono_us() + F.delay_ms * 1000, li};
        pthread_mutex_unlock(&F.mu);
        return;
    }
    if (li >= 0)
        F.log[li].answered_us = mono_us();
    pthread_mutex_unlock(&F.mu);
    const char *body = status >= 400 ? "{\"error\":\"scripted\"}" : "{}";
    net_request_respond(req, status, "application/json", body, strlen(body));
}

static void *
delayer(void *arg)
{
    (void) arg;
    while (!F.stop) {
        pthread_mutex_lock(&F.mu);
        int64_t now = mono_us();
        for (int i = 0; i < F.num_dl;) {
            if (F.dl[i].due_us <= now) {
                net_request *r = F.dl[i].req;
                if (F.dl[i].log_idx >= 0)
                    F.log[F.dl[i].log_idx].answered_us = now;
                F.dl[i] = F.dl[--F.num_dl];
                net_request_respond(r, 200, "application/json", "{}", 2);
            } else {
                i++;
            }
        }
        pthread_mutex_unlock(&F.mu);
        usleep(2000);
    }
    return NULL;
}

static int
count_calls(const char *path)
{
    pthread_mutex_lock(&F.mu);
    int n = 0;
    for (int i = 0; i < F.num_log; i++)
        if (strcmp(F.log[i].path, path) == 0)
            n++;
    pthread_mutex_unlock(&F.mu);
    return n;
}

/* index of the first log entry with path, or -1 */
static int
first_call(const char *path)
{
    pthread_mutex_lock(&F.mu);
    int r = -1;
    for (int i = 0; i < F.num_log && r < 0; i++)
        if (strcmp(F.log[i].path, path) == 0)
            r = i;
    pthread_mutex_unlock(&F.mu);
    return r;
}

static int
last_call(const char *path)
{
    pthread_mutex_lock(&F.mu);
    int r = -1;
    for (int i = 0; i < F.num_log; i++)
        if (strcmp(F.log[i].path, path) == 0)
            r = i;
    pthread_mutex_unlock(&F.mu);
    return r;
}

/* ---- the coordinator ----------------------------------------------------------------------- */

static char g_dir[64];
static char g_url[128];
static saga_coord *g_c;
static const char *g_allow[] = {"127.0.0.1:*"};

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, status;
    char body[8192];
} waiter;

static void
on_reply(saga_req *r, int status, const char *body, size_t len)
{
    waiter *w = r->arg;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    snprintf(w->body, sizeof w->body, "%.*s", (int) len, body);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    saga_req_free(r);
}

static int
run_req(saga_coord *c, saga_req *r, char *body, size_t cap)
{
    waiter w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    r->reply = on_reply;
    r->arg = &w;
    saga_coord_request(c, r);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    if (body != NULL)
        snprintf(body, cap, "%s", w.body);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return w.status;
}

static saga_coord *
coord_new(void)
{
    saga_coord_opts o = {.store_url = g_url,
                         .owner = "test-coord",
                         .lease_ms = 3000,
                         .claim_interval_ms = 200,
                         .defaults = {.timeout_ms = 10000,
                                      .call_timeout_ms = 200,
                                      .retry_initial_ms = 10,
                                      .retry_max_ms = 40,
                                      .max_attempts = 3,
                                      .allow = g_allow,
                                      .num_allow = 1}};
    saga_coord *c = NULL;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = saga_coord_new(&c, &o, &err);
    if (rc == 0)
        rc = saga_coord_start(c, &err);
    if (rc != 0)
        fprintf(stderr, "coord: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return c;
}

static int
submit(const char *json, int64_t wait_ms, char *body, size_t cap)
{
    saga_req *r = saga_req_new(SAGA_REQ_SUBMIT);
    dbao_err err;
    dbao_err_clear(&err);
    int rc = saga_spec_parse(&r->spec, json, strlen(json), saga_coord_defaults(g_c), &err);
    if (rc != 0)
        fprintf(stderr, "spec: %s\n", err.msg);
    assert_int_equal(rc, 0);
    r->wait_ms = wait_ms;
    return run_req(g_c, r, body, cap);
}

static int
get(const char *gid, int64_t wait_ms, char *body, size_t cap)
{
    saga_req *r = saga_req_new(SAGA_REQ_GET);
    snprintf(r->gid, sizeof r->gid, "%s", gid);
    r->wait_ms = wait_ms;
    return run_req(g_c, r, body, cap);
}

/* final_state: waits until the saga is final or parked; returns its JSON (caller decref). */
static json_t *
final_state(const char *gid)
{
    char body[8192];
    for (int i = 0; i < 100; i++) {
        int st = get(gid, 5000, body, sizeof body);
        assert_true(st == 200 || st == 202);
        json_t *j = json_loads(body, 0, NULL);
        assert_non_null(j);
        const char *s = json_string_value(json_object_get(j, "state"));
        if (strcmp(s, "committed") == 0 || strcmp(s, "compensated") == 0 ||
            strcmp(s, "parked") == 0)
            return j;
        json_decref(j);
    }
    fail_msg("saga %s never ended", gid);
    return NULL;
}

static const char *
jstate(json_t *j)
{
    return json_string_value(json_object_get(j, "state"));
}

static const char *
step_state(json_t *j, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(j, "steps"), i), "state"));
}

static long
step_attempts(json_t *j, size_t i)
{
    return (long) json_integer_value(
        json_object_get(json_array_get(json_object_get(j, "steps"), i), "attempts"));
}

/* spec_n: a saga of n steps on paths /<gid>/<i>/action|compensate; extra goes into each step */
static void
spec_n(char *out, size_t cap, const char *gid, int n, const char *top_extra,
       const char *const *step_extra)
{
    int off = snprintf(out, cap, "{\"gid\":\"%s\",%s\"steps\":[", gid, top_extra ? top_extra : "");
    for (int i = 0; i < n; i++)
        off += snprintf(out + off, cap - (size_t) off,
                        "%s{\"name\":\"s%d\",\"action\":\"http://127.0.0.1:%u/%s/%d/action\","
                        "\"compensate\":\"http://127.0.0.1:%u/%s/%d/compensate\","
                        "\"payload\":{\"amount\":100}%s%s}",
                        i ? "," : "", i, F.port, gid, i, F.port, gid, i,
                        step_extra && step_extra[i] ? "," : "",
                        step_extra && step_extra[i] ? step_extra[i] : "");
    snprintf(out + off, cap - (size_t) off, "]}");
}

static void
path(char *out, const char *gid, int i, const char *op)
{
    snprintf(out, 64, "/%s/%d/%s", gid, i, op);
}

/* ---- setup -------------------------------------------------------------------------------- */

static int
setup(void **state)
{
    (void) state;
    pthread_mutex_init(&F.mu, NULL);
    net_server_opts o = {.host = "127.0.0.1", .port = 0, .workers = 2, .handler = fake_handler};
    if (net_server_new(&F.srv, &o, NULL) != 0 || net_server_start(F.srv, NULL) != 0)
        return -1;
    F.port = net_server_port(F.srv);
    pthread_create(&F.th, NULL, delayer, NULL);
    snprintf(g_dir, sizeof g_dir, "/tmp/saga_coord.XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        return -1;
    snprintf(g_url, sizeof g_url, "sqlite:%s/saga.db", g_dir);
    g_c = coord_new();
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    saga_coord_stop(g_c, 2000);
    saga_coord_free(g_c);
    F.stop = 1;
    pthread_join(F.th, NULL);
    net_server_free(F.srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0)
        return -1;
    return 0;
}

/* ---- tests --------------------------------------------------------------------------------- */

static void
test_happy(void **state)
{
    (void) state;
    fake_reset();
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "happy", 2, NULL, NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    assert_non_null(strstr(body, "\"submitted\""));
    json_t *j = final_state("happy");
    assert_string_equal(jstate(j), "committed");
    assert_string_equal(step_state(j, 0), "succeeded");
    assert_string_equal(step_state(j, 1), "succeeded");
    assert_int_equal(step_attempts(j, 0), 1);
    json_decref(j);
    path(p, "happy", 0, "action");
    int a0 = first_call(p);
    assert_int_equal(count_calls(p), 1);
    path(p, "happy", 1, "action");
    int a1 = first_call(p);
    assert_true(a0 >= 0 && a1 > a0);
    assert_string_equal(F.log[a0].key, "happy:0:action");
    assert_string_equal(F.log[a0].op, "action");
    assert_string_equal(F.log[a1].key, "happy:1:action");
    path(p, "happy", 0, "compensate");
    assert_int_equal(count_calls(p), 0);
    /* the same spec again: 200 with the current state; another spec: 409 */
    assert_int_equal(submit(spec, 0, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"committed\""));
    spec_n(spec, sizeof spec, "happy", 1, NULL, NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 409);
    assert_int_equal(get("nosuch", 0, body, sizeof body), 404);
}

static void
test_definite_failure_reverse(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/fail/2/action", 409, -1);
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "fail", 3, NULL, NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("fail");
    assert_string_equal(jstate(j), "compensated");
    assert_string_equal(step_state(j, 0), "compensated");
    assert_string_equal(step_state(j, 1), "compensated");
    assert_string_equal(step_state(j, 2), "failed");
    assert_non_null(
        strstr(json_string_value(json_object_get(j, "reason")), "step 2 (s2) failed: 409"));
    json_decref(j);
    path(p, "fail", 2, "action");
    assert_int_equal(count_calls(p), 1); /* a definite failure is not retried */
    path(p, "fail", 2, "compensate");
    assert_int_equal(count_calls(p), 0);
    path(p, "fail", 1, "compensate");
    int c1 = first_call(p);
    path(p, "fail", 0, "compensate");
    int c0 = first_call(p);
    assert_true(c1 >= 0 && c0 > c1); /* reverse order */
    assert_string_equal(F.log[c0].key, "fail:0:compensate");
    assert_string_equal(F.log[c0].op, "compensate");
}

static void
test_5xx_then_success(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/flaky/0/action", 503, 500, 200, -1);
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "flaky", 2, NULL, NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("flaky");
    assert_string_equal(jstate(j), "committed");
    assert_int_equal(step_attempts(j, 0), 3);
    json_decref(j);
    path(p, "flaky", 0, "action");
    assert_int_equal(count_calls(p), 3);
}

static void
test_timeout_then_success(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/slow/0/action", 0, 200, -1); /* first answer after 400 ms > 200 ms timeout */
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "slow", 1, NULL, NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("slow");
    assert_string_equal(jstate(j), "committed");
    assert_int_equal(step_attempts(j, 0), 2);
    json_decref(j);
    path(p, "slow", 0, "action");
    assert_int_equal(count_calls(p), 2);
}

static void
test_unknown_exhausted_backward(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/exb/1/action", 503, -1);
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "exb", 2, NULL, NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("exb");
    assert_string_equal(jstate(j), "compensated");
    /* the step whose outcome is unknown is compensated too (null compensation at the barrier) */
    assert_string_equal(step_state(j, 1), "compensated");
    assert_string_equal(step_state(j, 0), "compensated");
    assert_non_null(strstr(json_string_value(json_object_get(j, "reason")), "unknown outcome"));
    json_decref(j);
    path(p, "exb", 1, "action");
    assert_int_equal(count_calls(p), 3); /* max_attempts */
    path(p, "exb", 1, "compensate");
    int c1 = first_call(p);
    path(p, "exb", 0, "compensate");
    assert_true(c1 >= 0 && first_call(p) > c1);
}

static void
test_unknown_exhausted_forward(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/exf/1/action", 502, -1);
    char spec[4096], body[8192], p[64];
    const char *extra[] = {NULL, "\"recovery\":\"forward\""};
    spec_n(spec, sizeof spec, "exf", 2, NULL, extra);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("exf");
    assert_string_equal(jstate(j), "parked");
    assert_non_null(strstr(json_string_value(json_object_get(j, "reason")), "unknown outcome"));
    assert_string_equal(step_state(j, 0), "succeeded");
    json_decref(j);
    path(p, "exf", 0, "compensate");
    assert_int_equal(count_calls(p), 0);
}

static void
test_compensation_refused_then_admin_retry(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/cref/1/action", 422, -1);
    fake_script("/cref/0/compensate", 409, -1);
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "cref", 2, NULL, NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("cref");
    assert_string_equal(jstate(j), "parked");
    const char *reason = json_string_value(json_object_get(j, "reason"));
    assert_non_null(strstr(reason, "compensation refused"));
    assert_non_null(strstr(reason, "409"));
    json_decref(j);
    path(p, "cref", 0, "compensate");
    assert_int_equal(count_calls(p), 1); /* refused: not retried */
    /* the admin list shows it */
    saga_req *r = saga_req_new(SAGA_REQ_LIST);
    r->list_state = SAGA_PARKED;
    assert_int_equal(run_req(g_c, r, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"cref\""));
    /* resolve needs a parked one: a committed one is refused */
    r = saga_req_new(SAGA_REQ_RETRY);
    snprintf(r->gid, sizeof r->gid, "happy");
    assert_int_equal(run_req(g_c, r, body, sizeof body), 409);
    /* fixed by hand: retry resumes the compensation */
    fake_script("/cref/0/compensate", 200, -1); /* a later script for the same path wins */
    pthread_mutex_lock(&F.mu);
    F.scripts[F.num_scripts - 2].path[0] = 0; /* drop the old one */
    pthread_mutex_unlock(&F.mu);
    r = saga_req_new(SAGA_REQ_RETRY);
    snprintf(r->gid, sizeof r->gid, "cref");
    snprintf(r->reason, sizeof r->reason, "participant fixed");
    assert_int_equal(run_req(g_c, r, body, sizeof body), 200);
    assert_non_null(strstr(body, "compensating"));
    j = final_state("cref");
    assert_string_equal(jstate(j), "compensated");
    assert_string_equal(step_state(j, 0), "compensated");
    json_decref(j);
}

static void
test_admin_resolve(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/res/0/action", 502, -1);
    char spec[4096], body[8192];
    const char *extra[] = {"\"recovery\":\"forward\""};
    spec_n(spec, sizeof spec, "res", 1, NULL, extra);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("res");
    assert_string_equal(jstate(j), "parked");
    json_decref(j);
    saga_req *r = saga_req_new(SAGA_REQ_RESOLVE);
    snprintf(r->gid, sizeof r->gid, "res");
    r->resolve_to = SAGA_COMMITTED;
    snprintf(r->reason, sizeof r->reason, "done by hand");
    assert_int_equal(run_req(g_c, r, body, sizeof body), 200);
    assert_int_equal(get("res", 0, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"committed\""));
}

static void
test_deadline(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/late/1/action", 503, -1);
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "late", 2,
           "\"timeout\":\"300ms\",\"retry\":{\"initial\":\"20ms\",\"max\":\"40ms\","
           "\"max_attempts\":1000},",
           NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("late");
    assert_string_equal(jstate(j), "compensated");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "timeout");
    json_decref(j);
    path(p, "late", 0, "compensate");
    assert_int_equal(count_calls(p), 1);
}

static void
test_parallel_group(void **state)
{
    (void) state;
    fake_reset();
    fake_script("/par/0/action", 0, -1); /* answered after 400 ms (timeout 2 s for it) */
    char spec[4096], body[8192], p[64];
    const char *extra[] = {"\"group\":0,\"timeout\":\"2s\"", "\"group\":0", "\"group\":1"};
    spec_n(spec, sizeof spec, "par", 3, NULL, extra);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    json_t *j = final_state("par");
    assert_string_equal(jstate(j), "committed");
    json_decref(j);
    path(p, "par", 0, "action");
    int a0 = first_call(p);
    path(p, "par", 1, "action");
    int a1 = first_call(p);
    path(p, "par", 2, "action");
    int a2 = first_call(p);
    assert_true(a0 >= 0 && a1 >= 0 && a2 >= 0);
    /* 0 and 1 overlapped: 1 arrived before 0 was answered; 2 came after both answers */
    assert_true(F.log[a1].at_us < F.log[a0].answered_us);
    assert_true(F.log[a2].at_us >= F.log[a0].answered_us);
    assert_true(F.log[a2].at_us >= F.log[a1].answered_us);
}

static void
test_wait_on_submit(void **state)
{
    (void) state;
    fake_reset();
    char spec[4096], body[8192];
    spec_n(spec, sizeof spec, "waited", 2, NULL, NULL);
    assert_int_equal(submit(spec, 5000, body, sizeof body), 200);
    assert_non_null(strstr(body, "\"committed\""));
    /* a wait that ends first: 202 */
    fake_script("/waited2/0/action", 0, -1);
    spec_n(spec, sizeof spec, "waited2", 1, NULL, (const char *const[]){"\"timeout\":\"2s\""});
    assert_int_equal(submit(spec, 50, body, sizeof body), 202);
    json_t *j = final_state("waited2");
    assert_string_equal(jstate(j), "committed");
    json_decref(j);
}

static void
test_restart_resumes(void **state)
{
    (void) state;
    fake_reset();
    /* step 1 answers 503 twice (retried after 10..40 ms), then 200 */
    fake_script("/rs/1/action", 503, 503, 200, -1);
    char spec[4096], body[8192], p[64];
    spec_n(spec, sizeof spec, "rs", 3,
           "\"retry\":{\"initial\":\"400ms\",\"max\":\"400ms\",\"max_attempts\":5},", NULL);
    assert_int_equal(submit(spec, 0, body, sizeof body), 201);
    path(p, "rs", 1, "action");
    for (int i = 0; i < 500 && count_calls(p) < 1; i++)
        usleep(2000);
    assert_true(count_calls(p) >= 1);
    /* stop the coordinator mid-way (the step is RUNNING in the store, backoff pending) */
    saga_coord_stop(g_c, 2000);
    saga_coord_free(g_c);
    int before = count_calls(p);
    g_c = coord_new(); /* the same SQLite store: claims and resumes */
    json_t *j = final_state("rs");
    assert_string_equal(jstate(j), "committed");
    assert_true(step_attempts(j, 1) >= 2);
    json_decref(j);
    assert_true(count_calls(p) > before);
    path(p, "rs", 0, "action");
    assert_int_equal(count_calls(p), 1); /* a succeeded step is never called again */
    path(p, "rs", 2, "action");
    assert_int_equal(count_calls(p), 1);
    (void) last_call;
}

static void
test_inflight_bound(void **state)
{
    (void) state;
    fake_reset();
    /* a second coordinator with room for one call at a time: a parallel group still ends */
    char url[160], spec[4096], body[8192];
    snprintf(url, sizeof url, "sqlite:%s/bound.db", g_dir);
    saga_coord_opts o = {.store_url = url,
                         .owner = "bound",
                         .max_inflight = 1,
                         .defaults = {.allow = g_allow, .num_allow = 1}};
    saga_coord *c2 = NULL;
    assert_int_equal(saga_coord_new(&c2, &o, NULL), 0);
    assert_int_equal(saga_coord_start(c2, NULL), 0);
    const char *extra[] = {"\"group\":0", "\"group\":0", "\"group\":0", "\"group\":1"};
    for (int k = 0; k < 3; k++) {
        char gid[16];
        snprintf(gid, sizeof gid, "bound%d", k);
        spec_n(spec, sizeof spec, gid, 4, NULL, extra);
        saga_req *r = saga_req_new(SAGA_REQ_SUBMIT);
        assert_int_equal(
            saga_spec_parse(&r->spec, spec, strlen(spec), saga_coord_defaults(c2), NULL), 0);
        r->wait_ms = 10000;
        assert_int_equal(run_req(c2, r, body, sizeof body), 200);
        assert_non_null(strstr(body, "\"committed\""));
    }
    saga_coord_stop(c2, 1000);
    saga_coord_free(c2);
}

/* ---- the HTTP API over a real socket ------------------------------------------------------ */

static size_t
sink(char *p, size_t sz, size_t n, void *ud)
{
    dbao_buf *b = ud;
    dbao_buf_put(b, p, sz * n);
    return sz * n;
}

static long
http(const char *method, uint16_t port, const char *target, const char *ctype, const char *auth,
     const char *data, dbao_buf *out)
{
    CURL *e = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, target);
    struct curl_slist *h = NULL;
    char line[256];
    if (ctype) {
        snprintf(line, sizeof line, "Content-Type: %s", ctype);
        h = curl_slist_append(h, line);
    }
    if (auth) {
        snprintf(line, sizeof line, "Authorization: %s", auth);
        h = curl_slist_append(h, line);
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (data)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, data);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    dbao_buf_reset(out);
    long st = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return st;
}

static void
test_http_api(void **state)
{
    (void) state;
    fake_reset();
    saga_api *api = NULL;
    saga_api_opts ao = {
        .host = "127.0.0.1", .admin_host = "127.0.0.1", .admin_token = "0123456789abcdef-token"};
    assert_int_equal(saga_api_start(&api, g_c, &ao, NULL), 0);
    uint16_t p = saga_api_port(api), ap = saga_api_admin_port(api);
    dbao_buf b = {0};
    char spec[4096];
    spec_n(spec, sizeof spec, "http1", 2, NULL, NULL);
    assert_int_equal(http("POST", p, "/v1/sagas?wait=5s", "application/json", NULL, spec, &b), 200);
    assert_non_null(strstr(b.data, "\"committed\""));
    assert_int_equal(http("POST", p, "/v1/sagas", "application/json", NULL, spec, &b), 200);
    assert_int_equal(http("GET", p, "/v1/sagas/http1", NULL, NULL, NULL, &b), 200);
    assert_non_null(strstr(b.data, "\"steps\":[{\"idx\":0"));
    assert_int_equal(http("GET", p, "/v1/sagas/nosuch", NULL, NULL, NULL, &b), 404);
    assert_int_equal(http("GET", p, "/v1/sagas/a%20b", NULL, NULL, NULL, &b), 404);
    assert_int_equal(http("POST", p, "/v1/sagas", "text/plain", NULL, spec, &b), 415);
    assert_int_equal(
        http("POST", p, "/v1/sagas", "application/json", NULL, "{\"steps\":[],\"x\":1}", &b), 400);
    assert_non_null(strstr(b.data, "unknown key"));
    assert_int_equal(http("POST", p, "/v1/sagas?wait=xyz", "application/json", NULL, spec, &b),
                     400);
    assert_int_equal(http("DELETE", p, "/v1/sagas", NULL, NULL, NULL, &b), 405);
    assert_int_equal(http("GET", p, "/nope", NULL, NULL, NULL, &b), 404);
    /* no gid: a generated one */
    const char *nogid = "{\"steps\":[{\"action\":\"http://127.0.0.1:1/a\","
                        "\"compensate\":\"http://127.0.0.1:1/b\"}],\"timeout\":\"1s\","
                        "\"retry\":{\"initial\":\"1ms\",\"max\":\"2ms\",\"max_attempts\":1}}";
    assert_int_equal(http("POST", p, "/v1/sagas", "application/json", NULL, nogid, &b), 201);
    assert_non_null(strstr(b.data, "\"gid\":\""));
    /* admin: token required */
    assert_int_equal(http("GET", ap, "/v1/admin/sagas", NULL, NULL, NULL, &b), 401);
    assert_int_equal(http("GET", ap, "/v1/admin/sagas", NULL, "Bearer wrong", NULL, &b), 401);
    const char *tok = "Bearer 0123456789abcdef-token";
    assert_int_equal(http("GET", ap, "/v1/admin/sagas?state=parked&limit=10", NULL, tok, NULL, &b),
                     200);
    assert_non_null(strstr(b.data, "\"sagas\":["));
    assert_int_equal(http("GET", ap, "/v1/admin/sagas?state=bogus", NULL, tok, NULL, &b), 400);
    assert_int_equal(
        http("GET", ap, "/v1/admin/sagas?state=stuck&older_than=1s", NULL, tok, NULL, &b), 200);
    assert_int_equal(http("POST", ap, "/v1/admin/sagas/http1/resolve", "application/json", tok,
                          "{\"state\":\"committed\",\"reason\":\"x\"}", &b),
                     409); /* not parked */
    assert_int_equal(http("POST", ap, "/v1/admin/sagas/http1/resolve", "application/json", tok,
                          "{\"state\":\"done\",\"reason\":\"x\"}", &b),
                     400);
    assert_int_equal(
        http("POST", ap, "/v1/admin/sagas/nosuch/retry", "application/json", tok, "{}", &b), 404);
    assert_int_equal(http("GET", ap, "/metrics", NULL, tok, NULL, &b), 200);
    assert_non_null(strstr(b.data, "dengbao_saga_transactions_total{outcome=\"committed\"}"));
    assert_int_equal(http("GET", ap, "/healthz", NULL, NULL, NULL, &b), 200);
    assert_int_equal(http("GET", p, "/healthz", NULL, NULL, NULL, &b), 200);
    dbao_buf_free(&b);
    saga_api_stop_accepting(api);
    saga_api_free(api);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_happy),
        cmocka_unit_test(test_definite_failure_reverse),
        cmocka_unit_test(test_5xx_then_success),
        cmocka_unit_test(test_timeout_then_success),
        cmocka_unit_test(test_unknown_exhausted_backward),
        cmocka_unit_test(test_unknown_exhausted_forward),
        cmocka_unit_test(test_compensation_refused_then_admin_retry),
        cmocka_unit_test(test_admin_resolve),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_parallel_group),
        cmocka_unit_test(test_wait_on_submit),
        cmocka_unit_test(test_restart_resumes),
        cmocka_unit_test(test_inflight_bound),
        cmocka_unit_test(test_http_api),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
