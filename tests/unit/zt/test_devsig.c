/* test_devsig.c: device signatures (zt.h "device signatures"): the SM3 thumbprint, the device
 * key registry, token mode with its cache, request mode with its replay window and nonce
 * cache (full behaviour, expiry, and many threads at once).
 *
 * Tokens come from zt_jwt_sign (HS256) with a cnf.sm3 thumbprint of device A; device B is the
 * "other device". Request signatures are made with zt_devsig_sign_request and, once, checked
 * against an independent construction: gm_sm2_verify over the canonical string built here by
 * hand, so the documented format is pinned. The cost of token mode (with and without the
 * cache) and of request mode is printed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/zt.h"
#include "testutil.h"

#define NOW 1800000000LL

static const uint8_t secret[] = "devsig-test-secret-0123456789";
static gm_sm2_key *dev_a, *dev_b;
static zt_keyset *ks;
static char *token;
static size_t token_len;
static zt_claims claims;

static int
make_token(char **out, size_t *out_len, const gm_sm2_key *dev, bool with_jwk)
{
    zt_claims c = {0};
    zt_jwt_signkey key = {.alg = ZT_ALG_HS256, .secret = secret, .secret_len = sizeof(secret) - 1};
    char *payload = NULL;
    size_t plen = 0;
    uint8_t pub[GM_SM2_PUB_LEN];
    int rc;

    snprintf(c.sub, sizeof(c.sub), "device-user");
    c.has_exp = true;
    c.exp = NOW + 600;
    c.has_cnf = true;
    zt_sm2_thumbprint(c.cnf_sm3, dev);
    if (!with_jwk) {
        rc = zt_claims_to_json(&payload, &plen, &c, NULL);
    } else {
        char x[44], y[44], th[44];

        gm_sm2_key_get_pub(dev, pub);
        zt_b64url_encode(x, pub + 1, 32);
        zt_b64url_encode(y, pub + 33, 32);
        zt_b64url_encode(th, c.cnf_sm3, 32);
        payload = dbao_malloc(512);
        plen = (size_t) snprintf(payload, 512,
                                 "{\"sub\":\"u\",\"exp\":%lld,\"cnf\":{\"sm3\":\"%s\",\"jwk\":{"
                                 "\"kty\":\"EC\",\"crv\":\"SM2\",\"x\":\"%s\",\"y\":\"%s\"}}}",
                                 (long long) (NOW + 600), th, x, y);
        rc = 0;
    }
    if (rc == 0) {
        rc = zt_jwt_sign(out, out_len, &key, payload, plen, NULL);
    }
    dbao_free(payload);
    return rc;
}

static int
verify_tok(const char *t, size_t len, zt_claims *c)
{
    zt_jwt_opts o = {.now = NOW, .require_cnf = true};

    return zt_jwt_verify(ks, &o, t, len, c, NULL);
}

static int
setup(void **state)
{
    (void) state;
    if (gm_sm2_key_generate(&dev_a, NULL) != 0 || gm_sm2_key_generate(&dev_b, NULL) != 0 ||
        zt_keyset_new(&ks, NULL, NULL) != 0 ||
        zt_keyset_add_hmac(ks, NULL, secret, sizeof(secret) - 1, NULL) != 0 ||
        make_token(&token, &token_len, dev_a, false) != 0 ||
        verify_tok(token, token_len, &claims) != 0) {
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    dbao_free(token);
    zt_keyset_unref(ks);
    gm_sm2_key_free(dev_a);
    gm_sm2_key_free(dev_b);
    return 0;
}

static void
test_thumbprint(void **state)
{
    uint8_t pub[GM_SM2_PUB_LEN], want[32], got[32];

    (void) state;
    gm_sm2_key_get_pub(dev_a, pub);
    assert_int_equal(pub[0], 0x04);
    gm_sm3(want, pub, sizeof(pub));
    zt_sm2_thumbprint(got, dev_a);
    assert_memory_equal(got, want, 32);
    assert_true(claims.has_cnf);
    assert_memory_equal(claims.cnf_sm3, want, 32);
}

static void
test_devkeys(void **state)
{
    zt_devkeys *dk;
    uint8_t th[32], pub[GM_SM2_PUB_LEN];
    gm_sm2_key *keys[40];
    char *pem = NULL;
    size_t pem_len = 0;

    (void) state;
    assert_int_equal(zt_devkeys_new(&dk, NULL), 0);
    zt_sm2_thumbprint(th, dev_a);
    assert_null(zt_devkeys_find(dk, th));
    assert_int_equal(gm_sm2_key_to_pem(dev_a, &pem, &pem_len, false, NULL), 0);
    assert_int_equal(zt_devkeys_add_pem(dk, pem, pem_len, NULL), 0);
    dbao_free(pem);
    assert_non_null(zt_devkeys_find(dk, th));
    gm_sm2_key_get_pub(dev_a, pub);
    assert_int_equal(zt_devkeys_add_pub(dk, pub, sizeof(pub), NULL), 0); /* duplicate: no-op */
    for (int i = 0; i < 40; i++) {
        assert_int_equal(gm_sm2_key_generate(&keys[i], NULL), 0);
        gm_sm2_key_get_pub(keys[i], pub);
        assert_int_equal(zt_devkeys_add_pub(dk, pub, sizeof(pub), NULL), 0);
    }
    for (int i = 0; i < 40; i++) {
        const gm_sm2_key *k;
        uint8_t p2[GM_SM2_PUB_LEN];

        zt_sm2_thumbprint(th, keys[i]);
        k = zt_devkeys_find(dk, th);
        assert_non_null(k);
        gm_sm2_key_get_pub(keys[i], pub);
        gm_sm2_key_get_pub(k, p2);
        assert_memory_equal(pub, p2, sizeof(pub));
        gm_sm2_key_free(keys[i]);
    }
    zt_sm2_thumbprint(th, dev_b);
    assert_null(zt_devkeys_find(dk, th));
    pub[10] ^= 1;
    assert_int_not_equal(zt_devkeys_add_pub(dk, pub, sizeof(pub), NULL), 0);
    zt_devkeys_free(dk);
}

static void
test_token_mode(void **state)
{
    char sig[ZT_DEVSIG_B64_LEN + 1], sig_b[ZT_DEVSIG_B64_LEN + 1];
    zt_claims nocnf = claims;
    char *t2 = NULL;
    size_t t2_len = 0;
    zt_claims c2;

    (void) state;
    assert_int_equal(zt_devsig_sign_token(sig, dev_a, token, token_len), 0);
    assert_int_equal(strlen(sig), ZT_DEVSIG_B64_LEN);
    assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig,
                                            ZT_DEVSIG_B64_LEN, NULL, NOW, NULL),
                     0);
    /* Signed by another device: with B's key (not the token's) and with A's key.
     */
    assert_int_equal(zt_devsig_sign_token(sig_b, dev_b, token, token_len), 0);
    assert_int_equal(zt_devsig_verify_token(&claims, dev_b, token, token_len, sig_b,
                                            ZT_DEVSIG_B64_LEN, NULL, NOW, NULL),
                     DBAO_EVERIFY);
    assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig_b,
                                            ZT_DEVSIG_B64_LEN, NULL, NOW, NULL),
                     DBAO_EVERIFY);
    /* Over other bytes (a token one byte shorter), malformed headers. */
    assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len - 1, sig,
                                            ZT_DEVSIG_B64_LEN, NULL, NOW, NULL),
                     DBAO_EVERIFY);
    assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig,
                                            ZT_DEVSIG_B64_LEN - 1, NULL, NOW, NULL),
                     DBAO_EFORMAT);
    sig[5] = '+';
    assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig,
                                            ZT_DEVSIG_B64_LEN, NULL, NOW, NULL),
                     DBAO_EFORMAT);
    assert_int_equal(
        zt_devsig_verify_token(&claims, dev_a, token, token_len, NULL, 0, NULL, NOW, NULL),
        DBAO_EFORMAT);
    assert_int_equal(zt_devsig_sign_token(sig, dev_a, token, token_len), 0);
    /* No cnf in the token; no key at all. */
    nocnf.has_cnf = false;
    assert_int_equal(zt_devsig_verify_token(&nocnf, dev_a, token, token_len, sig, ZT_DEVSIG_B64_LEN,
                                            NULL, NOW, NULL),
                     DBAO_EVERIFY);
    assert_int_equal(zt_devsig_verify_token(&claims, NULL, token, token_len, sig, ZT_DEVSIG_B64_LEN,
                                            NULL, NOW, NULL),
                     DBAO_EVERIFY);
    /* The key from the token's cnf.jwk. */
    assert_int_equal(make_token(&t2, &t2_len, dev_a, true), 0);
    assert_int_equal(verify_tok(t2, t2_len, &c2), 0);
    assert_true(c2.has_cnf_pub);
    assert_int_equal(zt_devsig_sign_token(sig, dev_a, t2, t2_len), 0);
    assert_int_equal(
        zt_devsig_verify_token(&c2, NULL, t2, t2_len, sig, ZT_DEVSIG_B64_LEN, NULL, NOW, NULL), 0);
    assert_int_equal(
        zt_devsig_verify_token(&c2, dev_b, t2, t2_len, sig, ZT_DEVSIG_B64_LEN, NULL, NOW, NULL),
        DBAO_EVERIFY);
    dbao_free(t2);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void
test_token_cache(void **state)
{
    zt_sigcache *cache;
    char sig[ZT_DEVSIG_B64_LEN + 1], sig_b[ZT_DEVSIG_B64_LEN + 1];
    double t0, cold, warm;
    const int n = 200;

    (void) state;
    assert_int_equal(zt_sigcache_new(&cache, 64, NULL), 0);
    assert_int_equal(zt_devsig_sign_token(sig, dev_a, token, token_len), 0);
    assert_int_equal(zt_devsig_sign_token(sig_b, dev_b, token, token_len), 0);
    /* A bad signature is never cached. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig_b,
                                                ZT_DEVSIG_B64_LEN, cache, NOW, NULL),
                         DBAO_EVERIFY);
    }
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig,
                                                ZT_DEVSIG_B64_LEN, NULL, NOW, NULL),
                         0);
    }
    cold = now_s() - t0;
    t0 = now_s();
    for (int i = 0; i < n; i++) {
        assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig,
                                                ZT_DEVSIG_B64_LEN, cache, NOW, NULL),
                         0);
    }
    warm = now_s() - t0;
    printf("    token mode: %.2f us/verify uncached, %.2f us/verify with the "
           "cache\n",
           cold / n * 1e6, warm / n * 1e6);
    assert_true(warm * 2 < cold); /* about 100 times in release builds */
    /* Still refused with a key that does not match cnf, even when cached. */
    assert_int_equal(zt_devsig_verify_token(&claims, dev_b, token, token_len, sig,
                                            ZT_DEVSIG_B64_LEN, cache, NOW, NULL),
                     DBAO_EVERIFY);
    /* After exp the entry is gone (verification happens again and still
     * succeeds). */
    assert_int_equal(zt_devsig_verify_token(&claims, dev_a, token, token_len, sig,
                                            ZT_DEVSIG_B64_LEN, cache, claims.exp + 1, NULL),
                     0);
    zt_sigcache_free(cache);
}

/* ---- request mode
 * -------------------------------------------------------------------------- */

typedef struct req_fix {
    zt_devsig_headers h;
    zt_devsig_request r;
    uint8_t body_sm3[32];
} req_fix;

static void
fix_sign(req_fix *f, const gm_sm2_key *dev, const char *method, const char *path, const char *query,
         const char *body, int64_t ts)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(zt_devsig_sign_request(&f->h, dev, method, path, query, (const uint8_t *) body,
                                            body != NULL ? strlen(body) : 0, ts, NULL),
                     0);
    gm_sm3(f->body_sm3, body, body != NULL ? strlen(body) : 0);
    f->r.method = method;
    f->r.method_len = strlen(method);
    f->r.path = path;
    f->r.path_len = strlen(path);
    f->r.query = query;
    f->r.query_len = query != NULL ? strlen(query) : 0;
    f->r.sig = f->h.sig;
    f->r.sig_len = strlen(f->h.sig);
    f->r.timestamp = f->h.timestamp;
    f->r.timestamp_len = strlen(f->h.timestamp);
    f->r.nonce = f->h.nonce;
    f->r.nonce_len = strlen(f->h.nonce);
    f->r.content_sm3 = f->h.content_sm3;
    f->r.content_sm3_len = strlen(f->h.content_sm3);
    f->r.body_sm3 = f->body_sm3;
}

static void
test_request_format(void **state)
{
    req_fix f;
    char want[512];
    uint8_t sig[64], h[32];
    char hb[44];
    size_t n;
    dbao_buf b = {0};

    (void) state;
    fix_sign(&f, dev_a, "POST", "/api/v1/records", "a=1&b=%20x", "{\"x\":1}", NOW);
    gm_sm3(h, "{\"x\":1}", 7);
    zt_b64url_encode(hb, h, 32);
    assert_string_equal(f.h.content_sm3, hb);
    assert_string_equal(f.h.timestamp, "1800000000");
    assert_int_equal(strlen(f.h.nonce), 22);
    snprintf(want, sizeof(want), "POST\n/api/v1/records\na=1&b=%%20x\n1800000000\n%s\n%s",
             f.h.nonce, hb);
    assert_int_equal(zt_devsig_canonical(&b, &f.r, NULL), 0);
    assert_string_equal(b.data, want);
    dbao_buf_free(&b);
    /* Independent check: gm_sm2_verify over the hand-built string. */
    assert_int_equal(zt_b64url_decode(sig, sizeof(sig), &n, f.h.sig, strlen(f.h.sig)), 0);
    assert_int_equal(n, 64);
    assert_int_equal(gm_sm2_verify(dev_a, sig, (const uint8_t *) "1234567812345678", 16,
                                   (const uint8_t *) want, strlen(want)),
                     0);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, NULL, NOW, 300, NULL), 0);
    /* No query, no body. */
    fix_sign(&f, dev_a, "GET", "/", NULL, NULL, NOW);
    assert_int_equal(zt_devsig_canonical(&b, &f.r, NULL), 0);
    gm_sm3(h, "", 0);
    zt_b64url_encode(hb, h, 32);
    snprintf(want, sizeof(want), "GET\n/\n\n1800000000\n%s\n%s", f.h.nonce, hb);
    assert_string_equal(b.data, want);
    dbao_buf_free(&b);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, NULL, NOW, 300, NULL), 0);
    /* A line feed in a field is refused by signer and verifier. */
    {
        zt_devsig_headers hh;

        assert_int_equal(
            zt_devsig_sign_request(&hh, dev_a, "GET", "/a\nb", NULL, NULL, 0, NOW, NULL),
            DBAO_EFORMAT);
    }
}

static void
test_request_mode(void **state)
{
    zt_noncecache *nc;
    req_fix f, g;
    dbao_err err = {0};

    (void) state;
    assert_int_equal(zt_noncecache_new(&nc, 1024, NULL), 0);
    fix_sign(&f, dev_a, "POST", "/api/x", "q=1", "body", NOW);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err), 0);
    /* Replayed nonce, also a second later. */
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    assert_string_equal(err.msg, "replayed x-sm2-nonce");
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW + 1, 300, &err),
                     DBAO_EVERIFY);
    /* Old and future timestamps. */
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW - 301);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW + 301);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW + 299);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err), 0);
    /* Body changed: the received body's hash differs from the header. */
    fix_sign(&f, dev_a, "PUT", "/api/x", NULL, "original", NOW);
    gm_sm3(f.body_sm3, "tampered", 8);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    /* ...and the header changed to match the tampered body: the signature fails.
     */
    fix_sign(&f, dev_a, "PUT", "/api/x", NULL, "original", NOW);
    fix_sign(&g, dev_a, "PUT", "/api/x", NULL, "tampered", NOW);
    f.r.content_sm3 = g.h.content_sm3;
    memcpy(f.body_sm3, g.body_sm3, 32);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    /* Method, path, query changed. */
    fix_sign(&f, dev_a, "GET", "/api/x", "id=1", NULL, NOW);
    f.r.method = "DELETE";
    f.r.method_len = 6;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    fix_sign(&f, dev_a, "GET", "/api/x", "id=1", NULL, NOW);
    f.r.path = "/api/y";
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    fix_sign(&f, dev_a, "GET", "/api/x", "id=1", NULL, NOW);
    f.r.query = "id=2";
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    fix_sign(&f, dev_a, "GET", "/api/x", "id=1", NULL, NOW);
    f.r.query_len = 0;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    /* Signed by another device: with its own key (cnf mismatch) and claimed as
     * A's. */
    fix_sign(&f, dev_b, "GET", "/api/x", NULL, NULL, NOW);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_b, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    /* Malformed headers. */
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW);
    f.r.timestamp = "01800000000";
    f.r.timestamp_len = 11;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EFORMAT);
    f.r.timestamp = "-1";
    f.r.timestamp_len = 2;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EFORMAT);
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW);
    f.r.nonce_len = 15;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EFORMAT);
    f.r.nonce = "abcdefghijklmnop=";
    f.r.nonce_len = 17;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EFORMAT);
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW);
    f.r.content_sm3 = NULL;
    f.r.content_sm3_len = 0;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EFORMAT);
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW);
    f.r.sig = NULL;
    f.r.sig_len = 0;
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EFORMAT);
    /* Failed requests did not use up their nonces: the good one still passes
     * once. */
    fix_sign(&f, dev_a, "GET", "/api/x", NULL, NULL, NOW);
    f.r.path = "/api/y";
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    f.r.path = "/api/x";
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err), 0);
    assert_int_equal(zt_devsig_verify_request(&claims, dev_a, &f.r, nc, NOW, 300, &err),
                     DBAO_EVERIFY);
    zt_noncecache_free(nc);
}

static void
test_noncecache_full(void **state)
{
    zt_noncecache *nc;
    uint8_t key[32];
    tu_rng r = {11};
    size_t accepted = 0, refused = 0;

    (void) state;
    /* 64 shards; 64 entries requested -> 8 slots per shard, 4 live per shard. */
    assert_int_equal(zt_noncecache_new(&nc, 64, NULL), 0);
    for (int i = 0; i < 2000; i++) {
        int rc;

        tu_fill(&r, key, sizeof(key));
        rc = zt_noncecache_add(nc, key, NOW + 100, NOW);
        if (rc == 0) {
            accepted++;
        } else {
            assert_int_equal(rc, DBAO_ERANGE);
            refused++;
        }
    }
    assert_int_equal(accepted, 64 * 4);
    assert_int_equal(zt_noncecache_live(nc, NOW), 64 * 4);
    /* Every accepted key is still remembered (a replay, not a full refusal). */
    r.s = 11;
    for (int i = 0, seen = 0; seen < 20 && i < 2000; i++) {
        int rc;

        tu_fill(&r, key, sizeof(key));
        rc = zt_noncecache_add(nc, key, NOW + 100, NOW);
        assert_true(rc == DBAO_EVERIFY || rc == DBAO_ERANGE);
        seen += rc == DBAO_EVERIFY;
    }
    /* After expiry, room again. */
    tu_fill(&r, key, sizeof(key));
    assert_int_equal(zt_noncecache_add(nc, key, NOW + 300, NOW + 100), 0);
    assert_int_equal(zt_noncecache_live(nc, NOW + 100), 1);
    /* An entry already expired is not stored. */
    assert_int_equal(zt_noncecache_add(nc, key, NOW, NOW + 100), 0);
    zt_noncecache_free(nc);
    (void) refused;
}

typedef struct thr_arg {
    zt_noncecache *nc;
    int accepted;
    int replayed;
    int other;
} thr_arg;

#define KEYS_EACH 2000 /* per thread: this many shared keys and this many of its own */

static void *
thr_main(void *p)
{
    thr_arg *a = p;
    uint8_t key[32];
    tu_rng shared = {99}, own = {(uint64_t) (uintptr_t) p};

    for (int i = 0; i < 2 * KEYS_EACH; i++) {
        int rc;

        tu_fill(i % 2 ? &own : &shared, key, sizeof(key));
        rc = zt_noncecache_add(a->nc, key, NOW + 60, NOW);
        if (rc == 0) {
            a->accepted++;
        } else if (rc == DBAO_EVERIFY) {
            a->replayed++;
        } else {
            a->other++;
        }
    }
    return NULL;
}

static void
test_noncecache_threads(void **state)
{
    enum { T = 4 };
    pthread_t th[T];
    thr_arg args[T];
    zt_noncecache *nc;
    int accepted = 0, replayed = 0;

    (void) state;
    assert_int_equal(zt_noncecache_new(&nc, 64 * 1024, NULL), 0);
    for (int i = 0; i < T; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].nc = nc;
        assert_int_equal(pthread_create(&th[i], NULL, thr_main, &args[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        accepted += args[i].accepted;
        replayed += args[i].replayed;
        assert_int_equal(args[i].other, 0);
    }
    /* Each shared key accepted exactly once overall, every own key once. */
    assert_int_equal(accepted, KEYS_EACH + T * KEYS_EACH);
    assert_int_equal(replayed, (T - 1) * KEYS_EACH);
    assert_int_equal(zt_noncecache_live(nc, NOW), (size_t) accepted);
    zt_noncecache_free(nc);
}

static void
test_request_cost(void **state)
{
    zt_devkeys *dk;
    const gm_sm2_key *k;
    uint8_t th[32], pub[GM_SM2_PUB_LEN];
    zt_noncecache *nc;
    req_fix f[64];
    double t0, dt;
    int n = 0;

    (void) state;
    assert_int_equal(zt_devkeys_new(&dk, NULL), 0);
    gm_sm2_key_get_pub(dev_a, pub);
    assert_int_equal(zt_devkeys_add_pub(dk, pub, sizeof(pub), NULL), 0);
    zt_sm2_thumbprint(th, dev_a);
    k = zt_devkeys_find(dk, th);
    assert_int_equal(zt_noncecache_new(&nc, 0, NULL), 0);
    for (int i = 0; i < 64; i++) {
        fix_sign(&f[i], dev_a, "GET", "/api/patients/1", "full=1", NULL, NOW);
    }
    t0 = now_s();
    do {
        assert_int_equal(
            zt_devsig_verify_request(&claims, k, &f[n % 64].r, n < 64 ? nc : NULL, NOW, 300, NULL),
            0);
        n++;
        dt = now_s() - t0;
    } while (dt < 0.25);
    printf("    request mode: %.2f us/verify (registry key with table, nonce "
           "cache)\n",
           dt / n * 1e6);
    zt_noncecache_free(nc);
    zt_devkeys_free(dk);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thumbprint),      cmocka_unit_test(test_devkeys),
        cmocka_unit_test(test_token_mode),      cmocka_unit_test(test_token_cache),
        cmocka_unit_test(test_request_format),  cmocka_unit_test(test_request_mode),
        cmocka_unit_test(test_noncecache_full), cmocka_unit_test(test_noncecache_threads),
        cmocka_unit_test(test_request_cost),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
