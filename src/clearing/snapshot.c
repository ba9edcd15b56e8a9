/* snapshot.c: the clearing engine's canonical serialization (snapshot, state hash, restore).
 *
 * The bytes are a function of the engine's logical state only: every section is sorted by its
 * key, so two engines that applied the same events serialize identically whatever their hash
 * tables' capacities or insertion histories. clr_engine_state_hash is SM3 over these bytes.
 *
 * Layout (little-endian, docs/clearing.md "Snapshot format"):
 *
 *   off len  field
 *     0   8  magic "DBCLSNAP"
 *     8   4  version (1)
 *    12   4  shard
 *    16   4  nshards
 *    20   4  reserved (0)
 *    24   8  seq (last applied event)
 *    32  32  SM3 digest of the reference data (clr__refdata_digest)
 *    64   4  last EOD date     68  4  settlement date
 *    72   8  deposits          80  8  withdrawals       88  8  fills
 *    96  32  cash of contra SH, SZ, BJ and of the fee account (4 x i64)
 *   128      8 sections, in this order, each: u32 tag (1..8), u32 record size, u64 count,
 *            then count records:
 *            1 accounts      40: id u64, member u32, 0 u32, credit, avail, frozen (i64)
 *            2 positions     40: account u64, security u32, 0 u32, avail, frozen, pending
 *            3 open orders   48: account, order_id u64, security u32, side u8, 0 x3,
 *                                limit, open, fee_rem (i64); the cash frozen is derived
 *            4 order ids used today  16: account, order_id
 *            5 exec ids applied today 16: account, exec_id
 *            6 transfers     16: security u32, 0 u32, net in - out (i64); one per instrument
 *            7 netting today 48: member u32, security u32, buy_qty, sell_qty, buy_amount,
 *                                sell_amount, fees (i64); net_qty and net_cash are derived
 *            8 settlement    48: the last closed day's rows, same record
 *   end-32 32  SM3 of every byte before it
 *
 * Restore refuses: a short buffer or bad magic (DBAO_EFORMAT), a version other than 1
 * (DBAO_ENOTSUP if newer), a wrong trailer (DBAO_EVERIFY), another shard or reference data
 * (DBAO_EINVAL), and any section that is out of order, unsorted or duplicate, references an
 * unknown account or instrument, holds a value out of range, or breaks an engine invariant
 * (frozen cash of an account != what its buy orders freeze; frozen shares != open sells; cash
 * not conserved; shares not conserved): DBAO_EFORMAT. So a restored engine satisfies the same
 * invariants as one built by events, and every later apply stays within checked arithmetic.
 */
#include <stdlib.h>
#include <string.h>

#include "dengbao/clearing.h"
#include "dengbao/gm.h"
#include "internal.h"

#define SNAP_MAGIC   "DBCLSNAP"
#define SNAP_VERSION 1u
#define SNAP_HDR     128
#define NSECT        8

static const uint32_t rec_size[NSECT + 1] = {0, 40, 40, 48, 16, 16, 16, 48, 48};

/* ---- writing -------------------------------------------------------------------------------- */

typedef struct key2 {
    uint64_t a, b;
} key2;

static int
cmp_key2(const void *x, const void *y)
{
    const key2 *p = x, *q = y;
    if (p->a != q->a) {
        return p->a < q->a ? -1 : 1;
    }
    return p->b < q->b ? -1 : (p->b > q->b);
}

static int
cmp_acct(const void *x, const void *y)
{
    const clr_acct *p = x, *q = y;
    return p->id < q->id ? -1 : (p->id > q->id);
}

static int
cmp_pos(const void *x, const void *y)
{
    const clr_pos *p = x, *q = y;
    if (p->account != q->account) {
        return p->account < q->account ? -1 : 1;
    }
    return p->security < q->security ? -1 : (p->security > q->security);
}

static int
cmp_order(const void *x, const void *y)
{
    const clr_order *p = x, *q = y;
    if (p->account != q->account) {
        return p->account < q->account ? -1 : 1;
    }
    return p->order_id < q->order_id ? -1 : (p->order_id > q->order_id);
}

static int
cmp_net(const void *x, const void *y)
{
    const clr_net_row *p = x, *q = y;
    if (p->member != q->member) {
        return p->member < q->member ? -1 : 1;
    }
    return p->security < q->security ? -1 : (p->security > q->security);
}

/* Sorted copy of a dense array (qsort on a copy: the engine is const). */
static void *
sorted_copy(const void *src, size_t n, size_t sz, int (*cmp)(const void *, const void *))
{
    void *p = dbao_malloc(n ? n * sz : 1);
    if (p != NULL && n) {
        memcpy(p, src, n * sz);
        qsort(p, n, sz, cmp);
    }
    return p;
}

static key2 *
set_keys(const clr_table *t)
{
    key2 *k = dbao_malloc(t->count ? t->count * sizeof *k : 1);
    if (k == NULL) {
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i].used) {
            k[n++] = (key2){t->slots[i].a, t->slots[i].b};
        }
    }
    qsort(k, n, sizeof *k, cmp_key2);
    return k;
}

static uint8_t *
sect(uint8_t *p, uint32_t tag, uint64_t count)
{
    clr__put_u32(p, tag);
    clr__put_u32(p + 4, rec_size[tag]);
    clr__put_u64(p + 8, count);
    return p + 16;
}

static uint8_t *
put_net(uint8_t *p, const clr_net_row *r)
{
    clr__put_u32(p, r->member);
    clr__put_u32(p + 4, r->security);
    clr__put_u64(p + 8, (uint64_t) r->buy_qty);
    clr__put_u64(p + 16, (uint64_t) r->sell_qty);
    clr__put_u64(p + 24, (uint64_t) r->buy_amount);
    clr__put_u64(p + 32, (uint64_t) r->sell_amount);
    clr__put_u64(p + 40, (uint64_t) r->fees);
    return p + 48;
}

int
clr_engine_snapshot(const clr_engine *e, uint8_t **out, size_t *out_len, dbao_err *err)
{
    *out = NULL;
    *out_len = 0;
    int rc = DBAO_ENOMEM;
    clr_acct *acc = sorted_copy(e->accts, e->num_accts, sizeof *acc, cmp_acct);
    clr_pos *pos = sorted_copy(e->pos, e->num_pos, sizeof *pos, cmp_pos);
    clr_order *ord = dbao_malloc(e->live_ords ? e->live_ords * sizeof *ord : 1);
    if (ord != NULL) {
        size_t k = 0;
        for (size_t i = 0; i < e->num_ords; i++) {
            if (e->ords[i].side != 0) {
                ord[k++] = e->ords[i];
            }
        }
        qsort(ord, k, sizeof *ord, cmp_order);
    }
    clr_net_row *net = sorted_copy(e->net, e->num_net, sizeof *net, cmp_net);
    key2 *used = set_keys(&e->used_tab);
    key2 *exec = set_keys(&e->exec_tab);
    uint8_t *buf = NULL;
    if (acc == NULL || pos == NULL || ord == NULL || net == NULL || used == NULL || exec == NULL) {
        goto out;
    }
    size_t len = SNAP_HDR + NSECT * 16 + 32 + e->num_accts * 40 + e->num_pos * 40 +
                 e->live_ords * 48 + (e->used_tab.count + e->exec_tab.count) * 16 +
                 e->num_inst * 16 + (e->num_net + e->num_settle) * 48;
    buf = dbao_calloc(1, len);
    if (buf == NULL) {
        goto out;
    }
    uint8_t *p = buf;
    memcpy(p, SNAP_MAGIC, 8);
    clr__put_u32(p + 8, SNAP_VERSION);
    clr__put_u32(p + 12, e->shard);
    clr__put_u32(p + 16, e->nshards);
    clr__put_u64(p + 24, e->seq);
    memcpy(p + 32, e->ref_digest, 32);
    clr__put_u32(p + 64, e->last_date);
    clr__put_u32(p + 68, e->settle_date);
    clr__put_u64(p + 72, (uint64_t) e->deposits);
    clr__put_u64(p + 80, (uint64_t) e->withdrawals);
    clr__put_u64(p + 88, e->fills);
    for (int v = 1; v <= 3; v++) {
        clr__put_u64(p + 96 + 8 * (v - 1), (uint64_t) e->contra[v]);
    }
    clr__put_u64(p + 120, (uint64_t) e->fee_cash);
    p += SNAP_HDR;

    p = sect(p, 1, e->num_accts);
    for (size_t i = 0; i < e->num_accts; i++, p += 40) {
        clr__put_u64(p, acc[i].id);
        clr__put_u32(p + 8, acc[i].member);
        clr__put_u64(p + 16, (uint64_t) acc[i].credit);
        clr__put_u64(p + 24, (uint64_t) acc[i].avail);
        clr__put_u64(p + 32, (uint64_t) acc[i].frozen);
    }
    p = sect(p, 2, e->num_pos);
    for (size_t i = 0; i < e->num_pos; i++, p += 40) {
        clr__put_u64(p, pos[i].account);
        clr__put_u32(p + 8, pos[i].security);
        clr__put_u64(p + 16, (uint64_t) pos[i].avail);
        clr__put_u64(p + 24, (uint64_t) pos[i].frozen);
        clr__put_u64(p + 32, (uint64_t) pos[i].pending);
    }
    p = sect(p, 3, e->live_ords);
    for (size_t i = 0; i < e->live_ords; i++, p += 48) {
        clr__put_u64(p, ord[i].account);
        clr__put_u64(p + 8, ord[i].order_id);
        clr__put_u32(p + 16, ord[i].security);
        p[20] = ord[i].side;
        clr__put_u64(p + 24, (uint64_t) ord[i].limit);
        clr__put_u64(p + 32, (uint64_t) ord[i].open);
        clr__put_u64(p + 40, (uint64_t) ord[i].fee_rem);
    }
    p = sect(p, 4, e->used_tab.count);
    for (size_t i = 0; i < e->used_tab.count; i++, p += 16) {
        clr__put_u64(p, used[i].a);
        clr__put_u64(p + 8, used[i].b);
    }
    p = sect(p, 5, e->exec_tab.count);
    for (size_t i = 0; i < e->exec_tab.count; i++, p += 16) {
        clr__put_u64(p, exec[i].a);
        clr__put_u64(p + 8, exec[i].b);
    }
    p = sect(p, 6, e->num_inst);
    for (size_t i = 0; i < e->num_inst; i++, p += 16) {
        clr__put_u32(p, e->inst[i].security);
        clr__put_u64(p + 8, (uint64_t) e->xfer_net[i]);
    }
    p = sect(p, 7, e->num_net);
    for (size_t i = 0; i < e->num_net; i++) {
        p = put_net(p, &net[i]);
    }
    p = sect(p, 8, e->num_settle);
    for (size_t i = 0; i < e->num_settle; i++) {
        p = put_net(p, &e->settle[i]);
    }
    gm_sm3(p, buf, (size_t) (p - buf));
    *out = buf;
    *out_len = len;
    buf = NULL;
    rc = 0;
out:
    dbao_free(acc);
    dbao_free(pos);
    dbao_free(ord);
    dbao_free(net);
    dbao_free(used);
    dbao_free(exec);
    dbao_free(buf);
    if (rc != 0) {
        dbao_err_set(err, rc, "clearing snapshot: out of memory");
    }
    return rc;
}

int
clr_engine_state_hash(const clr_engine *e, uint8_t out[32], dbao_err *err)
{
    uint8_t *s;
    size_t n;
    int rc = clr_engine_snapshot(e, &s, &n, err);
    if (rc != 0) {
        return rc;
    }
    gm_sm3(out, s, n);
    dbao_free(s);
    return 0;
}

/* ---- restoring ------------------------------------------------------------------------------ */

typedef struct rd {
    const uint8_t *p;
    size_t left;
} rd;

#define BAD(...) dbao_err_set(err, DBAO_EFORMAT, "clearing snapshot: " __VA_ARGS__)

static int
sect_open(rd *r, uint32_t tag, uint64_t *count, dbao_err *err)
{
    if (r->left < 16) {
        return BAD("truncated before section %u", tag);
    }
    if (clr__get_u32(r->p) != tag || clr__get_u32(r->p + 4) != rec_size[tag]) {
        return BAD("section %u: bad tag or record size", tag);
    }
    uint64_t n = clr__get_u64(r->p + 8);
    r->p += 16;
    r->left -= 16;
    if (n > r->left / rec_size[tag]) {
        return BAD("section %u: count beyond the data", tag);
    }
    *count = n;
    return 0;
}

static bool
amt_ok(int64_t v)
{
    return v >= -CLR_AMOUNT_MAX && v <= CLR_AMOUNT_MAX;
}

static bool
qty_ok(int64_t v)
{
    /* positions and sums of quantities: bounded well inside int64 */
    return v >= -((int64_t) 1 << 60) && v <= ((int64_t) 1 << 60);
}

static int
get_net(clr_net_row *row, const uint8_t *p)
{
    row->member = clr__get_u32(p);
    row->security = clr__get_u32(p + 4);
    row->buy_qty = (int64_t) clr__get_u64(p + 8);
    row->sell_qty = (int64_t) clr__get_u64(p + 16);
    row->buy_amount = (int64_t) clr__get_u64(p + 24);
    row->sell_amount = (int64_t) clr__get_u64(p + 32);
    row->fees = (int64_t) clr__get_u64(p + 40);
    if (row->member == 0 || row->buy_qty < 0 || row->sell_qty < 0 || row->buy_amount < 0 ||
        row->sell_amount < 0 || row->fees < 0 || !qty_ok(row->buy_qty) || !qty_ok(row->sell_qty) ||
        row->buy_amount > ((int64_t) 1 << 61) || row->sell_amount > ((int64_t) 1 << 61) ||
        row->fees > ((int64_t) 1 << 61)) {
        return -1;
    }
    row->net_qty = row->buy_qty - row->sell_qty;
    row->net_cash = row->sell_amount - row->buy_amount - row->fees;
    return 0;
}

static int
restore_body(clr_engine *e, rd *r, dbao_err *err)
{
    int rc;
    uint64_t n;
    /* 1 accounts */
    int64_t *acc_frozen = NULL, *pos_frozen = NULL;
    if ((rc = sect_open(r, 1, &n, err)) != 0) {
        return rc;
    }
    acc_frozen = dbao_malloc(n ? n * sizeof *acc_frozen : 1);
    if (acc_frozen == NULL || (rc = clr__table_reserve(&e->acct_tab, n)) != 0 ||
        (rc = clr__vec_reserve((void **) &e->accts, &e->accts_cap, 0, n, sizeof *e->accts)) != 0) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "clearing snapshot: out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < n; i++, r->p += 40, r->left -= 40) {
        clr_acct a = {.id = clr__get_u64(r->p),
                      .member = clr__get_u32(r->p + 8),
                      .credit = (int64_t) clr__get_u64(r->p + 16),
                      .avail = (int64_t) clr__get_u64(r->p + 24),
                      .frozen = (int64_t) clr__get_u64(r->p + 32)};
        if (clr__get_u32(r->p + 12) != 0 || a.id == 0 || a.id > CLR_ACCOUNT_MAX ||
            clr_route_shard(a.id, e->nshards) != e->shard || a.member == 0 || a.credit < 0 ||
            a.credit > CLR_AMOUNT_MAX || a.frozen < 0 || a.frozen > CLR_AMOUNT_MAX ||
            a.avail < -a.credit || a.avail > CLR_AMOUNT_MAX ||
            (i > 0 && a.id <= e->accts[i - 1].id)) {
            rc = BAD("account record %llu invalid or unsorted", (unsigned long long) i);
            goto out;
        }
        acc_frozen[i] = a.frozen;
        a.frozen = 0; /* re-derived from the open orders below, then compared */
        e->accts[i] = a;
        clr__table_insert(&e->acct_tab, a.id, 0, (uint32_t) i);
        e->num_accts++;
    }
    /* 2 positions */
    if ((rc = sect_open(r, 2, &n, err)) != 0) {
        goto out;
    }
    if ((rc = clr__table_reserve(&e->pos_tab, n)) != 0 ||
        (rc = clr__vec_reserve((void **) &e->pos, &e->pos_cap, 0, n, sizeof *e->pos)) != 0) {
        rc = dbao_err_set(err, rc, "clearing snapshot: out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < n; i++, r->p += 40, r->left -= 40) {
        uint64_t acct = clr__get_u64(r->p);
        uint32_t sec = clr__get_u32(r->p + 8);
        int ii = clr__inst_find(e, sec);
        bool contra = acct >= CLR_CONTRA_SH && acct <= CLR_CONTRA_BJ;
        clr_pos p = {.account = acct,
                     .security = sec,
                     .inst = (uint32_t) ii,
                     .avail = (int64_t) clr__get_u64(r->p + 16),
                     .frozen = (int64_t) clr__get_u64(r->p + 24),
                     .pending = (int64_t) clr__get_u64(r->p + 32)};
        bool known = contra || clr__table_find(&e->acct_tab, acct, 0) != NULL;
        bool sorted = i == 0 || acct > e->pos[i - 1].account ||
                      (acct == e->pos[i - 1].account && sec > e->pos[i - 1].security);
        bool ranges = contra ? (qty_ok(p.avail) && p.frozen == 0 && p.pending == 0)
                             : (p.avail >= 0 && p.frozen >= 0 && p.pending >= 0 &&
                                qty_ok(p.avail) && qty_ok(p.frozen) && qty_ok(p.pending));
        if (clr__get_u32(r->p + 12) != 0 || ii < 0 || e->inst_venue[ii] == CLR_VENUE_NONE ||
            !known || !sorted || !ranges ||
            (contra && acct != CLR_CONTRA_SH + e->inst_venue[ii] - 1)) {
            rc = BAD("position record %llu invalid or unsorted", (unsigned long long) i);
            goto out;
        }
        e->pos[i] = p;
        clr__table_insert(&e->pos_tab, acct, sec, (uint32_t) i);
        e->num_pos++;
    }
    pos_frozen = dbao_calloc(n ? n : 1, sizeof *pos_frozen);
    if (pos_frozen == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "clearing snapshot: out of memory");
        goto out;
    }
    /* 3 open orders: re-freeze, then compare with the stored frozen values. */
    if ((rc = sect_open(r, 3, &n, err)) != 0) {
        goto out;
    }
    if ((rc = clr__vec_reserve((void **) &e->ords, &e->ords_cap, 0, n, sizeof *e->ords)) != 0 ||
        (rc = clr__vec_reserve((void **) &e->ord_free, &e->free_cap, 0, n, sizeof *e->ord_free)) !=
            0) {
        rc = dbao_err_set(err, rc, "clearing snapshot: out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < n; i++, r->p += 48, r->left -= 48) {
        clr_order o = {.account = clr__get_u64(r->p),
                       .order_id = clr__get_u64(r->p + 8),
                       .security = clr__get_u32(r->p + 16),
                       .side = r->p[20],
                       .limit = (int64_t) clr__get_u64(r->p + 24),
                       .open = (int64_t) clr__get_u64(r->p + 32),
                       .fee_rem = (int64_t) clr__get_u64(r->p + 40)};
        int ii = clr__inst_find(e, o.security);
        const clr_slot *as = clr__table_find(&e->acct_tab, o.account, 0);
        bool known = as != NULL;
        uint32_t ai = as ? as->v : 0;
        bool sorted = i == 0 || o.account > e->ords[i - 1].account ||
                      (o.account == e->ords[i - 1].account && o.order_id > e->ords[i - 1].order_id);
        if (r->p[21] || r->p[22] || r->p[23] || ii < 0 || e->inst_venue[ii] == CLR_VENUE_NONE ||
            !known || !sorted || (o.side != CLR_SIDE_BUY && o.side != CLR_SIDE_SELL) ||
            o.limit <= 0 || o.limit > CLR_PRICE_MAX || o.open <= 0 || o.open > CLR_QTY_MAX ||
            o.fee_rem < 0 || o.fee_rem > CLR_AMOUNT_MAX ||
            (o.side == CLR_SIDE_SELL && o.fee_rem != 0)) {
            rc = BAD("order record %llu invalid or unsorted", (unsigned long long) i);
            goto out;
        }
        o.inst = (uint32_t) ii;
        o.venue = e->inst_venue[ii];
        o.acct_idx = ai;
        if (o.side == CLR_SIDE_BUY) {
            int64_t f;
            if (__builtin_mul_overflow(o.limit, o.open, &f) ||
                __builtin_add_overflow(f, o.fee_rem, &f) || f > CLR_AMOUNT_MAX ||
                __builtin_add_overflow(e->accts[ai].frozen, f, &e->accts[ai].frozen)) {
                rc = BAD("order record %llu: freeze out of range", (unsigned long long) i);
                goto out;
            }
            o.frozen = f;
        } else {
            const clr_slot *ps = clr__table_find(&e->pos_tab, o.account, o.security);
            clr_pos *pp = ps ? &e->pos[ps->v] : NULL;
            if (pp == NULL ||
                __builtin_add_overflow(pos_frozen[pp - e->pos], o.open, &pos_frozen[pp - e->pos])) {
                rc = BAD("order record %llu: no position for the sell", (unsigned long long) i);
                goto out;
            }
        }
        e->ords[i] = o;
        e->num_ords++;
        e->live_ords++;
    }
    for (size_t i = 0; i < e->num_accts; i++) {
        if (e->accts[i].frozen != acc_frozen[i]) {
            rc = BAD("account %zu: frozen cash differs from its open orders", i);
            goto out;
        }
    }
    for (size_t i = 0; i < e->num_pos; i++) {
        if (e->pos[i].frozen != pos_frozen[i]) {
            rc = BAD("position %zu: frozen shares differ from its open sells", i);
            goto out;
        }
    }
    /* 4, 5 per-day sets */
    for (uint32_t tag = 4; tag <= 5; tag++) {
        clr_table *t = tag == 4 ? &e->used_tab : &e->exec_tab;
        if ((rc = sect_open(r, tag, &n, err)) != 0) {
            goto out;
        }
        if ((rc = clr__table_reserve(t, n)) != 0) {
            rc = dbao_err_set(err, rc, "clearing snapshot: out of memory");
            goto out;
        }
        uint64_t pa = 0, pb = 0;
        for (uint64_t i = 0; i < n; i++, r->p += 16, r->left -= 16) {
            uint64_t a = clr__get_u64(r->p), b = clr__get_u64(r->p + 8);
            if (a == 0 || a > CLR_ACCOUNT_MAX || clr_route_shard(a, e->nshards) != e->shard ||
                (i > 0 && (a < pa || (a == pa && b <= pb)))) {
                rc = BAD("section %u record %llu invalid or unsorted", tag, (unsigned long long) i);
                goto out;
            }
            clr__table_insert(t, a, b, tag == 4 ? CLR_ORDER_CLOSED : 0);
            pa = a;
            pb = b;
        }
    }
    /* Every open order's id is in the used set (they are inserted together). */
    for (size_t i = 0; i < e->num_ords; i++) {
        clr_slot *us = clr__table_find(&e->used_tab, e->ords[i].account, e->ords[i].order_id);
        if (us == NULL) {
            rc = BAD("open order %zu missing from the used order ids", i);
            goto out;
        }
        us->v = (uint32_t) i;
    }
    /* 6 transfers */
    if ((rc = sect_open(r, 6, &n, err)) != 0) {
        goto out;
    }
    if (n != e->num_inst) {
        rc = BAD("transfer section: %llu rows for %zu instruments", (unsigned long long) n,
                 e->num_inst);
        goto out;
    }
    for (uint64_t i = 0; i < n; i++, r->p += 16, r->left -= 16) {
        int64_t v = (int64_t) clr__get_u64(r->p + 8);
        if (clr__get_u32(r->p) != e->inst[i].security || clr__get_u32(r->p + 4) != 0 ||
            !qty_ok(v)) {
            rc = BAD("transfer record %llu invalid", (unsigned long long) i);
            goto out;
        }
        e->xfer_net[i] = v;
    }
    /* 7 netting today, 8 settlement */
    for (uint32_t tag = 7; tag <= 8; tag++) {
        if ((rc = sect_open(r, tag, &n, err)) != 0) {
            goto out;
        }
        clr_net_row **arr = tag == 7 ? &e->net : &e->settle;
        size_t *cap = tag == 7 ? &e->net_cap : &e->settle_cap;
        size_t *num = tag == 7 ? &e->num_net : &e->num_settle;
        if ((rc = clr__vec_reserve((void **) arr, cap, 0, n, sizeof **arr)) != 0 ||
            (tag == 7 && (rc = clr__table_reserve(&e->net_tab, n)) != 0)) {
            rc = dbao_err_set(err, rc, "clearing snapshot: out of memory");
            goto out;
        }
        for (uint64_t i = 0; i < n; i++, r->p += 48, r->left -= 48) {
            clr_net_row row;
            if (get_net(&row, r->p) != 0 || clr__inst_find(e, row.security) < 0 ||
                (i > 0 && cmp_net(&(*arr)[i - 1], &row) >= 0)) {
                rc = BAD("section %u record %llu invalid or unsorted", tag, (unsigned long long) i);
                goto out;
            }
            (*arr)[i] = row;
            if (tag == 7) {
                clr__table_insert(&e->net_tab, row.member, row.security, (uint32_t) i);
            }
            (*num)++;
        }
    }
    if (r->left != 32) {
        rc = BAD("trailing bytes after the sections");
        goto out;
    }
    /* Conservation, as after every event; sums checked (a forged snapshot could overflow). */
    int64_t cash = 0;
    bool ovf = false;
    for (size_t i = 0; i < e->num_accts; i++) {
        ovf |= __builtin_add_overflow(cash, e->accts[i].avail, &cash);
        ovf |= __builtin_add_overflow(cash, e->accts[i].frozen, &cash);
    }
    for (int v = 1; v <= 3; v++) {
        ovf |= __builtin_add_overflow(cash, e->contra[v], &cash);
    }
    ovf |= __builtin_add_overflow(cash, e->fee_cash, &cash);
    if (ovf || cash != e->deposits - e->withdrawals) {
        rc = BAD("cash not conserved");
        goto out;
    }
    int64_t *sh = dbao_calloc(e->num_inst ? e->num_inst : 1, sizeof *sh);
    if (sh == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "clearing snapshot: out of memory");
        goto out;
    }
    for (size_t i = 0; i < e->num_pos; i++) {
        const clr_pos *p = &e->pos[i];
        ovf |= __builtin_add_overflow(sh[p->inst], p->avail, &sh[p->inst]);
        ovf |= __builtin_add_overflow(sh[p->inst], p->frozen, &sh[p->inst]);
        ovf |= __builtin_add_overflow(sh[p->inst], p->pending, &sh[p->inst]);
    }
    for (size_t i = 0; i < e->num_inst; i++) {
        ovf |= sh[i] != e->xfer_net[i];
    }
    dbao_free(sh);
    if (ovf) {
        rc = BAD("shares not conserved");
        goto out;
    }
    rc = 0;
out:
    dbao_free(pos_frozen);
    dbao_free(acc_frozen);
    return rc;
}

int
clr_engine_restore(clr_engine **out, const clr_refdata *ref, unsigned shard, unsigned nshards,
                   const uint8_t *snap, size_t snap_len, dbao_err *err)
{
    *out = NULL;
    if (snap_len < SNAP_HDR + 32 || memcmp(snap, SNAP_MAGIC, 8) != 0) {
        return BAD("not a clearing snapshot (magic or length)");
    }
    uint32_t ver = clr__get_u32(snap + 8);
    if (ver > SNAP_VERSION) {
        return dbao_err_set(err, DBAO_ENOTSUP, "clearing snapshot: version %u is newer than %u",
                            ver, SNAP_VERSION);
    }
    if (ver != SNAP_VERSION) {
        return BAD("unknown version %u", ver);
    }
    uint8_t dg[32];
    gm_sm3(dg, snap, snap_len - 32);
    if (memcmp(dg, snap + snap_len - 32, 32) != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "clearing snapshot: sm3 trailer mismatch");
    }
    if (clr__get_u32(snap + 12) != shard || clr__get_u32(snap + 16) != nshards) {
        return dbao_err_set(err, DBAO_EINVAL, "clearing snapshot: shard %u of %u, not %u of %u",
                            clr__get_u32(snap + 12), clr__get_u32(snap + 16), shard, nshards);
    }
    if (clr__get_u32(snap + 20) != 0) {
        return BAD("reserved header field not zero");
    }
    clr_engine *e;
    int rc = clr_engine_new(&e, ref, shard, nshards, err);
    if (rc != 0) {
        return rc;
    }
    if (memcmp(snap + 32, e->ref_digest, 32) != 0) {
        clr_engine_free(e);
        return dbao_err_set(err, DBAO_EINVAL, "clearing snapshot: taken with other refdata");
    }
    e->seq = clr__get_u64(snap + 24);
    e->last_date = clr__get_u32(snap + 64);
    e->settle_date = clr__get_u32(snap + 68);
    e->deposits = (int64_t) clr__get_u64(snap + 72);
    e->withdrawals = (int64_t) clr__get_u64(snap + 80);
    e->fills = clr__get_u64(snap + 88);
    for (int v = 1; v <= 3; v++) {
        e->contra[v] = (int64_t) clr__get_u64(snap + 96 + 8 * (v - 1));
    }
    e->fee_cash = (int64_t) clr__get_u64(snap + 120);
    bool ok = e->deposits >= 0 && e->withdrawals >= 0 && e->deposits <= ((int64_t) 1 << 62) &&
              e->withdrawals <= e->deposits && e->fee_cash >= 0 && amt_ok(e->contra[1] >> 5) &&
              amt_ok(e->contra[2] >> 5) && amt_ok(e->contra[3] >> 5) &&
              e->fee_cash <= ((int64_t) 1 << 61) && e->settle_date <= e->last_date &&
              (e->last_date == 0 || (e->last_date >= 19000101 && e->last_date <= 99991231));
    if (!ok) {
        clr_engine_free(e);
        return BAD("header totals out of range");
    }
    rd r = {.p = snap + SNAP_HDR, .left = snap_len - SNAP_HDR};
    rc = restore_body(e, &r, err);
    if (rc != 0) {
        clr_engine_free(e);
        return rc;
    }
    *out = e;
    return 0;
}
