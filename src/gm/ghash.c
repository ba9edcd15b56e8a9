/* ghash.c: GHASH (NIST SP 800-38D) for SM4-GCM, portable and constant time.
 *
 * GF(2^128) with GCM's reflected bit order: bit 0 of the field element is the most significant
 * bit of byte 0. Multiplication is the textbook right-shift algorithm (SP 800-38D, Algorithm 1)
 * with masks instead of branches, so its timing does not depend on H (a secret derived from
 * the key) or on the data. It is slow (128 steps a block); the fast paths replace it.
 */
#include "internal.h"

static void
gf128_mul(uint64_t *zh, uint64_t *zl, uint64_t xh, uint64_t xl, uint64_t hh, uint64_t hl)
{
    uint64_t rh = 0, rl = 0, vh = hh, vl = hl, m;
    int i;

    for (i = 0; i < 128; i++) {
        uint64_t bit = i < 64 ? xh >> (63 - i) : xl >> (127 - i);

        m = (uint64_t) 0 - (bit & 1);
        rh ^= vh & m;
        rl ^= vl & m;
        m = (uint64_t) 0 - (vl & 1);
        vl = (vl >> 1) | (vh << 63);
        vh = (vh >> 1) ^ (0xe100000000000000ULL & m);
    }
    *zh = rh;
    *zl = rl;
}

void
gm__ghash_blocks(const uint8_t H[16], uint8_t Y[16], const uint8_t *in, size_t nblocks)
{
    uint64_t hh = gm__load_be64(H), hl = gm__load_be64(H + 8);
    uint64_t yh = gm__load_be64(Y), yl = gm__load_be64(Y + 8);

    while (nblocks-- > 0) {
        yh ^= gm__load_be64(in);
        yl ^= gm__load_be64(in + 8);
        gf128_mul(&yh, &yl, yh, yl, hh, hl);
        in += 16;
    }
    gm__store_be64(Y, yh);
    gm__store_be64(Y + 8, yl);
}
