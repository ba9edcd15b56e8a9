/* bench_sm2p256.c: micro-benchmark of the SM2 curve core (src/gm/sm2p256.c) against OpenSSL
 * 3.0 EVP_PKEY_sign / EVP_PKEY_verify on the digest, in the same run.
 *
 * Each figure is the median of 5 timed runs of about 0.3 s, the rows timed round-robin; run
 * pinned to one core:
 *   taskset -c 1 ./bench_sm2p256
 * Build: gcc -std=gnu11 -O2 -Iinclude -Isrc/gm bench/bench_sm2p256.c src/gm/sm2p256.c
 *        src/common/common.c -lcrypto -lpthread */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "sm2p256.h"

#define RUNS 5

static uint64_t seed = 0x1234;

static uint64_t
rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int
rand_cb(void *arg, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t) rng_next(arg);
    }
    return 0;
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

/* Benchmark state shared by the operations. */
static uint8_t d[32], pub[64], e[32], r[32], s[32], k[32], out[64];
static uint8_t der[80];
static size_t der_len;
static gm__sm2p_pubtab *tab;
static gm__sm2p_signctx *sctx;
static EVP_PKEY *pkey;
static volatile int sink;
static const gm__sm2p_impl *I;

static void
op_verify(void)
{
    sink += I->verify(pub, e, r, s);
}

static void
op_verify_tab(void)
{
    sink += I->verify_tab(tab, e, r, s);
}

static void
op_sign(void)
{
    uint8_t rr[32], ss[32];
    sink += I->sign(rr, ss, d, e, rand_cb, &seed);
}

static void
op_signctx(void)
{
    uint8_t rr[32], ss[32];
    sink += gm__sm2p_signctx_sign(sctx, rr, ss, e);
}

static void
op_base_mul(void)
{
    k[5]++;
    sink += I->base_mul(out, k);
}

static void
op_point_mul(void)
{
    k[5]++;
    sink += I->point_mul(out, k, pub);
}

static void
op_ossl_sign(void)
{
    uint8_t sig[80];
    size_t len = sizeof sig;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
    EVP_PKEY_sign_init(ctx);
    sink += EVP_PKEY_sign(ctx, sig, &len, e, 32);
    EVP_PKEY_CTX_free(ctx);
}

static void
op_ossl_verify(void)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pkey, NULL);
    EVP_PKEY_verify_init(ctx);
    sink += EVP_PKEY_verify(ctx, der, der_len, e, 32);
    EVP_PKEY_CTX_free(ctx);
}

/* rate_once: ops/s of one timed run of about 0.3 s. */
static double
rate_once(void (*op)(void))
{
    long n = 0;
    double t0 = now(), t;

    do {
        for (int i = 0; i < 16; i++) {
            op();
        }
        n += 16;
        t = now() - t0;
    } while (t < 0.3);
    return (double) n / t;
}

/* One benchmark row: an operation bound to an implementation. The rows are timed round-robin,
 * RUNS rounds, so that a burst of noise from the shared host hits one run of several rows
 * rather than all runs of one row; the median is reported. */
typedef struct {
    char label[64];
    const gm__sm2p_impl *impl;
    void (*op)(void);
    double res[RUNS];
} bench_row;

#define MAX_ROWS 16
static bench_row rows[MAX_ROWS];
static int num_rows;

static void
add_row(const char *what, const gm__sm2p_impl *impl, void (*op)(void))
{
    bench_row *row = &rows[num_rows++];

    snprintf(row->label, sizeof row->label, "%s%s%s%s", what, impl ? " [" : "",
             impl ? impl->name : "", impl ? "]" : "");
    row->impl = impl;
    row->op = op;
}

static EVP_PKEY *
make_key(void)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "SM2", NULL);
    EVP_PKEY *pk = NULL;
    BIGNUM *db = BN_bin2bn(d, 32, NULL);
    uint8_t pub65[65] = {0x04};

    memcpy(pub65 + 1, pub, 64);
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "SM2", 0);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub65, 65);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, db);
    params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_fromdata_init(ctx);
    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_KEYPAIR, params);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(db);
    return pk;
}

int
main(void)
{
    EVP_PKEY_CTX *ctx;
    double t0;

    I = gm__sm2p_impl_get(GM__SM2P_IMPL_PORTABLE);
    do {
        rand_cb(&seed, d, 32);
    } while (gm__sm2p_scalar_check(d) != 0);
    t0 = now();
    if (I->base_mul(pub, d) != 0) {
        return 1;
    }
    printf("first call (builds the G tables): %.2f ms\n", (now() - t0) * 1e3);
    rand_cb(&seed, e, 32);
    rand_cb(&seed, k, 32);
    if (I->sign(r, s, d, e, rand_cb, &seed) != 0 || I->verify(pub, e, r, s) != 0) {
        return 1;
    }
    t0 = now();
    if (gm__sm2p_pubtab_new(&tab, pub) != 0) {
        return 1;
    }
    printf("pubtab_new (portable): %.1f us\n", (now() - t0) * 1e6);
    pkey = make_key();
    ctx = EVP_PKEY_CTX_new(pkey, NULL);
    EVP_PKEY_sign_init(ctx);
    der_len = sizeof der;
    EVP_PKEY_sign(ctx, der, &der_len, e, 32);
    EVP_PKEY_CTX_free(ctx);

    for (int path = GM__SM2P_IMPL_PORTABLE; path <= GM__SM2P_IMPL_X86_ADX; path++) {
        const gm__sm2p_impl *impl = gm__sm2p_impl_get(path);
        if (impl == NULL) {
            continue;
        }
        add_row("sm2p verify", impl, op_verify);
        add_row("sm2p verify_tab", impl, op_verify_tab);
        add_row("sm2p sign", impl, op_sign);
        add_row("sm2p signctx_sign", impl, op_signctx);
        add_row("sm2p base_mul", impl, op_base_mul);
        add_row("sm2p point_mul", impl, op_point_mul);
    }
    add_row("openssl EVP_PKEY_sign", NULL, op_ossl_sign);
    add_row("openssl EVP_PKEY_verify", NULL, op_ossl_verify);

    for (int run = 0; run < RUNS; run++) {
        const gm__sm2p_impl *cur = NULL;
        for (int i = 0; i < num_rows; i++) {
            if (rows[i].impl != NULL && rows[i].impl != cur) {
                /* Per-implementation objects: a context refills with its own path. */
                cur = rows[i].impl;
                I = cur;
                gm__sm2p_pubtab_free(tab);
                gm__sm2p_signctx_free(sctx);
                tab = NULL;
                sctx = NULL;
                if (I->pubtab_new(&tab, pub) != 0 ||
                    I->signctx_new(&sctx, d, rand_cb, &seed) != 0) {
                    return 1;
                }
            }
            rows[i].res[run] = rate_once(rows[i].op);
        }
    }
    printf("%-34s %12s\n", "operation (median of 5 rounds)", "ops/s");
    for (int i = 0; i < num_rows; i++) {
        qsort(rows[i].res, RUNS, sizeof rows[i].res[0], cmp_double);
        printf("%-34s %12.0f\n", rows[i].label, rows[i].res[RUNS / 2]);
    }
    gm__sm2p_pubtab_free(tab);
    gm__sm2p_signctx_free(sctx);
    EVP_PKEY_free(pkey);
    return sink == 12345 ? 2 : 0;
}
