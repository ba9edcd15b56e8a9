/* bench_clearing_engine.c: the clearing engine in process (issue 8, "Done means": >= 2 M
 * events/s per shard thread, p99 <= 10 us at 1 M events/s offered).
 *
 * Workload, generated up front (deterministic, xorshift seeded by BENCH_CLR_SEED): a refdata of
 * 500 valid securities (SH 600000.., SZ 000001.., BJ 830000..; tick 1 fen, lot 100, no band,
 * commission 250 ppm min 5 yuan, stamp 500 ppm, transfer 10 ppm), then a setup stream (not
 * timed) opening 100,000 accounts over 50 members, depositing 10^8 yuan each and transferring
 * in 10^6 shares of 4 securities each; then the measured stream: 50 % orders (buys at 10..60
 * yuan, 100..1,000 shares; sells of 100..500 shares of a held security), 40 % fills of open
 * orders (the whole remainder or half of it, at the limit), 10 % cancels of open orders. The
 * generator tracks the open orders it has created, so nearly every event is accepted; the
 * reject count is printed as a sanity check. One shard (nshards 1).
 *
 * Figures:
 *   direct      one thread calling clr_engine_apply over the stream: events/s (no queue)
 *               Every throughput line gives wall-clock events/s and events per second of the
 *               shard thread's own CPU time (CLOCK_THREAD_CPUTIME_ID): on this shared 2-vCPU
 *               VM the second is what one shard thread does per core, whatever else runs
 *               (with RING_WAIT_SPIN it includes the consumer's spinning)
 *   ring        producer thread -> ring_spsc (batch push) -> shard thread (batch drain up to
 *               BATCH, apply): events/s, with RING_WAIT_SPIN and RING_WAIT_BLOCK
 *   mutex       the same with a mutex + condvar bounded queue (the in-process anchor), and the
 *               ratio ring / mutex
 *   journal     the ring run with the shard thread appending everything queued (up to 8,192
 *               events) to a clr_journal on a temp dir and syncing it (group commit) before
 *               applying it:
 *               "nosync" (write only) and "fdatasync" (durable), to show what durability costs
 *   latency     open loop at offered rates (BENCH_CLR_RATES, default 250k,500k,1M,1.5M,2M):
 *               the producer sends event i at its intended time t0 + i / rate (it spins, or
 *               yields, to that time, pushes everything due in one batch, and never waits for
 *               the consumer except when the ring is full); the shard thread records, per
 *               event, completion time - intended send time. So coordinated omission is
 *               corrected: a stall delays every event scheduled behind it, and they all count.
 *               Histogram: hand-written HDR-style log-linear, 2 significant digits, 1 ns..10 s
 *               (bench/clearing/hist.h). p50 / p99 / p99.9 / max per rate, for ring-spin,
 *               ring-block, mutex and ring-spin + journal (fdatasync) at the rates listed in
 *               BENCH_CLR_JRATES (default 250k,1M). The first 10 % of each run is warm-up (not
 *               recorded). A run whose shard thread falls so far behind that sending lasts over
 *               3 x its planned time + 1 s stops sending there and is flagged STOPPED (the
 *               figures then cover what was sent; they are already far off any target).
 *
 * --pin: producer on CPU 0, shard thread on CPU 1 (pthread_setaffinity_np). Without it the
 * scheduler places them (on 2 cores a spinning pair then competes with everything else).
 *
 * Knobs (environment): BENCH_CLR_EVENTS (measured stream length, default 2,000,000),
 * BENCH_CLR_SECONDS (per latency run, default 1), BENCH_CLR_RATES, BENCH_CLR_JRATES,
 * BENCH_CLR_DIR (parent of the journal temp dir, default /tmp), BENCH_CLR_PARTS (subset of
 * "tlj": throughput, latency, journal; default all), BENCH_CLR_SEED.
 * Output: one line per figure, and with --json one JSON object per figure:
 *   {"bench":"clearing_engine","figure":"latency","config":"ring-spin rate=1000000",
 *    "p50_ns":...,"p99_ns":...,"p999_ns":...,"max_ns":...}
 *
 * Timing is CLOCK_MONOTONIC (vDSO, ~20 ns a read); money in the workload is int64 fen only.
 * The percentiles are computed in double, which is fine: they are not money.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clearing/hist.h"
#include "dengbao/clearing.h"
#include "dengbao/ring.h"

#define NSEC         500u
#define NACCOUNTS    100000u
#define NMEMBERS     50u
#define HELD         4u    /* securities transferred in per account */
#define BATCH        256u  /* max events per drain */
#define JBATCH       8192u /* max events per group commit (journal on): all that is queued */
#define RING_CAP     (1u << 16)
#define SETUP_CASH   ((int64_t) 10000000000) /* fen: 10^8 yuan */
#define SETUP_SHARES ((int64_t) 1000000)

static bool g_json;
static bool g_pin;

static int64_t
thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* events per second of the shard thread's own CPU time, for the figure being printed: what
   one shard thread does per CPU second, whatever else competes for the cores (this VM is
   shared); wall-clock events/s are printed next to it */
static double g_cpu_eps;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
die(const char *what, int rc, const dbao_err *err)
{
    fprintf(stderr, "bench_clearing_engine: %s failed: %s%s%s\n", what, dbao_strerror(rc),
            err && err->msg[0] ? ": " : "", err ? err->msg : "");
    exit(1);
}

static void
pin_self(int cpu)
{
    if (!g_pin)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0)
        fprintf(stderr, "bench_clearing_engine: cannot pin to CPU %d: %s\n", cpu, strerror(rc));
}

/* ---- workload ------------------------------------------------------------------------ */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t
rnd(void)
{
    uint64_t x = g_rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return g_rng = x;
}
static uint64_t
rnd_below(uint64_t n)
{
    return rnd() % n;
}

static clr_instrument g_inst[NSEC];
static clr_refdata g_ref;

static void
make_refdata(void)
{
    /* sorted by code: SZ 000001.. (0xxxxx), SH 600000.., BJ 830000.. */
    for (unsigned i = 0; i < NSEC; i++) {
        uint32_t code;
        if (i < 200)
            code = 1 + i; /* 000001.. Shenzhen */
        else if (i < 450)
            code = 600000 + (i - 200); /* Shanghai */
        else
            code = 830000 + (i - 450); /* Beijing */
        g_inst[i] = (clr_instrument){.security = code, .tick = 1, .lot = 100};
    }
    g_ref = (clr_refdata){
        .instruments = g_inst,
        .num_instruments = NSEC,
        .fees = {.commission_ppm = 250,
                 .commission_min = 500,
                 .stamp_ppm = 500,
                 .transfer_ppm = 10},
    };
}

static uint32_t
held_sec(uint64_t account, unsigned k)
{
    return g_inst[(account * 7 + k * 131) % NSEC].security;
}

typedef struct open_order {
    uint64_t account, order_id;
    int64_t price, qty;
    uint32_t security;
    uint8_t side;
} open_order;

static clr_event *g_setup, *g_events;
static size_t g_nsetup, g_nevents;

static void
make_streams(size_t n)
{
    g_nsetup = (size_t) NACCOUNTS * (2 + HELD);
    g_setup = calloc(g_nsetup, sizeof *g_setup);
    g_events = calloc(n, sizeof *g_events);
    open_order *pool = calloc(n, sizeof *pool);
    uint64_t *next_oid = calloc(NACCOUNTS + 1, sizeof *next_oid);
    if (!g_setup || !g_events || !pool || !next_oid) {
        fprintf(stderr, "bench_clearing_engine: out of memory for %zu events\n", n);
        exit(1);
    }
    size_t k = 0;
    for (uint64_t a = 1; a <= NACCOUNTS; a++) {
        g_setup[k++] =
            (clr_event){.type = CLR_EV_OPEN, .account = a, .member = (uint32_t) (1 + a % NMEMBERS)};
        g_setup[k++] = (clr_event){.type = CLR_EV_DEPOSIT, .account = a, .amount = SETUP_CASH};
        for (unsigned h = 0; h < HELD; h++)
            g_setup[k++] = (clr_event){.type = CLR_EV_XFER_IN,
                                       .account = a,
                                       .security = held_sec(a, h),
                                       .qty = SETUP_SHARES};
    }
    size_t npool = 0;
    uint64_t exec = 0;
    for (size_t i = 0; i < n; i++) {
        clr_event *ev = &g_events[i];
        memset(ev, 0, sizeof *ev);
        uint64_t r = rnd_below(100);
        if (r < 50 || npool == 0) {
            uint64_t a = 1 + rnd_below(NACCOUNTS);
            open_order o = {.account = a, .order_id = ++next_oid[a]};
            if (rnd() & 1) {
                o.side = CLR_SIDE_BUY;
                o.security = g_inst[rnd_below(NSEC)].security;
                o.price = 1000 + (int64_t) rnd_below(5001);
                o.qty = 100 * (1 + (int64_t) rnd_below(10));
            } else {
                o.side = CLR_SIDE_SELL;
                o.security = held_sec(a, (unsigned) rnd_below(HELD));
                o.price = 1000 + (int64_t) rnd_below(5001);
                o.qty = 100 * (1 + (int64_t) rnd_below(5));
            }
            *ev = (clr_event){.type = CLR_EV_ORDER,
                              .side = o.side,
                              .account = a,
                              .order_id = o.order_id,
                              .security = o.security,
                              .price = o.price,
                              .qty = o.qty};
            pool[npool++] = o;
        } else {
            size_t p = rnd_below(npool);
            open_order *o = &pool[p];
            bool done;
            if (r < 90) {
                int64_t q = o->qty;
                if (q >= 200 && (rnd() & 1))
                    q = (q / 200) * 100; /* half, still a lot multiple */
                *ev = (clr_event){.type = CLR_EV_FILL,
                                  .account = o->account,
                                  .order_id = o->order_id,
                                  .exec_id = ++exec,
                                  .price = o->price,
                                  .qty = q};
                o->qty -= q;
                done = o->qty == 0;
            } else {
                *ev = (clr_event){
                    .type = CLR_EV_CANCEL, .account = o->account, .order_id = o->order_id};
                done = true;
            }
            if (done)
                pool[p] = pool[--npool];
        }
    }
    g_nevents = n;
    free(pool);
    free(next_oid);
}

/* A fresh engine with the setup stream applied (seq 1..nsetup). */
static clr_engine *
fresh_engine(void)
{
    clr_engine *e;
    dbao_err err = {0};
    int rc = clr_engine_new(&e, &g_ref, 0, 1, &err);
    if (rc != 0)
        die("clr_engine_new", rc, &err);
    clr_result res;
    for (size_t i = 0; i < g_nsetup; i++) {
        clr_event ev = g_setup[i];
        ev.seq = i + 1;
        rc = clr_engine_apply(e, &ev, &res, NULL, NULL);
        if (rc != 0)
            die("clr_engine_apply (setup)", rc, NULL);
        if (res.reject != CLR_OK) {
            fprintf(stderr, "bench_clearing_engine: setup event %zu rejected: %s\n", i,
                    clr_reject_name((clr_reject) res.reject));
            exit(1);
        }
    }
    return e;
}

/* ---- queues: ring_spsc and the mutex+condvar anchor ----------------------------------- */

typedef struct mutexq {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    clr_event *buf;
    size_t cap, head, tail; /* head: next to pop; tail: next to push (monotonic) */
    bool closed;
} mutexq;

static mutexq *
mutexq_new(size_t cap)
{
    mutexq *q = calloc(1, sizeof *q);
    q->buf = calloc(cap, sizeof *q->buf);
    q->cap = cap;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    return q;
}
static void
mutexq_free(mutexq *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    free(q->buf);
    free(q);
}
static size_t
mutexq_push(mutexq *q, const clr_event *ev, size_t n)
{
    size_t done = 0;
    pthread_mutex_lock(&q->mu);
    while (done < n) {
        while (q->tail - q->head == q->cap)
            pthread_cond_wait(&q->not_full, &q->mu);
        while (done < n && q->tail - q->head < q->cap)
            q->buf[q->tail++ % q->cap] = ev[done++];
        pthread_cond_signal(&q->not_empty);
    }
    pthread_mutex_unlock(&q->mu);
    return done;
}
static size_t
mutexq_pop(mutexq *q, clr_event *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&q->mu);
    while (q->tail == q->head && !q->closed)
        pthread_cond_wait(&q->not_empty, &q->mu);
    while (n < max && q->head < q->tail)
        out[n++] = q->buf[q->head++ % q->cap];
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->mu);
    return n;
}
static void
mutexq_close(mutexq *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

typedef enum qkind { Q_SPIN, Q_BLOCK, Q_MUTEX } qkind;
static const char *
qname(qkind k)
{
    return k == Q_SPIN ? "ring-spin" : k == Q_BLOCK ? "ring-block" : "mutex";
}

typedef struct queue {
    qkind kind;
    ring_spsc *ring;
    mutexq *mq;
} queue;

static void
queue_open(queue *q, qkind k)
{
    q->kind = k;
    q->ring = NULL;
    q->mq = NULL;
    if (k == Q_MUTEX) {
        q->mq = mutexq_new(RING_CAP);
        return;
    }
    dbao_err err = {0};
    int rc = ring_spsc_new(&q->ring, RING_CAP, sizeof(clr_event),
                           k == Q_SPIN ? RING_WAIT_SPIN : RING_WAIT_BLOCK, &err);
    if (rc != 0)
        die("ring_spsc_new", rc, &err);
}
static void
queue_free(queue *q)
{
    if (q->ring)
        ring_spsc_free(q->ring);
    if (q->mq)
        mutexq_free(q->mq);
}
static void
queue_push(queue *q, const clr_event *ev, size_t n)
{
    if (q->mq) {
        mutexq_push(q->mq, ev, n);
        return;
    }
    if (ring_spsc_push_wait(q->ring, ev, n, -1) != n) {
        fprintf(stderr, "bench_clearing_engine: ring push lost events\n");
        exit(1);
    }
}
static size_t
queue_pop(queue *q, clr_event *out, size_t max)
{
    if (q->mq)
        return mutexq_pop(q->mq, out, max);
    return ring_spsc_pop_wait(q->ring, out, max, -1);
}
static void
queue_close(queue *q)
{
    if (q->mq)
        mutexq_close(q->mq);
    else
        ring_spsc_close(q->ring);
}

/* ---- one run: producer -> queue -> shard thread --------------------------------------- */

typedef struct run {
    queue q;
    size_t n;     /* events from g_events */
    int64_t rate; /* offered events/s; 0: as fast as possible */
    int64_t t0;   /* schedule origin (set by the producer before the first push) */
    _Atomic int64_t t0_pub;
    clr_engine *eng;
    clr_journal *jr; /* NULL: journal off */
    size_t warm;     /* events not recorded */
    hist *h;
    uint64_t rejects;
    int64_t t_start, t_end;
    int64_t cpu_ns; /* the shard thread's CPU time over the run */
    uint64_t batches;
    int64_t limit_ns; /* open loop: stop sending this long after t0 (0: never) */
    size_t sent;      /* events the producer pushed (< n when it stopped at limit_ns) */
    size_t done;      /* events the shard thread applied */
} run;

static void *
producer(void *arg)
{
    run *r = arg;
    pin_self(0);
    int64_t t0 = now_ns();
    /* release: the consumer reads t0 with acquire before it computes any intended time, and
       no event is pushed before t0 is published (the ring's own release/acquire would also
       carry it, but the consumer may read t0 before its first pop). */
    atomic_store_explicit(&r->t0_pub, t0, memory_order_release);
    r->t_start = t0;
    size_t i = 0;
    while (i < r->n) {
        if (r->limit_ns && now_ns() - t0 > r->limit_ns)
            break; /* the consumer is far behind (an overloaded VM): stop, report what ran */
        size_t due;
        if (r->rate == 0) {
            due = r->n;
        } else {
            int64_t el = now_ns() - t0;
            /* events i with t0 + i * 1e9 / rate <= now: i <= el * rate / 1e9 */
            due = (size_t) ((__int128) el * r->rate / 1000000000) + 1;
            if (due > r->n)
                due = r->n;
            if (due <= i) {
                int64_t wait = (int64_t) ((__int128) i * 1000000000 / r->rate) - el;
                if (wait > 50000)
                    sched_yield();
                continue;
            }
        }
        size_t m = due - i;
        if (m > BATCH * 4)
            m = BATCH * 4;
        queue_push(&r->q, &g_events[i], m);
        i += m;
    }
    r->sent = i;
    queue_close(&r->q);
    return NULL;
}

static void *
consumer(void *arg)
{
    run *r = arg;
    pin_self(1);
    size_t cap = r->jr ? JBATCH : BATCH;
    clr_event *buf = malloc(cap * sizeof *buf);
    int64_t t0;
    while ((t0 = atomic_load_explicit(&r->t0_pub, memory_order_acquire)) == 0)
        sched_yield();
    int64_t c0 = thread_cpu_ns();
    uint64_t seq = clr_engine_seq(r->eng);
    size_t idx = 0;
    /* intended(i) = t0 + i * 1e9 / rate, as a 32.32 fixed-point step: a multiply per event, no
       division on the hot path (exact to well under a nanosecond over 10^7 events) */
    unsigned __int128 step =
        r->rate ? ((unsigned __int128) 1000000000 << 32) / (uint64_t) r->rate : 0;
    clr_result res;
    dbao_err err = {0};
    for (;;) {
        size_t m = queue_pop(&r->q, buf, BATCH);
        if (m == 0)
            break;
        /* journal on: one group commit takes everything queued (up to JBATCH), as the daemon
           does: the more that waits during one fdatasync, the more the next one carries */
        while (r->jr && m < cap) {
            size_t more = r->q.mq ? 0 : ring_spsc_pop(r->q.ring, buf + m, cap - m);
            if (more == 0)
                break;
            m += more;
        }
        r->batches++;
        if (r->jr) {
            int rc = clr_journal_append(r->jr, buf, m, &err);
            if (rc == 0)
                rc = clr_journal_sync(r->jr, &err);
            if (rc != 0)
                die("clr_journal_append/sync", rc, &err);
        } else {
            for (size_t k = 0; k < m; k++)
                buf[k].seq = ++seq;
        }
        for (size_t k = 0; k < m; k++, idx++) {
            int rc = clr_engine_apply(r->eng, &buf[k], &res, NULL, NULL);
            if (rc != 0)
                die("clr_engine_apply", rc, NULL);
            r->rejects += res.reject != CLR_OK;
            if (r->h && idx >= r->warm) {
                int64_t intended = t0 + (int64_t) ((idx * step) >> 32);
                hist_record(r->h, now_ns() - intended);
            }
        }
    }
    r->t_end = now_ns();
    r->done = idx;
    r->cpu_ns = thread_cpu_ns() - c0;
    free(buf);
    return NULL;
}

static char g_jdir[256];

/* Opens a journal in a fresh dir and runs the setup stream through it (seq 1..nsetup). */
static clr_journal *
fresh_journal(bool nosync)
{
    static unsigned serial;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/j%u", g_jdir, serial++);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench_clearing_engine: mkdir %s: %s\n", dir, strerror(errno));
        exit(1);
    }
    clr_journal_opts o = {.no_sync = nosync};
    clr_journal *j;
    dbao_err err = {0};
    int rc = clr_journal_open(&j, dir, 0, &o, &err);
    if (rc != 0)
        die("clr_journal_open", rc, &err);
    for (size_t i = 0; i < g_nsetup; i += 4096) {
        size_t m = g_nsetup - i < 4096 ? g_nsetup - i : 4096;
        clr_event tmp[4096];
        memcpy(tmp, &g_setup[i], m * sizeof *tmp);
        rc = clr_journal_append(j, tmp, m, &err);
        if (rc != 0)
            die("clr_journal_append (setup)", rc, &err);
    }
    rc = clr_journal_sync(j, &err);
    if (rc != 0)
        die("clr_journal_sync (setup)", rc, &err);
    return j;
}

static void
do_run(run *r)
{
    pthread_t tp, tc;
    atomic_store_explicit(&r->t0_pub, 0, memory_order_relaxed);
    pthread_create(&tc, NULL, consumer, r);
    pthread_create(&tp, NULL, producer, r);
    pthread_join(tp, NULL);
    pthread_join(tc, NULL);
}

/* ---- figures --------------------------------------------------------------------------- */

static double
thr_run(qkind k, int journal, size_t n, uint64_t *rejects)
{
    run r = {.n = n, .rate = 0};
    r.eng = fresh_engine();
    if (journal)
        r.jr = fresh_journal(journal == 1);
    queue_open(&r.q, k);
    do_run(&r);
    double eps = (double) n / ((double) (r.t_end - r.t_start) / 1e9);
    g_cpu_eps = (double) n / ((double) r.cpu_ns / 1e9);
    *rejects = r.rejects;
    queue_free(&r.q);
    clr_journal_close(r.jr);
    clr_engine_free(r.eng);
    return eps;
}

static void
print_thr(const char *cfg, double eps, uint64_t rejects, size_t n)
{
    printf("  throughput  %-30s %10.0f events/s wall  %10.0f per shard-thread CPU s  (%zu events, "
           "%" PRIu64 " rejected)\n",
           cfg, eps, g_cpu_eps, n, rejects);
    if (g_json)
        printf("{\"bench\":\"clearing_engine\",\"figure\":\"throughput\",\"config\":\"%s\","
               "\"value\":%.0f,\"unit\":\"events/s\",\"per_cpu_s\":%.0f,\"rejects\":%" PRIu64 "}\n",
               cfg, eps, g_cpu_eps, rejects);
}

static double
median3(double a, double b, double c)
{
    if (a > b) {
        double t = a;
        a = b;
        b = t;
    }
    if (b > c)
        b = c;
    return a > b ? a : b;
}

static void
throughput(void)
{
    size_t n = g_nevents;
    printf("throughput (one shard, %zu events after a %zu-event setup; median of 3)\n", n,
           g_nsetup);
    /* direct */
    double v[3], cv[3];
    uint64_t rej = 0;
    for (int t = 0; t < 3; t++) {
        clr_engine *e = fresh_engine();
        uint64_t seq = clr_engine_seq(e);
        clr_result res;
        rej = 0;
        int64_t c0 = thread_cpu_ns();
        int64_t a = now_ns();
        for (size_t i = 0; i < n; i++) {
            clr_event ev = g_events[i];
            ev.seq = ++seq;
            if (clr_engine_apply(e, &ev, &res, NULL, NULL) != 0)
                die("clr_engine_apply", -1, NULL);
            rej += res.reject != CLR_OK;
        }
        v[t] = (double) n / ((double) (now_ns() - a) / 1e9);
        cv[t] = (double) n / ((double) (thread_cpu_ns() - c0) / 1e9);
        clr_engine_free(e);
    }
    g_cpu_eps = median3(cv[0], cv[1], cv[2]);
    print_thr("direct (no queue)", median3(v[0], v[1], v[2]), rej, n);
    double best[3];
    for (qkind k = Q_SPIN; k <= Q_MUTEX; k++) {
        for (int t = 0; t < 3; t++) {
            v[t] = thr_run(k, 0, n, &rej);
            cv[t] = g_cpu_eps;
        }
        best[k] = median3(v[0], v[1], v[2]);
        g_cpu_eps = median3(cv[0], cv[1], cv[2]);
        print_thr(qname(k), best[k], rej, n);
    }
    printf("  ratio ring-spin / mutex %.2fx, ring-block / mutex %.2fx\n",
           best[Q_SPIN] / best[Q_MUTEX], best[Q_BLOCK] / best[Q_MUTEX]);
    if (g_json)
        printf("{\"bench\":\"clearing_engine\",\"figure\":\"ratio\",\"config\":\"ring-spin/mutex\","
               "\"value\":%.2f}\n",
               best[Q_SPIN] / best[Q_MUTEX]);
}

static void
throughput_journal(void)
{
    size_t n = g_nevents;
    uint64_t rej;
    printf("throughput with the journal (one group commit per drain of everything queued, <= %u)\n",
           JBATCH);
    double a = thr_run(Q_SPIN, 1, n, &rej);
    print_thr("ring-spin + journal nosync", a, rej, n);
    double b = thr_run(Q_SPIN, 2, n, &rej);
    print_thr("ring-spin + journal fdatasync", b, rej, n);
    double c = thr_run(Q_BLOCK, 2, n, &rej);
    print_thr("ring-block + journal fdatasync", c, rej, n);
}

static void
lat_run(qkind k, int journal, int64_t rate, double secs)
{
    size_t n = (size_t) ((double) rate * secs);
    if (n > g_nevents)
        n = g_nevents;
    hist *h = malloc(sizeof *h);
    hist_init(h);
    run r = {.n = n, .rate = rate, .h = h, .warm = n / 10};
    r.limit_ns = (int64_t) (secs * 3e9) + 1000000000;
    r.eng = fresh_engine();
    if (journal)
        r.jr = fresh_journal(false);
    queue_open(&r.q, k);
    do_run(&r);
    double achieved = (double) r.done / ((double) (r.t_end - r.t_start) / 1e9);
    char cfg[64];
    snprintf(cfg, sizeof cfg, "%s%s rate=%" PRId64, qname(k), journal ? "+journal" : "", rate);
    printf("  latency %-36s p50 %8.2f us  p99 %9.2f us  p99.9 %9.2f us  max %10.2f us  "
           "(achieved %.0f/s, %.1f ev/batch%s)\n",
           cfg, (double) hist_quantile(h, 0.50) / 1e3, (double) hist_quantile(h, 0.99) / 1e3,
           (double) hist_quantile(h, 0.999) / 1e3, (double) h->max / 1e3, achieved,
           (double) r.done / (double) (r.batches ? r.batches : 1),
           r.sent < n ? ", STOPPED: the shard fell > 3x behind" : "");
    if (g_json)
        printf("{\"bench\":\"clearing_engine\",\"figure\":\"latency\",\"config\":\"%s\","
               "\"p50_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64 ",\"p999_ns\":%" PRIu64
               ",\"max_ns\":%" PRIu64 ",\"achieved\":%.0f}\n",
               cfg, hist_quantile(h, 0.50), hist_quantile(h, 0.99), hist_quantile(h, 0.999), h->max,
               achieved);
    fflush(stdout);
    queue_free(&r.q);
    clr_journal_close(r.jr);
    clr_engine_free(r.eng);
    free(h);
}

static size_t
parse_rates(const char *s, int64_t *out, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        char *end;
        double v = strtod(s, &end);
        if (end == s)
            break;
        if (*end == 'k' || *end == 'K')
            v *= 1e3, end++;
        else if (*end == 'M' || *end == 'm')
            v *= 1e6, end++;
        if (v >= 1)
            out[n++] = (int64_t) v;
        s = end;
        while (*s == ',' || *s == ' ')
            s++;
    }
    return n;
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            g_json = true;
        else if (strcmp(argv[i], "--pin") == 0)
            g_pin = true;
        else {
            fprintf(stderr, "usage: bench_clearing_engine [--pin] [--json]\n");
            return 2;
        }
    }
    const char *e;
    size_t n = 2000000;
    if ((e = getenv("BENCH_CLR_EVENTS")) && atol(e) > 0)
        n = (size_t) atol(e);
    double secs = 1.0;
    if ((e = getenv("BENCH_CLR_SECONDS")) && atof(e) > 0)
        secs = atof(e);
    if ((e = getenv("BENCH_CLR_SEED")) && strtoull(e, NULL, 0))
        g_rng = strtoull(e, NULL, 0);
    const char *parts = getenv("BENCH_CLR_PARTS");
    if (!parts || !*parts)
        parts = "tlj";
    int64_t rates[16], jrates[16];
    size_t nr = parse_rates(
        getenv("BENCH_CLR_RATES") ? getenv("BENCH_CLR_RATES") : "250k,500k,1M,1.5M,2M", rates, 16);
    size_t njr = parse_rates(getenv("BENCH_CLR_JRATES") ? getenv("BENCH_CLR_JRATES") : "250k,1M",
                             jrates, 16);
    const char *base = getenv("BENCH_CLR_DIR") ? getenv("BENCH_CLR_DIR") : "/tmp";
    snprintf(g_jdir, sizeof g_jdir, "%s/bench_clr.XXXXXX", base);
    if (strchr(parts, 'j') && !mkdtemp(g_jdir)) {
        fprintf(stderr, "bench_clearing_engine: mkdtemp %s: %s\n", g_jdir, strerror(errno));
        return 1;
    }
    make_refdata();
    int64_t t = now_ns();
    make_streams(n);
    printf("bench_clearing_engine: %u accounts, %u securities, setup %zu events, stream %zu "
           "events generated in %.2f s; %ld CPUs%s\n",
           NACCOUNTS, NSEC, g_nsetup, g_nevents, (double) (now_ns() - t) / 1e9,
           sysconf(_SC_NPROCESSORS_ONLN), g_pin ? ", pinned (producer CPU 0, shard CPU 1)" : "");
    if (strchr(parts, 't'))
        throughput();
    if (strchr(parts, 'l')) {
        printf("latency, open loop (intended send time -> applied; %.1f s per run, first 10%% "
               "warm-up)\n",
               secs);
        for (qkind k = Q_SPIN; k <= Q_MUTEX; k++)
            for (size_t i = 0; i < nr; i++)
                lat_run(k, 0, rates[i], secs);
    }
    if (strchr(parts, 'j')) {
        throughput_journal();
        printf("latency with the journal (fdatasync per drained batch)\n");
        for (size_t i = 0; i < njr; i++)
            lat_run(Q_SPIN, 1, jrates[i], secs);
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_jdir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_clearing_engine: could not remove %s\n", g_jdir);
    }
    free(g_setup);
    free(g_events);
    return 0;
}
