/* test_pgwire.c: the PostgreSQL protocol v3 helpers (pgwire.h) on hand-built byte strings:
 * startup packets of each kind (and broken ones), message framing at and around its limits,
 * Query/Parse decoding and Parse re-encoding, DataRow and ErrorResponse round trips, and the
 * AuthenticationSASL mechanism filter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "pgwire.h"

/* pkt builds a startup packet from a code and a body (length prefix added). */
static size_t
pkt(uint8_t *out, uint32_t code, const void *body, size_t blen)
{
    pgw_put32(out, (uint32_t) (8 + blen));
    pgw_put32(out + 4, code);
    memcpy(out + 8, body, blen);
    return 8 + blen;
}

static void
test_startup_kinds(void **state)
{
    (void) state;
    uint8_t b[256];
    pgw_startup s;
    size_t total = 0;
    size_t n = pkt(b, PGW_SSL_REQUEST, "", 0);
    assert_int_equal(pgw_startup_frame(b, n, &total), 1);
    assert_int_equal(total, 8);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), 0);
    assert_int_equal(s.kind, PGW_SSL);
    pgw_startup_free(&s);
    n = pkt(b, PGW_GSSENC_REQUEST, "", 0);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), 0);
    assert_int_equal(s.kind, PGW_GSSENC);
    pgw_startup_free(&s);
    n = pkt(b, PGW_CANCEL_REQUEST, "\x00\x00\x01\x02\xde\xad\xbe\xef", 8);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), 0);
    assert_int_equal(s.kind, PGW_CANCEL);
    assert_int_equal(s.cancel_pid, 0x102);
    assert_int_equal(s.cancel_key, 0xdeadbeef);
    pgw_startup_free(&s);
    static const char body[] = "user\0alice\0database\0db\0application_name\0\0";
    n = pkt(b, PGW_PROTO_30, body, sizeof body);
    assert_int_equal(pgw_startup_frame(b, n, &total), 1);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), 0);
    assert_int_equal(s.kind, PGW_STARTUP);
    assert_int_equal(s.nparams, 3);
    assert_string_equal(pgw_startup_get(&s, "user"), "alice");
    assert_string_equal(pgw_startup_get(&s, "database"), "db");
    assert_string_equal(pgw_startup_get(&s, "application_name"), ""); /* empty value is fine */
    assert_null(pgw_startup_get(&s, "options"));
    assert_null(s.params[6]);
    pgw_startup_free(&s);
    /* 3.1 is accepted (the server negotiates); 2.0 and 4.0 are not */
    n = pkt(b, PGW_PROTO_30 + 1, body, sizeof body);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), 0);
    pgw_startup_free(&s);
    n = pkt(b, 2u << 16, body, sizeof body);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_ENOTSUP);
    n = pkt(b, 4u << 16, body, sizeof body);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_ENOTSUP);
}

static void
test_startup_broken(void **state)
{
    (void) state;
    uint8_t b[256];
    pgw_startup s;
    size_t total = 0;
    static const char body[] = "user\0alice\0\0";
    size_t n = pkt(b, PGW_PROTO_30, body, sizeof body);
    /* truncated: more bytes needed */
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(pgw_startup_frame(b, k, &total), 0);
    }
    /* length field out of range */
    uint8_t bad[8];
    pgw_put32(bad, 7);
    assert_int_equal(pgw_startup_frame(bad, 8, &total), DBAO_EFORMAT);
    pgw_put32(bad, PGW_STARTUP_MAX + 1);
    assert_int_equal(pgw_startup_frame(bad, 8, &total), DBAO_EFORMAT);
    /* no terminating NUL */
    n = pkt(b, PGW_PROTO_30, "user\0alice", 10);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_EFORMAT);
    /* key without value */
    n = pkt(b, PGW_PROTO_30, "user\0\0", 6);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_EFORMAT);
    n = pkt(b, PGW_PROTO_30, "user\0", 5);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_EFORMAT);
    /* bytes after the terminator */
    n = pkt(b, PGW_PROTO_30, "user\0a\0\0x\0", 10);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_EFORMAT);
    /* empty body */
    n = pkt(b, PGW_PROTO_30, "", 0);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_EFORMAT);
    /* length field disagrees with the given length */
    n = pkt(b, PGW_PROTO_30, body, sizeof body);
    assert_int_equal(pgw_startup_parse(&s, b, n - 1, NULL), DBAO_EFORMAT);
    /* request codes with the wrong length */
    n = pkt(b, PGW_SSL_REQUEST, "xxxx", 4);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_EFORMAT);
    n = pkt(b, PGW_CANCEL_REQUEST, "xxxx", 4);
    assert_int_equal(pgw_startup_parse(&s, b, n, NULL), DBAO_EFORMAT);
    /* too many parameters */
    char many[2048];
    size_t m = 0;
    for (unsigned i = 0; i < PGW_MAX_PARAMS + 1; i++) {
        m += (size_t) snprintf(many + m, sizeof many - m, "k%u", i) + 1;
        many[m++] = 'v';
        many[m++] = 0;
    }
    many[m++] = 0;
    uint8_t big[2100];
    n = pkt(big, PGW_PROTO_30, many, m);
    assert_int_equal(pgw_startup_parse(&s, big, n, NULL), DBAO_ERANGE);
}

static void
test_frame(void **state)
{
    (void) state;
    uint8_t b[16] = {'Q', 0, 0, 0, 9, 'a', 'b', 'c', 'd', 0, 'X', 0, 0, 0, 4};
    uint8_t type = 0;
    size_t total = 0;
    for (size_t k = 0; k < 10; k++) {
        assert_int_equal(pgw_frame(b, k, 100, &type, &total), 0); /* partial */
    }
    assert_int_equal(pgw_frame(b, 10, 100, &type, &total), 1); /* exact */
    assert_int_equal(type, 'Q');
    assert_int_equal(total, 10);
    assert_int_equal(pgw_frame(b, 15, 100, &type, &total), 1); /* more after it */
    assert_int_equal(total, 10);
    assert_int_equal(pgw_frame(b + 10, 5, 100, &type, &total), 1); /* empty payload */
    assert_int_equal(type, 'X');
    assert_int_equal(total, 5);
    assert_int_equal(pgw_frame(b, 15, 10, &type, &total), 1);          /* at the limit */
    assert_int_equal(pgw_frame(b, 15, 9, &type, &total), DBAO_ERANGE); /* over it */
    assert_int_equal(pgw_frame(b, 5, 9, &type, &total), DBAO_ERANGE);  /* known early */
    uint8_t s[5] = {'Q', 0, 0, 0, 3};
    assert_int_equal(pgw_frame(s, 5, 100, &type, &total), DBAO_EFORMAT); /* length < 4 */
    uint8_t h[5] = {'Q', 0x80, 0, 0, 0};
    assert_int_equal(pgw_frame(h, 5, SIZE_MAX, &type, &total), DBAO_EFORMAT); /* negative */
}

static void
test_query_parse(void **state)
{
    (void) state;
    const char *sql;
    size_t len;
    assert_int_equal(pgw_query_decode((const uint8_t *) "SELECT 1", 9, &sql, &len), 0);
    assert_string_equal(sql, "SELECT 1");
    assert_int_equal(len, 8);
    assert_int_equal(pgw_query_decode((const uint8_t *) "SELECT 1", 8, &sql, &len), DBAO_EFORMAT);
    assert_int_equal(pgw_query_decode((const uint8_t *) "A\0B", 4, &sql, &len), DBAO_EFORMAT);

    static const uint8_t payload[] = "s1\0SELECT $1, $2\0\0\2\0\0\0\x17\0\0\0\x19";
    pgw_parse p;
    assert_int_equal(pgw_parse_decode(&p, payload, sizeof payload - 1), 0);
    assert_int_equal(p.name_len, 2);
    assert_memory_equal(p.name, "s1", 2);
    assert_int_equal(p.sql_len, 13);
    assert_int_equal(p.nparams, 2);
    assert_int_equal(pgw_get32(p.oids), 23);
    assert_int_equal(pgw_get32(p.oids + 4), 25);
    pgw_parse junk;
    assert_int_equal(pgw_parse_decode(&junk, payload, sizeof payload - 2), DBAO_EFORMAT);
    assert_int_equal(pgw_parse_decode(&junk, payload, 5), DBAO_EFORMAT);

    dbao_buf b = {0};
    assert_int_equal(pgw_parse_encode(&b, &p, "SELECT $1 || 'x', $2", 20), 0);
    uint8_t type;
    size_t total;
    assert_int_equal(pgw_frame((const uint8_t *) b.data, b.len, 1000, &type, &total), 1);
    assert_int_equal(type, 'P');
    assert_int_equal(total, b.len);
    pgw_parse q;
    assert_int_equal(pgw_parse_decode(&q, (const uint8_t *) b.data + 5, b.len - 5), 0);
    assert_int_equal(q.name_len, 2);
    assert_memory_equal(q.name, "s1", 2);
    assert_string_equal(q.sql, "SELECT $1 || 'x', $2");
    assert_int_equal(q.nparams, 2);
    assert_memory_equal(q.oids, p.oids, 8);
    assert_int_equal(pgw_parse_encode(&b, &p, "A\0B", 3), DBAO_EFORMAT);
    assert_int_equal(b.len, total);
    dbao_buf_reset(&b);
    assert_int_equal(pgw_query_encode(&b, "SELECT 2", 8), 0);
    assert_int_equal(b.len, 14);
    assert_memory_equal(b.data, "Q\0\0\0\x0dSELECT 2\0", 14);
    dbao_buf_free(&b);
}

static void
test_datarow(void **state)
{
    (void) state;
    dbao_buf b = {0};
    assert_int_equal(pgw_datarow_build_begin(&b, 4), 0);
    assert_int_equal(pgw_datarow_build_field(&b, "abc", 3), 0);
    assert_int_equal(pgw_datarow_build_field(&b, NULL, -1), 0);
    assert_int_equal(pgw_datarow_build_field(&b, "", 0), 0);
    assert_int_equal(pgw_datarow_build_field(&b, "\0\1", 2), 0);
    assert_int_equal(pgw_datarow_build_field(&b, "x", -2), DBAO_EINVAL);
    pgw_datarow it;
    const uint8_t *v;
    int32_t vl;
    assert_int_equal(pgw_datarow_begin(&it, (const uint8_t *) b.data, b.len), 4);
    assert_int_equal(pgw_datarow_next(&it, &v, &vl), 1);
    assert_int_equal(vl, 3);
    assert_memory_equal(v, "abc", 3);
    assert_int_equal(pgw_datarow_next(&it, &v, &vl), 1);
    assert_int_equal(vl, -1);
    assert_null(v);
    assert_int_equal(pgw_datarow_next(&it, &v, &vl), 1);
    assert_int_equal(vl, 0);
    assert_int_equal(pgw_datarow_next(&it, &v, &vl), 1);
    assert_int_equal(vl, 2);
    assert_memory_equal(v, "\0\1", 2);
    assert_int_equal(pgw_datarow_next(&it, &v, &vl), 0);
    /* truncated anywhere: malformed */
    for (size_t k = 2; k < b.len; k++) {
        int r = pgw_datarow_begin(&it, (const uint8_t *) b.data, k);
        assert_int_equal(r, 4);
        while ((r = pgw_datarow_next(&it, &v, &vl)) == 1) {
        }
        assert_int_equal(r, DBAO_EFORMAT);
    }
    /* trailing bytes, a length below -1, a negative count */
    dbao_buf_putc(&b, 'z');
    assert_int_equal(pgw_datarow_begin(&it, (const uint8_t *) b.data, b.len), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pgw_datarow_next(&it, &v, &vl), 1);
    }
    assert_int_equal(pgw_datarow_next(&it, &v, &vl), DBAO_EFORMAT);
    assert_int_equal(pgw_datarow_begin(&it, (const uint8_t *) "\0\1\xff\xff\xff\xfe", 6), 1);
    assert_int_equal(pgw_datarow_next(&it, &v, &vl), DBAO_EFORMAT);
    assert_int_equal(pgw_datarow_begin(&it, (const uint8_t *) "\xff\xff", 2), DBAO_EFORMAT);
    assert_int_equal(pgw_datarow_begin(&it, (const uint8_t *) "\0", 1), DBAO_EFORMAT);
    dbao_buf_free(&b);
}

static void
test_error(void **state)
{
    (void) state;
    dbao_buf b = {0};
    assert_int_equal(pgw_error_build(&b, 'E', "FATAL", "28000", "no entry"), 0);
    uint8_t type;
    size_t total;
    assert_int_equal(pgw_frame((const uint8_t *) b.data, b.len, 1000, &type, &total), 1);
    assert_int_equal(type, 'E');
    assert_int_equal(total, b.len);
    pgw_fields it;
    pgw_fields_begin(&it, (const uint8_t *) b.data + 5, b.len - 5);
    char code;
    const char *val;
    size_t vl;
    const char *want[][2] = {{"S", "FATAL"}, {"V", "FATAL"}, {"C", "28000"}, {"M", "no entry"}};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), 1);
        assert_int_equal(code, want[i][0][0]);
        assert_string_equal(val, want[i][1]);
        assert_int_equal(vl, strlen(want[i][1]));
    }
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), 0);
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), 0);
    /* missing terminator, unterminated value, bytes after the terminator */
    pgw_fields_begin(&it, (const uint8_t *) "SERROR\0", 7);
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), 1);
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), DBAO_EFORMAT);
    pgw_fields_begin(&it, (const uint8_t *) "SERR", 4);
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), DBAO_EFORMAT);
    pgw_fields_begin(&it, (const uint8_t *) "\0x", 2);
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), DBAO_EFORMAT);
    /* a notice built field by field */
    dbao_buf_reset(&b);
    assert_int_equal(pgw_field_put(&b, 'M', "hello"), 0);
    assert_int_equal(dbao_buf_putc(&b, 0), 0);
    pgw_fields_begin(&it, (const uint8_t *) b.data, b.len);
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), 1);
    assert_string_equal(val, "hello");
    assert_int_equal(pgw_fields_next(&it, &code, &val, &vl), 0);
    dbao_buf_free(&b);
}

static void
test_sasl_filter(void **state)
{
    (void) state;
    dbao_buf out = {0};
    static const uint8_t both[] = "\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
    assert_int_equal(pgw_sasl_filter(both, sizeof both, &out), 1);
    static const uint8_t want[] = "\0\0\0\x0aSCRAM-SHA-256\0";
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    dbao_buf_reset(&out);
    static const uint8_t order[] = "\0\0\0\x0aSCRAM-SHA-256\0X-PLUS\0OTHER\0";
    static const uint8_t order_want[] = "\0\0\0\x0aSCRAM-SHA-256\0OTHER\0";
    assert_int_equal(pgw_sasl_filter(order, sizeof order, &out), 1);
    assert_int_equal(out.len, sizeof order_want);
    assert_memory_equal(out.data, order_want, sizeof order_want);
    dbao_buf_reset(&out);
    /* nothing to remove, other auth codes */
    assert_int_equal(pgw_sasl_filter(want, sizeof want, &out), 0);
    assert_int_equal(pgw_sasl_filter((const uint8_t *) "\0\0\0\0", 4, &out), 0);
    assert_int_equal(pgw_sasl_filter((const uint8_t *) "\0\0\0\x05salt", 8, &out), 0);
    assert_int_equal(out.len, 0);
    /* malformed: short, unterminated list, bytes after the list */
    assert_int_equal(pgw_sasl_filter((const uint8_t *) "\0\0", 2, &out), DBAO_EFORMAT);
    assert_int_equal(pgw_sasl_filter(both, sizeof both - 1, &out), DBAO_EFORMAT);
    assert_int_equal(pgw_sasl_filter((const uint8_t *) "\0\0\0\x0a"
                                                       "A-PLUS\0\0x",
                                     13, &out),
                     DBAO_EFORMAT);
    assert_int_equal(out.len, 0);
    dbao_buf_free(&out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_kinds), cmocka_unit_test(test_startup_broken),
        cmocka_unit_test(test_frame),         cmocka_unit_test(test_query_parse),
        cmocka_unit_test(test_datarow),       cmocka_unit_test(test_error),
        cmocka_unit_test(test_sasl_filter),
    };
    return cmocka_run_group_tests_name("mask/pgwire", tests, NULL, NULL);
}
