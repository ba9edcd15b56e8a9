/* pgwire.h: PostgreSQL frontend/backend protocol v3 decoding and encoding helpers (private to
 * src/mask).
 *
 * Pure functions over byte buffers, no I/O and no state beyond small iterators: the proxy engine
 * (pgproxy.c), the policy glue and the fuzz target use them. Every reader checks bounds and reports
 * malformed input as DBAO_EFORMAT; nothing here reads past the given length.
 *
 * Wire shapes (all integers big-endian):
 *   startup packet   int32 length (incl. itself) | int32 code | body
 *                    code 196608 (3.0): body = (key NUL value NUL)* NUL
 *                    80877103 SSLRequest, 80877104 GSSENCRequest (length 8),
 *                    80877102 CancelRequest: int32 pid, int32 key (length 16)
 *   message          byte type | int32 length (incl. itself, >= 4) | payload (length - 4)
 *   Query 'Q'        cstring sql
 *   Parse 'P'        cstring name | cstring sql | int16 n | int32 oid[n]
 *   DataRow 'D'      int16 n | (int32 len (-1 = NULL) | bytes[len])[n]
 *   Error 'E'/Notice 'N'  (byte code | cstring value)* | NUL
 *   AuthenticationSASL 'R'  int32 10 | (cstring mechanism)* | NUL
 */
#ifndef DENGBAO_MASK_PGWIRE_H
#define DENGBAO_MASK_PGWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#define PGW_PROTO_30       196608u
#define PGW_SSL_REQUEST    80877103u
#define PGW_GSSENC_REQUEST 80877104u
#define PGW_CANCEL_REQUEST 80877102u
#define PGW_STARTUP_MAX    10000u /* largest startup packet accepted */
#define PGW_MAX_PARAMS     64u    /* startup parameters (pairs) accepted */

static inline uint32_t
pgw_get32(const uint8_t *p)
{
    return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) | ((uint32_t) p[2] << 8) | p[3];
}

static inline uint16_t
pgw_get16(const uint8_t *p)
{
    return (uint16_t) (((unsigned) p[0] << 8) | p[1]);
}

static inline void
pgw_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

/* ---- startup packets --------------------------------------------------------------------- */

typedef enum pgw_startup_kind {
    PGW_STARTUP = 0, /* StartupMessage (any protocol version; see `version`) */
    PGW_SSL,
    PGW_GSSENC,
    PGW_CANCEL,
} pgw_startup_kind;

typedef struct pgw_startup {
    pgw_startup_kind kind;
    uint32_t version;                           /* the code word (196608 for 3.0) */
    uint32_t cancel_pid, cancel_key;            /* PGW_CANCEL */
    size_t nparams;                             /* pairs */
    const char *params[2 * PGW_MAX_PARAMS + 1]; /* key, value, ..., NULL; point into `buf` */
    char *buf;                                  /* owned copy of the body */
} pgw_startup;

/* pgw_startup_frame: 1 when a whole startup packet is in p[0..n) (*total = its length), 0 when more
 * bytes are needed, DBAO_EFORMAT when the length is below 8 or above PGW_STARTUP_MAX. */
int pgw_startup_frame(const uint8_t *p, size_t n, size_t *total);
/* pgw_startup_parse decodes one whole packet (p, len = its length field). For a StartupMessage the
 * body must be NUL-terminated key/value pairs with non-empty keys ending in an empty key. On
 * success the caller frees with pgw_startup_free. */
int pgw_startup_parse(pgw_startup *out, const uint8_t *p, size_t len, dbao_err *err);
void pgw_startup_free(pgw_startup *s);
/* pgw_startup_get: a parameter's value or NULL. */
const char *pgw_startup_get(const pgw_startup *s, const char *key);

/* ---- message framing --------------------------------------------------------------------- */

/* pgw_frame: 1 when a whole message starts at p (*type, *total = 1 + length), 0 when more bytes are
 * needed, DBAO_EFORMAT when length < 4, DBAO_ERANGE when 1 + length > max. */
int pgw_frame(const uint8_t *p, size_t n, size_t max, uint8_t *type, size_t *total);

/* pgw_msg_begin appends type and a placeholder length and returns the offset of the message in b
 * (or a negative code); pgw_msg_end patches the length. */
long pgw_msg_begin(dbao_buf *b, uint8_t type);
void pgw_msg_end(dbao_buf *b, long off);
/* pgw_msg_put appends one whole framed message. */
int pgw_msg_put(dbao_buf *b, uint8_t type, const void *payload, size_t len);

/* ---- readers over a payload -------------------------------------------------------------- */

typedef struct pgw_reader {
    const uint8_t *p;
    size_t len, pos;
    bool bad; /* set by any read past the end or a missing NUL */
} pgw_reader;

void pgw_reader_init(pgw_reader *r, const void *p, size_t len);
int16_t pgw_read16(pgw_reader *r);
int32_t pgw_read32(pgw_reader *r);
/* pgw_read_cstr returns the string (pointing into the payload) and its length in *len. */
const char *pgw_read_cstr(pgw_reader *r, size_t *len);
const uint8_t *pgw_read_bytes(pgw_reader *r, size_t n);

/* ---- Query and Parse --------------------------------------------------------------------- */

/* pgw_query_decode: the SQL of a Query payload (exactly one cstring). */
int pgw_query_decode(const uint8_t *payload, size_t len, const char **sql, size_t *sql_len);

typedef struct pgw_parse {
    const char *name;
    size_t name_len;
    const char *sql;
    size_t sql_len;
    uint16_t nparams;
    const uint8_t *oids; /* nparams big-endian int32 */
} pgw_parse;

int pgw_parse_decode(pgw_parse *out, const uint8_t *payload, size_t len);
/* pgw_parse_encode appends a whole 'P' message with p's name and parameter types and `sql` (which
 * must not contain NUL). */
int pgw_parse_encode(dbao_buf *b, const pgw_parse *p, const char *sql, size_t sql_len);
/* pgw_query_encode appends a whole 'Q' message. */
int pgw_query_encode(dbao_buf *b, const char *sql, size_t sql_len);

/* ---- DataRow ----------------------------------------------------------------------------- */

typedef struct pgw_datarow {
    pgw_reader r;
    uint16_t ncols, idx;
} pgw_datarow;

/* pgw_datarow_begin returns the column count or DBAO_EFORMAT. */
int pgw_datarow_begin(pgw_datarow *it, const uint8_t *payload, size_t len);
/* pgw_datarow_next: 1 with the next field (*val NULL and *vlen -1 for SQL NULL), 0 at the end
 * (trailing bytes are DBAO_EFORMAT), DBAO_EFORMAT when malformed. */
int pgw_datarow_next(pgw_datarow *it, const uint8_t **val, int32_t *vlen);
/* Builders append a DataRow payload (no type, no length): begin, then one field per column (vlen -1
 * = NULL). */
int pgw_datarow_build_begin(dbao_buf *b, uint16_t ncols);
int pgw_datarow_build_field(dbao_buf *b, const void *val, int32_t vlen);

/* ---- ErrorResponse / NoticeResponse ------------------------------------------------------ */

typedef struct pgw_fields {
    pgw_reader r;
    bool done;
} pgw_fields;

void pgw_fields_begin(pgw_fields *it, const uint8_t *payload, size_t len);
/* pgw_fields_next: 1 with a field, 0 at the terminating NUL (which must end the payload),
 * DBAO_EFORMAT when malformed. */
int pgw_fields_next(pgw_fields *it, char *code, const char **val, size_t *vlen);
/* pgw_field_put appends one field (code, NUL-free value); end the payload with a NUL byte. */
int pgw_field_put(dbao_buf *b, char code, const char *val);
/* pgw_error_build appends a whole ErrorResponse ('E') or NoticeResponse ('N') message with severity
 * (S and V), sqlstate (C) and message (M). */
int pgw_error_build(dbao_buf *b, uint8_t type, const char *severity, const char *sqlstate,
                    const char *msg);

/* ---- AuthenticationSASL ------------------------------------------------------------------ */

/* pgw_sasl_filter: for an 'R' payload with code 10 (AuthenticationSASL), writes to `out` the
 * payload without any mechanism ending in "-PLUS" and returns 1; returns 0 when nothing needs to
 * change (another auth code, or no -PLUS mechanism), DBAO_EFORMAT when malformed. */
int pgw_sasl_filter(const uint8_t *payload, size_t len, dbao_buf *out);

#endif /* DENGBAO_MASK_PGWIRE_H */
