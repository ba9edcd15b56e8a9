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

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),     cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_negative), cmocka_unit_test(test_aliases_and_limits),
        cmocka_unit_test(test_units),    cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_quick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
