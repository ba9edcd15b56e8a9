/* fuzz_diff_sm2_verify.c: differential libFuzzer target, SM2 signature verification on the
 * "fast" path (with and without gm_sm2_key_precompute) against the "openssl" path.
 *
 * Input: [key] [d(32) when key >= 0xf0] e(32) [mode][mutation][position] then either k(32)
 *        or a raw r||s (64); missing bytes read as zero, so every length is an input.
 *
 * Keys: a selector byte below 0xf0 picks one of a few cached keys (d = 1, 2, n-2 and
 * SM3-derived scalars), made once per process on each path; 0xf0 and above read d from the
 * input, check that both paths accept exactly 1 <= d <= n-2, and build the keys afresh (bounded
 * to 1/16 of the inputs the fuzzer makes at random).
 *
 * Signatures: either raw r||s from the input, or a signature made here with OpenSSL's
 * BIGNUM/EC arithmetic from a nonce k taken from the input (r = e + x1(kG), s = (1+d)^-1 (k - rd)
 * mod n), so the fuzzer steers the nonce, including the x1 + e wrap and e >= n, then possibly
 * mutated (bit flip, r or s negated, r+s = n, r = n, s = 0, halves swapped, e changed).
 *
 * Invariants (abort() on any violation):
 *   - gm_sm2_key_from_priv on both paths agrees on the accepted range and the public key;
 *   - gm_sm2_verify_digest on "fast" without a table, on "fast" with the precomputed table and
 *     on "openssl" return the same code, 0 or DBAO_EVERIFY;
 *   - an unmutated constructed signature verifies on all three;
 *   - a signature made by gm_sm2_sign_digest on "fast" (random nonce) verifies on "openssl" and
 *     on "fast" with the table.
 *
 * Build: see cmake/fuzz.cmake (clang -fsanitize=fuzzer,address,undefined ... -lcrypto).
 */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gm.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define N_SLOTS 6

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

/* The dengbao SM2 core: its x86-64 assembly form where the CPU has it, else portable C. */
static int
use_fast(void)
{
    return gm_impl_use("sm2", "x86-adx") == 0 ? 0 : gm_impl_use("sm2", "portable");
}

static uint8_t
rd_byte(reader *r)
{
    uint8_t b = 0;

    if (r->n > 0) {
        b = r->p[0];
        r->p++;
        r->n--;
    }
    return b;
}

static void
rd_bytes(reader *r, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        out[i] = rd_byte(r);
    }
}

typedef struct keyset {
    uint8_t d[32];
    gm_sm2_key *fast;     /* made on "fast", no table */
    gm_sm2_key *fast_tab; /* made on "fast", gm_sm2_key_precompute called on "fast" */
    gm_sm2_key *ossl;     /* made on "openssl" */
} keyset;

static EC_GROUP *grp;
static BIGNUM *order;
static BN_CTX *bnctx;
static keyset slots[N_SLOTS];
static uint8_t n_be[32]; /* the group order, big-endian */

/* d <- n - small */
static void
n_minus(uint8_t d[32], uint32_t small)
{
    unsigned borrow = 0;

    for (int i = 31; i >= 0; i--) {
        unsigned sub = i >= 28 ? (small >> (8 * (31 - i))) & 0xff : 0;
        unsigned v = (unsigned) n_be[i] - sub - borrow;

        d[i] = (uint8_t) v;
        borrow = (v >> 8) & 1;
    }
}

static int
cmp_be(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a, b, 32);
}

static bool
is_zero32(const uint8_t *p)
{
    uint8_t acc = 0;

    for (int i = 0; i < 32; i++) {
        acc |= p[i];
    }
    return acc == 0;
}

/* Builds the three keys for d, which must be in range; checks both paths agree. */
static void
make_keys(keyset *ks)
{
    uint8_t pub1[GM_SM2_PUB_LEN], pub2[GM_SM2_PUB_LEN];

    CHECK(use_fast() == 0);
    CHECK(gm_sm2_key_from_priv(&ks->fast, ks->d, 32, NULL) == 0);
    CHECK(gm_sm2_key_from_priv(&ks->fast_tab, ks->d, 32, NULL) == 0);
    CHECK(gm_sm2_key_precompute(ks->fast_tab) == 0);
    CHECK(gm_impl_use("sm2", "openssl") == 0);
    CHECK(gm_sm2_key_from_priv(&ks->ossl, ks->d, 32, NULL) == 0);
    gm_sm2_key_get_pub(ks->fast, pub1);
    gm_sm2_key_get_pub(ks->ossl, pub2);
    CHECK(memcmp(pub1, pub2, GM_SM2_PUB_LEN) == 0);
    gm_sm2_key_get_pub(ks->fast_tab, pub2);
    CHECK(memcmp(pub1, pub2, GM_SM2_PUB_LEN) == 0);
}

static void
free_keys(keyset *ks)
{
    gm_sm2_key_free(ks->fast);
    gm_sm2_key_free(ks->fast_tab);
    gm_sm2_key_free(ks->ossl);
    memset(ks, 0, sizeof(*ks));
}

static void
setup(void)
{
    grp = EC_GROUP_new_by_curve_name(NID_sm2);
    bnctx = BN_CTX_new();
    order = BN_new();
    CHECK(grp != NULL && bnctx != NULL && order != NULL);
    CHECK(EC_GROUP_get_order(grp, order, bnctx) == 1);
    CHECK(BN_bn2binpad(order, n_be, 32) == 32);

    memset(slots[0].d, 0, 32);
    slots[0].d[31] = 1;
    memset(slots[1].d, 0, 32);
    slots[1].d[31] = 2;
    n_minus(slots[2].d, 2);
    for (int i = 3; i < N_SLOTS; i++) {
        char label[32] = "dengbao fuzz_diff_sm2 key 0";

        label[26] = (char) ('0' + i);
        gm_sm3(slots[i].d, label, strlen(label));
        slots[i].d[0] &= 0x7f; /* below n */
    }
    for (int i = 0; i < N_SLOTS; i++) {
        make_keys(&slots[i]);
    }
}

/* sig = SM2 signature of e under d with nonce k, computed with OpenSSL BIGNUM / EC_POINT.
 * false when k gives r = 0, r + k = n or s = 0 (a signer would pick another k). */
static bool
sign_with_k(uint8_t sig[64], const uint8_t d[32], const uint8_t e[32], const uint8_t k[32])
{
    BIGNUM *bd, *be, *bk, *x1, *r, *s, *t, *u;
    EC_POINT *pt;
    bool ok = false;

    BN_CTX_start(bnctx);
    bd = BN_CTX_get(bnctx);
    be = BN_CTX_get(bnctx);
    bk = BN_CTX_get(bnctx);
    x1 = BN_CTX_get(bnctx);
    r = BN_CTX_get(bnctx);
    s = BN_CTX_get(bnctx);
    t = BN_CTX_get(bnctx);
    u = BN_CTX_get(bnctx);
    pt = EC_POINT_new(grp);
    CHECK(u != NULL && pt != NULL);
    CHECK(BN_bin2bn(d, 32, bd) != NULL && BN_bin2bn(e, 32, be) != NULL);
    CHECK(BN_bin2bn(k, 32, bk) != NULL);
    CHECK(BN_nnmod(bk, bk, order, bnctx) == 1);
    if (BN_is_zero(bk)) {
        CHECK(BN_one(bk) == 1);
    }
    CHECK(EC_POINT_mul(grp, pt, bk, NULL, NULL, bnctx) == 1);
    CHECK(EC_POINT_get_affine_coordinates(grp, pt, x1, NULL, bnctx) == 1);
    CHECK(BN_mod_add(r, be, x1, order, bnctx) == 1);
    CHECK(BN_mod_add(t, r, bk, order, bnctx) == 1);
    if (BN_is_zero(r) || BN_is_zero(t)) {
        goto done;
    }
    CHECK(BN_copy(t, bd) != NULL && BN_add_word(t, 1) == 1);
    CHECK(BN_mod_inverse(t, t, order, bnctx) != NULL);
    CHECK(BN_mod_mul(u, r, bd, order, bnctx) == 1);
    CHECK(BN_mod_sub(s, bk, u, order, bnctx) == 1);
    CHECK(BN_mod_mul(s, s, t, order, bnctx) == 1);
    if (BN_is_zero(s)) {
        goto done;
    }
    CHECK(BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32);
    ok = true;
done:
    EC_POINT_free(pt);
    BN_CTX_end(bnctx);
    return ok;
}

/* x <- n - x (mod 2^256), or a copy of n when x is zero */
static void
negate_mod_n(uint8_t x[32])
{
    uint8_t out[32];
    unsigned borrow = 0;

    for (int i = 31; i >= 0; i--) {
        unsigned v = (unsigned) n_be[i] - x[i] - borrow;

        out[i] = (uint8_t) v;
        borrow = (v >> 8) & 1;
    }
    memcpy(x, out, 32);
}

static int
verify_all(const keyset *ks, const uint8_t sig[64], const uint8_t e[32])
{
    int a, b, c;

    CHECK(use_fast() == 0);
    a = gm_sm2_verify_digest(ks->fast, sig, e);
    b = gm_sm2_verify_digest(ks->fast_tab, sig, e);
    CHECK(gm_impl_use("sm2", "openssl") == 0);
    c = gm_sm2_verify_digest(ks->ossl, sig, e);
    CHECK(a == 0 || a == DBAO_EVERIFY);
    CHECK(a == b && a == c);
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    reader rd = {data, size};
    keyset fresh, *ks;
    uint8_t sel, mode, mut, pos, e[32], k[32], sig[64], tmp[32];
    bool constructed = false;
    int rc;

    if (!ready) {
        setup();
        ready = true;
    }
    memset(&fresh, 0, sizeof(fresh));
    sel = rd_byte(&rd);
    if (sel >= 0xf0) {
        uint8_t nm1[32];
        gm_sm2_key *kf = NULL, *ko = NULL;
        int rf, ro;
        bool in_range;

        rd_bytes(&rd, fresh.d, 32);
        switch (sel & 3) { /* edges of the range, whatever the fuzzer did */
        case 1:
            n_minus(fresh.d, fresh.d[31] & 3); /* n, n-1, n-2, n-3 */
            break;
        case 2:
            memset(fresh.d, 0, 31); /* 0 .. 255 */
            break;
        default:
            break;
        }
        n_minus(nm1, 1);
        in_range = !is_zero32(fresh.d) && cmp_be(fresh.d, nm1) < 0;
        CHECK(use_fast() == 0);
        rf = gm_sm2_key_from_priv(&kf, fresh.d, 32, NULL);
        CHECK(gm_impl_use("sm2", "openssl") == 0);
        ro = gm_sm2_key_from_priv(&ko, fresh.d, 32, NULL);
        gm_sm2_key_free(kf);
        gm_sm2_key_free(ko);
        CHECK(rf == (in_range ? 0 : DBAO_EKEY));
        CHECK(ro == rf);
        if (!in_range) {
            return 0;
        }
        make_keys(&fresh);
        ks = &fresh;
    } else {
        ks = &slots[sel % N_SLOTS];
    }

    rd_bytes(&rd, e, 32);
    mode = rd_byte(&rd);
    mut = rd_byte(&rd);
    pos = rd_byte(&rd);
    if (mode & 0x40) {
        memset(e, 0xff, 4); /* e >= n */
    }
    if (mode & 1) {
        rd_bytes(&rd, k, 32);
        if (mode & 2) { /* small nonces and n - small */
            memset(k, 0, 30);
            if (mode & 4) {
                n_minus(k, (uint32_t) k[30] << 8 | k[31]);
            }
        }
        constructed = sign_with_k(sig, ks->d, e, k);
    }
    if (!constructed) {
        rd_bytes(&rd, sig, 64);
    }
    if (constructed) {
        CHECK(verify_all(ks, sig, e) == 0);
    }

    switch (mut % 10) {
    case 1:
        sig[(pos >> 3) % 64] ^= (uint8_t) (1u << (pos & 7));
        break;
    case 2:
        negate_mod_n(sig);
        break;
    case 3:
        negate_mod_n(sig + 32);
        break;
    case 4: /* s = n - r: r + s = n */
        memcpy(sig + 32, sig, 32);
        negate_mod_n(sig + 32);
        break;
    case 5:
        memcpy(sig, n_be, 32);
        break;
    case 6:
        memset(sig + 32, 0, 32);
        break;
    case 7:
        memcpy(tmp, sig, 32);
        memcpy(sig, sig + 32, 32);
        memcpy(sig + 32, tmp, 32);
        break;
    case 8:
        e[(pos >> 3) % 32] ^= (uint8_t) (1u << (pos & 7));
        break;
    case 9: /* r or s near n */
        n_minus((pos & 1) ? sig + 32 : sig, pos >> 1);
        break;
    default:
        break;
    }
    rc = verify_all(ks, sig, e);
    if (constructed && mut % 10 == 0) {
        CHECK(rc == 0);
    }

    /* A fast-path signature (random nonce) must verify on openssl and on the table. */
    if (mut & 0x80) {
        CHECK(use_fast() == 0);
        CHECK(gm_sm2_sign_digest(ks->fast, sig, e) == 0);
        CHECK(verify_all(ks, sig, e) == 0);
    }

    if (ks == &fresh) {
        free_keys(&fresh);
    }
    return 0;
}
