/* bench_sm3_impl.c: throughput of every SM3 path (sm3_impl.h) next to OpenSSL 3 EVP_sm3 in the
 * same run.
 *
 * Single stream: SM3 of a 16 KiB buffer, over and over, through the path's compress() (256
 * blocks in place plus the padding block). Multi-buffer: hash_many() on
 * batches of equal-length messages of 64, 256, 1024 and 16384 bytes (about 1 MiB per batch),
 * with no prefix and with the 1-byte Merkle-leaf prefix; OpenSSL hashes the same messages one
 * EVP_Digest call each, and "loop <path>" with the best single-stream path one at a time.
 * Every figure is the median of 5 timed runs of about 0.2 s of thread CPU time
 * (CLOCK_THREAD_CPUTIME_ID, so that time slices lost to other processes on a shared core do not
 * count); MB/s counts message bytes (10^6 bytes per MB). Run pinned: taskset -c 1 ./bench_sm3_impl
 *
 * Build: cc -std=gnu11 -O2 -I src/gm bench/bench_sm3_impl.c src/gm/sm3_impl.c src/gm/sm3_x86.c
 *        -lcrypto
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "sm3_impl.h"

#define RUNS 5

/* now returns this thread's CPU time in seconds. */
static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}

/* SM3(prefix || msg) through one single-stream path: the first block assembled when there is a
 * prefix, the full blocks in place, the padded tail assembled. This is what a caller without
 * multi-buffer would do; the multi-buffer rows are compared with it. */
static void
ss_hash(const gm__sm3_impl *im, uint8_t out[32], const uint8_t *prefix, size_t plen,
        const uint8_t *msg, size_t len)
{
    uint8_t blk[128];
    uint32_t st[8];
    uint64_t bits = (uint64_t) (plen + len) * 8;
    size_t n, rest, i;

    memcpy(st, gm__sm3_iv, sizeof(st));
    if (plen > 0 && plen + len >= 64) {
        memcpy(blk, prefix, plen);
        memcpy(blk + plen, msg, 64 - plen);
        im->compress(st, blk, 1);
        msg += 64 - plen;
        len -= 64 - plen;
        plen = 0;
    }
    n = (plen + len) / 64; /* plen is 0 here unless plen + len < 64, then n is 0 */
    im->compress(st, msg, n);
    msg += 64 * n;
    rest = plen + len - 64 * n;
    memset(blk, 0, sizeof(blk));
    memcpy(blk, prefix, plen);
    memcpy(blk + plen, msg, rest - plen);
    blk[rest] = 0x80;
    n = rest + 9 <= 64 ? 1 : 2;
    for (i = 0; i < 8; i++) {
        blk[64 * n - 1 - i] = (uint8_t) (bits >> (8 * i));
    }
    im->compress(st, blk, n);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t) (st[i] >> 24);
        out[4 * i + 1] = (uint8_t) (st[i] >> 16);
        out[4 * i + 2] = (uint8_t) (st[i] >> 8);
        out[4 * i + 3] = (uint8_t) st[i];
    }
}

/* The work items: one of these per measured line. */
typedef struct job {
    const gm__sm3_impl *ss;    /* single stream path, or */
    const gm__sm3_mb_impl *mb; /* multi-buffer path, or neither: OpenSSL */
    const uint8_t *const *msgs;
    const size_t *lens;
    size_t num;
    const uint8_t *prefix;
    size_t prefix_len;
    uint8_t *out;
} job;

static void
run_once(const job *jb)
{
    size_t i;

    if (jb->mb != NULL) {
        jb->mb->hash_many(jb->out, jb->msgs, jb->lens, jb->num, jb->prefix, jb->prefix_len);
        return;
    }
    if (jb->ss != NULL) {
        for (i = 0; i < jb->num; i++) {
            ss_hash(jb->ss, jb->out + 32 * i, jb->prefix, jb->prefix_len, jb->msgs[i], jb->lens[i]);
        }
        return;
    }
    for (i = 0; i < jb->num; i++) {
        unsigned int n;

        if (jb->prefix_len == 0) {
            EVP_Digest(jb->msgs[i], jb->lens[i], jb->out + 32 * i, &n, EVP_sm3(), NULL);
        } else {
            EVP_MD_CTX *c = EVP_MD_CTX_new();

            EVP_DigestInit_ex(c, EVP_sm3(), NULL);
            EVP_DigestUpdate(c, jb->prefix, jb->prefix_len);
            EVP_DigestUpdate(c, jb->msgs[i], jb->lens[i]);
            EVP_DigestFinal_ex(c, jb->out + 32 * i, &n);
            EVP_MD_CTX_free(c);
        }
    }
}

static double
measure(const job *jb)
{
    double rate[RUNS], bytes = 0;
    size_t i;
    int r;

    for (i = 0; i < jb->num; i++) {
        bytes += (double) jb->lens[i];
    }
    run_once(jb); /* warm up */
    for (r = 0; r < RUNS; r++) {
        double t0 = now(), t;
        long reps = 0;

        do {
            run_once(jb);
            reps++;
            t = now() - t0;
        } while (t < 0.2);
        rate[r] = bytes * (double) reps / t / 1e6;
    }
    qsort(rate, RUNS, sizeof(double), cmp_double);
    return rate[RUNS / 2];
}

int
main(void)
{
    static const char *ss_names[] = {"portable", "x86-avx-bmi2"};
    static const char *mb_names[] = {"portable", "avx2x8", "avx512x16"};
    static const size_t sizes[] = {64, 256, 1024, 16384};
    const size_t batch_bytes = 1 << 20;
    const uint8_t leaf_prefix[1] = {0x00};
    size_t max_num = batch_bytes / 64, i, s, k, p;
    uint8_t *data = malloc(batch_bytes + 64), *out = malloc(32 * max_num);
    const uint8_t **msgs = malloc(sizeof(*msgs) * max_num);
    size_t *lens = malloc(sizeof(*lens) * max_num);
    double base;
    job jb;

    if (data == NULL || out == NULL || msgs == NULL || lens == NULL) {
        return 1;
    }
    for (i = 0; i < batch_bytes + 64; i++) {
        data[i] = (uint8_t) (i * 2654435761u >> 13);
    }

    printf("single stream, 16 KiB messages (MB/s, median of %d)\n", RUNS);
    memset(&jb, 0, sizeof(jb));
    msgs[0] = data;
    lens[0] = 16384;
    jb.msgs = msgs, jb.lens = lens, jb.num = 1, jb.out = out;
    base = measure(&jb);
    printf("  %-18s %8.0f\n", "openssl", base);
    for (k = 0; k < sizeof(ss_names) / sizeof(ss_names[0]); k++) {
        jb.ss = gm__sm3_impl_get(ss_names[k]);
        if (jb.ss != NULL) {
            double v = measure(&jb);

            printf("  %-18s %8.0f  (%.2fx openssl)\n", ss_names[k], v, v / base);
        }
    }

    for (p = 0; p < 2; p++) {
        printf("multi-buffer, batches of ~1 MiB, %s (aggregate MB/s, median of %d)\n",
               p ? "1-byte prefix (Merkle leaf)" : "no prefix", RUNS);
        printf("  %-18s", "msg bytes");
        for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            printf(" %8zu", sizes[s]);
        }
        printf("\n");
        for (k = 0; k <= 1 + sizeof(mb_names) / sizeof(mb_names[0]); k++) {
            const gm__sm3_mb_impl *mb = k < 2 ? NULL : gm__sm3_mb_impl_get(mb_names[k - 2]);
            char label[40];

            if (k >= 2 && mb == NULL) {
                continue;
            }
            if (k == 1) {
                snprintf(label, sizeof(label), "loop %s", gm__sm3_impl_best()->name);
            }
            printf("  %-18s", k == 0 ? "openssl" : k == 1 ? label : mb_names[k - 2]);
            for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                size_t num = batch_bytes / sizes[s];

                for (i = 0; i < num; i++) {
                    msgs[i] = data + i * sizes[s] + (p ? 1 : 0);
                    lens[i] = sizes[s] - (p ? 1 : 0);
                }
                memset(&jb, 0, sizeof(jb));
                jb.mb = mb, jb.msgs = msgs, jb.lens = lens, jb.num = num, jb.out = out;
                jb.ss = k == 1 ? gm__sm3_impl_best() : NULL;
                jb.prefix = p ? leaf_prefix : NULL;
                jb.prefix_len = p ? 1 : 0;
                printf(" %8.0f", measure(&jb));
                fflush(stdout);
            }
            printf("\n");
        }
    }
    free(data);
    free(out);
    free(msgs);
    free(lens);
    return 0;
}
