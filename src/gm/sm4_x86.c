/* sm4_x86.c: SM4 on x86-64 SIMD, the "aesni-avx2" and "gfni-avx512" paths.
 *
 * Purpose. ECB, CTR (128-bit or inc32 counter), CBC-decrypt and CBC-encrypt for many blocks at
 * once, bit-identical to the portable path of sm4_impl.c. Everything here is inside
 * #if defined(__x86_64__) and uses intrinsics in functions marked __attribute__((target)), so
 * the file builds with no special flags; gm__sm4_x86_has() says (cpuid) whether a path may run.
 *
 * Technique. SM4's S-box is affine-equivalent to inversion in GF(2^8):
 *     S(x) = Post(Inv_aes(Pre(x))),
 * where Inv_aes is inversion modulo the AES polynomial x^8+x^4+x^3+x+1, Pre = Phi o A1 (SM4's
 * input affine map A x + 0xD3 followed by the field isomorphism Phi from SM4's field,
 * polynomial 0x1F5, to AES's) and Post = A2 o Phi^-1 (the inverse isomorphism, then SM4's
 * output affine map). The constants below were derived by a throw-away script (the root of
 * SM4's field polynomial in AES's field gives Phi) and checked on all 256 inputs.
 *   - GFNI: GF2P8AFFINEQB applies Pre, GF2P8AFFINEINVQB applies Inv_aes then Post: two
 *     instructions for 64 S-boxes.
 *   - AES-NI: AESENCLAST with a zero round key computes ShiftRows(Aff_aes(Inv_aes(v))).
 *     Pre is applied before it and Post o Aff_aes^-1 (constant 0x63 included) after it, each as
 *     two 16-entry nibble tables with VPSHUFB; ShiftRows is undone by folding its inverse into
 *     the byte shuffles that the linear layer needs anyway (rotations by 8, 16, 24).
 * The linear layer L(B) = B ^ B<<<2 ^ B<<<10 ^ B<<<18 ^ B<<<24 is written as
 * B ^ B<<<24 ^ (B ^ B<<<8 ^ B<<<16)<<<2 for AVX2 (byte rotations are shuffles), and with VPROLD
 * and three-way XORs (VPTERNLOGD) for AVX-512.
 *
 * Layout. Blocks are loaded one per 128-bit lane (a "row" is 2 blocks in a ymm, 4 in a zmm),
 * byte-swapped to big-endian words, and four rows are transposed 4x4 inside each lane, so
 * that vector j holds word j of every block of a "set"
 * (8 blocks in a ymm, 16 in a zmm); the 32 rounds then run on whole vectors, and the final
 * transpose brings the blocks back. The dependency chain of a round is long (about 20
 * cycles through AESENCLAST and the shuffles), so several independent sets run interleaved:
 * the AVX2 path runs 4 sets (32 blocks) per pass (measured on Zen 5: 2 sets 650 MB/s, 3 sets
 * 900, 4 sets 1,150), the AVX-512 path 1, 2 or 4 sets (16, 32 or 64 blocks) by size. CTR
 * counters are built directly in the transposed form (word 3 = counter + lane index), so
 * counter blocks cost nothing (only a 128-bit counter crossing a 2^32 boundary inside a batch
 * takes a slow path through memory). Partial batches use masked loads and stores.
 *
 * Invariants. No table is indexed by secret data (the nibble tables are read by VPSHUFB, in
 * registers). All loads of a batch happen before its stores, so in place works, including
 * CBC-decrypt, which rereads the previous ciphertext blocks. The only branches are on block
 * counts and the public counter value. CBC-encrypt is serial: one block with its words
 * broadcast to all four columns, which makes ShiftRows a no-op.
 *
 * Written by hand because measured speed demands it: these paths are 5-25 times faster than
 * OpenSSL 3.0's table-based SM4, and compilers do not vectorise a block cipher on their own.
 */
#include "sm4_impl.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <pthread.h>
#include <string.h>

#define T_AVX2     __attribute__((target("avx2,aes")))
#define T_AVX2_INL __attribute__((target("avx2,aes"), always_inline)) static inline
#define T_512      __attribute__((target("avx512f,avx512bw,avx512vl,gfni")))
#define T_512_INL                                                                                  \
    __attribute__((target("avx512f,avx512bw,avx512vl,gfni"), always_inline)) static inline

/* ---- CPU features ------------------------------------------------------------------------- */

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static bool has_aesni_avx2, has_gfni_avx512;

static void
cpu_init(void)
{
    __builtin_cpu_init();
    has_aesni_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("aes");
    has_gfni_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("gfni");
}

bool
gm__sm4_x86_has(const char *name)
{
    pthread_once(&cpu_once, cpu_init);
    if (strcmp(name, "aesni-avx2") == 0) {
        return has_aesni_avx2;
    }
    if (strcmp(name, "gfni-avx512") == 0) {
        return has_gfni_avx512;
    }
    return false;
}

/* ---- shared scalar helpers ---------------------------------------------------------------- */

static inline uint64_t
load_be64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

static inline void
store_be64(uint8_t *p, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}

/* Counter arithmetic on (hi, lo): add n with inc32 or 128-bit semantics. */
static inline void
ctr_add(uint64_t *hi, uint64_t *lo, uint64_t n, int inc32)
{
    if (inc32) {
        *lo = (*lo & 0xffffffff00000000ULL) | (uint32_t) (*lo + n);
    } else {
        uint64_t old = *lo;

        *lo += n;
        *hi += *lo < old;
    }
}

/* Slow CTR batch, used when a 128-bit counter crosses a 2^32 boundary inside a batch (once in
 * 4 billion blocks): counter blocks in memory, the path's own ECB, XOR. */
static void
ctr_slow(void (*ecb)(const uint32_t *, uint8_t *, const uint8_t *, size_t), const uint32_t *rk,
         uint8_t *out, const uint8_t *in, size_t n, uint64_t *hi, uint64_t *lo)
{
    uint8_t ks[64 * 16];
    size_t i, j;

    for (i = 0; i < n; i++) {
        store_be64(ks + 16 * i, *hi);
        store_be64(ks + 16 * i + 8, *lo);
        ctr_add(hi, lo, 1, 0);
    }
    ecb(rk, ks, ks, n);
    for (i = 0; i < 16 * n; i++) {
        j = i; /* out may equal in: read before write, byte by byte */
        out[j] = in[j] ^ ks[j];
    }
    explicit_bzero(ks, sizeof(ks));
}

/* ---- constants ---------------------------------------------------------------------------- */

/* Nibble tables: Pre(x) = PRE_LO[x & 15] ^ PRE_HI[x >> 4]; after AESENCLAST,
 * Post(Aff_aes^-1(z ^ 0x63)) = POST_LO[z & 15] ^ POST_HI[z >> 4]. */
static const uint8_t pre_lo[16] = {0x3e, 0xb2, 0x0e, 0x82, 0xbb, 0x37, 0x8b, 0x07,
                                   0xa1, 0x2d, 0x91, 0x1d, 0x24, 0xa8, 0x14, 0x98};
static const uint8_t pre_hi[16] = {0x00, 0xdc, 0x2e, 0xf2, 0xc5, 0x19, 0xeb, 0x37,
                                   0x08, 0xd4, 0x26, 0xfa, 0xcd, 0x11, 0xe3, 0x3f};
static const uint8_t post_lo[16] = {0x6c, 0xd4, 0xa6, 0x1e, 0x52, 0xea, 0x98, 0x20,
                                    0x0b, 0xb3, 0xc1, 0x79, 0x35, 0x8d, 0xff, 0x47};
static const uint8_t post_hi[16] = {0x00, 0xe0, 0x50, 0xb0, 0x9d, 0x7d, 0xcd, 0x2d,
                                    0xc0, 0x20, 0x90, 0x70, 0x5d, 0xbd, 0x0d, 0xed};
/* VPSHUFB masks: inverse ShiftRows, alone and combined with a left rotation of each 32-bit
 * word by 8, 16 and 24 bits. */
static const uint8_t isr_r0[16] = {0, 13, 10, 7, 4, 1, 14, 11, 8, 5, 2, 15, 12, 9, 6, 3};
static const uint8_t isr_r8[16] = {7, 0, 13, 10, 11, 4, 1, 14, 15, 8, 5, 2, 3, 12, 9, 6};
static const uint8_t isr_r16[16] = {10, 7, 0, 13, 14, 11, 4, 1, 2, 15, 8, 5, 6, 3, 12, 9};
static const uint8_t isr_r24[16] = {13, 10, 7, 0, 1, 14, 11, 4, 5, 2, 15, 8, 9, 6, 3, 12};
static const uint8_t bswap32[16] = {3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12};

/* GF2P8AFFINEQB matrices (row for output bit i in byte 7 - i) and constants. */
#define GFNI_PRE    0x4c287db91a22505dULL
#define GFNI_PRE_C  0x3e
#define GFNI_POST   0xf3ab34a974a6b589ULL
#define GFNI_POST_C 0xd3

/* ================================ AES-NI + AVX2 ============================================ */

#define BCAST128(p) _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *) (p)))

typedef struct {
    __m256i m0f, pre_lo, pre_hi, post_lo, post_hi, r0, r8, r16, r24, bswap;
} avx2_consts;

T_AVX2_INL void
avx2_consts_load(avx2_consts *c)
{
    c->m0f = _mm256_set1_epi8(0x0f);
    c->pre_lo = BCAST128(pre_lo);
    c->pre_hi = BCAST128(pre_hi);
    c->post_lo = BCAST128(post_lo);
    c->post_hi = BCAST128(post_hi);
    c->r0 = BCAST128(isr_r0);
    c->r8 = BCAST128(isr_r8);
    c->r16 = BCAST128(isr_r16);
    c->r24 = BCAST128(isr_r24);
    c->bswap = BCAST128(bswap32);
}

/* 4x4 transpose of 32-bit words inside each 128-bit lane; an involution. */
T_AVX2_INL void
avx2_transpose(__m256i *a, __m256i *b, __m256i *c, __m256i *d)
{
    __m256i t0 = _mm256_unpacklo_epi32(*a, *b), t1 = _mm256_unpackhi_epi32(*a, *b);
    __m256i t2 = _mm256_unpacklo_epi32(*c, *d), t3 = _mm256_unpackhi_epi32(*c, *d);

    *a = _mm256_unpacklo_epi64(t0, t2);
    *b = _mm256_unpackhi_epi64(t0, t2);
    *c = _mm256_unpacklo_epi64(t1, t3);
    *d = _mm256_unpackhi_epi64(t1, t3);
}

/* One round on one set: x0 ^= L(S(x1 ^ x2 ^ x3 ^ k)). */
T_AVX2_INL __m256i
avx2_round(const avx2_consts *c, __m256i x0, __m256i x1, __m256i x2, __m256i x3, __m256i k)
{
    __m256i x = _mm256_xor_si256(_mm256_xor_si256(x1, x2), _mm256_xor_si256(x3, k));
    __m256i lo = _mm256_and_si256(x, c->m0f);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), c->m0f);
    __m128i zero = _mm_setzero_si128();
    __m128i h0, h1;
    __m256i y, a, b;

    x = _mm256_xor_si256(_mm256_shuffle_epi8(c->pre_lo, lo), _mm256_shuffle_epi8(c->pre_hi, hi));
    h0 = _mm_aesenclast_si128(_mm256_castsi256_si128(x), zero);
    h1 = _mm_aesenclast_si128(_mm256_extracti128_si256(x, 1), zero);
    y = _mm256_inserti128_si256(_mm256_castsi128_si256(h0), h1, 1);
    lo = _mm256_and_si256(y, c->m0f);
    hi = _mm256_and_si256(_mm256_srli_epi16(y, 4), c->m0f);
    y = _mm256_xor_si256(_mm256_shuffle_epi8(c->post_lo, lo), _mm256_shuffle_epi8(c->post_hi, hi));
    a = _mm256_shuffle_epi8(y, c->r0);
    b = _mm256_xor_si256(
        a, _mm256_xor_si256(_mm256_shuffle_epi8(y, c->r8), _mm256_shuffle_epi8(y, c->r16)));
    b = _mm256_or_si256(_mm256_slli_epi32(b, 2), _mm256_srli_epi32(b, 30));
    return _mm256_xor_si256(_mm256_xor_si256(x0, a),
                            _mm256_xor_si256(_mm256_shuffle_epi8(y, c->r24), b));
}

/* Sets per pass: vector j of set t is s[4 * t + j]; AVX2_B blocks, AVX2_R rows of 2 blocks. */
#define AVX2_SETS 4 /* avx2_rounds is written out for 4 */
#define AVX2_B    (8 * AVX2_SETS)
#define AVX2_R    (4 * AVX2_SETS)

/* 32 rounds on the sets in transposed form; on return each set's vectors are in output order
 * (X35, X34, X33, X32). */
T_AVX2_INL void
avx2_rounds(const avx2_consts *c, const uint32_t *rk, __m256i *s)
{
    int i, t;

#define AVX2_ROUND_ALL(A, B, C, D, key)                                                            \
    do {                                                                                           \
        __m256i k_ = _mm256_set1_epi32((int) (key));                                               \
        s[A] = avx2_round(c, s[A], s[B], s[C], s[D], k_);                                          \
        s[4 + A] = avx2_round(c, s[4 + A], s[4 + B], s[4 + C], s[4 + D], k_);                      \
        s[8 + A] = avx2_round(c, s[8 + A], s[8 + B], s[8 + C], s[8 + D], k_);                      \
        s[12 + A] = avx2_round(c, s[12 + A], s[12 + B], s[12 + C], s[12 + D], k_);                 \
    } while (0)

    for (i = 0; i < 32; i += 4) {
        AVX2_ROUND_ALL(0, 1, 2, 3, rk[i]);
        AVX2_ROUND_ALL(1, 2, 3, 0, rk[i + 1]);
        AVX2_ROUND_ALL(2, 3, 0, 1, rk[i + 2]);
        AVX2_ROUND_ALL(3, 0, 1, 2, rk[i + 3]);
    }
#undef AVX2_ROUND_ALL
    _Pragma("GCC unroll 16") for (t = 0; t < AVX2_SETS; t++)
    {
        __m256i *x = s + 4 * t, u;

        u = x[0];
        x[0] = x[3];
        x[3] = u;
        u = x[1];
        x[1] = x[2];
        x[2] = u;
    }
}

/* Dword mask (for VPMASKMOVD) of the two blocks 2r, 2r+1 of a row, given n valid blocks. */
T_AVX2_INL __m256i
avx2_rowmask(size_t r, size_t n)
{
    __m256i idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    __m256i lim = _mm256_set1_epi32((int) (n > 2 * r ? (n - 2 * r > 2 ? 2 : n - 2 * r) : 0));

    return _mm256_cmpgt_epi32(lim, idx);
}

T_AVX2_INL __m256i
avx2_loadrow(const uint8_t *p, size_t r, size_t n)
{
    if (n >= AVX2_B) {
        return _mm256_loadu_si256((const __m256i *) p);
    }
    return _mm256_maskload_epi32((const int *) p, avx2_rowmask(r, n));
}

T_AVX2_INL void
avx2_storerow(uint8_t *p, __m256i v, size_t r, size_t n)
{
    if (n >= AVX2_B) {
        _mm256_storeu_si256((__m256i *) p, v);
    } else {
        _mm256_maskstore_epi32((int *) p, avx2_rowmask(r, n), v);
    }
}

/* Byte-swap and transpose rows (2 blocks each) into sets, and back. */
T_AVX2_INL void
avx2_to_sets(const avx2_consts *c, __m256i *s)
{
    int t;

    _Pragma("GCC unroll 16") for (t = 0; t < AVX2_R; t++)
    {
        s[t] = _mm256_shuffle_epi8(s[t], c->bswap);
    }
    _Pragma("GCC unroll 16") for (t = 0; t < AVX2_SETS; t++)
    {
        avx2_transpose(&s[4 * t], &s[4 * t + 1], &s[4 * t + 2], &s[4 * t + 3]);
    }
}

T_AVX2_INL void
avx2_to_rows(const avx2_consts *c, __m256i *s)
{
    int t;

    _Pragma("GCC unroll 16") for (t = 0; t < AVX2_SETS; t++)
    {
        avx2_transpose(&s[4 * t], &s[4 * t + 1], &s[4 * t + 2], &s[4 * t + 3]);
    }
    _Pragma("GCC unroll 16") for (t = 0; t < AVX2_R; t++)
    {
        s[t] = _mm256_shuffle_epi8(s[t], c->bswap);
    }
}

T_AVX2 static void
avx2_ecb(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks)
{
    avx2_consts c;
    __m256i s[AVX2_R];
    int r;

    avx2_consts_load(&c);
    while (nblocks > 0) {
        size_t n = nblocks < AVX2_B ? nblocks : AVX2_B;

        _Pragma("GCC unroll 16") for (r = 0; r < AVX2_R; r++)
        {
            s[r] = avx2_loadrow(in + 32 * r, (size_t) r, n);
        }
        avx2_to_sets(&c, s);
        avx2_rounds(&c, rk, s);
        avx2_to_rows(&c, s);
        _Pragma("GCC unroll 16") for (r = 0; r < AVX2_R; r++)
        {
            avx2_storerow(out + 32 * r, s[r], (size_t) r, n);
        }
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
}

T_AVX2 static void
avx2_ctr(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks, uint8_t ctr[16],
         int inc32)
{
    avx2_consts c;
    __m256i s[AVX2_R];
    /* After the load transpose, dword d of a set is block (d < 4 ? 2d : 2d - 7). */
    const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    uint64_t hi = load_be64(ctr), lo = load_be64(ctr + 8);

    avx2_consts_load(&c);
    while (nblocks > 0) {
        size_t n = nblocks < AVX2_B ? nblocks : AVX2_B;
        int r;

        if (!inc32 && (uint32_t) lo > 0xffffffffU - (AVX2_B - 1)) {
            n = nblocks < 16 ? nblocks : 16;
            ctr_slow(avx2_ecb, rk, out, in, n, &hi, &lo);
        } else {
            __m256i w0 = _mm256_set1_epi32((int) (uint32_t) (hi >> 32));
            __m256i w1 = _mm256_set1_epi32((int) (uint32_t) hi);
            __m256i w2 = _mm256_set1_epi32((int) (uint32_t) (lo >> 32));
            __m256i w3 = _mm256_add_epi32(_mm256_set1_epi32((int) (uint32_t) lo), idx);

            _Pragma("GCC unroll 16") for (r = 0; r < AVX2_SETS; r++)
            {
                s[4 * r] = w0;
                s[4 * r + 1] = w1;
                s[4 * r + 2] = w2;
                s[4 * r + 3] = _mm256_add_epi32(w3, _mm256_set1_epi32(8 * r));
            }
            avx2_rounds(&c, rk, s);
            avx2_to_rows(&c, s);
            _Pragma("GCC unroll 16") for (r = 0; r < AVX2_R; r++)
            {
                __m256i v = avx2_loadrow(in + 32 * r, (size_t) r, n);

                avx2_storerow(out + 32 * r, _mm256_xor_si256(s[r], v), (size_t) r, n);
            }
            ctr_add(&hi, &lo, n, inc32);
        }
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    store_be64(ctr, hi);
    store_be64(ctr + 8, lo);
}

T_AVX2 static void
avx2_cbc_dec(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks, uint8_t iv[16])
{
    avx2_consts c;
    __m256i s[AVX2_R], p[AVX2_R];
    __m128i v = _mm_loadu_si128((const __m128i *) iv);

    avx2_consts_load(&c);
    while (nblocks > 0) {
        size_t n = nblocks < AVX2_B ? nblocks : AVX2_B;
        __m128i last = _mm_loadu_si128((const __m128i *) (in + 16 * (n - 1)));
        int r;

        /* The previous ciphertext of each row, read before anything is stored. */
        p[0] = _mm256_inserti128_si256(_mm256_castsi128_si256(v),
                                       _mm_loadu_si128((const __m128i *) in), 1);
        _Pragma("GCC unroll 16") for (r = 1; r < AVX2_R; r++)
        {
            p[r] = avx2_loadrow(in + 32 * r - 16, (size_t) r, n);
        }
        _Pragma("GCC unroll 16") for (r = 0; r < AVX2_R; r++)
        {
            s[r] = avx2_loadrow(in + 32 * r, (size_t) r, n);
        }
        avx2_to_sets(&c, s);
        avx2_rounds(&c, rk, s);
        avx2_to_rows(&c, s);
        _Pragma("GCC unroll 16") for (r = 0; r < AVX2_R; r++)
        {
            avx2_storerow(out + 32 * r, _mm256_xor_si256(s[r], p[r]), (size_t) r, n);
        }
        v = last;
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    _mm_storeu_si128((__m128i *) iv, v);
}

/* Single block, words broadcast to all four columns (ShiftRows is then the identity). */
T_AVX2_INL __m128i
sse_round1(__m128i x0, __m128i x1, __m128i x2, __m128i x3, __m128i k, __m128i m0f, __m128i plo,
           __m128i phi, __m128i qlo, __m128i qhi, __m128i r8, __m128i r16, __m128i r24)
{
    __m128i x = _mm_xor_si128(_mm_xor_si128(x1, x2), k);
    __m128i y, b;

    x = _mm_xor_si128(x, x3); /* x3 is the newest word: last, for a short dependency chain */

    x = _mm_xor_si128(_mm_shuffle_epi8(plo, _mm_and_si128(x, m0f)),
                      _mm_shuffle_epi8(phi, _mm_and_si128(_mm_srli_epi16(x, 4), m0f)));
    y = _mm_aesenclast_si128(x, _mm_setzero_si128());
    y = _mm_xor_si128(_mm_shuffle_epi8(qlo, _mm_and_si128(y, m0f)),
                      _mm_shuffle_epi8(qhi, _mm_and_si128(_mm_srli_epi16(y, 4), m0f)));
    b = _mm_xor_si128(y, _mm_xor_si128(_mm_shuffle_epi8(y, r8), _mm_shuffle_epi8(y, r16)));
    b = _mm_or_si128(_mm_slli_epi32(b, 2), _mm_srli_epi32(b, 30));
    return _mm_xor_si128(_mm_xor_si128(x0, y), _mm_xor_si128(_mm_shuffle_epi8(y, r24), b));
}

T_AVX2 static void
avx2_cbc_enc(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks, uint8_t iv[16])
{
    /* Plain rotations (no ShiftRows to undo): rotate each word left by 8, 16, 24. */
    const __m128i r8 = _mm_setr_epi8(3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14);
    const __m128i r16 = _mm_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const __m128i r24 = _mm_setr_epi8(1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12);
    const __m128i m0f = _mm_set1_epi8(0x0f);
    const __m128i bs = _mm_loadu_si128((const __m128i *) bswap32);
    const __m128i plo = _mm_loadu_si128((const __m128i *) pre_lo);
    const __m128i phi = _mm_loadu_si128((const __m128i *) pre_hi);
    const __m128i qlo = _mm_loadu_si128((const __m128i *) post_lo);
    const __m128i qhi = _mm_loadu_si128((const __m128i *) post_hi);
    __m128i v = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) iv), bs);

    while (nblocks-- > 0) {
        __m128i x = _mm_xor_si128(v, _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) in), bs));
        __m128i x0 = _mm_shuffle_epi32(x, 0x00), x1 = _mm_shuffle_epi32(x, 0x55);
        __m128i x2 = _mm_shuffle_epi32(x, 0xaa), x3 = _mm_shuffle_epi32(x, 0xff);
        int i;

        for (i = 0; i < 32; i += 4) {
            x0 = sse_round1(x0, x1, x2, x3, _mm_set1_epi32((int) rk[i]), m0f, plo, phi, qlo, qhi,
                            r8, r16, r24);
            x1 = sse_round1(x1, x2, x3, x0, _mm_set1_epi32((int) rk[i + 1]), m0f, plo, phi, qlo,
                            qhi, r8, r16, r24);
            x2 = sse_round1(x2, x3, x0, x1, _mm_set1_epi32((int) rk[i + 2]), m0f, plo, phi, qlo,
                            qhi, r8, r16, r24);
            x3 = sse_round1(x3, x0, x1, x2, _mm_set1_epi32((int) rk[i + 3]), m0f, plo, phi, qlo,
                            qhi, r8, r16, r24);
        }
        /* Output words X35, X34, X33, X32 into dwords 0..3. */
        v = _mm_unpacklo_epi64(_mm_unpacklo_epi32(x3, x2), _mm_unpacklo_epi32(x1, x0));
        _mm_storeu_si128((__m128i *) out, _mm_shuffle_epi8(v, bs));
        in += 16;
        out += 16;
    }
    _mm_storeu_si128((__m128i *) iv, _mm_shuffle_epi8(v, bs));
}

const gm__sm4_impl gm__sm4_impl_aesni_avx2 = {
    "aesni-avx2", avx2_ecb, avx2_ctr, avx2_cbc_dec, avx2_cbc_enc,
};

/* ================================ GFNI + AVX-512 =========================================== */

T_512_INL void
zmm_transpose(__m512i *a, __m512i *b, __m512i *c, __m512i *d)
{
    __m512i t0 = _mm512_unpacklo_epi32(*a, *b), t1 = _mm512_unpackhi_epi32(*a, *b);
    __m512i t2 = _mm512_unpacklo_epi32(*c, *d), t3 = _mm512_unpackhi_epi32(*c, *d);

    *a = _mm512_unpacklo_epi64(t0, t2);
    *b = _mm512_unpackhi_epi64(t0, t2);
    *c = _mm512_unpacklo_epi64(t1, t3);
    *d = _mm512_unpackhi_epi64(t1, t3);
}

/* x0 ^= L(S(x1 ^ x2 ^ x3 ^ k)) on 16 blocks. */
T_512_INL __m512i
zmm_round(__m512i x0, __m512i x1, __m512i x2, __m512i x3, __m512i k, __m512i pre, __m512i post)
{
    /* x3 is the newest word: XOR it last to keep the dependency chain short. */
    __m512i x = _mm512_xor_si512(_mm512_ternarylogic_epi32(x1, x2, k, 0x96), x3);
    __m512i s, t;

    x = _mm512_gf2p8affine_epi64_epi8(x, pre, GFNI_PRE_C);
    s = _mm512_gf2p8affineinv_epi64_epi8(x, post, GFNI_POST_C);
    t = _mm512_ternarylogic_epi32(_mm512_rol_epi32(s, 2), _mm512_rol_epi32(s, 10),
                                  _mm512_rol_epi32(s, 18), 0x96);
    x0 = _mm512_ternarylogic_epi32(x0, s, _mm512_rol_epi32(s, 24), 0x96);
    return _mm512_xor_si512(x0, t);
}

/* 32 rounds on nsets (1, 2 or 4) sets of 16 blocks, s[4 * set + j] = word j; output order on
 * return. */
T_512_INL void
zmm_rounds(const uint32_t *rk, __m512i *s, int nsets)
{
    const __m512i pre = _mm512_set1_epi64((long long) GFNI_PRE);
    const __m512i post = _mm512_set1_epi64((long long) GFNI_POST);
    int i, j;

/* One round of every set, written out (no loop) so that both compilers keep the state in
 * registers. */
#define ZMM_ROUND_ALL(A, B, C, D, key)                                                             \
    do {                                                                                           \
        __m512i k_ = _mm512_set1_epi32((int) (key));                                               \
        s[A] = zmm_round(s[A], s[B], s[C], s[D], k_, pre, post);                                   \
        if (nsets > 1) {                                                                           \
            s[4 + A] = zmm_round(s[4 + A], s[4 + B], s[4 + C], s[4 + D], k_, pre, post);           \
        }                                                                                          \
        if (nsets > 2) {                                                                           \
            s[8 + A] = zmm_round(s[8 + A], s[8 + B], s[8 + C], s[8 + D], k_, pre, post);           \
            s[12 + A] = zmm_round(s[12 + A], s[12 + B], s[12 + C], s[12 + D], k_, pre, post);      \
        }                                                                                          \
    } while (0)

    for (i = 0; i < 32; i += 4) {
        ZMM_ROUND_ALL(0, 1, 2, 3, rk[i]);
        ZMM_ROUND_ALL(1, 2, 3, 0, rk[i + 1]);
        ZMM_ROUND_ALL(2, 3, 0, 1, rk[i + 2]);
        ZMM_ROUND_ALL(3, 0, 1, 2, rk[i + 3]);
    }
#undef ZMM_ROUND_ALL
    for (j = 0; j < nsets; j++) {
        __m512i *x = s + 4 * j, t;

        t = x[0];
        x[0] = x[3];
        x[3] = t;
        t = x[1];
        x[1] = x[2];
        x[2] = t;
    }
}

/* Qword mask for row r (blocks 4r..4r+3) when n blocks are valid. */
T_512_INL __mmask8
zmm_rowmask(size_t r, size_t n)
{
    size_t v = n > 4 * r ? n - 4 * r : 0;

    return (__mmask8) (v >= 4 ? 0xff : (1u << (2 * v)) - 1);
}

T_512_INL __m512i
zmm_loadrow(const uint8_t *p, size_t r, size_t n)
{
    if (n >= 4 * r + 4) {
        return _mm512_loadu_si512((const void *) p);
    }
    return _mm512_maskz_loadu_epi64(zmm_rowmask(r, n), (const void *) p);
}

T_512_INL void
zmm_storerow(uint8_t *p, __m512i v, size_t r, size_t n)
{
    if (n >= 4 * r + 4) {
        _mm512_storeu_si512((void *) p, v);
    } else {
        _mm512_mask_storeu_epi64((void *) p, zmm_rowmask(r, n), v);
    }
}

/* Byte-swap and transpose rows into sets, and back. */
T_512_INL void
zmm_to_sets(__m512i *s, int nsets)
{
    const __m512i bs = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *) bswap32));
    int j;

    _Pragma("GCC unroll 16")

        for (j = 0; j < 4 * nsets; j++)
    {
        s[j] = _mm512_shuffle_epi8(s[j], bs);
    }
    _Pragma("GCC unroll 16") for (j = 0; j < nsets; j++)
    {
        zmm_transpose(&s[4 * j], &s[4 * j + 1], &s[4 * j + 2], &s[4 * j + 3]);
    }
}

T_512_INL void
zmm_to_rows(__m512i *s, int nsets)
{
    const __m512i bs = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *) bswap32));
    int j;

    _Pragma("GCC unroll 16")

        for (j = 0; j < nsets; j++)
    {
        zmm_transpose(&s[4 * j], &s[4 * j + 1], &s[4 * j + 2], &s[4 * j + 3]);
    }
    _Pragma("GCC unroll 16") for (j = 0; j < 4 * nsets; j++)
    {
        s[j] = _mm512_shuffle_epi8(s[j], bs);
    }
}

/* ECB on n <= 16 * nsets blocks. */
T_512_INL void
zmm_ecb_batch(const uint32_t *rk, uint8_t *out, const uint8_t *in, size_t n, int nsets)
{
    __m512i s[16];
    int r;

    _Pragma("GCC unroll 16")

        for (r = 0; r < 4 * nsets; r++)
    {
        s[r] = zmm_loadrow(in + 64 * r, (size_t) r, n);
    }
    zmm_to_sets(s, nsets);
    zmm_rounds(rk, s, nsets);
    zmm_to_rows(s, nsets);
    _Pragma("GCC unroll 16") for (r = 0; r < 4 * nsets; r++)
    {
        zmm_storerow(out + 64 * r, s[r], (size_t) r, n);
    }
}

T_512 static void
gfni_ecb(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks)
{
    while (nblocks >= 64) {
        zmm_ecb_batch(rk, out, in, 64, 4);
        in += 64 * 16;
        out += 64 * 16;
        nblocks -= 64;
    }
    if (nblocks > 16) {
        size_t n = nblocks < 32 ? nblocks : 32;

        zmm_ecb_batch(rk, out, in, n, 2);
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    if (nblocks > 16) {
        zmm_ecb_batch(rk, out, in, nblocks, 2);
    } else if (nblocks > 0) {
        zmm_ecb_batch(rk, out, in, nblocks, 1);
    }
}

/* CTR on n <= 16 * nsets blocks from counter (hi, lo) with no carry out of the low 32 bits
 * inside the batch (or inc32). */
T_512_INL void
zmm_ctr_batch(const uint32_t *rk, uint8_t *out, const uint8_t *in, size_t n, int nsets, uint64_t hi,
              uint64_t lo)
{
    /* After the load transpose, dword d of a set is block 4 * (d % 4) + d / 4. */
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i w0 = _mm512_set1_epi32((int) (uint32_t) (hi >> 32));
    const __m512i w1 = _mm512_set1_epi32((int) (uint32_t) hi);
    const __m512i w2 = _mm512_set1_epi32((int) (uint32_t) (lo >> 32));
    const __m512i w3 = _mm512_add_epi32(_mm512_set1_epi32((int) (uint32_t) lo), idx);
    __m512i s[16];
    int j, r;

    _Pragma("GCC unroll 16")

        for (j = 0; j < nsets; j++)
    {
        s[4 * j] = w0;
        s[4 * j + 1] = w1;
        s[4 * j + 2] = w2;
        s[4 * j + 3] = _mm512_add_epi32(w3, _mm512_set1_epi32(16 * j));
    }
    zmm_rounds(rk, s, nsets);
    zmm_to_rows(s, nsets);
    _Pragma("GCC unroll 16") for (r = 0; r < 4 * nsets; r++)
    {
        __m512i v = zmm_loadrow(in + 64 * r, (size_t) r, n);

        zmm_storerow(out + 64 * r, _mm512_xor_si512(s[r], v), (size_t) r, n);
    }
}

T_512 static void
gfni_ctr(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks, uint8_t ctr[16],
         int inc32)
{
    uint64_t hi = load_be64(ctr), lo = load_be64(ctr + 8);

    while (nblocks > 0) {
        size_t n = nblocks < 64 ? nblocks : 64;

        if (!inc32 && (uint32_t) lo > 0xffffffffU - 63) {
            n = nblocks < 16 ? nblocks : 16;
            ctr_slow(gfni_ecb, rk, out, in, n, &hi, &lo);
        } else {
            if (n > 32) {
                zmm_ctr_batch(rk, out, in, n, 4, hi, lo);
            } else if (n > 16) {
                zmm_ctr_batch(rk, out, in, n, 2, hi, lo);
            } else {
                zmm_ctr_batch(rk, out, in, n, 1, hi, lo);
            }
            ctr_add(&hi, &lo, n, inc32);
        }
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    store_be64(ctr, hi);
    store_be64(ctr + 8, lo);
}

/* CBC-decrypt n <= 16 * nsets blocks; *iv is the previous ciphertext block, updated. */
T_512_INL void
zmm_cbc_dec_batch(const uint32_t *rk, uint8_t *out, const uint8_t *in, size_t n, int nsets,
                  __m128i *iv)
{
    __m512i s[16], p[16];
    __m128i last = _mm_loadu_si128((const __m128i *) (in + 16 * (n - 1)));
    int r;

    /* Previous ciphertext blocks of each row, all read before anything is stored. */
    p[0] = _mm512_alignr_epi64(zmm_loadrow(in, 0, n), _mm512_broadcast_i32x4(*iv), 6);
    _Pragma("GCC unroll 16") for (r = 1; r < 4 * nsets; r++)
    {
        p[r] = zmm_loadrow(in + 64 * r - 16, (size_t) r, n);
    }
    _Pragma("GCC unroll 16") for (r = 0; r < 4 * nsets; r++)
    {
        s[r] = zmm_loadrow(in + 64 * r, (size_t) r, n);
    }
    zmm_to_sets(s, nsets);
    zmm_rounds(rk, s, nsets);
    zmm_to_rows(s, nsets);
    _Pragma("GCC unroll 16") for (r = 0; r < 4 * nsets; r++)
    {
        zmm_storerow(out + 64 * r, _mm512_xor_si512(s[r], p[r]), (size_t) r, n);
    }
    *iv = last;
}

T_512 static void
gfni_cbc_dec(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks, uint8_t iv[16])
{
    __m128i v = _mm_loadu_si128((const __m128i *) iv);

    while (nblocks > 0) {
        size_t n = nblocks < 64 ? nblocks : 64;

        if (n > 32) {
            zmm_cbc_dec_batch(rk, out, in, n, 4, &v);
        } else if (n > 16) {
            zmm_cbc_dec_batch(rk, out, in, n, 2, &v);
        } else {
            zmm_cbc_dec_batch(rk, out, in, n, 1, &v);
        }
        in += 16 * n;
        out += 16 * n;
        nblocks -= n;
    }
    _mm_storeu_si128((__m128i *) iv, v);
}

/* Single block on xmm with words broadcast, for the serial CBC encryption. */
T_512_INL __m128i
xmm_round1(__m128i x0, __m128i x1, __m128i x2, __m128i x3, __m128i k, __m128i pre, __m128i post)
{
    __m128i x = _mm_xor_si128(_mm_ternarylogic_epi32(x1, x2, k, 0x96), x3);
    __m128i s, t;

    x = _mm_gf2p8affine_epi64_epi8(x, pre, GFNI_PRE_C);
    s = _mm_gf2p8affineinv_epi64_epi8(x, post, GFNI_POST_C);
    t = _mm_ternarylogic_epi32(_mm_rol_epi32(s, 2), _mm_rol_epi32(s, 10), _mm_rol_epi32(s, 18),
                               0x96);
    x0 = _mm_ternarylogic_epi32(x0, s, _mm_rol_epi32(s, 24), 0x96);
    return _mm_xor_si128(x0, t);
}

T_512 static void
gfni_cbc_enc(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks, uint8_t iv[16])
{
    const __m128i bs = _mm_loadu_si128((const __m128i *) bswap32);
    const __m128i pre = _mm_set1_epi64x((long long) GFNI_PRE);
    const __m128i post = _mm_set1_epi64x((long long) GFNI_POST);
    __m128i v = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) iv), bs);

    while (nblocks-- > 0) {
        __m128i x = _mm_xor_si128(v, _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) in), bs));
        __m128i x0 = _mm_shuffle_epi32(x, 0x00), x1 = _mm_shuffle_epi32(x, 0x55);
        __m128i x2 = _mm_shuffle_epi32(x, 0xaa), x3 = _mm_shuffle_epi32(x, 0xff);
        int i;

        for (i = 0; i < 32; i += 4) {
            x0 = xmm_round1(x0, x1, x2, x3, _mm_set1_epi32((int) rk[i]), pre, post);
            x1 = xmm_round1(x1, x2, x3, x0, _mm_set1_epi32((int) rk[i + 1]), pre, post);
            x2 = xmm_round1(x2, x3, x0, x1, _mm_set1_epi32((int) rk[i + 2]), pre, post);
            x3 = xmm_round1(x3, x0, x1, x2, _mm_set1_epi32((int) rk[i + 3]), pre, post);
        }
        v = _mm_unpacklo_epi64(_mm_unpacklo_epi32(x3, x2), _mm_unpacklo_epi32(x1, x0));
        _mm_storeu_si128((__m128i *) out, _mm_shuffle_epi8(v, bs));
        in += 16;
        out += 16;
    }
    _mm_storeu_si128((__m128i *) iv, _mm_shuffle_epi8(v, bs));
}

const gm__sm4_impl gm__sm4_impl_gfni_avx512 = {
    "gfni-avx512", gfni_ecb, gfni_ctr, gfni_cbc_dec, gfni_cbc_enc,
};

#else /* !__x86_64__ */

/* ISO C forbids an empty translation unit. */
typedef int gm__sm4_x86_unused;

#endif
