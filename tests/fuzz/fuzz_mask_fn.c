/* fuzz_mask_fn.c: libFuzzer target for the masking functions (mask_fn_parse, mask_fn_format,
 * mask_fn_apply, mask_decrypt).
 *
 * Input: the first byte picks the type for `default`; the bytes up to the first newline are a
 * function spec; the rest is the value. Invariants: nothing crashes or leaks; a spec that
 * parses formats to a canonical text that parses again to the same canonical text; applying
 * it to arbitrary bytes either fails with DBAO_EFORMAT/DBAO_ERANGE (number and date functions)
 * or succeeds, and every function except clear writes valid UTF-8 (a NUL byte of the value may be
 * kept); encrypt output decrypts to the value; mask_decrypt on the raw value never crashes.
 *
 * Build: -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (cmake/fuzz.cmake); seeds in
 * tests/fuzz/corpus/fuzz_mask_fn/.
 */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/mask.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static mask_keyring *keys;

static bool
utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t v, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
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
            return false;
        }
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            v = (v << 6) | (s[i + k] & 0x3F);
        }
        if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (keys == NULL) {
        static const uint8_t k16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        static const uint8_t k32[32] = {7};
        assert(mask_keyring_new(&keys) == 0);
        assert(mask_keyring_add(keys, "k", k16, 16, NULL) == 0);
        assert(mask_keyring_add(keys, "h", k32, 32, NULL) == 0);
    }
    if (size < 1)
        return 0;
    mask_type type = (mask_type) (data[0] % MASK_T_COUNT);
    const char *s = (const char *) data + 1;
    size_t n = size - 1;
    const char *nl = memchr(s, '\n', n);
    size_t sl = nl ? (size_t) (nl - s) : n;
    const char *val = nl ? nl + 1 : "";
    size_t vl = nl ? n - sl - 1 : 0;

    dbao_buf out = {0};
    (void) mask_decrypt(keys, val, vl, &out, NULL);
    dbao_buf_free(&out);

    mask_fn f;
    dbao_err err;
    if (mask_fn_parse(&f, s, sl, &err) != 0)
        return 0;
    dbao_buf c1 = {0}, c2 = {0};
    assert(mask_fn_format(&f, &c1) == 0);
    mask_fn g;
    assert(mask_fn_parse(&g, c1.data, c1.len, &err) == 0);
    assert(mask_fn_format(&g, &c2) == 0);
    assert(c1.len == c2.len && memcmp(c1.data, c2.data, c1.len) == 0);
    mask_fn_cleanup(&g);
    dbao_buf_free(&c1);
    dbao_buf_free(&c2);

    int rc = mask_fn_apply(&f, type, keys, val, vl, &out, &err);
    if (rc == 0) {
        if (f.kind != MASK_FN_CLEAR)
            assert(utf8_ok((const unsigned char *) out.data, out.len));
        if (f.kind == MASK_FN_ENCRYPT) {
            dbao_buf back = {0};
            assert(mask_decrypt(keys, out.data, out.len, &back, &err) == 0);
            assert(back.len == vl && memcmp(back.data, val, vl) == 0);
            dbao_buf_free(&back);
        }
    } else {
        assert(rc == DBAO_EFORMAT || rc == DBAO_ERANGE || rc == DBAO_EKEY);
        assert(out.len == 0);
    }
    dbao_buf_free(&out);
    mask_fn_cleanup(&f);
    return 0;
}
