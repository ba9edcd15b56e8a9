/* jsonstream.c: a masking policy applied to a JSON document that arrives in pieces
 * (mask_json_stream_*), for the gateway's response masking.
 *
 * mask_apply_json (apply.c) parses the whole document with jansson, walks the tree and dumps
 * it again. This file gives the SAME output for the same input without a tree: a resumable
 * state machine over the JSON grammar reads the bytes as they come, keeps a stack of open
 * containers (object or array, and the length of the field path at the container) and the
 * current field path, and writes the output as soon as each token is complete.
 *
 * What "the same" means, token by token (it is what jansson 2.14 does with JSON_DECODE_ANY |
 * JSON_ALLOW_NUL on input and JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
 * JSON_REAL_PRECISION(15) on output):
 *   - white space between tokens is dropped (compact output);
 *   - strings (keys and values) are decoded (escapes, surrogate pairs; invalid UTF-8, lone
 *     surrogates and raw control bytes are errors) and encoded again: '"' and '\' escaped,
 *     \b \f \n \r \t, other bytes below 0x20 as \u00XX (upper-case hex), everything else as
 *     UTF-8 (so "\u0031" becomes "1" and "\/" becomes "/"). Detection therefore sees the
 *     decoded text, exactly as in apply.c;
 *   - integers are read as int64 (out of range: an error) and written with %lld ("-0" -> "0");
 *     other numbers are read with strtod (overflow: an error) and written with %.15g plus ".0"
 *     when there is neither '.' nor 'e' and without '+' and leading zeros in the exponent;
 *   - a field path is the dot-joined chain of decoded object keys from the root (arrays add
 *     nothing; a '.' is added only after a non-empty path); the value of a path with a rule is
 *     masked by the rule's action for the roles: a string as text; a number under a number
 *     function (round, noise) stays a number when the result reads as one, else it becomes a
 *     string; containers under a rule have every string and number inside masked the same way
 *     (no further lookups); a clear override passes the subtree; null and booleans stay;
 *   - every other string and every integer is scanned by the detectors (the policy's detect
 *     types) and findings are replaced by their type rule's action; a changed integer becomes a
 *     string. A function that refuses a value gives "***" (fail closed).
 *
 * Where the stream differs from the tree, by design (documented in docs/mask.md):
 *   - duplicate keys: jansson keeps one member (the last value at the first position); the
 *     stream writes every member, each masked on its own (nothing leaks either way);
 *   - limits, for bounded memory: nesting deeper than MASK_JSON_STREAM_DEPTH (512, as apply.c)
 *     is DBAO_EFORMAT; an object key longer than MASK_JSON_STREAM_STR_MAX (64 KiB) or a field
 *     path longer than that is DBAO_EFORMAT; a number token longer than 1 KiB is DBAO_EFORMAT;
 *     a string VALUE longer than MASK_JSON_STREAM_STR_MAX that would have to be scanned or
 *     masked is replaced whole by "***" and counted as a masked field (fail closed). Strings
 *     under a clear override are streamed through (re-encoded) whatever their length;
 *   - on invalid JSON the stream has already written the output of the tokens before the error:
 *     the caller must discard or abort what it produced (the gateway aborts the response).
 *
 * Memory: the stack (513 entries of 8 bytes), the path, the current string value (at most
 * 64 KiB + 4), the current number, and a scratch buffer for one masked value. No allocation per
 * value once the buffers have grown; mask_json_stream_reset keeps them for the next document.
 *
 * Threading: one thread at a time per stream; the policy is shared read-only.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/mask.h"

#define FALLBACK       "***"
#define NUM_MAX        1024
#define PASS_FLUSH     4096
#define STACK_FINDINGS 64

enum {
    S_VALUE = 0, /* a value must come (top, after ':' or after ',' in an array) */
    S_ARR_FIRST, /* after '[': a value or ']' */
    S_OBJ_FIRST, /* after '{': a key or '}' */
    S_OBJ_KEY,   /* after ',' in an object: a key */
    S_COLON,     /* after a key */
    S_AFTER,     /* after a value inside a container: ',' or the closing bracket */
    S_END,       /* the top value is complete: only white space may follow */
    S_STR,       /* inside a string */
    S_NUM,       /* inside a number */
    S_LIT,       /* inside true / false / null */
};

enum { STR_KEY = 0, STR_BUFFER, STR_PASS, STR_OVERLONG };

typedef struct level {
    uint64_t hash; /* FNV-1a of the path at the container */
    uint32_t base; /* path length at the container (its members' path prefix) */
    uint8_t is_obj;
} level;

struct mask_json_stream {
    const mask_policy *p;
    const mask_detector *det;
    const char *const *roles;
    size_t num_roles;
    int fail;      /* sticky error code (0: fine) */
    uint8_t state; /* S_* */
    uint8_t smode; /* STR_* while in a string */
    uint8_t esc;   /* 0 none, 1 after '\', 2..5: reading hex digit esc-2 */
    uint8_t u8need;
    uint8_t u8lo, u8hi; /* range of the next continuation byte */
    uint8_t lit, litpos;
    uint32_t cp;  /* \u escape being read */
    uint32_t hs;  /* pending high surrogate (0: none) */
    uint32_t sp;  /* open containers */
    int rule_lvl; /* stack index of the container where the rule took over, -1: none */
    const mask_rule *rule;
    int rule_idx;
    const mask_rule *vrule; /* the rule of the value about to come (NULL: scan) */
    int vidx;
    uint32_t vpath; /* path length of the value about to come */
    dbao_buf path, str, num, tmp;
    size_t hw_str, hw_tmp, hw_num; /* high-water marks: wiped at reset (personal data) */
    mask_stats st;
    uint64_t vhash;     /* FNV-1a of the path of the value about to come */
    size_t max_target;  /* longest rule target: longer paths need no lookup */
    uint64_t bloom[64]; /* 4096-bit Bloom filter of the rule targets' FNV-1a hashes */
    level stack[MASK_JSON_STREAM_DEPTH + 1];
};

/* 1 for the bytes that stop a plain run inside a string: '"', '\', controls, non-ASCII */
static const uint8_t STOP[256] = {
    [0x00 ... 0x1f] = 1,
    ['"'] = 1,
    ['\\'] = 1,
    [0x80 ... 0xff] = 1,
};

/* plain_run: the first index >= i where in[] holds a STOP byte (or len). Eight bytes at a time
 * (SWAR, any byte order: the word is only tested for "has one"), then byte by byte. */
static inline size_t
plain_run(const uint8_t *in, size_t i, size_t len)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    while (len - i >= 8) {
        uint64_t x;
        memcpy(&x, in + i, 8);
        uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
        uint64_t m = ((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x) | x;
        if ((m & high) != 0)
            break;
        i += 8;
    }
    while (i < len && !STOP[in[i]])
        i++;
    return i;
}

static const char *const LITS[3] = {"true", "false", "null"};
static const uint8_t LITLEN[3] = {4, 5, 4};

/* ---- field lookups ----------------------------------------------------------------------------
 * Most keys name no rule. Before the policy's hash table is asked, a Bloom filter of the rule
 * targets' FNV-1a hashes answers "surely not"; the path's hash is carried along the stack, so
 * a key costs one pass over its own bytes. */

#define FNV_BASIS 0xcbf29ce484222325ull

static inline uint64_t
fnv(uint64_t h, const char *t, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char) t[i]) * 0x100000001b3ull;
    return h;
}

static inline void
bloom_add(uint64_t *b, uint64_t h)
{
    b[(h >> 6) & 63] |= 1ull << (h & 63);
    b[(h >> 38) & 63] |= 1ull << ((h >> 32) & 63);
}

static inline bool
bloom_has(const uint64_t *b, uint64_t h)
{
    return (b[(h >> 6) & 63] & (1ull << (h & 63))) != 0 &&
           (b[(h >> 38) & 63] & (1ull << ((h >> 32) & 63))) != 0;
}

/* ---- output helpers ------------------------------------------------------------------------ */

static inline int
oputc(dbao_buf *b, char c)
{
    if (b->len + 2 <= b->cap) {
        b->data[b->len++] = c;
        b->data[b->len] = '\0';
        return 0;
    }
    return dbao_buf_putc(b, c);
}

/* put_escaped: text (valid UTF-8) as the inside of a JSON string, escaped as jansson does */
static inline int
oput(dbao_buf *b, const void *d, size_t n)
{
    if (b->len + n + 1 <= b->cap) {
        memcpy(b->data + b->len, d, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    return dbao_buf_put(b, d, n);
}

static int
put_escaped(dbao_buf *b, const char *t, size_t len)
{
    size_t i = 0, run = 0;
    while (i < len) {
        unsigned char c = (unsigned char) t[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (i > run && oput(b, t + run, i - run) != 0)
            return DBAO_ENOMEM;
        char e[8];
        size_t n = 2;
        e[0] = '\\';
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = "0123456789ABCDEF"[c >> 4];
            e[5] = "0123456789ABCDEF"[c & 15];
            n = 6;
        }
        if (oput(b, e, n) != 0)
            return DBAO_ENOMEM;
        i++;
        run = i;
    }
    if (i > run && oput(b, t + run, i - run) != 0)
        return DBAO_ENOMEM;
    return 0;
}

static int
put_string(dbao_buf *b, const char *t, size_t len)
{
    if (oputc(b, '"') != 0 || put_escaped(b, t, len) != 0 || oputc(b, '"') != 0)
        return DBAO_ENOMEM;
    return 0;
}

static bool
utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        unsigned need, lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else
            return false;
        if (n - i <= need)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (unsigned k = 2; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        i += need + 1;
    }
    return true;
}

/* ---- masking (as apply.c) ------------------------------------------------------------------ */

/* apply_action appends action idx (>= 0) applied to in[0..len) to out; "***" when the
 * function refuses the value (apply.c's apply_action) */
static int
apply_action(mask_json_stream *s, int idx, mask_type type, const char *in, size_t len,
             dbao_buf *out, dbao_err *err)
{
    const mask_action *a = mask_policy_action(s->p, (size_t) idx);
    if (a == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "bad action index %d", idx);
    size_t mark = out->len;
    int rc = mask_fn_apply(&a->fn, type != MASK_T_NONE ? type : a->type, mask_policy_keys(s->p), in,
                           len, out, NULL);
    if (out == &s->tmp && s->tmp.len > s->hw_tmp)
        s->hw_tmp = s->tmp.len;
    if (rc == DBAO_ENOMEM || rc == DBAO_ECRYPTO)
        return dbao_err_set(err, rc, "masking failed: %s", dbao_strerror(rc));
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return oput(out, FALLBACK, strlen(FALLBACK));
    }
    return 0;
}

/* scan_into: text[0..len) with every finding masked (apply.c's text_into), written escaped
 * into out; *changed: whether a finding was masked */
static int
scan_into(mask_json_stream *s, const char *in, size_t len, dbao_buf *out, bool escaped,
          bool *changed, dbao_err *err)
/* escaped: write the unmasked text escaped (else as is: the caller knows it needs none); the
 * masked pieces are always escaped */
{
    mask_finding stackf[STACK_FINDINGS];
    mask_finding *f = stackf;
    *changed = false;
    size_t n = mask_detect(s->det, in, len, f, STACK_FINDINGS);
    if (n > STACK_FINDINGS) {
        f = dbao_malloc(n * sizeof(*f));
        if (f == NULL)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        size_t n2 = mask_detect(s->det, in, len, f, n);
        if (n2 < n)
            n = n2;
    }
    size_t pos = 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (f[i].start < pos || f[i].end > len || f[i].end <= f[i].start)
            continue;
        rc = escaped ? put_escaped(out, in + pos, f[i].start - pos)
                     : oput(out, in + pos, f[i].start - pos);
        if (rc != 0)
            break;
        const mask_rule *r = mask_policy_type_rule(s->p, f[i].type);
        int idx = mask_rule_action_for(r, s->roles, s->num_roles);
        const char *v = in + f[i].start;
        size_t vl = f[i].end - f[i].start;
        if (idx < 0) {
            rc = escaped ? put_escaped(out, v, vl) : oput(out, v, vl);
        } else {
            dbao_buf_reset(&s->tmp);
            rc = apply_action(s, idx, f[i].type, v, vl, &s->tmp, err);
            if (rc == 0 && !utf8_valid((const unsigned char *) s->tmp.data, s->tmp.len))
                rc = dbao_err_set(err, DBAO_EFORMAT, "masked value is not utf-8");
            if (rc == 0)
                rc = put_escaped(out, s->tmp.data, s->tmp.len); /* a replace() may hold '"' */
            s->st.findings++;
            s->st.types |= MASK_TYPE_BIT(f[i].type);
            *changed = true;
        }
        pos = f[i].end;
    }
    if (rc == 0)
        rc = escaped ? put_escaped(out, in + pos, len - pos) : oput(out, in + pos, len - pos);
    if (f != stackf)
        dbao_free(f);
    if (rc == DBAO_ENOMEM)
        return dbao_err_set(err, rc, "out of memory");
    return rc;
}

/* mask_whole: a value under a rule with action idx >= 0, as a JSON string */
static int
mask_whole(mask_json_stream *s, const mask_rule *r, int idx, const char *in, size_t len,
           dbao_buf *out, dbao_err *err)
{
    dbao_buf_reset(&s->tmp);
    int rc = apply_action(s, idx, r->type, in, len, &s->tmp, err);
    if (rc != 0)
        return rc;
    if (!utf8_valid((const unsigned char *) s->tmp.data, s->tmp.len))
        return dbao_err_set(err, DBAO_EFORMAT, "masked value is not utf-8");
    if (put_string(out, s->tmp.data, s->tmp.len) != 0)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    s->st.fields++;
    if (r->type != MASK_T_NONE)
        s->st.types |= MASK_TYPE_BIT(r->type);
    return 0;
}

/* ---- numbers ------------------------------------------------------------------------------- */

typedef struct numval {
    bool is_int;
    long long i;
    double d;
} numval;

static bool
isdig(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* num_parse: t[0..len) exactly one JSON number (jansson's grammar and ranges) */
static bool
num_parse(const char *t, size_t len, numval *v)
{
    char buf[NUM_MAX + 1];
    size_t i = 0;
    bool is_int = true;
    if (len == 0 || len > NUM_MAX)
        return false;
    if (t[i] == '-')
        i++;
    if (i < len && t[i] == '0')
        i++;
    else if (i < len && isdig((unsigned char) t[i]))
        while (i < len && isdig((unsigned char) t[i]))
            i++;
    else
        return false;
    if (i < len && t[i] == '.') {
        is_int = false;
        i++;
        if (i >= len || !isdig((unsigned char) t[i]))
            return false;
        while (i < len && isdig((unsigned char) t[i]))
            i++;
    }
    if (i < len && (t[i] == 'e' || t[i] == 'E')) {
        is_int = false;
        i++;
        if (i < len && (t[i] == '+' || t[i] == '-'))
            i++;
        if (i >= len || !isdig((unsigned char) t[i]))
            return false;
        while (i < len && isdig((unsigned char) t[i]))
            i++;
    }
    if (i != len)
        return false;
    memcpy(buf, t, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    v->is_int = is_int;
    if (is_int) {
        v->i = strtoll(buf, &end, 10);
        if (errno == ERANGE)
            return false;
    } else {
        v->d = strtod(buf, &end);
        if ((v->d == HUGE_VAL || v->d == -HUGE_VAL) && errno == ERANGE)
            return false;
    }
    return true;
}

/* num_dump: jansson's output for a number (jsonp_dtostr with precision 15 for reals) */
static int
num_dump(const numval *v, char *b, size_t cap)
{
    if (v->is_int)
        return snprintf(b, cap, "%lld", v->i);
    int n = snprintf(b, cap, "%.15g", v->d);
    if (n < 0 || (size_t) n + 3 >= cap)
        return -1;
    size_t len = (size_t) n;
    if (strchr(b, '.') == NULL && strchr(b, 'e') == NULL) {
        b[len++] = '.';
        b[len++] = '0';
        b[len] = '\0';
    }
    char *start = strchr(b, 'e');
    if (start != NULL) {
        start++;
        char *end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t) (end - b) + 1);
            len -= (size_t) (end - start);
        }
    }
    return (int) len;
}

static bool
is_number_fn(const mask_policy *p, int idx)
{
    const mask_action *a = mask_policy_action(p, (size_t) idx);
    return a && (a->fn.kind == MASK_FN_ROUND || a->fn.kind == MASK_FN_NOISE);
}

static bool
json_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* num_canonical: t[0..len) is a number token that jansson would write back unchanged: an
 * integer of at most 18 digits other than "-0", or a decimal -?I.F with at most 15 significant
 * digits, F not ending in 0 (unless F is "0"), and a first significant digit at most 4 places
 * after the point (%.15g prints it in fixed notation then, and 15 digits survive the round
 * trip through a double). *is_int tells which. */
static bool
num_canonical(const char *t, size_t len, bool *is_int)
{
    size_t i = 0, dot = 0, sig = 0, lead = 0;
    bool neg = len > 0 && t[0] == '-';
    i = neg;
    if (i >= len || !isdig((unsigned char) t[i]) || (t[i] == '0' && i + 1 < len && t[i + 1] != '.'))
        return false;
    for (; i < len; i++) {
        unsigned char c = (unsigned char) t[i];
        if (c == '.') {
            if (dot)
                return false;
            dot = i;
        } else if (!isdig(c)) {
            return false;
        } else if (sig > 0 || c != '0') {
            sig++;
        } else if (dot) {
            lead++; /* zeros between the point and the first significant digit */
        }
    }
    if (!dot) {
        *is_int = true;
        return len - neg <= 18 && !(neg && len == 2 && t[1] == '0');
    }
    *is_int = false;
    if (dot == len - 1 || sig > 15 || lead > 3)
        return false;
    if (t[len - 1] == '0' && !(dot == len - 2))
        return false;
    return true;
}

/* number_done: the number token in s->num is complete */
static int
number_done(mask_json_stream *s, dbao_buf *out, dbao_err *err)
{
    numval v;
    char nb[64];
    const mask_rule *r = s->vrule;
    int idx = s->vidx;
    int n, rc;
    bool is_int;
    if ((r == NULL || idx < 0) && num_canonical(s->num.data, s->num.len, &is_int)) {
        if (r == NULL && is_int) {
            bool changed = false;
            size_t mark = out->len;
            if (oputc(out, '"') != 0)
                return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            rc = scan_into(s, s->num.data, s->num.len, out, false, &changed, err);
            if (rc != 0 || changed)
                return rc != 0                ? rc
                       : oputc(out, '"') == 0 ? 0
                                              : dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            out->len = mark;
            out->data[mark] = '\0';
        }
        return oput(out, s->num.data, s->num.len) == 0
                   ? 0
                   : dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    if (!num_parse(s->num.data, s->num.len, &v))
        return dbao_err_set(err, DBAO_EFORMAT, "not json: bad number");
    if (r == NULL && v.is_int) {
        n = snprintf(nb, sizeof(nb), "%lld", v.i);
        size_t mark = out->len;
        bool changed = false;
        if (oputc(out, '"') != 0)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        rc = scan_into(s, nb, (size_t) n, out, true, &changed, err);
        if (rc != 0)
            return rc;
        if (changed)
            return oputc(out, '"') == 0 ? 0 : dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        out->len = mark;
        out->data[mark] = '\0';
        return oput(out, nb, (size_t) n) == 0 ? 0 : dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    if (r == NULL || idx < 0) {
        n = num_dump(&v, nb, sizeof(nb));
        if (n < 0)
            return dbao_err_set(err, DBAO_EFORMAT, "bad number");
        return oput(out, nb, (size_t) n) == 0 ? 0 : dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    /* under a rule: apply.c's number_text, then the action */
    if (v.is_int)
        n = snprintf(nb, sizeof(nb), "%lld", v.i);
    else
        n = snprintf(nb, sizeof(nb), "%.15g", v.d);
    if (n < 0 || (size_t) n >= sizeof(nb))
        return dbao_err_set(err, DBAO_EFORMAT, "bad number");
    if (!is_number_fn(s->p, idx))
        return mask_whole(s, r, idx, nb, (size_t) n, out, err);
    dbao_buf_reset(&s->tmp);
    rc = apply_action(s, idx, r->type, nb, (size_t) n, &s->tmp, err);
    if (rc != 0)
        return rc;
    const char *t = s->tmp.data ? s->tmp.data : "";
    size_t a = 0, b = s->tmp.len;
    while (a < b && json_ws((unsigned char) t[a]))
        a++;
    while (b > a && json_ws((unsigned char) t[b - 1]))
        b--;
    numval mv;
    if (num_parse(t + a, b - a, &mv)) {
        n = num_dump(&mv, nb, sizeof(nb));
        if (n < 0)
            return dbao_err_set(err, DBAO_EFORMAT, "bad number");
        rc = oput(out, nb, (size_t) n);
    } else {
        if (!utf8_valid((const unsigned char *) t, s->tmp.len))
            return dbao_err_set(err, DBAO_EFORMAT, "masked value is not utf-8");
        rc = put_string(out, t, s->tmp.len);
    }
    if (rc != 0)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    s->st.fields++;
    if (r->type != MASK_T_NONE)
        s->st.types |= MASK_TYPE_BIT(r->type);
    return 0;
}

/* ---- structure ----------------------------------------------------------------------------- */

/* value_done: a value ended */
static void
value_done(mask_json_stream *s)
{
    s->state = s->sp == 0 ? S_END : S_AFTER;
}

/* child_rule: the rule for the next member / element of the top container */
static void
array_child(mask_json_stream *s)
{
    level *l = &s->stack[s->sp - 1];
    s->vpath = l->base;
    s->vhash = l->hash;
    if (s->rule_lvl >= 0) {
        s->vrule = s->rule;
        s->vidx = s->rule_idx;
    } else {
        s->vrule = NULL;
        s->vidx = 0;
    }
}

static int
open_container(mask_json_stream *s, bool is_obj, dbao_buf *out, dbao_err *err)
{
    if (s->sp > MASK_JSON_STREAM_DEPTH)
        return dbao_err_set(err, DBAO_EFORMAT, "json nested deeper than %d",
                            MASK_JSON_STREAM_DEPTH);
    level *l = &s->stack[s->sp];
    l->base = s->vpath;
    l->hash = s->vhash;
    l->is_obj = is_obj;
    if (s->rule_lvl < 0 && s->vrule != NULL) {
        s->rule = s->vrule;
        s->rule_idx = s->vidx;
        s->rule_lvl = (int) s->sp;
    }
    s->sp++;
    s->path.len = s->vpath;
    if (oputc(out, is_obj ? '{' : '[') != 0)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    s->state = is_obj ? S_OBJ_FIRST : S_ARR_FIRST;
    if (!is_obj)
        array_child(s);
    return 0;
}

static int
close_container(mask_json_stream *s, dbao_buf *out, dbao_err *err)
{
    s->sp--;
    if (s->rule_lvl == (int) s->sp) {
        s->rule_lvl = -1;
        s->rule = NULL;
    }
    if (oputc(out, s->stack[s->sp].is_obj ? '}' : ']') != 0)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    value_done(s);
    return 0;
}

/* string_start: a '"' opened a key (is_key) or a value */
static int
string_start(mask_json_stream *s, bool is_key, dbao_buf *out, dbao_err *err)
{
    s->state = S_STR;
    s->esc = 0;
    s->hs = 0;
    s->u8need = 0;
    dbao_buf_reset(&s->str);
    if (is_key) {
        s->smode = STR_KEY;
    } else if (s->vrule != NULL && s->vidx < 0) {
        s->smode = STR_PASS;
        if (oputc(out, '"') != 0)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    } else {
        s->smode = STR_BUFFER;
    }
    return 0;
}

/* string_done: the closing quote */
static int
string_done(mask_json_stream *s, const char *t, size_t len, bool plain, dbao_buf *out,
            dbao_err *err)
/* t[0..len): the decoded string; plain: it came without escapes, so it holds no byte that
 * needs escaping on output (raw controls, '"' and '\' are not allowed in a JSON string) */
{
    int rc = 0;
    bool changed;
    switch (s->smode) {
    case STR_KEY: {
        if (!plain && memchr(t, '\0', len) != NULL)
            return dbao_err_set(err, DBAO_EFORMAT, "not json: nul byte in object key");
        level *l = &s->stack[s->sp - 1];
        s->path.len = l->base;
        if (l->base + 1 + len > MASK_JSON_STREAM_STR_MAX)
            return dbao_err_set(err, DBAO_EFORMAT, "json field path longer than %d bytes",
                                MASK_JSON_STREAM_STR_MAX);
        if ((l->base > 0 && oputc(&s->path, '.') != 0) || oput(&s->path, t, len) != 0)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        s->vhash = fnv(l->base > 0 ? fnv(l->hash, ".", 1) : l->hash, t, len);
        if (plain ? (oputc(out, '"') != 0 || oput(out, t, len) != 0 || oputc(out, '"') != 0)
                  : put_string(out, t, len) != 0)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        s->vpath = (uint32_t) s->path.len;
        if (s->rule_lvl >= 0) {
            s->vrule = s->rule;
            s->vidx = s->rule_idx;
        } else if (s->path.len > s->max_target || !bloom_has(s->bloom, s->vhash)) {
            s->vrule = NULL; /* surely no rule */
            s->vidx = 0;
        } else {
            s->vrule = mask_policy_field(s->p, s->path.data, s->path.len);
            s->vidx = s->vrule ? mask_rule_action_for(s->vrule, s->roles, s->num_roles) : 0;
        }
        s->state = S_COLON;
        return 0;
    }
    case STR_PASS:
        if ((plain ? oput(out, t, len) : put_escaped(out, t, len)) != 0 || oputc(out, '"') != 0)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        break;
    case STR_OVERLONG:
        if (put_string(out, FALLBACK, strlen(FALLBACK)) != 0)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        s->st.fields++;
        if (s->vrule != NULL && s->vrule->type != MASK_T_NONE)
            s->st.types |= MASK_TYPE_BIT(s->vrule->type);
        break;
    default: /* STR_BUFFER */
        if (s->vrule != NULL) {
            rc = mask_whole(s, s->vrule, s->vidx, t, len, out, err);
        } else {
            if (oputc(out, '"') != 0)
                return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            rc = scan_into(s, t, len, out, !plain, &changed, err);
            if (rc == 0 && oputc(out, '"') != 0)
                rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        }
        if (rc != 0)
            return rc;
        break;
    }
    value_done(s);
    return 0;
}

/* str_add: decoded bytes of the current string */
static int
str_add(mask_json_stream *s, const void *b, size_t n, dbao_buf *out, dbao_err *err)
{
    if (s->smode == STR_OVERLONG)
        return 0;
    if (s->str.len + n > MASK_JSON_STREAM_STR_MAX) {
        if (s->smode == STR_KEY)
            return dbao_err_set(err, DBAO_EFORMAT, "json object key longer than %d bytes",
                                MASK_JSON_STREAM_STR_MAX);
        if (s->smode == STR_BUFFER) {
            s->smode = STR_OVERLONG;
            return 0;
        }
        /* STR_PASS: flush what we have (whole code points or bytes: escaping is per byte) */
        if (put_escaped(out, s->str.data, s->str.len) != 0)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        dbao_buf_reset(&s->str);
    }
    if (dbao_buf_put(&s->str, b, n) != 0)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    if (s->str.len > s->hw_str)
        s->hw_str = s->str.len;
    return 0;
}

static int
str_add_cp(mask_json_stream *s, uint32_t cp, dbao_buf *out, dbao_err *err)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char) cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char) (0xC0 | (cp >> 6));
        b[1] = (unsigned char) (0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char) (0xE0 | (cp >> 12));
        b[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char) (0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (unsigned char) (0xF0 | (cp >> 18));
        b[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
        b[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
        b[3] = (unsigned char) (0x80 | (cp & 0x3F));
        n = 4;
    }
    return str_add(s, b, n, out, err);
}

static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#define BAD(msg) return (*used = i, dbao_err_set(err, DBAO_EFORMAT, "not json: %s", msg))

/* in_string: consume string bytes from in[0..len); *used: how many (the closing quote
 * included when the string ended) */
static int
in_string(mask_json_stream *s, const uint8_t *in, size_t len, size_t *used, dbao_buf *out,
          dbao_err *err)
{
    size_t i = 0;
    int rc;
    if (s->str.len == 0 && s->esc == 0 && s->u8need == 0 && s->hs == 0 &&
        s->smode != STR_OVERLONG) {
        /* the whole string in this piece without escapes: masked straight from the input */
        size_t j = 0;
        while (j < len) {
            j = plain_run(in, j, len);
            if (j == len || in[j] < 0x80)
                break;
            size_t k = j + 1;
            while (k < len && k - j < 4 && (in[k] & 0xC0) == 0x80)
                k++;
            if (k == len)
                break; /* a sequence cut by the end of the piece: the slow path */
            if (!utf8_valid(in + j, k - j))
                break; /* the slow path reports it */
            j = k;
        }
        if (j < len && in[j] == '"' && j <= MASK_JSON_STREAM_STR_MAX) {
            *used = j + 1;
            return string_done(s, (const char *) in, j, true, out, err);
        }
    }
    while (i < len) {
        if (s->esc == 0 && s->u8need == 0 && s->hs == 0) {
            size_t j = i;
            j = plain_run(in, j, len);
            if (j > i) {
                if ((rc = str_add(s, in + i, j - i, out, err)) != 0)
                    return (*used = i, rc);
                i = j;
                if (i == len)
                    break;
            }
        }
        uint8_t c = in[i];
        if (s->u8need > 0) {
            if (c < s->u8lo || c > s->u8hi)
                BAD("invalid utf-8");
            s->u8lo = 0x80;
            s->u8hi = 0xBF;
            s->u8need--;
            if ((rc = str_add(s, &c, 1, out, err)) != 0)
                return (*used = i, rc);
            i++;
            continue;
        }
        if (s->esc == 1) {
            uint32_t cp;
            switch (c) {
            case '"':
                cp = '"';
                break;
            case '\\':
                cp = '\\';
                break;
            case '/':
                cp = '/';
                break;
            case 'b':
                cp = '\b';
                break;
            case 'f':
                cp = '\f';
                break;
            case 'n':
                cp = '\n';
                break;
            case 'r':
                cp = '\r';
                break;
            case 't':
                cp = '\t';
                break;
            case 'u':
                s->esc = 2;
                s->cp = 0;
                i++;
                continue;
            default:
                BAD("bad escape");
            }
            if (s->hs != 0)
                BAD("invalid unicode escape");
            s->esc = 0;
            if ((rc = str_add_cp(s, cp, out, err)) != 0)
                return (*used = i, rc);
            i++;
            continue;
        }
        if (s->esc >= 2) {
            int h = hexval(c);
            if (h < 0)
                BAD("bad unicode escape");
            s->cp = (s->cp << 4) | (uint32_t) h;
            i++;
            if (++s->esc < 6)
                continue;
            s->esc = 0;
            uint32_t cp = s->cp;
            if (s->hs != 0) {
                if (cp < 0xDC00 || cp > 0xDFFF)
                    BAD("invalid unicode escape");
                cp = 0x10000 + ((s->hs - 0xD800) << 10) + (cp - 0xDC00);
                s->hs = 0;
            } else if (cp >= 0xD800 && cp <= 0xDBFF) {
                s->hs = cp;
                continue;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                BAD("invalid unicode escape");
            }
            if ((rc = str_add_cp(s, cp, out, err)) != 0)
                return (*used = i, rc);
            continue;
        }
        /* esc == 0, no UTF-8 sequence open */
        if (s->hs != 0 && c != '\\')
            BAD("invalid unicode escape");
        if (c == '"') {
            *used = i + 1;
            return string_done(s, s->str.data ? s->str.data : "", s->str.len, false, out, err);
        }
        if (c == '\\') {
            s->esc = 1;
            i++;
            continue;
        }
        if (c < 0x20)
            BAD("control character in string");
        if (c >= 0xC2 && c <= 0xDF) {
            s->u8need = 1;
            s->u8lo = 0x80;
            s->u8hi = 0xBF;
        } else if (c >= 0xE0 && c <= 0xEF) {
            s->u8need = 2;
            s->u8lo = c == 0xE0 ? 0xA0 : 0x80;
            s->u8hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            s->u8need = 3;
            s->u8lo = c == 0xF0 ? 0x90 : 0x80;
            s->u8hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            BAD("invalid utf-8");
        }
        if ((rc = str_add(s, &c, 1, out, err)) != 0)
            return (*used = i, rc);
        i++;
    }
    *used = len;
    return 0;
}

/* value_start: byte c starts a value (state S_VALUE or S_ARR_FIRST) */
static int
value_start(mask_json_stream *s, uint8_t c, dbao_buf *out, dbao_err *err)
{
    if (s->sp > MASK_JSON_STREAM_DEPTH)
        return dbao_err_set(err, DBAO_EFORMAT, "json nested deeper than %d",
                            MASK_JSON_STREAM_DEPTH);
    switch (c) {
    case '{':
        return open_container(s, true, out, err);
    case '[':
        return open_container(s, false, out, err);
    case '"':
        return string_start(s, false, out, err);
    case 't':
        s->lit = 0;
        break;
    case 'f':
        s->lit = 1;
        break;
    case 'n':
        s->lit = 2;
        break;
    default:
        if (c == '-' || isdig(c)) {
            dbao_buf_reset(&s->num);
            if (dbao_buf_putc(&s->num, (char) c) != 0)
                return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            if (s->hw_num == 0)
                s->hw_num = 1;
            s->state = S_NUM;
            return 0;
        }
        return dbao_err_set(err, DBAO_EFORMAT, "not json: unexpected byte");
    }
    s->litpos = 1;
    s->state = S_LIT;
    return 0;
}

static bool
num_char(uint8_t c)
{
    return isdig(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

static int
step(mask_json_stream *s, const uint8_t *in, size_t len, dbao_buf *out, dbao_err *err)
{
    size_t i = 0;
    int rc = 0;
    while (i < len) {
        uint8_t c = in[i];
        switch (s->state) {
        case S_STR: {
            size_t used;
            rc = in_string(s, in + i, len - i, &used, out, err);
            i += used;
            if (rc != 0)
                return rc;
            continue;
        }
        case S_NUM: {
            size_t j = i;
            while (j < len && num_char(in[j]))
                j++;
            if (s->num.len + (j - i) > NUM_MAX)
                return dbao_err_set(err, DBAO_EFORMAT, "json number longer than %d bytes", NUM_MAX);
            if (dbao_buf_put(&s->num, in + i, j - i) != 0)
                return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            if (s->num.len > s->hw_num)
                s->hw_num = s->num.len;
            i = j;
            if (i == len)
                return 0;
            if ((rc = number_done(s, out, err)) != 0)
                return rc;
            value_done(s);
            continue; /* c = in[i] is handled by the next state */
        }
        case S_LIT:
            if (c != (uint8_t) LITS[s->lit][s->litpos])
                return dbao_err_set(err, DBAO_EFORMAT, "not json: bad literal");
            i++;
            if (++s->litpos == LITLEN[s->lit]) {
                if (oput(out, LITS[s->lit], LITLEN[s->lit]) != 0)
                    return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
                value_done(s);
            }
            continue;
        default:
            break;
        }
        i++;
        if (json_ws(c))
            continue;
        switch (s->state) {
        case S_VALUE:
            rc = value_start(s, c, out, err);
            break;
        case S_ARR_FIRST:
            rc = c == ']' ? close_container(s, out, err) : value_start(s, c, out, err);
            break;
        case S_OBJ_FIRST:
            if (c == '}')
                rc = close_container(s, out, err);
            else if (c == '"')
                rc = string_start(s, true, out, err);
            else
                rc = dbao_err_set(err, DBAO_EFORMAT, "not json: expected a key");
            break;
        case S_OBJ_KEY:
            rc = c == '"' ? string_start(s, true, out, err)
                          : dbao_err_set(err, DBAO_EFORMAT, "not json: expected a key");
            break;
        case S_COLON:
            if (c != ':')
                return dbao_err_set(err, DBAO_EFORMAT, "not json: expected ':'");
            rc = oputc(out, ':') == 0 ? 0 : dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            s->state = S_VALUE;
            break;
        case S_AFTER: {
            bool obj = s->stack[s->sp - 1].is_obj;
            if (c == ',') {
                if (oputc(out, ',') != 0)
                    return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
                if (obj) {
                    s->state = S_OBJ_KEY;
                } else {
                    s->state = S_VALUE;
                    array_child(s);
                }
            } else if (c == (obj ? '}' : ']')) {
                rc = close_container(s, out, err);
            } else {
                rc = dbao_err_set(err, DBAO_EFORMAT, "not json: expected ',' or a bracket");
            }
            break;
        }
        case S_END:
            return dbao_err_set(err, DBAO_EFORMAT, "not json: data after the document");
        default:
            return dbao_err_set(err, DBAO_EINVAL, "json stream: bad state");
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- API ----------------------------------------------------------------------------------- */

int
mask_json_stream_new(mask_json_stream **out, const mask_policy *p, const char *const *roles,
                     size_t num_roles, dbao_err *err)
{
    if (out == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "mask_json_stream_new: NULL argument");
    *out = NULL;
    if (p == NULL || (roles == NULL && num_roles > 0))
        return dbao_err_set(err, DBAO_EINVAL, "mask_json_stream_new: NULL argument");
    mask_json_stream *s = dbao_calloc(1, sizeof(*s));
    if (s == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    s->p = p;
    s->det = mask_policy_detector(p);
    for (size_t i = 0; i < mask_policy_num_rules(p); i++) {
        const mask_rule *r = mask_policy_rule(p, i);
        size_t n = r && r->target ? strlen(r->target) : 0;
        if (n > s->max_target)
            s->max_target = n;
        bloom_add(s->bloom, fnv(FNV_BASIS, r && r->target ? r->target : "", n));
    }
    if (dbao_buf_reserve(&s->path, 256) != 0 || dbao_buf_reserve(&s->str, 1024) != 0 ||
        dbao_buf_reserve(&s->num, 64) != 0 || dbao_buf_reserve(&s->tmp, 256) != 0) {
        mask_json_stream_free(s);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    mask_json_stream_reset(s, roles, num_roles);
    *out = s;
    return 0;
}

void
mask_json_stream_reset(mask_json_stream *s, const char *const *roles, size_t num_roles)
{
    if (s == NULL)
        return;
    s->roles = num_roles > 0 ? roles : NULL;
    s->num_roles = roles != NULL ? num_roles : 0;
    s->fail = 0;
    s->state = S_VALUE;
    s->esc = s->u8need = 0;
    s->hs = 0;
    s->sp = 0;
    s->rule_lvl = -1;
    s->rule = NULL;
    s->vrule = NULL;
    s->vidx = 0;
    s->vpath = 0;
    s->vhash = FNV_BASIS;
    /* the string buffers may hold personal data of the last document: clear them */
    if (s->hw_str > 0)
        dbao_cleanse(s->str.data, s->hw_str);
    if (s->hw_tmp > 0)
        dbao_cleanse(s->tmp.data, s->hw_tmp);
    if (s->hw_num > 0)
        dbao_cleanse(s->num.data, s->hw_num);
    s->hw_str = s->hw_tmp = s->hw_num = 0;
    dbao_buf_reset(&s->path);
    dbao_buf_reset(&s->str);
    dbao_buf_reset(&s->num);
    dbao_buf_reset(&s->tmp);
    memset(&s->st, 0, sizeof(s->st));
}

int
mask_json_stream_feed(mask_json_stream *s, const uint8_t *in, size_t len, dbao_buf *out,
                      dbao_err *err)
{
    if (s == NULL || out == NULL || (in == NULL && len > 0))
        return dbao_err_set(err, DBAO_EINVAL, "mask_json_stream_feed: NULL argument");
    if (s->fail != 0)
        return dbao_err_set(err, s->fail, "json stream failed earlier");
    int rc = step(s, in, len, out, err);
    if (rc != 0)
        s->fail = rc;
    return rc;
}

int
mask_json_stream_finish(mask_json_stream *s, dbao_buf *out, dbao_err *err)
{
    if (s == NULL || out == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "mask_json_stream_finish: NULL argument");
    if (s->fail != 0)
        return dbao_err_set(err, s->fail, "json stream failed earlier");
    int rc = 0;
    if (s->state == S_NUM) {
        rc = number_done(s, out, err);
        if (rc == 0)
            value_done(s);
    }
    if (rc == 0 && s->state != S_END)
        rc = dbao_err_set(err, DBAO_EFORMAT, "not json: truncated document");
    if (rc != 0)
        s->fail = rc;
    return rc;
}

int
mask_json_stream_release(mask_json_stream *s, dbao_buf *out)
{
    if (s == NULL || out == NULL)
        return DBAO_EINVAL;
    int rc = 0;
    if (s->fail == 0) {
        switch (s->state) {
        case S_STR:
            if (s->smode != STR_PASS)
                rc = oputc(out, '"');
            if (rc == 0 && s->smode == STR_OVERLONG)
                rc = oput(out, FALLBACK, strlen(FALLBACK));
            else if (rc == 0)
                rc = put_escaped(out, s->str.data ? s->str.data : "", s->str.len);
            if (rc == 0 && s->hs != 0)
                rc = dbao_buf_printf(out, "\\u%04X", (unsigned) s->hs);
            if (rc == 0 && s->esc == 1)
                rc = oputc(out, '\\');
            else if (rc == 0 && s->esc >= 2) {
                char h[8] = "\\u";
                unsigned nd = s->esc - 2u;
                for (unsigned k = 0; k < nd; k++)
                    h[2 + k] = "0123456789ABCDEF"[(s->cp >> (4 * (nd - 1 - k))) & 15];
                rc = oput(out, h, 2 + nd);
            }
            break;
        case S_NUM:
            rc = oput(out, s->num.data ? s->num.data : "", s->num.len);
            break;
        case S_LIT:
            rc = oput(out, LITS[s->lit], s->litpos);
            break;
        default:
            break;
        }
    }
    s->fail = DBAO_EINVAL;
    return rc;
}

void
mask_json_stream_stats(const mask_json_stream *s, mask_stats *st)
{
    if (st == NULL)
        return;
    if (s == NULL) {
        memset(st, 0, sizeof(*st));
        return;
    }
    *st = s->st;
}

void
mask_json_stream_free(mask_json_stream *s)
{
    if (s == NULL)
        return;
    dbao_buf_free(&s->path);
    dbao_buf_free_secret(&s->str);
    dbao_buf_free(&s->num);
    dbao_buf_free_secret(&s->tmp);
    dbao_free(s);
}
