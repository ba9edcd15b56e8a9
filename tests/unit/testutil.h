/* testutil.h: small helpers shared by the unit tests (header-only, static inline).
 *
 * Test vectors are written as hex strings; tu_hex() and tu_hex_fixed() turn them into bytes and
 * abort the test binary on malformed hex, because a typo in a vector is a bug in the test, not
 * in the library. tu_mem_eq() compares buffers and prints both sides on mismatch so a failing
 * assert_true(tu_mem_eq(...)) says what differed. tu_fill() is a deterministic byte generator
 * (splitmix64) so that failures reproduce; the tests never use rand().
 *
 * These helpers do not allocate through dbao_malloc, so allocation-failure injection in the
 * library never trips them.
 */
#ifndef DENGBAO_TESTUTIL_H
#define DENGBAO_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline int
tu_hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* tu_hex_into decodes `hex` (spaces ignored) into `out`, which has room for `cap` bytes, and
 * returns the byte count. It aborts on an odd digit count, a bad digit or overflow. */
static inline size_t
tu_hex_into(uint8_t *out, size_t cap, const char *hex)
{
    size_t n = 0;
    int hi = -1;

    for (const char *p = hex; *p != '\0'; p++) {
        int v;

        if (*p == ' ' || *p == '\n') {
            continue;
        }
        v = tu_hex_digit(*p);
        if (v < 0) {
            fprintf(stderr, "testutil: bad hex digit '%c' in vector\n", *p);
            abort();
        }
        if (hi < 0) {
            hi = v;
            continue;
        }
        if (n >= cap) {
            fprintf(stderr, "testutil: hex vector longer than %zu bytes\n", cap);
            abort();
        }
        out[n++] = (uint8_t) (hi << 4 | v);
        hi = -1;
    }
    if (hi >= 0) {
        fprintf(stderr, "testutil: odd number of hex digits in vector\n");
        abort();
    }
    return n;
}

/* tu_hex returns a new malloc'ed buffer (free with free()) holding the decoded bytes and stores
 * the length in *out_len (may be NULL). Never returns NULL. */
static inline uint8_t *
tu_hex(const char *hex, size_t *out_len)
{
    size_t cap = strlen(hex) / 2 + 1;
    uint8_t *buf = calloc(cap, 1);
    size_t n;

    if (buf == NULL) {
        abort();
    }
    n = tu_hex_into(buf, cap, hex);
    if (out_len != NULL) {
        *out_len = n;
    }
    return buf;
}

/* tu_hex_fixed decodes exactly `len` bytes; aborts if the vector has another length. */
static inline void
tu_hex_fixed(uint8_t *out, size_t len, const char *hex)
{
    uint8_t tmp[4096];
    size_t n;

    if (len > sizeof(tmp)) {
        abort();
    }
    n = tu_hex_into(tmp, sizeof(tmp), hex);
    if (n != len) {
        fprintf(stderr, "testutil: vector has %zu bytes, expected %zu\n", n, len);
        abort();
    }
    memcpy(out, tmp, len);
}

static inline void
tu_print_hex(FILE *f, const char *label, const uint8_t *p, size_t len)
{
    fprintf(f, "%s (%zu bytes): ", label, len);
    for (size_t i = 0; i < len; i++) {
        fprintf(f, "%02x", p[i]);
    }
    fputc('\n', f);
}

/* tu_mem_eq returns true if the buffers are equal; otherwise it prints both and returns false.
 */
static inline bool
tu_mem_eq(const void *got, size_t got_len, const void *want, size_t want_len)
{
    if (got_len == want_len && (got_len == 0 || memcmp(got, want, got_len) == 0)) {
        return true;
    }
    tu_print_hex(stderr, "got ", got, got_len);
    tu_print_hex(stderr, "want", want, want_len);
    return false;
}

/* tu_eq_hex compares `got` with the bytes of a hex vector. */
static inline bool
tu_eq_hex(const uint8_t *got, size_t got_len, const char *want_hex)
{
    size_t want_len;
    uint8_t *want = tu_hex(want_hex, &want_len);
    bool ok = tu_mem_eq(got, got_len, want, want_len);

    free(want);
    return ok;
}

/* tu_is_zero returns true if all `len` bytes are zero. */
static inline bool
tu_is_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t acc = 0;

    for (size_t i = 0; i < len; i++) {
        acc |= b[i];
    }
    return acc == 0;
}

/* tu_rng is a splitmix64 generator: deterministic test data from a seed. */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint64_t
tu_rng_next(tu_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* tu_fill fills `len` bytes of `buf` from the generator. */
static inline void
tu_fill(tu_rng *r, void *buf, size_t len)
{
    uint8_t *p = buf;

    for (size_t i = 0; i < len; i++) {
        if (i % 8 == 0) {
            uint64_t v = tu_rng_next(r);

            for (size_t j = 0; j < 8 && i + j < len; j++) {
                p[i + j] = (uint8_t) (v >> (8 * j));
            }
        }
    }
}

/* tu_xmalloc is malloc that aborts on failure (test scaffolding only). */
static inline void *
tu_xmalloc(size_t len)
{
    void *p = malloc(len == 0 ? 1 : len);

    if (p == NULL) {
        abort();
    }
    return p;
}

#endif /* DENGBAO_TESTUTIL_H */
