/* bench_gm.c: every gm primitive through dengbao's API next to OpenSSL 3 EVP called directly,
 * in the same run, with the ratio. The anchor is OpenSSL because it is what every team has.
 *
 * Each figure is the median of --runs runs (default 5) of --seconds each (default 0.3);
 * ciphers and hashes work on 16 KiB buffers like `openssl speed -bytes 16384`. Pin it to a core
 * (scripts/bench.sh uses taskset) on a shared machine.
 *
 * Output: one line per primitive, and with --json one JSON object per line:
 *   {"alg":"sm4-ctr","dengbao":...,"openssl":...,"unit":"MB/s","ratio":...}
 */
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/gm.h"

#define BUF_LEN 16384

static double opt_seconds = 0.3;
static int opt_runs = 5;
static int opt_json = 0;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

typedef int (*op_fn)(void *arg);

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

/* Operations per second: median over opt_runs runs. Returns NAN if an operation fails. */
static double
measure(op_fn fn, void *arg)
{
    double rates[64], t0, t;
    int r;

    for (r = 0; r < opt_runs && r < 64; r++) {
        long n = 0;

        t0 = now();
        do {
            int i;

            for (i = 0; i < 8; i++) {
                if (fn(arg) != 0) {
                    return NAN;
                }
            }
            n += 8;
            t = now();
        } while (t - t0 < opt_seconds);
        rates[r] = (double) n / (t - t0);
    }
    qsort(rates, (size_t) r, sizeof(double), cmp_double);
    return rates[r / 2];
}

static void
report(const char *alg, double ours, double theirs, const char *unit, double scale)
{
    double a = ours * scale, b = theirs * scale;

    if (opt_json) {
        printf("{\"alg\":\"%s\",\"dengbao\":%.1f,\"openssl\":", alg, a);
        if (isnan(b)) {
            printf("null");
        } else {
            printf("%.1f", b);
        }
        printf(",\"unit\":\"%s\",\"ratio\":", unit);
        if (isnan(b)) {
            printf("null}\n");
        } else {
            printf("%.2f}\n", a / b);
        }
        return;
    }
    if (isnan(b)) {
        printf("%-16s %12.1f %12s %-8s %8s\n", alg, a, "absent", unit, "-");
    } else {
        printf("%-16s %12.1f %12.1f %-8s %7.2fx\n", alg, a, b, unit, a / b);
    }
    fflush(stdout);
}

/* ---- state shared by the operations ------------------------------------------------------ */

static uint8_t buf_in[BUF_LEN], buf_out[BUF_LEN + 64], key16[16], iv16[16], tag[16];
static gm_sm4_ctx sm4;
static EVP_CIPHER_CTX *evp_ecb, *evp_cbc_enc, *evp_cbc_dec, *evp_ctr;
static EVP_MD_CTX *evp_md;
static EVP_MAC_CTX *evp_hmac;
static gm_sm2_key *sm2_key;
static EVP_PKEY *evp_key;
static uint8_t e32[32], sig64[64], der_sig[80], evp_sig[80], *ct_der;
static size_t der_sig_len, ct_der_len;

static int
our_sm3(void *arg)
{
    (void) arg;
    gm_sm3(buf_out, buf_in, BUF_LEN);
    return 0;
}

static int
evp_sm3(void *arg)
{
    unsigned int n;

    (void) arg;
    return EVP_DigestInit_ex(evp_md, EVP_sm3(), NULL) == 1 &&
                   EVP_DigestUpdate(evp_md, buf_in, BUF_LEN) == 1 &&
                   EVP_DigestFinal_ex(evp_md, buf_out, &n) == 1
               ? 0
               : -1;
}

static int
our_hmac(void *arg)
{
    (void) arg;
    gm_hmac_sm3(buf_out, key16, 16, buf_in, BUF_LEN);
    return 0;
}

static int
evp_hmac_op(void *arg)
{
    size_t n;

    (void) arg;
    return EVP_MAC_init(evp_hmac, key16, 16, NULL) == 1 &&
                   EVP_MAC_update(evp_hmac, buf_in, BUF_LEN) == 1 &&
                   EVP_MAC_final(evp_hmac, buf_out, &n, 32) == 1
               ? 0
               : -1;
}

static int
our_ecb(void *arg)
{
    (void) arg;
    return gm_sm4_ecb_encrypt(&sm4, buf_out, buf_in, BUF_LEN);
}

static int
our_cbc_enc(void *arg)
{
    (void) arg;
    return gm_sm4_cbc_encrypt(&sm4, buf_out, buf_in, BUF_LEN, iv16);
}

static int
our_cbc_dec(void *arg)
{
    (void) arg;
    return gm_sm4_cbc_decrypt(&sm4, buf_out, buf_in, BUF_LEN, iv16);
}

static int
our_ctr(void *arg)
{
    (void) arg;
    return gm_sm4_ctr(&sm4, buf_out, buf_in, BUF_LEN, iv16);
}

static int
our_gcm(void *arg)
{
    (void) arg;
    return gm_sm4_gcm_seal(&sm4, buf_out, tag, iv16, 12, NULL, 0, buf_in, BUF_LEN);
}

/* EVP with the key schedule done once: each call only resets the IV, as a server would. */
static int
evp_cipher_op(void *arg)
{
    EVP_CIPHER_CTX *c = arg;
    int n;

    return EVP_CipherInit_ex(c, NULL, NULL, NULL, iv16, -1) == 1 &&
                   EVP_CipherUpdate(c, buf_out, &n, buf_in, BUF_LEN) == 1
               ? 0
               : -1;
}

static int
our_sign(void *arg)
{
    (void) arg;
    return gm_sm2_sign_digest(sm2_key, sig64, e32);
}

static int
evp_sign(void *arg)
{
    EVP_PKEY_CTX *p = EVP_PKEY_CTX_new(evp_key, NULL);
    size_t n = sizeof(evp_sig);
    int ok;

    (void) arg;
    /* Its own output buffer: der_sig is the input of the verify benchmarks. */
    ok = p != NULL && EVP_PKEY_sign_init(p) == 1 && EVP_PKEY_sign(p, evp_sig, &n, e32, 32) == 1;
    EVP_PKEY_CTX_free(p);
    return ok ? 0 : -1;
}

static int
our_verify(void *arg)
{
    (void) arg;
    return gm_sm2_verify_digest(sm2_key, sig64, e32);
}

static int
evp_verify(void *arg)
{
    EVP_PKEY_CTX *p = EVP_PKEY_CTX_new(evp_key, NULL);
    int ok;

    (void) arg;
    ok = p != NULL && EVP_PKEY_verify_init(p) == 1 &&
         EVP_PKEY_verify(p, der_sig, der_sig_len, e32, 32) == 1;
    EVP_PKEY_CTX_free(p);
    return ok ? 0 : -1;
}

static int
our_encrypt(void *arg)
{
    uint8_t *ct;
    size_t len;
    int rc;

    (void) arg;
    rc = gm_sm2_encrypt(sm2_key, &ct, &len, GM_SM2_CT_DER, buf_in, 100);
    dbao_free(ct);
    return rc;
}

static int
evp_encrypt(void *arg)
{
    EVP_PKEY_CTX *p = EVP_PKEY_CTX_new(evp_key, NULL);
    size_t n = sizeof(buf_out);
    int ok;

    (void) arg;
    ok = p != NULL && EVP_PKEY_encrypt_init(p) == 1 &&
         EVP_PKEY_encrypt(p, buf_out, &n, buf_in, 100) == 1;
    EVP_PKEY_CTX_free(p);
    return ok ? 0 : -1;
}

static int
our_decrypt(void *arg)
{
    uint8_t *pt;
    size_t len;
    int rc;

    (void) arg;
    rc = gm_sm2_decrypt(sm2_key, &pt, &len, GM_SM2_CT_DER, ct_der, ct_der_len);
    dbao_free_secret(pt, len);
    return rc;
}

static int
evp_decrypt(void *arg)
{
    EVP_PKEY_CTX *p = EVP_PKEY_CTX_new(evp_key, NULL);
    size_t n = sizeof(buf_out);
    int ok;

    (void) arg;
    ok = p != NULL && EVP_PKEY_decrypt_init(p) == 1 &&
         EVP_PKEY_decrypt(p, buf_out, &n, ct_der, ct_der_len) == 1;
    EVP_PKEY_CTX_free(p);
    return ok ? 0 : -1;
}

static EVP_CIPHER_CTX *
evp_cipher_new(const EVP_CIPHER *cipher, int enc)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();

    if (c == NULL || EVP_CipherInit_ex(c, cipher, NULL, key16, iv16, enc) != 1) {
        fprintf(stderr, "bench_gm: openssl cipher setup failed\n");
        exit(1);
    }
    EVP_CIPHER_CTX_set_padding(c, 0);
    return c;
}

static int
want(int argc, char **argv, int first, const char *name)
{
    int i;

    if (first >= argc) {
        return 1;
    }
    for (i = first; i < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const double mb = 1.0 * BUF_LEN / 1e6;
    OSSL_PARAM params[2];
    EVP_MAC *mac;
    char *pem = NULL;
    size_t pem_len = 0;
    BIO *bio;
    int first = 1;

    while (first < argc && strncmp(argv[first], "--", 2) == 0) {
        if (strcmp(argv[first], "--seconds") == 0 && first + 1 < argc) {
            opt_seconds = atof(argv[++first]);
        } else if (strcmp(argv[first], "--runs") == 0 && first + 1 < argc) {
            opt_runs = atoi(argv[++first]);
        } else if (strcmp(argv[first], "--json") == 0) {
            opt_json = 1;
        } else {
            fprintf(stderr, "usage: bench_gm [--seconds S] [--runs N] [--json] [alg...]\n");
            return 2;
        }
        first++;
    }
    if (opt_runs < 1 || opt_runs > 63 || !(opt_seconds > 0)) {
        fprintf(stderr, "bench_gm: --runs 1..63 and --seconds > 0\n");
        return 2;
    }
    gm_rand_bytes(buf_in, sizeof(buf_in));
    gm_rand_bytes(key16, sizeof(key16));
    gm_rand_bytes(iv16, sizeof(iv16));
    gm_rand_bytes(e32, sizeof(e32));
    gm_sm4_init(&sm4);
    if (gm_sm4_setkey(&sm4, key16, 16) != 0 || gm_sm2_key_generate(&sm2_key, NULL) != 0 ||
        gm_sm2_key_to_pem(sm2_key, &pem, &pem_len, true, NULL) != 0) {
        fprintf(stderr, "bench_gm: setup failed\n");
        return 1;
    }
    bio = BIO_new_mem_buf(pem, (int) pem_len);
    evp_key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    dbao_free_secret(pem, pem_len);
    evp_md = EVP_MD_CTX_new();
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    evp_hmac = EVP_MAC_CTX_new(mac);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SM3", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (evp_key == NULL || evp_md == NULL || evp_hmac == NULL ||
        EVP_MAC_CTX_set_params(evp_hmac, params) != 1) {
        fprintf(stderr, "bench_gm: openssl setup failed\n");
        return 1;
    }
    evp_ecb = evp_cipher_new(EVP_sm4_ecb(), 1);
    evp_cbc_enc = evp_cipher_new(EVP_sm4_cbc(), 1);
    evp_cbc_dec = evp_cipher_new(EVP_sm4_cbc(), 0);
    evp_ctr = evp_cipher_new(EVP_sm4_ctr(), 1);
    if (gm_sm2_sign_digest(sm2_key, sig64, e32) != 0 ||
        gm_sm2_encrypt(sm2_key, &ct_der, &ct_der_len, GM_SM2_CT_DER, buf_in, 100) != 0) {
        fprintf(stderr, "bench_gm: sm2 setup failed\n");
        return 1;
    }
    gm_sm2_sig_to_der(der_sig, &der_sig_len, sig64);

    if (!opt_json) {
        printf("%-16s %12s %12s %-8s %8s\n", "primitive", "dengbao", "openssl", "unit", "ratio");
    }
    if (want(argc, argv, first, "sm3")) {
        report("sm3", measure(our_sm3, NULL), measure(evp_sm3, NULL), "MB/s", mb);
    }
    if (want(argc, argv, first, "hmac-sm3")) {
        report("hmac-sm3", measure(our_hmac, NULL), measure(evp_hmac_op, NULL), "MB/s", mb);
    }
    if (want(argc, argv, first, "sm4-ecb")) {
        report("sm4-ecb", measure(our_ecb, NULL), measure(evp_cipher_op, evp_ecb), "MB/s", mb);
    }
    if (want(argc, argv, first, "sm4-cbc-enc")) {
        report("sm4-cbc-enc", measure(our_cbc_enc, NULL), measure(evp_cipher_op, evp_cbc_enc),
               "MB/s", mb);
    }
    if (want(argc, argv, first, "sm4-cbc-dec")) {
        report("sm4-cbc-dec", measure(our_cbc_dec, NULL), measure(evp_cipher_op, evp_cbc_dec),
               "MB/s", mb);
    }
    if (want(argc, argv, first, "sm4-ctr")) {
        report("sm4-ctr", measure(our_ctr, NULL), measure(evp_cipher_op, evp_ctr), "MB/s", mb);
    }
    if (want(argc, argv, first, "sm4-gcm")) {
        /* OpenSSL 3.0 has no SM4-GCM: there is no anchor figure. */
        report("sm4-gcm", measure(our_gcm, NULL), NAN, "MB/s", mb);
    }
    if (want(argc, argv, first, "sm2-sign")) {
        report("sm2-sign", measure(our_sign, NULL), measure(evp_sign, NULL), "ops/s", 1);
    }
    if (want(argc, argv, first, "sm2-verify")) {
        report("sm2-verify", measure(our_verify, NULL), measure(evp_verify, NULL), "ops/s", 1);
    }
    if (want(argc, argv, first, "sm2-encrypt")) {
        report("sm2-encrypt", measure(our_encrypt, NULL), measure(evp_encrypt, NULL), "ops/s", 1);
    }
    if (want(argc, argv, first, "sm2-decrypt")) {
        report("sm2-decrypt", measure(our_decrypt, NULL), measure(evp_decrypt, NULL), "ops/s", 1);
    }
    EVP_CIPHER_CTX_free(evp_ecb);
    EVP_CIPHER_CTX_free(evp_cbc_enc);
    EVP_CIPHER_CTX_free(evp_cbc_dec);
    EVP_CIPHER_CTX_free(evp_ctr);
    EVP_MD_CTX_free(evp_md);
    EVP_MAC_CTX_free(evp_hmac);
    EVP_MAC_free(mac);
    EVP_PKEY_free(evp_key);
    gm_sm2_key_free(sm2_key);
    dbao_free(ct_der);
    gm_sm4_cleanup(&sm4);
    return 0;
}
