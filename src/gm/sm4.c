/* sm4.c: SM4 (GB/T 32907-2016) modes: ECB, CBC (raw and PKCS#7), CTR and GCM (RFC 8998).
 *
 * The block cipher and the ECB/CBC/CTR modes run on OpenSSL 3 EVP (the reference path). GCM
 * is absent from OpenSSL 3.0 for SM4, so it is built here from NIST SP 800-38D:
 *
 *   H  = E_K(0^128)
 *   J0 = IV || 0^31 || 1                       when len(IV) = 96 bits
 *      = GHASH_H(IV || 0^s || 0^64 || [len(IV)]_64)   otherwise
 *   C  = GCTR_K(inc32(J0), P)                  (only the low 32 bits of the counter count)
 *   S  = GHASH_H(A || 0^v || C || 0^u || [len(A)]_64 || [len(C)]_64)
 *   T  = E_K(J0) xor S
 *
 * inc32 differs from OpenSSL's 128-bit CTR only when the low 32 bits wrap, so GCTR calls the
 * CTR path in segments that end exactly at the wrap. gcm_open computes and checks the tag
 * (constant-time compare) before it decrypts anything, so in-place open never exposes
 * unauthenticated plaintext, and a failed open leaves `out` zeroed.
 */
#include "internal.h"

#include <openssl/evp.h>

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

/* One EVP pass without padding. len need not be a multiple of 16 for CTR. */
static int
sm4_evp(const EVP_CIPHER *cipher, int enc, const uint8_t key[16], const uint8_t *iv, uint8_t *out,
        const uint8_t *in, size_t len)
{
    EVP_CIPHER_CTX *c;
    int n1 = 0, n2 = 0, ok;

    if (len == 0) {
        return 0;
    }
    if (len > INT32_MAX) {
        size_t first = (size_t) 1 << 30; /* a multiple of 16: safe for every mode */
        int rc;

        if (iv != NULL) {
            return DBAO_ERANGE; /* chained modes split by the callers below */
        }
        rc = sm4_evp(cipher, enc, key, NULL, out, in, first);
        return rc != 0 ? rc : sm4_evp(cipher, enc, key, NULL, out + first, in + first, len - first);
    }
    c = EVP_CIPHER_CTX_new();
    if (c == NULL) {
        return DBAO_ENOMEM;
    }
    ok = EVP_CipherInit_ex(c, cipher, NULL, key, iv, enc) == 1 &&
         EVP_CIPHER_CTX_set_padding(c, 0) == 1 &&
         EVP_CipherUpdate(c, out, &n1, in, (int) len) == 1 &&
         EVP_CipherFinal_ex(c, out + n1, &n2) == 1 && (size_t) (n1 + n2) == len;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : DBAO_ECRYPTO;
}

int
gm_sm4_setkey(gm_sm4_ctx *ctx, const uint8_t *key, size_t key_len)
{
    static const uint8_t zero[16];
    int rc;

    if (key_len != GM_SM4_KEY_LEN) {
        return DBAO_EKEY;
    }
    memcpy(ctx->key, key, GM_SM4_KEY_LEN);
    rc = sm4_evp(EVP_sm4_ecb(), 1, ctx->key, NULL, ctx->ghash_h, zero, 16);
    if (rc != 0) {
        gm_sm4_cleanup(ctx);
        return rc;
    }
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
    return sm4_evp(EVP_sm4_ecb(), 1, ctx->key, NULL, out, in, len);
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
    return sm4_evp(EVP_sm4_ecb(), 0, ctx->key, NULL, out, in, len);
}

/* CBC in chunks small enough for EVP's int lengths; iv is carried between chunks. */
static int
sm4_cbc(const gm_sm4_ctx *ctx, int enc, uint8_t *out, const uint8_t *in, size_t len, uint8_t iv[16])
{
    const size_t chunk = (size_t) 1 << 30;

    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    if (len % 16 != 0) {
        return DBAO_ERANGE;
    }
    while (len > 0) {
        size_t n = len < chunk ? len : chunk;
        uint8_t next_iv[16];
        int rc;

        /* Decrypting in place overwrites the last ciphertext block: save it first. */
        memcpy(next_iv, in + n - 16, 16);
        rc = sm4_evp(EVP_sm4_cbc(), enc, ctx->key, iv, out, in, n);
        if (rc != 0) {
            return rc;
        }
        memcpy(iv, enc ? out + n - 16 : next_iv, 16);
        out += n;
        in += n;
        len -= n;
    }
    return 0;
}

int
gm_sm4_cbc_encrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len,
                   uint8_t iv[16])
{
    return sm4_cbc(ctx, 1, out, in, len, iv);
}

int
gm_sm4_cbc_decrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len,
                   uint8_t iv[16])
{
    return sm4_cbc(ctx, 0, out, in, len, iv);
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

static void
ctr_add(uint8_t ctr[16], uint64_t n)
{
    int i;

    for (i = 15; i >= 0 && n != 0; i--) {
        uint64_t s = (uint64_t) ctr[i] + (n & 0xff);

        ctr[i] = (uint8_t) s;
        n = (n >> 8) + (s >> 8);
    }
}

int
gm_sm4_ctr(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len, uint8_t ctr[16])
{
    const size_t chunk = (size_t) 1 << 30;

    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    while (len > 0) {
        size_t n = len < chunk ? len : chunk;
        int rc = sm4_evp(EVP_sm4_ctr(), 1, ctx->key, ctr, out, in, n);

        if (rc != 0) {
            return rc;
        }
        ctr_add(ctr, (n + 15) / 16);
        out += n;
        in += n;
        len -= n;
    }
    return 0;
}

/* GCTR with inc32: split at every wrap of the low 32 bits so the 128-bit CTR never carries
 * into the high 96 bits (they are put back after each segment). */
static int
gctr(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len, const uint8_t icb[16])
{
    uint8_t cb[16];
    int rc = 0;

    memcpy(cb, icb, 16);
    while (len > 0) {
        uint64_t to_wrap = ((uint64_t) 1 << 32) - gm__load_be32(cb + 12); /* blocks */
        size_t n = len;

        if ((uint64_t) (n + 15) / 16 > to_wrap) {
            n = (size_t) (to_wrap * 16);
        }
        rc = gm_sm4_ctr(ctx, out, in, n, cb);
        if (rc != 0) {
            break;
        }
        memcpy(cb, icb, 12);
        out += n;
        in += n;
        len -= n;
    }
    dbao_cleanse(cb, sizeof(cb));
    return rc;
}

/* GHASH over data of any length, zero-padded to a whole block. */
static void
ghash_padded(const uint8_t H[16], uint8_t Y[16], const uint8_t *in, size_t len)
{
    size_t full = len / 16;
    uint8_t last[16];

    gm__ghash_blocks(H, Y, in, full);
    if (len % 16 != 0) {
        memset(last, 0, 16);
        memcpy(last, in + full * 16, len % 16);
        gm__ghash_blocks(H, Y, last, 1);
    }
}

static int
gcm_j0(const gm_sm4_ctx *ctx, uint8_t j0[16], const uint8_t *iv, size_t iv_len)
{
    uint8_t lens[16];

    if (iv_len == 0 || iv_len > GM_SM4_GCM_IV_MAX) {
        return DBAO_ERANGE;
    }
    if (iv_len == 12) {
        memcpy(j0, iv, 12);
        gm__store_be32(j0 + 12, 1);
        return 0;
    }
    memset(j0, 0, 16);
    ghash_padded(ctx->ghash_h, j0, iv, iv_len);
    memset(lens, 0, 8);
    gm__store_be64(lens + 8, (uint64_t) iv_len * 8);
    gm__ghash_blocks(ctx->ghash_h, j0, lens, 1);
    return 0;
}

static int
gcm_tag(const gm_sm4_ctx *ctx, uint8_t tag[16], const uint8_t j0[16], const uint8_t *aad,
        size_t aad_len, const uint8_t *ct, size_t len)
{
    uint8_t s[16], lens[16], ej0[16];
    int rc, i;

    memset(s, 0, 16);
    ghash_padded(ctx->ghash_h, s, aad, aad_len);
    ghash_padded(ctx->ghash_h, s, ct, len);
    gm__store_be64(lens, (uint64_t) aad_len * 8);
    gm__store_be64(lens + 8, (uint64_t) len * 8);
    gm__ghash_blocks(ctx->ghash_h, s, lens, 1);
    rc = gm_sm4_ecb_encrypt(ctx, ej0, j0, 16);
    for (i = 0; i < 16; i++) {
        tag[i] = ej0[i] ^ s[i];
    }
    dbao_cleanse(s, sizeof(s));
    dbao_cleanse(ej0, sizeof(ej0));
    return rc;
}

static int
gcm_check_lengths(const gm_sm4_ctx *ctx, size_t aad_len, size_t len)
{
    if (!ctx->keyed) {
        return DBAO_EKEY;
    }
    if ((uint64_t) len > ((uint64_t) 1 << 36) - 32 || (uint64_t) aad_len > ((uint64_t) 1 << 61)) {
        return DBAO_ERANGE;
    }
    return 0;
}

static void
inc32(uint8_t cb[16])
{
    gm__store_be32(cb + 12, gm__load_be32(cb + 12) + 1);
}

int
gm_sm4_gcm_seal(const gm_sm4_ctx *ctx, uint8_t *out, uint8_t tag[GM_SM4_GCM_TAG_LEN],
                const uint8_t *iv, size_t iv_len, const uint8_t *aad, size_t aad_len,
                const uint8_t *in, size_t len)
{
    uint8_t j0[16], icb[16];
    int rc;

    rc = gcm_check_lengths(ctx, aad_len, len);
    if (rc == 0) {
        rc = gcm_j0(ctx, j0, iv, iv_len);
    }
    if (rc != 0) {
        return rc;
    }
    memcpy(icb, j0, 16);
    inc32(icb);
    rc = gctr(ctx, out, in, len, icb);
    if (rc == 0) {
        rc = gcm_tag(ctx, tag, j0, aad, aad_len, out, len);
    }
    dbao_cleanse(j0, sizeof(j0));
    return rc;
}

int
gm_sm4_gcm_open(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *iv, size_t iv_len,
                const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                const uint8_t tag[GM_SM4_GCM_TAG_LEN])
{
    uint8_t j0[16], icb[16], want[16];
    int rc;

    rc = gcm_check_lengths(ctx, aad_len, len);
    if (rc == 0) {
        rc = gcm_j0(ctx, j0, iv, iv_len);
    }
    if (rc != 0) {
        return rc;
    }
    rc = gcm_tag(ctx, want, j0, aad, aad_len, in, len);
    if (rc == 0 && !dbao_ct_memeq(want, tag, 16)) {
        rc = DBAO_EVERIFY;
    }
    if (rc == 0) {
        memcpy(icb, j0, 16);
        inc32(icb);
        rc = gctr(ctx, out, in, len, icb);
    }
    if (rc != 0 && len > 0) {
        memset(out, 0, len);
    }
    dbao_cleanse(want, sizeof(want));
    dbao_cleanse(j0, sizeof(j0));
    return rc;
}
