/* sm4.c: SM4 (GB/T 32907-2016) modes: ECB, CBC (raw and PKCS#7), CTR and GCM (RFC 8998).
 *
 * The block cipher runs on the active path of sm4_impl.c / sm4_x86.c (portable table-free C,
 * AES-NI + AVX2 on 16 blocks, GFNI + AVX-512 on 32 blocks: all constant time), chosen at
 * setkey; OpenSSL's SM4 stays the reference the tests compare against. GCM is built here from
 * NIST SP 800-38D, since OpenSSL 3.0 has no SM4-GCM:
 *
 *   H  = E_K(0^128)
 *   J0 = IV || 0^31 || 1                                  when len(IV) = 96 bits
 *      = GHASH_H(IV || 0^s || 0^64 || [len(IV)]_64)        otherwise
 *   C  = GCTR_K(inc32(J0), P)              (only the low 32 bits of the counter count)
 *   S  = GHASH_H(A || 0^v || C || 0^u || [len(A)]_64 || [len(C)]_64)
 *   T  = E_K(J0) xor S
 *
 * The bulk of GCM is one fused pass (gm__sm4_gcm_blocks: CTR and GHASH of the ciphertext
 * together); the tail block is padded here. gcm_open compares the tag in constant time and, on
 * a mismatch, zeroes `out` before returning, so unauthenticated plaintext never reaches the
 * caller.
 *
 * gm_sm4_ctx is public so callers can keep it on the stack; its opaque bytes hold the private
 * sm4_state below (checked by a static assertion).
 */
#include "internal.h"
#include "sm4_impl.h"

typedef struct sm4_state {
    gm__ghash_key hk;
    uint32_t rk_enc[32];
    uint32_t rk_dec[32];
    const gm__sm4_impl *impl;
} sm4_state;

_Static_assert(sizeof(sm4_state) <= sizeof(((gm_sm4_ctx *) 0)->opaque),
               "gm_sm4_ctx.opaque is too small for sm4_state");
_Static_assert(_Alignof(sm4_state) <= 64, "sm4_state needs more alignment than gm_sm4_ctx");

static sm4_state *
st(gm_sm4_ctx *ctx)
{
    return (sm4_state *) (void *) ctx->opaque;
}

static const sm4_state *
cst(const gm_sm4_ctx *ctx)
{
    return (const sm4_state *) (const void *) ctx->opaque;
}

void
gm_sm4_init(gm_sm4_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
}

void
gm_sm4_cleanup(gm_sm4_ctx *ctx)
{
    dbao_cleanse(ctx, sizeof(*ctx));
}

int
gm_sm4_setkey(gm_sm4_ctx *ctx, const uint8_t *key, size_t key_len)
{
    static const uint8_t zero[16];
    sm4_state *s = st(ctx);
    uint8_t h[16];

    if (key_len != GM_SM4_KEY_LEN) {
        return DBAO_EKEY;
    }
    gm_sm4_cleanup(ctx);
    s->impl = gm__active_sm4();
    gm__sm4_expand_key(s->rk_enc, s->rk_dec, key);
    s->impl->ecb(s->rk_enc, h, zero, 1);
    gm__ghash_init(&s->hk, h, gm__active_ghash());
    dbao_cleanse(h, sizeof(h));
    ctx->keyed = true;
    return 0;
}

int
gm_sm4_ecb_encrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    if (len % 16 != 0) {
        return DBAO_ERANGE;
    }
    cst(ctx)->impl->ecb(cst(ctx)->rk_enc, out, in, len / 16);
    return 0;
}

int
gm_sm4_ecb_decrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    if (len % 16 != 0) {
        return DBAO_ERANGE;
    }
    cst(ctx)->impl->ecb(cst(ctx)->rk_dec, out, in, len / 16);
    return 0;
}

int
gm_sm4_cbc_encrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len,
                   uint8_t iv[16])
{
    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    if (len % 16 != 0) {
        return DBAO_ERANGE;
    }
    cst(ctx)->impl->cbc_enc(cst(ctx)->rk_enc, out, in, len / 16, iv);
    return 0;
}

int
gm_sm4_cbc_decrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len,
                   uint8_t iv[16])
{
    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    if (len % 16 != 0) {
        return DBAO_ERANGE;
    }
    cst(ctx)->impl->cbc_dec(cst(ctx)->rk_dec, out, in, len / 16, iv);
    return 0;
}

/* PKCS#7: the last block carries 16 - len % 16 bytes of that value. `iv` NULL means ECB. */
static int
encrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in, size_t in_len,
            const uint8_t *iv)
{
    uint8_t last[16], v[16];
    size_t full = in_len - in_len % 16, rest = in_len % 16;
    uint8_t pad = (uint8_t) (16 - rest);
    int rc;

    *out_len = 0;
    memcpy(last, in + full, rest);
    memset(last + rest, pad, pad);
    if (iv != NULL) {
        memcpy(v, iv, 16);
        rc = gm_sm4_cbc_encrypt(ctx, out, in, full, v);
        if (rc == 0) {
            rc = gm_sm4_cbc_encrypt(ctx, out + full, last, 16, v);
        }
    } else {
        rc = gm_sm4_ecb_encrypt(ctx, out, in, full);
        if (rc == 0) {
            rc = gm_sm4_ecb_encrypt(ctx, out + full, last, 16);
        }
    }
    dbao_cleanse(last, sizeof(last));
    if (rc == 0) {
        *out_len = full + 16;
    }
    return rc;
}

static int
decrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in, size_t in_len,
            const uint8_t *iv)
{
    uint8_t v[16], pad, bad;
    unsigned i;
    int rc;

    *out_len = 0;
    if (in_len == 0 || in_len % 16 != 0) {
        return DBAO_ERANGE;
    }
    if (iv != NULL) {
        memcpy(v, iv, 16);
        rc = gm_sm4_cbc_decrypt(ctx, out, in, in_len, v);
    } else {
        rc = gm_sm4_ecb_decrypt(ctx, out, in, in_len);
    }
    if (rc != 0) {
        return rc;
    }
    /* Constant time in the padding value: look at all 16 final bytes whatever pad says. */
    pad = out[in_len - 1];
    bad = (uint8_t) ((((unsigned) pad - 1) >> 8) | ((16u - pad) >> 8)); /* pad 0 or > 16 */
    for (i = 1; i <= 16; i++) {
        uint8_t in_pad = (uint8_t) (((unsigned) (i - 1) - pad) >> 8); /* 0xff when i <= pad */

        bad |= (uint8_t) (in_pad & (out[in_len - i] ^ pad));
    }
    if (bad != 0) {
        dbao_cleanse(out, in_len);
        return DBAO_EVERIFY;
    }
    *out_len = in_len - pad;
    return 0;
}

int
gm_sm4_ecb_encrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                       size_t in_len)
{
    return encrypt_pad(ctx, out, out_len, in, in_len, NULL);
}

int
gm_sm4_ecb_decrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                       size_t in_len)
{
    return decrypt_pad(ctx, out, out_len, in, in_len, NULL);
}

int
gm_sm4_cbc_encrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                       size_t in_len, const uint8_t iv[16])
{
    return encrypt_pad(ctx, out, out_len, in, in_len, iv);
}

int
gm_sm4_cbc_decrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                       size_t in_len, const uint8_t iv[16])
{
    return decrypt_pad(ctx, out, out_len, in, in_len, iv);
}

/* CTR over any length; a partial tail block consumes one whole counter value. */
static void
ctr_xcrypt(const sm4_state *s, uint8_t *out, const uint8_t *in, size_t len, uint8_t ctr[16],
           int inc32)
{
    size_t full = len / 16, rest = len % 16;

    s->impl->ctr(s->rk_enc, out, in, full, ctr, inc32);
    if (rest != 0) {
        uint8_t blk[16];

        memset(blk, 0, sizeof(blk));
        memcpy(blk, in + full * 16, rest);
        s->impl->ctr(s->rk_enc, blk, blk, 1, ctr, inc32);
        memcpy(out + full * 16, blk, rest);
        dbao_cleanse(blk, sizeof(blk));
    }
}

int
gm_sm4_ctr(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len, uint8_t ctr[16])
{
    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    ctr_xcrypt(cst(ctx), out, in, len, ctr, 0);
    return 0;
}

/* GHASH over data of any length, zero-padded to a whole block. */
static void
ghash_padded(const gm__ghash_key *hk, uint8_t Y[16], const uint8_t *in, size_t len)
{
    size_t full = len / 16;
    uint8_t last[16];

    gm__ghash_update(hk, Y, in, full);
    if (len % 16 != 0) {
        memset(last, 0, 16);
        memcpy(last, in + full * 16, len % 16);
        gm__ghash_update(hk, Y, last, 1);
    }
}

static int
gcm_check(const gm_sm4_ctx *ctx, size_t iv_len, size_t aad_len, size_t len)
{
    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    if (iv_len == 0 || iv_len > GM_SM4_GCM_IV_MAX) {
        return DBAO_ERANGE;
    }
    if ((uint64_t) len > ((uint64_t) 1 << 36) - 32 || (uint64_t) aad_len > ((uint64_t) 1 << 61)) {
        return DBAO_ERANGE;
    }
    return 0;
}

/* The whole of GCM but the tag comparison: out = GCTR(inc32(J0), in) and tag = E(J0) ^ S, with
 * S hashed over the ciphertext (out when encrypting, in when decrypting). */
static void
gcm_run(const sm4_state *s, uint8_t *out, uint8_t tag[16], const uint8_t *iv, size_t iv_len,
        const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len, int enc)
{
    uint8_t j0[16], cb[16], y[16], blk[16];
    size_t full = len / 16, rest = len % 16;
    int i;

    if (iv_len == 12) {
        memcpy(j0, iv, 12);
        gm__store_be32(j0 + 12, 1);
    } else {
        memset(j0, 0, 16);
        ghash_padded(&s->hk, j0, iv, iv_len);
        memset(blk, 0, 8);
        gm__store_be64(blk + 8, (uint64_t) iv_len * 8);
        gm__ghash_update(&s->hk, j0, blk, 1);
    }
    memset(y, 0, 16);
    ghash_padded(&s->hk, y, aad, aad_len);
    memcpy(cb, j0, 16);
    gm__store_be32(cb + 12, gm__load_be32(cb + 12) + 1);
    gm__sm4_gcm_blocks(s->impl, s->rk_enc, &s->hk, out, in, full, cb, y, enc);
    if (rest != 0) {
        uint8_t c[16];

        memset(blk, 0, 16);
        memcpy(blk, in + full * 16, rest);
        memset(c, 0, 16);
        if (!enc) {
            memcpy(c, blk, rest);
        }
        s->impl->ctr(s->rk_enc, blk, blk, 1, cb, 1);
        if (enc) {
            memcpy(c, blk, rest);
        }
        memcpy(out + full * 16, blk, rest);
        gm__ghash_update(&s->hk, y, c, 1);
        dbao_cleanse(c, sizeof(c));
    }
    gm__store_be64(blk, (uint64_t) aad_len * 8);
    gm__store_be64(blk + 8, (uint64_t) len * 8);
    gm__ghash_update(&s->hk, y, blk, 1);
    s->impl->ecb(s->rk_enc, j0, j0, 1);
    for (i = 0; i < 16; i++) {
        tag[i] = j0[i] ^ y[i];
    }
    dbao_cleanse(j0, sizeof(j0));
    dbao_cleanse(y, sizeof(y));
    dbao_cleanse(blk, sizeof(blk));
    dbao_cleanse(cb, sizeof(cb));
}

int
gm_sm4_gcm_seal(const gm_sm4_ctx *ctx, uint8_t *out, uint8_t tag[GM_SM4_GCM_TAG_LEN],
                const uint8_t *iv, size_t iv_len, const uint8_t *aad, size_t aad_len,
                const uint8_t *in, size_t len)
{
    int rc = gcm_check(ctx, iv_len, aad_len, len);

    if (rc == 0) {
        gcm_run(cst(ctx), out, tag, iv, iv_len, aad, aad_len, in, len, 1);
    }
    return rc;
}

int
gm_sm4_gcm_open(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *iv, size_t iv_len,
                const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                const uint8_t tag[GM_SM4_GCM_TAG_LEN])
{
    uint8_t want[16];
    int rc = gcm_check(ctx, iv_len, aad_len, len);

    if (rc != 0) {
        return rc;
    }
    gcm_run(cst(ctx), out, want, iv, iv_len, aad, aad_len, in, len, 0);
    if (!dbao_ct_memeq(want, tag, 16)) {
        if (len > 0) {
            dbao_cleanse(out, len);
        }
        rc = DBAO_EVERIFY;
    }
    dbao_cleanse(want, sizeof(want));
    return rc;
}
