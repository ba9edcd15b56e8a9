/* sm3_impl.c: the portable SM3 (GB/T 32905-2016) compression function, the lane scheduler of
 * the multi-buffer paths, and the path tables behind sm3_impl.h.
 *
 * Purpose. SM3 hashes every audit record and every Merkle node, so its speed bounds the audit
 * log. This file holds the path every machine can run (including aarch64 and big-endian ones)
 * and the code shared by the x86-64 SIMD paths in sm3_x86.c.
 *
 * Technique. SM3 is serial inside one message: each round's new A and E depend on the previous
 * round's A and E through six or seven dependent operations, so a single stream is bound by
 * latency, not by the number of instructions. The portable compress() therefore:
 *  - unrolls all 64 rounds with the register roles renamed instead of moved (a round writes its
 *    new A into the D variable and its new E into H, and the next round is called with the
 *    arguments rotated: (D,A,B,C,H,E,F,G)), so no moves are spent on the shift of the state;
 *  - computes the message expansion W[j+4] inside round j in a 16-word circular window, where
 *    it fills the issue slots that the latency-bound rounds leave free;
 *  - bakes the rotated round constants T_j <<< j into immediates and adds them to rol(A,12)
 *    before E arrives, which takes one addition off the E -> E critical path, and sums every
 *    off-path term of TT1/TT2 first (OPAQUE below pins that order against re-association);
 *  - loads message words byte by byte with shifts, which is right on any byte order and which
 *    gcc and clang turn into one bswap/movbe (or rev on aarch64).
 *
 * Multi-buffer scheduling. A multi-buffer path keeps one message in each SIMD lane. Each lane
 * walks the virtual stream prefix || msg || 0x80 || 0... || bitlen64 one block at a time:
 * blocks wholly inside msg are read in place (any alignment), the first block (which holds the
 * prefix) and the last one or two (which hold the padding) are assembled in a 64-byte buffer
 * of the lane. When a lane's message ends, its digest is written and the lane takes the next
 * message. When too few lanes are left busy to pay for a SIMD step, the remaining blocks of each
 * are finished with the single-stream path (see gm__sm3_mb_run).
 *
 * Invariants. State words are in host order everywhere; only the loads of message words and
 * the digest store deal with byte order. No function keeps state between calls and nothing is
 * allocated; the path tables are constant. No table is indexed by data.
 *
 * This file is written by hand (rather than taken from the straightforward loop in sm3.c)
 * because measured speed demands it: the audit log's throughput is SM3's throughput.
 */
#include "sm3_impl.h"

#include <string.h>

const uint32_t gm__sm3_iv[8] = {0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600,
                                0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e};

/* T_j <<< (j mod 32): T_j = 0x79cc4519 for j < 16, 0x7a879d8a after. Static (not shared with
 * sm3_x86.c) so that, indexed by constants, the entries fold into immediates even in -fPIC code. */
static const uint32_t sm3_k[64] = {
    0x79cc4519, 0xf3988a32, 0xe7311465, 0xce6228cb, 0x9cc45197, 0x3988a32f, 0x7311465e, 0xe6228cbc,
    0xcc451979, 0x988a32f3, 0x311465e7, 0x6228cbce, 0xc451979c, 0x88a32f39, 0x11465e73, 0x228cbce6,
    0x9d8a7a87, 0x3b14f50f, 0x7629ea1e, 0xec53d43c, 0xd8a7a879, 0xb14f50f3, 0x629ea1e7, 0xc53d43ce,
    0x8a7a879d, 0x14f50f3b, 0x29ea1e76, 0x53d43cec, 0xa7a879d8, 0x4f50f3b1, 0x9ea1e762, 0x3d43cec5,
    0x7a879d8a, 0xf50f3b14, 0xea1e7629, 0xd43cec53, 0xa879d8a7, 0x50f3b14f, 0xa1e7629e, 0x43cec53d,
    0x879d8a7a, 0x0f3b14f5, 0x1e7629ea, 0x3cec53d4, 0x79d8a7a8, 0xf3b14f50, 0xe7629ea1, 0xcec53d43,
    0x9d8a7a87, 0x3b14f50f, 0x7629ea1e, 0xec53d43c, 0xd8a7a879, 0xb14f50f3, 0x629ea1e7, 0xc53d43ce,
    0x8a7a879d, 0x14f50f3b, 0x29ea1e76, 0x53d43cec, 0xa7a879d8, 0x4f50f3b1, 0x9ea1e762, 0x3d43cec5,
};

/* ---- Portable compression ---------------------------------------------------------------- */

#define ROL32(x, n)  (((x) << (n)) | ((x) >> (32 - (n)))) /* n is a constant in 1..31 */
#define P0(x)        ((x) ^ ROL32((x), 9) ^ ROL32((x), 17))
#define P1(x)        ((x) ^ ROL32((x), 15) ^ ROL32((x), 23))
#define FF0(x, y, z) ((x) ^ (y) ^ (z))
#define GG0(x, y, z) ((x) ^ (y) ^ (z))
/* Majority and choose, written so that the older inputs (y, z) combine before x arrives. */
#define FF1(x, y, z) (((y) & (z)) | ((x) & ((y) | (z))))
#define GG1(x, y, z) ((((y) ^ (z)) & (x)) ^ (z))

static inline uint32_t
load_be32(const uint8_t *p)
{
    return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static inline void
store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) (v >> 24);
    p[1] = (uint8_t) (v >> 16);
    p[2] = (uint8_t) (v >> 8);
    p[3] = (uint8_t) v;
}

/* W[j] for j >= 16, into the slot of W[j - 16] of the 16-word window w. */
#define EXPAND(j)                                                                                  \
    (w[(j) % 16] = P1(w[(j) % 16] ^ w[((j) + 7) % 16] ^ ROL32(w[((j) + 13) % 16], 15)) ^           \
                   ROL32(w[((j) + 3) % 16], 7) ^ w[((j) + 10) % 16])

/* OPAQUE(x) makes gcc/clang materialise x at this point. It keeps the compilers from
 * re-associating a round's additions into 3-operand forms (a 3-operand LEA has 2-cycle latency
 * on recent x86) on the critical path; measured +6% with gcc 12. On other compilers it is a
 * no-op and the code is plain C. */
#if defined(__GNUC__)
#define OPAQUE(x) __asm__("" : "+r"(x))
#else
#define OPAQUE(x) ((void) 0)
#endif

/* One round j. The new A goes to D and the new E to H; the caller rotates the roles. The
 * critical path is A -> rol12 -> +(K) -> +E -> rol7 -> (^a12, +x1 -> A') and (+x2 -> P0 -> E');
 * everything else is summed beforehand and joins with a single addition. */
#define ROUND(A, B, C, D, E, F, G, H, FF, GG, j)                                                   \
    do {                                                                                           \
        uint32_t a12_ = ROL32(A, 12), t_ = a12_ + sm3_k[j];                                        \
        uint32_t dw_ = D + (w[(j) % 16] ^ w[((j) + 4) % 16]), hw_ = H + w[(j) % 16];               \
        uint32_t ss1_, x1_, x2_;                                                                   \
        OPAQUE(t_);                                                                                \
        OPAQUE(dw_);                                                                               \
        OPAQUE(hw_);                                                                               \
        ss1_ = ROL32(E + t_, 7);                                                                   \
        x1_ = FF(A, B, C) + dw_;                                                                   \
        x2_ = GG(E, F, G) + hw_;                                                                   \
        OPAQUE(x1_);                                                                               \
        OPAQUE(x2_);                                                                               \
        B = ROL32(B, 9);                                                                           \
        F = ROL32(F, 19);                                                                          \
        D = x1_ + (ss1_ ^ a12_);                                                                   \
        x2_ += ss1_;                                                                               \
        H = P0(x2_);                                                                               \
    } while (0)

/* Rounds j..j+3 with the expansion of W[j+4..j+7] interleaved (X: 1 to expand, 0 not). */
#define R4(FF, GG, j0, j1, j2, j3, X)                                                              \
    do {                                                                                           \
        if (X) {                                                                                   \
            EXPAND(j0 + 4);                                                                        \
        }                                                                                          \
        ROUND(a, b, c, d, e, f, g, h, FF, GG, j0);                                                 \
        if (X) {                                                                                   \
            EXPAND(j1 + 4);                                                                        \
        }                                                                                          \
        ROUND(d, a, b, c, h, e, f, g, FF, GG, j1);                                                 \
        if (X) {                                                                                   \
            EXPAND(j2 + 4);                                                                        \
        }                                                                                          \
        ROUND(c, d, a, b, g, h, e, f, FF, GG, j2);                                                 \
        if (X) {                                                                                   \
            EXPAND(j3 + 4);                                                                        \
        }                                                                                          \
        ROUND(b, c, d, a, f, g, h, e, FF, GG, j3);                                                 \
    } while (0)

void
gm__sm3_compress_portable(uint32_t state[8], const uint8_t *p, size_t nblocks)
{
    uint32_t a, b, c, d, e, f, g, h, w[16];
    int i;

    while (nblocks-- > 0) {
        for (i = 0; i < 16; i++) {
            w[i] = load_be32(p + 4 * i);
        }
        a = state[0], b = state[1], c = state[2], d = state[3];
        e = state[4], f = state[5], g = state[6], h = state[7];

        R4(FF0, GG0, 0, 1, 2, 3, 0);
        R4(FF0, GG0, 4, 5, 6, 7, 0);
        R4(FF0, GG0, 8, 9, 10, 11, 0);
        R4(FF0, GG0, 12, 13, 14, 15, 1);
        R4(FF1, GG1, 16, 17, 18, 19, 1);
        R4(FF1, GG1, 20, 21, 22, 23, 1);
        R4(FF1, GG1, 24, 25, 26, 27, 1);
        R4(FF1, GG1, 28, 29, 30, 31, 1);
        R4(FF1, GG1, 32, 33, 34, 35, 1);
        R4(FF1, GG1, 36, 37, 38, 39, 1);
        R4(FF1, GG1, 40, 41, 42, 43, 1);
        R4(FF1, GG1, 44, 45, 46, 47, 1);
        R4(FF1, GG1, 48, 49, 50, 51, 1);
        R4(FF1, GG1, 52, 53, 54, 55, 1);
        R4(FF1, GG1, 56, 57, 58, 59, 1);
        R4(FF1, GG1, 60, 61, 62, 63, 1);

        state[0] ^= a, state[1] ^= b, state[2] ^= c, state[3] ^= d;
        state[4] ^= e, state[5] ^= f, state[6] ^= g, state[7] ^= h;
        p += 64;
    }
}

/* ---- Lane scheduling (shared with the multi-buffer paths) --------------------------------- */

/* A lane walks the virtual stream prefix || msg || padding one block at a time. */
typedef struct lane {
    const uint8_t *msg;
    uint64_t total;   /* prefix_len + message length */
    uint64_t block;   /* next block index */
    uint64_t nblocks; /* blocks including padding */
    size_t idx;       /* message index (output slot) */
    uint8_t buf[64];  /* assembled block */
} lane;

static void
lane_start(lane *ln, const uint8_t *msg, size_t len, size_t idx, size_t prefix_len)
{
    ln->msg = msg;
    ln->total = (uint64_t) prefix_len + len;
    ln->block = 0;
    ln->nblocks = (ln->total + 9 + 63) / 64;
    ln->idx = idx;
}

/* lane_next returns the lane's next block, in place or assembled in ln->buf, and advances it.
 * Call only while block < nblocks. */
static const uint8_t *
lane_next(lane *ln, const uint8_t *prefix, size_t prefix_len)
{
    uint64_t off = ln->block * 64, lo, hi;
    uint8_t *buf = ln->buf;

    ln->block++;
    if (off >= prefix_len && off + 64 <= ln->total) {
        return ln->msg + (off - prefix_len);
    }
    if (off == 0 && prefix_len == 64) {
        return prefix;
    }
    memset(buf, 0, 64);
    if (off < prefix_len) {
        hi = prefix_len < off + 64 ? prefix_len : off + 64;
        memcpy(buf, prefix + off, (size_t) (hi - off));
    }
    lo = off > prefix_len ? off : prefix_len;
    hi = ln->total < off + 64 ? ln->total : off + 64;
    if (lo < hi) {
        memcpy(buf + (lo - off), ln->msg + (lo - prefix_len), (size_t) (hi - lo));
    }
    if (ln->total >= off && ln->total < off + 64) {
        buf[ln->total - off] = 0x80;
    }
    if (ln->block == ln->nblocks) {
        uint64_t bits = ln->total << 3;

        store_be32(buf + 56, (uint32_t) (bits >> 32));
        store_be32(buf + 60, (uint32_t) bits);
    }
    return buf;
}

static void
store_digest(uint8_t out[32], const uint32_t state[8])
{
    int i;

    for (i = 0; i < 8; i++) {
        store_be32(out + 4 * i, state[i]);
    }
}

/* lane_finish compresses the lane's remaining blocks into state with `compress` (the blocks
 * inside the message in one call, then the assembled tail) and writes the digest. */
static void
lane_finish(lane *ln, uint32_t state[8], uint8_t out[32], const uint8_t *prefix, size_t prefix_len,
            void (*compress)(uint32_t *, const uint8_t *, size_t))
{
    uint64_t full = ln->total / 64;

    if ((ln->block > 0 || prefix_len == 0) && full > ln->block) {
        compress(state, ln->msg + (ln->block * 64 - prefix_len), (size_t) (full - ln->block));
        ln->block = full;
    }
    while (ln->block < ln->nblocks) {
        compress(state, lane_next(ln, prefix, prefix_len), 1);
    }
    store_digest(out, state);
}

void
gm__sm3_mb_run(uint8_t *out, const uint8_t *const *msgs, const size_t *lens, size_t num,
               const uint8_t *prefix, size_t prefix_len, size_t lanes, gm__sm3_mb_step_fn step,
               size_t min_active, void (*compress)(uint32_t *, const uint8_t *, size_t))
{
    static const uint8_t idle_block[64];
    lane ln[GM__SM3_MB_LANES_MAX];
    bool busy[GM__SM3_MB_LANES_MAX];
    const uint8_t *blk[GM__SM3_MB_LANES_MAX];
    uint32_t st[8 * GM__SM3_MB_LANES_MAX], state[8];
    size_t i, k, next = 0, active = 0;

    for (i = 0; i < lanes; i++) {
        busy[i] = next < num;
        if (busy[i]) {
            lane_start(&ln[i], msgs[next], lens[next], next, prefix_len);
            next++;
            active++;
        }
        for (k = 0; k < 8; k++) {
            st[k * lanes + i] = gm__sm3_iv[k];
        }
    }
    while (active > 0 && (active >= min_active || next < num)) {
        for (i = 0; i < lanes; i++) {
            blk[i] = busy[i] ? lane_next(&ln[i], prefix, prefix_len) : idle_block;
        }
        step(st, blk);
        for (i = 0; i < lanes; i++) {
            if (!busy[i] || ln[i].block < ln[i].nblocks) {
                continue;
            }
            for (k = 0; k < 8; k++) {
                state[k] = st[k * lanes + i];
                st[k * lanes + i] = gm__sm3_iv[k];
            }
            store_digest(out + 32 * ln[i].idx, state);
            if (next < num) {
                lane_start(&ln[i], msgs[next], lens[next], next, prefix_len);
                next++;
            } else {
                busy[i] = false;
                active--;
            }
        }
    }
    /* Stragglers: finish each one alone. */
    for (i = 0; i < lanes; i++) {
        if (busy[i]) {
            for (k = 0; k < 8; k++) {
                state[k] = st[k * lanes + i];
            }
            lane_finish(&ln[i], state, out + 32 * ln[i].idx, prefix, prefix_len, compress);
        }
    }
}

/* ---- Portable multi-buffer: one message after another ------------------------------------ */

static void
hash_many_portable(uint8_t *out, const uint8_t *const *msgs, const size_t *lens, size_t num,
                   const uint8_t *prefix, size_t prefix_len)
{
    lane ln;
    uint32_t state[8];
    size_t i;

    for (i = 0; i < num; i++) {
        memcpy(state, gm__sm3_iv, sizeof(state));
        lane_start(&ln, msgs[i], lens[i], i, prefix_len);
        lane_finish(&ln, state, out + 32 * i, prefix, prefix_len, gm__sm3_compress_portable);
    }
}

/* ---- Path tables --------------------------------------------------------------------------- */

static const gm__sm3_impl impls[] = {
#if defined(__x86_64__)
    {"x86-avx-bmi2", gm__sm3_compress_avx_bmi2},
#endif
    {"portable", gm__sm3_compress_portable},
};

static const gm__sm3_mb_impl mb_impls[] = {
#if defined(__x86_64__)
    {"avx512x16", 16, gm__sm3_hash_many_avx512x16},
    {"avx2x8", 8, gm__sm3_hash_many_avx2x8},
#endif
    {"portable", 1, hash_many_portable},
};

static bool
supported(const char *name)
{
#if defined(__x86_64__)
    if (strcmp(name, "x86-avx-bmi2") == 0) {
        return gm__sm3_x86_has_avx_bmi2();
    }
    if (strcmp(name, "avx2x8") == 0) {
        return gm__sm3_x86_has_avx2();
    }
    if (strcmp(name, "avx512x16") == 0) {
        return gm__sm3_x86_has_avx512();
    }
#endif
    return strcmp(name, "portable") == 0;
}

const gm__sm3_impl *
gm__sm3_impl_get(const char *name)
{
    size_t i;

    for (i = 0; name != NULL && i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (strcmp(impls[i].name, name) == 0) {
            return supported(name) ? &impls[i] : NULL;
        }
    }
    return NULL;
}

/* The tables are in order of preference: the first supported entry is the fastest. */
const gm__sm3_impl *
gm__sm3_impl_best(void)
{
    size_t i;

    for (i = 0; i < sizeof(impls) / sizeof(impls[0]); i++) {
        if (supported(impls[i].name)) {
            return &impls[i];
        }
    }
    return &impls[sizeof(impls) / sizeof(impls[0]) - 1];
}

const gm__sm3_mb_impl *
gm__sm3_mb_impl_get(const char *name)
{
    size_t i;

    for (i = 0; name != NULL && i < sizeof(mb_impls) / sizeof(mb_impls[0]); i++) {
        if (strcmp(mb_impls[i].name, name) == 0) {
            return supported(name) ? &mb_impls[i] : NULL;
        }
    }
    return NULL;
}

const gm__sm3_mb_impl *
gm__sm3_mb_impl_best(void)
{
    size_t i;

    for (i = 0; i < sizeof(mb_impls) / sizeof(mb_impls[0]); i++) {
        if (supported(mb_impls[i].name)) {
            return &mb_impls[i];
        }
    }
    return &mb_impls[sizeof(mb_impls) / sizeof(mb_impls[0]) - 1];
}

bool
gm__sm3_impl_available(const char *name)
{
    return gm__sm3_impl_get(name) != NULL;
}

bool
gm__sm3_mb_impl_available(const char *name)
{
    return gm__sm3_mb_impl_get(name) != NULL;
}
