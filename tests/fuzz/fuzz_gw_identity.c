/* fuzz_gw_identity.c: libFuzzer target for the X-Auth-Identity parser (src/gateway/ztgw.c,
 * gw__zt_identity_verify), the header an upstream checks.
 *
 * The fuzzer's bytes are the part before ";sig="; the target signs them with a fixed key, so
 * the parser behind the MAC check is reached. Invariants: no crash or undefined behaviour; an
 * accepted value has NUL-terminated fields within their sizes; re-making a header from the
 * accepted fields with gw__zt_identity_make and verifying it gives the same fields (the
 * encoding round-trips); the same bytes with a flipped MAC byte are always refused. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gm.h"
#include "dengbao/zt.h"
#include "ztgw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t KEY[] = "fuzz-identity-key-0123456789";

static void
check_fields(const gw_zt_identity *id)
{
    assert(memchr(id->sub, 0, sizeof id->sub) != NULL);
    assert(id->num_roles <= ZT_ROLES_MAX);
    for (size_t i = 0; i < id->num_roles; i++) {
        assert(memchr(id->roles[i], 0, sizeof id->roles[i]) != NULL);
    }
    assert(memchr(id->device, 0, sizeof id->device) != NULL);
    assert(memchr(id->trace, 0, sizeof id->trace) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > GW_ZT_IDENTITY_MAX - 100) {
        return 0;
    }
    uint8_t mac[GM_SM3_DIGEST_LEN];
    gm_hmac_sm3(mac, KEY, sizeof KEY - 1, data, size);
    char b64[64];
    size_t blen = zt_b64url_encode(b64, mac, sizeof mac);
    char *v = malloc(size + 5 + blen + 1);
    assert(v != NULL);
    memcpy(v, data, size);
    memcpy(v + size, ";sig=", 5);
    memcpy(v + size + 5, b64, blen + 1);
    size_t vlen = size + 5 + blen;

    gw_zt_identity id;
    memset(&id, 0, sizeof id);
    dbao_err err;
    int rc = gw__zt_identity_verify(&id, KEY, sizeof KEY - 1, v, vlen, 0, 0, &err);
    if (rc == 0) {
        check_fields(&id);
        /* round trip */
        gm_hmac_sm3_ctx keyed;
        gm_hmac_sm3_init(&keyed, KEY, sizeof KEY - 1);
        const char *roles[ZT_ROLES_MAX];
        for (size_t i = 0; i < id.num_roles; i++) {
            roles[i] = id.roles[i];
        }
        dbao_buf again;
        dbao_buf_init(&again);
        if (gw__zt_identity_make(&again, &keyed, id.sub, roles, id.num_roles,
                                 id.device[0] ? id.device : NULL, id.iat, id.trace) == 0) {
            gw_zt_identity id2;
            memset(&id2, 0, sizeof id2);
            assert(gw__zt_identity_verify(&id2, KEY, sizeof KEY - 1, again.data, again.len, 0, 0,
                                          &err) == 0);
            assert(strcmp(id.sub, id2.sub) == 0 && id.num_roles == id2.num_roles &&
                   strcmp(id.device, id2.device) == 0 && id.iat == id2.iat &&
                   strcmp(id.trace, id2.trace) == 0);
            for (size_t i = 0; i < id.num_roles; i++) {
                assert(strcmp(id.roles[i], id2.roles[i]) == 0);
            }
        }
        dbao_buf_free(&again);
        gm_hmac_sm3_cleanup(&keyed);
    }
    /* a wrong MAC is always refused */
    v[vlen - 1] = v[vlen - 1] == 'A' ? 'B' : 'A';
    assert(gw__zt_identity_verify(NULL, KEY, sizeof KEY - 1, v, vlen, 0, 0, &err) != 0);
    free(v);
    return 0;
}
