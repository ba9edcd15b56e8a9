/* test_sm2p256_ct.c: constant-time check of the SM2 curve core in the style of ctgrind.
 *
 * The secret inputs (private key d, nonce k, the random bytes behind the sign context) are
 * marked undefined with VALGRIND_MAKE_MEM_UNDEFINED; memcheck then reports every conditional
 * jump and every memory address that depends on them. sm2p256.c must be built with
 * -DGM_SM2P_CTGRIND so that its few intended disclosures (validity of d, rejection of a nonce
 * candidate, status codes, the signature itself) are marked defined again. Run:
 *   valgrind --error-exitcode=1 ./test_sm2p256_ct
 * Outside valgrind the client requests do nothing and the test only checks results. Every
 * implementation available on the CPU as seen by valgrind is exercised. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <valgrind/memcheck.h>

#include "sm2p256.h"

static const gm__sm2p_impl *I;
static uint64_t rng_state = 99;

static void
rng_bytes(uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        buf[i] = (uint8_t) (z ^ (z >> 31));
    }
}

/* secret_rand: random bytes that memcheck treats as secret. */
static int
secret_rand(void *arg, uint8_t *buf, size_t len)
{
    (void) arg;
    rng_bytes(buf, len);
    VALGRIND_MAKE_MEM_UNDEFINED(buf, len);
    return 0;
}

static void
make_key(uint8_t d[32], uint8_t pub[64])
{
    do {
        rng_bytes(d, 32);
    } while (gm__sm2p_scalar_check(d) != 0);
    assert_int_equal(I->base_mul(pub, d), 0);
}

static void
test_ct_sign(void **state)
{
    uint8_t d[32], pub[64], e[32], k[32], r[32], s[32];
    int rc;
    (void) state;

    make_key(d, pub);
    rng_bytes(e, 32);
    for (int i = 0; i < 4; i++) {
        rng_bytes(k, 32);
        VALGRIND_MAKE_MEM_UNDEFINED(d, 32);
        VALGRIND_MAKE_MEM_UNDEFINED(k, 32);
        rc = I->sign_k(r, s, d, e, k);
        VALGRIND_MAKE_MEM_DEFINED(d, 32);
        assert_int_equal(rc, 0);
        assert_int_equal(I->verify(pub, e, r, s), 0);

        VALGRIND_MAKE_MEM_UNDEFINED(d, 32);
        rc = I->sign(r, s, d, e, secret_rand, NULL);
        VALGRIND_MAKE_MEM_DEFINED(d, 32);
        assert_int_equal(rc, 0);
        assert_int_equal(I->verify(pub, e, r, s), 0);
    }
}

static void
test_ct_signctx(void **state)
{
    uint8_t d[32], pub[64], e[32], r[32], s[32];
    gm__sm2p_signctx *ctx;
    int rc;
    (void) state;

    make_key(d, pub);
    VALGRIND_MAKE_MEM_UNDEFINED(d, 32);
    rc = I->signctx_new(&ctx, d, secret_rand, NULL);
    VALGRIND_MAKE_MEM_DEFINED(d, 32);
    assert_int_equal(rc, 0);
    for (int i = 0; i < 3; i++) {
        rng_bytes(e, 32);
        assert_int_equal(gm__sm2p_signctx_sign(ctx, r, s, e), 0);
        assert_int_equal(I->verify(pub, e, r, s), 0);
    }
    gm__sm2p_signctx_free(ctx);
}

static void
test_ct_mul(void **state)
{
    uint8_t k[32], p[64], out[64], t[32];
    int rc;
    (void) state;

    rng_bytes(t, 32);
    assert_int_equal(I->base_mul(p, t), 0);
    for (int i = 0; i < 4; i++) {
        rng_bytes(k, 32);
        VALGRIND_MAKE_MEM_UNDEFINED(k, 32);
        rc = I->base_mul(out, k);
        VALGRIND_MAKE_MEM_DEFINED(out, 64);
        VALGRIND_MAKE_MEM_DEFINED(&rc, sizeof rc);
        assert_int_equal(rc, 0);
        rc = I->point_mul(out, k, p);
        VALGRIND_MAKE_MEM_DEFINED(out, 64);
        VALGRIND_MAKE_MEM_DEFINED(&rc, sizeof rc);
        assert_int_equal(rc, 0);
        VALGRIND_MAKE_MEM_UNDEFINED(k, 32);
        rc = gm__sm2p_scalar_check(k);
        VALGRIND_MAKE_MEM_DEFINED(k, 32);
        (void) rc;
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ct_sign),
        cmocka_unit_test(test_ct_signctx),
        cmocka_unit_test(test_ct_mul),
    };
    int failed = 0;

    /* Build the generator tables with defined data first. */
    I = gm__sm2p_impl_get(GM__SM2P_IMPL_PORTABLE);
    for (int path = GM__SM2P_IMPL_PORTABLE; path <= GM__SM2P_IMPL_X86_ADX; path++) {
        char name[64];
        I = gm__sm2p_impl_get(path);
        if (I == NULL) {
            printf("sm2p256 ct: implementation %d not available here, skipped\n", path);
            continue;
        }
        snprintf(name, sizeof name, "sm2p256 ct [%s]", I->name);
        failed += cmocka_run_group_tests_name(name, tests, NULL, NULL);
    }
    return failed;
}
