/* devsig.c: device signatures, the second factor bound to a token (zt.h "device signatures"):
 * the SM3 thumbprint of a device's SM2 key, a registry of enrolled device keys, the
 * token-mode signature and its cache, the request-mode signature and its nonce cache.
 *
 * Thumbprint: SM3 over the 65 bytes 04 || x || y (x, y big-endian, 32 bytes each), carried in
 * the token as cnf.sm3 = base64url without padding (43 characters).
 *
 * Request mode signs, with the default SM2 ID, the canonical string (no LF after the last
 * line; each field exactly as sent, none may hold an LF):
 *
 *   METHOD LF PATH LF QUERY LF TIMESTAMP LF NONCE LF BODY-SM3
 *
 * The verifier never builds the string: it streams the fields into SM3 after Z (e = SM3(Z ||
 * M), GB/T 32918) and checks the digest, so no allocation happens per request.
 *
 * Caches (both fixed-size, allocated once, sharded by the first key byte, a mutex per shard
 * held only for a few memory operations, never across I/O or a signature check):
 *
 *   zt_sigcache    4-way set-associative sets of {key = SM3(token || 0x00 || sig), expires};
 *                  a full set evicts the entry that expires first. Losing an entry costs one
 *                  verification, nothing else.
 *   zt_noncecache  per shard, an open-addressing table (linear probing) with at least twice
 *                  as many slots as the live entries it may hold (so probes stay short).
 *                  Entries are 24 bytes (16 bytes of key, the expiry time). Expired entries
 *                  are dead slots, reused by inserts and swept by a compaction (rehash of the
 *                  live entries through a temporary copy) when live + dead slots would pass
 *                  half the table; if the live entries alone still fill half of it the shard
 *                  is full and the request is refused. A live nonce is never dropped to make
 *                  room. Near capacity every insert compacts (O(slots of a shard)); size the
 *                  cache for the peak rate times twice the window.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jwt_internal.h"

#define SHARDS           64
#define SIGCACHE_WAYS    4
#define SIGCACHE_DEFAULT 65536
#define NONCE_DEFAULT    262144
#define TOKEN_NOEXP_TTL  300
#define WINDOW_DEFAULT   300
#define NONCE_KEY_LEN    16 /* 128 bits: a false replay needs an SM3 collision on them */

static int64_t
clock_now(int64_t now)
{
    return now != 0 ? now : (int64_t) time(NULL);
}

void
zt_sm2_thumbprint(uint8_t out[GM_SM3_DIGEST_LEN], const gm_sm2_key *key)
{
    uint8_t pub[GM_SM2_PUB_LEN];

    gm_sm2_key_get_pub(key, pub);
    gm_sm3(out, pub, sizeof(pub));
}

static uint64_t
load64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

/* ---- device key registry
 * ------------------------------------------------------------------- */

typedef struct devkey_slot {
    uint8_t thumb[GM_SM3_DIGEST_LEN];
    gm_sm2_key *key; /* NULL: empty */
} devkey_slot;

struct zt_devkeys {
    devkey_slot *slots;
    size_t cap; /* power of two */
    size_t num;
};

int
zt_devkeys_new(zt_devkeys **out, dbao_err *err)
{
    zt_devkeys *dk = dbao_calloc(1, sizeof(*dk));

    *out = NULL;
    if (dk == NULL || (dk->slots = dbao_calloc(16, sizeof(devkey_slot))) == NULL) {
        dbao_free(dk);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    dk->cap = 16;
    *out = dk;
    return 0;
}

void
zt_devkeys_free(zt_devkeys *dk)
{
    if (dk == NULL) {
        return;
    }
    for (size_t i = 0; i < dk->cap; i++) {
        gm_sm2_key_free(dk->slots[i].key);
    }
    dbao_free(dk->slots);
    dbao_free(dk);
}

static devkey_slot *
devkeys_slot(devkey_slot *slots, size_t cap, const uint8_t thumb[GM_SM3_DIGEST_LEN])
{
    size_t i = (size_t) load64(thumb) & (cap - 1);

    while (slots[i].key != NULL && memcmp(slots[i].thumb, thumb, GM_SM3_DIGEST_LEN) != 0) {
        i = (i + 1) & (cap - 1);
    }
    return &slots[i];
}

const gm_sm2_key *
zt_devkeys_find(const zt_devkeys *dk, const uint8_t thumb[GM_SM3_DIGEST_LEN])
{
    if (dk == NULL) {
        return NULL;
    }
    return devkeys_slot(dk->slots, dk->cap, thumb)->key;
}

static int
devkeys_take(zt_devkeys *dk, gm_sm2_key *key, dbao_err *err)
{
    uint8_t thumb[GM_SM3_DIGEST_LEN];
    devkey_slot *s;

    if ((dk->num + 1) * 2 > dk->cap) {
        size_t cap = dk->cap * 2;
        devkey_slot *slots = dbao_calloc(cap, sizeof(*slots));

        if (slots == NULL) {
            gm_sm2_key_free(key);
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < dk->cap; i++) {
            if (dk->slots[i].key != NULL) {
                *devkeys_slot(slots, cap, dk->slots[i].thumb) = dk->slots[i];
            }
        }
        dbao_free(dk->slots);
        dk->slots = slots;
        dk->cap = cap;
    }
    zt_sm2_thumbprint(thumb, key);
    s = devkeys_slot(dk->slots, dk->cap, thumb);
    if (s->key != NULL) {
        gm_sm2_key_free(key);
        return 0;
    }
    if (gm_sm2_key_precompute(key) != 0) {
        gm_sm2_key_free(key);
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    memcpy(s->thumb, thumb, sizeof(thumb));
    s->key = key;
    dk->num++;
    return 0;
}

int
zt_devkeys_add_pub(zt_devkeys *dk, const uint8_t *pub, size_t pub_len, dbao_err *err)
{
    gm_sm2_key *key = NULL;
    int rc = gm_sm2_key_from_pub(&key, pub, pub_len, err);

    return rc != 0 ? rc : devkeys_take(dk, key, err);
}

int
zt_devkeys_add_pem(zt_devkeys *dk, const char *pem, size_t pem_len, dbao_err *err)
{
    gm_sm2_key *key = NULL;
    uint8_t pub[GM_SM2_PUB_LEN];
    int rc = gm_sm2_key_from_pem(&key, pem, pem_len, err);

    if (rc != 0) {
        return rc;
    }
    gm_sm2_key_get_pub(key, pub);
    gm_sm2_key_free(key);
    return zt_devkeys_add_pub(dk, pub, sizeof(pub), err);
}

/* ---- the device key of a token
 * -------------------------------------------------------------- */

/* bound_key checks that the device key (given, or the token's cnf.jwk) has the
 * token's thumbprint. *owned is set when the key was made here (free it). */
static int
bound_key(const zt_claims *claims, const gm_sm2_key *device_key, const gm_sm2_key **out,
          gm_sm2_key **owned, uint8_t thumb[GM_SM3_DIGEST_LEN], dbao_err *err)
{
    *owned = NULL;
    *out = NULL;
    if (claims == NULL || !claims->has_cnf) {
        return dbao_err_set(err, DBAO_EVERIFY, "token carries no device thumbprint (cnf)");
    }
    if (device_key == NULL) {
        if (!claims->has_cnf_pub) {
            return dbao_err_set(err, DBAO_EVERIFY, "no device key for the token's thumbprint");
        }
        if (gm_sm2_key_from_pub(owned, claims->cnf_pub, GM_SM2_PUB_LEN, NULL) != 0) {
            return dbao_err_set(err, DBAO_EVERIFY, "token's cnf.jwk is not a usable sm2 key");
        }
        device_key = *owned;
    }
    zt_sm2_thumbprint(thumb, device_key);
    if (memcmp(thumb, claims->cnf_sm3, GM_SM3_DIGEST_LEN) != 0) {
        gm_sm2_key_free(*owned);
        *owned = NULL;
        return dbao_err_set(err, DBAO_EVERIFY, "device key does not match the token's cnf");
    }
    *out = device_key;
    return 0;
}

static int
parse_sig(uint8_t sig[GM_SM2_SIG_RAW_LEN], const char *b64, size_t len, dbao_err *err)
{
    size_t n;

    if (b64 == NULL || len != ZT_DEVSIG_B64_LEN ||
        zt_b64url_decode(sig, GM_SM2_SIG_RAW_LEN, &n, b64, len) != 0 || n != GM_SM2_SIG_RAW_LEN) {
        return dbao_err_set(err, DBAO_EFORMAT,
                            "x-sm2-signature is not base64url of a 64-byte signature");
    }
    return 0;
}

/* ---- signature cache
 * ------------------------------------------------------------------------ */

typedef struct sig_entry {
    uint8_t key[GM_SM3_DIGEST_LEN];
    int64_t expires; /* 0: empty */
} sig_entry;

typedef struct sig_shard {
    pthread_mutex_t lock; /* guards sets */
    sig_entry *sets;      /* num_sets * SIGCACHE_WAYS */
    size_t num_sets;
} sig_shard;

struct zt_sigcache {
    sig_shard shards[SHARDS];
};

int
zt_sigcache_new(zt_sigcache **out, size_t num_entries, dbao_err *err)
{
    zt_sigcache *c = dbao_calloc(1, sizeof(*c));
    size_t per;

    *out = NULL;
    if (num_entries == 0) {
        num_entries = SIGCACHE_DEFAULT;
    }
    per = (num_entries + SHARDS * SIGCACHE_WAYS - 1) / (SHARDS * SIGCACHE_WAYS);
    if (c == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < SHARDS; i++) {
        c->shards[i].num_sets = per;
        c->shards[i].sets = dbao_calloc(per * SIGCACHE_WAYS, sizeof(sig_entry));
        pthread_mutex_init(&c->shards[i].lock, NULL);
        if (c->shards[i].sets == NULL) {
            zt_sigcache_free(c);
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        }
    }
    *out = c;
    return 0;
}

void
zt_sigcache_free(zt_sigcache *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < SHARDS; i++) {
        if (c->shards[i].num_sets > 0) {
            pthread_mutex_destroy(&c->shards[i].lock);
        }
        dbao_free(c->shards[i].sets);
    }
    dbao_free(c);
}

static sig_entry *
sig_set(zt_sigcache *c, const uint8_t key[GM_SM3_DIGEST_LEN], sig_shard **shard)
{
    *shard = &c->shards[key[0] % SHARDS];
    return &(*shard)->sets[(load64(key + 8) % (*shard)->num_sets) * SIGCACHE_WAYS];
}

static bool
sigcache_hit(zt_sigcache *c, const uint8_t key[GM_SM3_DIGEST_LEN], int64_t now)
{
    sig_shard *sh;
    sig_entry *set = sig_set(c, key, &sh);
    bool hit = false;

    pthread_mutex_lock(&sh->lock);
    for (size_t i = 0; i < SIGCACHE_WAYS; i++) {
        if (set[i].expires > now && memcmp(set[i].key, key, GM_SM3_DIGEST_LEN) == 0) {
            hit = true;
            break;
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return hit;
}

static void
sigcache_put(zt_sigcache *c, const uint8_t key[GM_SM3_DIGEST_LEN], int64_t expires)
{
    sig_shard *sh;
    sig_entry *set = sig_set(c, key, &sh), *victim = &set[0];

    pthread_mutex_lock(&sh->lock);
    for (size_t i = 0; i < SIGCACHE_WAYS; i++) {
        if (memcmp(set[i].key, key, GM_SM3_DIGEST_LEN) == 0) {
            victim = &set[i];
            break;
        }
        if (set[i].expires < victim->expires) {
            victim = &set[i];
        }
    }
    memcpy(victim->key, key, GM_SM3_DIGEST_LEN);
    victim->expires = expires;
    pthread_mutex_unlock(&sh->lock);
}

/* ---- token mode
 * ------------------------------------------------------------------------------
 */

int
zt_devsig_verify_token(const zt_claims *claims, const gm_sm2_key *device_key, const char *token,
                       size_t token_len, const char *sig_b64, size_t sig_b64_len,
                       zt_sigcache *cache, int64_t now, dbao_err *err)
{
    uint8_t sig[GM_SM2_SIG_RAW_LEN], thumb[GM_SM3_DIGEST_LEN], ckey[GM_SM3_DIGEST_LEN];
    const gm_sm2_key *key;
    gm_sm2_key *owned = NULL;
    int rc;

    now = clock_now(now);
    rc = parse_sig(sig, sig_b64, sig_b64_len, err);
    if (rc != 0) {
        return rc;
    }
    rc = bound_key(claims, device_key, &key, &owned, thumb, err);
    if (rc != 0) {
        return rc;
    }
    if (cache != NULL) {
        gm_sm3_ctx h;
        static const uint8_t zero = 0;

        gm_sm3_init(&h);
        gm_sm3_update(&h, token, token_len);
        gm_sm3_update(&h, &zero, 1);
        gm_sm3_update(&h, sig, sizeof(sig));
        gm_sm3_final(&h, ckey);
        if (sigcache_hit(cache, ckey, now)) {
            gm_sm2_key_free(owned);
            return 0;
        }
    }
    rc = gm_sm2_verify(key, sig, (const uint8_t *) GM_SM2_DEFAULT_ID, GM_SM2_DEFAULT_ID_LEN,
                       (const uint8_t *) token, token_len);
    gm_sm2_key_free(owned);
    if (rc != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "bad device signature over the token");
    }
    if (cache != NULL) {
        sigcache_put(cache, ckey, claims->has_exp ? claims->exp : now + TOKEN_NOEXP_TTL);
    }
    return 0;
}

int
zt_devsig_sign_token(char out[ZT_DEVSIG_B64_LEN + 1], const gm_sm2_key *device_priv,
                     const char *token, size_t token_len)
{
    uint8_t sig[GM_SM2_SIG_RAW_LEN];
    int rc = gm_sm2_sign(device_priv, sig, (const uint8_t *) GM_SM2_DEFAULT_ID,
                         GM_SM2_DEFAULT_ID_LEN, (const uint8_t *) token, token_len);

    if (rc != 0) {
        out[0] = '\0';
        return rc;
    }
    zt_b64url_encode(out, sig, sizeof(sig));
    return 0;
}

/* ---- nonce cache
 * -----------------------------------------------------------------------------
 */

typedef struct nonce_entry {
    uint8_t key[NONCE_KEY_LEN]; /* the first 16 bytes of SM3(thumbprint || nonce) */
    int64_t expires;            /* 0: empty (never used since the last compaction) */
} nonce_entry;

typedef struct nonce_shard {
    pthread_mutex_t lock; /* guards everything below */
    nonce_entry *slots;   /* cap slots */
    size_t cap;           /* power of two */
    size_t used;          /* non-empty slots, live or dead */
} nonce_shard;

struct zt_noncecache {
    nonce_shard shards[SHARDS];
};

int
zt_noncecache_new(zt_noncecache **out, size_t num_entries, dbao_err *err)
{
    zt_noncecache *nc = dbao_calloc(1, sizeof(*nc));
    size_t per, cap = 8;

    *out = NULL;
    if (num_entries == 0) {
        num_entries = NONCE_DEFAULT;
    }
    per = (num_entries + SHARDS - 1) / SHARDS;
    while (cap < per * 2) {
        cap *= 2;
    }
    if (nc == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < SHARDS; i++) {
        nonce_shard *s = &nc->shards[i];

        s->slots = dbao_calloc(cap, sizeof(nonce_entry));
        s->cap = cap;
        pthread_mutex_init(&s->lock, NULL);
        if (s->slots == NULL) {
            zt_noncecache_free(nc);
            return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
        }
    }
    *out = nc;
    return 0;
}

void
zt_noncecache_free(zt_noncecache *nc)
{
    if (nc == NULL) {
        return;
    }
    for (size_t i = 0; i < SHARDS; i++) {
        if (nc->shards[i].cap > 0) {
            pthread_mutex_destroy(&nc->shards[i].lock);
        }
        dbao_free(nc->shards[i].slots);
    }
    dbao_free(nc);
}

static size_t
nonce_home(const nonce_shard *s, const uint8_t *key)
{
    return (size_t) load64(key + 4) & (s->cap - 1);
}

/* nonce_compact rehashes the live entries of s (lock held) through a temporary copy. Without
 * memory for the copy nothing changes (the insert may then find the shard full). */
static void
nonce_compact(nonce_shard *s, int64_t now)
{
    nonce_entry *old = dbao_malloc(s->cap * sizeof(nonce_entry));

    if (old == NULL) {
        return;
    }
    memcpy(old, s->slots, s->cap * sizeof(nonce_entry));
    memset(s->slots, 0, s->cap * sizeof(nonce_entry));
    s->used = 0;
    for (size_t i = 0; i < s->cap; i++) {
        const nonce_entry *e = &old[i];
        size_t j;

        if (e->expires <= now) {
            continue;
        }
        j = nonce_home(s, e->key);
        while (s->slots[j].expires != 0) {
            j = (j + 1) & (s->cap - 1);
        }
        s->slots[j] = *e;
        s->used++;
    }
    dbao_free(old);
}

static size_t
nonce_live_locked(const nonce_shard *s, int64_t now)
{
    size_t n = 0;

    for (size_t i = 0; i < s->cap; i++) {
        n += s->slots[i].expires > now;
    }
    return n;
}

int
zt_noncecache_add(zt_noncecache *nc, const uint8_t key[GM_SM3_DIGEST_LEN], int64_t expires,
                  int64_t now)
{
    nonce_shard *s = &nc->shards[key[0] % SHARDS];
    nonce_entry *reuse = NULL;
    size_t i;
    int rc = 0;

    now = clock_now(now);
    if (expires <= now) {
        return 0; /* already outside the window: nothing to remember */
    }
    pthread_mutex_lock(&s->lock);
    /* used (live + dead slots) bounds the live count: compact when it reaches
     * half the slots, and refuse when even the live entries alone fill half of
     * them. */
    if ((s->used + 1) * 2 > s->cap) {
        nonce_compact(s, now);
    }
    for (i = nonce_home(s, key); s->slots[i].expires != 0; i = (i + 1) & (s->cap - 1)) {
        nonce_entry *e = &s->slots[i];

        if (e->expires > now) {
            if (memcmp(e->key, key, NONCE_KEY_LEN) == 0) {
                rc = DBAO_EVERIFY;
                goto out;
            }
        } else if (reuse == NULL) {
            reuse = e;
        }
    }
    if (reuse == NULL && (s->used + 1) * 2 > s->cap) {
        rc = DBAO_ERANGE;
        goto out;
    }
    if (reuse == NULL) {
        reuse = &s->slots[i];
        s->used++;
    }
    memcpy(reuse->key, key, NONCE_KEY_LEN);
    reuse->expires = expires;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

size_t
zt_noncecache_live(const zt_noncecache *nc, int64_t now)
{
    size_t n = 0;

    now = clock_now(now);
    for (size_t i = 0; i < SHARDS; i++) {
        nonce_shard *s = (nonce_shard *) &nc->shards[i];

        pthread_mutex_lock(&s->lock);
        n += nonce_live_locked(s, now);
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

/* ---- request mode
 * ----------------------------------------------------------------------------
 */

static bool
has_lf(const char *s, size_t len)
{
    return len > 0 && memchr(s, '\n', len) != NULL;
}

/* canon_digest computes e = SM3(Z || canonical string) for key. */
static int
canon_digest(uint8_t e[GM_SM3_DIGEST_LEN], const gm_sm2_key *key, const zt_devsig_request *r)
{
    const char *const f[6] = {r->method, r->path, r->query, r->timestamp, r->nonce, r->content_sm3};
    const size_t l[6] = {r->method_len,    r->path_len,  r->query_len,
                         r->timestamp_len, r->nonce_len, r->content_sm3_len};
    uint8_t z[GM_SM3_DIGEST_LEN];
    gm_sm3_ctx h;
    int rc;

    rc = gm_sm2_compute_z(z, key, (const uint8_t *) GM_SM2_DEFAULT_ID, GM_SM2_DEFAULT_ID_LEN);
    if (rc != 0) {
        return rc;
    }
    gm_sm3_init(&h);
    gm_sm3_update(&h, z, sizeof(z));
    for (size_t i = 0; i < 6; i++) {
        if (i > 0) {
            gm_sm3_update(&h, "\n", 1);
        }
        if (l[i] > 0) {
            gm_sm3_update(&h, f[i], l[i]);
        }
    }
    gm_sm3_final(&h, e);
    return 0;
}

static int
check_fields(const zt_devsig_request *r, dbao_err *err)
{
    if (r->method == NULL || r->method_len == 0 || r->path == NULL || r->path_len == 0 ||
        (r->query == NULL && r->query_len > 0)) {
        return dbao_err_set(err, DBAO_EFORMAT, "request without method or path");
    }
    if (has_lf(r->method, r->method_len) || has_lf(r->path, r->path_len) ||
        has_lf(r->query, r->query_len) || has_lf(r->timestamp, r->timestamp_len) ||
        has_lf(r->nonce, r->nonce_len) || has_lf(r->content_sm3, r->content_sm3_len)) {
        return dbao_err_set(err, DBAO_EFORMAT, "a signed request field holds a line feed");
    }
    return 0;
}

static int
parse_ts(int64_t *ts, const char *s, size_t len)
{
    int64_t v = 0;

    if (s == NULL || len == 0 || len > 18 || (s[0] == '0' && len > 1)) {
        return DBAO_EFORMAT;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return DBAO_EFORMAT;
        }
        v = v * 10 + (s[i] - '0');
    }
    *ts = v;
    return 0;
}

int
zt_devsig_canonical(dbao_buf *out, const zt_devsig_request *req, dbao_err *err)
{
    int rc = check_fields(req, err);

    dbao_buf_reset(out);
    if (rc != 0) {
        return rc;
    }
    if (dbao_buf_put(out, req->method, req->method_len) != 0 || dbao_buf_putc(out, '\n') != 0 ||
        dbao_buf_put(out, req->path, req->path_len) != 0 || dbao_buf_putc(out, '\n') != 0 ||
        dbao_buf_put(out, req->query, req->query_len) != 0 || dbao_buf_putc(out, '\n') != 0 ||
        dbao_buf_put(out, req->timestamp, req->timestamp_len) != 0 ||
        dbao_buf_putc(out, '\n') != 0 || dbao_buf_put(out, req->nonce, req->nonce_len) != 0 ||
        dbao_buf_putc(out, '\n') != 0 ||
        dbao_buf_put(out, req->content_sm3, req->content_sm3_len) != 0) {
        return dbao_err_set(err, DBAO_ENOMEM, "out of memory");
    }
    return 0;
}

int
zt_devsig_verify_request(const zt_claims *claims, const gm_sm2_key *device_key,
                         const zt_devsig_request *req, zt_noncecache *nc, int64_t now,
                         uint32_t window, dbao_err *err)
{
    uint8_t sig[GM_SM2_SIG_RAW_LEN], thumb[GM_SM3_DIGEST_LEN], body[GM_SM3_DIGEST_LEN];
    uint8_t e[GM_SM3_DIGEST_LEN];
    const gm_sm2_key *key;
    gm_sm2_key *owned = NULL;
    int64_t ts = 0;
    size_t n;
    int rc;

    now = clock_now(now);
    if (window == 0) {
        window = WINDOW_DEFAULT;
    }
    if ((rc = check_fields(req, err)) != 0 ||
        (rc = parse_sig(sig, req->sig, req->sig_len, err)) != 0) {
        return rc;
    }
    if (parse_ts(&ts, req->timestamp, req->timestamp_len) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "x-sm2-timestamp is not unix seconds");
    }
    if (req->nonce == NULL || req->nonce_len < ZT_NONCE_MIN || req->nonce_len > ZT_NONCE_MAX) {
        return dbao_err_set(err, DBAO_EFORMAT, "x-sm2-nonce missing or not %d to %d characters",
                            ZT_NONCE_MIN, ZT_NONCE_MAX);
    }
    for (size_t i = 0; i < req->nonce_len; i++) {
        char c = req->nonce[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return dbao_err_set(err, DBAO_EFORMAT,
                                "x-sm2-nonce has a character outside "
                                "base64url");
        }
    }
    if (req->content_sm3 == NULL || req->content_sm3_len != ZT_SM3_B64_LEN ||
        zt_b64url_decode(body, sizeof(body), &n, req->content_sm3, req->content_sm3_len) != 0) {
        return dbao_err_set(err, DBAO_EFORMAT, "x-content-sm3 is not base64url of 32 bytes");
    }
    if (ts > now + (int64_t) window || ts < now - (int64_t) window) {
        return dbao_err_set(err, DBAO_EVERIFY, "x-sm2-timestamp outside the %u s window", window);
    }
    if (req->body_sm3 != NULL && memcmp(req->body_sm3, body, sizeof(body)) != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "body does not match x-content-sm3");
    }
    rc = bound_key(claims, device_key, &key, &owned, thumb, err);
    if (rc != 0) {
        return rc;
    }
    rc = canon_digest(e, key, req);
    if (rc == 0) {
        rc = gm_sm2_verify_digest(key, sig, e);
    }
    gm_sm2_key_free(owned);
    if (rc != 0) {
        return dbao_err_set(err, DBAO_EVERIFY, "bad device signature over the request");
    }
    if (nc != NULL) {
        uint8_t nkey[GM_SM3_DIGEST_LEN];
        gm_sm3_ctx h;

        gm_sm3_init(&h);
        gm_sm3_update(&h, thumb, sizeof(thumb));
        gm_sm3_update(&h, req->nonce, req->nonce_len);
        gm_sm3_final(&h, nkey);
        rc = zt_noncecache_add(nc, nkey, ts + (int64_t) window + 1, now);
        if (rc == DBAO_EVERIFY) {
            return dbao_err_set(err, rc, "replayed x-sm2-nonce");
        }
        if (rc != 0) {
            return dbao_err_set(err, rc, "nonce cache full");
        }
    }
    return 0;
}

int
zt_devsig_sign_request(zt_devsig_headers *out, const gm_sm2_key *device_priv, const char *method,
                       const char *path, const char *query, const uint8_t *body, size_t body_len,
                       int64_t ts, dbao_err *err)
{
    uint8_t h[GM_SM3_DIGEST_LEN], rnd[16], sig[GM_SM2_SIG_RAW_LEN], e[GM_SM3_DIGEST_LEN];
    zt_devsig_request r = {0};
    int rc;

    memset(out, 0, sizeof(*out));
    if (device_priv == NULL || !gm_sm2_key_has_priv(device_priv)) {
        return dbao_err_set(err, DBAO_EKEY, "request signing needs a device private key");
    }
    gm_sm3(h, body, body != NULL ? body_len : 0);
    zt_b64url_encode(out->content_sm3, h, sizeof(h));
    snprintf(out->timestamp, sizeof(out->timestamp), "%lld", (long long) clock_now(ts));
    rc = gm_rand_bytes(rnd, sizeof(rnd));
    if (rc != 0) {
        return dbao_err_set(err, rc, "no random nonce");
    }
    zt_b64url_encode(out->nonce, rnd, sizeof(rnd));
    r.method = method;
    r.method_len = method != NULL ? strlen(method) : 0;
    r.path = path;
    r.path_len = path != NULL ? strlen(path) : 0;
    r.query = query;
    r.query_len = query != NULL ? strlen(query) : 0;
    r.timestamp = out->timestamp;
    r.timestamp_len = strlen(out->timestamp);
    r.nonce = out->nonce;
    r.nonce_len = strlen(out->nonce);
    r.content_sm3 = out->content_sm3;
    r.content_sm3_len = ZT_SM3_B64_LEN;
    if ((rc = check_fields(&r, err)) != 0) {
        return rc;
    }
    rc = canon_digest(e, device_priv, &r);
    if (rc == 0) {
        rc = gm_sm2_sign_digest(device_priv, sig, e);
    }
    if (rc != 0) {
        return dbao_err_set(err, rc, "sm2 signing failed");
    }
    zt_b64url_encode(out->sig, sig, sizeof(sig));
    return 0;
}
