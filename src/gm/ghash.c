/* ghash.c: GHASH (NIST SP 800-38D) for SM4-GCM: portable constant-time C, PCLMULQDQ, VPCLMULQDQ.
 *
 * Purpose. Y = (Y ^ X_i) * H over GF(2^128) for whole 16-byte blocks, with a key object that
 * holds precomputed powers of H (gm__ghash_init/update/key_wipe) and the key-less
 * gm__ghash_blocks for callers that have only H.
 *
 * Representation. A block is read as a big-endian 128-bit integer A; GCM's bit order puts the
 * coefficient of x^k at bit 127 - k ("reflected"). The integer carry-less product of two
 * reflected operands holds the coefficient of x^k of the polynomial product at bit 254 - k,
 * one place short of a clean 256-bit reflection. Instead of shifting every product, the key
 * stores H~ = H * x^-1 (in the reflected form: shift left by one, and if the bit shifted out
 * was set, XOR 0xC2000000000000000000000000000001, which is x^-1 = x^127 + x^6 + x + 1); then
 * D = A (x) H~ is exactly the reflected 256-bit polynomial of A * H, and the reduction modulo
 * g = x^128 + x^7 + x^2 + x + 1 folds the low 128 bits of D into the high ones in two 64-bit
 * steps, each a carry-less multiplication by K = 0xC200000000000000 plus a swap of halves:
 *     X = swap(D_lo) ^ clmul(D_lo.q0, K);  Z = swap(X) ^ clmul(X.q0, K);  result = D_hi ^ Z.
 * (The low word d of D stands for coefficients >= 192; x^128 = 1 + x + x^2 + x^7 moves it to bit
 * offsets +128, +127, +126, +121, i.e. d << 128 plus (d (x) K) << 64.)
 * Aggregation: Y_new = sum over the n blocks of X_i * H^(n-i) (with Y folded into X_1), so n
 * products are summed unreduced and reduced once. The key stores P[j] = H^(32-j) * x^-1 for
 * j = 0..31, so n <= 32 blocks use P[32 - n ..].
 *
 * Paths.
 *   portable: 64x64-bit carry-less products from ordinary integer multiplications with holes
 *     (each operand split into 5 interleaved bit classes, 13 set bits at most per class, so a
 *     column of a 128-bit product sums at most 13 < 16 terms and never carries into the next
 *     bit of its class; XORing the 25 class products and masking leaves the carry-less
 *     product), three such products per block (Karatsuba) and the shift-based reduction. No
 *     tables, no branches: constant time where the multiplier is (all current x86-64 and
 *     AArch64 cores). Needs unsigned __int128; other compilers get the bit-serial loop.
 *   pclmul: PCLMULQDQ on xmm, 4 multiplications a block, 8 blocks per reduction.
 *   vpclmul-avx512: VPCLMULQDQ on zmm (4 blocks per instruction), 16 blocks per reduction.
 *
 * Invariants. The powers layout is the same for every path, so a key made for one path is valid
 * for all; impl only says which code runs. Secret temporaries on the stack are wiped.
 *
 * Written by hand because measured speed demands it: the textbook bit-serial multiply runs at
 * a few MB/s per core, far below SM4-GCM's multi-GB/s target.
 */
#include "sm4_impl.h"

#include <pthread.h>
#include <string.h>

struct gm__ghash_impl {
    const char *name;
    void (*update)(const gm__ghash_key *k, uint8_t Y[16], const uint8_t *in, size_t nblocks);
};

static inline uint64_t
load_be64(const uint8_t *p)
{
    return (uint64_t) p[0] << 56 | (uint64_t) p[1] << 48 | (uint64_t) p[2] << 40 |
           (uint64_t) p[3] << 32 | (uint64_t) p[4] << 24 | (uint64_t) p[5] << 16 |
           (uint64_t) p[6] << 8 | p[7];
}

static inline void
store_be64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}

/* Power P[j] of the key: qword 0 is the low half of the reflected 128-bit integer. */
static inline void
key_get(const gm__ghash_key *k, int j, uint64_t *hi, uint64_t *lo)
{
    memcpy(lo, k->opaque + 16 * j, 8);
    memcpy(hi, k->opaque + 16 * j + 8, 8);
}

static inline void
key_put(gm__ghash_key *k, int j, uint64_t hi, uint64_t lo)
{
    memcpy(k->opaque + 16 * j, &lo, 8);
    memcpy(k->opaque + 16 * j + 8, &hi, 8);
}

/* ---- portable ----------------------------------------------------------------------------- */

#if defined(__SIZEOF_INT128__)

typedef unsigned __int128 u128;

/* 64x64 -> 128-bit carry-less product with integer multiplications (see the essay). */
static inline void
clmul64(uint64_t x, uint64_t y, uint64_t *hi, uint64_t *lo)
{
    const uint64_t m = 0x1084210842108421ULL; /* bits 0, 5, ..., 60 */
    const u128 mm = (u128) 0x2108421084210842ULL << 64 | 0x1084210842108421ULL; /* 0..125 */
    uint64_t xs[5], ys[5];
    u128 z = 0;
    int a, b, c;

    _Pragma("GCC unroll 5") for (a = 0; a < 5; a++)
    {
        xs[a] = x & (m << a);
        ys[a] = y & (m << a);
    }
    _Pragma("GCC unroll 5") for (c = 0; c < 5; c++)
    {
        u128 t = 0;

        _Pragma("GCC unroll 5") for (a = 0; a < 5; a++)
        {
            b = (c - a + 5) % 5;
            t ^= (u128) xs[a] * ys[b];
        }
        z |= t & (mm << c);
    }
    *hi = (uint64_t) (z >> 64);
    *lo = (uint64_t) z;
}

/* (ah:al) * H~ with H~ = (bh:bl): reflected product, reduced. */
static inline void
gf_mul(uint64_t *rh, uint64_t *rl, uint64_t ah, uint64_t al, uint64_t bh, uint64_t bl)
{
    uint64_t l1, l0, h1, h0, m1, m0, d0, d1, d2, d3;

    clmul64(al, bl, &l1, &l0);
    clmul64(ah, bh, &h1, &h0);
    clmul64(al ^ ah, bl ^ bh, &m1, &m0);
    m0 ^= l0 ^ h0;
    m1 ^= l1 ^ h1;
    d0 = l0;
    d1 = l1 ^ m0;
    d2 = h0 ^ m1;
    d3 = h1;
    /* Fold d0, then d1: d << 128 ^ (d (x) 0xC2 << 56) << 64. */
    d1 ^= (d0 << 63) ^ (d0 << 62) ^ (d0 << 57);
    d2 ^= d0 ^ (d0 >> 1) ^ (d0 >> 2) ^ (d0 >> 7);
    d2 ^= (d1 << 63) ^ (d1 << 62) ^ (d1 << 57);
    d3 ^= d1 ^ (d1 >> 1) ^ (d1 >> 2) ^ (d1 >> 7);
    *rh = d3;
    *rl = d2;
}

#else /* no 128-bit integers: bit-serial, still constant time */

static inline void
gf_mul(uint64_t *rh, uint64_t *rl, uint64_t ah, uint64_t al, uint64_t bh, uint64_t bl)
{
    /* Multiply by H = H~ * x first (undo the key's x^-1: a right shift in the reflected
     * form, reduced with 0xE1 << 120), then the textbook right-shift loop. */
    uint64_t m = (uint64_t) 0 - (bl & 1), zh = 0, zl = 0, vh, vl;
    int i;

    vl = (bl >> 1) | (bh << 63);
    vh = (bh >> 1) ^ (m & 0xe100000000000000ULL);
    for (i = 0; i < 128; i++) {
        uint64_t bit = i < 64 ? ah >> (63 - i) : al >> (127 - i);

        m = (uint64_t) 0 - (bit & 1);
        zh ^= vh & m;
        zl ^= vl & m;
        m = (uint64_t) 0 - (vl & 1);
        vl = (vl >> 1) | (vh << 63);
        vh = (vh >> 1) ^ (0xe100000000000000ULL & m);
    }
    *rh = zh;
    *rl = zl;
}

#endif

/* H~ = H * x^-1 in the reflected form. */
static inline void
times_xinv(uint64_t *th, uint64_t *tl, uint64_t hh, uint64_t hl)
{
    uint64_t m = (uint64_t) 0 - (hh >> 63);

    *th = ((hh << 1) | (hl >> 63)) ^ (m & 0xc200000000000000ULL);
    *tl = (hl << 1) ^ (m & 1);
}

static void
portable_update(const gm__ghash_key *k, uint8_t Y[16], const uint8_t *in, size_t nblocks)
{
    uint64_t hh, hl, yh = load_be64(Y), yl = load_be64(Y + 8);

    key_get(k, GM__GHASH_KEY_POWERS - 1, &hh, &hl);
    while (nblocks-- > 0) {
        gf_mul(&yh, &yl, yh ^ load_be64(in), yl ^ load_be64(in + 8), hh, hl);
        in += 16;
    }
    store_be64(Y, yh);
    store_be64(Y + 8, yl);
}

void
gm__ghash_blocks(const uint8_t H[16], uint8_t Y[16], const uint8_t *in, size_t nblocks)
{
    uint64_t hh, hl, yh = load_be64(Y), yl = load_be64(Y + 8);

    times_xinv(&hh, &hl, load_be64(H), load_be64(H + 8));
    while (nblocks-- > 0) {
        gf_mul(&yh, &yl, yh ^ load_be64(in), yl ^ load_be64(in + 8), hh, hl);
        in += 16;
    }
    store_be64(Y, yh);
    store_be64(Y + 8, yl);
}

static const struct gm__ghash_impl impl_portable = {"portable", portable_update};

/* ---- x86-64: PCLMULQDQ and VPCLMULQDQ ----------------------------------------------------- */

#if defined(__x86_64__)

#include <immintrin.h>

#define T_CLMUL     __attribute__((target("pclmul,ssse3")))
#define T_CLMUL_INL __attribute__((target("pclmul,ssse3"), always_inline)) static inline
#define T_VCLMUL    __attribute__((target("avx512f,avx512bw,avx512vl,vpclmulqdq,pclmul")))

static const uint8_t bswap128[16] = {15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};

/* Reduce the 256-bit reflected product (dh:dl) modulo g (see the essay). */
T_CLMUL_INL __m128i
xmm_reduce(__m128i dh, __m128i dl)
{
    const __m128i k = _mm_set_epi64x(0, (long long) 0xc200000000000000ULL);
    __m128i x = _mm_xor_si128(_mm_shuffle_epi32(dl, 0x4e), _mm_clmulepi64_si128(dl, k, 0x00));

    x = _mm_xor_si128(_mm_shuffle_epi32(x, 0x4e), _mm_clmulepi64_si128(x, k, 0x00));
    return _mm_xor_si128(dh, x);
}

/* Sum of X_i * P[first + i] for i < n (n <= 32), Y folded into X_0, reduced. */
T_CLMUL_INL __m128i
xmm_aggregate(const uint8_t *pw, __m128i y, const uint8_t *in, size_t n, __m128i bs)
{
    __m128i lo = _mm_setzero_si128(), hi = lo, mid = lo;
    size_t i;

    for (i = 0; i < n; i++) {
        __m128i a = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) (in + 16 * i)), bs);
        __m128i h = _mm_load_si128((const __m128i *) (pw + 16 * i));

        if (i == 0) {
            a = _mm_xor_si128(a, y);
        }
        lo = _mm_xor_si128(lo, _mm_clmulepi64_si128(a, h, 0x00));
        hi = _mm_xor_si128(hi, _mm_clmulepi64_si128(a, h, 0x11));
        mid = _mm_xor_si128(mid, _mm_clmulepi64_si128(a, h, 0x01));
        mid = _mm_xor_si128(mid, _mm_clmulepi64_si128(a, h, 0x10));
    }
    return xmm_reduce(_mm_xor_si128(hi, _mm_srli_si128(mid, 8)),
                      _mm_xor_si128(lo, _mm_slli_si128(mid, 8)));
}

T_CLMUL static void
pclmul_update(const gm__ghash_key *k, uint8_t Y[16], const uint8_t *in, size_t nblocks)
{
    const __m128i bs = _mm_loadu_si128((const __m128i *) bswap128);
    __m128i y = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) Y), bs);

    while (nblocks >= 8) {
        y = xmm_aggregate(k->opaque + 16 * (GM__GHASH_KEY_POWERS - 8), y, in, 8, bs);
        in += 16 * 8;
        nblocks -= 8;
    }
    if (nblocks > 0) {
        y = xmm_aggregate(k->opaque + 16 * (GM__GHASH_KEY_POWERS - nblocks), y, in, nblocks, bs);
    }
    _mm_storeu_si128((__m128i *) Y, _mm_shuffle_epi8(y, bs));
}

static const struct gm__ghash_impl impl_pclmul = {"pclmul", pclmul_update};

#define T_VCLMUL_INL                                                                               \
    __attribute__((target("avx512f,avx512bw,avx512vl,vpclmulqdq,pclmul"),                          \
                   always_inline)) static inline

T_VCLMUL_INL __mmask8
zmm_mask(size_t r, size_t n)
{
    size_t v = n > 4 * r ? n - 4 * r : 0;

    return (__mmask8) (v >= 4 ? 0xff : (1u << (2 * v)) - 1);
}

/* Sum of X_i * P[32 - n + i] for i < n <= 16 (zmm r holds blocks 4r..4r+3), reduced. */
T_VCLMUL_INL __m128i
zmm_aggregate(const gm__ghash_key *k, __m128i y, const uint8_t *in, size_t n, __m512i bs)
{
    const uint8_t *pw = k->opaque + 16 * (GM__GHASH_KEY_POWERS - n);
    __m512i lo = _mm512_setzero_si512(), hi = lo, mid = lo;
    __m256i t;
    __m128i dl, dh;
    size_t r;

    for (r = 0; r < 4; r++) {
        __m512i a, h;

        if (n >= 4 * r + 4) {
            a = _mm512_loadu_si512((const void *) (in + 64 * r));
            h = _mm512_loadu_si512((const void *) (pw + 64 * r));
        } else if (n > 4 * r) {
            a = _mm512_maskz_loadu_epi64(zmm_mask(r, n), (const void *) (in + 64 * r));
            h = _mm512_maskz_loadu_epi64(zmm_mask(r, n), (const void *) (pw + 64 * r));
        } else {
            break;
        }
        a = _mm512_shuffle_epi8(a, bs);
        if (r == 0) {
            a = _mm512_xor_si512(a, _mm512_zextsi128_si512(y));
        }
        lo = _mm512_xor_si512(lo, _mm512_clmulepi64_epi128(a, h, 0x00));
        hi = _mm512_xor_si512(hi, _mm512_clmulepi64_epi128(a, h, 0x11));
        mid = _mm512_ternarylogic_epi64(mid, _mm512_clmulepi64_epi128(a, h, 0x01),
                                        _mm512_clmulepi64_epi128(a, h, 0x10), 0x96);
    }
    lo = _mm512_xor_si512(lo, _mm512_bslli_epi128(mid, 8));
    hi = _mm512_xor_si512(hi, _mm512_bsrli_epi128(mid, 8));
    t = _mm256_xor_si256(_mm512_castsi512_si256(lo), _mm512_extracti64x4_epi64(lo, 1));
    dl = _mm_xor_si128(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    t = _mm256_xor_si256(_mm512_castsi512_si256(hi), _mm512_extracti64x4_epi64(hi, 1));
    dh = _mm_xor_si128(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
    {
        const __m128i kk = _mm_set_epi64x(0, (long long) 0xc200000000000000ULL);
        __m128i x = _mm_xor_si128(_mm_shuffle_epi32(dl, 0x4e), _mm_clmulepi64_si128(dl, kk, 0x00));

        x = _mm_xor_si128(_mm_shuffle_epi32(x, 0x4e), _mm_clmulepi64_si128(x, kk, 0x00));
        return _mm_xor_si128(dh, x);
    }
}

T_VCLMUL static void
vpclmul_update(const gm__ghash_key *k, uint8_t Y[16], const uint8_t *in, size_t nblocks)
{
    const __m128i bs = _mm_loadu_si128((const __m128i *) bswap128);
    const __m512i bs4 = _mm512_broadcast_i32x4(bs);
    __m128i y = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *) Y), bs);

    while (nblocks >= 16) {
        y = zmm_aggregate(k, y, in, 16, bs4);
        in += 16 * 16;
        nblocks -= 16;
    }
    if (nblocks > 0) {
        y = zmm_aggregate(k, y, in, nblocks, bs4);
    }
    _mm_storeu_si128((__m128i *) Y, _mm_shuffle_epi8(y, bs));
}

static const struct gm__ghash_impl impl_vpclmul = {"vpclmul-avx512", vpclmul_update};

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static bool has_pclmul, has_vpclmul;

static void
cpu_init(void)
{
    __builtin_cpu_init();
    has_pclmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("ssse3");
    has_vpclmul = has_pclmul && __builtin_cpu_supports("avx512f") &&
                  __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("vpclmulqdq");
}

#endif /* __x86_64__ */

/* The path for a name (GHASH or SM4 path names), NULL if unknown or not runnable here. */
static const struct gm__ghash_impl *
impl_get(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    if (strcmp(name, "portable") == 0) {
        return &impl_portable;
    }
#if defined(__x86_64__)
    pthread_once(&cpu_once, cpu_init);
    if ((strcmp(name, "pclmul") == 0 || strcmp(name, "aesni-avx2") == 0) && has_pclmul) {
        return &impl_pclmul;
    }
    if ((strcmp(name, "vpclmul-avx512") == 0 || strcmp(name, "gfni-avx512") == 0) && has_vpclmul) {
        return &impl_vpclmul;
    }
#endif
    return NULL;
}

static const struct gm__ghash_impl *
impl_best(void)
{
#if defined(__x86_64__)
    pthread_once(&cpu_once, cpu_init);
    if (has_vpclmul) {
        return &impl_vpclmul;
    }
    if (has_pclmul) {
        return &impl_pclmul;
    }
#endif
    return &impl_portable;
}

bool
gm__ghash_impl_available(const char *impl_name)
{
    return impl_get(impl_name) != NULL;
}

void
gm__ghash_init(gm__ghash_key *k, const uint8_t H[16], const char *impl_name)
{
    uint64_t ph = load_be64(H), pl = load_be64(H + 8), hh, hl, th, tl;
    int i;

    times_xinv(&hh, &hl, ph, pl);
    /* P[31] = H~; P[32 - i] = H^i * x^-1, from H^i = H^(i-1) * H. */
    key_put(k, GM__GHASH_KEY_POWERS - 1, hh, hl);
    for (i = 2; i <= GM__GHASH_KEY_POWERS; i++) {
        gf_mul(&ph, &pl, ph, pl, hh, hl);
        times_xinv(&th, &tl, ph, pl);
        key_put(k, GM__GHASH_KEY_POWERS - i, th, tl);
    }
    k->impl = impl_get(impl_name);
    if (k->impl == NULL) {
        k->impl = impl_best();
    }
}

void
gm__ghash_update(const gm__ghash_key *k, uint8_t Y[16], const uint8_t *in, size_t nblocks)
{
    if (nblocks == 0) {
        return;
    }
    (k->impl != NULL ? k->impl : &impl_portable)->update(k, Y, in, nblocks);
}

void
gm__ghash_key_wipe(gm__ghash_key *k)
{
    explicit_bzero(k->opaque, sizeof(k->opaque));
    k->impl = NULL;
}

const char *
gm__ghash_impl_name(const gm__ghash_key *k)
{
    return k->impl != NULL ? k->impl->name : NULL;
}

bool
gm__ghash_key_is(const gm__ghash_key *k, const char *impl_name)
{
    const char *name = gm__ghash_impl_name(k);

    return name != NULL && impl_name != NULL && strcmp(name, impl_name) == 0;
}
