/* sm3_x86.c: x86-64 SIMD paths of SM3 (GB/T 32905-2016): one single-stream compression
 * function and two multi-buffer step functions.
 *
 * Purpose and technique.
 *  - "x86-avx-bmi2", single stream. The rounds run on general registers with BMI2 rorx
 *    (non-destructive rotates, no extra moves). The message expansion W[16..67] and
 *    W'[j] = W[j] ^ W[j+4] are computed by 128-bit AVX, four words per step, one step inside
 *    every group of four rounds, and stored to a stack buffer the rounds read from. Placing the
 *    vector work between the rounds matters: computed all at once before the rounds it stalls
 *    the front end (measured: 300 MB/s instead of 600). Four words at a time need one fix-up:
 *    W[j+3] depends on W[j] through rol(W[j], 15) inside P1; since P1 is linear over XOR, the
 *    fourth lane is computed with 0 for that term and then XORed with P1(rol(W[j], 15)).
 *    Bound: in 48 of the 64 rounds, E -> GG1 (2 ops) -> +H+W -> +SS1 -> P0 (3 ops) is a 7-cycle
 *    loop, so ~440 cycles per block (~610 MB/s at 4.2 GHz). Keeping the words in xmm lanes
 *    to use vpternlogd would shorten the loop on paper but is twice as slow on Zen 5, whose
 *    vector integer operations have 2-cycle latency (measured).
 *  - "avx2x8" and "avx512x16": multi-buffer steps that compress one block of 8 (16) independent
 *    messages, one message per 32-bit lane. The lanes' 64-byte blocks are loaded as whole
 *    vectors, byte-swapped with vpshufb and transposed (8x8 / 16x16 words) so that vector j
 *    holds word j of every lane; after that the rounds are the scalar rounds written with
 *    vector operations. AVX2 has no rotate (shift, shift, or); AVX-512 has vprold, and
 *    vpternlogd computes FF, GG, P0, P1 and the three-way XORs in one instruction each. The
 *    lane scheduler (padding, prefix, refill, stragglers) is portable and lives in sm3_impl.c
 *    (gm__sm3_mb_run).
 *
 * Invariants. Everything is inside #if defined(__x86_64__) and every function that uses SIMD
 * carries __attribute__((target(...))), so this file compiles without special flags; callers
 * check gm__sm3_x86_has_*() (cpuid through __builtin_cpu_supports, which also checks that the
 * OS saves the AVX/AVX-512 state) before calling. State words are in host order. Nothing here
 * keeps state between calls; no table is indexed by data.
 *
 * This file is written by hand because measured speed demands it (bench/bench_sm3_impl.c):
 * single stream ~1.15x OpenSSL's EVP_sm3, multi-buffer 2.5x to 6x the single stream.
 */
#include "sm3_impl.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

bool
gm__sm3_x86_has_avx_bmi2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx") && __builtin_cpu_supports("bmi2");
}

bool
gm__sm3_x86_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

bool
gm__sm3_x86_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2");
}

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

/* gcc's post-allocation scheduler clusters the independent vector work and costs about 12%
 * here (measured, gcc 12); the out-of-order core does better with the source order. */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_SCHED2 __attribute__((optimize("no-schedule-insns2")))
#else
#define NO_SCHED2
#endif

#define ROL32(x, n)  (((x) << (n)) | ((x) >> (32 - (n))))
#define P0(x)        ((x) ^ ROL32((x), 9) ^ ROL32((x), 17))
#define FF0(x, y, z) ((x) ^ (y) ^ (z))
#define GG0(x, y, z) ((x) ^ (y) ^ (z))
#define FF1(x, y, z) (((y) & (z)) | ((x) & ((y) | (z))))
#define GG1(x, y, z) ((((y) ^ (z)) & (x)) ^ (z))

/* ---- Single stream: AVX expansion, BMI2 rounds ------------------------------------------- */

#define XROL(x, n) _mm_or_si128(_mm_slli_epi32((x), (n)), _mm_srli_epi32((x), 32 - (n)))

/* W[j..j+3] from X0 = W[j-16..j-13], X1, X2, X3 = W[j-4..j-1]. */
#define XEXPAND(X0, X1, X2, X3, OUT)                                                               \
    do {                                                                                           \
        __m128i t_, u_;                                                                            \
        t_ = _mm_xor_si128(X0, _mm_alignr_epi8(X2, X1, 12));                                       \
        t_ = _mm_xor_si128(t_, XROL(_mm_srli_si128(X3, 4), 15));                                   \
        t_ = _mm_xor_si128(t_, _mm_xor_si128(XROL(t_, 15), XROL(t_, 23)));                         \
        t_ = _mm_xor_si128(t_, XROL(_mm_alignr_epi8(X1, X0, 12), 7));                              \
        t_ = _mm_xor_si128(t_, _mm_alignr_epi8(X3, X2, 8));                                        \
        u_ = _mm_slli_si128(t_, 12);                                                               \
        u_ = _mm_xor_si128(_mm_xor_si128(XROL(u_, 15), XROL(u_, 30)), XROL(u_, 6));                \
        OUT = _mm_xor_si128(t_, u_);                                                               \
    } while (0)

/* OPAQUE(x) makes the compiler materialise x here, which stops it from re-associating the
 * additions of a round into 3-operand LEAs (2-cycle latency on Zen) on the critical path. */
#define OPAQUE(x) __asm__("" : "+r"(x))

/* x += m with m read from memory by this very instruction: without it gcc takes the words
 * straight out of the vector registers with vpextrd (two uops each), which is slower than the
 * store-forwarded load. */
#define ADDM(x, m) __asm__("addl %1, %0" : "+r"(x) : "m"(m) : "cc")

/* Round j reading W[j] from w and W'[j] from wp. The critical path is
 * A -> rol12 -> +K -> +E -> rol7 -> (+x2 -> P0 -> E') and (^a12 -> +x1 -> A'); everything else
 * is summed beforehand and enters with a single addition. */
#define SROUND(A, B, C, D, E, F, G, H, FF, GG, j)                                                  \
    do {                                                                                           \
        uint32_t a12_ = ROL32(A, 12), t_ = a12_ + sm3_k[j], dw_ = D, hw_ = H;                      \
        uint32_t u_, ss1_, x1_, x2_, tt2_;                                                         \
        OPAQUE(t_);                                                                                \
        ADDM(dw_, wp[j]);                                                                          \
        ADDM(hw_, w[j]);                                                                           \
        u_ = t_ + E;                                                                               \
        ss1_ = ROL32(u_, 7);                                                                       \
        x1_ = FF(A, B, C) + dw_;                                                                   \
        x2_ = GG(E, F, G) + hw_;                                                                   \
        OPAQUE(x1_);                                                                               \
        OPAQUE(x2_);                                                                               \
        D = x1_ + (ss1_ ^ a12_);                                                                   \
        tt2_ = x2_ + ss1_;                                                                         \
        B = ROL32(B, 9);                                                                           \
        F = ROL32(F, 19);                                                                          \
        H = P0(tt2_);                                                                              \
    } while (0)

/* Rounds j..j+3. Between the first two, the vector units expand W[j+16..j+19] (when
 * j + 16 < 68) and W'[j+4..j+7]: in program order next to the rounds, so that they fill the
 * issue slots the latency-bound rounds leave free instead of stalling the front end. */
#define SR4(FF, GG, j)                                                                             \
    do {                                                                                           \
        SROUND(a, b, c, d, e, f, g, h, FF, GG, (j));                                               \
        if ((j) + 16 < 68) {                                                                       \
            XEXPAND(x0, x1, x2, x3, x4);                                                           \
            _mm_store_si128((__m128i *) (w + (j) + 16), x4);                                       \
            x0 = x1, x1 = x2, x2 = x3, x3 = x4;                                                    \
        }                                                                                          \
        if ((j) + 4 < 64) {                                                                        \
            _mm_store_si128((__m128i *) (wp + (j) + 4),                                            \
                            _mm_xor_si128(_mm_load_si128((const __m128i *) (w + (j) + 4)),         \
                                          _mm_load_si128((const __m128i *) (w + (j) + 8))));       \
        }                                                                                          \
        SROUND(d, a, b, c, h, e, f, g, FF, GG, (j) + 1);                                           \
        SROUND(c, d, a, b, g, h, e, f, FF, GG, (j) + 2);                                           \
        SROUND(b, c, d, a, f, g, h, e, FF, GG, (j) + 3);                                           \
    } while (0)

__attribute__((target("avx,bmi2"))) NO_SCHED2 void
gm__sm3_compress_avx_bmi2(uint32_t state[8], const uint8_t *p, size_t nblocks)
{
    uint32_t w[68] __attribute__((aligned(16)));
    uint32_t wp[64] __attribute__((aligned(16)));
    uint32_t a, b, c, d, e, f, g, h;
    const __m128i bswap = _mm_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    __m128i x0, x1, x2, x3, x4;

    while (nblocks-- > 0) {
        x0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (p + 0)), bswap);
        x1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (p + 16)), bswap);
        x2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (p + 32)), bswap);
        x3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (p + 48)), bswap);
        _mm_store_si128((__m128i *) (w + 0), x0);
        _mm_store_si128((__m128i *) (w + 4), x1);
        _mm_store_si128((__m128i *) (w + 8), x2);
        _mm_store_si128((__m128i *) (w + 12), x3);
        _mm_store_si128((__m128i *) (wp + 0), _mm_xor_si128(x0, x1));

        a = state[0], b = state[1], c = state[2], d = state[3];
        e = state[4], f = state[5], g = state[6], h = state[7];
        SR4(FF0, GG0, 0);
        SR4(FF0, GG0, 4);
        SR4(FF0, GG0, 8);
        SR4(FF0, GG0, 12);
        SR4(FF1, GG1, 16);
        SR4(FF1, GG1, 20);
        SR4(FF1, GG1, 24);
        SR4(FF1, GG1, 28);
        SR4(FF1, GG1, 32);
        SR4(FF1, GG1, 36);
        SR4(FF1, GG1, 40);
        SR4(FF1, GG1, 44);
        SR4(FF1, GG1, 48);
        SR4(FF1, GG1, 52);
        SR4(FF1, GG1, 56);
        SR4(FF1, GG1, 60);
        state[0] ^= a, state[1] ^= b, state[2] ^= c, state[3] ^= d;
        state[4] ^= e, state[5] ^= f, state[6] ^= g, state[7] ^= h;
        p += 64;
    }
}

/* ---- Multi-buffer rounds, written once over the V_* vector operations -------------------- */

/* W[j] for j >= 16 into the slot of W[j - 16] of the 16-vector window w. */
#define VEXPAND(j)                                                                                 \
    (w[(j) % 16] =                                                                                 \
         V_XOR3(V_P1(V_XOR3(w[(j) % 16], w[((j) + 7) % 16], V_ROL(w[((j) + 13) % 16], 15))),       \
                V_ROL(w[((j) + 3) % 16], 7), w[((j) + 10) % 16]))

/* As in the scalar rounds, everything off the critical path is summed first so that ss1 and
 * ss2 join with one addition each: vector operations have 2-cycle latency on Zen 5. */
#define VROUND(A, B, C, D, E, F, G, H, FF, GG, j)                                                  \
    do {                                                                                           \
        V_T a12_ = V_ROL(A, 12);                                                                   \
        V_T x1_ = V_ADD(V_ADD(D, V_XOR(w[(j) % 16], w[((j) + 4) % 16])), FF(A, B, C));             \
        V_T x2_ = V_ADD(V_ADD(H, w[(j) % 16]), GG(E, F, G));                                       \
        V_T ss1_ = V_ROL(V_ADD(E, V_ADD(a12_, V_SET1(sm3_k[j]))), 7);                              \
        D = V_ADD(x1_, V_XOR(ss1_, a12_));                                                         \
        x2_ = V_ADD(x2_, ss1_);                                                                    \
        B = V_ROL(B, 9);                                                                           \
        F = V_ROL(F, 19);                                                                          \
        H = V_P0(x2_);                                                                             \
    } while (0)

#define VR4(FF, GG, j, X)                                                                          \
    do {                                                                                           \
        if (X) {                                                                                   \
            VEXPAND((j) + 4);                                                                      \
        }                                                                                          \
        VROUND(a, b, c, d, e, f, g, h, FF, GG, (j));                                               \
        if (X) {                                                                                   \
            VEXPAND((j) + 5);                                                                      \
        }                                                                                          \
        VROUND(d, a, b, c, h, e, f, g, FF, GG, (j) + 1);                                           \
        if (X) {                                                                                   \
            VEXPAND((j) + 6);                                                                      \
        }                                                                                          \
        VROUND(c, d, a, b, g, h, e, f, FF, GG, (j) + 2);                                           \
        if (X) {                                                                                   \
            VEXPAND((j) + 7);                                                                      \
        }                                                                                          \
        VROUND(b, c, d, a, f, g, h, e, FF, GG, (j) + 3);                                           \
    } while (0)

#define VROUNDS_ALL()                                                                              \
    do {                                                                                           \
        VR4(V_FF0, V_GG0, 0, 0);                                                                   \
        VR4(V_FF0, V_GG0, 4, 0);                                                                   \
        VR4(V_FF0, V_GG0, 8, 0);                                                                   \
        VR4(V_FF0, V_GG0, 12, 1);                                                                  \
        VR4(V_FF1, V_GG1, 16, 1);                                                                  \
        VR4(V_FF1, V_GG1, 20, 1);                                                                  \
        VR4(V_FF1, V_GG1, 24, 1);                                                                  \
        VR4(V_FF1, V_GG1, 28, 1);                                                                  \
        VR4(V_FF1, V_GG1, 32, 1);                                                                  \
        VR4(V_FF1, V_GG1, 36, 1);                                                                  \
        VR4(V_FF1, V_GG1, 40, 1);                                                                  \
        VR4(V_FF1, V_GG1, 44, 1);                                                                  \
        VR4(V_FF1, V_GG1, 48, 1);                                                                  \
        VR4(V_FF1, V_GG1, 52, 1);                                                                  \
        VR4(V_FF1, V_GG1, 56, 1);                                                                  \
        VR4(V_FF1, V_GG1, 60, 1);                                                                  \
    } while (0)

/* ---- AVX2, 8 lanes ----------------------------------------------------------------------- */

#define V_T             __m256i
#define V_ADD(x, y)     _mm256_add_epi32((x), (y))
#define V_XOR(x, y)     _mm256_xor_si256((x), (y))
#define V_XOR3(x, y, z) V_XOR(V_XOR((x), (y)), (z))
#define V_SET1(k)       _mm256_set1_epi32((int) (k))
#define V_ROL(x, n)     _mm256_or_si256(_mm256_slli_epi32(x, n), _mm256_srli_epi32(x, 32 - (n)))
#define V_P0(x)         V_XOR3((x), V_ROL((x), 9), V_ROL((x), 17))
#define V_P1(x)         V_XOR3((x), V_ROL((x), 15), V_ROL((x), 23))
#define V_FF0(x, y, z)  V_XOR3((x), (y), (z))
#define V_GG0(x, y, z)  V_XOR3((x), (y), (z))
#define V_FF1(x, y, z)                                                                             \
    _mm256_or_si256(_mm256_and_si256((y), (z)), _mm256_and_si256((x), _mm256_or_si256((y), (z))))
#define V_GG1(x, y, z) V_XOR(_mm256_and_si256(V_XOR((y), (z)), (x)), (z))

/* Words 0..7 (half 0) or 8..15 (half 1) of the 8 lanes' blocks, transposed into w[8 * half..]. */
#define AVX2_LOAD_T8(half)                                                                         \
    do {                                                                                           \
        __m256i r_[8], t_[8], u_[8];                                                               \
        int i_;                                                                                    \
        for (i_ = 0; i_ < 8; i_++) {                                                               \
            r_[i_] = _mm256_shuffle_epi8(                                                          \
                _mm256_loadu_si256((const __m256i *) (blocks[i_] + 32 * (half))), bswap);          \
        }                                                                                          \
        for (i_ = 0; i_ < 8; i_ += 2) {                                                            \
            t_[i_] = _mm256_unpacklo_epi32(r_[i_], r_[i_ + 1]);                                    \
            t_[i_ + 1] = _mm256_unpackhi_epi32(r_[i_], r_[i_ + 1]);                                \
        }                                                                                          \
        for (i_ = 0; i_ < 8; i_ += 4) {                                                            \
            u_[i_] = _mm256_unpacklo_epi64(t_[i_], t_[i_ + 2]);                                    \
            u_[i_ + 1] = _mm256_unpackhi_epi64(t_[i_], t_[i_ + 2]);                                \
            u_[i_ + 2] = _mm256_unpacklo_epi64(t_[i_ + 1], t_[i_ + 3]);                            \
            u_[i_ + 3] = _mm256_unpackhi_epi64(t_[i_ + 1], t_[i_ + 3]);                            \
        }                                                                                          \
        for (i_ = 0; i_ < 4; i_++) {                                                               \
            w[8 * (half) + i_] = _mm256_permute2x128_si256(u_[i_], u_[i_ + 4], 0x20);              \
            w[8 * (half) + i_ + 4] = _mm256_permute2x128_si256(u_[i_], u_[i_ + 4], 0x31);          \
        }                                                                                          \
    } while (0)

__attribute__((target("avx2"))) static void
step_avx2x8(uint32_t *st, const uint8_t *const *blocks)
{
    const __m256i bswap = _mm256_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3,
                                           2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12);
    __m256i w[16], a, b, c, d, e, f, g, h;

    AVX2_LOAD_T8(0);
    AVX2_LOAD_T8(1);
    a = _mm256_loadu_si256((const __m256i *) (st + 0));
    b = _mm256_loadu_si256((const __m256i *) (st + 8));
    c = _mm256_loadu_si256((const __m256i *) (st + 16));
    d = _mm256_loadu_si256((const __m256i *) (st + 24));
    e = _mm256_loadu_si256((const __m256i *) (st + 32));
    f = _mm256_loadu_si256((const __m256i *) (st + 40));
    g = _mm256_loadu_si256((const __m256i *) (st + 48));
    h = _mm256_loadu_si256((const __m256i *) (st + 56));
    VROUNDS_ALL();
    _mm256_storeu_si256((__m256i *) (st + 0), V_XOR(a, _mm256_loadu_si256((__m256i *) (st + 0))));
    _mm256_storeu_si256((__m256i *) (st + 8), V_XOR(b, _mm256_loadu_si256((__m256i *) (st + 8))));
    _mm256_storeu_si256((__m256i *) (st + 16), V_XOR(c, _mm256_loadu_si256((__m256i *) (st + 16))));
    _mm256_storeu_si256((__m256i *) (st + 24), V_XOR(d, _mm256_loadu_si256((__m256i *) (st + 24))));
    _mm256_storeu_si256((__m256i *) (st + 32), V_XOR(e, _mm256_loadu_si256((__m256i *) (st + 32))));
    _mm256_storeu_si256((__m256i *) (st + 40), V_XOR(f, _mm256_loadu_si256((__m256i *) (st + 40))));
    _mm256_storeu_si256((__m256i *) (st + 48), V_XOR(g, _mm256_loadu_si256((__m256i *) (st + 48))));
    _mm256_storeu_si256((__m256i *) (st + 56), V_XOR(h, _mm256_loadu_si256((__m256i *) (st + 56))));
}

/* ---- AVX-512, 16 lanes ------------------------------------------------------------------- */

#undef V_T
#undef V_ADD
#undef V_XOR
#undef V_XOR3
#undef V_SET1
#undef V_ROL
#undef V_P0
#undef V_P1
#undef V_FF0
#undef V_GG0
#undef V_FF1
#undef V_GG1
#define V_T             __m512i
#define V_ADD(x, y)     _mm512_add_epi32((x), (y))
#define V_XOR(x, y)     _mm512_xor_si512((x), (y))
#define V_XOR3(x, y, z) _mm512_ternarylogic_epi32((x), (y), (z), 0x96)
#define V_SET1(k)       _mm512_set1_epi32((int) (k))
#define V_ROL(x, n)     _mm512_rol_epi32((x), (n))
#define V_P0(x)         V_XOR3((x), V_ROL((x), 9), V_ROL((x), 17))
#define V_P1(x)         V_XOR3((x), V_ROL((x), 15), V_ROL((x), 23))
#define V_FF0(x, y, z)  V_XOR3((x), (y), (z))
#define V_GG0(x, y, z)  V_XOR3((x), (y), (z))
#define V_FF1(x, y, z)  _mm512_ternarylogic_epi32((x), (y), (z), 0xe8)
#define V_GG1(x, y, z)  _mm512_ternarylogic_epi32((x), (y), (z), 0xca)

__attribute__((target("avx512f,avx512vl,avx512bw,avx2"))) static void
step_avx512x16(uint32_t *st, const uint8_t *const *blocks)
{
    const __m512i bswap =
        _mm512_broadcast_i32x4(_mm_setr_epi8(3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12));
    __m512i w[16], r[16], t[16], a, b, c, d, e, f, g, h;
    int i, m;

    for (i = 0; i < 16; i++) {
        r[i] = _mm512_shuffle_epi8(_mm512_loadu_si512(blocks[i]), bswap);
    }
    /* 16x16 transpose. After the two unpack stages, t[4 * g + m] holds in its 128-bit chunk k
     * the words 4k + m of lanes 4g..4g+3. */
    for (i = 0; i < 16; i += 2) {
        w[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        w[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (i = 0; i < 16; i += 4) {
        t[i] = _mm512_unpacklo_epi64(w[i], w[i + 2]);
        t[i + 1] = _mm512_unpackhi_epi64(w[i], w[i + 2]);
        t[i + 2] = _mm512_unpacklo_epi64(w[i + 1], w[i + 3]);
        t[i + 3] = _mm512_unpackhi_epi64(w[i + 1], w[i + 3]);
    }
    for (m = 0; m < 4; m++) {
        __m512i p = _mm512_shuffle_i32x4(t[m], t[4 + m], _MM_SHUFFLE(2, 0, 2, 0));
        __m512i q = _mm512_shuffle_i32x4(t[m], t[4 + m], _MM_SHUFFLE(3, 1, 3, 1));
        __m512i u = _mm512_shuffle_i32x4(t[8 + m], t[12 + m], _MM_SHUFFLE(2, 0, 2, 0));
        __m512i v = _mm512_shuffle_i32x4(t[8 + m], t[12 + m], _MM_SHUFFLE(3, 1, 3, 1));

        w[m] = _mm512_shuffle_i32x4(p, u, _MM_SHUFFLE(2, 0, 2, 0));
        w[8 + m] = _mm512_shuffle_i32x4(p, u, _MM_SHUFFLE(3, 1, 3, 1));
        w[4 + m] = _mm512_shuffle_i32x4(q, v, _MM_SHUFFLE(2, 0, 2, 0));
        w[12 + m] = _mm512_shuffle_i32x4(q, v, _MM_SHUFFLE(3, 1, 3, 1));
    }
    a = _mm512_loadu_si512(st + 0);
    b = _mm512_loadu_si512(st + 16);
    c = _mm512_loadu_si512(st + 32);
    d = _mm512_loadu_si512(st + 48);
    e = _mm512_loadu_si512(st + 64);
    f = _mm512_loadu_si512(st + 80);
    g = _mm512_loadu_si512(st + 96);
    h = _mm512_loadu_si512(st + 112);
    VROUNDS_ALL();
    _mm512_storeu_si512(st + 0, V_XOR(a, _mm512_loadu_si512(st + 0)));
    _mm512_storeu_si512(st + 16, V_XOR(b, _mm512_loadu_si512(st + 16)));
    _mm512_storeu_si512(st + 32, V_XOR(c, _mm512_loadu_si512(st + 32)));
    _mm512_storeu_si512(st + 48, V_XOR(d, _mm512_loadu_si512(st + 48)));
    _mm512_storeu_si512(st + 64, V_XOR(e, _mm512_loadu_si512(st + 64)));
    _mm512_storeu_si512(st + 80, V_XOR(f, _mm512_loadu_si512(st + 80)));
    _mm512_storeu_si512(st + 96, V_XOR(g, _mm512_loadu_si512(st + 96)));
    _mm512_storeu_si512(st + 112, V_XOR(h, _mm512_loadu_si512(st + 112)));
}

/* ---- Multi-buffer entry points ----------------------------------------------------------- */

/* Below these many busy lanes (and no message waiting), a SIMD step costs more than finishing
 * the busy messages one by one with the single-stream path. Measured on Zen 5: one avx2x8 step
 * costs about 1,450 cycles, one avx512x16 step about 1,110 and one single-stream block about
 * 440 (x86-avx-bmi2). */
#define AVX2X8_MIN_ACTIVE    4
#define AVX512X16_MIN_ACTIVE 3

void
gm__sm3_hash_many_avx2x8(uint8_t *out, const uint8_t *const *msgs, const size_t *lens, size_t num,
                         const uint8_t *prefix, size_t prefix_len)
{
    gm__sm3_mb_run(out, msgs, lens, num, prefix, prefix_len, 8, step_avx2x8, AVX2X8_MIN_ACTIVE,
                   gm__sm3_compress_avx_bmi2);
}

void
gm__sm3_hash_many_avx512x16(uint8_t *out, const uint8_t *const *msgs, const size_t *lens,
                            size_t num, const uint8_t *prefix, size_t prefix_len)
{
    gm__sm3_mb_run(out, msgs, lens, num, prefix, prefix_len, 16, step_avx512x16,
                   AVX512X16_MIN_ACTIVE, gm__sm3_compress_avx_bmi2);
}

#endif /* __x86_64__ */
