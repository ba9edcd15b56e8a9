/* fuzz_sm2_ct.c: libFuzzer target for the SM2 ciphertext parsers: gm_sm2_ct_convert between
 * every pair of forms, and gm_sm2_decrypt with a fixed key in every form.
 *
 * Invariants:
 *   - if the input converts from form F to form T, converting the result back from T to F
 *     gives the original bytes (each form has one encoding per ciphertext);
 *   - the raw forms of a ciphertext are exactly 97 bytes longer than C2, start with 04, and
 *     are each other's C2/C3 swap;
 *   - gm_sm2_decrypt never crashes, returns 0, DBAO_EFORMAT, DBAO_EVERIFY or DBAO_ENOMEM, and
 *     leaves *out NULL on failure; input that ct_convert rejects as malformed in form F is
 *     also malformed for gm_sm2_decrypt in form F.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include tests/fuzz/fuzz_sm2_ct.c
 *        <library sources or an instrumented libdengbao.a> -lcrypto
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gm.h"

static const gm_sm2_ct_form FORMS[] = {GM_SM2_CT_DER, GM_SM2_CT_C1C3C2, GM_SM2_CT_C1C2C3};

/* GM/T 0003.5 Annex A/C private key; the seed corpus holds its Annex C ciphertext. */
static const uint8_t D[GM_SM2_PRIV_LEN] = {
    0x39, 0x45, 0x20, 0x8f, 0x7b, 0x21, 0x44, 0xb1, 0x3f, 0x36, 0xe3, 0x8a, 0xc6, 0xd3, 0x9f, 0x95,
    0x88, 0x93, 0x93, 0x69, 0x28, 0x60, 0xb5, 0x1a, 0x42, 0xfb, 0x81, 0xef, 0x4d, 0xf7, 0xc5, 0xb8,
};

static gm_sm2_key *key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (key == NULL) {
        /* Kept for the life of the process; allocation injection is never on here. */
        if (gm_sm2_key_from_priv(&key, D, sizeof(D), NULL) != 0) {
            abort();
        }
    }

    for (size_t f = 0; f < 3; f++) {
        int parsed = -1;
        uint8_t *pt = NULL;
        size_t pt_len = 0;
        int rc;

        for (size_t t = 0; t < 3; t++) {
            uint8_t *mid = NULL, *back = NULL;
            size_t mid_len = 0, back_len = 0;

            rc = gm_sm2_ct_convert(&mid, &mid_len, FORMS[t], data, size, FORMS[f]);
            if (rc != 0) {
                assert(rc == DBAO_EFORMAT || rc == DBAO_ENOMEM);
                assert(mid == NULL);
                if (rc == DBAO_EFORMAT) {
                    assert(parsed != 1);
                    parsed = 0;
                }
                continue;
            }
            assert(parsed != 0);
            parsed = 1;
            if (FORMS[t] != GM_SM2_CT_DER) {
                assert(mid_len > 97 && mid[0] == 0x04);
            }
            rc = gm_sm2_ct_convert(&back, &back_len, FORMS[f], mid, mid_len, FORMS[t]);
            assert(rc == 0 || rc == DBAO_ENOMEM);
            if (rc == 0) {
                assert(back_len == size);
                assert(memcmp(back, data, size) == 0);
            }
            if (FORMS[f] == GM_SM2_CT_C1C3C2 && FORMS[t] == GM_SM2_CT_C1C2C3) {
                size_t c2_len = size - 97;

                assert(mid_len == size);
                assert(memcmp(mid, data, 65) == 0);
                assert(memcmp(mid + 65, data + 97, c2_len) == 0);
                assert(memcmp(mid + 65 + c2_len, data + 65, 32) == 0);
            }
            dbao_free(back);
            dbao_free(mid);
        }

        rc = gm_sm2_decrypt(key, &pt, &pt_len, FORMS[f], data, size);
        assert(rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_EVERIFY || rc == DBAO_ENOMEM);
        if (parsed == 0) {
            assert(rc == DBAO_EFORMAT);
        }
        if (rc == 0) {
            assert(pt != NULL && pt_len > 0);
            dbao_free_secret(pt, pt_len);
        } else {
            assert(pt == NULL);
        }
    }
    return 0;
}
