/* test_jwt.c: bearer tokens (zt.h "tokens"): key sets from JWKS and PEM, zt_jwt_verify against
 * the attack list, and minting.
 *
 * Keys are made fresh in setup (HS256 secret, P-256, RSA-2048, SM2). Tokens under attack are
 * assembled here from literal header and payload JSON and signed by an independent path (the
 * test's own OpenSSL calls and gm_sm2_sign), so the verifier is not only checked against its
 * own minting code. The attack list: alg none in four spellings, HS256 signed with the RSA
 * and EC public keys as secret (confusion), expired, not yet valid, iat in the future, wrong
 * aud and iss, tampered header, payload and signature, unknown kid, no kid with several keys,
 * duplicate claims and header members, oversize, padded and non-canonical base64url, bad JSON,
 * crit and key-carrying headers, and weird claim types. Then an allocation-failure sweep of
 * key set loading, four threads verifying with one shared set, and the verify cost per token
 * for each algorithm (printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "dengbao/zt.h"
#include "testutil.h"

#define NOW 1800000000LL

static const uint8_t hs_secret[] = "0123456789abcdef-hs256-test-secret";
static EVP_PKEY *ec_key, *rsa_key;
static gm_sm2_key *sm2_key, *sm2_other;
static char *ec_priv_pem;
static char rsa_pub_pem[1024], ec_pub_pem[512];
static size_t rsa_pub_pem_len, ec_pub_pem_len;
static uint8_t ec_pub_point[65];
static char jwks[8192];
static zt_keyset *ks;

#define ADD_JWKS(k, lit) zt_keyset_add_jwks((k), (lit), strlen(lit), &err)

/* ---- helpers
 * -------------------------------------------------------------------------------
 */

static void
b64(char *out, const void *in, size_t len)
{
    zt_b64url_encode(out, in, len);
}

static void
b64_bn(char *out, const BIGNUM *bn)
{
    uint8_t buf[600];
    int n = BN_bn2bin(bn, buf);

    b64(out, buf, (size_t) n);
}

static char *
pem_of(EVP_PKEY *k, bool priv, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *out;
    long n;

    assert_non_null(b);
    if (priv) {
        assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    } else {
        assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    }
    n = BIO_get_mem_data(b, &p);
    out = calloc(1, (size_t) n + 1);
    memcpy(out, p, (size_t) n);
    BIO_free(b);
    if (len != NULL) {
        *len = (size_t) n;
    }
    return out;
}

typedef enum { S_HS, S_ES, S_RS, S_SM2, S_RAWKEY } signer;

/* mint builds b64(header).b64(payload).b64(sig) with an independent signer; for
 * S_RAWKEY the HMAC key is (rawkey, rawkey_len). Returns a malloc'ed string. */
static char *
mint_raw(const char *header, const char *payload, signer s, const void *rawkey, size_t rawkey_len)
{
    size_t cap = (strlen(header) + strlen(payload)) * 2 + 2000, n;
    char *t = calloc(1, cap);
    uint8_t sig[600];
    size_t sig_len = 0;

    n = zt_b64url_encode(t, (const uint8_t *) header, strlen(header));
    t[n++] = '.';
    n += zt_b64url_encode(t + n, (const uint8_t *) payload, strlen(payload));
    if (s == S_HS || s == S_RAWKEY) {
        unsigned ml = 0;

        if (s == S_HS) {
            rawkey = hs_secret;
            rawkey_len = sizeof(hs_secret) - 1;
        }
        HMAC(EVP_sha256(), rawkey, (int) rawkey_len, (uint8_t *) t, n, sig, &ml);
        sig_len = ml;
    } else if (s == S_ES || s == S_RS) {
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        uint8_t der[600];
        size_t der_len = sizeof(der);

        assert_int_equal(
            EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, s == S_ES ? ec_key : rsa_key), 1);
        assert_int_equal(EVP_DigestSign(md, der, &der_len, (uint8_t *) t, n), 1);
        EVP_MD_CTX_free(md);
        if (s == S_RS) {
            memcpy(sig, der, der_len);
            sig_len = der_len;
        } else {
            const uint8_t *p = der;
            ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long) der_len);

            BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32);
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32);
            ECDSA_SIG_free(es);
            sig_len = 64;
        }
    } else {
        assert_int_equal(
            gm_sm2_sign(sm2_key, sig, (const uint8_t *) "1234567812345678", 16, (uint8_t *) t, n),
            0);
        sig_len = 64;
    }
    t[n++] = '.';
    zt_b64url_encode(t + n, sig, sig_len);
    return t;
}

static char *
mint(const char *header, const char *payload, signer s)
{
    return mint_raw(header, payload, s, NULL, 0);
}

static zt_jwt_opts
opts_default(void)
{
    static const char *const auds[] = {"gateway", "api"};
    zt_jwt_opts o = {0};

    o.now = NOW;
    o.skew = 30;
    o.iss = "https://idp.example";
    o.aud = auds;
    o.num_aud = 2;
    return o;
}

#define GOOD_PAYLOAD                                                                               \
    "{\"iss\":\"https://"                                                                          \
    "idp.example\",\"sub\":\"alice\",\"aud\":\"gateway\",\"iat\":1799999900,"                      \
    "\"exp\":1800000600,\"roles\":[\"doctor\",\"admin\"],\"jti\":\"j-1\"}"

static int
verify(const char *tok, zt_claims *c, const zt_jwt_opts *o)
{
    zt_jwt_opts def = opts_default();
    dbao_err err = {0};
    int rc = zt_jwt_verify(ks, o != NULL ? o : &def, tok, strlen(tok), c, &err);

    if (rc != 0) {
        printf("    verify: %d %s\n", rc, err.msg);
    }
    return rc;
}

static int
verify_str(const char *header, const char *payload, signer s)
{
    char *t = mint(header, payload, s);
    int rc = verify(t, NULL, NULL);

    free(t);
    return rc;
}

/* ---- setup
 * ----------------------------------------------------------------------------------
 */

static int
setup(void **state)
{
    char x[64], y[64], n[400], e[16], k[64], sx[64], sy[64];
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    uint8_t sm2pub[65];
    size_t plen = 0;
    dbao_err err = {0};
    BIO *b;
    char *p;

    (void) state;
    ec_key = EVP_EC_gen("P-256");
    rsa_key = EVP_RSA_gen(2048);
    assert_non_null(ec_key);
    assert_non_null(rsa_key);
    assert_int_equal(gm_sm2_key_generate(&sm2_key, NULL), 0);
    assert_int_equal(gm_sm2_key_generate(&sm2_other, NULL), 0);
    ec_priv_pem = pem_of(ec_key, true, NULL);
    p = pem_of(rsa_key, false, &rsa_pub_pem_len);
    memcpy(rsa_pub_pem, p, rsa_pub_pem_len);
    free(p);
    p = pem_of(ec_key, false, &ec_pub_pem_len);
    memcpy(ec_pub_pem, p, ec_pub_pem_len);
    free(p);
    assert_int_equal(EVP_PKEY_get_octet_string_param(ec_key, OSSL_PKEY_PARAM_PUB_KEY, ec_pub_point,
                                                     sizeof(ec_pub_point), &plen),
                     1);
    assert_int_equal(plen, 65);
    b64(x, ec_pub_point + 1, 32);
    b64(y, ec_pub_point + 33, 32);
    EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_N, &bn_n);
    EVP_PKEY_get_bn_param(rsa_key, OSSL_PKEY_PARAM_RSA_E, &bn_e);
    b64_bn(n, bn_n);
    b64_bn(e, bn_e);
    BN_free(bn_n);
    BN_free(bn_e);
    b64(k, hs_secret, sizeof(hs_secret) - 1);
    gm_sm2_key_get_pub(sm2_key, sm2pub);
    b64(sx, sm2pub + 1, 32);
    b64(sy, sm2pub + 33, 32);
    snprintf(jwks, sizeof(jwks),
             "{\"keys\":["
             "{\"kty\":\"oct\",\"kid\":\"hs1\",\"alg\":\"HS256\",\"k\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"ec1\",\"crv\":\"P-256\",\"x\":\"%s\","
             "\"y\":\"%s\",\"use\":"
             "\"sig\"},"
             "{\"kty\":\"RSA\",\"kid\":\"rsa1\",\"alg\":\"RS256\",\"n\":\"%s\","
             "\"e\":\"%s\"},"
             "{\"kty\":\"EC\",\"kid\":\"sm1\",\"crv\":\"SM2\",\"x\":\"%s\",\"y\":"
             "\"%s\"},"
             "{\"kty\":\"RSA\",\"kid\":\"enc1\",\"use\":\"enc\",\"n\":\"AQAB\","
             "\"e\":\"AQAB\"}"
             "]}",
             k, x, y, n, e, sx, sy);
    assert_int_equal(zt_keyset_new(&ks, NULL, &err), 0);
    if (zt_keyset_add_jwks(ks, jwks, strlen(jwks), &err) != 0) {
        printf("jwks: %s\n", err.msg);
        return -1;
    }
    b = NULL;
    (void) b;
    return zt_keyset_count(ks) == 4 ? 0 : -1;
}

static int
teardown(void **state)
{
    (void) state;
    zt_keyset_unref(ks);
    EVP_PKEY_free(ec_key);
    EVP_PKEY_free(rsa_key);
    gm_sm2_key_free(sm2_key);
    gm_sm2_key_free(sm2_other);
    free(ec_priv_pem);
    return 0;
}

/* ---- tests
 * ----------------------------------------------------------------------------------
 */

static void
test_b64url(void **state)
{
    uint8_t in[40], out[40];
    char enc[64];
    size_t n;

    (void) state;
    tu_rng r = {7};

    tu_fill(&r, in, sizeof(in));
    for (size_t len = 0; len <= sizeof(in); len++) {
        size_t el = zt_b64url_encode(enc, in, len);

        assert_int_equal(el, (len * 4 + 2) / 3);
        assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, enc, el), 0);
        assert_int_equal(n, len);
        assert_memory_equal(out, in, len);
    }
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "QQ==", 4), DBAO_EFORMAT);
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "QQ", 2), 0);
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "QR", 2), DBAO_EFORMAT);
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "QUI", 3), 0);
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "QUJ", 3), DBAO_EFORMAT);
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "Q", 1), DBAO_EFORMAT);
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "a+b/", 4), DBAO_EFORMAT);
    assert_int_equal(zt_b64url_decode(out, sizeof(out), &n, "ab c", 4), DBAO_EFORMAT);
    assert_int_equal(zt_b64url_decode(out, 2, &n, "QUJD", 4), DBAO_ERANGE);
}

static void
test_valid_each_alg(void **state)
{
    const char *hdr[] = {"{\"alg\":\"HS256\",\"kid\":\"hs1\"}",
                         "{\"alg\":\"ES256\",\"kid\":\"ec1\"}",
                         "{\"alg\":\"RS256\",\"kid\":\"rsa1\",\"typ\":\"JWT\"}",
                         "{\"alg\":\"SM2\",\"kid\":\"sm1\"}",
                         "{\"alg\":\"HS256\"}",
                         "{\"alg\":\"SM2\"}"};
    const signer sg[] = {S_HS, S_ES, S_RS, S_SM2, S_HS, S_SM2};
    const zt_alg al[] = {ZT_ALG_HS256, ZT_ALG_ES256, ZT_ALG_RS256,
                         ZT_ALG_SM2,   ZT_ALG_HS256, ZT_ALG_SM2};

    (void) state;
    for (size_t i = 0; i < sizeof(sg) / sizeof(sg[0]); i++) {
        zt_claims c;
        char *t = mint(hdr[i], GOOD_PAYLOAD, sg[i]);

        assert_int_equal(verify(t, &c, NULL), 0);
        assert_int_equal(c.alg, al[i]);
        assert_string_equal(c.sub, "alice");
        assert_string_equal(c.iss, "https://idp.example");
        assert_string_equal(c.aud, "gateway");
        assert_string_equal(c.jti, "j-1");
        assert_int_equal(c.num_roles, 2);
        assert_string_equal(c.roles[0], "doctor");
        assert_string_equal(c.roles[1], "admin");
        assert_true(c.has_exp && c.exp == 1800000600);
        assert_true(c.has_iat && !c.has_nbf && !c.has_cnf);
        free(t);
    }
}

static void
test_alg_none(void **state)
{
    const char *names[] = {"none", "None", "NONE", "nOnE"};

    (void) state;
    for (size_t i = 0; i < 4; i++) {
        char hdr[64], *t;
        size_t n;

        snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\"}", names[i]);
        t = mint(hdr, GOOD_PAYLOAD, S_HS);
        assert_int_equal(verify(t, NULL, NULL), DBAO_ENOTSUP);
        /* And the classic form with an empty signature. */
        n = strlen(t);
        while (t[n - 1] != '.') {
            n--;
        }
        t[n] = '\0';
        assert_int_not_equal(verify(t, NULL, NULL), 0);
        free(t);
    }
    assert_int_equal(verify_str("{\"alg\":\"HS512\"}", GOOD_PAYLOAD, S_HS), DBAO_ENOTSUP);
    assert_int_equal(verify_str("{\"alg\":\"hs256\"}", GOOD_PAYLOAD, S_HS), DBAO_ENOTSUP);
    assert_int_equal(verify_str("{\"alg\":\"SM2\\u0000x\"}", GOOD_PAYLOAD, S_HS), DBAO_EFORMAT);
}

static void
test_alg_confusion(void **state)
{
    char *t;

    (void) state;
    /* HS256 with the RSA public key PEM as the secret, naming the RSA key's kid.
     */
    t = mint_raw("{\"alg\":\"HS256\",\"kid\":\"rsa1\"}", GOOD_PAYLOAD, S_RAWKEY, rsa_pub_pem,
                 rsa_pub_pem_len);
    assert_int_equal(verify(t, NULL, NULL), DBAO_EKEY);
    free(t);
    /* Without kid: the only HS256 key is the real secret, so the MAC fails. */
    t = mint_raw("{\"alg\":\"HS256\"}", GOOD_PAYLOAD, S_RAWKEY, rsa_pub_pem, rsa_pub_pem_len);
    assert_int_equal(verify(t, NULL, NULL), DBAO_EVERIFY);
    free(t);
    t = mint_raw("{\"alg\":\"HS256\",\"kid\":\"ec1\"}", GOOD_PAYLOAD, S_RAWKEY, ec_pub_pem,
                 ec_pub_pem_len);
    assert_int_equal(verify(t, NULL, NULL), DBAO_EKEY);
    free(t);
    t = mint_raw("{\"alg\":\"HS256\",\"kid\":\"sm1\"}", GOOD_PAYLOAD, S_RAWKEY, ec_pub_point, 65);
    assert_int_equal(verify(t, NULL, NULL), DBAO_EKEY);
    free(t);
    /* RS256 header pointing at the EC key, SM2 header at the RSA key. */
    assert_int_equal(verify_str("{\"alg\":\"RS256\",\"kid\":\"ec1\"}", GOOD_PAYLOAD, S_RS),
                     DBAO_EKEY);
    assert_int_equal(verify_str("{\"alg\":\"ES256\",\"kid\":\"sm1\"}", GOOD_PAYLOAD, S_ES),
                     DBAO_EKEY);
    assert_int_equal(verify_str("{\"alg\":\"SM2\",\"kid\":\"ec1\"}", GOOD_PAYLOAD, S_SM2),
                     DBAO_EKEY);
}

static void
test_times(void **state)
{
    zt_jwt_opts o = opts_default();
    char *t;

    (void) state;
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://"
                                "idp.example\",\"aud\":\"api\",\"exp\":1799999000}",
                                S_HS),
                     DBAO_EVERIFY);
    /* exp exactly now - skew is expired; one second later is fine. */
    t = mint("{\"alg\":\"HS256\"}",
             "{\"iss\":\"https://idp.example\",\"aud\":\"api\",\"exp\":1799999970}", S_HS);
    assert_int_equal(verify(t, NULL, NULL), DBAO_EVERIFY);
    o.now = NOW - 1;
    assert_int_equal(verify(t, NULL, &o), 0);
    free(t);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://"
                                "idp.example\",\"aud\":\"api\",\"exp\":1800009000,\"nbf\":"
                                "1800000100}",
                                S_HS),
                     DBAO_EVERIFY);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://"
                                "idp.example\",\"aud\":\"api\",\"exp\":1800009000,\"nbf\":"
                                "1800000020}",
                                S_HS),
                     0);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://"
                                "idp.example\",\"aud\":\"api\",\"exp\":1800009000,\"iat\":"
                                "1800000100}",
                                S_HS),
                     DBAO_EVERIFY);
    /* No exp: refused unless allowed. */
    t = mint("{\"alg\":\"HS256\"}", "{\"iss\":\"https://idp.example\",\"aud\":\"api\"}", S_HS);
    assert_int_equal(verify(t, NULL, NULL), DBAO_EVERIFY);
    o = opts_default();
    o.allow_no_exp = true;
    assert_int_equal(verify(t, NULL, &o), 0);
    free(t);
}

static void
test_iss_aud(void **state)
{
    zt_claims c;
    char *t;

    (void) state;
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://evil.example\",\"aud\":\"api\",\"exp\":"
                                "1800009000}",
                                S_HS),
                     DBAO_EVERIFY);
    assert_int_equal(
        verify_str("{\"alg\":\"HS256\"}", "{\"aud\":\"api\",\"exp\":1800009000}", S_HS),
        DBAO_EVERIFY);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://idp.example\",\"aud\":\"other\",\"exp\":"
                                "1800009000}",
                                S_HS),
                     DBAO_EVERIFY);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://idp.example\",\"exp\":1800009000}", S_HS),
                     DBAO_EVERIFY);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://idp.example\",\"aud\":[\"x\",\"y\"],\"exp\":"
                                "1800009000}",
                                S_HS),
                     DBAO_EVERIFY);
    t = mint("{\"alg\":\"HS256\"}",
             "{\"iss\":\"https://"
             "idp.example\",\"aud\":[\"x\",\"api\"],\"exp\":1800009000,"
             "\"scope\":\"read  write admin\"}",
             S_HS);
    assert_int_equal(verify(t, &c, NULL), 0);
    assert_string_equal(c.aud, "api");
    assert_int_equal(c.num_roles, 3);
    assert_string_equal(c.roles[0], "read");
    assert_string_equal(c.roles[2], "admin");
    free(t);
}

static void
flip(char *t, size_t i)
{
    /* Change a base64url character into another valid one. */
    t[i] = t[i] == 'A' ? 'B' : 'A';
}

static void
test_tampered(void **state)
{
    const signer sg[] = {S_HS, S_ES, S_RS, S_SM2};
    const char *hdr[] = {"{\"alg\":\"HS256\"}", "{\"alg\":\"ES256\"}", "{\"alg\":\"RS256\"}",
                         "{\"alg\":\"SM2\"}"};

    (void) state;
    for (size_t a = 0; a < 4; a++) {
        char *t = mint(hdr[a], GOOD_PAYLOAD, sg[a]);
        size_t len = strlen(t), d1 = strchr(t, '.') - t, d2 = strrchr(t, '.') - t;
        size_t pos[] = {d1 + 5, d1 + 20, d2 - 5, d2 + 3, d2 + 10};

        assert_int_equal(verify(t, NULL, NULL), 0);
        for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++) {
            char save = t[pos[i]];

            flip(t, pos[i]);
            assert_int_not_equal(verify(t, NULL, NULL), 0);
            t[pos[i]] = save;
        }
        /* Truncated signature, and signature of another token. */
        t[len - 4] = '\0';
        assert_int_not_equal(verify(t, NULL, NULL), 0);
        free(t);
    }
    /* Header changed after signing (kid added): refused. */
    {
        char *a = mint("{\"alg\":\"HS256\"}", GOOD_PAYLOAD, S_HS);
        char *b = mint("{\"alg\":\"HS256\",\"kid\":\"hs1\"}", GOOD_PAYLOAD, S_HS);
        char *mix = calloc(1, strlen(a) + strlen(b));
        size_t hb = strchr(b, '.') - b;

        memcpy(mix, b, hb);
        strcat(mix, strchr(a, '.'));
        assert_int_equal(verify(mix, NULL, NULL), DBAO_EVERIFY);
        free(a);
        free(b);
        free(mix);
    }
}

static void
test_kid(void **state)
{
    zt_keyset *two;
    zt_jwt_opts o = opts_default();
    char *t;
    uint8_t sec2[32];

    (void) state;
    assert_int_equal(verify_str("{\"alg\":\"HS256\",\"kid\":\"nope\"}", GOOD_PAYLOAD, S_HS),
                     DBAO_EKEY);
    assert_int_equal(verify_str("{\"alg\":\"HS256\",\"kid\":7}", GOOD_PAYLOAD, S_HS), DBAO_EFORMAT);
    /* Two HS256 keys: a token without kid is refused, with kid it works. */
    memset(sec2, 0x42, sizeof(sec2));
    assert_int_equal(zt_keyset_new(&two, "SM2-SM3", NULL), 0);
    assert_int_equal(zt_keyset_add_hmac(two, "a", hs_secret, sizeof(hs_secret) - 1, NULL), 0);
    assert_int_equal(zt_keyset_add_hmac(two, "b", sec2, sizeof(sec2), NULL), 0);
    assert_int_equal(zt_keyset_add_hmac(two, "b", sec2, sizeof(sec2), NULL), DBAO_EINVAL);
    assert_int_equal(zt_keyset_add_hmac(two, "c", sec2, 8, NULL), DBAO_EKEY);
    assert_int_equal(zt_keyset_add_sm2(two, "s", sm2_key, NULL), 0);
    t = mint("{\"alg\":\"HS256\"}", GOOD_PAYLOAD, S_HS);
    assert_int_equal(zt_jwt_verify(two, &o, t, strlen(t), NULL, NULL), DBAO_EKEY);
    free(t);
    t = mint("{\"alg\":\"HS256\",\"kid\":\"a\"}", GOOD_PAYLOAD, S_HS);
    assert_int_equal(zt_jwt_verify(two, &o, t, strlen(t), NULL, NULL), 0);
    free(t);
    /* The SM2 alg name is the set's: "SM2" is unknown in this one. */
    t = mint("{\"alg\":\"SM2-SM3\"}", GOOD_PAYLOAD, S_SM2);
    assert_int_equal(zt_jwt_verify(two, &o, t, strlen(t), NULL, NULL), 0);
    free(t);
    t = mint("{\"alg\":\"SM2\"}", GOOD_PAYLOAD, S_SM2);
    assert_int_equal(zt_jwt_verify(two, &o, t, strlen(t), NULL, NULL), DBAO_ENOTSUP);
    free(t);
    zt_keyset_unref(two);
}

static void
test_duplicates_and_json(void **state)
{
    (void) state;
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}",
                                "{\"iss\":\"https://idp.example\",\"aud\":\"api\",\"exp\":"
                                "1800009000,\"sub\":\"alice\",\"sub\":\"admin\"}",
                                S_HS),
                     DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"alg\":\"HS256\",\"alg\":\"HS256\"}", GOOD_PAYLOAD, S_HS),
                     DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"", GOOD_PAYLOAD, S_HS), DBAO_EFORMAT);
    assert_int_equal(verify_str("[\"HS256\"]", GOOD_PAYLOAD, S_HS), DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}", "[1,2]", S_HS), DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}", "{\"exp\":1800009000,", S_HS), DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}", "", S_HS), DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"alg\":\"HS256\"}", GOOD_PAYLOAD " x", S_HS), DBAO_EFORMAT);
}

static void
test_headers_refused(void **state)
{
    (void) state;
    assert_int_equal(verify_str("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", GOOD_PAYLOAD, S_HS),
                     DBAO_ENOTSUP);
    assert_int_equal(verify_str("{\"alg\":\"HS256\",\"crit\":[]}", GOOD_PAYLOAD, S_HS),
                     DBAO_ENOTSUP);
    assert_int_equal(verify_str("{\"alg\":\"ES256\",\"jwk\":{\"kty\":\"EC\"}}", GOOD_PAYLOAD, S_ES),
                     DBAO_ENOTSUP);
    assert_int_equal(verify_str("{\"alg\":\"RS256\",\"jku\":\"https://evil\"}", GOOD_PAYLOAD, S_RS),
                     DBAO_ENOTSUP);
    assert_int_equal(verify_str("{\"alg\":\"RS256\",\"x5u\":\"https://evil\"}", GOOD_PAYLOAD, S_RS),
                     DBAO_ENOTSUP);
    assert_int_equal(verify_str("{\"alg\":\"HS256\",\"typ\":5}", GOOD_PAYLOAD, S_HS), DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"typ\":\"JWT\"}", GOOD_PAYLOAD, S_HS), DBAO_EFORMAT);
    assert_int_equal(verify_str("{\"alg\":[\"HS256\"]}", GOOD_PAYLOAD, S_HS), DBAO_EFORMAT);
}

static void
test_structure(void **state)
{
    zt_jwt_opts o = opts_default();
    char *t = mint("{\"alg\":\"HS256\"}", GOOD_PAYLOAD, S_HS), *u;
    size_t len = strlen(t);
    char big[ZT_JWT_MAX_LEN_LIMIT + 64];

    (void) state;
    u = calloc(1, len + 8);
    /* Padding on the signature, on the header. */
    snprintf(u, len + 8, "%s=", t);
    assert_int_equal(verify(u, NULL, NULL), DBAO_EFORMAT);
    snprintf(u, len + 8, "%.*s=%s", (int) (strchr(t, '.') - t), t, strchr(t, '.'));
    assert_int_equal(verify(u, NULL, NULL), DBAO_EFORMAT);
    /* Standard base64 characters, whitespace, extra dots, empty segments. */
    memcpy(u, t, len + 1);
    u[3] = '+';
    assert_int_equal(verify(u, NULL, NULL), DBAO_EFORMAT);
    snprintf(u, len + 8, " %s", t);
    assert_int_equal(verify(u, NULL, NULL), DBAO_EFORMAT);
    snprintf(u, len + 8, "%s.", t);
    assert_int_equal(verify(u, NULL, NULL), DBAO_EFORMAT);
    assert_int_equal(verify("..", NULL, NULL), DBAO_EFORMAT);
    assert_int_equal(verify("", NULL, NULL), DBAO_EFORMAT);
    assert_int_equal(verify("abc", NULL, NULL), DBAO_EFORMAT);
    /* A non-canonical last character of the signature (unused bits set). */
    memcpy(u, t, len + 1);
    {
        /* HS256 signature: 43 characters, the last one carries 2 unused bits. */
        char *last = &u[len - 1];
        const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        int v = (int) (strchr(alpha, *last) - alpha);

        *last = alpha[v | 1];
        assert_int_equal(verify(u, NULL, NULL), DBAO_EFORMAT);
    }
    /* A NUL inside the token (length given explicitly). */
    memcpy(u, t, len + 1);
    u[10] = '\0';
    assert_int_equal(zt_jwt_verify(ks, &o, u, len, NULL, NULL), DBAO_EFORMAT);
    free(u);
    /* Oversize: over the default and over a smaller configured limit. */
    memset(big, 'A', sizeof(big));
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(zt_jwt_verify(ks, &o, big, ZT_JWT_MAX_LEN_DEFAULT + 1, NULL, NULL),
                     DBAO_ERANGE);
    assert_int_equal(zt_jwt_verify(ks, &o, big, sizeof(big) - 1, NULL, NULL), DBAO_ERANGE);
    o.max_len = len - 1;
    assert_int_equal(zt_jwt_verify(ks, &o, t, len, NULL, NULL), DBAO_ERANGE);
    o.max_len = len;
    assert_int_equal(zt_jwt_verify(ks, &o, t, len, NULL, NULL), 0);
    /* Allowed algorithms. */
    o.algs = ZT_ALG_SM2 | ZT_ALG_ES256;
    assert_int_equal(zt_jwt_verify(ks, &o, t, len, NULL, NULL), DBAO_ENOTSUP);
    free(t);
}

static void
test_claim_types(void **state)
{
    static const char *const bad[] = {
        "{\"exp\":\"1800009000\"}",
        "{\"exp\":1800009000.5}",
        "{\"exp\":-1}",
        "{\"exp\":1800009000,\"nbf\":true}",
        "{\"exp\":1800009000,\"iat\":null}",
        "{\"exp\":1800009000,\"sub\":42}",
        "{\"exp\":1800009000,\"sub\":{\"a\":1}}",
        "{\"exp\":1800009000,\"sub\":\"a\\u0000b\"}",
        "{\"exp\":1800009000,\"roles\":\"admin\"}",
        "{\"exp\":1800009000,\"roles\":[1,2]}",
        "{\"exp\":1800009000,\"roles\":[[\"admin\"]]}",
        "{\"exp\":1800009000,\"roles\":[\"\"]}",
        "{\"exp\":1800009000,\"scope\":[\"a\"]}",
        "{\"exp\":1800009000,\"aud\":5}",
        "{\"exp\":1800009000,\"aud\":[\"api\",5]}",
        "{\"exp\":1800009000,\"aud\":{\"api\":1}}",
        "{\"exp\":1800009000,\"jti\":[]}",
        "{\"exp\":1800009000,\"cnf\":\"x\"}",
        "{\"exp\":1800009000,\"cnf\":{\"sm3\":\"AAAA\"}}",
        "{\"exp\":1800009000,\"cnf\":{\"sm3\":7}}",
        "{\"cnf\":{\"jwk\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"A\"}},\"exp\":1800009000}",
    };
    zt_jwt_opts o = opts_default();
    char payload[2048];

    (void) state;
    o.iss = NULL;
    o.num_aud = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *t = mint("{\"alg\":\"HS256\"}", bad[i], S_HS);

        if (verify(t, NULL, &o) == 0) {
            fail_msg("accepted claims %s", bad[i]);
        }
        free(t);
    }
    /* Too many roles, too long a sub. */
    {
        size_t n = (size_t) snprintf(payload, sizeof(payload), "{\"exp\":1800009000,\"roles\":[");
        char *t;

        for (int i = 0; i <= ZT_ROLES_MAX; i++) {
            n += (size_t) snprintf(payload + n, sizeof(payload) - n, "%s\"r%d\"", i ? "," : "", i);
        }
        snprintf(payload + n, sizeof(payload) - n, "]}");
        t = mint("{\"alg\":\"HS256\"}", payload, S_HS);
        assert_int_equal(verify(t, NULL, &o), DBAO_ERANGE);
        free(t);
        n = (size_t) snprintf(payload, sizeof(payload), "{\"exp\":1800009000,\"sub\":\"");
        memset(payload + n, 'a', ZT_CLAIM_STR_MAX);
        snprintf(payload + n + ZT_CLAIM_STR_MAX, sizeof(payload) - n - ZT_CLAIM_STR_MAX, "\"}");
        t = mint("{\"alg\":\"HS256\"}", payload, S_HS);
        assert_int_equal(verify(t, NULL, &o), DBAO_ERANGE);
        free(t);
    }
    /* Unknown claims and nested objects elsewhere are ignored. */
    {
        char *t = mint("{\"alg\":\"HS256\"}",
                       "{\"exp\":1800009000,\"x\":{\"y\":[1,{\"z\":null}]},\"sub\":\"s\"}", S_HS);

        assert_int_equal(verify(t, NULL, &o), 0);
        free(t);
    }
}

static void
test_cnf(void **state)
{
    uint8_t pub[65], th[32];
    char thb[44], x[44], y[44], payload[512];
    zt_jwt_opts o = opts_default();
    zt_claims c;
    char *t;

    (void) state;
    gm_sm2_key_get_pub(sm2_other, pub);
    gm_sm3(th, pub, 65);
    b64(thb, th, 32);
    b64(x, pub + 1, 32);
    b64(y, pub + 33, 32);
    o.require_cnf = true;
    t = mint("{\"alg\":\"SM2\"}", GOOD_PAYLOAD, S_SM2);
    assert_int_equal(verify(t, NULL, &o), DBAO_EVERIFY);
    free(t);
    snprintf(payload, sizeof(payload),
             "{\"iss\":\"https://"
             "idp.example\",\"aud\":\"api\",\"exp\":1800009000,\"cnf\":{"
             "\"sm3\":\"%s\"}}",
             thb);
    t = mint("{\"alg\":\"SM2\"}", payload, S_SM2);
    assert_int_equal(verify(t, &c, &o), 0);
    assert_true(c.has_cnf && !c.has_cnf_pub);
    assert_memory_equal(c.cnf_sm3, th, 32);
    free(t);
    snprintf(payload, sizeof(payload),
             "{\"iss\":\"https://"
             "idp.example\",\"aud\":\"api\",\"exp\":1800009000,\"cnf\":{"
             "\"sm3\":\"%s\",\"jwk\":{\"kty\":\"EC\",\"crv\":\"SM2\",\"x\":\"%"
             "s\",\"y\":\"%s\"}}}",
             thb, x, y);
    t = mint("{\"alg\":\"SM2\"}", payload, S_SM2);
    assert_int_equal(verify(t, &c, &o), 0);
    assert_true(c.has_cnf && c.has_cnf_pub);
    assert_memory_equal(c.cnf_pub, pub, 65);
    free(t);
    /* jwk not matching sm3. */
    snprintf(payload, sizeof(payload),
             "{\"iss\":\"https://"
             "idp.example\",\"aud\":\"api\",\"exp\":1800009000,\"cnf\":{"
             "\"sm3\":\"%s\",\"jwk\":{\"kty\":\"EC\",\"crv\":\"SM2\",\"x\":\"%"
             "s\",\"y\":\"%s\"}}}",
             thb, y, x);
    t = mint("{\"alg\":\"SM2\"}", payload, S_SM2);
    assert_int_not_equal(verify(t, &c, &o), 0);
    free(t);
    /* cnf x5t#S256 (RFC 8705): the mTLS binding, 32 bytes of base64url, else the token fails. */
    {
        uint8_t x5t[32];
        char x5tb[44], *json = NULL;
        zt_claims in, out;
        zt_jwt_opts o2 = opts_default();

        for (size_t i = 0; i < 32; i++) {
            x5t[i] = (uint8_t) (0xa0 + i);
        }
        b64(x5tb, x5t, 32);
        snprintf(payload, sizeof(payload),
                 "{\"iss\":\"https://idp.example\",\"aud\":\"api\",\"exp\":1800009000,"
                 "\"cnf\":{\"x5t#S256\":\"%s\"}}",
                 x5tb);
        t = mint("{\"alg\":\"SM2\"}", payload, S_SM2);
        assert_int_equal(verify(t, &c, &o2), 0);
        assert_true(c.has_cnf_x5t && !c.has_cnf && !c.has_cnf_pub);
        assert_memory_equal(c.cnf_x5t, x5t, 32);
        /* an x5t binding alone is not a device key binding */
        assert_int_equal(verify(t, &c, &o), DBAO_EVERIFY);
        free(t);
        /* 31 bytes, a number, padding: all invalid */
        b64(x5tb, x5t, 31);
        snprintf(payload, sizeof(payload),
                 "{\"aud\":\"api\",\"iss\":\"https://idp.example\",\"exp\":1800009000,"
                 "\"cnf\":{\"x5t#S256\":\"%s\"}}",
                 x5tb);
        t = mint("{\"alg\":\"SM2\"}", payload, S_SM2);
        assert_int_equal(verify(t, &c, &o2), DBAO_EFORMAT);
        assert_false(c.has_cnf_x5t);
        free(t);
        t = mint("{\"alg\":\"SM2\"}",
                 "{\"aud\":\"api\",\"iss\":\"https://idp.example\",\"exp\":1800009000,"
                 "\"cnf\":{\"x5t#S256\":7}}",
                 S_SM2);
        assert_int_equal(verify(t, &c, &o2), DBAO_EFORMAT);
        free(t);
        /* zt_claims_to_json writes it back */
        memset(&in, 0, sizeof(in));
        snprintf(in.sub, sizeof(in.sub), "dev");
        snprintf(in.iss, sizeof(in.iss), "https://idp.example");
        snprintf(in.aud, sizeof(in.aud), "api");
        in.has_exp = true;
        in.exp = 1800009000;
        in.has_cnf_x5t = true;
        memcpy(in.cnf_x5t, x5t, 32);
        assert_int_equal(zt_claims_to_json(&json, NULL, &in, NULL), 0);
        assert_non_null(strstr(json, "\"x5t#S256\""));
        t = mint("{\"alg\":\"SM2\"}", json, S_SM2);
        dbao_free(json);
        assert_int_equal(verify(t, &out, &o2), 0);
        assert_true(out.has_cnf_x5t);
        assert_memory_equal(out.cnf_x5t, x5t, 32);
        free(t);
    }
}

static void
test_keyset_loading(void **state)
{
    zt_keyset *k;
    dbao_err err = {0};
    char doc[512];
    EVP_PKEY *small;
    char *pem;
    size_t pem_len;

    (void) state;
    assert_int_equal(zt_keyset_new(&k, NULL, NULL), 0);
    /* Private members refused; nothing of the document is kept. */
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"ok\",\"k\":"
             "\"MDEyMzQ1Njc4OWFiY2RlZg\"},"
             "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"a\",\"y\":\"b\",\"d\":"
             "\"c\"}]}");
    assert_int_equal(zt_keyset_add_jwks(k, doc, strlen(doc), &err), DBAO_EINVAL);
    assert_int_equal(zt_keyset_count(k), 0);
    assert_int_equal(ADD_JWKS(k, "{\"keys\":[{\"kty\":\"oct\",\"alg\":\"RS256\","
                                 "\"k\":\"MDEyMzQ1Njc4OWFiY2RlZg\"}]}"),
                     DBAO_ENOTSUP);
    assert_int_equal(ADD_JWKS(k, "{\"keys\":[{\"kty\":\"OKP\"}]}"), DBAO_ENOTSUP);
    assert_int_equal(ADD_JWKS(k, "{\"keys\":{}}"), DBAO_EFORMAT);
    assert_int_equal(ADD_JWKS(k, "{\"keys\":[],\"keys\":[]}"), DBAO_EFORMAT);
    assert_int_equal(ADD_JWKS(k, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"MDEy\"}]}"), DBAO_EKEY);
    /* EC point off the curve. */
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%"
             "s\"}]}",
             "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
             "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_int_equal(zt_keyset_add_jwks(k, doc, strlen(doc), &err), DBAO_EKEY);
    snprintf(doc, sizeof(doc),
             "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"SM2\",\"x\":\"%s\",\"y\":\"%s\"}]}",
             "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
             "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_int_equal(zt_keyset_add_jwks(k, doc, strlen(doc), &err), DBAO_EKEY);
    assert_int_equal(zt_keyset_count(k), 0);
    /* The shared JWKS loads into a second set too; adding it twice is a duplicate
     * kid. */
    assert_int_equal(zt_keyset_add_jwks(k, jwks, strlen(jwks), &err), 0);
    assert_int_equal(zt_keyset_count(k), 4);
    assert_int_equal(zt_keyset_add_jwks(k, jwks, strlen(jwks), &err), DBAO_EINVAL);
    assert_int_equal(zt_keyset_count(k), 4);
    /* PEM: RSA, EC public, EC private (public half), SM2; RSA-1024 refused. */
    assert_int_equal(zt_keyset_add_pem(k, "rsa-pem", rsa_pub_pem, rsa_pub_pem_len, &err), 0);
    assert_int_equal(zt_keyset_add_pem(k, "ec-pem", ec_pub_pem, ec_pub_pem_len, &err), 0);
    assert_int_equal(zt_keyset_add_pem(k, "ec-priv", ec_priv_pem, strlen(ec_priv_pem), &err), 0);
    {
        char *sp = NULL;
        size_t sl = 0;

        assert_int_equal(gm_sm2_key_to_pem(sm2_key, &sp, &sl, false, NULL), 0);
        assert_int_equal(zt_keyset_add_pem(k, "sm-pem", sp, sl, &err), 0);
        dbao_free(sp);
    }
    small = EVP_RSA_gen(1024);
    pem = pem_of(small, false, &pem_len);
    assert_int_equal(zt_keyset_add_pem(k, "small", pem, pem_len, &err), DBAO_EKEY);
    free(pem);
    EVP_PKEY_free(small);
    assert_int_equal(zt_keyset_add_pem(k, "junk", "-----BEGIN", 10, &err), DBAO_EFORMAT);
    assert_int_equal(zt_keyset_count(k), 8);
    /* Tokens verify against the PEM keys by kid. */
    {
        zt_jwt_opts o = opts_default();
        char *t = mint("{\"alg\":\"RS256\",\"kid\":\"rsa-pem\"}", GOOD_PAYLOAD, S_RS);

        assert_int_equal(zt_jwt_verify(k, &o, t, strlen(t), NULL, NULL), 0);
        free(t);
        t = mint("{\"alg\":\"ES256\",\"kid\":\"ec-priv\"}", GOOD_PAYLOAD, S_ES);
        assert_int_equal(zt_jwt_verify(k, &o, t, strlen(t), NULL, NULL), 0);
        free(t);
    }
    /* Reference counting: the set survives its first unref. */
    assert_ptr_equal(zt_keyset_ref(k), k);
    zt_keyset_unref(k);
    assert_int_equal(zt_keyset_count(k), 8);
    zt_keyset_free(k);
    assert_int_equal(zt_keyset_new(&k, "none", NULL), DBAO_EINVAL);
    assert_int_equal(zt_keyset_new(&k, "HS256", NULL), DBAO_EINVAL);
    assert_int_equal(zt_keyset_new(&k, "", NULL), DBAO_EINVAL);
}

static void
test_sign_roundtrip(void **state)
{
    zt_claims c = {0}, out;
    zt_jwt_signkey key = {0};
    char *payload = NULL, *tok = NULL;
    size_t plen = 0, tlen = 0;
    dbao_err err = {0};
    const zt_alg algs[] = {ZT_ALG_HS256, ZT_ALG_ES256, ZT_ALG_SM2};

    (void) state;
    snprintf(c.sub, sizeof(c.sub), "bob");
    snprintf(c.iss, sizeof(c.iss), "https://idp.example");
    snprintf(c.aud, sizeof(c.aud), "api");
    c.has_iat = c.has_exp = true;
    c.iat = NOW - 10;
    c.exp = NOW + 900;
    c.num_roles = 2;
    snprintf(c.roles[0], ZT_ROLE_MAX, "clerk");
    snprintf(c.roles[1], ZT_ROLE_MAX, "viewer");
    c.has_cnf = true;
    memset(c.cnf_sm3, 0xab, 32);
    assert_int_equal(zt_claims_to_json(&payload, &plen, &c, &err), 0);
    for (size_t i = 0; i < 3; i++) {
        memset(&key, 0, sizeof(key));
        key.alg = algs[i];
        key.secret = hs_secret;
        key.secret_len = sizeof(hs_secret) - 1;
        key.pem = ec_priv_pem;
        key.pem_len = strlen(ec_priv_pem);
        key.sm2 = sm2_key;
        key.kid = i == 0 ? "hs1" : i == 1 ? "ec1" : "sm1";
        assert_int_equal(zt_jwt_sign(&tok, &tlen, &key, payload, plen, &err), 0);
        assert_int_equal(tlen, strlen(tok));
        assert_int_equal(verify(tok, &out, NULL), 0);
        assert_string_equal(out.sub, "bob");
        assert_int_equal(out.num_roles, 2);
        assert_string_equal(out.roles[1], "viewer");
        assert_true(out.has_cnf);
        assert_memory_equal(out.cnf_sm3, c.cnf_sm3, 32);
        dbao_free(tok);
    }
    key.alg = ZT_ALG_RS256;
    assert_int_equal(zt_jwt_sign(&tok, &tlen, &key, payload, plen, &err), DBAO_ENOTSUP);
    key.alg = ZT_ALG_SM2;
    key.sm2 = sm2_other;
    {
        gm_sm2_key *pubonly;
        uint8_t pub[65];

        gm_sm2_key_get_pub(sm2_other, pub);
        assert_int_equal(gm_sm2_key_from_pub(&pubonly, pub, 65, NULL), 0);
        key.sm2 = pubonly;
        assert_int_equal(zt_jwt_sign(&tok, &tlen, &key, payload, plen, &err), DBAO_EKEY);
        gm_sm2_key_free(pubonly);
    }
    assert_int_equal(zt_jwt_sign(&tok, &tlen, &key, "{\"a\":1,\"a\":2}", 13, &err), DBAO_EFORMAT);
    dbao_free(payload);
}

static void
test_alloc_failures(void **state)
{
    int done = 0;

    (void) state;
    /* Fail each of our own allocations in turn (jansson and OpenSSL allocate elsewhere): every
     * call either succeeds or reports DBAO_ENOMEM, and nothing leaks (ASan). */
    for (long n = 0; n < 64 && !done; n++) {
        zt_keyset *k = NULL;
        int rc;

        dbao_alloc_fail_after(n, false);
        rc = zt_keyset_new(&k, NULL, NULL);
        if (rc == 0) {
            rc = zt_keyset_add_jwks(k, jwks, strlen(jwks), NULL);
            if (rc == 0) {
                rc = zt_keyset_add_pem(k, "p", rsa_pub_pem, rsa_pub_pem_len, NULL);
            }
            done = rc == 0;
        }
        dbao_alloc_fail_after(-1, false);
        assert_true(rc == 0 || rc == DBAO_ENOMEM);
        zt_keyset_unref(k);
    }
    assert_true(done);
}

typedef struct thr_arg {
    char *tok[4];
    int failures;
} thr_arg;

static void *
thr_verify(void *p)
{
    thr_arg *a = p;
    zt_jwt_opts o = opts_default();

    for (int i = 0; i < 100; i++) {
        const char *t = a->tok[i % 4];
        zt_claims c;

        if (zt_jwt_verify(ks, &o, t, strlen(t), &c, NULL) != 0 || strcmp(c.sub, "alice") != 0) {
            a->failures++;
        }
    }
    return NULL;
}

static void
test_threads_share_keyset(void **state)
{
    pthread_t th[4];
    thr_arg a[4];
    char *tok[4];

    (void) state;
    tok[0] = mint("{\"alg\":\"HS256\"}", GOOD_PAYLOAD, S_HS);
    tok[1] = mint("{\"alg\":\"ES256\"}", GOOD_PAYLOAD, S_ES);
    tok[2] = mint("{\"alg\":\"RS256\"}", GOOD_PAYLOAD, S_RS);
    tok[3] = mint("{\"alg\":\"SM2\"}", GOOD_PAYLOAD, S_SM2);
    for (int i = 0; i < 4; i++) {
        memset(&a[i], 0, sizeof(a[i]));
        memcpy(a[i].tok, tok, sizeof(tok));
        assert_int_equal(pthread_create(&th[i], NULL, thr_verify, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].failures, 0);
    }
    for (int i = 0; i < 4; i++) {
        free(tok[i]);
    }
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
test_verify_cost(void **state)
{
    const char *hdr[] = {
        "{\"alg\":\"HS256\",\"kid\":\"hs1\"}", "{\"alg\":\"ES256\",\"kid\":\"ec1\"}",
        "{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", "{\"alg\":\"SM2\",\"kid\":\"sm1\"}"};
    const char *name[] = {"HS256", "ES256", "RS256", "SM2"};
    const signer sg[] = {S_HS, S_ES, S_RS, S_SM2};
    zt_jwt_opts o = opts_default();

    (void) state;
    for (size_t a = 0; a < 4; a++) {
        char *t = mint(hdr[a], GOOD_PAYLOAD, sg[a]);
        size_t len = strlen(t), n = 0;
        double t0 = now_s(), dt;

        do {
            for (int i = 0; i < 50; i++) {
                assert_int_equal(zt_jwt_verify(ks, &o, t, len, NULL, NULL), 0);
            }
            n += 50;
            dt = now_s() - t0;
        } while (dt < 0.25);
        printf("    zt_jwt_verify %-5s %4zu-byte token: %8.2f us/token (%zu in "
               "%.2f s)\n",
               name[a], len, dt / (double) n * 1e6, n, dt);
        free(t);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_valid_each_alg),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_alg_confusion),
        cmocka_unit_test(test_times),
        cmocka_unit_test(test_iss_aud),
        cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_kid),
        cmocka_unit_test(test_duplicates_and_json),
        cmocka_unit_test(test_headers_refused),
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_claim_types),
        cmocka_unit_test(test_cnf),
        cmocka_unit_test(test_keyset_loading),
        cmocka_unit_test(test_sign_roundtrip),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_threads_share_keyset),
        cmocka_unit_test(test_verify_cost),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
