/* fuzz_hex.c: libFuzzer target for dbao_hex_decode and dbao_hex_decode_fixed.
 *
 * Invariants (no output checks beyond them):
 *   - decode succeeds exactly when the input has even length and only hex digits;
 *   - a decoded buffer re-encodes with dbao_hex_encode to the lowercased input;
 *   - dbao_hex_decode_fixed agrees with dbao_hex_decode on the same input.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include tests/fuzz/fuzz_hex.c <library
 *        sources or an instrumented libdengbao.a> -lcrypto
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/common.h"

static int
is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static uint8_t
lower(uint8_t c)
{
    return (c >= 'A' && c <= 'F') ? (uint8_t) (c - 'A' + 'a') : c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    dbao_err err;
    int valid = size % 2 == 0;
    int rc;

    for (size_t i = 0; i < size && valid; i++) {
        valid = is_hex(data[i]);
    }

    memset(&err, 0, sizeof(err));
    rc = dbao_hex_decode(&out, &out_len, (const char *) data, size, &err);
    if (!valid) {
        assert(rc == DBAO_EFORMAT);
        assert(err.code == DBAO_EFORMAT);
        assert(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
        return 0;
    }
    if (rc == DBAO_ENOMEM) {
        return 0;
    }
    assert(rc == 0);
    assert(out != NULL);
    assert(out_len == size / 2);

    {
        char *hex = malloc(2 * out_len + 1);
        uint8_t *fixed = malloc(out_len + 1);

        assert(hex != NULL && fixed != NULL);
        dbao_hex_encode(hex, out, out_len);
        assert(hex[2 * out_len] == '\0');
        for (size_t i = 0; i < size; i++) {
            assert((uint8_t) hex[i] == lower(data[i]));
        }
        assert(dbao_hex_decode_fixed(fixed, out_len, (const char *) data, size, NULL) == 0);
        assert(memcmp(fixed, out, out_len) == 0);
        if (out_len > 0) {
            assert(dbao_hex_decode_fixed(fixed, out_len - 1, (const char *) data, size, NULL) ==
                   DBAO_EFORMAT);
        }
        free(hex);
        free(fixed);
    }
    dbao_free(out);
    return 0;
}
