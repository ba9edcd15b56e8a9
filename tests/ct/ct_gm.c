/* ct_gm.c: constant-time proof of gm's secret-dependent code, by the ctgrind technique.
 *
 * Secrets (SM4 keys and round keys, GHASH keys, plaintexts, SM2 private scalars and nonces) are
 * marked undefined with VALGRIND_MAKE_MEM_UNDEFINED before the code under test runs. memcheck
 * then reports every conditional branch ("Conditional jump or move depends on uninitialised
 * value") and every memory address ("Use of uninitialised value of size 8") computed from
 * them: exactly the two leaks a timing or cache attacker exploits. Outputs are marked defined
 * again before the test looks at them. The library is built for this test with -DDBAO_CTGRIND,
 * which turns the few deliberate declassifications in the code (DBAO_CT_DECLASSIFY: a
 * signature's r, a rejection flag) into VALGRIND_MAKE_MEM_DEFINED (GM_SM2P_CTGRIND in
 * sm2p256.c).
 *
 * Run under `valgrind --error-exitcode=1`; a clean run prints "ct_gm: N passed, 0 failed".
 * `ct_gm --control` runs a deliberately leaky table lookup instead: valgrind must flag it, which
 * proves the harness can fail (tests/ct/ct_gm.sh checks both). valgrind cannot execute AVX-512
 * and reports a CPU without it, so the GFNI/AVX-512 paths are not reached here: they are
 * table-free and branch-free by construction (GF2P8AFFINE on whole registers), see
 * src/gm/sm4_x86.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <valgrind/memcheck.h>

#include "dengbao/gm.h"
#include "sm2p256.h"
#include "sm4_impl.h"

#define SECRET(p, n) VALGRIND_MAKE_MEM_UNDEFINED((p), (n))
#define PUBLIC(p, n) VALGRIND_MAKE_MEM_DEFINED((p), (n))

static int passed;

static void
fill(uint8_t *p, size_t n, unsigned seed)
{
    size_t i;

    for (i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t) (seed >> 16);
    }
}

static void
ct_sm4_paths(void)
{
    static const char *const paths[] = {"portable", "aesni-avx2", "gfni-avx512"};
    uint8_t key[16], in[16 * 40], out[16 * 40], ctr[16], iv[16];
    uint32_t rk_enc[32], rk_dec[32];
    size_t i;

    fill(key, sizeof(key), 1);
    fill(in, sizeof(in), 2);
    fill(iv, sizeof(iv), 3);
    SECRET(key, sizeof(key));
    gm__sm4_expand_key(rk_enc, rk_dec, key);
    passed++;
    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        const gm__sm4_impl *impl = gm__sm4_impl_get(paths[i]);

        if (impl == NULL) {
            printf("ct_gm: sm4 %s not runnable here (skipped)\n", paths[i]);
            continue;
        }
        SECRET(in, sizeof(in));
        impl->ecb(rk_enc, out, in, 40);
        impl->ecb(rk_dec, out, out, 40);
        memcpy(ctr, iv, 16);
        impl->ctr(rk_enc, out, in, 40, ctr, 0);
        memcpy(ctr, iv, 16);
        impl->ctr(rk_enc, out, in, 40, ctr, 1);
        memcpy(ctr, iv, 16);
        impl->cbc_enc(rk_enc, out, in, 40, ctr);
        memcpy(ctr, iv, 16);
        impl->cbc_dec(rk_dec, out, in, 40, ctr);
        PUBLIC(out, sizeof(out));
        printf("ct_gm: sm4 %s ecb/ctr/cbc constant time\n", paths[i]);
        passed++;
    }
}

static void
ct_ghash_paths(void)
{
    static const char *const paths[] = {"portable", "pclmul", "vpclmul-avx512"};
    uint8_t h[16], y[16], in[16 * 20];
    gm__ghash_key k;
    size_t i;

    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        fill(h, sizeof(h), 4);
        fill(in, sizeof(in), 5);
        memset(y, 0, sizeof(y));
        SECRET(h, sizeof(h));
        SECRET(in, sizeof(in));
        gm__ghash_init(&k, h, paths[i]);
        if (!gm__ghash_key_is(&k, paths[i])) {
            printf("ct_gm: ghash %s not runnable here (skipped)\n", paths[i]);
            gm__ghash_key_wipe(&k);
            continue;
        }
        gm__ghash_update(&k, y, in, 20);
        PUBLIC(y, sizeof(y));
        gm__ghash_key_wipe(&k);
        printf("ct_gm: ghash %s constant time\n", paths[i]);
        passed++;
    }
}

static void
ct_sm4_gcm_api(void)
{
    uint8_t key[16], iv[12], in[300], out[300], tag[16];
    gm_sm4_ctx ctx;

    fill(key, sizeof(key), 6);
    fill(iv, sizeof(iv), 7);
    fill(in, sizeof(in), 8);
    SECRET(key, sizeof(key));
    SECRET(in, sizeof(in));
    gm_sm4_init(&ctx);
    if (gm_sm4_setkey(&ctx, key, 16) != 0 ||
        gm_sm4_gcm_seal(&ctx, out, tag, iv, 12, NULL, 0, in, sizeof(in)) != 0) {
        printf("ct_gm: sm4-gcm api failed\n");
        exit(1);
    }
    PUBLIC(out, sizeof(out));
    PUBLIC(tag, sizeof(tag));
    gm_sm4_cleanup(&ctx);
    printf("ct_gm: sm4-gcm seal through the api constant time\n");
    passed++;
}

static void
ct_sm2(void)
{
    uint8_t d[32], k[32], e[32], r[32], s[32], xy[64], pub[64];
    int rc;

    /* A valid private key and nonce (below n) made deterministic for the test. */
    fill(d, sizeof(d), 9);
    fill(k, sizeof(k), 10);
    fill(e, sizeof(e), 11);
    d[0] = 0x3f;
    k[0] = 0x5a;
    if (gm__sm2p_base_mul(pub, d) != 0) {
        printf("ct_gm: base_mul failed\n");
        exit(1);
    }
    SECRET(k, sizeof(k));
    rc = gm__sm2p_base_mul(xy, k);
    PUBLIC(&rc, sizeof(rc));
    PUBLIC(xy, sizeof(xy));
    printf("ct_gm: sm2 k*G constant time in k\n");
    passed++;

    SECRET(k, sizeof(k));
    rc = gm__sm2p_point_mul(xy, k, pub);
    PUBLIC(&rc, sizeof(rc));
    PUBLIC(xy, sizeof(xy));
    printf("ct_gm: sm2 k*P constant time in k\n");
    passed++;

    SECRET(d, sizeof(d));
    SECRET(k, sizeof(k));
    rc = gm__sm2p_sign_k(r, s, d, e, k);
    PUBLIC(&rc, sizeof(rc));
    PUBLIC(r, sizeof(r));
    PUBLIC(s, sizeof(s));
    if (rc != 0) {
        printf("ct_gm: sign_k rejected the test nonce\n");
        exit(1);
    }
    printf("ct_gm: sm2 sign constant time in d and k\n");
    passed++;

    SECRET(d, sizeof(d));
    rc = gm__sm2p_scalar_check(d);
    PUBLIC(&rc, sizeof(rc));
    printf("ct_gm: sm2 private-key range check constant time\n");
    passed++;
}

/* The negative control: an S-box lookup indexed by a secret, as OpenSSL's portable SM4 does. */
static void
control(void)
{
    static const uint8_t table[256] = {1, 2, 3};
    uint8_t secret = 77, out;

    SECRET(&secret, 1);
    out = table[secret];
    PUBLIC(&out, 1);
    printf("ct_gm: control lookup done (%u)\n", out);
}

int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--control") == 0) {
        control();
        return 0;
    }
    ct_sm4_paths();
    ct_ghash_paths();
    ct_sm4_gcm_api();
    ct_sm2();
    printf("ct_gm: %d passed, 0 failed\n", passed);
    return 0;
}
