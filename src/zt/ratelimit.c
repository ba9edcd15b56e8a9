/* ratelimit.c: token-bucket rate limits per key in a table of bounded memory.
 *
 * Algorithm: GCRA, the "virtual scheduling" form of a token bucket. Each key keeps one
 * number, its theoretical arrival time `tat` (nanoseconds on the caller's monotonic clock).
 * With the emission interval T = ceil(period_ns / rate) and the bucket depth tau = burst * T,
 * a take at time `now` computes t = max(tat, now); it is allowed if t + T - now <= tau, and
 * then tat = t + T; otherwise it is refused and the wait is t + T - tau - now. A fresh key
 * (tat = now) takes exactly `burst` tokens at once, and any interval of length d admits at
 * most burst + d / T takes. Only integer arithmetic: T is rounded up, so rounding can only make
 * the limit stricter (by less than one part in period_ns / rate).
 *
 * A key whose tat <= now has a full bucket: forgetting it changes no decision. That makes
 * eviction exact: a slot whose bucket has refilled is free for any key, at any time.
 *
 * Table: `nshards` shards (a power of two, up to 64), each a mutex, an array of 64-byte slots
 * grouped in buckets of BUCKET slots, and a parallel array of 32-bit tags (0: empty; the tags
 * of one bucket fill half a cache line, so a lookup touches the slots only on a tag match).
 * A key's SipHash-2-4 (keyed with random bytes at creation, so clients cannot aim keys at one
 * bucket) picks the shard, a tag and two candidate buckets ("two choices"); a new key goes to
 * a free or refilled slot of the less loaded candidate, which keeps buckets balanced up to
 * high loads (measured with 2^16 slots: no overflow at 70% occupancy, 0.05% of new keys at
 * 80%). Slots are emptied in place, no tombstones. A key that finds neither its slot nor a free
 * or refilled one in its two buckets takes from the single overflow bucket (its own rate and
 * burst, its own mutex): a flood of new keys shares one limit instead of growing memory or
 * going unlimited. Size max_keys at about twice the keys expected to be active at once.
 *
 * Slot layout (64 bytes): tat (8), klen (1: 0..48 bytes of key stored inline, or KLEN_DIGEST
 * for keys over 48 bytes, stored as their 32-byte SM3 digest), padding (7), key (48).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "dengbao/zt.h"

#define BUCKET      8
#define KEY_INLINE  48
#define KLEN_DIGEST 255
#define MAX_SHARDS  64
#define MAX_SLOTS   ((size_t) 1 << 24)
#define NS_PER_MS   1000000ull
#define DAY_NS      (86400ull * 1000000000ull)

typedef struct slot {
    uint64_t tat;
    uint8_t klen;
    uint8_t pad[7];
    uint8_t key[KEY_INLINE];
} slot;

typedef struct shard {
    pthread_mutex_t mu;
    uint32_t *tags; /* guarded by mu; 0: empty slot */
    slot *slots;    /* guarded by mu */
} shard;

struct zt_ratelimit {
    uint64_t T, tau;   /* per key */
    uint64_t oT, otau; /* overflow bucket */
    size_t nshards;
    size_t shard_mask;  /* slots per shard - 1 */
    size_t bucket_mask; /* buckets per shard - 1 */
    uint64_t k0, k1;    /* SipHash key */
    shard *shards;
    pthread_mutex_t omu;
    uint64_t otat;                  /* guarded by omu */
    _Atomic uint64_t overflow_hits; /* statistics only: relaxed */
};

/* ---- SipHash-2-4 (Aumasson and Bernstein), written out: 20 lines, no dependency ---- */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t
le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static uint64_t
siphash(uint64_t k0, uint64_t k1, const uint8_t *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k0, v1 = 0x646f72616e646f6dull ^ k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k0, v3 = 0x7465646279746573ull ^ k1;
    const uint8_t *end = in + (len & ~(size_t) 7);
    for (; in < end; in += 8) {
        uint64_t m = le64(in);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t) len << 56;
    for (size_t i = 0; i < (len & 7); i++) {
        b |= (uint64_t) in[i] << (8 * i);
    }
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ---- table ---- */

static int
interval(uint32_t rate, uint32_t period_ms, uint32_t burst, uint64_t *T, uint64_t *tau)
{
    uint64_t period_ns = (uint64_t) (period_ms ? period_ms : 1000) * NS_PER_MS;
    if (rate == 0 || burst == 0 || period_ns > DAY_NS) {
        return DBAO_EINVAL;
    }
    uint64_t t = (period_ns + rate - 1) / rate;
    if (t == 0 || t > (UINT64_C(1) << 62) / burst) {
        return DBAO_EINVAL;
    }
    *T = t;
    *tau = t * burst;
    return 0;
}

int
zt_ratelimit_new(zt_ratelimit **out, const zt_ratelimit_opts *opts, dbao_err *err)
{
    if (out == NULL || opts == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "zt_ratelimit_new: out or opts is NULL");
    }
    *out = NULL;
    zt_ratelimit *t = dbao_calloc(1, sizeof(*t));
    if (t == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "rate limit table: out of memory");
    }
    int rc = interval(opts->rate, opts->period_ms, opts->burst, &t->T, &t->tau);
    if (rc == 0) {
        rc = interval(opts->overflow_rate ? opts->overflow_rate : opts->rate, opts->period_ms,
                      opts->overflow_burst ? opts->overflow_burst : opts->burst, &t->oT, &t->otau);
    }
    if (rc != 0) {
        dbao_free(t);
        return dbao_err_set(err, DBAO_EINVAL,
                            "rate limit: rate and burst must be >= 1 and the period at most a day");
    }
    size_t want = opts->max_keys ? opts->max_keys : 65536;
    if (want > MAX_SLOTS) {
        dbao_free(t);
        return dbao_err_set(err, DBAO_EINVAL, "rate limit: max_keys %zu above %zu", want,
                            MAX_SLOTS);
    }
    size_t slots = BUCKET;
    while (slots < want) {
        slots <<= 1;
    }
    t->nshards = 1;
    while (t->nshards < MAX_SHARDS && slots / (t->nshards * 2) >= 64) {
        t->nshards <<= 1;
    }
    t->shard_mask = slots / t->nshards - 1;
    t->bucket_mask = (t->shard_mask + 1) / BUCKET - 1;
    uint8_t key[16];
    if (gm_rand_bytes(key, sizeof(key)) != 0) {
        dbao_free(t);
        return dbao_err_set(err, DBAO_ECRYPTO, "rate limit: no random bytes for the hash key");
    }
    t->k0 = le64(key);
    t->k1 = le64(key + 8);
    dbao_cleanse(key, sizeof(key));
    t->shards = dbao_calloc(t->nshards, sizeof(*t->shards));
    if (t->shards == NULL) {
        dbao_free(t);
        return dbao_err_set(err, DBAO_ENOMEM, "rate limit table: out of memory");
    }
    size_t inited = 0;
    for (; inited < t->nshards; inited++) {
        shard *s = &t->shards[inited];
        s->slots = dbao_calloc(t->shard_mask + 1, sizeof(slot));
        s->tags = dbao_calloc(t->shard_mask + 1, sizeof(uint32_t));
        if (s->slots == NULL || s->tags == NULL || pthread_mutex_init(&s->mu, NULL) != 0) {
            dbao_free(s->slots);
            dbao_free(s->tags);
            break;
        }
    }
    if (inited < t->nshards || pthread_mutex_init(&t->omu, NULL) != 0) {
        for (size_t i = 0; i < inited; i++) {
            pthread_mutex_destroy(&t->shards[i].mu);
            dbao_free(t->shards[i].slots);
            dbao_free(t->shards[i].tags);
        }
        dbao_free(t->shards);
        dbao_free(t);
        return dbao_err_set(err, DBAO_ENOMEM, "rate limit table: out of memory");
    }
    atomic_init(&t->overflow_hits, 0);
    *out = t;
    return 0;
}

void
zt_ratelimit_free(zt_ratelimit *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->nshards; i++) {
        pthread_mutex_destroy(&t->shards[i].mu);
        dbao_free(t->shards[i].slots);
        dbao_free(t->shards[i].tags);
    }
    pthread_mutex_destroy(&t->omu);
    dbao_free(t->shards);
    dbao_free(t);
}

static uint32_t
to_ms(uint64_t ns)
{
    uint64_t ms = ns / NS_PER_MS + (ns % NS_PER_MS != 0);
    if (ms == 0) {
        ms = 1;
    }
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t) ms;
}

/* gcra applies one take to *tat; the caller holds the lock that guards it */
static bool
gcra(uint64_t *tat, uint64_t T, uint64_t tau, uint64_t now, uint32_t *retry_ms)
{
    uint64_t t = *tat > now ? *tat : now;
    if (t - now + T > tau) {
        if (retry_ms != NULL) {
            *retry_ms = to_ms(t - now + T - tau);
        }
        return false;
    }
    *tat = t + T;
    if (retry_ms != NULL) {
        *retry_ms = 0;
    }
    return true;
}

bool
zt_ratelimit_take(zt_ratelimit *t, const void *key, size_t key_len, uint64_t now_ns,
                  uint32_t *out_retry_after_ms)
{
    uint8_t stored[KEY_INLINE];
    uint8_t klen;
    const uint8_t *k = key_len ? key : (const uint8_t *) "";
    uint64_t h = siphash(t->k0, t->k1, k, key_len);
    if (key_len > KEY_INLINE) {
        gm_sm3(stored, k, key_len);
        klen = KLEN_DIGEST;
        memset(stored + GM_SM3_DIGEST_LEN, 0, KEY_INLINE - GM_SM3_DIGEST_LEN);
    } else {
        memcpy(stored, k, key_len);
        klen = (uint8_t) key_len;
    }
    size_t kcmp = klen == KLEN_DIGEST ? GM_SM3_DIGEST_LEN : klen;
    uint32_t tag = (uint32_t) (h >> 32) | 1;
    shard *s = &t->shards[h & (t->nshards - 1)];
    size_t base[2] = {((size_t) (h >> 6) & t->bucket_mask) * BUCKET,
                      ((size_t) (h >> 29) & t->bucket_mask) * BUCKET};
    size_t nb = base[0] == base[1] ? 1 : 2;
    bool ok;

    pthread_mutex_lock(&s->mu);
    for (size_t c = 0; c < nb; c++) {
        for (size_t i = 0; i < BUCKET; i++) {
            size_t j = base[c] + i;
            slot *sl = &s->slots[j];
            if (s->tags[j] == tag && sl->klen == klen && memcmp(sl->key, stored, kcmp) == 0) {
                ok = gcra(&sl->tat, t->T, t->tau, now_ns, out_retry_after_ms);
                pthread_mutex_unlock(&s->mu);
                return ok;
            }
        }
    }
    /* a new key: the free (or refilled) slot of the less loaded bucket */
    size_t pick = SIZE_MAX, pick_live = BUCKET + 1;
    for (size_t c = 0; c < nb; c++) {
        size_t cand = SIZE_MAX, live = 0;
        for (size_t i = 0; i < BUCKET; i++) {
            size_t j = base[c] + i;
            if (s->tags[j] == 0 || s->slots[j].tat <= now_ns) {
                cand = cand == SIZE_MAX ? j : cand;
            } else {
                live++;
            }
        }
        if (cand != SIZE_MAX && live < pick_live) {
            pick = cand;
            pick_live = live;
        }
    }
    if (pick != SIZE_MAX) {
        slot *sl = &s->slots[pick];
        s->tags[pick] = tag;
        sl->klen = klen;
        memcpy(sl->key, stored, kcmp);
        sl->tat = now_ns;
        ok = gcra(&sl->tat, t->T, t->tau, now_ns, out_retry_after_ms);
        pthread_mutex_unlock(&s->mu);
        return ok;
    }
    pthread_mutex_unlock(&s->mu);

    /* Relaxed: a statistics counter, ordered with nothing. */
    atomic_fetch_add_explicit(&t->overflow_hits, 1, memory_order_relaxed);
    pthread_mutex_lock(&t->omu);
    ok = gcra(&t->otat, t->oT, t->otau, now_ns, out_retry_after_ms);
    pthread_mutex_unlock(&t->omu);
    return ok;
}

size_t
zt_ratelimit_sweep(zt_ratelimit *t, uint64_t now_ns)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nshards; i++) {
        shard *s = &t->shards[i];
        pthread_mutex_lock(&s->mu);
        for (size_t j = 0; j <= t->shard_mask; j++) {
            if (s->tags[j] != 0 && s->slots[j].tat <= now_ns) {
                s->tags[j] = 0;
                n++;
            }
        }
        pthread_mutex_unlock(&s->mu);
    }
    return n;
}

void
zt_ratelimit_get_stats(zt_ratelimit *t, uint64_t now_ns, zt_ratelimit_stats *out)
{
    size_t keys = 0;
    for (size_t i = 0; i < t->nshards; i++) {
        shard *s = &t->shards[i];
        pthread_mutex_lock(&s->mu);
        for (size_t j = 0; j <= t->shard_mask; j++) {
            keys += s->tags[j] != 0 && s->slots[j].tat > now_ns;
        }
        pthread_mutex_unlock(&s->mu);
    }
    out->slots = t->nshards * (t->shard_mask + 1);
    out->keys = keys;
    out->overflow_hits = atomic_load_explicit(&t->overflow_hits, memory_order_relaxed);
}
