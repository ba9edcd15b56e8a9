/* gm.h: the national cryptographic algorithms (商用密码) for every dengbao component.
 *
 *   SM3  GB/T 32905-2016  hash, and HMAC-SM3 (GM/T 0042)
 *   SM4  GB/T 32907-2016  block cipher: ECB, CBC (PKCS#7 or no padding), CTR, GCM (RFC 8998)
 *   SM2  GB/T 32918-2016  signatures with a distinguishing ID, public-key encryption
 *                         (GM/T 0009 DER C1C3C2; raw C1C3C2 and C1C2C3 on request)
 *
 * OpenSSL 3 is the reference implementation underneath; dengbao's own code sits behind the
 * same API and is checked against OpenSSL in the tests. SM2 always hashes Z with the given
 * distinguishing ID (default "1234567812345678", GM/T 0009), never OpenSSL 3.0's silent empty
 * ID. Byte strings are big-endian; SM2 public keys travel as 04||x||y (65 bytes); signatures
 * are raw r||s (64 bytes) in the API with helpers to and from DER.
 *
 * Errors: 0 or a negative DBAO_E* code (common.h). DBAO_EVERIFY means a well-formed input
 * failed verification (signature, GCM tag, SM2 decryption hash, CBC padding); DBAO_EKEY an
 * unusable key; DBAO_EFORMAT malformed encoded input. Nothing aborts on bad input.
 *
 * Secrets live only in contexts and key objects; every cleanup/free wipes them.
 *
 * Threading: contexts and keys are used by one thread at a time, except that a gm_sm2_key and
 * a keyed gm_sm4_ctx may be shared read-only by many threads once set up (sign, verify,
 * encrypt, decrypt and every SM4 mode take them as const).
 */
#ifndef DENGBAO_GM_H
#define DENGBAO_GM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- random ------------------------------------------------------------------------------ */

/* gm_rand_bytes fills `buf` from OpenSSL's DRBG (seeded by getrandom). DBAO_ECRYPTO on
 * failure; callers must not continue with the buffer then. */
int gm_rand_bytes(void *buf, size_t len);

/* ---- implementation paths ---------------------------------------------------------------
 *
 * Each algorithm has several implementation paths that give identical results: OpenSSL 3 (the
 * reference, for SM2), portable C, and x86-64 SIMD paths (AES-NI + AVX2, GFNI + AVX-512,
 * PCLMULQDQ) that are compiled on every machine but run only where cpuid says the CPU has the
 * instructions. At first use each algorithm takes the fastest path its CPU supports, unless the
 * environment variable DENGBAO_GM_IMPL says otherwise: the word "portable" (every algorithm on
 * portable C) or a comma-separated list of alg=path, e.g. "sm4=portable,sm2=openssl". A path
 * named there that the CPU cannot run is refused with a message on stderr and the default kept.
 *
 * Algorithms: "sm2", "sm3", "sm3-mb" (multi-buffer SM3), "sm4", "ghash". */
typedef struct gm_impl_info {
    const char *alg;
    const char *path;
    bool supported; /* this CPU can run it */
    bool active;    /* in use now */
} gm_impl_info;

/* gm_impl_list stores up to `max` entries in `out` (may be NULL when max is 0) and returns the
 * total number of (algorithm, path) pairs. */
size_t gm_impl_list(gm_impl_info *out, size_t max);

/* gm_impl_active returns the active path of `alg`, or NULL for an unknown algorithm. */
const char *gm_impl_active(const char *alg);

/* gm_impl_use makes `path` the active path of `alg`. DBAO_EINVAL for an unknown algorithm or
 * path, DBAO_ENOTSUP when this CPU cannot run it. Not thread-safe: call it before other
 * threads use gm (tests and `dengbao gm speed` do). Keys and contexts made earlier keep the
 * path they were made with. */
int gm_impl_use(const char *alg, const char *path);

/* gm_cpu_features returns a static string naming the CPU features gm looks for and has
 * (for example "aes avx2 bmi2 pclmulqdq gfni avx512f avx512bw avx512vl vpclmulqdq"). */
const char *gm_cpu_features(void);

/* gm_selftest runs the known-answer tests of every algorithm (GB/T 32905, 32907, 32918.5,
 * RFC 8998) and SM2 pairwise-consistency checks. 0 if all pass, else DBAO_EVERIFY (or the
 * failing call's code) with err naming the failed test. Daemons call it before serving. */
int gm_selftest(dbao_err *err);

/* ---- SM3 --------------------------------------------------------------------------------- */

#define GM_SM3_DIGEST_LEN 32
#define GM_SM3_BLOCK_LEN  64

typedef struct gm_sm3_ctx {
    uint32_t state[8];
    uint64_t num_bytes; /* total bytes absorbed */
    uint8_t buf[GM_SM3_BLOCK_LEN];
    size_t buf_len;
} gm_sm3_ctx;

/* Streaming SM3. None of these can fail. Input is limited to 2^61 - 1 bytes (the standard's
 * 2^64 bits). gm_sm3_final leaves ctx wiped; call gm_sm3_init to reuse it. */
void gm_sm3_init(gm_sm3_ctx *ctx);
void gm_sm3_update(gm_sm3_ctx *ctx, const void *data, size_t len);
void gm_sm3_final(gm_sm3_ctx *ctx, uint8_t out[GM_SM3_DIGEST_LEN]);

/* gm_sm3 hashes `len` bytes at `data` in one call. */
void gm_sm3(uint8_t out[GM_SM3_DIGEST_LEN], const void *data, size_t len);

/* gm_sm3_hash_many hashes `num` independent messages, each preceded by the same `prefix`
 * (prefix_len 0 to 64 bytes; NULL when 0), into out[32 * i]: out_i = SM3(prefix || msg_i).
 * Several messages are hashed at once in SIMD lanes where the CPU allows (Merkle leaves:
 * prefix 0x00; nodes: 0x01). DBAO_ERANGE if prefix_len > 64. */
int gm_sm3_hash_many(uint8_t *out, const uint8_t *const *msgs, const size_t *lens, size_t num,
                     const uint8_t *prefix, size_t prefix_len);

typedef struct gm_hmac_sm3_ctx {
    gm_sm3_ctx inner;
    gm_sm3_ctx outer;
} gm_hmac_sm3_ctx;

/* HMAC-SM3 (RFC 2104 over SM3, GM/T 0042). Any key length (longer than 64 bytes is hashed
 * first). gm_hmac_sm3_final wipes the context. gm_hmac_sm3_cleanup wipes a context that was
 * abandoned before final. */
void gm_hmac_sm3_init(gm_hmac_sm3_ctx *ctx, const void *key, size_t key_len);
void gm_hmac_sm3_update(gm_hmac_sm3_ctx *ctx, const void *data, size_t len);
void gm_hmac_sm3_final(gm_hmac_sm3_ctx *ctx, uint8_t out[GM_SM3_DIGEST_LEN]);
void gm_hmac_sm3_cleanup(gm_hmac_sm3_ctx *ctx);
void gm_hmac_sm3(uint8_t out[GM_SM3_DIGEST_LEN], const void *key, size_t key_len, const void *data,
                 size_t len);

/* ---- SM4 --------------------------------------------------------------------------------- */

#define GM_SM4_KEY_LEN     16
#define GM_SM4_BLOCK_LEN   16
#define GM_SM4_GCM_TAG_LEN 16
#define GM_SM4_GCM_IV_MAX  (1u << 16) /* bytes; the GCM spec allows up to 2^61 */

/* A keyed SM4 context. Caller-owned storage: gm_sm4_init (cannot fail) makes it safe to clean
 * up, gm_sm4_setkey keys it, gm_sm4_cleanup wipes the key material. The fields are private. */
typedef struct gm_sm4_ctx {
    _Alignas(64) uint8_t opaque[1024]; /* round keys, GHASH key powers, implementation path */
    bool keyed;
} gm_sm4_ctx;

void gm_sm4_init(gm_sm4_ctx *ctx);
/* gm_sm4_setkey: DBAO_EKEY unless key_len is 16. The context keeps the implementation path
 * active at this moment (see gm_impl_use). */
int gm_sm4_setkey(gm_sm4_ctx *ctx, const uint8_t *key, size_t key_len);
void gm_sm4_cleanup(gm_sm4_ctx *ctx);

/* ECB and CBC without padding: `len` must be a multiple of 16 (else DBAO_ERANGE). `out` has
 * room for `len` bytes and may equal `in`. CBC updates `iv` to the last ciphertext block so
 * calls chain. */
int gm_sm4_ecb_encrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len);
int gm_sm4_ecb_decrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len);
int gm_sm4_cbc_encrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len,
                       uint8_t iv[16]);
int gm_sm4_cbc_decrypt(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len,
                       uint8_t iv[16]);

/* PKCS#7-padded ECB and CBC. Encrypt writes in_len + (16 - in_len % 16) bytes (room for in_len +
 * 16). Decrypt takes a non-empty multiple of 16 (else DBAO_ERANGE), writes at most in_len bytes and
 * returns DBAO_EVERIFY if the padding is wrong (out is wiped then). The padding check is
 * constant-time in the padding value. */
int gm_sm4_ecb_encrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                           size_t in_len);
int gm_sm4_ecb_decrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                           size_t in_len);
int gm_sm4_cbc_encrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                           size_t in_len, const uint8_t iv[16]);
int gm_sm4_cbc_decrypt_pad(const gm_sm4_ctx *ctx, uint8_t *out, size_t *out_len, const uint8_t *in,
                           size_t in_len, const uint8_t iv[16]);

/* CTR (NIST SP 800-38A: a 128-bit big-endian counter block incremented by one per block, as
 * OpenSSL's SM4-CTR). Any length; out may equal in. On return `ctr` holds the next unused
 * counter block; a call whose length is not a multiple of 16 must be the last one. */
int gm_sm4_ctr(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *in, size_t len, uint8_t ctr[16]);

/* SM4-GCM (NIST SP 800-38D over SM4, RFC 8998). Any IV length from 1 to GM_SM4_GCM_IV_MAX
 * (12 bytes is the fast and recommended one; other lengths go through GHASH as the spec
 * says); any AAD and text length up to 2^36 - 32 bytes. seal writes len bytes of ciphertext
 * and a 16-byte tag; open checks the tag in constant time before returning and on mismatch
 * wipes `out` and returns DBAO_EVERIFY. out may equal in. */
int gm_sm4_gcm_seal(const gm_sm4_ctx *ctx, uint8_t *out, uint8_t tag[GM_SM4_GCM_TAG_LEN],
                    const uint8_t *iv, size_t iv_len, const uint8_t *aad, size_t aad_len,
                    const uint8_t *in, size_t len);
int gm_sm4_gcm_open(const gm_sm4_ctx *ctx, uint8_t *out, const uint8_t *iv, size_t iv_len,
                    const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                    const uint8_t tag[GM_SM4_GCM_TAG_LEN]);

/* ---- SM2 --------------------------------------------------------------------------------- */

#define GM_SM2_DEFAULT_ID     "1234567812345678"
#define GM_SM2_DEFAULT_ID_LEN 16
#define GM_SM2_ID_MAX         8191 /* ENTL is a 16-bit count of bits */
#define GM_SM2_PRIV_LEN       32
#define GM_SM2_PUB_LEN        65 /* 04 || x || y */
#define GM_SM2_SIG_RAW_LEN    64 /* r || s */
#define GM_SM2_SIG_DER_MAX    72
#define GM_SM2_CT_OVERHEAD    97 /* raw C1 (65) + C3 (32); DER adds at most 20 more */

/* An SM2 key pair or public key. Opaque; immutable after creation, so it may be shared by
 * threads. Free with gm_sm2_key_free (NULL is a no-op), which wipes the private scalar. */
typedef struct gm_sm2_key gm_sm2_key;

/* gm_sm2_key_generate makes a new key pair from the DRBG. */
int gm_sm2_key_generate(gm_sm2_key **out, dbao_err *err);

/* gm_sm2_key_from_priv derives the public key from the private scalar d (32 bytes,
 * 1 <= d <= n - 2, else DBAO_EKEY). */
int gm_sm2_key_from_priv(gm_sm2_key **out, const uint8_t *d, size_t d_len, dbao_err *err);

/* gm_sm2_key_from_pub takes 04||x||y (65 bytes) or a compressed 02/03||x (33 bytes).
 * DBAO_EKEY if the point is not on the curve, is the point at infinity, or has a
 * coordinate >= p; DBAO_EFORMAT for any other length or prefix. */
int gm_sm2_key_from_pub(gm_sm2_key **out, const uint8_t *pub, size_t pub_len, dbao_err *err);

/* gm_sm2_key_from_pem reads a PEM private key (PKCS#8 "PRIVATE KEY" or SEC1 "EC PRIVATE KEY")
 * or public key (SubjectPublicKeyInfo "PUBLIC KEY") on the SM2 curve. Encrypted PEM is
 * refused (DBAO_ENOTSUP). Keys on other curves give DBAO_EKEY. */
int gm_sm2_key_from_pem(gm_sm2_key **out, const char *pem, size_t pem_len, dbao_err *err);

/* gm_sm2_key_from_der: the same for DER (PKCS#8 PrivateKeyInfo, SEC1 ECPrivateKey, or
 * SubjectPublicKeyInfo); trailing bytes are refused. */
int gm_sm2_key_from_der(gm_sm2_key **out, const uint8_t *der, size_t der_len, dbao_err *err);

/* gm_sm2_key_to_pem writes PKCS#8 PEM (with_priv, DBAO_EKEY on a public key) or
 * SubjectPublicKeyInfo PEM into a new NUL-terminated buffer; free with dbao_free_secret(*out,
 * *out_len) for private keys. */
int gm_sm2_key_to_pem(const gm_sm2_key *key, char **out, size_t *out_len, bool with_priv,
                      dbao_err *err);

bool gm_sm2_key_has_priv(const gm_sm2_key *key);
void gm_sm2_key_get_pub(const gm_sm2_key *key, uint8_t out[GM_SM2_PUB_LEN]);
/* gm_sm2_key_get_priv copies d; DBAO_EKEY for a public-only key. Wipe the copy after use. */
int gm_sm2_key_get_priv(const gm_sm2_key *key, uint8_t out[GM_SM2_PRIV_LEN]);
void gm_sm2_key_free(gm_sm2_key *key);

/* gm_sm2_compute_z: Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA). id_len must be at
 * most GM_SM2_ID_MAX (DBAO_ERANGE). */
int gm_sm2_compute_z(uint8_t z[GM_SM3_DIGEST_LEN], const gm_sm2_key *key, const uint8_t *id,
                     size_t id_len);
/* gm_sm2_compute_e: e = SM3(Z || M), the value that is actually signed. */
int gm_sm2_compute_e(uint8_t e[GM_SM3_DIGEST_LEN], const gm_sm2_key *key, const uint8_t *id,
                     size_t id_len, const uint8_t *msg, size_t msg_len);

/* Signing with a fresh random nonce; raw r||s out. DBAO_EKEY for a public-only key. */
int gm_sm2_sign_digest(const gm_sm2_key *key, uint8_t sig[GM_SM2_SIG_RAW_LEN],
                       const uint8_t e[GM_SM3_DIGEST_LEN]);
int gm_sm2_sign(const gm_sm2_key *key, uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *id,
                size_t id_len, const uint8_t *msg, size_t msg_len);

/* Verification: 0 if valid, DBAO_EVERIFY if not (including r or s outside [1, n-1]). */
int gm_sm2_verify_digest(const gm_sm2_key *key, const uint8_t sig[GM_SM2_SIG_RAW_LEN],
                         const uint8_t e[GM_SM3_DIGEST_LEN]);
int gm_sm2_verify(const gm_sm2_key *key, const uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *id,
                  size_t id_len, const uint8_t *msg, size_t msg_len);

/* gm_sm2_key_precompute builds a per-key table that makes verification with this public key
 * about 2.5 times faster (about 8 KiB; worth it for keys that verify again and again, such as
 * the gateway's device keys). Call it before the key is shared between threads. 0, or
 * DBAO_ENOMEM. A no-op on the openssl path. */
int gm_sm2_key_precompute(gm_sm2_key *key);

/* A signer holds a private key with batches of precomputed nonces (k, x1), made with one
 * batched inversion, so each signature costs a few scalar multiplications mod n instead of a
 * point multiplication. Nonces come from the DRBG, are used once and wiped. One thread at a
 * time per signer; free with gm_sm2_signer_free (NULL is a no-op), which wipes everything.
 * The key must outlive the signer. gm_sm2_signer_new: DBAO_EKEY for a public-only key,
 * DBAO_ENOMEM. */
typedef struct gm_sm2_signer gm_sm2_signer;
int gm_sm2_signer_new(gm_sm2_signer **out, const gm_sm2_key *key);
int gm_sm2_signer_sign_digest(gm_sm2_signer *signer, uint8_t sig[GM_SM2_SIG_RAW_LEN],
                              const uint8_t e[GM_SM3_DIGEST_LEN]);
void gm_sm2_signer_free(gm_sm2_signer *signer);

/* Signature encodings. to_der writes SEQUENCE { INTEGER r, INTEGER s } (at most 72 bytes).
 * from_der is strict DER (minimal lengths and integers, no trailing bytes, 0 < r, s < 2^256):
 * DBAO_EFORMAT otherwise. sig_parse accepts either a raw 64-byte r||s or DER: an input of 64
 * bytes that is valid DER is read as DER (a raw r||s that happens to be valid DER needs r to
 * start 0x30 0x3e and a whole DER structure to fit: odds below 2^-40), any other 64-byte
 * input as raw. */
int gm_sm2_sig_to_der(uint8_t out[GM_SM2_SIG_DER_MAX], size_t *out_len,
                      const uint8_t sig[GM_SM2_SIG_RAW_LEN]);
int gm_sm2_sig_from_der(uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *der, size_t der_len);
int gm_sm2_sig_parse(uint8_t sig[GM_SM2_SIG_RAW_LEN], const uint8_t *in, size_t in_len);

/* SM2 ciphertext forms. DER is GM/T 0009 SEQUENCE { INTEGER x1, INTEGER y1, OCTET STRING C3,
 * OCTET STRING C2 }; the raw forms are 04||x1||y1||C3||C2 and 04||x1||y1||C2||C3. */
typedef enum gm_sm2_ct_form {
    GM_SM2_CT_DER = 0,
    GM_SM2_CT_C1C3C2 = 1,
    GM_SM2_CT_C1C2C3 = 2,
} gm_sm2_ct_form;

/* gm_sm2_encrypt encrypts msg (1 byte or more; DBAO_ERANGE for empty) to key's public key and
 * stores a new ciphertext in the requested form in *out (free with dbao_free). */
int gm_sm2_encrypt(const gm_sm2_key *key, uint8_t **out, size_t *out_len, gm_sm2_ct_form form,
                   const uint8_t *msg, size_t msg_len);

/* gm_sm2_decrypt: DBAO_EFORMAT if the ciphertext cannot be parsed in `form` or C1 is not on
 * the curve, DBAO_EVERIFY if C3 does not match (nothing is returned then), DBAO_EKEY for a
 * public-only key. The plaintext in *out is freed with dbao_free_secret(*out, *out_len). */
int gm_sm2_decrypt(const gm_sm2_key *key, uint8_t **out, size_t *out_len, gm_sm2_ct_form form,
                   const uint8_t *ct, size_t ct_len);

/* gm_sm2_ct_convert re-encodes a ciphertext between forms without decrypting; it checks the
 * structure (and, from DER, that x1 and y1 fit 32 bytes) but not the curve. */
int gm_sm2_ct_convert(uint8_t **out, size_t *out_len, gm_sm2_ct_form to, const uint8_t *in,
                      size_t in_len, gm_sm2_ct_form from);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_GM_H */
