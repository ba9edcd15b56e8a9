/* settle.c: the end-of-day settlement file: write (merge the shards' netting rows) and check.
 *
 * Format (text, LF line ends, ASCII; docs/clearing.md "Settlement file"):
 *
 *   DBCLSETTLE 1 <trade_date YYYYMMDD>
 *   member,security,venue,buy_qty,sell_qty,buy_amount_fen,sell_amount_fen,fees_fen,net_qty,net_cash_fen,net_cash_yuan
 *   <one row per member x security, sorted by member then security, summed over every shard>
 *   total,<rows>,<buy_qty>,<sell_qty>,<buy_amount>,<sell_amount>,<fees>,<net_qty>,<net_cash>
 *   sm3 <64 lowercase hex digits: SM3 of every byte before this line>
 *
 * Money is integer fen (the authoritative columns) plus net cash in yuan with exactly two
 * decimals for people; the checker verifies that the yuan column says the same as the fen one.
 * Integers are decimal without leading zeros or '+' (a '-' only on negative values), so every
 * value has one spelling and the file is canonical: the same rows give the same bytes.
 *
 * clr_settlement_check refuses (DBAO_EFORMAT) anything that does not parse exactly, rows out of
 * order or duplicated, a row whose net_qty / net_cash is not buy - sell / sell - buy - fees, a
 * total line that is not the sum of the rows, and (DBAO_EVERIFY) a digest mismatch. The
 * totals balance by construction of each row: sum(net_cash) + sum(fees) = sum(sell) - sum(buy).
 * Hand-written: the format is ten integer columns; a CSV library would add nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/clearing.h"
#include "dengbao/gm.h"
#include "internal.h"

#define SETTLE_MAGIC "DBCLSETTLE"
#define SETTLE_HEADER                                                                              \
    "member,security,venue,buy_qty,sell_qty,buy_amount_fen,sell_amount_fen,fees_fen,net_qty,"      \
    "net_cash_fen,net_cash_yuan"
#define SETTLE_MAX (256u << 20) /* bytes a checker reads */

static int
cmp_row(const void *x, const void *y)
{
    const clr_net_row *a = x, *b = y;
    if (a->member != b->member) {
        return a->member < b->member ? -1 : 1;
    }
    return a->security < b->security ? -1 : (a->security > b->security);
}

/* Yuan text with two decimals, exact (no floating point). */
static void
yuan(int64_t fen, char out[32])
{
    uint64_t m = fen < 0 ? (uint64_t) 0 - (uint64_t) fen : (uint64_t) fen;
    snprintf(out, 32, "%s%llu.%02llu", fen < 0 ? "-" : "", (unsigned long long) (m / 100),
             (unsigned long long) (m % 100));
}

static bool
add_ok(int64_t *acc, int64_t v)
{
    return !__builtin_add_overflow(*acc, v, acc);
}

/* Adds row b into a; false on overflow. */
static bool
row_add(clr_net_row *a, const clr_net_row *b)
{
    return add_ok(&a->buy_qty, b->buy_qty) && add_ok(&a->sell_qty, b->sell_qty) &&
           add_ok(&a->buy_amount, b->buy_amount) && add_ok(&a->sell_amount, b->sell_amount) &&
           add_ok(&a->fees, b->fees);
}

/* Recomputes the derived columns; false on overflow. */
static bool
row_derive(clr_net_row *r)
{
    return !__builtin_sub_overflow(r->buy_qty, r->sell_qty, &r->net_qty) &&
           !__builtin_sub_overflow(r->sell_amount, r->buy_amount, &r->net_cash) &&
           !__builtin_sub_overflow(r->net_cash, r->fees, &r->net_cash);
}

static bool
totals_add(clr_settle_totals *t, const clr_net_row *r)
{
    t->rows++;
    return add_ok(&t->buy_amount, r->buy_amount) && add_ok(&t->sell_amount, r->sell_amount) &&
           add_ok(&t->fees, r->fees) && add_ok(&t->net_cash, r->net_cash) &&
           add_ok(&t->buy_qty, r->buy_qty) && add_ok(&t->sell_qty, r->sell_qty);
}

int
clr_settlement_write(const char *path, uint32_t trade_date, const clr_net_row *rows, size_t num,
                     clr_settle_totals *totals, dbao_err *err)
{
    clr_settle_totals t;
    memset(&t, 0, sizeof t); /* padding too: callers may compare totals bytewise */
    t.trade_date = trade_date;
    dbao_buf b = {0};
    int rc = 0;
    clr_net_row *m = dbao_malloc(num ? num * sizeof *m : 1);
    if (m == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "settlement: out of memory");
    }
    if (num) {
        memcpy(m, rows, num * sizeof *m);
        qsort(m, num, sizeof *m, cmp_row);
    }
    /* Merge equal (member, security) rows from different shards. */
    size_t k = 0;
    for (size_t i = 0; i < num; i++) {
        if (m[i].member == 0 || m[i].buy_qty < 0 || m[i].sell_qty < 0 || m[i].buy_amount < 0 ||
            m[i].sell_amount < 0 || m[i].fees < 0) {
            rc = dbao_err_set(err, DBAO_EINVAL,
                              "settlement: row %zu has a negative field or "
                              "member 0",
                              i);
            goto out;
        }
        if (k > 0 && cmp_row(&m[k - 1], &m[i]) == 0) {
            if (!row_add(&m[k - 1], &m[i])) {
                rc = dbao_err_set(err, DBAO_ERANGE, "settlement: sums overflow");
                goto out;
            }
        } else {
            m[k++] = m[i];
        }
    }
    rc = dbao_buf_printf(&b, SETTLE_MAGIC " 1 %08u\n" SETTLE_HEADER "\n", trade_date);
    for (size_t i = 0; rc == 0 && i < k; i++) {
        clr_net_row *r = &m[i];
        if (!row_derive(r) || !totals_add(&t, r)) {
            rc = dbao_err_set(err, DBAO_ERANGE, "settlement: sums overflow");
            goto out;
        }
        char y[32];
        yuan(r->net_cash, y);
        rc = dbao_buf_printf(
            &b, "%u,%06u,%s,%lld,%lld,%lld,%lld,%lld,%lld,%lld,%s\n", r->member, r->security,
            clr_venue_name(clr_route_venue(r->security)), (long long) r->buy_qty,
            (long long) r->sell_qty, (long long) r->buy_amount, (long long) r->sell_amount,
            (long long) r->fees, (long long) r->net_qty, (long long) r->net_cash, y);
    }
    int64_t net_qty;
    if (rc == 0 && __builtin_sub_overflow(t.buy_qty, t.sell_qty, &net_qty)) {
        rc = dbao_err_set(err, DBAO_ERANGE, "settlement: sums overflow");
        goto out;
    }
    if (rc == 0) {
        rc = dbao_buf_printf(&b, "total,%llu,%lld,%lld,%lld,%lld,%lld,%lld,%lld\n",
                             (unsigned long long) t.rows, (long long) t.buy_qty,
                             (long long) t.sell_qty, (long long) t.buy_amount,
                             (long long) t.sell_amount, (long long) t.fees, (long long) net_qty,
                             (long long) t.net_cash);
    }
    if (rc == 0) {
        uint8_t d[32];
        char hex[65];
        gm_sm3(d, b.data, b.len);
        dbao_hex_encode(hex, d, 32);
        rc = dbao_buf_printf(&b, "sm3 %s\n", hex);
    }
    if (rc != 0) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "settlement: out of memory");
        goto out;
    }
    if (path != NULL) {
        rc = dbao_file_write(path, b.data, b.len, 0640, err);
    }
    if (rc == 0 && totals != NULL) {
        *totals = t;
    }
out:
    dbao_free(m);
    dbao_buf_free(&b);
    return rc;
}

/* ---- checking ------------------------------------------------------------------------------- */

/* Parses a canonical decimal integer (no '+', no leading zeros, '-' only before a non-zero
 * value) ending at `end` or ','. Advances *p past the separator if one follows. */
static bool
parse_int(const char **p, const char *end, int64_t *out)
{
    const char *s = *p;
    bool neg = false;
    if (s < end && *s == '-') {
        neg = true;
        s++;
    }
    const char *d = s;
    uint64_t v = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (v > (UINT64_MAX - 9) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t) (*s - '0');
        s++;
    }
    size_t nd = (size_t) (s - d);
    if (nd == 0 || nd > 19 || (nd > 1 && *d == '0') || (neg && v == 0) ||
        v > (uint64_t) INT64_MAX) {
        return false;
    }
    *out = neg ? -(int64_t) v : (int64_t) v;
    if (s < end) {
        if (*s != ',') {
            return false;
        }
        s++;
    }
    *p = s;
    return true;
}

static bool
field_is(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t) (end - *p) < n || memcmp(*p, lit, n) != 0) {
        return false;
    }
    *p += n;
    if (*p < end) {
        if (**p != ',') {
            return false;
        }
        (*p)++;
    }
    return true;
}

int
clr_settlement_check(const char *path, clr_settle_totals *totals, dbao_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = dbao_file_read(&data, &len, path, SETTLE_MAX, err);
    if (rc != 0) {
        return rc;
    }
    const char *s = (const char *) data;
    const char *endp = s + len;
    clr_settle_totals t;
    memset(&t, 0, sizeof t);
    clr_net_row prev = {0};
    bool have_total = false;
    /* The digest line: the last line, "sm3 " + 64 hex + "\n" (69 bytes). */
    if (len < 69 || s[len - 1] != '\n' || memcmp(s + len - 69, "sm3 ", 4) != 0 ||
        (len > 69 && s[len - 70] != '\n')) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "settlement %s: no sm3 line at the end", path);
        goto out;
    }
    uint8_t want[32], got[32];
    if (dbao_hex_decode_fixed(want, 32, s + len - 65, 64, NULL) != 0) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "settlement %s: bad sm3 hex", path);
        goto out;
    }
    gm_sm3(got, s, len - 69);
    if (memcmp(want, got, 32) != 0) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "settlement %s: sm3 mismatch (file altered)", path);
        goto out;
    }
    endp = s + len - 69;
    size_t lineno = 0;
    for (const char *l = s; l < endp; lineno++) {
        const char *nl = memchr(l, '\n', (size_t) (endp - l));
        if (nl == NULL) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "settlement %s: line %zu unterminated", path,
                              lineno + 1);
            goto out;
        }
        const char *p = l;
        bool ok = true;
        if (have_total) {
            ok = false; /* nothing between the total and the digest */
        } else if (lineno == 0) {
            int64_t d;
            ok = (size_t) (nl - p) == sizeof SETTLE_MAGIC + 2 + 8 &&
                 memcmp(p, SETTLE_MAGIC " 1 ", sizeof SETTLE_MAGIC + 2) == 0;
            if (ok) {
                p += sizeof SETTLE_MAGIC + 2;
                ok = parse_int(&p, nl, &d) && p == nl && d >= 0 && d <= 99991231;
                t.trade_date = (uint32_t) d;
            }
        } else if (lineno == 1) {
            ok = (size_t) (nl - p) == strlen(SETTLE_HEADER) &&
                 memcmp(p, SETTLE_HEADER, strlen(SETTLE_HEADER)) == 0;
        } else if (field_is(&p, nl, "total")) {
            int64_t v[8];
            for (int i = 0; ok && i < 8; i++) {
                ok = parse_int(&p, nl, &v[i]) && (i == 7 || p < nl);
            }
            int64_t nq;
            ok = ok && p == nl && (uint64_t) v[0] == t.rows && v[1] == t.buy_qty &&
                 v[2] == t.sell_qty && v[3] == t.buy_amount && v[4] == t.sell_amount &&
                 v[5] == t.fees && !__builtin_sub_overflow(t.buy_qty, t.sell_qty, &nq) &&
                 v[6] == nq && v[7] == t.net_cash;
            /* The balance identity over the totals. */
            int64_t lhs, rhs;
            ok = ok && !__builtin_add_overflow(t.net_cash, t.fees, &lhs) &&
                 !__builtin_sub_overflow(t.sell_amount, t.buy_amount, &rhs) && lhs == rhs;
            have_total = true;
        } else {
            clr_net_row r = {0};
            int64_t mem;
            ok = parse_int(&p, nl, &mem) && mem >= 1 && mem <= UINT32_MAX && nl - p >= 7 &&
                 p[6] == ',';
            for (int i = 0; ok && i < 6; i++) {
                ok = p[i] >= '0' && p[i] <= '9';
                r.security = r.security * 10 + (uint32_t) (p[i] - '0');
            }
            if (ok) {
                r.member = (uint32_t) mem;
                p += 7; /* six digits and the comma */
            }
            ok = ok && field_is(&p, nl, clr_venue_name(clr_route_venue(r.security)));
            int64_t nq = 0, nc = 0;
            ok = ok && parse_int(&p, nl, &r.buy_qty) && parse_int(&p, nl, &r.sell_qty) &&
                 parse_int(&p, nl, &r.buy_amount) && parse_int(&p, nl, &r.sell_amount) &&
                 parse_int(&p, nl, &r.fees) && parse_int(&p, nl, &nq) && parse_int(&p, nl, &nc);
            ok = ok && r.buy_qty >= 0 && r.sell_qty >= 0 && r.buy_amount >= 0 &&
                 r.sell_amount >= 0 && r.fees >= 0 && row_derive(&r) && r.net_qty == nq &&
                 r.net_cash == nc;
            if (ok) {
                char y[32];
                yuan(r.net_cash, y);
                ok = (size_t) (nl - p) == strlen(y) && memcmp(p, y, strlen(y)) == 0;
            }
            ok = ok && (t.rows == 0 || cmp_row(&prev, &r) < 0) && totals_add(&t, &r);
            prev = r;
        }
        if (!ok) {
            rc = dbao_err_set(err, DBAO_EFORMAT,
                              "settlement %s: line %zu malformed or does "
                              "not balance",
                              path, lineno + 1);
            goto out;
        }
        l = nl + 1;
    }
    if (!have_total) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "settlement %s: no total line", path);
        goto out;
    }
    if (totals != NULL) {
        *totals = t;
    }
out:
    dbao_free(data);
    return rc;
}
