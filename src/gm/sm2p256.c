/* sm2p256.c: fast, constant-time arithmetic on the SM2 recommended curve (GB/T 32918).
 *
 * Written by hand because measured speed demands it: OpenSSL 3.0 signs ~4,100 and verifies
 * ~4,500 SM2 signatures per second per core on the gateway machines; this file is several
 * times faster (figures in the lead's bench log and in bench/bench_sm2p256.c).
 *
 * Curve: y^2 = x^3 - 3x + b over GF(p), p = 2^256 - 2^224 - 2^96 + 2^64 - 1, prime group order
 * n (cofactor 1), generator G.
 *
 * Field. Elements are four 64-bit limbs (little-endian limb order) in Montgomery form aR mod p,
 * R = 2^256, always fully reduced (< p). Products use unsigned __int128. Montgomery reduction
 * exploits -p^-1 = 1 mod 2^64: one reduction step with m = t0 adds m*p, and
 * (t0 + m*p) / 2^64 = m * (2^192 - 2^160 - 2^32 + 1), so a step is shifts, adds and subtracts,
 * no multiplications. Inversion is Fermat (a^(p-2)) with a fixed addition chain of 256
 * squarings and 15 multiplications, so it is constant time.
 *
 * Scalars mod n use generic 4-limb Montgomery multiplication (CIOS); the inverse (1+d)^-1 is
 * Fermat with the public exponent n-2 (fixed chain plus fixed 4-bit windows: the window values
 * come from the public exponent, not from the secret base).
 *
 * Points are Jacobian (X, Y, Z) with x = X/Z^2, y = Y/Z^3; doubling uses a = -3 (4M+4S and
 * only ten additions), mixed addition with an affine point 8M+3S, general addition 12M+4S.
 *
 * Implementations: every internal function takes `impl`, a public constant that picks the
 * field multiplication, squaring, addition and the table scans: GM__SM2P_IMPL_PORTABLE
 * (unsigned __int128 C, built everywhere) or GM__SM2P_IMPL_X86_ADX (x86-64 inline assembly
 * with MULX/ADCX/ADOX, AVX2 scans in target("avx2") functions; about twice as fast). The
 * plain gm__sm2p_* entry points run the portable path; gm__sm2p_impl_get hands out constant
 * tables of the same entry points bound to one path, for the lead's CPU dispatcher. Both
 * paths give bit-identical results (the tests run everything through every path).
 *
 * k*G (constant time): signed fixed-base comb without doublings. k is Booth-recoded into 43
 * signed 6-bit digits d_i in [-32, 32], k = sum d_i 2^(6i), and k*G = sum d_i (2^(6i) G). The
 * table holds j * 2^(6i) G for j = 1..32 and i = 0..42 (affine, 88 KiB), built once under
 * pthread_once. Each digit's entry is fetched by reading all 32 entries of its row and keeping
 * one with a mask, then negated with a mask. Exceptional additions: before row i the
 * accumulator is A = sum_{j<i} d_j 2^(6j) with |A| < 2^(6i-1), while the addend is
 * T = d_i 2^(6i) with |T| >= 2^(6i) when d_i != 0, so A != +-T as integers; for i <= 41 both are
 * below n/2, so also A != +-T mod n. A = 0 exactly when all earlier digits are 0, which a mask
 * tracks (the addend is then selected instead of the sum). Only the last row (|T| up to 2^256)
 * could wrap mod n; an argument on k < n rules it out too, but the last addition also computes
 * the doubling and selects it when H = R = 0, and flags infinity when H = 0, R != 0. So the
 * comb is correct for every k in [0, n-1].
 *
 * k*P (constant time): signed 5-bit fixed window from the top (52 digits in [-16, 16]), a
 * Jacobian table of P..16P, 5 doublings and one masked-selected addition per digit. Before digit
 * i the accumulator is 32 W P with W = (k >> 5(i+1)) + carry >= 0; for i >= 1, 32 W < n - 16,
 * so it can equal +-d_i P only if W = 0 (tracked by the infinity mask). Only the final addition
 * (i = 0) can meet A = T (k = 2 d_0 mod n); it computes the doubling as well and selects.
 *
 * Verification (variable time, public data): u1*G + u2*P by interleaved wNAF, u1 = s with
 * width 8 over a 64-entry table of odd multiples of G, u2 = t = r + s with width 5 over 8
 * Jacobian odd multiples of P; complete handling of infinity and doubling cases. The final test
 * avoids the inversion: x1 = X/Z^2 is compared as X == v Z^2 for the at most two integers v in
 * [0, p) with v = r - e mod n. A per-key table (gm__sm2p_pubtab) holds odd multiples of P,
 * 2^64 P, 2^128 P, 2^192 P (width 7), and with the matching G tables (width 8) u1 and u2 are
 * split into 64-bit pieces, so only 65 doublings are needed.
 *
 * Signing: s = (1+d)^-1 (k - r d) = (1+d)^-1 (k + r) - r mod n, one Montgomery product once the
 * inverse is known. The sign context keeps a batch of (k, x1 mod n) pairs; a refill computes the
 * k*G points in Jacobian form and converts all of them with one field inversion (Montgomery's
 * trick: 3 multiplications per point).
 *
 * Constant-time discipline: secret data (d, k, anything derived) never selects a branch or a
 * memory address. Masks go through an empty asm barrier so the compiler cannot turn them back
 * into branches. The only data-dependent decisions are on values that are meant to be public:
 * the validity of d (an error), the rejection of an unusable nonce candidate (rejection
 * sampling; the rejected value is discarded) and the final status codes. Those spots call
 * SM2P_DECLASSIFY, which tells valgrind (build with -DGM_SM2P_CTGRIND) that the leak is
 * intended. Secret temporaries are wiped with explicit_bzero where cheap. */
#include "sm2p256.h"

#include "dengbao/common.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

#ifdef GM_SM2P_CTGRIND
#include <valgrind/memcheck.h>
#define SM2P_DECLASSIFY(p, len) VALGRIND_MAKE_MEM_DEFINED((p), (len))
#else
#define SM2P_DECLASSIFY(p, len) ((void) 0)
#endif

typedef unsigned __int128 u128;
typedef uint64_t fe[4];

/* Affine point, Montgomery form; 64 bytes, the unit of the table scans. */
typedef struct {
    fe x;
    fe y;
} sm2p_aff;

/* Jacobian point, Montgomery form. Z = 0 is the point at infinity (variable-time code only;
 * constant-time code tracks infinity in a mask). */
typedef struct {
    fe X;
    fe Y;
    fe Z;
} sm2p_jac;

/* ------------------------------------------------------------------------------------------ */
/* Constants. */

static const fe FE_P = {0xffffffffffffffffULL, 0xffffffff00000000ULL, 0xffffffffffffffffULL,
                        0xfffffffeffffffffULL};
/* R mod p (Montgomery 1), R^2 mod p, b*R mod p, G in Montgomery form. */
static const fe FE_ONE = {0x0000000000000001ULL, 0x00000000ffffffffULL, 0x0000000000000000ULL,
                          0x0000000100000000ULL};
static const fe FE_R2 = {0x0000000200000003ULL, 0x00000002ffffffffULL, 0x0000000100000001ULL,
                         0x0000000400000002ULL};
static const fe FE_B = {0x90d230632bc0dd42ULL, 0x71cf379ae9b537abULL, 0x527981505ea51c3cULL,
                        0x240fe188ba20e2c8ULL};
static const fe FE_GX = {0x61328990f418029eULL, 0x3e7981eddca6c050ULL, 0xd6a1ed99ac24c3c3ULL,
                         0x91167a5ee1c13b05ULL};
static const fe FE_GY = {0xc1354e593c2d0dddULL, 0xc1f5e5788d3295faULL, 0x8d4cfb066e2a48f8ULL,
                         0x63cd65d481d735bdULL};

/* The group order n, R^2 mod n, -n^-1 mod 2^64, and the low half of n - 2. */
static const uint64_t SC_N[4] = {0x53bbf40939d54123ULL, 0x7203df6b21c6052bULL,
                                 0xffffffffffffffffULL, 0xfffffffeffffffffULL};
static const uint64_t SC_R2[4] = {0x901192af7c114f20ULL, 0x3464504ade6fa2faULL,
                                  0x620fc84c3affe0d4ULL, 0x1eb5e412a22b3d3bULL};
static const uint64_t SC_N0 = 0x327f9e8872350975ULL;
static const uint64_t SC_NM2_LO[2] = {0x53bbf40939d54121ULL, 0x7203df6b21c6052bULL};

/* ------------------------------------------------------------------------------------------ */
/* Word helpers. */

/* vbar hides a value from the optimizer so mask arithmetic stays branch-free. */
static inline uint64_t
vbar(uint64_t x)
{
    __asm__("" : "+r"(x));
    return x;
}

/* mask_zero returns all ones iff x == 0, else 0. */
static inline uint64_t
mask_zero(uint64_t x)
{
    return vbar(((x | (0 - x)) >> 63) - 1);
}

static inline uint64_t
mask_eq(uint64_t a, uint64_t b)
{
    return mask_zero(a ^ b);
}

static inline uint64_t
adc(uint64_t *r, uint64_t a, uint64_t b, uint64_t c)
{
    u128 t = (u128) a + b + c;
    *r = (uint64_t) t;
    return (uint64_t) (t >> 64);
}

static inline uint64_t
sbb(uint64_t *r, uint64_t a, uint64_t b, uint64_t br)
{
    u128 t = (u128) a - b - br;
    *r = (uint64_t) t;
    return (uint64_t) (t >> 64) & 1;
}

static inline uint64_t
load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

static inline void
store_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}

static void
limbs_from_be(uint64_t r[4], const uint8_t in[32])
{
    r[3] = load_be64(in);
    r[2] = load_be64(in + 8);
    r[1] = load_be64(in + 16);
    r[0] = load_be64(in + 24);
}

static void
limbs_to_be(uint8_t out[32], const uint64_t a[4])
{
    store_be64(out, a[3]);
    store_be64(out + 8, a[2]);
    store_be64(out + 16, a[1]);
    store_be64(out + 24, a[0]);
}

/* lt_mask returns all ones iff a < b (4 limbs), constant time. */
static inline uint64_t
lt_mask(const uint64_t a[4], const uint64_t b[4])
{
    uint64_t t, br;
    br = sbb(&t, a[0], b[0], 0);
    br = sbb(&t, a[1], b[1], br);
    br = sbb(&t, a[2], b[2], br);
    br = sbb(&t, a[3], b[3], br);
    return vbar(0 - br);
}

static inline uint64_t
limbs_is_zero(const uint64_t a[4])
{
    return mask_zero(a[0] | a[1] | a[2] | a[3]);
}

static inline uint64_t
limbs_eq(const uint64_t a[4], const uint64_t b[4])
{
    return mask_zero((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]));
}

/* cmov4: r = m ? a : r, m all ones or zero. */
static inline void
cmov4(uint64_t r[4], const uint64_t a[4], uint64_t m)
{
    for (int i = 0; i < 4; i++) {
        r[i] = (r[i] & ~m) | (a[i] & m);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Field arithmetic mod p, Montgomery form. */

static inline void
fe_copy(fe r, const fe a)
{
    r[0] = a[0];
    r[1] = a[1];
    r[2] = a[2];
    r[3] = a[3];
}

static inline void
fe_add_c(fe r, const fe a, const fe b)
{
    uint64_t s0, s1, s2, s3, d0, d1, d2, d3, c, br, m;

    c = adc(&s0, a[0], b[0], 0);
    c = adc(&s1, a[1], b[1], c);
    c = adc(&s2, a[2], b[2], c);
    c = adc(&s3, a[3], b[3], c);
    br = sbb(&d0, s0, FE_P[0], 0);
    br = sbb(&d1, s1, FE_P[1], br);
    br = sbb(&d2, s2, FE_P[2], br);
    br = sbb(&d3, s3, FE_P[3], br);
    /* Keep the sum iff it did not carry out and s - p borrowed. */
    m = vbar(0 - (br & (c ^ 1)));
    r[0] = (s0 & m) | (d0 & ~m);
    r[1] = (s1 & m) | (d1 & ~m);
    r[2] = (s2 & m) | (d2 & ~m);
    r[3] = (s3 & m) | (d3 & ~m);
}

static inline void
fe_sub_c(fe r, const fe a, const fe b)
{
    uint64_t d0, d1, d2, d3, br, c, m;

    br = sbb(&d0, a[0], b[0], 0);
    br = sbb(&d1, a[1], b[1], br);
    br = sbb(&d2, a[2], b[2], br);
    br = sbb(&d3, a[3], b[3], br);
    m = vbar(0 - br);
    c = adc(&r[0], d0, FE_P[0] & m, 0);
    c = adc(&r[1], d1, FE_P[1] & m, c);
    c = adc(&r[2], d2, FE_P[2] & m, c);
    (void) adc(&r[3], d3, FE_P[3] & m, c);
}

/* fe_redc: r = t * 2^-256 mod p for t = a*b with a, b < p. */
static inline void
fe_redc(fe r, const uint64_t t[8])
{
    uint64_t r0 = t[0], r1 = t[1], r2 = t[2], r3 = t[3];
    uint64_t m, lo, hi, d0, d1, d2, d3, b, c, s0, s1, s2, s3, k;

    for (int i = 0; i < 4; i++) {
        /* (r + m p) / 2^64 = (r1, r2, r3) + m (2^192 - 2^160 - 2^32 + 1), which is below
         * 2^192 + p < 2^256, so no carry leaves the top limb. */
        m = r0;
        lo = m << 32;
        hi = m >> 32;
        b = sbb(&d0, m, lo, 0);
        b = sbb(&d1, 0, hi, b);
        b = sbb(&d2, 0, lo, b);
        d3 = m - hi - b;
        c = adc(&r0, r1, d0, 0);
        c = adc(&r1, r2, d1, c);
        c = adc(&r2, r3, d2, c);
        r3 = d3 + c;
    }
    /* Low half reduced to <= p; the high half of a*b is < p - 1; the sum is < 2p - 1. */
    c = adc(&r0, r0, t[4], 0);
    c = adc(&r1, r1, t[5], c);
    c = adc(&r2, r2, t[6], c);
    c = adc(&r3, r3, t[7], c);
    b = sbb(&s0, r0, FE_P[0], 0);
    b = sbb(&s1, r1, FE_P[1], b);
    b = sbb(&s2, r2, FE_P[2], b);
    b = sbb(&s3, r3, FE_P[3], b);
    k = vbar(0 - (b & (c ^ 1)));
    r[0] = (r0 & k) | (s0 & ~k);
    r[1] = (r1 & k) | (s1 & ~k);
    r[2] = (r2 & k) | (s2 & ~k);
    r[3] = (r3 & k) | (s3 & ~k);
}

#define MULADD(lo, c, a, b, t)                                                                     \
    do {                                                                                           \
        u128 x_ = (u128) (a) * (b) + (t) + (c);                                                    \
        (lo) = (uint64_t) x_;                                                                      \
        (c) = (uint64_t) (x_ >> 64);                                                               \
    } while (0)

static void
fe_mul_c(fe r, const fe a, const fe b)
{
    uint64_t t[8], c, ai;

    ai = a[0];
    c = 0;
    MULADD(t[0], c, ai, b[0], 0);
    MULADD(t[1], c, ai, b[1], 0);
    MULADD(t[2], c, ai, b[2], 0);
    MULADD(t[3], c, ai, b[3], 0);
    t[4] = c;
    ai = a[1];
    c = 0;
    MULADD(t[1], c, ai, b[0], t[1]);
    MULADD(t[2], c, ai, b[1], t[2]);
    MULADD(t[3], c, ai, b[2], t[3]);
    MULADD(t[4], c, ai, b[3], t[4]);
    t[5] = c;
    ai = a[2];
    c = 0;
    MULADD(t[2], c, ai, b[0], t[2]);
    MULADD(t[3], c, ai, b[1], t[3]);
    MULADD(t[4], c, ai, b[2], t[4]);
    MULADD(t[5], c, ai, b[3], t[5]);
    t[6] = c;
    ai = a[3];
    c = 0;
    MULADD(t[3], c, ai, b[0], t[3]);
    MULADD(t[4], c, ai, b[1], t[4]);
    MULADD(t[5], c, ai, b[2], t[5]);
    MULADD(t[6], c, ai, b[3], t[6]);
    t[7] = c;
    fe_redc(r, t);
}

static void
fe_sqr_c(fe r, const fe a)
{
    uint64_t t[8], c, lo, hi;
    u128 x;

    /* Cross products a_i a_j, i < j, in t[1..6]. */
    c = 0;
    MULADD(t[1], c, a[0], a[1], 0);
    MULADD(t[2], c, a[0], a[2], 0);
    MULADD(t[3], c, a[0], a[3], 0);
    t[4] = c;
    c = 0;
    MULADD(t[3], c, a[1], a[2], t[3]);
    MULADD(t[4], c, a[1], a[3], t[4]);
    t[5] = c;
    c = 0;
    MULADD(t[5], c, a[2], a[3], t[5]);
    t[6] = c;
    /* Double them. */
    t[7] = t[6] >> 63;
    t[6] = t[6] << 1 | t[5] >> 63;
    t[5] = t[5] << 1 | t[4] >> 63;
    t[4] = t[4] << 1 | t[3] >> 63;
    t[3] = t[3] << 1 | t[2] >> 63;
    t[2] = t[2] << 1 | t[1] >> 63;
    t[1] = t[1] << 1;
    /* Add the squares. */
    x = (u128) a[0] * a[0];
    t[0] = (uint64_t) x;
    c = adc(&t[1], t[1], (uint64_t) (x >> 64), 0);
    x = (u128) a[1] * a[1];
    lo = (uint64_t) x;
    hi = (uint64_t) (x >> 64);
    c = adc(&t[2], t[2], lo, c);
    c = adc(&t[3], t[3], hi, c);
    x = (u128) a[2] * a[2];
    lo = (uint64_t) x;
    hi = (uint64_t) (x >> 64);
    c = adc(&t[4], t[4], lo, c);
    c = adc(&t[5], t[5], hi, c);
    x = (u128) a[3] * a[3];
    lo = (uint64_t) x;
    hi = (uint64_t) (x >> 64);
    c = adc(&t[6], t[6], lo, c);
    t[7] = t[7] + hi + c;
    fe_redc(r, t);
}

/* x86-64 BMI2/ADX path (GM__SM2P_IMPL_X86_ADX): the same Montgomery multiplication and
 * squaring in inline assembly, with MULX and two carry chains (ADCX/ADOX) for the 4x4 product
 * and the multiplication-free reduction of fe_redc (one step: add m at limbs 0 and 3 of the
 * shifted window, subtract m * 2^32 at limbs 0-1 and 2-3). The assembler accepts these
 * instructions without any compiler flag; they only run when gm__sm2p_impl_available says the
 * CPU has BMI2 and ADX. The final subtraction of p uses CMOV, so the code stays constant time.
 * The product limbs live in r8..r15; only rax, rcx, rdx are scratch, so the three pointer
 * operands fit even when rbp is reserved as a frame pointer. */
#if defined(__x86_64__)
#define SM2P_HAVE_ADX 1

/* Reduce the product t0..t7 in r8..r15 and store the result at r. */
#define SM2P_REDC_ASM                                                                              \
    "movq %%r8, %%rax\n\t"                                                                         \
    "shlq $32, %%rax\n\t"                                                                          \
    "movq %%r8, %%rcx\n\t"                                                                         \
    "shrq $32, %%rcx\n\t"                                                                          \
    "addq %%r8, %%r9\n\t"                                                                          \
    "adcq $0, %%r10\n\t"                                                                           \
    "adcq $0, %%r11\n\t"                                                                           \
    "adcq $0, %%r8\n\t"                                                                            \
    "subq %%rax, %%r9\n\t"                                                                         \
    "sbbq %%rcx, %%r10\n\t"                                                                        \
    "sbbq %%rax, %%r11\n\t"                                                                        \
    "sbbq %%rcx, %%r8\n\t"                                                                         \
    "movq %%r9, %%rax\n\t"                                                                         \
    "shlq $32, %%rax\n\t"                                                                          \
    "movq %%r9, %%rcx\n\t"                                                                         \
    "shrq $32, %%rcx\n\t"                                                                          \
    "addq %%r9, %%r10\n\t"                                                                         \
    "adcq $0, %%r11\n\t"                                                                           \
    "adcq $0, %%r8\n\t"                                                                            \
    "adcq $0, %%r9\n\t"                                                                            \
    "subq %%rax, %%r10\n\t"                                                                        \
    "sbbq %%rcx, %%r11\n\t"                                                                        \
    "sbbq %%rax, %%r8\n\t"                                                                         \
    "sbbq %%rcx, %%r9\n\t"                                                                         \
    "movq %%r10, %%rax\n\t"                                                                        \
    "shlq $32, %%rax\n\t"                                                                          \
    "movq %%r10, %%rcx\n\t"                                                                        \
    "shrq $32, %%rcx\n\t"                                                                          \
    "addq %%r10, %%r11\n\t"                                                                        \
    "adcq $0, %%r8\n\t"                                                                            \
    "adcq $0, %%r9\n\t"                                                                            \
    "adcq $0, %%r10\n\t"                                                                           \
    "subq %%rax, %%r11\n\t"                                                                        \
    "sbbq %%rcx, %%r8\n\t"                                                                         \
    "sbbq %%rax, %%r9\n\t"                                                                         \
    "sbbq %%rcx, %%r10\n\t"                                                                        \
    "movq %%r11, %%rax\n\t"                                                                        \
    "shlq $32, %%rax\n\t"                                                                          \
    "movq %%r11, %%rcx\n\t"                                                                        \
    "shrq $32, %%rcx\n\t"                                                                          \
    "addq %%r11, %%r8\n\t"                                                                         \
    "adcq $0, %%r9\n\t"                                                                            \
    "adcq $0, %%r10\n\t"                                                                           \
    "adcq $0, %%r11\n\t"                                                                           \
    "subq %%rax, %%r8\n\t"                                                                         \
    "sbbq %%rcx, %%r9\n\t"                                                                         \
    "sbbq %%rax, %%r10\n\t"                                                                        \
    "sbbq %%rcx, %%r11\n\t"                                                                        \
    "xorl %%edx, %%edx\n\t"                                                                        \
    "addq %%r12, %%r8\n\t"                                                                         \
    "adcq %%r13, %%r9\n\t"                                                                         \
    "adcq %%r14, %%r10\n\t"                                                                        \
    "adcq %%r15, %%r11\n\t"                                                                        \
    "adcq $0, %%rdx\n\t"                                                                           \
    "movl $0xffffffff, %%eax\n\t"                                                                  \
    "movabsq $0x100000000, %%rcx\n\t"                                                              \
    "movq %%r8, %%r12\n\t"                                                                         \
    "addq $1, %%r12\n\t"                                                                           \
    "movq %%r9, %%r13\n\t"                                                                         \
    "adcq %%rax, %%r13\n\t"                                                                        \
    "movq %%r10, %%r14\n\t"                                                                        \
    "adcq $0, %%r14\n\t"                                                                           \
    "movq %%r11, %%r15\n\t"                                                                        \
    "adcq %%rcx, %%r15\n\t"                                                                        \
    "adcq $0, %%rdx\n\t"                                                                           \
    "testq %%rdx, %%rdx\n\t"                                                                       \
    "cmovnzq %%r12, %%r8\n\t"                                                                      \
    "cmovnzq %%r13, %%r9\n\t"                                                                      \
    "cmovnzq %%r14, %%r10\n\t"                                                                     \
    "cmovnzq %%r15, %%r11\n\t"                                                                     \
    "movq %%r8, 0(%[r])\n\t"                                                                       \
    "movq %%r9, 8(%[r])\n\t"                                                                       \
    "movq %%r10, 16(%[r])\n\t"                                                                     \
    "movq %%r11, 24(%[r])\n\t"

static inline void
fe_mul_adx(fe r, const fe a, const fe b)
{
    __asm__ volatile(
        /* Row 0: t = a * b0. */
        "movq 0(%[b]), %%rdx\n\t"
        "mulxq 0(%[a]), %%r8, %%r9\n\t"
        "mulxq 8(%[a]), %%rax, %%r10\n\t"
        "addq %%rax, %%r9\n\t"
        "mulxq 16(%[a]), %%rax, %%r11\n\t"
        "adcq %%rax, %%r10\n\t"
        "mulxq 24(%[a]), %%rax, %%r12\n\t"
        "adcq %%rax, %%r11\n\t"
        "adcq $0, %%r12\n\t"
        /* Row 1. */
        "movq 8(%[b]), %%rdx\n\t"
        "xorl %%eax, %%eax\n\t"
        "mulxq 0(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r9\n\t"
        "adoxq %%rcx, %%r10\n\t"
        "mulxq 8(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r10\n\t"
        "adoxq %%rcx, %%r11\n\t"
        "mulxq 16(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r11\n\t"
        "adoxq %%rcx, %%r12\n\t"
        "mulxq 24(%[a]), %%rax, %%r13\n\t"
        "adcxq %%rax, %%r12\n\t"
        "movl $0, %%eax\n\t"
        "adoxq %%rax, %%r13\n\t"
        "adcxq %%rax, %%r13\n\t"
        /* Row 2. */
        "movq 16(%[b]), %%rdx\n\t"
        "xorl %%eax, %%eax\n\t"
        "mulxq 0(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r10\n\t"
        "adoxq %%rcx, %%r11\n\t"
        "mulxq 8(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r11\n\t"
        "adoxq %%rcx, %%r12\n\t"
        "mulxq 16(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r12\n\t"
        "adoxq %%rcx, %%r13\n\t"
        "mulxq 24(%[a]), %%rax, %%r14\n\t"
        "adcxq %%rax, %%r13\n\t"
        "movl $0, %%eax\n\t"
        "adoxq %%rax, %%r14\n\t"
        "adcxq %%rax, %%r14\n\t"
        /* Row 3. */
        "movq 24(%[b]), %%rdx\n\t"
        "xorl %%eax, %%eax\n\t"
        "mulxq 0(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r11\n\t"
        "adoxq %%rcx, %%r12\n\t"
        "mulxq 8(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r12\n\t"
        "adoxq %%rcx, %%r13\n\t"
        "mulxq 16(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r13\n\t"
        "adoxq %%rcx, %%r14\n\t"
        "mulxq 24(%[a]), %%rax, %%r15\n\t"
        "adcxq %%rax, %%r14\n\t"
        "movl $0, %%eax\n\t"
        "adoxq %%rax, %%r15\n\t"
        "adcxq %%rax, %%r15\n\t" SM2P_REDC_ASM
        :
        : [r] "r"(r), [a] "r"(a), [b] "r"(b)
        : "rax", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "cc",
          "memory");
}

static inline void
fe_sqr_adx(fe r, const fe a)
{
    __asm__ volatile(
        /* Cross products a_i a_j (i < j) into r9..r14. */
        "movq 0(%[a]), %%rdx\n\t"
        "mulxq 8(%[a]), %%r9, %%r10\n\t"
        "mulxq 16(%[a]), %%rax, %%r11\n\t"
        "addq %%rax, %%r10\n\t"
        "mulxq 24(%[a]), %%rax, %%r12\n\t"
        "adcq %%rax, %%r11\n\t"
        "adcq $0, %%r12\n\t"
        "movq 8(%[a]), %%rdx\n\t"
        "xorl %%eax, %%eax\n\t"
        "mulxq 16(%[a]), %%rax, %%rcx\n\t"
        "adcxq %%rax, %%r11\n\t"
        "adoxq %%rcx, %%r12\n\t"
        "mulxq 24(%[a]), %%rax, %%r13\n\t"
        "adcxq %%rax, %%r12\n\t"
        "movl $0, %%eax\n\t"
        "adoxq %%rax, %%r13\n\t"
        "adcxq %%rax, %%r13\n\t"
        "movq 16(%[a]), %%rdx\n\t"
        "mulxq 24(%[a]), %%rax, %%r14\n\t"
        "addq %%rax, %%r13\n\t"
        "adcq $0, %%r14\n\t"
        /* Double them (r15 = carry out). */
        "xorl %%r15d, %%r15d\n\t"
        "adcxq %%r9, %%r9\n\t"
        "adcxq %%r10, %%r10\n\t"
        "adcxq %%r11, %%r11\n\t"
        "adcxq %%r12, %%r12\n\t"
        "adcxq %%r13, %%r13\n\t"
        "adcxq %%r14, %%r14\n\t"
        "adcxq %%r15, %%r15\n\t"
        /* Add the squares a_i^2. */
        "movq 0(%[a]), %%rdx\n\t"
        "mulxq %%rdx, %%r8, %%rax\n\t"
        "addq %%rax, %%r9\n\t"
        "movq 8(%[a]), %%rdx\n\t"
        "mulxq %%rdx, %%rax, %%rcx\n\t"
        "adcq %%rax, %%r10\n\t"
        "adcq %%rcx, %%r11\n\t"
        "movq 16(%[a]), %%rdx\n\t"
        "mulxq %%rdx, %%rax, %%rcx\n\t"
        "adcq %%rax, %%r12\n\t"
        "adcq %%rcx, %%r13\n\t"
        "movq 24(%[a]), %%rdx\n\t"
        "mulxq %%rdx, %%rax, %%rcx\n\t"
        "adcq %%rax, %%r14\n\t"
        "adcq %%rcx, %%r15\n\t" SM2P_REDC_ASM
        :
        : [r] "r"(r), [a] "r"(a)
        : "rax", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "cc",
          "memory");
}

/* fe_add_x86 / fe_sub_x86: the same modular addition and subtraction with flag chains and
 * CMOV (plain x86-64 instructions; part of the x86 path only to keep the portable path C). */
static inline void
fe_add_x86(fe r, const fe a, const fe b)
{
    uint64_t t0, t1, t2, t3, u0, u1, u2, u3, c;

    __asm__("movq 0(%[a]), %[t0]\n\t"
            "movq 8(%[a]), %[t1]\n\t"
            "movq 16(%[a]), %[t2]\n\t"
            "movq 24(%[a]), %[t3]\n\t"
            "xorl %k[c], %k[c]\n\t"
            "addq 0(%[b]), %[t0]\n\t"
            "adcq 8(%[b]), %[t1]\n\t"
            "adcq 16(%[b]), %[t2]\n\t"
            "adcq 24(%[b]), %[t3]\n\t"
            "adcq $0, %[c]\n\t"
            "movq %[t0], %[u0]\n\t"
            "subq $-1, %[u0]\n\t"
            "movq %[t1], %[u1]\n\t"
            "sbbq %[p1], %[u1]\n\t"
            "movq %[t2], %[u2]\n\t"
            "sbbq $-1, %[u2]\n\t"
            "movq %[t3], %[u3]\n\t"
            "sbbq %[p3], %[u3]\n\t"
            "sbbq $0, %[c]\n\t"
            "cmovcq %[t0], %[u0]\n\t"
            "cmovcq %[t1], %[u1]\n\t"
            "cmovcq %[t2], %[u2]\n\t"
            "cmovcq %[t3], %[u3]\n\t"
            : [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [u0] "=&r"(u0),
              [u1] "=&r"(u1), [u2] "=&r"(u2), [u3] "=&r"(u3), [c] "=&r"(c)
            : [a] "r"(a), [b] "r"(b), [p1] "m"(FE_P[1]), [p3] "m"(FE_P[3]),
              "m"(*(const uint64_t(*)[4]) a), "m"(*(const uint64_t(*)[4]) b)
            : "cc");
    r[0] = u0;
    r[1] = u1;
    r[2] = u2;
    r[3] = u3;
}

static inline void
fe_sub_x86(fe r, const fe a, const fe b)
{
    uint64_t t0, t1, t2, t3, m, u1, u3;

    __asm__("movq 0(%[a]), %[t0]\n\t"
            "movq 8(%[a]), %[t1]\n\t"
            "movq 16(%[a]), %[t2]\n\t"
            "movq 24(%[a]), %[t3]\n\t"
            "subq 0(%[b]), %[t0]\n\t"
            "sbbq 8(%[b]), %[t1]\n\t"
            "sbbq 16(%[b]), %[t2]\n\t"
            "sbbq 24(%[b]), %[t3]\n\t"
            "sbbq %[m], %[m]\n\t"
            "movq %[p1], %[u1]\n\t"
            "andq %[m], %[u1]\n\t"
            "movq %[p3], %[u3]\n\t"
            "andq %[m], %[u3]\n\t"
            "addq %[m], %[t0]\n\t"
            "adcq %[u1], %[t1]\n\t"
            "adcq %[m], %[t2]\n\t"
            "adcq %[u3], %[t3]\n\t"
            : [t0] "=&r"(t0), [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3), [m] "=&r"(m),
              [u1] "=&r"(u1), [u3] "=&r"(u3)
            : [a] "r"(a), [b] "r"(b), [p1] "m"(FE_P[1]), [p3] "m"(FE_P[3]),
              "m"(*(const uint64_t(*)[4]) a), "m"(*(const uint64_t(*)[4]) b)
            : "cc");
    r[0] = t0;
    r[1] = t1;
    r[2] = t2;
    r[3] = t3;
}
#else
#define SM2P_HAVE_ADX 0
#endif

/* fe_mul / fe_sqr dispatch on the implementation chosen by the caller of the public entry
 * point (see gm__sm2p_impl_get); the branch is on a public constant and predicts perfectly. */
static inline void
fe_mul(int impl, fe r, const fe a, const fe b)
{
#if SM2P_HAVE_ADX
    if (impl == GM__SM2P_IMPL_X86_ADX) {
        fe_mul_adx(r, a, b);
        return;
    }
#endif
    (void) impl;
    fe_mul_c(r, a, b);
}

static inline void
fe_sqr(int impl, fe r, const fe a)
{
#if SM2P_HAVE_ADX
    if (impl == GM__SM2P_IMPL_X86_ADX) {
        fe_sqr_adx(r, a);
        return;
    }
#endif
    (void) impl;
    fe_sqr_c(r, a);
}

static inline void
fe_add(int impl, fe r, const fe a, const fe b)
{
#if SM2P_HAVE_ADX
    if (impl == GM__SM2P_IMPL_X86_ADX) {
        fe_add_x86(r, a, b);
        return;
    }
#endif
    (void) impl;
    fe_add_c(r, a, b);
}

static inline void
fe_sub(int impl, fe r, const fe a, const fe b)
{
#if SM2P_HAVE_ADX
    if (impl == GM__SM2P_IMPL_X86_ADX) {
        fe_sub_x86(r, a, b);
        return;
    }
#endif
    (void) impl;
    fe_sub_c(r, a, b);
}

static inline void
fe_neg(int impl, fe r, const fe a)
{
    static const fe zero = {0, 0, 0, 0};
    fe_sub(impl, r, zero, a);
}

static void
fe_sqr_n(int impl, fe r, const fe a, int n)
{
    fe_sqr(impl, r, a);
    for (int i = 1; i < n; i++) {
        fe_sqr(impl, r, r);
    }
}

/* fe_inv: r = a^(p-2) (so 0 maps to 0). p - 2 in binary, from the top: 31 ones, 0, 128 ones,
 * 32 zeros, 62 ones, 0, 1. x_k below is a^(2^k - 1). */
static void
fe_inv(int impl, fe r, const fe a)
{
    fe x2, x3, x6, x12, x15, x30, x31, x32, t;

    fe_sqr(impl, x2, a);
    fe_mul(impl, x2, x2, a);
    fe_sqr(impl, x3, x2);
    fe_mul(impl, x3, x3, a);
    fe_sqr_n(impl, x6, x3, 3);
    fe_mul(impl, x6, x6, x3);
    fe_sqr_n(impl, x12, x6, 6);
    fe_mul(impl, x12, x12, x6);
    fe_sqr_n(impl, x15, x12, 3);
    fe_mul(impl, x15, x15, x3);
    fe_sqr_n(impl, x30, x15, 15);
    fe_mul(impl, x30, x30, x15);
    fe_sqr(impl, x31, x30);
    fe_mul(impl, x31, x31, a);
    fe_sqr(impl, x32, x31);
    fe_mul(impl, x32, x32, a);

    fe_sqr_n(impl, t, x31, 33);
    fe_mul(impl, t, t, x32);
    fe_sqr_n(impl, t, t, 32);
    fe_mul(impl, t, t, x32);
    fe_sqr_n(impl, t, t, 32);
    fe_mul(impl, t, t, x32);
    fe_sqr_n(impl, t, t, 32);
    fe_mul(impl, t, t, x32);
    fe_sqr_n(impl, t, t, 64);
    fe_mul(impl, t, t, x32);
    fe_sqr_n(impl, t, t, 30);
    fe_mul(impl, t, t, x30);
    fe_sqr_n(impl, t, t, 2);
    fe_mul(impl, r, t, a);
    explicit_bzero(x2, sizeof x2);
    explicit_bzero(x3, sizeof x3);
    explicit_bzero(x6, sizeof x6);
    explicit_bzero(x12, sizeof x12);
    explicit_bzero(x15, sizeof x15);
    explicit_bzero(x30, sizeof x30);
    explicit_bzero(x31, sizeof x31);
    explicit_bzero(x32, sizeof x32);
    explicit_bzero(t, sizeof t);
}

static inline void
fe_to_mont(fe r, const fe a)
{
    fe_mul_c(r, a, FE_R2);
}

static inline void
fe_from_mont(fe r, const fe a)
{
    uint64_t t[8] = {a[0], a[1], a[2], a[3], 0, 0, 0, 0};
    fe_redc(r, t);
}

static inline uint64_t
fe_is_zero(const fe a)
{
    return limbs_is_zero(a);
}

/* fe_from_be parses a big-endian field element into Montgomery form; all ones iff it is < p. */
static uint64_t
fe_from_be(fe r, const uint8_t in[32])
{
    fe t;
    uint64_t ok;

    limbs_from_be(t, in);
    ok = lt_mask(t, FE_P);
    fe_to_mont(r, t);
    return ok;
}

static void
fe_to_be(uint8_t out[32], const fe a)
{
    fe t;
    fe_from_mont(t, a);
    limbs_to_be(out, t);
}

/* ------------------------------------------------------------------------------------------ */
/* Scalars mod n. Values are 4 limbs; Montgomery form only where stated. */

/* sc_reduce1: r = a mod n for a < 2^256 (< 2n), constant time. */
static void
sc_reduce1(uint64_t r[4], const uint64_t a[4])
{
    uint64_t d[4], br, m;

    br = sbb(&d[0], a[0], SC_N[0], 0);
    br = sbb(&d[1], a[1], SC_N[1], br);
    br = sbb(&d[2], a[2], SC_N[2], br);
    br = sbb(&d[3], a[3], SC_N[3], br);
    m = vbar(0 - br); /* a < n: keep a */
    for (int i = 0; i < 4; i++) {
        r[i] = (a[i] & m) | (d[i] & ~m);
    }
}

static void
sc_add(uint64_t r[4], const uint64_t a[4], const uint64_t b[4])
{
    uint64_t s[4], d[4], c, br, m;

    c = adc(&s[0], a[0], b[0], 0);
    c = adc(&s[1], a[1], b[1], c);
    c = adc(&s[2], a[2], b[2], c);
    c = adc(&s[3], a[3], b[3], c);
    br = sbb(&d[0], s[0], SC_N[0], 0);
    br = sbb(&d[1], s[1], SC_N[1], br);
    br = sbb(&d[2], s[2], SC_N[2], br);
    br = sbb(&d[3], s[3], SC_N[3], br);
    m = vbar(0 - (br & (c ^ 1)));
    for (int i = 0; i < 4; i++) {
        r[i] = (s[i] & m) | (d[i] & ~m);
    }
}

static void
sc_sub(uint64_t r[4], const uint64_t a[4], const uint64_t b[4])
{
    uint64_t d[4], br, c, m;

    br = sbb(&d[0], a[0], b[0], 0);
    br = sbb(&d[1], a[1], b[1], br);
    br = sbb(&d[2], a[2], b[2], br);
    br = sbb(&d[3], a[3], b[3], br);
    m = vbar(0 - br);
    c = adc(&r[0], d[0], SC_N[0] & m, 0);
    c = adc(&r[1], d[1], SC_N[1] & m, c);
    c = adc(&r[2], d[2], SC_N[2] & m, c);
    (void) adc(&r[3], d[3], SC_N[3] & m, c);
}

/* sc_mul: Montgomery product a * b * 2^-256 mod n for a, b < n (CIOS). */
static void
sc_mul(uint64_t r[4], const uint64_t a[4], const uint64_t b[4])
{
    uint64_t t0 = 0, t1 = 0, t2 = 0, t3 = 0, t4 = 0, t5, c, m, ai, u;
    u128 x;

    for (int i = 0; i < 4; i++) {
        ai = a[i];
        c = 0;
        MULADD(t0, c, ai, b[0], t0);
        MULADD(t1, c, ai, b[1], t1);
        MULADD(t2, c, ai, b[2], t2);
        MULADD(t3, c, ai, b[3], t3);
        x = (u128) t4 + c;
        t4 = (uint64_t) x;
        t5 = (uint64_t) (x >> 64);
        m = t0 * SC_N0;
        c = 0;
        MULADD(u, c, m, SC_N[0], t0);
        (void) u;
        MULADD(t0, c, m, SC_N[1], t1);
        MULADD(t1, c, m, SC_N[2], t2);
        MULADD(t2, c, m, SC_N[3], t3);
        x = (u128) t4 + c;
        t3 = (uint64_t) x;
        t4 = t5 + (uint64_t) (x >> 64);
    }
    {
        uint64_t d[4], br, k, tt[4] = {t0, t1, t2, t3};
        br = sbb(&d[0], t0, SC_N[0], 0);
        br = sbb(&d[1], t1, SC_N[1], br);
        br = sbb(&d[2], t2, SC_N[2], br);
        br = sbb(&d[3], t3, SC_N[3], br);
        k = vbar(0 - (br & (t4 ^ 1)));
        for (int i = 0; i < 4; i++) {
            r[i] = (tt[i] & k) | (d[i] & ~k);
        }
    }
}

/* sc_sqr_n: t = t^(2^n) in Montgomery form. */
static void
sc_sqr_n(uint64_t t[4], int n)
{
    for (int i = 0; i < n; i++) {
        sc_mul(t, t, t);
    }
}

/* sc_inv_mont: r = a^(n-2) in Montgomery form (a = xR gives x^-1 R). The exponent is public:
 * its top 128 bits are 31 ones, 0, 96 ones (x_k = a^(2^k - 1) below); the low 128 bits go by
 * fixed 4-bit windows over tab[i] = a^i. Window values come from the exponent only. */
static void
sc_inv_mont(uint64_t r[4], const uint64_t a[4])
{
    uint64_t tab[16][4], x8[4], x12[4], x15[4], x16[4], x31[4], x32[4], t[4];

    memcpy(tab[1], a, 32);
    sc_mul(tab[2], a, a);
    for (int i = 3; i < 16; i++) {
        sc_mul(tab[i], tab[i - 1], a);
    }
    memcpy(x8, tab[15], 32);
    sc_sqr_n(x8, 4);
    sc_mul(x8, x8, tab[15]);
    memcpy(x12, x8, 32);
    sc_sqr_n(x12, 4);
    sc_mul(x12, x12, tab[15]);
    memcpy(x15, x12, 32);
    sc_sqr_n(x15, 3);
    sc_mul(x15, x15, tab[7]);
    sc_mul(x16, x15, x15);
    sc_mul(x16, x16, a);
    memcpy(x31, x16, 32);
    sc_sqr_n(x31, 15);
    sc_mul(x31, x31, x15);
    sc_mul(x32, x31, x31);
    sc_mul(x32, x32, a);

    memcpy(t, x31, 32);
    sc_sqr_n(t, 33);
    sc_mul(t, t, x32);
    sc_sqr_n(t, 32);
    sc_mul(t, t, x32);
    sc_sqr_n(t, 32);
    sc_mul(t, t, x32);
    for (int w = 31; w >= 0; w--) {
        unsigned nib = (unsigned) (SC_NM2_LO[w / 16] >> (4 * (w % 16))) & 15;
        sc_sqr_n(t, 4);
        if (nib != 0) {
            sc_mul(t, t, tab[nib]);
        }
    }
    memcpy(r, t, 32);
    explicit_bzero(tab, sizeof tab);
    explicit_bzero(x8, sizeof x8);
    explicit_bzero(x12, sizeof x12);
    explicit_bzero(x15, sizeof x15);
    explicit_bzero(x16, sizeof x16);
    explicit_bzero(x31, sizeof x31);
    explicit_bzero(x32, sizeof x32);
    explicit_bzero(t, sizeof t);
}

/* ------------------------------------------------------------------------------------------ */
/* Point arithmetic. Constant-time formulas (no branches); callers handle the special cases. */

/* fe_half: r = a / 2 mod p (add p when a is odd, then shift), constant time. */
static inline void
fe_half(fe r, const fe a)
{
    uint64_t m = 0 - (a[0] & 1), t0, t1, t2, t3, c;

    m = vbar(m);
    c = adc(&t0, a[0], FE_P[0] & m, 0);
    c = adc(&t1, a[1], FE_P[1] & m, c);
    c = adc(&t2, a[2], FE_P[2] & m, c);
    c = adc(&t3, a[3], FE_P[3] & m, c);
    r[0] = t0 >> 1 | t1 << 63;
    r[1] = t1 >> 1 | t2 << 63;
    r[2] = t2 >> 1 | t3 << 63;
    r[3] = t3 >> 1 | c << 63;
}

/* jac_dbl: r = 2a for a = -3, 4M+4S and ten additions: with Y' = 2Y, T = Y'^2 = 4Y^2,
 * S = X T, alpha = 3 (X - Z^2)(X + Z^2): X3 = alpha^2 - 2S, Y3 = alpha (S - X3) - T^2 / 2,
 * Z3 = Y' Z. Infinity (Z = 0) maps to infinity. r may alias a. */
static void
jac_dbl(int impl, sm2p_jac *r, const sm2p_jac *a)
{
    fe y2, delta, t0, t1, alpha, t, s, u, z3;

    fe_add(impl, y2, a->Y, a->Y);
    fe_sqr(impl, delta, a->Z);
    fe_sub(impl, t0, a->X, delta);
    fe_add(impl, t1, a->X, delta);
    fe_mul(impl, z3, y2, a->Z);
    fe_mul(impl, t0, t0, t1);
    fe_sqr(impl, t, y2);
    fe_mul(impl, s, a->X, t);
    fe_sqr(impl, u, t);
    fe_half(u, u);
    fe_add(impl, alpha, t0, t0);
    fe_add(impl, alpha, alpha, t0);
    fe_sqr(impl, t0, alpha);
    fe_add(impl, t1, s, s);
    fe_sub(impl, r->X, t0, t1);
    fe_sub(impl, t0, s, r->X);
    fe_mul(impl, t0, alpha, t0);
    fe_sub(impl, r->Y, t0, u);
    fe_copy(r->Z, z3);
}

/* jac_madd: r = a + b, b affine (madd-2004-hmv, 8M+3S). Outputs H = x2 Z1^2 - X1 and
 * R = y2 Z1^3 - Y1 so that callers can detect a = +-b (H = 0). Wrong when a is infinity or
 * a = +-b. r may alias a. */
static void
jac_madd(int impl, sm2p_jac *r, fe h_out, fe r_out, const sm2p_jac *a, const sm2p_aff *b)
{
    fe z1z1, t2, u2, s2, h, rr, hh, hhh, v, t;

    fe_sqr(impl, z1z1, a->Z);
    fe_mul(impl, t2, a->Z, z1z1);
    fe_mul(impl, u2, b->x, z1z1);
    fe_mul(impl, s2, b->y, t2);
    fe_sub(impl, h, u2, a->X);
    fe_sub(impl, rr, s2, a->Y);
    fe_sqr(impl, hh, h);
    fe_mul(impl, hhh, h, hh);
    fe_mul(impl, v, a->X, hh);
    fe_mul(impl, r->Z, a->Z, h);
    fe_mul(impl, t2, a->Y, hhh);
    fe_sqr(impl, t, rr);
    fe_sub(impl, t, t, hhh);
    fe_sub(impl, t, t, v);
    fe_sub(impl, r->X, t, v);
    fe_sub(impl, t, v, r->X);
    fe_mul(impl, t, rr, t);
    fe_sub(impl, r->Y, t, t2);
    if (h_out != NULL) {
        fe_copy(h_out, h);
        fe_copy(r_out, rr);
    }
}

/* jac_add: r = a + b, both Jacobian (12M+4S). Same contract as jac_madd. */
static void
jac_add(int impl, sm2p_jac *r, fe h_out, fe r_out, const sm2p_jac *a, const sm2p_jac *b)
{
    fe z1z1, z2z2, u1, u2, s1, s2, h, rr, hh, hhh, v, t;

    fe_sqr(impl, z1z1, a->Z);
    fe_sqr(impl, z2z2, b->Z);
    fe_mul(impl, u1, a->X, z2z2);
    fe_mul(impl, u2, b->X, z1z1);
    fe_mul(impl, s1, a->Y, b->Z);
    fe_mul(impl, s1, s1, z2z2);
    fe_mul(impl, s2, b->Y, a->Z);
    fe_mul(impl, s2, s2, z1z1);
    fe_sub(impl, h, u2, u1);
    fe_sub(impl, rr, s2, s1);
    fe_sqr(impl, hh, h);
    fe_mul(impl, hhh, h, hh);
    fe_mul(impl, v, u1, hh);
    fe_mul(impl, t, a->Z, b->Z);
    fe_mul(impl, r->Z, t, h);
    fe_mul(impl, s1, s1, hhh);
    fe_sqr(impl, t, rr);
    fe_sub(impl, t, t, hhh);
    fe_sub(impl, t, t, v);
    fe_sub(impl, r->X, t, v);
    fe_sub(impl, t, v, r->X);
    fe_mul(impl, t, rr, t);
    fe_sub(impl, r->Y, t, s1);
    if (h_out != NULL) {
        fe_copy(h_out, h);
        fe_copy(r_out, rr);
    }
}

static inline void
jac_cmov(sm2p_jac *r, const sm2p_jac *a, uint64_t m)
{
    cmov4(r->X, a->X, m);
    cmov4(r->Y, a->Y, m);
    cmov4(r->Z, a->Z, m);
}

/* jac_to_aff: affine coordinates (Montgomery form) of a; infinity gives (0, 0). Constant time. */
static void
jac_to_aff(int impl, sm2p_aff *r, const sm2p_jac *a)
{
    fe zi, zi2;

    fe_inv(impl, zi, a->Z);
    fe_sqr(impl, zi2, zi);
    fe_mul(impl, r->x, a->X, zi2);
    fe_mul(impl, zi2, zi2, zi);
    fe_mul(impl, r->y, a->Y, zi2);
}

/* Variable-time complete addition for public data: handles infinity and doubling. */
static void
vt_add(int impl, sm2p_jac *r, const sm2p_jac *a, const sm2p_jac *b)
{
    fe h, rr;
    sm2p_jac t;

    if (fe_is_zero(a->Z)) {
        *r = *b;
        return;
    }
    if (fe_is_zero(b->Z)) {
        *r = *a;
        return;
    }
    jac_add(impl, &t, h, rr, a, b);
    if (fe_is_zero(h)) {
        if (fe_is_zero(rr)) {
            jac_dbl(impl, r, a);
        } else {
            memset(r, 0, sizeof *r);
        }
        return;
    }
    *r = t;
}

static void
vt_madd(int impl, sm2p_jac *r, const sm2p_jac *a, const sm2p_aff *b)
{
    fe h, rr;
    sm2p_jac t;

    if (fe_is_zero(a->Z)) {
        fe_copy(r->X, b->x);
        fe_copy(r->Y, b->y);
        fe_copy(r->Z, FE_ONE);
        return;
    }
    jac_madd(impl, &t, h, rr, a, b);
    if (fe_is_zero(h)) {
        if (fe_is_zero(rr)) {
            jac_dbl(impl, r, a);
        } else {
            memset(r, 0, sizeof *r);
        }
        return;
    }
    *r = t;
}

/* batch_to_aff converts num Jacobian points (none at infinity) with one inversion. */
static void
batch_to_aff(int impl, sm2p_aff *out, const sm2p_jac *in, size_t num, fe *scratch)
{
    fe inv, zi, zi2;

    fe_copy(scratch[0], in[0].Z);
    for (size_t i = 1; i < num; i++) {
        fe_mul(impl, scratch[i], scratch[i - 1], in[i].Z);
    }
    fe_inv(impl, inv, scratch[num - 1]);
    for (size_t i = num; i-- > 0;) {
        if (i > 0) {
            fe_mul(impl, zi, inv, scratch[i - 1]);
            fe_mul(impl, inv, inv, in[i].Z);
        } else {
            fe_copy(zi, inv);
        }
        fe_sqr(impl, zi2, zi);
        fe_mul(impl, out[i].x, in[i].X, zi2);
        fe_mul(impl, zi2, zi2, zi);
        fe_mul(impl, out[i].y, in[i].Y, zi2);
    }
}

/* on_curve: all ones iff y^2 = x^3 - 3x + b (Montgomery form inputs). */
static uint64_t
on_curve(const fe x, const fe y)
{
    fe l, r, t;

    fe_sqr_c(l, y);
    fe_sqr_c(r, x);
    fe_mul_c(r, r, x);
    fe_add_c(t, x, x);
    fe_add_c(t, t, x);
    fe_sub_c(r, r, t);
    fe_add_c(r, r, FE_B);
    return limbs_eq(l, r);
}

/* aff_from_be parses x||y; returns 0 iff both < p and on the curve. */
static int
aff_from_be(sm2p_aff *r, const uint8_t in[64])
{
    uint64_t ok = fe_from_be(r->x, in);
    ok &= fe_from_be(r->y, in + 32);
    ok &= on_curve(r->x, r->y);
    return ok ? 0 : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Fixed tables for G, built once. */

#define COMB_W    6
#define COMB_ROWS 43 /* ceil(257 / 6) */
#define COMB_COLS 32 /* 2^(COMB_W-1) */
#define VG_W      8  /* wNAF width for u1 in verification */
#define VG_COLS   64 /* odd multiples 1, 3, .., 127 */
#define VP_W      5  /* wNAF width for u2 (no per-key table) */
#define VP_COLS   8
#define PT_W      7 /* wNAF width for the per-key tables */
#define PT_COLS   32

static sm2p_aff comb_tab[COMB_ROWS][COMB_COLS]; /* j+1 times 2^(6i) G */
static sm2p_aff vg_tab[4][VG_COLS];             /* (2j+1) 2^(64i) G */
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

/* odd_multiples fills out[j] = (2j+1) B (Jacobian, variable time, B public and not at
 * infinity). */
static void
odd_multiples(int impl, sm2p_jac *out, const sm2p_jac *b, int num)
{
    sm2p_jac b2;

    out[0] = *b;
    jac_dbl(impl, &b2, b);
    for (int j = 1; j < num; j++) {
        vt_add(impl, &out[j], &out[j - 1], &b2);
    }
}

static void
tables_build(void)
{
    const int impl = GM__SM2P_IMPL_PORTABLE;
    sm2p_jac row[VG_COLS], base;
    fe scratch[VG_COLS];

    /* Comb rows: base = 2^(6i) G; row j = (j+1) base. */
    fe_copy(base.X, FE_GX);
    fe_copy(base.Y, FE_GY);
    fe_copy(base.Z, FE_ONE);
    for (int i = 0; i < COMB_ROWS; i++) {
        row[0] = base;
        jac_dbl(impl, &row[1], &base);
        for (int j = 2; j < COMB_COLS; j++) {
            vt_add(impl, &row[j], &row[j - 1], &base);
        }
        batch_to_aff(impl, comb_tab[i], row, COMB_COLS, scratch);
        for (int j = 0; j < COMB_W; j++) {
            jac_dbl(impl, &base, &base);
        }
    }
    /* Verification tables: base = 2^(64i) G, odd multiples. */
    fe_copy(base.X, FE_GX);
    fe_copy(base.Y, FE_GY);
    fe_copy(base.Z, FE_ONE);
    for (int i = 0; i < 4; i++) {
        odd_multiples(impl, row, &base, VG_COLS);
        batch_to_aff(impl, vg_tab[i], row, VG_COLS, scratch);
        for (int j = 0; j < 64; j++) {
            jac_dbl(impl, &base, &base);
        }
    }
}

static inline void
tables_init(void)
{
    (void) pthread_once(&tab_once, tables_build);
}

/* ------------------------------------------------------------------------------------------ */
/* Constant-time scalar multiplication. */

/* booth_digit: signed digit i of width w of k, from the bits of kk = 2k at w*i .. w*i+w.
 * Returns |digit| and sets *neg to all ones when the digit is negative. pos is public. */
static inline uint64_t
booth_digit(const uint64_t kk[5], unsigned pos, unsigned w, uint64_t *neg)
{
    unsigned limb = pos / 64, sh = pos % 64;
    uint64_t v, d, top, alt;

    v = kk[limb] >> sh;
    if (sh + w + 1 > 64 && limb < 4) {
        v |= kk[limb + 1] << (64 - sh);
    }
    v &= ((uint64_t) 1 << (w + 1)) - 1;
    d = (v >> 1) + (v & 1);
    top = vbar(0 - (v >> w));
    alt = ((uint64_t) 1 << w) - d;
    *neg = top;
    return (d & ~top) | (alt & top);
}

static inline void
scalar_double(uint64_t kk[5], const uint64_t k[4])
{
    kk[0] = k[0] << 1;
    kk[1] = k[1] << 1 | k[0] >> 63;
    kk[2] = k[2] << 1 | k[1] >> 63;
    kk[3] = k[3] << 1 | k[2] >> 63;
    kk[4] = k[3] >> 63;
}

#if SM2P_HAVE_ADX
/* AVX2 table scans for the x86 path: the same masked reads of every entry, two or three
 * 256-bit lanes per entry, the mask from a vector compare. */
__attribute__((target("avx2"))) static void
aff_select_avx2(sm2p_aff *out, const sm2p_aff *row, int num, uint64_t idx)
{
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    __m256i want = _mm256_set1_epi64x((long long) idx), one = _mm256_set1_epi64x(1);
    __m256i cur = one;

    for (int j = 0; j < num; j++) {
        const __m256i *e = (const __m256i *) &row[j];
        __m256i m = _mm256_cmpeq_epi64(cur, want);
        acc0 = _mm256_or_si256(acc0, _mm256_and_si256(_mm256_loadu_si256(e), m));
        acc1 = _mm256_or_si256(acc1, _mm256_and_si256(_mm256_loadu_si256(e + 1), m));
        cur = _mm256_add_epi64(cur, one);
    }
    _mm256_storeu_si256((__m256i *) out, acc0);
    _mm256_storeu_si256((__m256i *) out + 1, acc1);
}

__attribute__((target("avx2"))) static void
jac_select_avx2(sm2p_jac *out, const sm2p_jac *tab, int num, uint64_t idx)
{
    __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
    __m256i acc2 = _mm256_setzero_si256();
    __m256i want = _mm256_set1_epi64x((long long) idx), one = _mm256_set1_epi64x(1);
    __m256i cur = one;

    for (int j = 0; j < num; j++) {
        const __m256i *e = (const __m256i *) &tab[j];
        __m256i m = _mm256_cmpeq_epi64(cur, want);
        acc0 = _mm256_or_si256(acc0, _mm256_and_si256(_mm256_loadu_si256(e), m));
        acc1 = _mm256_or_si256(acc1, _mm256_and_si256(_mm256_loadu_si256(e + 1), m));
        acc2 = _mm256_or_si256(acc2, _mm256_and_si256(_mm256_loadu_si256(e + 2), m));
        cur = _mm256_add_epi64(cur, one);
    }
    _mm256_storeu_si256((__m256i *) out, acc0);
    _mm256_storeu_si256((__m256i *) out + 1, acc1);
    _mm256_storeu_si256((__m256i *) out + 2, acc2);
}
#endif

/* aff_select: out = row[idx-1] for idx in 1..num, all zeros for idx = 0, reading every entry. */
static inline void
aff_select(int impl, sm2p_aff *out, const sm2p_aff *row, int num, uint64_t idx)
{
    uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};

#if SM2P_HAVE_ADX
    if (impl == GM__SM2P_IMPL_X86_ADX) {
        aff_select_avx2(out, row, num, idx);
        return;
    }
#endif
    (void) impl;
    for (int j = 0; j < num; j++) {
        uint64_t m = mask_eq((uint64_t) j + 1, idx);
        const uint64_t *e = (const uint64_t *) &row[j];
        for (int l = 0; l < 8; l++) {
            acc[l] |= e[l] & m;
        }
    }
    memcpy(out, acc, sizeof acc);
}

static inline void
jac_select(int impl, sm2p_jac *out, const sm2p_jac *tab, int num, uint64_t idx)
{
    uint64_t acc[12] = {0};

#if SM2P_HAVE_ADX
    if (impl == GM__SM2P_IMPL_X86_ADX) {
        jac_select_avx2(out, tab, num, idx);
        return;
    }
#endif
    (void) impl;
    for (int j = 0; j < num; j++) {
        uint64_t m = mask_eq((uint64_t) j + 1, idx);
        const uint64_t *e = (const uint64_t *) &tab[j];
        for (int l = 0; l < 12; l++) {
            acc[l] |= e[l] & m;
        }
    }
    memcpy(out, acc, sizeof acc);
}

/* fe_cneg: a = m ? -a : a. */
static inline void
fe_cneg(int impl, fe a, uint64_t m)
{
    fe n;
    fe_neg(impl, n, a);
    cmov4(a, n, m);
}

/* comb_mul: out = k G for k < n, constant time. *inf is all ones iff the result is infinity
 * (k = 0). */
static void
comb_mul(int impl, sm2p_jac *out, uint64_t *inf_out, const uint64_t k[4])
{
    uint64_t kk[5], mag, neg, nz, inf, take_sum, take_t, hz, rz, dbl_m, inf_m;
    sm2p_jac acc, sum, dbl;
    sm2p_aff t;
    fe h, rr;

    scalar_double(kk, k);
    mag = booth_digit(kk, 0, COMB_W, &neg);
    aff_select(impl, &t, comb_tab[0], COMB_COLS, mag);
    fe_cneg(impl, t.y, neg);
    fe_copy(acc.X, t.x);
    fe_copy(acc.Y, t.y);
    fe_copy(acc.Z, FE_ONE);
    inf = mask_zero(mag);
    for (int i = 1; i < COMB_ROWS; i++) {
        mag = booth_digit(kk, (unsigned) (COMB_W * i), COMB_W, &neg);
        aff_select(impl, &t, comb_tab[i], COMB_COLS, mag);
        fe_cneg(impl, t.y, neg);
        nz = ~mask_zero(mag);
        jac_madd(impl, &sum, h, rr, &acc, &t);
        take_sum = nz & ~inf;
        take_t = nz & inf;
        inf_m = 0;
        if (i == COMB_ROWS - 1) {
            /* Last row: complete the addition (see the essay). */
            jac_dbl(impl, &dbl, &acc);
            hz = fe_is_zero(h);
            rz = fe_is_zero(rr);
            dbl_m = take_sum & hz & rz;
            inf_m = take_sum & hz & ~rz;
            jac_cmov(&sum, &dbl, dbl_m);
            take_sum &= ~inf_m;
        }
        jac_cmov(&acc, &sum, take_sum);
        cmov4(acc.X, t.x, take_t);
        cmov4(acc.Y, t.y, take_t);
        cmov4(acc.Z, FE_ONE, take_t);
        inf = (inf & ~nz) | inf_m;
    }
    *out = acc;
    *inf_out = inf;
    explicit_bzero(kk, sizeof kk);
    explicit_bzero(&t, sizeof t);
    explicit_bzero(&sum, sizeof sum);
    explicit_bzero(&dbl, sizeof dbl);
    explicit_bzero(&acc, sizeof acc);
}

/* var_mul: out = k P for k < n and P a valid affine point, constant time in k. *inf_out is all
 * ones iff the result is infinity (k = 0). */
static void
var_mul(int impl, sm2p_jac *out, uint64_t *inf_out, const uint64_t k[4], const sm2p_aff *p)
{
    sm2p_jac tab[16], acc, sum, dbl, t;
    uint64_t kk[5], mag, neg, nz, inf, take_sum, take_t, hz, rz, dbl_m, inf_m;
    fe h, rr;

    /* tab[j] = (j+1) P. P is public, so the table build may use variable-time additions;
     * (j+1) P for j < 16 is never infinity or a doubling case except j = 1. */
    fe_copy(tab[0].X, p->x);
    fe_copy(tab[0].Y, p->y);
    fe_copy(tab[0].Z, FE_ONE);
    jac_dbl(impl, &tab[1], &tab[0]);
    for (int j = 2; j < 16; j++) {
        vt_madd(impl, &tab[j], &tab[j - 1], p);
    }

    scalar_double(kk, k);
    mag = booth_digit(kk, 5 * 51, 5, &neg);
    jac_select(impl, &acc, tab, 16, mag);
    fe_cneg(impl, acc.Y, neg);
    inf = mask_zero(mag);
    for (int i = 50; i >= 0; i--) {
        for (int j = 0; j < 5; j++) {
            jac_dbl(impl, &acc, &acc);
        }
        mag = booth_digit(kk, (unsigned) (5 * i), 5, &neg);
        jac_select(impl, &t, tab, 16, mag);
        fe_cneg(impl, t.Y, neg);
        nz = ~mask_zero(mag);
        jac_add(impl, &sum, h, rr, &acc, &t);
        take_sum = nz & ~inf;
        take_t = nz & inf;
        inf_m = 0;
        if (i == 0) {
            /* Final digit: complete the addition (see the essay). */
            jac_dbl(impl, &dbl, &acc);
            hz = fe_is_zero(h);
            rz = fe_is_zero(rr);
            dbl_m = take_sum & hz & rz;
            inf_m = take_sum & hz & ~rz;
            jac_cmov(&sum, &dbl, dbl_m);
            take_sum &= ~inf_m;
        }
        jac_cmov(&acc, &sum, take_sum);
        jac_cmov(&acc, &t, take_t);
        inf = (inf & ~nz) | inf_m;
    }
    *out = acc;
    *inf_out = inf;
    explicit_bzero(kk, sizeof kk);
    explicit_bzero(&acc, sizeof acc);
    explicit_bzero(&sum, sizeof sum);
    explicit_bzero(&dbl, sizeof dbl);
    explicit_bzero(&t, sizeof t);
    explicit_bzero(tab, sizeof tab);
}

/* aff_to_be_masked writes a (Montgomery form) as x||y, or zeros where m is all ones. */
static void
aff_to_be_masked(uint8_t out[64], const sm2p_aff *a, uint64_t m)
{
    fe_to_be(out, a->x);
    fe_to_be(out + 32, a->y);
    for (int i = 0; i < 64; i++) {
        out[i] &= (uint8_t) ~m;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Scalar checks and scalar multiplication entry points. */

static const uint64_t SC_NM1[4] = {0x53bbf40939d54122ULL, 0x7203df6b21c6052bULL,
                                   0xffffffffffffffffULL, 0xfffffffeffffffffULL};

/* key_ok: all ones iff 1 <= d <= n-2. */
static uint64_t
key_ok(const uint64_t d[4])
{
    return ~limbs_is_zero(d) & lt_mask(d, SC_NM1);
}

int
gm__sm2p_scalar_check(const uint8_t d[32])
{
    uint64_t x[4], ok;
    int ret;

    limbs_from_be(x, d);
    ok = key_ok(x);
    ret = (int) (ok & 1) - 1;
    explicit_bzero(x, sizeof x);
    SM2P_DECLASSIFY(&ret, sizeof ret);
    return ret;
}

static int
base_mul_impl(int impl, uint8_t out_xy[64], const uint8_t k[32])
{
    uint64_t x[4], inf;
    sm2p_jac j;
    sm2p_aff a;
    int ret;

    tables_init();
    limbs_from_be(x, k);
    sc_reduce1(x, x);
    comb_mul(impl, &j, &inf, x);
    jac_to_aff(impl, &a, &j);
    aff_to_be_masked(out_xy, &a, inf);
    ret = -(int) (inf & 1);
    explicit_bzero(x, sizeof x);
    explicit_bzero(&j, sizeof j);
    explicit_bzero(&a, sizeof a);
    SM2P_DECLASSIFY(&ret, sizeof ret);
    return ret;
}

static int
point_mul_impl(int impl, uint8_t out_xy[64], const uint8_t k[32], const uint8_t p_xy[64])
{
    uint64_t x[4], inf;
    sm2p_jac j;
    sm2p_aff a, p;
    int ret;

    if (aff_from_be(&p, p_xy) != 0) {
        memset(out_xy, 0, 64);
        return -1;
    }
    limbs_from_be(x, k);
    sc_reduce1(x, x);
    var_mul(impl, &j, &inf, x, &p);
    jac_to_aff(impl, &a, &j);
    aff_to_be_masked(out_xy, &a, inf);
    ret = -(int) (inf & 1);
    explicit_bzero(x, sizeof x);
    explicit_bzero(&j, sizeof j);
    explicit_bzero(&a, sizeof a);
    SM2P_DECLASSIFY(&ret, sizeof ret);
    return ret;
}

int
gm__sm2p_point_check(const uint8_t p_xy[64])
{
    sm2p_aff p;
    return aff_from_be(&p, p_xy);
}

/* ------------------------------------------------------------------------------------------ */
/* Signing. */

/* dinv_mont: (1+d)^-1 mod n in Montgomery form. d is reduced first so that an invalid d
 * (rejected by the caller) still stays inside the arithmetic's input bounds. */
static void
dinv_mont(uint64_t out[4], const uint64_t d[4])
{
    uint64_t t[4], c;

    sc_reduce1(t, d);
    c = adc(&t[0], t[0], 1, 0);
    c = adc(&t[1], t[1], 0, c);
    c = adc(&t[2], t[2], 0, c);
    (void) adc(&t[3], t[3], 0, c);
    sc_reduce1(t, t);
    sc_mul(t, t, SC_R2);
    sc_inv_mont(out, t);
    explicit_bzero(t, sizeof t);
}

/* sign_finish: r = e + x1, s = (1+d)^-1 (k + r) - r mod n (all inputs < n). Returns all ones
 * when the nonce must be rejected: r = 0, r + k = 0 mod n, or s = 0. */
static uint64_t
sign_finish(uint64_t r[4], uint64_t s[4], const uint64_t dinv_m[4], const uint64_t e[4],
            const uint64_t k[4], const uint64_t x1[4])
{
    uint64_t t[4], rej;

    sc_add(r, e, x1);
    rej = limbs_is_zero(r);
    sc_add(t, k, r);
    rej |= limbs_is_zero(t);
    sc_mul(s, dinv_m, t);
    sc_sub(s, s, r);
    rej |= limbs_is_zero(s);
    explicit_bzero(t, sizeof t);
    return rej;
}

/* sign_with_k: full signature with nonce k < n; all ones when it must be rejected. */
static uint64_t
sign_with_k(int impl, uint64_t r[4], uint64_t s[4], const uint64_t dinv_m[4], const uint64_t e[4],
            const uint64_t k[4])
{
    uint64_t inf, x1[4], rej;
    sm2p_jac j;
    sm2p_aff a;

    comb_mul(impl, &j, &inf, k);
    jac_to_aff(impl, &a, &j);
    fe_from_mont(x1, a.x);
    sc_reduce1(x1, x1);
    rej = sign_finish(r, s, dinv_m, e, k, x1) | inf;
    explicit_bzero(x1, sizeof x1);
    explicit_bzero(&j, sizeof j);
    explicit_bzero(&a, sizeof a);
    return rej;
}

static void
sig_out(uint8_t r_out[32], uint8_t s_out[32], const uint64_t r[4], const uint64_t s[4],
        uint64_t zero_m)
{
    limbs_to_be(r_out, r);
    limbs_to_be(s_out, s);
    for (int i = 0; i < 32; i++) {
        r_out[i] &= (uint8_t) ~zero_m;
        s_out[i] &= (uint8_t) ~zero_m;
    }
    SM2P_DECLASSIFY(r_out, 32);
    SM2P_DECLASSIFY(s_out, 32);
}

static int
sign_k_impl(int impl, uint8_t r_out[32], uint8_t s_out[32], const uint8_t d[32],
            const uint8_t e[32], const uint8_t k[32])
{
    uint64_t dl[4], kl[4], el[4], dinv[4], r[4], s[4], bad, rej;
    int ret;

    tables_init();
    limbs_from_be(dl, d);
    bad = ~key_ok(dl);
    dinv_mont(dinv, dl);
    limbs_from_be(kl, k);
    sc_reduce1(kl, kl);
    limbs_from_be(el, e);
    sc_reduce1(el, el);
    rej = sign_with_k(impl, r, s, dinv, el, kl) | limbs_is_zero(kl);
    sig_out(r_out, s_out, r, s, bad | rej);
    ret = -(int) (bad & 1) + (int) (~bad & rej & 1);
    explicit_bzero(dl, sizeof dl);
    explicit_bzero(kl, sizeof kl);
    explicit_bzero(dinv, sizeof dinv);
    explicit_bzero(r, sizeof r);
    explicit_bzero(s, sizeof s);
    SM2P_DECLASSIFY(&ret, sizeof ret);
    return ret;
}

/* draw_k: a uniform nonce in [1, n-1] by rejection sampling (the rejected candidates are
 * discarded, so revealing that one was rejected reveals nothing about the nonce used).
 * Returns 0, or -1 when rand_fn fails or gives 64 unusable candidates in a row. */
static int
draw_k(uint64_t k[4], int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg)
{
    uint8_t buf[32];
    uint64_t ok;

    for (int tries = 0; tries < 64; tries++) {
        if (rand_fn(rand_arg, buf, sizeof buf) != 0) {
            break;
        }
        limbs_from_be(k, buf);
        ok = ~limbs_is_zero(k) & lt_mask(k, SC_N);
        SM2P_DECLASSIFY(&ok, sizeof ok);
        if (ok) {
            explicit_bzero(buf, sizeof buf);
            return 0;
        }
    }
    explicit_bzero(buf, sizeof buf);
    explicit_bzero(k, 32);
    return -1;
}

static int
sign_impl(int impl, uint8_t r_out[32], uint8_t s_out[32], const uint8_t d[32], const uint8_t e[32],
          int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg)
{
    uint64_t dl[4], kl[4], el[4], dinv[4], r[4], s[4], ok, rej;
    int ret = -1;

    memset(r_out, 0, 32);
    memset(s_out, 0, 32);
    limbs_from_be(dl, d);
    ok = key_ok(dl);
    SM2P_DECLASSIFY(&ok, sizeof ok);
    if (!ok) {
        goto out;
    }
    tables_init();
    dinv_mont(dinv, dl);
    limbs_from_be(el, e);
    sc_reduce1(el, el);
    for (int tries = 0; tries < 64; tries++) {
        if (draw_k(kl, rand_fn, rand_arg) != 0) {
            break;
        }
        rej = sign_with_k(impl, r, s, dinv, el, kl);
        SM2P_DECLASSIFY(&rej, sizeof rej);
        if (!rej) {
            sig_out(r_out, s_out, r, s, 0);
            ret = 0;
            break;
        }
    }
out:
    explicit_bzero(dl, sizeof dl);
    explicit_bzero(kl, sizeof kl);
    explicit_bzero(dinv, sizeof dinv);
    explicit_bzero(r, sizeof r);
    explicit_bzero(s, sizeof s);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Precomputing sign context. */

struct gm__sm2p_signctx {
    uint64_t dinv_m[4]; /* (1+d)^-1 mod n, Montgomery form */
    int impl;           /* GM__SM2P_IMPL_* used for refills */
    int (*rand_fn)(void *, uint8_t *, size_t);
    void *rand_arg;
    unsigned pos; /* next unused pair */
    unsigned num; /* pairs in the batch */
    uint64_t k[GM__SM2P_SIGN_BATCH][4];
    uint64_t x1[GM__SM2P_SIGN_BATCH][4]; /* x(k G) mod n */
    struct {
        fe jx[GM__SM2P_SIGN_BATCH]; /* X, Z of k G */
        fe jz[GM__SM2P_SIGN_BATCH];
        fe acc[GM__SM2P_SIGN_BATCH]; /* prefix products of the Z */
    } tmp;                           /* refill scratch, wiped after each refill */
};

static int
signctx_new_impl(int impl, gm__sm2p_signctx **out, const uint8_t d[32],
                 int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg)
{
    gm__sm2p_signctx *c;
    uint64_t dl[4], ok;

    *out = NULL;
    limbs_from_be(dl, d);
    ok = key_ok(dl);
    SM2P_DECLASSIFY(&ok, sizeof ok);
    if (!ok || rand_fn == NULL) {
        explicit_bzero(dl, sizeof dl);
        return -1;
    }
    c = dbao_malloc(sizeof *c);
    if (c == NULL) {
        explicit_bzero(dl, sizeof dl);
        return DBAO_ENOMEM;
    }
    memset(c, 0, sizeof *c);
    tables_init();
    dinv_mont(c->dinv_m, dl);
    c->impl = impl;
    c->rand_fn = rand_fn;
    c->rand_arg = rand_arg;
    explicit_bzero(dl, sizeof dl);
    *out = c;
    return 0;
}

void
gm__sm2p_signctx_free(gm__sm2p_signctx *c)
{
    if (c != NULL) {
        dbao_free_secret(c, sizeof *c);
    }
}

static int
signctx_refill(int impl, gm__sm2p_signctx *c)
{
    uint8_t *raw = (uint8_t *) c->k;
    uint64_t t[4], ok, inf;
    sm2p_jac j;
    fe inv, zi, zi2;
    const unsigned num = GM__SM2P_SIGN_BATCH;

    c->pos = c->num = 0;
    if (c->rand_fn(c->rand_arg, raw, sizeof c->k) != 0) {
        explicit_bzero(&c->k, sizeof c->k);
        return -1;
    }
    for (unsigned i = 0; i < num; i++) {
        limbs_from_be(t, raw + 32 * i);
        memcpy(c->k[i], t, 32);
        ok = ~limbs_is_zero(t) & lt_mask(t, SC_N);
        SM2P_DECLASSIFY(&ok, sizeof ok);
        if (!ok && draw_k(c->k[i], c->rand_fn, c->rand_arg) != 0) {
            explicit_bzero(&c->k, sizeof c->k);
            explicit_bzero(t, sizeof t);
            return -1;
        }
    }
    for (unsigned i = 0; i < num; i++) {
        comb_mul(impl, &j, &inf, c->k[i]);
        fe_copy(c->tmp.jx[i], j.X);
        fe_copy(c->tmp.jz[i], j.Z);
    }
    /* Montgomery's trick: acc[i] = z_0 ... z_i, one inversion, then walk back. No z is zero
     * because every k is in [1, n-1]. */
    fe_copy(c->tmp.acc[0], c->tmp.jz[0]);
    for (unsigned i = 1; i < num; i++) {
        fe_mul(impl, c->tmp.acc[i], c->tmp.acc[i - 1], c->tmp.jz[i]);
    }
    fe_inv(impl, inv, c->tmp.acc[num - 1]);
    for (unsigned i = num; i-- > 0;) {
        if (i > 0) {
            fe_mul(impl, zi, inv, c->tmp.acc[i - 1]);
            fe_mul(impl, inv, inv, c->tmp.jz[i]);
        } else {
            fe_copy(zi, inv);
        }
        fe_sqr(impl, zi2, zi);
        fe_mul(impl, zi2, c->tmp.jx[i], zi2);
        fe_from_mont(t, zi2);
        sc_reduce1(c->x1[i], t);
    }
    explicit_bzero(&c->tmp, sizeof c->tmp);
    explicit_bzero(&j, sizeof j);
    explicit_bzero(inv, sizeof inv);
    explicit_bzero(zi, sizeof zi);
    explicit_bzero(zi2, sizeof zi2);
    explicit_bzero(t, sizeof t);
    c->num = num;
    return 0;
}

int
gm__sm2p_signctx_sign(gm__sm2p_signctx *c, uint8_t r_out[32], uint8_t s_out[32],
                      const uint8_t e[32])
{
    uint64_t el[4], r[4], s[4], rej;
    int ret = -1;

    memset(r_out, 0, 32);
    memset(s_out, 0, 32);
    limbs_from_be(el, e);
    sc_reduce1(el, el);
    for (int tries = 0; tries < 64; tries++) {
        unsigned i;
        if (c->pos >= c->num && signctx_refill(c->impl, c) != 0) {
            break;
        }
        i = c->pos++;
        rej = sign_finish(r, s, c->dinv_m, el, c->k[i], c->x1[i]);
        explicit_bzero(c->k[i], sizeof c->k[i]);
        explicit_bzero(c->x1[i], sizeof c->x1[i]);
        SM2P_DECLASSIFY(&rej, sizeof rej);
        if (!rej) {
            sig_out(r_out, s_out, r, s, 0);
            ret = 0;
            break;
        }
    }
    explicit_bzero(r, sizeof r);
    explicit_bzero(s, sizeof s);
    return ret;
}

/* ------------------------------------------------------------------------------------------ */
/* Verification (variable time). */

/* wnaf: width-w NAF of k (< 2^256): k = sum naf[i] 2^i, odd digits |naf[i]| < 2^(w-1), at
 * most w-1 zeros... returns the length (<= 257); naf must hold 258 entries. */
static int
wnaf(int8_t *naf, const uint64_t k[4], int w)
{
    uint64_t t[5] = {k[0], k[1], k[2], k[3], 0};
    const int64_t full = (int64_t) 1 << w, half = full >> 1;
    int len = 0;

    memset(naf, 0, 258);
    while ((t[0] | t[1] | t[2] | t[3] | t[4]) != 0) {
        int sh;
        if (t[0] & 1) {
            int64_t d = (int64_t) (t[0] & (uint64_t) (full - 1));
            uint64_t c;
            if (d >= half) {
                d -= full;
            }
            naf[len] = (int8_t) d;
            if (d > 0) {
                c = sbb(&t[0], t[0], (uint64_t) d, 0);
                for (int i = 1; i < 5 && c; i++) {
                    c = sbb(&t[i], t[i], 0, c);
                }
            } else {
                c = adc(&t[0], t[0], (uint64_t) -d, 0);
                for (int i = 1; i < 5 && c; i++) {
                    c = adc(&t[i], t[i], 0, c);
                }
            }
            sh = 1;
        } else {
            sh = t[0] != 0 ? __builtin_ctzll(t[0]) : 64;
        }
        len += sh;
        if (sh == 64) {
            t[0] = t[1];
            t[1] = t[2];
            t[2] = t[3];
            t[3] = t[4];
            t[4] = 0;
        } else {
            t[0] = t[0] >> sh | t[1] << (64 - sh);
            t[1] = t[1] >> sh | t[2] << (64 - sh);
            t[2] = t[2] >> sh | t[3] << (64 - sh);
            t[3] = t[3] >> sh | t[4] << (64 - sh);
            t[4] >>= sh;
        }
    }
    return len;
}

/* sig_prepare parses r and s; returns 1 unless both are in [1, n-1] and t = r + s != 0. */
static int
sig_prepare(uint64_t r[4], uint64_t s[4], uint64_t t[4], const uint8_t r_in[32],
            const uint8_t s_in[32])
{
    limbs_from_be(r, r_in);
    limbs_from_be(s, s_in);
    if (limbs_is_zero(r) || limbs_is_zero(s) || !lt_mask(r, SC_N) || !lt_mask(s, SC_N)) {
        return 1;
    }
    sc_add(t, r, s);
    return limbs_is_zero(t) ? 1 : 0;
}

/* sig_check_x: 0 iff q is finite and (e + x(q)) mod n = r. */
static int
sig_check_x(int impl, const sm2p_jac *q, const uint64_t r[4], const uint8_t e[32])
{
    uint64_t el[4], v[4], w[4], c;
    fe z2, t;

    if (fe_is_zero(q->Z)) {
        return 1;
    }
    limbs_from_be(el, e);
    sc_reduce1(el, el);
    sc_sub(v, r, el);
    fe_sqr(impl, z2, q->Z);
    fe_to_mont(t, v);
    fe_mul(impl, t, t, z2);
    if (limbs_eq(t, q->X)) {
        return 0;
    }
    c = adc(&w[0], v[0], SC_N[0], 0);
    c = adc(&w[1], v[1], SC_N[1], c);
    c = adc(&w[2], v[2], SC_N[2], c);
    c = adc(&w[3], v[3], SC_N[3], c);
    if (c == 0 && lt_mask(w, FE_P)) {
        fe_to_mont(t, w);
        fe_mul(impl, t, t, z2);
        if (limbs_eq(t, q->X)) {
            return 0;
        }
    }
    return 1;
}

static inline void
vt_madd_signed(int impl, sm2p_jac *acc, const sm2p_aff *tab, int d)
{
    if (d > 0) {
        vt_madd(impl, acc, acc, &tab[d >> 1]);
    } else {
        sm2p_aff n;
        fe_copy(n.x, tab[(-d) >> 1].x);
        fe_neg(impl, n.y, tab[(-d) >> 1].y);
        vt_madd(impl, acc, acc, &n);
    }
}

static int
verify_impl(int impl, const uint8_t pub_xy[64], const uint8_t e[32], const uint8_t r_in[32],
            const uint8_t s_in[32])
{
    sm2p_aff p;
    sm2p_jac ptab[VP_COLS], acc, b;
    uint64_t r[4], s[4], t[4];
    int8_t n1[258], n2[258];
    int l1, l2, len;

    if (aff_from_be(&p, pub_xy) != 0) {
        return -1;
    }
    if (sig_prepare(r, s, t, r_in, s_in) != 0) {
        return 1;
    }
    tables_init();
    fe_copy(b.X, p.x);
    fe_copy(b.Y, p.y);
    fe_copy(b.Z, FE_ONE);
    odd_multiples(impl, ptab, &b, VP_COLS);
    l1 = wnaf(n1, s, VG_W);
    l2 = wnaf(n2, t, VP_W);
    len = l1 > l2 ? l1 : l2;
    memset(&acc, 0, sizeof acc);
    for (int i = len - 1; i >= 0; i--) {
        jac_dbl(impl, &acc, &acc);
        if (n1[i] != 0) {
            vt_madd_signed(impl, &acc, vg_tab[0], n1[i]);
        }
        if (n2[i] != 0) {
            int d = n2[i];
            if (d > 0) {
                vt_add(impl, &acc, &acc, &ptab[d >> 1]);
            } else {
                sm2p_jac q = ptab[(-d) >> 1];
                fe_neg(impl, q.Y, q.Y);
                vt_add(impl, &acc, &acc, &q);
            }
        }
    }
    return sig_check_x(impl, &acc, r, e);
}

struct gm__sm2p_pubtab {
    sm2p_aff seg[4][PT_COLS]; /* (2j+1) 2^(64i) P */
};

static int
pubtab_new_impl(int impl, gm__sm2p_pubtab **out, const uint8_t pub_xy[64])
{
    gm__sm2p_pubtab *t;
    sm2p_aff p;
    sm2p_jac row[PT_COLS], base;
    fe scratch[PT_COLS];

    *out = NULL;
    if (aff_from_be(&p, pub_xy) != 0) {
        return -1;
    }
    t = dbao_malloc(sizeof *t);
    if (t == NULL) {
        return DBAO_ENOMEM;
    }
    fe_copy(base.X, p.x);
    fe_copy(base.Y, p.y);
    fe_copy(base.Z, FE_ONE);
    for (int i = 0; i < 4; i++) {
        odd_multiples(impl, row, &base, PT_COLS);
        batch_to_aff(impl, t->seg[i], row, PT_COLS, scratch);
        for (int j = 0; j < 64; j++) {
            jac_dbl(impl, &base, &base);
        }
    }
    tables_init();
    *out = t;
    return 0;
}

void
gm__sm2p_pubtab_free(gm__sm2p_pubtab *t)
{
    dbao_free(t);
}

static int
verify_tab_impl(int impl, const gm__sm2p_pubtab *tab, const uint8_t e[32], const uint8_t r_in[32],
                const uint8_t s_in[32])
{
    uint64_t r[4], s[4], t[4], piece[4] = {0, 0, 0, 0};
    int8_t ns[4][258], nt[4][258];
    int len = 0, l;
    sm2p_jac acc;

    if (sig_prepare(r, s, t, r_in, s_in) != 0) {
        return 1;
    }
    for (int j = 0; j < 4; j++) {
        piece[0] = s[j];
        l = wnaf(ns[j], piece, VG_W);
        len = l > len ? l : len;
        piece[0] = t[j];
        l = wnaf(nt[j], piece, PT_W);
        len = l > len ? l : len;
    }
    memset(&acc, 0, sizeof acc);
    for (int i = len - 1; i >= 0; i--) {
        jac_dbl(impl, &acc, &acc);
        for (int j = 0; j < 4; j++) {
            if (ns[j][i] != 0) {
                vt_madd_signed(impl, &acc, vg_tab[j], ns[j][i]);
            }
            if (nt[j][i] != 0) {
                vt_madd_signed(impl, &acc, tab->seg[j], nt[j][i]);
            }
        }
    }
    return sig_check_x(impl, &acc, r, e);
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points: the plain names run the portable path; gm__sm2p_impl_get hands out the same
 * operations bound to one implementation. */

int
gm__sm2p_base_mul(uint8_t out_xy[64], const uint8_t k[32])
{
    return base_mul_impl(GM__SM2P_IMPL_PORTABLE, out_xy, k);
}

int
gm__sm2p_point_mul(uint8_t out_xy[64], const uint8_t k[32], const uint8_t p_xy[64])
{
    return point_mul_impl(GM__SM2P_IMPL_PORTABLE, out_xy, k, p_xy);
}

int
gm__sm2p_sign_k(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
                const uint8_t k[32])
{
    return sign_k_impl(GM__SM2P_IMPL_PORTABLE, r, s, d, e, k);
}

int
gm__sm2p_sign(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
              int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg)
{
    return sign_impl(GM__SM2P_IMPL_PORTABLE, r, s, d, e, rand_fn, rand_arg);
}

int
gm__sm2p_verify(const uint8_t pub_xy[64], const uint8_t e[32], const uint8_t r[32],
                const uint8_t s[32])
{
    return verify_impl(GM__SM2P_IMPL_PORTABLE, pub_xy, e, r, s);
}

int
gm__sm2p_pubtab_new(gm__sm2p_pubtab **out, const uint8_t pub_xy[64])
{
    return pubtab_new_impl(GM__SM2P_IMPL_PORTABLE, out, pub_xy);
}

int
gm__sm2p_verify_tab(const gm__sm2p_pubtab *t, const uint8_t e[32], const uint8_t r[32],
                    const uint8_t s[32])
{
    return verify_tab_impl(GM__SM2P_IMPL_PORTABLE, t, e, r, s);
}

int
gm__sm2p_signctx_new(gm__sm2p_signctx **out, const uint8_t d[32],
                     int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg)
{
    return signctx_new_impl(GM__SM2P_IMPL_PORTABLE, out, d, rand_fn, rand_arg);
}

static const gm__sm2p_impl impl_portable = {
    "portable",      gm__sm2p_base_mul,   gm__sm2p_point_mul,  gm__sm2p_sign_k,      gm__sm2p_sign,
    gm__sm2p_verify, gm__sm2p_pubtab_new, gm__sm2p_verify_tab, gm__sm2p_signctx_new,
};

#if SM2P_HAVE_ADX
static int
base_mul_adx(uint8_t out_xy[64], const uint8_t k[32])
{
    return base_mul_impl(GM__SM2P_IMPL_X86_ADX, out_xy, k);
}

static int
point_mul_adx(uint8_t out_xy[64], const uint8_t k[32], const uint8_t p_xy[64])
{
    return point_mul_impl(GM__SM2P_IMPL_X86_ADX, out_xy, k, p_xy);
}

static int
sign_k_adx(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
           const uint8_t k[32])
{
    return sign_k_impl(GM__SM2P_IMPL_X86_ADX, r, s, d, e, k);
}

static int
sign_adx(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
         int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg)
{
    return sign_impl(GM__SM2P_IMPL_X86_ADX, r, s, d, e, rand_fn, rand_arg);
}

static int
verify_adx(const uint8_t pub_xy[64], const uint8_t e[32], const uint8_t r[32], const uint8_t s[32])
{
    return verify_impl(GM__SM2P_IMPL_X86_ADX, pub_xy, e, r, s);
}

static int
pubtab_new_adx(gm__sm2p_pubtab **out, const uint8_t pub_xy[64])
{
    return pubtab_new_impl(GM__SM2P_IMPL_X86_ADX, out, pub_xy);
}

static int
verify_tab_adx(const gm__sm2p_pubtab *t, const uint8_t e[32], const uint8_t r[32],
               const uint8_t s[32])
{
    return verify_tab_impl(GM__SM2P_IMPL_X86_ADX, t, e, r, s);
}

static int
signctx_new_adx(gm__sm2p_signctx **out, const uint8_t d[32],
                int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg)
{
    return signctx_new_impl(GM__SM2P_IMPL_X86_ADX, out, d, rand_fn, rand_arg);
}

static const gm__sm2p_impl impl_x86_adx = {
    "x86-64 bmi2+adx", base_mul_adx,   point_mul_adx,  sign_k_adx,      sign_adx,
    verify_adx,        pubtab_new_adx, verify_tab_adx, signctx_new_adx,
};
#endif

#if SM2P_HAVE_ADX
/* cpu_has_x86_path: the x86 path needs BMI2 (MULX), ADX (ADCX/ADOX) and AVX2 (table scans).
 * __builtin_cpu_supports knows "bmi2" and "avx2" in gcc and clang, but clang 14 has no "adx"
 * feature string, so ADX is read from CPUID leaf 7 (EBX bit 19) directly. */
static int x86_path_ok;
static pthread_once_t x86_path_once = PTHREAD_ONCE_INIT;

static void
x86_path_probe(void)
{
    unsigned int eax, ebx, ecx, edx;

    __builtin_cpu_init();
    if (!__builtin_cpu_supports("bmi2") || !__builtin_cpu_supports("avx2")) {
        return;
    }
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
        return;
    }
    x86_path_ok = (ebx >> 19) & 1;
}

/* CPUID traps to the hypervisor on a VM (microseconds): probe once, not per operation. */
static int
cpu_has_x86_path(void)
{
    pthread_once(&x86_path_once, x86_path_probe);
    return x86_path_ok;
}
#endif

int
gm__sm2p_impl_available(int path)
{
    switch (path) {
    case GM__SM2P_IMPL_PORTABLE:
        return 1;
#if SM2P_HAVE_ADX
    case GM__SM2P_IMPL_X86_ADX:
        return cpu_has_x86_path();
#endif
    default:
        return 0;
    }
}

const gm__sm2p_impl *
gm__sm2p_impl_get(int path)
{
    if (!gm__sm2p_impl_available(path)) {
        return NULL;
    }
#if SM2P_HAVE_ADX
    if (path == GM__SM2P_IMPL_X86_ADX) {
        return &impl_x86_adx;
    }
#endif
    return &impl_portable;
}
