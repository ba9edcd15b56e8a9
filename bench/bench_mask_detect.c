/* bench_mask_detect.c: detector throughput on mixed text, against a regex-DLP anchor.
 *
 *   detect     MB/s of mask_detect (MASK_TYPES_DEFAULT) over the whole corpus, one core
 *   detect_all the same with MASK_TYPES_ALL (CN_NAME decodes every CJK character)
 *   pcre2_jit  MB/s of the same types as loose regexes in one PCRE2 JIT pattern (the usual
 *              "regex DLP" scanner: \d{17}[\dXx], 1[3-9]\d{9}, \d{16,19}, an email regex, ...),
 *              scanning match after match over the same corpus
 *   ratio      detect / pcre2_jit
 *
 * The corpus (--mib MiB, default 64) is built deterministically (splitmix64, fixed seed) from
 * Chinese sentences with full-width punctuation, ASCII prose, JSON-ish records, numbers that
 * are not personal data (order numbers, dates, prices, version strings) and about 1% of the
 * segments holding a valid finding (resident IDs, mobiles in several forms, bank cards, emails,
 * IPv4 addresses, plates, USCC, passports), all with check digits computed here. Each figure
 * is the median of --runs runs (default 5). The finding counts of both scanners are printed
 * too: the regexes find more (they have no check digits, dates or boundaries beyond \b-like
 * look-arounds), which is the point of validated detectors.
 * Output: one line per figure; with --json one JSON object per line:
 *   {"bench":"mask","figure":"detect","value":...,"unit":"MB/s"}
 * Run pinned: taskset -c 1 ./bench_mask_detect
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dengbao/mask.h"

static int opt_runs = 5;
static int opt_json = 0;
static size_t opt_mib = 64;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t
rng(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static unsigned
rnd(unsigned n)
{
    return (unsigned) (rng() % n);
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec * 1e-9;
}

/* ---- corpus -------------------------------------------------------------------------------- */

static const char *const zh[] = {
    "患者于昨日下午入院，主诉头痛三天，伴有恶心呕吐，既往体健。",
    "根据《网络安全等级保护基本要求》，应对重要数据进行加密存储和传输。",
    "本季度销售额同比增长百分之十二，其中华东地区贡献最大。",
    "请于本周五前提交项目进度报告，并抄送给部门负责人。",
    "系统将在今晚二十二点至次日凌晨两点进行例行维护，届时服务暂停。",
    "该合同自双方签字盖章之日起生效，有效期为三年。",
    "会议纪要：一、确认需求范围；二、明确交付时间；三、指定联系人。",
    "医生建议继续观察，如症状加重请及时复诊。",
    "我们已收到您的申请，审核结果将通过短信通知您。",
    "数据中心采用双路供电和冗余制冷，确保业务连续性。",
    "用户反馈页面加载缓慢，技术团队正在排查原因。",
    "教育部发布通知，要求各地做好秋季学期开学准备工作。",
};

static const char *const en[] = {
    "The quick brown fox jumps over the lazy dog while the server logs every request. ",
    "Please review the attached report and send your comments by Friday afternoon. ",
    "Latency at the 99th percentile stayed below 20 ms during the whole load test. ",
    "The migration script updates the schema, then rebuilds the indexes in place. ",
    "Our customer support team answers most tickets within two business hours. ",
    "Version 2.4.1 fixes a memory leak in the connection pool and improves logging. ",
    "Error: connection reset by peer (code=104), retrying in 500 ms. ",
    "See section 4.2 of the design document for the threat model and assumptions. ",
};

static size_t
put(char *buf, size_t pos, const char *s)
{
    size_t n = strlen(s);
    memcpy(buf + pos, s, n);
    return pos + n;
}

static void
digits(char *out, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        out[i] = (char) ('0' + rnd(10));
    }
    out[n] = '\0';
}

static void
make_rid18(char out[19])
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char *const regions[] = {"110105", "310101", "440306", "510104",
                                          "330106", "420102", "610113", "810000"};
    snprintf(out, 19, "%s%04u%02u%02u%03u", regions[rnd(8)], 1950 + rnd(60), 1 + rnd(12),
             1 + rnd(28), rnd(1000));
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        sum += (out[i] - '0') * w[i];
    }
    out[17] = "10X98765432"[sum % 11];
    out[18] = '\0';
}

static void
make_card(char *out, unsigned n)
{
    out[0] = '6';
    out[1] = '2';
    for (unsigned i = 2; i < n - 1; i++) {
        out[i] = (char) ('0' + rnd(10));
    }
    int sum = 0;
    for (unsigned i = 0; i < n - 1; i++) {
        int v = out[n - 2 - i] - '0';
        if ((i & 1) == 0) {
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        }
        sum += v;
    }
    out[n - 1] = (char) ('0' + (10 - sum % 10) % 10);
    out[n] = '\0';
}

static void
make_uscc(char out[19])
{
    static const char chars[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    static const int wo[8] = {3, 7, 9, 10, 5, 8, 4, 2};
    static const int w[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
    memcpy(out, "91110108", 8);
    int so = 0;
    for (int i = 0; i < 8; i++) {
        int v = (int) rnd(10);
        out[8 + i] = (char) ('0' + v);
        so += v * wo[i];
    }
    int co = 11 - so % 11;
    out[16] = co == 10 ? 'X' : co == 11 ? '0' : (char) ('0' + co);
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        sum += (int) (strchr(chars, out[i]) - chars) * w[i];
    }
    out[17] = chars[(31 - sum % 31) % 31];
    out[18] = '\0';
}

static size_t
put_finding(char *buf, size_t pos)
{
    char v[64], g[160];
    static const char *const plates[] = {"京A12345", "沪AD12345", "粤B·C1234", "苏E12345D"};
    switch (rnd(9)) {
    case 0:
        make_rid18(v);
        pos = put(buf, pos, "身份证号：");
        pos = put(buf, pos, v);
        return put(buf, pos, "。");
    case 1:
        digits(v, 8);
        snprintf(g, sizeof(g), "手机 13%u%s，", rnd(10), v);
        return put(buf, pos, g);
    case 2:
        digits(v, 8);
        snprintf(g, sizeof(g), "tel +86 139 %.4s %.4s; ", v, v + 4);
        return put(buf, pos, g);
    case 3:
        make_card(v, 16 + rnd(4));
        pos = put(buf, pos, "card=");
        pos = put(buf, pos, v);
        return put(buf, pos, "; ");
    case 4:
        snprintf(g, sizeof(g), "{\"email\":\"user%u.test@example%u.com.cn\"}", rnd(100000),
                 rnd(100));
        return put(buf, pos, g);
    case 5:
        snprintf(g, sizeof(g), "client %u.%u.%u.%u ", rnd(256), rnd(256), rnd(256), rnd(256));
        return put(buf, pos, g);
    case 6:
        pos = put(buf, pos, "车牌");
        pos = put(buf, pos, plates[rnd(4)]);
        return put(buf, pos, "，");
    case 7:
        make_uscc(v);
        pos = put(buf, pos, "统一社会信用代码");
        pos = put(buf, pos, v);
        return put(buf, pos, "。");
    default:
        digits(v, 8);
        snprintf(g, sizeof(g), " passport E%s ", v);
        return put(buf, pos, g);
    }
}

static size_t
put_noise_number(char *buf, size_t pos)
{
    char v[32], g[160];
    switch (rnd(5)) {
    case 0:
        digits(v, 20);
        snprintf(g, sizeof(g), "订单号%s，", v);
        break;
    case 1:
        snprintf(g, sizeof(g), "日期 %04u-%02u-%02u ", 2000 + rnd(25), 1 + rnd(12), 1 + rnd(28));
        break;
    case 2:
        snprintf(g, sizeof(g), "price=%u.%02u; ", rnd(100000), rnd(100));
        break;
    case 3:
        digits(v, 12);
        snprintf(g, sizeof(g), "{\"seq\":%s,\"ok\":true} ", v);
        break;
    default:
        snprintf(g, sizeof(g), "build %u.%u.%u.%u.%u ", rnd(10), rnd(10), rnd(100), rnd(1000),
                 rnd(10));
        break;
    }
    return put(buf, pos, g);
}

static char *
make_corpus(size_t size, size_t *planted)
{
    char *buf = malloc(size + 256);
    if (buf == NULL) {
        abort();
    }
    size_t pos = 0;
    *planted = 0;
    while (pos < size) {
        unsigned r = rnd(1000);
        if (r < 470) {
            pos = put(buf, pos, zh[rnd(sizeof(zh) / sizeof(zh[0]))]);
        } else if (r < 870) {
            pos = put(buf, pos, en[rnd(sizeof(en) / sizeof(en[0]))]);
        } else if (r < 985) {
            pos = put_noise_number(buf, pos);
        } else {
            pos = put_finding(buf, pos);
            (*planted)++;
        }
        if (rnd(8) == 0) {
            buf[pos++] = '\n';
        }
    }
    return buf;
}

/* ---- measuring ----------------------------------------------------------------------------- */

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

static void
report(const char *figure, double value, const char *unit)
{
    if (opt_json) {
        printf("{\"bench\":\"mask\",\"figure\":\"%s\",\"value\":%.1f,\"unit\":\"%s\"}\n", figure,
               value, unit);
    } else {
        printf("%-12s %10.1f %s\n", figure, value, unit);
    }
    fflush(stdout);
}

/* The anchor: loose regexes of the same types, one alternation, JIT-compiled. */
static const char anchor_re[] =
    "(?<![0-9A-Za-z])(?:"
    "[1-9]\\d{5}(?:19|20)\\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\\d|3[01])\\d{3}[\\dXx]" /* RID18 */
    "|[1-9]\\d{7}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\\d|3[01])\\d{3}"                      /* RID15 */
    "|(?:\\+86[ -]?|0086[ -]?|86-)?1[3-9]\\d(?:\\d{8}|([ -])\\d{4}\\1\\d{4})"          /* mobile */
    "|\\d{4}([ -])\\d{4}\\2\\d{4}\\2\\d{4}(?:\\2\\d{3})?|\\d{15,19}"                   /* card */
    "|[0-9A-HJ-NP-RTUW-Y]{2}\\d{6}[0-9A-HJ-NP-RTUW-Y]{10}"                             /* USCC */
    "|[EG]\\d{8}|E[A-HJ-NP-Z]\\d{7}|[DSP]\\d{7}|[CW]\\d{8}|C[A-HJ-NP-Z]\\d{7}|[HM]\\d{8}(?:\\d{2})?"
    "|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}" /* email */
    "|(?:(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)\\.){3}(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)"
    "|[京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼][A-HJ-NP-Z]·?"
    "[A-HJ-NP-Z0-9]{4,5}[A-HJ-NP-Z0-9学警港澳挂领]"
    ")(?![0-9A-Za-z])";

int
main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            opt_json = 1;
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            opt_runs = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc) {
            opt_mib = (size_t) atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--runs N] [--mib N] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (opt_runs < 1 || opt_runs > 100 || opt_mib < 1 || opt_mib > 1024) {
        fprintf(stderr, "bad --runs or --mib\n");
        return 2;
    }
    size_t size = opt_mib << 20, planted;
    char *text = make_corpus(size, &planted);

    mask_detector *d = NULL;
    dbao_err err;
    mask_detect_opts o = {0, NULL, 20240615};
    if (mask_detector_new(&d, &o, &err) != 0) {
        fprintf(stderr, "mask_detector_new: %s\n", err.msg);
        return 1;
    }
    size_t cap = 1u << 22;
    mask_finding *f = malloc(cap * sizeof(*f));
    double t[100];
    size_t n_detect = 0;
    for (int r = 0; r < opt_runs; r++) {
        double t0 = now();
        n_detect = mask_detect(d, text, size, f, cap);
        t[r] = now() - t0;
    }
    qsort(t, (size_t) opt_runs, sizeof(double), cmp_double);
    double mbs = (double) size / t[opt_runs / 2] / 1e6;

    /* every type, CN_NAME included (only run when asked: tagged columns and fields) */
    mask_detector *da = NULL;
    mask_detect_opts oa = {MASK_TYPES_ALL, NULL, 20240615};
    if (mask_detector_new(&da, &oa, &err) != 0) {
        fprintf(stderr, "mask_detector_new: %s\n", err.msg);
        return 1;
    }
    size_t n_all = 0;
    for (int r = 0; r < opt_runs; r++) {
        double t0 = now();
        n_all = mask_detect(da, text, size, f, cap);
        t[r] = now() - t0;
    }
    qsort(t, (size_t) opt_runs, sizeof(double), cmp_double);
    double mbs_all = (double) size / t[opt_runs / 2] / 1e6;
    mask_detector_free(da);

    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR) anchor_re, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        fprintf(stderr, "pcre2_compile at %zu: %s\n", (size_t) eo, (const char *) msg);
        return 1;
    }
    if (pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) != 0) {
        fprintf(stderr, "pcre2_jit_compile failed\n");
        return 1;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    pcre2_jit_stack *js = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    pcre2_jit_stack_assign(mc, NULL, js);
    double tp[100];
    size_t n_re = 0;
    for (int r = 0; r < opt_runs; r++) {
        double t0 = now();
        PCRE2_SIZE off = 0;
        n_re = 0;
        for (;;) {
            int rc = pcre2_jit_match(re, (PCRE2_SPTR) text, size, off, PCRE2_NO_UTF_CHECK, md, mc);
            if (rc < 0) {
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            n_re++;
            off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        }
        tp[r] = now() - t0;
    }
    qsort(tp, (size_t) opt_runs, sizeof(double), cmp_double);
    double mbs_re = (double) size / tp[opt_runs / 2] / 1e6;

    if (!opt_json) {
        printf("corpus %zu MiB, %zu planted findings, detect found %zu (all types incl. "
               "CN_NAME: %zu), pcre2 found %zu, median of %d runs\n",
               opt_mib, planted, n_detect, n_all, n_re, opt_runs);
    }
    report("detect", mbs, "MB/s");
    report("detect_all", mbs_all, "MB/s");
    report("pcre2_jit", mbs_re, "MB/s");
    report("ratio", mbs / mbs_re, "x");

    pcre2_jit_stack_free(js);
    pcre2_match_context_free(mc);
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    mask_detector_free(d);
    free(f);
    free(text);
    return 0;
}
