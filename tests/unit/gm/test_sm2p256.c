/* test_sm2p256.c: known-answer, differential (against OpenSSL 3.0) and negative tests for the
 * SM2 curve core in src/gm/sm2p256.c.
 *
 * The known answer is the GB/T 32918.5 / GM/T 0003.5 Annex A signature example on the
 * recommended curve; Z and e are computed here with OpenSSL's SM3, and the signature is also
 * checked by OpenSSL's EVP_DigestVerify with the ID set. The differential tests compare k*G and
 * k*P with EC_POINT_mul on edge and random scalars, and cross-verify signatures both ways
 * (plain sign, sign_k, the precomputing context; verify and verify_tab), including tampered
 * inputs. DBAO_DIFF_ITERS raises the number of random cases (default 300 per test, a few
 * seconds in all); DBAO_SM2P_IMPL=<n> restricts the run to one implementation path. The random
 * generator is a seeded splitmix64: reproducible, test only. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>

#include "sm2p256.h"

static EC_GROUP *grp;
static BN_CTX *bnctx;
static BIGNUM *bn_n;
static long iters = 300;
static const gm__sm2p_impl *I; /* the implementation under test */
static uint64_t rng_state = 0x0123456789abcdefULL;

static const char *N_HEX = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123";

/* ---------------------------------------------------------------------------------------- */
/* Helpers. */

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void
rng_bytes(uint64_t *s, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (i % 8 == 0) {
            uint64_t v = rng_next(s);
            for (size_t j = 0; j < 8 && i + j < len; j++) {
                buf[i + j] = (uint8_t) (v >> (8 * j));
            }
        }
    }
}

/* rand_cb: the rand_fn used with the library; arg points at a splitmix64 state. */
static int
rand_cb(void *arg, uint8_t *buf, size_t len)
{
    rng_bytes(arg, buf, len);
    return 0;
}

static int
rand_fail(void *arg, uint8_t *buf, size_t len)
{
    (void) arg;
    (void) buf;
    (void) len;
    return -1;
}

static void
hex2bin(uint8_t *out, const char *hex, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t) v;
    }
}

static void
bn_to32(uint8_t out[32], const BIGNUM *b)
{
    assert_int_equal(BN_bn2binpad(b, out, 32), 32);
}

/* ossl_mul: out = k*P (P = NULL for G) with OpenSSL; returns 1 for infinity, else 0. */
static int
ossl_mul(uint8_t out[64], const uint8_t k[32], const uint8_t *p_xy)
{
    BIGNUM *kb = BN_bin2bn(k, 32, NULL), *x = BN_new(), *y = BN_new();
    EC_POINT *r = EC_POINT_new(grp);
    int inf;

    assert_non_null(kb);
    if (p_xy == NULL) {
        assert_int_equal(EC_POINT_mul(grp, r, kb, NULL, NULL, bnctx), 1);
    } else {
        EC_POINT *p = EC_POINT_new(grp);
        BIGNUM *px = BN_bin2bn(p_xy, 32, NULL), *py = BN_bin2bn(p_xy + 32, 32, NULL);
        assert_int_equal(EC_POINT_set_affine_coordinates(grp, p, px, py, bnctx), 1);
        assert_int_equal(EC_POINT_mul(grp, r, NULL, p, kb, bnctx), 1);
        EC_POINT_free(p);
        BN_free(px);
        BN_free(py);
    }
    inf = EC_POINT_is_at_infinity(grp, r);
    memset(out, 0, 64);
    if (!inf) {
        assert_int_equal(EC_POINT_get_affine_coordinates(grp, r, x, y, bnctx), 1);
        bn_to32(out, x);
        bn_to32(out + 32, y);
    }
    EC_POINT_free(r);
    BN_free(kb);
    BN_free(x);
    BN_free(y);
    return inf;
}

/* ossl_key builds an SM2 EVP_PKEY from pub (and d when not NULL). */
static EVP_PKEY *
ossl_key(const uint8_t *d, const uint8_t pub[64])
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params;
    EVP_PKEY_CTX *ctx;
    EVP_PKEY *pkey = NULL;
    BIGNUM *db = NULL;
    uint8_t pub65[65];

    pub65[0] = 0x04;
    memcpy(pub65 + 1, pub, 64);
    assert_non_null(bld);
    assert_int_equal(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "SM2", 0), 1);
    assert_int_equal(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub65, 65), 1);
    if (d != NULL) {
        db = BN_bin2bn(d, 32, NULL);
        assert_int_equal(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, db), 1);
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    assert_non_null(params);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "SM2", NULL);
    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(
        EVP_PKEY_fromdata(ctx, &pkey, d != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params),
        1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(db);
    return pkey;
}

/* der_from_rs / rs_from_der convert between raw r||s and DER. */
static size_t
der_from_rs(uint8_t *der, const uint8_t r[32], const uint8_t s[32])
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    unsigned char *p = der;
    int len;

    assert_int_equal(ECDSA_SIG_set0(sig, BN_bin2bn(r, 32, NULL), BN_bin2bn(s, 32, NULL)), 1);
    len = i2d_ECDSA_SIG(sig, &p);
    assert_true(len > 0 && len <= 80);
    ECDSA_SIG_free(sig);
    return (size_t) len;
}

static void
rs_from_der(uint8_t r[32], uint8_t s[32], const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long) len);
    assert_non_null(sig);
    bn_to32(r, ECDSA_SIG_get0_r(sig));
    bn_to32(s, ECDSA_SIG_get0_s(sig));
    ECDSA_SIG_free(sig);
}

static int
ossl_verify(EVP_PKEY *pkey, const uint8_t e[32], const uint8_t r[32], const uint8_t s[32])
{
    uint8_t der[80];
    size_t len = der_from_rs(der, r, s);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
    int ok;

    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_verify_init(ctx), 1);
    ok = EVP_PKEY_verify(ctx, der, len, e, 32);
    EVP_PKEY_CTX_free(ctx);
    return ok == 1;
}

static void
ossl_sign(EVP_PKEY *pkey, uint8_t r[32], uint8_t s[32], const uint8_t e[32])
{
    uint8_t der[80];
    size_t len = sizeof der;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);

    assert_non_null(ctx);
    assert_int_equal(EVP_PKEY_sign_init(ctx), 1);
    assert_int_equal(EVP_PKEY_sign(ctx, der, &len, e, 32), 1);
    rs_from_der(r, s, der, len);
    EVP_PKEY_CTX_free(ctx);
}

/* random_key: a valid private key and its public key (via OpenSSL). */
static void
random_key(uint8_t d[32], uint8_t pub[64])
{
    do {
        rng_bytes(&rng_state, d, 32);
        d[0] &= 0x7f;
    } while (gm__sm2p_scalar_check(d) != 0);
    assert_int_equal(ossl_mul(pub, d, NULL), 0);
}

/* scalar_arith: out = (a + sign*b) mod n with OpenSSL, b a small integer. */
static void
n_minus(uint8_t out[32], unsigned long v)
{
    BIGNUM *b = BN_new();
    BN_copy(b, bn_n);
    BN_sub_word(b, v);
    bn_to32(out, b);
    BN_free(b);
}

/* edge_scalars fills up to max 32-byte scalars covering the interesting cases. */
static size_t
edge_scalars(uint8_t (*out)[32], size_t max)
{
    size_t num = 0;
    uint8_t k[32];

#define PUSH(src)                                                                                  \
    do {                                                                                           \
        assert_true(num < max);                                                                    \
        memcpy(out[num++], (src), 32);                                                             \
    } while (0)
    for (unsigned v = 0; v <= 40; v++) {
        memset(k, 0, 32);
        k[31] = (uint8_t) v;
        PUSH(k);
    }
    for (unsigned v = 1; v <= 40; v++) {
        n_minus(k, v);
        PUSH(k);
    }
    n_minus(k, 0);
    PUSH(k); /* n */
    memset(k, 0xff, 32);
    PUSH(k); /* 2^256 - 1 */
    for (int b = 0; b < 256; b += 5) {
        memset(k, 0, 32);
        k[31 - b / 8] = (uint8_t) (1u << (b % 8)); /* 2^b */
        PUSH(k);
        for (int i = 0; i < 32; i++) {
            k[i] = (uint8_t) ~k[i]; /* 2^256 - 1 - 2^b */
        }
        PUSH(k);
    }
    {
        static const uint8_t pats[] = {0xaa, 0x55, 0x80, 0x01, 0x7f, 0xfe, 0x20, 0x1f, 0x3f, 0xc0};
        for (size_t i = 0; i < sizeof pats; i++) {
            memset(k, pats[i], 32);
            PUSH(k);
        }
    }
    /* Long runs: ones then zeros, zeros then ones, at several split points. */
    for (int split = 8; split < 256; split += 24) {
        for (int i = 0; i < 256; i++) {
            int bit = i < split;
            int byte = 31 - i / 8;
            if (i % 8 == 0) {
                k[byte] = 0;
            }
            k[byte] |= (uint8_t) (bit << (i % 8));
        }
        PUSH(k);
        for (int i = 0; i < 32; i++) {
            k[i] = (uint8_t) ~k[i];
        }
        PUSH(k);
    }
    /* Booth window boundaries: 2^(6i) - 1 and 2^(5i) +- 1 patterns, then random sparse. */
    for (int i = 1; i < 43; i++) {
        BIGNUM *b = BN_new();
        BN_set_bit(b, 6 * i);
        BN_sub_word(b, 1);
        BN_mod(b, b, bn_n, bnctx);
        bn_to32(k, b);
        PUSH(k);
        BN_free(b);
    }
#undef PUSH
    return num;
}

/* ---------------------------------------------------------------------------------------- */
/* Known answer. */

static void
sm3(uint8_t out[32], const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int len = 32;
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sm3(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(md, a, alen), 1);
    if (blen > 0) {
        assert_int_equal(EVP_DigestUpdate(md, b, blen), 1);
    }
    assert_int_equal(EVP_DigestFinal_ex(md, out, &len), 1);
    EVP_MD_CTX_free(md);
}

static void
test_kat_gbt32918(void **state)
{
    static const char *D = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8";
    static const char *K = "59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21";
    static const char *PX = "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020";
    static const char *PY = "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13";
    static const char *E = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640";
    static const char *R = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3";
    static const char *S = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA";
    static const char *CURVE =
        "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC" /* a */
        "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93" /* b */
        "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7" /* xG */
        "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0";
    const char *id = "1234567812345678", *msg = "message digest";
    uint8_t d[32], k[32], pub[64], want_pub[64], e[32], want_e[32], r[32], s[32];
    uint8_t want_r[32], want_s[32], zin[2 + 16 + 128 + 64], z[32], der[80];
    gm__sm2p_pubtab *tab;
    EVP_PKEY *pkey;
    EVP_MD_CTX *md;
    EVP_PKEY_CTX *pctx = NULL;
    size_t der_len;
    (void) state;

    hex2bin(d, D, 32);
    hex2bin(k, K, 32);
    hex2bin(want_pub, PX, 32);
    hex2bin(want_pub + 32, PY, 32);
    hex2bin(want_e, E, 32);
    hex2bin(want_r, R, 32);
    hex2bin(want_s, S, 32);

    assert_int_equal(gm__sm2p_scalar_check(d), 0);
    assert_int_equal(I->base_mul(pub, d), 0);
    assert_memory_equal(pub, want_pub, 64);

    /* Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), e = SM3(Z || M). */
    zin[0] = 0x00;
    zin[1] = 0x80;
    memcpy(zin + 2, id, 16);
    hex2bin(zin + 18, CURVE, 128);
    memcpy(zin + 146, pub, 64);
    sm3(z, zin, sizeof zin, NULL, 0);
    sm3(e, z, 32, (const uint8_t *) msg, strlen(msg));
    assert_memory_equal(e, want_e, 32);

    assert_int_equal(I->sign_k(r, s, d, e, k), 0);
    assert_memory_equal(r, want_r, 32);
    assert_memory_equal(s, want_s, 32);
    assert_int_equal(I->verify(pub, e, r, s), 0);
    assert_int_equal(I->pubtab_new(&tab, pub), 0);
    assert_int_equal(I->verify_tab(tab, e, r, s), 0);
    gm__sm2p_pubtab_free(tab);

    /* OpenSSL agrees, through the message-level API with the ID set. */
    pkey = ossl_key(d, pub);
    der_len = der_from_rs(der, r, s);
    md = EVP_MD_CTX_new();
    assert_int_equal(EVP_DigestVerifyInit(md, &pctx, EVP_sm3(), NULL, pkey), 1);
    assert_int_equal(EVP_PKEY_CTX_set1_id(pctx, id, 16), 1);
    assert_int_equal(EVP_DigestVerify(md, der, der_len, (const uint8_t *) msg, strlen(msg)), 1);
    EVP_MD_CTX_free(md);
    assert_true(ossl_verify(pkey, e, r, s));
    EVP_PKEY_free(pkey);
}

/* ---------------------------------------------------------------------------------------- */
/* Scalar multiplication against OpenSSL. */

static void
check_base_mul(const uint8_t k[32])
{
    uint8_t ours[64], want[64];
    int inf = ossl_mul(want, k, NULL);
    int rc = I->base_mul(ours, k);
    assert_int_equal(rc, inf ? -1 : 0);
    assert_memory_equal(ours, want, 64);
}

static void
check_point_mul(const uint8_t k[32], const uint8_t p[64])
{
    uint8_t ours[64], want[64];
    int inf = ossl_mul(want, k, p);
    int rc = I->point_mul(ours, k, p);
    assert_int_equal(rc, inf ? -1 : 0);
    assert_memory_equal(ours, want, 64);
}

static void
test_mul_edges(void **state)
{
    static uint8_t ks[512][32];
    uint8_t p[64], t[32];
    size_t num = edge_scalars(ks, 512);
    (void) state;

    for (size_t i = 0; i < num; i++) {
        check_base_mul(ks[i]);
    }
    for (int j = 0; j < 3; j++) {
        if (j == 0) {
            memset(t, 0, 32);
            t[31] = 1; /* P = G */
        } else {
            rng_bytes(&rng_state, t, 32);
        }
        assert_int_equal(I->base_mul(p, t), 0);
        for (size_t i = 0; i < num; i++) {
            check_point_mul(ks[i], p);
        }
    }
}

static void
test_mul_random(void **state)
{
    uint8_t k[32], t[32], p[64];
    (void) state;

    for (long i = 0; i < iters; i++) {
        rng_bytes(&rng_state, k, 32);
        if (i % 4 == 1) {
            /* Sparse scalars with long zero runs. */
            for (int b = 0; b < 32; b++) {
                if (rng_next(&rng_state) % 4 != 0) {
                    k[b] = 0;
                }
            }
        } else if (i % 4 == 2) {
            for (int b = 0; b < 32; b++) {
                if (rng_next(&rng_state) % 4 != 0) {
                    k[b] = 0xff;
                }
            }
        }
        check_base_mul(k);
        rng_bytes(&rng_state, t, 32);
        assert_int_equal(I->base_mul(p, t), 0);
        check_point_mul(k, p);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Signatures against OpenSSL. */

static void
tamper_checks(EVP_PKEY *pkey, const gm__sm2p_pubtab *tab, const uint8_t pub[64],
              const uint8_t e[32], const uint8_t r[32], const uint8_t s[32])
{
    uint8_t r2[32], s2[32], e2[32], pub2[64], t[32];
    int bit = (int) (rng_next(&rng_state) % 256);

    memcpy(r2, r, 32);
    r2[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    assert_int_equal(I->verify(pub, e, r2, s), 1);
    assert_int_equal(I->verify_tab(tab, e, r2, s), 1);
    assert_false(ossl_verify(pkey, e, r2, s));
    memcpy(s2, s, 32);
    s2[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    assert_int_equal(I->verify(pub, e, r, s2), 1);
    assert_int_equal(I->verify_tab(tab, e, r, s2), 1);
    assert_false(ossl_verify(pkey, e, r, s2));
    memcpy(e2, e, 32);
    e2[bit / 8] ^= (uint8_t) (1u << (bit % 8));
    assert_int_equal(I->verify(pub, e2, r, s), 1);
    assert_int_equal(I->verify_tab(tab, e2, r, s), 1);
    assert_false(ossl_verify(pkey, e2, r, s));
    /* Another valid key. */
    rng_bytes(&rng_state, t, 32);
    assert_int_equal(I->base_mul(pub2, t), 0);
    assert_int_equal(I->verify(pub2, e, r, s), 1);
    /* A corrupted key is rejected as a key. */
    memcpy(pub2, pub, 64);
    pub2[63] ^= 1;
    assert_int_equal(I->verify(pub2, e, r, s), -1);
}

static void
test_sign_verify_diff(void **state)
{
    uint8_t d[32], pub[64], e[32], k[32], r[32], s[32];
    uint64_t seed = 42;
    gm__sm2p_signctx *ctx;
    gm__sm2p_pubtab *tab;
    EVP_PKEY *pkey;
    long rounds = iters / 10 + 2;
    (void) state;

    for (long i = 0; i < rounds; i++) {
        random_key(d, pub);
        pkey = ossl_key(d, pub);
        assert_int_equal(I->pubtab_new(&tab, pub), 0);
        assert_int_equal(I->signctx_new(&ctx, d, rand_cb, &seed), 0);
        for (int j = 0; j < 10; j++) {
            rng_bytes(&rng_state, e, 32);
            switch (j % 4) {
            case 0:
                assert_int_equal(I->sign(r, s, d, e, rand_cb, &seed), 0);
                break;
            case 1:
                assert_int_equal(gm__sm2p_signctx_sign(ctx, r, s, e), 0);
                break;
            case 2:
                rng_bytes(&rng_state, k, 32);
                assert_int_equal(I->sign_k(r, s, d, e, k), 0);
                break;
            default:
                ossl_sign(pkey, r, s, e);
                break;
            }
            assert_true(ossl_verify(pkey, e, r, s));
            assert_int_equal(I->verify(pub, e, r, s), 0);
            assert_int_equal(I->verify_tab(tab, e, r, s), 0);
            if (j < 2) {
                tamper_checks(pkey, tab, pub, e, r, s);
            }
        }
        gm__sm2p_signctx_free(ctx);
        gm__sm2p_pubtab_free(tab);
        EVP_PKEY_free(pkey);
    }
}

/* The sign context is deterministic given the rand_fn stream, survives refills, and matches
 * sign_k on the same nonces. */
static void
test_signctx(void **state)
{
    uint8_t d[32], pub[64], e[32], r[32], s[32], r2[32], s2[32], k[32];
    uint64_t seed1 = 7, seed2 = 7;
    gm__sm2p_signctx *ctx;
    (void) state;

    random_key(d, pub);
    assert_int_equal(I->signctx_new(&ctx, d, rand_cb, &seed1), 0);
    for (int i = 0; i < 3 * GM__SM2P_SIGN_BATCH + 5; i++) {
        rng_bytes(&rng_state, e, 32);
        assert_int_equal(gm__sm2p_signctx_sign(ctx, r, s, e), 0);
        if (i % GM__SM2P_SIGN_BATCH == 0) {
            /* Replay the nonce stream: each refill draws one batch of 32-byte nonces. */
            rng_bytes(&seed2, k, 32);
            assert_int_equal(I->sign_k(r2, s2, d, e, k), 0);
            assert_memory_equal(r, r2, 32);
            assert_memory_equal(s, s2, 32);
            for (int j = 1; j < GM__SM2P_SIGN_BATCH; j++) {
                rng_bytes(&seed2, k, 32);
            }
        }
        assert_int_equal(I->verify(pub, e, r, s), 0);
    }
    gm__sm2p_signctx_free(ctx);
    gm__sm2p_signctx_free(NULL);

    /* A failing rand_fn is reported, not looped on. */
    assert_int_equal(I->signctx_new(&ctx, d, rand_fail, NULL), 0);
    assert_int_equal(gm__sm2p_signctx_sign(ctx, r, s, e), -1);
    gm__sm2p_signctx_free(ctx);
    assert_int_equal(I->sign(r, s, d, e, rand_fail, NULL), -1);
}

/* sign_k rejects exactly the nonces it must: k = 0 mod n, r = 0, r + k = n, s = 0. */
static void
test_sign_k_rejects(void **state)
{
    uint8_t d[32], pub[64], e[32], k[32], r[32], s[32], kg[64];
    BIGNUM *x1 = BN_new(), *kb, *db, *t = BN_new(), *u = BN_new();
    (void) state;

    random_key(d, pub);
    rng_bytes(&rng_state, e, 32);
    memset(k, 0, 32);
    assert_int_equal(I->sign_k(r, s, d, e, k), 1);
    n_minus(k, 0);
    assert_int_equal(I->sign_k(r, s, d, e, k), 1);

    rng_bytes(&rng_state, k, 32);
    k[0] &= 0x7f;
    assert_int_equal(I->base_mul(kg, k), 0);
    BN_bin2bn(kg, 32, x1);
    kb = BN_bin2bn(k, 32, NULL);
    db = BN_bin2bn(d, 32, NULL);
    /* r = 0: e = -x1. */
    BN_mod_sub(t, bn_n, x1, bn_n, bnctx);
    bn_to32(e, t);
    assert_int_equal(I->sign_k(r, s, d, e, k), 1);
    assert_true(r[0] == 0 && s[0] == 0);
    /* r + k = n: e = n - k - x1. */
    BN_mod_sub(t, bn_n, kb, bn_n, bnctx);
    BN_mod_sub(t, t, x1, bn_n, bnctx);
    bn_to32(e, t);
    assert_int_equal(I->sign_k(r, s, d, e, k), 1);
    /* s = 0: r = k / d, e = k/d - x1. */
    BN_mod_inverse(u, db, bn_n, bnctx);
    BN_mod_mul(t, kb, u, bn_n, bnctx);
    BN_mod_sub(t, t, x1, bn_n, bnctx);
    bn_to32(e, t);
    assert_int_equal(I->sign_k(r, s, d, e, k), 1);
    /* And a neighbouring e is fine. */
    e[31] ^= 1;
    assert_int_equal(I->sign_k(r, s, d, e, k), 0);
    assert_int_equal(I->verify(pub, e, r, s), 0);
    BN_free(x1);
    BN_free(kb);
    BN_free(db);
    BN_free(t);
    BN_free(u);
}

/* ---------------------------------------------------------------------------------------- */
/* Negative cases. */

static void
test_negative(void **state)
{
    static const char *P_HEX = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF";
    uint8_t d[32], pub[64], bad[64], e[32], r[32], s[32], t[32], out[64], pb[32];
    gm__sm2p_pubtab *tab;
    gm__sm2p_signctx *ctx;
    uint64_t seed = 1;
    (void) state;

    random_key(d, pub);
    rng_bytes(&rng_state, e, 32);
    assert_int_equal(I->sign(r, s, d, e, rand_cb, &seed), 0);
    assert_int_equal(gm__sm2p_point_check(pub), 0);

    /* Off the curve. */
    memcpy(bad, pub, 64);
    bad[40] ^= 0x10;
    assert_int_equal(gm__sm2p_point_check(bad), -1);
    assert_int_equal(I->verify(bad, e, r, s), -1);
    assert_int_equal(I->pubtab_new(&tab, bad), -1);
    assert_null(tab);
    assert_int_equal(I->point_mul(out, d, bad), -1);
    /* Coordinates >= p: x + p and y + p would still satisfy the equation mod p. */
    hex2bin(pb, P_HEX, 32);
    {
        BIGNUM *p = BN_bin2bn(pb, 32, NULL), *x = BN_bin2bn(pub, 32, NULL);
        BN_add(x, x, p);
        if (BN_num_bytes(x) <= 32) {
            memcpy(bad, pub, 64);
            bn_to32(bad, x);
            assert_int_equal(gm__sm2p_point_check(bad), -1);
        }
        BN_free(p);
        BN_free(x);
    }
    memcpy(bad, pub, 64);
    memcpy(bad + 32, pb, 32); /* y = p */
    assert_int_equal(gm__sm2p_point_check(bad), -1);
    memset(bad, 0xff, 64);
    assert_int_equal(gm__sm2p_point_check(bad), -1);
    memset(bad, 0, 64); /* (0, 0) is not on the curve (b != 0) */
    assert_int_equal(gm__sm2p_point_check(bad), -1);
    assert_int_equal(I->verify(bad, e, r, s), -1);

    /* r, s = 0 or >= n. */
    memset(t, 0, 32);
    assert_int_equal(I->verify(pub, e, t, s), 1);
    assert_int_equal(I->verify(pub, e, r, t), 1);
    n_minus(t, 0);
    assert_int_equal(I->verify(pub, e, t, s), 1);
    assert_int_equal(I->verify(pub, e, r, t), 1);
    memset(t, 0xff, 32);
    assert_int_equal(I->verify(pub, e, t, s), 1);
    assert_int_equal(I->verify(pub, e, r, t), 1);
    /* r + s = n (t = 0). */
    {
        BIGNUM *rb = BN_bin2bn(r, 32, NULL), *sb = BN_new();
        BN_sub(sb, bn_n, rb);
        bn_to32(t, sb);
        assert_int_equal(I->verify(pub, e, r, t), 1);
        BN_free(rb);
        BN_free(sb);
    }
    assert_int_equal(I->pubtab_new(&tab, pub), 0);
    n_minus(t, 0);
    assert_int_equal(I->verify_tab(tab, e, t, s), 1);
    memset(t, 0, 32);
    assert_int_equal(I->verify_tab(tab, e, r, t), 1);
    gm__sm2p_pubtab_free(tab);
    gm__sm2p_pubtab_free(NULL);

    /* d = 0, n-1, n, 2^256-1 are not private keys; 1 and n-2 are. */
    memset(t, 0, 32);
    assert_int_equal(gm__sm2p_scalar_check(t), -1);
    assert_int_equal(I->sign_k(r, s, t, e, d), -1);
    assert_int_equal(I->sign(r, s, t, e, rand_cb, &seed), -1);
    assert_int_equal(I->signctx_new(&ctx, t, rand_cb, &seed), -1);
    assert_null(ctx);
    for (unsigned v = 0; v <= 1; v++) {
        n_minus(t, v);
        assert_int_equal(gm__sm2p_scalar_check(t), -1);
        assert_int_equal(I->sign_k(r, s, t, e, d), -1);
        assert_int_equal(I->sign(r, s, t, e, rand_cb, &seed), -1);
        assert_int_equal(I->signctx_new(&ctx, t, rand_cb, &seed), -1);
    }
    memset(t, 0xff, 32);
    assert_int_equal(gm__sm2p_scalar_check(t), -1);
    n_minus(t, 2);
    assert_int_equal(gm__sm2p_scalar_check(t), 0);
    assert_int_equal(I->sign(r, s, t, e, rand_cb, &seed), 0);
    assert_int_equal(I->base_mul(pub, t), 0);
    assert_int_equal(I->verify(pub, e, r, s), 0);
    memset(t, 0, 32);
    t[31] = 1;
    assert_int_equal(gm__sm2p_scalar_check(t), 0);
    assert_int_equal(I->sign(r, s, t, e, rand_cb, &seed), 0);
    assert_int_equal(I->base_mul(pub, t), 0);
    assert_int_equal(I->verify(pub, e, r, s), 0);
}

/* ---------------------------------------------------------------------------------------- */

static int
setup(void **state)
{
    const char *env = getenv("DBAO_DIFF_ITERS");
    (void) state;
    if (env != NULL) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v > 0) {
            iters = v;
        }
    }
    grp = EC_GROUP_new_by_curve_name(NID_sm2);
    bnctx = BN_CTX_new();
    bn_n = NULL;
    BN_hex2bn(&bn_n, N_HEX);
    return grp != NULL && bnctx != NULL && bn_n != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    (void) state;
    EC_GROUP_free(grp);
    BN_CTX_free(bnctx);
    BN_free(bn_n);
    return 0;
}

int
main(void)
{
    const char *only = getenv("DBAO_SM2P_IMPL"); /* run one GM__SM2P_IMPL_* path only */
    int failed = 0;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kat_gbt32918), cmocka_unit_test(test_mul_edges),
        cmocka_unit_test(test_mul_random),   cmocka_unit_test(test_sign_verify_diff),
        cmocka_unit_test(test_signctx),      cmocka_unit_test(test_sign_k_rejects),
        cmocka_unit_test(test_negative),
    };
    /* The plain entry points are the portable path; check they are wired to it. */
    if (gm__sm2p_impl_get(GM__SM2P_IMPL_PORTABLE) == NULL ||
        gm__sm2p_impl_get(GM__SM2P_IMPL_PORTABLE)->verify != gm__sm2p_verify) {
        fprintf(stderr, "portable impl table is not the plain entry points\n");
        return 1;
    }
    for (int path = GM__SM2P_IMPL_PORTABLE; path <= GM__SM2P_IMPL_X86_ADX; path++) {
        char name[64];
        if (only != NULL && strtol(only, NULL, 10) != path) {
            continue;
        }
        I = gm__sm2p_impl_get(path);
        if (I == NULL) {
            printf("sm2p256: implementation %d not available here, skipped\n", path);
            continue;
        }
        snprintf(name, sizeof name, "sm2p256 [%s]", I->name);
        failed += cmocka_run_group_tests_name(name, tests, setup, teardown);
    }
    return failed;
}
