/* metrics.c: the gateway's Prometheus metrics (text exposition format 0.0.4).
 *
 * Hot path. Each worker owns a shard (cache-line aligned, allocated once) of plain counters
 * that only its own thread writes; gw_metrics_render sums the shards. Counters are C11
 * atomics written with relaxed load + store (a plain add on x86 and ARM, no lock prefix: there
 * is a single writer) and read with relaxed loads, so a render sees every counter torn-free
 * and the race is well defined.
 *
 * Slots. Route and cluster names map to slots 1..255 through small tables under a mutex (only
 * at configuration load); slot 0 is "other" (a full table, or slot -1 passed on the hot path).
 * A name keeps its slot for the life of the gw_metrics, so counters continue across reloads.
 *
 * Status codes. Exact counters for 100..599 per route slot would cost 500 * 256 * 8 bytes per
 * worker; instead each route slot has counters for the common codes below plus one "other"
 * counter per class, rendered as code="1xx".."5xx" (and code="other" outside 100..599). Only
 * non-zero code series are rendered.
 *
 * Latency histogram: 14 finite buckets plus +Inf, stored per bucket (non-cumulative) and made
 * cumulative when rendering; the sum is kept in microseconds and printed in seconds.
 *
 * Resilience. Fallback answers are counted per route and mode in the shards (hot path, worker
 * thread). Circuit breaker state is not per worker: a breaker is shared by every worker and
 * its state changes are reported from whichever thread caused them, so the state gauge and the
 * transition counters per cluster slot live in gw_metrics itself as real atomics (changes are
 * rare). Only clusters that ever had a breaker are rendered in those two families.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/gateway.h"
#include "gwsrv.h"

static const int common_codes[] = {100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307,
                                   308, 400, 401, 403, 404, 405, 408, 409, 411, 413, 414, 415,
                                   421, 422, 429, 431, 499, 500, 501, 502, 503, 504, 505};
#define NUM_COMMON  ((int) (sizeof(common_codes) / sizeof(common_codes[0])))
#define CODE_OTHER0 NUM_COMMON       /* + class 1..5 -> "1xx".."5xx" */
#define CODE_OUT    (NUM_COMMON + 5) /* outside 100..599 */
#define NUM_CODES   (NUM_COMMON + 6)
#define NUM_BUCKETS 15

static const uint64_t bucket_us[NUM_BUCKETS - 1] = {500,     1000,    2500,    5000,    10000,
                                                    25000,   50000,   100000,  250000,  500000,
                                                    1000000, 2500000, 5000000, 10000000};
static const char *const bucket_le[NUM_BUCKETS] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                                   "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                                   "1",      "2.5",   "5",      "10",    "+Inf"};
static const char *const uperr_kind[GW_UPERR_KINDS] = {"connect", "timeout", "reset", "protocol"};

typedef _Atomic uint64_t ctr;

typedef struct route_ctr {
    ctr fallbacks[GW_FB_MODES];
    ctr codes[NUM_CODES];
    ctr buckets[NUM_BUCKETS];
    ctr sum_us, count, bytes_in, bytes_out;
} route_ctr;

typedef struct cluster_ctr {
    ctr errors[GW_UPERR_KINDS];
    ctr idle, active; /* gauges set by this worker */
} cluster_ctr;

typedef struct shard {
    _Alignas(64) route_ctr routes[GW_METRICS_SLOTS];
    cluster_ctr clusters[GW_METRICS_SLOTS];
    _Atomic int64_t connections;
} shard;

typedef struct names {
    char *name[GW_METRICS_SLOTS]; /* [0] unused ("other") */
    size_t used;                  /* slots 1..used taken */
} names;

struct gw_metrics {
    unsigned workers;
    shard *shards;
    pthread_mutex_t mu;
    names routes, clusters;
    int8_t code_index[600]; /* status -> counter index */
    /* circuit breakers, per cluster slot (any thread) */
    atomic_bool br_on[GW_METRICS_SLOTS];
    atomic_int br_state[GW_METRICS_SLOTS];
    ctr br_trans[GW_METRICS_SLOTS][3];
};

static const char *const fb_mode[GW_FB_MODES] = {"fail", "static", "upstream", "cache"};
static const char *const br_name[3] = {"closed", "open", "half-open"};

static inline void
inc(ctr *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

static inline uint64_t
rd(ctr *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

int
gw_metrics_new(gw_metrics **out, unsigned workers)
{
    if (out == NULL || workers == 0)
        return DBAO_EINVAL;
    *out = NULL;
    gw_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return DBAO_ENOMEM;
    m->shards = aligned_alloc(64, sizeof(shard) * workers);
    if (m->shards == NULL) {
        free(m);
        return DBAO_ENOMEM;
    }
    memset(m->shards, 0, sizeof(shard) * workers); /* all-zero is a valid atomic zero */
    m->workers = workers;
    pthread_mutex_init(&m->mu, NULL);
    for (int s = 0; s < 600; s++)
        m->code_index[s] = (int8_t) (s >= 100 ? CODE_OTHER0 + s / 100 - 1 : CODE_OUT);
    for (int i = 0; i < NUM_COMMON; i++)
        m->code_index[common_codes[i]] = (int8_t) i;
    *out = m;
    return 0;
}

void
gw_metrics_free(gw_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < GW_METRICS_SLOTS; i++) {
        free(m->routes.name[i]);
        free(m->clusters.name[i]);
    }
    pthread_mutex_destroy(&m->mu);
    free(m->shards);
    free(m);
}

static int
slot(gw_metrics *m, names *t, const char *name)
{
    if (m == NULL || name == NULL)
        return -1;
    pthread_mutex_lock(&m->mu);
    int r = -1;
    for (size_t i = 1; i <= t->used; i++)
        if (strcmp(t->name[i], name) == 0) {
            r = (int) i;
            break;
        }
    if (r < 0 && t->used + 1 < GW_METRICS_SLOTS) {
        char *copy = strdup(name);
        if (copy != NULL) {
            t->name[++t->used] = copy;
            r = (int) t->used;
        }
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

int
gw_metrics_route_slot(gw_metrics *m, const char *name)
{
    return slot(m, &m->routes, name);
}

int
gw_metrics_cluster_slot(gw_metrics *m, const char *name)
{
    return slot(m, &m->clusters, name);
}

static inline unsigned
fix_slot(int s)
{
    return (s <= 0 || s >= GW_METRICS_SLOTS) ? 0u : (unsigned) s;
}

void
gw_metrics_request(gw_metrics *m, unsigned worker, int route_slot, int status, uint64_t latency_us,
                   uint64_t bytes_in, uint64_t bytes_out)
{
    if (m == NULL || worker >= m->workers)
        return;
    route_ctr *r = &m->shards[worker].routes[fix_slot(route_slot)];
    int ci = (status >= 0 && status < 600) ? m->code_index[status] : CODE_OUT;
    inc(&r->codes[ci], 1);
    unsigned b = 0;
    while (b < NUM_BUCKETS - 1 && latency_us > bucket_us[b])
        b++;
    inc(&r->buckets[b], 1);
    inc(&r->sum_us, latency_us);
    inc(&r->count, 1);
    inc(&r->bytes_in, bytes_in);
    inc(&r->bytes_out, bytes_out);
}

void
gw_metrics_upstream_error(gw_metrics *m, unsigned worker, int cluster_slot, int kind)
{
    if (m == NULL || worker >= m->workers || kind < 0 || kind >= GW_UPERR_KINDS)
        return;
    inc(&m->shards[worker].clusters[fix_slot(cluster_slot)].errors[kind], 1);
}

void
gw_metrics_connections(gw_metrics *m, unsigned worker, int delta)
{
    if (m == NULL || worker >= m->workers)
        return;
    _Atomic int64_t *c = &m->shards[worker].connections;
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

void
gw_metrics_pool(gw_metrics *m, unsigned worker, int cluster_slot, size_t idle, size_t active)
{
    if (m == NULL || worker >= m->workers)
        return;
    cluster_ctr *c = &m->shards[worker].clusters[fix_slot(cluster_slot)];
    atomic_store_explicit(&c->idle, idle, memory_order_relaxed);
    atomic_store_explicit(&c->active, active, memory_order_relaxed);
}

void
gw_metrics_fallback(gw_metrics *m, unsigned worker, int route_slot, int mode)
{
    if (m == NULL || worker >= m->workers || mode < 0 || mode >= GW_FB_MODES)
        return;
    inc(&m->shards[worker].routes[fix_slot(route_slot)].fallbacks[mode], 1);
}

void
gw_metrics_breaker(gw_metrics *m, int cluster_slot, int state, bool transition)
{
    if (m == NULL || state < 0 || state > 2)
        return;
    unsigned s = fix_slot(cluster_slot);
    atomic_store(&m->br_on[s], true);
    atomic_store(&m->br_state[s], state);
    if (transition)
        atomic_fetch_add_explicit(&m->br_trans[s][state], 1, memory_order_relaxed);
}

/* ---- rendering ---- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static void
reserve(buf *b, size_t n)
{
    if (b->oom || b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) {
        b->oom = true;
        return;
    }
    b->p = q;
    b->cap = cap;
}

static void
put(buf *b, const char *s, size_t n)
{
    reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
putf(buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(b, tmp, (size_t) n < sizeof(tmp) ? (size_t) n : sizeof(tmp) - 1);
}

/* label value escaping: \ -> \\, " -> \", newline -> \n */
static void
put_label(buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            put(b, "\\\\", 2);
        else if (*s == '"')
            put(b, "\\\"", 2);
        else if (*s == '\n')
            put(b, "\\n", 2);
        else
            put(b, s, 1);
    }
}

static void
code_label(int i, char out[8])
{
    if (i < NUM_COMMON)
        snprintf(out, 8, "%d", common_codes[i]);
    else if (i < CODE_OUT)
        snprintf(out, 8, "%dxx", i - CODE_OTHER0 + 1);
    else
        snprintf(out, 8, "other");
}

static const char *
slot_name(const names *t, size_t s)
{
    return s == 0 ? "other" : t->name[s];
}

static uint64_t
sum_route(gw_metrics *m, size_t s, size_t off, size_t idx)
{
    uint64_t v = 0;
    for (unsigned w = 0; w < m->workers; w++) {
        ctr *base = (ctr *) ((char *) &m->shards[w].routes[s] + off);
        v += rd(&base[idx]);
    }
    return v;
}

#define RSUM(s, field, idx) sum_route(m, (s), offsetof(route_ctr, field), (idx))

int
gw_metrics_render(gw_metrics *m, const char *extra, char **out, size_t *len)
{
    if (m == NULL || out == NULL || len == NULL)
        return DBAO_EINVAL;
    buf b = {0};
    pthread_mutex_lock(&m->mu);
    size_t nr = m->routes.used, nc = m->clusters.used;

    /* a route slot is shown if named, or if it is "other" and has seen requests */
    bool show_other_route = RSUM(0, count, 0) > 0;

    puts_(&b, "# HELP dengbao_gateway_requests_total Requests answered, by route and status "
              "code.\n# TYPE dengbao_gateway_requests_total counter\n");
    for (size_t s = show_other_route ? 0 : 1; s <= nr; s++)
        for (int i = 0; i < NUM_CODES; i++) {
            uint64_t v = RSUM(s, codes, (size_t) i);
            if (v == 0)
                continue;
            char code[8];
            code_label(i, code);
            puts_(&b, "dengbao_gateway_requests_total{route=\"");
            put_label(&b, slot_name(&m->routes, s));
            putf(&b, "\",code=\"%s\"} %llu\n", code, (unsigned long long) v);
        }

    puts_(&b, "# HELP dengbao_gateway_request_duration_seconds Request latency, from the "
              "first byte to the last byte of the response.\n# TYPE "
              "dengbao_gateway_request_duration_seconds histogram\n");
    for (size_t s = show_other_route ? 0 : 1; s <= nr; s++) {
        uint64_t cum = 0;
        for (size_t i = 0; i < NUM_BUCKETS; i++) {
            cum += RSUM(s, buckets, i);
            puts_(&b, "dengbao_gateway_request_duration_seconds_bucket{route=\"");
            put_label(&b, slot_name(&m->routes, s));
            putf(&b, "\",le=\"%s\"} %llu\n", bucket_le[i], (unsigned long long) cum);
        }
        uint64_t sum = RSUM(s, sum_us, 0), cnt = RSUM(s, count, 0);
        puts_(&b, "dengbao_gateway_request_duration_seconds_sum{route=\"");
        put_label(&b, slot_name(&m->routes, s));
        putf(&b, "\"} %llu.%06llu\n", (unsigned long long) (sum / 1000000),
             (unsigned long long) (sum % 1000000));
        puts_(&b, "dengbao_gateway_request_duration_seconds_count{route=\"");
        put_label(&b, slot_name(&m->routes, s));
        putf(&b, "\"} %llu\n", (unsigned long long) cnt);
    }

    static const char *const byte_fam[2][2] = {
        {"dengbao_gateway_bytes_received_total", "Request bytes received from clients."},
        {"dengbao_gateway_bytes_sent_total", "Response bytes sent to clients."}};
    for (int k = 0; k < 2; k++) {
        putf(&b, "# HELP %s %s\n# TYPE %s counter\n", byte_fam[k][0], byte_fam[k][1],
             byte_fam[k][0]);
        for (size_t s = show_other_route ? 0 : 1; s <= nr; s++) {
            uint64_t v = k == 0 ? RSUM(s, bytes_in, 0) : RSUM(s, bytes_out, 0);
            putf(&b, "%s{route=\"", byte_fam[k][0]);
            put_label(&b, slot_name(&m->routes, s));
            putf(&b, "\"} %llu\n", (unsigned long long) v);
        }
    }

    puts_(&b, "# HELP dengbao_gateway_upstream_errors_total Failed upstream attempts, by "
              "cluster and kind.\n# TYPE dengbao_gateway_upstream_errors_total counter\n");
    for (size_t s = 0; s <= nc; s++)
        for (int k = 0; k < GW_UPERR_KINDS; k++) {
            uint64_t v = 0;
            for (unsigned w = 0; w < m->workers; w++)
                v += rd(&m->shards[w].clusters[s].errors[k]);
            if (s == 0 && v == 0)
                continue;
            puts_(&b, "dengbao_gateway_upstream_errors_total{cluster=\"");
            put_label(&b, slot_name(&m->clusters, s));
            putf(&b, "\",kind=\"%s\"} %llu\n", uperr_kind[k], (unsigned long long) v);
        }

    puts_(&b, "# HELP dengbao_gateway_pool_connections Upstream connections in the pools, by "
              "cluster and state.\n# TYPE dengbao_gateway_pool_connections gauge\n");
    for (size_t s = 1; s <= nc; s++) {
        uint64_t idle = 0, active = 0;
        for (unsigned w = 0; w < m->workers; w++) {
            idle += rd(&m->shards[w].clusters[s].idle);
            active += rd(&m->shards[w].clusters[s].active);
        }
        puts_(&b, "dengbao_gateway_pool_connections{cluster=\"");
        put_label(&b, slot_name(&m->clusters, s));
        putf(&b, "\",state=\"idle\"} %llu\n", (unsigned long long) idle);
        puts_(&b, "dengbao_gateway_pool_connections{cluster=\"");
        put_label(&b, slot_name(&m->clusters, s));
        putf(&b, "\",state=\"active\"} %llu\n", (unsigned long long) active);
    }

    puts_(&b, "# HELP dengbao_gateway_fallbacks_total Answers made by a route's fallback while "
              "its cluster's circuit breaker was open, by route and mode.\n# TYPE "
              "dengbao_gateway_fallbacks_total counter\n");
    for (size_t s = 0; s <= nr; s++)
        for (int k = 0; k < GW_FB_MODES; k++) {
            uint64_t v = RSUM(s, fallbacks, (size_t) k);
            if (v == 0)
                continue;
            puts_(&b, "dengbao_gateway_fallbacks_total{route=\"");
            put_label(&b, slot_name(&m->routes, s));
            putf(&b, "\",mode=\"%s\"} %llu\n", fb_mode[k], (unsigned long long) v);
        }

    puts_(&b, "# HELP dengbao_gateway_breaker_state Circuit breaker state by cluster: 0 closed, "
              "1 open, 2 half-open.\n# TYPE dengbao_gateway_breaker_state gauge\n");
    for (size_t s = 0; s <= nc; s++) {
        if (!atomic_load(&m->br_on[s]))
            continue;
        puts_(&b, "dengbao_gateway_breaker_state{cluster=\"");
        put_label(&b, slot_name(&m->clusters, s));
        putf(&b, "\"} %d\n", atomic_load(&m->br_state[s]));
    }
    puts_(&b, "# HELP dengbao_gateway_breaker_transitions_total Circuit breaker state changes, "
              "by cluster and new state.\n# TYPE dengbao_gateway_breaker_transitions_total "
              "counter\n");
    for (size_t s = 0; s <= nc; s++) {
        if (!atomic_load(&m->br_on[s]))
            continue;
        for (int k = 0; k < 3; k++) {
            puts_(&b, "dengbao_gateway_breaker_transitions_total{cluster=\"");
            put_label(&b, slot_name(&m->clusters, s));
            putf(&b, "\",to=\"%s\"} %llu\n", br_name[k],
                 (unsigned long long) rd(&m->br_trans[s][k]));
        }
    }

    int64_t conns = 0;
    for (unsigned w = 0; w < m->workers; w++)
        conns += atomic_load_explicit(&m->shards[w].connections, memory_order_relaxed);
    putf(&b,
         "# HELP dengbao_gateway_connections Open client connections.\n# TYPE "
         "dengbao_gateway_connections gauge\ndengbao_gateway_connections %lld\n",
         (long long) (conns < 0 ? 0 : conns));
    pthread_mutex_unlock(&m->mu);

    if (extra != NULL)
        puts_(&b, extra);
    if (b.oom || b.p == NULL) {
        free(b.p);
        return DBAO_ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
