/* test_apply.c: a policy applied to text and JSON (src/mask/apply.c).
 *
 * Text: findings replaced by the type rule's action for the roles, clear for roles with a
 * clear override, text between findings untouched, statistics. JSON: field rules by path
 * (arrays do not add to the path), nested objects under a rule, numbers under number and
 * string functions, integers and strings scanned by the detectors, key order kept, role
 * overrides, malformed JSON refused (DBAO_EFORMAT) without the input in the message.
 *
 * The values are valid for the real detectors: 11010519491231002X (GB 11643 example, check
 * digit X) and 13800138000 (segment 138).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dengbao/mask.h"

static const char POLICY[] = "detect:\n"
                             "  types: [CN_RID18, CN_MOBILE]\n"
                             "types:\n"
                             "  CN_RID18: {roles: {doctor: clear}}\n"
                             "  CN_MOBILE: {mask: \"keep(3,0)\", roles: {support: default}}\n"
                             "fields:\n"
                             "  patient.name: {type: CN_NAME, roles: {doctor: clear}}\n"
                             "  patient.id_no: {type: CN_RID18}\n"
                             "  patients.id_no: {type: CN_RID18}\n"
                             "  salary: {mask: \"round(1000)\"}\n"
                             "  bonus: {mask: \"replace('***')\"}\n"
                             "  secret: {}\n"
                             "  born: {mask: year}\n";

static mask_policy *
policy(void)
{
    mask_policy *p = NULL;
    dbao_err err;
    if (mask_policy_parse(&p, POLICY, strlen(POLICY), "apply.yaml", &err) != 0)
        fail_msg("%s", err.msg);
    return p;
}

static char res[4096];

static int
text(const mask_policy *p, const char *const *roles, size_t nr, const char *in, mask_stats *st)
{
    dbao_buf out = {0};
    dbao_err err;
    int rc = mask_apply_text(p, roles, nr, in, strlen(in), &out, st, &err);
    snprintf(res, sizeof(res), "%s", out.data ? out.data : "");
    dbao_buf_free(&out);
    return rc;
}

static int
json(const mask_policy *p, const char *const *roles, size_t nr, const char *in, mask_stats *st,
     dbao_err *err)
{
    dbao_buf out = {0};
    int rc = mask_apply_json(p, roles, nr, in, strlen(in), &out, st, err);
    snprintf(res, sizeof(res), "%s", out.data ? out.data : "");
    dbao_buf_free(&out);
    return rc;
}

static void
test_text(void **state)
{
    (void) state;
    mask_policy *p = policy();
    mask_stats st = {0};
    assert_int_equal(text(p, NULL, 0, "身份证11010519491231002X，电话13800138000。", &st), 0);
    assert_string_equal(res, "身份证110105********002X，电话138********。");
    assert_int_equal(st.findings, 2);
    assert_int_equal(st.types, MASK_TYPE_BIT(MASK_T_CN_RID18) | MASK_TYPE_BIT(MASK_T_CN_MOBILE));
    const char *doc[] = {"doctor"}, *sup[] = {"support"};
    memset(&st, 0, sizeof(st));
    assert_int_equal(text(p, doc, 1, "id 11010519491231002X tel 13800138000", &st), 0);
    assert_string_equal(res, "id 11010519491231002X tel 138********");
    assert_int_equal(st.findings, 1);
    assert_int_equal(text(p, sup, 1, "tel 13800138000", NULL), 0);
    assert_string_equal(res, "tel 138****8000");
    assert_int_equal(text(p, NULL, 0, "nothing here 12345", NULL), 0);
    assert_string_equal(res, "nothing here 12345");
    assert_int_equal(text(p, NULL, 0, "", NULL), 0);
    assert_string_equal(res, "");
    /* many findings (more than the stack array) */
    dbao_buf in = {0}, out = {0};
    for (int i = 0; i < 200; i++)
        dbao_buf_printf(&in, "13800138000 ");
    assert_int_equal(mask_apply_text(p, NULL, 0, in.data, in.len, &out, NULL, NULL), 0);
    assert_null(strstr(out.data, "8000"));
    assert_int_equal(out.len, in.len);
    dbao_buf_free(&in);
    dbao_buf_free(&out);
    mask_policy_free(p);
}

static void
test_json(void **state)
{
    (void) state;
    mask_policy *p = policy();
    mask_stats st = {0};
    dbao_err err;
    assert_int_equal(json(p, NULL, 0,
                          "{\"patient\":{\"name\":\"张三丰\",\"id_no\":\"11010519491231002X\","
                          "\"note\":\"tel 13800138000\"},\"z\":1,\"a\":2}",
                          &st, &err),
                     0);
    assert_string_equal(res, "{\"patient\":{\"name\":\"张**\",\"id_no\":\"110105********002X\","
                             "\"note\":\"tel 138********\"},\"z\":1,\"a\":2}");
    assert_int_equal(st.fields, 2);
    assert_int_equal(st.findings, 1);
    /* arrays do not add to the path */
    assert_int_equal(json(p, NULL, 0,
                          "{\"patients\":[{\"id_no\":\"11010519491231002X\"},"
                          "{\"id_no\":\"123\"}]}",
                          NULL, &err),
                     0);
    assert_string_equal(res, "{\"patients\":[{\"id_no\":\"110105********002X\"},"
                             "{\"id_no\":\"***\"}]}");
    /* roles */
    const char *doc[] = {"doctor"};
    assert_int_equal(json(p, doc, 1,
                          "{\"patient\":{\"name\":\"张三丰\",\"id_no\":\"11010519491231002X\"}}",
                          NULL, &err),
                     0);
    assert_string_equal(res,
                        "{\"patient\":{\"name\":\"张三丰\",\"id_no\":\"11010519491231002X\"}}");
    /* numbers: number functions keep numbers, string functions make strings */
    assert_int_equal(
        json(p, NULL, 0, "{\"salary\":12345,\"bonus\":5.5,\"x\":[1.5,true,null]}", NULL, &err), 0);
    assert_string_equal(res, "{\"salary\":12000,\"bonus\":\"***\",\"x\":[1.5,true,null]}");
    assert_int_equal(json(p, NULL, 0, "{\"salary\":\"12,345\"}", NULL, &err), 0);
    assert_string_equal(res, "{\"salary\":\"***\"}"); /* not a number: fails closed */
    assert_int_equal(json(p, NULL, 0, "{\"born\":\"1985-07-23\",\"salary\":2500.5}", NULL, &err),
                     0);
    assert_string_equal(res, "{\"born\":\"1985\",\"salary\":3000}");
    /* an object or array under a rule: every scalar inside masked */
    assert_int_equal(
        json(p, NULL, 0, "{\"secret\":{\"a\":\"x\",\"b\":[1,\"y\",null,false]}}", NULL, &err), 0);
    assert_string_equal(res, "{\"secret\":{\"a\":\"***\",\"b\":[\"***\",\"***\",null,false]}}");
    /* integers that are sensitive values are scanned too */
    assert_int_equal(json(p, NULL, 0, "{\"tel\":13800138000,\"n\":42}", NULL, &err), 0);
    assert_string_equal(res, "{\"tel\":\"138********\",\"n\":42}");
    /* bare documents */
    assert_int_equal(json(p, NULL, 0, "\"13800138000\"", NULL, &err), 0);
    assert_string_equal(res, "\"138********\"");
    assert_int_equal(json(p, NULL, 0, "[ ]", NULL, &err), 0);
    assert_string_equal(res, "[]");
    /* UTF-8 kept as is, escapes decoded */
    assert_int_equal(json(p, NULL, 0, "{\"k\":\"\\u4e2d文\"}", NULL, &err), 0);
    assert_string_equal(res, "{\"k\":\"中文\"}");
    /* malformed */
    dbao_err_clear(&err);
    assert_int_equal(json(p, NULL, 0, "{\"a\":13800138000", NULL, &err), DBAO_EFORMAT);
    assert_null(strstr(err.msg, "13800138000"));
    assert_int_equal(json(p, NULL, 0, "", NULL, &err), DBAO_EFORMAT);
    assert_int_equal(json(p, NULL, 0, "{} {}", NULL, &err), DBAO_EFORMAT);
    mask_policy_free(p);
}

static void
test_json_deep(void **state)
{
    (void) state;
    mask_policy *p = policy();
    dbao_buf in = {0}, out = {0};
    dbao_err err;
    for (int i = 0; i < 2000; i++)
        dbao_buf_putc(&in, '[');
    for (int i = 0; i < 2000; i++)
        dbao_buf_putc(&in, ']');
    int rc = mask_apply_json(p, NULL, 0, in.data, in.len, &out, NULL, &err);
    assert_int_equal(rc, DBAO_EFORMAT); /* jansson or our depth limit */
    dbao_buf_free(&in);
    dbao_buf_free(&out);
    mask_policy_free(p);
}

static void
test_alloc_failures(void **state)
{
    (void) state;
    mask_policy *p = policy();
    static const char doc[] = "{\"patient\":{\"name\":\"张三丰\",\"id_no\":\"11010519491231002X\"},"
                              "\"salary\":1234,\"note\":\"tel 13800138000\"}";
    int ok = 0;
    for (long n = 0; n < 500 && !ok; n++) {
        dbao_buf out = {0};
        dbao_err err;
        dbao_alloc_fail_after(n, false);
        int rc = mask_apply_json(p, NULL, 0, doc, strlen(doc), &out, NULL, &err);
        int rc2 = mask_apply_text(p, NULL, 0, doc, strlen(doc), &out, NULL, &err);
        dbao_alloc_fail_after(-1, false);
        assert_true(rc == 0 || rc == DBAO_ENOMEM);
        assert_true(rc2 == 0 || rc2 == DBAO_ENOMEM);
        if (rc == 0 && rc2 == 0) {
            assert_null(strstr(out.data, "13800138000"));
            ok = 1;
        }
        dbao_buf_free(&out);
    }
    assert_true(ok);
    mask_policy_free(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_deep),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
