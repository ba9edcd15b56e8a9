/* sm2.c: SM2 keys, signatures (GB/T 32918.2) and public-key encryption (GB/T 32918.4).
 *
 * Three paths compute the curve arithmetic: dengbao's constant-time SM2 core (sm2p256.c) in
 * its "x86-adx" form (BMI2/ADX assembly, the default where the CPU has it) or its "portable"
 * C form, and "openssl", OpenSSL 3's EVP_PKEY of type "SM2", kept as the reference that the
 * tests compare against (gm_impl_use). dengbao owns everything around the
 * arithmetic, because that is where the traps are (../shared/GM-NOTES.md):
 *   - Z is always computed here, with the caller's distinguishing ID (default
 *     "1234567812345678"), and OpenSSL signs e = SM3(Z || M) at digest level, so its empty-ID
 *     default can never leak in.
 *   - Keys are validated here: 1 <= d <= n - 2, public points on the curve with coordinates
 *     below p, the public key of a private key re-derived and compared with any stored one.
 *   - Signatures and ciphertexts are parsed by our strict DER code (der.c) and re-encoded
 *     canonically before OpenSSL sees them.
 *
 * A gm_sm2_key holds d (when private), the public point 04||x||y, an EVP_PKEY built from
 * them (for the openssl path and PEM) and optionally a verification table; it is immutable
 * after creation (and gm_sm2_key_precompute), so one key may serve many threads.
 *
 * Encryption on the fast path (GB/T 32918.4): k in [1, n-1], C1 = kG, (x2, y2) = kP,
 * t = KDF(x2 || y2, len M) with KDF(Z, l) = SM3(Z || 00000001) || SM3(Z || 00000002) || ...,
 * retry if t is all zero, C2 = M xor t, C3 = SM3(x2 || M || y2). Decryption recomputes
 * (x2, y2) = d C1 in constant time and releases M only after C3 matches (constant-time
 * compare).
 */
#include "internal.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>

#include "sm2p256.h"

struct gm_sm2_key {
    bool has_priv;
    uint8_t d[GM_SM2_PRIV_LEN];
    uint8_t pub[GM_SM2_PUB_LEN];
    EVP_PKEY *pkey;
    gm__sm2p_pubtab *tab; /* NULL until gm_sm2_key_precompute */
};

struct gm_sm2_signer {
    gm__sm2p_signctx *ctx; /* NULL on the openssl path: then sign through key */
    const gm_sm2_key *key;
};

/* The active SM2 core path (x86-adx or portable); only called when gm__sm2_fast(). */
static const gm__sm2p_impl *
gm__active_sm2p(void)
{
    return gm__sm2p_impl_get(gm__sm2_core());
}

static int
rand_cb(void *arg, uint8_t *buf, size_t len)
{
    (void) arg;
    return gm_rand_bytes(buf, len);
}

/* The recommended curve (GB/T 32918.5): a, b, G, n; p is used for range checks. */
static const uint8_t sm2_p[32] = {0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00,
                                  0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
static const uint8_t sm2_a[32] = {0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                  0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00,
                                  0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFC};
static const uint8_t sm2_b[32] = {0x28, 0xE9, 0xFA, 0x9E, 0x9D, 0x9F, 0x5E, 0x34, 0x4D, 0x5A, 0x9E,
                                  0x4B, 0xCF, 0x65, 0x09, 0xA7, 0xF3, 0x97, 0x89, 0xF5, 0x15, 0xAB,
                                  0x8F, 0x92, 0xDD, 0xBC, 0xBD, 0x41, 0x4D, 0x94, 0x0E, 0x93};
static const uint8_t sm2_gx[32] = {0x32, 0xC4, 0xAE, 0x2C, 0x1F, 0x19, 0x81, 0x19, 0x5F, 0x99, 0x04,
                                   0x46, 0x6A, 0x39, 0xC9, 0x94, 0x8F, 0xE3, 0x0B, 0xBF, 0xF2, 0x66,
                                   0x0B, 0xE1, 0x71, 0x5A, 0x45, 0x89, 0x33, 0x4C, 0x74, 0xC7};
static const uint8_t sm2_gy[32] = {0xBC, 0x37, 0x36, 0xA2, 0xF4, 0xF6, 0x77, 0x9C, 0x59, 0xBD, 0xCE,
                                   0xE3, 0x6B, 0x69, 0x21, 0x53, 0xD0, 0xA9, 0x87, 0x7C, 0xC6, 0x2A,
                                   0x47, 0x40, 0x02, 0xDF, 0x32, 0xE5, 0x21, 0x39, 0xF0, 0xA0};
static const uint8_t sm2_n_minus_1[32] = {
    0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0x72, 0x03, 0xDF, 0x6B, 0x21, 0xC6, 0x05, 0x2B, 0x53, 0xBB, 0xF4, 0x09, 0x39, 0xD5, 0x41, 0x22};

static EC_GROUP *sm2_group;
static pthread_once_t sm2_group_once = PTHREAD_ONCE_INIT;

static void
sm2_group_init(void)
{
    sm2_group = EC_GROUP_new_by_curve_name(NID_sm2);
}

static const EC_GROUP *
group_get(void)
{
    pthread_once(&sm2_group_once, sm2_group_init);
    return sm2_group;
}

/* Big-endian comparison in constant time: returns -1, 0 or 1. */
static int
cmp32(const uint8_t a[32], const uint8_t b[32])
{
    int gt = 0, lt = 0, i;

    for (i = 0; i < 32; i++) {
        int decided = gt | lt;
        int g = a[i] > b[i], l = a[i] < b[i];

        gt |= g & !decided;
        lt |= l & !decided;
    }
    return gt - lt;
}

static bool
is_zero32(const uint8_t v[32])
{
    uint8_t acc = 0;
    int i;

    for (i = 0; i < 32; i++) {
        acc |= v[i];
    }
    return acc == 0;
}

/* 1 <= d <= n - 2 (d = n - 1 makes 1 + d non-invertible in signing). */
static bool
priv_in_range(const uint8_t d[32])
{
    return !is_zero32(d) && cmp32(d, sm2_n_minus_1) < 0;
}

static bool
scalar_in_range(const uint8_t v[32]) /* 1 <= v <= n - 1 */
{
    return !is_zero32(v) && cmp32(v, sm2_n_minus_1) <= 0;
}

/* Checks an uncompressed point and returns it normalised; accepts compressed input too. */
static int
point_decode(uint8_t out[65], const uint8_t *in, size_t in_len, dbao_err *err)
{
    const EC_GROUP *g = group_get();
    EC_POINT *pt = NULL;
    int rc = 0;

    if (g == NULL) {
        return dbao_err_set(err, DBAO_ECRYPTO, "sm2 curve unavailable in openssl");
    }
    if (!((in_len == 65 && in[0] == 0x04) || (in_len == 33 && (in[0] == 0x02 || in[0] == 0x03)))) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "sm2 public key must be 04||x||y (65 bytes) or 02/03||x (33 bytes), "
                            "got %zu bytes",
                            in_len);
    }
    if (cmp32(in + 1, sm2_p) >= 0 || (in_len == 65 && cmp32(in + 33, sm2_p) >= 0)) {
        return dbao_err_set(err, DBAO_EKEY, "sm2 public key coordinate is not below p");
    }
    if (in_len == 65 && gm__sm2_fast()) {
        if (gm__sm2p_point_check(in + 1) != 0) {
            return dbao_err_set(err, DBAO_EKEY, "sm2 public key is not a point on the curve");
        }
        memcpy(out, in, 65);
        return 0;
    }
    pt = EC_POINT_new(g);
    if (pt == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    if (EC_POINT_oct2point(g, pt, in, in_len, NULL) != 1 || EC_POINT_is_at_infinity(g, pt) ||
        EC_POINT_is_on_curve(g, pt, NULL) != 1) {
        rc = dbao_err_set(err, DBAO_EKEY, "sm2 public key is not a point on the curve");
        goto out;
    }
    if (EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, out, 65, NULL) != 65) {
        rc = dbao_err_set(err, DBAO_ECRYPTO, "cannot encode sm2 point");
    }
out:
    EC_POINT_free(pt);
    ERR_clear_error();
    return rc;
}

/* out = d * G, uncompressed. */
static int
point_from_priv(uint8_t out[65], const uint8_t d[32])
{
    const EC_GROUP *g;

    if (gm__sm2_fast()) {
        out[0] = 0x04;
        return gm__active_sm2p()->base_mul(out + 1, d) == 0 ? 0 : DBAO_EKEY;
    }
    g = group_get();
    EC_POINT *pt = NULL;
    BIGNUM *bn = NULL;
    int rc = DBAO_ECRYPTO;

    if (g == NULL) {
        return DBAO_ECRYPTO;
    }
    pt = EC_POINT_new(g);
    bn = BN_secure_new();
    if (pt == NULL || bn == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    BN_set_flags(bn, BN_FLG_CONSTTIME);
    if (BN_bin2bn(d, 32, bn) == NULL || EC_POINT_mul(g, pt, bn, NULL, NULL, NULL) != 1 ||
        EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, out, 65, NULL) != 65) {
        goto out;
    }
    rc = 0;
out:
    BN_clear_free(bn);
    EC_POINT_free(pt);
    ERR_clear_error();
    return rc;
}

/* Builds the EVP_PKEY of type SM2 from validated raw parts. */
static int
pkey_build(EVP_PKEY **out, const uint8_t *d, const uint8_t pub[65])
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    BIGNUM *bn = NULL;
    int rc = DBAO_ECRYPTO;

    *out = NULL;
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "SM2", 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, 65) != 1) {
        goto out;
    }
    if (d != NULL) {
        bn = BN_secure_new();
        if (bn == NULL || BN_bin2bn(d, 32, bn) == NULL ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn) != 1) {
            goto out;
        }
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "SM2", NULL);
    if (params == NULL || pctx == NULL || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, out, d != NULL ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) !=
            1) {
        goto out;
    }
    rc = 0;
out:
    EVP_PKEY_CTX_free(pctx);
    /* d came in a BN_secure_new BIGNUM, so the builder put the parameters in OpenSSL's secure
     * heap and OSSL_PARAM_free clears them. */
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(bn);
    ERR_clear_error();
    return rc;
}

static int
key_new(gm_sm2_key **out, const uint8_t *d, const uint8_t pub[65], dbao_err *err)
{
    gm_sm2_key *k;
    int rc;

    k = dbao_calloc(1, sizeof(*k));
    if (k == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    if (d != NULL) {
        k->has_priv = true;
        memcpy(k->d, d, 32);
    }
    memcpy(k->pub, pub, 65);
    rc = pkey_build(&k->pkey, d, pub);
    if (rc != 0) {
        gm_sm2_key_free(k);
        return dbao_err_set(err, rc, "cannot build sm2 key in openssl");
    }
    *out = k;
    return 0;
}

void
gm_sm2_key_free(gm_sm2_key *key)
{
    if (key != NULL) {
        EVP_PKEY_free(key->pkey);
        gm__sm2p_pubtab_free(key->tab);
        dbao_free_secret(key, sizeof(*key));
    }
}

int
gm_sm2_key_from_priv(gm_sm2_key **out, const uint8_t *d, size_t d_len, dbao_err *err)
{
    uint8_t pub[65];
    int rc;

    *out = NULL;
    if (d_len != GM_SM2_PRIV_LEN) {
        return dbao_err_set(err, DBAO_EKEY, "sm2 private key must be 32 bytes, got %zu", d_len);
    }
    if (!priv_in_range(d)) {
        return dbao_err_set(err, DBAO_EKEY, "sm2 private key out of range [1, n-2]");
    }
    rc = point_from_priv(pub, d);
    if (rc != 0) {
        return dbao_err_set(err, rc, "cannot derive sm2 public key");
    }
    return key_new(out, d, pub, err);
}

int
gm_sm2_key_from_pub(gm_sm2_key **out, const uint8_t *pub, size_t pub_len, dbao_err *err)
{
    uint8_t p[65];
    int rc;

    *out = NULL;
    rc = point_decode(p, pub, pub_len, err);
    if (rc != 0) {
        return rc;
    }
    return key_new(out, NULL, p, err);
}

int
gm_sm2_key_generate(gm_sm2_key **out, dbao_err *err)
{
    uint8_t d[32];
    int rc, tries;

    *out = NULL;
    /* Rejection sampling: the chance of a retry is about 2^-32. */
    for (tries = 0; tries < 64; tries++) {
        rc = gm_rand_bytes(d, sizeof(d));
        if (rc != 0) {
            return dbao_err_set(err, rc, "random generator failed");
        }
        if (priv_in_range(d)) {
            rc = gm_sm2_key_from_priv(out, d, sizeof(d), err);
            dbao_cleanse(d, sizeof(d));
            return rc;
        }
    }
    dbao_cleanse(d, sizeof(d));
    return dbao_err_set(err, DBAO_ECRYPTO, "random generator keeps giving out-of-range values");
}

/* Turns any EVP_PKEY on the SM2 curve into a validated gm_sm2_key. */
static int
key_from_evp(gm_sm2_key **out, EVP_PKEY *pkey, dbao_err *err)
{
    char group[64];
    uint8_t d[32], pub[133], derived[65];
    size_t group_len = 0, pub_len = 0;
    BIGNUM *bn = NULL;
    bool has_pub;
    int rc;

    if (!EVP_PKEY_is_a(pkey, "SM2") && !EVP_PKEY_is_a(pkey, "EC")) {
        return dbao_err_set(err, DBAO_EKEY, "not an sm2 key (type %s)",
                            EVP_PKEY_get0_type_name(pkey));
    }
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &group_len) != 1 ||
        strcmp(group, "SM2") != 0) {
        return dbao_err_set(err, DBAO_EKEY, "key is not on the sm2 curve");
    }
    has_pub = EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub),
                                              &pub_len) == 1;
    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn) == 1) {
        if (BN_num_bytes(bn) > 32 || BN_bn2binpad(bn, d, 32) != 32) {
            BN_clear_free(bn);
            return dbao_err_set(err, DBAO_EKEY, "sm2 private key out of range [1, n-2]");
        }
        BN_clear_free(bn);
        rc = gm_sm2_key_from_priv(out, d, 32, err);
        dbao_cleanse(d, sizeof(d));
        if (rc == 0 && has_pub) {
            if (point_decode(derived, pub, pub_len, NULL) != 0 ||
                memcmp(derived, (*out)->pub, 65) != 0) {
                gm_sm2_key_free(*out);
                *out = NULL;
                rc = dbao_err_set(err, DBAO_EKEY, "public key does not match the private key");
            }
        }
        return rc;
    }
    if (!has_pub) {
        return dbao_err_set(err, DBAO_EKEY, "key has neither a private nor a public part");
    }
    return gm_sm2_key_from_pub(out, pub, pub_len, err);
}

static int
no_password(char *buf, int size, int rwflag, void *u)
{
    (void) buf, (void) size, (void) rwflag, (void) u;
    return -1;
}

int
gm_sm2_key_from_pem(gm_sm2_key **out, const char *pem, size_t pem_len, dbao_err *err)
{
    EVP_PKEY *pkey = NULL;
    BIO *bio;
    int rc;

    *out = NULL;
    if (pem_len > INT32_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "pem too large");
    }
    if (memmem(pem, pem_len, "-----BEGIN ENCRYPTED PRIVATE KEY-----", 37) != NULL ||
        memmem(pem, pem_len, "Proc-Type: 4,ENCRYPTED", 22) != NULL) {
        return dbao_err_set(err, DBAO_ENOTSUP, "encrypted pem keys are not supported");
    }
    bio = BIO_new_mem_buf(pem, (int) pem_len);
    if (bio == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    if (memmem(pem, pem_len, "PRIVATE KEY-----", 16) != NULL) {
        pkey = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    } else if (memmem(pem, pem_len, "-----BEGIN PUBLIC KEY-----", 26) != NULL) {
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_password, NULL);
    }
    BIO_free(bio);
    ERR_clear_error();
    if (pkey == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "not a readable pem private or public key");
    }
    rc = key_from_evp(out, pkey, err);
    EVP_PKEY_free(pkey);
    return rc;
}

int
gm_sm2_key_from_der(gm_sm2_key **out, const uint8_t *der, size_t der_len, dbao_err *err)
{
    EVP_PKEY *pkey = NULL;
    const unsigned char *p;
    int rc;

    *out = NULL;
    if (der_len > INT32_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "der too large");
    }
    p = der;
    pkey = d2i_AutoPrivateKey(NULL, &p, (long) der_len);
    if (pkey != NULL && p != der + der_len) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    if (pkey == NULL) {
        p = der;
        pkey = d2i_PUBKEY(NULL, &p, (long) der_len);
        if (pkey != NULL && p != der + der_len) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
    }
    ERR_clear_error();
    if (pkey == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "not a der pkcs#8 or subjectpublickeyinfo key");
    }
    rc = key_from_evp(out, pkey, err);
    EVP_PKEY_free(pkey);
    return rc;
}

int
gm_sm2_key_to_pem(const gm_sm2_key *key, char **out, size_t *out_len, bool with_priv, dbao_err *err)
{
    BIO *bio;
    BUF_MEM *mem = NULL;
    char *buf;
    int ok;

    *out = NULL;
    *out_len = 0;
    if (with_priv && !key->has_priv) {
        return dbao_err_set(err, DBAO_EKEY, "key has no private part");
    }
    bio = BIO_new(BIO_s_secmem());
    if (bio == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    ok = with_priv ? PEM_write_bio_PrivateKey(bio, key->pkey, NULL, NULL, 0, NULL, NULL)
                   : PEM_write_bio_PUBKEY(bio, key->pkey);
    if (ok == 1) {
        BIO_get_mem_ptr(bio, &mem);
    }
    if (ok != 1 || mem == NULL) {
        BIO_free(bio);
        ERR_clear_error();
        return dbao_err_set(err, DBAO_ECRYPTO, "cannot encode sm2 key as pem");
    }
    buf = dbao_malloc(mem->length + 1);
    if (buf == NULL) {
        BIO_free(bio);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    memcpy(buf, mem->data, mem->length);
    buf[mem->length] = '\0';
    *out = buf;
    *out_len = mem->length;
    BIO_free(bio); /* a secmem BIO wipes its buffer */
    return 0;
}

bool
gm_sm2_key_has_priv(const gm_sm2_key *key)
{
    return key->has_priv;
}

void
gm_sm2_key_get_pub(const gm_sm2_key *key, uint8_t out[GM_SM2_PUB_LEN])
{
    memcpy(out, key->pub, GM_SM2_PUB_LEN);
}

int
gm_sm2_key_get_priv(const gm_sm2_key *key, uint8_t out[GM_SM2_PRIV_LEN])
{
    if (!key->has_priv) {
        return DBAO_EKEY;
    }
    memcpy(out, key->d, GM_SM2_PRIV_LEN);
    return 0;
}

/* ---- signatures -------------------------------------------------------------------------- */

int
gm_sm2_compute_z(uint8_t z[GM_SM3_DIGEST_LEN], const gm_sm2_key *key, const uint8_t *id,
                 size_t id_len)
{
    gm_sm3_ctx c;
    uint8_t entl[2];

    if (id_len > GM_SM2_ID_MAX) {
        return DBAO_ERANGE;
    }
    entl[0] = (uint8_t) ((id_len * 8) >> 8);
    entl[1] = (uint8_t) (id_len * 8);
    gm_sm3_init(&c);
    gm_sm3_update(&c, entl, 2);
    gm_sm3_update(&c, id, id_len);
    gm_sm3_update(&c, sm2_a, 32);
    gm_sm3_update(&c, sm2_b, 32);
    gm_sm3_update(&c, sm2_gx, 32);
    gm_sm3_update(&c, sm2_gy, 32);
    gm_sm3_update(&c, key->pub + 1, 64);
    gm_sm3_final(&c, z);
    return 0;
}

int
gm_sm2_compute_e(uint8_t e[GM_SM3_DIGEST_LEN], const gm_sm2_key *key, const uint8_t *id,
                 size_t id_len, const uint8_t *msg, size_t msg_len)
{
    gm_sm3_ctx c;
    uint8_t z[32];
    int rc;

    rc = gm_sm2_compute_z(z, key, id, id_len);
    if (rc != 0) {
        return rc;
    }
    gm_sm3_init(&c);
    gm_sm3_update(&c, z, 32);
    gm_sm3_update(&c, msg, msg_len);
    gm_sm3_final(&c, e);
    return 0;
}

int
gm_sm2_sign_digest(const gm_sm2_key *key, uint8_t sig[GM_SM2_SIG_RAW_LEN],
                   const uint8_t e[GM_SM3_DIGEST_LEN])
{
    EVP_PKEY_CTX *pctx;
    uint8_t der[GM_SM2_SIG_DER_MAX + 8];
    size_t der_len = sizeof(der);
    int rc = DBAO_ECRYPTO;

    if (!key->has_priv) {
        return DBAO_EKEY;
    }
    if (gm__sm2_fast()) {
        return gm__active_sm2p()->sign(sig, sig + 32, key->d, e, rand_cb, NULL) == 0 ? 0
                                                                                     : DBAO_ECRYPTO;
    }
    pctx = EVP_PKEY_CTX_new(key->pkey, NULL);
    if (pctx == NULL) {
        return DBAO_ENOMEM;
    }
    if (EVP_PKEY_sign_init(pctx) == 1 && EVP_PKEY_sign(pctx, der, &der_len, e, 32) == 1 &&
        gm_sm2_sig_from_der(sig, der, der_len) == 0) {
        rc = 0;
    }
    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();
    return rc;
}

int
gm_sm2_sign(const gm_sm2_key *key, uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *id,
            size_t id_len, const uint8_t *msg, size_t msg_len)
{
    uint8_t e[32];
    int rc = gm_sm2_compute_e(e, key, id, id_len, msg, msg_len);

    return rc != 0 ? rc : gm_sm2_sign_digest(key, sig, e);
}

int
gm_sm2_verify_digest(const gm_sm2_key *key, const uint8_t sig[GM_SM2_SIG_RAW_LEN],
                     const uint8_t e[GM_SM3_DIGEST_LEN])
{
    EVP_PKEY_CTX *pctx;
    uint8_t der[GM_SM2_SIG_DER_MAX];
    size_t der_len;
    int rc;

    if (!scalar_in_range(sig) || !scalar_in_range(sig + 32)) {
        return DBAO_EVERIFY;
    }
    if (gm__sm2_fast()) {
        rc = key->tab != NULL ? gm__active_sm2p()->verify_tab(key->tab, e, sig, sig + 32)
                              : gm__active_sm2p()->verify(key->pub + 1, e, sig, sig + 32);
        return rc == 0 ? 0 : DBAO_EVERIFY;
    }
    gm_sm2_sig_to_der(der, &der_len, sig);
    pctx = EVP_PKEY_CTX_new(key->pkey, NULL);
    if (pctx == NULL) {
        return DBAO_ENOMEM;
    }
    if (EVP_PKEY_verify_init(pctx) != 1) {
        rc = DBAO_ECRYPTO;
    } else {
        rc = EVP_PKEY_verify(pctx, der, der_len, e, 32) == 1 ? 0 : DBAO_EVERIFY;
    }
    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();
    return rc;
}

int
gm_sm2_verify(const gm_sm2_key *key, const uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *id,
              size_t id_len, const uint8_t *msg, size_t msg_len)
{
    uint8_t e[32];
    int rc = gm_sm2_compute_e(e, key, id, id_len, msg, msg_len);

    return rc != 0 ? rc : gm_sm2_verify_digest(key, sig, e);
}

/* ---- encryption -------------------------------------------------------------------------- */

/* KDF of GB/T 32918.4 over z = x2 || y2, xored into out: out = in xor KDF(z, len). Returns
 * true if the key stream was all zero (the caller must then retry or fail). */
static bool
kdf_xor(uint8_t *out, const uint8_t *in, size_t len, const uint8_t z[64])
{
    uint8_t block[32], ctr[4], acc = 0;
    uint32_t i = 1;
    size_t off = 0, j;

    while (off < len) {
        gm_sm3_ctx c;
        size_t n = len - off < 32 ? len - off : 32;

        gm__store_be32(ctr, i++);
        gm_sm3_init(&c);
        gm_sm3_update(&c, z, 64);
        gm_sm3_update(&c, ctr, 4);
        gm_sm3_final(&c, block);
        for (j = 0; j < n; j++) {
            acc |= block[j];
            out[off + j] = in[off + j] ^ block[j];
        }
        off += n;
    }
    dbao_cleanse(block, sizeof(block));
    return acc == 0;
}

/* C3 = SM3(x2 || M || y2) */
static void
c3_hash(uint8_t c3[32], const uint8_t xy[64], const uint8_t *m, size_t m_len)
{
    gm_sm3_ctx c;

    gm_sm3_init(&c);
    gm_sm3_update(&c, xy, 32);
    gm_sm3_update(&c, m, m_len);
    gm_sm3_update(&c, xy + 32, 32);
    gm_sm3_final(&c, c3);
}

static int
fast_encrypt(const gm_sm2_key *key, uint8_t **out, size_t *out_len, gm_sm2_ct_form form,
             const uint8_t *msg, size_t msg_len)
{
    uint8_t k[32], c1[65], xy[64], c3[32], *c2;
    int rc = DBAO_ECRYPTO, tries;

    c2 = dbao_malloc(msg_len);
    if (c2 == NULL) {
        return DBAO_ENOMEM;
    }
    for (tries = 0; tries < 64; tries++) {
        rc = gm_rand_bytes(k, sizeof(k));
        if (rc != 0) {
            break;
        }
        rc = DBAO_ECRYPTO;
        if (!scalar_in_range(k)) {
            continue; /* rejection sampling into [1, n-1] */
        }
        c1[0] = 0x04;
        if (gm__active_sm2p()->base_mul(c1 + 1, k) != 0 ||
            gm__active_sm2p()->point_mul(xy, k, key->pub + 1) != 0) {
            break;
        }
        if (kdf_xor(c2, msg, msg_len, xy)) {
            continue; /* t = 0: draw another k, as the standard says */
        }
        c3_hash(c3, xy, msg, msg_len);
        rc = gm__sm2_ct_encode(out, out_len, form, c1, c3, c2, msg_len);
        break;
    }
    dbao_cleanse(k, sizeof(k));
    dbao_cleanse(xy, sizeof(xy));
    dbao_free_secret(c2, msg_len);
    return rc;
}

static int
fast_decrypt(const gm_sm2_key *key, uint8_t **out, size_t *out_len, const gm__sm2_ct_parts *ct)
{
    uint8_t xy[64], c3[32], *m;
    int rc = 0;

    m = dbao_malloc(ct->c2_len);
    if (m == NULL) {
        return DBAO_ENOMEM;
    }
    if (gm__active_sm2p()->point_mul(xy, key->d, ct->c1 + 1) != 0) {
        rc = DBAO_EFORMAT;
    } else if (kdf_xor(m, ct->c2, ct->c2_len, xy)) {
        rc = DBAO_EVERIFY; /* t = 0 cannot come from a real encryption */
    } else {
        c3_hash(c3, xy, m, ct->c2_len);
        if (!dbao_ct_memeq(c3, ct->c3, 32)) {
            rc = DBAO_EVERIFY;
        }
    }
    dbao_cleanse(xy, sizeof(xy));
    if (rc != 0) {
        dbao_free_secret(m, ct->c2_len);
        return rc;
    }
    *out = m;
    *out_len = ct->c2_len;
    return 0;
}

int
gm_sm2_encrypt(const gm_sm2_key *key, uint8_t **out, size_t *out_len, gm_sm2_ct_form form,
               const uint8_t *msg, size_t msg_len)
{
    EVP_PKEY_CTX *pctx = NULL;
    uint8_t *der = NULL;
    size_t der_len = 0;
    int rc = DBAO_ECRYPTO;

    *out = NULL;
    *out_len = 0;
    if (msg_len == 0 || msg_len > ((size_t) 1 << 30)) {
        return DBAO_ERANGE;
    }
    if (form != GM_SM2_CT_DER && form != GM_SM2_CT_C1C3C2 && form != GM_SM2_CT_C1C2C3) {
        return DBAO_EINVAL;
    }
    if (gm__sm2_fast()) {
        return fast_encrypt(key, out, out_len, form, msg, msg_len);
    }
    pctx = EVP_PKEY_CTX_new(key->pkey, NULL);
    if (pctx == NULL) {
        return DBAO_ENOMEM;
    }
    if (EVP_PKEY_encrypt_init(pctx) != 1 ||
        EVP_PKEY_encrypt(pctx, NULL, &der_len, msg, msg_len) != 1) {
        goto out;
    }
    der = dbao_malloc(der_len);
    if (der == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (EVP_PKEY_encrypt(pctx, der, &der_len, msg, msg_len) != 1) {
        goto out;
    }
    /* Re-encode through our parser even for DER, so the output is always canonical. */
    rc = gm_sm2_ct_convert(out, out_len, form, der, der_len, GM_SM2_CT_DER);
out:
    dbao_free(der);
    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();
    return rc;
}

int
gm_sm2_decrypt(const gm_sm2_key *key, uint8_t **out, size_t *out_len, gm_sm2_ct_form form,
               const uint8_t *ct, size_t ct_len)
{
    EVP_PKEY_CTX *pctx = NULL;
    gm__sm2_ct_parts parts;
    uint8_t *der = NULL, *pt = NULL, c1[65];
    size_t der_len = 0, pt_len = 0, pt_cap = 0;
    int rc;

    *out = NULL;
    *out_len = 0;
    if (!key->has_priv) {
        return DBAO_EKEY;
    }
    rc = gm__sm2_ct_parse(&parts, form, ct, ct_len);
    if (rc != 0) {
        return rc;
    }
    if (point_decode(c1, parts.c1, 65, NULL) != 0) {
        return DBAO_EFORMAT; /* C1 not on the curve: not an SM2 ciphertext */
    }
    if (gm__sm2_fast()) {
        return fast_decrypt(key, out, out_len, &parts);
    }
    rc = gm__sm2_ct_encode(&der, &der_len, GM_SM2_CT_DER, parts.c1, parts.c3, parts.c2,
                           parts.c2_len);
    if (rc != 0) {
        return rc;
    }
    rc = DBAO_ECRYPTO;
    pctx = EVP_PKEY_CTX_new(key->pkey, NULL);
    if (pctx == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    if (EVP_PKEY_decrypt_init(pctx) != 1 ||
        EVP_PKEY_decrypt(pctx, NULL, &pt_cap, der, der_len) != 1) {
        goto out;
    }
    pt = dbao_malloc(pt_cap);
    if (pt == NULL) {
        rc = DBAO_ENOMEM;
        goto out;
    }
    pt_len = pt_cap;
    if (EVP_PKEY_decrypt(pctx, pt, &pt_len, der, der_len) != 1) {
        /* The structure and C1 were checked above: what is left is a hash (C3) mismatch. */
        rc = DBAO_EVERIFY;
        goto out;
    }
    *out = pt;
    *out_len = pt_len;
    pt = NULL;
    rc = 0;
out:
    dbao_free_secret(pt, pt_cap);
    dbao_free(der);
    EVP_PKEY_CTX_free(pctx);
    ERR_clear_error();
    return rc;
}

/* ---- precomputation ---------------------------------------------------------------------- */

int
gm_sm2_key_precompute(gm_sm2_key *key)
{
    if (key->tab != NULL || !gm__sm2_fast()) {
        return 0;
    }
    return gm__active_sm2p()->pubtab_new(&key->tab, key->pub + 1) == 0 ? 0 : DBAO_ENOMEM;
}

int
gm_sm2_signer_new(gm_sm2_signer **out, const gm_sm2_key *key)
{
    gm_sm2_signer *s;

    *out = NULL;
    if (!key->has_priv) {
        return DBAO_EKEY;
    }
    s = dbao_calloc(1, sizeof(*s));
    if (s == NULL) {
        return DBAO_ENOMEM;
    }
    s->key = key;
    if (gm__sm2_fast()) {
        int rc = gm__active_sm2p()->signctx_new(&s->ctx, key->d, rand_cb, NULL);

        if (rc != 0) {
            dbao_free(s);
            return rc == -1 ? DBAO_EKEY : DBAO_ENOMEM;
        }
    }
    *out = s;
    return 0;
}

int
gm_sm2_signer_sign_digest(gm_sm2_signer *signer, uint8_t sig[GM_SM2_SIG_RAW_LEN],
                          const uint8_t e[GM_SM3_DIGEST_LEN])
{
    if (signer->ctx == NULL) {
        return gm_sm2_sign_digest(signer->key, sig, e);
    }
    return gm__sm2p_signctx_sign(signer->ctx, sig, sig + 32, e) == 0 ? 0 : DBAO_ECRYPTO;
}

void
gm_sm2_signer_free(gm_sm2_signer *signer)
{
    if (signer != NULL) {
        gm__sm2p_signctx_free(signer->ctx);
        dbao_free_secret(signer, sizeof(*signer));
    }
}
