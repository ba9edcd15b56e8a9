/* clearing.h: order intake, routing, and a clearing engine with a journal and audited fund
 * movements (the seed's broker order-routing gateway and securities clearing engine).
 *
 * The model is event-sourced. Every input (an account opened, cash deposited, an order, a
 * cancel, a fill reported by the venue, the end of a trading day) is a clr_event. The daemon
 * stamps it (sequence number, time), appends it to the shard's journal, and only once the
 * journal is durable (group commit) applies it to the shard's engine and acknowledges it. The
 * engine is a pure function of its event sequence: no clock, no randomness, no floating point,
 * no hash-table iteration order in any output. Replaying a journal therefore rebuilds
 * byte-identical state, results, fund movements and settlement files (clr_engine_state_hash).
 *
 * Money is int64 fen (分, 0.01 yuan); prices are fen per share; quantities are shares. Amounts
 * are exact: amount = price * qty fen; fees round half up to the fen by a fixed integer rule.
 * Overflow is refused (CLR_REJ_RANGE), never wrapped.
 *
 * Accounts are sharded: account -> shard = account % nshards. One writer thread per shard owns
 * its engine; nothing in a clr_engine is locked or shared. Conservation is kept by contra
 * accounts inside each shard: a fill moves cash and shares between the client account and the
 * venue's settlement account (CLR_CONTRA_SH/SZ/BJ), fees go to the fee account (CLR_FEE_ACCOUNT);
 * deposits and withdrawals are the only flows across the boundary. So, per shard, at any time:
 *   sum(cash of every account, contra and fee accounts included) == deposits - withdrawals
 *   sum(shares of a security over every account, contras included) == position transfers in - out
 * which clr_engine_totals reports and `dengbao clearing reconcile` checks to the fen.
 *
 * Threading: a clr_engine, clr_journal or clr_snapshot belongs to one thread at a time. The
 * codecs and the router are pure functions, thread-safe.
 * Errors: 0 or a negative DBAO_E* code; details in an optional dbao_err. Business rejections
 * (insufficient cash, bad tick, ...) are not errors: they are results (clr_result.reject).
 */
#ifndef DENGBAO_CLEARING_H
#define DENGBAO_CLEARING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- events ---------------------------------------------------------------------------- */

typedef enum clr_event_type {
    CLR_EV_OPEN = 1,     /* open `account` for `member`; `amount` = credit limit in fen (0: a
                            cash account, which may never go negative) */
    CLR_EV_DEPOSIT = 2,  /* cash in: `amount` fen to `account` (bank transfer in) */
    CLR_EV_WITHDRAW = 3, /* cash out: `amount` fen from `account`'s available cash */
    CLR_EV_XFER_IN = 4,  /* securities in: `qty` shares of `security` to `account` (custody) */
    CLR_EV_XFER_OUT = 5, /* securities out: `qty` shares from `account`'s available position */
    CLR_EV_ORDER = 6,    /* new order `order_id` (unique per account): side, security, price
                            (limit, fen), qty; pre-trade check freezes cash (buy: price * qty +
                            the largest possible fee) or shares (sell) */
    CLR_EV_CANCEL = 7,   /* cancel the open remainder of (`account`, `order_id`): unfreeze it */
    CLR_EV_FILL = 8,     /* execution report from the venue: (`account`, `order_id`) filled
                            `qty` at `price` (<= the limit for a buy, >= for a sell), venue
                            execution id `exec_id` (unique per account; a duplicate is refused,
                            not applied twice). Frozen -> settled: the buy's cash leaves for the
                            contra and fees, the shares arrive; the sell's the other way */
    CLR_EV_EOD = 9,      /* end of trading day `trade_date` (YYYYMMDD in `qty`): netting rows
                            are closed into the settlement, open orders expire (unfrozen),
                            shares bought today become available (T+1) */
} clr_event_type;

enum { CLR_SIDE_BUY = 'B', CLR_SIDE_SELL = 'S' };

#define CLR_EVENT_WIRE_LEN 96 /* bytes of clr_event_encode's output */

/* One input event. Fields an event type does not use must be zero (the codecs refuse
 * otherwise). seq and ts_ns are set by the journal (clr_journal_append), never by a client. */
typedef struct clr_event {
    uint64_t seq;         /* per-shard sequence number, 1, 2, 3, ... */
    int64_t ts_ns;        /* intake time, Unix ns (informational: the engine never reads it) */
    uint8_t type;         /* clr_event_type */
    uint8_t side;         /* CLR_SIDE_* for ORDER (FILL takes the order's side) */
    uint16_t reserved;    /* zero */
    uint32_t member;      /* OPEN: clearing member id (1..) ; else 0 */
    uint64_t account;     /* 1..CLR_ACCOUNT_MAX; contra and fee accounts are above it */
    uint64_t order_id;    /* ORDER, CANCEL, FILL */
    uint64_t exec_id;     /* FILL */
    uint32_t security;    /* 6-digit code as a number (600000 -> 600000), ORDER, XFER_* */
    uint32_t reserved2;   /* zero */
    int64_t price;        /* fen per share: ORDER limit, FILL execution price */
    int64_t qty;          /* shares: ORDER, FILL, XFER_*; EOD: trade date YYYYMMDD */
    int64_t amount;       /* fen: OPEN credit limit, DEPOSIT, WITHDRAW */
    uint8_t trace_id[16]; /* W3C trace id of the request that carried it (zero: none) */
} clr_event;

#define CLR_ACCOUNT_MAX ((uint64_t) 1 << 48)
#define CLR_CONTRA_SH   (CLR_ACCOUNT_MAX + 1) /* venue settlement accounts (中国结算 SH/SZ/BJ) */
#define CLR_CONTRA_SZ   (CLR_ACCOUNT_MAX + 2)
#define CLR_CONTRA_BJ   (CLR_ACCOUNT_MAX + 3)
#define CLR_FEE_ACCOUNT (CLR_ACCOUNT_MAX + 4)
#define CLR_QTY_MAX     ((int64_t) 1 << 40) /* shares per order / transfer */
#define CLR_PRICE_MAX   ((int64_t) 1 << 32) /* fen per share */
#define CLR_AMOUNT_MAX  ((int64_t) 1 << 56) /* fen per deposit / balance */

/* clr_event_encode writes the fixed little-endian layout (docs/clearing.md, "Event layout"): the
 * journal's record payload and the snapshot's. clr_event_decode reads it back and refuses
 * unknown types, non-zero reserved fields and fields the type does not use (DBAO_EFORMAT). */
void clr_event_encode(const clr_event *ev, uint8_t out[CLR_EVENT_WIRE_LEN]);
int clr_event_decode(clr_event *ev, const uint8_t in[CLR_EVENT_WIRE_LEN], dbao_err *err);

/* ---- reference data --------------------------------------------------------------------- */

typedef enum clr_venue {
    CLR_VENUE_NONE = 0,
    CLR_VENUE_SH = 1, /* Shanghai: 6xxxxx (A shares), 9xxxxx (B shares) */
    CLR_VENUE_SZ = 2, /* Shenzhen: 0xxxxx, 2xxxxx (B), 3xxxxx (ChiNext) */
    CLR_VENUE_BJ = 3, /* Beijing: 4xxxxx, 8xxxxx */
} clr_venue;

/* clr_route_venue maps a security code to its venue, CLR_VENUE_NONE for codes no rule covers
 * (1xxxxx, 5xxxxx, 7xxxxx: funds, bonds, ... are not traded here) or above 999999. */
clr_venue clr_route_venue(uint32_t security);
const char *clr_venue_name(clr_venue v); /* "SH", "SZ", "BJ", "-" */

/* clr_route_shard: the shard of an account (account % nshards; nshards >= 1). */
static inline unsigned
clr_route_shard(uint64_t account, unsigned nshards)
{
    return (unsigned) (account % nshards);
}

typedef struct clr_instrument {
    uint32_t security; /* 6-digit code */
    int64_t tick;      /* price tick in fen (>= 1) */
    int64_t lot;       /* buy quantity must be a multiple (100 for A shares); a sell may also
                          be the whole odd remainder of the position */
    int64_t price_lo;  /* price band in fen, inclusive (0, 0: no band) */
    int64_t price_hi;
} clr_instrument;

/* Fees, in parts per million of the amount, each rounded half up to the fen, per fill:
 * commission (with a minimum per fill), stamp duty (sells only), transfer fee. All go to
 * CLR_FEE_ACCOUNT. A buy order freezes price * qty + clr_fee_max(price * qty). */
typedef struct clr_fees {
    int64_t commission_ppm; /* e.g. 250 (0.025%) */
    int64_t commission_min; /* fen per fill, e.g. 500 (5 yuan) */
    int64_t stamp_ppm;      /* sells only, e.g. 500 (0.05%) */
    int64_t transfer_ppm;   /* e.g. 10 (0.001%) */
} clr_fees;

typedef struct clr_refdata {
    const clr_instrument *instruments; /* sorted by security, no duplicates (checked) */
    size_t num_instruments;
    clr_fees fees;
} clr_refdata;

/* ---- results ----------------------------------------------------------------------------- */

typedef enum clr_reject {
    CLR_OK = 0,
    CLR_REJ_ACCOUNT = 1,    /* unknown account (or OPEN of an existing one) */
    CLR_REJ_INSTRUMENT = 2, /* unknown security, or no venue routes it */
    CLR_REJ_TICK = 3,       /* price not a multiple of the tick, <= 0, or outside the band */
    CLR_REJ_LOT = 4,        /* quantity <= 0 or not a lot multiple (nor the odd remainder) */
    CLR_REJ_CASH = 5,       /* not enough available cash (beyond the credit limit) */
    CLR_REJ_POSITION = 6,   /* not enough available shares */
    CLR_REJ_DUP_ORDER = 7,  /* order_id already used by this account */
    CLR_REJ_ORDER = 8,      /* CANCEL / FILL of an unknown or closed order */
    CLR_REJ_OVERFILL = 9,   /* fill above the open quantity, or a price beyond the limit */
    CLR_REJ_DUP_EXEC = 10,  /* exec_id already applied for this account */
    CLR_REJ_SIDE = 11,      /* side not B or S */
    CLR_REJ_RANGE = 12,     /* an amount, price or quantity out of range, or an overflow */
    CLR_REJ_SHARD = 13,     /* the account does not belong to this shard */
    CLR_REJ_DATE = 14,      /* EOD date not after the previous one */
    CLR_REJ_MEMBER = 15,    /* OPEN with member 0 */
} clr_reject;

const char *clr_reject_name(clr_reject r); /* "OK", "ACCOUNT", "INSTRUMENT", ... */

/* The answer to one event, with the account's balances after it. */
typedef struct clr_result {
    uint64_t seq;
    uint64_t account;
    uint64_t order_id;
    uint8_t type;
    uint8_t reject;                      /* clr_reject */
    int64_t cash_available, cash_frozen; /* fen, after the event */
    int64_t open_qty; /* ORDER/CANCEL/FILL: the order's open remainder after the event */
} clr_result;

/* A fund movement, the audit record's content (the seed's fields: trace_id, account, amount,
 * pre_balance, post_balance). Balance = available + frozen cash of the account. Every change
 * of any account's total cash is one movement; freezing and unfreezing move nothing between
 * accounts and are not movements. */
typedef enum clr_move_kind {
    CLR_MOVE_DEPOSIT = 1,
    CLR_MOVE_WITHDRAW = 2,
    CLR_MOVE_BUY = 3,  /* account pays the contra */
    CLR_MOVE_SELL = 4, /* contra pays the account */
    CLR_MOVE_FEE = 5,  /* account pays the fee account */
} clr_move_kind;

typedef struct clr_movement {
    uint64_t seq;     /* the event that caused it */
    uint64_t account; /* the account whose cash changed (client side; the contra leg is
                         implied and not reported) */
    uint8_t kind;     /* clr_move_kind */
    int64_t amount;   /* signed fen: + in, - out */
    int64_t pre_balance, post_balance;
    uint64_t order_id, exec_id;
    uint32_t security;
    uint8_t trace_id[16];
} clr_movement;

/* Called for every movement of an event, in a deterministic order, before clr_engine_apply
 * returns. The pointer is valid only during the call. */
typedef void (*clr_move_fn)(void *arg, const clr_movement *m);

/* ---- engine ------------------------------------------------------------------------------ */

typedef struct clr_engine clr_engine;

/* clr_engine_new: an empty engine for shard `shard` of `nshards`. Copies the reference data.
 * DBAO_EINVAL for unsorted or duplicate instruments, bad ticks or lots. */
int clr_engine_new(clr_engine **out, const clr_refdata *ref, unsigned shard, unsigned nshards,
                   dbao_err *err);
void clr_engine_free(clr_engine *e);

/* clr_engine_apply applies one event (ev->seq must be the engine's last seq + 1: a gap or a
 * repeat is DBAO_EINVAL and changes nothing). Fills *res; calls `move` for each movement
 * (NULL: none reported). Returns 0 (accepted or rejected: see res->reject), or DBAO_EINVAL /
 * DBAO_ENOMEM (state unchanged). */
int clr_engine_apply(clr_engine *e, const clr_event *ev, clr_result *res, clr_move_fn move,
                     void *move_arg);

uint64_t clr_engine_seq(const clr_engine *e); /* last applied seq (0: none) */

/* Per-shard totals for conservation checks. */
typedef struct clr_totals {
    int64_t cash_total; /* sum of available + frozen over every account incl. contras, fee */
    int64_t deposits, withdrawals;
    int64_t fees; /* fee account balance */
    uint64_t accounts, orders_open, fills;
    uint64_t negative_accounts; /* client accounts below zero (allowed only within credit) */
    /* shares: the sum over securities of |sum of positions incl. contras - (xfer in - out)|;
       0 when every security is conserved */
    int64_t shares_imbalance;
} clr_totals;
void clr_engine_totals(const clr_engine *e, clr_totals *t);

/* Balances of one account (0 or DBAO_EINVAL if unknown). */
typedef struct clr_account_view {
    uint32_t member;
    int64_t credit_limit, cash_available, cash_frozen;
} clr_account_view;
int clr_engine_account(const clr_engine *e, uint64_t account, clr_account_view *v);
typedef struct clr_position_view {
    int64_t available, frozen, pending; /* pending: bought today, available after EOD */
} clr_position_view;
int clr_engine_position(const clr_engine *e, uint64_t account, uint32_t security,
                        clr_position_view *v);

/* clr_engine_state_hash: SM3 over the canonical serialization of the whole state (the
 * snapshot's bytes): two engines with equal hashes are equal. */
int clr_engine_state_hash(const clr_engine *e, uint8_t out[32], dbao_err *err);

/* Snapshots: the canonical serialization (magic, version, seq, refdata digest, accounts,
 * positions, open orders, applied exec ids, netting, SM3 trailer), documented in
 * docs/clearing.md. clr_engine_snapshot allocates *out (caller frees). clr_engine_restore
 * builds an engine from one, refusing a damaged or foreign one (DBAO_EFORMAT, DBAO_EVERIFY,
 * DBAO_ENOTSUP for a newer version, DBAO_EINVAL when the refdata or shard differ). */
int clr_engine_snapshot(const clr_engine *e, uint8_t **out, size_t *out_len, dbao_err *err);
int clr_engine_restore(clr_engine **out, const clr_refdata *ref, unsigned shard, unsigned nshards,
                       const uint8_t *snap, size_t snap_len, dbao_err *err);

/* ---- netting and settlement --------------------------------------------------------------- */

/* One netting row: member x security for the trade day that an EOD closes. */
typedef struct clr_net_row {
    uint32_t member;
    uint32_t security;
    int64_t buy_qty, sell_qty;       /* shares */
    int64_t buy_amount, sell_amount; /* fen, price * qty */
    int64_t fees;                    /* fen */
    int64_t net_qty;                 /* buy_qty - sell_qty */
    int64_t net_cash;                /* sell_amount - buy_amount - fees: + the member receives */
} clr_net_row;

/* clr_engine_settlement returns the rows of the last closed trade day (sorted by member then
 * security), its date, and allocates *rows (caller frees). 0 rows before the first EOD. */
int clr_engine_settlement(const clr_engine *e, uint32_t *trade_date, clr_net_row **rows,
                          size_t *num, dbao_err *err);

/* clr_settlement_write writes the settlement file (docs/clearing.md, "Settlement file"):
 * the rows of every shard merged and summed per member x security, sorted; a totals line; and
 * an SM3 line over everything before it. Deterministic. clr_settlement_check reads a file back,
 * verifies the digest and that the totals balance (sum of net_cash + fees == sum of
 * sell_amount - buy_amount), and fills its totals. With path NULL clr_settlement_write writes
 * nothing and only computes the totals the file would carry (reconciliation). */
typedef struct clr_settle_totals {
    uint32_t trade_date;
    uint64_t rows;
    int64_t buy_amount, sell_amount, fees, net_cash;
    int64_t buy_qty, sell_qty;
} clr_settle_totals;
int clr_settlement_write(const char *path, uint32_t trade_date, const clr_net_row *rows, size_t num,
                         clr_settle_totals *totals, dbao_err *err);
int clr_settlement_check(const char *path, clr_settle_totals *totals, dbao_err *err);

/* ---- journal ------------------------------------------------------------------------------ */

/* One journal per shard in <dir>/shard-<N>/ (docs/clearing-journal.md): segment files of framed
 * records (magic, version, per record length + CRC32C + the 96-byte event), snapshots
 * snap-<seq>.bin written
 * atomically. Group commit: clr_journal_append buffers and assigns seq/ts; clr_journal_sync
 * writes and fdatasyncs everything buffered (one syscall pair per batch). Recovery on open
 * truncates a torn or corrupt tail (records never acknowledged, since acknowledgement follows
 * sync) and reports it; a corrupt record followed by valid ones is DBAO_EVERIFY (the log was
 * damaged, not torn: refuse to guess). */
typedef struct clr_journal clr_journal;

typedef struct clr_journal_opts {
    size_t segment_bytes; /* rotate after this many bytes; default 64 MiB */
    bool no_sync;         /* tests and benches only: skip fdatasync */
} clr_journal_opts;

int clr_journal_open(clr_journal **out, const char *dir, unsigned shard,
                     const clr_journal_opts *opts, dbao_err *err);
int clr_journal_close(clr_journal *j); /* syncs what is buffered; NULL is a no-op */

/* Last durable seq, and a note on what recovery did ("" if nothing). */
uint64_t clr_journal_last_seq(const clr_journal *j);
const char *clr_journal_recovery_note(const clr_journal *j);

/* clr_journal_append assigns ev[i].seq (last + 1, ...) and ev[i].ts_ns (now) and buffers the
 * records; they are durable only after clr_journal_sync returns 0. */
int clr_journal_append(clr_journal *j, clr_event *ev, size_t n, dbao_err *err);
int clr_journal_sync(clr_journal *j, dbao_err *err);

/* Snapshots: write the engine's snapshot as of its seq (which must be durable in the
 * journal); keep the newest `keep` (>= 1) and delete journal segments wholly before the
 * oldest kept one. */
int clr_journal_snapshot(clr_journal *j, const clr_engine *e, unsigned keep, dbao_err *err);

/* clr_journal_load rebuilds a shard: the newest snapshot that verifies (older ones if it does
 * not), then every journal record after it, applied in order with `move` called for each
 * movement (NULL: none). *out is the engine. Read-only: usable while no daemon runs, and by
 * `dengbao clearing replay`. `from_scratch` ignores snapshots (full replay). */
int clr_journal_load(clr_engine **out, const char *dir, unsigned shard, unsigned nshards,
                     const clr_refdata *ref, bool from_scratch, clr_move_fn move, void *move_arg,
                     dbao_err *err);

/* Iteration over the durable records of a shard, in order, from `from_seq`. */
typedef int (*clr_journal_fn)(void *arg, const clr_event *ev);
int clr_journal_scan(const char *dir, unsigned shard, uint64_t from_seq, clr_journal_fn fn,
                     void *arg, dbao_err *err);

/* ---- intake codecs ----------------------------------------------------------------------- */

/* The binary protocol (docs/clearing-protocol.md): little-endian frames
 *   u32 length (of what follows, 12..CLR_WIRE_FRAME_MAX), u16 msg type, u16 version (1),
 *   u64 request id (echoed in the answer), then the message body.
 * Requests carry one event each (the event types above: seq and ts are not sent); answers
 * carry a clr_result (with the request id) or an error. */
#define CLR_WIRE_FRAME_MAX 256
#define CLR_WIRE_VERSION   1

typedef enum clr_wire_type {
    CLR_MSG_EVENT = 1,  /* client -> engine: body = event fields (docs) */
    CLR_MSG_RESULT = 2, /* engine -> client: body = clr_result fields */
    CLR_MSG_ERROR = 3,  /* engine -> client: u16 code, u16 len, text (bad frame; then close) */
} clr_wire_type;

/* clr_wire_decode reads one frame from buf[0..len): returns the frame's byte length (> 0) with
 * *ev and *req_id filled, 0 if more bytes are needed, or DBAO_EFORMAT (bad length, type,
 * version, field) / DBAO_ENOTSUP (newer version) with a message in err. Validation is the
 * protocol's (fields zero where unused, ranges); business checks are the engine's. */
int clr_wire_decode(const uint8_t *buf, size_t len, clr_event *ev, uint64_t *req_id, dbao_err *err);
/* Encoders return the frame length written to out (cap >= CLR_WIRE_FRAME_MAX). */
size_t clr_wire_encode_event(uint8_t *out, uint64_t req_id, const clr_event *ev);
size_t clr_wire_encode_result(uint8_t *out, uint64_t req_id, const clr_result *res);
size_t clr_wire_encode_error(uint8_t *out, uint64_t req_id, uint16_t code, const char *msg);
/* A client decodes answers with clr_wire_decode_result (same return convention). */
int clr_wire_decode_result(const uint8_t *buf, size_t len, clr_result *res, uint64_t *req_id,
                           uint16_t *err_code, dbao_err *err);

/* JSON intake (HTTP POST /v1/events), one object per request, e.g.
 *   {"type":"order","account":1001,"order_id":7,"side":"B","security":"600000",
 *    "price":"10.25","qty":100,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}
 * Money and prices are decimal strings in yuan with at most 2 decimals ("10.25", "-" refused)
 * or integers in fen with the "_fen" suffix ("price_fen":1025); no JSON floats anywhere (a
 * number with a fraction or exponent is refused). Unknown keys are refused. Security codes are
 * 6-digit strings. clr_json_result writes the answer object (allocated; caller frees). */
int clr_json_decode(const char *json, size_t len, clr_event *ev, dbao_err *err);
int clr_json_result(const clr_result *res, char **out, size_t *out_len, dbao_err *err);

/* Money text: "12.34" <-> 1234 fen; "-0.01" <-> -1. Refuses more than 2 decimals, empty,
 * signs other than a leading '-', and values beyond CLR_AMOUNT_MAX. */
int clr_money_parse(const char *s, size_t len, int64_t *fen, dbao_err *err);
void clr_money_format(int64_t fen, char out[32]);

#ifdef __cplusplus
}
#endif

#endif /* DENGBAO_CLEARING_H */
