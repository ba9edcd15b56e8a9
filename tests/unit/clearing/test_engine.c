/* test_engine.c: the clearing engine's rules, one by one, on hand-built events.
 *
 * Every reject code is provoked at least once; fees and rounding (half up) are checked against
 * values computed by hand in the comments; a full buy -> T+1 -> sell day is followed fen by
 * fen, movements included. Reference data: fees 0.025% commission (min 5 yuan), 0.05% stamp
 * duty on sells, 0.001% transfer fee.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dengbao/clearing.h"
#include "dengbao/gm.h"
#include "internal.h"

static const clr_instrument insts[] = {
    {.security = 1, .tick = 1, .lot = 100},      /* 000001 SZ */
    {.security = 100001, .tick = 1, .lot = 10},  /* not routed */
    {.security = 300750, .tick = 5, .lot = 100}, /* SZ ChiNext, tick 5 fen */
    {.security = 430047, .tick = 1, .lot = 100}, /* BJ */
    {.security = 600000, .tick = 1, .lot = 100, .price_lo = 900, .price_hi = 1100}, /* SH */
};

static const clr_refdata ref = {
    .instruments = insts,
    .num_instruments = sizeof insts / sizeof insts[0],
    .fees = {.commission_ppm = 250, .commission_min = 500, .stamp_ppm = 500, .transfer_ppm = 10},
};

#define MAXMOV 16
typedef struct harness {
    clr_engine *e;
    clr_result res;
    clr_movement mov[MAXMOV];
    int nmov;
} harness;

static void
on_move(void *arg, const clr_movement *m)
{
    harness *h = arg;
    assert_true(h->nmov < MAXMOV);
    h->mov[h->nmov++] = *m;
}

/* Applies an event with the next seq; returns the reject code. */
static int
ap(harness *h, clr_event ev)
{
    ev.seq = clr_engine_seq(h->e) + 1;
    h->nmov = 0;
    assert_int_equal(clr_engine_apply(h->e, &ev, &h->res, on_move, h), 0);
    clr_totals t;
    clr_engine_totals(h->e, &t);
    assert_int_equal(t.cash_total, t.deposits - t.withdrawals);
    assert_int_equal(t.shares_imbalance, 0);
    return h->res.reject;
}

static clr_event
ev_open(uint64_t acct, uint32_t member, int64_t credit)
{
    return (clr_event){.type = CLR_EV_OPEN, .account = acct, .member = member, .amount = credit};
}
static clr_event
ev_cash(uint8_t type, uint64_t acct, int64_t amount)
{
    return (clr_event){.type = type, .account = acct, .amount = amount};
}
static clr_event
ev_xfer(uint8_t type, uint64_t acct, uint32_t sec, int64_t qty)
{
    return (clr_event){.type = type, .account = acct, .security = sec, .qty = qty};
}
static clr_event
ev_order(uint64_t acct, uint64_t oid, uint8_t side, uint32_t sec, int64_t px, int64_t qty)
{
    return (clr_event){.type = CLR_EV_ORDER,
                       .account = acct,
                       .order_id = oid,
                       .side = side,
                       .security = sec,
                       .price = px,
                       .qty = qty};
}
static clr_event
ev_cancel(uint64_t acct, uint64_t oid)
{
    return (clr_event){.type = CLR_EV_CANCEL, .account = acct, .order_id = oid};
}
static clr_event
ev_fill(uint64_t acct, uint64_t oid, uint64_t exec, int64_t px, int64_t qty)
{
    return (clr_event){.type = CLR_EV_FILL,
                       .account = acct,
                       .order_id = oid,
                       .exec_id = exec,
                       .price = px,
                       .qty = qty};
}
static clr_event
ev_eod(int64_t date)
{
    return (clr_event){.type = CLR_EV_EOD, .qty = date};
}

static void
setup_h(harness *h, unsigned shard, unsigned nshards)
{
    memset(h, 0, sizeof *h);
    assert_int_equal(clr_engine_new(&h->e, &ref, shard, nshards, NULL), 0);
}

static void
check_move(const clr_movement *m, uint8_t kind, int64_t amount, int64_t pre)
{
    assert_int_equal(m->kind, kind);
    assert_int_equal(m->amount, amount);
    assert_int_equal(m->pre_balance, pre);
    assert_int_equal(m->post_balance, pre + amount);
}

static void
test_fee_rounding(void **state)
{
    (void) state;
    assert_int_equal(clr__fee_ppm(303000, 500), 152); /* 151.5 -> 152 (half up) */
    assert_int_equal(clr__fee_ppm(1, 500000), 1);     /* 0.5 -> 1 */
    assert_int_equal(clr__fee_ppm(2999, 500), 1);     /* 1.4995 -> 1 */
    assert_int_equal(clr__fee_ppm(0, 250), 0);
    assert_int_equal(clr__fee_ppm(99000, 250), 25); /* 24.75 -> 25 */
    assert_int_equal(clr__fee_ppm(-1, 250), -1);
    /* fee_max of a 3,000 yuan buy: commission max(500, 75) + transfer 3 = 503 fen. */
    assert_int_equal(clr__fee_max(&ref.fees, 300000), 503);
    /* Above the minimum: 1,000,000 yuan: 25,000 + 1,000 fen. */
    assert_int_equal(clr__fee_max(&ref.fees, 100000000), 26000);
}

/* The full day of the docs' worked example. */
static void
test_buy_t1_sell(void **state)
{
    (void) state;
    harness h;
    setup_h(&h, 0, 1);
    clr_account_view av;
    clr_position_view pv;

    assert_int_equal(ap(&h, ev_open(1001, 7, 0)), CLR_OK);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 1001, 1000000)), CLR_OK);
    assert_int_equal(h.nmov, 1);
    check_move(&h.mov[0], CLR_MOVE_DEPOSIT, 1000000, 0);

    /* Buy 300 @ 10.00: amount 300,000, fee_max 503, freeze 300,503. */
    assert_int_equal(ap(&h, ev_order(1001, 1, 'B', 600000, 1000, 300)), CLR_OK);
    assert_int_equal(h.nmov, 0); /* freezing is not a movement */
    assert_int_equal(h.res.cash_available, 699497);
    assert_int_equal(h.res.cash_frozen, 300503);
    assert_int_equal(h.res.open_qty, 300);

    /* Fill 100 @ 9.90: amount 99,000; commission max(500, 25) + transfer 1 = 501. The freeze
     * released is 100,000 + 501; the price improvement 1,000 returns to available. */
    assert_int_equal(ap(&h, ev_fill(1001, 1, 501, 990, 100)), CLR_OK);
    assert_int_equal(h.nmov, 2);
    check_move(&h.mov[0], CLR_MOVE_BUY, -99000, 1000000);
    check_move(&h.mov[1], CLR_MOVE_FEE, -501, 901000);
    assert_int_equal(h.mov[0].exec_id, 501);
    assert_int_equal(h.mov[0].order_id, 1);
    assert_int_equal(h.res.cash_available, 700497);
    assert_int_equal(h.res.cash_frozen, 200002);
    assert_int_equal(h.res.open_qty, 200);

    /* Fill 200 @ 10.00: fees would be 502 but only 2 fen of fee freeze remain: capped. */
    assert_int_equal(ap(&h, ev_fill(1001, 1, 502, 1000, 200)), CLR_OK);
    assert_int_equal(h.nmov, 2);
    check_move(&h.mov[0], CLR_MOVE_BUY, -200000, 900499);
    check_move(&h.mov[1], CLR_MOVE_FEE, -2, 700499);
    assert_int_equal(h.res.cash_available, 700497);
    assert_int_equal(h.res.cash_frozen, 0);
    assert_int_equal(h.res.open_qty, 0);

    /* T+1: bought shares are pending, not sellable today. */
    assert_int_equal(clr_engine_position(h.e, 1001, 600000, &pv), 0);
    assert_int_equal(pv.pending, 300);
    assert_int_equal(pv.available, 0);
    assert_int_equal(ap(&h, ev_order(1001, 2, 'S', 600000, 1000, 300)), CLR_REJ_POSITION);
    clr_position_view cv;
    assert_int_equal(clr_engine_position(h.e, CLR_CONTRA_SH, 600000, &cv), 0);
    assert_int_equal(cv.available, -300);

    clr_totals t;
    clr_engine_totals(h.e, &t);
    assert_int_equal(t.fees, 503);
    assert_int_equal(t.fills, 2);
    assert_int_equal(t.cash_total, 1000000);

    assert_int_equal(ap(&h, ev_eod(20260105)), CLR_OK);
    assert_int_equal(clr_engine_position(h.e, 1001, 600000, &pv), 0);
    assert_int_equal(pv.pending, 0);
    assert_int_equal(pv.available, 300);

    uint32_t date;
    clr_net_row *rows;
    size_t n;
    assert_int_equal(clr_engine_settlement(h.e, &date, &rows, &n, NULL), 0);
    assert_int_equal(date, 20260105);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].member, 7);
    assert_int_equal(rows[0].security, 600000);
    assert_int_equal(rows[0].buy_qty, 300);
    assert_int_equal(rows[0].buy_amount, 299000);
    assert_int_equal(rows[0].fees, 503);
    assert_int_equal(rows[0].net_qty, 300);
    assert_int_equal(rows[0].net_cash, -299503);
    free(rows);

    /* Next day: order ids restart (uniqueness is per trading day). Sell 300 @ 10.10: amount
     * 303,000; commission max(500, 75.75 -> 76) = 500, stamp 151.5 -> 152, transfer 3.03 -> 3:
     * 655 fen. */
    assert_int_equal(ap(&h, ev_order(1001, 1, 'S', 600000, 1010, 300)), CLR_OK);
    assert_int_equal(clr_engine_position(h.e, 1001, 600000, &pv), 0);
    assert_int_equal(pv.frozen, 300);
    assert_int_equal(pv.available, 0);
    assert_int_equal(ap(&h, ev_fill(1001, 1, 501, 1010, 300)), CLR_OK); /* exec ids restart */
    assert_int_equal(h.nmov, 2);
    check_move(&h.mov[0], CLR_MOVE_SELL, 303000, 700497);
    check_move(&h.mov[1], CLR_MOVE_FEE, -655, 1003497);
    assert_int_equal(h.res.cash_available, 1002842);
    assert_int_equal(clr_engine_account(h.e, 1001, &av), 0);
    assert_int_equal(av.cash_available, 1002842);
    assert_int_equal(av.member, 7);
    assert_int_equal(ap(&h, ev_eod(20260106)), CLR_OK);
    assert_int_equal(clr_engine_settlement(h.e, &date, &rows, &n, NULL), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].sell_amount, 303000);
    assert_int_equal(rows[0].net_cash, 303000 - 655);
    assert_int_equal(rows[0].net_qty, -300);
    free(rows);
    clr_engine_free(h.e);
}

static void
test_rejects(void **state)
{
    (void) state;
    harness h;
    setup_h(&h, 0, 1);
    /* OPEN */
    assert_int_equal(ap(&h, ev_open(0, 1, 0)), CLR_REJ_ACCOUNT);
    assert_int_equal(ap(&h, ev_open(CLR_ACCOUNT_MAX + 1, 1, 0)), CLR_REJ_ACCOUNT);
    assert_int_equal(ap(&h, ev_open(5, 0, 0)), CLR_REJ_MEMBER);
    assert_int_equal(ap(&h, ev_open(5, 1, -1)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_open(5, 1, CLR_AMOUNT_MAX + 1)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_open(CLR_ACCOUNT_MAX, 1, 0)), CLR_OK);
    assert_int_equal(ap(&h, ev_open(5, 1, 0)), CLR_OK);
    assert_int_equal(ap(&h, ev_open(5, 2, 0)), CLR_REJ_ACCOUNT); /* exists */
    /* DEPOSIT / WITHDRAW */
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 6, 100)), CLR_REJ_ACCOUNT);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 5, 0)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 5, -5)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 5, CLR_AMOUNT_MAX + 1)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 5, CLR_AMOUNT_MAX)), CLR_OK);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 5, 1)), CLR_REJ_RANGE); /* balance cap */
    assert_int_equal(ap(&h, ev_cash(CLR_EV_WITHDRAW, 5, CLR_AMOUNT_MAX - 1000000)), CLR_OK);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_WITHDRAW, 5, 1000001)), CLR_REJ_CASH);
    assert_int_equal(h.nmov, 0);
    /* XFER */
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_IN, 5, 600001, 100)), CLR_REJ_INSTRUMENT);
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_IN, 5, 100001, 100)), CLR_REJ_INSTRUMENT);
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_IN, 5, 600000, 0)), CLR_REJ_LOT);
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_IN, 5, 600000, CLR_QTY_MAX + 1)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_IN, 5, 600000, 250)), CLR_OK);
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_OUT, 5, 600000, 251)), CLR_REJ_POSITION);
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_OUT, 5, 1, 1)), CLR_REJ_POSITION);
    /* ORDER */
    assert_int_equal(ap(&h, ev_order(5, 1, 'X', 600000, 1000, 100)), CLR_REJ_SIDE);
    assert_int_equal(ap(&h, ev_order(5, 1, 0, 600000, 1000, 100)), CLR_REJ_SIDE);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 600001, 1000, 100)), CLR_REJ_INSTRUMENT);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 100001, 1000, 100)), CLR_REJ_INSTRUMENT);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 300750, 1003, 100)), CLR_REJ_TICK);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 300750, 0, 100)), CLR_REJ_TICK);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 300750, -5, 100)), CLR_REJ_TICK);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 600000, 1101, 100)), CLR_REJ_TICK); /* band */
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 600000, 899, 100)), CLR_REJ_TICK);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 1, CLR_PRICE_MAX + 1, 100)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 1, 1000, 150)), CLR_REJ_LOT);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 1, 1000, 0)), CLR_REJ_LOT);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 1, 1000, CLR_QTY_MAX + 1)), CLR_REJ_RANGE);
    /* price * qty beyond CLR_AMOUNT_MAX, and an int64 overflow of the product */
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 1, CLR_PRICE_MAX, 1099511627700)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_order(5, 1, 'B', 1, 1000, 100000000)), CLR_REJ_CASH);
    /* Sell lot rule with 250 held: 50 (the odd part) or 150 (lots + the odd part) or 200
     * (lots) are fine; 30 is not; 300 exceeds the position. */
    assert_int_equal(ap(&h, ev_order(5, 1, 'S', 600000, 1000, 300)), CLR_REJ_POSITION);
    assert_int_equal(ap(&h, ev_order(5, 1, 'S', 600000, 1000, 30)), CLR_REJ_LOT);
    assert_int_equal(ap(&h, ev_order(5, 1, 'S', 600000, 1000, 150)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(5, 1, 'S', 600000, 1000, 100)), CLR_REJ_DUP_ORDER);
    assert_int_equal(ap(&h, ev_order(5, 2, 'S', 600000, 1000, 50)), CLR_REJ_LOT); /* 100 left */
    assert_int_equal(ap(&h, ev_order(5, 2, 'S', 600000, 1000, 100)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(5, 3, 'S', 1, 1000, 100)), CLR_REJ_POSITION);
    /* CANCEL */
    assert_int_equal(ap(&h, ev_cancel(5, 99)), CLR_REJ_ORDER);
    assert_int_equal(ap(&h, ev_cancel(6, 2)), CLR_REJ_ACCOUNT);
    assert_int_equal(ap(&h, ev_cancel(5, 2)), CLR_OK);
    assert_int_equal(ap(&h, ev_cancel(5, 2)), CLR_REJ_ORDER); /* closed */
    clr_position_view pv;
    assert_int_equal(clr_engine_position(h.e, 5, 600000, &pv), 0);
    assert_int_equal(pv.available, 100);
    assert_int_equal(pv.frozen, 150);
    /* FILL (order 1: sell 150 @ >= 10.00) */
    assert_int_equal(ap(&h, ev_fill(5, 2, 1, 1000, 100)), CLR_REJ_ORDER);
    assert_int_equal(ap(&h, ev_fill(5, 1, 1, 1000, 151)), CLR_REJ_OVERFILL);
    assert_int_equal(ap(&h, ev_fill(5, 1, 1, 999, 100)), CLR_REJ_OVERFILL); /* below limit */
    assert_int_equal(ap(&h, ev_fill(5, 1, 1, 1000, 0)), CLR_REJ_LOT);
    assert_int_equal(ap(&h, ev_fill(5, 1, 1, 0, 100)), CLR_REJ_TICK);
    assert_int_equal(ap(&h, ev_fill(5, 1, 1, CLR_PRICE_MAX + 1, 100)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_fill(5, 1, 1, 1001, 100)), CLR_OK);
    assert_int_equal(h.res.open_qty, 50);
    assert_int_equal(ap(&h, ev_fill(5, 1, 1, 1001, 50)), CLR_REJ_DUP_EXEC);
    /* 50 @ 10.00 = 50,000 fen: commission max(500, 12.5 -> 13), stamp 25, transfer
     * 0.5 -> 1: 526. */
    clr_account_view av0, av1;
    assert_int_equal(clr_engine_account(h.e, 5, &av0), 0);
    assert_int_equal(ap(&h, ev_fill(5, 1, 2, 1000, 50)), CLR_OK);
    assert_int_equal(h.nmov, 2);
    check_move(&h.mov[0], CLR_MOVE_SELL, 50000, av0.cash_available);
    check_move(&h.mov[1], CLR_MOVE_FEE, -526, av0.cash_available + 50000);
    /* An odd-lot sell of 50 @ 0.01 = 50 fen: the fees (500 + 0 + 0) are capped at the amount,
     * so the account nets 0 and a sell never costs cash. */
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_IN, 5, 1, 50)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(5, 20, 'S', 1, 1, 50)), CLR_OK);
    assert_int_equal(clr_engine_account(h.e, 5, &av0), 0);
    assert_int_equal(ap(&h, ev_fill(5, 20, 20, 1, 50)), CLR_OK);
    assert_int_equal(clr_engine_account(h.e, 5, &av1), 0);
    assert_int_equal(av1.cash_available, av0.cash_available);
    assert_int_equal(h.nmov, 2);
    check_move(&h.mov[0], CLR_MOVE_SELL, 50, av0.cash_available);
    check_move(&h.mov[1], CLR_MOVE_FEE, -50, av0.cash_available + 50);
    assert_int_equal(ap(&h, ev_fill(5, 1, 3, 1000, 1)), CLR_REJ_ORDER); /* fully filled */
    /* Buy-side fill price above the limit */
    assert_int_equal(ap(&h, ev_order(5, 10, 'B', 300750, 1000, 100)), CLR_OK);
    assert_int_equal(ap(&h, ev_fill(5, 10, 9, 1005, 100)), CLR_REJ_OVERFILL);
    assert_int_equal(ap(&h, ev_fill(5, 10, 9, 997, 100)), CLR_REJ_TICK); /* tick 5 */
    /* EOD */
    assert_int_equal(ap(&h, ev_eod(20260105)), CLR_OK);
    assert_int_equal(ap(&h, ev_eod(20260105)), CLR_REJ_DATE);
    assert_int_equal(ap(&h, ev_eod(20260104)), CLR_REJ_DATE);
    assert_int_equal(ap(&h, ev_eod(0)), CLR_REJ_RANGE);
    assert_int_equal(ap(&h, ev_eod(100000000)), CLR_REJ_RANGE);
    /* The buy order expired at EOD: its freeze is back, and it cannot be filled. */
    clr_account_view av;
    assert_int_equal(clr_engine_account(h.e, 5, &av), 0);
    assert_int_equal(av.cash_frozen, 0);
    assert_int_equal(ap(&h, ev_fill(5, 10, 9, 1000, 100)), CLR_REJ_ORDER);
    clr_totals t;
    clr_engine_totals(h.e, &t);
    assert_int_equal(t.orders_open, 0);
    clr_engine_free(h.e);
}

static void
test_shard(void **state)
{
    (void) state;
    harness h;
    setup_h(&h, 1, 2);
    assert_int_equal(ap(&h, ev_open(1002, 1, 0)), CLR_REJ_SHARD);
    assert_int_equal(ap(&h, ev_open(1003, 1, 0)), CLR_OK);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 1002, 5)), CLR_REJ_SHARD);
    assert_int_equal(ap(&h, ev_order(1002, 1, 'B', 1, 100, 100)), CLR_REJ_SHARD);
    assert_int_equal(ap(&h, ev_fill(1002, 1, 1, 100, 100)), CLR_REJ_SHARD);
    assert_int_equal(ap(&h, ev_cancel(1002, 1)), CLR_REJ_SHARD);
    clr_engine_free(h.e);
    clr_engine *e;
    assert_int_equal(clr_engine_new(&e, &ref, 2, 2, NULL), DBAO_EINVAL);
    assert_int_equal(clr_engine_new(&e, &ref, 0, 0, NULL), DBAO_EINVAL);
}

static void
test_credit(void **state)
{
    (void) state;
    harness h;
    setup_h(&h, 0, 1);
    assert_int_equal(ap(&h, ev_open(2001, 3, 100000)), CLR_OK);
    /* Buy 100 @ 10.00 freezes 100,000 + 501 > 100,000 credit. */
    assert_int_equal(ap(&h, ev_order(2001, 1, 'B', 1, 1000, 100)), CLR_REJ_CASH);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 2001, 501)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(2001, 1, 'B', 1, 1000, 100)), CLR_OK);
    assert_int_equal(h.res.cash_available, -100000);
    clr_totals t;
    clr_engine_totals(h.e, &t);
    assert_int_equal(t.negative_accounts, 1);
    /* Never withdraw into credit. */
    assert_int_equal(ap(&h, ev_cash(CLR_EV_WITHDRAW, 2001, 1)), CLR_REJ_CASH);
    assert_int_equal(ap(&h, ev_fill(2001, 1, 1, 1000, 100)), CLR_OK);
    assert_int_equal(h.res.cash_available, -100000);
    assert_int_equal(h.res.cash_frozen, 0);
    /* A cash account never goes below zero. */
    assert_int_equal(ap(&h, ev_open(2002, 3, 0)), CLR_OK);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 2002, 100500)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(2002, 1, 'B', 1, 1000, 100)), CLR_REJ_CASH);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 2002, 1)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(2002, 1, 'B', 1, 1000, 100)), CLR_OK);
    assert_int_equal(h.res.cash_available, 0);
    /* Cancel returns everything. */
    assert_int_equal(ap(&h, ev_cancel(2002, 1)), CLR_OK);
    assert_int_equal(h.res.cash_available, 100501);
    assert_int_equal(h.res.cash_frozen, 0);
    clr_engine_free(h.e);
}

static void
test_apply_errors(void **state)
{
    (void) state;
    harness h;
    setup_h(&h, 0, 1);
    clr_event ev = ev_open(1, 1, 0);
    ev.seq = 2; /* gap */
    assert_int_equal(clr_engine_apply(h.e, &ev, &h.res, NULL, NULL), DBAO_EINVAL);
    ev.seq = 1;
    ev.price = 5; /* a field OPEN does not use */
    assert_int_equal(clr_engine_apply(h.e, &ev, &h.res, NULL, NULL), DBAO_EINVAL);
    ev.price = 0;
    ev.type = 42;
    assert_int_equal(clr_engine_apply(h.e, &ev, &h.res, NULL, NULL), DBAO_EINVAL);
    assert_int_equal(clr_engine_seq(h.e), 0);
    ev.type = CLR_EV_OPEN;
    assert_int_equal(clr_engine_apply(h.e, &ev, &h.res, NULL, NULL), 0);
    assert_int_equal(clr_engine_apply(h.e, &ev, &h.res, NULL, NULL), DBAO_EINVAL); /* repeat */
    assert_int_equal(clr_engine_seq(h.e), 1);
    clr_account_view av;
    assert_int_equal(clr_engine_account(h.e, 77, &av), DBAO_EINVAL);
    /* Bad refdata */
    clr_instrument bad[2] = {{.security = 600000, .tick = 1, .lot = 100},
                             {.security = 1, .tick = 1, .lot = 100}};
    clr_refdata r2 = {.instruments = bad, .num_instruments = 2};
    clr_engine *e2;
    assert_int_equal(clr_engine_new(&e2, &r2, 0, 1, NULL), DBAO_EINVAL);
    bad[1].security = 600000;
    assert_int_equal(clr_engine_new(&e2, &r2, 0, 1, NULL), DBAO_EINVAL);
    bad[1].security = 600001;
    bad[1].tick = 0;
    assert_int_equal(clr_engine_new(&e2, &r2, 0, 1, NULL), DBAO_EINVAL);
    bad[1].tick = 1;
    bad[1].lot = 0;
    assert_int_equal(clr_engine_new(&e2, &r2, 0, 1, NULL), DBAO_EINVAL);
    clr_engine_free(h.e);
    clr_engine_free(NULL);
}

static void
test_event_codec(void **state)
{
    (void) state;
    clr_event ev = ev_fill(1001, 7, 9, 1025, 300), back;
    ev.seq = 42;
    ev.ts_ns = -5;
    ev.trace_id[0] = 0x4b;
    ev.trace_id[15] = 0x36;
    uint8_t b[CLR_EVENT_WIRE_LEN], b2[CLR_EVENT_WIRE_LEN];
    clr_event_encode(&ev, b);
    assert_int_equal(b[0], 42);
    assert_int_equal(b[16], CLR_EV_FILL);
    assert_int_equal(b[56], 1025 & 0xff);
    assert_int_equal(b[57], 1025 >> 8);
    assert_int_equal(b[80], 0x4b);
    assert_int_equal(clr_event_decode(&back, b, NULL), 0);
    assert_memory_equal(&back.trace_id, &ev.trace_id, 16);
    clr_event_encode(&back, b2);
    assert_memory_equal(b, b2, sizeof b);
    assert_int_equal(back.price, 1025);
    assert_int_equal(back.ts_ns, -5);
    dbao_err err;
    b[48] = 1; /* security: FILL does not carry it */
    assert_int_equal(clr_event_decode(&back, b, &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "security"));
    b[48] = 0;
    b[18] = 1; /* reserved */
    assert_int_equal(clr_event_decode(&back, b, NULL), DBAO_EFORMAT);
    b[18] = 0;
    b[16] = 10; /* unknown type */
    assert_int_equal(clr_event_decode(&back, b, NULL), DBAO_EFORMAT);
    b[16] = 0;
    assert_int_equal(clr_event_decode(&back, b, NULL), DBAO_EFORMAT);
    clr_event eod = ev_eod(20260105);
    eod.account = 1;
    clr_event_encode(&eod, b);
    assert_int_equal(clr_event_decode(&back, b, NULL), DBAO_EFORMAT);

    assert_int_equal(clr_route_venue(600000), CLR_VENUE_SH);
    assert_int_equal(clr_route_venue(900901), CLR_VENUE_SH);
    assert_int_equal(clr_route_venue(1), CLR_VENUE_SZ);
    assert_int_equal(clr_route_venue(200002), CLR_VENUE_SZ);
    assert_int_equal(clr_route_venue(300750), CLR_VENUE_SZ);
    assert_int_equal(clr_route_venue(430047), CLR_VENUE_BJ);
    assert_int_equal(clr_route_venue(830799), CLR_VENUE_BJ);
    assert_int_equal(clr_route_venue(100001), CLR_VENUE_NONE);
    assert_int_equal(clr_route_venue(510300), CLR_VENUE_NONE);
    assert_int_equal(clr_route_venue(700001), CLR_VENUE_NONE);
    assert_int_equal(clr_route_venue(1000000), CLR_VENUE_NONE);
    assert_string_equal(clr_venue_name(CLR_VENUE_BJ), "BJ");
    assert_string_equal(clr_venue_name(CLR_VENUE_NONE), "-");
    assert_string_equal(clr_reject_name(CLR_REJ_DUP_EXEC), "DUP_EXEC");
    assert_string_equal(clr_reject_name(CLR_REJ_MEMBER), "MEMBER");
    assert_string_equal(clr_reject_name(CLR_OK), "OK");
    assert_string_equal(clr_reject_name((clr_reject) 99), "UNKNOWN");
}

/* A snapshot restores to an engine with the same hash and behaviour; damaged or foreign
 * snapshots are refused. */
static void
test_snapshot(void **state)
{
    (void) state;
    harness h;
    setup_h(&h, 0, 1);
    assert_int_equal(ap(&h, ev_open(1001, 7, 50000)), CLR_OK);
    assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, 1001, 1000000)), CLR_OK);
    assert_int_equal(ap(&h, ev_xfer(CLR_EV_XFER_IN, 1001, 1, 1000)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(1001, 1, 'B', 600000, 1000, 300)), CLR_OK);
    assert_int_equal(ap(&h, ev_fill(1001, 1, 1, 1000, 100)), CLR_OK);
    assert_int_equal(ap(&h, ev_order(1001, 2, 'S', 1, 1000, 500)), CLR_OK);
    assert_int_equal(ap(&h, ev_fill(1001, 2, 2, 1000, 100)), CLR_OK);
    uint8_t *s;
    size_t n;
    assert_int_equal(clr_engine_snapshot(h.e, &s, &n, NULL), 0);
    assert_memory_equal(s, "DBCLSNAP", 8);
    clr_engine *r;
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, n, NULL), 0);
    uint8_t h1[32], h2[32];
    assert_int_equal(clr_engine_state_hash(h.e, h1, NULL), 0);
    assert_int_equal(clr_engine_state_hash(r, h2, NULL), 0);
    assert_memory_equal(h1, h2, 32);
    assert_int_equal(clr_engine_seq(r), clr_engine_seq(h.e));
    /* Both continue identically. */
    clr_event more[] = {ev_fill(1001, 1, 3, 990, 200), ev_cancel(1001, 2), ev_eod(20260105),
                        ev_order(1001, 1, 'B', 1, 1000, 100)};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
        clr_result r1, r2;
        more[i].seq = clr_engine_seq(r) + 1;
        assert_int_equal(clr_engine_apply(h.e, &more[i], &r1, NULL, NULL), 0);
        assert_int_equal(clr_engine_apply(r, &more[i], &r2, NULL, NULL), 0);
        assert_memory_equal(&r1, &r2, sizeof r1);
    }
    assert_int_equal(clr_engine_state_hash(h.e, h1, NULL), 0);
    assert_int_equal(clr_engine_state_hash(r, h2, NULL), 0);
    assert_memory_equal(h1, h2, 32);
    clr_engine_free(r);

    /* Refusals. */
    dbao_err err;
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 2, s, n, &err), DBAO_EINVAL);
    assert_null(r);
    clr_refdata other = ref;
    other.fees.commission_min = 499;
    assert_int_equal(clr_engine_restore(&r, &other, 0, 1, s, n, &err), DBAO_EINVAL);
    s[200] ^= 1;
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, n, &err), DBAO_EVERIFY);
    s[200] ^= 1;
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, n - 1, &err), DBAO_EVERIFY);
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, 100, &err), DBAO_EFORMAT);
    s[8] = 2;
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, n, &err), DBAO_ENOTSUP);
    s[8] = 0;
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, n, &err), DBAO_EFORMAT);
    s[8] = 1;
    s[0] = 'X';
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, n, &err), DBAO_EFORMAT);
    free(s);

    /* A well-signed snapshot that breaks an invariant (cash out of thin air) is refused. */
    assert_int_equal(clr_engine_snapshot(h.e, &s, &n, NULL), 0);
    /* First account record: header 128 + section header 16; avail at +24. */
    s[128 + 16 + 24] ^= 0x10;
    gm_sm3(s + n - 32, s, n - 32);
    assert_int_equal(clr_engine_restore(&r, &ref, 0, 1, s, n, &err), DBAO_EFORMAT);
    free(s);
    clr_engine_free(h.e);
}

/* Growth: many accounts, orders and positions through several table doublings. */
static void
test_growth(void **state)
{
    (void) state;
    harness h;
    setup_h(&h, 0, 1);
    for (uint64_t a = 1; a <= 5000; a++) {
        assert_int_equal(ap(&h, ev_open(a, (uint32_t) (a % 13) + 1, 0)), CLR_OK);
        assert_int_equal(ap(&h, ev_cash(CLR_EV_DEPOSIT, a, 10000000)), CLR_OK);
        assert_int_equal(ap(&h, ev_order(a, 1, 'B', 1, 1000, 100)), CLR_OK);
        assert_int_equal(ap(&h, ev_order(a, 2, 'B', 430047, 1000, 100)), CLR_OK);
    }
    for (uint64_t a = 1; a <= 5000; a += 2) {
        assert_int_equal(ap(&h, ev_fill(a, 1, a, 1000, 100)), CLR_OK);
        assert_int_equal(ap(&h, ev_cancel(a, 2)), CLR_OK);
    }
    clr_totals t;
    clr_engine_totals(h.e, &t);
    assert_int_equal(t.accounts, 5000);
    assert_int_equal(t.orders_open, 5000);
    assert_int_equal(t.fills, 2500);
    for (uint64_t a = 2; a <= 5000; a += 2) {
        assert_int_equal(ap(&h, ev_cancel(a, 1)), CLR_OK);
        assert_int_equal(ap(&h, ev_fill(a, 2, 1, 1000, 100)), CLR_OK);
    }
    clr_engine_totals(h.e, &t);
    assert_int_equal(t.orders_open, 0);
    assert_int_equal(ap(&h, ev_eod(20260105)), CLR_OK);
    uint32_t date;
    clr_net_row *rows;
    size_t n;
    assert_int_equal(clr_engine_settlement(h.e, &date, &rows, &n, NULL), 0);
    assert_int_equal(n, 26); /* 13 members x 2 securities */
    for (size_t i = 1; i < n; i++) {
        assert_true(
            rows[i - 1].member < rows[i].member ||
            (rows[i - 1].member == rows[i].member && rows[i - 1].security < rows[i].security));
    }
    free(rows);
    clr_engine_free(h.e);
}

/* Allocation-failure sweep: fail the n-th allocation for every n while building an engine,
 * applying a scripted day, snapshotting and restoring. Every failure must be DBAO_ENOMEM with
 * the state unchanged: retrying the event without injection must give the same final hash as
 * the run without failures. */
static int
run_script(clr_engine **out, long fail_at, uint8_t hash[32])
{
    clr_event evs[64];
    size_t n = 0;
    for (uint64_t a = 1; a <= 12; a++) {
        evs[n++] = ev_open(a, 1 + (uint32_t) (a % 3), 0);
        evs[n++] = ev_cash(CLR_EV_DEPOSIT, a, 1000000);
        evs[n++] = ev_order(a, 1, 'B', a % 2 ? 1 : 430047, 1000, 100);
        evs[n++] = ev_fill(a, 1, 7, 1000, 100);
    }
    evs[n++] = ev_eod(20260105);
    evs[n++] = ev_order(1, 1, 'S', 1, 1000, 100);
    evs[n++] = ev_xfer(CLR_EV_XFER_IN, 2, 600000, 500);
    dbao_alloc_fail_after(fail_at, false);
    clr_engine *e = NULL;
    int rc = clr_engine_new(&e, &ref, 0, 1, NULL);
    int failures = 0;
    if (rc != 0) {
        dbao_alloc_fail_after(-1, false);
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_int_equal(clr_engine_new(&e, &ref, 0, 1, NULL), 0);
        failures++;
    }
    for (size_t i = 0; i < n; i++) {
        clr_result r;
        evs[i].seq = clr_engine_seq(e) + 1;
        rc = clr_engine_apply(e, &evs[i], &r, NULL, NULL);
        if (rc != 0) {
            dbao_alloc_fail_after(-1, false);
            assert_int_equal(rc, DBAO_ENOMEM);
            assert_int_equal(clr_engine_seq(e), evs[i].seq - 1);
            assert_int_equal(clr_engine_apply(e, &evs[i], &r, NULL, NULL), 0);
            failures++;
        }
        assert_int_equal(r.reject, CLR_OK);
    }
    uint8_t *snap = NULL;
    size_t len;
    rc = clr_engine_snapshot(e, &snap, &len, NULL);
    if (rc != 0) {
        dbao_alloc_fail_after(-1, false);
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_null(snap);
        assert_int_equal(clr_engine_snapshot(e, &snap, &len, NULL), 0);
        failures++;
    }
    clr_engine *r2 = NULL;
    rc = clr_engine_restore(&r2, &ref, 0, 1, snap, len, NULL);
    if (rc != 0) {
        dbao_alloc_fail_after(-1, false);
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_null(r2);
        assert_int_equal(clr_engine_restore(&r2, &ref, 0, 1, snap, len, NULL), 0);
        failures++;
    }
    dbao_alloc_fail_after(-1, false);
    free(snap);
    uint8_t h2[32];
    assert_int_equal(clr_engine_state_hash(e, hash, NULL), 0);
    assert_int_equal(clr_engine_state_hash(r2, h2, NULL), 0);
    assert_memory_equal(hash, h2, 32);
    clr_engine_free(r2);
    *out = e;
    return failures;
}

static void
test_alloc_failures(void **state)
{
    (void) state;
    clr_engine *e;
    uint8_t want[32], got[32];
    assert_int_equal(run_script(&e, -1, want), 0);
    clr_engine_free(e);
    int total = 0;
    for (long n = 0; n < 200; n++) {
        int f = run_script(&e, n, got);
        clr_engine_free(e);
        assert_memory_equal(want, got, 32);
        total += f;
        if (f == 0) {
            break; /* n is past the last allocation of the script */
        }
    }
    assert_true(total > 10);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fee_rounding), cmocka_unit_test(test_buy_t1_sell),
        cmocka_unit_test(test_rejects),      cmocka_unit_test(test_shard),
        cmocka_unit_test(test_credit),       cmocka_unit_test(test_apply_errors),
        cmocka_unit_test(test_event_codec),  cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_growth),       cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
