/* pgwire.c: PostgreSQL protocol v3 decoding and encoding helpers (see pgwire.h for the shapes).
 *
 * Written by hand: libpq has no public API for the server-side view of the protocol (it only speaks
 * as a client and hides its framing), and the few shapes the proxy needs are simple length-prefixed
 * records. Everything is bounds-checked against the length given by the caller; a reader that runs
 * past the end sets `bad` and returns zero values, so decoders check once at the end. Lengths on
 * the wire are signed int32: negative values other than the DataRow NULL marker are malformed.
 */
#include "pgwire.h"

#include <string.h>

/* ---- startup packets --------------------------------------------------------------------- */

int
pgw_startup_frame(const uint8_t *p, size_t n, size_t *total)
{
    if (n < 4) {
        return 0;
    }
    uint32_t len = pgw_get32(p);
    if (len < 8 || len > PGW_STARTUP_MAX) {
        return DBAO_EFORMAT;
    }
    if (n < len) {
        return 0;
    }
    *total = len;
    return 1;
}

int
pgw_startup_parse(pgw_startup *out, const uint8_t *p, size_t len, dbao_err *err)
{
    memset(out, 0, sizeof *out);
    if (len < 8 || len > PGW_STARTUP_MAX || pgw_get32(p) != len) {
        return dbao_err_set(err, DBAO_EFORMAT, "invalid startup packet length");
    }
    uint32_t code = pgw_get32(p + 4);
    out->version = code;
    if (code == PGW_SSL_REQUEST || code == PGW_GSSENC_REQUEST) {
        if (len != 8) {
            return dbao_err_set(err, DBAO_EFORMAT, "invalid encryption request length");
        }
        out->kind = code == PGW_SSL_REQUEST ? PGW_SSL : PGW_GSSENC;
        return 0;
    }
    if (code == PGW_CANCEL_REQUEST) {
        if (len != 16) {
            return dbao_err_set(err, DBAO_EFORMAT, "invalid cancel request length");
        }
        out->kind = PGW_CANCEL;
        out->cancel_pid = pgw_get32(p + 8);
        out->cancel_key = pgw_get32(p + 12);
        return 0;
    }
    if ((code >> 16) != 3) {
        return dbao_err_set(err, DBAO_ENOTSUP, "unsupported frontend protocol %u.%u", code >> 16,
                            code & 0xffff);
    }
    out->kind = PGW_STARTUP;
    size_t blen = len - 8;
    if (blen == 0 || p[len - 1] != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "startup packet not terminated");
    }
    out->buf = dbao_malloc(blen);
    if (out->buf == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    memcpy(out->buf, p + 8, blen);
    size_t pos = 0;
    for (;;) {
        const char *key = out->buf + pos;
        size_t kl = strnlen(key, blen - pos);
        if (kl == blen - pos) {
            goto bad;
        }
        if (kl == 0) {
            if (pos + 1 != blen) {
                goto bad; /* bytes after the terminator */
            }
            break;
        }
        pos += kl + 1;
        if (pos >= blen) {
            goto bad;
        }
        const char *val = out->buf + pos;
        size_t vl = strnlen(val, blen - pos);
        if (vl == blen - pos) {
            goto bad;
        }
        pos += vl + 1;
        if (out->nparams >= PGW_MAX_PARAMS) {
            pgw_startup_free(out);
            return dbao_err_set(err, DBAO_ERANGE, "too many startup parameters");
        }
        out->params[2 * out->nparams] = key;
        out->params[2 * out->nparams + 1] = val;
        out->nparams++;
    }
    out->params[2 * out->nparams] = NULL;
    return 0;
bad:
    pgw_startup_free(out);
    return dbao_err_set(err, DBAO_EFORMAT, "malformed startup parameters");
}

void
pgw_startup_free(pgw_startup *s)
{
    if (s == NULL) {
        return;
    }
    dbao_free(s->buf);
    memset(s, 0, sizeof *s);
}

const char *
pgw_startup_get(const pgw_startup *s, const char *key)
{
    for (size_t i = 0; i < s->nparams; i++) {
        if (strcmp(s->params[2 * i], key) == 0) {
            return s->params[2 * i + 1];
        }
    }
    return NULL;
}

/* ---- framing ----------------------------------------------------------------------------- */

int
pgw_frame(const uint8_t *p, size_t n, size_t max, uint8_t *type, size_t *total)
{
    if (n < 5) {
        return 0;
    }
    uint32_t len = pgw_get32(p + 1);
    if (len < 4 || len > INT32_MAX) {
        return DBAO_EFORMAT;
    }
    if ((size_t) len + 1 > max) {
        return DBAO_ERANGE;
    }
    if (n < (size_t) len + 1) {
        return 0;
    }
    *type = p[0];
    *total = (size_t) len + 1;
    return 1;
}

long
pgw_msg_begin(dbao_buf *b, uint8_t type)
{
    long off = (long) b->len;
    uint8_t hdr[5] = {type, 0, 0, 0, 0};
    int rc = dbao_buf_put(b, hdr, sizeof hdr);
    return rc != 0 ? rc : off;
}

void
pgw_msg_end(dbao_buf *b, long off)
{
    pgw_put32((uint8_t *) b->data + off + 1, (uint32_t) (b->len - (size_t) off - 1));
}

int
pgw_msg_put(dbao_buf *b, uint8_t type, const void *payload, size_t len)
{
    if (len > INT32_MAX - 4) {
        return DBAO_ERANGE;
    }
    int rc = dbao_buf_reserve(b, 5 + len);
    if (rc != 0) {
        return rc;
    }
    uint8_t *p = (uint8_t *) b->data + b->len;
    p[0] = type;
    pgw_put32(p + 1, (uint32_t) (len + 4));
    if (len > 0) {
        memcpy(p + 5, payload, len);
    }
    b->len += 5 + len;
    b->data[b->len] = 0;
    return 0;
}

/* ---- readers ----------------------------------------------------------------------------- */

void
pgw_reader_init(pgw_reader *r, const void *p, size_t len)
{
    r->p = p;
    r->len = len;
    r->pos = 0;
    r->bad = false;
}

const uint8_t *
pgw_read_bytes(pgw_reader *r, size_t n)
{
    if (r->bad || r->len - r->pos < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

int16_t
pgw_read16(pgw_reader *r)
{
    const uint8_t *p = pgw_read_bytes(r, 2);
    return p == NULL ? 0 : (int16_t) pgw_get16(p);
}

int32_t
pgw_read32(pgw_reader *r)
{
    const uint8_t *p = pgw_read_bytes(r, 4);
    return p == NULL ? 0 : (int32_t) pgw_get32(p);
}

const char *
pgw_read_cstr(pgw_reader *r, size_t *len)
{
    if (r->bad) {
        return NULL;
    }
    const uint8_t *s = r->p + r->pos;
    const uint8_t *z = memchr(s, 0, r->len - r->pos);
    if (z == NULL) {
        r->bad = true;
        return NULL;
    }
    if (len != NULL) {
        *len = (size_t) (z - s);
    }
    r->pos += (size_t) (z - s) + 1;
    return (const char *) s;
}

/* ---- Query and Parse --------------------------------------------------------------------- */

int
pgw_query_decode(const uint8_t *payload, size_t len, const char **sql, size_t *sql_len)
{
    pgw_reader r;
    pgw_reader_init(&r, payload, len);
    *sql = pgw_read_cstr(&r, sql_len);
    return r.bad || r.pos != len ? DBAO_EFORMAT : 0;
}

int
pgw_parse_decode(pgw_parse *out, const uint8_t *payload, size_t len)
{
    pgw_reader r;
    pgw_reader_init(&r, payload, len);
    out->name = pgw_read_cstr(&r, &out->name_len);
    out->sql = pgw_read_cstr(&r, &out->sql_len);
    int16_t n = pgw_read16(&r);
    if (n < 0) {
        return DBAO_EFORMAT;
    }
    out->nparams = (uint16_t) n;
    out->oids = pgw_read_bytes(&r, (size_t) n * 4);
    return r.bad || r.pos != len ? DBAO_EFORMAT : 0;
}

int
pgw_parse_encode(dbao_buf *b, const pgw_parse *p, const char *sql, size_t sql_len)
{
    if (memchr(sql, 0, sql_len) != NULL) {
        return DBAO_EFORMAT;
    }
    size_t old = b->len;
    long off = pgw_msg_begin(b, 'P');
    uint8_t n[2] = {(uint8_t) (p->nparams >> 8), (uint8_t) p->nparams};
    int rc = off < 0 ? (int) off : 0;
    if (rc == 0) {
        rc = dbao_buf_put(b, p->name, p->name_len);
    }
    if (rc == 0) {
        rc = dbao_buf_putc(b, 0);
    }
    if (rc == 0) {
        rc = dbao_buf_put(b, sql, sql_len);
    }
    if (rc == 0) {
        rc = dbao_buf_putc(b, 0);
    }
    if (rc == 0) {
        rc = dbao_buf_put(b, n, 2);
    }
    if (rc == 0 && p->nparams > 0) {
        rc = dbao_buf_put(b, p->oids, (size_t) p->nparams * 4);
    }
    if (rc != 0) {
        b->len = old;
        return rc;
    }
    pgw_msg_end(b, off);
    return 0;
}

int
pgw_query_encode(dbao_buf *b, const char *sql, size_t sql_len)
{
    if (memchr(sql, 0, sql_len) != NULL) {
        return DBAO_EFORMAT;
    }
    size_t old = b->len;
    long off = pgw_msg_begin(b, 'Q');
    int rc = off < 0 ? (int) off : dbao_buf_put(b, sql, sql_len);
    if (rc == 0) {
        rc = dbao_buf_putc(b, 0);
    }
    if (rc != 0) {
        b->len = old;
        return rc;
    }
    pgw_msg_end(b, off);
    return 0;
}

/* ---- DataRow ----------------------------------------------------------------------------- */

int
pgw_datarow_begin(pgw_datarow *it, const uint8_t *payload, size_t len)
{
    pgw_reader_init(&it->r, payload, len);
    int16_t n = pgw_read16(&it->r);
    if (it->r.bad || n < 0) {
        return DBAO_EFORMAT;
    }
    it->ncols = (uint16_t) n;
    it->idx = 0;
    return n;
}

int
pgw_datarow_next(pgw_datarow *it, const uint8_t **val, int32_t *vlen)
{
    if (it->idx >= it->ncols) {
        return it->r.pos == it->r.len ? 0 : DBAO_EFORMAT;
    }
    int32_t l = pgw_read32(&it->r);
    if (it->r.bad || l < -1) {
        it->r.bad = true;
        return DBAO_EFORMAT;
    }
    if (l == -1) {
        *val = NULL;
    } else {
        *val = pgw_read_bytes(&it->r, (size_t) l);
        if (*val == NULL) {
            return DBAO_EFORMAT;
        }
    }
    *vlen = l;
    it->idx++;
    return 1;
}

int
pgw_datarow_build_begin(dbao_buf *b, uint16_t ncols)
{
    uint8_t n[2] = {(uint8_t) (ncols >> 8), (uint8_t) ncols};
    return dbao_buf_put(b, n, 2);
}

int
pgw_datarow_build_field(dbao_buf *b, const void *val, int32_t vlen)
{
    if (vlen < -1) {
        return DBAO_EINVAL;
    }
    int rc = dbao_buf_reserve(b, 4 + (vlen > 0 ? (size_t) vlen : 0));
    if (rc != 0) {
        return rc;
    }
    pgw_put32((uint8_t *) b->data + b->len, (uint32_t) vlen);
    b->len += 4;
    if (vlen > 0) {
        memcpy(b->data + b->len, val, (size_t) vlen);
        b->len += (size_t) vlen;
    }
    b->data[b->len] = 0;
    return 0;
}

/* ---- ErrorResponse / NoticeResponse ------------------------------------------------------ */

void
pgw_fields_begin(pgw_fields *it, const uint8_t *payload, size_t len)
{
    pgw_reader_init(&it->r, payload, len);
    it->done = false;
}

int
pgw_fields_next(pgw_fields *it, char *code, const char **val, size_t *vlen)
{
    if (it->done) {
        return 0;
    }
    const uint8_t *c = pgw_read_bytes(&it->r, 1);
    if (c == NULL) {
        return DBAO_EFORMAT;
    }
    if (*c == 0) {
        if (it->r.pos != it->r.len) {
            it->r.bad = true;
            return DBAO_EFORMAT;
        }
        it->done = true;
        return 0;
    }
    *code = (char) *c;
    *val = pgw_read_cstr(&it->r, vlen);
    return *val == NULL ? DBAO_EFORMAT : 1;
}

int
pgw_field_put(dbao_buf *b, char code, const char *val)
{
    size_t old = b->len;
    int rc = dbao_buf_putc(b, code);
    if (rc == 0) {
        rc = dbao_buf_put(b, val, strlen(val) + 1);
    }
    if (rc != 0) {
        b->len = old;
    }
    return rc;
}

int
pgw_error_build(dbao_buf *b, uint8_t type, const char *severity, const char *sqlstate,
                const char *msg)
{
    size_t old = b->len;
    long off = pgw_msg_begin(b, type);
    int rc = off < 0 ? (int) off : pgw_field_put(b, 'S', severity);
    if (rc == 0) {
        rc = pgw_field_put(b, 'V', severity);
    }
    if (rc == 0) {
        rc = pgw_field_put(b, 'C', sqlstate);
    }
    if (rc == 0) {
        rc = pgw_field_put(b, 'M', msg);
    }
    if (rc == 0) {
        rc = dbao_buf_putc(b, 0);
    }
    if (rc != 0) {
        b->len = old;
        return rc;
    }
    pgw_msg_end(b, off);
    return 0;
}

/* ---- AuthenticationSASL ------------------------------------------------------------------ */

static bool
is_plus(const char *m, size_t len)
{
    return len >= 5 && memcmp(m + len - 5, "-PLUS", 5) == 0;
}

int
pgw_sasl_filter(const uint8_t *payload, size_t len, dbao_buf *out)
{
    pgw_reader r;
    pgw_reader_init(&r, payload, len);
    int32_t code = pgw_read32(&r);
    if (r.bad) {
        return DBAO_EFORMAT;
    }
    if (code != 10) {
        return 0;
    }
    bool any = false;
    for (;;) {
        size_t ml = 0;
        const char *m = pgw_read_cstr(&r, &ml);
        if (m == NULL) {
            return DBAO_EFORMAT;
        }
        if (ml == 0) {
            break;
        }
        any = any || is_plus(m, ml);
    }
    if (r.pos != len) {
        return DBAO_EFORMAT;
    }
    if (!any) {
        return 0;
    }
    size_t old = out->len;
    int rc = dbao_buf_put(out, payload, 4);
    pgw_reader_init(&r, payload + 4, len - 4);
    for (;;) {
        size_t ml = 0;
        const char *m = pgw_read_cstr(&r, &ml);
        if (rc != 0 || ml == 0) {
            break;
        }
        if (!is_plus(m, ml)) {
            rc = dbao_buf_put(out, m, ml + 1);
        }
    }
    if (rc == 0) {
        rc = dbao_buf_putc(out, 0);
    }
    if (rc != 0) {
        out->len = old;
        return rc;
    }
    return 1;
}
