/* fuzz_sm2_key.c: libFuzzer target for the SM2 key readers: gm_sm2_key_from_pem,
 * gm_sm2_key_from_der and gm_sm2_key_from_pub, all on the same input.
 *
 * Invariants:
 *   - each reader returns 0 with a key or a negative code with *out left NULL;
 *   - any key accepted round-trips through gm_sm2_key_to_pem: the public PEM reads back to the
 *     same public key, and for a key pair the private PEM reads back to the same d and point;
 *   - from_pub accepts only 65-byte 04||x||y (returned unchanged by get_pub) or 33-byte
 *     02/03||x (same x);
 *   - a public-only key refuses get_priv and private PEM output with DBAO_EKEY.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include tests/fuzz/fuzz_sm2_key.c
 *        <library sources or an instrumented libdengbao.a> -lcrypto
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/gm.h"

static void
check_round_trip(const gm_sm2_key *key)
{
    uint8_t pub[GM_SM2_PUB_LEN], pub2[GM_SM2_PUB_LEN];
    uint8_t d[GM_SM2_PRIV_LEN], d2[GM_SM2_PRIV_LEN];
    gm_sm2_key *back = NULL;
    char *pem = NULL;
    size_t pem_len = 0;
    int rc;

    gm_sm2_key_get_pub(key, pub);
    assert(pub[0] == 0x04);

    rc = gm_sm2_key_to_pem(key, &pem, &pem_len, false, NULL);
    if (rc == DBAO_ENOMEM) {
        return;
    }
    assert(rc == 0 && pem != NULL && strlen(pem) == pem_len);
    rc = gm_sm2_key_from_pem(&back, pem, pem_len, NULL);
    assert(rc == 0 && back != NULL);
    assert(!gm_sm2_key_has_priv(back));
    gm_sm2_key_get_pub(back, pub2);
    assert(memcmp(pub, pub2, sizeof(pub)) == 0);
    gm_sm2_key_free(back);
    back = NULL;
    dbao_free(pem);
    pem = NULL;

    if (!gm_sm2_key_has_priv(key)) {
        assert(gm_sm2_key_get_priv(key, d) == DBAO_EKEY);
        assert(gm_sm2_key_to_pem(key, &pem, &pem_len, true, NULL) == DBAO_EKEY);
        return;
    }
    assert(gm_sm2_key_get_priv(key, d) == 0);
    rc = gm_sm2_key_to_pem(key, &pem, &pem_len, true, NULL);
    assert(rc == 0 && pem != NULL);
    rc = gm_sm2_key_from_pem(&back, pem, pem_len, NULL);
    assert(rc == 0 && back != NULL);
    assert(gm_sm2_key_has_priv(back));
    assert(gm_sm2_key_get_priv(back, d2) == 0);
    assert(memcmp(d, d2, sizeof(d)) == 0);
    gm_sm2_key_get_pub(back, pub2);
    assert(memcmp(pub, pub2, sizeof(pub)) == 0);
    gm_sm2_key_free(back);
    dbao_free_secret(pem, pem_len);
    dbao_cleanse(d, sizeof(d));
    dbao_cleanse(d2, sizeof(d2));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gm_sm2_key *key = NULL;
    int rc;

    rc = gm_sm2_key_from_pem(&key, (const char *) data, size, NULL);
    assert((rc == 0) == (key != NULL));
    assert(rc <= 0);
    if (key != NULL) {
        check_round_trip(key);
        gm_sm2_key_free(key);
        key = NULL;
    }

    rc = gm_sm2_key_from_der(&key, data, size, NULL);
    assert((rc == 0) == (key != NULL));
    assert(rc <= 0);
    if (key != NULL) {
        check_round_trip(key);
        gm_sm2_key_free(key);
        key = NULL;
    }

    rc = gm_sm2_key_from_pub(&key, data, size, NULL);
    assert((rc == 0) == (key != NULL));
    if (key != NULL) {
        uint8_t pub[GM_SM2_PUB_LEN];

        assert(size == 65 || size == 33);
        gm_sm2_key_get_pub(key, pub);
        if (size == 65) {
            assert(memcmp(pub, data, 65) == 0);
        } else {
            assert(data[0] == 0x02 || data[0] == 0x03);
            assert(memcmp(pub + 1, data + 1, 32) == 0);
            assert((pub[64] & 1) == (data[0] & 1));
        }
        assert(!gm_sm2_key_has_priv(key));
        check_round_trip(key);
        gm_sm2_key_free(key);
    } else {
        assert(rc == DBAO_EFORMAT || rc == DBAO_EKEY || rc == DBAO_ENOMEM);
    }
    return 0;
}
