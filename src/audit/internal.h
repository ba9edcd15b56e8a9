/* internal.h: helpers shared by the files of src/audit (private; no other component includes
 * it). Unit tests include it through -I src/audit to test the helpers directly.
 *
 *   audit__buf     a growable byte buffer on dbao_realloc with a hard size cap; the first
 *                  failure (ENOMEM or the cap) sticks, so writers append without checking and
 *                  look at buf.rc once at the end.
 *   audit__utf8_*  a strict UTF-8 decoder (no overlong forms, no surrogates, nothing above
 *                  U+10FFFF) and the character classes the formats forbid.
 *   audit__b64_*   RFC 4648 section 4 base64; the decoder is strict (padding required, no
 *                  white space, zero trailing bits), because a note has one spelling.
 *   audit__jcs_*   RFC 8785 canonical JSON of a jansson value, restricted to the details rules.
 */
#ifndef DENGBAO_AUDIT_INTERNAL_H
#define DENGBAO_AUDIT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/audit.h"

typedef struct audit__buf {
    uint8_t *p;
    size_t len;
    size_t cap;
    size_t max; /* appends beyond this many bytes fail with DBAO_ERANGE */
    int rc;     /* 0, or the first failure */
} audit__buf;

void audit__buf_init(audit__buf *b, size_t max);
void audit__buf_cleanup(audit__buf *b);
void audit__buf_put(audit__buf *b, const void *data, size_t len);
void audit__buf_putc(audit__buf *b, uint8_t c);
void audit__buf_puts(audit__buf *b, const char *s);
/* audit__buf_take NUL-terminates the buffer and hands it over (*out, free with dbao_free);
 * returns b->rc (and frees the buffer) if any append failed. */
int audit__buf_take(audit__buf *b, char **out, size_t *out_len);

/* audit__utf8_next decodes the code point at s[*pos] (len bytes in total), stores it in *cp and
 * advances *pos. Returns false on an invalid or truncated sequence. */
bool audit__utf8_next(const uint8_t *s, size_t len, size_t *pos, uint32_t *cp);

/* Character classes. */
bool audit__cp_is_control(uint32_t cp); /* C0, DEL, C1 */
bool audit__cp_is_bidi(uint32_t cp);    /* U+202A..U+202E, U+2066..U+2069 */
bool audit__cp_is_space(uint32_t cp);   /* Unicode White_Space */

/* Base64. encoded length of n bytes: 4 * ((n + 2) / 3). */
#define AUDIT__B64_LEN(n) (4 * (((n) + 2) / 3))
/* audit__b64_encode writes AUDIT__B64_LEN(len) characters and a NUL to out. */
void audit__b64_encode(char *out, const uint8_t *in, size_t len);
/* audit__b64_decode decodes `in_len` characters into `out` (room for `out_cap` bytes).
 * Returns false unless the input is canonical base64 of at most out_cap bytes. */
bool audit__b64_decode(uint8_t *out, size_t *out_len, size_t out_cap, const char *in,
                       size_t in_len);

/* audit__jcs_write appends the canonical text of `value` (a json_t *) to `b`, enforcing the
 * details rules. On a rule violation it returns DBAO_EFORMAT with err naming the path below
 * `path` (e.g. "details.amount"); DBAO_ERANGE/DBAO_ENOMEM come from the buffer. */
int audit__jcs_write(audit__buf *b, const void *value, const char *path, int depth, dbao_err *err);

/* audit__details_canonicalize parses `json` as a details object and stores its canonical text
 * in a new NUL-terminated buffer. `field` names it in messages. */
int audit__details_canonicalize(char **out, size_t *out_len, const char *json, size_t json_len,
                                const char *field, dbao_err *err);

#endif /* DENGBAO_AUDIT_INTERNAL_H */
