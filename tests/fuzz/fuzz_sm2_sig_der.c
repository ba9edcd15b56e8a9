/* fuzz_sm2_sig_der.c: libFuzzer target for gm_sm2_sig_from_der and gm_sm2_sig_parse.
 *
 * Invariants:
 *   - anything from_der accepts re-encodes with gm_sm2_sig_to_der to the identical bytes
 *     (strict DER has exactly one encoding per value), has r and s non-zero, and fits
 *     GM_SM2_SIG_DER_MAX;
 *   - sig_parse of exactly 64 bytes returns them unchanged; of any other length it agrees
 *     with from_der (result code and value);
 *   - to_der of any raw r||s with non-zero halves decodes back to the same r||s.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include tests/fuzz/fuzz_sm2_sig_der.c
 *        <library sources or an instrumented libdengbao.a> -lcrypto
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/gm.h"

static int
is_zero(const uint8_t *p, size_t len)
{
    uint8_t acc = 0;

    for (size_t i = 0; i < len; i++) {
        acc |= p[i];
    }
    return acc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t sig[GM_SM2_SIG_RAW_LEN], sig2[GM_SM2_SIG_RAW_LEN];
    uint8_t der[GM_SM2_SIG_DER_MAX];
    size_t der_len = 0;
    int rc, rc2;

    rc = gm_sm2_sig_from_der(sig, data, size);
    assert(rc == 0 || rc == DBAO_EFORMAT);
    if (rc == 0) {
        assert(size <= GM_SM2_SIG_DER_MAX);
        assert(!is_zero(sig, 32) && !is_zero(sig + 32, 32));
        assert(gm_sm2_sig_to_der(der, &der_len, sig) == 0);
        assert(der_len == size);
        assert(memcmp(der, data, size) == 0);
    }

    rc2 = gm_sm2_sig_parse(sig2, data, size);
    if (size == GM_SM2_SIG_RAW_LEN) {
        /* 64 bytes are raw r||s, except that the library reads a 64-byte input that is also
         * valid DER as DER (der.c tries DER first); either reading must be the whole story. */
        assert(rc2 == 0);
        if (rc == 0) {
            assert(memcmp(sig2, sig, GM_SM2_SIG_RAW_LEN) == 0);
        } else {
            assert(memcmp(sig2, data, GM_SM2_SIG_RAW_LEN) == 0);
        }
    } else {
        assert(rc2 == rc);
        if (rc == 0) {
            assert(memcmp(sig2, sig, GM_SM2_SIG_RAW_LEN) == 0);
        }
    }

    /* Use the first 64 bytes as a raw signature and check the encoder. */
    if (size >= GM_SM2_SIG_RAW_LEN && !is_zero(data, 32) && !is_zero(data + 32, 32)) {
        assert(gm_sm2_sig_to_der(der, &der_len, data) == 0);
        assert(der_len >= 8 && der_len <= GM_SM2_SIG_DER_MAX);
        assert(gm_sm2_sig_from_der(sig, der, der_len) == 0);
        assert(memcmp(sig, data, GM_SM2_SIG_RAW_LEN) == 0);
    }
    return 0;
}
