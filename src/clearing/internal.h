/* internal.h: private declarations shared inside src/clearing (engine, snapshot, settlement,
 * journal and codecs). Nothing outside src/clearing and tests/unit/clearing includes it.
 *
 * Little-endian load/store helpers are written out byte by byte: they compile to single moves
 * on little-endian targets (x86-64, aarch64) and stay correct on any byte order, with no
 * alignment assumption.
 */
#ifndef DENGBAO_CLEARING_INTERNAL_H
#define DENGBAO_CLEARING_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/clearing.h"

static inline void
clr__put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
}
static inline void
clr__put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t) (v >> (8 * i));
    }
}
static inline void
clr__put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t) (v >> (8 * i));
    }
}
static inline uint16_t
clr__get_u16(const uint8_t *p)
{
    return (uint16_t) (p[0] | (p[1] << 8));
}
static inline uint32_t
clr__get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}
static inline uint64_t
clr__get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* clr__event_fields_check: the structural rule shared by every decoder (event codec, binary
 * protocol, JSON intake): a known type, zero reserved fields, and zero in every field the type
 * does not use (seq, ts_ns and trace_id are not checked). Ranges and business rules are the
 * engine's (results, not errors). Returns 0 or DBAO_EFORMAT with the field named in err. */
int clr__event_fields_check(const clr_event *ev, dbao_err *err);

/* Fee arithmetic (engine.c), exposed for tests and the docs' examples. */
/* clr__fee_ppm: amount * ppm / 1e6 rounded half up, amount >= 0, ppm >= 0; -1 on overflow. */
int64_t clr__fee_ppm(int64_t amount, int64_t ppm);

/* ---- engine state (engine.c, snapshot.c) ---------------------------------------------------- */

/* One open-addressing slot: a two-word key and a 32-bit value (an index into a dense array;
 * unused by sets). */
typedef struct clr_slot {
    uint64_t a, b;
    uint32_t v;
    uint32_t used;
} clr_slot;

typedef struct clr_table {
    clr_slot *slots;
    size_t cap; /* a power of two, or 0 */
    size_t count;
} clr_table;

typedef struct clr_acct {
    uint64_t id;
    uint32_t member;
    int64_t credit; /* credit limit, fen, >= 0 */
    int64_t avail, frozen;
} clr_acct;

typedef struct clr_pos {
    uint64_t account; /* a client account or a contra (CLR_CONTRA_*) */
    uint32_t security;
    uint32_t inst; /* index in the instrument table */
    int64_t avail, frozen, pending;
} clr_pos;

#define CLR_ORDER_CLOSED UINT32_MAX

typedef struct clr_order {
    uint64_t account, order_id;
    uint32_t security, inst, acct_idx;
    uint8_t venue, side;
    int64_t limit;   /* limit price, fen */
    int64_t open;    /* open quantity */
    int64_t frozen;  /* buy: cash still frozen = limit * open + fee_rem; sell: 0 */
    int64_t fee_rem; /* buy: fee freeze not yet charged */
    /* Lookup caches, not state (never in a snapshot or the state hash): index + 1 of the
     * order's client position and of its (member, security) netting row today, 0 = not looked
     * up yet. Both stay valid while the order is open: positions are never removed or moved,
     * and netting rows are cleared only at EOD, which closes every order. A zero-initialised
     * order (snapshot load) simply looks them up on first use. */
    uint32_t pos_ref, net_ref;
} clr_order;

struct clr_engine {
    unsigned shard, nshards;
    uint64_t seq;
    uint32_t last_date;   /* last EOD date, 0 before the first */
    uint32_t settle_date; /* the closed day whose rows are in settle */
    clr_fees fees;
    clr_instrument *inst;
    uint8_t *inst_venue;
    int64_t *xfer_net;    /* per instrument: transfers in - out */
    uint32_t *contra_ref; /* per instrument: index + 1 of its contra position, 0 = not cached */
    size_t num_inst;
    uint8_t ref_digest[32];

    int64_t contra[4]; /* cash of CLR_CONTRA_SH/SZ/BJ at [1..3] */
    int64_t fee_cash;
    int64_t deposits, withdrawals;
    uint64_t fills;

    /* used_tab: (account, order_id) of every order accepted today -> its slab index while
     * open, CLR_ORDER_CLOSED after; exec_tab: (account, exec_id) applied today (a set). */
    clr_table acct_tab, pos_tab, used_tab, exec_tab, net_tab;
    clr_acct *accts;
    size_t num_accts, accts_cap;
    clr_pos *pos;
    size_t num_pos, pos_cap;
    clr_order *ords; /* slab: entries with side == 0 are free */
    size_t num_ords, ords_cap, live_ords;
    uint32_t *ord_free; /* free slab indices (a stack) */
    size_t num_free, free_cap;
    clr_net_row *net; /* today's netting rows (unsorted) */
    size_t num_net, net_cap;
    clr_net_row *settle; /* the last closed day's rows, sorted */
    size_t num_settle, settle_cap;
};

void clr__table_free(clr_table *t);
int clr__table_reserve(clr_table *t, size_t more);
clr_slot *clr__table_find(const clr_table *t, uint64_t a, uint64_t b);
void clr__table_insert(clr_table *t, uint64_t a, uint64_t b, uint32_t v);
int clr__vec_reserve(void **p, size_t *cap, size_t count, size_t more, size_t elem);
int clr__inst_find(const clr_engine *e, uint32_t sec);
clr_pos *clr__pos_add(clr_engine *e, uint64_t acct, uint32_t sec, uint32_t inst);
void clr__refdata_digest(const clr_refdata *ref, uint8_t out[32]);
/* clr__fee_max: the fees of one buy fill of the whole amount (the fee freeze); -1 overflow. */
int64_t clr__fee_max(const clr_fees *f, int64_t amount);

#endif /* DENGBAO_CLEARING_INTERNAL_H */
