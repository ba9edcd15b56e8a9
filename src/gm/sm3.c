/* sm3.c: SM3 (GB/T 32905-2016) streaming hash and HMAC-SM3 (GM/T 0042, RFC 2104).
 *
 * The streaming layer is ours so that hashing never allocates and never fails (the audit log
 * hashes every record; an EVP_MD_CTX per call would cost an allocation each time). The
 * compression function is the active path of sm3_impl.c / sm3_x86.c (portable C, or AVX +
 * BMI2), and gm_sm3_hash_many runs many messages at once in SIMD lanes (AVX2 x8, AVX-512 x16).
 * SM3 processes no secrets except in HMAC, where the key only enters through the message
 * schedule: no path has data-dependent branches or table indexes.
 *
 * Padding (the same as SHA-256): message || 0x80 || 0x00... || 64-bit big-endian bit length,
 * to a multiple of 64 bytes.
 */
#include "internal.h"
#include "sm3_impl.h"

static const uint32_t sm3_iv[8] = {0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600,
                                   0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e};

void
gm__sm3_compress(uint32_t state[8], const uint8_t *blocks, size_t nblocks)
{
    /* Every path computes the same function, so a path change between two calls on one
     * context is harmless. */
    gm__active_sm3()->compress(state, blocks, nblocks);
}

int
gm_sm3_hash_many(uint8_t *out, const uint8_t *const *msgs, const size_t *lens, size_t num,
                 const uint8_t *prefix, size_t prefix_len)
{
    if (prefix_len > GM__SM3_MB_PREFIX_MAX) {
        return DBAO_ERANGE;
    }
    if (num > 0) {
        gm__active_sm3_mb()->hash_many(out, msgs, lens, num, prefix, prefix_len);
    }
    return 0;
}

void
gm_sm3_init(gm_sm3_ctx *ctx)
{
    memcpy(ctx->state, sm3_iv, sizeof(sm3_iv));
    ctx->num_bytes = 0;
    ctx->buf_len = 0;
}

void
gm_sm3_update(gm_sm3_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;

    if (len == 0) {
        return;
    }
    ctx->num_bytes += len;
    if (ctx->buf_len > 0) {
        size_t n = GM_SM3_BLOCK_LEN - ctx->buf_len;

        if (n > len) {
            n = len;
        }
        memcpy(ctx->buf + ctx->buf_len, p, n);
        ctx->buf_len += n;
        p += n;
        len -= n;
        if (ctx->buf_len < GM_SM3_BLOCK_LEN) {
            return;
        }
        gm__sm3_compress(ctx->state, ctx->buf, 1);
        ctx->buf_len = 0;
    }
    if (len >= GM_SM3_BLOCK_LEN) {
        size_t nblocks = len / GM_SM3_BLOCK_LEN;

        gm__sm3_compress(ctx->state, p, nblocks);
        p += nblocks * GM_SM3_BLOCK_LEN;
        len -= nblocks * GM_SM3_BLOCK_LEN;
    }
    if (len > 0) {
        memcpy(ctx->buf, p, len);
        ctx->buf_len = len;
    }
}

void
gm_sm3_final(gm_sm3_ctx *ctx, uint8_t out[GM_SM3_DIGEST_LEN])
{
    uint64_t bits = ctx->num_bytes << 3;
    size_t n = ctx->buf_len;
    int i;

    ctx->buf[n++] = 0x80;
    if (n > GM_SM3_BLOCK_LEN - 8) {
        memset(ctx->buf + n, 0, GM_SM3_BLOCK_LEN - n);
        gm__sm3_compress(ctx->state, ctx->buf, 1);
        n = 0;
    }
    memset(ctx->buf + n, 0, GM_SM3_BLOCK_LEN - 8 - n);
    gm__store_be64(ctx->buf + GM_SM3_BLOCK_LEN - 8, bits);
    gm__sm3_compress(ctx->state, ctx->buf, 1);
    for (i = 0; i < 8; i++) {
        gm__store_be32(out + 4 * i, ctx->state[i]);
    }
    dbao_cleanse(ctx, sizeof(*ctx));
}

void
gm_sm3(uint8_t out[GM_SM3_DIGEST_LEN], const void *data, size_t len)
{
    gm_sm3_ctx ctx;

    gm_sm3_init(&ctx);
    gm_sm3_update(&ctx, data, len);
    gm_sm3_final(&ctx, out);
}

void
gm_hmac_sm3_init(gm_hmac_sm3_ctx *ctx, const void *key, size_t key_len)
{
    uint8_t k[GM_SM3_BLOCK_LEN], pad[GM_SM3_BLOCK_LEN];
    size_t i;

    memset(k, 0, sizeof(k));
    if (key_len > GM_SM3_BLOCK_LEN) {
        gm_sm3(k, key, key_len);
    } else if (key_len > 0) {
        memcpy(k, key, key_len);
    }
    for (i = 0; i < GM_SM3_BLOCK_LEN; i++) {
        pad[i] = k[i] ^ 0x36;
    }
    gm_sm3_init(&ctx->inner);
    gm_sm3_update(&ctx->inner, pad, sizeof(pad));
    for (i = 0; i < GM_SM3_BLOCK_LEN; i++) {
        pad[i] = k[i] ^ 0x5c;
    }
    gm_sm3_init(&ctx->outer);
    gm_sm3_update(&ctx->outer, pad, sizeof(pad));
    dbao_cleanse(k, sizeof(k));
    dbao_cleanse(pad, sizeof(pad));
}

void
gm_hmac_sm3_update(gm_hmac_sm3_ctx *ctx, const void *data, size_t len)
{
    gm_sm3_update(&ctx->inner, data, len);
}

void
gm_hmac_sm3_final(gm_hmac_sm3_ctx *ctx, uint8_t out[GM_SM3_DIGEST_LEN])
{
    uint8_t ih[GM_SM3_DIGEST_LEN];

    gm_sm3_final(&ctx->inner, ih);
    gm_sm3_update(&ctx->outer, ih, sizeof(ih));
    gm_sm3_final(&ctx->outer, out);
    dbao_cleanse(ih, sizeof(ih));
}

void
gm_hmac_sm3_cleanup(gm_hmac_sm3_ctx *ctx)
{
    dbao_cleanse(ctx, sizeof(*ctx));
}

void
gm_hmac_sm3(uint8_t out[GM_SM3_DIGEST_LEN], const void *key, size_t key_len, const void *data,
            size_t len)
{
    gm_hmac_sm3_ctx ctx;

    gm_hmac_sm3_init(&ctx, key, key_len);
    gm_hmac_sm3_update(&ctx, data, len);
    gm_hmac_sm3_final(&ctx, out);
}
