/* hist.h: a hand-written HDR-style log-linear latency histogram for the clearing benches
 * (bench_clearing_engine, bench_clearing_loadgen).
 *
 * Why hand-written: the figures must be comparable with HdrHistogram's (the anchors' tool) but
 * the benches are C, run across forked processes and merge by adding bucket arrays, and need
 * nothing else; 60 lines do it, so no library is pulled in.
 *
 * Layout (HdrHistogram's, with 2 significant decimal digits): values in nanoseconds, 1 ns to
 * 10 s (larger values are clamped into the top bucket, the exact maximum is kept aside). A value
 * v has magnitude b = max(0, msb(v) - 6) and sub-bucket s = v >> b (0..127 for b = 0, 64..127
 * above); its index is b * 64 + s. So every bucket spans at most 1/64 (1.6 %) of its values:
 * values below 128 ns are exact, and any reported percentile is within 1.6 % of the truth.
 * Percentiles report the bucket's highest value (HdrHistogram's "highest equivalent value"), so
 * they never flatter. 1,856 buckets of uint64 (14.5 KiB): a merge is an element-wise add, which
 * is how the loadgen combines its processes (each child writes its array into a pipe).
 *
 * Not thread-safe: one histogram per recording thread, merged afterwards.
 */
#ifndef DBAO_BENCH_CLEARING_HIST_H
#define DBAO_BENCH_CLEARING_HIST_H

#include <stdint.h>
#include <string.h>

#define HIST_SUB_BITS 7                             /* 128 sub-buckets: 2 significant digits */
#define HIST_HALF     (1u << (HIST_SUB_BITS - 1))   /* 64 */
#define HIST_MAX_NS   10000000000ull                /* 10 s */
#define HIST_BUCKETS  (28u * HIST_HALF + HIST_HALF) /* b <= 27 for 10 s (msb 33): 1856 */

typedef struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max; /* exact, unclamped */
    uint64_t min;
    uint64_t sum; /* for the mean; wraps only after ~584 years of summed latency */
} hist;

static inline void
hist_init(hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

static inline unsigned
hist_index(uint64_t v)
{
    if (v > HIST_MAX_NS)
        v = HIST_MAX_NS;
    unsigned msb = v ? 63u - (unsigned) __builtin_clzll(v) : 0u;
    unsigned b = msb > HIST_SUB_BITS - 1 ? msb - (HIST_SUB_BITS - 1) : 0u;
    return b * HIST_HALF + (unsigned) (v >> b);
}

/* The highest value that lands in bucket idx. */
static inline uint64_t
hist_bucket_high(unsigned idx)
{
    unsigned b = idx < 2 * HIST_HALF ? 0u : idx / HIST_HALF - 1u;
    uint64_t s = idx - (uint64_t) b * HIST_HALF;
    return ((s + 1) << b) - 1;
}

static inline void
hist_record(hist *h, int64_t v_ns)
{
    uint64_t v = v_ns < 0 ? 0 : (uint64_t) v_ns;
    h->counts[hist_index(v)]++;
    h->total++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
    if (v < h->min)
        h->min = v;
}

static inline void
hist_merge(hist *into, const hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->total += from->total;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
    if (from->min < into->min)
        into->min = from->min;
}

/* The value at quantile q (0..1]: the highest value of the bucket holding the ceil(q * n)-th
 * smallest sample, capped at the exact max. 0 for an empty histogram. */
static inline uint64_t
hist_quantile(const hist *h, double q)
{
    if (h->total == 0)
        return 0;
    uint64_t rank = (uint64_t) (q * (double) h->total + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_bucket_high(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

#endif /* DBAO_BENCH_CLEARING_HIST_H */
