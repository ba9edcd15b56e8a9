/* test_wire.c: the clearing binary protocol (wire.c, docs/clearing-protocol.md).
 *
 *   - round trips of every event type, and of results and errors;
 *   - a known-answer frame written byte by byte from the protocol document;
 *   - partial frames: every prefix of a valid frame asks for more bytes (0), and a stream of
 *     two frames decodes as two;
 *   - every refusal: frame length out of range, unknown or answer type, version 0 / newer,
 *     wrong body length, side, unused or reserved fields non-zero, negative amounts, seq / ts
 *     sent, account / security / order id / exec id / date out of range;
 *   - error frames: text sanitised and bounded so that every frame fits CLR_WIRE_FRAME_MAX.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dengbao/clearing.h"
#include "internal.h"
#include "journal_internal.h"
#include "testutil.h"

/* One valid event of every type. */
static size_t
sample_events(clr_event *ev)
{
    size_t n = 0;
    memset(ev, 0, 9 * sizeof *ev);
    ev[n].type = CLR_EV_OPEN, ev[n].member = 7, ev[n].account = 1001, ev[n].amount = 500000, n++;
    ev[n].type = CLR_EV_DEPOSIT, ev[n].account = 1001, ev[n].amount = 123456, n++;
    ev[n].type = CLR_EV_WITHDRAW, ev[n].account = 1001, ev[n].amount = 1, n++;
    ev[n].type = CLR_EV_XFER_IN, ev[n].account = 1001, ev[n].security = 600000, ev[n].qty = 1000;
    n++;
    ev[n].type = CLR_EV_XFER_OUT, ev[n].account = CLR_ACCOUNT_MAX, ev[n].security = 1;
    ev[n].qty = 5, n++;
    ev[n].type = CLR_EV_ORDER, ev[n].account = 1001, ev[n].order_id = UINT64_MAX;
    ev[n].side = CLR_SIDE_SELL, ev[n].security = 300750, ev[n].price = 1025, ev[n].qty = 100;
    memset(ev[n].trace_id, 0xab, 16), n++;
    ev[n].type = CLR_EV_CANCEL, ev[n].account = 1001, ev[n].order_id = 7, n++;
    ev[n].type = CLR_EV_FILL, ev[n].account = 1001, ev[n].order_id = 7, ev[n].exec_id = 99;
    ev[n].price = 1020, ev[n].qty = 100, n++;
    ev[n].type = CLR_EV_EOD, ev[n].qty = 20261130, n++;
    return n;
}

static void
test_roundtrip_every_type(void **state)
{
    (void) state;
    clr_event ev[9];
    size_t n = sample_events(ev);
    assert_int_equal(n, 9);
    for (size_t i = 0; i < n; i++) {
        uint8_t buf[CLR_WIRE_FRAME_MAX], buf2[CLR_WIRE_FRAME_MAX];
        size_t len = clr_wire_encode_event(buf, 1000 + i, &ev[i]);
        assert_int_equal(len, 112);
        clr_event got;
        uint64_t id = 0;
        dbao_err err;
        int rc = clr_wire_decode(buf, len, &got, &id, &err);
        if (rc != (int) len) {
            print_error("type %u: %s\n", ev[i].type, err.msg);
        }
        assert_int_equal(rc, (int) len);
        assert_int_equal(id, 1000 + i);
        assert_memory_equal(&got.type, &ev[i].type, 1);
        assert_true(got.account == ev[i].account && got.order_id == ev[i].order_id &&
                    got.exec_id == ev[i].exec_id && got.security == ev[i].security &&
                    got.price == ev[i].price && got.qty == ev[i].qty &&
                    got.amount == ev[i].amount && got.member == ev[i].member &&
                    got.side == ev[i].side);
        assert_memory_equal(got.trace_id, ev[i].trace_id, 16);
        assert_int_equal(clr_wire_encode_event(buf2, id, &got), len);
        assert_memory_equal(buf, buf2, len);
    }
}

/* The deposit frame of docs/clearing-protocol.md, byte by byte. */
static void
test_known_answer(void **state)
{
    (void) state;
    uint8_t want[112];
    size_t n = tu_hex_into(want, sizeof want,
                           "6c000000 0100 0100 2a00000000000000"  /* header */
                           "0000000000000000 0000000000000000"    /* seq, ts */
                           "02 00 0000 00000000 e903000000000000" /* type..account */
                           "0000000000000000 0000000000000000"    /* order, exec */
                           "00000000 00000000 0000000000000000"   /* security, price */
                           "0000000000000000 40e2010000000000"    /* qty, amount */
                           "4bf92f3577b34da6a3ce929d0e0e4736");   /* trace id */
    assert_int_equal(n, 112);
    clr_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = CLR_EV_DEPOSIT;
    ev.account = 1001;
    ev.amount = 123456;
    tu_hex_into(ev.trace_id, 16, "4bf92f3577b34da6a3ce929d0e0e4736");
    uint8_t buf[CLR_WIRE_FRAME_MAX];
    assert_int_equal(clr_wire_encode_event(buf, 42, &ev), 112);
    assert_memory_equal(buf, want, 112);
}

static void
test_partial_frames(void **state)
{
    (void) state;
    clr_event ev[9], got;
    sample_events(ev);
    uint8_t buf[2 * CLR_WIRE_FRAME_MAX];
    size_t a = clr_wire_encode_event(buf, 1, &ev[5]);
    size_t b = clr_wire_encode_event(buf + a, 2, &ev[7]);
    uint64_t id;
    for (size_t k = 0; k < a; k++) {
        assert_int_equal(clr_wire_decode(buf, k, &got, &id, NULL), 0);
    }
    /* Two frames back to back: the first decode consumes exactly one. */
    assert_int_equal(clr_wire_decode(buf, a + b, &got, &id, NULL), (int) a);
    assert_int_equal(id, 1);
    for (size_t k = 0; k < b; k++) {
        assert_int_equal(clr_wire_decode(buf + a, k, &got, &id, NULL), 0);
    }
    assert_int_equal(clr_wire_decode(buf + a, b, &got, &id, NULL), (int) b);
    assert_int_equal(id, 2);
    assert_int_equal(got.exec_id, 99);

    clr_result res;
    memset(&res, 0, sizeof res); /* padding too: the whole struct is compared below */
    res = (clr_result){.seq = 5,
                       .account = 1001,
                       .order_id = 7,
                       .type = CLR_EV_ORDER,
                       .reject = CLR_REJ_CASH,
                       .cash_available = -3,
                       .cash_frozen = 12,
                       .open_qty = 100};
    size_t r = clr_wire_encode_result(buf, 77, &res);
    assert_int_equal(r, 72);
    clr_result rgot;
    memset(&rgot, 0, sizeof rgot);
    uint16_t code = 9;
    for (size_t k = 0; k < r; k++) {
        assert_int_equal(clr_wire_decode_result(buf, k, &rgot, &id, &code, NULL), 0);
    }
    assert_int_equal(clr_wire_decode_result(buf, r, &rgot, &id, &code, NULL), (int) r);
    assert_int_equal(code, 0);
    assert_int_equal(id, 77);
    assert_true(rgot.seq == res.seq && rgot.account == res.account &&
                rgot.order_id == res.order_id && rgot.type == res.type &&
                rgot.reject == res.reject && rgot.cash_available == res.cash_available &&
                rgot.cash_frozen == res.cash_frozen && rgot.open_qty == res.open_qty);
}

/* expect_refused: decode must fail with `code` and a message containing `needle`. */
static void
expect_refused(const uint8_t *buf, size_t len, int code, const char *needle)
{
    clr_event got;
    uint64_t id;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = clr_wire_decode(buf, len, &got, &id, &err);
    if (rc != code || strstr(err.msg, needle) == NULL) {
        print_error("want %d \"%s\", got %d \"%s\"\n", code, needle, rc, err.msg);
    }
    assert_int_equal(rc, code);
    assert_non_null(strstr(err.msg, needle));
}

static void
mutate_event(size_t idx, void (*fn)(clr_event *), const char *needle)
{
    clr_event ev[9];
    uint8_t buf[CLR_WIRE_FRAME_MAX];
    sample_events(ev);
    fn(&ev[idx]);
    size_t len = clr_wire_encode_event(buf, 1, &ev[idx]);
    expect_refused(buf, len, DBAO_EFORMAT, needle);
}

static void
m_side(clr_event *e)
{
    e->side = 'X';
}
static void
m_side0(clr_event *e)
{
    e->side = 0;
}
static void
m_side_dep(clr_event *e)
{
    e->side = 'B';
}
static void
m_exec_dep(clr_event *e)
{
    e->exec_id = 1;
}
static void
m_res(clr_event *e)
{
    e->reserved = 1;
}
static void
m_res2(clr_event *e)
{
    e->reserved2 = 1;
}
static void
m_negqty(clr_event *e)
{
    e->qty = -1;
}
static void
m_negprice(clr_event *e)
{
    e->price = -100;
}
static void
m_negamt(clr_event *e)
{
    e->amount = -1;
}
static void
m_bigamt(clr_event *e)
{
    e->amount = CLR_AMOUNT_MAX + 1;
}
static void
m_seq(clr_event *e)
{
    e->seq = 1;
}
static void
m_ts(clr_event *e)
{
    e->ts_ns = 5;
}
static void
m_acct0(clr_event *e)
{
    e->account = 0;
}
static void
m_acctbig(clr_event *e)
{
    e->account = CLR_ACCOUNT_MAX + 1;
}
static void
m_sec(clr_event *e)
{
    e->security = 1000000;
}
static void
m_sec0(clr_event *e)
{
    e->security = 0;
}
static void
m_order0(clr_event *e)
{
    e->order_id = 0;
}
static void
m_exec0(clr_event *e)
{
    e->exec_id = 0;
}
static void
m_member0(clr_event *e)
{
    e->member = 0;
}
static void
m_date(clr_event *e)
{
    e->qty = 20260230;
}
static void
m_date2(clr_event *e)
{
    e->qty = 20261301;
}
static void
m_eod_acct(clr_event *e)
{
    e->account = 5;
}
static void
m_type(clr_event *e)
{
    e->type = 10;
}

static void
test_refuse_fields(void **state)
{
    (void) state;
    mutate_event(5, m_side, "\"side\"");
    mutate_event(5, m_side0, "\"side\"");
    mutate_event(1, m_side_dep, "\"side\"");
    mutate_event(1, m_exec_dep, "\"exec_id\"");
    mutate_event(1, m_res, "reserved");
    mutate_event(5, m_res2, "reserved");
    mutate_event(5, m_negqty, "\"qty\"");
    mutate_event(7, m_negprice, "\"price\"");
    mutate_event(1, m_negamt, "\"amount\"");
    mutate_event(1, m_bigamt, "\"amount\"");
    mutate_event(1, m_seq, "\"seq\"");
    mutate_event(1, m_ts, "\"ts_ns\"");
    mutate_event(1, m_acct0, "\"account\"");
    mutate_event(1, m_acctbig, "\"account\"");
    mutate_event(3, m_sec, "\"security\"");
    mutate_event(5, m_sec0, "\"security\"");
    mutate_event(6, m_order0, "\"order_id\"");
    mutate_event(7, m_exec0, "\"exec_id\"");
    mutate_event(0, m_member0, "\"member\"");
    mutate_event(8, m_date, "\"date\"");
    mutate_event(8, m_date2, "\"date\"");
    mutate_event(8, m_eod_acct, "\"account\"");
    mutate_event(1, m_type, "unknown type");
}

static void
test_refuse_frames(void **state)
{
    (void) state;
    clr_event ev[9];
    uint8_t good[CLR_WIRE_FRAME_MAX], buf[CLR_WIRE_FRAME_MAX + 16];
    sample_events(ev);
    size_t len = clr_wire_encode_event(good, 1, &ev[1]);

    /* Length field: below 12 and above the maximum are refused as soon as 4 bytes arrive. */
    static const uint32_t bad_len[] = {0, 7, 8, 11, CLR_WIRE_FRAME_MAX + 1, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad_len / sizeof bad_len[0]; i++) {
        memcpy(buf, good, len);
        clr__put_u32(buf, bad_len[i]);
        expect_refused(buf, 4, DBAO_EFORMAT, "length");
    }
    /* A length that is in range but is not an event body's (early and late). */
    memcpy(buf, good, len);
    clr__put_u32(buf, 12);
    expect_refused(buf, 16, DBAO_EFORMAT, "event body");
    memcpy(buf, good, len);
    buf[len] = 0;
    clr__put_u32(buf, (uint32_t) len - 4 + 1);
    expect_refused(buf, len + 1, DBAO_EFORMAT, "event body");
    memcpy(buf, good, len);
    clr__put_u32(buf, (uint32_t) len - 4 - 1);
    expect_refused(buf, len - 1, DBAO_EFORMAT, "event body");
    /* Message types: unknown, and answers sent as requests. */
    static const uint16_t bad_type[] = {0, 4, 0xffff};
    for (size_t i = 0; i < 3; i++) {
        memcpy(buf, good, len);
        clr__put_u16(buf + 4, bad_type[i]);
        expect_refused(buf, 8, DBAO_EFORMAT, "message type");
    }
    memcpy(buf, good, len);
    clr__put_u16(buf + 4, CLR_MSG_RESULT);
    expect_refused(buf, 8, DBAO_EFORMAT, "not a request"); /* refused before the body */
    /* Versions: 0 is malformed, newer is unsupported. */
    memcpy(buf, good, len);
    clr__put_u16(buf + 6, 0);
    expect_refused(buf, 8, DBAO_EFORMAT, "version");
    memcpy(buf, good, len);
    clr__put_u16(buf + 6, 2);
    expect_refused(buf, 8, DBAO_ENOTSUP, "version");
}

static void
test_result_and_error(void **state)
{
    (void) state;
    uint8_t buf[CLR_WIRE_FRAME_MAX];
    clr_result res;
    uint64_t id;
    uint16_t code;
    dbao_err err;
    size_t n = clr_wire_encode_error(buf, 9, 1001, "bad frame:\x01 length");
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, &err), (int) n);
    assert_int_equal(code, 1001);
    assert_int_equal(id, 9);
    assert_string_equal(err.msg, "clearing server: bad frame:? length");
    /* A long text is cut so that the frame still fits. */
    char longmsg[600];
    memset(longmsg, 'x', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    n = clr_wire_encode_error(buf, 9, 22, longmsg);
    assert_int_equal(n, CLR_WIRE_FRAME_MAX);
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, &err), (int) n);
    assert_int_equal(code, 22);
    /* Refusals on the answer side. */
    n = clr_wire_encode_error(buf, 9, 0, "zero");
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, NULL), DBAO_EFORMAT);
    n = clr_wire_encode_error(buf, 9, 5, "abc");
    clr__put_u16(buf + 18, 4);
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, NULL), DBAO_EFORMAT);
    n = clr_wire_encode_error(buf, 9, 5, "abc");
    buf[20] = 0;
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, NULL), DBAO_EFORMAT);
    clr_result r = {.seq = 1, .type = CLR_EV_DEPOSIT};
    n = clr_wire_encode_result(buf, 1, &r);
    buf[16 + 26] = 1;
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, NULL), DBAO_EFORMAT);
    n = clr_wire_encode_result(buf, 1, &r);
    buf[16 + 24] = 0;
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, NULL), DBAO_EFORMAT);
    n = clr_wire_encode_result(buf, 1, &r);
    buf[16 + 25] = CLR_REJ_MEMBER + 1;
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, NULL), DBAO_EFORMAT);
    /* An event frame is not an answer. */
    clr_event ev[9];
    sample_events(ev);
    n = clr_wire_encode_event(buf, 1, &ev[0]);
    assert_int_equal(clr_wire_decode_result(buf, n, &res, &id, &code, NULL), DBAO_EFORMAT);
}

static void
test_dates(void **state)
{
    (void) state;
    assert_true(clr__date_valid(20240229));
    assert_true(clr__date_valid(20000229));
    assert_false(clr__date_valid(19000229));
    assert_false(clr__date_valid(20230229));
    assert_false(clr__date_valid(20261131));
    assert_true(clr__date_valid(20261231));
    assert_false(clr__date_valid(20261200));
    assert_false(clr__date_valid(19691231));
    assert_false(clr__date_valid(100000101));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_known_answer),
        cmocka_unit_test(test_partial_frames),
        cmocka_unit_test(test_refuse_fields),
        cmocka_unit_test(test_refuse_frames),
        cmocka_unit_test(test_result_and_error),
        cmocka_unit_test(test_dates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
