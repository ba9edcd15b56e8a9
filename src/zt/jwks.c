/* jwks.c: the key set of the token verifier (zt.h "tokens"): building it from JWKS documents
 * (RFC 7517/7518), PEM keys, HMAC secrets and SM2 keys; reference counting for rotation.
 *
 * JWKS members read, per kty (anything else in a key is ignored unless listed as refused):
 *
 *   kty "oct"                 k (base64url, >= 16 bytes)              -> HS256
 *   kty "EC", crv "P-256"     x, y (base64url, 32 bytes each)         -> ES256
 *   kty "EC", crv "SM2"       x, y (base64url, 32 bytes each)         -> SM2 (the set's name)
 *   kty "RSA"                 n (2048..8192 bits, no leading zero), e -> RS256
 *   every key                 kid (string, < ZT_KID_MAX bytes, optional), alg (optional, must
 *                             match the line above), use (optional: "sig"; "enc" skips it)
 *   refused                   d, p, q, dp, dq, qi, oth (private members) on EC and RSA keys
 *
 * "crv":"SM2" is our spelling for SM2 public keys (no JOSE registry entry exists); x and y are
 * the affine coordinates of the point on the SM2 curve (GB/T 32918.5), big-endian, 32 bytes.
 *
 * Written by hand rather than with a JOSE library: Debian has none in C that knows SM2, and the
 * strictness rules (duplicate JSON keys, canonical base64url, key type tied to alg) are the
 * point of this code. ES256 and RS256 keys become OpenSSL EVP_PKEYs (EVP_PKEY_fromdata, then
 * EVP_PKEY_public_check); SM2 keys are gm_sm2_keys with a verification table.
 *
 * A call that adds several keys (a JWKS document) is all or nothing: the keys are collected
 * first and appended only when every one of them is good.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "jwt_internal.h"

#define JWKS_FILE_MAX (1u << 20)
#define HMAC_MIN_LEN  16

static void
key_cleanup(zt_key *k)
{
    if (k->secret != NULL) {
        dbao_free_secret(k->secret, k->secret_len);
    }
    EVP_MAC_CTX_free(k->hmac);
    EVP_PKEY_free(k->pkey);
    gm_sm2_key_free(k->sm2);
    memset(k, 0, sizeof(*k));
}

const char *
zt__alg_name(const zt_keyset *ks, zt_alg alg)
{
    switch (alg) {
    case ZT_ALG_HS256:
        return "HS256";
    case ZT_ALG_ES256:
        return "ES256";
    case ZT_ALG_RS256:
        return "RS256";
    case ZT_ALG_SM2:
        return ks != NULL ? ks->sm2_alg : "SM2";
    }
    return "?";
}

int
zt_keyset_new(zt_keyset **out, const char *sm2_alg, dbao_err *err)
{
    zt_keyset *ks;
    size_t n;

    *out = NULL;
    if (sm2_alg == NULL) {
        sm2_alg = "SM2";
    }
    n = strlen(sm2_alg);
    if (n == 0 || n >= ZT_SM2_ALG_MAX) {
        return dbao_err_set(err, DBAO_EINVAL, "sm2 alg name must have 1 to %d bytes",
                            ZT_SM2_ALG_MAX - 1);
    }
    for (size_t i = 0; i < n; i++) {
        if (sm2_alg[i] <= ' ' || sm2_alg[i] > '~' || sm2_alg[i] == '"' || sm2_alg[i] == '\\') {
            return dbao_err_set(err, DBAO_EINVAL, "sm2 alg name has a bad character");
        }
    }
    if (strcmp(sm2_alg, "HS256") == 0 || strcmp(sm2_alg, "ES256") == 0 ||
        strcmp(sm2_alg, "RS256") == 0 || strcasecmp(sm2_alg, "none") == 0) {
        return dbao_err_set(err, DBAO_EINVAL, "sm2 alg name '%s' is taken", sm2_alg);
    }
    ks = dbao_calloc(1, sizeof(*ks));
    if (ks == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    atomic_init(&ks->refs, 1);
    memcpy(ks->sm2_alg, sm2_alg, n + 1);
    *out = ks;
    return 0;
}

zt_keyset *
zt_keyset_ref(zt_keyset *ks)
{
    if (ks != NULL) {
        /* Relaxed is enough to take a reference: the caller already holds one. */
        atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
    }
    return ks;
}

void
zt_keyset_unref(zt_keyset *ks)
{
    if (ks == NULL) {
        return;
    }
    /* Release pairs with the acquire fence below: the thread that frees sees
     * every use made through the other references. */
    if (atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_release) != 1) {
        return;
    }
    atomic_thread_fence(memory_order_acquire);
    for (size_t i = 0; i < ks->num_keys; i++) {
        key_cleanup(&ks->keys[i]);
    }
    dbao_free(ks->keys);
    dbao_free(ks);
}

void
zt_keyset_free(zt_keyset *ks)
{
    zt_keyset_unref(ks);
}

size_t
zt_keyset_count(const zt_keyset *ks)
{
    return ks != NULL ? ks->num_keys : 0;
}

const char *
zt_keyset_sm2_alg(const zt_keyset *ks)
{
    return ks->sm2_alg;
}

/* ---- staging: keys collected by one call, appended only when all are good
 * ---------------- */

typedef struct staging {
    zt_key *keys;
    size_t num;
    size_t cap;
} staging;

static void
staging_cleanup(staging *st)
{
    for (size_t i = 0; i < st->num; i++) {
        key_cleanup(&st->keys[i]);
    }
    dbao_free(st->keys);
    memset(st, 0, sizeof(*st));
}

static zt_key *
staging_push(staging *st)
{
    if (st->num == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 4;
        zt_key *k = dbao_realloc(st->keys, cap * sizeof(*k));

        if (k == NULL) {
            return NULL;
        }
        st->keys = k;
        st->cap = cap;
    }
    memset(&st->keys[st->num], 0, sizeof(zt_key));
    return &st->keys[st->num++];
}

static int
set_kid(zt_key *k, const char *kid, dbao_err *err)
{
    size_t n = kid != NULL ? strlen(kid) : 0;

    if (n >= ZT_KID_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "kid longer than %d bytes", ZT_KID_MAX - 1);
    }
    if (n > 0) {
        memcpy(k->kid, kid, n);
    }
    k->kid[n] = '\0';
    return 0;
}

/* staging_commit appends the staged keys to ks after checking that no (alg,
 * kid) pair is repeated, then empties st. */
static int
staging_commit(zt_keyset *ks, staging *st, dbao_err *err)
{
    for (size_t i = 0; i < st->num; i++) {
        const zt_key *a = &st->keys[i];

        for (size_t j = 0; j < ks->num_keys + i; j++) {
            const zt_key *b = j < ks->num_keys ? &ks->keys[j] : &st->keys[j - ks->num_keys];

            if (a->alg == b->alg && strcmp(a->kid, b->kid) == 0) {
                return dbao_err_set(err, DBAO_EINVAL, "duplicate kid '%s' for %s", a->kid,
                                    zt__alg_name(ks, a->alg));
            }
        }
    }
    if (ks->num_keys + st->num > ks->cap_keys) {
        size_t cap = ks->num_keys + st->num + 4;
        zt_key *k = dbao_realloc(ks->keys, cap * sizeof(*k));

        if (k == NULL) {
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        }
        ks->keys = k;
        ks->cap_keys = cap;
    }
    if (st->num > 0) {
        memcpy(&ks->keys[ks->num_keys], st->keys, st->num * sizeof(zt_key));
    }
    ks->num_keys += st->num;
    dbao_free(st->keys);
    memset(st, 0, sizeof(*st));
    return 0;
}

/* ---- key constructors
 * -------------------------------------------------------------------- */

static int
make_hmac(zt_key *k, const uint8_t *secret, size_t len, dbao_err *err)
{
    if (len < HMAC_MIN_LEN) {
        return dbao_err_set(err, DBAO_EKEY, "hs256 secret shorter than %d bytes", HMAC_MIN_LEN);
    }
    k->secret = dbao_malloc(len);
    if (k->secret == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    /* A keyed HMAC context made once: verification duplicates it, which saves the algorithm
     * fetch and the key setup of every one-shot HMAC() call. */
    {
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        char digest[] = "SHA256";
        OSSL_PARAM params[2] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
            OSSL_PARAM_construct_end(),
        };

        k->hmac = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
        EVP_MAC_free(mac);
        if (k->hmac == NULL || EVP_MAC_init(k->hmac, secret, len, params) != 1) {
            return dbao_err_set(err, DBAO_ECRYPTO, "hmac-sha256 setup failed");
        }
    }
    k->alg = ZT_ALG_HS256;
    k->sig_len = 32;
    return 0;
}

static int
make_sm2(zt_key *k, const uint8_t *pub, size_t pub_len, dbao_err *err)
{
    int rc = gm_sm2_key_from_pub(&k->sm2, pub, pub_len, err);

    if (rc != 0) {
        return rc;
    }
    rc = gm_sm2_key_precompute(k->sm2);
    if (rc != 0) {
        return dbao_err_set(err, rc, "out of memory");
    }
    k->alg = ZT_ALG_SM2;
    k->sig_len = GM_SM2_SIG_RAW_LEN;
    return 0;
}

static int
check_pkey(EVP_PKEY *pkey, dbao_err *err)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    int ok;

    if (c == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    ok = EVP_PKEY_public_check(c);
    EVP_PKEY_CTX_free(c);
    return ok == 1 ? 0 : dbao_err_set(err, DBAO_EKEY, "public key check failed");
}

/* make_evp takes pkey (on success and failure) and types it as ES256 or RS256.
 */
static int
make_evp(zt_key *k, EVP_PKEY *pkey, dbao_err *err)
{
    int rc;

    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64] = "";
        size_t glen = 0;

        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                            &glen) ||
            strcmp(group, "prime256v1") != 0) {
            EVP_PKEY_free(pkey);
            return dbao_err_set(err, DBAO_ENOTSUP, "ec key is not on p-256");
        }
        k->alg = ZT_ALG_ES256;
        k->sig_len = 64;
    } else if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);

        if (bits < 2048 || bits > 8192) {
            EVP_PKEY_free(pkey);
            return dbao_err_set(err, DBAO_EKEY, "rsa key of %d bits (2048 to 8192 accepted)", bits);
        }
        k->alg = ZT_ALG_RS256;
        k->sig_len = (size_t) (bits + 7) / 8;
    } else {
        EVP_PKEY_free(pkey);
        return dbao_err_set(err, DBAO_ENOTSUP, "unsupported key type");
    }
    rc = check_pkey(pkey, err);
    if (rc != 0) {
        EVP_PKEY_free(pkey);
        return rc;
    }
    k->pkey = pkey;
    return 0;
}

static int
pkey_fromdata(EVP_PKEY **out, const char *type, OSSL_PARAM *params, dbao_err *err)
{
    EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    int ok;

    *out = NULL;
    if (c == NULL) {
        return dbao_err_set(err, DBAO_ECRYPTO, "no %s support in openssl", type);
    }
    ok = EVP_PKEY_fromdata_init(c) == 1 &&
         EVP_PKEY_fromdata(c, out, EVP_PKEY_PUBLIC_KEY, params) == 1;
    EVP_PKEY_CTX_free(c);
    if (!ok) {
        EVP_PKEY_free(*out);
        *out = NULL;
        return dbao_err_set(err, DBAO_EKEY, "openssl refused the %s public key", type);
    }
    return 0;
}

/* ---- JWKS
 * ----------------------------------------------------------------------------------
 */

/* b64_member decodes key member `name` into buf (room for cap); exact: require
 * len == want unless want is 0. */
static int
b64_member(json_t *jwk, const char *name, uint8_t *buf, size_t cap, size_t *out_len, size_t want,
           dbao_err *err)
{
    json_t *v = json_object_get(jwk, name);
    size_t n;

    if (!json_is_string(v)) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwk member '%s' missing or not a string", name);
    }
    if (zt_b64url_decode(buf, cap, &n, json_string_value(v), json_string_length(v)) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwk member '%s' is not canonical base64url", name);
    }
    if (want != 0 && n != want) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwk member '%s' has %zu bytes, not %zu", name, n,
                            want);
    }
    *out_len = n;
    return 0;
}

int
zt__sm2_jwk_pub(uint8_t pub[GM_SM2_PUB_LEN], json_t *jwk, dbao_err *err)
{
    json_t *kty = json_object_get(jwk, "kty"), *crv = json_object_get(jwk, "crv");
    size_t n;
    int rc;

    if (!json_is_object(jwk) || !json_is_string(kty) || !json_is_string(crv)) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwk without kty or crv strings");
    }
    if (strcmp(json_string_value(kty), "EC") != 0 || strcmp(json_string_value(crv), "SM2") != 0) {
        return dbao_err_set(err, DBAO_ENOTSUP, "jwk is not an sm2 key (kty EC, crv SM2)");
    }
    pub[0] = 0x04;
    rc = b64_member(jwk, "x", pub + 1, 32, &n, 32, err);
    if (rc == 0) {
        rc = b64_member(jwk, "y", pub + 33, 32, &n, 32, err);
    }
    return rc;
}

static int
jwk_ec_p256(zt_key *k, json_t *jwk, dbao_err *err)
{
    uint8_t pt[65];
    size_t n;
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM params[3];
    char group[] = "prime256v1";
    int rc;

    pt[0] = 0x04;
    if ((rc = b64_member(jwk, "x", pt + 1, 32, &n, 32, err)) != 0 ||
        (rc = b64_member(jwk, "y", pt + 33, 32, &n, 32, err)) != 0) {
        return rc;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt));
    params[2] = OSSL_PARAM_construct_end();
    rc = pkey_fromdata(&pkey, "EC", params, err);
    if (rc != 0) {
        return rc;
    }
    return make_evp(k, pkey, err);
}

static int
jwk_rsa(zt_key *k, json_t *jwk, dbao_err *err)
{
    uint8_t nbuf[1025], ebuf[16];
    size_t n_len = 0, e_len = 0;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;
    int rc;

    if ((rc = b64_member(jwk, "n", nbuf, sizeof(nbuf), &n_len, 0, err)) != 0 ||
        (rc = b64_member(jwk, "e", ebuf, sizeof(ebuf), &e_len, 0, err)) != 0) {
        return rc;
    }
    if (n_len == 0 || nbuf[0] == 0 || e_len == 0 || ebuf[0] == 0) {
        return dbao_err_set(err, DBAO_EKEY, "rsa jwk n or e empty or with a leading zero");
    }
    bn_n = BN_bin2bn(nbuf, (int) n_len, NULL);
    bn_e = BN_bin2bn(ebuf, (int) e_len, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (bn_n == NULL || bn_e == NULL || bld == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        goto out;
    }
    rc = pkey_fromdata(&pkey, "RSA", params, err);
    if (rc == 0) {
        rc = make_evp(k, pkey, err);
    }
out:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return rc;
}

static int
jwk_one(zt_keyset *ks, staging *st, json_t *jwk, size_t idx, dbao_err *err)
{
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "oth"};
    json_t *kty = json_object_get(jwk, "kty"), *kid = json_object_get(jwk, "kid");
    json_t *alg = json_object_get(jwk, "alg"), *use = json_object_get(jwk, "use");
    const char *t;
    zt_key *k;
    int rc;

    if (!json_is_object(jwk)) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwks key %zu is not an object", idx);
    }
    if (!json_is_string(kty)) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwks key %zu: kty missing or not a string", idx);
    }
    if (use != NULL) {
        if (!json_is_string(use)) {
            return dbao_err_set(err, DBAO_EFORMAT, "jwks key %zu: use is not a string", idx);
        }
        if (strcmp(json_string_value(use), "enc") == 0) {
            return 0;
        }
        if (strcmp(json_string_value(use), "sig") != 0) {
            return dbao_err_set(err, DBAO_ENOTSUP, "jwks key %zu: unknown use", idx);
        }
    }
    if (kid != NULL &&
        (!json_is_string(kid) || strlen(json_string_value(kid)) != json_string_length(kid))) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwks key %zu: kid is not a string", idx);
    }
    if (alg != NULL && !json_is_string(alg)) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwks key %zu: alg is not a string", idx);
    }
    t = json_string_value(kty);
    if (strcmp(t, "oct") != 0) {
        for (size_t i = 0; i < sizeof(priv) / sizeof(priv[0]); i++) {
            if (json_object_get(jwk, priv[i]) != NULL) {
                return dbao_err_set(err, DBAO_EINVAL,
                                    "jwks key %zu holds private member '%s': refused", idx,
                                    priv[i]);
            }
        }
    }
    k = staging_push(st);
    if (k == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    rc = set_kid(k, kid != NULL ? json_string_value(kid) : NULL, err);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(t, "oct") == 0) {
        uint8_t sec[512];
        size_t n = 0;

        rc = b64_member(jwk, "k", sec, sizeof(sec), &n, 0, err);
        if (rc == 0) {
            rc = make_hmac(k, sec, n, err);
        }
        dbao_cleanse(sec, sizeof(sec));
    } else if (strcmp(t, "EC") == 0) {
        json_t *crv = json_object_get(jwk, "crv");

        if (!json_is_string(crv)) {
            return dbao_err_set(err, DBAO_EFORMAT, "jwks key %zu: crv missing", idx);
        }
        if (strcmp(json_string_value(crv), "P-256") == 0) {
            rc = jwk_ec_p256(k, jwk, err);
        } else if (strcmp(json_string_value(crv), "SM2") == 0) {
            uint8_t pub[GM_SM2_PUB_LEN];

            rc = zt__sm2_jwk_pub(pub, jwk, err);
            if (rc == 0) {
                rc = make_sm2(k, pub, sizeof(pub), err);
            }
        } else {
            return dbao_err_set(err, DBAO_ENOTSUP, "jwks key %zu: unsupported crv", idx);
        }
    } else if (strcmp(t, "RSA") == 0) {
        rc = jwk_rsa(k, jwk, err);
    } else {
        return dbao_err_set(err, DBAO_ENOTSUP, "jwks key %zu: unsupported kty", idx);
    }
    if (rc != 0) {
        return rc;
    }
    if (alg != NULL && strcmp(json_string_value(alg), zt__alg_name(ks, k->alg)) != 0) {
        return dbao_err_set(err, DBAO_ENOTSUP, "jwks key %zu: alg does not match its key type",
                            idx);
    }
    return 0;
}

int
zt_keyset_add_jwks(zt_keyset *ks, const char *json, size_t json_len, dbao_err *err)
{
    json_error_t jerr;
    json_t *root, *keys;
    staging st = {0};
    int rc = 0;

    root = json_loadb(json, json_len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "jwks: bad json at line %d: %s", jerr.line,
                            jerr.text);
    }
    keys = json_object_get(root, "keys");
    if (!json_is_object(root) || !json_is_array(keys)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "jwks: no \"keys\" array");
        goto out;
    }
    for (size_t i = 0; i < json_array_size(keys) && rc == 0; i++) {
        rc = jwk_one(ks, &st, json_array_get(keys, i), i, err);
    }
    if (rc == 0) {
        rc = staging_commit(ks, &st, err);
    }
out:
    staging_cleanup(&st);
    json_decref(root);
    return rc;
}

int
zt_keyset_load_jwks_file(zt_keyset *ks, const char *path, dbao_err *err)
{
    uint8_t *text = NULL;
    size_t len = 0;
    int rc = dbao_file_read(&text, &len, path, JWKS_FILE_MAX, err);

    if (rc != 0) {
        return dbao_err_set(err, rc, "cannot read jwks '%s'", path);
    }
    rc = zt_keyset_add_jwks(ks, (const char *) text, len, err);
    dbao_free(text);
    return rc;
}

static int
no_password(char *buf, int size, int rwflag, void *u)
{
    (void) buf;
    (void) size;
    (void) rwflag;
    (void) u;
    return -1;
}

int
zt_keyset_add_pem(zt_keyset *ks, const char *kid, const char *pem, size_t pem_len, dbao_err *err)
{
    staging st = {0};
    gm_sm2_key *sm2 = NULL;
    zt_key *k;
    int rc;

    if (pem_len > INT32_MAX) {
        return dbao_err_set(err, DBAO_ERANGE, "pem too long");
    }
    k = staging_push(&st);
    if (k == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    rc = set_kid(k, kid, err);
    if (rc != 0) {
        goto out;
    }
    if (gm_sm2_key_from_pem(&sm2, pem, pem_len, NULL) == 0) {
        uint8_t pub[GM_SM2_PUB_LEN];

        gm_sm2_key_get_pub(sm2, pub);
        rc = make_sm2(k, pub, sizeof(pub), err);
    } else {
        BIO *bio = BIO_new_mem_buf(pem, (int) pem_len);
        EVP_PKEY *pkey = NULL;

        if (bio == NULL) {
            rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
            goto out;
        }
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_password, NULL);
        if (pkey == NULL) {
            EVP_PKEY *priv;

            (void) BIO_reset(bio);
            priv = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
            if (priv != NULL) {
                /* Keep only the public half: re-read it from its SubjectPublicKeyInfo.
                 */
                unsigned char *der = NULL;
                int der_len = i2d_PUBKEY(priv, &der);

                if (der_len > 0) {
                    const unsigned char *p = der;

                    pkey = d2i_PUBKEY(NULL, &p, der_len);
                }
                OPENSSL_free(der);
                EVP_PKEY_free(priv);
            }
        }
        BIO_free(bio);
        if (pkey == NULL) {
            rc = dbao_err_set(err, DBAO_EFORMAT, "pem holds no usable key");
            goto out;
        }
        rc = make_evp(k, pkey, err);
    }
    if (rc == 0) {
        rc = staging_commit(ks, &st, err);
    }
out:
    gm_sm2_key_free(sm2);
    staging_cleanup(&st);
    return rc;
}

int
zt_keyset_add_hmac(zt_keyset *ks, const char *kid, const uint8_t *secret, size_t secret_len,
                   dbao_err *err)
{
    staging st = {0};
    zt_key *k = staging_push(&st);
    int rc;

    if (k == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    rc = set_kid(k, kid, err);
    if (rc == 0) {
        rc = make_hmac(k, secret, secret_len, err);
    }
    if (rc == 0) {
        rc = staging_commit(ks, &st, err);
    }
    staging_cleanup(&st);
    return rc;
}

int
zt_keyset_add_sm2(zt_keyset *ks, const char *kid, const gm_sm2_key *key, dbao_err *err)
{
    staging st = {0};
    zt_key *k = staging_push(&st);
    uint8_t pub[GM_SM2_PUB_LEN];
    int rc;

    if (k == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    gm_sm2_key_get_pub(key, pub);
    rc = set_kid(k, kid, err);
    if (rc == 0) {
        rc = make_sm2(k, pub, sizeof(pub), err);
    }
    if (rc == 0) {
        rc = staging_commit(ks, &st, err);
    }
    staging_cleanup(&st);
    return rc;
}
