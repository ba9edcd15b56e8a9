/* test_sm3.c: known-answer and differential tests for SM3 and HMAC-SM3 (gm.h).
 *
 * Vectors: GB/T 32905-2016 Appendix A ("abc" and "abcd" x 16) and GM/T 0042-2015 Appendix D.3
 * (HMAC-SM3; the same four cases are in OpenSSL's evpmac_sm3.txt and were checked here with
 * `openssl mac -digest SM3 HMAC`). Everything else is compared with OpenSSL 3: EVP_sm3() for
 * the hash and EVP_MAC "HMAC" with digest "SM3" for the MAC, over every length that crosses a
 * padding boundary, every streaming split of two test messages and keys longer than a block.
 *
 * Build: cc -std=gnu11 -Wall -Wextra -Werror -I include -I tests/unit test_sm3.c
 *        build/libdengbao.a -lcrypto -lcmocka -lpthread
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "dengbao/gm.h"
#include "testutil.h"

/* ---- OpenSSL references ------------------------------------------------------------------ */

static void
ref_sm3(uint8_t out[32], const void *data, size_t len)
{
    unsigned int n = 0;

    assert_int_equal(EVP_Digest(data, len, out, &n, EVP_sm3(), NULL), 1);
    assert_int_equal(n, 32);
}

static void
ref_hmac_sm3(uint8_t out[32], const void *key, size_t key_len, const void *data, size_t len)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx;
    OSSL_PARAM params[2];
    size_t out_len = 0;
    static const uint8_t empty[1] = {0};

    assert_non_null(mac);
    ctx = EVP_MAC_CTX_new(mac);
    assert_non_null(ctx);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SM3", 0);
    params[1] = OSSL_PARAM_construct_end();
    /* OpenSSL refuses a NULL key even with length 0; give it a real pointer. */
    assert_int_equal(EVP_MAC_init(ctx, key_len ? key : empty, key_len, params), 1);
    assert_int_equal(EVP_MAC_update(ctx, data, len), 1);
    assert_int_equal(EVP_MAC_final(ctx, out, &out_len, 32), 1);
    assert_int_equal(out_len, 32);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
}

/* ---- SM3 --------------------------------------------------------------------------------- */

static const char ABCD16[] = "abcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcdabcd";

static void
test_sm3_gbt32905_vectors(void **state)
{
    uint8_t out[GM_SM3_DIGEST_LEN];

    (void) state;
    /* GB/T 32905-2016 A.1 */
    gm_sm3(out, "abc", 3);
    assert_true(
        tu_eq_hex(out, 32, "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"));
    /* GB/T 32905-2016 A.2 */
    assert_int_equal(strlen(ABCD16), 64);
    gm_sm3(out, ABCD16, 64);
    assert_true(
        tu_eq_hex(out, 32, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"));
    /* The empty message (checked with openssl dgst -sm3). */
    gm_sm3(out, "", 0);
    assert_true(
        tu_eq_hex(out, 32, "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"));
}

static void
test_sm3_null_empty(void **state)
{
    gm_sm3_ctx ctx;
    uint8_t out[32], out2[32];

    (void) state;
    /* (NULL, 0) is an empty update, as with memcpy-style APIs everywhere. */
    gm_sm3(out, NULL, 0);
    assert_true(
        tu_eq_hex(out, 32, "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"));
    gm_sm3_init(&ctx);
    gm_sm3_update(&ctx, "ab", 2);
    gm_sm3_update(&ctx, NULL, 0);
    gm_sm3_update(&ctx, "c", 1);
    gm_sm3_final(&ctx, out2);
    assert_true(
        tu_eq_hex(out2, 32, "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"));
}

static void
test_sm3_streaming_every_split(void **state)
{
    uint8_t msg[200];
    uint8_t want[32], got[32];
    tu_rng rng = {32905};
    const size_t lens[] = {64, 130, sizeof(msg)};

    (void) state;
    tu_fill(&rng, msg, sizeof(msg));
    memcpy(msg, ABCD16, 64);
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        size_t len = lens[li];

        gm_sm3(want, msg, len);
        if (len == 64) {
            assert_true(tu_eq_hex(
                want, 32, "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"));
        }
        /* Two pieces, every split point. */
        for (size_t i = 0; i <= len; i++) {
            gm_sm3_ctx ctx;

            gm_sm3_init(&ctx);
            gm_sm3_update(&ctx, msg, i);
            gm_sm3_update(&ctx, msg + i, len - i);
            gm_sm3_final(&ctx, got);
            assert_true(tu_mem_eq(got, 32, want, 32));
        }
        /* Three pieces, every pair of split points (130 and 200 bytes: ~30,000 hashes). */
        for (size_t i = 0; i <= len; i++) {
            for (size_t j = i; j <= len; j++) {
                gm_sm3_ctx ctx;

                gm_sm3_init(&ctx);
                gm_sm3_update(&ctx, msg, i);
                gm_sm3_update(&ctx, msg + i, j - i);
                gm_sm3_update(&ctx, msg + j, len - j);
                gm_sm3_final(&ctx, got);
                assert_true(tu_mem_eq(got, 32, want, 32));
            }
        }
        /* One byte at a time. */
        {
            gm_sm3_ctx ctx;

            gm_sm3_init(&ctx);
            for (size_t i = 0; i < len; i++) {
                gm_sm3_update(&ctx, msg + i, 1);
            }
            gm_sm3_final(&ctx, got);
            assert_true(tu_mem_eq(got, 32, want, 32));
        }
    }
}

static void
test_sm3_lengths_vs_openssl(void **state)
{
    uint8_t msg[600];
    uint8_t want[32], got[32];
    tu_rng rng = {7};

    (void) state;
    tu_fill(&rng, msg, sizeof(msg));
    /* Every length 0..600 crosses the 55/56/64-byte padding boundaries several times. */
    for (size_t len = 0; len <= sizeof(msg); len++) {
        ref_sm3(want, msg, len);
        gm_sm3(got, msg, len);
        assert_true(tu_mem_eq(got, 32, want, 32));
    }
}

static void
test_sm3_long_messages_vs_openssl(void **state)
{
    const size_t sizes[] = {(1u << 20), (1u << 20) + 17, 3u * (1u << 20) + 55};
    uint8_t *msg = tu_xmalloc(sizes[2]);
    uint8_t want[32], got[32];
    tu_rng rng = {99};

    (void) state;
    tu_fill(&rng, msg, sizes[2]);
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t len = sizes[k];
        gm_sm3_ctx ctx;
        size_t off = 0;

        ref_sm3(want, msg, len);
        gm_sm3(got, msg, len);
        assert_true(tu_mem_eq(got, 32, want, 32));

        /* Irregular chunks. */
        gm_sm3_init(&ctx);
        while (off < len) {
            size_t chunk = (size_t) (tu_rng_next(&rng) % 5000);

            if (chunk > len - off) {
                chunk = len - off;
            }
            gm_sm3_update(&ctx, msg + off, chunk);
            off += chunk;
        }
        gm_sm3_final(&ctx, got);
        assert_true(tu_mem_eq(got, 32, want, 32));
    }
    /* A million 'a' characters (the classic long vector), against OpenSSL. */
    memset(msg, 'a', 1000000);
    ref_sm3(want, msg, 1000000);
    gm_sm3(got, msg, 1000000);
    assert_true(tu_mem_eq(got, 32, want, 32));
    free(msg);
}

static void
test_sm3_final_wipes_and_reuse(void **state)
{
    gm_sm3_ctx ctx;
    uint8_t out[32];

    (void) state;
    gm_sm3_init(&ctx);
    gm_sm3_update(&ctx, "secret message that is more than a block long, 0123456789abcdefghij", 68);
    gm_sm3_final(&ctx, out);
    /* The header promises final leaves the context wiped. */
    assert_true(tu_is_zero(&ctx, sizeof(ctx)));

    gm_sm3_init(&ctx);
    gm_sm3_update(&ctx, "abc", 3);
    gm_sm3_final(&ctx, out);
    assert_true(
        tu_eq_hex(out, 32, "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"));
}

/* ---- HMAC-SM3 ---------------------------------------------------------------------------- */

typedef struct hmac_vec {
    const char *key_hex;
    const char *key_str; /* used instead of key_hex when non-NULL */
    const char *msg_hex;
    const char *msg_str;
    const char *mac_hex;
} hmac_vec;

/* GM/T 0042-2015 Appendix D.3 (cross-checked with OpenSSL's HMAC over SM3). */
static const hmac_vec HMAC_VECS[] = {
    {"0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20", NULL, NULL,
     "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopqabcdbcdecdefdefgefghfghighijhijkijk"
     "ljklmklmnlmnomnopnopq",
     "ca05e144ed05d1857840d1f318a4a8669e559fc8391f414485bfdf7bb408963a"},
    {"0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425", NULL,
     "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
     "cdcdcdcd", /* 50 bytes */
     NULL, "220bf579ded555393f0159f66c99877822a3ecf610d1552154b41d44b94db3ae"},
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", NULL, NULL, "Hi There",
     "c0ba18c68b90c88bc07de794bfc7d2c8d19ec31ed8773bc2b390c9604e0be11e"},
    {NULL, "Jefe Jeferson Jr", NULL, "what do ya want for nothing?",
     "ce791a34c59adef472997a249600f3f244d59e875be04055ba2ae12fc845e78c"},
};

static void
test_hmac_sm3_gmt0042_vectors(void **state)
{
    (void) state;
    for (size_t i = 0; i < sizeof(HMAC_VECS) / sizeof(HMAC_VECS[0]); i++) {
        const hmac_vec *v = &HMAC_VECS[i];
        uint8_t *key, *msg;
        size_t key_len, msg_len;
        uint8_t got[32], ref[32];
        gm_hmac_sm3_ctx ctx;

        if (v->key_str != NULL) {
            key_len = strlen(v->key_str);
            key = tu_xmalloc(key_len);
            memcpy(key, v->key_str, key_len);
        } else {
            key = tu_hex(v->key_hex, &key_len);
        }
        if (v->msg_str != NULL) {
            msg_len = strlen(v->msg_str);
            msg = tu_xmalloc(msg_len);
            memcpy(msg, v->msg_str, msg_len);
        } else {
            msg = tu_hex(v->msg_hex, &msg_len);
        }

        /* The vector agrees with OpenSSL... */
        ref_hmac_sm3(ref, key, key_len, msg, msg_len);
        assert_true(tu_eq_hex(ref, 32, v->mac_hex));
        /* ...and with us, one-shot and streaming. */
        gm_hmac_sm3(got, key, key_len, msg, msg_len);
        assert_true(tu_eq_hex(got, 32, v->mac_hex));
        for (size_t split = 0; split <= msg_len; split++) {
            gm_hmac_sm3_init(&ctx, key, key_len);
            gm_hmac_sm3_update(&ctx, msg, split);
            gm_hmac_sm3_update(&ctx, msg + split, msg_len - split);
            gm_hmac_sm3_final(&ctx, got);
            assert_true(tu_eq_hex(got, 32, v->mac_hex));
        }
        free(key);
        free(msg);
    }
}

static void
test_hmac_sm3_key_lengths_vs_openssl(void **state)
{
    uint8_t key[300], msg[300];
    uint8_t want[32], got[32];
    tu_rng rng = {42};
    const size_t key_lens[] = {0, 1, 16, 31, 32, 33, 63, 64, 65, 100, 128, 129, 200, 300};
    const size_t msg_lens[] = {0, 1, 55, 56, 63, 64, 65, 119, 120, 300};

    (void) state;
    tu_fill(&rng, key, sizeof(key));
    tu_fill(&rng, msg, sizeof(msg));
    for (size_t i = 0; i < sizeof(key_lens) / sizeof(key_lens[0]); i++) {
        for (size_t j = 0; j < sizeof(msg_lens) / sizeof(msg_lens[0]); j++) {
            gm_hmac_sm3_ctx ctx;

            ref_hmac_sm3(want, key, key_lens[i], msg, msg_lens[j]);
            gm_hmac_sm3(got, key, key_lens[i], msg, msg_lens[j]);
            assert_true(tu_mem_eq(got, 32, want, 32));

            gm_hmac_sm3_init(&ctx, key, key_lens[i]);
            for (size_t k = 0; k < msg_lens[j]; k++) {
                gm_hmac_sm3_update(&ctx, msg + k, 1);
            }
            gm_hmac_sm3_final(&ctx, got);
            assert_true(tu_mem_eq(got, 32, want, 32));
        }
    }
}

static void
test_hmac_sm3_long_key_is_hashed(void **state)
{
    /* A key longer than 64 bytes is replaced by SM3(key): both must give the same MAC. */
    uint8_t key[100], hashed[32];
    uint8_t a[32], b[32];
    tu_rng rng = {5};

    (void) state;
    tu_fill(&rng, key, sizeof(key));
    gm_sm3(hashed, key, sizeof(key));
    gm_hmac_sm3(a, key, sizeof(key), "data", 4);
    gm_hmac_sm3(b, hashed, sizeof(hashed), "data", 4);
    assert_true(tu_mem_eq(a, 32, b, 32));
    /* A 64-byte key is used as is (not hashed). */
    gm_sm3(hashed, key, 64);
    gm_hmac_sm3(a, key, 64, "data", 4);
    gm_hmac_sm3(b, hashed, 32, "data", 4);
    assert_false(tu_is_zero(a, 32));
    assert_memory_not_equal(a, b, 32);
}

static void
test_hmac_sm3_wipes(void **state)
{
    gm_hmac_sm3_ctx ctx;
    uint8_t out[32];

    (void) state;
    gm_hmac_sm3_init(&ctx, "key", 3);
    gm_hmac_sm3_update(&ctx, "data", 4);
    gm_hmac_sm3_final(&ctx, out);
    assert_true(tu_is_zero(&ctx, sizeof(ctx)));

    gm_hmac_sm3_init(&ctx, "key", 3);
    gm_hmac_sm3_update(&ctx, "abandoned", 9);
    gm_hmac_sm3_cleanup(&ctx);
    assert_true(tu_is_zero(&ctx, sizeof(ctx)));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sm3_gbt32905_vectors),
        cmocka_unit_test(test_sm3_null_empty),
        cmocka_unit_test(test_sm3_streaming_every_split),
        cmocka_unit_test(test_sm3_lengths_vs_openssl),
        cmocka_unit_test(test_sm3_long_messages_vs_openssl),
        cmocka_unit_test(test_sm3_final_wipes_and_reuse),
        cmocka_unit_test(test_hmac_sm3_gmt0042_vectors),
        cmocka_unit_test(test_hmac_sm3_key_lengths_vs_openssl),
        cmocka_unit_test(test_hmac_sm3_long_key_is_hashed),
        cmocka_unit_test(test_hmac_sm3_wipes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
