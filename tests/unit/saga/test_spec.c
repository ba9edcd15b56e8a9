/* test_spec.c: the saga spec parser (src/saga/spec.c): every refusal names its field; the
 * canonical form fills the defaults, is stable (canonical of canonical is the same bytes) and
 * does not depend on key order or white space; the allow-list; durations; gids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coord.h"

static const char *const ALLOW[] = {"127.0.0.1:*", "bank.example:8443"};
static const saga_spec_defaults D = {.timeout_ms = 30000,
                                     .call_timeout_ms = 3000,
                                     .retry_initial_ms = 100,
                                     .retry_max_ms = 5000,
                                     .max_attempts = 6,
                                     .allow = ALLOW,
                                     .num_allow = 2};

#define A  "\"action\":\"http://127.0.0.1:7001/debit\""
#define C  "\"compensate\":\"http://127.0.0.1:7001/debit/undo\""
#define AC A "," C

static const char GOOD[] =
    "{\"gid\":\"transfer-42\",\"timeout\":\"30s\",\"retry\":{\"initial\":\"100ms\",\"max\":\"5s\","
    "\"max_attempts\":6},\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"steps\":["
    "{\"name\":\"debit\",\"group\":0,\"recovery\":\"backward\"," AC ","
    "\"payload\":{\"account\":\"A1\",\"amount\":1000},\"timeout\":\"3s\"},"
    "{\"name\":\"credit\",\"action\":\"http://127.0.0.1:7002/credit\","
    "\"compensate\":\"http://127.0.0.1:7002/credit/undo\",\"payload\":{\"account\":\"B1\","
    "\"amount\":1000}}]}";

static void
test_good(void **state)
{
    (void) state;
    saga_spec s;
    dbao_err err;
    assert_int_equal(saga_spec_parse(&s, GOOD, strlen(GOOD), &D, &err), 0);
    assert_string_equal(s.gid, "transfer-42");
    assert_int_equal(s.num_steps, 2);
    assert_int_equal(s.timeout_ms, 30000);
    assert_int_equal(s.steps[1].group, 1); /* default = index */
    assert_int_equal(s.steps[1].timeout_ms, 3000);
    assert_int_equal(s.steps[0].recovery, SAGA_BACKWARD);
    assert_string_equal(s.steps[0].payload, "{\"account\":\"A1\",\"amount\":1000}");
    assert_string_equal(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_null(strstr(s.canonical, "transfer-42")); /* the gid is not part of the spec */
    /* canonical of canonical: the same bytes */
    saga_spec t;
    assert_int_equal(
        saga_spec_from_canonical(&t, "transfer-42", s.canonical, s.canonical_len, &err), 0);
    assert_int_equal(t.canonical_len, s.canonical_len);
    assert_memory_equal(t.canonical, s.canonical, s.canonical_len);
    assert_string_equal(t.gid, "transfer-42");
    saga_spec_free(&t);
    /* key order, white space and defaults written out do not change it */
    const char *other =
        "{ \"steps\" : [ "
        "{\"payload\":{\"amount\":1000,\"account\":\"A1\"},\"timeout\":\"3000ms\"," C "," A
        ",\"name\":\"debit\"},\n"
        "{\"name\":\"credit\",\"group\":1,\"recovery\":\"backward\","
        "\"compensate\":\"http://127.0.0.1:7002/credit/undo\","
        "\"action\":\"http://127.0.0.1:7002/credit\",\"payload\":{\"amount\":1000,"
        "\"account\":\"B1\"}}], \"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
        "\"gid\":\"transfer-42\" }";
    assert_int_equal(saga_spec_parse(&t, other, strlen(other), &D, &err), 0);
    assert_string_equal(t.canonical, s.canonical);
    saga_spec_free(&t);
    saga_spec_free(&s);
    /* no gid: left empty for the caller */
    const char *nogid = "{\"steps\":[{" AC "}]}";
    assert_int_equal(saga_spec_parse(&s, nogid, strlen(nogid), &D, &err), 0);
    assert_string_equal(s.gid, "");
    assert_string_equal(s.steps[0].payload, "{}");
    assert_string_equal(s.steps[0].name, "step-0");
    saga_spec_free(&s);
    /* a generated gid is valid */
    char g[SAGA_GID_MAX + 1];
    saga_gid_generate(g);
    assert_true(saga_gid_valid(g));
    assert_int_equal(strlen(g), 36);
}

typedef struct bad {
    const char *json;
    const char *msg; /* substring of the error message */
} bad;

static void
test_refusals(void **state)
{
    (void) state;
    static const bad cases[] = {
        {"", "not valid JSON"},
        {"[]", "must be a JSON object"},
        {"{\"steps\":[{" AC "}],\"steps\":[]}", "not valid JSON"}, /* duplicate key */
        {"{\"bogus\":1,\"steps\":[{" AC "}]}", "unknown key \"bogus\""},
        {"{\"steps\":[{" AC ",\"extra\":1}]}", "steps[0]: unknown key \"extra\""},
        {"{\"retry\":{\"jitter\":1},\"steps\":[{" AC "}]}", "retry: unknown key \"jitter\""},
        {"{\"gid\":\"a b\",\"steps\":[{" AC "}]}", "gid"},
        {"{\"gid\":\"\",\"steps\":[{" AC "}]}", "gid"},
        {"{\"gid\":7,\"steps\":[{" AC "}]}", "gid"},
        {"{\"steps\":[]}", "steps"},
        {"{\"steps\":{}}", "steps"},
        {"{}", "steps"},
        {"{\"steps\":[1]}", "steps[0]: must be an object"},
        {"{\"steps\":[{" C "}]}", "steps[0].action"},
        {"{\"steps\":[{" A "}]}", "steps[0].compensate"},
        {"{\"steps\":[{\"action\":\"ftp://127.0.0.1/x\"," C "}]}", "steps[0].action: must start"},
        {"{\"steps\":[{\"action\":\"http://10.0.0.1:80/x\"," C "}]}",
         "steps[0].action: host not in participants.allow"},
        {"{\"steps\":[{\"action\":\"http://bank.example:8080/x\"," C "}]}", "host not in"},
        {"{\"steps\":[{\"action\":\"http://u@127.0.0.1/x\"," C "}]}", "user info"},
        {"{\"steps\":[{\"action\":\"http://127.0.0.1:99999/x\"," C "}]}", "bad port"},
        {"{\"steps\":[{\"action\":\"http://127.0.0.1/a b\"," C "}]}", "space"},
        {"{\"steps\":[{\"action\":\"http://127.0.0.1/a#f\"," C "}]}", "fragment"},
        {"{\"steps\":[{\"action\":\"http:///x\"," C "}]}", "host"},
        {"{\"steps\":[{" AC ",\"payload\":[1]}]}", "steps[0].payload: must be an object"},
        {"{\"steps\":[{" AC ",\"payload\":{\"amount\":10.5}}]}", "fractional"},
        {"{\"steps\":[{" AC ",\"payload\":{\"a\":[{\"b\":1e3}]}}]}", "fractional"},
        {"{\"steps\":[{" AC ",\"recovery\":\"sideways\"}]}", "steps[0].recovery"},
        {"{\"steps\":[{" AC ",\"group\":-1}]}", "steps[0].group"},
        {"{\"steps\":[{" AC ",\"group\":\"0\"}]}", "steps[0].group"},
        {"{\"steps\":[{" AC ",\"group\":1},{" AC ",\"group\":0}]}", "must not decrease"},
        {"{\"steps\":[{" AC ",\"name\":\"a/b\"}]}", "steps[0].name"},
        {"{\"steps\":[{" AC ",\"timeout\":\"3\"}]}", "steps[0].timeout"},
        {"{\"steps\":[{" AC ",\"timeout\":3}]}", "steps[0].timeout"},
        {"{\"timeout\":\"0s\",\"steps\":[{" AC "}]}", "timeout"},
        {"{\"timeout\":\"31d\",\"steps\":[{" AC "}]}", "timeout"},
        {"{\"timeout\":\"-1s\",\"steps\":[{" AC "}]}", "timeout"},
        {"{\"retry\":{\"max_attempts\":0},\"steps\":[{" AC "}]}", "retry.max_attempts"},
        {"{\"retry\":{\"max_attempts\":1001},\"steps\":[{" AC "}]}", "retry.max_attempts"},
        {"{\"retry\":{\"initial\":\"10s\",\"max\":\"1s\"},\"steps\":[{" AC "}]}", "retry.initial"},
        {"{\"retry\":[],\"steps\":[{" AC "}]}", "retry: must be an object"},
        {"{\"trace_id\":\"XYZ\",\"steps\":[{" AC "}]}", "trace_id"},
        {"{\"trace_id\":\"00000000000000000000000000000000\",\"steps\":[{" AC "}]}", "trace_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        saga_spec s;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = saga_spec_parse(&s, cases[i].json, strlen(cases[i].json), &D, &err);
        if (rc == 0 || strstr(err.msg, cases[i].msg) == NULL)
            fail_msg("case %zu (%s): rc %d, message \"%s\"", i, cases[i].json, rc, err.msg);
    }
    /* too many steps */
    dbao_buf b = {0};
    assert_int_equal(dbao_buf_printf(&b, "{\"steps\":["), 0);
    for (int i = 0; i <= SAGA_STEPS_MAX; i++)
        assert_int_equal(dbao_buf_printf(&b, "%s{" AC "}", i ? "," : ""), 0);
    assert_int_equal(dbao_buf_printf(&b, "]}"), 0);
    saga_spec s;
    dbao_err err;
    assert_int_equal(saga_spec_parse(&s, b.data, b.len, &D, &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "steps"));
    dbao_buf_free(&b);
    /* too big */
    size_t big = SAGA_SPEC_MAX + 1;
    char *p = malloc(big);
    memset(p, ' ', big);
    assert_int_equal(saga_spec_parse(&s, p, big, &D, &err), DBAO_ERANGE);
    free(p);
    /* no allow-list: every host refused */
    saga_spec_defaults none = D;
    none.num_allow = 0;
    assert_int_equal(saga_spec_parse(&s, GOOD, strlen(GOOD), &none, &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "participants.allow"));
}

static void
test_helpers(void **state)
{
    (void) state;
    uint64_t ms;
    assert_int_equal(saga_duration_parse("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(saga_duration_parse("3s", &ms), 0);
    assert_int_equal(ms, 3000);
    assert_int_equal(saga_duration_parse("2m", &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(saga_duration_parse("1h", &ms), 0);
    assert_int_equal(ms, 3600000);
    assert_int_not_equal(saga_duration_parse("1", &ms), 0);
    assert_int_not_equal(saga_duration_parse("s", &ms), 0);
    assert_int_not_equal(saga_duration_parse("1.5s", &ms), 0);
    assert_int_not_equal(saga_duration_parse("99999999999999999999s", &ms), 0);
    assert_true(saga_allow_match("*", "x:1"));
    assert_true(saga_allow_match("127.0.0.1:*", "127.0.0.1:7001"));
    assert_false(saga_allow_match("127.0.0.1:*", "127.0.0.10:7001"));
    assert_true(saga_allow_match("*:8080", "a.b:8080"));
    assert_false(saga_allow_match("*:8080", "a.b:8081"));
    assert_true(saga_allow_match("h:1", "h:1"));
    assert_false(saga_allow_match("h:1", "h:10"));
    assert_true(saga_gid_valid("a.b_c:d-e"));
    assert_false(saga_gid_valid(""));
    assert_false(saga_gid_valid("a/b"));
    char g[SAGA_GID_MAX + 2];
    memset(g, 'a', SAGA_GID_MAX);
    g[SAGA_GID_MAX] = 0;
    assert_true(saga_gid_valid(g));
    g[SAGA_GID_MAX] = 'a';
    g[SAGA_GID_MAX + 1] = 0;
    assert_false(saga_gid_valid(g));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
