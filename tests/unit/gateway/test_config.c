/* test_config.c: the gateway's YAML configuration parser (src/gateway/config.c).
 *
 * A full example parses to the expected structures (defaults included, relative paths
 * resolved against the file's directory); each negative case must fail with DBAO_EFORMAT and a
 * message containing the expected text and "name:line:"; units (durations, sizes) are checked
 * directly; gw_config_load reads a real file; gw_config_quick and gw_config_same_listeners.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dengbao/gateway.h"
#include "dengbao/zt.h"
#include "internal.h"

static const char FULL[] =
    "workers: 2\n"                     /* 1 */
    "listeners:\n"                     /* 2 */
    "  - listen: \"127.0.0.1:8080\"\n" /* 3 */
    "  - listen: \"[::1]:8443\"\n"     /* 4 */
    "    tls: {cert: certs/gw.pem, key: /abs/gw.key, client_ca: ca.pem,\n"
    "          client_verify: require}\n"
    "admin: \"127.0.0.1:9901\"\n"
    "limits: {header_max: 8k, headers_num_max: 50, body_max: 1m}\n"
    "timeouts: {header: 5s, body: 30000, idle: 1m, drain: 500ms}\n"
    "trusted_proxies: [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\"]\n"
    "access_log: logs/access.log\n"
    "clusters:\n"
    "  - name: api\n"
    "    endpoints: [\"127.0.0.1:9000\", \"127.0.0.1:9001\"]\n"
    "    balance: least_conn\n"
    "    keepalive: 32\n"
    "    max_conns: 100\n"
    "    timeouts: {connect: 1s, read: 20s, idle: 2m}\n"
    "    retries: 2\n"
    "    health: {path: /ready, interval: 3s, timeout: 500ms, healthy: 1, unhealthy: 4,\n"
    "             passive_failures: 7, passive_eject: 20s}\n"
    "  - name: static\n"
    "    endpoints: [\"[::1]:7000\"]\n"
    "routes:\n"
    "  - name: patients\n"
    "    host: API.Example.com\n"
    "    prefix: /v1/\n"
    "    cluster: api\n"
    "    strip_prefix: true\n"
    "    body_max: 64k\n"
    "    timeout: 10s\n"
    "  - prefix: /static\n"
    "    cluster: static\n"
    "  - cluster: api\n"
    "    host: \"*.example.com\"\n";

static void
test_full(void **state)
{
    (void) state;
    gw_config *c = NULL;
    dbao_err err;
    int rc = gw_config_parse(&c, FULL, strlen(FULL), "/etc/dengbao/gateway.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(c->workers, 2);
    assert_int_equal(c->num_listeners, 2);
    assert_string_equal(c->listeners[0].addr.host, "127.0.0.1");
    assert_int_equal(c->listeners[0].addr.port, 8080);
    assert_null(c->listeners[0].tls_cert);
    assert_string_equal(c->listeners[1].addr.host, "::1");
    assert_int_equal(c->listeners[1].addr.port, 8443);
    assert_string_equal(c->listeners[1].tls_cert, "/etc/dengbao/certs/gw.pem");
    assert_string_equal(c->listeners[1].tls_key, "/abs/gw.key");
    assert_string_equal(c->listeners[1].tls_client_ca, "/etc/dengbao/ca.pem");
    assert_int_equal(c->listeners[1].client_verify, NET_CLIENT_VERIFY_REQUIRE);
    assert_string_equal(c->admin.host, "127.0.0.1");
    assert_int_equal(c->admin.port, 9901);
    assert_int_equal(c->header_max, 8192);
    assert_int_equal(c->headers_num_max, 50);
    assert_int_equal(c->body_max, 1 << 20);
    assert_int_equal(c->header_timeout_ms, 5000);
    assert_int_equal(c->body_timeout_ms, 30000);
    assert_int_equal(c->idle_timeout_ms, 60000);
    assert_int_equal(c->drain_timeout_ms, 500);
    assert_int_equal(c->num_trusted, 3);
    assert_true(gw_cidr_match(c->trusted_proxies, c->num_trusted, "10.2.3.4"));
    assert_true(gw_cidr_match(c->trusted_proxies, c->num_trusted, "fd12::1"));
    assert_false(gw_cidr_match(c->trusted_proxies, c->num_trusted, "127.0.0.2"));
    assert_string_equal(c->access_log, "/etc/dengbao/logs/access.log");
    assert_int_equal(c->num_clusters, 2);
    const gw_cluster *a = &c->clusters[0];
    assert_string_equal(a->name, "api");
    assert_int_equal(a->num_endpoints, 2);
    assert_int_equal(a->endpoints[1].port, 9001);
    assert_int_equal(a->balance, GW_BALANCE_LEAST_CONN);
    assert_int_equal(a->keepalive, 32);
    assert_int_equal(a->max_conns, 100);
    assert_int_equal(a->connect_timeout_ms, 1000);
    assert_int_equal(a->read_timeout_ms, 20000);
    assert_int_equal(a->idle_timeout_ms, 120000);
    assert_int_equal(a->retries, 2);
    assert_true(a->health.enabled);
    assert_string_equal(a->health.path, "/ready");
    assert_int_equal(a->health.interval_ms, 3000);
    assert_int_equal(a->health.timeout_ms, 500);
    assert_int_equal(a->health.healthy_threshold, 1);
    assert_int_equal(a->health.unhealthy_threshold, 4);
    assert_int_equal(a->health.passive_failures, 7);
    assert_int_equal(a->health.passive_eject_ms, 20000);
    const gw_cluster *s = &c->clusters[1];
    assert_string_equal(s->endpoints[0].host, "::1");
    assert_int_equal(s->balance, GW_BALANCE_ROUND_ROBIN);
    assert_int_equal(s->keepalive, 64);
    assert_int_equal(s->max_conns, 0);
    assert_int_equal(s->connect_timeout_ms, 2000);
    assert_int_equal(s->read_timeout_ms, 30000);
    assert_int_equal(s->retries, 1);
    assert_false(s->health.enabled);
    assert_string_equal(s->health.path, "/healthz");
    assert_int_equal(s->health.passive_failures, 5);
    assert_int_equal(s->health.passive_eject_ms, 10000);
    assert_int_equal(c->num_routes, 3);
    assert_string_equal(c->routes[0].name, "patients");
    assert_string_equal(c->routes[0].host, "api.example.com");
    assert_string_equal(c->routes[0].prefix, "/v1/");
    assert_int_equal(c->routes[0].prefix_len, 4);
    assert_int_equal(c->routes[0].cluster, 0);
    assert_true(c->routes[0].strip_prefix);
    assert_int_equal(c->routes[0].body_max, 65536);
    assert_int_equal(c->routes[0].timeout_ms, 10000);
    assert_string_equal(c->routes[1].name, "route2");
    assert_null(c->routes[1].host);
    assert_int_equal(c->routes[1].cluster, 1);
    assert_int_equal(c->routes[1].body_max, 1 << 20);
    assert_false(c->routes[1].strip_prefix);
    assert_string_equal(c->routes[2].prefix, "/");
    assert_string_equal(c->routes[2].host, "*.example.com");
    /* routing on the parsed config */
    assert_int_equal(gw_route_match(c, "api.example.com:8443", "/v1/patients"), 0);
    assert_int_equal(gw_route_match(c, "x.example.com", "/v1/patients"), 2);
    assert_int_equal(gw_route_match(c, "other", "/static/a.css"), 1);
    assert_int_equal(gw_route_match(c, "other", "/v1/"), -1);
    gw_config_free(c);
}

static void
test_minimal_defaults(void **state)
{
    (void) state;
    static const char y[] = "listeners: [{listen: \"0.0.0.0:0\"}]\n"
                            "clusters: [{name: a, endpoints: [\"127.0.0.1:1\"],"
                            " health: {enabled: true}}]\n"
                            "routes: [{cluster: a}]\naccess_log: off\n";
    gw_config *c = NULL;
    dbao_err err;
    int rc = gw_config_parse(&c, y, strlen(y), "gw.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(c->workers, 1);
    assert_int_equal(c->admin.port, 0);
    assert_int_equal(c->header_max, 16384);
    assert_int_equal(c->headers_num_max, 100);
    assert_int_equal(c->body_max, 16 << 20);
    assert_int_equal(c->header_timeout_ms, 10000);
    assert_int_equal(c->body_timeout_ms, 60000);
    assert_int_equal(c->idle_timeout_ms, 60000);
    assert_int_equal(c->drain_timeout_ms, 10000);
    assert_null(c->access_log);
    assert_int_equal(c->num_trusted, 0);
    assert_true(c->clusters[0].health.enabled);
    assert_string_equal(c->clusters[0].health.path, "/healthz");
    assert_int_equal(c->clusters[0].health.interval_ms, 2000);
    assert_int_equal(c->clusters[0].health.timeout_ms, 1000);
    assert_int_equal(c->clusters[0].health.healthy_threshold, 2);
    assert_int_equal(c->clusters[0].health.unhealthy_threshold, 3);
    assert_string_equal(c->routes[0].name, "route1");
    assert_string_equal(c->routes[0].prefix, "/");
    gw_config_free(c);

    /* relative paths stay relative without a directory in the name; "-" is stdout */
    static const char y2[] = "listeners: [{listen: \"127.0.0.1:0\", tls: {cert: c.pem, key: "
                             "k.pem, client_ca: ca.pem}}]\naccess_log: \"-\"\n"
                             "clusters: [{name: a, endpoints: [\"127.0.0.1:1\"],"
                             " health: {enabled: false, path: /h}}]\n"
                             "routes: [{cluster: a}]\n";
    rc = gw_config_parse(&c, y2, strlen(y2), "gw.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c->listeners[0].tls_cert, "c.pem");
    assert_int_equal(c->listeners[0].client_verify, NET_CLIENT_VERIFY_OPTIONAL);
    assert_string_equal(c->access_log, "-");
    assert_false(c->clusters[0].health.enabled);
    gw_config_free(c);
}

#define BASE_L "listeners: [{listen: \"127.0.0.1:8080\"}]\n"
#define BASE_C "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"]}]\n"
#define BASE_R "routes: [{cluster: api}]\n"

static const struct neg {
    const char *yaml;
    const char *msg; /* substring, after "t.yaml:<line>: " */
    int line;
} NEG[] = {
    {BASE_L BASE_C BASE_R "workerz: 2\n", "unknown key 'workerz'", 4},
    {BASE_L BASE_C BASE_R "workers: 2\nworkers: 3\n", "duplicate key 'workers'", 5},
    {BASE_L BASE_C BASE_R "workers: \"2\"\n", "'workers' must be an integer", 4},
    {BASE_L BASE_C BASE_R "workers: two\n", "'workers' must be an integer", 4},
    {BASE_L BASE_C BASE_R "workers: -1\n", "'workers' must be an integer", 4},
    {BASE_L BASE_C BASE_R "workers: 0\n", "'workers' must be between 1", 4},
    {BASE_L BASE_C BASE_R "workers: [1]\n", "'workers' must be an integer", 4},
    {BASE_L BASE_C BASE_R "timeouts: {header: 10x}\n", "'header' must be a duration", 4},
    {BASE_L BASE_C BASE_R "timeouts: {header: -5s}\n", "'header' must be a duration", 4},
    {BASE_L BASE_C BASE_R "limits: {body_max: 16q}\n", "'body_max' must be a size", 4},
    {BASE_L BASE_C BASE_R "limits: {body_max: 0}\n", "'body_max' must be between 1 and", 4},
    {BASE_L "clusters:\n  - name: api\n    endpoints: [\"127.0.0.1:9000\"]\n"
            "    timeouts: {timeuot: 1s}\n" BASE_R,
     "unknown key 'timeuot' in cluster 'api'", 5},
    {BASE_L BASE_C "routes: [{cluster: nope}]\n", "unknown cluster 'nope'", 3},
    {BASE_L BASE_C "routes: [{prefix: /}]\n", "missing 'cluster'", 3},
    {BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"]},\n"
            "  {name: api, endpoints: [\"127.0.0.1:9001\"]}]\n" BASE_R,
     "duplicate cluster name 'api'", 3},
    {BASE_L BASE_C "routes: [{name: r, cluster: api},\n  {name: r, cluster: api}]\n",
     "duplicate route name 'r'", 4},
    {BASE_L "clusters: [{name: api, endpoints: [\"localhost:9000\"]}]\n" BASE_R, "bad address", 2},
    {BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:99999\"]}]\n" BASE_R, "bad address", 2},
    {BASE_L "clusters: [{name: api, endpoints: []}]\n" BASE_R, "'endpoints' must not be empty", 2},
    {BASE_L "clusters: [{name: api}]\n" BASE_R, "missing 'endpoints'", 2},
    {"listeners: [{listen: \"127.0.0.1:8443\", tls: {cert: a.pem}}]\n" BASE_C BASE_R,
     "needs both 'cert' and 'key'", 1},
    {"listeners: [{listen: \"127.0.0.1:8443\", tls: {cert: a, key: b, client_verify: "
     "require}}]\n" BASE_C BASE_R,
     "'client_verify' needs 'client_ca'", 1},
    {"listeners: [{listen: \"127.0.0.1:8443\", tls: {cert: a, key: b, client_ca: c, "
     "client_verify: maybe}}]\n" BASE_C BASE_R,
     "'client_verify' must be optional or require", 1},
    {"listeners: []\n" BASE_C BASE_R, "'listeners' must not be empty", 1},
    {BASE_C BASE_R, "missing 'listeners'", 1},
    {BASE_L BASE_R, "missing 'clusters'", 1},
    {BASE_L BASE_C, "missing 'routes'", 1},
    {BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"], balance: random}]\n" BASE_R,
     "'balance' must be round_robin or least_conn", 2},
    {BASE_L BASE_C "routes: [{cluster: api, prefix: v1}]\n", "bad prefix 'v1'", 3},
    {BASE_L BASE_C "routes: [{cluster: api, prefix: /a/%2F}]\n", "bad prefix", 3},
    {BASE_L BASE_C "routes: [{cluster: api, host: \"a.com:80\"}]\n", "bad host", 3},
    {BASE_L BASE_C "routes: [{cluster: api, strip_prefix: yes}]\n",
     "'strip_prefix' must be true or false", 3},
    {BASE_L BASE_C BASE_R "trusted_proxies: [\"10.0.0.0/33\"]\n", "bad address or range", 4},
    {BASE_L BASE_C BASE_R "admin: 9901\n", "bad address", 4},
    {BASE_L BASE_C BASE_R "access_log: true\n", "'access_log' must be a file", 4},
    {BASE_L BASE_C BASE_R "access_log: ~\n", "'access_log' must be a string", 4},
    {"listeners: [{listen: \"127.0.0.1:8080\"}, {listen: \"127.0.0.1:8080\"}]\n" BASE_C BASE_R,
     "duplicate listener address", 1},
    {BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"], health: {path: x}}]\n" BASE_R,
     "'path' must start with '/'", 2},
    {BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"], retries: 11}]\n" BASE_R,
     "'retries' must be between 0 and 10", 2},
    {BASE_L "c: &x [1]\nd: *x\n", "unknown key 'c'", 2},
    {"- 1\n- 2\n", "the configuration must be a mapping", 1},
    {"", "empty configuration", 1},
    {BASE_L BASE_C BASE_R "---\nworkers: 1\n", "more than one yaml document", 5},
    {BASE_L BASE_C BASE_R "workers: [1\n", "yaml:", 5},
};

static void
test_negative(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof(NEG) / sizeof(NEG[0]); i++) {
        gw_config *c = (gw_config *) 1;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = gw_config_parse(&c, NEG[i].yaml, strlen(NEG[i].yaml), "t.yaml", &err);
        if (rc != DBAO_EFORMAT)
            fail_msg("case %zu: rc %d (%s)", i, rc, err.msg);
        assert_null(c);
        if (strstr(err.msg, NEG[i].msg) == NULL)
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, NEG[i].msg);
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "t.yaml:%d: ", NEG[i].line);
        if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
            fail_msg("case %zu: message '%s' does not start with '%s'", i, err.msg, prefix);
    }
}

static void
test_aliases_and_limits(void **state)
{
    (void) state;
    gw_config *c = NULL;
    dbao_err err;
    /* an alias reuses a node: refused */
    static const char y[] = "listeners: &l [{listen: \"127.0.0.1:1\"}]\n"
                            "clusters: [{name: a, endpoints: [\"127.0.0.1:2\"]}]\n"
                            "routes: [{cluster: a, name: &n x}, {cluster: a, name: *n}]\n";
    assert_int_equal(gw_config_parse(&c, y, strlen(y), "t.yaml", &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "aliases"));
    /* 65 listeners and 1025 routes are too many */
    size_t cap = 200000;
    char *big = malloc(cap);
    assert_non_null(big);
    size_t n = (size_t) snprintf(big, cap, "listeners:\n");
    for (int i = 0; i < 65; i++)
        n += (size_t) snprintf(big + n, cap - n, "  - listen: \"127.0.0.1:%d\"\n", 1000 + i);
    n += (size_t) snprintf(big + n, cap - n, BASE_C BASE_R);
    assert_int_equal(gw_config_parse(&c, big, n, "t.yaml", &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "more than 64"));
    n = (size_t) snprintf(big, cap, BASE_L BASE_C "routes:\n");
    for (int i = 0; i < 1025; i++)
        n += (size_t) snprintf(big + n, cap - n, "  - {cluster: api, prefix: /r%d}\n", i);
    assert_int_equal(gw_config_parse(&c, big, n, "t.yaml", &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "more than 1024"));
    /* exactly 1024 routes are fine */
    n = (size_t) snprintf(big, cap, BASE_L BASE_C "routes:\n");
    for (int i = 0; i < 1024; i++)
        n += (size_t) snprintf(big + n, cap - n, "  - {cluster: api, prefix: /r%d}\n", i);
    int rc = gw_config_parse(&c, big, n, "t.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(c->num_routes, 1024);
    assert_int_equal(gw_route_match(c, NULL, "/r1000/x"), 1000);
    gw_config_free(c);
    free(big);
}

static void
test_units(void **state)
{
    (void) state;
    static const struct {
        const char *s;
        uint64_t v;
        int ok;
    } D[] = {{"0", 0, 1},       {"500", 500, 1},
             {"500ms", 500, 1}, {"2s", 2000, 1},
             {"1m", 60000, 1},  {"1h", 3600000, 1},
             {"10x", 0, 0},     {"-1", 0, 0},
             {"", 0, 0},        {"s", 0, 0},
             {"1.5s", 0, 0},    {" 1s", 0, 0},
             {"1S", 0, 0},      {"99999999999999999999", 0, 0}};
    for (size_t i = 0; i < sizeof(D) / sizeof(D[0]); i++) {
        uint64_t v = 0;
        int rc = gw_parse_duration_ms(D[i].s, &v);
        if (D[i].ok) {
            assert_int_equal(rc, 0);
            assert_int_equal(v, D[i].v);
        } else if (rc == 0) {
            fail_msg("duration '%s' accepted", D[i].s);
        }
    }
    static const struct {
        const char *s;
        uint64_t v;
        int ok;
    } S[] = {{"1", 1, 1},           {"16k", 16384, 1},
             {"16K", 16384, 1},     {"1m", 1048576, 1},
             {"2g", 2ull << 30, 1}, {"1kb", 0, 0},
             {"k", 0, 0},           {"-1", 0, 0},
             {"1t", 0, 0},          {"18446744073709551615k", 0, 0}};
    for (size_t i = 0; i < sizeof(S) / sizeof(S[0]); i++) {
        uint64_t v = 0;
        int rc = gw_parse_size(S[i].s, &v);
        if (S[i].ok) {
            assert_int_equal(rc, 0);
            assert_int_equal(v, S[i].v);
        } else if (rc == 0) {
            fail_msg("size '%s' accepted", S[i].s);
        }
    }
}

static void
test_load_file(void **state)
{
    (void) state;
    char dir[] = "/tmp/gwcfgXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/gateway.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(BASE_L BASE_C BASE_R "access_log: a.log\n", f);
    fclose(f);
    gw_config *c = NULL;
    dbao_err err;
    int rc = gw_config_load(&c, path, &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    char want[160];
    snprintf(want, sizeof(want), "%s/a.log", dir);
    assert_string_equal(c->access_log, want);
    gw_config_free(c);
    f = fopen(path, "w");
    fputs(BASE_L BASE_C BASE_R "\n\nbogus: 1\n", f);
    fclose(f);
    assert_int_equal(gw_config_load(&c, path, &err), DBAO_EFORMAT);
    snprintf(want, sizeof(want), "%s:6: unknown key 'bogus'", path);
    assert_string_equal(err.msg, want);
    unlink(path);
    snprintf(want, sizeof(want), "%s/missing.yaml", dir);
    assert_true(gw_config_load(&c, want, &err) < 0);
    rmdir(dir);
}

static void
test_quick(void **state)
{
    (void) state;
    const char *ups[] = {"127.0.0.1:9000", "[::1]:9001"};
    gw_config *q = NULL, *q2 = NULL;
    dbao_err err;
    assert_int_equal(gw_config_quick(&q, "127.0.0.1:8080", ups, 2, 4, NULL, NULL, &err), 0);
    assert_int_equal(q->workers, 4);
    assert_int_equal(q->num_listeners, 1);
    assert_int_equal(q->listeners[0].addr.port, 8080);
    assert_null(q->listeners[0].tls_cert);
    assert_int_equal(q->num_clusters, 1);
    assert_int_equal(q->clusters[0].num_endpoints, 2);
    assert_string_equal(q->clusters[0].endpoints[1].host, "::1");
    assert_int_equal(q->clusters[0].keepalive, 64);
    assert_int_equal(q->clusters[0].health.passive_failures, 5);
    assert_int_equal(q->num_routes, 1);
    assert_string_equal(q->routes[0].prefix, "/");
    assert_int_equal(q->routes[0].body_max, 16 << 20);
    assert_int_equal(gw_route_match(q, "anything", "/x"), 0);
    assert_int_equal(gw_config_quick(&q2, "127.0.0.1:8080", ups, 1, 4, NULL, NULL, &err), 0);
    assert_true(gw_config_same_listeners(q, q2));
    gw_config_free(q2);
    assert_int_equal(gw_config_quick(&q2, "127.0.0.1:8080", ups, 1, 2, NULL, NULL, &err), 0);
    assert_false(gw_config_same_listeners(q, q2));
    gw_config_free(q2);
    assert_int_equal(gw_config_quick(&q2, "127.0.0.1:8080", ups, 1, 4, "c.pem", "k.pem", &err), 0);
    assert_string_equal(q2->listeners[0].tls_key, "k.pem");
    assert_false(gw_config_same_listeners(q, q2));
    gw_config_free(q2);
    const char *bad[] = {"nohost"};
    assert_int_equal(gw_config_quick(&q2, "127.0.0.1:8080", bad, 1, 1, NULL, NULL, &err),
                     DBAO_EFORMAT);
    assert_null(q2);
    assert_int_equal(gw_config_quick(&q2, "bad", ups, 1, 1, NULL, NULL, &err), DBAO_EFORMAT);
    assert_true(gw_config_quick(&q2, "127.0.0.1:1", ups, 1, 1, "c.pem", NULL, &err) < 0);
    gw_config_free(q);
}

/* ---- zero trust: security section, route security keys, breakers, fallbacks ---- */

static const char SEC_FULL[] =
    "listeners: [{listen: \"127.0.0.1:8080\"}]\n"
    "security:\n"
    "  identity:\n"
    "    jwt:\n"
    "      algorithms: [ES256, SM2]\n"
    "      hs256_secret_file: keys/jwt.secret\n"
    "      hs256_kid: k1\n"
    "      jwks_file: keys/jwks.json\n"
    "      jwks_url: https://idp.example/jwks.json\n"
    "      jwks_refresh: 1m\n"
    "      sm2_alg: SM2SM3\n"
    "      issuer: https://idp.example\n"
    "      audience: [api, web]\n"
    "      clock_skew: 10s\n"
    "      max_token: 16k\n"
    "    devices: {keys_dir: devices/, request_window: 2m, nonce_cache: 4096, sig_cache: 0}\n"
    "  identity_header: {name: X-Ident, key_file: /abs/identity.key}\n"
    "  strip_headers: [X-User, X-Roles]\n"
    "  rbac:\n"
    "    etcd: {endpoints: [\"http://127.0.0.1:23791\", \"http://127.0.0.1:23792\"],\n"
    "           key: /dengbao/gateway/policy, timeout: 3s}\n"
    "  rate_limits:\n"
    "    subject: {rate: 100, period: 1s, burst: 200, max_keys: 1000}\n"
    "    client_ip: {rate: 1000, period: 2s}\n"
    "  audit: {dir: var/audit, mode: async, queue: 1024}\n"
    "  masking: {policy: mask.yaml}\n"
    "clusters:\n"
    "  - name: api\n"
    "    endpoints: [\"127.0.0.1:9000\"]\n"
    "    breaker: {window: 10s, buckets: 10, min_requests: 5, error_ratio: 12.5%,\n"
    "              slow_ratio: \"0.5\", slow_call: 2s, open: 15s, probes: 3, successes: 2}\n"
    "  - name: backup\n"
    "    endpoints: [\"127.0.0.1:9100\"]\n"
    "    breaker: {}\n"
    "routes:\n"
    "  - name: patients\n"
    "    prefix: /v1/\n"
    "    cluster: api\n"
    "    device: request\n"
    "    rate_limit: {rate: 500, period: 1s, burst: 600}\n"
    "    audit: durable\n"
    "    mask: {body_max: 2m, over_limit: pass}\n"
    "    fallback: {mode: static, status: 503, content_type: application/json,\n"
    "               body_file: degraded.json}\n"
    "  - name: open\n"
    "    prefix: /pub/\n"
    "    cluster: api\n"
    "    auth: none\n"
    "    fallback: {mode: upstream, cluster: backup}\n"
    "  - name: cached\n"
    "    prefix: /c/\n"
    "    cluster: api\n"
    "    rbac: false\n"
    "    device: mtls\n"
    "    mask: {enabled: false}\n"
    "    fallback: {mode: cache, cache_ttl: 1m, cache_max: 64k}\n"
    "  - name: inline\n"
    "    cluster: backup\n"
    "    device: token\n"
    "    fallback: {mode: static, body: '{\"degraded\":true}'}\n"
    "  - name: failing\n"
    "    prefix: /f/\n"
    "    cluster: backup\n"
    "    fallback: {mode: fail}\n";

static void
test_security_full(void **state)
{
    (void) state;
    char dir[] = "/tmp/dbao_gwcfg_XXXXXX", path[96], body[96];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/gw.yaml", dir);
    snprintf(body, sizeof(body), "%s/degraded.json", dir);
    FILE *f = fopen(body, "wb");
    assert_non_null(f);
    fputs("{\"degraded\":\"file\"}\n", f);
    fclose(f);
    gw_config *c = NULL;
    dbao_err err;
    int rc = gw_config_parse(&c, SEC_FULL, strlen(SEC_FULL), path, &err);
    unlink(body);
    rmdir(dir);
    if (rc != 0)
        fail_msg("%s", err.msg);
    char want[160];
    const gw_security *s = c->security;
    assert_non_null(s);
    assert_int_equal(s->algs, ZT_ALG_ES256 | ZT_ALG_SM2);
#define ASSERT_REL(got, rel)                                                                       \
    do {                                                                                           \
        snprintf(want, sizeof(want), "%s/%s", dir, rel);                                           \
        assert_string_equal(got, want);                                                            \
    } while (0)
    ASSERT_REL(s->hs256_secret_file, "keys/jwt.secret");
    assert_string_equal(s->hs256_kid, "k1");
    ASSERT_REL(s->jwks_file, "keys/jwks.json");
    assert_string_equal(s->jwks_url, "https://idp.example/jwks.json");
    assert_int_equal(s->jwks_refresh_ms, 60000);
    assert_string_equal(s->sm2_alg, "SM2SM3");
    assert_string_equal(s->issuer, "https://idp.example");
    assert_int_equal(s->num_audience, 2);
    assert_string_equal(s->audience[0], "api");
    assert_string_equal(s->audience[1], "web");
    assert_int_equal(s->clock_skew_s, 10);
    assert_int_equal(s->max_token, 16384);
    ASSERT_REL(s->device_keys_dir, "devices/");
    assert_int_equal(s->request_window_s, 120);
    assert_int_equal(s->nonce_cache, 4096);
    assert_int_equal(s->sig_cache, 0);
    assert_string_equal(s->identity_header, "X-Ident");
    assert_string_equal(s->identity_key_file, "/abs/identity.key");
    assert_int_equal(s->num_strip, 2);
    assert_string_equal(s->strip_headers[0], "X-User");
    assert_string_equal(s->strip_headers[1], "X-Roles");
    assert_null(s->rbac_file);
    assert_int_equal(s->num_etcd, 2);
    assert_string_equal(s->etcd_endpoints[0], "http://127.0.0.1:23791");
    assert_string_equal(s->etcd_endpoints[1], "http://127.0.0.1:23792");
    assert_string_equal(s->etcd_key, "/dengbao/gateway/policy");
    assert_int_equal(s->etcd_timeout_ms, 3000);
    assert_true(s->subject_limit.enabled);
    assert_int_equal(s->subject_limit.rate, 100);
    assert_int_equal(s->subject_limit.period_ms, 1000);
    assert_int_equal(s->subject_limit.burst, 200);
    assert_int_equal(s->subject_limit.max_keys, 1000);
    assert_true(s->ip_limit.enabled);
    assert_int_equal(s->ip_limit.rate, 1000);
    assert_int_equal(s->ip_limit.period_ms, 2000);
    assert_int_equal(s->ip_limit.burst, 1000); /* default: rate */
    assert_int_equal(s->ip_limit.max_keys, 0);
    ASSERT_REL(s->audit_dir, "var/audit");
    assert_int_equal(s->audit_mode, GW_AUDIT_ASYNC);
    assert_int_equal(s->audit_queue, 1024);
    ASSERT_REL(s->mask_policy, "mask.yaml");
#undef ASSERT_REL

    const gw_breaker_conf *b = &c->clusters[0].breaker;
    assert_true(b->enabled);
    assert_int_equal(b->window_ms, 10000);
    assert_int_equal(b->buckets, 10);
    assert_int_equal(b->min_requests, 5);
    assert_int_equal(b->error_permille, 125);
    assert_int_equal(b->slow_permille, 500);
    assert_int_equal(b->slow_ms, 2000);
    assert_int_equal(b->open_ms, 15000);
    assert_int_equal(b->probes, 3);
    assert_int_equal(b->successes, 2);
    b = &c->clusters[1].breaker; /* breaker: {} -> every default */
    assert_true(b->enabled);
    assert_int_equal(b->window_ms, 30000);
    assert_int_equal(b->buckets, 30);
    assert_int_equal(b->min_requests, 20);
    assert_int_equal(b->error_permille, 150);
    assert_int_equal(b->slow_permille, 0);
    assert_int_equal(b->slow_ms, 0);
    assert_int_equal(b->open_ms, 30000);
    assert_int_equal(b->probes, 1);
    assert_int_equal(b->successes, 1);

    assert_int_equal(c->num_routes, 5);
    const gw_route *r = &c->routes[0];
    assert_int_equal(r->sec.auth, GW_AUTH_JWT);
    assert_int_equal(r->sec.device, GW_DEVICE_REQUEST);
    assert_true(r->sec.rbac);
    assert_true(r->sec.limit.enabled);
    assert_int_equal(r->sec.limit.rate, 500);
    assert_int_equal(r->sec.limit.period_ms, 1000);
    assert_int_equal(r->sec.limit.burst, 600);
    assert_int_equal(r->sec.audit, GW_AUDIT_DURABLE);
    assert_true(r->sec.mask);
    assert_int_equal(r->sec.mask_body_max, 2 << 20);
    assert_true(r->sec.mask_over_pass);
    assert_int_equal(r->fallback.mode, GW_FALLBACK_STATIC);
    assert_int_equal(r->fallback.status, 503);
    assert_string_equal(r->fallback.content_type, "application/json");
    assert_int_equal(r->fallback.body_len, 20);
    assert_memory_equal(r->fallback.body, "{\"degraded\":\"file\"}\n", 20);

    r = &c->routes[1];
    assert_int_equal(r->sec.auth, GW_AUTH_NONE);
    assert_int_equal(r->sec.device, GW_DEVICE_NONE);
    assert_false(r->sec.rbac);
    assert_false(r->sec.limit.enabled);
    assert_int_equal(r->sec.audit, GW_AUDIT_ASYNC); /* security.audit.mode */
    assert_false(r->sec.mask);
    assert_int_equal(r->fallback.mode, GW_FALLBACK_UPSTREAM);
    assert_int_equal(r->fallback.cluster, 1);

    r = &c->routes[2];
    assert_int_equal(r->sec.auth, GW_AUTH_JWT);
    assert_false(r->sec.rbac);
    assert_int_equal(r->sec.device, GW_DEVICE_MTLS);
    assert_false(r->sec.mask);
    assert_int_equal(r->sec.mask_body_max, 1 << 20);
    assert_false(r->sec.mask_over_pass);
    assert_int_equal(r->fallback.mode, GW_FALLBACK_CACHE);
    assert_int_equal(r->fallback.cache_ttl_ms, 60000);
    assert_int_equal(r->fallback.cache_max, 65536);

    r = &c->routes[3];
    assert_int_equal(r->sec.device, GW_DEVICE_TOKEN);
    assert_true(r->sec.rbac);
    assert_int_equal(r->fallback.mode, GW_FALLBACK_STATIC);
    assert_int_equal(r->fallback.status, 200);
    assert_string_equal(r->fallback.content_type, "text/plain");
    assert_string_equal(r->fallback.body, "{\"degraded\":true}");
    assert_int_equal(r->fallback.body_len, 17);

    r = &c->routes[4];
    assert_int_equal(r->fallback.mode, GW_FALLBACK_FAIL);
    assert_null(r->fallback.body);
    gw_config_free(c);
}

#define SEC_MIN                                                                                    \
    "security:\n"                                                                                  \
    "  identity: {jwt: {hs256_secret_file: s}}\n"                                                  \
    "  identity_header: {key_file: k}\n"                                                           \
    "  audit: {dir: a}\n"

static void
test_security_defaults(void **state)
{
    (void) state;
    static const char y[] = BASE_L BASE_C BASE_R SEC_MIN;
    gw_config *c = NULL;
    dbao_err err;
    int rc = gw_config_parse(&c, y, strlen(y), "gw.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    const gw_security *s = c->security;
    assert_non_null(s);
    assert_int_equal(s->algs, ZT_ALG_ALL);
    assert_string_equal(s->hs256_secret_file, "s");
    assert_null(s->hs256_kid);
    assert_null(s->jwks_file);
    assert_null(s->jwks_url);
    assert_int_equal(s->jwks_refresh_ms, 300000);
    assert_string_equal(s->sm2_alg, "SM2");
    assert_null(s->issuer);
    assert_int_equal(s->num_audience, 0);
    assert_int_equal(s->clock_skew_s, 30);
    assert_int_equal(s->max_token, 8192);
    assert_null(s->device_keys_dir);
    assert_int_equal(s->request_window_s, 300);
    assert_int_equal(s->nonce_cache, 262144);
    assert_int_equal(s->sig_cache, 65536);
    assert_string_equal(s->identity_header, "X-Auth-Identity");
    assert_string_equal(s->identity_key_file, "k");
    assert_int_equal(s->num_strip, 0);
    assert_null(s->rbac_file);
    assert_int_equal(s->num_etcd, 0);
    assert_int_equal(s->etcd_timeout_ms, 2000);
    assert_false(s->subject_limit.enabled);
    assert_false(s->ip_limit.enabled);
    assert_string_equal(s->audit_dir, "a");
    assert_int_equal(s->audit_mode, GW_AUDIT_DURABLE);
    assert_int_equal(s->audit_queue, 65536);
    assert_null(s->mask_policy);
    const gw_route *r = &c->routes[0];
    assert_int_equal(r->sec.auth, GW_AUTH_JWT);
    assert_int_equal(r->sec.device, GW_DEVICE_NONE);
    assert_true(r->sec.rbac);
    assert_false(r->sec.limit.enabled);
    assert_int_equal(r->sec.audit, GW_AUDIT_DURABLE);
    assert_false(r->sec.mask);
    assert_int_equal(r->sec.mask_body_max, 1 << 20);
    assert_int_equal(r->fallback.mode, GW_FALLBACK_FAIL);
    assert_false(c->clusters[0].breaker.enabled);
    gw_config_free(c);

    /* without security: no gw_security, fallback and breaker still allowed */
    static const char y2[] =
        BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"], breaker: {error_ratio: "
               "\"0.2\"}},\n  {name: b, endpoints: [\"127.0.0.1:9001\"]}]\n"
               "routes: [{cluster: api, fallback: {mode: upstream, cluster: b}}]\n";
    rc = gw_config_parse(&c, y2, strlen(y2), "gw.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_null(c->security);
    assert_int_equal(c->clusters[0].breaker.error_permille, 200);
    assert_int_equal(c->routes[0].fallback.mode, GW_FALLBACK_UPSTREAM);
    assert_int_equal(c->routes[0].fallback.cluster, 1);
    assert_int_equal(c->routes[0].sec.auth, GW_AUTH_NONE);
    gw_config_free(c);

    /* auth none everywhere: no key source needed; rbac file; ratio "100%" and "1" */
    static const char y3[] = BASE_L
        "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"], breaker: {error_ratio: 100%,"
        " slow_ratio: 1, slow_call: 1s}}]\n"
        "routes: [{cluster: api, auth: none}]\n"
        "security: {identity_header: {key_file: k}, audit: {dir: a}, rbac: {file: p.yaml}}\n";
    rc = gw_config_parse(&c, y3, strlen(y3), "/etc/gw.yaml", &err);
    if (rc != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c->security->rbac_file, "/etc/p.yaml");
    assert_int_equal(c->clusters[0].breaker.error_permille, 1000);
    assert_int_equal(c->clusters[0].breaker.slow_permille, 1000);
    assert_false(c->routes[0].sec.rbac);
    gw_config_free(c);
}

#define SEC_R(route) BASE_L BASE_C "routes: [{cluster: api, " route "}]\n" SEC_MIN
#define SEC_X(extra) BASE_L BASE_C BASE_R SEC_MIN extra
#define SEC_J(jwt)                                                                                 \
    BASE_L BASE_C BASE_R "security:\n  identity: {jwt: {" jwt "}}\n"                               \
                         "  identity_header: {key_file: k}\n  audit: {dir: a}\n"
#define SEC_B(breaker)                                                                             \
    BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"], breaker: {" breaker            \
           "}}]\n" BASE_R
#define SEC_F(fb)                                                                                  \
    BASE_L "clusters: [{name: api, endpoints: [\"127.0.0.1:9000\"]},\n"                            \
           "  {name: b, endpoints: [\"127.0.0.1:9001\"]}]\n"                                       \
           "routes: [{cluster: api, fallback: {" fb "}}]\n"

static const struct neg NEG_SEC[] = {
    /* route keys without a security section */
    {BASE_L BASE_C "routes: [{cluster: api, device: token}]\n",
     "route 1: 'device' needs a 'security' section", 3},
    {BASE_L BASE_C "routes: [{cluster: api, auth: none}]\n",
     "route 1: 'auth' needs a 'security' section", 3},
    {BASE_L BASE_C "routes: [{cluster: api, rate_limit: {rate: 1}}]\n",
     "'rate_limit' needs a 'security' section", 3},
    {BASE_L BASE_C "routes: [{name: r, cluster: api, mask: {enabled: true}}]\n",
     "route 'r': 'mask' needs a 'security' section", 3},
    {BASE_L BASE_C "routes: [{cluster: api, rbac: false}]\n", "'rbac' needs a 'security' section",
     3},
    /* the security section */
    {BASE_L BASE_C BASE_R "security:\n  audit: {dir: a}\n", "missing 'identity_header'", 5},
    {BASE_L BASE_C BASE_R "security:\n  identity_header: {name: X-A}\n  audit: {dir: a}\n",
     "missing 'key_file' in 'identity_header'", 5},
    {BASE_L BASE_C BASE_R "security:\n  identity_header: {key_file: k}\n",
     "missing 'audit' (its 'dir')", 5},
    {BASE_L BASE_C BASE_R "security:\n  identity_header: {key_file: k}\n  audit: {mode: async}\n",
     "missing 'dir' in 'audit'", 6},
    {SEC_X("  masking: {policy: m.yaml, extra: 1}\n"), "unknown key 'extra' in 'security'", 8},
    {SEC_X("  bogus: 1\n"), "unknown key 'bogus'", 8},
    {BASE_L BASE_C BASE_R "security: []\n", "'security' must be a mapping", 4},
    {BASE_L BASE_C BASE_R "security:\n  identity_header: {key_file: k}\n"
                          "  audit: {dir: a, mode: sync}\n",
     "'mode' must be", 6},
    {SEC_J("algorithms: [], hs256_secret_file: s"), "'algorithms' must not be empty", 5},
    {SEC_J("algorithms: [HS512], hs256_secret_file: s"), "'algorithms' must be", 5},
    {SEC_J("algorithms: [SM2, SM2], hs256_secret_file: s"), "'algorithms': duplicate entry 'SM2'",
     5},
    {SEC_J("jwks_url: ftp://idp/jwks"), "'jwks_url' must start with http:// or https://", 5},
    {SEC_J("issuer: x"), "route 1 uses auth jwt but 'security.identity.jwt' has no key source", 3},
    {SEC_J("hs256_kid: k1, jwks_file: j"), "'hs256_kid' needs 'hs256_secret_file'", 5},
    {SEC_J("hs256_secret_file: s, max_token: 32k"), "'max_token' must be between", 5},
    {SEC_J("hs256_secret_file: s, clock_skew: 1500ms"), "'clock_skew' must be whole seconds", 5},
    {SEC_J("hs256_secret_file: s, jwks_refresh: 1m"),
     "'jwks_refresh' needs 'jwks_file' or 'jwks_url'", 5},
    {SEC_J("hs256_secret_file: s, audience: [api, api]"), "'audience': duplicate entry 'api'", 5},
    {SEC_X("  rbac: {file: p.yaml, etcd: {endpoints: [\"http://127.0.0.1:1\"], key: /k}}\n"),
     "'rbac': 'file' and 'etcd' are exclusive", 8},
    {SEC_X("  rbac: {etcd: {endpoints: [], key: /k}}\n"), "'endpoints' must not be empty", 8},
    {SEC_X("  rbac: {etcd: {endpoints: [\"https://127.0.0.1:1\"], key: /k}}\n"),
     "is not an http:// URL", 8},
    {SEC_X("  rbac: {etcd: {endpoints: [\"http://127.0.0.1:1\"], key: k}}\n"),
     "'key' must start with '/'", 8},
    {SEC_X("  rbac: {etcd: {endpoints: [\"http://127.0.0.1:1\"]}}\n"), "missing 'key' in 'etcd'",
     8},
    {SEC_X("  rate_limits: {subject: {burst: 5}}\n"), "missing 'rate' in 'subject'", 8},
    {SEC_X("  rate_limits: {client_ip: {rate: 0}}\n"), "'rate' must be between 1", 8},
    {SEC_X("  rate_limits: {subject: {rate: 1, period: 25h}}\n"), "'period' must be between", 8},
    {SEC_X("  rate_limits: {subject: {rate: 1, period: 24h, burst: 1000000000}}\n"),
     "'burst' too large for 'rate' and 'period' in 'subject'", 8},
    {SEC_X("  strip_headers: [\"X User\"]\n"), "'strip_headers': 'X User' is not a header name", 8},
    {BASE_L BASE_C BASE_R "security:\n  identity_header: {name: \"A:B\", key_file: k}\n"
                          "  audit: {dir: a}\n",
     "'name' must be a header name", 5},
    {SEC_X("  identity: {devices: {request_window: 0}}\n"), "duplicate key 'identity'", 8},
    /* route security keys */
    {SEC_R("auth: none, device: token"), "route 1: 'device: token' needs 'auth: jwt'", 3},
    {SEC_R("auth: none, rbac: true"), "route 1: 'rbac: true' needs 'auth: jwt'", 3},
    {SEC_R("mask: {enabled: true}"), "route 1: 'mask' needs 'security.masking.policy'", 3},
    {SEC_R("audit: later"), "'audit' must be", 3},
    {SEC_R("device: fido"), "'device' must be", 3},
    {SEC_R("auth: basic"), "'auth' must be", 3},
    {SEC_R("rate_limit: {rate: 5, max_keys: 9}"), "unknown key 'max_keys'", 3},
    /* breaker */
    {SEC_B("error_ratio: 0%"), "'error_ratio' must be a ratio above 0%", 2},
    {SEC_B("error_ratio: 101%"), "'error_ratio' must be a ratio above 0%", 2},
    {SEC_B("error_ratio: \"1.5\""), "'error_ratio' must be a ratio", 2},
    {SEC_B("error_ratio: abc"), "'error_ratio' must be a ratio", 2},
    {SEC_B("window: 10s, buckets: 3"), "must be a multiple of 'buckets'", 2},
    {SEC_B("slow_ratio: 50%"), "'slow_ratio' needs 'slow_call' in cluster 'api'", 2},
    {SEC_B("buckets: 601"), "'buckets' must be between 1 and 600", 2},
    {SEC_B("probes: 0"), "'probes' must be between 1", 2},
    {SEC_B("widow: 1s"), "unknown key 'widow' in cluster 'api'", 2},
    /* fallback */
    {SEC_F("mode: static"), "needs exactly one of 'body' and 'body_file'", 4},
    {SEC_F("mode: static, body: x, body_file: y"), "needs exactly one of 'body' and 'body_file'",
     4},
    {SEC_F("mode: upstream"), "fallback mode upstream needs 'cluster'", 4},
    {SEC_F("mode: upstream, cluster: api"), "must differ from the route's cluster", 4},
    {SEC_F("mode: upstream, cluster: zz"), "unknown fallback cluster 'zz'", 4},
    {SEC_F("mode: retry"), "'mode' must be", 4},
    {SEC_F("status: 503"), "'status' does not go with fallback mode fail", 4},
    {SEC_F("mode: cache, body: x"), "'body' does not go with fallback mode cache", 4},
    {SEC_F("mode: static, body: x, status: 99"), "'status' must be between 200 and 599", 4},
    {SEC_F("mode: static, body_file: /nonexistent/dbao.json"), "cannot read 'body_file'", 4},
    {SEC_F("mode: static, body: x, content_type: \"a\\nb\""), "bad 'content_type'", 4},
};

static void
test_security_negative(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof(NEG_SEC) / sizeof(NEG_SEC[0]); i++) {
        gw_config *c = (gw_config *) 1;
        dbao_err err;
        dbao_err_clear(&err);
        int rc = gw_config_parse(&c, NEG_SEC[i].yaml, strlen(NEG_SEC[i].yaml), "t.yaml", &err);
        if (rc != DBAO_EFORMAT)
            fail_msg("case %zu: rc %d (%s)", i, rc, err.msg);
        assert_null(c);
        if (strstr(err.msg, NEG_SEC[i].msg) == NULL)
            fail_msg("case %zu: message '%s' lacks '%s'", i, err.msg, NEG_SEC[i].msg);
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "t.yaml:%d: ", NEG_SEC[i].line);
        if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
            fail_msg("case %zu: message '%s' does not start with '%s'", i, err.msg, prefix);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_negative),
        cmocka_unit_test(test_aliases_and_limits),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_quick),
        cmocka_unit_test(test_security_full),
        cmocka_unit_test(test_security_defaults),
        cmocka_unit_test(test_security_negative),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
