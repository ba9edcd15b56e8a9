/* test_util.c: request helpers (src/gateway/util.c): address parsing, CIDR ranges (IPv4,
 * IPv6, IPv4-mapped), the client address behind trusted proxies (spoofed X-Forwarded-For from
 * an untrusted peer, chains of trusted hops, garbage entries) and W3C traceparent.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dengbao/gateway.h"

static void
test_parse_addr(void **state)
{
    (void) state;
    gw_addr a;
    assert_int_equal(gw_parse_addr("127.0.0.1:8080", &a), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 8080);
    assert_int_equal(gw_parse_addr("[::1]:443", &a), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 443);
    assert_int_equal(gw_parse_addr("0.0.0.0:0", &a), 0);
    assert_int_equal(gw_parse_addr("[fe80::1%eth0]:1", &a), DBAO_EFORMAT);
    const char *bad[] = {"",
                         ":80",
                         "127.0.0.1",
                         "127.0.0.1:",
                         "127.0.0.1:65536",
                         "127.0.0.1:8x",
                         "localhost:80",
                         "::1:80",
                         "[::1]",
                         "[::1]80",
                         "[127.0.0.1]:80",
                         "1.2.3:80",
                         "127.0.0.1:-1",
                         "[]:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gw_parse_addr(bad[i], &a) != DBAO_EFORMAT)
            fail_msg("'%s' accepted", bad[i]);
}

static void
test_cidr(void **state)
{
    (void) state;
    gw_cidr v[4];
    assert_int_equal(gw_cidr_parse("10.0.0.0/8", &v[0]), 0);
    assert_int_equal(v[0].prefix, 104);
    assert_int_equal(v[0].addr[10], 0xff);
    assert_int_equal(v[0].addr[12], 10);
    assert_int_equal(gw_cidr_parse("192.168.1.77/24", &v[1]), 0); /* host bits cleared */
    assert_int_equal(v[1].addr[15], 0);
    assert_int_equal(gw_cidr_parse("2001:db8::/32", &v[2]), 0);
    assert_int_equal(v[2].prefix, 32);
    assert_int_equal(gw_cidr_parse("127.0.0.1", &v[3]), 0);
    assert_int_equal(v[3].prefix, 128);
    static const struct {
        const char *a;
        bool in;
    } T[] = {{"10.1.2.3", true},
             {"11.0.0.1", false},
             {"192.168.1.200", true},
             {"192.168.2.1", false},
             {"2001:db8:1::5", true},
             {"2001:db9::1", false},
             {"127.0.0.1", true},
             {"127.0.0.2", false},
             {"::ffff:10.9.9.9", true},
             {"::ffff:127.0.0.1", true},
             {"::1", false},
             {"garbage", false},
             {"10.0.0.1:80", false},
             {"", false}};
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++)
        if (gw_cidr_match(v, 4, T[i].a) != T[i].in)
            fail_msg("'%s': want %d", T[i].a, T[i].in);
    gw_cidr all, odd;
    assert_int_equal(gw_cidr_parse("0.0.0.0/0", &all), 0);
    assert_true(gw_cidr_match(&all, 1, "8.8.8.8"));
    assert_false(gw_cidr_match(&all, 1, "2001:db8::1")); /* v4 /0 is ::ffff:0:0/96 */
    assert_int_equal(gw_cidr_parse("::/0", &all), 0);
    assert_true(gw_cidr_match(&all, 1, "2001:db8::1"));
    assert_int_equal(gw_cidr_parse("10.128.0.0/9", &odd), 0);
    assert_true(gw_cidr_match(&odd, 1, "10.200.0.1"));
    assert_false(gw_cidr_match(&odd, 1, "10.127.0.1"));
    const char *bad[] = {"10.0.0.0/33", "::/129", "10.0.0.0/",    "10.0.0.0/x", "10.0.0/8",
                         "/8",          "",       "10.0.0.0/08x", "10.0.0.0/-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gw_cidr_parse(bad[i], &odd) != DBAO_EFORMAT)
            fail_msg("'%s' accepted", bad[i]);
    assert_false(gw_cidr_match(NULL, 0, "10.0.0.1"));
}

static void
test_client_addr(void **state)
{
    (void) state;
    gw_cidr tr[2];
    assert_int_equal(gw_cidr_parse("10.0.0.0/8", &tr[0]), 0);
    assert_int_equal(gw_cidr_parse("::1", &tr[1]), 0);
    static const struct {
        const char *peer, *xff, *client, *xff_out;
    } T[] = {
        /* untrusted peer: XFF ignored (spoofed) and not forwarded */
        {"203.0.113.5", "1.2.3.4", "203.0.113.5", "203.0.113.5"},
        {"203.0.113.5", NULL, "203.0.113.5", "203.0.113.5"},
        /* trusted peer without XFF */
        {"10.0.0.1", NULL, "10.0.0.1", "10.0.0.1"},
        {"10.0.0.1", "", "10.0.0.1", "10.0.0.1"},
        /* one trusted hop */
        {"10.0.0.1", "198.51.100.7", "198.51.100.7", "198.51.100.7, 10.0.0.1"},
        /* the client forged an entry; the rightmost untrusted wins */
        {"10.0.0.1", "6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7",
         "6.6.6.6, 198.51.100.7, 10.0.0.2, 10.0.0.1"},
        /* all trusted: the leftmost */
        {"10.0.0.1", "10.1.1.1,10.2.2.2", "10.1.1.1", "10.1.1.1,10.2.2.2, 10.0.0.1"},
        /* spaces, empty elements, ports, brackets */
        {"10.0.0.1", " 198.51.100.7:5555 ,, 10.0.0.3 ", "198.51.100.7",
         " 198.51.100.7:5555 ,, 10.0.0.3 , 10.0.0.1"},
        {"::1", "[2001:db8::9]:443", "2001:db8::9", "[2001:db8::9]:443, ::1"},
        {"::1", "2001:db8::9", "2001:db8::9", "2001:db8::9, ::1"},
        /* garbage stops the walk: the last good address wins */
        {"10.0.0.1", "198.51.100.7, unknown", "10.0.0.1", "198.51.100.7, unknown, 10.0.0.1"},
        {"10.0.0.1", "198.51.100.7, garbage, 10.0.0.9", "10.0.0.9",
         "198.51.100.7, garbage, 10.0.0.9, 10.0.0.1"},
        {"10.0.0.1", "1.2.3.4:x", "10.0.0.1", "1.2.3.4:x, 10.0.0.1"},
        {"10.0.0.1", "[::1", "10.0.0.1", "[::1, 10.0.0.1"},
        {"10.0.0.1", ",,,", "10.0.0.1", ",,,, 10.0.0.1"},
    };
    char out[64], xo[256];
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        assert_int_equal(gw_client_addr(tr, 2, T[i].peer, T[i].xff, out, xo, sizeof(xo)), 0);
        if (strcmp(out, T[i].client) != 0)
            fail_msg("case %zu: client '%s' want '%s'", i, out, T[i].client);
        if (strcmp(xo, T[i].xff_out) != 0)
            fail_msg("case %zu: xff '%s' want '%s'", i, xo, T[i].xff_out);
    }
    /* nothing trusted: never believed */
    assert_int_equal(gw_client_addr(NULL, 0, "10.0.0.1", "1.1.1.1", out, xo, sizeof(xo)), 0);
    assert_string_equal(out, "10.0.0.1");
    /* capacity */
    assert_int_equal(gw_client_addr(tr, 2, "10.0.0.1", "1.1.1.1", out, xo, 17), DBAO_ERANGE);
    assert_int_equal(gw_client_addr(tr, 2, "10.0.0.1", "1.1.1.1", out, xo, 18), 0);
    assert_string_equal(xo, "1.1.1.1, 10.0.0.1");
    assert_int_equal(gw_client_addr(tr, 2, "10.0.0.1", "1.1.1.1", out, NULL, 0), 0);
    assert_string_equal(out, "1.1.1.1");
}

static void
test_traceparent(void **state)
{
    (void) state;
    gw_traceparent t;
    const char *ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_int_equal(gw_traceparent_parse(ok, &t), 0);
    assert_int_equal(t.trace_id[0], 0x4b);
    assert_int_equal(t.parent_id[7], 0xb7);
    assert_int_equal(t.flags, 1);
    /* a later version with an extra field */
    assert_int_equal(
        gw_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz", &t), 0);
    const char *bad[] = {
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (gw_traceparent_parse(bad[i], &t) != DBAO_EFORMAT)
            fail_msg("'%s' accepted", bad[i]);

    char out[56], tid[33], out2[56], tid2[33];
    gw_traceparent_child(ok, out, tid);
    assert_int_equal(strlen(out), 55);
    assert_string_equal(tid, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_memory_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36);
    assert_string_equal(out + 52, "-01");
    assert_memory_not_equal(out + 36, "00f067aa0ba902b7", 16); /* a new span */
    assert_int_equal(gw_traceparent_parse(out, &t), 0);
    gw_traceparent_child(ok, out2, tid2);
    assert_memory_not_equal(out + 36, out2 + 36, 16);
    /* sampled flag kept as received */
    gw_traceparent_child("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", out, tid);
    assert_string_equal(out + 52, "-00");
    /* new traces */
    gw_traceparent_child(NULL, out, tid);
    assert_int_equal(gw_traceparent_parse(out, &t), 0);
    assert_string_equal(out + 52, "-01");
    assert_memory_equal(out + 3, tid, 32);
    gw_traceparent_child(bad[0], out2, tid2);
    assert_int_equal(gw_traceparent_parse(out2, &t), 0);
    assert_string_not_equal(tid, tid2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_addr),
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_client_addr),
        cmocka_unit_test(test_traceparent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
