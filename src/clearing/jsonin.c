/* jsonin.c: the clearing intake's JSON form (HTTP POST /v1/events), the JSON answer, and the
 * money text codec. docs/clearing-protocol.md ("JSON") is the contract.
 *
 * One object per request. Keys by event type (anything else is refused, naming the key):
 *   all       "type" (required), "trace_id" (optional: 32 lowercase hex, not all zero)
 *   open      account, member, credit_limit | credit_limit_fen (optional, default 0)
 *   deposit   account, amount | amount_fen          withdraw  the same
 *   xfer_in   account, security, qty                xfer_out  the same
 *   order     account, order_id, side, security, price | price_fen, qty
 *   cancel    account, order_id
 *   fill      account, order_id, exec_id, price | price_fen, qty
 *   eod       date ("2026-11-30" or 20261130)
 * Value forms: ids (account, order_id, exec_id, member) are JSON integers 0..2^53 or decimal
 * strings of a u64 (member: u32); money (amount, price, credit_limit) is a yuan string with at
 * most 2 decimals, or an integer of fen under the *_fen key; qty a JSON integer; security a
 * 6-digit string; side "B" or "S". A JSON number with a fraction or an exponent is refused
 * wherever it appears: there is no floating point anywhere in the money path.
 *
 * Parsing is jansson's (json_loadb with JSON_REJECT_DUPLICATES: duplicate keys are refused;
 * jansson's integers are long long, so a number with a fraction or exponent becomes a real,
 * which is refused by type). The money codec and the field rules are hand-written: the
 * decimal rules are a dozen lines and no library does exactly "<= 2 decimals, no exponent".
 * Messages name the field and never echo a value (amounts and accounts are personal data).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "dengbao/clearing.h"
#include "internal.h"
#include "journal_internal.h"

#define JSON_IN_MAX   4096 /* bytes of one request object */
#define JSON_SAFE_INT ((uint64_t) 1 << 53)

int
clr_money_parse(const char *s, size_t len, int64_t *fen, dbao_err *err)
{
    size_t i = 0;
    bool neg = false;
    uint64_t v = 0;
    if (len > 0 && s[0] == '-') {
        neg = true;
        i = 1;
    }
    size_t int_start = i;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (uint64_t) (s[i] - '0');
        if (v > (uint64_t) CLR_AMOUNT_MAX) { /* checked per digit: never wraps */
            return dbao_err_set(err, DBAO_EFORMAT, "money: value out of range");
        }
        i++;
    }
    if (i == int_start) {
        return dbao_err_set(err, DBAO_EFORMAT, "money: expected a digit");
    }
    unsigned decimals = 0;
    v *= 100;
    if (i < len && s[i] == '.') {
        i++;
        uint64_t frac = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            if (++decimals > 2) {
                return dbao_err_set(err, DBAO_EFORMAT, "money: more than 2 decimals");
            }
            frac = frac * 10 + (uint64_t) (s[i] - '0');
            i++;
        }
        if (decimals == 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "money: expected a digit after '.'");
        }
        v += decimals == 1 ? frac * 10 : frac;
    }
    if (i != len) {
        return dbao_err_set(err, DBAO_EFORMAT, "money: unexpected character at offset %zu", i);
    }
    if (v > (uint64_t) CLR_AMOUNT_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "money: value out of range");
    }
    *fen = neg ? -(int64_t) v : (int64_t) v;
    return 0;
}

void
clr_money_format(int64_t fen, char out[32])
{
    /* The magnitude as unsigned, so INT64_MIN formats too. */
    uint64_t mag = fen < 0 ? (uint64_t) 0 - (uint64_t) fen : (uint64_t) fen;
    snprintf(out, 32, "%s%" PRIu64 ".%02u", fen < 0 ? "-" : "", mag / 100, (unsigned) (mag % 100));
}

enum {
    K_TYPE,
    K_TRACE,
    K_ACCOUNT,
    K_MEMBER,
    K_CREDIT,
    K_CREDIT_FEN,
    K_AMOUNT,
    K_AMOUNT_FEN,
    K_SECURITY,
    K_QTY,
    K_ORDER,
    K_SIDE,
    K_PRICE,
    K_PRICE_FEN,
    K_EXEC,
    K_DATE,
    K_COUNT
};

static const char *const KEYS[K_COUNT] = {
    "type",   "trace_id",   "account",  "member", "credit_limit", "credit_limit_fen",
    "amount", "amount_fen", "security", "qty",    "order_id",     "side",
    "price",  "price_fen",  "exec_id",  "date",
};

static const char *const TYPES[] = {NULL,       "open",  "deposit", "withdraw", "xfer_in",
                                    "xfer_out", "order", "cancel",  "fill",     "eod"};

#define B(k) (1u << (k))

/* Keys each type may carry (type and trace_id always) and keys it must carry. A pair like
 * price / price_fen counts as one required key (exactly one of the two). */
static unsigned
allowed_keys(int type)
{
    switch (type) {
    case CLR_EV_OPEN:
        return B(K_ACCOUNT) | B(K_MEMBER) | B(K_CREDIT) | B(K_CREDIT_FEN);
    case CLR_EV_DEPOSIT:
    case CLR_EV_WITHDRAW:
        return B(K_ACCOUNT) | B(K_AMOUNT) | B(K_AMOUNT_FEN);
    case CLR_EV_XFER_IN:
    case CLR_EV_XFER_OUT:
        return B(K_ACCOUNT) | B(K_SECURITY) | B(K_QTY);
    case CLR_EV_ORDER:
        return B(K_ACCOUNT) | B(K_ORDER) | B(K_SIDE) | B(K_SECURITY) | B(K_PRICE) | B(K_PRICE_FEN) |
               B(K_QTY);
    case CLR_EV_CANCEL:
        return B(K_ACCOUNT) | B(K_ORDER);
    case CLR_EV_FILL:
        return B(K_ACCOUNT) | B(K_ORDER) | B(K_EXEC) | B(K_PRICE) | B(K_PRICE_FEN) | B(K_QTY);
    case CLR_EV_EOD:
        return B(K_DATE);
    default:
        return 0;
    }
}

static int
field_err(dbao_err *err, const char *key, const char *what)
{
    return dbao_err_set(err, DBAO_EFORMAT, "clearing json: field \"%s\" %s", key, what);
}

/* get_u64: an id as an integer 0..2^53 or a decimal string of at most `max`. */
static int
get_u64(json_t *v, const char *key, uint64_t max, uint64_t *out, dbao_err *err)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t) i > JSON_SAFE_INT || (uint64_t) i > max) {
            return field_err(err, key, "is out of range (use a decimal string above 2^53)");
        }
        *out = (uint64_t) i;
        return 0;
    }
    if (!json_is_string(v)) {
        return field_err(err, key, "must be an integer or a decimal string");
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    uint64_t acc = 0;
    if (n == 0 || n > 20) {
        return field_err(err, key, "must be a decimal string of 1..20 digits");
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return field_err(err, key, "must contain decimal digits only");
        }
        unsigned d = (unsigned) (s[i] - '0');
        if (acc > (UINT64_MAX - d) / 10) {
            return field_err(err, key, "is out of range");
        }
        acc = acc * 10 + d;
    }
    if (acc > max) {
        return field_err(err, key, "is out of range");
    }
    *out = acc;
    return 0;
}

static int
get_money(json_t *v, const char *key, bool fen_key, int64_t *out, dbao_err *err)
{
    if (fen_key) {
        if (!json_is_integer(v)) {
            return field_err(err, key, "must be an integer (fen)");
        }
        json_int_t i = json_integer_value(v);
        if (i < -CLR_AMOUNT_MAX || i > CLR_AMOUNT_MAX) {
            return field_err(err, key, "is out of range");
        }
        *out = (int64_t) i;
        return 0;
    }
    if (!json_is_string(v)) {
        return field_err(err, key, "must be a decimal string in yuan (or use the _fen key)");
    }
    dbao_err e2;
    dbao_err_clear(&e2);
    if (clr_money_parse(json_string_value(v), json_string_length(v), out, &e2) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing json: field \"%s\": %s", key, e2.msg);
    }
    return 0;
}

static int
get_date(json_t *v, int64_t *out, dbao_err *err)
{
    int64_t d;
    if (json_is_integer(v)) {
        d = (int64_t) json_integer_value(v);
    } else if (json_is_string(v) && json_string_length(v) == 10) {
        const char *s = json_string_value(v);
        d = 0;
        for (int i = 0; i < 10; i++) {
            bool dash = i == 4 || i == 7;
            if (dash ? s[i] != '-' : (s[i] < '0' || s[i] > '9')) {
                return field_err(err, "date", "must be YYYY-MM-DD or an integer YYYYMMDD");
            }
            if (!dash) {
                d = d * 10 + (s[i] - '0');
            }
        }
    } else {
        return field_err(err, "date", "must be YYYY-MM-DD or an integer YYYYMMDD");
    }
    if (!clr__date_valid(d)) {
        return field_err(err, "date", "is not a valid calendar date");
    }
    *out = d;
    return 0;
}

static int
set_field(clr_event *ev, int k, json_t *v, dbao_err *err)
{
    const char *key = KEYS[k];
    uint64_t u = 0;
    int rc = 0;
    switch (k) {
    case K_TRACE: {
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        bool ok = s != NULL && json_string_length(v) == 32, nonzero = false;
        for (size_t i = 0; ok && i < 32; i++) {
            ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
            nonzero |= s[i] != '0';
        }
        if (!ok || !nonzero) {
            return field_err(err, key, "must be 32 lowercase hex digits, not all zero");
        }
        return dbao_hex_decode_fixed(ev->trace_id, 16, s, 32, err);
    }
    case K_ACCOUNT:
        rc = get_u64(v, key, UINT64_MAX, &ev->account, err);
        return rc;
    case K_ORDER:
        return get_u64(v, key, UINT64_MAX, &ev->order_id, err);
    case K_EXEC:
        return get_u64(v, key, UINT64_MAX, &ev->exec_id, err);
    case K_MEMBER:
        rc = get_u64(v, key, UINT32_MAX, &u, err);
        ev->member = (uint32_t) u;
        return rc;
    case K_CREDIT:
    case K_CREDIT_FEN:
    case K_AMOUNT:
    case K_AMOUNT_FEN:
        return get_money(v, key, k == K_CREDIT_FEN || k == K_AMOUNT_FEN, &ev->amount, err);
    case K_PRICE:
    case K_PRICE_FEN:
        return get_money(v, key, k == K_PRICE_FEN, &ev->price, err);
    case K_QTY:
        if (!json_is_integer(v)) {
            return field_err(err, key, "must be an integer");
        }
        ev->qty = (int64_t) json_integer_value(v);
        return 0;
    case K_SECURITY: {
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (s == NULL || json_string_length(v) != 6) {
            return field_err(err, key, "must be a 6-digit string");
        }
        uint32_t code = 0;
        for (int i = 0; i < 6; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return field_err(err, key, "must be a 6-digit string");
            }
            code = code * 10 + (uint32_t) (s[i] - '0');
        }
        ev->security = code;
        return 0;
    }
    case K_SIDE: {
        const char *s = json_is_string(v) ? json_string_value(v) : NULL;
        if (s == NULL || json_string_length(v) != 1 || (s[0] != 'B' && s[0] != 'S')) {
            return field_err(err, key, "must be \"B\" or \"S\"");
        }
        ev->side = (uint8_t) s[0];
        return 0;
    }
    case K_DATE:
        return get_date(v, &ev->qty, err);
    default:
        return field_err(err, key, "is unexpected");
    }
}

int
clr_json_decode(const char *json, size_t len, clr_event *ev, dbao_err *err)
{
    if (len > JSON_IN_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "clearing json: request larger than %d bytes",
                            JSON_IN_MAX);
    }
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        /* jansson's text may quote the input: give only the position. */
        return dbao_err_set(err, DBAO_EFORMAT,
                            "clearing json: malformed or duplicate key at line %d column %d",
                            jerr.line, jerr.column);
    }
    int rc = 0;
    clr_event e;
    memset(&e, 0, sizeof e);
    if (!json_is_object(root)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "clearing json: request must be an object");
        goto out;
    }
    json_t *t = json_object_get(root, "type");
    if (!json_is_string(t)) {
        rc = field_err(err, "type", "is missing or not a string");
        goto out;
    }
    int type = 0;
    for (int i = 1; i <= CLR_EV_EOD; i++) {
        if (strcmp(json_string_value(t), TYPES[i]) == 0) {
            type = i;
        }
    }
    if (type == 0) {
        rc = field_err(err, "type", "is not a known event type");
        goto out;
    }
    e.type = (uint8_t) type;
    unsigned allowed = allowed_keys(type) | B(K_TYPE) | B(K_TRACE), seen = 0;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        int k = -1;
        for (int i = 0; i < K_COUNT; i++) {
            if (strcmp(key, KEYS[i]) == 0) {
                k = i;
            }
        }
        if (k < 0) {
            /* An unknown key is named only if it is short printable ASCII (a key is not a
             * value, but it is client text: keep the message bounded). */
            bool printable = strlen(key) <= 32;
            for (const char *p = key; printable && *p != '\0'; p++) {
                printable = *p >= 0x21 && *p < 0x7f && *p != '"';
            }
            rc = dbao_err_set(err, DBAO_EFORMAT, "clearing json: unknown field \"%s\"",
                              printable ? key : "?");
            goto out;
        }
        if (!(allowed & B(k))) {
            rc = dbao_err_set(err, DBAO_EFORMAT,
                              "clearing json: field \"%s\" not allowed for type \"%s\"", KEYS[k],
                              TYPES[type]);
            goto out;
        }
        if (json_is_real(v)) {
            rc = field_err(err, KEYS[k], "must not be a JSON float (use a string or _fen)");
            goto out;
        }
        seen |= B(k);
        if (k == K_TYPE) {
            continue;
        }
        if ((rc = set_field(&e, k, v, err)) != 0) {
            goto out;
        }
    }
    /* Pairs: at most one of each; required keys present. */
    static const int pairs[][2] = {
        {K_CREDIT, K_CREDIT_FEN}, {K_AMOUNT, K_AMOUNT_FEN}, {K_PRICE, K_PRICE_FEN}};
    for (size_t i = 0; i < 3; i++) {
        if ((seen & B(pairs[i][0])) && (seen & B(pairs[i][1]))) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "clearing json: fields \"%s\" and \"%s\" both set",
                              KEYS[pairs[i][0]], KEYS[pairs[i][1]]);
            goto out;
        }
        if (seen & B(pairs[i][1])) {
            seen |= B(pairs[i][0]);
        }
    }
    unsigned required =
        allowed_keys(type) & ~(B(K_CREDIT) | B(K_CREDIT_FEN) | B(K_AMOUNT_FEN) | B(K_PRICE_FEN));
    for (int k = 0; k < K_COUNT; k++) {
        if ((required & B(k)) && !(seen & B(k))) {
            rc = field_err(err, KEYS[k], "is missing");
            goto out;
        }
    }
    if ((rc = clr__intake_check(&e, err)) != 0) {
        goto out;
    }
    *ev = e;
out:
    json_decref(root);
    return rc;
}

static void
put_id(dbao_buf *b, const char *key, uint64_t v, int *rc)
{
    if (*rc == 0) {
        *rc = v <= JSON_SAFE_INT ? dbao_buf_printf(b, ",\"%s\":%" PRIu64, key, v)
                                 : dbao_buf_printf(b, ",\"%s\":\"%" PRIu64 "\"", key, v);
    }
}

int
clr_json_result(const clr_result *res, char **out, size_t *out_len, dbao_err *err)
{
    dbao_buf b = {0};
    char avail[32], frozen[32];
    int rc = 0;
    clr_money_format(res->cash_available, avail);
    clr_money_format(res->cash_frozen, frozen);
    rc = dbao_buf_printf(&b, "{\"seq\":%" PRIu64, res->seq);
    put_id(&b, "account", res->account, &rc);
    put_id(&b, "order_id", res->order_id, &rc);
    if (rc == 0) {
        const char *t = res->type >= 1 && res->type <= CLR_EV_EOD ? TYPES[res->type] : "?";
        rc = dbao_buf_printf(&b, ",\"type\":\"%s\",\"status\":\"%s\"", t,
                             res->reject == CLR_OK ? "OK" : "REJECTED");
    }
    if (rc == 0 && res->reject != CLR_OK) {
        rc = dbao_buf_printf(&b, ",\"reject\":\"%s\"", clr_reject_name((clr_reject) res->reject));
    }
    if (rc == 0) {
        rc = dbao_buf_printf(
            &b, ",\"cash_available\":\"%s\",\"cash_frozen\":\"%s\",\"open_qty\":%" PRId64 "}",
            avail, frozen, res->open_qty);
    }
    if (rc != 0) {
        dbao_buf_free(&b);
        return dbao_err_set(err, rc, "clearing json: out of memory");
    }
    *out = dbao_buf_take(&b, out_len);
    return 0;
}
