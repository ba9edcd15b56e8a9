/* bench_mask_jsonstream.c: streaming JSON masking throughput against the tree-based masking.
 *
 *   stream_4k      MB/s of mask_json_stream (reset, feed whole body, finish) over 4 KiB bodies
 *                  with a few masked fields (the target: >= 300 MB/s)
 *   stream_4k_mss  the same, fed in 1448-byte pieces (a TCP segment's payload, as the gateway
 *                  sees a response)
 *   tree_4k        MB/s of mask_apply_json (jansson parse, walk, dump) on the same bodies
 *   ratio          stream_4k / tree_4k
 *   dense_4k       the stream on 4 KiB bodies where every record has three masked fields
 *   dense_tree_4k  mask_apply_json on those
 *   stream_64k     the stream on 64 KiB bodies (the dense records, more of them)
 *
 * The bodies are built deterministically. "Few": an order history, one patient header with a
 * name, a resident ID and a mobile under field rules, then order lines (ids, titles in Chinese
 * and English, amounts, dates, booleans, a note: one in eight holds a mobile for the
 * detectors). "Dense": {"total":N,"items":[...]} of patient records, each with a name, a
 * resident ID and a mobile under rules, an address, amounts, and a note in which about one
 * record in three holds a mobile or an e-mail address. Roles: none (the most masked
 * view). The output of both is checked to be equal before timing. Each figure is the median of
 * --runs runs (default 5) of about --ms milliseconds (default 400).
 * Output: one line per figure; with --json one JSON object per line:
 *   {"bench":"mask_jsonstream","figure":"stream_4k","value":...,"unit":"MB/s"}
 * Run pinned: taskset -c 1 ./bench_mask_jsonstream
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/mask.h"

static int opt_runs = 5;
static int opt_json = 0;
static int opt_ms = 400;
static const char *opt_only; /* one figure (for profiling) */

static const char POLICY[] = "detect:\n"
                             "  types: [CN_RID18, CN_MOBILE, EMAIL, BANK_CARD]\n"
                             "fields:\n"
                             "  items.name: {type: CN_NAME}\n"
                             "  items.id_no: {type: CN_RID18}\n"
                             "  items.mobile: {type: CN_MOBILE}\n"
                             "  patient.name: {type: CN_NAME}\n"
                             "  patient.id_no: {type: CN_RID18}\n"
                             "  patient.mobile: {type: CN_MOBILE}\n";

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static unsigned
rnd(unsigned n)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (unsigned) ((z ^ (z >> 31)) % n);
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

static const char *const NAMES[] = {"张三", "李四", "王小明", "赵敏", "陈静怡", "刘洋"};
static const char *const STREETS[] = {"北京市朝阳区建国路88号", "上海市浦东新区世纪大道100号",
                                      "广州市天河区体育西路1号", "Room 1203, Tower B"};
static const char *const NOTES[] = {
    "复诊时间已确认，请按时到院。",
    "Follow-up scheduled; bring the previous lab report and insurance card.",
    "联系电话13800138000，如有变动请提前告知。",
    "Contact: zhang.san@example.com for the invoice (order 20231105-7781).",
    "无特殊说明",
    "Allergy: penicillin. Dose 2 x 500 mg daily for 7 days.",
};

static const char *const TITLES[] = {
    "体检套餐（基础版）",          "Blood panel, fasting", "核磁共振 MRI 头部平扫",
    "Outpatient consultation fee", "中药饮片 10 g x 7",    "Vaccination: influenza (quadrivalent)"};

/* body_few: an order history of about `size` bytes: one patient header with three fields under
 * rules, then order lines whose strings and numbers are only scanned (a note in one line in
 * eight holds a mobile) */
static void
body_few(dbao_buf *b, size_t size)
{
    dbao_buf_reset(b);
    dbao_buf_printf(b,
                    "{\"patient\":{\"id\":%u,\"name\":\"%s\",\"id_no\":\"11010519491231002X\","
                    "\"mobile\":\"13800138000\"},\"orders\":[",
                    100000 + rnd(900000), NAMES[rnd(6)]);
    for (int i = 0; b->len < size - 220; i++) {
        if (i > 0)
            dbao_buf_putc(b, ',');
        dbao_buf_printf(b,
                        "{\"order_id\":\"SO2023%06u\",\"sku\":%u,\"title\":\"%s\",\"qty\":%u,"
                        "\"price\":%u.%02u,\"paid\":%s,\"created\":\"2023-11-%02uT10:%02u:00Z\","
                        "\"note\":\"%s\"}",
                        rnd(1000000), 10000 + rnd(90000), TITLES[rnd(6)], 1 + rnd(5), rnd(3000),
                        rnd(100), rnd(2) ? "true" : "false", 1 + rnd(28), rnd(60),
                        rnd(8) == 0 ? NOTES[2] : NOTES[rnd(2) ? 0 : 4]);
    }
    dbao_buf_put(b, "]}", 2);
}

/* body: a document of at least `size` bytes, every record with three fields under rules */
static void
body(dbao_buf *b, size_t size)
{
    dbao_buf_reset(b);
    dbao_buf_printf(b, "{\"total\":%u,\"page\":1,\"items\":[", 1000 + rnd(9000));
    for (int i = 0; b->len < size - 300; i++) {
        if (i > 0)
            dbao_buf_putc(b, ',');
        dbao_buf_printf(b,
                        "{\"id\":%u,\"name\":\"%s\",\"id_no\":\"11010519491231002X\","
                        "\"mobile\":\"13800138000\",\"address\":\"%s\",\"visits\":%u,"
                        "\"balance\":%u.%02u,\"active\":%s,\"note\":\"%s\"}",
                        100000 + rnd(900000), NAMES[rnd(6)], STREETS[rnd(4)], rnd(40), rnd(10000),
                        rnd(100), rnd(2) ? "true" : "false", NOTES[rnd(6)]);
    }
    dbao_buf_put(b, "]}", 2);
}

#define NBODIES 64

static double
median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

static void
report(const char *fig, double v, const char *unit)
{
    if (opt_json)
        printf("{\"bench\":\"mask_jsonstream\",\"figure\":\"%s\",\"value\":%.2f,\"unit\":\"%s\"}\n",
               fig, v, unit);
    else
        printf("%-14s %10.2f %s\n", fig, v, unit);
}

/* run: MB/s of one method over the bodies; mode 0 stream whole, 1 stream in pieces, 2 tree */
static double
run(const mask_policy *p, mask_json_stream *s, dbao_buf *bodies, int mode)
{
    double v[64];
    dbao_buf out = {0};
    for (int r = 0; r < opt_runs && r < 64; r++) {
        size_t bytes = 0;
        double t0 = now(), t;
        do {
            for (int i = 0; i < NBODIES; i++) {
                dbao_buf_reset(&out);
                const uint8_t *d = (const uint8_t *) bodies[i].data;
                size_t len = bodies[i].len;
                int rc = 0;
                if (mode == 2) {
                    rc = mask_apply_json(p, NULL, 0, bodies[i].data, len, &out, NULL, NULL);
                } else {
                    mask_json_stream_reset(s, NULL, 0);
                    size_t step = mode == 1 ? 1448 : len;
                    for (size_t pos = 0; rc == 0 && pos < len; pos += step)
                        rc = mask_json_stream_feed(s, d + pos, len - pos < step ? len - pos : step,
                                                   &out, NULL);
                    if (rc == 0)
                        rc = mask_json_stream_finish(s, &out, NULL);
                }
                if (rc != 0) {
                    fprintf(stderr, "masking failed: %d\n", rc);
                    exit(1);
                }
                bytes += len;
            }
            t = now() - t0;
        } while (t < opt_ms / 1000.0);
        v[r] = (double) bytes / t / 1e6;
    }
    dbao_buf_free(&out);
    return median(v, opt_runs < 64 ? opt_runs : 64);
}

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            opt_json = 1;
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            opt_runs = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 5;
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            opt_only = argv[++i];
        else if (strcmp(argv[i], "--ms") == 0 && i + 1 < argc)
            opt_ms = atoi(argv[++i]) > 0 ? atoi(argv[i]) : 400;
        else {
            fprintf(stderr, "usage: %s [--json] [--runs N] [--ms MS] [--only FIGURE]\n", argv[0]);
            return 2;
        }
    }
    mask_policy *p = NULL;
    dbao_err err;
    if (mask_policy_parse(&p, POLICY, strlen(POLICY), "bench.yaml", &err) != 0) {
        fprintf(stderr, "policy: %s\n", err.msg);
        return 1;
    }
    mask_json_stream *s = NULL;
    if (mask_json_stream_new(&s, p, NULL, 0, &err) != 0) {
        fprintf(stderr, "stream: %s\n", err.msg);
        return 1;
    }
    static dbao_buf small[NBODIES], dense[NBODIES], large[NBODIES];
    for (int i = 0; i < NBODIES; i++) {
        body_few(&small[i], 4096);
        body(&dense[i], 4096);
        body(&large[i], 65536);
    }
    /* both give the same output */
    dbao_buf a = {0}, b = {0};
    for (int i = 0; i < NBODIES; i++) {
        dbao_buf_reset(&a);
        dbao_buf_reset(&b);
        mask_json_stream_reset(s, NULL, 0);
        if (mask_apply_json(p, NULL, 0, small[i].data, small[i].len, &a, NULL, &err) != 0 ||
            mask_json_stream_feed(s, (const uint8_t *) small[i].data, small[i].len, &b, &err) !=
                0 ||
            mask_json_stream_finish(s, &b, &err) != 0 || a.len != b.len ||
            memcmp(a.data, b.data, a.len) != 0) {
            fprintf(stderr, "stream and tree differ on body %d\n", i);
            return 1;
        }
    }
    dbao_buf_free(&a);
    dbao_buf_free(&b);

#define WANT(f) (opt_only == NULL || strcmp(opt_only, f) == 0)
    double st = WANT("stream_4k") || WANT("ratio") ? run(p, s, small, 0) : 0;
    double sm = WANT("stream_4k_mss") ? run(p, s, small, 1) : 0;
    double tr = WANT("tree_4k") || WANT("ratio") ? run(p, s, small, 2) : 0;
    double dn = WANT("dense_4k") ? run(p, s, dense, 0) : 0;
    double dt = WANT("dense_tree_4k") ? run(p, s, dense, 2) : 0;
    double sl = WANT("stream_64k") ? run(p, s, large, 0) : 0;
    if (WANT("stream_4k"))
        report("stream_4k", st, "MB/s");
    if (WANT("stream_4k_mss"))
        report("stream_4k_mss", sm, "MB/s");
    if (WANT("tree_4k"))
        report("tree_4k", tr, "MB/s");
    if (WANT("ratio"))
        report("ratio", st / tr, "x");
    if (WANT("dense_4k"))
        report("dense_4k", dn, "MB/s");
    if (WANT("dense_tree_4k"))
        report("dense_tree_4k", dt, "MB/s");
    if (WANT("stream_64k"))
        report("stream_64k", sl, "MB/s");
    for (int i = 0; i < NBODIES; i++) {
        dbao_buf_free(&small[i]);
        dbao_buf_free(&dense[i]);
        dbao_buf_free(&large[i]);
    }
    mask_json_stream_free(s);
    mask_policy_free(p);
    return 0;
}
