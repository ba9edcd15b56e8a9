/* sm4_impl.c: SM4 (GB/T 32907-2016) in portable constant-time C, and the path dispatcher.
 *
 * Purpose. The "portable" SM4 path (ECB, CTR with 128-bit or inc32 counters, CBC both ways, the
 * key schedule) for every architecture, plus gm__sm4_impl_get/_best, which pick between it and
 * the x86-64 SIMD paths of sm4_x86.c, and the fused GCM bulk step gm__sm4_gcm_blocks.
 *
 * Technique. The usual SM4 code looks the S-box up in a 256-byte (or 1 KiB "T-table") array
 * indexed by key-dependent bytes, which leaks the key through the cache. Here the S-box is a
 * Boolean circuit of 186 gates (115 XOR, 58 AND, 13 NOT) evaluated on bit slices, so no memory
 * address and no branch depends on a secret. The circuit rests on the algebraic form of the
 * SM4 S-box, S(x) = A(I(A x + 0xD3)) + 0xD3, with A the circulant matrix of GB/T 32907 and I
 * the inversion in GF(2^8) = GF(2)[x]/(x^8+x^7+x^6+x^5+x^4+x^2+1). The field is mapped by a
 * linear isomorphism onto the tower GF((2^4)^2) = GF(16)[y]/(y^2 + y + 8), GF(16) =
 * GF(2)[z]/(z^4+z+1), where a = ah*y + al has the inverse
 *     d = 8*ah^2 + ah*al + al^2 (in GF(16)),  a^-1 = (ah*d^-1) y + (ah + al)*d^-1,
 * i.e. three GF(16) multiplications (16 AND + 15 XOR each), one GF(16) inversion from its
 * algebraic normal form (10 AND) and linear maps. The isomorphism and both affine maps are
 * folded into a top linear layer (8 inputs to al, ah, ah^al and the linear part of d) and a
 * bottom one (rh, rl to the output byte), both shortened with Paar's greedy common-XOR
 * elimination. The circuit was generated and checked on all 256 inputs by a throw-away
 * script; the unit test re-checks it through the GB/T vectors and against OpenSSL.
 *
 * Two ways to feed the circuit, both over uint64_t slices:
 *   - crypt2 (one or two blocks, serial modes and the key schedule): the four S-box input
 *     bytes of two blocks sit in one uint64_t; slice b is (w >> b) & 0x0101..01, so the gates
 *     work on 8 lanes at bit 0 of each byte (a SWAR layout; garbage above bit 0 is masked off
 *     when the result is packed back). About 230 operations a round.
 *   - crypt16 (16 blocks, parallel modes): the round's 64 S-box input bytes fill eight words,
 *     an 8x8 bit transpose in each byte column (three SWAPMOVE layers) turns them into eight
 *     full 64-lane slices, and the same transpose turns the result back. About 500 operations
 *     a round for 16 blocks, four times crypt2's throughput.
 * The linear layer L is done on 32-bit words with rotations (one instruction each).
 *
 * Invariants. rk_dec is rk_enc reversed. Blocks are loaded and stored as big-endian 32-bit
 * words byte by byte (endian and alignment neutral). Stack copies of data and keystream are
 * wiped with explicit_bzero before returning. The only branches are on block counts and on the
 * (public) counter value.
 *
 * Written by hand (apart from the generated S-box circuit) because measured speed demands it:
 * OpenSSL 3.0's SM4 uses secret-indexed tables, and a naive constant-time table scan is about
 * 20 times slower than this circuit.
 */
#include "sm4_impl.h"

#include <pthread.h>
#include <string.h>

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

static inline uint32_t
rotl32(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32 - n));
}

/* The SM4 S-box on bit slices: s[b] holds bit b of every lane's byte. */
static inline void
sbox_bs(uint64_t s[8])
{
    uint64_t x0 = s[0], x1 = s[1], x2 = s[2], x3 = s[3], x4 = s[4], x5 = s[5], x6 = s[6], x7 = s[7];

    uint64_t t0 = x0 ^ x6;
    uint64_t t1 = x1 ^ x7;
    uint64_t t2 = x3 ^ x4;
    uint64_t t3 = x2 ^ x5;
    uint64_t t4 = x6 ^ x7;
    uint64_t t5 = t0 ^ t3;
    uint64_t t6 = x5 ^ t1;
    uint64_t t7 = x1 ^ t2;
    uint64_t t8 = x3 ^ t0;
    uint64_t t9 = t2 ^ t4;
    uint64_t t10 = t1 ^ t2;
    uint64_t t11 = t10 ^ t3;
    uint64_t t12 = ~t11;
    uint64_t t13 = t0 ^ t6;
    uint64_t t14 = ~t13;
    uint64_t t15 = x0 ^ x4;
    uint64_t t16 = t15 ^ t1;
    uint64_t t17 = ~x6;
    uint64_t t18 = x2 ^ t4;
    uint64_t t19 = t5 ^ t7;
    uint64_t t20 = ~t19;
    uint64_t t21 = x1 ^ t8;
    uint64_t t22 = x0 ^ t3;
    uint64_t t23 = ~t22;
    uint64_t t24 = x5 ^ x6;
    uint64_t t25 = t24 ^ t7;
    uint64_t t26 = ~t25;
    uint64_t t27 = x2 ^ x7;
    uint64_t t28 = t27 ^ t2;
    uint64_t t29 = ~t6;
    uint64_t t30 = x2 ^ t0;
    uint64_t t31 = ~t30;
    uint64_t t32 = x2 ^ x6;
    uint64_t t33 = t32 ^ t1;
    uint64_t t34 = t1 ^ t8;
    uint64_t t35 = t16 & t9;
    uint64_t t36 = t16 & t5;
    uint64_t t37 = t16 & t12;
    uint64_t t38 = t16 & t14;
    uint64_t t39 = t17 & t9;
    uint64_t t40 = t36 ^ t39;
    uint64_t t41 = t17 & t5;
    uint64_t t42 = t37 ^ t41;
    uint64_t t43 = t17 & t12;
    uint64_t t44 = t38 ^ t43;
    uint64_t t45 = t17 & t14;
    uint64_t t46 = t18 & t9;
    uint64_t t47 = t42 ^ t46;
    uint64_t t48 = t18 & t5;
    uint64_t t49 = t44 ^ t48;
    uint64_t t50 = t18 & t12;
    uint64_t t51 = t45 ^ t50;
    uint64_t t52 = t18 & t14;
    uint64_t t53 = t20 & t9;
    uint64_t t54 = t49 ^ t53;
    uint64_t t55 = t20 & t5;
    uint64_t t56 = t51 ^ t55;
    uint64_t t57 = t20 & t12;
    uint64_t t58 = t52 ^ t57;
    uint64_t t59 = t20 & t14;
    uint64_t t60 = t35 ^ t56;
    uint64_t t61 = t40 ^ t56;
    uint64_t t62 = t61 ^ t58;
    uint64_t t63 = t47 ^ t58;
    uint64_t t64 = t63 ^ t59;
    uint64_t t65 = t54 ^ t59;
    uint64_t t66 = t60 ^ t29;
    uint64_t t67 = t62 ^ t31;
    uint64_t t68 = t64 ^ t33;
    uint64_t t69 = t65 ^ t34;
    uint64_t t70 = t66 ^ t67;
    uint64_t t71 = t70 ^ t68;
    uint64_t t72 = t66 & t68;
    uint64_t t73 = t71 ^ t72;
    uint64_t t74 = t67 & t68;
    uint64_t t75 = t73 ^ t74;
    uint64_t t76 = t66 & t67;
    uint64_t t77 = t76 & t68;
    uint64_t t78 = t75 ^ t77;
    uint64_t t79 = t78 ^ t69;
    uint64_t t80 = t74 & t69;
    uint64_t t81 = t79 ^ t80;
    uint64_t t82 = t76 ^ t72;
    uint64_t t83 = t82 ^ t74;
    uint64_t t84 = t83 ^ t69;
    uint64_t t85 = t67 & t69;
    uint64_t t86 = t84 ^ t85;
    uint64_t t87 = t76 & t69;
    uint64_t t88 = t86 ^ t87;
    uint64_t t89 = t76 ^ t68;
    uint64_t t90 = t89 ^ t72;
    uint64_t t91 = t90 ^ t69;
    uint64_t t92 = t66 & t69;
    uint64_t t93 = t91 ^ t92;
    uint64_t t94 = t72 & t69;
    uint64_t t95 = t93 ^ t94;
    uint64_t t96 = t67 ^ t68;
    uint64_t t97 = t96 ^ t69;
    uint64_t t98 = t97 ^ t92;
    uint64_t t99 = t98 ^ t85;
    uint64_t t100 = t68 & t69;
    uint64_t t101 = t99 ^ t100;
    uint64_t t102 = t101 ^ t80;
    uint64_t t103 = t16 & t81;
    uint64_t t104 = t16 & t88;
    uint64_t t105 = t16 & t95;
    uint64_t t106 = t16 & t102;
    uint64_t t107 = t17 & t81;
    uint64_t t108 = t104 ^ t107;
    uint64_t t109 = t17 & t88;
    uint64_t t110 = t105 ^ t109;
    uint64_t t111 = t17 & t95;
    uint64_t t112 = t106 ^ t111;
    uint64_t t113 = t17 & t102;
    uint64_t t114 = t18 & t81;
    uint64_t t115 = t110 ^ t114;
    uint64_t t116 = t18 & t88;
    uint64_t t117 = t112 ^ t116;
    uint64_t t118 = t18 & t95;
    uint64_t t119 = t113 ^ t118;
    uint64_t t120 = t18 & t102;
    uint64_t t121 = t20 & t81;
    uint64_t t122 = t117 ^ t121;
    uint64_t t123 = t20 & t88;
    uint64_t t124 = t119 ^ t123;
    uint64_t t125 = t20 & t95;
    uint64_t t126 = t120 ^ t125;
    uint64_t t127 = t20 & t102;
    uint64_t t128 = t103 ^ t124;
    uint64_t t129 = t108 ^ t124;
    uint64_t t130 = t129 ^ t126;
    uint64_t t131 = t115 ^ t126;
    uint64_t t132 = t131 ^ t127;
    uint64_t t133 = t122 ^ t127;
    uint64_t t134 = t21 & t81;
    uint64_t t135 = t21 & t88;
    uint64_t t136 = t21 & t95;
    uint64_t t137 = t21 & t102;
    uint64_t t138 = t23 & t81;
    uint64_t t139 = t135 ^ t138;
    uint64_t t140 = t23 & t88;
    uint64_t t141 = t136 ^ t140;
    uint64_t t142 = t23 & t95;
    uint64_t t143 = t137 ^ t142;
    uint64_t t144 = t23 & t102;
    uint64_t t145 = t26 & t81;
    uint64_t t146 = t141 ^ t145;
    uint64_t t147 = t26 & t88;
    uint64_t t148 = t143 ^ t147;
    uint64_t t149 = t26 & t95;
    uint64_t t150 = t144 ^ t149;
    uint64_t t151 = t26 & t102;
    uint64_t t152 = t28 & t81;
    uint64_t t153 = t148 ^ t152;
    uint64_t t154 = t28 & t88;
    uint64_t t155 = t150 ^ t154;
    uint64_t t156 = t28 & t95;
    uint64_t t157 = t151 ^ t156;
    uint64_t t158 = t28 & t102;
    uint64_t t159 = t134 ^ t155;
    uint64_t t160 = t139 ^ t155;
    uint64_t t161 = t160 ^ t157;
    uint64_t t162 = t146 ^ t157;
    uint64_t t163 = t162 ^ t158;
    uint64_t t164 = t153 ^ t158;
    uint64_t t165 = t159 ^ t128;
    uint64_t t166 = t163 ^ t132;
    uint64_t t167 = t161 ^ t133;
    uint64_t t168 = t164 ^ t128;
    uint64_t t169 = t165 ^ t167;
    uint64_t t170 = ~t169;
    uint64_t t171 = t159 ^ t166;
    uint64_t t172 = ~t171;
    uint64_t t173 = t130 ^ t133;
    uint64_t t174 = t173 ^ t166;
    uint64_t t175 = t163 ^ t133;
    uint64_t t176 = t175 ^ t165;
    uint64_t t177 = t161 ^ t168;
    uint64_t t178 = ~t177;
    uint64_t t179 = t130 ^ t167;
    uint64_t t180 = t179 ^ t168;
    uint64_t t181 = t161 ^ t165;
    uint64_t t182 = t181 ^ t166;
    uint64_t t183 = ~t182;
    uint64_t t184 = t164 ^ t165;
    uint64_t t185 = ~t184;
    s[0] = t170;
    s[1] = t172;
    s[2] = t174;
    s[3] = t176;
    s[4] = t178;
    s[5] = t180;
    s[6] = t183;
    s[7] = t185;
}

/* S-box on each of the 8 bytes of w (SWAR layout, see the essay). */
static inline uint64_t
sbox_swar(uint64_t w)
{
    const uint64_t m = 0x0101010101010101ULL;
    uint64_t s[8], r = 0;
    int b;

    _Pragma("GCC unroll 8") for (b = 0; b < 8; b++)
    {
        s[b] = (w >> b) & m;
    }
    sbox_bs(s);
    _Pragma("GCC unroll 8") for (b = 0; b < 8; b++)
    {
        r |= (s[b] & m) << b;
    }
    return r;
}

/* The linear maps of the round function (L) and of the key schedule (L'). */
static inline uint32_t
lin_enc(uint32_t b)
{
    return b ^ rotl32(b, 2) ^ rotl32(b, 10) ^ rotl32(b, 18) ^ rotl32(b, 24);
}

static inline uint32_t
lin_key(uint32_t b)
{
    return b ^ rotl32(b, 13) ^ rotl32(b, 23);
}

void
gm__sm4_expand_key(uint32_t rk_enc[32], uint32_t rk_dec[32], const uint8_t key[16])
{
    static const uint32_t fk[4] = {0xa3b1bac6, 0x56aa3350, 0x677d9197, 0xb27022dc};
    uint32_t k[4];
    int i;

    for (i = 0; i < 4; i++) {
        k[i] = load_be32(key + 4 * i) ^ fk[i];
    }
    for (i = 0; i < 32; i++) {
        /* CK_i: byte j is (4i + j) * 7 mod 256. */
        uint32_t ck = (uint32_t) ((28 * i) & 0xff) << 24 | (uint32_t) ((28 * i + 7) & 0xff) << 16 |
                      (uint32_t) ((28 * i + 14) & 0xff) << 8 | (uint32_t) ((28 * i + 21) & 0xff);
        uint32_t t = (uint32_t) sbox_swar(k[(i + 1) & 3] ^ k[(i + 2) & 3] ^ k[(i + 3) & 3] ^ ck);

        k[i & 3] ^= lin_key(t);
        rk_enc[i] = k[i & 3];
    }
    for (i = 0; i < 32; i++) {
        rk_dec[i] = rk_enc[31 - i];
    }
    explicit_bzero(k, sizeof(k));
}

/* crypt2: one or two blocks as words (a[0..3], b[0..3]), in place. The output words come back
 * in output order (X35, X34, X33, X32). */
#define R2(A, B, C, D, i)                                                                          \
    do {                                                                                           \
        uint64_t t_ = sbox_swar((uint64_t) (B##a ^ C##a ^ D##a ^ rk[i]) |                          \
                                (uint64_t) (B##b ^ C##b ^ D##b ^ rk[i]) << 32);                    \
        A##a ^= lin_enc((uint32_t) t_);                                                            \
        A##b ^= lin_enc((uint32_t) (t_ >> 32));                                                    \
    } while (0)

static void
crypt2(const uint32_t rk[32], uint32_t a[4], uint32_t b[4])
{
    uint32_t x0a = a[0], x1a = a[1], x2a = a[2], x3a = a[3];
    uint32_t x0b = b[0], x1b = b[1], x2b = b[2], x3b = b[3];
    int i;

    for (i = 0; i < 32; i += 4) {
        R2(x0, x1, x2, x3, i);
        R2(x1, x2, x3, x0, i + 1);
        R2(x2, x3, x0, x1, i + 2);
        R2(x3, x0, x1, x2, i + 3);
    }
    a[0] = x3a;
    a[1] = x2a;
    a[2] = x1a;
    a[3] = x0a;
    b[0] = x3b;
    b[1] = x2b;
    b[2] = x1b;
    b[3] = x0b;
}

/* Exchange the bits of b under `mask` with the bits of a under mask << n. */
#define SWAPMOVE(a, b, mask, n)                                                                    \
    do {                                                                                           \
        uint64_t t_ = (((a) >> (n)) ^ (b)) & (mask);                                               \
        (b) ^= t_;                                                                                 \
        (a) ^= t_ << (n);                                                                          \
    } while (0)

/* Transpose the 8x8 bit matrix (word m, bit b) in each of the 8 byte columns; an involution. */
static inline void
transpose8(uint64_t w[8])
{
    SWAPMOVE(w[0], w[4], 0x0f0f0f0f0f0f0f0fULL, 4);
    SWAPMOVE(w[1], w[5], 0x0f0f0f0f0f0f0f0fULL, 4);
    SWAPMOVE(w[2], w[6], 0x0f0f0f0f0f0f0f0fULL, 4);
    SWAPMOVE(w[3], w[7], 0x0f0f0f0f0f0f0f0fULL, 4);
    SWAPMOVE(w[0], w[2], 0x3333333333333333ULL, 2);
    SWAPMOVE(w[1], w[3], 0x3333333333333333ULL, 2);
    SWAPMOVE(w[4], w[6], 0x3333333333333333ULL, 2);
    SWAPMOVE(w[5], w[7], 0x3333333333333333ULL, 2);
    SWAPMOVE(w[0], w[1], 0x5555555555555555ULL, 1);
    SWAPMOVE(w[2], w[3], 0x5555555555555555ULL, 1);
    SWAPMOVE(w[4], w[5], 0x5555555555555555ULL, 1);
    SWAPMOVE(w[6], w[7], 0x5555555555555555ULL, 1);
}

/* One round on 16 blocks. State word j of blocks 2m and 2m+1 is packed in st[j][m]. */
static inline void
round16(uint64_t A[8], const uint64_t B[8], const uint64_t C[8], const uint64_t D[8], uint32_t k)
{
    uint64_t w[8], kk = (uint64_t) k * 0x100000001ULL;
    int m;

    _Pragma("GCC unroll 8") for (m = 0; m < 8; m++)

    {
        w[m] = B[m] ^ C[m] ^ D[m] ^ kk;
    }
    transpose8(w);
    sbox_bs(w);
    transpose8(w);
    _Pragma("GCC unroll 8") for (m = 0; m < 8; m++)
    {
        A[m] ^= (uint64_t) lin_enc((uint32_t) w[m]) | (uint64_t) lin_enc((uint32_t) (w[m] >> 32))
                                                          << 32;
    }
}

/* crypt16: 16 blocks as words x[n][0..3], in place, output words in output order. */
static void
crypt16(const uint32_t rk[32], uint32_t x[16][4])
{
    uint64_t st[4][8];
    int i, j, m;

    _Pragma("GCC unroll 4") for (j = 0; j < 4; j++)

    {
        _Pragma("GCC unroll 8") for (m = 0; m < 8; m++)
        {
            st[j][m] = (uint64_t) x[2 * m][j] | (uint64_t) x[2 * m + 1][j] << 32;
        }
    }
    for (i = 0; i < 32; i += 4) {
        round16(st[0], st[1], st[2], st[3], rk[i]);
        round16(st[1], st[2], st[3], st[0], rk[i + 1]);
        round16(st[2], st[3], st[0], st[1], rk[i + 2]);
        round16(st[3], st[0], st[1], st[2], rk[i + 3]);
    }
    _Pragma("GCC unroll 4") for (j = 0; j < 4; j++)
    {
        _Pragma("GCC unroll 8") for (m = 0; m < 8; m++)
        {
            x[2 * m][3 - j] = (uint32_t) st[j][m];
            x[2 * m + 1][3 - j] = (uint32_t) (st[j][m] >> 32);
        }
    }
    explicit_bzero(st, sizeof(st));
}

/* Encrypt (or decrypt) the first n <= 16 blocks of x with the cheaper core for n. */
static void
crypt_words(const uint32_t rk[32], uint32_t x[16][4], size_t n)
{
    size_t i;

    if (n > 2) {
        crypt16(rk, x);
        return;
    }
    for (i = 0; i < n; i += 2) {
        crypt2(rk, x[i], x[i + 1]);
    }
}

static inline void
load_block(uint32_t x[4], const uint8_t *p)
{
    x[0] = load_be32(p);
    x[1] = load_be32(p + 4);
    x[2] = load_be32(p + 8);
    x[3] = load_be32(p + 12);
}

static inline void
store_block(uint8_t *p, const uint32_t x[4])
{
    store_be32(p, x[0]);
    store_be32(p + 4, x[1]);
    store_be32(p + 8, x[2]);
    store_be32(p + 12, x[3]);
}

static void
portable_ecb(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks)
{
    uint32_t x[16][4] = {{0}};

    while (nblocks > 0) {
        size_t n = nblocks < 16 ? nblocks : 16, i;

        for (i = 0; i < n; i++) {
            load_block(x[i], in + 16 * i);
        }
        crypt_words(rk, x, n);
        for (i = 0; i < n; i++) {
            store_block(out + 16 * i, x[i]);
        }
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    explicit_bzero(x, sizeof(x));
}

static void
portable_ctr(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks,
             uint8_t ctr[16], int inc32)
{
    uint32_t x[16][4] = {{0}};
    uint64_t hi = (uint64_t) load_be32(ctr) << 32 | load_be32(ctr + 4);
    uint64_t lo = (uint64_t) load_be32(ctr + 8) << 32 | load_be32(ctr + 12);

    while (nblocks > 0) {
        size_t n = nblocks < 16 ? nblocks : 16, i;
        int j;

        for (i = 0; i < n; i++) {
            x[i][0] = (uint32_t) (hi >> 32);
            x[i][1] = (uint32_t) hi;
            x[i][2] = (uint32_t) (lo >> 32);
            x[i][3] = (uint32_t) lo;
            if (inc32) {
                lo = (lo & 0xffffffff00000000ULL) | (uint32_t) (lo + 1);
            } else {
                lo++;
                hi += lo == 0;
            }
        }
        crypt_words(rk, x, n);
        for (i = 0; i < n; i++) {
            for (j = 0; j < 4; j++) {
                store_be32(out + 16 * i + 4 * j, load_be32(in + 16 * i + 4 * j) ^ x[i][j]);
            }
        }
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    store_be32(ctr, (uint32_t) (hi >> 32));
    store_be32(ctr + 4, (uint32_t) hi);
    store_be32(ctr + 8, (uint32_t) (lo >> 32));
    store_be32(ctr + 12, (uint32_t) lo);
    explicit_bzero(x, sizeof(x));
}

static void
portable_cbc_dec(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks,
                 uint8_t iv[16])
{
    uint32_t x[16][4] = {{0}}, c[17][4];
    size_t i;
    int j;

    load_block(c[16], iv);
    while (nblocks > 0) {
        size_t n = nblocks < 16 ? nblocks : 16;

        memcpy(c[0], c[16], 16); /* c[0] is the previous ciphertext block */
        for (i = 0; i < n; i++) {
            load_block(x[i], in + 16 * i);
            memcpy(c[i + 1], x[i], 16);
        }
        crypt_words(rk, x, n);
        for (i = 0; i < n; i++) {
            for (j = 0; j < 4; j++) {
                x[i][j] ^= c[i][j];
            }
            store_block(out + 16 * i, x[i]);
        }
        memcpy(c[16], c[n], 16);
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    store_block(iv, c[16]);
    explicit_bzero(x, sizeof(x));
}

static void
portable_cbc_enc(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks,
                 uint8_t iv[16])
{
    uint32_t v[4], spare[4] = {0};
    int j;

    load_block(v, iv);
    while (nblocks-- > 0) {
        for (j = 0; j < 4; j++) {
            v[j] ^= load_be32(in + 4 * j);
        }
        crypt2(rk, v, spare);
        store_block(out, v);
        in += 16;
        out += 16;
    }
    store_block(iv, v);
    explicit_bzero(spare, sizeof(spare));
}

const gm__sm4_impl gm__sm4_impl_portable = {
    "portable", portable_ecb, portable_ctr, portable_cbc_dec, portable_cbc_enc,
};

/* ---- dispatch ----------------------------------------------------------------------------- */

const gm__sm4_impl *
gm__sm4_impl_get(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    if (strcmp(name, "portable") == 0) {
        return &gm__sm4_impl_portable;
    }
#if defined(__x86_64__)
    if (strcmp(name, "aesni-avx2") == 0 && gm__sm4_x86_has(name)) {
        return &gm__sm4_impl_aesni_avx2;
    }
    if (strcmp(name, "gfni-avx512") == 0 && gm__sm4_x86_has(name)) {
        return &gm__sm4_impl_gfni_avx512;
    }
#endif
    return NULL;
}

const gm__sm4_impl *
gm__sm4_impl_best(void)
{
    static const char *const order[] = {"gfni-avx512", "aesni-avx2", "portable"};
    size_t i;

    for (i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        const gm__sm4_impl *impl = gm__sm4_impl_get(order[i]);

        if (impl != NULL) {
            return impl;
        }
    }
    return &gm__sm4_impl_portable;
}

bool
gm__sm4_impl_available(const char *name)
{
    return gm__sm4_impl_get(name) != NULL;
}

/* ---- GCM bulk ----------------------------------------------------------------------------- */

/* Chunks of 2 KiB: small enough that the ciphertext is still in L1 when GHASH reads it,
 * large enough that the per-call overhead of the two cores vanishes. */
#define GCM_CHUNK 128

void
gm__sm4_gcm_blocks(const gm__sm4_impl *impl, const uint32_t rk_enc[32], const gm__ghash_key *hk,
                   uint8_t *out, const uint8_t *in, size_t nblocks, uint8_t ctr[16], uint8_t Y[16],
                   int enc)
{
    while (nblocks > 0) {
        size_t n = nblocks < GCM_CHUNK ? nblocks : GCM_CHUNK;

        if (enc) {
            impl->ctr(rk_enc, out, in, n, ctr, 1);
            gm__ghash_update(hk, Y, out, n);
        } else {
            gm__ghash_update(hk, Y, in, n);
            impl->ctr(rk_enc, out, in, n, ctr, 1);
        }
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
}
