/* demo.c: the gateway's built-in demo upstream (`make run`, `dengbao gateway --demo`).
 *
 * What it serves, on its own net_server (buffered mode, one worker):
 *   GET  /patients        200, a JSON array of DEMO_RECORDS (50) patient records
 *   GET  /patients/<id>   200, one record ("P0007", or "7" for short);
 *                         404 {"error":"no such patient"} if absent
 *   GET  /healthz         200 "ok\n"
 *   POST /echo            200, JSON: method, path, query, body (a string when it is UTF-8,
 *                         else null), body_length, and the request headers x-forwarded-for,
 *                         x-forwarded-proto, x-real-ip, traceparent, host (null when absent)
 *   anything else         404 {"error":"not found"}; a known path with another method: 405
 * HEAD is accepted wherever GET is (the server sends no body).
 *
 * The records are FICTITIOUS. They are generated in code, deterministically (splitmix64 from
 * a fixed seed), so that the gateway's next stage (field masking, issue 6) has personal data
 * of the right shapes to mask without any real person's data in the repository:
 *   id            "P0001".."P0050"
 *   name          Chinese surname + given name from short lists
 *   gender        "男" / "女", agreeing with the ID number's 17th digit (odd: male)
 *   birth_date    "YYYY-MM-DD", agreeing with the ID number
 *   id_number     18 characters, GB 11643-1999: 6-digit region code, YYYYMMDD, 3-digit
 *                 sequence, check character from ISO 7064 MOD 11-2 ("0".."9" or "X")
 *   mobile        11 digits, 1[3-9] followed by 9 digits
 *   bank_card     19 digits starting "62" (UnionPay-style), last digit a valid Luhn digit
 *   diagnosis     from a short list (Chinese)
 *   hospital      "示例市…" ("example city"): no such hospital exists
 *   fictitious    true
 *
 * Written by hand: the generator and the routing of four paths (a web framework would be far
 * more than the job needs). jansson builds and escapes the JSON. The JSON texts are built once
 * per process (pthread_once) and never change, so the handler only copies them out; they stay
 * reachable from static storage until exit (not a leak).
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dengbao/gateway.h"
#include "dengbao/net.h"

#define DEMO_RECORDS  50
#define DEMO_BODY_MAX (1024 * 1024)

static const char *const surnames[] = {"王", "李", "张", "刘", "陈", "杨", "黄", "赵",
                                       "吴", "周", "徐", "孙", "马", "朱", "胡", "郭"};
static const char *const given[] = {"伟", "芳",   "娜",   "秀英", "敏",   "静",   "丽",
                                    "强", "磊",   "军",   "洋",   "勇",   "艳",   "杰",
                                    "娟", "涛",   "明",   "超",   "秀兰", "霞",   "平",
                                    "刚", "桂英", "建华", "晓东", "雨婷", "子涵", "浩然"};
static const char *const diagnoses[] = {"原发性高血压",
                                        "2型糖尿病",
                                        "社区获得性肺炎",
                                        "慢性胃炎",
                                        "冠状动脉粥样硬化性心脏病",
                                        "支气管哮喘",
                                        "急性上呼吸道感染",
                                        "腰椎间盘突出症",
                                        "甲状腺功能减退症",
                                        "缺铁性贫血",
                                        "慢性肾脏病3期",
                                        "偏头痛"};
static const char *const hospitals[] = {"示例市第一人民医院", "示例市中医医院", "示例大学附属医院",
                                        "示例市妇幼保健院", "示例市第二人民医院"};
/* 6-digit administrative region codes (real codes: the shape must be right for masking and
 * validation; the people are not) */
static const char *const regions[] = {"110101", "310104", "440305", "330106",
                                      "510107", "420106", "320102", "610113"};

typedef struct demo_data {
    char *all; /* the JSON array */
    size_t all_len;
    char id[DEMO_RECORDS][8];
    char *rec[DEMO_RECORDS]; /* one JSON object each */
    size_t rec_len[DEMO_RECORDS];
    int rc;
} demo_data;

static demo_data g_demo;
static pthread_once_t g_demo_once = PTHREAD_ONCE_INIT;

static uint64_t
splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static unsigned
pick(uint64_t *s, unsigned n)
{
    return (unsigned) (splitmix64(s) % n);
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* id_check_char: GB 11643-1999 check character of the first 17 digits */
static char
id_check_char(const char *d17)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        sum += (d17[i] - '0') * w[i];
    }
    return "10X98765432"[sum % 11];
}

/* luhn_digit: the digit that makes `digits` followed by it pass the Luhn check */
static char
luhn_digit(const char *digits, size_t n)
{
    int sum = 0;
    /* the check digit will be at position 0 from the right; digits[n-1] is at position 1 */
    for (size_t i = 0; i < n; i++) {
        int d = digits[n - 1 - i] - '0';
        if (i % 2 == 0) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }
        sum += d;
    }
    return (char) ('0' + (10 - sum % 10) % 10);
}

static json_t *
make_record(unsigned i, uint64_t *s, char id_out[8])
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    char name[32], idn[48], birth[48], mobile[48], card[48];
    unsigned year = 1940 + pick(s, 66), month = 1 + pick(s, 12);
    unsigned day = 1 + pick(s, (unsigned) mdays[month - 1]);
    unsigned seq = pick(s, 1000);
    bool male = seq % 2 == 1;

    snprintf(id_out, 8, "P%04u", (i + 1) % 10000);
    snprintf(name, sizeof name, "%s%s", surnames[pick(s, NELEM(surnames))],
             given[pick(s, NELEM(given))]);
    snprintf(birth, sizeof birth, "%04u-%02u-%02u", year, month, day);
    snprintf(idn, sizeof idn, "%s%04u%02u%02u%03u", regions[pick(s, NELEM(regions))], year, month,
             day, seq);
    idn[17] = id_check_char(idn);
    idn[18] = '\0';
    snprintf(mobile, sizeof mobile, "1%u%09llu", 3 + pick(s, 7),
             (unsigned long long) (splitmix64(s) % 1000000000ULL));
    snprintf(card, sizeof card, "62%016llu",
             (unsigned long long) (splitmix64(s) % 10000000000000000ULL));
    card[18] = luhn_digit(card, 18);
    card[19] = '\0';

    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "id", id_out, "name",
                     name, "gender", male ? "男" : "女", "birth_date", birth, "id_number", idn,
                     "mobile", mobile, "bank_card", card, "diagnosis",
                     diagnoses[pick(s, NELEM(diagnoses))], "hospital",
                     hospitals[pick(s, NELEM(hospitals))], "fictitious", 1);
}

static void
demo_build(void)
{
    uint64_t seed = 0x64656e6762616fULL; /* "dengbao" */
    json_t *arr = json_array();

    g_demo.rc = DBAO_ENOMEM;
    if (arr == NULL) {
        return;
    }
    for (unsigned i = 0; i < DEMO_RECORDS; i++) {
        json_t *r = make_record(i, &seed, g_demo.id[i]);
        if (r == NULL) {
            json_decref(arr);
            return;
        }
        g_demo.rec[i] = json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (g_demo.rec[i] == NULL || json_array_append_new(arr, r) != 0) {
            json_decref(arr);
            return;
        }
        g_demo.rec_len[i] = strlen(g_demo.rec[i]);
    }
    g_demo.all = json_dumps(arr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(arr);
    if (g_demo.all == NULL) {
        return;
    }
    g_demo.all_len = strlen(g_demo.all);
    g_demo.rc = 0;
}

static void
respond_json_error(net_request *req, int status, const char *msg)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
    net_request_respond(req, status, "application/json", body, (size_t) n);
}

static void
respond_405(net_request *req, const char *allow)
{
    net_request_add_header(req, "Allow", allow);
    respond_json_error(req, 405, "method not allowed");
}

static json_t *
header_or_null(const net_request *req, const char *name)
{
    const char *v = net_request_header(req, name);
    json_t *j = v != NULL ? json_string(v) : NULL;
    return j != NULL ? j : json_null();
}

static void
handle_echo(net_request *req)
{
    static const char *const names[] = {"x-forwarded-for", "x-forwarded-proto", "x-real-ip",
                                        "traceparent", "host"};
    size_t len;
    const uint8_t *body = net_request_body(req, &len);
    json_t *o = json_object(), *h = json_object();
    json_t *b = json_stringn((const char *) body, len); /* NULL when not UTF-8 */
    char *text = NULL;

    if (o != NULL && h != NULL) {
        for (size_t i = 0; i < NELEM(names); i++) {
            json_object_set_new(h, names[i], header_or_null(req, names[i]));
        }
        json_object_set_new(o, "method", json_string(net_request_method(req)));
        json_object_set_new(o, "path", json_string(net_request_path(req)));
        json_object_set_new(o, "query", json_string(net_request_query(req)));
        json_object_set_new(o, "body_length", json_integer((json_int_t) len));
        json_object_set_new(o, "body", b != NULL ? b : json_null());
        b = NULL;
        json_object_set(o, "headers", h);
        text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    json_decref(b);
    json_decref(h);
    json_decref(o);
    if (text == NULL) {
        respond_json_error(req, 500, "out of memory");
        return;
    }
    net_request_respond(req, 200, "application/json", text, strlen(text));
    free(text);
}

static void
demo_handler(net_request *req, void *arg)
{
    (void) arg;
    const char *m = net_request_method(req);
    const char *path = net_request_path(req);
    bool get = strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;

    if (strcmp(path, "/healthz") == 0) {
        if (!get) {
            respond_405(req, "GET, HEAD");
            return;
        }
        net_request_respond(req, 200, "text/plain", "ok\n", 3);
    } else if (strcmp(path, "/echo") == 0) {
        if (strcmp(m, "POST") != 0) {
            respond_405(req, "POST");
            return;
        }
        handle_echo(req);
    } else if (strcmp(path, "/patients") == 0 || strcmp(path, "/patients/") == 0) {
        if (!get) {
            respond_405(req, "GET, HEAD");
            return;
        }
        net_request_respond(req, 200, "application/json", g_demo.all, g_demo.all_len);
    } else if (strncmp(path, "/patients/", 10) == 0) {
        if (!get) {
            respond_405(req, "GET, HEAD");
            return;
        }
        const char *id = path + 10;
        char *end;
        unsigned long num = strtoul(id, &end, 10); /* "7" is an alias of "P0007" */
        bool numeric = id[0] >= '1' && id[0] <= '9' && *end == '\0';
        for (size_t i = 0; i < DEMO_RECORDS; i++) {
            if (strcmp(id, g_demo.id[i]) == 0 || (numeric && num == i + 1)) {
                net_request_respond(req, 200, "application/json", g_demo.rec[i], g_demo.rec_len[i]);
                return;
            }
        }
        respond_json_error(req, 404, "no such patient");
    } else {
        respond_json_error(req, 404, "not found");
    }
}

int
gw_demo_start(net_server **out, const char *host, uint16_t port, dbao_err *err)
{
    net_server *srv = NULL;
    net_server_opts o;
    int rc;

    if (out == NULL) {
        return dbao_err_set(err, DBAO_EINVAL, "gw_demo_start: out is NULL");
    }
    *out = NULL;
    pthread_once(&g_demo_once, demo_build);
    if (g_demo.rc != 0) {
        return dbao_err_set(err, g_demo.rc, "cannot build the demo records");
    }
    memset(&o, 0, sizeof o);
    o.host = host;
    o.port = port;
    o.workers = 1;
    o.handler = demo_handler;
    o.body_max = DEMO_BODY_MAX;
    rc = net_server_new(&srv, &o, err);
    if (rc != 0) {
        return rc;
    }
    rc = net_server_start(srv, err);
    if (rc != 0) {
        net_server_free(srv);
        return rc;
    }
    *out = srv;
    return 0;
}
