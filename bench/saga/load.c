/* load.c (the saga_load tool): a closed-loop load generator for the saga coordinator
 * (bench/saga/run.sh).
 *
 * Submits N two-step transfer sagas (debit at participant A, credit at participant B, amount 1
 * fen, accounts spread over --accounts ids) with at most C in flight, each as
 * POST /v1/sagas?wait=W; an answer that is not final yet (202, or 201) is followed by
 * GET /v1/sagas/{gid}?wait=W until the saga is committed, compensated or parked. The latency of
 * a saga is from the start of its submission to the answer that shows it final. Prints one line:
 *   n=.. c=.. seconds=.. tps=.. p50_ms=.. p90_ms=.. p99_ms=.. max_ms=.. committed=.. other=..
 *   errors=..
 * (tps = final sagas / wall time from the first submission to the last final answer).
 *
 * libcurl's multi interface drives C keep-alive connections from one thread (hand-written: the
 * loop that refills the C slots and the percentile sort; nothing else needed). No floating point
 * reaches a money path here: amounts are integer fen; doubles are used for timing figures only.
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slot {
    CURL *h;
    long idx;      /* saga number, -1 idle */
    int64_t t0_ns; /* submission start */
    char gid[96];
    char body[4096]; /* request body (kept until the transfer ends) */
    char resp[8192];
    size_t resp_len;
    struct curl_slist *hdrs;
} slot;

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static size_t
on_write(char *p, size_t sz, size_t n, void *arg)
{
    slot *s = arg;
    size_t len = sz * n, room = sizeof s->resp - 1 - s->resp_len;
    size_t take = len < room ? len : room;
    memcpy(s->resp + s->resp_len, p, take);
    s->resp_len += take;
    s->resp[s->resp_len] = 0;
    return len;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static const char *url, *pa, *pb, *prefix = "b", *waitq = "30s";
static long accounts = 64;

static void
start_submit(CURLM *m, slot *s, long idx)
{
    s->idx = idx;
    s->t0_ns = now_ns();
    s->resp_len = 0;
    s->resp[0] = 0;
    snprintf(s->gid, sizeof s->gid, "%s-%ld", prefix, idx);
    long acc = idx % accounts + 1;
    snprintf(s->body, sizeof s->body,
             "{\"gid\":\"%s\",\"steps\":[{\"name\":\"debit\",\"action\":\"%s/debit\","
             "\"compensate\":\"%s/debit/undo\",\"payload\":{\"account\":\"A%ld\",\"amount\":1}},"
             "{\"name\":\"credit\",\"action\":\"%s/credit\",\"compensate\":\"%s/credit/undo\","
             "\"payload\":{\"account\":\"B%ld\",\"amount\":1}}]}",
             s->gid, pa, pa, acc, pb, pb, acc);
    char u[512];
    snprintf(u, sizeof u, "%s/v1/sagas?wait=%s", url, waitq);
    curl_easy_setopt(s->h, CURLOPT_URL, u);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->body);
    curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE, (long) strlen(s->body));
    curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, s->hdrs);
    curl_multi_add_handle(m, s->h);
}

static void
start_poll(CURLM *m, slot *s)
{
    s->resp_len = 0;
    s->resp[0] = 0;
    char u[512];
    snprintf(u, sizeof u, "%s/v1/sagas/%s?wait=%s", url, s->gid, waitq);
    curl_easy_setopt(s->h, CURLOPT_URL, u);
    curl_easy_setopt(s->h, CURLOPT_HTTPGET, 1L);
    curl_multi_add_handle(m, s->h);
}

int
main(int argc, char **argv)
{
    long n = 10000, c = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--url")) {
            url = v;
        } else if (!strcmp(k, "--a")) {
            pa = v;
        } else if (!strcmp(k, "--b")) {
            pb = v;
        } else if (!strcmp(k, "-n")) {
            n = atol(v);
        } else if (!strcmp(k, "-c")) {
            c = atol(v);
        } else if (!strcmp(k, "--accounts")) {
            accounts = atol(v);
        } else if (!strcmp(k, "--prefix")) {
            prefix = v;
        } else if (!strcmp(k, "--wait")) {
            waitq = v;
        } else {
            fprintf(stderr, "saga_load: unknown option %s\n", k);
            return 2;
        }
    }
    if (url == NULL || pa == NULL || pb == NULL || n < 1 || c < 1 || c > 4096 || accounts < 1) {
        fprintf(stderr, "usage: saga_load --url COORD --a PART_A --b PART_B [-n N] [-c C] "
                        "[--accounts K] [--prefix P] [--wait 30s]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, c);
    slot *slots = calloc((size_t) c, sizeof *slots);
    int64_t *lat = calloc((size_t) n, sizeof *lat);
    if (slots == NULL || lat == NULL) {
        return 3;
    }
    for (long i = 0; i < c; i++) {
        slot *s = &slots[i];
        s->h = curl_easy_init();
        s->idx = -1;
        s->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
        curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
        curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, 120000L);
        curl_easy_setopt(s->h, CURLOPT_TCP_NODELAY, 1L);
    }
    long next = 0, done = 0, committed = 0, other = 0, errors = 0, nlat = 0;
    int64_t t_start = now_ns();
    for (long i = 0; i < c && next < n; i++) {
        start_submit(m, &slots[i], next++);
    }
    while (done < n) {
        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) {
                continue;
            }
            slot *s = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &s);
            curl_multi_remove_handle(m, s->h);
            long st = 0;
            curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &st);
            bool final = false;
            if (msg->data.result != CURLE_OK || (st != 200 && st != 201 && st != 202)) {
                errors++;
                final = true;
            } else if (strstr(s->resp, "\"state\":\"committed\"") != NULL) {
                committed++;
                final = true;
            } else if (strstr(s->resp, "\"state\":\"compensated\"") != NULL ||
                       strstr(s->resp, "\"state\":\"parked\"") != NULL) {
                other++;
                final = true;
            }
            if (!final) {
                start_poll(m, s);
                continue;
            }
            if (msg->data.result == CURLE_OK) {
                lat[nlat++] = now_ns() - s->t0_ns;
            }
            done++;
            s->idx = -1;
            if (next < n) {
                start_submit(m, s, next++);
            }
        }
        if (done < n) {
            curl_multi_poll(m, NULL, 0, 100, NULL);
        }
    }
    int64_t t_end = now_ns();
    qsort(lat, (size_t) nlat, sizeof *lat, cmp_i64);
    double secs = (double) (t_end - t_start) / 1e9;
#define PCT(p) (nlat ? (double) lat[(size_t) ((double) (nlat - 1) * (p))] / 1e6 : 0.0)
    printf("n=%ld c=%ld seconds=%.3f tps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f "
           "committed=%ld other=%ld errors=%ld\n",
           n, c, secs, (double) done / secs, PCT(0.50), PCT(0.90), PCT(0.99), PCT(1.0), committed,
           other, errors);
    for (long i = 0; i < c; i++) {
        curl_easy_cleanup(slots[i].h);
        curl_slist_free_all(slots[i].hdrs);
    }
    curl_multi_cleanup(m);
    curl_global_cleanup();
    free(slots);
    free(lat);
    return errors == 0 ? 0 : 1;
}
