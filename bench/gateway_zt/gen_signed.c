/* gen_signed.c: pre-signed request-mode requests for bench/gateway_zt/run.sh, scenario (c).
 *
 * wrk cannot sign per request, and a request-mode nonce may be used once, so the benchmark
 * signs every request it will send beforehand: this program writes N lines
 * "<timestamp> <nonce> <X-SM2-Signature> <X-Content-SM3>" for one method, path and query with
 * an empty body, each with a fresh nonce, split over K files PREFIX.0 .. PREFIX.K-1 (one per
 * wrk thread, read by bench/gateway_zt/signed.lua). Signing goes through the same library call
 * as `dengbao token sign-request` (zt_devsig_sign_request); the node and CLI signers are far
 * too slow for hundreds of thousands of signatures (sm-crypto takes ~7 ms per signature), and
 * the signer's speed is not what is measured. Signing runs on all CPUs (one thread per file).
 *
 *   gen_signed DEVICE_KEY.pem METHOD PATH QUERY N K PREFIX
 *
 * Built by run.sh against the build's libdengbao.a. Exit 0, or 1 with a message on stderr.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/common.h"
#include "dengbao/gm.h"
#include "dengbao/zt.h"

typedef struct job {
    const gm_sm2_key *key;
    const char *method, *path, *query, *file;
    size_t n;
    int64_t ts;
    int rc;
} job;

static void *
run(void *arg)
{
    job *j = arg;
    FILE *f = fopen(j->file, "w");
    if (f == NULL) {
        perror(j->file);
        j->rc = 1;
        return NULL;
    }
    dbao_err err;
    dbao_err_clear(&err);
    for (size_t i = 0; i < j->n; i++) {
        zt_devsig_headers h;
        if (zt_devsig_sign_request(&h, j->key, j->method, j->path, j->query, NULL, 0, j->ts,
                                   &err) != 0) {
            fprintf(stderr, "gen_signed: sign: %s\n", err.msg);
            j->rc = 1;
            break;
        }
        fprintf(f, "%s %s %s %s\n", h.timestamp, h.nonce, h.sig, h.content_sm3);
    }
    if (fclose(f) != 0)
        j->rc = 1;
    return NULL;
}

int
main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: gen_signed DEVICE_KEY.pem METHOD PATH QUERY N K PREFIX\n");
        return 1;
    }
    size_t n = strtoull(argv[5], NULL, 10);
    int k = atoi(argv[6]);
    if (n == 0 || k < 1 || k > 64) {
        fprintf(stderr, "gen_signed: bad N or K\n");
        return 1;
    }
    FILE *kf = fopen(argv[1], "r");
    if (kf == NULL) {
        perror(argv[1]);
        return 1;
    }
    char pem[8192];
    size_t pem_len = fread(pem, 1, sizeof pem, kf);
    fclose(kf);
    dbao_err err;
    dbao_err_clear(&err);
    gm_sm2_key *key = NULL;
    if (gm_sm2_key_from_pem(&key, pem, pem_len, &err) != 0) {
        fprintf(stderr, "gen_signed: %s: %s\n", argv[1], err.msg);
        return 1;
    }
    int64_t ts = (int64_t) time(NULL);
    job jobs[64];
    pthread_t th[64];
    char names[64][4096];
    int rc = 0;
    for (int i = 0; i < k; i++) {
        snprintf(names[i], sizeof names[i], "%s.%d", argv[7], i);
        jobs[i] = (job){.key = key,
                        .method = argv[2],
                        .path = argv[3],
                        .query = argv[4],
                        .file = names[i],
                        .n = n / (size_t) k + ((size_t) i < n % (size_t) k),
                        .ts = ts};
        if (pthread_create(&th[i], NULL, run, &jobs[i]) != 0) {
            fprintf(stderr, "gen_signed: pthread_create failed\n");
            return 1;
        }
    }
    for (int i = 0; i < k; i++) {
        pthread_join(th[i], NULL);
        rc |= jobs[i].rc;
    }
    gm_sm2_key_free(key);
    return rc;
}
