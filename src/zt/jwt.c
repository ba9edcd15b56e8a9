/* jwt.c: verification and minting of compact JWS tokens (zt.h "tokens").
 *
 * A token is BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature), nothing else:
 * no whitespace, no padding, no JWE, no JSON serialisation. Verification goes in this order,
 * cheapest and least trusting first:
 *
 *   1. length <= opts.max_len; exactly two dots; every segment strict base64url (the decoder
 *      below refuses '=', characters outside A-Z a-z 0-9 - _, a length of 1 mod 4 and non-zero
 *      unused trailing bits, so every accepted segment has exactly one spelling);
 *   2. the header: a JSON object without duplicate keys; alg a string naming an allowed
 *      algorithm ("none" in any case is refused by name); crit, jku, jwk, x5u, x5c refused;
 *      kid, if present, a string;
 *   3. the key: by kid among the keys of the token's alg; a kid that exists only under
 *      another algorithm is algorithm confusion and refused; without kid, the only key of the
 *      alg (several: refused). The key's own type decides how the signature is checked;
 *   4. the signature over the ASCII bytes header "." payload, of the exact length the key
 *      implies (HS256 32, ES256 64 = r||s, SM2 64 = r||s, RS256 the modulus length); HMAC tags
 *      compared in constant time;
 *   5. only then the payload: JSON object, no duplicate keys, claim types checked (exp, nbf,
 *      iat integers; iss, sub, jti strings; aud string or array of strings; roles array of
 *      strings; scope string; cnf object: sm3, jwk, x5t#S256 as RFC 8705 has it for mTLS
 *      binding), then time and audience rules.
 *
 * Decoded segments live on the stack (at most ZT_JWT_MAX_LEN_LIMIT bytes of token), so the
 * only allocations are jansson's and, for ES256/RS256, OpenSSL's EVP context.
 *
 * Written by hand (no JOSE library): see jwks.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "jwt_internal.h"

#define SIG_MAX 1024 /* RSA 8192 bits */

/* ---- base64url
 * -----------------------------------------------------------------------------
 */

static const char b64u_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t
zt_b64url_encode(char *out, const uint8_t *in, size_t len)
{
    size_t o = 0, i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];

        out[o++] = b64u_alphabet[v >> 18];
        out[o++] = b64u_alphabet[(v >> 12) & 63];
        out[o++] = b64u_alphabet[(v >> 6) & 63];
        out[o++] = b64u_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t) in[i] << 16;

        out[o++] = b64u_alphabet[v >> 18];
        out[o++] = b64u_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;

        out[o++] = b64u_alphabet[v >> 18];
        out[o++] = b64u_alphabet[(v >> 12) & 63];
        out[o++] = b64u_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

static int
b64u_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '-') {
        return 62;
    }
    if (c == '_') {
        return 63;
    }
    return -1;
}

int
zt_b64url_decode(uint8_t *out, size_t cap, size_t *out_len, const char *in, size_t in_len)
{
    size_t rem = in_len % 4, need = in_len / 4 * 3 + (rem ? rem - 1 : 0), o = 0, i = 0;
    uint32_t v = 0;

    *out_len = 0;
    if (rem == 1) {
        return DBAO_EFORMAT;
    }
    if (need > cap) {
        return DBAO_ERANGE;
    }
    for (; i < in_len; i++) {
        int d = b64u_val((unsigned char) in[i]);

        if (d < 0) {
            return DBAO_EFORMAT;
        }
        v = v << 6 | (uint32_t) d;
        if (i % 4 == 3) {
            out[o++] = (uint8_t) (v >> 16);
            out[o++] = (uint8_t) (v >> 8);
            out[o++] = (uint8_t) v;
            v = 0;
        }
    }
    if (rem == 2) {
        if (v & 0xf) {
            return DBAO_EFORMAT; /* non-zero unused bits: a second spelling */
        }
        out[o++] = (uint8_t) (v >> 4);
    } else if (rem == 3) {
        if (v & 0x3) {
            return DBAO_EFORMAT;
        }
        out[o++] = (uint8_t) (v >> 10);
        out[o++] = (uint8_t) (v >> 2);
    }
    *out_len = o;
    return 0;
}

/* ---- signatures
 * ----------------------------------------------------------------------------
 */

/* der_int appends a DER INTEGER of the 32-byte big-endian value v. */
static size_t
der_int(uint8_t *out, const uint8_t *v)
{
    size_t skip = 0, n, o = 0;

    while (skip < 31 && v[skip] == 0) {
        skip++;
    }
    n = 32 - skip;
    out[o++] = 0x02;
    if (v[skip] & 0x80) {
        out[o++] = (uint8_t) (n + 1);
        out[o++] = 0;
    } else {
        out[o++] = (uint8_t) n;
    }
    memcpy(out + o, v + skip, n);
    return o + n;
}

static int
evp_verify(EVP_PKEY *pkey, const uint8_t *sig, size_t sig_len, const char *msg, size_t msg_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok;

    if (md == NULL) {
        return DBAO_ENOMEM;
    }
    ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1 &&
         EVP_DigestVerify(md, sig, sig_len, (const unsigned char *) msg, msg_len) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok ? 0 : DBAO_EVERIFY;
}

static int
check_sig(const zt_key *k, const uint8_t *sig, size_t sig_len, const char *msg, size_t msg_len)
{
    if (sig_len != k->sig_len) {
        return DBAO_EVERIFY;
    }
    switch (k->alg) {
    case ZT_ALG_HS256: {
        uint8_t mac[EVP_MAX_MD_SIZE];
        size_t mac_len = 0;
        EVP_MAC_CTX *c = EVP_MAC_CTX_dup(k->hmac);
        bool ok;

        if (c == NULL || EVP_MAC_update(c, (const unsigned char *) msg, msg_len) != 1 ||
            EVP_MAC_final(c, mac, &mac_len, sizeof(mac)) != 1 || mac_len != 32) {
            EVP_MAC_CTX_free(c);
            return DBAO_ECRYPTO;
        }
        EVP_MAC_CTX_free(c);
        ok = dbao_ct_memeq(mac, sig, 32);
        dbao_cleanse(mac, sizeof(mac));
        return ok ? 0 : DBAO_EVERIFY;
    }
    case ZT_ALG_ES256: {
        uint8_t der[80];
        size_t n = 2;

        n += der_int(der + n, sig);
        n += der_int(der + n, sig + 32);
        der[0] = 0x30;
        der[1] = (uint8_t) (n - 2);
        return evp_verify(k->pkey, der, n, msg, msg_len);
    }
    case ZT_ALG_RS256:
        return evp_verify(k->pkey, sig, sig_len, msg, msg_len);
    case ZT_ALG_SM2:
        return gm_sm2_verify(k->sm2, sig, (const uint8_t *) GM_SM2_DEFAULT_ID,
                             GM_SM2_DEFAULT_ID_LEN, (const uint8_t *) msg, msg_len);
    }
    return DBAO_EVERIFY;
}

/* ---- verification
 * -------------------------------------------------------------------------- */

static int
alg_from_name(const zt_keyset *ks, const char *name, zt_alg *out)
{
    if (strcmp(name, "HS256") == 0) {
        *out = ZT_ALG_HS256;
    } else if (strcmp(name, "ES256") == 0) {
        *out = ZT_ALG_ES256;
    } else if (strcmp(name, "RS256") == 0) {
        *out = ZT_ALG_RS256;
    } else if (strcmp(name, ks->sm2_alg) == 0) {
        *out = ZT_ALG_SM2;
    } else {
        return -1;
    }
    return 0;
}

/* json_str copies a JSON string without NUL bytes into dst (cap bytes with the
 * NUL). */
static int
json_str(char *dst, size_t cap, json_t *v, const char *name, dbao_err *err)
{
    size_t n;

    if (!json_is_string(v)) {
        return dbao_err_set(err, DBAO_EFORMAT, "claim '%s' is not a string", name);
    }
    n = json_string_length(v);
    if (memchr(json_string_value(v), '\0', n) != NULL) {
        return dbao_err_set(err, DBAO_EFORMAT, "claim '%s' holds a nul character", name);
    }
    if (n >= cap) {
        return dbao_err_set(err, DBAO_ERANGE, "claim '%s' longer than %zu bytes", name, cap - 1);
    }
    memcpy(dst, json_string_value(v), n);
    dst[n] = '\0';
    return 0;
}

static int
json_time(int64_t *dst, bool *has, json_t *v, const char *name, dbao_err *err)
{
    if (v == NULL) {
        return 0;
    }
    if (!json_is_integer(v)) {
        return dbao_err_set(err, DBAO_EFORMAT, "claim '%s' is not an integer", name);
    }
    *dst = (int64_t) json_integer_value(v);
    if (*dst < 0 || *dst > INT64_C(253402300799)) {
        return dbao_err_set(err, DBAO_EFORMAT, "claim '%s' out of range", name);
    }
    *has = true;
    return 0;
}

static int
read_header(const zt_keyset *ks, const zt_jwt_opts *o, const uint8_t *h, size_t h_len, zt_claims *c,
            dbao_err *err)
{
    static const char *const refused[] = {"crit", "jku", "jwk", "x5u", "x5c"};
    json_error_t jerr;
    json_t *root = json_loadb((const char *) h, h_len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *alg, *kid, *typ;
    int rc = 0;

    if (root == NULL || !json_is_object(root)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "token header is not a json object%s",
                          root == NULL && strstr(jerr.text, "duplicate") ? " (duplicate key)" : "");
        goto out;
    }
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        if (json_object_get(root, refused[i]) != NULL) {
            rc = dbao_err_set(err, DBAO_ENOTSUP, "token header '%s' is not supported", refused[i]);
            goto out;
        }
    }
    alg = json_object_get(root, "alg");
    if (!json_is_string(alg)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "token header without alg string");
        goto out;
    }
    if (strcasecmp(json_string_value(alg), "none") == 0) {
        rc = dbao_err_set(err, DBAO_ENOTSUP, "alg none refused");
        goto out;
    }
    if (strlen(json_string_value(alg)) != json_string_length(alg) ||
        alg_from_name(ks, json_string_value(alg), &c->alg) != 0) {
        rc = dbao_err_set(err, DBAO_ENOTSUP, "unknown alg");
        goto out;
    }
    if ((c->alg & o->algs) == 0) {
        rc = dbao_err_set(err, DBAO_ENOTSUP, "alg %s not allowed", zt__alg_name(ks, c->alg));
        goto out;
    }
    typ = json_object_get(root, "typ");
    if (typ != NULL && !json_is_string(typ)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "token header typ is not a string");
        goto out;
    }
    kid = json_object_get(root, "kid");
    if (kid != NULL) {
        rc = json_str(c->kid, sizeof(c->kid), kid, "kid", err);
    }
out:
    json_decref(root);
    return rc;
}

static int
find_key(const zt_keyset *ks, const zt_claims *c, bool has_kid, const zt_key **out, dbao_err *err)
{
    const zt_key *found = NULL;
    size_t num_alg = 0;

    for (size_t i = 0; i < ks->num_keys; i++) {
        const zt_key *k = &ks->keys[i];

        if (has_kid) {
            if (strcmp(k->kid, c->kid) != 0) {
                continue;
            }
            if (k->alg == c->alg) {
                *out = k;
                return 0;
            }
            found = k;
        } else if (k->alg == c->alg) {
            num_alg++;
            *out = k;
        }
    }
    if (has_kid) {
        return found != NULL ? dbao_err_set(err, DBAO_EKEY, "kid belongs to a %s key, not %s",
                                            zt__alg_name(ks, found->alg), zt__alg_name(ks, c->alg))
                             : dbao_err_set(err, DBAO_EKEY, "unknown kid");
    }
    if (num_alg == 0) {
        return dbao_err_set(err, DBAO_EKEY, "no %s key", zt__alg_name(ks, c->alg));
    }
    if (num_alg > 1) {
        *out = NULL;
        return dbao_err_set(err, DBAO_EKEY, "token without kid and several %s keys",
                            zt__alg_name(ks, c->alg));
    }
    return 0;
}

static int
read_roles(zt_claims *c, json_t *roles, json_t *scope, dbao_err *err)
{
    if (roles != NULL) {
        size_t i;
        json_t *v;

        if (!json_is_array(roles)) {
            return dbao_err_set(err, DBAO_EFORMAT, "claim 'roles' is not an array");
        }
        if (json_array_size(roles) > ZT_ROLES_MAX) {
            return dbao_err_set(err, DBAO_ERANGE, "more than %d roles", ZT_ROLES_MAX);
        }
        json_array_foreach(roles, i, v)
        {
            int rc = json_str(c->roles[i], ZT_ROLE_MAX, v, "roles", err);

            if (rc != 0) {
                return rc;
            }
            if (c->roles[i][0] == '\0') {
                return dbao_err_set(err, DBAO_EFORMAT, "empty role");
            }
            c->num_roles++;
        }
        return 0;
    }
    if (scope != NULL) {
        const char *s, *end;

        if (!json_is_string(scope) ||
            strlen(json_string_value(scope)) != json_string_length(scope)) {
            return dbao_err_set(err, DBAO_EFORMAT, "claim 'scope' is not a string");
        }
        s = json_string_value(scope);
        end = s + json_string_length(scope);
        while (s < end) {
            const char *e = s;

            while (e < end && *e != ' ') {
                e++;
            }
            if (e > s) {
                if (c->num_roles == ZT_ROLES_MAX) {
                    return dbao_err_set(err, DBAO_ERANGE, "more than %d scopes", ZT_ROLES_MAX);
                }
                if ((size_t) (e - s) >= ZT_ROLE_MAX) {
                    return dbao_err_set(err, DBAO_ERANGE, "scope longer than %d bytes",
                                        ZT_ROLE_MAX - 1);
                }
                memcpy(c->roles[c->num_roles], s, (size_t) (e - s));
                c->roles[c->num_roles][e - s] = '\0';
                c->num_roles++;
            }
            s = e + 1;
        }
    }
    return 0;
}

static int
read_cnf(zt_claims *c, json_t *cnf, dbao_err *err)
{
    json_t *sm3, *jwk, *x5t;
    size_t n;

    if (cnf == NULL) {
        return 0;
    }
    if (!json_is_object(cnf)) {
        return dbao_err_set(err, DBAO_EFORMAT, "claim 'cnf' is not an object");
    }
    sm3 = json_object_get(cnf, "sm3");
    jwk = json_object_get(cnf, "jwk");
    x5t = json_object_get(cnf, "x5t#S256");
    if (x5t != NULL) {
        /* RFC 8705 3.1: base64url (no padding) of the SHA-256 of the certificate's DER. A
         * binding that is not exactly 32 bytes makes the whole token invalid, never ignored. */
        if (!json_is_string(x5t) ||
            zt_b64url_decode(c->cnf_x5t, sizeof(c->cnf_x5t), &n, json_string_value(x5t),
                             json_string_length(x5t)) != 0 ||
            n != sizeof(c->cnf_x5t)) {
            return dbao_err_set(err, DBAO_EFORMAT, "cnf.x5t#S256 is not base64url of 32 bytes");
        }
        c->has_cnf_x5t = true;
    }
    if (sm3 != NULL) {
        if (!json_is_string(sm3) ||
            zt_b64url_decode(c->cnf_sm3, sizeof(c->cnf_sm3), &n, json_string_value(sm3),
                             json_string_length(sm3)) != 0 ||
            n != GM_SM3_DIGEST_LEN) {
            return dbao_err_set(err, DBAO_EFORMAT, "cnf.sm3 is not base64url of 32 bytes");
        }
        c->has_cnf = true;
    }
    if (jwk != NULL) {
        gm_sm2_key *key = NULL;
        uint8_t thumb[GM_SM3_DIGEST_LEN];
        int rc = zt__sm2_jwk_pub(c->cnf_pub, jwk, err);

        if (rc != 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "cnf.jwk is not an sm2 public key");
        }
        if (gm_sm2_key_from_pub(&key, c->cnf_pub, GM_SM2_PUB_LEN, NULL) != 0) {
            return dbao_err_set(err, DBAO_EFORMAT, "cnf.jwk is not a point on the sm2 curve");
        }
        gm_sm2_key_free(key);
        gm_sm3(thumb, c->cnf_pub, GM_SM2_PUB_LEN);
        if (c->has_cnf && memcmp(thumb, c->cnf_sm3, sizeof(thumb)) != 0) {
            return dbao_err_set(err, DBAO_EVERIFY, "cnf.jwk does not match cnf.sm3");
        }
        memcpy(c->cnf_sm3, thumb, sizeof(thumb));
        c->has_cnf = true;
        c->has_cnf_pub = true;
    }
    return 0;
}

static int
read_aud(zt_claims *c, const zt_jwt_opts *o, json_t *aud, dbao_err *err)
{
    json_t *v;
    size_t i, n = 0;
    bool matched = o->num_aud == 0;
    char one[ZT_CLAIM_STR_MAX];

    if (aud == NULL) {
        return matched ? 0 : dbao_err_set(err, DBAO_EVERIFY, "token without aud");
    }
    if (!json_is_string(aud) && !json_is_array(aud)) {
        return dbao_err_set(err, DBAO_EFORMAT, "claim 'aud' is neither a string nor an array");
    }
    n = json_is_string(aud) ? 1 : json_array_size(aud);
    for (i = 0; i < n; i++) {
        int rc;

        v = json_is_string(aud) ? aud : json_array_get(aud, i);
        rc = json_str(one, sizeof(one), v, "aud", err);
        if (rc != 0) {
            return rc;
        }
        if (i == 0) {
            memcpy(c->aud, one, strlen(one) + 1);
        }
        for (size_t j = 0; !matched && j < o->num_aud; j++) {
            if (strcmp(one, o->aud[j]) == 0) {
                memset(c->aud, 0, sizeof(c->aud));
                memcpy(c->aud, one, strlen(one) + 1);
                matched = true;
            }
        }
    }
    return matched ? 0 : dbao_err_set(err, DBAO_EVERIFY, "aud does not match");
}

static int
read_payload(zt_claims *c, const zt_jwt_opts *o, const uint8_t *p, size_t p_len, int64_t now,
             dbao_err *err)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *) p, p_len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *v;
    int rc = 0;

    if (root == NULL || !json_is_object(root)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "token payload is not a json object%s",
                          root == NULL && strstr(jerr.text, "duplicate") ? " (duplicate claim)"
                                                                         : "");
        goto out;
    }
    if ((rc = json_time(&c->exp, &c->has_exp, json_object_get(root, "exp"), "exp", err)) != 0 ||
        (rc = json_time(&c->nbf, &c->has_nbf, json_object_get(root, "nbf"), "nbf", err)) != 0 ||
        (rc = json_time(&c->iat, &c->has_iat, json_object_get(root, "iat"), "iat", err)) != 0) {
        goto out;
    }
    if ((v = json_object_get(root, "sub")) != NULL &&
        (rc = json_str(c->sub, sizeof(c->sub), v, "sub", err)) != 0) {
        goto out;
    }
    if ((v = json_object_get(root, "iss")) != NULL &&
        (rc = json_str(c->iss, sizeof(c->iss), v, "iss", err)) != 0) {
        goto out;
    }
    if ((v = json_object_get(root, "jti")) != NULL &&
        (rc = json_str(c->jti, sizeof(c->jti), v, "jti", err)) != 0) {
        goto out;
    }
    if ((rc = read_roles(c, json_object_get(root, "roles"), json_object_get(root, "scope"), err)) !=
            0 ||
        (rc = read_cnf(c, json_object_get(root, "cnf"), err)) != 0 ||
        (rc = read_aud(c, o, json_object_get(root, "aud"), err)) != 0) {
        goto out;
    }
    /* Time rules, with the skew in the token's favour. */
    if (!c->has_exp && !o->allow_no_exp) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "token without exp");
    } else if (c->has_exp && now - o->skew >= c->exp) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "token expired");
    } else if (c->has_nbf && now + o->skew < c->nbf) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "token not yet valid (nbf)");
    } else if (c->has_iat && now + o->skew < c->iat) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "token issued in the future (iat)");
    } else if (o->iss != NULL && strcmp(c->iss, o->iss) != 0) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "iss does not match");
    } else if (o->require_cnf && !c->has_cnf) {
        rc = dbao_err_set(err, DBAO_EVERIFY, "token without device binding (cnf)");
    }
out:
    json_decref(root);
    return rc;
}

int
zt_jwt_verify(const zt_keyset *ks, const zt_jwt_opts *opts, const char *token, size_t len,
              zt_claims *claims_out, dbao_err *err)
{
    static const zt_jwt_opts zero_opts;
    uint8_t hbuf[ZT_JWT_MAX_LEN_LIMIT / 4 * 3], pbuf[ZT_JWT_MAX_LEN_LIMIT / 4 * 3], sig[SIG_MAX];
    size_t max_len, dot1, dot2, h_len, p_len, s_len;
    const char *d1, *d2;
    zt_claims local, *c = claims_out != NULL ? claims_out : &local;
    zt_jwt_opts o = opts != NULL ? *opts : zero_opts;
    const zt_key *key = NULL;
    int rc;

    memset(c, 0, sizeof(*c));
    if (ks == NULL || (token == NULL && len > 0)) {
        return dbao_err_set(err, DBAO_EINVAL, "no key set or token");
    }
    if (o.algs == 0) {
        o.algs = ZT_ALG_ALL;
    }
    if (o.skew < 0) {
        o.skew = 0;
    }
    if (o.now == 0) {
        o.now = (int64_t) time(NULL);
    }
    max_len = o.max_len == 0 ? ZT_JWT_MAX_LEN_DEFAULT : o.max_len;
    if (max_len > ZT_JWT_MAX_LEN_LIMIT) {
        max_len = ZT_JWT_MAX_LEN_LIMIT;
    }
    if (len > max_len) {
        return dbao_err_set(err, DBAO_ERANGE, "token longer than %zu bytes", max_len);
    }
    d1 = len > 0 ? memchr(token, '.', len) : NULL;
    d2 = d1 != NULL ? memchr(d1 + 1, '.', len - (size_t) (d1 - token) - 1) : NULL;
    if (d1 == NULL || d2 == NULL || memchr(d2 + 1, '.', len - (size_t) (d2 - token) - 1)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "token is not three dot-separated segments");
        goto fail;
    }
    dot1 = (size_t) (d1 - token);
    dot2 = (size_t) (d2 - token);
    if (dot1 == 0 || dot2 == dot1 + 1 || dot2 + 1 == len) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "token has an empty segment");
        goto fail;
    }
    if (zt_b64url_decode(hbuf, sizeof(hbuf), &h_len, token, dot1) != 0 ||
        zt_b64url_decode(pbuf, sizeof(pbuf), &p_len, d1 + 1, dot2 - dot1 - 1) != 0 ||
        zt_b64url_decode(sig, sizeof(sig), &s_len, d2 + 1, len - dot2 - 1) != 0) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "token segment is not canonical base64url");
        goto fail;
    }
    rc = read_header(ks, &o, hbuf, h_len, c, err);
    if (rc != 0) {
        goto fail;
    }
    rc = find_key(ks, c, c->kid[0] != '\0', &key, err);
    if (rc != 0) {
        goto fail;
    }
    rc = check_sig(key, sig, s_len, token, dot2);
    if (rc != 0) {
        rc = dbao_err_set(err, rc, "bad %s signature", zt__alg_name(ks, c->alg));
        goto fail;
    }
    rc = read_payload(c, &o, pbuf, p_len, o.now, err);
    if (rc != 0) {
        goto fail;
    }
    return 0;
fail:
    memset(c, 0, sizeof(*c));
    return rc;
}

/* ---- minting
 * -------------------------------------------------------------------------------
 */

static int
es256_sign(uint8_t out[64], const char *pem, size_t pem_len, const char *msg, size_t msg_len,
           dbao_err *err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int) pem_len);
    EVP_PKEY *pkey = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *) "") : NULL;
    EVP_MD_CTX *md = NULL;
    uint8_t der[80];
    size_t der_len = sizeof(der);
    ECDSA_SIG *es = NULL;
    const unsigned char *p = der;
    int rc = 0;

    char group[64] = "";
    size_t glen = 0;

    BIO_free(bio);
    if (pkey == NULL || !EVP_PKEY_is_a(pkey, "EC") ||
        !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        &glen) ||
        strcmp(group, "prime256v1") != 0) {
        rc = dbao_err_set(err, DBAO_EKEY, "es256 signing needs a p-256 private key pem");
        goto out;
    }
    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) != 1 ||
        EVP_DigestSign(md, der, &der_len, (const unsigned char *) msg, msg_len) != 1 ||
        (es = d2i_ECDSA_SIG(NULL, &p, (long) der_len)) == NULL ||
        BN_bn2binpad(ECDSA_SIG_get0_r(es), out, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(es), out + 32, 32) != 32) {
        rc = dbao_err_set(err, DBAO_ECRYPTO, "es256 signing failed");
    }
out:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

int
zt_jwt_sign(char **out, size_t *out_len, const zt_jwt_signkey *key, const char *payload_json,
            size_t payload_len, dbao_err *err)
{
    json_error_t jerr;
    json_t *payload = NULL, *header = NULL;
    char *h = NULL, *p = NULL, *tok = NULL;
    uint8_t sig[64];
    size_t sig_len = 0, hl, pl, n;
    const char *alg;
    int rc = 0;

    *out = NULL;
    if (out_len != NULL) {
        *out_len = 0;
    }
    switch (key->alg) {
    case ZT_ALG_HS256:
        alg = "HS256";
        break;
    case ZT_ALG_ES256:
        alg = "ES256";
        break;
    case ZT_ALG_SM2:
        alg = key->sm2_alg != NULL ? key->sm2_alg : "SM2";
        break;
    default:
        return dbao_err_set(err, DBAO_ENOTSUP, "signing supports HS256, ES256 and SM2 only");
    }
    payload = json_loadb(payload_json, payload_len, JSON_REJECT_DUPLICATES, &jerr);
    if (payload == NULL || !json_is_object(payload)) {
        rc = dbao_err_set(err, DBAO_EFORMAT, "payload is not a json object");
        goto out;
    }
    header = json_pack("{s:s, s:s}", "alg", alg, "typ", "JWT");
    if (header == NULL ||
        (key->kid != NULL && json_object_set_new(header, "kid", json_string(key->kid)) != 0)) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        goto out;
    }
    h = json_dumps(header, JSON_COMPACT);
    p = json_dumps(payload, JSON_COMPACT);
    if (h == NULL || p == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        goto out;
    }
    hl = strlen(h);
    pl = strlen(p);
    tok = dbao_malloc((hl + pl) * 4 / 3 + 4 + 90);
    if (tok == NULL) {
        rc = dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        goto out;
    }
    n = zt_b64url_encode(tok, (const uint8_t *) h, hl);
    tok[n++] = '.';
    n += zt_b64url_encode(tok + n, (const uint8_t *) p, pl);
    switch (key->alg) {
    case ZT_ALG_HS256: {
        unsigned ml = 0;

        if (key->secret == NULL || key->secret_len < 16 ||
            HMAC(EVP_sha256(), key->secret, (int) key->secret_len, (unsigned char *) tok, n, sig,
                 &ml) == NULL) {
            rc = dbao_err_set(err, DBAO_EKEY, "hs256 secret missing or shorter than 16 bytes");
        }
        sig_len = 32;
        break;
    }
    case ZT_ALG_ES256:
        rc = key->pem == NULL ? dbao_err_set(err, DBAO_EKEY, "es256 signing needs a pem")
                              : es256_sign(sig, key->pem, key->pem_len, tok, n, err);
        sig_len = 64;
        break;
    default:
        if (key->sm2 == NULL || !gm_sm2_key_has_priv(key->sm2)) {
            rc = dbao_err_set(err, DBAO_EKEY, "sm2 signing needs a private key");
        } else {
            rc = gm_sm2_sign(key->sm2, sig, (const uint8_t *) GM_SM2_DEFAULT_ID,
                             GM_SM2_DEFAULT_ID_LEN, (const uint8_t *) tok, n);
            if (rc != 0) {
                rc = dbao_err_set(err, rc, "sm2 signing failed");
            }
        }
        sig_len = 64;
        break;
    }
    if (rc != 0) {
        goto out;
    }
    tok[n++] = '.';
    n += zt_b64url_encode(tok + n, sig, sig_len);
    *out = tok;
    tok = NULL;
    if (out_len != NULL) {
        *out_len = n;
    }
out:
    dbao_free(tok);
    free(h);
    free(p);
    json_decref(header);
    json_decref(payload);
    return rc;
}

int
zt_claims_to_json(char **out, size_t *out_len, const zt_claims *c, dbao_err *err)
{
    json_t *o = json_object();
    char *s = NULL;
    int bad = o == NULL;

    *out = NULL;
    if (c->iss[0] != '\0') {
        bad |= json_object_set_new(o, "iss", json_string(c->iss));
    }
    if (c->sub[0] != '\0') {
        bad |= json_object_set_new(o, "sub", json_string(c->sub));
    }
    if (c->aud[0] != '\0') {
        bad |= json_object_set_new(o, "aud", json_string(c->aud));
    }
    if (c->jti[0] != '\0') {
        bad |= json_object_set_new(o, "jti", json_string(c->jti));
    }
    if (c->has_iat) {
        bad |= json_object_set_new(o, "iat", json_integer(c->iat));
    }
    if (c->has_nbf) {
        bad |= json_object_set_new(o, "nbf", json_integer(c->nbf));
    }
    if (c->has_exp) {
        bad |= json_object_set_new(o, "exp", json_integer(c->exp));
    }
    if (c->num_roles > 0) {
        json_t *a = json_array();

        for (size_t i = 0; a != NULL && i < c->num_roles && i < ZT_ROLES_MAX; i++) {
            bad |= json_array_append_new(a, json_string(c->roles[i]));
        }
        bad |= json_object_set_new(o, "roles", a);
    }
    if (c->has_cnf || c->has_cnf_x5t) {
        char b64[ZT_SM3_B64_LEN + 1];
        json_t *cnf = json_object();

        if (c->has_cnf) {
            zt_b64url_encode(b64, c->cnf_sm3, sizeof(c->cnf_sm3));
            bad |= json_object_set_new(cnf, "sm3", json_string(b64));
        }
        if (c->has_cnf_x5t) {
            zt_b64url_encode(b64, c->cnf_x5t, sizeof(c->cnf_x5t));
            bad |= json_object_set_new(cnf, "x5t#S256", json_string(b64));
        }
        bad |= json_object_set_new(o, "cnf", cnf);
    }
    if (!bad) {
        s = json_dumps(o, JSON_COMPACT);
    }
    json_decref(o);
    if (s == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory or a claim that is not utf-8");
    }
    *out = dbao_malloc(strlen(s) + 1);
    if (*out == NULL) {
        free(s);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    memcpy(*out, s, strlen(s) + 1);
    if (out_len != NULL) {
        *out_len = strlen(s);
    }
    free(s);
    return 0;
}
