/* jwt_internal.h: what jwt.c, jwks.c and devsig.c share inside src/zt (private).
 *
 * A key set is an array of zt_key, appended to while it is built and never changed after it
 * is shared. Exactly one of secret, pkey, sm2 is set, matching alg: the verifier picks the
 * member by the key's alg, never by the token's, which is what rules out algorithm confusion
 * (an RSA or EC public key is never used as an HMAC secret).
 */
#ifndef DENGBAO_ZT_JWT_INTERNAL_H
#define DENGBAO_ZT_JWT_INTERNAL_H

#include <stdatomic.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "dengbao/zt.h"

typedef struct zt_key {
    zt_alg alg;
    char kid[ZT_KID_MAX];
    uint8_t *secret; /* HS256; wiped on free */
    size_t secret_len;
    EVP_MAC_CTX *hmac; /* HS256: HMAC-SHA256 keyed with secret; duplicated per verification */
    EVP_PKEY *pkey;    /* ES256, RS256 */
    gm_sm2_key *sm2;   /* SM2, public only, with a verification table */
    size_t sig_len;    /* the exact signature length for this key */
} zt_key;

struct zt_keyset {
    atomic_int refs;
    char sm2_alg[ZT_SM2_ALG_MAX];
    zt_key *keys;
    size_t num_keys;
    size_t cap_keys;
};

/* zt__alg_name returns the JWS name of alg ("SM2" alg: the set's name). */
const char *zt__alg_name(const zt_keyset *ks, zt_alg alg);

/* zt__sm2_jwk_pub reads {"kty":"EC","crv":"SM2","x":..,"y":..} into 04||x||y.
 * DBAO_EFORMAT, DBAO_ENOTSUP (other kty/crv). */
int zt__sm2_jwk_pub(uint8_t pub[GM_SM2_PUB_LEN], json_t *jwk, dbao_err *err);

#endif /* DENGBAO_ZT_JWT_INTERNAL_H */
