/* test_jsonin.c: the clearing JSON intake, the JSON answer and the money text codec
 * (jsonin.c, docs/clearing-protocol.md "JSON").
 *
 *   - money: every edge of "yuan with at most 2 decimals" ("0.1" = 10 fen, "0.123", "1e3",
 *     "-0.00", "+1", " 1", "1.", ".5", overflow at CLR_AMOUNT_MAX) and formatting, including
 *     INT64_MIN;
 *   - one object of every event type decodes to the expected event, and both id forms
 *     (integer <= 2^53, decimal string up to 2^64 - 1) and both money forms (yuan string,
 *     *_fen integer) work;
 *   - every refusal names the field: unknown and duplicate keys, JSON floats and exponents,
 *     wrong types, missing and disallowed keys, both forms of one amount, bad trace ids,
 *     security codes, sides and dates, negative and out-of-range values, non-objects;
 *   - messages never echo a value;
 *   - the answer object, byte for byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dengbao/clearing.h"
#include "journal_internal.h"
#include "testutil.h"

static void
test_money_parse(void **state)
{
    (void) state;
    static const struct {
        const char *s;
        int rc;
        int64_t fen;
    } cases[] = {
        {"0", 0, 0},
        {"0.1", 0, 10},
        {"0.01", 0, 1},
        {"12.34", 0, 1234},
        {"10.5", 0, 1050},
        {"-0.01", 0, -1},
        {"-0.00", 0, 0},
        {"-12", 0, -1200},
        {"007.50", 0, 750},
        {"720575940379279.36", 0, CLR_AMOUNT_MAX}, /* 2^56 fen exactly */
        {"-720575940379279.36", 0, -CLR_AMOUNT_MAX},
        {"720575940379279.37", DBAO_EFORMAT, 0}, /* one fen over */
        {"720575940379280", DBAO_EFORMAT, 0},
        {"99999999999999999999999", DBAO_EFORMAT, 0}, /* would wrap a u64 */
        {"0.123", DBAO_EFORMAT, 0},
        {"1e3", DBAO_EFORMAT, 0},
        {"1E3", DBAO_EFORMAT, 0},
        {"", DBAO_EFORMAT, 0},
        {"-", DBAO_EFORMAT, 0},
        {"+1", DBAO_EFORMAT, 0},
        {" 1", DBAO_EFORMAT, 0},
        {"1 ", DBAO_EFORMAT, 0},
        {"1.", DBAO_EFORMAT, 0},
        {".5", DBAO_EFORMAT, 0},
        {"1,5", DBAO_EFORMAT, 0},
        {"--1", DBAO_EFORMAT, 0},
        {"1.2.3", DBAO_EFORMAT, 0},
        {"0x10", DBAO_EFORMAT, 0},
        {"NaN", DBAO_EFORMAT, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t fen = 77;
        dbao_err err;
        int rc = clr_money_parse(cases[i].s, strlen(cases[i].s), &fen, &err);
        if (rc != cases[i].rc || (rc == 0 && fen != cases[i].fen)) {
            print_error("\"%s\": rc %d fen %lld\n", cases[i].s, rc, (long long) fen);
        }
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0) {
            assert_int_equal(fen, cases[i].fen);
        }
    }
    /* An embedded NUL is not the end of the text. */
    int64_t fen;
    assert_int_equal(clr_money_parse("1\0"
                                     "2",
                                     3, &fen, NULL),
                     DBAO_EFORMAT);
}

static void
test_money_format(void **state)
{
    (void) state;
    char out[32];
    static const struct {
        int64_t fen;
        const char *s;
    } cases[] = {{0, "0.00"},
                 {1, "0.01"},
                 {-1, "-0.01"},
                 {10, "0.10"},
                 {1234, "12.34"},
                 {-1200, "-12.00"},
                 {CLR_AMOUNT_MAX, "720575940379279.36"},
                 {INT64_MIN, "-92233720368547758.08"},
                 {INT64_MAX, "92233720368547758.07"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        clr_money_format(cases[i].fen, out);
        assert_string_equal(out, cases[i].s);
        int64_t back;
        if (cases[i].fen >= -CLR_AMOUNT_MAX && cases[i].fen <= CLR_AMOUNT_MAX) {
            assert_int_equal(clr_money_parse(out, strlen(out), &back, NULL), 0);
            assert_int_equal(back, cases[i].fen);
        }
    }
}

static void
decode_ok(const char *json, clr_event *ev)
{
    dbao_err err;
    dbao_err_clear(&err);
    int rc = clr_json_decode(json, strlen(json), ev, &err);
    if (rc != 0) {
        print_error("%s: %s\n", json, err.msg);
    }
    assert_int_equal(rc, 0);
}

static void
test_every_type(void **state)
{
    (void) state;
    clr_event ev;
    decode_ok("{\"type\":\"open\",\"account\":1001,\"member\":7}", &ev);
    assert_true(ev.type == CLR_EV_OPEN && ev.account == 1001 && ev.member == 7 && ev.amount == 0);
    decode_ok("{\"type\":\"open\",\"account\":\"1001\",\"member\":\"7\",\"credit_limit\":\"5000\"}",
              &ev);
    assert_true(ev.amount == 500000 && ev.member == 7);
    decode_ok("{\"type\":\"deposit\",\"account\":1001,\"amount\":\"1234.5\"}", &ev);
    assert_true(ev.type == CLR_EV_DEPOSIT && ev.amount == 123450);
    decode_ok("{\"type\":\"withdraw\",\"account\":1001,\"amount_fen\":99}", &ev);
    assert_true(ev.type == CLR_EV_WITHDRAW && ev.amount == 99);
    decode_ok("{\"type\":\"xfer_in\",\"account\":1001,\"security\":\"000001\",\"qty\":500}", &ev);
    assert_true(ev.type == CLR_EV_XFER_IN && ev.security == 1 && ev.qty == 500);
    decode_ok("{\"type\":\"xfer_out\",\"account\":1001,\"security\":\"600000\",\"qty\":0}", &ev);
    assert_true(ev.type == CLR_EV_XFER_OUT && ev.security == 600000 && ev.qty == 0);
    decode_ok("{\"type\":\"order\",\"account\":1001,\"order_id\":7,\"side\":\"B\","
              "\"security\":\"600000\",\"price\":\"10.25\",\"qty\":100,"
              "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"}",
              &ev);
    assert_true(ev.type == CLR_EV_ORDER && ev.order_id == 7 && ev.side == 'B' && ev.price == 1025 &&
                ev.qty == 100 && ev.trace_id[0] == 0x4b && ev.trace_id[15] == 0x36);
    decode_ok("{\"type\":\"order\",\"account\":1001,\"order_id\":\"18446744073709551615\","
              "\"side\":\"S\",\"security\":\"300750\",\"price_fen\":1025,\"qty\":100}",
              &ev);
    assert_true(ev.order_id == UINT64_MAX && ev.side == 'S' && ev.price == 1025);
    decode_ok("{\"type\":\"cancel\",\"account\":1001,\"order_id\":9007199254740992}", &ev);
    assert_true(ev.type == CLR_EV_CANCEL && ev.order_id == ((uint64_t) 1 << 53));
    decode_ok("{\"type\":\"fill\",\"account\":1001,\"order_id\":7,\"exec_id\":\"88\","
              "\"price\":\"10.2\",\"qty\":100}",
              &ev);
    assert_true(ev.type == CLR_EV_FILL && ev.exec_id == 88 && ev.price == 1020);
    decode_ok("{\"type\":\"eod\",\"date\":\"2026-11-30\"}", &ev);
    assert_true(ev.type == CLR_EV_EOD && ev.qty == 20261130 && ev.account == 0);
    decode_ok("{\"type\":\"eod\",\"date\":20240229}", &ev);
    assert_int_equal(ev.qty, 20240229);
    assert_int_equal(ev.seq, 0);
    assert_int_equal(ev.ts_ns, 0);
}

static void
refused(const char *json, const char *needle)
{
    clr_event ev;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = clr_json_decode(json, strlen(json), &ev, &err);
    if (rc != DBAO_EFORMAT || strstr(err.msg, needle) == NULL) {
        print_error("%s: rc %d \"%s\" (want \"%s\")\n", json, rc, err.msg, needle);
    }
    assert_int_equal(rc, DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, needle));
    /* No value of the request is echoed (the values used below are distinctive). */
    assert_null(strstr(err.msg, "1234"));
    assert_null(strstr(err.msg, "4bf9"));
}

#define DEP "{\"type\":\"deposit\",\"account\":1001,"
#define ORD "{\"type\":\"order\",\"account\":1001,\"order_id\":7,\"side\":\"B\","

static void
test_refusals(void **state)
{
    (void) state;
    refused(DEP "\"amount\":\"1234.567\"}", "\"amount\"");
    refused(DEP "\"amount\":\"1e3\"}", "\"amount\"");
    refused(DEP "\"amount\":1234.5}", "\"amount\"");      /* a JSON float */
    refused(DEP "\"amount_fen\":1e3}", "\"amount_fen\""); /* an exponent is a float */
    refused(DEP "\"amount_fen\":1234.0}", "\"amount_fen\"");
    refused(DEP "\"amount\":1234}", "\"amount\""); /* yuan must be a string */
    refused(DEP "\"amount_fen\":\"1234\"}", "\"amount_fen\"");
    refused(DEP "\"amount\":\"-12.34\"}", "\"amount\""); /* negative */
    refused(DEP "\"amount_fen\":-1234}", "\"amount\"");
    refused(DEP "\"amount_fen\":72057594037927937}", "\"amount_fen\"");
    refused(DEP "\"amount\":\"1.00\",\"amount_fen\":100}", "both set");
    refused(DEP "\"amount\":\"1.00\",\"amount\":\"2.00\"}", "duplicate");
    refused(DEP "\"amount\":\"1.00\",\"colour\":1}", "unknown field \"colour\"");
    refused(DEP "\"amount\":\"1.00\",\"qty\":1}", "\"qty\" not allowed for type \"deposit\"");
    refused("{\"type\":\"deposit\",\"account\":1001}", "\"amount\" is missing");
    refused("{\"type\":\"deposit\",\"amount\":\"1.00\"}", "\"account\" is missing");
    refused("{\"account\":1001}", "\"type\"");
    refused("{\"type\":\"refund\"}", "\"type\"");
    refused("{\"type\":7}", "\"type\"");
    refused("[1,2]", "object");
    refused("{\"type\":\"eod\",\"date\":\"2026-11-30\"} x", "malformed");
    refused("", "malformed");
    refused("{\"type\":\"eod\",\"date\":\"2026-11-30\"", "malformed");
    /* ids */
    refused(DEP "\"amount\":\"1\",\"account\":9007199254740993}", "duplicate");
    refused("{\"type\":\"cancel\",\"account\":1001,\"order_id\":9007199254740993}",
            "\"order_id\" is out of range");
    refused("{\"type\":\"cancel\",\"account\":1001,\"order_id\":\"18446744073709551616\"}",
            "\"order_id\" is out of range");
    refused("{\"type\":\"cancel\",\"account\":1001,\"order_id\":-1}", "\"order_id\"");
    refused("{\"type\":\"cancel\",\"account\":1001,\"order_id\":\"+7\"}", "\"order_id\"");
    refused("{\"type\":\"cancel\",\"account\":1001,\"order_id\":\"\"}", "\"order_id\"");
    refused("{\"type\":\"cancel\",\"account\":1001,\"order_id\":true}", "\"order_id\"");
    refused("{\"type\":\"cancel\",\"account\":1001,\"order_id\":0}", "\"order_id\"");
    refused("{\"type\":\"cancel\",\"account\":\"281474976710657\",\"order_id\":1}", "\"account\"");
    refused("{\"type\":\"cancel\",\"account\":0,\"order_id\":1}", "\"account\"");
    refused("{\"type\":\"open\",\"account\":1,\"member\":4294967296}", "\"member\"");
    refused("{\"type\":\"open\",\"account\":1,\"member\":0}", "\"member\"");
    refused("{\"type\":\"open\",\"account\":1,\"member\":1,\"credit_limit\":\"0.001\"}",
            "\"credit_limit\"");
    /* order fields */
    refused(ORD "\"security\":\"60000\",\"price\":\"1\",\"qty\":1}", "\"security\"");
    refused(ORD "\"security\":\"60000a\",\"price\":\"1\",\"qty\":1}", "\"security\"");
    refused(ORD "\"security\":600000,\"price\":\"1\",\"qty\":1}", "\"security\"");
    refused(ORD "\"security\":\"000000\",\"price\":\"1\",\"qty\":1}", "\"security\"");
    refused(ORD "\"security\":\"600000\",\"price\":\"1\",\"qty\":1.5}", "\"qty\"");
    refused(ORD "\"security\":\"600000\",\"price\":\"1\",\"qty\":\"100\"}", "\"qty\"");
    refused(ORD "\"security\":\"600000\",\"price\":\"1\",\"qty\":-100}", "\"qty\"");
    refused(ORD "\"security\":\"600000\",\"price\":\"1\"}", "\"qty\" is missing");
    refused(ORD "\"security\":\"600000\",\"qty\":1}", "\"price\" is missing");
    refused("{\"type\":\"order\",\"account\":1001,\"order_id\":7,\"side\":\"b\","
            "\"security\":\"600000\",\"price\":\"1\",\"qty\":1}",
            "\"side\"");
    refused("{\"type\":\"order\",\"account\":1001,\"order_id\":7,\"side\":\"BUY\","
            "\"security\":\"600000\",\"price\":\"1\",\"qty\":1}",
            "\"side\"");
    refused(ORD "\"security\":\"600000\",\"price\":\"1\",\"qty\":1,\"trace_id\":"
                "\"4BF92F3577B34DA6A3CE929D0E0E4736\"}",
            "\"trace_id\"");
    refused(ORD "\"security\":\"600000\",\"price\":\"1\",\"qty\":1,\"trace_id\":"
                "\"4bf92f3577b34da6a3ce929d0e0e47\"}",
            "\"trace_id\"");
    refused(ORD "\"security\":\"600000\",\"price\":\"1\",\"qty\":1,\"trace_id\":"
                "\"00000000000000000000000000000000\"}",
            "\"trace_id\"");
    refused("{\"type\":\"fill\",\"account\":1001,\"order_id\":7,\"exec_id\":0,"
            "\"price\":\"1\",\"qty\":1}",
            "\"exec_id\"");
    /* dates */
    refused("{\"type\":\"eod\",\"date\":\"2026-02-30\"}", "\"date\"");
    refused("{\"type\":\"eod\",\"date\":\"2026/11/30\"}", "\"date\"");
    refused("{\"type\":\"eod\",\"date\":\"20261130\"}", "\"date\"");
    refused("{\"type\":\"eod\",\"date\":20261301}", "\"date\"");
    refused("{\"type\":\"eod\",\"date\":20261130.0}", "\"date\"");
    refused("{\"type\":\"eod\"}", "\"date\" is missing");
    refused("{\"type\":\"eod\",\"date\":20261130,\"account\":1}", "\"account\" not allowed");
    /* a NUL inside a string is refused by the parser */
    refused("{\"type\":\"eod\",\"date\":\"2026-11\\u00000\"}", "malformed");
    /* oversized */
    char big[5000];
    memset(big, ' ', sizeof big);
    memcpy(big, "{\"type\":\"eod\",\"date\":20261130}", 30);
    big[sizeof big - 1] = '\0';
    refused(big, "larger");
    /* an unknown key that is not printable is not echoed */
    refused(DEP "\"amount\":\"1\",\"\\u00e9\\n\":1}", "unknown field \"?\"");
}

static void
test_result(void **state)
{
    (void) state;
    clr_result res = {.seq = 42,
                      .account = 1001,
                      .order_id = 7,
                      .type = CLR_EV_ORDER,
                      .reject = CLR_OK,
                      .cash_available = 12345,
                      .cash_frozen = 0,
                      .open_qty = 100};
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(clr_json_result(&res, &out, &len, NULL), 0);
    const char *want = "{\"seq\":42,\"account\":1001,\"order_id\":7,\"type\":\"order\","
                       "\"status\":\"OK\",\"cash_available\":\"123.45\",\"cash_frozen\":\"0.00\","
                       "\"open_qty\":100}";
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    dbao_free(out);
    res.reject = CLR_REJ_CASH;
    res.order_id = UINT64_MAX;
    res.cash_available = -5;
    assert_int_equal(clr_json_result(&res, &out, &len, NULL), 0);
    want = "{\"seq\":42,\"account\":1001,\"order_id\":\"18446744073709551615\",\"type\":\"order\","
           "\"status\":\"REJECTED\",\"reject\":\"CASH\",\"cash_available\":\"-0.05\","
           "\"cash_frozen\":\"0.00\",\"open_qty\":100}";
    assert_string_equal(out, want);
    dbao_free(out);
    /* Allocation failure is reported, not a crash. */
    dbao_alloc_fail_after(0, true);
    out = NULL;
    int rc = clr_json_result(&res, &out, &len, NULL);
    dbao_alloc_fail_after(-1, false);
    assert_int_equal(rc, DBAO_ENOMEM);
    assert_null(out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money_parse), cmocka_unit_test(test_money_format),
        cmocka_unit_test(test_every_type),  cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
