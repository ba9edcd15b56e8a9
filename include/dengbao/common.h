/* common.h: errors, secret hygiene, hex and file helpers shared by every dengbao component.
 *
 * Error convention (libuv style): a fallible function returns 0 on success or a negative
 * DBAO_E* code. System errors are -errno; dengbao's own codes live below -1000 so the two never
 * collide. Human-readable detail goes into an optional caller-owned dbao_err (may be NULL);
 * dbao_err_set() returns the code it stores so call sites read `return dbao_err_set(...)`.
 * Messages are lowercase, say what failed first, and never contain key material, plaintext or
 * unmasked personal data.
 *
 * Threading: every function here is thread-safe; a dbao_err belongs to one thread at a time.
 */
#ifndef DENGBAO_COMMON_H
#define DENGBAO_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DBAO_EINVAL  (-EINVAL) /* invalid argument (a programmer or usage error) */
#define DBAO_ENOMEM  (-ENOMEM) /* out of memory */
#define DBAO_EIO     (-EIO)    /* I/O failed */
#define DBAO_ERANGE  (-ERANGE) /* a length or count is out of the accepted range */
#define DBAO_EFORMAT (-1001)   /* malformed input: bad hex, DER, PEM, encoding */
#define DBAO_EVERIFY (-1002)   /* well-formed input failed verification (signature, tag, MAC) */
#define DBAO_ECRYPTO (-1003)   /* the underlying crypto library failed unexpectedly */
#define DBAO_EKEY    (-1004)   /* invalid key: length, scalar out of range, point off curve */
#define DBAO_ENOTSUP (-1005)   /* not supported (algorithm, format, CPU path) */

#define DBAO_ERR_MSG_MAX 256

typedef struct dbao_err {
    int code;                   /* the last code set, 0 if none */
    char msg[DBAO_ERR_MSG_MAX]; /* NUL-terminated, lowercase, no trailing full stop */
} dbao_err;

/* dbao_err_set stores `code` and a printf-style message in `err` (which may be NULL) and
 * returns `code`. An existing message is replaced. */
int dbao_err_set(dbao_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* dbao_err_clear resets `err` (may be NULL) to code 0 and an empty message. */
void dbao_err_clear(dbao_err *err);

/* dbao_strerror returns a static description of a DBAO_E* or -errno code. */
const char *dbao_strerror(int code);

/* dbao_cleanse overwrites `len` bytes at `p` with zeros in a way the compiler may not remove.
 * Use it on every buffer that held a key, a private scalar, a nonce or plaintext. */
void dbao_cleanse(void *p, size_t len);

/* dbao_ct_memeq compares two buffers in time that depends only on `len`; true if equal. */
bool dbao_ct_memeq(const void *a, const void *b, size_t len);

/* Allocation. Libraries allocate through these so that tests can fail the N-th allocation
 * (dbao_alloc_fail_after). dbao_free(NULL) is a no-op. dbao_free_secret wipes `len` bytes
 * first. */
void *dbao_malloc(size_t len);
void *dbao_calloc(size_t num, size_t len);
void *dbao_realloc(void *p, size_t len);
void dbao_free(void *p);
void dbao_free_secret(void *p, size_t len);

/* dbao_alloc_fail_after makes the n-th allocation from now fail (n = 0: the next one), and
 * every one after it while `sticky` is true; n < 0 turns injection off. Tests only. */
void dbao_alloc_fail_after(long n, bool sticky);

/* dbao_hex_encode writes 2*len lowercase hex digits and a NUL to `out` (room for 2*len+1). */
void dbao_hex_encode(char *out, const uint8_t *in, size_t len);

/* dbao_hex_decode decodes `hex_len` hex digits (either case; no spaces, no 0x prefix, even
 * length) into a new buffer of hex_len/2 bytes stored in *out (free with dbao_free, or
 * dbao_free_secret for secrets). An empty string gives *out non-NULL and *out_len 0.
 * Returns 0, DBAO_EFORMAT (odd length or a non-hex digit; the message gives the offset) or
 * DBAO_ENOMEM. */
int dbao_hex_decode(uint8_t **out, size_t *out_len, const char *hex, size_t hex_len, dbao_err *err);

/* dbao_hex_decode_fixed decodes exactly `len` bytes into caller storage; DBAO_EFORMAT if the
 * input is not exactly 2*len hex digits (`out` is then zeroed). */
int dbao_hex_decode_fixed(uint8_t *out, size_t len, const char *hex, size_t hex_len, dbao_err *err);

/* dbao_file_read reads the whole file at `path` (at most `max` bytes, else DBAO_ERANGE) into a
 * new NUL-terminated buffer in *out (the NUL is not counted in *out_len). "-" reads stdin.
 * Returns 0 or a negative code (-errno from the system). */
int dbao_file_read(uint8_t **out, size_t *out_len, const char *path, size_t max, dbao_err *err);

/* dbao_file_write writes `len` bytes to `path` atomically (a unique temporary file in the same
 * folder, fsync, rename, fsync of the folder) with permission bits `mode` (0600 for key files);
 * the file is never more open than 0600 at any moment. Concurrent writers of one path are
 * safe (the last rename wins). "-" writes stdout. */
int dbao_file_write(const char *path, const void *data, size_t len, unsigned mode, dbao_err *err);

/* dbao_buf: a growable byte buffer. Zero-initialise ({0}) or dbao_buf_init; the data is
 * always followed by a NUL that is not counted in len (so text can be used as a C string).
 * dbao_buf_put/putc/printf return 0 or DBAO_ENOMEM and leave the buffer unchanged on failure.
 * dbao_buf_reserve makes room for `more` bytes past len. dbao_buf_reset empties it and keeps
 * the storage; dbao_buf_free releases it (dbao_buf_free_secret wipes it first). The caller owns
 * `data` after dbao_buf_take (then the buffer is empty again; free the result with dbao_free). */
typedef struct dbao_buf {
    char *data;
    size_t len;
    size_t cap;
} dbao_buf;

void dbao_buf_init(dbao_buf *b);
int dbao_buf_reserve(dbao_buf *b, size_t more);
int dbao_buf_put(dbao_buf *b, const void *data, size_t len);
int dbao_buf_putc(dbao_buf *b, char c);
int dbao_buf_printf(dbao_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dbao_buf_reset(dbao_buf *b);
char *dbao_buf_take(dbao_buf *b, size_t *len);
void dbao_buf_free(dbao_buf *b);
void dbao_buf_free_secret(dbao_buf *b);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_COMMON_H */
