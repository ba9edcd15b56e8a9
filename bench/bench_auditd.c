/* bench_auditd.c: durable appends through auditd (HTTP/1.1 on loopback), next to the same
 * appends made in-process, so that the ratio shows what the HTTP service costs.
 *
 *   auditd  C/B     C client connections (threads with blocking sockets, keep-alive), each
 *                   POSTing B records per request (B = 1: application/json; B > 1:
 *                   application/x-ndjson) and waiting for the 201, which auditd sends only
 *                   once the records are durable. Figures: records/s acknowledged, request
 *                   latency p50/p99 (send to the end of the response).
 *   inproc  C/B     the anchor: C threads each calling audit_log_append with B records of the
 *                   same pool on a temporary log of the same configuration (closed loop, like
 *                   the clients), latency = the call.
 *
 * auditd runs as a child process: `dengbao auditd` from argv[1], else $DENGBAO_BIN, else the
 * `dengbao` next to this binary; the log is made with `dengbao audit init` in a temporary
 * folder ($BENCH_AUDITD_DIR, default /tmp), with port 0 (auditd prints the port). The child
 * inherits this process's CPU affinity (run under taskset to pin both).
 *
 * Records: 1,024 JSON records whose canonical encodings are 256..512 bytes (realistic fields,
 * an object name of random length); auditd assigns event_id and time, as the CLI does.
 * Also printed: the rate of audit_record_from_json + audit_record_encode on one thread, the
 * per-record work auditd does on its loop before the log sees the records.
 *
 * Knobs (environment): BENCH_AUDITD_WORKERS (auditd --workers, default 1), BENCH_AUDITD_SECONDS
 * (per configuration, default 2), BENCH_AUDITD_RUNS (default 3; the median run by throughput is
 * printed), BENCH_AUDITD_CONFIGS (default "16/1,16/64": C/B pairs). Output: one line per
 * configuration and mode, and the ratio.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/audit.h"
#include "dengbao/gm.h"

extern char **environ;

#define POOL       1024
#define LAT_MAX    (1 << 20)
#define TOKEN      "bench-writer-token"
#define MAX_CONNS  256
#define RUNS_MAX   15
#define CONFIG_MAX 8

static char *pool_json[POOL];
static size_t pool_json_len[POOL];
static uint8_t *pool_enc[POOL];
static uint32_t pool_enc_len[POOL];

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void
die(const char *what)
{
    fprintf(stderr, "bench_auditd: %s\n", what);
    exit(2);
}

/* make_pool builds the JSON records and their canonical encodings (256..512 bytes). */
static void
make_pool(void)
{
    static const char *const actions[] = {"select", "update", "export", "login", "approve"};
    audit_record r;
    audit_record_init(&r);
    uint8_t *enc = malloc(AUDIT_RECORD_MAX);
    for (int i = 0; i < POOL; i++) {
        for (;;) {
            char obj[600];
            size_t ol = 100 + rng() % 330;
            for (size_t k = 0; k < ol; k++) {
                obj[k] = "abcdefghijklmnopqrstuvwxyz/._-"[rng() % 30];
            }
            obj[ol] = '\0';
            char json[2048];
            int n = snprintf(json, sizeof json,
                             "{\"subject\":{\"id\":\"user-%06d\",\"role\":\"teller\","
                             "\"ip\":\"10.%d.%d.%d\",\"device\":\"term-%04d\"},"
                             "\"event_type\":\"data.access\",\"action\":\"%s\","
                             "\"object\":\"db/%s\",\"result\":\"%s\",\"code\":%d,"
                             "\"source\":\"gateway\",\"details\":{\"rows\":%d}}",
                             (int) (rng() % 1000000), (int) (rng() % 256), (int) (rng() % 256),
                             (int) (rng() % 256), (int) (rng() % 10000), actions[rng() % 5], obj,
                             rng() % 10 ? "success" : "failure", (int) (rng() % 600),
                             (int) (rng() % 100000));
            size_t el = 0;
            if (audit_record_from_json(&r, json, (size_t) n, AUDIT_JSON_ASSIGN, NULL) != 0 ||
                audit_record_encode(&r, enc, &el, AUDIT_RECORD_MAX, NULL) != 0) {
                die("cannot build a record");
            }
            if (el < 256 || el > 512) {
                continue;
            }
            pool_json[i] = strdup(json);
            pool_json_len[i] = (size_t) n;
            pool_enc[i] = malloc(el);
            memcpy(pool_enc[i], enc, el);
            pool_enc_len[i] = (uint32_t) el;
            break;
        }
    }
    audit_record_cleanup(&r);
    free(enc);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

typedef struct result {
    double rate; /* records/s */
    double p50, p99;
} result;

typedef struct worker {
    pthread_t t;
    int id;
    int batch;
    double until;
    uint16_t port;
    audit_log *log;
    uint64_t records;
    double *lat;
    size_t num_lat;
    int error;
} worker;

static atomic_int go;

/* ---- HTTP clients ---- */

static int
dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    if (connect(fd, (struct sockaddr *) &sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* read_response reads one response; returns its status or -1. */
static int
read_response(int fd, char *buf, size_t cap)
{
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, cap - got - 1, 0);
        if (n <= 0) {
            return -1;
        }
        got += (size_t) n;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL) {
            continue;
        }
        char *cl = strcasestr(buf, "\r\ncontent-length:");
        size_t want = (size_t) (end - buf) + 4 + (cl ? strtoul(cl + 17, NULL, 10) : 0);
        while (got < want) {
            n = recv(fd, buf + got, cap - got - 1, 0);
            if (n <= 0) {
                return -1;
            }
            got += (size_t) n;
        }
        return atoi(buf + 9);
    }
}

static void *
http_client(void *arg)
{
    worker *w = arg;
    int fd = dial(w->port);
    if (fd < 0) {
        w->error = 1;
        return NULL;
    }
    /* Build this client's requests: POOL / batch bodies, cycled. */
    size_t nreq = 16;
    char **reqs = calloc(nreq, sizeof *reqs);
    size_t *lens = calloc(nreq, sizeof *lens);
    for (size_t q = 0; q < nreq; q++) {
        size_t cap = 256 + (size_t) w->batch * 2100, bl = 0;
        char *body = malloc(cap);
        for (int k = 0; k < w->batch; k++) {
            size_t i = (size_t) (w->id * 131 + (int) q * w->batch + k) % POOL;
            memcpy(body + bl, pool_json[i], pool_json_len[i]);
            bl += pool_json_len[i];
            if (w->batch > 1) {
                body[bl++] = '\n';
            }
        }
        reqs[q] = malloc(bl + 512);
        int hl = snprintf(reqs[q], 512,
                          "POST /v1/records HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " TOKEN
                          "\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                          w->batch > 1 ? "application/x-ndjson" : "application/json", bl);
        memcpy(reqs[q] + hl, body, bl);
        lens[q] = (size_t) hl + bl;
        free(body);
    }
    char *rbuf = malloc(65536);
    while (!atomic_load(&go)) {
    }
    size_t q = 0;
    while (now() < w->until) {
        double t0 = now();
        const char *p = reqs[q];
        size_t left = lens[q];
        while (left > 0) {
            ssize_t n = send(fd, p, left, MSG_NOSIGNAL);
            if (n <= 0) {
                w->error = 1;
                goto out;
            }
            p += n;
            left -= (size_t) n;
        }
        int st = read_response(fd, rbuf, 65536);
        if (st != 201) {
            w->error = st;
            goto out;
        }
        if (w->num_lat < LAT_MAX) {
            w->lat[w->num_lat++] = now() - t0;
        }
        w->records += (uint64_t) w->batch;
        q = (q + 1) % nreq;
    }
out:
    close(fd);
    for (size_t k = 0; k < nreq; k++) {
        free(reqs[k]);
    }
    free(reqs);
    free(lens);
    free(rbuf);
    return NULL;
}

/* ---- in-process anchor ---- */

static void *
inproc_client(void *arg)
{
    worker *w = arg;
    size_t total = 0;
    for (int k = 0; k < POOL; k++) {
        total += pool_enc_len[k];
    }
    uint8_t *all = malloc(total * 2);
    uint32_t *lens = malloc(sizeof *lens * POOL * 2);
    size_t off = 0;
    size_t *offs = malloc(sizeof *offs * POOL * 2);
    for (int k = 0; k < 2 * POOL; k++) {
        int i = k % POOL;
        offs[k] = off;
        memcpy(all + off, pool_enc[i], pool_enc_len[i]);
        lens[k] = pool_enc_len[i];
        off += pool_enc_len[i];
    }
    while (!atomic_load(&go)) {
    }
    size_t k = (size_t) (w->id * 131) % POOL;
    while (now() < w->until) {
        double t0 = now();
        uint64_t first;
        if (audit_log_append(w->log, all + offs[k], lens + k, (size_t) w->batch, &first, NULL) !=
            0) {
            w->error = 1;
            break;
        }
        if (w->num_lat < LAT_MAX) {
            w->lat[w->num_lat++] = now() - t0;
        }
        w->records += (uint64_t) w->batch;
        k = (k + (size_t) w->batch) % POOL;
    }
    free(all);
    free(lens);
    free(offs);
    return NULL;
}

static result
run(int conns, int batch, double secs, uint16_t port, audit_log *log)
{
    worker *ws = calloc((size_t) conns, sizeof *ws);
    atomic_store(&go, 0);
    double start = now() + 0.2;
    for (int i = 0; i < conns; i++) {
        ws[i].id = i;
        ws[i].batch = batch;
        ws[i].port = port;
        ws[i].log = log;
        ws[i].until = start + secs;
        ws[i].lat = malloc(sizeof(double) * LAT_MAX);
        pthread_create(&ws[i].t, NULL, log ? inproc_client : http_client, &ws[i]);
    }
    while (now() < start) {
        usleep(1000);
    }
    double t0 = now();
    atomic_store(&go, 1);
    uint64_t recs = 0;
    size_t nl = 0;
    for (int i = 0; i < conns; i++) {
        pthread_join(ws[i].t, NULL);
        if (ws[i].error) {
            fprintf(stderr, "bench_auditd: client %d failed (%d)\n", i, ws[i].error);
            exit(1);
        }
        recs += ws[i].records;
        nl += ws[i].num_lat;
    }
    double el = now() - t0;
    double *lat = malloc(sizeof(double) * (nl + 1));
    size_t j = 0;
    for (int i = 0; i < conns; i++) {
        memcpy(lat + j, ws[i].lat, ws[i].num_lat * sizeof(double));
        j += ws[i].num_lat;
        free(ws[i].lat);
    }
    qsort(lat, nl, sizeof(double), cmp_double);
    result r = {(double) recs / el, nl ? lat[nl / 2] : 0, nl ? lat[(size_t) (nl * 0.99)] : 0};
    free(lat);
    free(ws);
    return r;
}

static int
cmp_result(const void *a, const void *b)
{
    double x = ((const result *) a)->rate, y = ((const result *) b)->rate;
    return x < y ? -1 : x > y;
}

/* ---- processes ---- */

static int
spawn_wait(char *const argv[])
{
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        return -1;
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static pid_t auditd_pid = -1;

static uint16_t
start_auditd(const char *bin, const char *dir, const char *auth)
{
    int pfd[2];
    if (pipe(pfd) != 0) {
        die("pipe");
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addclose(&fa, pfd[0]);
    char *workers = getenv("BENCH_AUDITD_WORKERS") ? getenv("BENCH_AUDITD_WORKERS") : "1";
    char *argv[] = {(char *) bin, "auditd",      "--dir",  (char *) dir,
                    "--listen",   "127.0.0.1:0", "--auth", (char *) auth,
                    "--workers",  workers,       NULL};
    if (posix_spawn(&auditd_pid, bin, &fa, NULL, argv, environ) != 0) {
        die("cannot start auditd");
    }
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    char line[256];
    size_t got = 0;
    while (got < sizeof line - 1) {
        ssize_t n = read(pfd[0], line + got, 1);
        if (n <= 0 || line[got] == '\n') {
            break;
        }
        got++;
    }
    line[got] = '\0';
    close(pfd[0]);
    char *colon = strrchr(line, ':');
    if (strstr(line, "listening on") == NULL || colon == NULL) {
        die("auditd did not start");
    }
    return (uint16_t) atoi(colon + 1);
}

static void
stop_auditd(void)
{
    if (auditd_pid > 0) {
        kill(auditd_pid, SIGTERM);
        int st;
        waitpid(auditd_pid, &st, 0);
        auditd_pid = -1;
    }
}

static audit_log *
open_inproc(const char *dir, gm_sm2_key **key, char **holder)
{
    audit_log_config cfg;
    if (audit_log_read_config(dir, &cfg, holder, NULL) != 0) {
        die("cannot read the log config");
    }
    char p[PATH_MAX + 700];
    snprintf(p, sizeof p, "%s/%s", dir, cfg.key_path);
    FILE *f = fopen(p, "r");
    if (f == NULL) {
        die("cannot open the signer key");
    }
    char pem[8192];
    size_t n = fread(pem, 1, sizeof pem, f);
    fclose(f);
    if (gm_sm2_key_from_pem(key, pem, n, NULL) != 0) {
        die("cannot load the signer key");
    }
    static audit_note_key nk;
    nk.name = cfg.origin;
    nk.key = *key;
    audit_log_open_opts oo = {.signers = &nk, .num_signers = 1};
    audit_log *log = NULL;
    dbao_err err;
    if (audit_log_open(&log, dir, &oo, &err) != 0) {
        fprintf(stderr, "bench_auditd: %s\n", err.msg);
        exit(2);
    }
    return log;
}

int
main(int argc, char **argv)
{
    char bin[PATH_MAX];
    if (argc > 1) {
        snprintf(bin, sizeof bin, "%s", argv[1]);
    } else if (getenv("DENGBAO_BIN") != NULL) {
        snprintf(bin, sizeof bin, "%s", getenv("DENGBAO_BIN"));
    } else {
        ssize_t n = readlink("/proc/self/exe", bin, sizeof bin - 16);
        if (n <= 0) {
            die("cannot find the dengbao binary: pass it as argv[1]");
        }
        bin[n] = '\0';
        char *slash = strrchr(bin, '/');
        strcpy(slash + 1, "dengbao");
    }
    if (access(bin, X_OK) != 0) {
        fprintf(stderr, "bench_auditd: no dengbao binary at '%s'\n", bin);
        return 2;
    }
    char *probe[] = {bin, "auditd", "--help", NULL};
    if (spawn_wait(probe) != 0) {
        printf("bench_auditd: skipped: '%s' has no auditd command\n", bin);
        return 0;
    }
    double secs = getenv("BENCH_AUDITD_SECONDS") ? atof(getenv("BENCH_AUDITD_SECONDS")) : 2.0;
    int runs = getenv("BENCH_AUDITD_RUNS") ? atoi(getenv("BENCH_AUDITD_RUNS")) : 3;
    if (runs < 1 || runs > RUNS_MAX) {
        runs = 3;
    }
    const char *configs =
        getenv("BENCH_AUDITD_CONFIGS") ? getenv("BENCH_AUDITD_CONFIGS") : "16/1,16/64";
    const char *parent = getenv("BENCH_AUDITD_DIR") ? getenv("BENCH_AUDITD_DIR") : "/tmp";
    signal(SIGPIPE, SIG_IGN);

    char tmp[512], dir_http[600], dir_inproc[600], auth[600];
    snprintf(tmp, sizeof tmp, "%s/dbao-bench-auditd-XXXXXX", parent);
    if (mkdtemp(tmp) == NULL) {
        die("cannot create the temporary folder");
    }
    snprintf(dir_http, sizeof dir_http, "%s/http", tmp);
    snprintf(dir_inproc, sizeof dir_inproc, "%s/inproc", tmp);
    snprintf(auth, sizeof auth, "%s/auth.json", tmp);
    char *init1[] = {bin, "audit", "init", "--dir", dir_http, "--origin", "bench/audit", NULL};
    char *init2[] = {bin, "audit", "init", "--dir", dir_inproc, "--origin", "bench/audit", NULL};
    if (spawn_wait(init1) != 0 || spawn_wait(init2) != 0) {
        die("dengbao audit init failed");
    }
    uint8_t dig[GM_SM3_DIGEST_LEN];
    char hex[2 * GM_SM3_DIGEST_LEN + 1];
    gm_sm3(dig, TOKEN, strlen(TOKEN));
    dbao_hex_encode(hex, dig, sizeof dig);
    FILE *af = fopen(auth, "w");
    fprintf(af,
            "{\"tokens\":[{\"sm3\":\"%s\",\"subject\":\"bench\",\"roles\":[\"audit-writer\"]}]}",
            hex);
    fclose(af);
    chmod(auth, 0600);

    make_pool();
    double mean = 0;
    for (int i = 0; i < POOL; i++) {
        mean += pool_enc_len[i];
    }
    cpu_set_t cs;
    CPU_ZERO(&cs);
    sched_getaffinity(0, sizeof cs, &cs);
    printf("bench_auditd: records of 256..512 bytes (mean %.0f), %.1f s per run, median of %d "
           "runs, %d CPU(s) allowed\n",
           mean / POOL, secs, runs, CPU_COUNT(&cs));

    /* What auditd does per record before the log sees it: JSON parse, validation, encode. */
    {
        audit_record r;
        audit_record_init(&r);
        uint8_t *enc = malloc(AUDIT_RECORD_MAX);
        double rates[RUNS_MAX];
        for (int k = 0; k < runs; k++) {
            uint64_t n = 0;
            double t0 = now(), t1;
            do {
                for (int i = 0; i < 256; i++) {
                    size_t el;
                    int j = (int) (n++ % POOL);
                    if (audit_record_from_json(&r, pool_json[j], pool_json_len[j],
                                               AUDIT_JSON_ASSIGN, NULL) != 0 ||
                        audit_record_encode(&r, enc, &el, AUDIT_RECORD_MAX, NULL) != 0) {
                        die("parse");
                    }
                }
                t1 = now();
            } while (t1 - t0 < secs / 4);
            rates[k] = (double) n / (t1 - t0);
        }
        qsort(rates, (size_t) runs, sizeof rates[0], cmp_double);
        printf("parse   1 thread          %10.0f records/s  (audit_record_from_json + encode: "
               "auditd's per-record work before the log)\n",
               rates[runs / 2]);
        audit_record_cleanup(&r);
        free(enc);
    }
    uint16_t port = start_auditd(bin, dir_http, auth);
    gm_sm2_key *key = NULL;
    char *holder = NULL;
    audit_log *log = open_inproc(dir_inproc, &key, &holder);

    const char *c = configs;
    int nconf = 0;
    while (*c != '\0' && nconf < CONFIG_MAX) {
        int conns = atoi(c);
        const char *slash = strchr(c, '/');
        int batch = slash ? atoi(slash + 1) : 1;
        if (conns < 1 || conns > MAX_CONNS || batch < 1 || batch > 4096) {
            die("BENCH_AUDITD_CONFIGS wants C/B pairs, C <= 256, B <= 4096");
        }
        result rh[RUNS_MAX], ri[RUNS_MAX];
        for (int r = 0; r < runs; r++) {
            rh[r] = run(conns, batch, secs, port, NULL);
            ri[r] = run(conns, batch, secs, 0, log);
        }
        qsort(rh, (size_t) runs, sizeof rh[0], cmp_result);
        qsort(ri, (size_t) runs, sizeof ri[0], cmp_result);
        result h = rh[runs / 2], in = ri[runs / 2];
        printf("auditd  C=%-3d B=%-4d %10.0f records/s  ack p50 %7.0f us  p99 %7.0f us\n", conns,
               batch, h.rate, h.p50 * 1e6, h.p99 * 1e6);
        printf("inproc  C=%-3d B=%-4d %10.0f records/s  ack p50 %7.0f us  p99 %7.0f us  "
               "(auditd/inproc %.2f)\n",
               conns, batch, in.rate, in.p50 * 1e6, in.p99 * 1e6, h.rate / in.rate);
        fflush(stdout);
        nconf++;
        c = strchr(c, ',');
        if (c == NULL) {
            break;
        }
        c++;
    }
    stop_auditd();
    audit_log_close(log);
    gm_sm2_key_free(key);
    dbao_free(holder);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (getenv("BENCH_AUDITD_KEEP") == NULL && system(cmd) != 0) {
        fprintf(stderr, "bench_auditd: could not remove %s\n", tmp);
    }
    return 0;
}
