/* test_detect.c: unit tests for the detectors of mask.h (section "detection").
 *
 * Every valid value is built here by computing its check character (GB 11643, Luhn, GB 32100
 * and GB 11714) from made-up digits, never copied from a real person or company. Each type has
 * positives (bare, grouped, prefixed, inside Chinese text with full-width punctuation, inside
 * JSON strings) and the negatives that matter: a wrong check character, an impossible or future
 * date, a value inside a longer digit run or glued to letters, lowercase letters where only
 * uppercase is allowed, and so on. expect_one() asserts that the text holds exactly one finding
 * and that its type and bytes are the expected ones; expect_none() that it holds none.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/mask.h"

#define TODAY 20240615

/* ---- value builders ------------------------------------------------------------------------ */

/* rid18: 17 digits + the GB 11643 check character into out[19]. */
static void
rid18(char out[19], const char *first17)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    assert_int_equal(strlen(first17), 17);
    for (int i = 0; i < 17; i++) {
        sum += (first17[i] - '0') * w[i];
    }
    memcpy(out, first17, 17);
    out[17] = "10X98765432"[sum % 11];
    out[18] = '\0';
}

/* rid18_bad: the same with a wrong check character. */
static void
rid18_bad(char out[19], const char *first17)
{
    rid18(out, first17);
    out[17] = out[17] == '0' ? '1' : '0';
}

/* luhn: digits (NUL-terminated, without the check digit) + the Luhn check digit. */
static void
luhn(char *out, const char *body)
{
    size_t n = strlen(body);
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int v = body[n - 1 - i] - '0';
        if ((i & 1) == 0) {
            v *= 2;
            if (v > 9) {
                v -= 9;
            }
        }
        sum += v;
    }
    memcpy(out, body, n);
    out[n] = (char) ('0' + (10 - sum % 10) % 10);
    out[n + 1] = '\0';
}

static int
uscc_v(char c)
{
    const char *chars = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    const char *p = strchr(chars, c);
    assert_non_null(p);
    return (int) (p - chars);
}

/* uscc: head8 (department, category, 6 region digits) + org8 (organisation code body) + the
 * GB 11714 check + the GB 32100 check. org_ok false makes the organisation check wrong while
 * keeping the outer check right. */
static void
uscc(char out[19], const char *head8, const char *org8, bool org_ok)
{
    static const int wo[8] = {3, 7, 9, 10, 5, 8, 4, 2};
    static const int w[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};
    memcpy(out, head8, 8);
    memcpy(out + 8, org8, 8);
    int so = 0;
    for (int i = 0; i < 8; i++) {
        char c = org8[i];
        so += (c >= '0' && c <= '9' ? c - '0' : c - 'A' + 10) * wo[i];
    }
    int co = 11 - so % 11;
    char oc = co == 10 ? 'X' : co == 11 ? '0' : (char) ('0' + co);
    if (!org_ok) {
        oc = oc == '1' ? '2' : '1';
    }
    out[16] = oc;
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        sum += uscc_v(out[i]) * w[i];
    }
    out[17] = "0123456789ABCDEFGHJKLMNPQRTUWXY"[(31 - sum % 31) % 31];
    out[18] = '\0';
}

/* ---- helpers ------------------------------------------------------------------------------- */

static mask_detector *
det(uint32_t types, const char *prefixes)
{
    mask_detect_opts o = {types, prefixes, TODAY};
    mask_detector *d = NULL;
    dbao_err err;
    assert_int_equal(mask_detector_new(&d, &o, &err), 0);
    return d;
}

static void
expect_one_(const mask_detector *d, const char *text, mask_type type, const char *value, int line)
{
    mask_finding f[8];
    size_t n = mask_detect(d, text, strlen(text), f, 8);
    if (n != 1 || f[0].type != type || f[0].end - f[0].start != strlen(value) ||
        memcmp(text + f[0].start, value, strlen(value)) != 0) {
        fprintf(stderr, "line %d: text [%s]: %zu findings", line, text, n);
        for (size_t i = 0; i < n && i < 8; i++) {
            fprintf(stderr, " %s[%.*s]", mask_type_name(f[i].type), (int) (f[i].end - f[i].start),
                    text + f[i].start);
        }
        fprintf(stderr, "; wanted %s[%s]\n", mask_type_name(type), value);
        fail();
    }
    assert_true(mask_validate(d, type, value, strlen(value)));
}
#define expect_one(d, text, type, value) expect_one_(d, text, type, value, __LINE__)

static void
expect_none_(const mask_detector *d, const char *text, int line)
{
    mask_finding f[8];
    size_t n = mask_detect(d, text, strlen(text), f, 8);
    if (n != 0) {
        fprintf(stderr, "line %d: text [%s]: unexpected %s[%.*s]\n", line, text,
                mask_type_name(f[0].type), (int) (f[0].end - f[0].start), text + f[0].start);
        fail();
    }
}
#define expect_none(d, text) expect_none_(d, text, __LINE__)

/* wrap: "<pre><value><post>" into buf. */
static const char *
wrap(char *buf, size_t cap, const char *pre, const char *v, const char *post)
{
    snprintf(buf, cap, "%s%s%s", pre, v, post);
    return buf;
}

/* ---- names --------------------------------------------------------------------------------- */

static void
test_type_names(void **state)
{
    (void) state;
    for (int t = 0; t < MASK_T_COUNT; t++) {
        const char *n = mask_type_name((mask_type) t);
        assert_non_null(n);
        mask_type back;
        assert_int_equal(mask_type_parse(n, strlen(n), &back), 0);
        assert_int_equal(back, t);
    }
    assert_string_equal(mask_type_name(MASK_T_NONE), "NONE");
    assert_string_equal(mask_type_name(MASK_T_CN_RID18), "CN_RID18");
    assert_string_equal(mask_type_name(MASK_T_HKMO_PERMIT), "HKMO_PERMIT");
    assert_null(mask_type_name(MASK_T_COUNT));
    mask_type t;
    assert_int_equal(mask_type_parse("cn_rid18", 8, &t), DBAO_EFORMAT);
    assert_int_equal(mask_type_parse("CN_RID1", 7, &t), DBAO_EFORMAT);
    assert_int_equal(mask_type_parse("EMAILX", 5, &t), 0); /* length-bounded */
    assert_int_equal(t, MASK_T_EMAIL);

    uint32_t set = 0;
    dbao_err err;
    assert_int_equal(mask_types_parse("CN_RID18,EMAIL, IPV4 ", &set, &err), 0);
    assert_int_equal(set, MASK_TYPE_BIT(MASK_T_CN_RID18) | MASK_TYPE_BIT(MASK_T_EMAIL) |
                              MASK_TYPE_BIT(MASK_T_IPV4));
    assert_int_equal(mask_types_parse("CN_RID18,PHONE", &set, &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "PHONE"));
    assert_int_equal(mask_types_parse("", &set, &err), DBAO_EFORMAT);
    assert_int_equal(mask_types_parse("EMAIL,,IPV4", &set, &err), DBAO_EFORMAT);
    assert_int_equal(mask_types_parse("NONE", &set, &err), DBAO_EFORMAT);
}

static void
test_detector_opts(void **state)
{
    (void) state;
    mask_detector *d = NULL;
    dbao_err err;
    assert_int_equal(mask_detector_new(&d, NULL, &err), 0);
    mask_detector_free(d);
    mask_detect_opts o = {1u << 20, NULL, 0};
    assert_int_equal(mask_detector_new(&d, &o, &err), DBAO_EINVAL);
    assert_null(d);
    mask_detect_opts o2 = {0, "130,2x1", 0};
    assert_int_equal(mask_detector_new(&d, &o2, &err), DBAO_EINVAL);
    mask_detect_opts o3 = {0, "", 0};
    assert_int_equal(mask_detector_new(&d, &o3, &err), DBAO_EINVAL);
    mask_detect_opts o4 = {0, NULL, 20230229};
    assert_int_equal(mask_detector_new(&d, &o4, &err), DBAO_EINVAL);
    mask_detect_opts o5 = {0, "138, 199", 20240229};
    assert_int_equal(mask_detector_new(&d, &o5, &err), 0);
    mask_detector_free(d);
    mask_detector_free(NULL);
}

/* ---- resident IDs -------------------------------------------------------------------------- */

static void
test_rid18(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char v[19], b[256];

    rid18(v, "11010519900307123");
    expect_one(d, v, MASK_T_CN_RID18, v);
    expect_one(d, wrap(b, sizeof(b), "身份证号：", v, "。"), MASK_T_CN_RID18, v);
    expect_one(d, wrap(b, sizeof(b), "患者", v, "，女"), MASK_T_CN_RID18, v);
    expect_one(d, wrap(b, sizeof(b), "{\"id_no\":\"", v, "\"}"), MASK_T_CN_RID18, v);
    expect_one(d, wrap(b, sizeof(b), "id=", v, "&x=1"), MASK_T_CN_RID18, v);
    /* glued to letters or inside a longer digit run */
    expect_none(d, wrap(b, sizeof(b), "A", v, ""));
    expect_none(d, wrap(b, sizeof(b), "", v, "b"));
    expect_none(d, wrap(b, sizeof(b), "12", v, ""));
    expect_none(d, wrap(b, sizeof(b), "", v, "9"));
    /* wrong check character */
    rid18_bad(v, "11010519900307123");
    expect_none(d, v);

    /* X and lowercase x: find a sequence whose check character is X */
    char seq[32];
    bool found = false;
    for (int s = 100; s < 1000 && !found; s++) {
        snprintf(seq, sizeof(seq), "44030619851231%03d", s);
        rid18(v, seq);
        found = v[17] == 'X';
    }
    assert_true(found);
    expect_one(d, wrap(b, sizeof(b), "证件 ", v, " 有效"), MASK_T_CN_RID18, v);
    v[17] = 'x';
    expect_one(d, wrap(b, sizeof(b), "证件：", v, "；"), MASK_T_CN_RID18, v);

    /* dates: 19000229 is not a date, 20000229 is; 18991231 too early; after TODAY */
    rid18(v, "31010119000229123");
    expect_none(d, v);
    rid18(v, "31010120000229123");
    expect_one(d, v, MASK_T_CN_RID18, v);
    rid18(v, "31010118991231123");
    expect_none(d, v);
    rid18(v, "31010120240615123");
    expect_one(d, v, MASK_T_CN_RID18, v);
    rid18(v, "31010120240616123");
    expect_none(d, v);
    rid18(v, "31010119901301123");
    expect_none(d, v);
    rid18(v, "31010119900431123");
    expect_none(d, v);
    rid18(v, "31010119900400123");
    expect_none(d, v);

    /* regions */
    rid18(v, "19010119900101123"); /* province 19 */
    expect_none(d, v);
    rid18(v, "11000019900101123"); /* city 00 */
    expect_none(d, v);
    rid18(v, "11800019900101123"); /* city 80 */
    expect_none(d, v);
    rid18(v, "42900419900101123"); /* 省直辖县级 (city 90) */
    expect_one(d, v, MASK_T_CN_RID18, v);
    rid18(v, "81000019900101123"); /* HK residence permit */
    expect_one(d, v, MASK_T_CN_RID18, v);
    rid18(v, "83000019900101123");
    expect_one(d, v, MASK_T_CN_RID18, v);
    rid18(v, "81010019900101123");
    expect_none(d, v);

    /* future birth date with the real today */
    mask_detector *dn = NULL;
    assert_int_equal(mask_detector_new(&dn, NULL, NULL), 0);
    rid18(v, "31010120990101123");
    expect_none(dn, v);
    rid18(v, "31010119900101123");
    expect_one(dn, v, MASK_T_CN_RID18, v);
    mask_detector_free(dn);
    mask_detector_free(d);
}

static void
test_rid15(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char b[128];
    expect_one(d, "旧证号110105700307123。", MASK_T_CN_RID15, "110105700307123");
    expect_none(d, "110105700230123"); /* 1970-02-30 */
    expect_none(d, "110105000229123"); /* 1900-02-29 */
    expect_one(d, "110105960229123", MASK_T_CN_RID15, "110105960229123");
    expect_none(d, "190105700307123");  /* province 19 */
    expect_none(d, "1110105700307123"); /* 16 digits (and no card issuer 11) */
    expect_none(d, wrap(b, sizeof(b), "X", "110105700307123", ""));
    mask_detector_free(d);
}

/* ---- mobiles ------------------------------------------------------------------------------- */

static void
test_mobile(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    expect_one(d, "13800138000", MASK_T_CN_MOBILE, "13800138000");
    expect_one(d, "电话：13800138000，", MASK_T_CN_MOBILE, "13800138000");
    expect_one(d, "call 138 0013 8000 now", MASK_T_CN_MOBILE, "138 0013 8000");
    expect_one(d, "call 138-0013-8000.", MASK_T_CN_MOBILE, "138-0013-8000");
    expect_one(d, "tel:+8613800138000", MASK_T_CN_MOBILE, "+8613800138000");
    expect_one(d, "tel +86 138 0013 8000", MASK_T_CN_MOBILE, "+86 138 0013 8000");
    expect_one(d, "tel +86-13800138000", MASK_T_CN_MOBILE, "+86-13800138000");
    expect_one(d, "tel 0086 13800138000", MASK_T_CN_MOBILE, "0086 13800138000");
    expect_one(d, "tel 008613800138000", MASK_T_CN_MOBILE, "008613800138000");
    expect_one(d, "tel 86-13800138000", MASK_T_CN_MOBILE, "86-13800138000");
    expect_one(d, "{\"phone\":\"19912345678\"}", MASK_T_CN_MOBILE, "19912345678");
    expect_one(d, "14712345678", MASK_T_CN_MOBILE, "14712345678");
    expect_one(d, "16212345678", MASK_T_CN_MOBILE, "16212345678");
    /* segments that are not allocated */
    expect_none(d, "14012345678");
    expect_none(d, "15412345678");
    expect_none(d, "16012345678");
    expect_none(d, "17912345678");
    expect_none(d, "12012345678");
    /* mixed or doubled separators, wrong grouping, glued, longer runs */
    expect_none(d, "138 0013-8000");
    expect_none(d, "138  0013 8000");
    expect_none(d, "1380 013 8000");
    expect_none(d, "138 0013 8000 1234");
    expect_none(d, "9 138 0013 8000");
    expect_none(d, "a13800138000");
    expect_none(d, "13800138000b");
    expect_none(d, "138001380001");
    expect_none(d, "213800138000");
    expect_none(d, "x+8613800138000");
    mask_detector_free(d);

    /* custom segments, single and ranges */
    d = det(MASK_TYPE_BIT(MASK_T_CN_MOBILE), "140, 138");
    expect_one(d, "14012345678", MASK_T_CN_MOBILE, "14012345678");
    expect_none(d, "13912345678");
    mask_detector_free(d);
    d = det(MASK_TYPE_BIT(MASK_T_CN_MOBILE), "141-142,100");
    expect_one(d, "14212345678", MASK_T_CN_MOBILE, "14212345678");
    expect_one(d, "10012345678", MASK_T_CN_MOBILE, "10012345678");
    expect_none(d, "14312345678");
    mask_detector_free(d);
}

/* ---- bank cards ---------------------------------------------------------------------------- */

static void
test_bank_card(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char v[24], g[40], b[128];

    luhn(v, "622202123456789"); /* UnionPay 16 */
    expect_one(d, wrap(b, sizeof(b), "卡号：", v, "。"), MASK_T_BANK_CARD, v);
    snprintf(g, sizeof(g), "%.4s %.4s %.4s %.4s", v, v + 4, v + 8, v + 12);
    expect_one(d, wrap(b, sizeof(b), "card ", g, ", thanks"), MASK_T_BANK_CARD, g);
    snprintf(g, sizeof(g), "%.4s-%.4s-%.4s-%.4s", v, v + 4, v + 8, v + 12);
    expect_one(d, g, MASK_T_BANK_CARD, g);
    snprintf(g, sizeof(g), "%.4s-%.4s %.4s-%.4s", v, v + 4, v + 8, v + 12);
    expect_none(d, g); /* inconsistent separators */
    snprintf(g, sizeof(g), "1234 %.4s %.4s %.4s %.4s", v, v + 4, v + 8, v + 12);
    expect_none(d, g); /* part of a longer chain */
    v[15] = (char) ('0' + (v[15] - '0' + 1) % 10);
    expect_none(d, v); /* bad Luhn */

    luhn(v, "621700123456789012"); /* UnionPay 19 */
    expect_one(d, v, MASK_T_BANK_CARD, v);
    snprintf(g, sizeof(g), "%.4s %.4s %.4s %.4s %.3s", v, v + 4, v + 8, v + 12, v + 16);
    expect_one(d, g, MASK_T_BANK_CARD, g);
    luhn(v, "411111111111111"); /* Visa 16 */
    expect_one(d, v, MASK_T_BANK_CARD, v);
    luhn(v, "510510510510510"); /* Mastercard */
    expect_one(d, v, MASK_T_BANK_CARD, v);
    luhn(v, "222100000000000"); /* Mastercard 2-series */
    expect_one(d, v, MASK_T_BANK_CARD, v);
    luhn(v, "37828224631000"); /* Amex 15 */
    expect_one(d, v, MASK_T_BANK_CARD, v);
    snprintf(g, sizeof(g), "%.4s %.6s %.5s", v, v + 4, v + 10);
    expect_one(d, g, MASK_T_BANK_CARD, g);
    luhn(v, "353011133330000"); /* JCB */
    expect_one(d, v, MASK_T_BANK_CARD, v);
    /* issuer ranges */
    luhn(v, "999999999999999"); /* no issuer 99 */
    expect_none(d, v);
    luhn(v, "56000000000000"); /* 15 digits, Maestro 56: not in the list */
    expect_none(d, v);
    luhn(v, "40000000000000"); /* Visa with 15 digits (and region 40: no RID15) */
    expect_none(d, v);
    luhn(v, "622202123456789");
    snprintf(b, sizeof(b), "x%s", v);
    expect_none(d, b);
    snprintf(b, sizeof(b), "%s7", v); /* 17 digits, Luhn now wrong or right: not this card */
    mask_finding f[2];
    size_t n = mask_detect(d, b, strlen(b), f, 2);
    assert_true(n == 0 || f[0].end - f[0].start == 17);
    mask_detector_free(d);
}

/* ---- USCC ---------------------------------------------------------------------------------- */

static void
test_uscc(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char v[19], b[128];

    uscc(v, "91350100", "M0001000", true);
    expect_one(d, wrap(b, sizeof(b), "统一社会信用代码：", v, "。"), MASK_T_USCC, v);
    expect_one(d, wrap(b, sizeof(b), "\"uscc\":\"", v, "\""), MASK_T_USCC, v);
    uscc(v, "Y1110000", "12345678", true);
    expect_one(d, v, MASK_T_USCC, v);
    uscc(v, "52110108", "ABCDEFGH", true);
    expect_one(d, v, MASK_T_USCC, v);
    /* bad organisation code check, outer check still right */
    uscc(v, "91350100", "M0001000", false);
    expect_none(d, v);
    /* bad outer check */
    uscc(v, "91350100", "M0001000", true);
    v[17] = v[17] == 'A' ? 'B' : 'A';
    expect_none(d, v);
    /* letters outside the GB 32100 set, lowercase, bad department, glued */
    uscc(v, "91350100", "M0001000", true);
    char w[19];
    memcpy(w, v, 19);
    w[8] = 'I';
    expect_none(d, w);
    memcpy(w, v, 19);
    w[8] = 'm';
    expect_none(d, w);
    uscc(w, "B1350100", "M0001000", true);
    expect_none(d, w);
    uscc(w, "90350100", "M0001000", true); /* category 0 */
    expect_none(d, w);
    expect_none(d, wrap(b, sizeof(b), "Z", v, ""));
    expect_none(d, wrap(b, sizeof(b), "", v, "1"));
    mask_detector_free(d);
}

/* ---- passports and permits ----------------------------------------------------------------- */

static void
test_passports(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    expect_one(d, "护照号E12345678。", MASK_T_CN_PASSPORT, "E12345678");
    expect_one(d, "passport: EA1234567", MASK_T_CN_PASSPORT, "EA1234567");
    expect_one(d, "G12345678", MASK_T_CN_PASSPORT, "G12345678");
    expect_one(d, "D1234567", MASK_T_CN_PASSPORT, "D1234567");
    expect_one(d, "(S1234567)", MASK_T_CN_PASSPORT, "S1234567");
    expect_one(d, "P1234567", MASK_T_CN_PASSPORT, "P1234567");
    expect_none(d, "EI1234567"); /* I and O are not used */
    expect_none(d, "EO1234567");
    expect_none(d, "e12345678"); /* uppercase only */
    expect_none(d, "E1234567");  /* too short */
    expect_none(d, "E123456789");
    expect_none(d, "ABS1234567"); /* glued */
    expect_none(d, "S1234567a");
    expect_none(d, "F12345678");

    expect_one(d, "通行证：C12345678，", MASK_T_HKMO_PERMIT, "C12345678");
    expect_one(d, "CA1234567", MASK_T_HKMO_PERMIT, "CA1234567");
    expect_one(d, "W12345678", MASK_T_HKMO_PERMIT, "W12345678");
    expect_none(d, "CO1234567");
    expect_none(d, "c12345678");
    expect_none(d, "W1234567");

    expect_one(d, "回乡证H12345678", MASK_T_HRP, "H12345678");
    expect_one(d, "M12345678", MASK_T_HRP, "M12345678");
    expect_one(d, "H1234567890", MASK_T_HRP, "H1234567890");
    expect_none(d, "H123456789");
    expect_none(d, "h12345678");
    mask_detector_free(d);
}

/* ---- email, IPv4 --------------------------------------------------------------------------- */

static void
test_email(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    expect_one(d, "mail zhang.san@example.com.", MASK_T_EMAIL, "zhang.san@example.com");
    expect_one(d, "邮箱：li_si+tag@mail.example.com.cn，谢谢", MASK_T_EMAIL,
               "li_si+tag@mail.example.com.cn");
    expect_one(d, "{\"email\":\"a@b.cn\"}", MASK_T_EMAIL, "a@b.cn");
    expect_one(d, "<x-y@my-host.org>", MASK_T_EMAIL, "x-y@my-host.org");
    /* a mobile used as the local part: the longer finding wins */
    expect_one(d, "qq 13800138000@qq.com", MASK_T_EMAIL, "13800138000@qq.com");
    /* a doubled dot ends the local part: the address after it stands alone */
    expect_one(d, ".a..b@example.com", MASK_T_EMAIL, "b@example.com");
    expect_none(d, "a.b.@example.com");
    expect_none(d, "a.b@example.com_x");
    expect_none(d, "a.@example.com");
    expect_none(d, "a@example");
    expect_none(d, "a@example.c");
    expect_none(d, "a@example.123");
    expect_none(d, "a@-example.com");
    expect_none(d, "a@example-.com");
    expect_none(d, "@example.com");
    expect_none(d, "a@b@example.com");
    char big[200];
    memset(big, 'a', 65);
    strcpy(big + 65, "@example.com");
    expect_none(d, big);
    mask_detector_free(d);
}

static void
test_ipv4(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    expect_one(d, "from 10.1.2.3 to", MASK_T_IPV4, "10.1.2.3");
    expect_one(d, "地址：192.168.0.255。", MASK_T_IPV4, "192.168.0.255");
    expect_one(d, "0.0.0.0", MASK_T_IPV4, "0.0.0.0");
    expect_one(d, "end 8.8.8.8.", MASK_T_IPV4, "8.8.8.8");
    expect_none(d, "256.1.1.1");
    expect_none(d, "10.01.1.1");
    expect_none(d, "1.2.3.4.5");
    expect_none(d, "v1.2.3.4");
    expect_none(d, "1.2.3");
    expect_none(d, "1.2.3.4a");
    expect_none(d, "1.2.3.1000");
    mask_detector_free(d);
}

/* ---- plates -------------------------------------------------------------------------------- */

static void
test_plate(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    expect_one(d, "车牌京A12345，", MASK_T_CN_PLATE, "京A12345");
    expect_one(d, "粤B·C1234", MASK_T_CN_PLATE, "粤B·C1234");
    expect_one(d, "沪AD12345", MASK_T_CN_PLATE, "沪AD12345");
    expect_one(d, "沪ADA1234", MASK_T_CN_PLATE, "沪ADA1234");
    expect_one(d, "苏E12345D", MASK_T_CN_PLATE, "苏E12345D");
    expect_one(d, "粤Z1234港 ", MASK_T_CN_PLATE, "粤Z1234港");
    expect_one(d, "京A1234学", MASK_T_CN_PLATE, "京A1234学");
    expect_none(d, "京I12345");  /* city letter I */
    expect_none(d, "京AO1234");  /* O in the number */
    expect_none(d, "京a12345");  /* lowercase */
    expect_none(d, "京A1234");   /* too short */
    expect_none(d, "京A123456"); /* 6 but not new-energy */
    expect_none(d, "中A12345");  /* not a province */
    expect_none(d, "x京A12345"); /* glued */
    mask_detector_free(d);
}

/* ---- names --------------------------------------------------------------------------------- */

static void
test_name(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    expect_none(d, "姓名：张三，"); /* not by default */
    mask_detector_free(d);

    d = det(MASK_TYPE_BIT(MASK_T_CN_NAME), NULL);
    expect_one(d, "姓名：张三，", MASK_T_CN_NAME, "张三");
    expect_one(d, "{\"name\":\"李小明\"}", MASK_T_CN_NAME, "李小明");
    expect_one(d, "欧阳娜娜", MASK_T_CN_NAME, "欧阳娜娜");
    expect_one(d, "诸葛亮", MASK_T_CN_NAME, "诸葛亮");
    expect_none(d, "患者张三于昨日入院"); /* inside running text */
    expect_none(d, "中国");               /* no surname */
    expect_none(d, "张");                 /* one character */
    expect_none(d, "王小明明明");         /* too long */
    expect_none(d, "a张三");
    mask_detector_free(d);
}

/* ---- overlaps, counts, validate ------------------------------------------------------------ */

static void
test_overlap_and_cap(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char v[19], text[512];
    /* an 18-digit ID starting 62 (Gansu) that also passes Luhn as a UnionPay card */
    bool found = false;
    char seq[32], card[20];
    for (int s = 100; s < 1000 && !found; s++) {
        snprintf(seq, sizeof(seq), "62010219800101%03d", s);
        rid18(v, seq);
        if (v[17] == 'X') {
            continue;
        }
        memcpy(card, v, 17);
        card[17] = '\0';
        char full[20];
        luhn(full, card);
        found = full[17] == v[17];
    }
    assert_true(found);
    expect_one(d, v, MASK_T_CN_RID18, v);

    snprintf(text, sizeof(text),
             "身份证%s，手机13800138000，邮箱a@b.cn，IP 10.0.0.1，车牌京A12345。", v);
    mask_finding f[8];
    size_t n = mask_detect(d, text, strlen(text), f, 8);
    assert_int_equal(n, 5);
    mask_type want[5] = {MASK_T_CN_RID18, MASK_T_CN_MOBILE, MASK_T_EMAIL, MASK_T_IPV4,
                         MASK_T_CN_PLATE};
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(f[i].type, want[i]);
        if (i > 0) {
            assert_true(f[i].start >= f[i - 1].end);
        }
    }
    /* more findings than cap */
    mask_finding one[2];
    assert_int_equal(mask_detect(d, text, strlen(text), one, 2), 5);
    assert_int_equal(one[1].type, MASK_T_CN_MOBILE);
    assert_int_equal(mask_detect(d, text, strlen(text), NULL, 0), 5);
    assert_int_equal(mask_detect(d, "", 0, f, 8), 0);

    /* only the asked types */
    mask_detector *dm = det(MASK_TYPE_BIT(MASK_T_EMAIL), NULL);
    n = mask_detect(dm, text, strlen(text), f, 8);
    assert_int_equal(n, 1);
    assert_int_equal(f[0].type, MASK_T_EMAIL);
    mask_detector_free(dm);
    mask_detector_free(d);
}

/* The examples printed in the standards (fictional values), as a check of the test's own
 * builders: a builder and the detector sharing one mistake would otherwise go unnoticed. */
static void
test_standard_examples(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char v[19];
    expect_one(d, "11010519491231002X", MASK_T_CN_RID18, "11010519491231002X"); /* GB 11643 */
    rid18(v, "11010519491231002");
    assert_string_equal(v, "11010519491231002X");
    expect_one(d, "91350100M000100Y43", MASK_T_USCC, "91350100M000100Y43"); /* GB 32100 */
    uscc(v, "91350100", "M000100Y", true);
    assert_string_equal(v, "91350100M000100Y43");
    expect_one(d, "4111111111111111", MASK_T_BANK_CARD, "4111111111111111"); /* test cards */
    expect_one(d, "378282246310005", MASK_T_BANK_CARD, "378282246310005");
    expect_one(d, "5555555555554444", MASK_T_BANK_CARD, "5555555555554444");
    mask_detector_free(d);
}

static void
test_json_and_chinese(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char id[19], co[19], text[1024];
    rid18(id, "33010619881231002");
    uscc(co, "91330106", "ABCD1234", true);
    snprintf(text, sizeof(text),
             "{\"name\":\"张三\",\"id_no\":\"%s\",\"phone\":\"+86 138-0013-8000\","
             "\"note\":\"联系电话：139 0013 8000。车牌：浙A·D1234，单位代码%s；"
             "邮箱zs@example.org（工作）\",\"ip\":\"172.16.0.1\",\"amount\":1234567890123}",
             id, co);
    mask_finding f[16];
    size_t n = mask_detect(d, text, strlen(text), f, 16);
    static const mask_type want[] = {MASK_T_CN_RID18, MASK_T_CN_MOBILE, MASK_T_CN_MOBILE,
                                     MASK_T_CN_PLATE, MASK_T_USCC,      MASK_T_EMAIL,
                                     MASK_T_IPV4};
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(f[i].type, want[i]);
        assert_true(mask_validate(d, f[i].type, text + f[i].start, f[i].end - f[i].start));
    }
    assert_int_equal(f[0].end - f[0].start, 18);
    assert_memory_equal(text + f[1].start, "+86 138-0013-8000", 17);
    assert_memory_equal(text + f[2].start, "139 0013 8000", 13);
    assert_memory_equal(text + f[5].start, "zs@example.org", 14);
    /* JSON escapes before a value are boundaries (json.dumps with ensure_ascii) */
    expect_one(d, "{\"note\":\"\\u7535\\u8bdd13800138000\"}", MASK_T_CN_MOBILE, "13800138000");
    expect_one(d, "\"line1\\n13800138000\\tx\"", MASK_T_CN_MOBILE, "13800138000");
    expect_one(d, "\"a\\nzs@example.org\"", MASK_T_EMAIL, "zs@example.org");
    expect_one(d, "\"\\u8bc1E12345678\"", MASK_T_CN_PASSPORT, "E12345678");
    expect_none(d, "\"\\u8bc1x13800138000\""); /* a letter after the escape is glued */
    expect_none(d, "\"\\q13800138000\"");      /* not an escape */
    /* no text, no detector */
    assert_int_equal(mask_detect(NULL, text, strlen(text), f, 16), 0);
    assert_int_equal(mask_detect(d, NULL, 5, f, 16), 0);
    expect_none(d, "+86");
    expect_none(d, "0086 ");
    /* all-digit noise that is none of the types */
    expect_none(d, "订单号 20240615123456789012，金额 1234.56 元，版本 1.2.3.4.5");
    mask_detector_free(d);
}

/* Random valid values of every type between random boundary contexts: each must be found
 * exactly, alone, and the same value glued to a letter must not. splitmix64, fixed seed. */
static uint64_t rng_s = 12345;

static unsigned
rnd(unsigned n)
{
    uint64_t z = (rng_s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (unsigned) ((z ^ (z >> 31)) % n);
}

static void
test_random_embedding(void **state)
{
    (void) state;
    mask_detector *d = det(MASK_TYPES_ALL, NULL);
    static const char *const pre[] = {"", " ", "：", "，", "\"", "(", "患者", "id=", "\n", "；"};
    static const char *const post[] = {"", " ", "。", "，", "\"", ")", "号", "&", "\n", ". "};
    char v[64], text[160], seq[32];
    for (int it = 0; it < 2000; it++) {
        mask_type type = (mask_type) (1 + rnd(MASK_T_COUNT - 1));
        switch (type) {
        case MASK_T_CN_RID18:
            snprintf(seq, sizeof(seq), "%s%04u%02u%02u%03u", rnd(2) ? "440306" : "810000",
                     1900 + rnd(124), 1 + rnd(12), 1 + rnd(28), rnd(1000));
            rid18(v, seq);
            break;
        case MASK_T_CN_RID15:
            snprintf(v, sizeof(v), "510104%02u%02u%02u%03u", rnd(100), 1 + rnd(12), 1 + rnd(28),
                     rnd(1000));
            break;
        case MASK_T_CN_MOBILE:
            snprintf(v, sizeof(v), "%s13%u%s%04u%s%04u", rnd(2) ? "+86 " : "", rnd(10),
                     rnd(2) ? "-" : "", rnd(10000), "", rnd(10000));
            if (strchr(v, '-') != NULL) { /* keep the grouping consistent: 3-4-4 */
                snprintf(v, sizeof(v), "13%u-%04u-%04u", rnd(10), rnd(10000), rnd(10000));
            }
            break;
        case MASK_T_BANK_CARD:
            snprintf(seq, sizeof(seq), "62%013u%02u", rnd(1000000000), rnd(100));
            luhn(v, seq);
            break;
        case MASK_T_USCC: {
            char org[9];
            for (int i = 0; i < 8; i++) {
                org[i] = "0123456789ABCDEFGHJKLMNPQRTUWXY"[rnd(31)];
            }
            org[8] = '\0';
            uscc(v, "91440300", org, true);
            break;
        }
        case MASK_T_CN_PASSPORT:
            snprintf(v, sizeof(v), "E%08u", rnd(100000000));
            break;
        case MASK_T_HKMO_PERMIT:
            snprintf(v, sizeof(v), "C%08u", rnd(100000000));
            break;
        case MASK_T_HRP:
            snprintf(v, sizeof(v), "H%08u", rnd(100000000));
            break;
        case MASK_T_EMAIL:
            snprintf(v, sizeof(v), "u%u.x@host%u.example.com", rnd(1000), rnd(1000));
            break;
        case MASK_T_IPV4:
            snprintf(v, sizeof(v), "%u.%u.%u.%u", rnd(256), rnd(256), rnd(256), rnd(256));
            break;
        case MASK_T_CN_PLATE:
            snprintf(v, sizeof(v), "%s%c%05u", rnd(2) ? "京" : "琼", 'A' + rnd(8), rnd(100000));
            break;
        default:
            snprintf(v, sizeof(v), "%s", rnd(2) ? "王小明" : "欧阳修");
            break;
        }
        const char *a = pre[rnd(10)], *z = post[rnd(10)];
        if (type == MASK_T_CN_NAME) { /* names need non-CJK neighbours */
            a = "：";
            z = "，";
        }
        if (type == MASK_T_EMAIL || type == MASK_T_IPV4) {
            z = rnd(2) ? " " : "，";
        }
        expect_one(d, wrap(text, sizeof(text), a, v, z), type, v);
        /* (a glued "+86 " prefix leaves a valid bare number after the space: not tried) */
        if (type != MASK_T_CN_NAME && type != MASK_T_CN_PLATE && type != MASK_T_EMAIL &&
            v[0] != '+') {
            expect_none(d, wrap(text, sizeof(text), "Q", v, z));
            expect_none(d, wrap(text, sizeof(text), a, v, "k"));
        }
    }
    mask_detector_free(d);
}

static void
test_validate(void **state)
{
    (void) state;
    mask_detector *d = det(0, NULL);
    char v[19];
    rid18(v, "11010519900307123");
    assert_true(mask_validate(d, MASK_T_CN_RID18, v, 18));
    assert_false(mask_validate(d, MASK_T_CN_RID18, v, 17));
    assert_false(mask_validate(d, MASK_T_BANK_CARD, v, 18));
    assert_true(mask_validate(d, MASK_T_CN_MOBILE, "+86 138-0013-8000", 17));
    assert_false(mask_validate(d, MASK_T_CN_MOBILE, "13800138000 ", 12));
    assert_false(mask_validate(d, MASK_T_CN_MOBILE, " 13800138000", 12));
    assert_true(mask_validate(d, MASK_T_CN_NAME, "张三", strlen("张三")));
    assert_true(mask_validate(d, MASK_T_EMAIL, "a@b.cn", 6));
    assert_true(mask_validate(d, MASK_T_CN_PLATE, "京A12345", strlen("京A12345")));
    assert_false(mask_validate(d, MASK_T_NONE, "x", 1));
    assert_false(mask_validate(d, MASK_T_COUNT, "x", 1));
    assert_false(mask_validate(d, MASK_T_EMAIL, "", 0));
    mask_detector_free(d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_detector_opts),
        cmocka_unit_test(test_rid18),
        cmocka_unit_test(test_rid15),
        cmocka_unit_test(test_mobile),
        cmocka_unit_test(test_bank_card),
        cmocka_unit_test(test_uscc),
        cmocka_unit_test(test_passports),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_plate),
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_overlap_and_cap),
        cmocka_unit_test(test_json_and_chinese),
        cmocka_unit_test(test_standard_examples),
        cmocka_unit_test(test_random_embedding),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
