/* test_engine_prop.c: property tests of the clearing engine on random event streams.
 *
 * A seeded generator (splitmix64, in the test only: the engine has no randomness) produces
 * 50,000 events over 400 accounts (half of them on the other shard), 5 members and 8
 * securities on three venues, mixing valid events with invalid ones (unknown accounts and
 * securities, bad ticks and lots, overfills, duplicate order and exec ids, stale EOD dates,
 * amounts out of range). The generator keeps a pool of open orders from the engine's own
 * results so that most fills and cancels hit live orders.
 *
 * Properties checked:
 *  - determinism: two engines fed the same events give identical results, identical movement
 *    streams and identical state hashes;
 *  - conservation after every event: cash total == deposits - withdrawals, shares balanced;
 *  - no cash account ever negative (available or frozen), credit accounts never below
 *    -credit_limit, frozen never negative;
 *  - movements chain: post = pre + amount, and pre is the account's balance before it;
 *  - netting: at each EOD, the sum of the day's buy/sell/fee movements equals the sum of the
 *    settlement rows' net_cash, and buy_amount - sell_amount matches the contra flows;
 *  - snapshots taken at random points restore to the same hash, and the restored engines,
 *    fed the rest of the stream, end with the same hash as the uninterrupted engine.
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

#define NEVENTS  50000
#define NACCT    400
#define NSHARDS  2
#define MAXSNAPS 6

static const clr_instrument insts[] = {
    {.security = 1, .tick = 1, .lot = 100},
    {.security = 2, .tick = 1, .lot = 100},
    {.security = 100001, .tick = 1, .lot = 10}, /* listed but not routed */
    {.security = 300750, .tick = 5, .lot = 100},
    {.security = 430047, .tick = 1, .lot = 100},
    {.security = 600000, .tick = 1, .lot = 100, .price_lo = 500, .price_hi = 1500},
    {.security = 600519, .tick = 10, .lot = 100},
    {.security = 688981, .tick = 1, .lot = 200},
};
#define NINST (sizeof insts / sizeof insts[0])

static const clr_refdata ref = {
    .instruments = insts,
    .num_instruments = NINST,
    .fees = {.commission_ppm = 250, .commission_min = 500, .stamp_ppm = 500, .transfer_ppm = 10},
};

static uint64_t rng;
static uint64_t
next(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static uint64_t
below(uint64_t n)
{
    return next() % n;
}

typedef struct pool_order {
    uint64_t account, oid;
    uint8_t side;
    int64_t limit, open, tick;
    uint64_t last_exec;
} pool_order;

typedef struct world {
    pool_order pool[4096];
    size_t npool;
    uint64_t next_oid[NACCT + 2];
    uint64_t next_exec;
    int64_t date;
    /* movement bookkeeping */
    int64_t day_flow;  /* sum of BUY, SELL, FEE amounts since the last EOD */
    uint64_t mov_hash; /* running checksum of every movement */
    uint64_t nmov;
    int64_t last_balance[NACCT + 2];
    bool balance_known[NACCT + 2];
} world;

static void
on_move(void *arg, const clr_movement *m)
{
    world *w = arg;
    assert_int_equal(m->post_balance, m->pre_balance + m->amount);
    assert_true(m->account >= 1 && m->account <= NACCT);
    if (w->balance_known[m->account]) {
        assert_int_equal(m->pre_balance, w->last_balance[m->account]);
    }
    w->last_balance[m->account] = m->post_balance;
    w->balance_known[m->account] = true;
    if (m->kind == CLR_MOVE_BUY || m->kind == CLR_MOVE_SELL || m->kind == CLR_MOVE_FEE) {
        w->day_flow += m->amount;
    }
    uint64_t h = w->mov_hash;
    const uint64_t f[] = {m->seq,
                          m->account,
                          m->kind,
                          (uint64_t) m->amount,
                          (uint64_t) m->pre_balance,
                          (uint64_t) m->post_balance,
                          m->order_id,
                          m->exec_id,
                          m->security};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        h = (h ^ f[i]) * 0x100000001b3ULL;
    }
    w->mov_hash = h;
    w->nmov++;
}

/* A second observer for the twin engine: only the checksum. */
typedef struct twin {
    uint64_t mov_hash, nmov;
} twin;
static void
on_move_twin(void *arg, const clr_movement *m)
{
    twin *t = arg;
    uint64_t h = t->mov_hash;
    const uint64_t f[] = {m->seq,
                          m->account,
                          m->kind,
                          (uint64_t) m->amount,
                          (uint64_t) m->pre_balance,
                          (uint64_t) m->post_balance,
                          m->order_id,
                          m->exec_id,
                          m->security};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        h = (h ^ f[i]) * 0x100000001b3ULL;
    }
    t->mov_hash = h;
    t->nmov++;
}

static int64_t
price_for(const clr_instrument *in)
{
    int64_t base = in->price_lo ? (in->price_lo + in->price_hi) / 2 : 1000;
    int64_t p = base + (int64_t) below(200) - 100;
    p -= p % in->tick;
    return p > 0 ? p : in->tick;
}

static clr_event
gen(world *w)
{
    clr_event ev = {0};
    uint64_t acct = 1 + below(NACCT);
    uint64_t r = below(1000);
    const clr_instrument *in = &insts[below(NINST)];
    if (r < 5) {
        ev.type = CLR_EV_EOD;
        ev.qty = below(10) == 0 ? w->date : w->date + 1 + (int64_t) below(3);
        return ev;
    }
    ev.account = acct;
    if (below(200) == 0) {
        ev.account = below(2) ? 0 : CLR_ACCOUNT_MAX + 1 + below(5);
    }
    if (r < 40) {
        ev.type = CLR_EV_OPEN;
        ev.member = (uint32_t) below(6); /* 0: MEMBER reject */
        ev.amount = below(3) == 0 ? (int64_t) below(5000000) : 0;
        if (below(100) == 0) {
            ev.amount = -1;
        }
    } else if (r < 140) {
        ev.type = CLR_EV_DEPOSIT;
        ev.amount = 1 + (int64_t) below(20000000);
        if (below(100) == 0) {
            ev.amount = below(2) ? 0 : CLR_AMOUNT_MAX + 1;
        }
    } else if (r < 180) {
        ev.type = CLR_EV_WITHDRAW;
        ev.amount = 1 + (int64_t) below(5000000);
    } else if (r < 220) {
        ev.type = CLR_EV_XFER_IN;
        ev.security = in->security;
        ev.qty = 1 + (int64_t) below(2000);
        if (below(50) == 0) {
            ev.security = 999999;
        }
    } else if (r < 240) {
        ev.type = CLR_EV_XFER_OUT;
        ev.security = in->security;
        ev.qty = 1 + (int64_t) below(500);
    } else if (r < 600) {
        ev.type = CLR_EV_ORDER;
        ev.side = below(2) ? CLR_SIDE_BUY : CLR_SIDE_SELL;
        if (below(100) == 0) {
            ev.side = 'Z';
        }
        ev.security = in->security;
        ev.price = price_for(in);
        ev.qty = in->lot * (1 + (int64_t) below(10));
        switch (below(40)) {
        case 0:
            ev.price += 1; /* off tick (or fine when tick is 1) */
            break;
        case 1:
            ev.qty += 37; /* odd lot */
            break;
        case 2:
            ev.price = CLR_PRICE_MAX + 1;
            break;
        case 3:
            ev.qty = 0;
            break;
        case 4:
            ev.security = 777777;
            break;
        default:
            break;
        }
        uint64_t *no = &w->next_oid[acct <= NACCT ? acct : 0];
        ev.order_id = ++*no;
        if (below(30) == 0 && w->npool > 0) {
            /* reuse an id that is live today: DUP_ORDER */
            const pool_order *o = &w->pool[below(w->npool)];
            ev.account = o->account;
            ev.order_id = o->oid;
        }
    } else if (r < 700 && w->npool > 0) {
        pool_order *o = &w->pool[below(w->npool)];
        ev.type = CLR_EV_CANCEL;
        ev.account = o->account;
        ev.order_id = below(20) == 0 ? o->oid + 1000000 : o->oid;
    } else if (w->npool > 0) {
        pool_order *o = &w->pool[below(w->npool)];
        ev.type = CLR_EV_FILL;
        ev.account = o->account;
        ev.order_id = o->oid;
        ev.exec_id = ++w->next_exec;
        if (below(30) == 0 && o->last_exec != 0) {
            ev.exec_id = o->last_exec; /* a venue resend: DUP_EXEC */
        }
        o->last_exec = ev.exec_id;
        int64_t q = o->open <= 1 ? o->open : 1 + (int64_t) below((uint64_t) o->open);
        if (below(4) == 0) {
            q = o->open; /* complete it */
        }
        if (below(50) == 0) {
            q = o->open + 1; /* overfill */
        }
        ev.qty = q;
        int64_t improve = (int64_t) below(3) * o->tick;
        ev.price = o->side == CLR_SIDE_BUY ? o->limit - improve : o->limit + improve;
        if (ev.price <= 0) {
            ev.price = o->limit;
        }
        if (below(50) == 0) {
            ev.price = o->side == CLR_SIDE_BUY ? o->limit + o->tick : o->limit - o->tick;
        }
    } else {
        ev.type = CLR_EV_DEPOSIT;
        ev.amount = 100000;
    }
    return ev;
}

static void
pool_update(world *w, const clr_event *ev, const clr_result *res)
{
    if (res->reject != CLR_OK) {
        return;
    }
    if (ev->type == CLR_EV_EOD) {
        w->npool = 0;
        w->date = ev->qty;
        return;
    }
    if (ev->type == CLR_EV_ORDER) {
        if (w->npool < sizeof w->pool / sizeof w->pool[0]) {
            int64_t tick = 1;
            for (size_t i = 0; i < NINST; i++) {
                if (insts[i].security == ev->security) {
                    tick = insts[i].tick;
                }
            }
            w->pool[w->npool++] =
                (pool_order){ev->account, ev->order_id, ev->side, ev->price, ev->qty, tick, 0};
        }
        return;
    }
    if (ev->type == CLR_EV_FILL || ev->type == CLR_EV_CANCEL) {
        for (size_t i = 0; i < w->npool; i++) {
            if (w->pool[i].account == ev->account && w->pool[i].oid == ev->order_id) {
                w->pool[i].open = res->open_qty;
                if (res->open_qty == 0) {
                    w->pool[i] = w->pool[--w->npool];
                }
                break;
            }
        }
    }
}

static void
check_accounts(const clr_engine *e)
{
    for (uint64_t a = 1; a <= NACCT; a++) {
        clr_account_view v;
        if (clr_engine_account(e, a, &v) != 0) {
            continue;
        }
        assert_true(v.cash_frozen >= 0);
        if (v.credit_limit == 0) {
            assert_true(v.cash_available >= 0);
        } else {
            assert_true(v.cash_available >= -v.credit_limit);
        }
        for (size_t i = 0; i < NINST; i++) {
            clr_position_view p;
            assert_int_equal(clr_engine_position(e, a, insts[i].security, &p), 0);
            assert_true(p.available >= 0 && p.frozen >= 0 && p.pending >= 0);
        }
    }
}

static void
hash_of(const clr_engine *e, uint8_t out[32])
{
    assert_int_equal(clr_engine_state_hash(e, out, NULL), 0);
}

static void
run_stream(uint64_t seed)
{
    rng = seed;
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->date = 20260101;
    twin tw = {0};
    clr_engine *a, *b;
    assert_int_equal(clr_engine_new(&a, &ref, 0, NSHARDS, NULL), 0);
    assert_int_equal(clr_engine_new(&b, &ref, 0, NSHARDS, NULL), 0);
    clr_engine *snaps[MAXSNAPS] = {0};
    size_t nsnaps = 0;
    uint64_t counts[16] = {0};
    uint64_t rejects[16] = {0};

    for (uint64_t i = 1; i <= NEVENTS; i++) {
        clr_event ev = gen(w);
        ev.seq = i;
        ev.trace_id[0] = (uint8_t) i;
        clr_result ra, rb;
        assert_int_equal(clr_engine_apply(a, &ev, &ra, on_move, w), 0);
        assert_int_equal(clr_engine_apply(b, &ev, &rb, on_move_twin, &tw), 0);
        assert_memory_equal(&ra, &rb, sizeof ra);
        assert_int_equal(tw.mov_hash, w->mov_hash);
        for (size_t k = 0; k < nsnaps; k++) {
            clr_result rs;
            assert_int_equal(clr_engine_apply(snaps[k], &ev, &rs, NULL, NULL), 0);
            assert_memory_equal(&ra, &rs, sizeof ra);
        }
        counts[ev.type]++;
        rejects[ra.reject]++;
        clr_totals t;
        clr_engine_totals(a, &t);
        assert_int_equal(t.cash_total, t.deposits - t.withdrawals);
        assert_int_equal(t.shares_imbalance, 0);
        if (ev.type == CLR_EV_EOD && ra.reject == CLR_OK) {
            uint32_t date;
            clr_net_row *rows;
            size_t n;
            assert_int_equal(clr_engine_settlement(a, &date, &rows, &n, NULL), 0);
            assert_int_equal(date, (uint32_t) ev.qty);
            int64_t net = 0;
            for (size_t k = 0; k < n; k++) {
                assert_int_equal(rows[k].net_cash,
                                 rows[k].sell_amount - rows[k].buy_amount - rows[k].fees);
                assert_int_equal(rows[k].net_qty, rows[k].buy_qty - rows[k].sell_qty);
                net += rows[k].net_cash;
            }
            assert_int_equal(net, w->day_flow);
            w->day_flow = 0;
            free(rows);
        }
        pool_update(w, &ev, &ra);
        if (i % 2500 == 0) {
            check_accounts(a);
        }
        if (nsnaps < MAXSNAPS && below(8000) == 0) {
            uint8_t *s;
            size_t n;
            assert_int_equal(clr_engine_snapshot(a, &s, &n, NULL), 0);
            assert_int_equal(clr_engine_restore(&snaps[nsnaps], &ref, 0, NSHARDS, s, n, NULL), 0);
            uint8_t h1[32], h2[32];
            hash_of(a, h1);
            hash_of(snaps[nsnaps], h2);
            assert_memory_equal(h1, h2, 32);
            /* The restored engine's snapshot is byte-identical. */
            uint8_t *s2;
            size_t n2;
            assert_int_equal(clr_engine_snapshot(snaps[nsnaps], &s2, &n2, NULL), 0);
            assert_int_equal(n, n2);
            assert_memory_equal(s, s2, n);
            free(s);
            free(s2);
            nsnaps++;
        }
    }
    check_accounts(a);
    uint8_t ha[32], hb[32];
    hash_of(a, ha);
    hash_of(b, hb);
    assert_memory_equal(ha, hb, 32);
    for (size_t k = 0; k < nsnaps; k++) {
        uint8_t hs[32];
        hash_of(snaps[k], hs);
        assert_memory_equal(ha, hs, 32);
        clr_engine_free(snaps[k]);
    }
    /* The stream exercised every event type and most reject codes. */
    for (int ty = CLR_EV_OPEN; ty <= CLR_EV_EOD; ty++) {
        assert_true(counts[ty] > 0);
    }
    static const int must[] = {
        CLR_OK,        CLR_REJ_ACCOUNT,  CLR_REJ_INSTRUMENT, CLR_REJ_TICK,
        CLR_REJ_LOT,   CLR_REJ_CASH,     CLR_REJ_POSITION,   CLR_REJ_DUP_ORDER,
        CLR_REJ_ORDER, CLR_REJ_OVERFILL, CLR_REJ_DUP_EXEC,   CLR_REJ_SIDE,
        CLR_REJ_RANGE, CLR_REJ_SHARD,    CLR_REJ_DATE,       CLR_REJ_MEMBER};
    for (size_t k = 0; k < sizeof must / sizeof must[0]; k++) {
        if (rejects[must[k]] == 0) {
            print_error("reject %s never produced\n", clr_reject_name((clr_reject) must[k]));
        }
        assert_true(rejects[must[k]] > 0);
    }
    clr_totals t;
    clr_engine_totals(a, &t);
    assert_true(t.fills > 1000);
    print_message("seed %llu: %llu fills, %llu movements, %zu snapshots restored\n",
                  (unsigned long long) seed, (unsigned long long) t.fills,
                  (unsigned long long) w->nmov, nsnaps);
    clr_engine_free(a);
    clr_engine_free(b);
    free(w);
}

static void
test_stream_seed1(void **state)
{
    (void) state;
    run_stream(1);
}

static void
test_stream_seed2(void **state)
{
    (void) state;
    run_stream(0xdeadbeefULL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_seed1),
        cmocka_unit_test(test_stream_seed2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
