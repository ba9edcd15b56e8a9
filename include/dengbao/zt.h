/* zt.h: zero-trust building blocks for the gateway (issue 6) and other services:
 * bearer tokens (JWT: HS256, ES256, RS256, SM2) bound to a device's SM2 key, device signatures
 * (over the token, or over each request with a replay window), role-based access control,
 * rate limits and circuit breakers. Pure libraries: no I/O except loading files; the gateway
 * plugs them into its step chain (gateway.h, gw_step).
 *
 * Errors: 0 or a negative DBAO_E* code (common.h); messages name the claim, header or rule,
 * never a token, a signature or a secret.
 *
 * Threading: key sets, policies and limiter/breaker tables are documented per section.
 *
 * Sections (each owned by one engineer while issue 6 is built): "tokens" and "device
 * signatures" (H5), "access control", "rate limits", "circuit breakers" (H6).
 */
#ifndef DENGBAO_ZT_H
#define DENGBAO_ZT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dengbao/common.h"
#include "dengbao/gm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- tokens ------------------------------------------------------------------------------ */

/* Bearer tokens: compact JWS (RFC 7515) JWTs (RFC 7519) signed with HS256, ES256, RS256 or SM2
 * (SM3 digest, distinguishing ID "1234567812345678", signature raw r||s, 64 bytes, base64url:
 * the same form as ES256's JOSE signature). The SM2 alg name is set per key set (default
 * "SM2"). Details, the JWKS form of SM2 keys and the claim rules: docs/zt-tokens.md. */

typedef enum zt_alg {
    ZT_ALG_HS256 = 1 << 0,
    ZT_ALG_ES256 = 1 << 1,
    ZT_ALG_RS256 = 1 << 2,
    ZT_ALG_SM2 = 1 << 3,
} zt_alg;

#define ZT_ALG_ALL (ZT_ALG_HS256 | ZT_ALG_ES256 | ZT_ALG_RS256 | ZT_ALG_SM2)

#define ZT_JWT_MAX_LEN_DEFAULT 8192  /* bytes of a compact token */
#define ZT_JWT_MAX_LEN_LIMIT   16384 /* opts.max_len above this is clamped to it */
#define ZT_KID_MAX             64    /* bytes of a kid, NUL included */
#define ZT_CLAIM_STR_MAX       256   /* bytes of sub, iss, aud, jti, NUL included */
#define ZT_ROLES_MAX           32    /* roles per token */
#define ZT_ROLE_MAX            64    /* bytes of one role, NUL included */
#define ZT_SM2_ALG_MAX         32    /* bytes of the SM2 alg name, NUL included */

/* A key set: HS256 secrets, ES256 (P-256) and RS256 (2048 bits or more) public keys and SM2
 * public keys, each with a kid (may be empty). Built by one thread (new, add_*), then
 * immutable: verification takes it const and any number of threads may use it at once.
 * Rotation replaces the whole set: build a new one, publish the pointer (the gateway swaps it
 * atomically), and drop the old one with zt_keyset_unref once no thread uses it. The set is
 * reference-counted (atomic): zt_keyset_ref takes one more reference for a thread that keeps
 * using it across a swap, zt_keyset_unref drops one (the last frees and wipes the secrets;
 * NULL is a no-op). zt_keyset_free is zt_keyset_unref. */
typedef struct zt_keyset zt_keyset;

/* zt_keyset_new makes an empty set with one reference. sm2_alg is the JWS alg name of SM2
 * tokens for this set (NULL: "SM2"; at most ZT_SM2_ALG_MAX - 1 bytes, printable, not one of
 * the other names, else DBAO_EINVAL). DBAO_ENOMEM. */
int zt_keyset_new(zt_keyset **out, const char *sm2_alg, dbao_err *err);
zt_keyset *zt_keyset_ref(zt_keyset *ks);
void zt_keyset_unref(zt_keyset *ks);
void zt_keyset_free(zt_keyset *ks);

/* zt_keyset_add_jwks adds every key of a JWKS document (RFC 7517 {"keys": [...]}, duplicate
 * JSON keys refused): kty "oct" (k: the HS256 secret, 16 bytes or more), "EC" with crv
 * "P-256" (ES256) or crv "SM2" (SM2: x and y, 32 bytes each), "RSA" (n, e; 2048 to 8192
 * bits). "alg", if present, must name the algorithm the key type implies; "use", if present,
 * must be "sig" (keys with "use":"enc" are skipped). Private members (d, p, q, ...) are refused:
 * a verifier holds public keys only. Any bad key fails the whole call (DBAO_EFORMAT, DBAO_EKEY,
 * DBAO_ENOTSUP for an unknown kty/crv/alg) and the set keeps the keys it had before the call.
 * A kid already in the set for the same algorithm is refused (DBAO_EINVAL). */
int zt_keyset_add_jwks(zt_keyset *ks, const char *json, size_t json_len, dbao_err *err);
/* zt_keyset_load_jwks_file: zt_keyset_add_jwks on a file (at most 1 MiB). */
int zt_keyset_load_jwks_file(zt_keyset *ks, const char *path, dbao_err *err);
/* zt_keyset_add_pem adds one public key from PEM (SubjectPublicKeyInfo; a private key PEM
 * adds its public half): SM2-curve keys become SM2 keys, P-256 keys ES256, RSA keys RS256.
 * kid may be NULL (empty kid). */
int zt_keyset_add_pem(zt_keyset *ks, const char *kid, const char *pem, size_t pem_len,
                      dbao_err *err);
/* zt_keyset_add_hmac adds an HS256 secret (16 bytes or more, else DBAO_EKEY); copied. */
int zt_keyset_add_hmac(zt_keyset *ks, const char *kid, const uint8_t *secret, size_t secret_len,
                       dbao_err *err);
/* zt_keyset_add_sm2 adds the public half of an SM2 key (copied, with a verification table). */
int zt_keyset_add_sm2(zt_keyset *ks, const char *kid, const gm_sm2_key *key, dbao_err *err);
/* zt_keyset_count returns the number of keys; zt_keyset_sm2_alg the SM2 alg name. */
size_t zt_keyset_count(const zt_keyset *ks);
const char *zt_keyset_sm2_alg(const zt_keyset *ks);

/* Verification options. The zero value is usable: every algorithm allowed (the key set still
 * decides: a token is verified only with a key of its alg), 8 KiB, no skew, the clock,
 * iss and aud not checked, exp required, no cnf required. */
typedef struct zt_jwt_opts {
    unsigned algs;          /* allowed zt_alg bits; 0 = ZT_ALG_ALL */
    size_t max_len;         /* 0 = ZT_JWT_MAX_LEN_DEFAULT; clamped to ZT_JWT_MAX_LEN_LIMIT */
    int64_t skew;           /* seconds of clock skew allowed on exp, nbf and iat (>= 0) */
    int64_t now;            /* unix seconds; 0 = time(NULL) (tests inject a clock) */
    const char *iss;        /* NULL: not checked; else the token's iss must equal it */
    const char *const *aud; /* accepted audiences; the token's aud (string or array) must */
    size_t num_aud;         /*  contain one of them; num_aud 0: aud not checked */
    bool allow_no_exp;      /* accept tokens without exp */
    bool require_cnf;       /* refuse tokens without a cnf device thumbprint */
} zt_jwt_opts;

/* The claims of a verified token, in fixed-size storage (strings NUL-terminated; a claim
 * longer than its field makes the token invalid, nothing is truncated). */
typedef struct zt_claims {
    zt_alg alg;
    char kid[ZT_KID_MAX];
    char sub[ZT_CLAIM_STR_MAX];
    char iss[ZT_CLAIM_STR_MAX];
    char aud[ZT_CLAIM_STR_MAX]; /* the audience that matched opts, else the first one */
    char jti[ZT_CLAIM_STR_MAX];
    int64_t exp, nbf, iat; /* 0 when absent */
    bool has_exp, has_nbf, has_iat;
    size_t num_roles; /* from "roles" (array of strings) or else "scope" (spaces) */
    char roles[ZT_ROLES_MAX][ZT_ROLE_MAX];
    bool has_cnf; /* cnf.sm3 present: the device key thumbprint */
    uint8_t cnf_sm3[GM_SM3_DIGEST_LEN];
    bool has_cnf_pub; /* cnf.jwk present (kty EC, crv SM2): the device key itself */
    uint8_t cnf_pub[GM_SM2_PUB_LEN];
    bool has_cnf_x5t;    /* cnf "x5t#S256" present (RFC 8705): SHA-256 of the client */
    uint8_t cnf_x5t[32]; /*  certificate's DER the token is bound to (mTLS binding) */
} zt_claims;

/* zt_jwt_verify verifies a compact JWS `token` (len bytes, no NUL needed) against `ks` and
 * `opts` (NULL: the zero value) and fills `claims_out` (may be NULL). Returns 0, or:
 * DBAO_ERANGE oversize token or claim; DBAO_EFORMAT not three base64url segments, padding or
 * non-canonical base64url, bad or duplicate-key JSON, wrong claim types; DBAO_ENOTSUP alg
 * "none" (any case), an alg not allowed or unknown, crit, jku/jwk/x5u/x5c headers; DBAO_EKEY
 * unknown kid, no kid while the set holds several keys for the alg, or a kid whose key is of
 * another algorithm (algorithm confusion); DBAO_EVERIFY bad signature, expired, not yet
 * valid, iat in the future, iss or aud mismatch, missing cnf when required. err names the
 * failed check, never the token. claims_out is zeroed on failure. Thread-safe (ks const).
 * Allocates only inside jansson and OpenSSL (the EVP context of ES256/RS256 verification, the
 * copy of the keyed HMAC context of HS256). */
int zt_jwt_verify(const zt_keyset *ks, const zt_jwt_opts *opts, const char *token, size_t len,
                  zt_claims *claims_out, dbao_err *err);

/* A signing key for zt_jwt_sign (borrowed). alg picks the member used: HS256 `secret`,
 * SM2 `sm2` (with its private key), ES256 `pem` (a P-256 private key, PKCS#8 or SEC1 PEM).
 * RS256 signing is not provided. kid NULL: no kid header. sm2_alg NULL: "SM2". */
typedef struct zt_jwt_signkey {
    zt_alg alg;
    const char *kid;
    const uint8_t *secret;
    size_t secret_len;
    const gm_sm2_key *sm2;
    const char *sm2_alg;
    const char *pem;
    size_t pem_len;
} zt_jwt_signkey;

/* zt_jwt_sign writes a new NUL-terminated compact token into *out (free with dbao_free): the
 * header {"alg":..,"typ":"JWT"[,"kid":..]} and `payload_json` (a JSON object, re-serialised
 * compactly; duplicate keys refused). DBAO_EFORMAT bad payload, DBAO_EKEY bad key. */
int zt_jwt_sign(char **out, size_t *out_len, const zt_jwt_signkey *key, const char *payload_json,
                size_t payload_len, dbao_err *err);

/* zt_claims_to_json writes a payload for zt_jwt_sign from the set fields of `c` (sub, iss,
 * aud, jti if non-empty, iat/nbf/exp if has_*, roles if num_roles > 0, cnf {"sm3"} if has_cnf)
 * into a new NUL-terminated string (free with dbao_free). */
int zt_claims_to_json(char **out, size_t *out_len, const zt_claims *c, dbao_err *err);

/* zt_b64url_encode writes the unpadded base64url form of `len` bytes and a NUL into `out`
 * (room for (len * 4 + 2) / 3 + 1) and returns the length written (without the NUL).
 * zt_b64url_decode decodes strict unpadded base64url (no '=', no other characters, unused
 * trailing bits zero) into `out` (room for `cap`): 0 and *out_len, DBAO_EFORMAT or
 * DBAO_ERANGE. */
size_t zt_b64url_encode(char *out, const uint8_t *in, size_t len);
int zt_b64url_decode(uint8_t *out, size_t cap, size_t *out_len, const char *in, size_t in_len);

/* ---- device signatures ------------------------------------------------------------------- */

/* The second factor: a device's SM2 key, bound to the token by its thumbprint in cnf.sm3:
 *   thumbprint = SM3(04 || x || y), the 65-byte uncompressed public point; in the token as
 *   base64url without padding (43 characters).
 * The device key comes from the caller (a registry of enrolled devices, zt_devkeys, looked up
 * by the thumbprint in the token), or, when the caller passes none, from the token's own
 * cnf.jwk; either way its thumbprint must equal cnf.sm3. All SM2 signatures here use the
 * default ID "1234567812345678" and travel as base64url of raw r||s (86 characters).
 *
 * Mode "token": X-SM2-Signature = SM2 signature over the exact bytes of the compact JWT.
 * Mode "request": X-SM2-Signature = SM2 signature over the canonical request string
 *     METHOD LF PATH LF QUERY LF TIMESTAMP LF NONCE LF BODY-SM3
 *   METHOD as sent (e.g. "GET"); PATH the request target's path as sent (not normalised);
 *   QUERY the part after '?' as sent ("" when none); TIMESTAMP the X-SM2-Timestamp header
 *   (unix seconds, decimal, no sign or leading zero); NONCE the X-SM2-Nonce header (16 to 64
 *   characters of the base64url alphabet); BODY-SM3 the X-Content-SM3 header: base64url of
 *   SM3 of the body bytes as sent (SM3 of the empty string when there is no body). No LF
 *   after the last field. */

#define ZT_DEVSIG_B64_LEN 86 /* base64url of a raw 64-byte SM2 signature */
#define ZT_SM3_B64_LEN    43 /* base64url of 32 bytes */
#define ZT_NONCE_MIN      16
#define ZT_NONCE_MAX      64

/* zt_sm2_thumbprint computes SM3(04||x||y) of an SM2 public key. */
void zt_sm2_thumbprint(uint8_t out[GM_SM3_DIGEST_LEN], const gm_sm2_key *key);

/* A registry of enrolled device keys, indexed by thumbprint. Built by one thread, then
 * immutable and shared (const) like zt_keyset; NULL frees are no-ops. Keys get verification
 * tables (gm_sm2_key_precompute). */
typedef struct zt_devkeys zt_devkeys;
int zt_devkeys_new(zt_devkeys **out, dbao_err *err);
void zt_devkeys_free(zt_devkeys *dk);
/* zt_devkeys_add_pub adds 04||x||y (or compressed); zt_devkeys_add_pem a PEM key (its public
 * half). A key already present is a no-op. */
int zt_devkeys_add_pub(zt_devkeys *dk, const uint8_t *pub, size_t pub_len, dbao_err *err);
int zt_devkeys_add_pem(zt_devkeys *dk, const char *pem, size_t pem_len, dbao_err *err);
/* zt_devkeys_find returns the key with this thumbprint (borrowed, lives as long as dk) or
 * NULL. */
const gm_sm2_key *zt_devkeys_find(const zt_devkeys *dk, const uint8_t thumb[GM_SM3_DIGEST_LEN]);

/* A cache of verified token-mode signatures so the gateway verifies once per token: a fixed
 * number of entries in mutex-protected shards (thread-safe; no allocation after new), keyed by
 * SM3(token || 0x00 || signature), each valid until the token's exp. A full set evicts the
 * entry expiring first (forgetting a verified signature only costs a verification). */
typedef struct zt_sigcache zt_sigcache;
/* zt_sigcache_new: num_entries 0 = 65536; rounded up to a multiple of the shard size. */
int zt_sigcache_new(zt_sigcache **out, size_t num_entries, dbao_err *err);
void zt_sigcache_free(zt_sigcache *c);

/* zt_devsig_verify_token checks the token-mode signature `sig_b64` (the X-SM2-Signature
 * value) over `token` (the exact compact JWT of a token zt_jwt_verify accepted into
 * `claims`). device_key: the device's public key (from zt_devkeys_find(claims->cnf_sm3)), or
 * NULL to use claims->cnf_pub. cache (may be NULL): after the key/cnf check, a hit returns 0
 * without verifying; a success is remembered until claims->exp (now + 300 s without exp).
 * now 0 = time(NULL).
 * 0, or DBAO_EVERIFY (bad signature; no cnf in the token; the key's thumbprint is not cnf.sm3;
 * no key), DBAO_EFORMAT (the header is not 86 base64url characters). */
int zt_devsig_verify_token(const zt_claims *claims, const gm_sm2_key *device_key, const char *token,
                           size_t token_len, const char *sig_b64, size_t sig_b64_len,
                           zt_sigcache *cache, int64_t now, dbao_err *err);

/* zt_devsig_sign_token writes the X-SM2-Signature value (86 characters and a NUL) for a token
 * with a device private key. */
int zt_devsig_sign_token(char out[ZT_DEVSIG_B64_LEN + 1], const gm_sm2_key *device_priv,
                         const char *token, size_t token_len);

/* A nonce cache for request mode: bounded memory (fixed at new), thread-safe (mutex-protected
 * shards), keyed by SM3(device thumbprint || nonce); an entry lives until its request's
 * timestamp + window (after which the timestamp itself is refused), then its slot is reused.
 * When a shard has no room for a live nonce the request is REFUSED (DBAO_ERANGE, "nonce
 * cache full"): a nonce is never forgotten early, so replays stay impossible under load. */
typedef struct zt_noncecache zt_noncecache;
/* zt_noncecache_new: num_entries 0 = 262144 (about 12 MiB: 2 slots of 24 bytes each). */
int zt_noncecache_new(zt_noncecache **out, size_t num_entries, dbao_err *err);
void zt_noncecache_free(zt_noncecache *nc);
/* zt_noncecache_add records key (32 bytes) until `expires`: 0, DBAO_EVERIFY if a live entry
 * with this key exists (a replay), DBAO_ERANGE if full. */
int zt_noncecache_add(zt_noncecache *nc, const uint8_t key[GM_SM3_DIGEST_LEN], int64_t expires,
                      int64_t now);
/* zt_noncecache_live counts live entries (for metrics; takes every shard lock in turn). */
size_t zt_noncecache_live(const zt_noncecache *nc, int64_t now);

/* The parts of a request that request mode signs, borrowed from the parsed request. Header
 * values are as received (NULL/0 when absent). body_sm3: SM3 of the body as received; NULL
 * means "checked later by the caller" (the caller must then compare it with the
 * X-Content-SM3 header before using the body). */
typedef struct zt_devsig_request {
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    const char *query; /* without '?' */
    size_t query_len;
    const char *sig; /* X-SM2-Signature */
    size_t sig_len;
    const char *timestamp; /* X-SM2-Timestamp */
    size_t timestamp_len;
    const char *nonce; /* X-SM2-Nonce */
    size_t nonce_len;
    const char *content_sm3; /* X-Content-SM3 */
    size_t content_sm3_len;
    const uint8_t *body_sm3;
} zt_devsig_request;

/* zt_devsig_verify_request verifies a request-mode signature. claims/device_key as in
 * zt_devsig_verify_token. Order: headers parsed, timestamp within now +- window seconds
 * (window 0 = 300), body hash, signature, and only then the nonce recorded in `nc` (so
 * unsigned requests cannot fill it). nc NULL disables replay protection (tests only).
 * 0, or DBAO_EFORMAT (a header missing or malformed), DBAO_EVERIFY (timestamp outside the
 * window, body hash mismatch, bad signature, key/cnf mismatch, replayed nonce), DBAO_ERANGE
 * (nonce cache full). */
int zt_devsig_verify_request(const zt_claims *claims, const gm_sm2_key *device_key,
                             const zt_devsig_request *req, zt_noncecache *nc, int64_t now,
                             uint32_t window, dbao_err *err);

/* zt_devsig_canonical writes the canonical request string of `req` (its method, path, query,
 * timestamp, nonce and content_sm3 fields) into `out` (reset first). DBAO_EFORMAT if a field
 * holds an LF, DBAO_ENOMEM. */
int zt_devsig_canonical(dbao_buf *out, const zt_devsig_request *req, dbao_err *err);

/* Request signing for the CLI and tests: fills the four header values for method, path,
 * query, body, with timestamp `ts` (0 = time(NULL)) and a fresh random nonce (22 characters).
 * The buffers are caller storage. */
typedef struct zt_devsig_headers {
    char sig[ZT_DEVSIG_B64_LEN + 1];
    char timestamp[24];
    char nonce[ZT_NONCE_MAX + 1];
    char content_sm3[ZT_SM3_B64_LEN + 1];
} zt_devsig_headers;
int zt_devsig_sign_request(zt_devsig_headers *out, const gm_sm2_key *device_priv,
                           const char *method, const char *path, const char *query,
                           const uint8_t *body, size_t body_len, int64_t ts, dbao_err *err);

/* ---- access control ---------------------------------------------------------------------- */

/* Role-based access control (src/zt/rbac.c; policy format and matching rules in
 * docs/zt-policy.md). A policy maps roles to rules; a rule is an effect (allow or deny), a set
 * of methods ("*" or a list), a path pattern and optionally a route name. A request is allowed
 * when some rule of one of its roles (or of the role "*", which applies to every request)
 * allows it and no such rule denies it: deny by default, and an explicit deny beats any allow.
 *
 * Path patterns are matched segment by segment, case-sensitively, against a path already
 * normalised by the gateway (gw_path_normalize): "/a/b" is exact; a segment "*" matches one
 * non-empty segment, "{id}" the same with a name; a last segment "**" matches nothing or
 * anything further (a pattern "/a/b" with a last segment "**" matches "/a/b", "/a/b/" and
 * "/a/b/c/d"). A trailing slash is part of the path ("/a/b/" is not "/a/b"). A path that is
 * not in normalised form ("//", "." or ".." segments, lower-case or needless escapes, '\\',
 * control bytes) is never matched by any rule and is always denied (ZT_RBAC_RULE_BAD_PATH).
 *
 * Threading: a zt_rbac is immutable once built, so any number of threads may call
 * zt_rbac_check on it at once. Its lifetime is reference-counted (atomic): zt_rbac_ref and
 * zt_rbac_unref may be called from any thread. Hot swap: a zt_rbac_slot holds the current
 * policy; a writer installs a new one with zt_rbac_slot_set (the old one stays in use where it
 * is held), and each reader thread keeps a zt_rbac_local cache that zt_rbac_slot_get refreshes
 * when the slot's generation changed (one atomic load per request on the fast path, a short
 * mutex only after a swap). A bad policy never reaches the slot: parse first, then set. */
typedef struct zt_rbac zt_rbac;
typedef struct zt_rbac_slot zt_rbac_slot;

typedef enum zt_rbac_decision {
    ZT_RBAC_DENY = 0,
    ZT_RBAC_ALLOW = 1,
} zt_rbac_decision;

/* Rule ids reported for decisions no rule of the policy made. */
#define ZT_RBAC_RULE_DEFAULT  "default-deny"
#define ZT_RBAC_RULE_BAD_PATH "bad-path"

#define ZT_RBAC_MAX_TEXT  (4u << 20) /* policy text */
#define ZT_RBAC_MAX_RULES 65536
#define ZT_RBAC_MAX_DEPTH 64 /* segments in a pattern */

/* zt_rbac_parse compiles the YAML policy `text` (`len` bytes; need not be NUL-terminated)
 * into a new policy with one reference in *out. `name` (a file name or an etcd key) prefixes
 * every error: "policy.yaml:12: unknown method 'GTE' in role 'doctor'". Returns 0, or
 * DBAO_EFORMAT (any schema or syntax error; *out is NULL), DBAO_ERANGE (too large) or
 * DBAO_ENOMEM. */
int zt_rbac_parse(zt_rbac **out, const char *text, size_t len, const char *name, dbao_err *err);

/* zt_rbac_load reads the file at `path` (at most ZT_RBAC_MAX_TEXT bytes) and parses it. */
int zt_rbac_load(zt_rbac **out, const char *path, dbao_err *err);

/* zt_rbac_ref adds a reference and returns `p`; zt_rbac_unref drops one and frees the policy
 * with the last (NULL is a no-op for both). */
zt_rbac *zt_rbac_ref(zt_rbac *p);
void zt_rbac_unref(zt_rbac *p);

/* zt_rbac_check decides a request: `roles` (num_roles strings, may repeat or be unknown to the
 * policy), the request method (case-sensitive, "GET"), the normalised `path` (NUL-terminated,
 * no query) and `route` (the gateway route name, NULL if none). It never allocates. If
 * `out_rule` is not NULL it receives the id of the deciding rule (the policy's `id:` or
 * "<role>#<n>", n counting from 1 within the role), or ZT_RBAC_RULE_DEFAULT when no rule
 * matched, or ZT_RBAC_RULE_BAD_PATH; the string lives as long as the policy. With several
 * matching rules of the winning effect, the first in the policy text decides. A NULL policy,
 * method or path denies. */
zt_rbac_decision zt_rbac_check(const zt_rbac *p, const char *const *roles, size_t num_roles,
                               const char *method, const char *path, const char *route,
                               const char **out_rule);

/* zt_rbac_num_rules returns the number of rules in the policy (for logs and metrics). */
size_t zt_rbac_num_rules(const zt_rbac *p);

/* zt_rbac_path_is_normalized tells whether `path` is in the form gw_path_normalize produces
 * (the form zt_rbac_check matches). */
bool zt_rbac_path_is_normalized(const char *path);

/* zt_rbac_slot_new makes a slot holding `initial` (takes the caller's reference; may be NULL:
 * then every check through the slot denies). Returns 0 or DBAO_ENOMEM (the reference is then
 * still the caller's). zt_rbac_slot_free drops the slot's reference; every reader must have
 * cleaned up its zt_rbac_local first (NULL is a no-op). */
int zt_rbac_slot_new(zt_rbac_slot **out, zt_rbac *initial);
void zt_rbac_slot_free(zt_rbac_slot *s);

/* zt_rbac_slot_set installs `p` (takes the caller's reference) and drops the slot's reference
 * to the previous policy; readers move to `p` at their next zt_rbac_slot_get. */
void zt_rbac_slot_set(zt_rbac_slot *s, zt_rbac *p);

/* zt_rbac_local: one per reader thread, zero-initialised ({0}); it holds a reference to the
 * policy that thread last used. */
typedef struct zt_rbac_local {
    zt_rbac *policy;
    uint64_t gen;
} zt_rbac_local;

/* zt_rbac_slot_get returns the slot's current policy through the thread's cache `local`
 * (refreshing it after a swap), or NULL if the slot is empty (zt_rbac_check then denies); the
 * result stays valid until the next zt_rbac_slot_get or zt_rbac_local_cleanup with the same
 * `local`. A thread that stops checking keeps the old policy alive until it cleans up. */
const zt_rbac *zt_rbac_slot_get(zt_rbac_slot *s, zt_rbac_local *local);
void zt_rbac_local_cleanup(zt_rbac_local *local);

/* Policy from etcd (src/zt/rbac_etcd.c; docs/zt-policy.md "Policy from etcd"). A watcher
 * keeps a slot in step with one etcd key holding the policy text: zt_rbac_etcd_start reads the
 * key, parses it (zt_rbac_parse, with the key as the name in errors) and installs it, then a
 * thread of its own watches the key (src/common/etcd.c: reconnects with back-off, fails over
 * across endpoints, resumes after the last revision seen, re-reads after a compaction). Each
 * new value is parsed: a good one is installed (readers see it at their next
 * zt_rbac_slot_get, so within milliseconds of the write); a bad one is refused and the policy
 * in force stays. A deleted key also leaves the policy in force: a delete neither opens the
 * gateway up nor locks everyone out; it is reported, and the next put is applied as usual.
 * on_event (optional) hears of each of these on the watcher's thread (the initial load on the
 * caller's): kind is a ZT_RBAC_ETCD_* value and msg a message without policy text.
 * Threading: start and stop from one thread; zt_rbac_etcd_revision from any. */
typedef struct zt_rbac_etcd zt_rbac_etcd;

enum {
    ZT_RBAC_ETCD_LOADED = 0,   /* a policy was installed (msg: key, revision, rule count) */
    ZT_RBAC_ETCD_REJECTED = 1, /* a new value did not parse; the old policy stays (msg: why) */
    ZT_RBAC_ETCD_DELETED = 2,  /* the key was deleted; the old policy stays */
    ZT_RBAC_ETCD_ERROR = 3,    /* etcd unreachable or the stream broke; retrying */
};

/* zt_rbac_etcd_start reads `key` from the `num_endpoints` etcd endpoints ("http://host:port";
 * each call bounded by timeout_ms, 0: 2000), installs its policy into `slot` and starts the
 * watcher thread. The gateway must not start without a policy, so it fails when the key cannot
 * be read, does not exist or does not parse: DBAO_EIO / -ETIMEDOUT (etcd unreachable), -ENOENT
 * (no such key), DBAO_EFORMAT / DBAO_ERANGE (bad policy: err names the key and line),
 * DBAO_EINVAL, DBAO_ENOMEM or -errno (thread creation); the slot is then left as it was.
 * `slot` must outlive the watcher. Stop and free with zt_rbac_etcd_stop. */
int zt_rbac_etcd_start(zt_rbac_etcd **out, zt_rbac_slot *slot, const char *const *endpoints,
                       size_t num_endpoints, const char *key, uint32_t timeout_ms,
                       void (*on_event)(void *arg, int kind, const char *msg), void *arg,
                       dbao_err *err);

/* zt_rbac_etcd_stop stops the watcher (within about 100 ms: the watch polls a stop flag every
 * 50 ms; a blocking re-read after a compaction may take up to timeout_ms), joins its thread and
 * frees it; the slot keeps the last policy installed. NULL is a no-op. */
void zt_rbac_etcd_stop(zt_rbac_etcd *w);

/* zt_rbac_etcd_revision returns the etcd mod revision of the policy in force (for logs and
 * metrics). */
int64_t zt_rbac_etcd_revision(const zt_rbac_etcd *w);

/* ---- rate limits ------------------------------------------------------------------------- */

/* Token buckets keyed by arbitrary byte strings (a subject, a client IP, a route), in a table
 * of bounded memory (src/zt/ratelimit.c). Every key has the same limit: `rate` tokens per
 * `period_ms` with room for `burst`; a request takes one token. The bucket is kept as GCRA
 * (one "theoretical arrival time" per key, integer nanoseconds, the emission interval rounded
 * up, so the limiter never admits more than burst + t/interval in any time t). The caller
 * passes a monotonic clock (now_ns), which makes tests deterministic.
 *
 * Memory: a fixed number of slots (max_keys rounded up to a power of two) in sharded, locked
 * hash tables; each key may live in one of two buckets of 8 slots (keyed SipHash, two
 * choices). A bucket that has refilled completely carries no state, so its slot is reused by
 * any key at any time: idle keys are evicted without changing any decision. A new key that
 * finds no free slot in its two buckets shares the one overflow bucket (its own rate and
 * burst): never unlimited. Size max_keys at about twice the keys active at once. Keys longer
 * than 48 bytes are stored as their SM3 digest.
 *
 * Threading: every function may be called from any thread at once (per-shard mutexes, held
 * for a few dozen instructions, never across a call out). */
typedef struct zt_ratelimit zt_ratelimit;

typedef struct zt_ratelimit_opts {
    uint32_t rate;           /* tokens per period, >= 1 */
    uint32_t period_ms;      /* 0: 1000 (rate per second) */
    uint32_t burst;          /* bucket size, >= 1 */
    size_t max_keys;         /* 0: 65536; at most 1 << 24 */
    uint32_t overflow_rate;  /* the shared bucket; 0: rate */
    uint32_t overflow_burst; /* 0: burst */
} zt_ratelimit_opts;

typedef struct zt_ratelimit_stats {
    size_t slots;           /* table size */
    size_t keys;            /* slots holding a bucket that has not refilled yet */
    uint64_t overflow_hits; /* takes that went to the overflow bucket since creation */
} zt_ratelimit_stats;

/* zt_ratelimit_new makes an empty table. Returns 0, DBAO_EINVAL (rate or burst 0, an interval
 * below 1 ns or above a day, max_keys too large) or DBAO_ENOMEM. zt_ratelimit_free: NULL is a
 * no-op. */
int zt_ratelimit_new(zt_ratelimit **out, const zt_ratelimit_opts *opts, dbao_err *err);
void zt_ratelimit_free(zt_ratelimit *t);

/* zt_ratelimit_take takes one token from the bucket of `key` (key_len bytes, any bytes; 0 is
 * a valid empty key) at time `now_ns` (monotonic). Returns true if allowed. When refused,
 * *out_retry_after_ms (may be NULL) receives the wait until a token is available, rounded
 * up to whole milliseconds (>= 1); 0 when allowed. A clock that goes back is treated as not
 * moving for the keys it already saw. */
bool zt_ratelimit_take(zt_ratelimit *t, const void *key, size_t key_len, uint64_t now_ns,
                       uint32_t *out_retry_after_ms);

/* zt_ratelimit_sweep empties every slot whose bucket has refilled at `now_ns` and returns how
 * many it emptied (optional: takes reuse such slots anyway). */
size_t zt_ratelimit_sweep(zt_ratelimit *t, uint64_t now_ns);

/* zt_ratelimit_get_stats fills *out (a scan of the table: for metrics, not per request). */
void zt_ratelimit_get_stats(zt_ratelimit *t, uint64_t now_ns, zt_ratelimit_stats *out);

/* ---- circuit breakers -------------------------------------------------------------------- */

/* A circuit breaker for one upstream cluster (src/zt/breaker.c). Closed: calls pass and their
 * outcomes are counted in a sliding window of `buckets` time buckets covering `window_ms`;
 * once the window holds at least `min_requests` calls and the error ratio (5xx, timeouts,
 * connect failures: the caller classifies) or the slow-call ratio (duration >= slow_ms)
 * reaches its threshold, the breaker opens. Open: calls are refused for `open_ms`. Then
 * half-open: at most `probes` calls are admitted at once (an atomic counter, exact under any
 * number of threads); `successes` successful probes close it (with an empty window), one
 * failed probe opens it again. Outcomes of calls admitted in an earlier state (a "generation"
 * carried in the token) are ignored, so late answers from before a trip do not count.
 *
 * Threading: all functions may be called from any thread. zt_breaker_allow is lock-free in the
 * closed and open states (one atomic load); zt_breaker_record takes a small mutex for the
 * window. State changes are reported through `on_change` in the order they happened, from the
 * thread that caused them or another caller's thread, never with a lock held; the callback
 * may call zt_breaker_state but should not block. */
typedef struct zt_breaker zt_breaker;

typedef enum zt_circuit {
    ZT_CIRCUIT_CLOSED = 0,
    ZT_CIRCUIT_OPEN = 1,
    ZT_CIRCUIT_HALF_OPEN = 2,
} zt_circuit;

typedef enum zt_outcome {
    ZT_OUTCOME_OK = 0,        /* an answer that is not a server error (slow if over slow_ms) */
    ZT_OUTCOME_ERROR = 1,     /* a 5xx answer */
    ZT_OUTCOME_TIMEOUT = 2,   /* no answer in time */
    ZT_OUTCOME_CONNECT = 3,   /* connection refused, reset, TLS failure */
    ZT_OUTCOME_CANCELLED = 4, /* no outcome (client went away): counts nothing, frees a probe */
} zt_outcome;

/* One state change: from -> to at `now_ns`; `missed` counts earlier changes that could not be
 * queued (only if the callback falls 64 changes behind). */
typedef struct zt_breaker_event {
    zt_circuit from;
    zt_circuit to;
    uint64_t now_ns;
    uint64_t missed;
} zt_breaker_event;

typedef void (*zt_breaker_cb)(void *arg, const char *name, const zt_breaker_event *ev);

typedef struct zt_breaker_opts {
    uint32_t window_ms;      /* 0: 30000 */
    uint32_t buckets;        /* 0: 30; 1..600, window_ms a multiple of it */
    uint32_t min_requests;   /* 0: 20 */
    uint32_t error_permille; /* error ratio that trips, 1..1000; 0: 150 (15%) */
    uint32_t slow_permille;  /* slow-call ratio that trips; 0: slow calls never trip */
    uint32_t slow_ms;        /* a call this long or longer is slow (0: none is) */
    uint32_t open_ms;        /* 0: 30000 */
    uint32_t probes;         /* concurrent half-open probes; 0: 1 */
    uint32_t successes;      /* successful probes that close it; 0: probes */
    zt_breaker_cb on_change; /* may be NULL */
    void *cb_arg;
} zt_breaker_opts;

/* The token of one admitted call (hand it back to zt_breaker_record exactly once). */
typedef uint64_t zt_breaker_token;

typedef struct zt_breaker_stats {
    zt_circuit state;
    uint32_t calls, errors, slow; /* in the window (closed state) */
    uint32_t probes_in_flight;
} zt_breaker_stats;

/* zt_breaker_new makes a closed breaker named `name` (copied; passed to the callback).
 * Returns 0, DBAO_EINVAL (an option out of range) or DBAO_ENOMEM. zt_breaker_free: NULL is a
 * no-op; no other thread may use the breaker then. */
int zt_breaker_new(zt_breaker **out, const char *name, const zt_breaker_opts *opts, dbao_err *err);
void zt_breaker_free(zt_breaker *b);

/* zt_breaker_allow asks before a call at `now_ns` (monotonic). Returns true and a token in
 * *out_token if the call may go, false if not; then *out_retry_after_ms (may be NULL) is the
 * time until the breaker will admit probes (rounded up, >= 1 ms; 1000 ms when half-open with
 * every probe slot taken), for a Retry-After header. */
bool zt_breaker_allow(zt_breaker *b, uint64_t now_ns, zt_breaker_token *out_token,
                      uint32_t *out_retry_after_ms);

/* zt_breaker_record reports the outcome of an admitted call and its duration. Every token
 * from zt_breaker_allow must be recorded once (ZT_OUTCOME_CANCELLED if there is none), or a
 * half-open probe slot stays taken until the breaker next changes state. */
void zt_breaker_record(zt_breaker *b, zt_breaker_token token, zt_outcome outcome,
                       uint64_t duration_ns, uint64_t now_ns);

/* zt_breaker_state returns the current state (an open breaker whose open_ms has passed still
 * reads ZT_CIRCUIT_OPEN until the next zt_breaker_allow). */
zt_circuit zt_breaker_state(const zt_breaker *b);

/* zt_breaker_get_stats fills *out with a consistent snapshot (takes the mutex). */
void zt_breaker_get_stats(zt_breaker *b, uint64_t now_ns, zt_breaker_stats *out);

/* zt_circuit_name returns "closed", "open" or "half-open". */
const char *zt_circuit_name(zt_circuit c);

#ifdef __cplusplus
}
#endif
#endif /* DENGBAO_ZT_H */
