/* bench_audit_merkle.c: the pure-computation figures of the audit component, on one core.
 *
 *   leaf_hash            records/s: audit_leaf_hash over canonical records of 256-512 bytes
 *   leaf_hash_append     records/s: the same plus audit_frontier_append (what a verifier or the
 *                        writer does per record; the ceiling of "full verify" without I/O)
 *   record_encode        records/s: audit_record_encode (validation included, details checked)
 *   record_decode        records/s: audit_record_decode (strict, details canonical check)
 *   inclusion_verify     proofs/s: audit_merkle_verify_inclusion, tree of 2^20 + 12345 leaves
 *                        (target >= 50,000/s, issue 4)
 *   consistency_verify   proofs/s: audit_merkle_verify_consistency, random m < n = same tree
 *   inclusion_prove      proofs/s: audit_merkle_inclusion_proof from a source holding every
 *                        perfect subtree (tiles), i.e. the cost above storage
 *
 * There is no anchor in the same run yet: these are pure SM3 computations that the storage
 * step's bench (durable appends/s, verify records/s) will set against Tessera and immudb.
 * Each figure is the median of --runs runs (default 5) of --seconds each (default 0.5).
 * Output: one line per figure, and with --json one JSON object per line:
 *   {"bench":"audit","figure":"inclusion_verify","value":...,"unit":"proofs/s"}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/audit.h"

#define HL         AUDIT_HASH_LEN
#define NUM_RECS   1024
#define TREE_SIZE  ((1u << 20) + 12345)
#define NUM_PROOFS 4096

static double opt_seconds = 0.5;
static int opt_runs = 5;
static int opt_json = 0;

static uint8_t *recs[NUM_RECS];
static size_t rec_lens[NUM_RECS];
static uint8_t *levels[21]; /* levels[l]: every perfect subtree hash at level l */
static uint64_t level_count[21];

typedef struct proof {
    uint64_t a, n;
    size_t num;
    uint8_t hashes[AUDIT_PROOF_MAX * HL];
} proof;
static proof *incl, *cons;
static uint8_t root_n[HL];
static uint8_t (*cons_roots)[HL];

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static uint64_t
rng(void)
{
    static uint64_t s = 0x9e3779b97f4a7c15ull;
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int
tiles(void *arg, uint8_t out[HL], unsigned level, uint64_t index)
{
    (void) arg;
    if (level > 20 || index >= level_count[level]) {
        return DBAO_ENOTSUP;
    }
    memcpy(out, levels[level] + index * HL, HL);
    return 0;
}

static void
die(const char *what)
{
    fprintf(stderr, "bench_audit_merkle: %s\n", what);
    exit(1);
}

static void
setup(void)
{
    audit_record r;
    char details[512];

    /* Records: realistic fields, details sized so the encoding lands in 256..512 bytes. */
    for (int i = 0; i < NUM_RECS; i++) {
        size_t pad = 128 + (size_t) (rng() % 240);
        char json[1024];
        int n;

        memset(details, 'x', pad);
        details[pad] = '\0';
        n = snprintf(json, sizeof(json),
                     "{\"time\":\"2025-06-01T10:00:00.%09dZ\",\"subject\":{\"id\":\"user-%d\","
                     "\"role\":\"teller\",\"ip\":\"10.2.%d.%d\",\"device\":\"pos-%d\"},"
                     "\"event_type\":\"data.read\",\"action\":\"select\",\"object\":\"accounts/"
                     "%d\",\"result\":\"success\",\"code\":200,\"source\":\"maskproxy\","
                     "\"details\":{\"rows\":%d,\"note\":\"%s\"}}",
                     i, i, i / 256, i % 256, i, i * 7, i % 50, details);
        audit_record_init(&r);
        if (n <= 0 || audit_record_from_json(&r, json, (size_t) n, AUDIT_JSON_ASSIGN, NULL) != 0) {
            die("record setup failed");
        }
        recs[i] = malloc(AUDIT_RECORD_MAX);
        if (recs[i] == NULL ||
            audit_record_encode(&r, recs[i], &rec_lens[i], AUDIT_RECORD_MAX, NULL) != 0) {
            die("record encode failed");
        }
        if (rec_lens[i] < 256 || rec_lens[i] > 512) {
            fprintf(stderr, "record %d: %zu bytes\n", i, rec_lens[i]);
            die("record size outside 256..512");
        }
        audit_record_cleanup(&r);
    }

    /* The tree: leaf hashes of the records, repeated, and every level above. */
    level_count[0] = TREE_SIZE;
    levels[0] = malloc((size_t) TREE_SIZE * HL);
    if (levels[0] == NULL) {
        die("out of memory");
    }
    for (uint64_t i = 0; i < TREE_SIZE; i++) {
        uint8_t buf[520];
        size_t len = rec_lens[i % NUM_RECS];

        memcpy(buf, recs[i % NUM_RECS], len);
        memcpy(buf + 5, &i, sizeof(i)); /* make every leaf distinct (inside the event_id) */
        audit_leaf_hash(levels[0] + i * HL, buf, len);
    }
    for (int l = 1; l <= 20; l++) {
        level_count[l] = level_count[l - 1] / 2;
        levels[l] = malloc(level_count[l] * HL + 1);
        if (levels[l] == NULL) {
            die("out of memory");
        }
        for (uint64_t i = 0; i < level_count[l]; i++) {
            audit_node_hash(levels[l] + i * HL, levels[l - 1] + 2 * i * HL,
                            levels[l - 1] + (2 * i + 1) * HL);
        }
    }
    if (audit_merkle_root(root_n, TREE_SIZE, tiles, NULL) != 0) {
        die("root failed");
    }

    incl = malloc(NUM_PROOFS * sizeof(*incl));
    cons = malloc(NUM_PROOFS * sizeof(*cons));
    cons_roots = malloc(NUM_PROOFS * sizeof(*cons_roots));
    if (incl == NULL || cons == NULL || cons_roots == NULL) {
        die("out of memory");
    }
    for (int k = 0; k < NUM_PROOFS; k++) {
        incl[k].a = rng() % TREE_SIZE;
        incl[k].n = TREE_SIZE;
        cons[k].a = 1 + rng() % (TREE_SIZE - 1);
        cons[k].n = TREE_SIZE;
        if (audit_merkle_inclusion_proof(incl[k].hashes, &incl[k].num, incl[k].a, TREE_SIZE, tiles,
                                         NULL) != 0 ||
            audit_merkle_consistency_proof(cons[k].hashes, &cons[k].num, cons[k].a, TREE_SIZE,
                                           tiles, NULL) != 0 ||
            audit_merkle_root(cons_roots[k], cons[k].a, tiles, NULL) != 0) {
            die("proof generation failed");
        }
    }
}

typedef long (*op_fn)(long iters); /* returns a checksum-ish value so work is not elided */

static long
op_leaf_hash(long iters)
{
    uint8_t h[HL];
    long acc = 0;

    for (long i = 0; i < iters; i++) {
        audit_leaf_hash(h, recs[i % NUM_RECS], rec_lens[i % NUM_RECS]);
        acc += h[0];
    }
    return acc;
}

static long
op_leaf_hash_append(long iters)
{
    static audit_frontier f;
    uint8_t h[HL];

    audit_frontier_init(&f);
    for (long i = 0; i < iters; i++) {
        audit_leaf_hash(h, recs[i % NUM_RECS], rec_lens[i % NUM_RECS]);
        if (audit_frontier_append(&f, h, NULL, NULL) != 0) {
            die("append failed");
        }
    }
    audit_frontier_root(&f, h);
    return h[0];
}

static long
op_encode(long iters)
{
    static audit_record r;
    static int ready;
    uint8_t buf[AUDIT_RECORD_MAX];
    size_t len = 0;
    long acc = 0;

    if (!ready) {
        audit_record_init(&r);
        if (audit_record_decode(&r, recs[0], rec_lens[0], NULL) != 0) {
            die("decode failed");
        }
        ready = 1;
    }
    for (long i = 0; i < iters; i++) {
        if (audit_record_encode(&r, buf, &len, sizeof(buf), NULL) != 0) {
            die("encode failed");
        }
        acc += (long) len;
    }
    return acc;
}

static long
op_decode(long iters)
{
    audit_record r;
    long acc = 0;

    audit_record_init(&r);
    for (long i = 0; i < iters; i++) {
        if (audit_record_decode(&r, recs[i % NUM_RECS], rec_lens[i % NUM_RECS], NULL) != 0) {
            die("decode failed");
        }
        acc += r.code;
    }
    audit_record_cleanup(&r);
    return acc;
}

static long
op_inclusion_verify(long iters)
{
    for (long i = 0; i < iters; i++) {
        const proof *p = &incl[i % NUM_PROOFS];

        if (audit_merkle_verify_inclusion(levels[0] + p->a * HL, p->a, p->n, p->hashes, p->num,
                                          root_n, NULL) != 0) {
            die("inclusion proof did not verify");
        }
    }
    return iters;
}

static long
op_consistency_verify(long iters)
{
    for (long i = 0; i < iters; i++) {
        const proof *p = &cons[i % NUM_PROOFS];

        if (audit_merkle_verify_consistency(p->a, p->n, cons_roots[i % NUM_PROOFS], root_n,
                                            p->hashes, p->num, NULL) != 0) {
            die("consistency proof did not verify");
        }
    }
    return iters;
}

static long
op_inclusion_prove(long iters)
{
    uint8_t out[AUDIT_PROOF_MAX * HL];
    size_t num;
    long acc = 0;

    for (long i = 0; i < iters; i++) {
        if (audit_merkle_inclusion_proof(out, &num, incl[i % NUM_PROOFS].a, TREE_SIZE, tiles,
                                         NULL) != 0) {
            die("prove failed");
        }
        acc += (long) num;
    }
    return acc;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

static double
measure(op_fn fn)
{
    double rates[64];
    volatile long sink = 0;

    for (int r = 0; r < opt_runs; r++) {
        long iters = 64, done = 0;
        double t0 = now(), t;

        do {
            sink += fn(iters);
            done += iters;
            iters *= 2;
            t = now() - t0;
        } while (t < opt_seconds);
        rates[r] = (double) done / t;
    }
    (void) sink;
    qsort(rates, (size_t) opt_runs, sizeof(double), cmp_double);
    return rates[opt_runs / 2];
}

static void
report(const char *figure, const char *unit, double value, const char *note)
{
    if (opt_json) {
        printf("{\"bench\":\"audit\",\"figure\":\"%s\",\"value\":%.0f,\"unit\":\"%s\"}\n", figure,
               value, unit);
    } else {
        printf("audit %-20s %12.0f %-10s %s\n", figure, value, unit, note);
    }
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    double avg_len = 0, v;
    size_t incl_hashes = 0, cons_hashes = 0;
    char note[128];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            opt_json = 1;
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            opt_seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            opt_runs = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--json] [--seconds S] [--runs N]\n", argv[0]);
            return 2;
        }
    }
    if (opt_runs < 1 || opt_runs > 64 || opt_seconds <= 0) {
        fprintf(stderr, "bench_audit_merkle: --runs 1..64, --seconds > 0\n");
        return 2;
    }
    setup();
    for (int i = 0; i < NUM_RECS; i++) {
        avg_len += (double) rec_lens[i] / NUM_RECS;
    }
    for (int k = 0; k < NUM_PROOFS; k++) {
        incl_hashes += incl[k].num;
        cons_hashes += cons[k].num;
    }

    v = measure(op_leaf_hash);
    snprintf(note, sizeof(note), "(records of 256-512 B, mean %.0f B: %.0f MB/s)", avg_len,
             v * avg_len / 1e6);
    report("leaf_hash", "records/s", v, note);
    report("leaf_hash_append", "records/s", measure(op_leaf_hash_append), "(hash + frontier)");
    report("record_encode", "records/s", measure(op_encode), "(validation included)");
    report("record_decode", "records/s", measure(op_decode), "(strict, details re-canonicalised)");
    snprintf(note, sizeof(note), "(tree %u leaves, %.1f hashes per proof; target >= 50000)",
             TREE_SIZE, (double) incl_hashes / NUM_PROOFS);
    report("inclusion_verify", "proofs/s", measure(op_inclusion_verify), note);
    snprintf(note, sizeof(note), "(to the same tree from random m, %.1f hashes per proof)",
             (double) cons_hashes / NUM_PROOFS);
    report("consistency_verify", "proofs/s", measure(op_consistency_verify), note);
    report("inclusion_prove", "proofs/s", measure(op_inclusion_prove), "(from in-memory tiles)");
    return 0;
}
