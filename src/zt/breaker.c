/* breaker.c: a circuit breaker per upstream cluster (closed -> open -> half-open -> ...).
 *
 * State word: one atomic 64-bit word holds everything zt_breaker_allow needs, so that the
 * closed state costs one atomic load and the half-open admission is one compare-and-swap:
 *
 *     bits 0..1    state (zt_circuit)
 *     bits 2..17   probes in flight (half-open only; at most opts.probes <= 1000)
 *     bits 18..63  generation: +1 at every state change
 *
 * Tokens are (generation << 1 | probe). zt_breaker_record ignores a token from another
 * generation: an answer to a call admitted before the breaker last changed state says nothing
 * about the current one (and must not free a probe slot of a later half-open period).
 *
 * Every state change happens under the mutex `mu` (rare), by a plain store of the word; the
 * only change made without the mutex is a half-open admission (CAS of the count), and a CAS
 * against a word the mutex holder has replaced fails and retries on the new state. So exactly
 * `probes` calls are admitted per half-open period whatever the number of threads. (A probe
 * admitted by the half-open period that just ended may still be running: then the upstream sees
 * at most one period's worth of extra probes.)
 *
 * Window (closed state, under `mu`): `buckets` counters of (calls, errors, slow) for
 * consecutive intervals of window_ms / buckets, in a ring indexed by now / bucket_ns, with
 * running totals. Moving to a later bucket subtracts and clears the buckets passed over (at
 * most `buckets` of them), so each record is O(1) amortised. A clock that goes back counts in
 * the latest bucket. The window covers the current, partial bucket and the buckets - 1 before
 * it. It is emptied when the breaker closes again.
 *
 * Trip rule: calls >= min_requests and (errors * 1000 >= error_permille * calls, or, if
 * slow_permille is set, slow * 1000 >= slow_permille * calls). In half-open a probe fails if
 * its outcome is an error, or if it was slow while slow calls can trip the breaker.
 *
 * Callbacks: state changes are queued (a ring of 64 under `mu`) and delivered in order by
 * whichever thread finds no delivery running (`delivering`), with `mu` released around each
 * call. If the callback falls 64 changes behind, the next queued event counts the lost ones.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "dengbao/zt.h"

#define EVQ       64
#define CNT_SHIFT 2
#define CNT_MASK  0xffffull
#define GEN_SHIFT 18
#define NS_PER_MS 1000000ull

typedef struct bucket {
    uint32_t calls, errors, slow;
} bucket;

struct zt_breaker {
    _Atomic uint64_t word;
    _Atomic uint64_t open_until; /* written under mu before the word that says OPEN */

    pthread_mutex_t mu;
    /* guarded by mu: */
    bucket *b;
    uint64_t last_idx;
    bool have_last;
    uint32_t calls, errors, slow;
    uint32_t successes;
    zt_breaker_event ev[EVQ];
    uint64_t ev_head, ev_tail, missed;
    bool delivering;

    /* read-only after creation: */
    uint32_t nb;
    uint64_t bucket_ns;
    uint32_t min_requests, error_pm, slow_pm, probes, need_successes;
    uint64_t slow_ns, open_ns;
    zt_breaker_cb cb;
    void *cb_arg;
    char *name;
};

static zt_circuit
w_state(uint64_t w)
{
    return (zt_circuit) (w & 3);
}

static uint64_t
w_count(uint64_t w)
{
    return (w >> CNT_SHIFT) & CNT_MASK;
}

static uint64_t
w_gen(uint64_t w)
{
    return w >> GEN_SHIFT;
}

static uint64_t
w_make(zt_circuit st, uint64_t gen)
{
    return (gen << GEN_SHIFT) | (uint64_t) st;
}

const char *
zt_circuit_name(zt_circuit c)
{
    switch (c) {
    case ZT_CIRCUIT_CLOSED:
        return "closed";
    case ZT_CIRCUIT_OPEN:
        return "open";
    case ZT_CIRCUIT_HALF_OPEN:
        return "half-open";
    }
    return "unknown";
}

int
zt_breaker_new(zt_breaker **out, const char *name, const zt_breaker_opts *opts, dbao_err *err)
{
    if (out == NULL || opts == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "zt_breaker_new: out or opts is NULL");
    }
    *out = NULL;
    uint32_t window_ms = opts->window_ms ? opts->window_ms : 30000;
    uint32_t nb = opts->buckets ? opts->buckets : 30;
    uint32_t probes = opts->probes ? opts->probes : 1;
    uint32_t succ = opts->successes ? opts->successes : probes;
    if (nb > 600 || window_ms % nb != 0) {
        return dbao_err_set(err, DBAO_EINVAL,
                            "breaker '%s': buckets must be 1..600 and divide window_ms",
                            name ? name : "");
    }
    if (opts->error_permille > 1000 || opts->slow_permille > 1000 || probes > 1000 ||
        succ > 1000000) {
        return dbao_err_set(err, DBAO_EINVAL, "breaker '%s': option out of range",
                            name ? name : "");
    }
    zt_breaker *b = dbao_calloc(1, sizeof(*b));
    size_t nl = name ? strlen(name) : 0;
    if (b == NULL) {
        return dbao_err_set(err, DBAO_ENOMEM, "breaker: out of memory");
    }
    b->b = dbao_calloc(nb, sizeof(*b->b));
    b->name = dbao_malloc(nl + 1);
    if (b->b == NULL || b->name == NULL || pthread_mutex_init(&b->mu, NULL) != 0) {
        dbao_free(b->b);
        dbao_free(b->name);
        dbao_free(b);
        return dbao_err_set(err, DBAO_ENOMEM, "breaker: out of memory");
    }
    if (nl) {
        memcpy(b->name, name, nl);
    }
    b->name[nl] = '\0';
    b->nb = nb;
    b->bucket_ns = (uint64_t) (window_ms / nb) * NS_PER_MS;
    b->min_requests = opts->min_requests ? opts->min_requests : 20;
    b->error_pm = opts->error_permille ? opts->error_permille : 150;
    b->slow_pm = opts->slow_permille;
    b->slow_ns = (uint64_t) opts->slow_ms * NS_PER_MS;
    b->open_ns = (uint64_t) (opts->open_ms ? opts->open_ms : 30000) * NS_PER_MS;
    b->probes = probes;
    b->need_successes = succ;
    b->cb = opts->on_change;
    b->cb_arg = opts->cb_arg;
    atomic_init(&b->word, w_make(ZT_CIRCUIT_CLOSED, 0));
    atomic_init(&b->open_until, 0);
    *out = b;
    return 0;
}

void
zt_breaker_free(zt_breaker *b)
{
    if (b == NULL) {
        return;
    }
    pthread_mutex_destroy(&b->mu);
    dbao_free(b->b);
    dbao_free(b->name);
    dbao_free(b);
}

zt_circuit
zt_breaker_state(const zt_breaker *b)
{
    /* Relaxed: an informational read. */
    return w_state(atomic_load_explicit(&((zt_breaker *) b)->word, memory_order_relaxed));
}

/* ---- window (under mu) ---- */

static void
window_reset(zt_breaker *b)
{
    memset(b->b, 0, b->nb * sizeof(*b->b));
    b->calls = b->errors = b->slow = 0;
    b->have_last = false;
}

static bucket *
window_at(zt_breaker *b, uint64_t now)
{
    uint64_t idx = now / b->bucket_ns;
    if (!b->have_last) {
        b->have_last = true;
        b->last_idx = idx;
    } else if (idx > b->last_idx) {
        uint64_t steps = idx - b->last_idx;
        if (steps >= b->nb) {
            memset(b->b, 0, b->nb * sizeof(*b->b));
            b->calls = b->errors = b->slow = 0;
        } else {
            for (uint64_t i = 1; i <= steps; i++) {
                bucket *x = &b->b[(b->last_idx + i) % b->nb];
                b->calls -= x->calls;
                b->errors -= x->errors;
                b->slow -= x->slow;
                *x = (bucket){0};
            }
        }
        b->last_idx = idx;
    }
    return &b->b[b->last_idx % b->nb];
}

/* ---- transitions and events (under mu) ---- */

static void
push_event(zt_breaker *b, zt_circuit from, zt_circuit to, uint64_t now)
{
    if (b->cb == NULL) {
        return;
    }
    if (b->ev_tail - b->ev_head == EVQ) {
        b->missed++;
        return;
    }
    b->ev[b->ev_tail % EVQ] = (zt_breaker_event){from, to, now, b->missed};
    b->missed = 0;
    b->ev_tail++;
}

static void
set_state(zt_breaker *b, uint64_t w, zt_circuit to, uint64_t now)
{
    if (to == ZT_CIRCUIT_OPEN) {
        /* Relaxed: ordered by the release store of the word below. */
        atomic_store_explicit(&b->open_until, now + b->open_ns, memory_order_relaxed);
    }
    if (to == ZT_CIRCUIT_CLOSED) {
        window_reset(b);
    }
    b->successes = 0;
    /* Release pairs with the acquire loads in zt_breaker_allow: a thread that sees OPEN also sees
     * its open_until. */
    atomic_store_explicit(&b->word, w_make(to, w_gen(w) + 1), memory_order_release);
    push_event(b, w_state(w), to, now);
}

/* pending tells (under mu) whether the caller should deliver after unlocking */
static bool
pending(const zt_breaker *b)
{
    return b->ev_head != b->ev_tail && !b->delivering;
}

/* deliver runs queued callbacks in order, unless another thread is doing it */
static void
deliver(zt_breaker *b)
{
    pthread_mutex_lock(&b->mu);
    if (b->delivering) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->delivering = true;
    while (b->ev_head != b->ev_tail) {
        zt_breaker_event ev = b->ev[b->ev_head % EVQ];
        b->ev_head++;
        pthread_mutex_unlock(&b->mu);
        b->cb(b->cb_arg, b->name, &ev);
        pthread_mutex_lock(&b->mu);
    }
    b->delivering = false;
    pthread_mutex_unlock(&b->mu);
}

/* ---- the API ---- */

bool
zt_breaker_allow(zt_breaker *b, uint64_t now_ns, zt_breaker_token *out_token,
                 uint32_t *out_retry_after_ms)
{
    if (out_retry_after_ms != NULL) {
        *out_retry_after_ms = 0;
    }
    for (;;) {
        /* Acquire pairs with the release store in set_state. */
        uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);
        switch (w_state(w)) {
        case ZT_CIRCUIT_CLOSED:
            *out_token = w_gen(w) << 1;
            return true;
        case ZT_CIRCUIT_OPEN: {
            uint64_t until = atomic_load_explicit(&b->open_until, memory_order_relaxed);
            if (now_ns < until) {
                if (out_retry_after_ms != NULL) {
                    uint64_t d = until - now_ns;
                    uint64_t ms = d / NS_PER_MS + (d % NS_PER_MS != 0);
                    *out_retry_after_ms = ms > UINT32_MAX ? UINT32_MAX : (uint32_t) ms;
                }
                return false;
            }
            pthread_mutex_lock(&b->mu);
            if (atomic_load_explicit(&b->word, memory_order_relaxed) == w) {
                set_state(b, w, ZT_CIRCUIT_HALF_OPEN, now_ns);
            }
            bool ev = pending(b);
            pthread_mutex_unlock(&b->mu);
            if (ev) {
                deliver(b);
            }
            continue;
        }
        case ZT_CIRCUIT_HALF_OPEN:
            if (w_count(w) >= b->probes) {
                if (out_retry_after_ms != NULL) {
                    *out_retry_after_ms = 1000;
                }
                return false;
            }
            /* Acq_rel on success: the admission is ordered after the state it saw; relaxed on
             * failure: the loop reloads with acquire. */
            if (atomic_compare_exchange_weak_explicit(&b->word, &w, w + (1ull << CNT_SHIFT),
                                                      memory_order_acq_rel, memory_order_relaxed)) {
                *out_token = w_gen(w) << 1 | 1;
                return true;
            }
            continue;
        }
        return false; /* not reached: the state is 2 bits and 3 is never stored */
    }
}

void
zt_breaker_record(zt_breaker *b, zt_breaker_token token, zt_outcome outcome, uint64_t duration_ns,
                  uint64_t now_ns)
{
    bool failed = outcome == ZT_OUTCOME_ERROR || outcome == ZT_OUTCOME_TIMEOUT ||
                  outcome == ZT_OUTCOME_CONNECT;
    bool slow = b->slow_ns > 0 && duration_ns >= b->slow_ns;
    bool probe = token & 1;

    pthread_mutex_lock(&b->mu);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    if (w_gen(w) != token >> 1) {
        pthread_mutex_unlock(&b->mu);
        return; /* admitted in an earlier state */
    }
    if (probe) {
        /* The generation matches, so the state is still the half-open that admitted it. Other
         * threads may add probes concurrently (CAS without mu): decrement with a CAS too. */
        while (!atomic_compare_exchange_weak_explicit(&b->word, &w, w - (1ull << CNT_SHIFT),
                                                      memory_order_acq_rel, memory_order_relaxed)) {
        }
        w -= 1ull << CNT_SHIFT;
        if (outcome != ZT_OUTCOME_CANCELLED) {
            if (failed || (slow && b->slow_pm > 0)) {
                set_state(b, w, ZT_CIRCUIT_OPEN, now_ns);
            } else if (++b->successes >= b->need_successes) {
                set_state(b, w, ZT_CIRCUIT_CLOSED, now_ns);
            }
        }
    } else if (w_state(w) == ZT_CIRCUIT_CLOSED && outcome != ZT_OUTCOME_CANCELLED) {
        bucket *x = window_at(b, now_ns);
        x->calls++;
        b->calls++;
        if (failed) {
            x->errors++;
            b->errors++;
        }
        if (slow) {
            x->slow++;
            b->slow++;
        }
        uint64_t c = b->calls;
        if (c >= b->min_requests &&
            ((uint64_t) b->errors * 1000 >= (uint64_t) b->error_pm * c ||
             (b->slow_pm > 0 && (uint64_t) b->slow * 1000 >= (uint64_t) b->slow_pm * c))) {
            set_state(b, w, ZT_CIRCUIT_OPEN, now_ns);
        }
    }
    bool ev = pending(b);
    pthread_mutex_unlock(&b->mu);
    if (ev) {
        deliver(b);
    }
}

void
zt_breaker_get_stats(zt_breaker *b, uint64_t now_ns, zt_breaker_stats *out)
{
    pthread_mutex_lock(&b->mu);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_relaxed);
    out->state = w_state(w);
    if (out->state == ZT_CIRCUIT_CLOSED && b->have_last) {
        window_at(b, now_ns);
    }
    out->calls = b->calls;
    out->errors = b->errors;
    out->slow = b->slow;
    out->probes_in_flight = (uint32_t) w_count(w);
    pthread_mutex_unlock(&b->mu);
}
