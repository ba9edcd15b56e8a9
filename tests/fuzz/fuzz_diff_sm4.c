/* fuzz_diff_sm4.c: differential libFuzzer target, dengbao SM4 paths against OpenSSL 3 EVP.
 *
 * Input: [sm4 path][ghash path][flags][offsets][split][gcm iv len][gcm aad len][tag bit]
 *        key(16) iv(16) data...   (missing bytes read as zero, so every length is an input)
 *
 * Invariants (abort() on any violation):
 *   - ECB and CBC (no padding, whole blocks) and CTR (any length) on the chosen sm4 path, in
 *     place or not, at unaligned offsets, give the bytes of EVP SM4-ECB/CBC/CTR, also when the
 *     call is split in two chained calls; CBC returns the last ciphertext block as iv and CTR the
 *     next unused counter block (128-bit big-endian increment, wrapping);
 *   - SM4-GCM seal on the chosen (sm4, ghash) paths equals seal on (portable, portable) and a
 *     reference built here from EVP SM4-ECB and a bitwise GHASH (OpenSSL 3.0 has no SM4-GCM);
 *     open round-trips on both contexts and, with one tag or ciphertext bit flipped, returns
 *     DBAO_EVERIFY with the output wiped.
 *
 * Build: see cmake/fuzz.cmake (clang -fsanitize=fuzzer,address,undefined ... -lcrypto).
 */
#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gm.h"

#define MAX_DATA 8192
#define MAX_OFF  64
#define MAX_PATH 8

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

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

static const char *sm4_paths[MAX_PATH], *ghash_paths[MAX_PATH];
static size_t n_sm4, n_ghash;
static EVP_CIPHER *evp_ecb, *evp_cbc, *evp_ctr;
static EVP_CIPHER_CTX *evp_ctx;

static void
setup(void)
{
    gm_impl_info info[64];
    size_t n = gm_impl_list(info, 64);

    if (n > 64) {
        n = 64;
    }
    for (size_t i = 0; i < n; i++) {
        if (!info[i].supported) {
            continue;
        }
        if (strcmp(info[i].alg, "sm4") == 0 && n_sm4 < MAX_PATH) {
            sm4_paths[n_sm4++] = info[i].path;
        } else if (strcmp(info[i].alg, "ghash") == 0 && n_ghash < MAX_PATH) {
            ghash_paths[n_ghash++] = info[i].path;
        }
    }
    CHECK(n_sm4 > 0 && n_ghash > 0);
    evp_ecb = EVP_CIPHER_fetch(NULL, "SM4-ECB", NULL);
    evp_cbc = EVP_CIPHER_fetch(NULL, "SM4-CBC", NULL);
    evp_ctr = EVP_CIPHER_fetch(NULL, "SM4-CTR", NULL);
    evp_ctx = EVP_CIPHER_CTX_new();
    CHECK(evp_ecb != NULL && evp_cbc != NULL && evp_ctr != NULL && evp_ctx != NULL);
}

/* OpenSSL one-shot, no padding. */
static void
evp_run(const EVP_CIPHER *c, int enc, const uint8_t key[16], const uint8_t *iv, uint8_t *out,
        const uint8_t *in, size_t len)
{
    int outl = 0, finl = 0;

    CHECK(EVP_CipherInit_ex(evp_ctx, c, NULL, key, iv, enc) == 1);
    CHECK(EVP_CIPHER_CTX_set_padding(evp_ctx, 0) == 1);
    if (len > 0) {
        CHECK(EVP_CipherUpdate(evp_ctx, out, &outl, in, (int) len) == 1);
    }
    CHECK(EVP_CipherFinal_ex(evp_ctx, out + outl, &finl) == 1);
    CHECK((size_t) outl + (size_t) finl == len);
}

static void
ctr_add(uint8_t ctr[16], uint64_t blocks)
{
    unsigned carry = 0;

    for (int i = 15; i >= 0; i--) {
        unsigned v = ctr[i] + (unsigned) (blocks & 0xff) + carry;

        ctr[i] = (uint8_t) v;
        carry = v >> 8;
        blocks >>= 8;
    }
}

/* ---- reference GCM: EVP SM4-ECB for the block cipher, bitwise GF(2^128) multiply -------- */

static uint64_t
get_be64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static void
put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}

/* x = x * h in GF(2^128), GCM bit order (SP 800-38D algorithm 1). */
static void
gf_mul(uint8_t x[16], const uint8_t h[16])
{
    uint64_t xh = get_be64(x), xl = get_be64(x + 8), vh = get_be64(h), vl = get_be64(h + 8);
    uint64_t zh = 0, zl = 0;

    for (int i = 0; i < 128; i++) {
        uint64_t bit = i < 64 ? (xh >> (63 - i)) & 1 : (xl >> (127 - i)) & 1;
        uint64_t m = 0 - bit, lsb = vl & 1;

        zh ^= vh & m;
        zl ^= vl & m;
        vl = (vl >> 1) | (vh << 63);
        vh = (vh >> 1) ^ ((0 - lsb) & 0xe100000000000000ull);
    }
    put_be64(x, zh);
    put_be64(x + 8, zl);
}

static void
ghash_ref(uint8_t y[16], const uint8_t h[16], const uint8_t *p, size_t len)
{
    while (len > 0) {
        size_t n = len < 16 ? len : 16;

        for (size_t j = 0; j < n; j++) {
            y[j] ^= p[j];
        }
        gf_mul(y, h);
        p += n;
        len -= n;
    }
}

static void
ecb1(const uint8_t key[16], uint8_t out[16], const uint8_t in[16])
{
    evp_run(evp_ecb, 1, key, NULL, out, in, 16);
}

static uint8_t ctr_blocks[MAX_DATA + 16];

static void
gcm_ref(const uint8_t key[16], uint8_t *out, uint8_t tag[16], const uint8_t *iv, size_t iv_len,
        const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len)
{
    static const uint8_t zero[16];
    uint8_t h[16], j0[16], cb[16], y[16], ks[16], lens[16];

    ecb1(key, h, zero);
    memset(j0, 0, 16);
    if (iv_len == 12) {
        memcpy(j0, iv, 12);
        j0[15] = 1;
    } else {
        ghash_ref(j0, h, iv, iv_len);
        memset(lens, 0, 8);
        put_be64(lens + 8, (uint64_t) iv_len * 8);
        ghash_ref(j0, h, lens, 16);
    }
    /* Key stream: E(inc32^i(J0)) for i = 1.., in one EVP ECB call over the counter blocks. */
    memcpy(cb, j0, 16);
    for (size_t off = 0; off < len; off += 16) {
        uint32_t c32 = ((uint32_t) cb[12] << 24 | (uint32_t) cb[13] << 16 |
                        (uint32_t) cb[14] << 8 | cb[15]) + 1u;

        cb[12] = (uint8_t) (c32 >> 24);
        cb[13] = (uint8_t) (c32 >> 16);
        cb[14] = (uint8_t) (c32 >> 8);
        cb[15] = (uint8_t) c32;
        memcpy(ctr_blocks + off, cb, 16);
    }
    if (len > 0) {
        evp_run(evp_ecb, 1, key, NULL, ctr_blocks, ctr_blocks, (len + 15) & ~(size_t) 15);
    }
    for (size_t i = 0; i < len; i++) {
        out[i] = in[i] ^ ctr_blocks[i];
    }
    memset(y, 0, 16);
    ghash_ref(y, h, aad, aad_len);
    ghash_ref(y, h, out, len);
    put_be64(lens, (uint64_t) aad_len * 8);
    put_be64(lens + 8, (uint64_t) len * 8);
    ghash_ref(y, h, lens, 16);
    ecb1(key, ks, j0);
    for (int j = 0; j < 16; j++) {
        tag[j] = ks[j] ^ y[j];
    }
}

/* ---- buffers ------------------------------------------------------------------------------ */

static _Alignas(64) uint8_t buf_in[MAX_DATA + MAX_OFF];
static _Alignas(64) uint8_t buf_out[MAX_DATA + MAX_OFF];
static uint8_t want[MAX_DATA], want2[MAX_DATA], got_ref[MAX_DATA];

static bool
all_zero(const uint8_t *p, size_t len)
{
    uint8_t acc = 0;

    for (size_t i = 0; i < len; i++) {
        acc |= p[i];
    }
    return acc == 0;
}

/* Runs one gm block-mode call in place or out of place on the data at `src` (len bytes), with
 * in at offset off_in and out at offset off_out, in up to two chained pieces (split bytes
 * first). The result goes to `res`. mode: 0 ecb-enc, 1 ecb-dec, 2 cbc-enc, 3 cbc-dec, 4 ctr. */
static void
gm_run(const gm_sm4_ctx *ctx, int mode, uint8_t *res, const uint8_t *src, size_t len,
       size_t split, bool in_place, size_t off_in, size_t off_out, uint8_t iv[16])
{
    uint8_t *in = buf_in + off_in;
    uint8_t *out = in_place ? in : buf_out + off_out;
    size_t pieces[2] = {split, len - split}, done = 0;

    memcpy(in, src, len);
    for (int k = 0; k < 2; k++) {
        const uint8_t *pi = in + done;
        uint8_t *po = out + done;
        size_t n = pieces[k];
        int rc = -1;

        switch (mode) {
        case 0:
            rc = gm_sm4_ecb_encrypt(ctx, po, pi, n);
            break;
        case 1:
            rc = gm_sm4_ecb_decrypt(ctx, po, pi, n);
            break;
        case 2:
            rc = gm_sm4_cbc_encrypt(ctx, po, pi, n, iv);
            break;
        case 3:
            rc = gm_sm4_cbc_decrypt(ctx, po, pi, n, iv);
            break;
        default:
            rc = gm_sm4_ctr(ctx, po, pi, n, iv);
            break;
        }
        CHECK(rc == 0);
        done += n;
    }
    memcpy(res, out, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    reader r = {data, size};
    uint8_t key[16], iv0[16], iv[16], iv_ref[16], tag[16], tag_ref[16], tag_mine[16];
    uint8_t sel_sm4, sel_gh, flags, offs, split_b, gcm_iv_b, gcm_aad_b, flip_b;
    const uint8_t *msg;
    size_t len, blen, off_in, off_out, split, ctr_split, iv_len, aad_len;
    bool in_place;
    gm_sm4_ctx ctx, ref;
    int rc;

    if (!ready) {
        setup();
        ready = true;
    }
    sel_sm4 = rd_byte(&r);
    sel_gh = rd_byte(&r);
    flags = rd_byte(&r);
    offs = rd_byte(&r);
    split_b = rd_byte(&r);
    gcm_iv_b = rd_byte(&r);
    gcm_aad_b = rd_byte(&r);
    flip_b = rd_byte(&r);
    rd_bytes(&r, key, 16);
    rd_bytes(&r, iv0, 16);
    msg = r.p;
    len = r.n < MAX_DATA ? r.n : MAX_DATA;
    blen = len & ~(size_t) 15;
    in_place = (flags & 1) != 0;
    off_in = offs & (MAX_OFF - 1);
    off_out = (size_t) ((offs >> 6) * 17 + (flags >> 4)) & (MAX_OFF - 1);
    split = blen == 0 ? 0 : (split_b % (blen / 16 + 1)) * 16;
    ctr_split = split;
    /* Counters near the carry boundaries: 32-bit, 64-bit and full 128-bit wrap. */
    switch ((flags >> 1) & 7) {
    case 1:
        memset(iv0 + 12, 0xff, 4);
        iv0[15] = (uint8_t) (0xff - (split_b & 15));
        break;
    case 2:
        memset(iv0 + 8, 0xff, 8);
        iv0[15] = (uint8_t) (0xff - (split_b & 15));
        break;
    case 3:
        memset(iv0, 0xff, 16);
        iv0[15] = (uint8_t) (0xff - (split_b & 15));
        break;
    default:
        break;
    }

    /* The chosen path and the portable reference; the paths are captured at setkey. */
    gm_sm4_init(&ctx);
    gm_sm4_init(&ref);
    CHECK(gm_impl_use("sm4", sm4_paths[sel_sm4 % n_sm4]) == 0);
    CHECK(gm_impl_use("ghash", ghash_paths[sel_gh % n_ghash]) == 0);
    CHECK(gm_sm4_setkey(&ctx, key, 16) == 0);
    CHECK(gm_impl_use("sm4", "portable") == 0);
    CHECK(gm_impl_use("ghash", "portable") == 0);
    CHECK(gm_sm4_setkey(&ref, key, 16) == 0);

    /* ECB both ways. */
    memcpy(iv, iv0, 16);
    for (int enc = 1; enc >= 0; enc--) {
        evp_run(evp_ecb, enc, key, NULL, want, msg, blen);
        gm_run(&ctx, enc ? 0 : 1, want2, msg, blen, split, in_place, off_in, off_out, iv);
        CHECK(memcmp(want, want2, blen) == 0);
    }
    /* A length that is not whole blocks is refused. */
    if (len != blen) {
        CHECK(gm_sm4_ecb_encrypt(&ctx, buf_out, msg, len) == DBAO_ERANGE);
        memcpy(iv, iv0, 16);
        CHECK(gm_sm4_cbc_decrypt(&ctx, buf_out, msg, len, iv) == DBAO_ERANGE);
    }

    /* CBC both ways, chained over the split; the returned iv is the last ciphertext block. */
    for (int enc = 1; enc >= 0; enc--) {
        evp_run(evp_cbc, enc, key, iv0, want, msg, blen);
        memcpy(iv, iv0, 16);
        gm_run(&ctx, enc ? 2 : 3, want2, msg, blen, split, in_place, off_in, off_out, iv);
        CHECK(memcmp(want, want2, blen) == 0);
        if (blen == 0) {
            CHECK(memcmp(iv, iv0, 16) == 0);
        } else {
            CHECK(memcmp(iv, (enc ? want : msg) + blen - 16, 16) == 0);
        }
    }

    /* CTR over any length, split on a block boundary; the counter comes back advanced by the
     * number of blocks touched (a partial tail consumes one). */
    evp_run(evp_ctr, 1, key, iv0, want, msg, len);
    memcpy(iv, iv0, 16);
    gm_run(&ctx, 4, want2, msg, len, ctr_split, in_place, off_in, off_out, iv);
    CHECK(memcmp(want, want2, len) == 0);
    memcpy(iv_ref, iv0, 16);
    ctr_add(iv_ref, (uint64_t) ((len + 15) / 16));
    CHECK(memcmp(iv, iv_ref, 16) == 0);

    /* GCM: chosen paths vs portable vs the reference here. IV and AAD are taken from the data
     * (they may overlap the plaintext; they are only inputs). */
    if (gcm_iv_b & 0x80) {
        iv_len = 12;
    } else {
        iv_len = 1 + (size_t) (gcm_iv_b & 0x3f);
        if (gcm_iv_b & 0x40) {
            iv_len += 64 * (size_t) (flip_b & 3);
        }
    }
    {
        static uint8_t gcm_iv[16 + 64 * 4];

        for (size_t i = 0; i < iv_len; i++) {
            gcm_iv[i] = (uint8_t) (iv0[i % 16] + (i / 16));
        }
        aad_len = (size_t) gcm_aad_b * ((flags & 0x80) ? 16 : 1);
        if (aad_len > len) {
            aad_len = len;
        }
        const uint8_t *aad = msg;
        uint8_t *in = buf_in + off_in;
        uint8_t *out = in_place ? in : buf_out + off_out;
        size_t bit = (size_t) flip_b * 31 + split_b;

        memcpy(in, msg, len);
        rc = gm_sm4_gcm_seal(&ctx, out, tag, gcm_iv, iv_len, aad, aad_len, in, len);
        CHECK(rc == 0);
        memcpy(want, out, len);
        rc = gm_sm4_gcm_seal(&ref, want2, tag_ref, gcm_iv, iv_len, aad, aad_len, msg, len);
        CHECK(rc == 0);
        CHECK(memcmp(want, want2, len) == 0 && memcmp(tag, tag_ref, 16) == 0);
        gcm_ref(key, got_ref, tag_mine, gcm_iv, iv_len, aad, aad_len, msg, len);
        CHECK(memcmp(want, got_ref, len) == 0 && memcmp(tag, tag_mine, 16) == 0);

        /* Open on both contexts, in place on ctx. */
        for (int which = 0; which < 2; which++) {
            const gm_sm4_ctx *c = which == 0 ? &ctx : &ref;

            memcpy(in, want, len);
            out = in_place ? in : buf_out + off_out;
            rc = gm_sm4_gcm_open(c, out, gcm_iv, iv_len, aad, aad_len, in, len, tag);
            CHECK(rc == 0);
            CHECK(memcmp(out, msg, len) == 0);

            /* One flipped tag bit. */
            memcpy(tag_ref, tag, 16);
            tag_ref[(bit / 8) % 16] ^= (uint8_t) (1u << (bit % 8));
            memcpy(in, want, len);
            memset(out, 0xa5, len);
            rc = gm_sm4_gcm_open(c, out, gcm_iv, iv_len, aad, aad_len, in, len, tag_ref);
            CHECK(rc == DBAO_EVERIFY);
            CHECK(all_zero(out, len));

            /* One flipped ciphertext (or AAD, when there is no ciphertext) bit. */
            memcpy(in, want, len);
            if (len > 0) {
                in[(bit / 8) % len] ^= (uint8_t) (1u << (bit % 8));
                rc = gm_sm4_gcm_open(c, out, gcm_iv, iv_len, aad, aad_len, in, len, tag);
                CHECK(rc == DBAO_EVERIFY);
                CHECK(all_zero(out, len));
            }
        }
    }

    gm_sm4_cleanup(&ctx);
    gm_sm4_cleanup(&ref);
    return 0;
}
