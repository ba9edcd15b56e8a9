/* bench_ring.c: the rings of include/dengbao/ring.h against Concurrency Kit's ck_ring and a
 * mutex+condvar queue, in the same run, on 8-byte items (issue 8, "ring").
 *
 * Queues (capacity 4,096 each):
 *   own_spsc/W   ring_spsc, wait strategy W = spin, yield or block (the default strategy)
 *   own_mpsc/W   ring_mpsc, same strategies
 *   ck_spsc      ck_ring_enqueue_spsc / ck_ring_dequeue_spsc (spins with a relax hint: ck_ring
 *                has no wait strategy)
 *   ck_mpmc      ck_ring_enqueue_mpmc / ck_ring_dequeue_mpmc
 *   ck_mpsc      ck_ring_enqueue_mpsc / ck_ring_dequeue_mpsc (the like-for-like MPSC anchor)
 *   mutex        a bounded array behind one pthread mutex, two condvars, signals only when the
 *                other side waits; the consumer drains up to 256 items per lock
 *
 * Figures:
 *   throughput   items/s from the first push to the last pop, P producer threads (--producers,
 *                SPSC queues always 1) and one consumer. Producers push one item per call (as
 *                ck_ring does); the consumer drains batches of up to 256 where the API allows
 *                (own rings, mutex) and one item per call for ck_ring. The consumer checks the
 *                sum of all items, so a lost or duplicated item fails the run.
 *   round trip   ping-pong through two queues of the same kind: the main thread pushes a value
 *                and waits for it to come back from an echo thread; p50 / p99 / p99.9 ns over
 *                --seconds per queue (clock_gettime overhead, ~20 ns, included).
 * Then the ratios: own SPSC vs ck_spsc and vs mutex, own MPSC vs ck_mpmc, ck_mpsc and mutex.
 *
 * Options: --items N (throughput items per queue, default 20,000,000), --seconds S (round-trip
 * time per queue, default 0.5), --producers P (default 1), --pin (producer / main thread on CPU 0,
 * consumer / echo thread on CPU 1 via pthread_setaffinity_np), --only NAME[,NAME] (run a subset),
 * --load N (N extra threads burning CPU for the whole run: the oversubscribed host, reproducibly;
 * unpinned), --max-seconds S (cap of one throughput run, default 2: on a crowded host the
 * spinning queues crawl; the run then stops its producers and reports what moved).
 * A default run takes about 15 s on the idle 2-core development host, at most about 30 s.
 *
 * Spinning queues (spin, yield, every ck_ring) need a core per thread: with --producers 2 on
 * 2 cores, or another load on the host, they degrade sharply, which is why BLOCK is the ring
 * default. docs/ring.md records the figures.
 */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ck_ring.h>

#include "dengbao/common.h"
#include "dengbao/ring.h"

#define QCAP      4096
#define BATCH     256
#define MAX_PROD  8
#define MAX_RTT_N 4000000

static inline void
relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool opt_pin;

static void
pin_to(int cpu)
{
    if (!opt_pin)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0)
        fprintf(stderr, "bench_ring: cannot pin to CPU %d (%s)\n", cpu, dbao_strerror(-rc));
}

/* ---- mutex + condvar queue ---------------------------------------------------------------- */

typedef struct mq {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    uint64_t buf[QCAP];
    size_t head, tail;
    int cons_waiting, prod_waiting;
} mq;

static void
mq_init(mq *q)
{
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    pthread_cond_init(&q->not_full, NULL);
    q->head = q->tail = 0;
    q->cons_waiting = q->prod_waiting = 0;
}

static void
mq_destroy(mq *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
}

static void
mq_push(mq *q, uint64_t v)
{
    pthread_mutex_lock(&q->mu);
    while (q->tail - q->head == QCAP) {
        q->prod_waiting++;
        pthread_cond_wait(&q->not_full, &q->mu);
        q->prod_waiting--;
    }
    q->buf[q->tail++ % QCAP] = v;
    if (q->cons_waiting)
        pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

static size_t
mq_pop(mq *q, uint64_t *out, size_t max)
{
    pthread_mutex_lock(&q->mu);
    while (q->tail == q->head) {
        q->cons_waiting++;
        pthread_cond_wait(&q->not_empty, &q->mu);
        q->cons_waiting--;
    }
    size_t k = 0;
    while (k < max && q->head != q->tail)
        out[k++] = q->buf[q->head++ % QCAP];
    if (q->prod_waiting)
        pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
    return k;
}

/* ---- one queue of any kind ---------------------------------------------------------------- */

typedef enum kind { K_OWN_SPSC, K_OWN_MPSC, K_CK_SPSC, K_CK_MPMC, K_CK_MPSC, K_MUTEX } kind;

typedef struct cfg {
    const char *name;
    kind k;
    ring_wait w;
} cfg;

static const cfg configs[] = {
    {"own_spsc/spin", K_OWN_SPSC, RING_WAIT_SPIN},
    {"own_spsc/yield", K_OWN_SPSC, RING_WAIT_YIELD},
    {"own_spsc/block", K_OWN_SPSC, RING_WAIT_BLOCK},
    {"own_mpsc/spin", K_OWN_MPSC, RING_WAIT_SPIN},
    {"own_mpsc/yield", K_OWN_MPSC, RING_WAIT_YIELD},
    {"own_mpsc/block", K_OWN_MPSC, RING_WAIT_BLOCK},
    {"ck_spsc", K_CK_SPSC, 0},
    {"ck_mpmc", K_CK_MPMC, 0},
    {"ck_mpsc", K_CK_MPSC, 0},
    {"mutex", K_MUTEX, 0},
};
#define NCFG (sizeof configs / sizeof configs[0])

typedef struct queue {
    kind k;
    ring_spsc *spsc;
    ring_mpsc *mpsc;
    ck_ring_t ck;
    ck_ring_buffer_t *ckbuf;
    mq *m;
} queue;

static void
q_new(queue *q, const cfg *c)
{
    dbao_err err;
    memset(q, 0, sizeof *q);
    q->k = c->k;
    int rc = 0;
    switch (c->k) {
    case K_OWN_SPSC:
        rc = ring_spsc_new(&q->spsc, QCAP, 8, c->w, &err);
        break;
    case K_OWN_MPSC:
        rc = ring_mpsc_new(&q->mpsc, QCAP, 8, c->w, &err);
        break;
    case K_CK_SPSC:
    case K_CK_MPMC:
    case K_CK_MPSC:
        q->ckbuf = aligned_alloc(64, QCAP * sizeof(ck_ring_buffer_t));
        if (q->ckbuf == NULL)
            rc = DBAO_ENOMEM;
        else
            ck_ring_init(&q->ck, QCAP);
        break;
    case K_MUTEX:
        q->m = aligned_alloc(64, sizeof(mq));
        if (q->m == NULL)
            rc = DBAO_ENOMEM;
        else
            mq_init(q->m);
        break;
    }
    if (rc != 0) {
        fprintf(stderr, "bench_ring: %s: %s\n", c->name, dbao_strerror(rc));
        exit(1);
    }
}

static void
q_free(queue *q)
{
    ring_spsc_free(q->spsc);
    ring_mpsc_free(q->mpsc);
    free(q->ckbuf);
    if (q->m != NULL) {
        mq_destroy(q->m);
        free(q->m);
    }
}

/* push one item, waiting (by the queue's own means) until it is in */
static inline void
q_push1(queue *q, uint64_t v)
{
    switch (q->k) {
    case K_OWN_SPSC:
        ring_spsc_push_wait(q->spsc, &v, 1, -1);
        break;
    case K_OWN_MPSC:
        ring_mpsc_push_wait(q->mpsc, &v, 1, -1);
        break;
    case K_CK_SPSC:
        while (!ck_ring_enqueue_spsc(&q->ck, q->ckbuf, (void *) (uintptr_t) v))
            relax();
        break;
    case K_CK_MPMC:
        while (!ck_ring_enqueue_mpmc(&q->ck, q->ckbuf, (void *) (uintptr_t) v))
            relax();
        break;
    case K_CK_MPSC:
        while (!ck_ring_enqueue_mpsc(&q->ck, q->ckbuf, (void *) (uintptr_t) v))
            relax();
        break;
    case K_MUTEX:
        mq_push(q->m, v);
        break;
    }
}

/* pop >= 1 item (up to max), waiting until there is one */
static inline size_t
q_pop(queue *q, uint64_t *out, size_t max)
{
    void *p;
    switch (q->k) {
    case K_OWN_SPSC:
        return ring_spsc_pop_wait(q->spsc, out, max, -1);
    case K_OWN_MPSC:
        return ring_mpsc_pop_wait(q->mpsc, out, max, -1);
    case K_CK_SPSC:
        while (!ck_ring_dequeue_spsc(&q->ck, q->ckbuf, &p))
            relax();
        out[0] = (uint64_t) (uintptr_t) p;
        return 1;
    case K_CK_MPSC:
        while (!ck_ring_dequeue_mpsc(&q->ck, q->ckbuf, &p))
            relax();
        out[0] = (uint64_t) (uintptr_t) p;
        return 1;
    case K_CK_MPMC:
        while (!ck_ring_dequeue_mpmc(&q->ck, q->ckbuf, &p))
            relax();
        out[0] = (uint64_t) (uintptr_t) p;
        return 1;
    case K_MUTEX:
        return mq_pop(q->m, out, max);
    }
    return 0;
}

/* ---- throughput --------------------------------------------------------------------------- */

#define SENTINEL UINT64_MAX /* a producer's last item: "I am done" (not counted) */

typedef struct tp_arg {
    queue *q;
    uint64_t first, count;
    uint64_t pushed, sum; /* out: items pushed before the stop, and their sum */
    _Atomic int *go, *stop;
} tp_arg;

static void *
tp_producer(void *p)
{
    tp_arg *a = p;
    pin_to(0);
    /* acquire: pairs with the release store that starts the run */
    while (!atomic_load_explicit(a->go, memory_order_acquire))
        relax();
    uint64_t i = 0, sum = 0;
    for (; i < a->count; i++) {
        /* relaxed: a stop request polled every 1,024 items; nothing is published through it */
        if ((i & 1023) == 0 && atomic_load_explicit(a->stop, memory_order_relaxed))
            break;
        q_push1(a->q, a->first + i);
        sum += a->first + i;
    }
    a->pushed = i;
    a->sum = sum;
    q_push1(a->q, SENTINEL); /* the queue's own ordering publishes pushed / sum to the joiner */
    return NULL;
}

/* run_throughput moves `items` items, or as many as fit in max_s seconds (then the producers are
 * told to stop; a run on a crowded host must not take minutes), and returns items/s. */
static double
run_throughput(const cfg *c, uint64_t items, int nprod, double max_s)
{
    queue q;
    q_new(&q, c);
    if (c->k == K_OWN_SPSC || c->k == K_CK_SPSC)
        nprod = 1;
    pthread_t th[MAX_PROD];
    tp_arg args[MAX_PROD];
    _Atomic int go = 0, stop = 0;
    uint64_t per = items / (uint64_t) nprod;
    pin_to(1);
    for (int i = 0; i < nprod; i++) {
        args[i] =
            (tp_arg){.q = &q, .first = (uint64_t) i * per, .count = per, .go = &go, .stop = &stop};
        if (pthread_create(&th[i], NULL, tp_producer, &args[i]) != 0) {
            fprintf(stderr, "bench_ring: pthread_create failed\n");
            exit(1);
        }
    }
    uint64_t got = 0, sum = 0, buf[BATCH], calls = 0;
    int done = 0;
    int64_t t0 = now_ns(), limit = t0 + (int64_t) (max_s * 1e9);
    /* release: the producers start after everything above is set up */
    atomic_store_explicit(&go, 1, memory_order_release);
    while (done < nprod) {
        size_t k = q_pop(&q, buf, BATCH);
        for (size_t i = 0; i < k; i++) {
            if (buf[i] == SENTINEL) {
                done++;
            } else {
                sum += buf[i];
                got++;
            }
        }
        if ((++calls & 4095) == 0 && now_ns() > limit)
            atomic_store_explicit(&stop, 1, memory_order_relaxed); /* relaxed: see tp_producer */
    }
    int64_t dt = now_ns() - t0;
    uint64_t want_n = 0, want_sum = 0;
    for (int i = 0; i < nprod; i++) {
        pthread_join(th[i], NULL);
        want_n += args[i].pushed;
        want_sum += args[i].sum;
    }
    q_free(&q);
    if (got != want_n || sum != want_sum) {
        fprintf(stderr, "bench_ring: %s: item count or sum mismatch (lost or duplicated items)\n",
                c->name);
        exit(1);
    }
    return (double) got * 1e9 / (double) dt;
}

/* ---- round trip --------------------------------------------------------------------------- */

typedef struct rt_arg {
    queue *ping, *pong;
} rt_arg;

static void *
rt_echo(void *p)
{
    rt_arg *a = p;
    uint64_t v;
    pin_to(1);
    for (;;) {
        q_pop(a->ping, &v, 1);
        q_push1(a->pong, v);
        if (v == UINT64_MAX)
            return NULL;
    }
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

static void
run_rtt(const cfg *c, double seconds, int64_t *samples, double pct_out[3], size_t *n_out)
{
    queue ping, pong;
    q_new(&ping, c);
    q_new(&pong, c);
    rt_arg a = {&ping, &pong};
    pthread_t th;
    pin_to(0);
    if (pthread_create(&th, NULL, rt_echo, &a) != 0) {
        fprintf(stderr, "bench_ring: pthread_create failed\n");
        exit(1);
    }
    uint64_t v;
    for (uint64_t i = 0; i < 2000; i++) { /* warm-up */
        q_push1(&ping, i);
        q_pop(&pong, &v, 1);
    }
    size_t n = 0;
    int64_t end = now_ns() + (int64_t) (seconds * 1e9);
    while (n < MAX_RTT_N) {
        int64_t t0 = now_ns();
        q_push1(&ping, n);
        q_pop(&pong, &v, 1);
        int64_t t1 = now_ns();
        samples[n++] = t1 - t0;
        if (t1 >= end)
            break;
    }
    q_push1(&ping, UINT64_MAX);
    q_pop(&pong, &v, 1);
    pthread_join(th, NULL);
    q_free(&ping);
    q_free(&pong);
    qsort(samples, n, sizeof samples[0], cmp_i64);
    pct_out[0] = (double) samples[n / 2];
    pct_out[1] = (double) samples[(size_t) ((double) n * 0.99)];
    pct_out[2] = (double) samples[(size_t) ((double) n * 0.999)];
    *n_out = n;
}

/* ---- background load ---------------------------------------------------------------------- */

static _Atomic int load_stop;

static void *
burner(void *p)
{
    (void) p;
    volatile uint64_t x = 0;
    /* relaxed: a stop flag polled in a loop; nothing is published through it */
    while (!atomic_load_explicit(&load_stop, memory_order_relaxed))
        x++;
    return NULL;
}

/* ---- main --------------------------------------------------------------------------------- */

static bool
selected(const char *only, const char *name)
{
    if (only == NULL)
        return true;
    size_t len = strlen(name);
    for (const char *p = only; *p;) {
        const char *e = strchr(p, ',');
        size_t l = e ? (size_t) (e - p) : strlen(p);
        if (l == len && memcmp(p, name, l) == 0)
            return true;
        /* a prefix such as "own_spsc" selects every strategy */
        if (l < len && memcmp(p, name, l) == 0 && name[l] == '/')
            return true;
        p += l + (e ? 1 : 0);
    }
    return false;
}

static void
usage(void)
{
    fprintf(stderr, "usage: bench_ring [--items N] [--seconds S] [--producers P] [--pin] "
                    "[--only NAME[,NAME...]] [--load N] [--max-seconds S]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    uint64_t items = 20000000;
    double seconds = 0.5;
    int nprod = 1;
    const char *only = NULL;
    int nload = 0;
    double max_s = 2.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--items") == 0 && i + 1 < argc)
            items = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--producers") == 0 && i + 1 < argc)
            nprod = atoi(argv[++i]);
        else if (strcmp(argv[i], "--pin") == 0)
            opt_pin = true;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--max-seconds") == 0 && i + 1 < argc)
            max_s = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--load") == 0 && i + 1 < argc)
            nload = atoi(argv[++i]);
        else
            usage();
    }
    if (items < 1000 || nprod < 1 || nprod > MAX_PROD || !(seconds > 0 && seconds <= 60) ||
        nload < 0 || nload > 16 || !(max_s > 0 && max_s <= 600))
        usage();
    pthread_t burners[16];
    for (int i = 0; i < nload; i++) {
        if (pthread_create(&burners[i], NULL, burner, NULL) != 0) {
            fprintf(stderr, "bench_ring: pthread_create failed\n");
            return 1;
        }
    }
    int64_t *samples = malloc(MAX_RTT_N * sizeof(int64_t));
    if (samples == NULL)
        return 1;
    double tput[NCFG] = {0}, rtt[NCFG][3] = {{0}};
    printf("bench_ring: %" PRIu64 " items of 8 bytes, capacity %d, producers %d, %s, %d CPU "
           "burners\n",
           items, QCAP, nprod, opt_pin ? "pinned (producer CPU 0, consumer CPU 1)" : "not pinned",
           nload);
    for (size_t i = 0; i < NCFG; i++) {
        if (!selected(only, configs[i].name))
            continue;
        tput[i] = run_throughput(&configs[i], items, nprod, max_s);
        printf("throughput  %-15s %9.2f M items/s\n", configs[i].name, tput[i] / 1e6);
        fflush(stdout);
    }
    for (size_t i = 0; i < NCFG; i++) {
        if (!selected(only, configs[i].name))
            continue;
        size_t n;
        run_rtt(&configs[i], seconds, samples, rtt[i], &n);
        printf("round trip  %-15s p50 %8.0f ns  p99 %8.0f ns  p99.9 %8.0f ns  (%zu trips)\n",
               configs[i].name, rtt[i][0], rtt[i][1], rtt[i][2], n);
        fflush(stdout);
    }
    /* ratios: own rings vs their anchors */
    size_t ck_spsc = 6, ck_mpmc = 7, ck_mpsc = 8, mtx = 9;
    for (size_t i = 0; i < 6; i++) {
        if (tput[i] == 0)
            continue;
        size_t anchors[2] = {i < 3 ? ck_spsc : ck_mpmc, i < 3 ? mtx : ck_mpsc};
        printf("ratio       %-15s", configs[i].name);
        for (size_t j = 0; j < 2; j++) {
            size_t a = anchors[j];
            if (tput[a] > 0)
                printf("  vs %-8s tput %6.2fx  rtt p50 %6.2fx", configs[a].name, tput[i] / tput[a],
                       rtt[i][0] > 0 ? rtt[a][0] / rtt[i][0] : 0.0);
        }
        if (i >= 3 && tput[mtx] > 0)
            printf("  vs %-8s tput %6.2fx  rtt p50 %6.2fx", configs[mtx].name, tput[i] / tput[mtx],
                   rtt[i][0] > 0 ? rtt[mtx][0] / rtt[i][0] : 0.0);
        printf("\n");
    }
    printf("(ratios > 1: own ring faster; rtt ratio = anchor p50 / own p50)\n");
    atomic_store_explicit(&load_stop, 1, memory_order_relaxed);
    for (int i = 0; i < nload; i++)
        pthread_join(burners[i], NULL);
    free(samples);
    return 0;
}
