/* test_settle.c: the settlement file: write and check round trip, shard merge, exact bytes of a
 * small file, tampering refused (digest), a re-signed but unbalanced file refused, malformed
 * files refused.
 *
 * Files live in a fresh mkdtemp() folder under $TMPDIR (or /tmp), removed at the end.
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

#include "dengbao/clearing.h"
#include "dengbao/gm.h"

static char dir[256];
static char path[300];

static int
setup(void **state)
{
    (void) state;
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/dbao-settle-XXXXXX", t && *t ? t : "/tmp");
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    snprintf(path, sizeof path, "%s/settle.csv", dir);
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    unlink(path);
    rmdir(dir);
    return 0;
}

static char *
slurp(size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    *len = fread(buf, 1, sizeof buf - 1, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

static void
spit(const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* Re-signs the file's content (everything but the last line) with a correct sm3 line. */
static void
resign(char *data, size_t *len)
{
    size_t body = *len - 69;
    uint8_t d[32];
    gm_sm3(d, data, body);
    char hex[65];
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
    snprintf(data + body, 70, "sm3 %s\n", hex);
    *len = body + 69;
}

static void
totals_eq(const clr_settle_totals *a, const clr_settle_totals *b)
{
    assert_int_equal(a->trade_date, b->trade_date);
    assert_int_equal(a->rows, b->rows);
    assert_int_equal(a->buy_amount, b->buy_amount);
    assert_int_equal(a->sell_amount, b->sell_amount);
    assert_int_equal(a->fees, b->fees);
    assert_int_equal(a->net_cash, b->net_cash);
    assert_int_equal(a->buy_qty, b->buy_qty);
    assert_int_equal(a->sell_qty, b->sell_qty);
}

static clr_net_row
row(uint32_t m, uint32_t s, int64_t bq, int64_t sq, int64_t ba, int64_t sa, int64_t fees)
{
    return (clr_net_row){.member = m,
                         .security = s,
                         .buy_qty = bq,
                         .sell_qty = sq,
                         .buy_amount = ba,
                         .sell_amount = sa,
                         .fees = fees,
                         .net_qty = bq - sq,
                         .net_cash = sa - ba - fees};
}

static void
test_exact_bytes(void **state)
{
    (void) state;
    clr_net_row rows[] = {row(7, 600000, 300, 0, 299000, 0, 503),
                          row(2, 1, 0, 100, 0, 100100, 551)};
    clr_settle_totals t;
    assert_int_equal(clr_settlement_write(path, 20260105, rows, 2, &t, NULL), 0);
    size_t len;
    char *s = slurp(&len);
    const char *want_body =
        "DBCLSETTLE 1 20260105\n"
        "member,security,venue,buy_qty,sell_qty,buy_amount_fen,sell_amount_fen,fees_fen,net_qty,"
        "net_cash_fen,net_cash_yuan\n"
        "2,000001,SZ,0,100,0,100100,551,-100,99549,995.49\n"
        "7,600000,SH,300,0,299000,0,503,300,-299503,-2995.03\n"
        "total,2,300,100,299000,100100,1054,200,-199954\n";
    size_t wl = strlen(want_body);
    assert_true(len == wl + 69);
    assert_memory_equal(s, want_body, wl);
    assert_memory_equal(s + wl, "sm3 ", 4);
    assert_int_equal(t.rows, 2);
    assert_int_equal(t.fees, 1054);
    assert_int_equal(t.net_cash + t.fees, t.sell_amount - t.buy_amount);

    clr_settle_totals c;
    assert_int_equal(clr_settlement_check(path, &c, NULL), 0);
    totals_eq(&c, &t);
    assert_int_equal(c.trade_date, 20260105);
}

static void
test_merge_shards(void **state)
{
    (void) state;
    /* Shard 0 and shard 1 both traded member 3 in 600519: one merged row. */
    clr_net_row rows[] = {
        row(3, 600519, 100, 0, 180000, 0, 500),
        row(1, 430047, 0, 0, 0, 0, 0),
        row(3, 600519, 0, 200, 0, 370000, 1200),
        row(3, 2, 100, 0, 1000, 0, 500),
    };
    clr_settle_totals t, c;
    assert_int_equal(clr_settlement_write(path, 20260106, rows, 4, &t, NULL), 0);
    assert_int_equal(t.rows, 3);
    assert_int_equal(t.buy_amount, 181000);
    assert_int_equal(t.sell_amount, 370000);
    assert_int_equal(t.fees, 2200);
    assert_int_equal(t.net_cash, 370000 - 181000 - 2200);
    assert_int_equal(clr_settlement_check(path, &c, NULL), 0);
    totals_eq(&c, &t);
    /* No path: the same totals, nothing written (reconcile recomputes this way). */
    clr_settle_totals m;
    assert_int_equal(clr_settlement_write(NULL, 20260106, rows, 4, &m, NULL), 0);
    totals_eq(&m, &t);
    size_t len;
    char *s = slurp(&len);
    assert_non_null(strstr(s, "\n3,600519,SH,100,200,180000,370000,1700,-100,188300,1883.00\n"));
    /* Deterministic: the same rows in another order give the same bytes. */
    char first[4096];
    memcpy(first, s, len);
    clr_net_row rev[] = {rows[3], rows[2], rows[1], rows[0]};
    assert_int_equal(clr_settlement_write(path, 20260106, rev, 4, NULL, NULL), 0);
    size_t len2;
    char *s2 = slurp(&len2);
    assert_int_equal(len, len2);
    assert_memory_equal(first, s2, len);
    /* Empty day. */
    assert_int_equal(clr_settlement_write(path, 20260107, NULL, 0, &t, NULL), 0);
    assert_int_equal(clr_settlement_check(path, &c, NULL), 0);
    assert_int_equal(c.rows, 0);
    /* Invalid input rows. */
    clr_net_row bad = row(0, 1, 1, 0, 1, 0, 0);
    assert_int_equal(clr_settlement_write(path, 20260107, &bad, 1, NULL, NULL), DBAO_EINVAL);
    bad = row(1, 1, 1, 0, -1, 0, 0);
    assert_int_equal(clr_settlement_write(path, 20260107, &bad, 1, NULL, NULL), DBAO_EINVAL);
}

static void
test_tamper(void **state)
{
    (void) state;
    clr_net_row rows[] = {row(7, 600000, 300, 0, 299000, 0, 503),
                          row(2, 1, 0, 100, 0, 100100, 551)};
    assert_int_equal(clr_settlement_write(path, 20260105, rows, 2, NULL, NULL), 0);
    size_t len;
    char *s = slurp(&len);
    static char orig[4096];
    size_t olen = len;
    memcpy(orig, s, len);
    dbao_err err;

    /* One digit changed: the digest no longer matches. */
    char *p = strstr(s, "299000");
    p[0] = '3';
    spit(s, len);
    assert_int_equal(clr_settlement_check(path, NULL, &err), DBAO_EVERIFY);

    /* The same change, re-signed: the row no longer balances (net_cash). */
    resign(s, &len);
    spit(s, len);
    assert_int_equal(clr_settlement_check(path, NULL, &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "line 4"));

    /* A consistent row change with stale totals: the total line is refused. */
    static char buf[4096];
    const char *cases[][2] = {
        {"7,600000,SH,300,0,299000,0,503,300,-299503,-2995.03",
         "7,600000,SH,300,0,299001,0,503,300,-299504,-2995.04"}, /* totals stale */
        {"-2995.03", "-2995.30"},                                /* yuan disagrees */
        {"2,000001,SZ", "2,000001,SH"},                          /* wrong venue */
        {"2,000001", "2,1"},                                     /* not 6 digits */
        {",503,", ",0503,"},                                     /* leading zero */
        {"DBCLSETTLE 1", "DBCLSETTLE 2"},                        /* version */
        {"total,2,", "total,3,"},                                /* row count */
        {"net_cash_yuan", "net_cash_yuaN"},                      /* header */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(buf, orig, olen);
        buf[olen] = 0;
        char *at = strstr(buf, cases[i][0]);
        assert_non_null(at);
        size_t a = strlen(cases[i][0]), b = strlen(cases[i][1]);
        memmove(at + b, at + a, olen - (size_t) (at - buf) - a + 1);
        memcpy(at, cases[i][1], b);
        size_t l = olen + b - a;
        resign(buf, &l);
        spit(buf, l);
        assert_int_equal(clr_settlement_check(path, NULL, &err), DBAO_EFORMAT);
    }
    /* Rows swapped (unsorted), re-signed. */
    memcpy(buf, orig, olen);
    char *r1 = strstr(buf, "2,000001");
    char *r2 = strstr(buf, "7,600000");
    char l1[128], l2[128];
    size_t n1 = (size_t) (strchr(r1, '\n') - r1 + 1), n2 = (size_t) (strchr(r2, '\n') - r2 + 1);
    memcpy(l1, r1, n1);
    memcpy(l2, r2, n2);
    memcpy(r1, l2, n2);
    memcpy(r1 + n2, l1, n1);
    size_t l = olen;
    resign(buf, &l);
    spit(buf, l);
    assert_int_equal(clr_settlement_check(path, NULL, &err), DBAO_EFORMAT);
    /* Truncated, empty, no digest. */
    spit(orig, olen - 1);
    assert_int_not_equal(clr_settlement_check(path, NULL, &err), 0);
    spit(orig, 0);
    assert_int_equal(clr_settlement_check(path, NULL, &err), DBAO_EFORMAT);
    spit(orig, olen - 69);
    assert_int_equal(clr_settlement_check(path, NULL, &err), DBAO_EFORMAT);
    /* The original passes. */
    spit(orig, olen);
    assert_int_equal(clr_settlement_check(path, NULL, NULL), 0);
    assert_int_equal(clr_settlement_check("/nonexistent/x", NULL, NULL), -ENOENT);
}

/* Engine -> settlement -> check: the rows of two shards' engines. */
static void
test_from_engines(void **state)
{
    (void) state;
    static const clr_instrument in[] = {{.security = 600000, .tick = 1, .lot = 100}};
    clr_refdata ref = {.instruments = in,
                       .num_instruments = 1,
                       .fees = {.commission_ppm = 250, .commission_min = 500, .transfer_ppm = 10}};
    clr_net_row all[4];
    size_t nall = 0;
    for (unsigned sh = 0; sh < 2; sh++) {
        clr_engine *e;
        assert_int_equal(clr_engine_new(&e, &ref, sh, 2, NULL), 0);
        uint64_t acct = 10 + sh;
        clr_event evs[] = {
            {.type = CLR_EV_OPEN, .account = acct, .member = 4},
            {.type = CLR_EV_DEPOSIT, .account = acct, .amount = 10000000},
            {.type = CLR_EV_ORDER,
             .account = acct,
             .order_id = 1,
             .side = 'B',
             .security = 600000,
             .price = 1000,
             .qty = 1000},
            {.type = CLR_EV_FILL,
             .account = acct,
             .order_id = 1,
             .exec_id = 1,
             .price = 1000,
             .qty = 1000},
            {.type = CLR_EV_EOD, .qty = 20260105},
        };
        for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
            clr_result r;
            evs[i].seq = i + 1;
            assert_int_equal(clr_engine_apply(e, &evs[i], &r, NULL, NULL), 0);
            assert_int_equal(r.reject, CLR_OK);
        }
        uint32_t d;
        clr_net_row *rows;
        size_t n;
        assert_int_equal(clr_engine_settlement(e, &d, &rows, &n, NULL), 0);
        assert_int_equal(n, 1);
        all[nall++] = rows[0];
        free(rows);
        clr_engine_free(e);
    }
    clr_settle_totals t;
    assert_int_equal(clr_settlement_write(path, 20260105, all, nall, &t, NULL), 0);
    assert_int_equal(t.rows, 1);
    assert_int_equal(t.buy_qty, 2000);
    assert_int_equal(t.buy_amount, 2000000);
    assert_int_equal(t.fees, 2 * (500 + 10)); /* commission 250 ppm of 1e6 = 250 -> min 500 */
    assert_int_equal(clr_settlement_check(path, NULL, NULL), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exact_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_shards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_engines, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
