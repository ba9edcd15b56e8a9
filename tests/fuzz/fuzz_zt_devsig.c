/* fuzz_zt_devsig.c: libFuzzer target for the device-signature header parsing of request mode
 * (zt_devsig_verify_request, zt_devsig_canonical) and token mode (zt_devsig_verify_token),
 * with a fixed device key bound to fixed claims.
 *
 * Input: fields separated by NUL bytes, in the order method, path, query, X-SM2-Timestamp,
 * X-SM2-Nonce, X-Content-SM3, X-SM2-Signature (missing trailing fields are absent headers).
 * Signatures cannot be forged, so the invariants are: every result is 0 or a documented
 * code, never 0 for these inputs unless the harness's own signature is used (it never is),
 * the canonical string has exactly five LFs when it is accepted, and a nonce cache is only
 * written by successful verifications (it stays empty).
 *
 * Build: cmake -DDBAO_FUZZ=ON -DCMAKE_C_COMPILER=clang (target fuzz_zt_devsig).
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dengbao/zt.h"

static gm_sm2_key *dev;
static zt_claims claims;
static zt_noncecache *nc;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
init(void)
{
    static const uint8_t d[32] = {9, 8, 7, 6,  5,  4,  3,  2,  1,  0,  1,  2,  3,  4,  5,  6,
                                  7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22};

    assert(gm_sm2_key_from_priv(&dev, d, sizeof(d), NULL) == 0);
    claims.has_cnf = true;
    claims.has_exp = true;
    claims.exp = 1800000600;
    zt_sm2_thumbprint(claims.cnf_sm3, dev);
    assert(zt_noncecache_new(&nc, 1024, NULL) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *f[7] = {0};
    size_t l[7] = {0}, n = 0, start = 0;
    zt_devsig_request r = {0};
    dbao_buf b = {0};
    int rc;

    if (dev == NULL) {
        init();
    }
    for (size_t i = 0; i <= size && n < 7; i++) {
        if (i == size || data[i] == 0) {
            f[n] = (const char *) data + start;
            l[n] = i - start;
            n++;
            start = i + 1;
        }
    }
    r.method = f[0];
    r.method_len = l[0];
    r.path = f[1];
    r.path_len = l[1];
    r.query = f[2];
    r.query_len = l[2];
    r.timestamp = f[3];
    r.timestamp_len = l[3];
    r.nonce = f[4];
    r.nonce_len = l[4];
    r.content_sm3 = f[5];
    r.content_sm3_len = l[5];
    r.sig = f[6];
    r.sig_len = l[6];
    rc = zt_devsig_verify_request(&claims, dev, &r, nc, 1800000000, 300, NULL);
    assert(rc == DBAO_EFORMAT || rc == DBAO_EVERIFY);
    rc = zt_devsig_canonical(&b, &r, NULL);
    assert(rc == 0 || rc == DBAO_EFORMAT);
    if (rc == 0) {
        size_t lf = 0;

        for (size_t i = 0; i < b.len; i++) {
            lf += b.data[i] == '\n';
        }
        assert(lf == 5);
    }
    dbao_buf_free(&b);
    rc = zt_devsig_verify_token(&claims, dev, (const char *) data, size, f[6], l[6], NULL,
                                1800000000, NULL);
    assert(rc == DBAO_EFORMAT || rc == DBAO_EVERIFY);
    assert(zt_noncecache_live(nc, 1800000000) == 0);
    return 0;
}
