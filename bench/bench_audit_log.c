/* bench_audit_log.c: the audit log's storage figures (issue 4 targets), each next to an anchor
 * measured in the same run on the same disk.
 *
 *   append_sync P        durable appends/s with P threads (1, 2, 4, 16, 64), each calling
 *                        audit_log_append with one record at a time; batches/s and records per
 *                        batch (audit_log_get_stats); acknowledge latency (call to return)
 *                        p50/p99/p999. Targets: >= 100,000 records/s, p99 <= 10 ms.
 *   append_async P/W     the same with audit_log_submit, each thread keeping up to W requests of
 *                        one record in flight; latency is submit to done.
 *   raw_fdatasync        the anchor of both, after each configuration: the same bytes per batch
 *                        (its average) written sequentially with plain pwrite() + fdatasync()
 *                        into fresh 64 MiB files preallocated with posix_fallocate, as the log's
 *                        segments are: what any durable log laid out this way pays on this disk.
 *                        Printed as records/s at that batch size, with the ratio log / raw, and
 *                        the batches/s of the same writes over already-written blocks
 *                        ("overwrite in place"), which shows what the unwritten-extent
 *                        conversion at each fdatasync costs.
 *   fill                 bulk appends (requests of 1,024 records, 16 in flight) building the log
 *                        of BENCH_AUDIT_RECORDS records (default 2^20 + 4,321) for the next two.
 *   prove_inclusion      proofs/s of audit_log_prove_inclusion at random indices of that log
 *                        (the tree files, one pread per node); anchor: audit_merkle_inclusion_
 *                        proof over the same tree held in memory (every perfect subtree).
 *   verify_inclusion     verifications/s of audit_merkle_verify_inclusion on proofs from the
 *                        log. Target >= 50,000/s. Anchor: the node hashes a proof implies done
 *                        with OpenSSL's SM3 (EVP_Digest), the floor of any verifier of this shape.
 *   verify_dir           records/s of audit_log_verify_dir on the closed log (warm page cache,
 *                        median of 3). Target >= 1,000,000/s. Anchor: read() of the same segment
 *                        files and the leaf hash of each record (gm_sm3_hash_many), without
 *                        decoding or checking anything.
 *
 * Records: 4,096 distinct canonical records of 256..512 bytes (realistic fields, random details
 * padding), reused cyclically; record i of the fill is pool record i % 4096.
 *
 * Knobs (environment): BENCH_AUDIT_DIR (parent folder of the temporary log; default /tmp, or
 * argv[1]), BENCH_AUDIT_SECONDS (per append configuration, default 1), BENCH_AUDIT_RECORDS,
 * BENCH_AUDIT_THREADS (e.g. "1,2,4,16,64"), BENCH_AUDIT_ASYNC (P/W pairs, default
 * "1/256,4/256,1/4096,4/4096"; empty for none), BENCH_AUDIT_PARTS (a subset of "abc": appends,
 * proofs, verification; default all), BENCH_AUDIT_KEEP=1 (keep the folder). About 30-40 s with
 * the defaults. Output: one line per figure; --json adds one JSON object per figure:
 *   {"bench":"audit_log","figure":"append_sync","config":"P=4","value":...,"unit":"records/s"}
 */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "dengbao/audit.h"
#include "dengbao/gm.h"

#define HL        AUDIT_HASH_LEN
#define NUM_RECS  4096
#define ORIGIN    "bench.local/audit-log"
#define MAX_LEVEL 40

static double opt_seconds = 1.0;
static uint64_t opt_records = (1u << 20) + 4321;
static bool opt_json;
static bool opt_keep;
static const char *opt_parts = "abc";
static char base_dir[4096];

/* The record pool: NUM_RECS encodings back to back. */
static uint8_t *pool;
static uint32_t pool_lens[NUM_RECS];
static size_t pool_off[NUM_RECS + 1];
static uint8_t pool_leaf[NUM_RECS][HL];

static gm_sm2_key *signer;
static audit_note_key note_key;

/* ---- helpers ----------------------------------------------------------------------------- */

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static uint64_t
rng(void)
{
    static _Atomic uint64_t s = 0x9e3779b97f4a7c15ull;
    uint64_t z = atomic_fetch_add(&s, 0x9e3779b97f4a7c15ull) + 0x9e3779b97f4a7c15ull;

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void
die(const char *what, const dbao_err *err)
{
    fprintf(stderr, "bench_audit_log: %s%s%s\n", what, err && err->msg[0] ? ": " : "",
            err ? err->msg : "");
    exit(1);
}

static void
figure(const char *name, const char *config, double value, const char *unit)
{
    if (opt_json) {
        printf("{\"bench\":\"audit_log\",\"figure\":\"%s\",\"config\":\"%s\",\"value\":%.1f,"
               "\"unit\":\"%s\"}\n",
               name, config, value, unit);
    }
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}

/* A growable array of latencies in nanoseconds. */
typedef struct lat {
    uint64_t *v;
    size_t n, cap;
} lat;

static void
lat_add(lat *l, uint64_t ns)
{
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 65536;
        uint64_t *nv = realloc(l->v, ncap * sizeof(*nv));

        if (nv == NULL) {
            die("out of memory", NULL);
        }
        l->v = nv;
        l->cap = ncap;
    }
    l->v[l->n++] = ns;
}

static void
lat_merge(lat *into, const lat *from)
{
    for (size_t i = 0; i < from->n; i++) {
        lat_add(into, from->v[i]);
    }
}

static double
lat_pct_us(lat *l, double q)
{
    if (l->n == 0) {
        return 0;
    }
    size_t k = (size_t) (q * (double) (l->n - 1) + 0.5);

    return (double) l->v[k] / 1e3;
}

static void
rm_rf(const char *path)
{
    DIR *d = opendir(path);

    if (d != NULL) {
        struct dirent *de;

        while ((de = readdir(d)) != NULL) {
            char p[8192];

            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
            rm_rf(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* ---- setup --------------------------------------------------------------------------------- */

static void
setup_records(void)
{
    size_t total = 0;

    pool = malloc((size_t) NUM_RECS * 512);
    if (pool == NULL) {
        die("out of memory", NULL);
    }
    for (int i = 0; i < NUM_RECS; i++) {
        audit_record r;
        char pad[400], json[2048];
        size_t padlen = 120 + (size_t) (rng() % 200), len = 0;
        dbao_err err;
        int n;

        for (size_t k = 0; k < padlen; k++) {
            pad[k] = (char) ('a' + rng() % 26);
        }
        pad[padlen] = '\0';
        n = snprintf(json, sizeof(json),
                     "{\"subject\":{\"id\":\"user-%d\",\"role\":\"teller\",\"ip\":\"10.2.%d.%d\","
                     "\"device\":\"pos-%d\"},\"event_type\":\"data.read\",\"action\":\"select\","
                     "\"object\":\"accounts/%d\",\"result\":\"%s\",\"code\":%d,"
                     "\"trace_id\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\","
                     "\"source\":\"maskproxy\",\"details\":{\"rows\":%d,\"note\":\"%s\"}}",
                     i, i / 256, i % 256, i % 97, i * 7, i % 10 ? "success" : "failure",
                     i % 10 ? 200 : 403, i % 50, pad);
        audit_record_init(&r);
        if (n <= 0 || audit_record_from_json(&r, json, (size_t) n, AUDIT_JSON_ASSIGN, &err) != 0) {
            die("record setup failed", &err);
        }
        if (audit_record_encode(&r, pool + total, &len, 512, &err) != 0) {
            die("record encode failed", &err);
        }
        if (len < 256 || len > 512) {
            fprintf(stderr, "record %d: %zu bytes\n", i, len);
            die("record size outside 256..512", NULL);
        }
        audit_record_cleanup(&r);
        pool_off[i] = total;
        pool_lens[i] = (uint32_t) len;
        audit_leaf_hash(pool_leaf[i], pool + total, len);
        total += len;
    }
    pool_off[NUM_RECS] = total;
}

static void
setup_key(void)
{
    dbao_err err;

    if (gm_sm2_key_generate(&signer, &err) != 0) {
        die("key generation failed", &err);
    }
    note_key.name = ORIGIN;
    note_key.key = signer;
}

/* new_log creates a log in base_dir/<name> (64 MiB segments, the defaults) and opens it. */
static audit_log *
new_log(const char *name, char *path, size_t path_cap)
{
    audit_log_config cfg = {.origin = ORIGIN};
    audit_log_open_opts oo = {.signers = &note_key, .num_signers = 1};
    audit_log *log = NULL;
    dbao_err err;

    snprintf(path, path_cap, "%s/%s", base_dir, name);
    rm_rf(path);
    if (audit_log_create(path, &cfg, &err) != 0) {
        die("audit_log_create failed", &err);
    }
    if (audit_log_open(&log, path, &oo, &err) != 0) {
        die("audit_log_open failed", &err);
    }
    return log;
}

/* ---- the raw anchor: pwrite + fdatasync per batch ----------------------------------------- */

/* raw_batches_per_s writes `bytes` per batch sequentially and makes each batch durable with
 * fdatasync, for about `seconds`; returns batches per second. fresh: into 64 MiB files
 * preallocated with posix_fallocate and never written before (what the log's segments are;
 * on ext4 each fdatasync then also commits the conversion of the written extents);
 * otherwise: over a 64 MiB file written with zeros and synced first (overwrites in place). */
static double
raw_batches_per_s(size_t bytes, double seconds, bool fresh)
{
    const uint64_t cap = (uint64_t) 64 << 20;
    uint8_t *buf = malloc(bytes ? bytes : 1);
    uint64_t off = cap;
    long n = 0;
    int fd = -1, files = 1;
    double t0, t;
    char p[4300];

    if (buf == NULL || bytes > cap) {
        die("raw anchor: bad batch size", NULL);
    }
    for (size_t i = 0; i < bytes; i++) {
        buf[i] = (uint8_t) rng();
    }
    if (!fresh) {
        /* prepared once (64 MiB of zeros, synced), reused by every configuration */
        static int ow_fd = -1;

        if (ow_fd < 0) {
            uint8_t *z = calloc(1, 1 << 20);

            snprintf(p, sizeof(p), "%s/raw-overwrite.dat", base_dir);
            ow_fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
            for (uint64_t o = 0; ow_fd >= 0 && z != NULL && o < cap; o += 1 << 20) {
                if (pwrite(ow_fd, z, 1 << 20, (off_t) o) != 1 << 20) {
                    die("raw anchor: cannot write zeros", NULL);
                }
            }
            free(z);
            if (ow_fd < 0 || fdatasync(ow_fd) != 0) {
                die("raw anchor: cannot prepare the file", NULL);
            }
        }
        fd = dup(ow_fd);
        off = 0;
    }
    t0 = now();
    do {
        if (off + bytes > cap) {
            if (fresh) {
                if (fd >= 0) {
                    close(fd);
                }
                snprintf(p, sizeof(p), "%s/raw-%d.dat", base_dir, files++);
                fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || posix_fallocate(fd, 0, (off_t) cap) != 0 || fdatasync(fd) != 0) {
                    die("raw anchor: cannot preallocate", NULL);
                }
            }
            off = 0;
        }
        if (pwrite(fd, buf, bytes, (off_t) off) != (ssize_t) bytes || fdatasync(fd) != 0) {
            die("raw anchor: pwrite/fdatasync failed", NULL);
        }
        off += bytes;
        n++;
        t = now();
    } while (t - t0 < seconds);
    close(fd);
    for (int i = 1; i < files; i++) {
        snprintf(p, sizeof(p), "%s/raw-%d.dat", base_dir, i);
        unlink(p);
    }
    free(buf);
    return (double) n / (t - t0);
}

/* ---- part a: appends ---------------------------------------------------------------------- */

typedef struct worker worker;

typedef struct slot {
    audit_log_req req; /* first: the done callback casts back */
    worker *w;
    uint64_t t0;
    uint32_t len;
    struct slot *next_free;
} slot;

struct worker {
    audit_log *log;
    pthread_barrier_t *start;
    _Atomic int *stop;
    unsigned window; /* 0: synchronous */
    unsigned seed;
    lat lat;
    uint64_t done;
    int failed;
    /* async */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned inflight;
    slot *slots, *free_list;
};

static void
async_done(audit_log_req *req)
{
    slot *s = (slot *) req;
    worker *w = s->w;
    uint64_t t = now_ns();

    pthread_mutex_lock(&w->mu);
    if (req->status != 0) {
        w->failed = req->status;
    } else {
        lat_add(&w->lat, t - s->t0);
        w->done++;
    }
    s->next_free = w->free_list;
    w->free_list = s;
    w->inflight--;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *
worker_main(void *arg)
{
    worker *w = arg;
    uint64_t i = w->seed;

    pthread_barrier_wait(w->start);
    if (w->window == 0) {
        while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
            size_t k = (size_t) (i++ % NUM_RECS);
            uint32_t len = pool_lens[k];
            uint64_t idx, t0 = now_ns();
            dbao_err err;

            if (audit_log_append(w->log, pool + pool_off[k], &len, 1, &idx, &err) != 0) {
                die("audit_log_append failed", &err);
            }
            lat_add(&w->lat, now_ns() - t0);
            w->done++;
        }
        return NULL;
    }
    while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
        size_t k = (size_t) (i++ % NUM_RECS);
        slot *s;
        int rc;

        pthread_mutex_lock(&w->mu);
        while (w->free_list == NULL) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
        s = w->free_list;
        w->free_list = s->next_free;
        w->inflight++;
        pthread_mutex_unlock(&w->mu);
        memset(&s->req, 0, sizeof(s->req));
        s->len = pool_lens[k];
        s->req.data = pool + pool_off[k];
        s->req.lens = &s->len;
        s->req.num = 1;
        s->req.done = async_done;
        s->t0 = now_ns();
        rc = audit_log_submit(w->log, &s->req);
        if (rc != 0) {
            fprintf(stderr, "audit_log_submit: %s\n", dbao_strerror(rc));
            die("audit_log_submit failed", NULL);
        }
    }
    pthread_mutex_lock(&w->mu);
    while (w->inflight > 0) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void
run_appends(unsigned nthreads, unsigned window)
{
    char path[4200], config[64], name[64];
    audit_log_stats st0, st1;
    pthread_barrier_t start;
    _Atomic int stop = 0;
    worker *ws = calloc(nthreads, sizeof(*ws));
    pthread_t *tids = calloc(nthreads, sizeof(*tids));
    lat all = {0};
    uint64_t total = 0;
    double t0, t1, secs, rps, bps, per_batch, bytes_per_batch, raw_bps, raw_rps, ow_bps, fs_ms;
    audit_log *log;

    if (ws == NULL || tids == NULL) {
        die("out of memory", NULL);
    }
    if (window == 0) {
        snprintf(config, sizeof(config), "P=%u", nthreads);
    } else {
        snprintf(config, sizeof(config), "P=%u/W=%u", nthreads, window);
    }
    snprintf(name, sizeof(name), "append-%u-%u", nthreads, window);
    log = new_log(name, path, sizeof(path));
    audit_log_get_stats(log, &st0);
    pthread_barrier_init(&start, NULL, nthreads + 1);
    for (unsigned t = 0; t < nthreads; t++) {
        worker *w = &ws[t];

        w->log = log;
        w->start = &start;
        w->stop = &stop;
        w->window = window;
        w->seed = t * 977u;
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->cv, NULL);
        if (window > 0) {
            w->slots = calloc(window, sizeof(*w->slots));
            if (w->slots == NULL) {
                die("out of memory", NULL);
            }
            for (unsigned k = 0; k < window; k++) {
                w->slots[k].w = w;
                w->slots[k].next_free = w->free_list;
                w->free_list = &w->slots[k];
            }
        }
        if (pthread_create(&tids[t], NULL, worker_main, w) != 0) {
            die("pthread_create failed", NULL);
        }
    }
    pthread_barrier_wait(&start);
    t0 = now();
    while (now() - t0 < opt_seconds) {
        usleep(10000);
    }
    atomic_store(&stop, 1);
    for (unsigned t = 0; t < nthreads; t++) {
        pthread_join(tids[t], NULL);
    }
    t1 = now();
    audit_log_get_stats(log, &st1);
    for (unsigned t = 0; t < nthreads; t++) {
        if (ws[t].failed != 0) {
            die("an append failed", NULL);
        }
        total += ws[t].done;
        lat_merge(&all, &ws[t].lat);
        free(ws[t].lat.v);
        free(ws[t].slots);
        pthread_mutex_destroy(&ws[t].mu);
        pthread_cond_destroy(&ws[t].cv);
    }
    qsort(all.v, all.n, sizeof(*all.v), cmp_u64);
    secs = t1 - t0;
    rps = (double) total / secs;
    bps = (double) (st1.batches - st0.batches) / secs;
    per_batch = st1.batches > st0.batches
                    ? (double) (st1.appended - st0.appended) / (double) (st1.batches - st0.batches)
                    : 0;
    bytes_per_batch = st1.batches > st0.batches
                          ? (double) (st1.bytes - st0.bytes) / (double) (st1.batches - st0.batches)
                          : 0;
    fs_ms = st1.batches > st0.batches ? (double) (st1.fsync_ns_total - st0.fsync_ns_total) /
                                            (double) (st1.batches - st0.batches) / 1e6
                                      : 0;
    printf("%-13s %-10s %9.0f records/s  %7.0f batches/s (%6.1f rec/batch, %5.2f ms write+sync)"
           "  ack p50 %7.0f us  p99 %7.0f us  p999 %7.0f us\n",
           window ? "append_async" : "append_sync", config, rps, bps, per_batch, fs_ms,
           lat_pct_us(&all, 0.50), lat_pct_us(&all, 0.99), lat_pct_us(&all, 0.999));
    figure(window ? "append_async" : "append_sync", config, rps, "records/s");
    figure(window ? "append_async_p50" : "append_sync_p50", config, lat_pct_us(&all, 0.50), "us");
    figure(window ? "append_async_p99" : "append_sync_p99", config, lat_pct_us(&all, 0.99), "us");
    figure(window ? "append_async_p999" : "append_sync_p999", config, lat_pct_us(&all, 0.999),
           "us");
    audit_log_close(log);
    if (!opt_keep) {
        rm_rf(path);
    }
    /* The anchors: the same bytes per batch through pwrite + fdatasync on the same disk. */
    raw_bps = raw_batches_per_s((size_t) (bytes_per_batch + 0.5), opt_seconds / 2, true);
    raw_rps = raw_bps * per_batch;
    ow_bps = raw_batches_per_s((size_t) (bytes_per_batch + 0.5), opt_seconds / 4, false);
    printf("%-13s %-10s %9.0f records/s  %7.0f batches/s (%6.0f bytes/batch)  log/raw %.2f"
           "   [overwrite in place: %7.0f batches/s]\n",
           "raw_fdatasync", config, raw_rps, raw_bps, bytes_per_batch,
           raw_rps > 0 ? rps / raw_rps : 0, ow_bps);
    figure("raw_fdatasync", config, raw_rps, "records/s");
    free(all.v);
    free(ws);
    free(tids);
    pthread_barrier_destroy(&start);
}

/* ---- part b: the big log, proofs ------------------------------------------------------------ */

typedef struct bulk_req {
    audit_log_req req;
    struct bulk_state *st;
} bulk_req;

typedef struct bulk_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned inflight;
    int failed;
    uint64_t next_expected;
} bulk_state;

static void
bulk_done(audit_log_req *req)
{
    bulk_req *b = (bulk_req *) req;
    bulk_state *st = b->st;

    pthread_mutex_lock(&st->mu);
    if (req->status != 0) {
        st->failed = req->status;
    } else if (req->first_index != st->next_expected) {
        st->failed = DBAO_EINVAL; /* the fill relies on record i = pool[i % NUM_RECS] */
    } else {
        st->next_expected += req->num;
    }
    st->inflight--;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    free(b);
}

/* fill appends opt_records records: request r holds records [r*1024, r*1024+1024) of the
 * pool, cyclically, so that record i is pool record i % NUM_RECS. */
static void
fill(audit_log *log)
{
    enum { REQ = 1024, INFLIGHT = 16 };
    bulk_state st = {.inflight = 0};
    uint64_t done = 0;
    double t0 = now(), t;

    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    while (done < opt_records) {
        size_t k = (size_t) (done % NUM_RECS), num = REQ;
        bulk_req *b = calloc(1, sizeof(*b));
        int rc;

        if (num > NUM_RECS - k) {
            num = NUM_RECS - k;
        }
        if (num > opt_records - done) {
            num = (size_t) (opt_records - done);
        }
        if (b == NULL) {
            die("out of memory", NULL);
        }
        pthread_mutex_lock(&st.mu);
        while (st.inflight >= INFLIGHT) {
            pthread_cond_wait(&st.cv, &st.mu);
        }
        st.inflight++;
        pthread_mutex_unlock(&st.mu);
        b->st = &st;
        b->req.data = pool + pool_off[k];
        b->req.lens = &pool_lens[k];
        b->req.num = num;
        b->req.done = bulk_done;
        rc = audit_log_submit(log, &b->req);
        if (rc != 0) {
            fprintf(stderr, "audit_log_submit: %s\n", dbao_strerror(rc));
            die("fill failed", NULL);
        }
        done += num;
    }
    pthread_mutex_lock(&st.mu);
    while (st.inflight > 0) {
        pthread_cond_wait(&st.cv, &st.mu);
    }
    pthread_mutex_unlock(&st.mu);
    t = now() - t0;
    if (st.failed != 0 || audit_log_size(log) != opt_records) {
        die("fill failed or records landed out of order", NULL);
    }
    printf("%-13s %-10s %9.0f records/s  (%" PRIu64 " records, requests of %d, %d in flight)\n",
           "fill", "bulk", (double) opt_records / t, opt_records, REQ, INFLIGHT);
    figure("fill", "bulk", (double) opt_records / t, "records/s");
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.cv);
}

/* The same tree in memory: every perfect subtree. */
static uint8_t *levels[MAX_LEVEL];
static uint64_t level_count[MAX_LEVEL];

static int
mem_tiles(void *arg, uint8_t out[HL], unsigned level, uint64_t index)
{
    (void) arg;
    if (level >= MAX_LEVEL || index >= level_count[level]) {
        return DBAO_ENOTSUP;
    }
    memcpy(out, levels[level] + index * HL, HL);
    return 0;
}

static void
build_mem_tree(void)
{
    level_count[0] = opt_records;
    levels[0] = malloc(opt_records * HL);
    if (levels[0] == NULL) {
        die("out of memory", NULL);
    }
    for (uint64_t i = 0; i < opt_records; i++) {
        memcpy(levels[0] + i * HL, pool_leaf[i % NUM_RECS], HL);
    }
    for (int l = 1; l < MAX_LEVEL && level_count[l - 1] >= 2; l++) {
        level_count[l] = level_count[l - 1] / 2;
        levels[l] = malloc(level_count[l] * HL);
        if (levels[l] == NULL) {
            die("out of memory", NULL);
        }
        for (uint64_t i = 0; i < level_count[l]; i++) {
            audit_node_hash(levels[l] + i * HL, levels[l - 1] + 2 * i * HL,
                            levels[l - 1] + (2 * i + 1) * HL);
        }
    }
}

typedef struct proof {
    uint64_t index;
    size_t num;
    uint8_t hashes[AUDIT_PROOF_MAX * HL];
} proof;

#define NUM_PROOFS 4096

/* ossl_verify recomputes the root from a proof with OpenSSL's SM3 (the same steps as RFC 9162
 * 2.1.3.2), returning whether it matches: the anchor of audit_merkle_verify_inclusion. */
static bool
ossl_verify(EVP_MD *md, const uint8_t leaf[HL], uint64_t index, uint64_t size, const proof *p,
            const uint8_t root[HL])
{
    uint64_t fn = index, sn = size - 1;
    uint8_t r[HL], buf[1 + 2 * HL];
    unsigned int outl;

    memcpy(r, leaf, HL);
    buf[0] = 0x01;
    for (size_t i = 0; i < p->num; i++) {
        const uint8_t *h = p->hashes + i * HL;

        if (sn == 0) {
            return false;
        }
        if ((fn & 1) || fn == sn) {
            memcpy(buf + 1, h, HL);
            memcpy(buf + 1 + HL, r, HL);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            memcpy(buf + 1, r, HL);
            memcpy(buf + 1 + HL, h, HL);
        }
        if (EVP_Digest(buf, sizeof(buf), r, &outl, md, NULL) != 1) {
            die("EVP_Digest failed", NULL);
        }
        fn >>= 1;
        sn >>= 1;
    }
    return sn == 0 && memcmp(r, root, HL) == 0;
}

static void
run_proofs(audit_log *log)
{
    static proof proofs[NUM_PROOFS];
    uint8_t root[HL], mroot[HL], tmp[AUDIT_PROOF_MAX * HL];
    uint64_t n = opt_records;
    long iters;
    double t0, t, log_ps, mem_ps, ver_ps, oss_ps;
    size_t num;
    dbao_err err;
    EVP_MD *md;

    build_mem_tree();
    if (audit_merkle_root(root, n, audit_log_hash, log) != 0 ||
        audit_merkle_root(mroot, n, mem_tiles, NULL) != 0 || memcmp(root, mroot, HL) != 0) {
        die("the log's root differs from the tree of the records", NULL);
    }
    /* generation from the log's tree files */
    iters = 0;
    t0 = now();
    do {
        for (int k = 0; k < 256; k++, iters++) {
            uint64_t idx = rng() % n;

            if (audit_log_prove_inclusion(log, idx, n, tmp, &num, &err) != 0) {
                die("audit_log_prove_inclusion failed", &err);
            }
        }
        t = now();
    } while (t - t0 < opt_seconds);
    log_ps = (double) iters / (t - t0);
    /* the anchor: the same from memory */
    iters = 0;
    t0 = now();
    do {
        for (int k = 0; k < 256; k++, iters++) {
            uint64_t idx = rng() % n;

            if (audit_merkle_inclusion_proof(tmp, &num, idx, n, mem_tiles, NULL) != 0) {
                die("audit_merkle_inclusion_proof failed", NULL);
            }
        }
        t = now();
    } while (t - t0 < opt_seconds / 2);
    mem_ps = (double) iters / (t - t0);
    printf("%-13s %-10s %9.0f proofs/s   in-memory tree %9.0f proofs/s  log/memory %.2f\n",
           "prove_incl", "log", log_ps, mem_ps, log_ps / mem_ps);
    figure("prove_inclusion", "log", log_ps, "proofs/s");
    figure("prove_inclusion", "memory", mem_ps, "proofs/s");

    for (int k = 0; k < NUM_PROOFS; k++) {
        proofs[k].index = rng() % n;
        if (audit_log_prove_inclusion(log, proofs[k].index, n, proofs[k].hashes, &proofs[k].num,
                                      &err) != 0) {
            die("audit_log_prove_inclusion failed", &err);
        }
    }
    iters = 0;
    t0 = now();
    do {
        for (int k = 0; k < 256; k++, iters++) {
            const proof *p = &proofs[iters % NUM_PROOFS];

            if (audit_merkle_verify_inclusion(pool_leaf[p->index % NUM_RECS], p->index, n,
                                              p->hashes, p->num, root, &err) != 0) {
                die("a proof from the log does not verify", &err);
            }
        }
        t = now();
    } while (t - t0 < opt_seconds);
    ver_ps = (double) iters / (t - t0);
    md = EVP_MD_fetch(NULL, "SM3", NULL);
    if (md == NULL) {
        die("OpenSSL has no SM3", NULL);
    }
    iters = 0;
    t0 = now();
    do {
        for (int k = 0; k < 256; k++, iters++) {
            const proof *p = &proofs[iters % NUM_PROOFS];

            if (!ossl_verify(md, pool_leaf[p->index % NUM_RECS], p->index, n, p, root)) {
                die("the OpenSSL anchor does not verify a proof", NULL);
            }
        }
        t = now();
    } while (t - t0 < opt_seconds / 2);
    oss_ps = (double) iters / (t - t0);
    EVP_MD_free(md);
    printf("%-13s %-10s %9.0f verifs/s   OpenSSL SM3 node hashes %9.0f verifs/s  ratio %.2f"
           "  (target >= 50000: %s)\n",
           "verify_incl", "", ver_ps, oss_ps, ver_ps / oss_ps, ver_ps >= 50000 ? "met" : "MISSED");
    figure("verify_inclusion", "", ver_ps, "verifications/s");
    figure("verify_inclusion_openssl", "", oss_ps, "verifications/s");
    for (int l = 0; l < MAX_LEVEL; l++) {
        free(levels[l]);
        levels[l] = NULL;
    }
}

/* ---- part c: full verification ------------------------------------------------------------- */

/* anchor_read_hash reads every segment file and hashes each record (leaf hash), nothing
 * else. Frames per docs/audit-format.md: u32 len | u64 index | record | u32 CRC32C; a zero
 * length ends the data, 0xFFFFFFFF is a seal. Returns the number of records. */
static uint64_t
anchor_read_hash(const char *dir)
{
    enum { B = 64 };
    static const uint8_t zero = 0;
    char p[8704];
    DIR *d;
    struct dirent *de;
    uint64_t records = 0;
    size_t cap = 0;
    uint8_t *buf = NULL, out[B * HL];

    snprintf(p, sizeof(p), "%s/seg", dir);
    d = opendir(p);
    if (d == NULL) {
        die("cannot open the segment folder", NULL);
    }
    while ((de = readdir(d)) != NULL) {
        const uint8_t *msgs[B];
        size_t lens[B], k = 0, len = 0, off = 64;
        struct stat st;
        int fd;

        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(p, sizeof(p), "%s/seg/%s", dir, de->d_name);
        fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) != 0) {
            die("cannot open a segment", NULL);
        }
        if ((size_t) st.st_size > cap) {
            cap = (size_t) st.st_size;
            free(buf);
            buf = malloc(cap);
            if (buf == NULL) {
                die("out of memory", NULL);
            }
        }
        while (len < (size_t) st.st_size) {
            ssize_t r = read(fd, buf + len, (size_t) st.st_size - len);

            if (r <= 0) {
                die("cannot read a segment", NULL);
            }
            len += (size_t) r;
        }
        close(fd);
        while (off + 16 <= len) {
            uint32_t flen = (uint32_t) buf[off] | (uint32_t) buf[off + 1] << 8 |
                            (uint32_t) buf[off + 2] << 16 | (uint32_t) buf[off + 3] << 24;

            if (flen == 0 || flen == 0xFFFFFFFFu || off + 16 + flen > len) {
                break;
            }
            msgs[k] = buf + off + 12;
            lens[k] = flen;
            if (++k == B) {
                gm_sm3_hash_many(out, msgs, lens, k, &zero, 1);
                records += k;
                k = 0;
            }
            off += 16 + flen;
        }
        if (k > 0) {
            gm_sm3_hash_many(out, msgs, lens, k, &zero, 1);
            records += k;
        }
    }
    closedir(d);
    free(buf);
    return records;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

static void
run_verify(const char *dir)
{
    double v[3], a[3];
    audit_verify_report rep;
    dbao_err err;

    for (int i = 0; i < 3; i++) {
        double t0 = now();

        if (audit_log_verify_dir(dir, &note_key, 1, &rep, &err) != 0) {
            die("audit_log_verify_dir failed", &err);
        }
        v[i] = (double) rep.records / (now() - t0);
        if (rep.records != opt_records) {
            die("audit_log_verify_dir checked the wrong number of records", NULL);
        }
        t0 = now();
        if (anchor_read_hash(dir) != opt_records) {
            die("the anchor found the wrong number of records", NULL);
        }
        a[i] = (double) opt_records / (now() - t0);
    }
    qsort(v, 3, sizeof(double), cmp_double);
    qsort(a, 3, sizeof(double), cmp_double);
    printf("%-13s %-10s %9.0f records/s  read+leaf-hash floor %9.0f records/s  ratio %.2f"
           "  (target >= 1000000: %s; %" PRIu64 " checkpoints)\n",
           "verify_dir", "", v[1], a[1], v[1] / a[1], v[1] >= 1e6 ? "met" : "MISSED",
           rep.checkpoints);
    figure("verify_dir", "", v[1], "records/s");
    figure("verify_dir_floor", "", a[1], "records/s");
}

/* ---- main ------------------------------------------------------------------------------------ */

int
main(int argc, char **argv)
{
    const char *parent = getenv("BENCH_AUDIT_DIR");
    const char *e;
    char threads_list[128] = "1,2,4,16,64";
    char async_list[128] = "1/256,4/256,1/4096,4/4096";

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            opt_json = true;
        } else {
            parent = argv[i];
        }
    }
    if ((e = getenv("BENCH_AUDIT_SECONDS")) != NULL && atof(e) > 0) {
        opt_seconds = atof(e);
    }
    if ((e = getenv("BENCH_AUDIT_RECORDS")) != NULL && strtoull(e, NULL, 10) >= 2) {
        opt_records = strtoull(e, NULL, 10);
    }
    if ((e = getenv("BENCH_AUDIT_THREADS")) != NULL && *e != '\0') {
        snprintf(threads_list, sizeof(threads_list), "%s", e);
    }
    if ((e = getenv("BENCH_AUDIT_ASYNC")) != NULL) {
        snprintf(async_list, sizeof(async_list), "%s", e);
    }
    if ((e = getenv("BENCH_AUDIT_PARTS")) != NULL && *e != '\0') {
        opt_parts = e;
    }
    opt_keep = getenv("BENCH_AUDIT_KEEP") != NULL && strcmp(getenv("BENCH_AUDIT_KEEP"), "1") == 0;
    snprintf(base_dir, sizeof(base_dir), "%s/bench_audit_log.XXXXXX", parent ? parent : "/tmp");
    if (mkdtemp(base_dir) == NULL) {
        die("cannot create the temporary folder", NULL);
    }
    setup_records();
    setup_key();
    printf("bench_audit_log: records of 256..512 bytes (mean %zu), log in %s, %.1f s per "
           "configuration\n",
           pool_off[NUM_RECS] / NUM_RECS, base_dir, opt_seconds);

    if (strchr(opt_parts, 'a') != NULL) {
        char *save = NULL;

        for (char *t = strtok_r(threads_list, ",", &save); t != NULL;
             t = strtok_r(NULL, ",", &save)) {
            unsigned p = (unsigned) strtoul(t, NULL, 10);

            if (p >= 1 && p <= 1024) {
                run_appends(p, 0);
            }
        }
        save = NULL;
        for (char *t = strtok_r(async_list, ",", &save); t != NULL;
             t = strtok_r(NULL, ",", &save)) {
            unsigned p = 0, w = 0;

            if (sscanf(t, "%u/%u", &p, &w) == 2 && p >= 1 && p <= 1024 && w >= 1 && w <= 65536) {
                run_appends(p, w);
            }
        }
    }
    if (strchr(opt_parts, 'b') != NULL || strchr(opt_parts, 'c') != NULL) {
        char path[4200];
        audit_log *log = new_log("big", path, sizeof(path));

        fill(log);
        if (strchr(opt_parts, 'b') != NULL) {
            run_proofs(log);
        }
        audit_log_close(log);
        if (strchr(opt_parts, 'c') != NULL) {
            run_verify(path);
        }
    }
    gm_sm2_key_free(signer);
    free(pool);
    if (opt_keep) {
        printf("bench_audit_log: kept %s\n", base_dir);
    } else {
        rm_rf(base_dir);
    }
    return 0;
}
