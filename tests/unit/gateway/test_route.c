/* test_route.c: path normalization, route matching (src/gateway/route.c) and endpoint
 * balancing and health (src/gateway/balance.c).
 *
 * Normalization is a table of (input, expected output or refusal), each output also checked
 * to be a fixpoint. Matching uses a hand-built configuration covering the precedence rules
 * (exact host > wildcard > any host; longest prefix; segment boundary; host with port; case).
 * Balancing: round robin spreads evenly and honours exclusion; least-connections picks the
 * least loaded and rotates ties; passive ejection and its expiry; active thresholds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dengbao/gateway.h"

static const struct {
    const char *in;
    const char *out; /* NULL: refused with DBAO_EFORMAT */
} NORM[] = {
    {"/", "/"},
    {"/a/b", "/a/b"},
    {"/a/b/", "/a/b/"},
    {"//", "/"},
    {"/a//b///c", "/a/b/c"},
    {"/a/./b", "/a/b"},
    {"/a/.", "/a/"},
    {"/a/..", "/"},
    {"/a/b/../c", "/a/c"},
    {"/a/b/../../c/", "/c/"},
    {"/..", NULL},
    {"/a/../..", NULL},
    {"/%2e%2e", NULL},
    {"/a/%2e%2e/b", "/b"},
    {"/a/%2E/b", "/a/b"},
    {"/a/.%2e/b", "/b"},
    {"/%41%62c", "/Abc"},
    {"/%7e%5f%2d", "/~_-"},
    {"/a%2fb", NULL},
    {"/a%2Fb", NULL},
    {"/a%5cb", NULL},
    {"/a%00", NULL},
    {"/a\\b", NULL},
    {"/a%3a%3Ab", "/a%3A%3Ab"},
    {"/%e4%b8%ad", "/%E4%B8%AD"},
    {"/a%2", NULL},
    {"/a%zz", NULL},
    {"/a%", NULL},
    {"/a\tb", NULL},
    {"/a\x7f", NULL},
    {"a/b", NULL},
    {"", NULL},
    {"/...", "/..."},
    {"/a/.b/..c", "/a/.b/..c"},
    {"/a?b=/../c", "/c"}, /* the caller strips the query first; '?' is an ordinary byte */
};

static void
test_normalize(void **state)
{
    (void) state;
    char out[256], again[256];
    for (size_t i = 0; i < sizeof(NORM) / sizeof(NORM[0]); i++) {
        int rc = gw_path_normalize(NORM[i].in, out, sizeof(out));
        if (NORM[i].out == NULL) {
            if (rc != DBAO_EFORMAT)
                fail_msg("'%s': rc %d, out '%s'", NORM[i].in, rc, rc == 0 ? out : "");
            continue;
        }
        if (rc != 0)
            fail_msg("'%s': rc %d", NORM[i].in, rc);
        if (strcmp(out, NORM[i].out) != 0)
            fail_msg("'%s': got '%s', want '%s'", NORM[i].in, out, NORM[i].out);
        assert_int_equal(gw_path_normalize(out, again, sizeof(again)), 0);
        assert_string_equal(again, out);
    }
    /* capacity */
    assert_int_equal(gw_path_normalize("/abc", out, 5), 0);
    assert_int_equal(gw_path_normalize("/abcd", out, 5), DBAO_ERANGE);
    assert_int_equal(gw_path_normalize("/%3a", out, 4), DBAO_ERANGE);
    assert_int_equal(gw_path_normalize("/%3a", out, 5), 0);
    assert_int_equal(gw_path_normalize("/", out, 1), DBAO_ERANGE);
}

static gw_route
R(const char *host, const char *prefix)
{
    gw_route r;
    memset(&r, 0, sizeof(r));
    r.host = (char *) host;
    r.prefix = (char *) prefix;
    return r;
}

static void
test_match(void **state)
{
    (void) state;
    gw_route routes[] = {
        R(NULL, "/"),                   /* 0 */
        R(NULL, "/api"),                /* 1 */
        R(NULL, "/api/v2/"),            /* 2 */
        R("*.example.com", "/"),        /* 3 */
        R("api.example.com", "/"),      /* 4 */
        R("api.example.com", "/admin"), /* 5 */
        R("*.example.com", "/api"),     /* 6 */
        R("*", "/star"),                /* 7: "*" is any host */
        R(NULL, "/api"),                /* 8: same as 1: first wins */
        R("[::1]", "/v6"),              /* 9: bracket-less compare */
    };
    routes[9].host = (char *) "::1";
    gw_config c;
    memset(&c, 0, sizeof(c));
    c.routes = routes;
    c.num_routes = sizeof(routes) / sizeof(routes[0]);
    static const struct {
        const char *host, *path;
        int want;
    } T[] = {
        {NULL, "/", 0},
        {NULL, "/x", 0},
        {NULL, "/api", 1},
        {NULL, "/api/", 1},
        {NULL, "/api/x", 1},
        {NULL, "/apix", 0},
        {NULL, "/api/v2", 1}, /* "/api/v2/" needs the slash */
        {NULL, "/api/v2/", 2},
        {NULL, "/api/v2/x", 2},
        {"other.org", "/api/x", 1},
        {"www.example.com", "/x", 3},
        {"www.example.com", "/api/x", 6},
        {"a.b.example.com", "/api", 6},
        {"example.com", "/api", 1}, /* the wildcard needs a label */
        {"api.example.com", "/api/x", 4},
        {"API.Example.COM", "/x", 4},
        {"api.example.com:8443", "/admin/users", 5},
        {"api.example.com.", "/admin", 5},
        {"api.example.com", "/adminx", 4},
        {"x.org", "/star/1", 7},
        {"[::1]:8443", "/v6/a", 9},
        {"[::1]", "/v6", 9},
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        int got = gw_route_match(&c, T[i].host, T[i].path);
        if (got != T[i].want)
            fail_msg("host %s path %s: got %d want %d", T[i].host ? T[i].host : "(null)", T[i].path,
                     got, T[i].want);
    }
    /* no any-host route: unknown hosts do not match */
    gw_config c2 = c;
    c2.routes = routes + 3;
    c2.num_routes = 3;
    assert_int_equal(gw_route_match(&c2, "other.org", "/"), -1);
    assert_int_equal(gw_route_match(&c2, NULL, "/"), -1);
    assert_int_equal(gw_route_match(&c2, "api.example.com", "/"), 1);
}

static gw_cluster
cluster(size_t n, gw_addr *eps, gw_balance b)
{
    gw_cluster k;
    memset(&k, 0, sizeof(k));
    k.name = (char *) "c";
    k.endpoints = eps;
    k.num_endpoints = n;
    k.balance = b;
    k.health.healthy_threshold = 2;
    k.health.unhealthy_threshold = 3;
    k.health.passive_failures = 3;
    k.health.passive_eject_ms = 1000;
    return k;
}

static void
test_round_robin(void **state)
{
    (void) state;
    gw_addr eps[4];
    memset(eps, 0, sizeof(eps));
    gw_cluster k = cluster(4, eps, GW_BALANCE_ROUND_ROBIN);
    gw_cluster_state *s = NULL;
    assert_int_equal(gw_cluster_state_new(&s, &k), 0);
    int count[4] = {0};
    for (int i = 0; i < 400; i++) {
        int e = gw_balance_pick(s, NULL, 0, 100);
        assert_true(e >= 0 && e < 4);
        count[e]++;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(count[i], 100);
    /* exclusion: never 1 or 2 */
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 100; i++)
        count[gw_balance_pick(s, NULL, 0x6, 100)]++;
    assert_int_equal(count[1] + count[2], 0);
    assert_int_equal(count[0], 50);
    assert_int_equal(count[3], 50);
    assert_int_equal(gw_balance_pick(s, NULL, 0xf, 100), -1);
    /* an unhealthy endpoint is skipped */
    for (int i = 0; i < 3; i++)
        assert_int_equal(gw_health_check_result(s, 0, false), i == 2);
    for (int i = 0; i < 100; i++)
        assert_int_not_equal(gw_balance_pick(s, NULL, 0, 100), 0);
    gw_cluster_state_free(s);
}

static void
test_least_conn(void **state)
{
    (void) state;
    gw_addr eps[3];
    memset(eps, 0, sizeof(eps));
    gw_cluster k = cluster(3, eps, GW_BALANCE_LEAST_CONN);
    gw_cluster_state *s = NULL;
    assert_int_equal(gw_cluster_state_new(&s, &k), 0);
    unsigned active[3] = {5, 2, 7};
    for (int i = 0; i < 10; i++)
        assert_int_equal(gw_balance_pick(s, active, 0, 0), 1);
    assert_int_equal(gw_balance_pick(s, active, 1u << 1, 0), 0);
    /* ties rotate */
    unsigned tie[3] = {1, 1, 1};
    int count[3] = {0};
    for (int i = 0; i < 30; i++)
        count[gw_balance_pick(s, tie, 0, 0)]++;
    assert_int_equal(count[0], 10);
    assert_int_equal(count[1], 10);
    assert_int_equal(count[2], 10);
    /* simulate a worker: pick, hold; all even out */
    unsigned act[3] = {0, 0, 0};
    for (int i = 0; i < 30; i++)
        act[gw_balance_pick(s, act, 0, 0)]++;
    assert_int_equal(act[0], 10);
    assert_int_equal(act[1], 10);
    assert_int_equal(act[2], 10);
    gw_cluster_state_free(s);
}

static void
test_passive(void **state)
{
    (void) state;
    gw_addr eps[2];
    memset(eps, 0, sizeof(eps));
    gw_cluster k = cluster(2, eps, GW_BALANCE_ROUND_ROBIN);
    gw_cluster_state *s = NULL;
    assert_int_equal(gw_cluster_state_new(&s, &k), 0);
    /* two failures, a success resets, then three failures eject */
    gw_health_report(s, 0, false, 1000);
    gw_health_report(s, 0, false, 1000);
    gw_health_report(s, 0, true, 1000);
    gw_health_report(s, 0, false, 1000);
    gw_health_report(s, 0, false, 1000);
    for (int i = 0; i < 10; i++)
        assert_true(gw_balance_pick(s, NULL, 0, 1000) >= 0);
    int zero = 0;
    for (int i = 0; i < 10; i++)
        zero += gw_balance_pick(s, NULL, 0, 1000) == 0;
    assert_int_equal(zero, 5);
    gw_health_report(s, 0, false, 1000);
    for (int i = 0; i < 10; i++)
        assert_int_equal(gw_balance_pick(s, NULL, 0, 1999), 1);
    assert_int_equal(gw_balance_pick(s, NULL, 2, 1999), -1);
    /* ejection expires */
    zero = 0;
    for (int i = 0; i < 10; i++)
        zero += gw_balance_pick(s, NULL, 0, 2000) == 0;
    assert_int_equal(zero, 5);
    assert_int_equal(atomic_load(&s->eps[0].errors), 5);
    /* passive_failures 0: never ejected */
    k.health.passive_failures = 0;
    for (int i = 0; i < 100; i++)
        gw_health_report(s, 1, false, 3000);
    assert_int_equal(gw_balance_pick(s, NULL, 1, 3000), 1);
    gw_cluster_state_free(s);
}

static void
test_active(void **state)
{
    (void) state;
    gw_addr eps[1];
    memset(eps, 0, sizeof(eps));
    gw_cluster k = cluster(1, eps, GW_BALANCE_ROUND_ROBIN);
    gw_cluster_state *s = NULL;
    assert_int_equal(gw_cluster_state_new(&s, &k), 0);
    assert_false(gw_health_check_result(s, 0, false));
    assert_false(gw_health_check_result(s, 0, false));
    assert_false(gw_health_check_result(s, 0, true)); /* resets the failures */
    assert_false(gw_health_check_result(s, 0, false));
    assert_false(gw_health_check_result(s, 0, false));
    assert_int_equal(gw_balance_pick(s, NULL, 0, 0), 0);
    assert_true(gw_health_check_result(s, 0, false)); /* third in a row: down */
    assert_int_equal(gw_balance_pick(s, NULL, 0, 0), -1);
    assert_false(gw_health_check_result(s, 0, false));
    assert_false(gw_health_check_result(s, 0, true));
    assert_false(gw_health_check_result(s, 0, false));
    assert_false(gw_health_check_result(s, 0, true));
    assert_int_equal(gw_balance_pick(s, NULL, 0, 0), -1);
    assert_true(gw_health_check_result(s, 0, true)); /* second pass in a row: up */
    assert_int_equal(gw_balance_pick(s, NULL, 0, 0), 0);
    assert_false(gw_health_check_result(s, 0, true));
    assert_false(gw_health_check_result(s, 5, true)); /* out of range: ignored */
    gw_cluster_state_free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),   cmocka_unit_test(test_match),
        cmocka_unit_test(test_round_robin), cmocka_unit_test(test_least_conn),
        cmocka_unit_test(test_passive),     cmocka_unit_test(test_active),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
