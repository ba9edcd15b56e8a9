/* test_metrics.c: Prometheus metrics (src/gateway/metrics.c) and the JSON access log
 * (src/gateway/accesslog.c).
 *
 * Metrics: observations from two workers are rendered, the text is parsed back line by line
 * (name{labels} value) and checked: counts per code (exact and per-class "other"), cumulative
 * buckets ending with +Inf == _count, _sum, bytes, upstream errors, pool gauges, connections,
 * label escaping, HELP/TYPE lines, slot stability across names and the full-table fallback.
 * Access log: lines are valid JSON (jansson) with the expected fields, control characters and
 * invalid UTF-8 are escaped, null fields are omitted, a rename + reopen sends new lines to the
 * new file, a failing device (/dev/full) counts dropped lines.
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

#include <jansson.h>

#include "dengbao/gateway.h"

/* value returns the value of the line "<series> <value>" (exact series text), or -1 */
static double
value(const char *text, const char *series)
{
    size_t sl = strlen(series);
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t) (nl - p) : strlen(p);
        if (ll > sl && memcmp(p, series, sl) == 0 && p[sl] == ' ')
            return strtod(p + sl + 1, NULL);
        p = nl ? nl + 1 : NULL;
    }
    return -1;
}

static void
test_render(void **state)
{
    (void) state;
    gw_metrics *m = NULL;
    assert_int_equal(gw_metrics_new(&m, 2), 0);
    int a = gw_metrics_route_slot(m, "api");
    int b = gw_metrics_route_slot(m, "we\"ird\\na\nme");
    int k = gw_metrics_cluster_slot(m, "backend");
    assert_true(a > 0 && b > 0 && a != b && k > 0);
    assert_int_equal(gw_metrics_route_slot(m, "api"), a); /* stable */
    assert_int_equal(gw_metrics_cluster_slot(m, "backend"), k);
    assert_int_equal(gw_metrics_cluster_slot(m, "api"), k + 1); /* separate tables */

    /* latencies in us: 100 (<=.0005), 700 (<=.001), 3000 (<=.005), 2000000 (<=2.5), 20e6 (+Inf) */
    gw_metrics_request(m, 0, a, 200, 100, 10, 1000);
    gw_metrics_request(m, 1, a, 200, 700, 20, 2000);
    gw_metrics_request(m, 0, a, 404, 3000, 0, 50);
    gw_metrics_request(m, 1, a, 418, 2000000, 0, 0);
    gw_metrics_request(m, 0, a, 599, 20000000, 0, 0);
    gw_metrics_request(m, 0, b, 503, 1000, 0, 0);
    gw_metrics_request(m, 0, -1, 42, 1000, 0, 0); /* no route, odd status */
    gw_metrics_upstream_error(m, 0, k, GW_UPERR_CONNECT);
    gw_metrics_upstream_error(m, 1, k, GW_UPERR_CONNECT);
    gw_metrics_upstream_error(m, 1, k, GW_UPERR_TIMEOUT);
    gw_metrics_upstream_error(m, 1, k, 99); /* ignored */
    gw_metrics_pool(m, 0, k, 3, 1);
    gw_metrics_pool(m, 1, k, 2, 4);
    gw_metrics_pool(m, 1, k, 5, 0); /* a gauge: replaces */
    gw_metrics_connections(m, 0, 3);
    gw_metrics_connections(m, 1, 2);
    gw_metrics_connections(m, 0, -1);
    gw_metrics_request(m, 7, a, 200, 1, 1, 1); /* bad worker: ignored */

    char *t = NULL;
    size_t len = 0;
    assert_int_equal(gw_metrics_render(m, "# extra\nx_up 1\n", &t, &len), 0);
    assert_int_equal(strlen(t), len);

    assert_true(value(t, "dengbao_gateway_requests_total{route=\"api\",code=\"200\"}") == 2);
    assert_true(value(t, "dengbao_gateway_requests_total{route=\"api\",code=\"404\"}") == 1);
    assert_true(value(t, "dengbao_gateway_requests_total{route=\"api\",code=\"4xx\"}") == 1);
    assert_true(value(t, "dengbao_gateway_requests_total{route=\"api\",code=\"5xx\"}") == 1);
    assert_true(value(t, "dengbao_gateway_requests_total{route=\"api\",code=\"500\"}") == -1);
    assert_true(value(t, "dengbao_gateway_requests_total{route=\"we\\\"ird\\\\na\\nme\","
                         "code=\"503\"}") == 1);
    assert_true(value(t, "dengbao_gateway_requests_total{route=\"other\",code=\"other\"}") == 1);

    static const char *const le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                     "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                     "1",      "2.5",   "5",      "10",    "+Inf"};
    static const double want[] = {1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 5};
    double prev = 0;
    for (size_t i = 0; i < 15; i++) {
        char s[160];
        snprintf(s, sizeof(s),
                 "dengbao_gateway_request_duration_seconds_bucket{route=\"api\",le=\"%s\"}", le[i]);
        double v = value(t, s);
        if (v != want[i])
            fail_msg("bucket %s: %g want %g", le[i], v, want[i]);
        assert_true(v >= prev);
        prev = v;
    }
    assert_true(value(t, "dengbao_gateway_request_duration_seconds_count{route=\"api\"}") == 5);
    double sum = value(t, "dengbao_gateway_request_duration_seconds_sum{route=\"api\"}");
    assert_true(sum > 22.0037 && sum < 22.0039);
    assert_true(value(t, "dengbao_gateway_bytes_received_total{route=\"api\"}") == 30);
    assert_true(value(t, "dengbao_gateway_bytes_sent_total{route=\"api\"}") == 3050);
    assert_true(
        value(t, "dengbao_gateway_upstream_errors_total{cluster=\"backend\",kind=\"connect\"}") ==
        2);
    assert_true(
        value(t, "dengbao_gateway_upstream_errors_total{cluster=\"backend\",kind=\"timeout\"}") ==
        1);
    assert_true(
        value(t, "dengbao_gateway_upstream_errors_total{cluster=\"backend\",kind=\"reset\"}") == 0);
    assert_true(value(t, "dengbao_gateway_pool_connections{cluster=\"backend\",state=\"idle\"}") ==
                8);
    assert_true(
        value(t, "dengbao_gateway_pool_connections{cluster=\"backend\",state=\"active\"}") == 1);
    assert_true(value(t, "dengbao_gateway_connections") == 4);
    assert_non_null(strstr(t, "# TYPE dengbao_gateway_request_duration_seconds histogram\n"));
    assert_non_null(strstr(t, "# TYPE dengbao_gateway_requests_total counter\n"));
    assert_non_null(strstr(t, "# HELP dengbao_gateway_connections "));
    assert_true(value(t, "x_up") == 1);
    /* every line is a comment or "series value" without raw newlines in labels */
    for (char *p = t; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        if (*p != '#') {
            char *sp = memrchr(p, ' ', (size_t) (nl - p));
            assert_non_null(sp);
            char *end;
            strtod(sp + 1, &end);
            assert_ptr_equal(end, nl);
        }
        p = nl + 1;
    }
    free(t);

    /* fill the table: slot -1 from then on */
    for (int i = 0; i < 300; i++) {
        char n[16];
        snprintf(n, sizeof(n), "r%d", i);
        int s = gw_metrics_route_slot(m, n);
        if (i < GW_METRICS_SLOTS - 3)
            assert_true(s > 0);
        else
            assert_int_equal(s, -1);
    }
    assert_int_equal(gw_metrics_route_slot(m, "api"), a);
    gw_metrics_free(m);
}

static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static size_t
count_lines(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

static void
test_accesslog(void **state)
{
    (void) state;
    char dir[] = "/tmp/gwlogXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], moved[128];
    snprintf(path, sizeof(path), "%s/access.log", dir);
    snprintf(moved, sizeof(moved), "%s/access.log.1", dir);
    gw_accesslog *l = NULL;
    dbao_err err;
    assert_int_equal(gw_accesslog_open(&l, path, 2, &err), 0);

    gw_access_rec r;
    memset(&r, 0, sizeof(r));
    r.ts_us = 1795909201123456ull; /* 2026-11-28T23:40:01.123456Z */
    r.client = "198.51.100.7";
    r.method = "GET";
    r.path = "/v1/a\"b\\c\n\x01\xff\xe4\xb8\xad"; /* quote, backslash, controls, bad + good UTF-8 */
    r.host = "api.example.com";
    r.route = "patients";
    r.upstream = "127.0.0.1:9000";
    r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    r.status = 200;
    r.upstream_status = 200;
    r.duration_us = 1234;
    r.upstream_us = 1000;
    r.bytes_in = 0;
    r.bytes_out = 512;
    r.attempts = 1;
    r.tls = true;
    r.identity = "CN=client";
    gw_accesslog_write(l, 0, &r);
    gw_access_rec r2;
    memset(&r2, 0, sizeof(r2));
    r2.ts_us = 0;
    r2.client = "::1";
    r2.method = "POST";
    r2.path = "/";
    r2.status = 503;
    r2.error = "no upstream available";
    gw_accesslog_write(l, 1, &r2);
    assert_string_equal(slurp(path), ""); /* buffered */
    gw_accesslog_flush(l, 0);
    gw_accesslog_flush(l, 1);
    char *text = slurp(path);
    assert_int_equal(count_lines(text), 2);
    char *nl = strchr(text, '\n');
    *nl = '\0';
    assert_non_null(strstr(text, "\"ts\":\"2026-11-28T23:40:01.123456Z\""));
    assert_non_null(strstr(text, "\"path\":\"/v1/a\\\"b\\\\c\\n\\u0001\\ufffd\xe4\xb8\xad\""));
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (j == NULL)
        fail_msg("line 1 is not JSON: %s: %s", je.text, text);
    assert_string_equal(json_string_value(json_object_get(j, "client")), "198.51.100.7");
    assert_string_equal(json_string_value(json_object_get(j, "path")),
                        "/v1/a\"b\\c\n\x01\xef\xbf\xbd\xe4\xb8\xad");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes_out")), 512);
    assert_int_equal(json_integer_value(json_object_get(j, "duration_us")), 1234);
    assert_int_equal(json_integer_value(json_object_get(j, "upstream_us")), 1000);
    assert_int_equal(json_integer_value(json_object_get(j, "attempts")), 1);
    assert_true(json_is_true(json_object_get(j, "tls")));
    assert_string_equal(json_string_value(json_object_get(j, "identity")), "CN=client");
    assert_null(json_object_get(j, "error"));
    json_decref(j);
    j = json_loads(nl + 1, 0, &je);
    if (j == NULL)
        fail_msg("line 2 is not JSON: %s", je.text);
    assert_string_equal(json_string_value(json_object_get(j, "ts")), "1970-01-01T00:00:00.000000Z");
    assert_string_equal(json_string_value(json_object_get(j, "error")), "no upstream available");
    assert_null(json_object_get(j, "host"));
    assert_null(json_object_get(j, "route"));
    assert_null(json_object_get(j, "upstream"));
    assert_null(json_object_get(j, "upstream_status"));
    assert_null(json_object_get(j, "attempts"));
    assert_null(json_object_get(j, "trace_id"));
    assert_true(json_is_false(json_object_get(j, "tls")));
    json_decref(j);

    /* the buffer flushes by itself past 32 KiB */
    for (int i = 0; i < 300; i++)
        gw_accesslog_write(l, 0, &r);
    assert_true(count_lines(slurp(path)) > 2);
    gw_accesslog_flush(l, 0);
    assert_int_equal(count_lines(slurp(path)), 302);

    /* rotation */
    assert_int_equal(rename(path, moved), 0);
    gw_accesslog_write(l, 0, &r2);
    gw_accesslog_flush(l, 0); /* before reopen: still the old file */
    assert_int_equal(gw_accesslog_reopen(l, &err), 0);
    gw_accesslog_write(l, 1, &r2);
    gw_accesslog_write(l, 1, &r2);
    gw_accesslog_flush(l, 1);
    assert_int_equal(count_lines(slurp(moved)), 303);
    assert_int_equal(count_lines(slurp(path)), 2);
    assert_int_equal(gw_accesslog_dropped(l), 0);
    gw_accesslog_close(l);
    unlink(path);
    unlink(moved);
    rmdir(dir);

    /* failed writes are counted */
    if (access("/dev/full", W_OK) == 0) {
        assert_int_equal(gw_accesslog_open(&l, "/dev/full", 1, &err), 0);
        gw_accesslog_write(l, 0, &r);
        gw_accesslog_write(l, 0, &r2);
        gw_accesslog_flush(l, 0);
        assert_int_equal(gw_accesslog_dropped(l), 2);
        gw_accesslog_close(l);
    }
    assert_true(gw_accesslog_open(&l, "/nonexistent/dir/x.log", 1, &err) < 0);
    assert_null(l);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_accesslog),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
