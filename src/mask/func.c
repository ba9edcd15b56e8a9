/* func.c: the masking functions of mask.h (mask_fn), the keyring and mask_decrypt.
 *
 * Everything here is written by hand on top of gm.h: the spec parser is a few lines of
 * tokenising that no library would make shorter, UTF-8 is decoded here because the functions
 * count code points and must never pass invalid bytes through, and the number functions work
 * on the decimal text (sign, up to 18 digits, an optional fraction) as scaled int64 values,
 * never through floating point, because they are used on money.
 *
 * Characters: a character is one valid UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, at most U+10FFFF) or one byte that does not start a valid sequence. Such a byte
 * is always replaced by the mask character '*', even where the function would keep it, so the
 * output of every masking function is valid UTF-8 (only "clear" returns the input as it is).
 *
 * A value that has no more characters than a keep(N,M) would keep is masked completely: a
 * function never returns the clear value by accident because the value happens to be short.
 * before(C) and after(C) mask everything when C does not occur.
 *
 * Type defaults that count digits (IDs, mobiles, cards, codes, passports, permits) count only
 * letters and digits and keep grouping separators in place, so "6222 0212 3456 7890" becomes
 * "**** **** **** 7890"; a mobile's +86 / 0086 prefix is kept as it is.
 *
 * Formats: PSEUDONYM is "p_" + the lowercase hex of the first 16 bytes of
 * HMAC-SM3(key, value). ENCRYPT is "enc1:" KEYID ":" base64url-without-padding(nonce(12) ||
 * SM4-GCM ciphertext || tag(16)), with AAD "enc1:" KEYID, a fresh random nonce per value, and
 * an SM4 key of 16 bytes. NOISE moves a number by k/10000 * PCT percent, k uniform in
 * [-10000, 10000], drawn from gm_rand_bytes or, with a key, from the first 8 bytes of
 * HMAC-SM3(key, "noise:" value), keeping the number of fraction digits.
 *
 * Keyring: an array of (id, key) entries; keys are wiped (dbao_cleanse) when it is freed. A
 * 16-byte key also gets its SM4 context keyed once when added (round keys and GHASH tables:
 * keying per value would cost more than the encryption itself); gm allows a keyed context to
 * be shared read-only by threads, so the keyring stays immutable and shareable.
 * Key files hold 16 or 32 bytes of hex (white space ignored) and must not be readable by group
 * or others.
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dengbao/gm.h"
#include "dengbao/mask.h"

#define MASK_CH        '*'
#define REPLACE_MAX    256
#define KEY_FILE_MAX   4096
#define NOISE_RANGE    10000
#define NUM_DIGITS_MAX 18

/* ---- UTF-8 ------------------------------------------------------------------------------- */

/* u8_len: the length of the valid UTF-8 sequence at s[0..n), 0 if s[0] does not start one. */
static size_t
u8_len(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* A character of the input: offset, length, code point (valid) or not. */
typedef struct u8c {
    size_t off;
    uint32_t len; /* bytes */
    uint32_t cp;
    bool valid;
} u8c;

/* next_char decodes the character at in[*pos] and advances *pos. */
static u8c
next_char(const char *in, size_t len, size_t *pos)
{
    u8c c = {.off = *pos, .len = 1, .cp = 0, .valid = false};
    size_t l = u8_len((const unsigned char *) in + *pos, len - *pos, &c.cp);
    if (l > 0) {
        c.len = (uint32_t) l;
        c.valid = true;
    }
    *pos += c.len;
    return c;
}

static size_t
count_chars(const char *in, size_t len)
{
    size_t n = 0, pos = 0;
    while (pos < len) {
        (void) next_char(in, len, &pos);
        n++;
    }
    return n;
}

static bool
is_alnum_cp(uint32_t cp)
{
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
}

/* put_char emits the character as it is (valid) or the mask character (invalid). */
static int
put_keep(dbao_buf *out, const char *in, u8c c)
{
    if (!c.valid)
        return dbao_buf_putc(out, MASK_CH);
    return dbao_buf_put(out, in + c.off, c.len);
}

static int
put_utf8(dbao_buf *out, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char) cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char) (0xC0 | (cp >> 6));
        b[1] = (char) (0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char) (0xE0 | (cp >> 12));
        b[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char) (0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char) (0xF0 | (cp >> 18));
        b[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char) (0x80 | (cp & 0x3F));
        n = 4;
    }
    return dbao_buf_put(out, b, n);
}

static bool
valid_utf8(const char *s, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        u8c c = next_char(s, len, &pos);
        if (!c.valid || c.cp == 0)
            return false;
    }
    return true;
}

/* ---- parsing ----------------------------------------------------------------------------- */

typedef struct tok {
    const char *s;
    size_t len;
    bool quoted;
    char *unq; /* quoted: the unescaped text (owned) */
} tok;

static bool
is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
key_id_ok(const char *s, size_t len)
{
    if (len == 0 || len > MASK_KEY_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static int
parse_u64(const char *s, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 19)
        return DBAO_EFORMAT;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return DBAO_EFORMAT;
        v = v * 10 + (uint64_t) (s[i] - '0');
    }
    if (v > max)
        return DBAO_ERANGE;
    *out = v;
    return 0;
}

static void
toks_free(tok *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dbao_free(t[i].unq);
}

/* split_args splits "a, 'b''c', d" into up to `max` tokens (white space around each trimmed;
 * a quoted token is '...' with '' for a quote, or "..." without escapes). */
static int
split_args(const char *s, size_t len, tok *t, size_t max, size_t *num, dbao_err *err)
{
    size_t n = 0, i = 0;
    *num = 0;
    for (;;) {
        while (i < len && is_ws(s[i]))
            i++;
        if (n == max) {
            toks_free(t, n);
            return dbao_err_set(err, DBAO_EFORMAT, "mask function: too many arguments");
        }
        tok *k = &t[n];
        memset(k, 0, sizeof(*k));
        if (i < len && (s[i] == '\'' || s[i] == '"')) {
            char q = s[i++];
            dbao_buf b = {0};
            bool closed = false;
            while (i < len) {
                if (s[i] == q) {
                    if (q == '\'' && i + 1 < len && s[i + 1] == '\'') {
                        if (dbao_buf_putc(&b, '\'') != 0)
                            goto oom;
                        i += 2;
                        continue;
                    }
                    i++;
                    closed = true;
                    break;
                }
                if (dbao_buf_putc(&b, s[i]) != 0)
                    goto oom;
                i++;
                continue;
            oom:
                dbao_buf_free(&b);
                toks_free(t, n);
                return dbao_err_set(err, DBAO_ENOMEM, "mask function: out of memory");
            }
            if (!closed) {
                dbao_buf_free(&b);
                toks_free(t, n);
                return dbao_err_set(err, DBAO_EFORMAT, "mask function: unterminated quote");
            }
            if (dbao_buf_reserve(&b, 1) != 0) {
                toks_free(t, n);
                return dbao_err_set(err, DBAO_ENOMEM, "mask function: out of memory");
            }
            k->quoted = true;
            k->unq = b.data;
            k->s = b.data;
            k->len = b.len;
            n++;
            while (i < len && is_ws(s[i]))
                i++;
        } else {
            size_t st = i;
            while (i < len && s[i] != ',')
                i++;
            size_t e = i;
            while (e > st && is_ws(s[e - 1]))
                e--;
            k->s = s + st;
            k->len = e - st;
            for (size_t j = st; j < e; j++) {
                if (s[j] == '\'' || s[j] == '"' || s[j] == '(' || s[j] == ')') {
                    toks_free(t, n);
                    return dbao_err_set(err, DBAO_EFORMAT,
                                        "mask function: stray quote or parenthesis in argument");
                }
            }
            n++;
        }
        if (i >= len)
            break;
        if (s[i] != ',') {
            toks_free(t, n);
            return dbao_err_set(err, DBAO_EFORMAT, "mask function: expected ',' between arguments");
        }
        i++;
    }
    *num = n;
    return 0;
}

static int
arg_uint(const tok *t, uint64_t max, uint64_t *v, const char *fn, dbao_err *err)
{
    if (t->quoted)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: arguments must be unquoted numbers", fn);
    int rc = parse_u64(t->s, t->len, max, v);
    if (rc == DBAO_ERANGE)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: argument out of range (at most %llu)", fn,
                            (unsigned long long) max);
    if (rc != 0)
        return dbao_err_set(err, DBAO_EFORMAT, "%s: arguments must be decimal numbers", fn);
    return 0;
}

static int
arg_key(const tok *t, char *key_id, const char *fn, dbao_err *err)
{
    if (t->quoted || !key_id_ok(t->s, t->len))
        return dbao_err_set(err, DBAO_EFORMAT, "%s: bad key id (want [A-Za-z0-9_.-]{1,64})", fn);
    memcpy(key_id, t->s, t->len);
    key_id[t->len] = '\0';
    return 0;
}

static const struct {
    const char *name;
    mask_fn_kind kind;
    size_t min_args, max_args;
} fn_names[] = {
    {"clear", MASK_FN_CLEAR, 0, 0},     {"default", MASK_FN_DEFAULT, 0, 0},
    {"keep", MASK_FN_KEEP, 2, 2},       {"range", MASK_FN_RANGE, 2, 2},
    {"before", MASK_FN_BEFORE, 1, 1},   {"after", MASK_FN_AFTER, 1, 1},
    {"replace", MASK_FN_REPLACE, 1, 1}, {"pseudonym", MASK_FN_PSEUDONYM, 1, 1},
    {"encrypt", MASK_FN_ENCRYPT, 1, 1}, {"year", MASK_FN_YEAR, 0, 0},
    {"round", MASK_FN_ROUND, 1, 1},     {"noise", MASK_FN_NOISE, 1, 2},
};

int
mask_fn_parse(mask_fn *out, const char *spec, size_t len, dbao_err *err)
{
    if (out == NULL || (spec == NULL && len > 0))
        return dbao_err_set(err, DBAO_EINVAL, "mask_fn_parse: NULL argument");
    memset(out, 0, sizeof(*out));
    size_t b = 0, e = len;
    while (b < e && is_ws(spec[b]))
        b++;
    while (e > b && is_ws(spec[e - 1]))
        e--;
    size_t ne = b;
    while (ne < e && spec[ne] >= 'a' && spec[ne] <= 'z')
        ne++;
    size_t k = 0, nk = sizeof(fn_names) / sizeof(fn_names[0]);
    while (k < nk &&
           !(strlen(fn_names[k].name) == ne - b && memcmp(fn_names[k].name, spec + b, ne - b) == 0))
        k++;
    if (k == nk || ne == b)
        return dbao_err_set(err, DBAO_EFORMAT,
                            "unknown mask function (want clear, default, keep, range, before, "
                            "after, replace, pseudonym, encrypt, year, round or noise)");
    const char *fname = fn_names[k].name;
    size_t p = ne;
    while (p < e && is_ws(spec[p]))
        p++;
    tok t[2];
    memset(t, 0, sizeof(t));
    size_t na = 0;
    if (p < e) {
        if (spec[p] != '(' || spec[e - 1] != ')')
            return dbao_err_set(err, DBAO_EFORMAT, "%s: expected '(' arguments ')'", fname);
        size_t ab = p + 1, ae = e - 1;
        size_t q = ab;
        while (q < ae && is_ws(spec[q]))
            q++;
        if (q < ae) {
            int rc = split_args(spec + ab, ae - ab, t, 2, &na, err);
            if (rc != 0)
                return rc;
        }
    }
    if (na < fn_names[k].min_args || na > fn_names[k].max_args) {
        toks_free(t, na);
        if (fn_names[k].min_args == fn_names[k].max_args)
            return dbao_err_set(err, DBAO_EFORMAT, "%s: takes %zu argument%s", fname,
                                fn_names[k].min_args, fn_names[k].min_args == 1 ? "" : "s");
        return dbao_err_set(err, DBAO_EFORMAT, "%s: takes %zu to %zu arguments", fname,
                            fn_names[k].min_args, fn_names[k].max_args);
    }
    int rc = 0;
    uint64_t v1 = 0, v2 = 0;
    out->kind = fn_names[k].kind;
    switch (out->kind) {
    case MASK_FN_CLEAR:
    case MASK_FN_DEFAULT:
    case MASK_FN_YEAR:
        break;
    case MASK_FN_KEEP:
    case MASK_FN_RANGE:
        if ((rc = arg_uint(&t[0], 1u << 20, &v1, fname, err)) != 0 ||
            (rc = arg_uint(&t[1], 1u << 20, &v2, fname, err)) != 0)
            break;
        if (out->kind == MASK_FN_RANGE && v1 >= v2) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "range: want A < B");
            break;
        }
        out->a = (uint32_t) v1;
        out->b = (uint32_t) v2;
        break;
    case MASK_FN_BEFORE:
    case MASK_FN_AFTER: {
        size_t pos = 0;
        u8c c;
        if (t[0].len == 0 || !((c = next_char(t[0].s, t[0].len, &pos)).valid) || pos != t[0].len ||
            c.cp == 0) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "%s: want exactly one character", fname);
            break;
        }
        out->ch = c.cp;
        break;
    }
    case MASK_FN_REPLACE:
        if (t[0].len > REPLACE_MAX || !valid_utf8(t[0].s, t[0].len)) {
            rc = dbao_err_set(err, DBAO_EFORMAT,
                              "replace: the value must be valid UTF-8 of at most %d bytes",
                              REPLACE_MAX);
            break;
        }
        out->value = dbao_malloc(t[0].len + 1);
        if (out->value == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "replace: out of memory");
            break;
        }
        memcpy(out->value, t[0].s, t[0].len);
        out->value[t[0].len] = '\0';
        break;
    case MASK_FN_PSEUDONYM:
    case MASK_FN_ENCRYPT:
        rc = arg_key(&t[0], out->key_id, fname, err);
        break;
    case MASK_FN_ROUND:
        if ((rc = arg_uint(&t[0], (uint64_t) 1000000000000000000ull, &v1, fname, err)) != 0)
            break;
        if (v1 == 0) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "round: the step must be positive");
            break;
        }
        out->step = (int64_t) v1;
        break;
    case MASK_FN_NOISE:
        if ((rc = arg_uint(&t[0], 100, &v1, fname, err)) != 0)
            break;
        if (v1 == 0) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "noise: the percentage must be 1 to 100");
            break;
        }
        out->a = (uint32_t) v1;
        if (na == 2)
            rc = arg_key(&t[1], out->key_id, fname, err);
        break;
    }
    toks_free(t, na);
    if (rc != 0)
        mask_fn_cleanup(out);
    return rc;
}

static int
fmt_char(dbao_buf *out, uint32_t ch)
{
    bool quote = ch == '\'' || ch == '"' || ch == '(' || ch == ')' || ch == ',' || ch == ' ' ||
                 ch == '\t' || ch == '\n' || ch == '\r';
    int rc = 0;
    if (quote)
        rc = dbao_buf_putc(out, '\'');
    if (rc == 0 && ch == '\'')
        rc = dbao_buf_putc(out, '\'');
    if (rc == 0)
        rc = put_utf8(out, ch);
    if (rc == 0 && quote)
        rc = dbao_buf_putc(out, '\'');
    return rc;
}

int
mask_fn_format(const mask_fn *f, dbao_buf *out)
{
    if (f == NULL || out == NULL)
        return DBAO_EINVAL;
    size_t mark = out->len;
    int rc = 0;
    switch (f->kind) {
    case MASK_FN_CLEAR:
        rc = dbao_buf_printf(out, "clear");
        break;
    case MASK_FN_DEFAULT:
        rc = dbao_buf_printf(out, "default");
        break;
    case MASK_FN_KEEP:
        rc = dbao_buf_printf(out, "keep(%u,%u)", f->a, f->b);
        break;
    case MASK_FN_RANGE:
        rc = dbao_buf_printf(out, "range(%u,%u)", f->a, f->b);
        break;
    case MASK_FN_BEFORE:
    case MASK_FN_AFTER:
        rc = dbao_buf_printf(out, "%s(", f->kind == MASK_FN_BEFORE ? "before" : "after");
        if (rc == 0)
            rc = fmt_char(out, f->ch);
        if (rc == 0)
            rc = dbao_buf_putc(out, ')');
        break;
    case MASK_FN_REPLACE:
        rc = dbao_buf_put(out, "replace('", 9);
        for (const char *p = f->value ? f->value : ""; rc == 0 && *p; p++) {
            if (*p == '\'')
                rc = dbao_buf_putc(out, '\'');
            if (rc == 0)
                rc = dbao_buf_putc(out, *p);
        }
        if (rc == 0)
            rc = dbao_buf_put(out, "')", 2);
        break;
    case MASK_FN_PSEUDONYM:
        rc = dbao_buf_printf(out, "pseudonym(%s)", f->key_id);
        break;
    case MASK_FN_ENCRYPT:
        rc = dbao_buf_printf(out, "encrypt(%s)", f->key_id);
        break;
    case MASK_FN_YEAR:
        rc = dbao_buf_printf(out, "year");
        break;
    case MASK_FN_ROUND:
        rc = dbao_buf_printf(out, "round(%lld)", (long long) f->step);
        break;
    case MASK_FN_NOISE:
        if (f->key_id[0])
            rc = dbao_buf_printf(out, "noise(%u,%s)", f->a, f->key_id);
        else
            rc = dbao_buf_printf(out, "noise(%u)", f->a);
        break;
    default:
        rc = DBAO_EINVAL;
    }
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
    }
    return rc;
}

void
mask_fn_cleanup(mask_fn *f)
{
    if (f == NULL)
        return;
    dbao_free(f->value);
    memset(f, 0, sizeof(*f));
}

/* ---- keyring ----------------------------------------------------------------------------- */

typedef struct key_entry {
    char id[MASK_KEY_ID_MAX + 1];
    uint8_t key[32];
    size_t len;
    void *sm4_mem;        /* 16-byte keys: storage of sm4 (dbao_malloc, over-allocated) */
    gm_sm4_ctx *sm4;      /* ... keyed once, 64-byte aligned, shared read-only */
    gm_hmac_sm3_ctx hmac; /* keyed HMAC-SM3 state: copied per use */
} key_entry;

struct mask_keyring {
    key_entry *e;
    size_t n, cap;
};

int
mask_keyring_new(mask_keyring **out)
{
    if (out == NULL)
        return DBAO_EINVAL;
    *out = dbao_calloc(1, sizeof(**out));
    return *out ? 0 : DBAO_ENOMEM;
}

static const key_entry *
key_find(const mask_keyring *k, const char *id)
{
    if (k == NULL)
        return NULL;
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->e[i].id, id) == 0)
            return &k->e[i];
    return NULL;
}

int
mask_keyring_add(mask_keyring *k, const char *id, const uint8_t *key, size_t len, dbao_err *err)
{
    if (k == NULL || id == NULL || key == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "mask_keyring_add: NULL argument");
    if (!key_id_ok(id, strlen(id)))
        return dbao_err_set(err, DBAO_EINVAL, "bad key id (want [A-Za-z0-9_.-]{1,64})");
    if (len != 16 && len != 32)
        return dbao_err_set(err, DBAO_EINVAL, "key '%s' is %zu bytes, want 16 or 32", id, len);
    if (key_find(k, id) != NULL)
        return dbao_err_set(err, DBAO_EINVAL, "duplicate key id '%s'", id);
    if (k->n == k->cap) {
        size_t nc = k->cap ? 2 * k->cap : 4;
        key_entry *ne = dbao_calloc(nc, sizeof(*ne));
        if (ne == NULL)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        if (k->n)
            memcpy(ne, k->e, k->n * sizeof(*ne));
        dbao_free_secret(k->e, k->cap * sizeof(*k->e));
        k->e = ne;
        k->cap = nc;
    }
    key_entry *e = &k->e[k->n];
    memset(e, 0, sizeof(*e));
    if (len == GM_SM4_KEY_LEN) {
        e->sm4_mem = dbao_malloc(sizeof(gm_sm4_ctx) + 63);
        if (e->sm4_mem == NULL)
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        e->sm4 = (gm_sm4_ctx *) (((uintptr_t) e->sm4_mem + 63) & ~(uintptr_t) 63);
        gm_sm4_init(e->sm4);
        int rc = gm_sm4_setkey(e->sm4, key, len);
        if (rc != 0) {
            gm_sm4_cleanup(e->sm4);
            dbao_free(e->sm4_mem);
            memset(e, 0, sizeof(*e));
            return dbao_err_set(err, rc, "key '%s': sm4 key setup failed", id);
        }
    }
    gm_hmac_sm3_init(&e->hmac, key, len);
    strcpy(e->id, id);
    memcpy(e->key, key, len);
    e->len = len;
    k->n++;
    return 0;
}

int
mask_keyring_load_file(mask_keyring *k, const char *id, const char *path, dbao_err *err)
{
    if (k == NULL || id == NULL || path == NULL)
        return dbao_err_set(err, DBAO_EINVAL, "mask_keyring_load_file: NULL argument");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return dbao_err_set(err, -e, "cannot open key file '%s': %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return dbao_err_set(err, -e, "cannot stat key file '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return dbao_err_set(err, DBAO_EINVAL, "key file '%s' is not a regular file", path);
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return dbao_err_set(err, DBAO_EINVAL,
                            "key file '%s' has mode %04o: it must not be readable by group or "
                            "others (chmod 600)",
                            path, (unsigned) (st.st_mode & 07777));
    }
    char buf[KEY_FILE_MAX + 1];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof(buf) - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            dbao_cleanse(buf, sizeof(buf));
            return dbao_err_set(err, -e, "cannot read key file '%s': %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t) r;
        if (n == sizeof(buf))
            break;
    }
    close(fd);
    if (n > KEY_FILE_MAX) {
        dbao_cleanse(buf, sizeof(buf));
        return dbao_err_set(err, DBAO_EINVAL, "key file '%s' is too large", path);
    }
    size_t h = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_ws(buf[i]))
            buf[h++] = buf[i];
    uint8_t key[32];
    int rc;
    if (h == 32 || h == 64) {
        rc = dbao_hex_decode_fixed(key, h / 2, buf, h, NULL);
    } else {
        rc = DBAO_EFORMAT;
    }
    dbao_cleanse(buf, sizeof(buf));
    if (rc != 0) {
        dbao_cleanse(key, sizeof(key));
        return dbao_err_set(err, DBAO_EINVAL, "key file '%s' must hold the hex of 16 or 32 bytes",
                            path);
    }
    rc = mask_keyring_add(k, id, key, h / 2, err);
    dbao_cleanse(key, sizeof(key));
    return rc;
}

void
mask_keyring_free(mask_keyring *k)
{
    if (k == NULL)
        return;
    for (size_t i = 0; i < k->n; i++) {
        if (k->e[i].sm4 != NULL) {
            gm_sm4_cleanup(k->e[i].sm4);
            dbao_free(k->e[i].sm4_mem);
        }
    }
    dbao_free_secret(k->e, k->cap * sizeof(*k->e));
    dbao_free(k);
}

/* ---- base64url --------------------------------------------------------------------------- */

static const char b64u[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int
b64u_encode(dbao_buf *out, const uint8_t *in, size_t len)
{
    int rc = dbao_buf_reserve(out, (len + 2) / 3 * 4);
    if (rc != 0)
        return rc;
    size_t i = 0;
    char *o = out->data + out->len;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8) | in[i + 2];
        *o++ = b64u[v >> 18];
        *o++ = b64u[(v >> 12) & 63];
        *o++ = b64u[(v >> 6) & 63];
        *o++ = b64u[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t) in[i] << 16;
        *o++ = b64u[v >> 18];
        *o++ = b64u[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t) in[i] << 16) | ((uint32_t) in[i + 1] << 8);
        *o++ = b64u[v >> 18];
        *o++ = b64u[(v >> 12) & 63];
        *o++ = b64u[(v >> 6) & 63];
    }
    out->len = (size_t) (o - out->data);
    out->data[out->len] = '\0';
    return 0;
}

static int
b64u_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* b64u_decode: canonical unpadded base64url into out (room for len * 3 / 4 bytes). */
static int
b64u_decode(uint8_t *out, size_t *out_len, const char *in, size_t len)
{
    if (len % 4 == 1)
        return DBAO_EFORMAT;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64u_val(in[i]);
        if (v < 0)
            return DBAO_EFORMAT;
        acc = (acc << 6) | (uint32_t) v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-canonical trailing bits */
        return DBAO_EFORMAT;
    *out_len = o;
    return 0;
}

/* ---- the functions ----------------------------------------------------------------------- */

/* keep_chars: first n and last m characters kept, the rest masked; everything masked when the
 * value has no more than n + m characters. alnum_only: only letters and digits count and are
 * masked, the rest (separators) stays. */
static int
keep_chars(const char *in, size_t len, uint32_t n, uint32_t m, bool alnum_only, dbao_buf *out)
{
    size_t total = 0, pos = 0;
    while (pos < len) {
        u8c c = next_char(in, len, &pos);
        if (!alnum_only || (c.valid && is_alnum_cp(c.cp)) || !c.valid)
            total++;
    }
    bool all = total <= (size_t) n + m;
    size_t idx = 0;
    pos = 0;
    int rc = 0;
    while (rc == 0 && pos < len) {
        u8c c = next_char(in, len, &pos);
        bool counts = !alnum_only || !c.valid || is_alnum_cp(c.cp);
        if (!counts) {
            rc = put_keep(out, in, c);
            continue;
        }
        bool keep = !all && (idx < n || idx >= total - m);
        idx++;
        rc = keep ? put_keep(out, in, c) : dbao_buf_putc(out, MASK_CH);
    }
    return rc;
}

static int
range_chars(const char *in, size_t len, uint32_t a, uint32_t b, dbao_buf *out)
{
    size_t idx = 0, pos = 0;
    int rc = 0;
    while (rc == 0 && pos < len) {
        u8c c = next_char(in, len, &pos);
        rc = (idx >= a && idx < b) ? dbao_buf_putc(out, MASK_CH) : put_keep(out, in, c);
        idx++;
    }
    return rc;
}

/* before_after: mask every character before (after) the first `ch`; keep_first keeps the
 * first character of the masked part when it has at least two (the email default). */
static int
before_after(const char *in, size_t len, uint32_t ch, bool before, bool keep_first, dbao_buf *out)
{
    size_t pos = 0, at = SIZE_MAX, idx = 0;
    while (pos < len) {
        u8c c = next_char(in, len, &pos);
        if (c.valid && c.cp == ch) {
            at = idx;
            break;
        }
        idx++;
    }
    size_t total = count_chars(in, len);
    pos = 0;
    idx = 0;
    int rc = 0;
    while (rc == 0 && pos < len) {
        u8c c = next_char(in, len, &pos);
        bool masked;
        if (at == SIZE_MAX)
            masked = true;
        else if (before)
            masked = idx < at && !(keep_first && idx == 0 && at >= 2);
        else
            masked = idx > at && !(keep_first && idx == at + 1 && total - at - 1 >= 2);
        rc = masked ? dbao_buf_putc(out, MASK_CH) : put_keep(out, in, c);
        idx++;
    }
    return rc;
}

static int
mask_all(const char *in, size_t len, dbao_buf *out)
{
    size_t n = count_chars(in, len);
    int rc = dbao_buf_reserve(out, n);
    if (rc != 0)
        return rc;
    memset(out->data + out->len, MASK_CH, n);
    out->len += n;
    out->data[out->len] = '\0';
    return 0;
}

/* The IPv4 default: the first two dot-separated parts kept, every later part one '*'. */
static int
ipv4_default(const char *in, size_t len, dbao_buf *out)
{
    size_t dots = 0;
    for (size_t i = 0; i < len; i++)
        if (in[i] == '.')
            dots++;
    if (dots < 2)
        return mask_all(in, len, out);
    size_t seen = 0, i = 0;
    int rc = 0;
    while (rc == 0 && i < len) {
        if (seen < 2) {
            size_t pos = i;
            u8c c = next_char(in, len, &pos);
            if (c.valid && c.cp == '.')
                seen++;
            rc = put_keep(out, in, c);
            i = pos;
            continue;
        }
        if (in[i] == '.') {
            rc = dbao_buf_putc(out, '.');
            i++;
            continue;
        }
        rc = dbao_buf_putc(out, MASK_CH);
        while (i < len && in[i] != '.')
            i++;
    }
    return rc;
}

/* The mobile default: an optional +86, 0086 or 86- prefix (with a following separator) kept. */
static int
mobile_default(const char *in, size_t len, dbao_buf *out)
{
    size_t p = 0;
    if (len >= 3 && memcmp(in, "+86", 3) == 0)
        p = 3;
    else if (len >= 4 && memcmp(in, "0086", 4) == 0)
        p = 4;
    else if (len >= 3 && memcmp(in, "86-", 3) == 0)
        p = 3;
    if (p > 0) {
        while (p < len && (in[p] == ' ' || in[p] == '-'))
            p++;
    }
    int rc = dbao_buf_put(out, in, p);
    if (rc == 0)
        rc = keep_chars(in + p, len - p, 3, 4, true, out);
    return rc;
}

static int
default_apply(mask_type type, const char *in, size_t len, dbao_buf *out)
{
    switch (type) {
    case MASK_T_CN_RID18:
    case MASK_T_CN_RID15:
        return keep_chars(in, len, 6, 4, true, out);
    case MASK_T_CN_MOBILE:
        return mobile_default(in, len, out);
    case MASK_T_BANK_CARD:
        return keep_chars(in, len, 0, 4, true, out);
    case MASK_T_USCC:
        return keep_chars(in, len, 2, 4, true, out);
    case MASK_T_CN_PASSPORT:
    case MASK_T_HKMO_PERMIT:
    case MASK_T_HRP:
        return keep_chars(in, len, 1, 3, true, out);
    case MASK_T_EMAIL:
        return before_after(in, len, '@', true, true, out);
    case MASK_T_IPV4:
        return ipv4_default(in, len, out);
    case MASK_T_CN_PLATE:
        return keep_chars(in, len, 2, 1, false, out);
    case MASK_T_CN_NAME:
        return keep_chars(in, len, 1, 0, false, out);
    default:
        return dbao_buf_put(out, "***", 3);
    }
}

static int
pseudonym(const key_entry *k, const char *in, size_t len, dbao_buf *out)
{
    uint8_t mac[GM_SM3_DIGEST_LEN];
    char hex[33];
    gm_hmac_sm3_ctx h = k->hmac;
    gm_hmac_sm3_update(&h, in, len);
    gm_hmac_sm3_final(&h, mac);
    dbao_hex_encode(hex, mac, 16);
    dbao_cleanse(mac, sizeof(mac));
    int rc = dbao_buf_put(out, "p_", 2);
    if (rc == 0)
        rc = dbao_buf_put(out, hex, 32);
    return rc;
}

static int
encrypt_value(const key_entry *k, const char *in, size_t len, dbao_buf *out, dbao_err *err)
{
    if (k->len != GM_SM4_KEY_LEN)
        return dbao_err_set(err, DBAO_EKEY, "encrypt: key '%s' is not a 16-byte sm4 key", k->id);
    if (len > (1u << 30))
        return dbao_err_set(err, DBAO_ERANGE, "encrypt: value too long");
    size_t blen = 12 + len + GM_SM4_GCM_TAG_LEN;
    uint8_t *blob = dbao_malloc(blen);
    if (blob == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "encrypt: out of memory");
    char aad[5 + MASK_KEY_ID_MAX + 1];
    size_t aad_len = (size_t) snprintf(aad, sizeof(aad), "enc1:%s", k->id);
    int rc = gm_rand_bytes(blob, 12);
    if (rc == 0)
        rc = gm_sm4_gcm_seal(k->sm4, blob + 12, blob + 12 + len, blob, 12, (const uint8_t *) aad,
                             aad_len, (const uint8_t *) in, len);
    if (rc != 0) {
        dbao_free_secret(blob, blen);
        return dbao_err_set(err, rc, "encrypt: sm4-gcm failed");
    }
    size_t mark = out->len;
    rc = dbao_buf_put(out, aad, aad_len);
    if (rc == 0)
        rc = dbao_buf_putc(out, ':');
    if (rc == 0)
        rc = b64u_encode(out, blob, blen);
    dbao_free(blob);
    if (rc != 0) {
        out->len = mark;
        return dbao_err_set(err, rc, "encrypt: out of memory");
    }
    return 0;
}

int
mask_decrypt(const mask_keyring *keys, const char *in, size_t len, dbao_buf *out, dbao_err *err)
{
    if (out == NULL || (in == NULL && len > 0))
        return dbao_err_set(err, DBAO_EINVAL, "mask_decrypt: NULL argument");
    if (len < 5 || memcmp(in, "enc1:", 5) != 0)
        return dbao_err_set(err, DBAO_EFORMAT, "not an enc1 value");
    size_t p = 5;
    while (p < len && in[p] != ':')
        p++;
    if (p == len || !key_id_ok(in + 5, p - 5))
        return dbao_err_set(err, DBAO_EFORMAT, "not an enc1 value (bad key id)");
    char id[MASK_KEY_ID_MAX + 1];
    memcpy(id, in + 5, p - 5);
    id[p - 5] = '\0';
    const char *b = in + p + 1;
    size_t bl = len - p - 1;
    if (bl > ((size_t) 1 << 31))
        return dbao_err_set(err, DBAO_ERANGE, "enc1 value too long");
    uint8_t *blob = dbao_malloc(bl * 3 / 4 + 1);
    if (blob == NULL)
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    size_t blen = 0;
    if (b64u_decode(blob, &blen, b, bl) != 0 || blen < 12 + GM_SM4_GCM_TAG_LEN) {
        dbao_free(blob);
        return dbao_err_set(err, DBAO_EFORMAT, "not an enc1 value (bad base64url)");
    }
    const key_entry *k = key_find(keys, id);
    if (k == NULL) {
        dbao_free(blob);
        return dbao_err_set(err, DBAO_EKEY, "unknown key id '%s'", id);
    }
    if (k->len != GM_SM4_KEY_LEN) {
        dbao_free(blob);
        return dbao_err_set(err, DBAO_EKEY, "key '%s' is not a 16-byte sm4 key", id);
    }
    size_t ctl = blen - 12 - GM_SM4_GCM_TAG_LEN;
    int rc = dbao_buf_reserve(out, ctl);
    if (rc != 0) {
        dbao_free(blob);
        return dbao_err_set(err, rc, "out of memory");
    }
    rc = gm_sm4_gcm_open(k->sm4, (uint8_t *) out->data + out->len, blob, 12, (const uint8_t *) in,
                         p, blob + 12, ctl, blob + 12 + ctl);
    dbao_free(blob);
    if (rc != 0) {
        out->data[out->len] = '\0';
        if (rc == DBAO_EVERIFY)
            return dbao_err_set(err, rc, "enc1 value does not verify with key '%s'", id);
        return dbao_err_set(err, rc, "sm4-gcm failed");
    }
    out->len += ctl;
    out->data[out->len] = '\0';
    return 0;
}

/* ---- dates and numbers ------------------------------------------------------------------- */

static bool
digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static unsigned
num(const char *s, size_t n)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (unsigned) (s[i] - '0');
    return v;
}

static bool
date_ok(unsigned y, unsigned m, unsigned d)
{
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return false;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return false;
    return true;
}

/* date_end: the rest after a date must be empty or start a time (' ' or 'T'). */
static bool
date_end(const char *s, size_t n)
{
    return n == 0 || s[0] == ' ' || s[0] == 'T';
}

/* parse_md: 1-2 digits, returns count consumed (0 if none) */
static size_t
parse_1or2(const char *s, size_t n, unsigned *v)
{
    size_t i = 0;
    while (i < n && i < 2 && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == 0)
        return 0;
    *v = num(s, i);
    return i;
}

static int
year_of(const char *in, size_t len, char year[5])
{
    if (len < 8 || !digits(in, 4))
        return DBAO_EFORMAT;
    unsigned y = num(in, 4), m = 0, d = 0;
    const char *r = in + 4;
    size_t n = len - 4;
    if (r[0] == '-' || r[0] == '/') {
        char sep = r[0];
        size_t k = parse_1or2(r + 1, n - 1, &m);
        if (k == 0 || 1 + k >= n || r[1 + k] != sep)
            return DBAO_EFORMAT;
        size_t j = 2 + k;
        size_t k2 = parse_1or2(r + j, n - j, &d);
        if (k2 == 0 || !date_end(r + j + k2, n - j - k2))
            return DBAO_EFORMAT;
    } else if (n >= 3 && memcmp(r, "\xe5\xb9\xb4", 3) == 0) { /* 年 */
        size_t j = 3;
        size_t k = parse_1or2(r + j, n - j, &m);
        if (k == 0)
            return DBAO_EFORMAT;
        j += k;
        if (n - j < 3 || memcmp(r + j, "\xe6\x9c\x88", 3) != 0) /* 月 */
            return DBAO_EFORMAT;
        j += 3;
        k = parse_1or2(r + j, n - j, &d);
        if (k == 0)
            return DBAO_EFORMAT;
        j += k;
        if (n - j >= 3 && (memcmp(r + j, "\xe6\x97\xa5", 3) == 0 || /* 日 */
                           memcmp(r + j, "\xe5\x8f\xb7", 3) == 0))  /* 号 */
            j += 3;
        else
            return DBAO_EFORMAT;
        if (n - j != 0 && !date_end(r + j, n - j))
            return DBAO_EFORMAT;
    } else if (n >= 4 && digits(r, 4)) {
        m = num(r, 2);
        d = num(r + 2, 2);
        if (!date_end(r + 4, n - 4))
            return DBAO_EFORMAT;
    } else {
        return DBAO_EFORMAT;
    }
    if (!date_ok(y, m, d))
        return DBAO_EFORMAT;
    memcpy(year, in, 4);
    year[4] = '\0';
    return 0;
}

/* A decimal number: sign, integer digits, fraction digits; value = mant / 10^scale. */
typedef struct decnum {
    bool neg;
    int64_t mant; /* >= 0 */
    unsigned scale;
} decnum;

static int
parse_dec(const char *in, size_t len, decnum *d)
{
    size_t i = 0;
    while (i < len && is_ws(in[i]))
        i++;
    while (len > i && is_ws(in[len - 1]))
        len--;
    memset(d, 0, sizeof(*d));
    if (i < len && (in[i] == '-' || in[i] == '+')) {
        d->neg = in[i] == '-';
        i++;
    }
    size_t nd = 0, lead = 0, nint = 0;
    bool dot = false, any = false;
    for (; i < len; i++) {
        char c = in[i];
        if (c == '.') {
            if (dot || nint == 0)
                return DBAO_EFORMAT;
            dot = true;
            continue;
        }
        if (c < '0' || c > '9')
            return DBAO_EFORMAT;
        any = true;
        if (!dot)
            nint++;
        if (!dot && d->mant == 0 && c == '0') {
            lead++;
            continue;
        }
        if (++nd > NUM_DIGITS_MAX)
            return DBAO_ERANGE;
        d->mant = d->mant * 10 + (c - '0');
        if (dot)
            d->scale++;
    }
    if (!any || (dot && d->scale == 0 && in[len - 1] == '.'))
        return DBAO_EFORMAT;
    (void) lead;
    return 0;
}

static int
put_dec(dbao_buf *out, bool neg, int64_t mant, unsigned scale)
{
    char dg[24];
    int n = snprintf(dg, sizeof(dg), "%lld", (long long) mant);
    int rc = 0;
    if (neg && mant != 0)
        rc = dbao_buf_putc(out, '-');
    if (scale == 0)
        return rc ? rc : dbao_buf_put(out, dg, (size_t) n);
    if ((unsigned) n <= scale) {
        if (rc == 0)
            rc = dbao_buf_put(out, "0.", 2);
        for (unsigned z = (unsigned) n; rc == 0 && z < scale; z++)
            rc = dbao_buf_putc(out, '0');
        return rc ? rc : dbao_buf_put(out, dg, (size_t) n);
    }
    if (rc == 0)
        rc = dbao_buf_put(out, dg, (size_t) n - scale);
    if (rc == 0)
        rc = dbao_buf_putc(out, '.');
    if (rc == 0)
        rc = dbao_buf_put(out, dg + (size_t) n - scale, scale);
    return rc;
}

static int
round_value(int64_t step, const char *in, size_t len, dbao_buf *out, dbao_err *err)
{
    decnum d;
    if (parse_dec(in, len, &d) != 0)
        return dbao_err_set(err, DBAO_EFORMAT, "round: the value is not a decimal number");
    int64_t p10 = 1;
    for (unsigned i = 0; i < d.scale; i++)
        p10 *= 10;
    int64_t ip = d.mant / p10, frac = d.mant % p10;
    int64_t q = ip / step, r = ip % step;
    /* up when r + frac/p10 >= step/2, i.e. 2r*p10 + 2frac >= step*p10 */
    __int128 lhs = (__int128) 2 * r * p10 + (__int128) 2 * frac;
    __int128 rhs = (__int128) step * p10;
    if (lhs >= rhs)
        q++;
    int64_t res;
    if (__builtin_mul_overflow(q, step, &res))
        return dbao_err_set(err, DBAO_ERANGE, "round: the result is out of range");
    return put_dec(out, d.neg, res, 0);
}

static int
noise_value(const mask_fn *f, const key_entry *k, const char *in, size_t len, dbao_buf *out,
            dbao_err *err)
{
    decnum d;
    if (parse_dec(in, len, &d) != 0)
        return dbao_err_set(err, DBAO_EFORMAT, "noise: the value is not a decimal number");
    uint8_t r[GM_SM3_DIGEST_LEN];
    if (k != NULL) {
        gm_hmac_sm3_ctx h = k->hmac;
        gm_hmac_sm3_update(&h, "noise:", 6);
        gm_hmac_sm3_update(&h, in, len);
        gm_hmac_sm3_final(&h, r);
    } else if (gm_rand_bytes(r, 8) != 0) {
        return dbao_err_set(err, DBAO_ECRYPTO, "noise: no random bytes");
    }
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = (u << 8) | r[i];
    dbao_cleanse(r, sizeof(r));
    int64_t kk = (int64_t) (u % (2 * NOISE_RANGE + 1)) - NOISE_RANGE;
    __int128 v = d.neg ? -(__int128) d.mant : (__int128) d.mant;
    __int128 delta = v * kk * (__int128) f->a / ((__int128) 100 * NOISE_RANGE);
    __int128 nv = v + delta;
    bool neg = nv < 0;
    if (neg)
        nv = -nv;
    if (nv > INT64_MAX)
        return dbao_err_set(err, DBAO_ERANGE, "noise: the result is out of range");
    return put_dec(out, neg, (int64_t) nv, d.scale);
}

static const key_entry *
need_key(const mask_keyring *keys, const char *id, const char *fn, int *rc, dbao_err *err)
{
    const key_entry *k = key_find(keys, id);
    if (k == NULL)
        *rc = dbao_err_set(err, DBAO_EKEY, "%s: unknown key id '%s'", fn, id);
    return k;
}

int
mask_fn_apply(const mask_fn *f, mask_type type, const mask_keyring *keys, const char *in,
              size_t len, dbao_buf *out, dbao_err *err)
{
    if (f == NULL || out == NULL || (in == NULL && len > 0))
        return dbao_err_set(err, DBAO_EINVAL, "mask_fn_apply: NULL argument");
    if (in == NULL)
        in = "";
    size_t mark = out->len;
    int rc = 0;
    const key_entry *k = NULL;
    char year[5];
    switch (f->kind) {
    case MASK_FN_CLEAR:
        rc = dbao_buf_put(out, in, len);
        break;
    case MASK_FN_DEFAULT:
        rc = default_apply(type, in, len, out);
        break;
    case MASK_FN_KEEP:
        rc = keep_chars(in, len, f->a, f->b, false, out);
        break;
    case MASK_FN_RANGE:
        rc = range_chars(in, len, f->a, f->b, out);
        break;
    case MASK_FN_BEFORE:
    case MASK_FN_AFTER:
        rc = before_after(in, len, f->ch, f->kind == MASK_FN_BEFORE, false, out);
        break;
    case MASK_FN_REPLACE:
        rc = dbao_buf_put(out, f->value ? f->value : "", f->value ? strlen(f->value) : 0);
        break;
    case MASK_FN_PSEUDONYM:
        if ((k = need_key(keys, f->key_id, "pseudonym", &rc, err)) != NULL)
            rc = pseudonym(k, in, len, out);
        else
            return rc;
        break;
    case MASK_FN_ENCRYPT:
        if ((k = need_key(keys, f->key_id, "encrypt", &rc, err)) == NULL)
            return rc;
        return encrypt_value(k, in, len, out, err);
    case MASK_FN_YEAR:
        if (year_of(in, len, year) != 0)
            return dbao_err_set(err, DBAO_EFORMAT, "year: the value is not a date");
        rc = dbao_buf_put(out, year, 4);
        break;
    case MASK_FN_ROUND:
        rc = round_value(f->step, in, len, out, err);
        if (rc != 0 && rc != DBAO_ENOMEM) {
            out->len = mark;
            if (out->data)
                out->data[mark] = '\0';
            return rc;
        }
        break;
    case MASK_FN_NOISE:
        if (f->key_id[0] && (k = need_key(keys, f->key_id, "noise", &rc, err)) == NULL)
            return rc;
        rc = noise_value(f, k, in, len, out, err);
        if (rc != 0 && rc != DBAO_ENOMEM) {
            out->len = mark;
            if (out->data)
                out->data[mark] = '\0';
            return rc;
        }
        break;
    default:
        return dbao_err_set(err, DBAO_EINVAL, "mask_fn_apply: bad function kind");
    }
    if (rc != 0) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
        return dbao_err_set(err, rc, "mask function: out of memory");
    }
    return 0;
}
