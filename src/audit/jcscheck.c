/* jcscheck.c: a fast check that a record's details text is already canonical.
 *
 * audit_record_decode must accept exactly the bytes audit_record_encode produces, and the
 * details field is RFC 8785 (JCS) canonical JSON restricted to the details rules (an object at
 * the top, integers within +-(2^53 - 1), no reals, at most 16 levels of nesting). The general
 * check parses with jansson, re-serialises and compares: correct, but it allocates a DOM per
 * record and dominated `audit verify` (about half of its time on 400-byte records). This file
 * checks the canonical form directly on the bytes, without allocating: written by hand because
 * measured speed demands it (full verification must reach 1,000,000 records/s).
 *
 * What canonical means here (the inverse of audit__jcs_write in record.c):
 *   value    object | array | string | integer | true | false | null, no white space anywhere
 *   object   '{' members '}' with keys in strictly increasing UTF-16 code unit order (so no
 *            duplicates); members "key":value separated by ','
 *   string   '"' then valid UTF-8 (no overlong forms, surrogates or code points above
 *            U+10FFFF); bytes below 0x20 only as \b \t \n \f \r or \u00xx (lowercase hex; not
 *            \u0000, which jansson refuses without JSON_ALLOW_NUL, nor the five that have a
 *            short form); '"' and '\' only as \" and \\; no other escape
 *   integer  -?(0|[1-9][0-9]*), not "-0", magnitude at most 2^53 - 1
 * The caller falls back to the jansson path when this says no (to name what is wrong), so a
 * false "no" costs time only; a false "yes" would be a bug, which the differential fuzz target
 * fuzz_audit_jcs hunts for.
 */
#include <string.h>

#include "internal.h"

typedef struct jp {
    const uint8_t *s;
    size_t len, pos;
} jp;

#define INT_LIMIT 9007199254740991ull

static bool value(jp *p, int depth);

/* string checks a canonical string at p->pos and leaves pos after the closing quote. */
static bool
string(jp *p)
{
    if (p->pos >= p->len || p->s[p->pos] != '"') {
        return false;
    }
    p->pos++;
    for (;;) {
        if (p->pos >= p->len) {
            return false;
        }
        uint8_t c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            return true;
        }
        if (c < 0x20) {
            return false;
        }
        if (c == '\\') {
            if (p->pos + 1 >= p->len) {
                return false;
            }
            uint8_t e = p->s[p->pos + 1];
            if (e == '"' || e == '\\' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
                p->pos += 2;
                continue;
            }
            if (e != 'u' || p->pos + 6 > p->len || p->s[p->pos + 2] != '0' ||
                p->s[p->pos + 3] != '0') {
                return false;
            }
            static const char hex[] = "0123456789abcdef";
            const char *h1 = memchr(hex, p->s[p->pos + 4], 16);
            const char *h2 = memchr(hex, p->s[p->pos + 5], 16);
            if (p->s[p->pos + 4] == 0 || p->s[p->pos + 5] == 0 || h1 == NULL || h2 == NULL) {
                return false;
            }
            unsigned v = (unsigned) ((h1 - hex) << 4 | (h2 - hex));
            if (v >= 0x20 || v == 0 || v == '\b' || v == '\f' || v == '\n' || v == '\r' ||
                v == '\t') {
                return false;
            }
            p->pos += 6;
            continue;
        }
        if (c < 0x80) {
            p->pos++;
            continue;
        }
        uint32_t cp;
        if (!audit__utf8_next(p->s, p->len, &p->pos, &cp)) {
            return false;
        }
    }
}

/* Code point iterator over the inside of a canonical string (escapes decoded). */
static uint32_t
str_next(const uint8_t *s, size_t *pos)
{
    uint8_t c = s[*pos];
    if (c == '\\') {
        uint8_t e = s[*pos + 1];
        *pos += 2;
        switch (e) {
        case 'b':
            return '\b';
        case 'f':
            return '\f';
        case 'n':
            return '\n';
        case 'r':
            return '\r';
        case 't':
            return '\t';
        case 'u': {
            uint8_t h = s[*pos + 2], l = s[*pos + 3];
            *pos += 4;
            unsigned hv = h <= '9' ? h - '0' : h - 'a' + 10;
            unsigned lv = l <= '9' ? l - '0' : l - 'a' + 10;
            return hv << 4 | lv;
        }
        default:
            return e; /* '"' or '\\' */
        }
    }
    uint32_t cp = c;
    if (c < 0x80) {
        (*pos)++;
    } else {
        audit__utf8_next(s, SIZE_MAX, pos, &cp); /* already validated */
    }
    return cp;
}

/* key_cmp compares two validated canonical strings (quotes included) in UTF-16 order. */
static int
key_cmp(const uint8_t *a, const uint8_t *b)
{
    size_t pa = 1, pb = 1;
    uint32_t pend_a = 0, pend_b = 0;
    for (;;) {
        bool ea = pend_a == 0 && a[pa] == '"';
        bool eb = pend_b == 0 && b[pb] == '"';
        if (ea || eb) {
            return (int) !ea - (int) !eb;
        }
        uint32_t ua, ub;
        if (pend_a) {
            ua = pend_a;
            pend_a = 0;
        } else {
            ua = str_next(a, &pa);
            if (ua >= 0x10000) {
                pend_a = 0xdc00 + ((ua - 0x10000) & 0x3ff);
                ua = 0xd800 + ((ua - 0x10000) >> 10);
            }
        }
        if (pend_b) {
            ub = pend_b;
            pend_b = 0;
        } else {
            ub = str_next(b, &pb);
            if (ub >= 0x10000) {
                pend_b = 0xdc00 + ((ub - 0x10000) & 0x3ff);
                ub = 0xd800 + ((ub - 0x10000) >> 10);
            }
        }
        if (ua != ub) {
            return ua < ub ? -1 : 1;
        }
    }
}

static bool
integer(jp *p)
{
    size_t start = p->pos;
    bool neg = false;
    if (p->s[p->pos] == '-') {
        neg = true;
        p->pos++;
    }
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
        return false;
    }
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (neg) {
            return false; /* "-0" is 0 */
        }
    } else {
        uint64_t v = 0;
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
            v = v * 10 + (uint64_t) (p->s[p->pos] - '0');
            if (v > INT_LIMIT) {
                return false;
            }
            p->pos++;
        }
    }
    (void) start;
    /* a fraction or exponent makes it a real: not allowed */
    if (p->pos < p->len && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E' ||
                            (p->s[p->pos] >= '0' && p->s[p->pos] <= '9'))) {
        return false;
    }
    return true;
}

static bool
literal(jp *p, const char *w, size_t n)
{
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0) {
        return false;
    }
    p->pos += n;
    return true;
}

static bool
object(jp *p, int depth)
{
    if (depth >= AUDIT_DETAILS_DEPTH_MAX) {
        return false;
    }
    p->pos++; /* '{' */
    if (p->pos < p->len && p->s[p->pos] == '}') {
        p->pos++;
        return true;
    }
    const uint8_t *prev = NULL;
    for (;;) {
        const uint8_t *key = p->s + p->pos;
        if (!string(p)) {
            return false;
        }
        if (prev != NULL && key_cmp(prev, key) >= 0) {
            return false;
        }
        prev = key;
        if (p->pos >= p->len || p->s[p->pos] != ':') {
            return false;
        }
        p->pos++;
        if (!value(p, depth + 1)) {
            return false;
        }
        if (p->pos >= p->len) {
            return false;
        }
        if (p->s[p->pos] == '}') {
            p->pos++;
            return true;
        }
        if (p->s[p->pos] != ',') {
            return false;
        }
        p->pos++;
    }
}

static bool
array(jp *p, int depth)
{
    if (depth >= AUDIT_DETAILS_DEPTH_MAX) {
        return false;
    }
    p->pos++; /* '[' */
    if (p->pos < p->len && p->s[p->pos] == ']') {
        p->pos++;
        return true;
    }
    for (;;) {
        if (!value(p, depth + 1)) {
            return false;
        }
        if (p->pos >= p->len) {
            return false;
        }
        if (p->s[p->pos] == ']') {
            p->pos++;
            return true;
        }
        if (p->s[p->pos] != ',') {
            return false;
        }
        p->pos++;
    }
}

static bool
value(jp *p, int depth)
{
    if (p->pos >= p->len) {
        return false;
    }
    switch (p->s[p->pos]) {
    case '{':
        return object(p, depth);
    case '[':
        return array(p, depth);
    case '"':
        return string(p);
    case 't':
        return literal(p, "true", 4);
    case 'f':
        return literal(p, "false", 5);
    case 'n':
        return literal(p, "null", 4);
    default:
        return integer(p);
    }
}

bool
audit__jcs_is_canonical(const char *s, size_t len)
{
    if (len < 2 || len > AUDIT_DETAILS_MAX || s[0] != '{') {
        return false;
    }
    jp p = {(const uint8_t *) s, len, 0};
    return object(&p, 0) && p.pos == len;
}
