/* fuzz_clearing_snapshot.c: libFuzzer target for clr_engine_restore (src/clearing/snapshot.c).
 *
 * The first input byte picks the mode; the rest is the payload:
 *   0: the payload is given to clr_engine_restore as it is (magic, version, trailer checks);
 *   1: the payload is a snapshot without its 32-byte SM3 trailer; the target appends the right
 *      trailer, so mutations reach the section parser and the invariant checks behind the
 *      digest (random bytes would almost never carry a valid SM3).
 * The seed corpus (tests/fuzz/corpus/fuzz_clearing_snapshot/) holds real snapshots of engines
 * with accounts, positions, open buy and sell orders, per-day id sets, netting and settlement
 * rows, in both modes, taken with the reference data below.
 *
 * Invariants:
 *   - restore returns 0 or DBAO_EFORMAT / DBAO_EVERIFY / DBAO_ENOTSUP / DBAO_EINVAL, never
 *     crashes, leaks or trips a sanitizer;
 *   - a restored engine's snapshot is byte-identical to the input (the format is canonical),
 *     and restoring that again gives the same state hash;
 *   - a restored engine accepts further events (an EOD that expires the open orders and moves
 *     pending shares) with conservation intact.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include -I src/clearing
 *        tests/fuzz/fuzz_clearing_snapshot.c <instrumented libdengbao.a> -lcrypto
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/clearing.h"
#include "dengbao/gm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const clr_instrument insts[] = {
    {.security = 1, .tick = 1, .lot = 100},
    {.security = 100001, .tick = 1, .lot = 10},
    {.security = 300750, .tick = 5, .lot = 100},
    {.security = 430047, .tick = 1, .lot = 100},
    {.security = 600000, .tick = 1, .lot = 100, .price_lo = 500, .price_hi = 1500},
};

static const clr_refdata ref = {
    .instruments = insts,
    .num_instruments = sizeof insts / sizeof insts[0],
    .fees = {.commission_ppm = 250, .commission_min = 500, .stamp_ppm = 500, .transfer_ppm = 10},
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20)) {
        return 0;
    }
    const uint8_t *snap = data + 1;
    size_t len = size - 1;
    uint8_t *buf = NULL;
    if (data[0] & 1) {
        buf = malloc(len + 32);
        assert(buf != NULL);
        memcpy(buf, data + 1, len);
        gm_sm3(buf + len, buf, len);
        snap = buf;
        len += 32;
    }
    unsigned nshards = (data[0] >> 1) & 1 ? 2 : 1;
    clr_engine *e = NULL;
    dbao_err err;
    int rc = clr_engine_restore(&e, &ref, 0, nshards, snap, len, &err);
    assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_EVERIFY || rc == DBAO_ENOTSUP ||
           rc == DBAO_EINVAL);
    if (rc != 0) {
        assert(e == NULL);
        free(buf);
        return 0;
    }
    uint8_t *s2;
    size_t n2;
    assert(clr_engine_snapshot(e, &s2, &n2, NULL) == 0);
    assert(n2 == len && memcmp(s2, snap, len) == 0);
    clr_engine *e2 = NULL;
    assert(clr_engine_restore(&e2, &ref, 0, nshards, s2, n2, NULL) == 0);
    uint8_t h1[32], h2[32];
    assert(clr_engine_state_hash(e, h1, NULL) == 0);
    assert(clr_engine_state_hash(e2, h2, NULL) == 0);
    assert(memcmp(h1, h2, 32) == 0);
    free(s2);
    clr_engine_free(e2);

    /* Keep going: an EOD after the snapshot's last date. */
    clr_totals t;
    clr_engine_totals(e, &t);
    assert(t.cash_total == t.deposits - t.withdrawals && t.shares_imbalance == 0);
    clr_event ev = {.seq = clr_engine_seq(e) + 1, .type = CLR_EV_EOD, .qty = 99991231};
    clr_result res;
    if (ev.seq != 0) {
        assert(clr_engine_apply(e, &ev, &res, NULL, NULL) == 0);
        clr_engine_totals(e, &t);
        assert(t.cash_total == t.deposits - t.withdrawals && t.shares_imbalance == 0);
        assert(res.reject != CLR_OK || t.orders_open == 0);
    }
    clr_engine_free(e);
    free(buf);
    return 0;
}
