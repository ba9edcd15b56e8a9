/* engine.c: the clearing engine of one shard: accounts, pre-trade checks, fills, netting and
 * end of day. docs/clearing.md is the manual; this essay covers what the code relies on.
 *
 * Purity. clr_engine_apply is a function of (state, event): it reads no clock, draws no random
 * number, uses no floating point, and nothing it outputs (results, movements, snapshots,
 * settlement rows) depends on a hash table's iteration order: snapshot and settlement sort.
 * Replaying the same events therefore gives byte-identical state (clr_engine_state_hash).
 *
 * Money is int64 fen. Every sum and product that could leave int64 is computed with
 * __builtin_*_overflow and refused as CLR_REJ_RANGE; client balances are further bounded by
 * CLR_AMOUNT_MAX. An event is checked completely first, with the new values computed into
 * locals; only then is anything written ("check, then commit"), so a rejected event changes
 * nothing. The one allocation an event may need (a table growing by doubling) is done before
 * the checks (table_reserve), so DBAO_ENOMEM also leaves the state unchanged. In the steady
 * state (tables large enough) an event allocates nothing.
 *
 * Tables. Open addressing with linear probing, a 64-bit mixed hash of a two-word key, load
 * factor <= 1/2, capacity a power of two. Nothing is ever deleted from a table during a day
 * (so no tombstones and no backward shifts): accounts and positions live forever, the per-day
 * tables are cleared wholesale at EOD. Each table maps a key to an index into a dense array
 * (accounts, positions, netting rows) or is a set (exec ids applied today). The table of order
 * ids used today maps (account, order_id) to the order's entry in a slab while it is open and
 * to CLR_ORDER_CLOSED after, so one probe answers both "duplicate id?" and "which open order?";
 * closed slab entries go to a free stack. A single probe (table_probe) serves both a
 * duplicate check and the insertion that follows it. The apply cost is dominated by cache
 * misses on these probes, so the number of distinct tables an event touches is kept minimal,
 * and the misses that remain are overlapped: clr_engine_apply prefetches the home slot of every
 * probe the event will make before any of them (the keys are all in the event), and each
 * record is prefetched as soon as its index is known. An open order caches the index of its
 * client position and of its netting row, and the engine the index of each instrument's contra
 * position (index + 1, 0 = not looked up yet), so a fill reaches them without probing the
 * position and netting tables again. These caches are not state: nothing observable (results,
 * movements, snapshots, the state hash) depends on them, and a restored engine starts with
 * them empty.
 *
 * Fees (per fill, amount a = price * qty fen; rhu(x) = x * ppm / 10^6 rounded half up):
 *   commission = max(commission_min, rhu(a, commission_ppm)); stamp = rhu(a, stamp_ppm) on
 *   sells only; transfer = rhu(a, transfer_ppm).
 * A buy order freezes price * qty + fee_max, fee_max = the fees of one fill of the whole
 * amount at the limit. Splitting into several fills can cost more (each fill pays the minimum
 * commission, and each rounding may add half a fen), so the fees charged to a buy order's fills
 * are capped at what is left of its fee freeze: sum(fees of an order) <= fee_max, always, and
 * the freeze always covers what the order can cost. A sell fill's fees are capped at the fill's
 * amount, so a sell never takes an account's cash below where it was.
 *
 * Conservation (clr_totals): each fill moves cash between the client account, the venue's
 * contra account and the fee account, and shares between the client's position and the
 * contra's position in the same security; deposits, withdrawals and securities transfers are
 * the only flows across the shard's boundary.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "dengbao/clearing.h"
#include "dengbao/gm.h"
#include "internal.h"

/* ---- hash tables ---------------------------------------------------------------------------- */

static inline uint64_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t
hkey(uint64_t a, uint64_t b)
{
    return mix64(a * 0x9e3779b97f4a7c15ULL ^ (b + 0x632be59bd9b4e019ULL));
}

/* Large tables are allocated on 2 MiB boundaries and marked for transparent huge pages: the
 * lookups are random over tens of megabytes, and with 4 KiB pages nearly every one would also
 * miss the TLB (measured: docs/clearing.md, "Performance"). Small tables use the allocator.
 * The size decides which free to use. Large ones are anonymous mappings (over-mapped by 2 MiB
 * and trimmed to the boundary): the kernel hands them out zeroed, so they are not cleared a
 * second time with memset (that pass was measurable while the per-day tables grow). */
#define HUGE_BYTES ((size_t) 2 << 20)

static clr_slot *
slots_alloc(size_t n)
{
    size_t bytes = n * sizeof(clr_slot);
    if (bytes < HUGE_BYTES) {
        return dbao_calloc(n, sizeof(clr_slot));
    }
    /* bytes = 24 * 2^k >= 2 MiB is a multiple of 1 MiB, so of any page size. */
    size_t len = bytes + HUGE_BYTES;
    char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        return NULL;
    }
    char *p = (char *) (((uintptr_t) m + HUGE_BYTES - 1) & ~(uintptr_t) (HUGE_BYTES - 1));
    size_t head = (size_t) (p - m);
    if (head != 0) {
        (void) munmap(m, head);
    }
    if (len - head - bytes != 0) {
        (void) munmap(p + bytes, len - head - bytes);
    }
#ifdef MADV_HUGEPAGE
    (void) madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure is harmless */
#endif
    return (clr_slot *) p;
}

static void
slots_free(clr_slot *s, size_t n)
{
    if (n * sizeof(clr_slot) < HUGE_BYTES) {
        dbao_free(s);
    } else if (s != NULL) {
        (void) munmap(s, n * sizeof(clr_slot));
    }
}

void
clr__table_free(clr_table *t)
{
    slots_free(t->slots, t->cap);
    memset(t, 0, sizeof *t);
}

static int
table_resize(clr_table *t, size_t ncap)
{
    clr_slot *ns = slots_alloc(ncap);
    if (ns == NULL) {
        return DBAO_ENOMEM;
    }
    size_t mask = ncap - 1;
    /* The insertions land at random in the new table: prefetch the home slot of the entry
     * RESIZE_AHEAD positions on so that several misses are in flight at once. */
    enum { RESIZE_AHEAD = 8 };
    for (size_t i = 0; i < t->cap; i++) {
        if (i + RESIZE_AHEAD < t->cap && t->slots[i + RESIZE_AHEAD].used) {
            const clr_slot *f = &t->slots[i + RESIZE_AHEAD];
            __builtin_prefetch(&ns[hkey(f->a, f->b) & mask], 1, 3);
        }
        const clr_slot *s = &t->slots[i];
        if (!s->used) {
            continue;
        }
        size_t j = hkey(s->a, s->b) & mask;
        while (ns[j].used) {
            j = (j + 1) & mask;
        }
        ns[j] = *s;
    }
    slots_free(t->slots, t->cap);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

/* table_reserve makes room for `more` insertions without growing (load stays <= 1/2). */
int
clr__table_reserve(clr_table *t, size_t more)
{
    size_t need = t->count + more;
    if (t->cap != 0 && need * 2 <= t->cap) {
        return 0;
    }
    size_t ncap = t->cap ? t->cap : 64;
    while (need * 2 > ncap) {
        ncap *= 2;
    }
    return table_resize(t, ncap);
}

/* Returns the slot of (a, b) or NULL. */
static inline clr_slot *table_find(const clr_table *t, uint64_t a, uint64_t b);

clr_slot *
clr__table_find(const clr_table *t, uint64_t a, uint64_t b)
{
    return table_find(t, a, b);
}

static inline clr_slot *
table_find(const clr_table *t, uint64_t a, uint64_t b)
{
    if (t->count == 0) {
        return NULL;
    }
    size_t mask = t->cap - 1;
    size_t j = hkey(a, b) & mask;
    for (;;) {
        clr_slot *s = &t->slots[j];
        if (!s->used) {
            return NULL;
        }
        if (s->a == a && s->b == b) {
            return s;
        }
        j = (j + 1) & mask;
    }
}

/* table_prefetch starts loading the home slot of (a, b) without waiting for it (a hint: no
 * fault, no effect on results). A 24-byte slot may straddle two cache lines: both are asked
 * for. __builtin_prefetch is portable (a no-op where the target has no prefetch). */
static inline void
table_prefetch(const clr_table *t, uint64_t a, uint64_t b)
{
    if (t->cap != 0) {
        const char *s = (const char *) &t->slots[hkey(a, b) & (t->cap - 1)];
        __builtin_prefetch(s, 1, 3);
        __builtin_prefetch(s + sizeof(clr_slot) - 1, 1, 3);
    }
}

/* Inserts a key known to be absent; room must have been reserved. */
void
clr__table_insert(clr_table *t, uint64_t a, uint64_t b, uint32_t v)
{
    size_t mask = t->cap - 1;
    size_t j = hkey(a, b) & mask;
    while (t->slots[j].used) {
        j = (j + 1) & mask;
    }
    t->slots[j] = (clr_slot){.a = a, .b = b, .v = v, .used = 1};
    t->count++;
}

/* table_probe returns the slot holding (a, b) (*found true) or the empty slot where it would
 * be inserted (*found false): one probe sequence serves both the duplicate check and the
 * insertion. The table must have capacity (reserved before the event). */
static inline clr_slot *
table_probe(const clr_table *t, uint64_t a, uint64_t b, bool *found)
{
    size_t mask = t->cap - 1;
    size_t j = hkey(a, b) & mask;
    for (;;) {
        clr_slot *s = &t->slots[j];
        if (!s->used || (s->a == a && s->b == b)) {
            *found = s->used;
            return s;
        }
        j = (j + 1) & mask;
    }
}

/* Inserts into the empty slot table_probe returned (nothing inserted in between). */
static inline void
table_fill(clr_table *t, clr_slot *s, uint64_t a, uint64_t b, uint32_t v)
{
    *s = (clr_slot){.a = a, .b = b, .v = v, .used = 1};
    t->count++;
}

static void
table_clear(clr_table *t)
{
    if (t->slots != NULL) {
        memset(t->slots, 0, t->cap * sizeof *t->slots);
    }
    t->count = 0;
}

/* Dense arrays grow by doubling. */
int
clr__vec_reserve(void **p, size_t *cap, size_t count, size_t more, size_t elem)
{
    if (count + more <= *cap) {
        return 0;
    }
    size_t ncap = *cap ? *cap : 64;
    while (ncap < count + more) {
        ncap *= 2;
    }
    void *np = dbao_realloc(*p, ncap * elem);
    if (np == NULL) {
        return DBAO_ENOMEM;
    }
    *p = np;
    *cap = ncap;
    return 0;
}

/* ---- lookups -------------------------------------------------------------------------------- */

static inline clr_acct *
acct_find(const clr_engine *e, uint64_t id)
{
    clr_slot *s = table_find(&e->acct_tab, id, 0);
    return s ? &e->accts[s->v] : NULL;
}

static inline clr_pos *
pos_find(const clr_engine *e, uint64_t acct, uint32_t sec)
{
    clr_slot *s = table_find(&e->pos_tab, acct, sec);
    return s ? &e->pos[s->v] : NULL;
}

static inline clr_order *
order_find(const clr_engine *e, uint64_t acct, uint64_t oid, clr_slot **slot)
{
    clr_slot *s = table_find(&e->used_tab, acct, oid);
    *slot = s;
    return s && s->v != CLR_ORDER_CLOSED ? &e->ords[s->v] : NULL;
}

/* Returns the index of `sec` in the instrument table or -1. Binary search over the sorted
 * reference data (a few thousand codes: ~12 probes in one or two cache lines' worth). */
int
clr__inst_find(const clr_engine *e, uint32_t sec)
{
    size_t lo = 0, hi = e->num_inst;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t s = e->inst[mid].security;
        if (s == sec) {
            return (int) mid;
        }
        if (s < sec) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return -1;
}

/* Creates position (acct, sec) with zero balances; room must have been reserved. */
clr_pos *
clr__pos_add(clr_engine *e, uint64_t acct, uint32_t sec, uint32_t inst)
{
    uint32_t idx = (uint32_t) e->num_pos++;
    e->pos[idx] = (clr_pos){.account = acct, .security = sec, .inst = inst};
    clr__table_insert(&e->pos_tab, acct, sec, idx);
    return &e->pos[idx];
}

/* Closes an open order: its id stays used for the day (slot value CLR_ORDER_CLOSED) and its
 * slab entry goes to the free stack (room reserved when the order was accepted). */
static void
order_remove(clr_engine *e, clr_order *o, clr_slot *slot)
{
    uint32_t idx = slot->v;
    slot->v = CLR_ORDER_CLOSED;
    o->side = 0;
    e->ord_free[e->num_free++] = idx;
    e->live_ords--;
}

/* ---- fees ----------------------------------------------------------------------------------- */

int64_t
clr__fee_ppm(int64_t amount, int64_t ppm)
{
    /* amount <= 2^63 and ppm < 2^31 could overflow int64: use the 128-bit product, which both
     * gcc and clang provide on every 64-bit target (a multiply-high instruction pair). */
    if (amount < 0 || ppm < 0) {
        return -1;
    }
    __int128 p = (__int128) amount * ppm + 500000;
    __int128 q = p / 1000000;
    if (q > INT64_MAX) {
        return -1;
    }
    return (int64_t) q;
}

/* Fees of one fill of amount `a`; -1 on overflow. */
static int64_t
fees_of(const clr_fees *f, int64_t a, bool sell)
{
    int64_t c = clr__fee_ppm(a, f->commission_ppm);
    int64_t s = sell ? clr__fee_ppm(a, f->stamp_ppm) : 0;
    int64_t t = clr__fee_ppm(a, f->transfer_ppm);
    if (c < 0 || s < 0 || t < 0) {
        return -1;
    }
    if (c < f->commission_min) {
        c = f->commission_min;
    }
    int64_t sum;
    if (__builtin_add_overflow(c, s, &sum) || __builtin_add_overflow(sum, t, &sum)) {
        return -1;
    }
    return sum;
}

int64_t
clr__fee_max(const clr_fees *f, int64_t amount)
{
    return fees_of(f, amount, false);
}

/* ---- engine lifecycle ------------------------------------------------------------------------ */

static int
check_refdata(const clr_refdata *ref, dbao_err *err)
{
    if (ref == NULL || (ref->num_instruments > 0 && ref->instruments == NULL)) {
        return dbao_err_set(err, DBAO_EINVAL, "clearing refdata: no instruments table");
    }
    if (ref->num_instruments > UINT32_MAX / 2) {
        return dbao_err_set(err, DBAO_EINVAL, "clearing refdata: too many instruments");
    }
    const clr_fees *f = &ref->fees;
    if (f->commission_ppm < 0 || f->commission_ppm > 1000000 || f->stamp_ppm < 0 ||
        f->stamp_ppm > 1000000 || f->transfer_ppm < 0 || f->transfer_ppm > 1000000 ||
        f->commission_min < 0 || f->commission_min > CLR_AMOUNT_MAX) {
        return dbao_err_set(err, DBAO_EINVAL, "clearing refdata: fees out of range");
    }
    for (size_t i = 0; i < ref->num_instruments; i++) {
        const clr_instrument *in = &ref->instruments[i];
        if (in->security > 999999) {
            return dbao_err_set(err, DBAO_EINVAL, "clearing refdata: security %u not 6 digits",
                                in->security);
        }
        if (i > 0 && in->security <= ref->instruments[i - 1].security) {
            return dbao_err_set(err, DBAO_EINVAL,
                                "clearing refdata: instruments unsorted or duplicate at %06u",
                                in->security);
        }
        if (in->tick < 1 || in->tick > CLR_PRICE_MAX || in->lot < 1 || in->lot > CLR_QTY_MAX) {
            return dbao_err_set(err, DBAO_EINVAL, "clearing refdata: bad tick or lot for %06u",
                                in->security);
        }
        if (in->price_lo < 0 || in->price_hi < in->price_lo || in->price_hi > CLR_PRICE_MAX) {
            return dbao_err_set(err, DBAO_EINVAL, "clearing refdata: bad price band for %06u",
                                in->security);
        }
    }
    return 0;
}

void
clr__refdata_digest(const clr_refdata *ref, uint8_t out[32])
{
    gm_sm3_ctx c;
    uint8_t b[40];
    gm_sm3_init(&c);
    gm_sm3_update(&c, "DBCLREF1", 8);
    clr__put_u64(b + 0, (uint64_t) ref->fees.commission_ppm);
    clr__put_u64(b + 8, (uint64_t) ref->fees.commission_min);
    clr__put_u64(b + 16, (uint64_t) ref->fees.stamp_ppm);
    clr__put_u64(b + 24, (uint64_t) ref->fees.transfer_ppm);
    clr__put_u64(b + 32, (uint64_t) ref->num_instruments);
    gm_sm3_update(&c, b, 40);
    for (size_t i = 0; i < ref->num_instruments; i++) {
        const clr_instrument *in = &ref->instruments[i];
        clr__put_u64(b + 0, in->security);
        clr__put_u64(b + 8, (uint64_t) in->tick);
        clr__put_u64(b + 16, (uint64_t) in->lot);
        clr__put_u64(b + 24, (uint64_t) in->price_lo);
        clr__put_u64(b + 32, (uint64_t) in->price_hi);
        gm_sm3_update(&c, b, 40);
    }
    gm_sm3_final(&c, out);
}

int
clr_engine_new(clr_engine **out, const clr_refdata *ref, unsigned shard, unsigned nshards,
               dbao_err *err)
{
    *out = NULL;
    if (nshards < 1 || shard >= nshards) {
        return dbao_err_set(err, DBAO_EINVAL, "clearing engine: shard %u of %u", shard, nshards);
    }
    int rc = check_refdata(ref, err);
    if (rc != 0) {
        return rc;
    }
    clr_engine *e = dbao_calloc(1, sizeof *e);
    if (e == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "clearing engine: out of memory");
    }
    e->shard = shard;
    e->nshards = nshards;
    e->fees = ref->fees;
    e->num_inst = ref->num_instruments;
    size_t n = e->num_inst ? e->num_inst : 1;
    e->inst = dbao_malloc(n * sizeof *e->inst);
    e->inst_venue = dbao_calloc(n, sizeof *e->inst_venue);
    e->xfer_net = dbao_calloc(n, sizeof *e->xfer_net);
    e->contra_ref = dbao_calloc(n, sizeof *e->contra_ref);
    if (e->inst == NULL || e->inst_venue == NULL || e->xfer_net == NULL || e->contra_ref == NULL) {
        clr_engine_free(e);
        return dbao_err_set(err, DBAO_ENOMEM, "clearing engine: out of memory");
    }
    if (e->num_inst) {
        memcpy(e->inst, ref->instruments, e->num_inst * sizeof *e->inst);
    }
    for (size_t i = 0; i < e->num_inst; i++) {
        e->inst_venue[i] = (uint8_t) clr_route_venue(e->inst[i].security);
    }
    clr__refdata_digest(ref, e->ref_digest);
    *out = e;
    return 0;
}

void
clr_engine_free(clr_engine *e)
{
    if (e == NULL) {
        return;
    }
    clr__table_free(&e->acct_tab);
    clr__table_free(&e->pos_tab);
    clr__table_free(&e->used_tab);
    clr__table_free(&e->exec_tab);
    clr__table_free(&e->net_tab);
    dbao_free(e->accts);
    dbao_free(e->pos);
    dbao_free(e->ords);
    dbao_free(e->ord_free);
    dbao_free(e->net);
    dbao_free(e->settle);
    dbao_free(e->inst);
    dbao_free(e->inst_venue);
    dbao_free(e->xfer_net);
    dbao_free(e->contra_ref);
    dbao_free(e);
}

uint64_t
clr_engine_seq(const clr_engine *e)
{
    return e->seq;
}

/* ---- apply ---------------------------------------------------------------------------------- */

typedef struct ctx {
    clr_engine *e;
    const clr_event *ev;
    clr_result *res;
    clr_move_fn move;
    void *move_arg;
    clr_acct *acct; /* the event's account once resolved (saves the lookup for the result) */
} ctx;

static void
emit(ctx *c, const clr_acct *a, uint8_t kind, int64_t amount, int64_t pre)
{
    if (c->move == NULL) {
        return;
    }
    clr_movement m = {
        .seq = c->ev->seq,
        .account = a->id,
        .kind = kind,
        .amount = amount,
        .pre_balance = pre,
        .post_balance = pre + amount,
        .order_id = c->ev->order_id,
        .exec_id = c->ev->exec_id,
        .security = c->ev->security,
    };
    memcpy(m.trace_id, c->ev->trace_id, 16);
    c->move(c->move_arg, &m);
}

/* Resolves a client account: range, shard, existence. */
static int
account_of(ctx *c, clr_acct **out)
{
    const clr_event *ev = c->ev;
    if (ev->account == 0 || ev->account > CLR_ACCOUNT_MAX) {
        return CLR_REJ_ACCOUNT;
    }
    if (clr_route_shard(ev->account, c->e->nshards) != c->e->shard) {
        return CLR_REJ_SHARD;
    }
    clr_acct *a = acct_find(c->e, ev->account);
    if (a == NULL) {
        return CLR_REJ_ACCOUNT;
    }
    /* The record is read later in every handler: start its load now, overlapped with the
     * handler's other table probes (prefetched in clr_engine_apply). */
    __builtin_prefetch(a, 1, 3);
    *out = a;
    c->acct = a;
    return CLR_OK;
}

static int
ev_open(ctx *c)
{
    clr_engine *e = c->e;
    const clr_event *ev = c->ev;
    if (ev->account == 0 || ev->account > CLR_ACCOUNT_MAX) {
        return CLR_REJ_ACCOUNT;
    }
    if (clr_route_shard(ev->account, e->nshards) != e->shard) {
        return CLR_REJ_SHARD;
    }
    if (ev->member == 0) {
        return CLR_REJ_MEMBER;
    }
    if (acct_find(e, ev->account) != NULL) {
        return CLR_REJ_ACCOUNT;
    }
    if (ev->amount < 0 || ev->amount > CLR_AMOUNT_MAX) {
        return CLR_REJ_RANGE;
    }
    uint32_t idx = (uint32_t) e->num_accts++;
    e->accts[idx] = (clr_acct){.id = ev->account, .member = ev->member, .credit = ev->amount};
    clr__table_insert(&e->acct_tab, ev->account, 0, idx);
    c->acct = &e->accts[idx];
    c->res->cash_available = 0;
    return CLR_OK;
}

static int
ev_cash(ctx *c, bool deposit)
{
    clr_engine *e = c->e;
    clr_acct *a;
    int r = account_of(c, &a);
    if (r != CLR_OK) {
        return r;
    }
    int64_t amt = c->ev->amount;
    if (amt <= 0 || amt > CLR_AMOUNT_MAX) {
        return CLR_REJ_RANGE;
    }
    int64_t pre = a->avail + a->frozen;
    int64_t navail, nbal, nflow;
    if (deposit) {
        if (__builtin_add_overflow(a->avail, amt, &navail) ||
            __builtin_add_overflow(pre, amt, &nbal) || nbal > CLR_AMOUNT_MAX ||
            __builtin_add_overflow(e->deposits, amt, &nflow)) {
            return CLR_REJ_RANGE;
        }
    } else {
        /* Only available cash above zero: never into credit. */
        if (amt > a->avail) {
            return CLR_REJ_CASH;
        }
        navail = a->avail - amt;
        if (__builtin_add_overflow(e->withdrawals, amt, &nflow)) {
            return CLR_REJ_RANGE;
        }
    }
    a->avail = navail;
    if (deposit) {
        e->deposits = nflow;
        emit(c, a, CLR_MOVE_DEPOSIT, amt, pre);
    } else {
        e->withdrawals = nflow;
        emit(c, a, CLR_MOVE_WITHDRAW, -amt, pre);
    }
    return CLR_OK;
}

static int
routed_inst(const clr_engine *e, uint32_t sec)
{
    int i = clr__inst_find(e, sec);
    if (i < 0 || e->inst_venue[i] == CLR_VENUE_NONE) {
        return -1;
    }
    return i;
}

static int
ev_xfer(ctx *c, bool in)
{
    clr_engine *e = c->e;
    const clr_event *ev = c->ev;
    clr_acct *a;
    int r = account_of(c, &a);
    if (r != CLR_OK) {
        return r;
    }
    int ii = routed_inst(e, ev->security);
    if (ii < 0) {
        return CLR_REJ_INSTRUMENT;
    }
    if (ev->qty <= 0) {
        return CLR_REJ_LOT;
    }
    if (ev->qty > CLR_QTY_MAX) {
        return CLR_REJ_RANGE;
    }
    clr_pos *p = pos_find(e, ev->account, ev->security);
    int64_t nav, nnet;
    if (in) {
        if (__builtin_add_overflow(p ? p->avail : 0, ev->qty, &nav) ||
            __builtin_add_overflow(e->xfer_net[ii], ev->qty, &nnet)) {
            return CLR_REJ_RANGE;
        }
        if (p == NULL) {
            p = clr__pos_add(e, ev->account, ev->security, (uint32_t) ii);
        }
    } else {
        if (p == NULL || p->avail < ev->qty) {
            return CLR_REJ_POSITION;
        }
        nav = p->avail - ev->qty;
        if (__builtin_sub_overflow(e->xfer_net[ii], ev->qty, &nnet)) {
            return CLR_REJ_RANGE;
        }
    }
    p->avail = nav;
    e->xfer_net[ii] = nnet;
    return CLR_OK;
}

static int
ev_order(ctx *c)
{
    clr_engine *e = c->e;
    const clr_event *ev = c->ev;
    clr_acct *a;
    int r = account_of(c, &a);
    if (r != CLR_OK) {
        return r;
    }
    if (ev->side != CLR_SIDE_BUY && ev->side != CLR_SIDE_SELL) {
        return CLR_REJ_SIDE;
    }
    bool found;
    clr_slot *us = table_probe(&e->used_tab, ev->account, ev->order_id, &found);
    if (found) {
        return CLR_REJ_DUP_ORDER;
    }
    int ii = routed_inst(e, ev->security);
    if (ii < 0) {
        return CLR_REJ_INSTRUMENT;
    }
    const clr_instrument *in = &e->inst[ii];
    if (ev->price <= 0) {
        return CLR_REJ_TICK;
    }
    if (ev->price > CLR_PRICE_MAX) {
        return CLR_REJ_RANGE;
    }
    if (ev->price % in->tick != 0 || ((in->price_lo | in->price_hi) != 0 &&
                                      (ev->price < in->price_lo || ev->price > in->price_hi))) {
        return CLR_REJ_TICK;
    }
    if (ev->qty <= 0) {
        return CLR_REJ_LOT;
    }
    if (ev->qty > CLR_QTY_MAX) {
        return CLR_REJ_RANGE;
    }
    clr_order o = {.account = ev->account,
                   .order_id = ev->order_id,
                   .security = ev->security,
                   .inst = (uint32_t) ii,
                   .venue = e->inst_venue[ii],
                   .side = ev->side,
                   .limit = ev->price,
                   .open = ev->qty,
                   .acct_idx = (uint32_t) (a - e->accts)};
    clr_pos *p = NULL;
    if (ev->side == CLR_SIDE_BUY) {
        if (ev->qty % in->lot != 0) {
            return CLR_REJ_LOT;
        }
        int64_t amount, freeze, navail, nfrozen;
        if (__builtin_mul_overflow(ev->price, ev->qty, &amount) || amount > CLR_AMOUNT_MAX) {
            return CLR_REJ_RANGE;
        }
        int64_t fee = clr__fee_max(&e->fees, amount);
        if (fee < 0 || __builtin_add_overflow(amount, fee, &freeze) || freeze > CLR_AMOUNT_MAX ||
            __builtin_add_overflow(a->frozen, freeze, &nfrozen)) {
            return CLR_REJ_RANGE;
        }
        /* avail - freeze >= -credit; both sides are within +-2^57: no overflow. */
        navail = a->avail - freeze;
        if (navail < -a->credit) {
            return CLR_REJ_CASH;
        }
        o.frozen = freeze;
        o.fee_rem = fee;
        a->avail = navail;
        a->frozen = nfrozen;
    } else {
        p = pos_find(e, ev->account, ev->security);
        if (p == NULL || p->avail < ev->qty) {
            return CLR_REJ_POSITION;
        }
        /* A multiple of the lot, or carrying exactly the position's whole odd remainder
         * (the odd part of a holding must be sold in one order). */
        if (ev->qty % in->lot != 0 && ev->qty % in->lot != p->avail % in->lot) {
            return CLR_REJ_LOT;
        }
        p->avail -= ev->qty;
        p->frozen += ev->qty;
        o.pos_ref = (uint32_t) (p - e->pos) + 1;
    }
    uint32_t idx = e->num_free ? e->ord_free[--e->num_free] : (uint32_t) e->num_ords++;
    e->ords[idx] = o;
    e->live_ords++;
    table_fill(&e->used_tab, us, ev->account, ev->order_id, idx);
    c->res->open_qty = o.open;
    return CLR_OK;
}

/* The order's client position (cached in the order after the first lookup) or NULL. */
static inline clr_pos *
order_pos(clr_engine *e, clr_order *o)
{
    if (o->pos_ref != 0) {
        return &e->pos[o->pos_ref - 1];
    }
    clr_pos *p = pos_find(e, o->account, o->security);
    if (p != NULL) {
        o->pos_ref = (uint32_t) (p - e->pos) + 1;
    }
    return p;
}

/* The contra position of instrument `ii` (one per instrument: its venue's contra account),
 * cached per instrument after the first lookup, or NULL. */
static inline clr_pos *
contra_pos(clr_engine *e, uint32_t ii, uint64_t contra, uint32_t sec)
{
    if (e->contra_ref[ii] != 0) {
        return &e->pos[e->contra_ref[ii] - 1];
    }
    clr_pos *p = pos_find(e, contra, sec);
    if (p != NULL) {
        e->contra_ref[ii] = (uint32_t) (p - e->pos) + 1;
    }
    return p;
}

/* The order's netting row today (cached in the order) or NULL. */
static inline clr_net_row *
order_net(clr_engine *e, clr_order *o, uint32_t member)
{
    if (o->net_ref != 0) {
        return &e->net[o->net_ref - 1];
    }
    clr_slot *s = table_find(&e->net_tab, member, o->security);
    if (s == NULL) {
        return NULL;
    }
    o->net_ref = s->v + 1;
    return &e->net[s->v];
}

/* Releases an open order's remaining freeze (cancel and expiry). */
static void
order_release(clr_engine *e, clr_order *o)
{
    if (o->side == CLR_SIDE_BUY) {
        clr_acct *a = &e->accts[o->acct_idx];
        a->frozen -= o->frozen;
        a->avail += o->frozen;
    } else {
        clr_pos *p = order_pos(e, o);
        p->frozen -= o->open;
        p->avail += o->open;
    }
}

static int
ev_cancel(ctx *c)
{
    clr_engine *e = c->e;
    clr_acct *a;
    int r = account_of(c, &a);
    if (r != CLR_OK) {
        return r;
    }
    clr_slot *slot;
    clr_order *o = order_find(e, c->ev->account, c->ev->order_id, &slot);
    if (o == NULL) {
        return CLR_REJ_ORDER;
    }
    order_release(e, o);
    order_remove(e, o, slot);
    c->res->open_qty = 0;
    return CLR_OK;
}

/* Adds the order's (member, security) netting row, known to be absent; room reserved. */
static clr_net_row *
net_add(clr_engine *e, clr_order *o, uint32_t member)
{
    uint32_t idx = (uint32_t) e->num_net++;
    e->net[idx] = (clr_net_row){.member = member, .security = o->security};
    clr__table_insert(&e->net_tab, member, o->security, idx);
    o->net_ref = idx + 1;
    return &e->net[idx];
}

static int
ev_fill(ctx *c)
{
    clr_engine *e = c->e;
    const clr_event *ev = c->ev;
    clr_acct *a;
    int r = account_of(c, &a);
    if (r != CLR_OK) {
        return r;
    }
    bool found;
    clr_slot *es = table_probe(&e->exec_tab, ev->account, ev->exec_id, &found);
    if (found) {
        return CLR_REJ_DUP_EXEC;
    }
    clr_slot *slot;
    clr_order *o = order_find(e, ev->account, ev->order_id, &slot);
    if (o == NULL) {
        return CLR_REJ_ORDER;
    }
    /* Start loading the position and netting row the order caches while the checks run. */
    if (o->pos_ref != 0) {
        __builtin_prefetch(&e->pos[o->pos_ref - 1], 1, 3);
    }
    if (o->net_ref != 0) {
        __builtin_prefetch(&e->net[o->net_ref - 1], 1, 3);
    }
    c->res->open_qty = o->open;
    if (ev->qty <= 0) {
        return CLR_REJ_LOT;
    }
    if (ev->qty > o->open) {
        return CLR_REJ_OVERFILL;
    }
    if (ev->price <= 0 || ev->price % e->inst[o->inst].tick != 0) {
        return CLR_REJ_TICK;
    }
    if (ev->price > CLR_PRICE_MAX) {
        return CLR_REJ_RANGE;
    }
    bool buy = o->side == CLR_SIDE_BUY;
    if (buy ? ev->price > o->limit : ev->price < o->limit) {
        return CLR_REJ_OVERFILL;
    }
    /* Every amount below is bounded: qty <= open <= CLR_QTY_MAX, price <= CLR_PRICE_MAX, so
     * a product needs the overflow check; the buy side's products are <= the order's freeze. */
    int64_t amount, fee;
    if (__builtin_mul_overflow(ev->price, ev->qty, &amount) || amount > CLR_AMOUNT_MAX) {
        return CLR_REJ_RANGE;
    }
    fee = fees_of(&e->fees, amount, !buy);
    if (fee < 0) {
        return CLR_REJ_RANGE;
    }
    int64_t *contra = &e->contra[o->venue];
    int64_t ncontra, nfee, nfills_net;
    uint64_t contra_id = CLR_CONTRA_SH + o->venue - 1;
    clr_pos *p = order_pos(e, o);
    clr_pos *cp = contra_pos(e, o->inst, contra_id, o->security);
    clr_net_row *cur = order_net(e, o, a->member);
    int64_t pre = a->avail + a->frozen;
    clr_net_row *nr = NULL;
    if (buy) {
        if (fee > o->fee_rem) {
            fee = o->fee_rem; /* the order's fees never exceed its fee freeze */
        }
        int64_t release = o->limit * ev->qty; /* <= the order's freeze: no overflow */
        int64_t nbuyamt, nbuyqty, nfees, npend, ncq;
        if (__builtin_add_overflow(*contra, amount, &ncontra) ||
            __builtin_add_overflow(e->fee_cash, fee, &nfee) ||
            __builtin_add_overflow(p ? p->pending : 0, ev->qty, &npend) ||
            __builtin_sub_overflow(cp ? cp->avail : 0, ev->qty, &ncq)) {
            return CLR_REJ_RANGE;
        }
        if (__builtin_add_overflow(cur ? cur->buy_amount : 0, amount, &nbuyamt) ||
            __builtin_add_overflow(cur ? cur->buy_qty : 0, ev->qty, &nbuyqty) ||
            __builtin_add_overflow(cur ? cur->fees : 0, fee, &nfees) ||
            __builtin_sub_overflow(cur ? cur->net_cash : 0, amount + fee, &nfills_net)) {
            return CLR_REJ_RANGE;
        }
        /* Commit. */
        a->frozen -= release + fee;
        a->avail += release - amount;
        o->frozen -= release + fee;
        o->fee_rem -= fee;
        o->open -= ev->qty;
        *contra = ncontra;
        e->fee_cash = nfee;
        if (p == NULL) {
            p = clr__pos_add(e, ev->account, o->security, o->inst);
            o->pos_ref = (uint32_t) (p - e->pos) + 1;
        }
        p->pending = npend;
        if (cp == NULL) {
            cp = clr__pos_add(e, contra_id, o->security, o->inst);
            e->contra_ref[o->inst] = (uint32_t) (cp - e->pos) + 1;
        }
        cp->avail = ncq;
        nr = cur != NULL ? cur : net_add(e, o, a->member);
        nr->buy_qty = nbuyqty;
        nr->buy_amount = nbuyamt;
        nr->fees = nfees;
        emit(c, a, CLR_MOVE_BUY, -amount, pre);
        if (fee != 0) {
            emit(c, a, CLR_MOVE_FEE, -fee, pre - amount);
        }
    } else {
        if (fee > amount) {
            fee = amount; /* a sell never costs more than it brings in */
        }
        int64_t navail, nbal, nsellamt, nsellqty, nfees, ncq;
        if (__builtin_sub_overflow(*contra, amount, &ncontra) ||
            __builtin_add_overflow(e->fee_cash, fee, &nfee) ||
            __builtin_add_overflow(a->avail, amount - fee, &navail) ||
            __builtin_add_overflow(pre, amount - fee, &nbal) || nbal > CLR_AMOUNT_MAX ||
            __builtin_add_overflow(cp ? cp->avail : 0, ev->qty, &ncq)) {
            return CLR_REJ_RANGE;
        }
        if (__builtin_add_overflow(cur ? cur->sell_amount : 0, amount, &nsellamt) ||
            __builtin_add_overflow(cur ? cur->sell_qty : 0, ev->qty, &nsellqty) ||
            __builtin_add_overflow(cur ? cur->fees : 0, fee, &nfees) ||
            __builtin_add_overflow(cur ? cur->net_cash : 0, amount - fee, &nfills_net)) {
            return CLR_REJ_RANGE;
        }
        a->avail = navail;
        p->frozen -= ev->qty; /* p exists: the order froze shares in it */
        o->open -= ev->qty;
        *contra = ncontra;
        e->fee_cash = nfee;
        if (cp == NULL) {
            cp = clr__pos_add(e, contra_id, o->security, o->inst);
            e->contra_ref[o->inst] = (uint32_t) (cp - e->pos) + 1;
        }
        cp->avail = ncq;
        nr = cur != NULL ? cur : net_add(e, o, a->member);
        nr->sell_qty = nsellqty;
        nr->sell_amount = nsellamt;
        nr->fees = nfees;
        emit(c, a, CLR_MOVE_SELL, amount, pre);
        if (fee != 0) {
            emit(c, a, CLR_MOVE_FEE, -fee, pre + amount);
        }
    }
    nr->net_qty = nr->buy_qty - nr->sell_qty;
    nr->net_cash = nfills_net;
    table_fill(&e->exec_tab, es, ev->account, ev->exec_id, 0);
    e->fills++;
    c->res->open_qty = o->open;
    if (o->open == 0) {
        if (buy && o->frozen != 0) {
            /* The unused fee freeze (and nothing else: open == 0) goes back. */
            a->frozen -= o->frozen;
            a->avail += o->frozen;
        }
        order_remove(e, o, slot);
    }
    return CLR_OK;
}

static int
cmp_net(const void *x, const void *y)
{
    const clr_net_row *a = x, *b = y;
    if (a->member != b->member) {
        return a->member < b->member ? -1 : 1;
    }
    return a->security < b->security ? -1 : (a->security > b->security);
}

static int
ev_eod(ctx *c)
{
    clr_engine *e = c->e;
    int64_t d = c->ev->qty;
    if (d < 19000101 || d > 99991231) {
        return CLR_REJ_RANGE;
    }
    if ((uint32_t) d <= e->last_date) {
        return CLR_REJ_DATE;
    }
    /* Expire every open order: unfreezing commutes, so the (hash) order does not matter. */
    for (size_t i = 0; i < e->num_ords; i++) {
        if (e->ords[i].side != 0) {
            order_release(e, &e->ords[i]);
        }
    }
    e->num_ords = 0;
    e->live_ords = 0;
    e->num_free = 0;
    /* T+1: shares bought today become available. */
    for (size_t i = 0; i < e->num_pos; i++) {
        e->pos[i].avail += e->pos[i].pending;
        e->pos[i].pending = 0;
    }
    /* Close the day's netting: the rows become the settlement (sorted), today starts empty. */
    clr_net_row *t = e->settle;
    size_t tcap = e->settle_cap;
    e->settle = e->net;
    e->settle_cap = e->net_cap;
    e->num_settle = e->num_net;
    e->net = t;
    e->net_cap = tcap;
    e->num_net = 0;
    table_clear(&e->net_tab);
    if (e->num_settle > 1) {
        qsort(e->settle, e->num_settle, sizeof *e->settle, cmp_net);
    }
    e->settle_date = (uint32_t) d;
    e->last_date = (uint32_t) d;
    /* Uniqueness of order ids and exec ids is per trading day. */
    table_clear(&e->used_tab);
    table_clear(&e->exec_tab);
    return CLR_OK;
}

/* Makes room for every insertion the event could make, before any check or change. */
static int
reserve_for(clr_engine *e, const clr_event *ev)
{
    int rc = 0;
#define VEC(p, cap, count, k) clr__vec_reserve((void **) &(p), &(cap), (count), (k), sizeof *(p))
    switch (ev->type) {
    case CLR_EV_OPEN:
        if ((rc = clr__table_reserve(&e->acct_tab, 1)) == 0) {
            rc = VEC(e->accts, e->accts_cap, e->num_accts, 1);
        }
        break;
    case CLR_EV_XFER_IN:
        if ((rc = clr__table_reserve(&e->pos_tab, 1)) == 0) {
            rc = VEC(e->pos, e->pos_cap, e->num_pos, 1);
        }
        break;
    case CLR_EV_ORDER:
        /* the free stack never holds more than num_ords entries */
        if ((rc = clr__table_reserve(&e->used_tab, 1)) == 0 &&
            (rc = VEC(e->ords, e->ords_cap, e->num_ords, 1)) == 0) {
            rc = VEC(e->ord_free, e->free_cap, e->num_ords, 1);
        }
        break;
    case CLR_EV_FILL:
        if ((rc = clr__table_reserve(&e->pos_tab, 2)) == 0 &&
            (rc = clr__table_reserve(&e->exec_tab, 1)) == 0 &&
            (rc = clr__table_reserve(&e->net_tab, 1)) == 0 &&
            (rc = VEC(e->pos, e->pos_cap, e->num_pos, 2)) == 0) {
            rc = VEC(e->net, e->net_cap, e->num_net, 1);
        }
        break;
    default:
        break;
    }
#undef VEC
    return rc;
}

int
clr_engine_apply(clr_engine *e, const clr_event *ev, clr_result *res, clr_move_fn move,
                 void *move_arg)
{
    if (ev->seq != e->seq + 1) {
        return DBAO_EINVAL;
    }
    if (clr__event_fields_check(ev, NULL) != 0) {
        return DBAO_EINVAL;
    }
    if (e->num_accts >= UINT32_MAX / 2 || e->num_pos >= UINT32_MAX / 2 ||
        e->num_ords >= UINT32_MAX / 2 || e->num_net >= UINT32_MAX / 2) {
        return DBAO_ENOMEM; /* dense indices are 32-bit */
    }
    if (reserve_for(e, ev) != 0) {
        return DBAO_ENOMEM;
    }
    memset(res, 0, sizeof *res);
    res->seq = ev->seq;
    res->account = ev->account;
    res->order_id = ev->order_id;
    res->type = ev->type;
    ctx c = {.e = e, .ev = ev, .res = res, .move = move, .move_arg = move_arg};
    /* The probes an event makes are independent of each other until the records they point
     * to are read: start every home slot's load now so that their cache misses overlap
     * instead of following one another (the apply cost is mostly these misses). After
     * reserve_for: a table that grows moves its slots. */
    switch (ev->type) {
    case CLR_EV_FILL:
        table_prefetch(&e->exec_tab, ev->account, ev->exec_id);
        /* fallthrough */
    case CLR_EV_CANCEL:
    case CLR_EV_ORDER:
        table_prefetch(&e->used_tab, ev->account, ev->order_id);
        if (ev->type == CLR_EV_ORDER && ev->side == CLR_SIDE_SELL) {
            table_prefetch(&e->pos_tab, ev->account, ev->security);
        }
        table_prefetch(&e->acct_tab, ev->account, 0);
        break;
    case CLR_EV_XFER_IN:
    case CLR_EV_XFER_OUT:
        table_prefetch(&e->pos_tab, ev->account, ev->security);
        table_prefetch(&e->acct_tab, ev->account, 0);
        break;
    default:
        break;
    }
    int r;
    switch (ev->type) {
    case CLR_EV_OPEN:
        r = ev_open(&c);
        break;
    case CLR_EV_DEPOSIT:
        r = ev_cash(&c, true);
        break;
    case CLR_EV_WITHDRAW:
        r = ev_cash(&c, false);
        break;
    case CLR_EV_XFER_IN:
        r = ev_xfer(&c, true);
        break;
    case CLR_EV_XFER_OUT:
        r = ev_xfer(&c, false);
        break;
    case CLR_EV_ORDER:
        r = ev_order(&c);
        break;
    case CLR_EV_CANCEL:
        r = ev_cancel(&c);
        break;
    case CLR_EV_FILL:
        r = ev_fill(&c);
        break;
    default:
        r = ev_eod(&c);
        break;
    }
    res->reject = (uint8_t) r;
    if (c.acct != NULL) {
        /* An account once resolved stays (nothing removes one) and stays at that address
         * (the array grows only in reserve_for, before the event). */
        res->cash_available = c.acct->avail;
        res->cash_frozen = c.acct->frozen;
    } else if (ev->type != CLR_EV_EOD && ev->account != 0) {
        const clr_acct *a =
            (ev->account <= CLR_ACCOUNT_MAX && clr_route_shard(ev->account, e->nshards) == e->shard)
                ? acct_find(e, ev->account)
                : NULL;
        if (a != NULL) {
            res->cash_available = a->avail;
            res->cash_frozen = a->frozen;
        }
    }
    e->seq = ev->seq;
    return 0;
}

/* ---- views ---------------------------------------------------------------------------------- */

void
clr_engine_totals(const clr_engine *e, clr_totals *t)
{
    memset(t, 0, sizeof *t);
    int64_t cash = 0;
    for (size_t i = 0; i < e->num_accts; i++) {
        const clr_acct *a = &e->accts[i];
        cash += a->avail + a->frozen;
        if (a->avail < 0) {
            t->negative_accounts++;
        }
    }
    for (int v = 1; v <= 3; v++) {
        cash += e->contra[v];
    }
    cash += e->fee_cash;
    t->cash_total = cash;
    t->deposits = e->deposits;
    t->withdrawals = e->withdrawals;
    t->fees = e->fee_cash;
    t->accounts = e->num_accts;
    t->orders_open = e->live_ords;
    t->fills = e->fills;
    /* Shares: per instrument, positions (contras included) against transfers. The sums are
     * formed in unsigned arithmetic (wrapping is harmless for an equality check). */
    uint64_t *sum = dbao_calloc(e->num_inst ? e->num_inst : 1, sizeof *sum);
    if (sum == NULL) {
        t->shares_imbalance = -1;
        return;
    }
    for (size_t i = 0; i < e->num_pos; i++) {
        const clr_pos *p = &e->pos[i];
        sum[p->inst] += (uint64_t) p->avail + (uint64_t) p->frozen + (uint64_t) p->pending;
    }
    uint64_t imb = 0;
    for (size_t i = 0; i < e->num_inst; i++) {
        uint64_t d = sum[i] - (uint64_t) e->xfer_net[i];
        imb += (d >> 63) ? (uint64_t) 0 - d : d;
    }
    dbao_free(sum);
    t->shares_imbalance = imb > (uint64_t) INT64_MAX ? INT64_MAX : (int64_t) imb;
}

int
clr_engine_account(const clr_engine *e, uint64_t account, clr_account_view *v)
{
    const clr_acct *a = acct_find(e, account);
    if (a == NULL) {
        memset(v, 0, sizeof *v);
        return DBAO_EINVAL;
    }
    v->member = a->member;
    v->credit_limit = a->credit;
    v->cash_available = a->avail;
    v->cash_frozen = a->frozen;
    return 0;
}

int
clr_engine_position(const clr_engine *e, uint64_t account, uint32_t security, clr_position_view *v)
{
    const clr_pos *p = pos_find(e, account, security);
    if (p == NULL) {
        memset(v, 0, sizeof *v);
        return acct_find(e, account) != NULL || account > CLR_ACCOUNT_MAX ? 0 : DBAO_EINVAL;
    }
    v->available = p->avail;
    v->frozen = p->frozen;
    v->pending = p->pending;
    return 0;
}

int
clr_engine_settlement(const clr_engine *e, uint32_t *trade_date, clr_net_row **rows, size_t *num,
                      dbao_err *err)
{
    *rows = NULL;
    *num = 0;
    *trade_date = e->settle_date;
    if (e->num_settle == 0) {
        return 0;
    }
    clr_net_row *r = dbao_malloc(e->num_settle * sizeof *r);
    if (r == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "clearing settlement: out of memory");
    }
    memcpy(r, e->settle, e->num_settle * sizeof *r);
    *rows = r;
    *num = e->num_settle;
    return 0;
}
