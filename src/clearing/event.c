/* event.c: the clearing event's fixed 96-byte wire layout, the venue router and the names of
 * venues and rejects.
 *
 * The layout is the journal's record payload and the snapshot's (docs/clearing.md, "Event
 * layout"). Little-endian, no padding, every field at a fixed offset:
 *
 *   off len field       off len field
 *     0   8 seq          48   4 security
 *     8   8 ts_ns        52   4 reserved2 (zero)
 *    16   1 type         56   8 price (int64, two's complement)
 *    17   1 side         64   8 qty
 *    18   2 reserved     72   8 amount
 *    20   4 member       80  16 trace_id
 *    24   8 account
 *    32   8 order_id
 *    40   8 exec_id
 *
 * Invariant: decode(encode(ev)) == ev for every event that passes clr__event_fields_check, and
 * encode(decode(b)) == b for every 96 bytes decode accepts; so the bytes are canonical and a
 * journal replay sees exactly the events that were acknowledged. The decoder refuses unknown
 * types, non-zero reserved fields and non-zero fields the type does not use (DBAO_EFORMAT):
 * a record from a newer writer with a field this version ignores is refused, never
 * half-understood. Ranges (price > 0, qty multiple of the lot, ...) are business rules: the
 * engine answers them with a clr_reject, so a journal keeps rejected events too, and a replay
 * reproduces the rejection.
 *
 * Field use per type (anything else must be zero):
 *   OPEN      member, account, amount (credit limit)
 *   DEPOSIT   account, amount           WITHDRAW  account, amount
 *   XFER_IN   account, security, qty    XFER_OUT  account, security, qty
 *   ORDER     account, order_id, side, security, price, qty
 *   CANCEL    account, order_id
 *   FILL      account, order_id, exec_id, price, qty (the order gives side and security)
 *   EOD       qty (trade date YYYYMMDD); account is zero: an EOD goes to every shard
 *
 * Everything here is hand-written: the layout is 20 lines of byte shuffling, and a generic
 * serializer would hide the fixed offsets the journal and the snapshot depend on.
 */
#include <string.h>

#include "dengbao/clearing.h"
#include "internal.h"

enum {
    F_MEMBER = 1 << 0,
    F_ACCOUNT = 1 << 1,
    F_ORDER = 1 << 2,
    F_EXEC = 1 << 3,
    F_SECURITY = 1 << 4,
    F_SIDE = 1 << 5,
    F_PRICE = 1 << 6,
    F_QTY = 1 << 7,
    F_AMOUNT = 1 << 8,
};

static unsigned
fields_of(uint8_t type)
{
    switch (type) {
    case CLR_EV_OPEN:
        return F_MEMBER | F_ACCOUNT | F_AMOUNT;
    case CLR_EV_DEPOSIT:
    case CLR_EV_WITHDRAW:
        return F_ACCOUNT | F_AMOUNT;
    case CLR_EV_XFER_IN:
    case CLR_EV_XFER_OUT:
        return F_ACCOUNT | F_SECURITY | F_QTY;
    case CLR_EV_ORDER:
        return F_ACCOUNT | F_ORDER | F_SIDE | F_SECURITY | F_PRICE | F_QTY;
    case CLR_EV_CANCEL:
        return F_ACCOUNT | F_ORDER;
    case CLR_EV_FILL:
        return F_ACCOUNT | F_ORDER | F_EXEC | F_PRICE | F_QTY;
    case CLR_EV_EOD:
        return F_QTY;
    default:
        return 0;
    }
}

int
clr__event_fields_check(const clr_event *ev, dbao_err *err)
{
    unsigned f = fields_of(ev->type);
    if (f == 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing event: unknown type %u",
                            (unsigned) ev->type);
    }
    if (ev->reserved != 0 || ev->reserved2 != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing event: reserved field not zero");
    }
    struct {
        unsigned flag;
        bool nonzero;
        const char *name;
    } chk[] = {
        {F_MEMBER, ev->member != 0, "member"},       {F_ACCOUNT, ev->account != 0, "account"},
        {F_ORDER, ev->order_id != 0, "order_id"},    {F_EXEC, ev->exec_id != 0, "exec_id"},
        {F_SECURITY, ev->security != 0, "security"}, {F_SIDE, ev->side != 0, "side"},
        {F_PRICE, ev->price != 0, "price"},          {F_QTY, ev->qty != 0, "qty"},
        {F_AMOUNT, ev->amount != 0, "amount"},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++) {
        if (!(f & chk[i].flag) && chk[i].nonzero) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "clearing event: field \"%s\" must be zero for type %u",
                                chk[i].name, (unsigned) ev->type);
        }
    }
    return 0;
}

void
clr_event_encode(const clr_event *ev, uint8_t out[CLR_EVENT_WIRE_LEN])
{
    clr__put_u64(out + 0, ev->seq);
    clr__put_u64(out + 8, (uint64_t) ev->ts_ns);
    out[16] = ev->type;
    out[17] = ev->side;
    clr__put_u16(out + 18, ev->reserved);
    clr__put_u32(out + 20, ev->member);
    clr__put_u64(out + 24, ev->account);
    clr__put_u64(out + 32, ev->order_id);
    clr__put_u64(out + 40, ev->exec_id);
    clr__put_u32(out + 48, ev->security);
    clr__put_u32(out + 52, ev->reserved2);
    clr__put_u64(out + 56, (uint64_t) ev->price);
    clr__put_u64(out + 64, (uint64_t) ev->qty);
    clr__put_u64(out + 72, (uint64_t) ev->amount);
    memcpy(out + 80, ev->trace_id, 16);
}

int
clr_event_decode(clr_event *ev, const uint8_t in[CLR_EVENT_WIRE_LEN], dbao_err *err)
{
    clr_event e;
    memset(&e, 0, sizeof e);
    e.seq = clr__get_u64(in + 0);
    e.ts_ns = (int64_t) clr__get_u64(in + 8);
    e.type = in[16];
    e.side = in[17];
    e.reserved = clr__get_u16(in + 18);
    e.member = clr__get_u32(in + 20);
    e.account = clr__get_u64(in + 24);
    e.order_id = clr__get_u64(in + 32);
    e.exec_id = clr__get_u64(in + 40);
    e.security = clr__get_u32(in + 48);
    e.reserved2 = clr__get_u32(in + 52);
    e.price = (int64_t) clr__get_u64(in + 56);
    e.qty = (int64_t) clr__get_u64(in + 64);
    e.amount = (int64_t) clr__get_u64(in + 72);
    memcpy(e.trace_id, in + 80, 16);
    int rc = clr__event_fields_check(&e, err);
    if (rc != 0) {
        memset(ev, 0, sizeof *ev);
        return rc;
    }
    *ev = e;
    return 0;
}

clr_venue
clr_route_venue(uint32_t security)
{
    if (security > 999999) {
        return CLR_VENUE_NONE;
    }
    switch (security / 100000) {
    case 6:
    case 9:
        return CLR_VENUE_SH;
    case 0:
    case 2:
    case 3:
        return CLR_VENUE_SZ;
    case 4:
    case 8:
        return CLR_VENUE_BJ;
    default:
        return CLR_VENUE_NONE;
    }
}

const char *
clr_venue_name(clr_venue v)
{
    switch (v) {
    case CLR_VENUE_SH:
        return "SH";
    case CLR_VENUE_SZ:
        return "SZ";
    case CLR_VENUE_BJ:
        return "BJ";
    default:
        return "-";
    }
}

const char *
clr_reject_name(clr_reject r)
{
    static const char *const names[] = {
        "OK",    "ACCOUNT",  "INSTRUMENT", "TICK", "LOT",   "CASH",  "POSITION", "DUP_ORDER",
        "ORDER", "OVERFILL", "DUP_EXEC",   "SIDE", "RANGE", "SHARD", "DATE",     "MEMBER",
    };
    if ((unsigned) r < sizeof names / sizeof names[0]) {
        return names[r];
    }
    return "UNKNOWN";
}
