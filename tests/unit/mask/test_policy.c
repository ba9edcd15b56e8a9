/* test_policy.c: the masking policy parser and its queries (src/mask/policy.c).
 *
 * A full policy parses to the expected rules, actions, inheritance from type rules, role
 * resolution (clear wins, then the first override in rule order, then the rule's action),
 * column lookup (schema.table.column first, then table.column), field lookup, data types,
 * allowed functions, detect types and the derived action; key files are loaded relative to
 * the policy's folder and a 0644 key file is refused. Each negative case must fail with the
 * expected code and a message containing "name:LINE:" and the expected text, and no value.
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
#include <sys/stat.h>
#include <unistd.h>

#include "dengbao/mask.h"

static char dir[64];

static void
write_file(const char *name, const char *text, mode_t mode)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static int
setup(void **state)
{
    (void) state;
    strcpy(dir, "/tmp/test_policy.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    char kd[96];
    snprintf(kd, sizeof(kd), "%s/keys", dir);
    mkdir(kd, 0700);
    write_file("keys/k2026.key", "000102030405060708090a0b0c0d0e0f\n", 0600);
    write_file("keys/h32.key", "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f\n",
               0600);
    write_file("keys/open.key", "000102030405060708090a0b0c0d0e0f\n", 0644);
    return 0;
}

static int
teardown(void **state)
{
    (void) state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char FULL[] =
    "keys:\n"                                                          /* 1 */
    "  k2026: keys/k2026.key\n"                                        /* 2 */
    "  h32: keys/h32.key\n"                                            /* 3 */
    "detect:\n"                                                        /* 4 */
    "  types: [CN_RID18, CN_MOBILE, EMAIL]\n"                          /* 5 */
    "  mobile_prefixes: \"130,138,199\"\n"                             /* 6 */
    "derived: \"replace('#')\"\n"                                      /* 7 */
    "types:\n"                                                         /* 8 */
    "  CN_RID18: {mask: default, roles: {doctor: clear}}\n"            /* 9 */
    "  CN_MOBILE: {mask: \"keep(3,0)\", predicates: deny}\n"           /* 10 */
    "data_types: {cn_rid: CN_RID18, public.mobile: CN_MOBILE}\n"       /* 11 */
    "allow_functions: [public.safe_lookup, norm]\n"                    /* 12 */
    "columns:\n"                                                       /* 13 */
    "  public.patients.id_no: {type: CN_RID18, mask: \"keep(6,4)\",\n" /* 14 */
    "      roles: {auditor: \"pseudonym(h32)\", doctor: clear, clerk: \"encrypt(k2026)\"},\n"
    "      predicates: equality}\n"                            /* 16 */
    "  patients.id_no: {type: CN_RID18}\n"                     /* 17 */
    "  patients.name: {type: CN_NAME}\n"                       /* 18 */
    "  patients.phone: {type: CN_MOBILE, predicates: allow}\n" /* 19 */
    "  visits.note: {mask: \"replace('[note]')\"}\n"           /* 20 */
    "  visits.salary: {mask: \"round(1000)\", roles: {hr: \"noise(5,h32)\"}}\n"
    "fields:\n"                                                   /* 22 */
    "  patient.id_no: {type: CN_RID18, roles: {doctor: clear}}\n" /* 23 */
    "  patient.contact.email: {type: EMAIL}\n"                    /* 24 */
    "  note: {}\n";                                               /* 25 */

static mask_policy *
parse_full(void)
{
    char name[128];
    snprintf(name, sizeof(name), "%s/policy.yaml", dir);
    mask_policy *p = NULL;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = mask_policy_parse(&p, FULL, strlen(FULL), name, &err);
    if (rc != 0)
        fail_msg("full policy: %s", err.msg);
    return p;
}

static const mask_fn *
fn_of(const mask_policy *p, int idx)
{
    assert_true(idx >= 0);
    const mask_action *a = mask_policy_action(p, (size_t) idx);
    assert_non_null(a);
    return &a->fn;
}

static void
test_full(void **state)
{
    (void) state;
    mask_policy *p = parse_full();
    assert_non_null(mask_policy_keys(p));
    assert_non_null(mask_policy_detector(p));
    assert_int_equal(mask_policy_detect_types(p), MASK_TYPE_BIT(MASK_T_CN_RID18) |
                                                      MASK_TYPE_BIT(MASK_T_CN_MOBILE) |
                                                      MASK_TYPE_BIT(MASK_T_EMAIL));
    assert_int_equal(fn_of(p, mask_policy_derived_action(p))->kind, MASK_FN_REPLACE);
    assert_string_equal(fn_of(p, mask_policy_derived_action(p))->value, "#");
    assert_int_equal(mask_policy_num_rules(p), 9);

    const mask_rule *r = mask_policy_column(p, "public", "patients", "id_no");
    assert_non_null(r);
    assert_string_equal(r->target, "public.patients.id_no");
    assert_int_equal(r->type, MASK_T_CN_RID18);
    assert_int_equal(fn_of(p, r->action)->kind, MASK_FN_KEEP);
    assert_int_equal(r->num_roles, 3);
    const char *aud[] = {"auditor"}, *doc[] = {"nurse", "doctor"}, *clerk[] = {"clerk"};
    const char *both[] = {"clerk", "auditor"}, *none[] = {"x"};
    assert_int_equal(fn_of(p, mask_rule_action_for(r, aud, 1))->kind, MASK_FN_PSEUDONYM);
    assert_int_equal(mask_rule_action_for(r, doc, 2), -1);
    assert_int_equal(fn_of(p, mask_rule_action_for(r, clerk, 1))->kind, MASK_FN_ENCRYPT);
    /* first override in rule order: auditor comes before clerk in the rule */
    assert_int_equal(fn_of(p, mask_rule_action_for(r, both, 2))->kind, MASK_FN_PSEUDONYM);
    assert_int_equal(mask_rule_action_for(r, none, 1), r->action);
    assert_int_equal(mask_rule_action_for(r, NULL, 0), r->action);
    assert_int_equal(r->predicates, MASK_PRED_EQUALITY);

    /* another schema falls back to table.column, which inherits the type rule */
    r = mask_policy_column(p, "other", "patients", "id_no");
    assert_non_null(r);
    assert_string_equal(r->target, "patients.id_no");
    assert_int_equal(fn_of(p, r->action)->kind, MASK_FN_DEFAULT);
    assert_int_equal(mask_rule_action_for(r, doc, 2), -1);
    assert_ptr_equal(mask_policy_column(p, NULL, "patients", "id_no"), r);
    assert_null(mask_policy_column(p, "public", "patients", "ID_NO"));
    assert_null(mask_policy_column(p, "public", "x", "id_no"));

    r = mask_policy_column(p, NULL, "patients", "phone");
    assert_int_equal(fn_of(p, r->action)->kind, MASK_FN_KEEP);
    assert_int_equal(fn_of(p, r->action)->a, 3);
    assert_int_equal(r->predicates, MASK_PRED_ALLOW);
    r = mask_policy_column(p, NULL, "patients", "name");
    assert_int_equal(r->type, MASK_T_CN_NAME);
    assert_int_equal(fn_of(p, r->action)->kind, MASK_FN_DEFAULT);
    r = mask_policy_column(p, "s", "visits", "note");
    assert_int_equal(r->type, MASK_T_NONE);
    assert_string_equal(fn_of(p, r->action)->value, "[note]");
    r = mask_policy_column(p, "s", "visits", "salary");
    const char *hr[] = {"hr"};
    assert_int_equal(fn_of(p, mask_rule_action_for(r, hr, 1))->kind, MASK_FN_NOISE);

    r = mask_policy_field(p, "patient.id_no", 13);
    assert_non_null(r);
    assert_int_equal(mask_rule_action_for(r, doc, 2), -1);
    assert_non_null(mask_policy_field(p, "patient.contact.email", 21));
    r = mask_policy_field(p, "note", 4);
    assert_non_null(r);
    assert_int_equal(fn_of(p, r->action)->kind, MASK_FN_REPLACE);
    assert_null(mask_policy_field(p, "patient", 7));
    assert_null(mask_policy_field(p, "patient.id_n", 12));
    /* a column rule is not a field rule */
    assert_null(mask_policy_field(p, "patients.id_no", 14));

    /* type rules: never NULL, defaults for types the policy does not name */
    const mask_rule *t = mask_policy_type_rule(p, MASK_T_CN_RID18);
    assert_int_equal(t->num_roles, 1);
    assert_int_equal(mask_rule_action_for(t, doc, 2), -1);
    t = mask_policy_type_rule(p, MASK_T_CN_MOBILE);
    assert_int_equal(t->predicates, MASK_PRED_DENY);
    t = mask_policy_type_rule(p, MASK_T_BANK_CARD);
    assert_non_null(t);
    assert_int_equal(fn_of(p, t->action)->kind, MASK_FN_DEFAULT);
    assert_int_equal(mask_policy_action(p, (size_t) t->action)->type, MASK_T_BANK_CARD);
    assert_int_equal(t->num_roles, 0);

    assert_int_equal(mask_policy_data_type(p, "cn_rid"), MASK_T_CN_RID18);
    assert_int_equal(mask_policy_data_type(p, "public.mobile"), MASK_T_CN_MOBILE);
    assert_int_equal(mask_policy_data_type(p, "text"), MASK_T_NONE);
    assert_true(mask_policy_function_allowed(p, "public", "safe_lookup"));
    assert_false(mask_policy_function_allowed(p, "other", "safe_lookup"));
    assert_false(mask_policy_function_allowed(p, NULL, "safe_lookup"));
    assert_true(mask_policy_function_allowed(p, "any", "norm"));
    assert_true(mask_policy_function_allowed(p, NULL, "norm"));
    assert_false(mask_policy_function_allowed(p, "public", "other"));

    /* every rule's action index is valid; identical actions share an index */
    size_t na = mask_policy_num_actions(p);
    for (size_t i = 0; i < mask_policy_num_rules(p); i++) {
        const mask_rule *ri = mask_policy_rule(p, i);
        assert_true(ri->action >= 0 && (size_t) ri->action < na);
        assert_int_not_equal(mask_policy_action(p, (size_t) ri->action)->fn.kind, MASK_FN_CLEAR);
        for (size_t j = 0; j < ri->num_roles; j++)
            assert_true(ri->role_actions[j] >= -1 && ri->role_actions[j] < (int) na);
    }
    assert_null(mask_policy_rule(p, 9));
    assert_null(mask_policy_action(p, na));
    for (size_t i = 0; i < na; i++)
        for (size_t j = i + 1; j < na; j++) {
            const mask_action *a = mask_policy_action(p, i), *b = mask_policy_action(p, j);
            dbao_buf fa = {0}, fb = {0};
            mask_fn_format(&a->fn, &fa);
            mask_fn_format(&b->fn, &fb);
            assert_false(a->type == b->type && strcmp(fa.data, fb.data) == 0);
            dbao_buf_free(&fa);
            dbao_buf_free(&fb);
        }
    mask_policy_free(p);
}

static void
test_minimal(void **state)
{
    (void) state;
    mask_policy *p = NULL;
    dbao_err err;
    assert_int_equal(mask_policy_parse(&p, "columns: {t.c: {}}\n", 19, "m.yaml", &err), 0);
    assert_int_equal(mask_policy_detect_types(p), MASK_TYPES_DEFAULT);
    const mask_rule *r = mask_policy_column(p, "public", "t", "c");
    assert_non_null(r);
    assert_int_equal(fn_of(p, r->action)->kind, MASK_FN_REPLACE);
    assert_string_equal(fn_of(p, r->action)->value, "***");
    assert_int_equal(fn_of(p, mask_policy_derived_action(p))->kind, MASK_FN_REPLACE);
    assert_non_null(mask_policy_type_rule(p, MASK_T_CN_NAME));
    assert_non_null(mask_policy_type_rule(p, (mask_type) 99));
    assert_false(mask_policy_function_allowed(p, "a", "b"));
    mask_policy_free(p);
    static const char sp[] = "fields: {\"patient.first name\": {type: CN_NAME}}\n";
    assert_int_equal(mask_policy_parse(&p, sp, strlen(sp), "m.yaml", &err), 0);
    assert_non_null(mask_policy_field(p, "patient.first name", 18));
    mask_policy_free(p);
    assert_int_equal(mask_policy_parse(&p, "{}", 2, "m.yaml", &err), 0);
    assert_int_equal(mask_policy_num_rules(p), 0);
    assert_null(mask_policy_column(p, "a", "b", "c"));
    mask_policy_free(p);
    mask_policy_free(NULL);
}

static void
check_bad(const char *yaml, int line, const char *want)
{
    char name[128];
    snprintf(name, sizeof(name), "%s/bad.yaml", dir);
    mask_policy *p = (mask_policy *) 1;
    dbao_err err;
    dbao_err_clear(&err);
    int rc = mask_policy_parse(&p, yaml, strlen(yaml), name, &err);
    if (rc == 0)
        fail_msg("accepted: %s", yaml);
    assert_null(p);
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "%s:%d: ", name, line);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0 || strstr(err.msg, want) == NULL)
        fail_msg("for\n%s\nwant '%s...%s', got '%s'", yaml, prefix, want, err.msg);
}

static void
test_negative(void **state)
{
    (void) state;
    check_bad("", 1, "empty policy");
    check_bad("colums: {}\n", 1, "unknown key 'colums'");
    check_bad("columns: {}\ncolumns: {}\n", 2, "duplicate key 'columns'");
    check_bad("- a\n", 1, "must be a mapping");
    check_bad("a: [\n", 2, "yaml:");
    check_bad("columns: {}\n---\nfields: {}\n", 3, "more than one yaml document");
    /* aliases */
    check_bad("types:\n  CN_RID18: &r {mask: default}\n  CN_RID15: *r\n", 2, "aliases");
    /* wrong kinds */
    check_bad("columns: [a]\n", 1, "'columns' must be a mapping");
    check_bad("columns:\n  t.c: x\n", 2, "must be a mapping");
    check_bad("detect: {types: CN_RID18}\n", 1, "must be a list");
    check_bad("allow_functions: f\n", 1, "must be a list");
    check_bad("columns:\n  t.c: {mask: [keep]}\n", 2, "'mask' in column 't.c' must be a string");
    check_bad("columns:\n  t.c: {roles: [a]}\n", 2, "'roles' must be a mapping");
    /* unknown keys in nested mappings, duplicates */
    check_bad("columns:\n  t.c: {type: CN_NAME, maks: default}\n", 2, "unknown key 'maks'");
    check_bad("columns:\n  t.c: {}\n  t.c: {}\n", 3, "duplicate column 't.c'");
    check_bad("fields:\n  a.b: {}\n  a.b: {}\n", 3, "duplicate field 'a.b'");
    check_bad("columns:\n  t.c:\n    roles: {a: clear, a: clear}\n", 3, "duplicate role 'a'");
    check_bad("types:\n  CN_NAME: {}\n  CN_NAME: {}\n", 3, "duplicate key 'CN_NAME'");
    check_bad("detect: {types: [EMAIL, EMAIL]}\n", 1, "duplicate type 'EMAIL'");
    /* unknown types, functions, key ids */
    check_bad("types:\n  CN_RID19: {}\n", 2, "unknown type 'CN_RID19'");
    check_bad("columns:\n  t.c: {type: cn_rid18}\n", 2, "unknown type 'cn_rid18'");
    check_bad("detect:\n  types: [CN_RID18, PHONE]\n", 2, "unknown type 'PHONE'");
    check_bad("data_types: {cn_rid: RID}\n", 1, "unknown type 'RID'");
    check_bad("columns:\n  t.c: {mask: \"hide(1)\"}\n", 2, "unknown mask function");
    check_bad("columns:\n  t.c: {mask: \"keep(1)\"}\n", 2, "keep: takes 2 arguments");
    check_bad("columns:\n  t.c: {mask: \"pseudonym(nokey)\"}\n", 2, "key 'nokey'");
    check_bad("keys: {k: keys/k2026.key}\ncolumns:\n  t.c: {roles: {r: \"noise(5,x)\"}}\n", 3,
              "key 'x'");
    check_bad("keys: {h32: keys/h32.key}\nderived: \"encrypt(h32)\"\n", 2, "key 'h32'");
    /* clear only as a role override */
    check_bad("columns:\n  t.c: {mask: clear}\n", 2, "only allowed as a role override");
    check_bad("derived: clear\n", 1, "only allowed as a role override");
    check_bad("types:\n  EMAIL: {mask: clear}\n", 2, "only allowed as a role override");
    /* names */
    check_bad("columns:\n  c: {}\n", 2, "bad column name");
    check_bad("columns:\n  a.b.c.d: {}\n", 2, "bad column name");
    check_bad("columns:\n  a..c: {}\n", 2, "bad column name");
    check_bad("columns:\n  \"a.b c\": {}\n", 2, "bad column name");
    check_bad("fields:\n  \"a.\": {}\n", 2, "bad field path");
    check_bad("columns:\n  t.c: {roles: {\"bad role\": clear}}\n", 2, "bad role name");
    check_bad("columns:\n  t.c: {roles: {1abc: clear}}\n", 2, "bad role name");
    check_bad("columns:\n  t.c: {roles: {}}\n", 2, "must not be empty");
    check_bad("allow_functions: [\"a.b.c\"]\n", 1, "bad function name");
    check_bad("keys: {\"bad id\": keys/k2026.key}\n", 1, "bad key id");
    check_bad("detect: {mobile_prefixes: \"13,138\"}\n", 1, "3-digit segments");
    check_bad("detect:\n  types: [CN_MOBILE]\n  mobile_prefixes: \"x\"\n", 3, "mobile_prefixes");
    check_bad("columns:\n  t.c: {predicates: sometimes}\n", 2, "equality, allow or deny");
    check_bad("columns:\n  t.c: {type: ~}\n", 2, "'type' must be a string");
    /* key files */
    check_bad("keys:\n  k: keys/open.key\n", 2, "mode 0644");
    check_bad("keys:\n  k: keys/missing.key\n", 2, "key 'k'");
    check_bad("keys:\n  k: keys/k2026.key\n  k: keys/h32.key\n", 3, "duplicate key 'k'");
}

static void
test_load_file(void **state)
{
    (void) state;
    write_file("policy.yaml", FULL, 0644);
    char path[128];
    snprintf(path, sizeof(path), "%s/policy.yaml", dir);
    mask_policy *p = NULL;
    dbao_err err;
    assert_int_equal(mask_policy_load(&p, path, &err), 0);
    assert_int_equal(mask_policy_num_rules(p), 9);
    mask_policy_free(p);
    snprintf(path, sizeof(path), "%s/nonexistent.yaml", dir);
    assert_true(mask_policy_load(&p, path, &err) < 0);
    assert_null(p);
    /* relative key paths without a folder in the name resolve against the working folder */
    assert_int_not_equal(mask_policy_parse(&p, "keys: {k: keys/k2026.key}\n", 26, "x.yaml", &err),
                         0);
}

static void
test_many_rules(void **state)
{
    (void) state;
    dbao_buf b = {0};
    assert_int_equal(dbao_buf_printf(&b, "columns:\n"), 0);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(dbao_buf_printf(&b, "  t%d.c%d: {type: CN_MOBILE}\n", i, i), 0);
    mask_policy *p = NULL;
    dbao_err err;
    assert_int_equal(mask_policy_parse(&p, b.data, b.len, "many.yaml", &err), 0);
    assert_int_equal(mask_policy_num_rules(p), 5000);
    assert_non_null(mask_policy_column(p, "x", "t4999", "c4999"));
    assert_null(mask_policy_column(p, "x", "t4999", "c4998"));
    mask_policy_free(p);
    dbao_buf_free(&b);
}

/* Every allocation failure on the way is reported (no crash, no leak under ASan). */
static void
test_alloc_failures(void **state)
{
    (void) state;
    char name[128];
    snprintf(name, sizeof(name), "%s/policy.yaml", dir);
    int ok = 0;
    for (long n = 0; n < 2000 && !ok; n++) {
        mask_policy *p = NULL;
        dbao_err err;
        dbao_alloc_fail_after(n, false);
        int rc = mask_policy_parse(&p, FULL, strlen(FULL), name, &err);
        dbao_alloc_fail_after(-1, false);
        if (rc == 0) {
            assert_int_equal(mask_policy_num_rules(p), 9);
            ok = 1;
        } else {
            assert_null(p);
        }
        mask_policy_free(p);
    }
    assert_true(ok);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),       cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_negative),   cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_many_rules), cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
