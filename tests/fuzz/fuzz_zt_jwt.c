/* fuzz_zt_jwt.c: libFuzzer target for the token verifier (zt_jwt_verify) and the JWKS loader
 * (zt_keyset_add_jwks), with a fixed key set (an HS256 secret and an SM2 key, kids "h" and
 * "s").
 *
 * The first byte picks the mode:
 *   0  the rest is a compact token, verified as is (structure, base64url and header parsing;
 *      signatures cannot be forged, so claims are reached through mode 1);
 *   1  the rest is header JSON, a NUL, payload JSON: the harness encodes and signs it with the
 *      HS256 secret, so the header rules and every claim rule are reached;
 *   2  the rest is a JWKS document, loaded into a fresh set.
 *
 * Invariants: the result is 0 or one of the documented codes; on success every string claim
 * is NUL-terminated inside its field and num_roles <= ZT_ROLES_MAX; on failure the claims are
 * all zero; a second verification gives the same result; a failed JWKS load leaves the set
 * empty (all or nothing).
 *
 * Build: cmake -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (target fuzz_zt_jwt).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dengbao/zt.h"

static const uint8_t secret[] = "fuzz-secret-0123456789abcdef";
static zt_keyset *ks;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
init(void)
{
    static const uint8_t d[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                  17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    gm_sm2_key *k = NULL;

    assert(zt_keyset_new(&ks, NULL, NULL) == 0);
    assert(zt_keyset_add_hmac(ks, "h", secret, sizeof(secret) - 1, NULL) == 0);
    assert(gm_sm2_key_from_priv(&k, d, sizeof(d), NULL) == 0);
    assert(zt_keyset_add_sm2(ks, "s", k, NULL) == 0);
    gm_sm2_key_free(k);
}

static bool
ok_code(int rc)
{
    return rc == 0 || rc == DBAO_EFORMAT || rc == DBAO_EVERIFY || rc == DBAO_ENOTSUP ||
           rc == DBAO_EKEY || rc == DBAO_ERANGE;
}

static bool
is_zero(const void *p, size_t len)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < len; i++) {
        if (b[i] != 0) {
            return false;
        }
    }
    return true;
}

static void
check(const char *tok, size_t len)
{
    zt_jwt_opts o = {.now = 1800000000, .skew = 60, .allow_no_exp = true};
    zt_claims c, c2;
    int rc = zt_jwt_verify(ks, &o, tok, len, &c, NULL);
    int rc2 = zt_jwt_verify(ks, &o, tok, len, &c2, NULL);

    assert(ok_code(rc));
    assert(rc == rc2);
    if (rc != 0) {
        assert(is_zero(&c, sizeof(c)));
        return;
    }
    assert(memcmp(&c, &c2, sizeof(c)) == 0);
    assert(memchr(c.sub, '\0', sizeof(c.sub)) && memchr(c.iss, '\0', sizeof(c.iss)));
    assert(memchr(c.aud, '\0', sizeof(c.aud)) && memchr(c.jti, '\0', sizeof(c.jti)));
    assert(memchr(c.kid, '\0', sizeof(c.kid)));
    assert(c.num_roles <= ZT_ROLES_MAX);
    for (size_t i = 0; i < c.num_roles; i++) {
        assert(memchr(c.roles[i], '\0', ZT_ROLE_MAX) && c.roles[i][0] != '\0');
    }
    assert(c.alg == ZT_ALG_HS256 || c.alg == ZT_ALG_SM2);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ks == NULL) {
        init();
    }
    if (size == 0 || size > 12000) {
        return 0;
    }
    switch (data[0] % 3) {
    case 0:
        check((const char *) data + 1, size - 1);
        break;
    case 1: {
        const uint8_t *h = data + 1, *nul = memchr(h, 0, size - 1), *p;
        size_t hl, pl, n;
        char *tok;
        uint8_t mac[32];
        unsigned ml = 0;

        if (nul == NULL) {
            return 0;
        }
        hl = (size_t) (nul - h);
        p = nul + 1;
        pl = size - 1 - hl - 1;
        tok = malloc((hl + pl) * 4 / 3 + 64);
        assert(tok != NULL);
        n = zt_b64url_encode(tok, h, hl);
        tok[n++] = '.';
        n += zt_b64url_encode(tok + n, p, pl);
        HMAC(EVP_sha256(), secret, (int) sizeof(secret) - 1, (const uint8_t *) tok, n, mac, &ml);
        tok[n++] = '.';
        n += zt_b64url_encode(tok + n, mac, sizeof(mac));
        check(tok, n);
        free(tok);
        break;
    }
    default: {
        zt_keyset *k = NULL;
        int rc;

        assert(zt_keyset_new(&k, NULL, NULL) == 0);
        rc = zt_keyset_add_jwks(k, (const char *) data + 1, size - 1, NULL);
        assert(ok_code(rc) || rc == DBAO_EINVAL || rc == DBAO_ECRYPTO);
        if (rc != 0) {
            assert(zt_keyset_count(k) == 0);
        }
        zt_keyset_unref(k);
        break;
    }
    }
    return 0;
}
