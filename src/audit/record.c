/* record.c: audit records: validation, the canonical byte encoding, JSON in and out, UUIDv7.
 *
 * The canonical encoding is the form that is stored and hashed into the Merkle tree, so it is
 * fixed by docs/audit-format.md (normative; this table repeats it). Version 1:
 *
 *   offset  size  field
 *   0       4     magic "DBAR" (0x44 0x42 0x41 0x52)
 *   4       1     version 0x01
 *   5       16    event_id, UUIDv7 bytes (version nibble 7, variant 0b10)
 *   21      8     time: int64 big-endian, nanoseconds since the Unix epoch UTC, >= 0
 *   29      1     result: 0x00 success, 0x01 failure
 *   30      4     code: int32 big-endian, two's complement
 *   34      ...   ten variable fields in this order, each a uint16 big-endian length L and
 *                 L bytes: subject.id, subject.role, subject.ip (0, 4 or 16 bytes, network
 *                 order), subject.device, event_type, action, object, trace_id, source, details
 *
 * There is nothing after the last field. Text fields are UTF-8 without control characters
 * (C0, DEL, C1) or bidirectional overrides; details is the RFC 8785 (JCS) canonical text of a
 * JSON object. Invariant: decode accepts exactly the byte strings encode can produce, so
 * decode(encode(r)) == r and encode(decode(b)) == b; every check lives in one place (the field
 * checkers below) and both directions call it.
 *
 * Written by hand because no Debian library does it: the byte layout is ours; the canonical
 * JSON writer is ours because jansson's json_dumps output (escaping, number format, key order
 * rules) is not a specified, versioned format, and the hash of every record depends on it.
 * jansson does the JSON parsing, inet_pton/inet_ntop the addresses, OpenSSL's DRBG (through
 * gm_rand_bytes) the random bits.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/audit.h"
#include "internal.h"

#define REC_MAGIC      "DBAR"
#define REC_HEAD_LEN   34
#define JSON_INT_LIMIT ((json_int_t) 9007199254740991) /* 2^53 - 1, the I-JSON safe range */
#define PATH_MAX_SHOWN 96

/* ---- growable buffer ---------------------------------------------------------------------- */

void
audit__buf_init(audit__buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void
audit__buf_cleanup(audit__buf *b)
{
    dbao_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

void
audit__buf_put(audit__buf *b, const void *data, size_t len)
{
    if (b->rc != 0 || len == 0) {
        return;
    }
    if (len > b->max || b->len > b->max - len) {
        b->rc = DBAO_ERANGE;
        return;
    }
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap == 0 ? 256 : b->cap;
        uint8_t *p;

        while (cap < b->len + len + 1) {
            cap *= 2;
        }
        p = dbao_realloc(b->p, cap);
        if (p == NULL) {
            b->rc = DBAO_ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

void
audit__buf_putc(audit__buf *b, uint8_t c)
{
    audit__buf_put(b, &c, 1);
}

void
audit__buf_puts(audit__buf *b, const char *s)
{
    audit__buf_put(b, s, strlen(s));
}

int
audit__buf_take(audit__buf *b, char **out, size_t *out_len)
{
    int rc = b->rc;

    *out = NULL;
    *out_len = 0;
    if (rc == 0 && b->p == NULL) {
        b->p = dbao_malloc(1);
        if (b->p == NULL) {
            rc = DBAO_ENOMEM;
        }
    }
    if (rc != 0) {
        audit__buf_cleanup(b);
        return rc;
    }
    b->p[b->len] = '\0'; /* put() always leaves room for it */
    *out = (char *) b->p;
    *out_len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return 0;
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */

bool
audit__utf8_next(const uint8_t *s, size_t len, size_t *pos, uint32_t *cp)
{
    size_t i = *pos;
    uint32_t c, min;
    int n;

    if (i >= len) {
        return false;
    }
    c = s[i];
    if (c < 0x80) {
        *cp = c;
        *pos = i + 1;
        return true;
    } else if (c >= 0xc2 && c <= 0xdf) {
        n = 1, c &= 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2, c &= 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3, c &= 0x07, min = 0x10000;
    } else {
        return false;
    }
    if (len - i - 1 < (size_t) n) {
        return false;
    }
    for (int k = 1; k <= n; k++) {
        uint8_t cc = s[i + (size_t) k];

        if ((cc & 0xc0) != 0x80) {
            return false;
        }
        c = (c << 6) | (cc & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return false;
    }
    *cp = c;
    *pos = i + 1 + (size_t) n;
    return true;
}

bool
audit__cp_is_control(uint32_t cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
}

bool
audit__cp_is_bidi(uint32_t cp)
{
    return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

bool
audit__cp_is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

/* ---- canonical JSON (RFC 8785) for details ------------------------------------------------ */

static const char *
json_error_phrase(const json_error_t *e)
{
    switch (json_error_code(e)) {
    case json_error_out_of_memory:
        return "out of memory";
    case json_error_stack_overflow:
        return "nested too deeply";
    case json_error_invalid_utf8:
        return "invalid UTF-8";
    case json_error_premature_end_of_input:
        return "unexpected end of input";
    case json_error_end_of_input_expected:
        return "trailing data after the value";
    case json_error_null_character:
    case json_error_null_byte_in_key:
        return "NUL character";
    case json_error_duplicate_key:
        return "duplicate key";
    case json_error_numeric_overflow:
        return "number out of range";
    default:
        return "invalid syntax";
    }
}

/* path_append writes `base` + sep + a printable-ASCII rendering of `name` into out. Key names
 * appear in messages; anything else than printable ASCII becomes '?', and long paths are cut. */
static void
path_append(char *out, size_t cap, const char *base, const char *name, size_t name_len)
{
    size_t n = (size_t) snprintf(out, cap, "%s.", base);

    for (size_t i = 0; i < name_len && n + 1 < cap; i++) {
        unsigned char c = (unsigned char) name[i];

        out[n++] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char) c : '?';
    }
    if (n >= cap) {
        n = cap - 1;
    }
    out[n] = '\0';
}

static void
jcs_string(audit__buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    audit__buf_putc(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) s[i];
        const char *esc = NULL;
        char u[7];

        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        audit__buf_put(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0';
            u[4] = hex[c >> 4], u[5] = hex[c & 15], u[6] = '\0';
            esc = u;
            break;
        }
        audit__buf_puts(b, esc);
    }
    audit__buf_put(b, s + run, len - run);
    audit__buf_putc(b, '"');
}

/* UTF-16 code unit iterator over valid UTF-8, for the RFC 8785 key order. */
typedef struct u16_iter {
    const uint8_t *s;
    size_t len, pos;
    uint32_t pending; /* a low surrogate still to deliver, or 0 */
} u16_iter;

static bool
u16_next(u16_iter *it, uint32_t *unit)
{
    uint32_t cp;

    if (it->pending != 0) {
        *unit = it->pending;
        it->pending = 0;
        return true;
    }
    if (!audit__utf8_next(it->s, it->len, &it->pos, &cp)) {
        return false;
    }
    if (cp >= 0x10000) {
        cp -= 0x10000;
        *unit = 0xd800 + (cp >> 10);
        it->pending = 0xdc00 + (cp & 0x3ff);
    } else {
        *unit = cp;
    }
    return true;
}

typedef struct jkey {
    const char *s;
    size_t len;
} jkey;

static int
jkey_cmp(const void *pa, const void *pb)
{
    const jkey *a = pa, *b = pb;
    u16_iter ia = {(const uint8_t *) a->s, a->len, 0, 0};
    u16_iter ib = {(const uint8_t *) b->s, b->len, 0, 0};

    for (;;) {
        uint32_t ua, ub;
        bool ha = u16_next(&ia, &ua), hb = u16_next(&ib, &ub);

        if (!ha || !hb) {
            return (int) ha - (int) hb;
        }
        if (ua != ub) {
            return ua < ub ? -1 : 1;
        }
    }
}

int
audit__jcs_write(audit__buf *b, const void *value, const char *path, int depth, dbao_err *err)
{
    const json_t *v = value;
    char sub[PATH_MAX_SHOWN];
    char num[32];
    int rc = 0;

    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(v), i = 0;
        jkey *keys;
        const char *k;
        json_t *m;

        if (depth >= AUDIT_DETAILS_DEPTH_MAX) {
            return dbao_err_set(err, DBAO_EFORMAT, "field '%s': nested deeper than %d levels", path,
                                AUDIT_DETAILS_DEPTH_MAX);
        }
        keys = dbao_calloc(n == 0 ? 1 : n, sizeof(*keys));
        if (keys == NULL) {
            return dbao_err_set(err, DBAO_ENOMEM, "field '%s': out of memory", path);
        }
        json_object_foreach((json_t *) v, k, m)
        {
            keys[i].s = k;
            keys[i].len = json_object_iter_key_len(json_object_key_to_iter(k));
            i++;
        }
        qsort(keys, n, sizeof(*keys), jkey_cmp);
        audit__buf_putc(b, '{');
        for (i = 0; i < n && rc == 0; i++) {
            if (i > 0) {
                audit__buf_putc(b, ',');
            }
            jcs_string(b, keys[i].s, keys[i].len);
            audit__buf_putc(b, ':');
            path_append(sub, sizeof(sub), path, keys[i].s, keys[i].len);
            rc = audit__jcs_write(b, json_object_get(v, keys[i].s), sub, depth + 1, err);
        }
        audit__buf_putc(b, '}');
        dbao_free(keys);
        break;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);

        if (depth >= AUDIT_DETAILS_DEPTH_MAX) {
            return dbao_err_set(err, DBAO_EFORMAT, "field '%s': nested deeper than %d levels", path,
                                AUDIT_DETAILS_DEPTH_MAX);
        }
        audit__buf_putc(b, '[');
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (i > 0) {
                audit__buf_putc(b, ',');
            }
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            rc = audit__jcs_write(b, json_array_get(v, i), sub, depth + 1, err);
        }
        audit__buf_putc(b, ']');
        break;
    }
    case JSON_STRING:
        jcs_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER: {
        json_int_t x = json_integer_value(v);

        if (x > JSON_INT_LIMIT || x < -JSON_INT_LIMIT) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "field '%s': integer outside +-(2^53 - 1) (send it as a string)",
                                path);
        }
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, x);
        audit__buf_puts(b, num);
        break;
    }
    case JSON_REAL:
        return dbao_err_set(err, DBAO_EFORMAT,
                            "field '%s': real numbers are not allowed (send a string or an "
                            "integer)",
                            path);
    case JSON_TRUE:
        audit__buf_puts(b, "true");
        break;
    case JSON_FALSE:
        audit__buf_puts(b, "false");
        break;
    case JSON_NULL:
        audit__buf_puts(b, "null");
        break;
    }
    if (rc == 0 && b->rc == DBAO_ENOMEM) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "field '%s': out of memory", path);
    }
    return rc;
}

/* details_from_value canonicalises a parsed details object into a new buffer. */
static int
details_from_value(char **out, size_t *out_len, const json_t *v, const char *field, dbao_err *err)
{
    audit__buf b;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (!json_is_object(v)) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': not a JSON object", field);
    }
    audit__buf_init(&b, AUDIT_DETAILS_MAX);
    rc = audit__jcs_write(&b, v, field, 0, err);
    if (rc == 0 && b.rc == DBAO_ERANGE) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field '%s': canonical form longer than %d bytes",
                          field, AUDIT_DETAILS_MAX);
    }
    if (rc != 0) {
        audit__buf_cleanup(&b);
        return rc;
    }
    rc = audit__buf_take(&b, out, out_len);
    if (rc != 0) {
        return dbao_err_set(err, rc, "field '%s': out of memory", field);
    }
    return 0;
}

int
audit__details_canonicalize_dom(char **out, size_t *out_len, const char *json, size_t json_len,
                                const char *field, dbao_err *err)
{
    json_error_t je;
    json_t *v;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (json_len > AUDIT_JSON_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': longer than %d bytes", field,
                            AUDIT_JSON_MAX);
    }
    v = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &je);
    if (v == NULL) {
        if (json_error_code(&je) == json_error_out_of_memory) {
            return dbao_err_set(err, DBAO_ENOMEM, "field '%s': out of memory", field);
        }
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': invalid JSON at byte %d: %s", field,
                            je.position, json_error_phrase(&je));
    }
    rc = details_from_value(out, out_len, v, field, err);
    json_decref(v);
    return rc;
}

int
audit__details_canonicalize(char **out, size_t *out_len, const char *json, size_t json_len,
                            const char *field, dbao_err *err)
{
    *out = NULL;
    *out_len = 0;
    /* The common case: producers (the gateway, the clearing engine) write canonical details
     * themselves. Checked on the bytes without a DOM (jcscheck.c), it is copied as is; the
     * jansson path (audit__details_canonicalize_dom) canonicalises anything else and names
     * what is wrong. */
    if (json_len <= AUDIT_DETAILS_MAX && audit__jcs_is_canonical(json, json_len)) {
        char *c = dbao_malloc(json_len + 1);
        if (c == NULL) {
            return dbao_err_set(err, DBAO_ENOMEM, "field '%s': out of memory", field);
        }
        memcpy(c, json, json_len);
        c[json_len] = 0;
        *out = c;
        *out_len = json_len;
        return 0;
    }
    return audit__details_canonicalize_dom(out, out_len, json, json_len, field, err);
}

/* ---- field checks (shared by validate, decode and from_json) ----------------------------- */

enum text_kind {
    TEXT_UTF8,  /* UTF-8 without control or bidi-override characters */
    TEXT_TOKEN, /* ASCII letters, digits and . _ - : / */
};

static int
check_text(const char *field, const char *s, size_t len, size_t max, bool required,
           enum text_kind kind, dbao_err *err)
{
    size_t pos = 0;
    uint32_t cp;

    if (len == 0) {
        if (required) {
            return dbao_err_set(err, DBAO_EFORMAT, "field '%s': required", field);
        }
        return 0;
    }
    if (len > max) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': longer than %zu bytes", field, max);
    }
    while (pos < len) {
        if (!audit__utf8_next((const uint8_t *) s, len, &pos, &cp)) {
            return dbao_err_set(err, DBAO_EFORMAT, "field '%s': invalid UTF-8", field);
        }
        if (kind == TEXT_TOKEN) {
            bool ok = (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
                      (cp >= '0' && cp <= '9') || cp == '.' || cp == '_' || cp == '-' ||
                      cp == ':' || cp == '/';
            if (!ok) {
                return dbao_err_set(err, DBAO_EFORMAT,
                                    "field '%s': only ASCII letters, digits and . _ - : / allowed",
                                    field);
            }
        } else if (audit__cp_is_control(cp)) {
            return dbao_err_set(err, DBAO_EFORMAT, "field '%s': contains a control character",
                                field);
        } else if (audit__cp_is_bidi(cp)) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "field '%s': contains a bidirectional override character", field);
        }
    }
    return 0;
}

static bool
is_lower_hex(const char *s, size_t n, bool *all_zero)
{
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
        if (c != '0') {
            *all_zero = false;
        }
    }
    return true;
}

/* check_traceparent: W3C Trace Context level 1, version 00 only:
 * "00-" 32 hex (trace-id, not all zero) "-" 16 hex (parent-id, not all zero) "-" 2 hex. */
static int
check_traceparent(const char *s, size_t len, dbao_err *err)
{
    bool z1, z2, z3;

    if (len == 0) {
        return 0;
    }
    if (len != AUDIT_TRACE_ID_LEN || memcmp(s, "00-", 3) != 0 || s[35] != '-' || s[52] != '-' ||
        !is_lower_hex(s + 3, 32, &z1) || !is_lower_hex(s + 36, 16, &z2) ||
        !is_lower_hex(s + 53, 2, &z3) || z1 || z2) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "field 'trace_id': not a W3C traceparent (version 00, lowercase hex, "
                            "non-zero ids)");
    }
    return 0;
}

static int
check_details(const char *s, size_t len, dbao_err *err)
{
    json_error_t je;
    json_t *v;
    char *canon = NULL;
    size_t canon_len = 0;
    int rc;

    if (len > AUDIT_DETAILS_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'details': longer than %d bytes",
                            AUDIT_DETAILS_MAX);
    }
    /* the common case, checked on the bytes; the DOM path below names any problem */
    if (audit__jcs_is_canonical(s, len)) {
        return 0;
    }
    v = json_loadb(s, len, JSON_REJECT_DUPLICATES, &je);
    if (v == NULL) {
        if (json_error_code(&je) == json_error_out_of_memory) {
            return dbao_err_set(err, DBAO_ENOMEM, "field 'details': out of memory");
        }
        return dbao_err_set(err, DBAO_EFORMAT, "field 'details': invalid JSON at byte %d: %s",
                            je.position, json_error_phrase(&je));
    }
    rc = details_from_value(&canon, &canon_len, v, "details", err);
    json_decref(v);
    if (rc == 0 && (canon_len != len || memcmp(canon, s, len) != 0)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'details': not in canonical form");
    }
    dbao_free(canon);
    return rc;
}

static bool
uuid_is_v7(const uint8_t id[16])
{
    return (id[6] >> 4) == 7 && (id[8] & 0xc0) == 0x80;
}

/* The fields in canonical order, as (name, pointer, limit, required, kind) for the text ones. */
typedef struct text_field {
    const char *name;
    size_t off;
    size_t max;
    bool required;
    enum text_kind kind;
} text_field;

#define TF(field, lim, req, kind)                                                                  \
    {                                                                                              \
#field, offsetof(audit_record, field), lim, req, kind                                      \
    }
static const text_field TEXT_FIELDS[] = {
    TF(subject.id, AUDIT_SUBJECT_ID_MAX, true, TEXT_UTF8),
    TF(subject.role, AUDIT_SUBJECT_ROLE_MAX, false, TEXT_UTF8),
    TF(subject.device, AUDIT_SUBJECT_DEVICE_MAX, false, TEXT_UTF8),
    TF(event_type, AUDIT_EVENT_TYPE_MAX, true, TEXT_TOKEN),
    TF(action, AUDIT_ACTION_MAX, true, TEXT_UTF8),
    TF(object, AUDIT_OBJECT_MAX, false, TEXT_UTF8),
    TF(source, AUDIT_SOURCE_MAX, true, TEXT_TOKEN),
};
#undef TF
enum { TF_SUBJECT_ID, TF_ROLE, TF_DEVICE, TF_EVENT_TYPE, TF_ACTION, TF_OBJECT, TF_SOURCE };

static const char *
field_ptr(const audit_record *r, int tf)
{
    return (const char *) r + TEXT_FIELDS[tf].off;
}

static int
check_text_field(int tf, const char *s, size_t len, dbao_err *err)
{
    const text_field *f = &TEXT_FIELDS[tf];

    return check_text(f->name, s, len, f->max, f->required, f->kind, err);
}

/* str_len returns strlen bounded by max + 1 (a value of max + 1 means "too long"). */
static size_t
str_len(const char *s, size_t max)
{
    return strnlen(s, max + 1);
}

int
audit_record_validate(const audit_record *r, dbao_err *err)
{
    int rc;

    if (!uuid_is_v7(r->event_id)) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'event_id': not a UUIDv7");
    }
    if (r->time_ns < 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'time': before 1970-01-01T00:00:00Z");
    }
    if (r->result != AUDIT_RESULT_SUCCESS && r->result != AUDIT_RESULT_FAILURE) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'result': not success or failure");
    }
    for (int i = TF_SUBJECT_ID; i <= TF_SOURCE; i++) {
        const char *s = field_ptr(r, i);

        rc = check_text_field(i, s, str_len(s, TEXT_FIELDS[i].max), err);
        if (rc != 0) {
            return rc;
        }
    }
    if (r->subject.ip_len != 0 && r->subject.ip_len != 4 && r->subject.ip_len != 16) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'subject.ip': not an IPv4 or IPv6 address");
    }
    rc = check_traceparent(r->trace_id, str_len(r->trace_id, AUDIT_TRACE_ID_LEN), err);
    if (rc != 0) {
        return rc;
    }
    if (r->details != NULL) {
        return check_details(r->details, r->details_len, err);
    }
    return 0;
}

/* ---- record lifecycle --------------------------------------------------------------------- */

void
audit_record_init(audit_record *r)
{
    memset(r, 0, sizeof(*r));
}

void
audit_record_cleanup(audit_record *r)
{
    dbao_free(r->details);
    audit_record_init(r);
}

int
audit_record_set_ip(audit_record *r, const char *text, dbao_err *err)
{
    uint8_t a[16];

    if (text == NULL || text[0] == '\0') {
        memset(r->subject.ip, 0, sizeof(r->subject.ip));
        r->subject.ip_len = 0;
        return 0;
    }
    if (strnlen(text, 64) < 64 && inet_pton(AF_INET, text, a) == 1) {
        memcpy(r->subject.ip, a, 4);
        memset(r->subject.ip + 4, 0, 12);
        r->subject.ip_len = 4;
        return 0;
    }
    if (strnlen(text, 64) < 64 && inet_pton(AF_INET6, text, a) == 1) {
        memcpy(r->subject.ip, a, 16);
        r->subject.ip_len = 16;
        return 0;
    }
    return dbao_err_set(err, DBAO_EFORMAT, "field 'subject.ip': not an IPv4 or IPv6 address");
}

int
audit_record_set_details(audit_record *r, const char *json, size_t json_len, dbao_err *err)
{
    char *canon;
    size_t canon_len;
    int rc;

    rc = audit__details_canonicalize(&canon, &canon_len, json, json_len, "details", err);
    if (rc != 0) {
        return rc;
    }
    dbao_free(r->details);
    r->details = canon;
    r->details_len = canon_len;
    return 0;
}

/* ---- canonical encoding ------------------------------------------------------------------- */

static void
put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}

static uint64_t
get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

int
audit_record_encode(const audit_record *r, uint8_t *out, size_t *out_len, size_t out_cap,
                    dbao_err *err)
{
    const void *vals[10];
    size_t lens[10];
    size_t total = REC_HEAD_LEN;
    int rc;

    *out_len = 0;
    rc = audit_record_validate(r, err);
    if (rc != 0) {
        return rc;
    }
    vals[0] = r->subject.id, lens[0] = strlen(r->subject.id);
    vals[1] = r->subject.role, lens[1] = strlen(r->subject.role);
    vals[2] = r->subject.ip, lens[2] = r->subject.ip_len;
    vals[3] = r->subject.device, lens[3] = strlen(r->subject.device);
    vals[4] = r->event_type, lens[4] = strlen(r->event_type);
    vals[5] = r->action, lens[5] = strlen(r->action);
    vals[6] = r->object, lens[6] = strlen(r->object);
    vals[7] = r->trace_id, lens[7] = strlen(r->trace_id);
    vals[8] = r->source, lens[8] = strlen(r->source);
    vals[9] = r->details != NULL ? r->details : "{}";
    lens[9] = r->details != NULL ? r->details_len : 2;
    for (int i = 0; i < 10; i++) {
        total += 2 + lens[i];
    }
    if (total > out_cap) {
        return dbao_err_set(err, DBAO_ERANGE, "audit record: needs %zu bytes, buffer has %zu",
                            total, out_cap);
    }
    memcpy(out, REC_MAGIC, 4);
    out[4] = AUDIT_RECORD_VERSION;
    memcpy(out + 5, r->event_id, 16);
    put_be(out + 21, (uint64_t) r->time_ns, 8);
    out[29] = (uint8_t) r->result;
    put_be(out + 30, (uint32_t) r->code, 4);
    total = REC_HEAD_LEN;
    for (int i = 0; i < 10; i++) {
        put_be(out + total, lens[i], 2);
        memcpy(out + total + 2, vals[i], lens[i]);
        total += 2 + lens[i];
    }
    *out_len = total;
    return 0;
}

/* decode_text copies a checked text field into its char array. */
static int
decode_text(audit_record *r, int tf, const uint8_t *p, size_t len, dbao_err *err)
{
    int rc = check_text_field(tf, (const char *) p, len, err);

    if (rc == 0) {
        char *dst = (char *) r + TEXT_FIELDS[tf].off;

        memcpy(dst, p, len);
        dst[len] = '\0';
    }
    return rc;
}

int
audit_record_decode(audit_record *r, const uint8_t *in, size_t in_len, dbao_err *err)
{
    const uint8_t *f[10];
    size_t fl[10];
    size_t pos = REC_HEAD_LEN;
    int rc;

    audit_record_cleanup(r);
    if (in_len < 5 || memcmp(in, REC_MAGIC, 4) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "audit record: bad magic");
    }
    if (in[4] != AUDIT_RECORD_VERSION) {
        return dbao_err_set(err, DBAO_ENOTSUP, "audit record: unsupported version %u",
                            (unsigned) in[4]);
    }
    if (in_len < REC_HEAD_LEN) {
        return dbao_err_set(err, DBAO_EFORMAT, "audit record: truncated header");
    }
    if (in_len > AUDIT_RECORD_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "audit record: longer than %d bytes",
                            AUDIT_RECORD_MAX);
    }
    for (int i = 0; i < 10; i++) {
        if (in_len - pos < 2) {
            return dbao_err_set(err, DBAO_EFORMAT, "audit record: truncated at field %d", i + 1);
        }
        fl[i] = (size_t) get_be(in + pos, 2);
        if (in_len - pos - 2 < fl[i]) {
            return dbao_err_set(err, DBAO_EFORMAT, "audit record: truncated at field %d", i + 1);
        }
        f[i] = in + pos + 2;
        pos += 2 + fl[i];
    }
    if (pos != in_len) {
        return dbao_err_set(err, DBAO_EFORMAT, "audit record: %zu bytes after the last field",
                            in_len - pos);
    }

    memcpy(r->event_id, in + 5, 16);
    if (!uuid_is_v7(r->event_id)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'event_id': not a UUIDv7");
        goto out;
    }
    r->time_ns = (int64_t) get_be(in + 21, 8);
    if (r->time_ns < 0) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'time': before 1970-01-01T00:00:00Z");
        goto out;
    }
    if (in[29] > 1) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'result': not success or failure");
        goto out;
    }
    r->result = (audit_result) in[29];
    r->code = (int32_t) (uint32_t) get_be(in + 30, 4);

    if ((rc = decode_text(r, TF_SUBJECT_ID, f[0], fl[0], err)) != 0 ||
        (rc = decode_text(r, TF_ROLE, f[1], fl[1], err)) != 0) {
        goto out;
    }
    if (fl[2] != 0 && fl[2] != 4 && fl[2] != 16) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "field 'subject.ip': not an IPv4 or IPv6 address");
        goto out;
    }
    memcpy(r->subject.ip, f[2], fl[2]);
    r->subject.ip_len = (uint8_t) fl[2];
    if ((rc = decode_text(r, TF_DEVICE, f[3], fl[3], err)) != 0 ||
        (rc = decode_text(r, TF_EVENT_TYPE, f[4], fl[4], err)) != 0 ||
        (rc = decode_text(r, TF_ACTION, f[5], fl[5], err)) != 0 ||
        (rc = decode_text(r, TF_OBJECT, f[6], fl[6], err)) != 0) {
        goto out;
    }
    rc = check_traceparent((const char *) f[7], fl[7], err);
    if (rc != 0) {
        goto out;
    }
    memcpy(r->trace_id, f[7], fl[7]);
    r->trace_id[fl[7]] = '\0';
    if ((rc = decode_text(r, TF_SOURCE, f[8], fl[8], err)) != 0) {
        goto out;
    }
    rc = check_details((const char *) f[9], fl[9], err);
    if (rc != 0) {
        goto out;
    }
    if (!(fl[9] == 2 && memcmp(f[9], "{}", 2) == 0)) {
        r->details = dbao_malloc(fl[9] + 1);
        if (r->details == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "audit record: out of memory");
            goto out;
        }
        memcpy(r->details, f[9], fl[9]);
        r->details[fl[9]] = '\0';
        r->details_len = fl[9];
    }
    rc = 0;
out:
    if (rc != 0) {
        audit_record_cleanup(r);
    }
    return rc;
}

/* ---- time ---------------------------------------------------------------------------------- */

/* Civil-date conversions for the proleptic Gregorian calendar (H. Hinnant's algorithms). */
static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t) doe - 719468;
}

static void
civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t) yoe + era * 400 + (*m <= 2);
}

static bool
digits(const char *s, int n, unsigned *out)
{
    unsigned v = 0;

    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (unsigned) (s[i] - '0');
    }
    *out = v;
    return true;
}

/* parse_rfc3339: "YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|+HH:MM|-HH:MM)", upper-case T and Z. */
static int
parse_rfc3339(int64_t *out, const char *s, size_t len, dbao_err *err)
{
    unsigned y, mo, d, h, mi, sec, oh = 0, om = 0, frac = 0;
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    size_t p = 19;
    int64_t secs, off = 0;

    if (len < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
        !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec)) {
        goto bad;
    }
    if (s[p] == '.') {
        int n = 0;

        p++;
        while (p < len && s[p] >= '0' && s[p] <= '9') {
            if (n == 9) {
                return dbao_err_set(err, DBAO_EFORMAT, "field 'time': more than 9 fraction digits");
            }
            frac = frac * 10 + (unsigned) (s[p] - '0');
            n++, p++;
        }
        if (n == 0) {
            goto bad;
        }
        for (; n < 9; n++) {
            frac *= 10;
        }
    }
    if (p + 1 == len && s[p] == 'Z') {
        off = 0;
    } else if (p + 6 == len && (s[p] == '+' || s[p] == '-') && digits(s + p + 1, 2, &oh) &&
               s[p + 3] == ':' && digits(s + p + 4, 2, &om) && oh <= 23 && om <= 59) {
        off = ((int64_t) oh * 60 + om) * 60 * (s[p] == '-' ? -1 : 1);
    } else {
        goto bad;
    }
    if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59) {
        goto bad;
    }
    if (sec == 60) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'time': leap seconds are not representable");
    }
    if (sec > 59 || d > mdays[mo - 1] + (mo == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) {
        goto bad;
    }
    secs = days_from_civil(y, mo, d) * 86400 + (int64_t) h * 3600 + (int64_t) mi * 60 + sec - off;
    if (secs < 0 || secs > (INT64_MAX - (int64_t) frac) / 1000000000) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "field 'time': outside 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z");
    }
    *out = secs * 1000000000 + (int64_t) frac;
    return 0;
bad:
    return dbao_err_set(
        err, DBAO_EFORMAT,
        "field 'time': not an RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.fraction]Z)");
}

static void
format_rfc3339(char out[64], int64_t t)
{
    int64_t secs = t / 1000000000, y;
    unsigned ns = (unsigned) (t % 1000000000), m, d, rem;

    civil_from_days(secs / 86400, &y, &m, &d);
    rem = (unsigned) (secs % 86400);
    snprintf(out, 64, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%09uZ", y, m, d, rem / 3600,
             rem / 60 % 60, rem % 60, ns);
}

int64_t
audit_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- UUIDv7 -------------------------------------------------------------------------------- */

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t uuid_last; /* (unix_ms << 12 | sub-ms fraction) of the last id; uuid_lock */

int
audit_uuid7_generate(uint8_t out[16], int64_t time_ns)
{
    uint8_t rnd[8];
    uint64_t ms, frac, key;

    if (time_ns < 0) {
        return DBAO_ERANGE;
    }
    if (gm_rand_bytes(rnd, sizeof(rnd)) != 0) {
        return DBAO_ECRYPTO;
    }
    ms = (uint64_t) time_ns / 1000000;
    frac = ((uint64_t) time_ns % 1000000) * 4096 / 1000000;
    key = ms << 12 | frac; /* ms < 2^44 for any int64 time, so this fits 60 bits */
    pthread_mutex_lock(&uuid_lock);
    if (key <= uuid_last) {
        key = uuid_last + 1;
    }
    uuid_last = key;
    pthread_mutex_unlock(&uuid_lock);

    put_be(out, key >> 12, 6);
    out[6] = (uint8_t) (0x70 | ((key >> 8) & 0x0f));
    out[7] = (uint8_t) key;
    out[8] = (uint8_t) (0x80 | (rnd[0] & 0x3f));
    memcpy(out + 9, rnd + 1, 7);
    dbao_cleanse(rnd, sizeof(rnd));
    return 0;
}

static void
format_uuid(char out[37], const uint8_t id[16])
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[n++] = '-';
        }
        out[n++] = hex[id[i] >> 4];
        out[n++] = hex[id[i] & 15];
    }
    out[n] = '\0';
}

static bool
parse_uuid(uint8_t id[16], const char *s, size_t len)
{
    size_t n = 0;

    if (len != 36) {
        return false;
    }
    for (size_t i = 0; i < 36; i++) {
        int hi, lo;

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return false;
            }
            continue;
        }
        if (i + 1 >= 36) {
            return false;
        }
        hi = (s[i] >= '0' && s[i] <= '9')   ? s[i] - '0'
             : (s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10
             : (s[i] >= 'A' && s[i] <= 'F') ? s[i] - 'A' + 10
                                            : -1;
        lo = (s[i + 1] >= '0' && s[i + 1] <= '9')   ? s[i + 1] - '0'
             : (s[i + 1] >= 'a' && s[i + 1] <= 'f') ? s[i + 1] - 'a' + 10
             : (s[i + 1] >= 'A' && s[i + 1] <= 'F') ? s[i + 1] - 'A' + 10
                                                    : -1;
        if (hi < 0 || lo < 0) {
            return false;
        }
        id[n++] = (uint8_t) (hi << 4 | lo);
        i++;
    }
    return n == 16;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

/* get_text copies an optional or required JSON string member into a char array field.
 * Absent or null means absent; an empty string is refused for optional fields ("omit it"). */
static int
get_text(json_t *obj, const char *key, const char *field, char *dst, size_t max, bool required,
         dbao_err *err)
{
    json_t *v = json_object_get(obj, key);
    size_t len;

    if (v == NULL || json_is_null(v)) {
        if (required) {
            return dbao_err_set(err, DBAO_EFORMAT, "field '%s': required", field);
        }
        dst[0] = '\0';
        return 0;
    }
    if (!json_is_string(v)) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': not a string", field);
    }
    len = json_string_length(v);
    if (len == 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': empty (omit the field instead)", field);
    }
    if (len > max) {
        return dbao_err_set(err, DBAO_EFORMAT, "field '%s': longer than %zu bytes", field, max);
    }
    memcpy(dst, json_string_value(v), len);
    dst[len] = '\0';
    return 0;
}

static int
check_keys(json_t *obj, const char *const *known, const char *prefix, dbao_err *err)
{
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        bool ok = false;

        for (size_t i = 0; known[i] != NULL; i++) {
            if (strcmp(k, known[i]) == 0) {
                ok = true;
                break;
            }
        }
        if (!ok) {
            char path[PATH_MAX_SHOWN];

            path_append(path, sizeof(path), prefix, k, strlen(k));
            /* path_append adds "prefix."; at top level drop the leading dot. */
            return dbao_err_set(err, DBAO_EFORMAT, "field '%s': unknown field",
                                prefix[0] == '\0' ? path + 1 : path);
        }
    }
    return 0;
}

static int
record_from_value(audit_record *r, json_t *root, unsigned flags, dbao_err *err)
{
    static const char *const top_keys[] = {"event_id", "time",   "subject", "event_type",
                                           "action",   "object", "result",  "code",
                                           "trace_id", "source", "details", NULL};
    static const char *const subject_keys[] = {"id", "role", "ip", "device", NULL};
    json_t *v, *subject;
    int rc;

    if (!json_is_object(root)) {
        return dbao_err_set(err, DBAO_EFORMAT, "record: not a JSON object");
    }
    if ((rc = check_keys(root, top_keys, "", err)) != 0) {
        return rc;
    }

    v = json_object_get(root, "time");
    if (v == NULL && (flags & AUDIT_JSON_ASSIGN)) {
        r->time_ns = audit_now_ns();
    } else if (v == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'time': required");
    } else if (!json_is_string(v)) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'time': not a string");
    } else if ((rc = parse_rfc3339(&r->time_ns, json_string_value(v), json_string_length(v),
                                   err)) != 0) {
        return rc;
    }

    v = json_object_get(root, "event_id");
    if (v == NULL && (flags & AUDIT_JSON_ASSIGN)) {
        if (audit_uuid7_generate(r->event_id, r->time_ns) != 0) {
            return dbao_err_set(err, DBAO_ECRYPTO, "field 'event_id': random generator failed");
        }
    } else if (v == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'event_id': required");
    } else if (!json_is_string(v) ||
               !parse_uuid(r->event_id, json_string_value(v), json_string_length(v)) ||
               !uuid_is_v7(r->event_id)) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'event_id': not a UUIDv7");
    }

    subject = json_object_get(root, "subject");
    if (subject == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'subject': required");
    }
    if (!json_is_object(subject)) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'subject': not a JSON object");
    }
    if ((rc = check_keys(subject, subject_keys, "subject", err)) != 0 ||
        (rc = get_text(subject, "id", "subject.id", r->subject.id, AUDIT_SUBJECT_ID_MAX, true,
                       err)) != 0 ||
        (rc = get_text(subject, "role", "subject.role", r->subject.role, AUDIT_SUBJECT_ROLE_MAX,
                       false, err)) != 0 ||
        (rc = get_text(subject, "device", "subject.device", r->subject.device,
                       AUDIT_SUBJECT_DEVICE_MAX, false, err)) != 0) {
        return rc;
    }
    v = json_object_get(subject, "ip");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) != strlen(json_string_value(v))) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "field 'subject.ip': not an IPv4 or IPv6 address");
        }
        if ((rc = audit_record_set_ip(r, json_string_value(v), err)) != 0) {
            return rc;
        }
    }

    if ((rc = get_text(root, "event_type", "event_type", r->event_type, AUDIT_EVENT_TYPE_MAX, true,
                       err)) != 0 ||
        (rc = get_text(root, "action", "action", r->action, AUDIT_ACTION_MAX, true, err)) != 0 ||
        (rc = get_text(root, "object", "object", r->object, AUDIT_OBJECT_MAX, false, err)) != 0 ||
        (rc = get_text(root, "trace_id", "trace_id", r->trace_id, AUDIT_TRACE_ID_LEN, false,
                       err)) != 0 ||
        (rc = get_text(root, "source", "source", r->source, AUDIT_SOURCE_MAX, true, err)) != 0) {
        return rc;
    }

    v = json_object_get(root, "result");
    if (v == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'result': required");
    }
    if (json_is_string(v) && strcmp(json_string_value(v), "success") == 0) {
        r->result = AUDIT_RESULT_SUCCESS;
    } else if (json_is_string(v) && strcmp(json_string_value(v), "failure") == 0) {
        r->result = AUDIT_RESULT_FAILURE;
    } else {
        return dbao_err_set(err, DBAO_EFORMAT, "field 'result': not \"success\" or \"failure\"");
    }

    v = json_object_get(root, "code");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN ||
            json_integer_value(v) > INT32_MAX) {
            return dbao_err_set(err, DBAO_EFORMAT, "field 'code': not a 32-bit integer");
        }
        r->code = (int32_t) json_integer_value(v);
    }

    v = json_object_get(root, "details");
    if (v != NULL && !json_is_null(v)) {
        rc = details_from_value(&r->details, &r->details_len, v, "details", err);
        if (rc != 0) {
            return rc;
        }
        if (r->details_len == 2) { /* "{}" is stored as absent */
            dbao_free(r->details);
            r->details = NULL;
            r->details_len = 0;
        }
    }
    return audit_record_validate(r, err);
}

int
audit_record_from_json(audit_record *r, const char *json, size_t json_len, unsigned flags,
                       dbao_err *err)
{
    json_error_t je;
    json_t *root;
    int rc;

    audit_record_cleanup(r);
    if (json_len > AUDIT_JSON_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "record: longer than %d bytes", AUDIT_JSON_MAX);
    }
    root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        if (json_error_code(&je) == json_error_out_of_memory) {
            return dbao_err_set(err, DBAO_ENOMEM, "record: out of memory");
        }
        return dbao_err_set(err, DBAO_EFORMAT, "record: invalid JSON at byte %d: %s", je.position,
                            json_error_phrase(&je));
    }
    rc = record_from_value(r, root, flags, err);
    json_decref(root);
    if (rc != 0) {
        audit_record_cleanup(r);
    }
    return rc;
}

static void
put_member(audit__buf *b, const char *key, const char *val, bool *first)
{
    if (!*first) {
        audit__buf_putc(b, ',');
    }
    *first = false;
    jcs_string(b, key, strlen(key));
    audit__buf_putc(b, ':');
    if (val != NULL) {
        jcs_string(b, val, strlen(val));
    }
}

int
audit_record_to_json(const audit_record *r, char **out, size_t *out_len, dbao_err *err)
{
    char tbuf[64], ubuf[37], ipbuf[INET6_ADDRSTRLEN], num[16];
    audit__buf b;
    bool first = true, sfirst = true;
    int rc;

    *out = NULL;
    *out_len = 0;
    rc = audit_record_validate(r, err);
    if (rc != 0) {
        return rc;
    }
    format_uuid(ubuf, r->event_id);
    format_rfc3339(tbuf, r->time_ns);
    audit__buf_init(&b, 4 * AUDIT_RECORD_MAX); /* escaping can grow text, never past this */
    audit__buf_putc(&b, '{');
    put_member(&b, "event_id", ubuf, &first);
    put_member(&b, "time", tbuf, &first);
    put_member(&b, "subject", NULL, &first);
    audit__buf_putc(&b, '{');
    put_member(&b, "id", r->subject.id, &sfirst);
    if (r->subject.role[0] != '\0') {
        put_member(&b, "role", r->subject.role, &sfirst);
    }
    if (r->subject.ip_len != 0) {
        inet_ntop(r->subject.ip_len == 4 ? AF_INET : AF_INET6, r->subject.ip, ipbuf, sizeof(ipbuf));
        put_member(&b, "ip", ipbuf, &sfirst);
    }
    if (r->subject.device[0] != '\0') {
        put_member(&b, "device", r->subject.device, &sfirst);
    }
    audit__buf_putc(&b, '}');
    put_member(&b, "event_type", r->event_type, &first);
    put_member(&b, "action", r->action, &first);
    if (r->object[0] != '\0') {
        put_member(&b, "object", r->object, &first);
    }
    put_member(&b, "result", r->result == AUDIT_RESULT_SUCCESS ? "success" : "failure", &first);
    put_member(&b, "code", NULL, &first);
    snprintf(num, sizeof(num), "%" PRId32, r->code);
    audit__buf_puts(&b, num);
    if (r->trace_id[0] != '\0') {
        put_member(&b, "trace_id", r->trace_id, &first);
    }
    put_member(&b, "source", r->source, &first);
    put_member(&b, "details", NULL, &first);
    if (r->details != NULL) {
        audit__buf_put(&b, r->details, r->details_len);
    } else {
        audit__buf_puts(&b, "{}");
    }
    audit__buf_putc(&b, '}');
    rc = audit__buf_take(&b, out, out_len);
    if (rc != 0) {
        return dbao_err_set(err, rc, "audit record: out of memory");
    }
    return 0;
}
