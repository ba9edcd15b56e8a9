/* sm4_impl.h: private to src/gm. The SM4 block-cipher cores and GHASH behind gm_sm4_*.
 *
 * Three implementation paths give bit-identical results and are chosen at run time:
 *
 *   "portable"     plain C, constant time (bitsliced S-box circuit), any architecture;
 *   "aesni-avx2"   S-box through AESENCLAST, 16 blocks at a time in AVX2 (x86-64 only);
 *   "gfni-avx512"  S-box through GF2P8AFFINE(INV)QB, 32 blocks at a time in AVX-512.
 *
 * GHASH has the paths "portable" (constant-time carry-less multiply from integer multiplies),
 * "pclmul" (PCLMULQDQ on xmm, 8 blocks per reduction) and "vpclmul-avx512" (VPCLMULQDQ on zmm,
 * 16 blocks per reduction).
 *
 * Contracts shared by every function here: `in` and `out` may be equal (in place) or point
 * anywhere (no alignment needed) but must not overlap partially; nblocks may be 0; nothing
 * fails. All code is constant time with respect to keys, round keys, H and data; only the
 * block counts and the public counter/IV values steer branches.
 *
 * Threading: the impl tables are read-only; a gm__ghash_key and round keys may be shared
 * read-only between threads once set up.
 */
#ifndef DENGBAO_GM_SM4_IMPL_H
#define DENGBAO_GM_SM4_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gm__ghash_key;

typedef struct gm__sm4_impl {
    const char *name; /* "portable", "aesni-avx2", "gfni-avx512" */
    /* ECB over nblocks 16-byte blocks (encrypt with rk_enc, decrypt with rk_dec). */
    void (*ecb)(const uint32_t rk[32], uint8_t *out, const uint8_t *in, size_t nblocks);
    /* CTR: keystream block i = E(ctr + i), ctr a 128-bit big-endian counter. inc32 != 0
     * increments only the low 32 bits (mod 2^32, GCM's inc32), else all 128 bits (SP 800-38A,
     * OpenSSL's SM4-CTR). out = in XOR keystream; ctr returns the next unused counter. */
    void (*ctr)(const uint32_t rk_enc[32], uint8_t *out, const uint8_t *in, size_t nblocks,
                uint8_t ctr[16], int inc32);
    /* CBC decrypt with rk_dec; iv is updated to the last ciphertext block (calls chain). */
    void (*cbc_dec)(const uint32_t rk_dec[32], uint8_t *out, const uint8_t *in, size_t nblocks,
                    uint8_t iv[16]);
    /* CBC encrypt (serial); iv is updated to the last ciphertext block. */
    void (*cbc_enc)(const uint32_t rk_enc[32], uint8_t *out, const uint8_t *in, size_t nblocks,
                    uint8_t iv[16]);
} gm__sm4_impl;

/* gm__sm4_expand_key computes the 32 encryption round keys and the decryption round keys
 * (the same in reverse order) from a 16-byte key. Constant time. */
void gm__sm4_expand_key(uint32_t rk_enc[32], uint32_t rk_dec[32], const uint8_t key[16]);

/* gm__sm4_impl_get returns the path called `name`, or NULL if the name is unknown or this CPU
 * cannot run it. gm__sm4_impl_best returns the fastest path this CPU runs (never NULL). */
const gm__sm4_impl *gm__sm4_impl_get(const char *name);
const gm__sm4_impl *gm__sm4_impl_best(void);
bool gm__sm4_impl_available(const char *name);

/* The paths themselves. The x86 ones must only be called where gm__sm4_impl_get() returns
 * them (sm4_x86.c, x86-64 only). */
extern const gm__sm4_impl gm__sm4_impl_portable;
#if defined(__x86_64__)
extern const gm__sm4_impl gm__sm4_impl_aesni_avx2;
extern const gm__sm4_impl gm__sm4_impl_gfni_avx512;
bool gm__sm4_x86_has(const char *name); /* cpuid check for the x86 paths */
#endif

/* ---- GHASH (NIST SP 800-38D) ---------------------------------------------------------------
 *
 * The key holds 32 powers of the hash key H (what the widest path needs) in a layout shared by
 * every path, plus the path that update uses. Size and layout are fixed, so a key may be
 * embedded in a context. */
#define GM__GHASH_KEY_POWERS 32

typedef struct gm__ghash_key {
    _Alignas(64) uint8_t opaque[GM__GHASH_KEY_POWERS * 16];
    const struct gm__ghash_impl *impl;
} gm__ghash_key;

/* gm__ghash_init sets up `k` for H = E_K(0^128). impl_name is "portable", "pclmul" or
 * "vpclmul-avx512" (the SM4 path names "aesni-avx2" and "gfni-avx512" select the GHASH path of
 * the same instruction family); NULL, an unknown name or a path this CPU cannot run selects the
 * best path this CPU runs, so check with gm__ghash_key_is() when the path matters. */
void gm__ghash_init(gm__ghash_key *k, const uint8_t H[16], const char *impl_name);
/* Y = (Y xor X_i) * H for each of nblocks full 16-byte blocks of in. */
void gm__ghash_update(const gm__ghash_key *k, uint8_t Y[16], const uint8_t *in, size_t nblocks);
/* gm__ghash_key_wipe erases the powers of H; the key must be initialised again before use. */
void gm__ghash_key_wipe(gm__ghash_key *k);
/* The path name the key uses ("portable", "pclmul", "vpclmul-avx512"), NULL if wiped. */
const char *gm__ghash_impl_name(const gm__ghash_key *k);
bool gm__ghash_key_is(const gm__ghash_key *k, const char *impl_name);
bool gm__ghash_impl_available(const char *impl_name);

/* gm__sm4_gcm_blocks is the GCM bulk step: CTR with inc32 from ctr (updated) and GHASH into Y
 * of the ciphertext, over nblocks full blocks. enc = 1 encrypts (hashes the output), enc = 0
 * decrypts (hashes the input; in place is fine). */
void gm__sm4_gcm_blocks(const gm__sm4_impl *impl, const uint32_t rk_enc[32],
                        const gm__ghash_key *hk, uint8_t *out, const uint8_t *in, size_t nblocks,
                        uint8_t ctr[16], uint8_t Y[16], int enc);

/* The shared GHASH multiply for the rest of gm (ghash.c): Y = (Y ^ X_i) * H without a
 * precomputed key, portable and constant time. Kept for sm4.c's GCM framing. */
void gm__ghash_blocks(const uint8_t H[16], uint8_t Y[16], const uint8_t *in, size_t nblocks);

#endif /* DENGBAO_GM_SM4_IMPL_H */
