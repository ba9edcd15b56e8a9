/* balance.c: endpoint choice and health state shared by all workers.
 *
 * An endpoint is available when its active-check verdict is healthy and its passive ejection
 * (eject_until_ms, monotonic ms) has passed. Round robin counts the available,
 * non-excluded endpoints (m) and takes the (cursor mod m)-th of them, the cursor being a
 * shared atomic counter: the spread stays even when some are excluded or down (taking "the
 * next available after the cursor" would favour the endpoint after a hole). Least-connections
 * does the same among the endpoints with the fewest in-flight exchanges of this worker (the
 * caller's `active` array), so ties rotate. Two passes over at most 1024 endpoints. Everything is
 * relaxed atomics: a stale read only means one more request to an endpoint that was just ejected,
 * which the retry logic already handles.
 *
 * Passive health: `passive_failures` consecutive failed requests eject the endpoint for
 * `passive_eject_ms`; any success resets the count (as does the ejection itself). Active
 * health: `unhealthy_threshold` consecutive failed checks mark it down, `healthy_threshold`
 * consecutive passes bring it back.
 */
#include <stdlib.h>

#include "dengbao/gateway.h"

int
gw_cluster_state_new(gw_cluster_state **out, const gw_cluster *c)
{
    if (out == NULL || c == NULL)
        return DBAO_EINVAL;
    *out = NULL;
    gw_cluster_state *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return DBAO_ENOMEM;
    s->eps = calloc(c->num_endpoints ? c->num_endpoints : 1, sizeof(*s->eps));
    if (s->eps == NULL) {
        free(s);
        return DBAO_ENOMEM;
    }
    s->cluster = c;
    for (size_t i = 0; i < c->num_endpoints; i++) {
        atomic_init(&s->eps[i].healthy, true);
        atomic_init(&s->eps[i].check_passes, 0);
        atomic_init(&s->eps[i].check_failures, 0);
        atomic_init(&s->eps[i].failures, 0);
        atomic_init(&s->eps[i].eject_until_ms, 0);
        atomic_init(&s->eps[i].errors, 0);
    }
    atomic_init(&s->rr, 0);
    *out = s;
    return 0;
}

void
gw_cluster_state_free(gw_cluster_state *s)
{
    if (s == NULL)
        return;
    free(s->eps);
    free(s);
}

static inline bool
available(const gw_endpoint_state *e, uint64_t now_ms)
{
    return atomic_load_explicit(&e->healthy, memory_order_relaxed) &&
           atomic_load_explicit(&e->eject_until_ms, memory_order_relaxed) <= now_ms;
}

int
gw_balance_pick(gw_cluster_state *s, const unsigned *active, uint64_t exclude, uint64_t now_ms)
{
    if (s == NULL || s->cluster == NULL || s->cluster->num_endpoints == 0)
        return -1;
    size_t n = s->cluster->num_endpoints;
    bool lc = s->cluster->balance == GW_BALANCE_LEAST_CONN && active != NULL;
    /* first pass: how many candidates (least-connections: how many share the minimum) */
    size_t cand = 0;
    unsigned min = 0;
    for (size_t i = 0; i < n; i++) {
        if ((i < 64 && (exclude >> i) & 1) || !available(&s->eps[i], now_ms))
            continue;
        if (lc && (cand == 0 || active[i] < min)) {
            min = active[i];
            cand = 1;
        } else if (!lc || active[i] == min) {
            cand++;
        }
    }
    if (cand == 0)
        return -1;
    /* second pass: the cursor picks the k-th candidate, so exclusions and ties stay even */
    size_t k = atomic_fetch_add_explicit(&s->rr, 1, memory_order_relaxed) % cand;
    for (size_t i = 0; i < n; i++) {
        if ((i < 64 && (exclude >> i) & 1) || !available(&s->eps[i], now_ms))
            continue;
        if (lc && active[i] != min)
            continue;
        if (k-- == 0)
            return (int) i;
    }
    return -1; /* the health state changed between the passes */
}

void
gw_health_report(gw_cluster_state *s, size_t ep, bool ok, uint64_t now_ms)
{
    if (s == NULL || ep >= s->cluster->num_endpoints)
        return;
    gw_endpoint_state *e = &s->eps[ep];
    if (ok) {
        if (atomic_load_explicit(&e->failures, memory_order_relaxed) != 0)
            atomic_store_explicit(&e->failures, 0, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&e->errors, 1, memory_order_relaxed);
    unsigned limit = s->cluster->health.passive_failures;
    unsigned f = atomic_fetch_add_explicit(&e->failures, 1, memory_order_relaxed) + 1;
    if (limit > 0 && f >= limit) {
        atomic_store_explicit(&e->eject_until_ms, now_ms + s->cluster->health.passive_eject_ms,
                              memory_order_relaxed);
        atomic_store_explicit(&e->failures, 0, memory_order_relaxed);
    }
}

bool
gw_health_check_result(gw_cluster_state *s, size_t ep, bool ok)
{
    if (s == NULL || ep >= s->cluster->num_endpoints)
        return false;
    gw_endpoint_state *e = &s->eps[ep];
    const gw_health_opts *h = &s->cluster->health;
    if (ok) {
        atomic_store_explicit(&e->check_failures, 0, memory_order_relaxed);
        unsigned p = atomic_fetch_add_explicit(&e->check_passes, 1, memory_order_relaxed) + 1;
        unsigned need = h->healthy_threshold ? h->healthy_threshold : 1;
        if (p >= need && !atomic_load_explicit(&e->healthy, memory_order_relaxed)) {
            bool was = false;
            return atomic_compare_exchange_strong(&e->healthy, &was, true);
        }
        return false;
    }
    atomic_store_explicit(&e->check_passes, 0, memory_order_relaxed);
    unsigned f = atomic_fetch_add_explicit(&e->check_failures, 1, memory_order_relaxed) + 1;
    unsigned need = h->unhealthy_threshold ? h->unhealthy_threshold : 1;
    if (f >= need && atomic_load_explicit(&e->healthy, memory_order_relaxed)) {
        bool was = true;
        return atomic_compare_exchange_strong(&e->healthy, &was, false);
    }
    return false;
}
