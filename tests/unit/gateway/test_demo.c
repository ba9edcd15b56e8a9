/* test_demo.c: the gateway's built-in demo upstream (src/gateway/demo.c), over loopback.
 *
 * The demo server is started on 127.0.0.1 with an ephemeral port and spoken to with a raw
 * socket (one request per connection, "Connection: close", read to EOF). Checks: the record
 * list has 50 records whose personal-data fields have the right shapes (ID number check
 * character per GB 11643, Luhn digit of the bank card, mobile 1[3-9] + 9 digits, gender and
 * birth date agreeing with the ID number), the list is the same on every call (deterministic),
 * each record is reachable by id (and by its number), unknown ids and paths are 404, a wrong
 * method is 405, /healthz answers "ok", and POST /echo reflects the body and the forwarding
 * headers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "dengbao/gateway.h"
#include "dengbao/net.h"

typedef struct resp {
    int status;
    char *raw;  /* the whole answer, NUL-terminated */
    char *body; /* points into raw */
    size_t body_len;
} resp;

/* http: sends `req` to 127.0.0.1:port and reads the answer to EOF */
static void
http(uint16_t port, const char *req, resp *r)
{
    struct sockaddr_in a;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    size_t cap = 1 << 16, n = 0;

    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *) &a, sizeof a), 0);
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t) strlen(req));
    r->raw = malloc(cap);
    assert_non_null(r->raw);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            r->raw = realloc(r->raw, cap);
            assert_non_null(r->raw);
        }
        ssize_t k = read(fd, r->raw + n, cap - n - 1);
        assert_true(k >= 0);
        if (k == 0) {
            break;
        }
        n += (size_t) k;
    }
    close(fd);
    r->raw[n] = '\0';
    assert_int_equal(sscanf(r->raw, "HTTP/1.1 %d", &r->status), 1);
    r->body = strstr(r->raw, "\r\n\r\n");
    assert_non_null(r->body);
    r->body += 4;
    r->body_len = n - (size_t) (r->body - r->raw);
}

static void
get(uint16_t port, const char *path, resp *r)
{
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n", path);
    http(port, req, r);
}

static json_t *
parse(const resp *r)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, 0, &je);
    if (j == NULL) {
        fprintf(stderr, "bad json: %s\n%s\n", je.text, r->body);
    }
    assert_non_null(j);
    return j;
}

static bool
all_digits(const char *s, size_t n)
{
    if (strlen(s) != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

static bool
luhn_ok(const char *s)
{
    size_t n = strlen(s);
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int d = s[n - 1 - i] - '0';
        if (i % 2 == 1) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        sum += d;
    }
    return sum % 10 == 0;
}

static bool
id_ok(const char *s)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    if (strlen(s) != 18) {
        return false;
    }
    for (int i = 0; i < 17; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        sum += (s[i] - '0') * w[i];
    }
    return s[17] == "10X98765432"[sum % 11];
}

static int
setup(void **state)
{
    net_server *srv = NULL;
    dbao_err err;
    int rc = gw_demo_start(&srv, "127.0.0.1", 0, &err);
    if (rc != 0) {
        fprintf(stderr, "gw_demo_start: %s\n", err.msg);
        return -1;
    }
    *state = srv;
    return 0;
}

static int
teardown(void **state)
{
    net_server_free(*state);
    return 0;
}

static void
test_list(void **state)
{
    uint16_t port = net_server_port(*state);
    resp r, r2;
    get(port, "/patients", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.raw, "Content-Type: application/json"));
    json_t *a = parse(&r);
    assert_true(json_is_array(a));
    assert_int_equal(json_array_size(a), 50);
    size_t i;
    json_t *p;
    json_array_foreach(a, i, p)
    {
        const char *id, *name, *gender, *birth, *idn, *mobile, *card, *diag, *hosp;
        int fict;
        assert_int_equal(json_unpack(p, "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "id",
                                     &id, "name", &name, "gender", &gender, "birth_date", &birth,
                                     "id_number", &idn, "mobile", &mobile, "bank_card", &card,
                                     "diagnosis", &diag, "hospital", &hosp, "fictitious", &fict),
                         0);
        char want[32];
        snprintf(want, sizeof want, "P%04zu", i + 1);
        assert_string_equal(id, want);
        assert_true(strlen(name) >= 6); /* two or more CJK characters (3 bytes each) */
        assert_true(id_ok(idn));
        /* birth date inside the ID number */
        char bd[9];
        snprintf(bd, sizeof bd, "%.4s%.2s%.2s", birth, birth + 5, birth + 8);
        assert_memory_equal(idn + 6, bd, 8);
        /* gender from the 17th digit: odd male */
        assert_string_equal(gender, ((idn[16] - '0') % 2) ? "男" : "女");
        assert_true(all_digits(mobile, 11));
        assert_true(mobile[0] == '1' && mobile[1] >= '3' && mobile[1] <= '9');
        assert_true(all_digits(card, 19));
        assert_true(card[0] == '6' && card[1] == '2');
        assert_true(luhn_ok(card));
        assert_true(strncmp(hosp, "示例", strlen("示例")) == 0);
        assert_true(fict);
        assert_true(strlen(diag) > 0);
    }
    /* deterministic: same bytes again */
    get(port, "/patients", &r2);
    assert_int_equal(r2.body_len, r.body_len);
    assert_memory_equal(r2.body, r.body, r.body_len);
    json_decref(a);
    free(r.raw);
    free(r2.raw);
}

static void
test_one(void **state)
{
    uint16_t port = net_server_port(*state);
    resp r;
    get(port, "/patients/P0007", &r);
    assert_int_equal(r.status, 200);
    json_t *o = parse(&r);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "P0007");
    assert_true(id_ok(json_string_value(json_object_get(o, "id_number"))));
    json_decref(o);
    free(r.raw);

    get(port, "/patients/7", &r); /* numeric alias */
    assert_int_equal(r.status, 200);
    o = parse(&r);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "P0007");
    json_decref(o);
    free(r.raw);
    get(port, "/patients/07", &r);
    assert_int_equal(r.status, 404);
    free(r.raw);
    get(port, "/patients/0", &r);
    assert_int_equal(r.status, 404);
    free(r.raw);

    get(port, "/patients/P0050", &r);
    assert_int_equal(r.status, 200);
    free(r.raw);
    get(port, "/patients/P0051", &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "no such patient"));
    free(r.raw);
    get(port, "/patients/../healthz", &r);
    assert_int_equal(r.status, 404);
    free(r.raw);
    get(port, "/nothing", &r);
    assert_int_equal(r.status, 404);
    free(r.raw);
}

static void
test_health_and_methods(void **state)
{
    uint16_t port = net_server_port(*state);
    resp r;
    get(port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 3);
    assert_memory_equal(r.body, "ok\n", 3);
    free(r.raw);

    http(port, "DELETE /patients HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.raw, "Allow: GET, HEAD"));
    free(r.raw);
    get(port, "/echo", &r);
    assert_int_equal(r.status, 405);
    free(r.raw);
    http(port, "HEAD /patients HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    free(r.raw);
}

static void
test_echo(void **state)
{
    uint16_t port = net_server_port(*state);
    resp r;
    http(port,
         "POST /echo?x=1 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
         "X-Forwarded-For: 10.1.2.3, 127.0.0.1\r\nX-Real-IP: 10.1.2.3\r\n"
         "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
         "Content-Length: 11\r\n\r\nhello world",
         &r);
    assert_int_equal(r.status, 200);
    json_t *o = parse(&r);
    const char *method, *path, *query, *body, *xff, *rip, *tp, *host;
    json_int_t blen;
    json_t *proto;
    assert_int_equal(json_unpack(o, "{s:s, s:s, s:s, s:s, s:I, s:{s:s, s:s, s:s, s:s, s:o}}",
                                 "method", &method, "path", &path, "query", &query, "body", &body,
                                 "body_length", &blen, "headers", "x-forwarded-for", &xff,
                                 "x-real-ip", &rip, "traceparent", &tp, "host", &host,
                                 "x-forwarded-proto", &proto),
                     0);
    assert_string_equal(method, "POST");
    assert_string_equal(path, "/echo");
    assert_string_equal(query, "x=1");
    assert_string_equal(body, "hello world");
    assert_int_equal(blen, 11);
    assert_string_equal(xff, "10.1.2.3, 127.0.0.1");
    assert_string_equal(rip, "10.1.2.3");
    assert_string_equal(tp, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_string_equal(host, "gw.test");
    assert_true(json_is_null(proto));
    json_decref(o);
    free(r.raw);

    /* a body that is not UTF-8: body null, length kept */
    http(port,
         "POST /echo HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: "
         "2\r\n\r\n"
         "\xff\xfe",
         &r);
    assert_int_equal(r.status, 200);
    o = parse(&r);
    assert_true(json_is_null(json_object_get(o, "body")));
    assert_int_equal(json_integer_value(json_object_get(o, "body_length")), 2);
    json_decref(o);
    free(r.raw);
}

static void
test_bad_args(void **state)
{
    (void) state;
    net_server *srv = (net_server *) 1;
    dbao_err err;
    assert_int_equal(gw_demo_start(NULL, "127.0.0.1", 0, &err), DBAO_EINVAL);
    assert_int_not_equal(gw_demo_start(&srv, "not-an-address", 0, &err), 0);
    assert_null(srv);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_one),
        cmocka_unit_test(test_health_and_methods),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
