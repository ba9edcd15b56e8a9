/* sm2p256.h: private to src/gm. Constant-time core of the SM2 recommended 256-bit curve
 * (GB/T 32918), implemented in sm2p256.c.
 *
 * Conventions: every byte string is big-endian and fixed length; a public key or point is the
 * raw 64 bytes x||y (no 04 prefix). Functions return 0 on success and a negative value on
 * failure; none of them aborts. Scalars of 32 bytes may hold any value below 2^256 unless a
 * function says otherwise; they are reduced mod n where the math allows it.
 *
 * Threading: the fixed generator tables are built once, on first use, under pthread_once, so
 * every function may be called from any thread. A gm__sm2p_pubtab is read-only after
 * gm__sm2p_pubtab_new and may be shared by threads. A gm__sm2p_signctx is used by one thread at
 * a time. */
#ifndef DENGBAO_GM_SM2P256_H
#define DENGBAO_GM_SM2P256_H

#include <stddef.h>
#include <stdint.h>

/* gm__sm2p_scalar_check returns 0 iff 1 <= d <= n-2 (a valid private key), else -1. Constant
 * time in d. */
int gm__sm2p_scalar_check(const uint8_t d[32]);

/* gm__sm2p_base_mul stores k*G in out_xy. It returns 0, or -1 when k = 0 mod n (out_xy is
 * then zeroed). Constant time in k (fixed-base signed comb, masked table scans). */
int gm__sm2p_base_mul(uint8_t out_xy[64], const uint8_t k[32]);

/* gm__sm2p_point_mul stores k*P in out_xy. It returns 0, or -1 when P is not a valid point
 * (coordinate >= p or off the curve) or the result is the point at infinity (k = 0 mod n);
 * out_xy is then zeroed. Constant time in k (signed 5-bit fixed window, masked table scans);
 * P is treated as public. */
int gm__sm2p_point_mul(uint8_t out_xy[64], const uint8_t k[32], const uint8_t p_xy[64]);

/* gm__sm2p_point_check returns 0 iff x, y < p and (x, y) lies on the curve, else -1. */
int gm__sm2p_point_check(const uint8_t p_xy[64]);

/* gm__sm2p_sign_k computes an SM2 signature of the digest e = SM3(Z||M) with the private key
 * d and the secret nonce k (reduced mod n): r = (e + x1) mod n with (x1, y1) = k*G, and
 * s = (1+d)^-1 * (k - r*d) mod n. It returns 0; 1 when this k must be rejected (k = 0 mod n,
 * r = 0, r + k = n, or s = 0; the caller draws a new k); or -1 when d is not in [1, n-2].
 * On any nonzero return r and s are zeroed. Constant time in d and k. */
int gm__sm2p_sign_k(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
                    const uint8_t k[32]);

/* gm__sm2p_verify checks the signature (r, s) of digest e under pub_xy. It returns 0 when the
 * signature is valid, 1 when it is not (r or s outside [1, n-1], r + s = 0 mod n, mismatch),
 * or -1 when pub_xy is not a valid point. Variable time: all inputs are public. */
int gm__sm2p_verify(const uint8_t pub_xy[64], const uint8_t e[32], const uint8_t r[32],
                    const uint8_t s[32]);

/* Per-public-key verification table (heap object, about 8 KiB: odd multiples of P, 2^64 P,
 * 2^128 P and 2^192 P in affine form). gm__sm2p_pubtab_new returns 0 with *out set, -1 when
 * pub_xy is not a valid point, or DBAO_ENOMEM; *out is NULL on failure. Free with
 * gm__sm2p_pubtab_free (NULL is a no-op). The table is read-only once built, so one table can
 * serve concurrent gm__sm2p_verify_tab calls. gm__sm2p_verify_tab returns 0 (valid) or 1
 * (invalid), like gm__sm2p_verify, and is about 2.5 times faster. */
typedef struct gm__sm2p_pubtab gm__sm2p_pubtab;
int gm__sm2p_pubtab_new(gm__sm2p_pubtab **out, const uint8_t pub_xy[64]);
void gm__sm2p_pubtab_free(gm__sm2p_pubtab *t);
int gm__sm2p_verify_tab(const gm__sm2p_pubtab *t, const uint8_t e[32], const uint8_t r[32],
                        const uint8_t s[32]);

/* Precomputing sign context (heap object, about 21 KiB). It keeps (1+d)^-1 mod n and a batch
 * of GM__SM2P_SIGN_BATCH pairs (k, x1 mod n), all made with one batched field inversion; the
 * batch is refilled inside gm__sm2p_signctx_sign when it runs empty. rand_fn(rand_arg, buf,
 * len) must fill buf with len uniformly random bytes and return 0 (anything else is a
 * failure); it is called with len = 32 * GM__SM2P_SIGN_BATCH for a refill and len = 32 to
 * replace a rejected candidate (k = 0 or k >= n). Each nonce is used once and wiped after use.
 *
 * gm__sm2p_signctx_new returns 0 with *out set, -1 when d is not in [1, n-2], or DBAO_ENOMEM.
 * gm__sm2p_signctx_sign returns 0, or -1 when rand_fn fails (the context stays usable).
 * gm__sm2p_signctx_free wipes and frees the context (NULL is a no-op). One thread at a time
 * per context. */
#define GM__SM2P_SIGN_BATCH 128
typedef struct gm__sm2p_signctx gm__sm2p_signctx;
int gm__sm2p_signctx_new(gm__sm2p_signctx **out, const uint8_t d[32],
                         int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg);
void gm__sm2p_signctx_free(gm__sm2p_signctx *c);
int gm__sm2p_signctx_sign(gm__sm2p_signctx *c, uint8_t r[32], uint8_t s[32], const uint8_t e[32]);

/* gm__sm2p_sign signs e with d, drawing each k from rand_fn (32 bytes at a time, rejection
 * sampling into [1, n-1]) until gm__sm2p_sign_k accepts one. It returns 0, or -1 when d is not
 * in [1, n-2] or rand_fn fails (or yields 64 unusable candidates in a row). */
int gm__sm2p_sign(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
                  int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg);

/* Implementations. The plain gm__sm2p_* functions above run the portable C path
 * (GM__SM2P_IMPL_PORTABLE, built everywhere). gm__sm2p_impl_get(path) returns the same
 * operations bound to one implementation, or NULL when the path is not built or this CPU lacks
 * it; gm__sm2p_impl_available(path) returns 1 or 0 (__builtin_cpu_supports, plus CPUID for
 * ADX, which clang 14 cannot name). All paths give bit-identical results, and tables, contexts
 * and keys are interchangeable between them (a context made by an impl's signctx_new refills
 * with that impl). The vtables are constant, so a dispatcher may cache the pointer. */
#define GM__SM2P_IMPL_PORTABLE 0 /* unsigned __int128 C */
#define GM__SM2P_IMPL_X86_ADX  1 /* x86-64: BMI2+ADX field arithmetic, AVX2 table scans */

typedef struct gm__sm2p_impl {
    const char *name;
    int (*base_mul)(uint8_t out_xy[64], const uint8_t k[32]);
    int (*point_mul)(uint8_t out_xy[64], const uint8_t k[32], const uint8_t p_xy[64]);
    int (*sign_k)(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
                  const uint8_t k[32]);
    int (*sign)(uint8_t r[32], uint8_t s[32], const uint8_t d[32], const uint8_t e[32],
                int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg);
    int (*verify)(const uint8_t pub_xy[64], const uint8_t e[32], const uint8_t r[32],
                  const uint8_t s[32]);
    int (*pubtab_new)(gm__sm2p_pubtab **out, const uint8_t pub_xy[64]);
    int (*verify_tab)(const gm__sm2p_pubtab *t, const uint8_t e[32], const uint8_t r[32],
                      const uint8_t s[32]);
    int (*signctx_new)(gm__sm2p_signctx **out, const uint8_t d[32],
                       int (*rand_fn)(void *, uint8_t *, size_t), void *rand_arg);
} gm__sm2p_impl;

int gm__sm2p_impl_available(int path);
const gm__sm2p_impl *gm__sm2p_impl_get(int path);

#endif /* DENGBAO_GM_SM2P256_H */
