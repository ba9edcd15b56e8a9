/* test_rbac.c: role-based access control (src/zt/rbac.c).
 *
 * Decisions: deny by default, allow by role, an explicit deny beating an allow (from the same
 * role, another role, the role "*", earlier or later in the text), method lists and "*", each
 * pattern kind (exact, "*", "{name}", a last "**", trailing slash, root), routes, rule ids.
 * Path tricks: un-normalised inputs ("/admin/../x", "%2e%2e", "//admin") are denied outright
 * by zt_rbac_check, and the same inputs after gw_path_normalize are judged on what they really
 * name, so they neither dodge a deny rule nor borrow an allow rule; "/Admin" is another path.
 * The normalised-form predicate is cross-checked against gw_path_normalize. Policy text:
 * negatives with the line number in the message, loading from a file, every allocation
 * failing in turn, a large generated policy (parse time and check cost printed). Hot swap:
 * reader threads check through a slot while the main thread swaps two policies; every
 * decision must come from one whole policy (ASan sees any use after free).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dengbao/gateway.h"
#include "dengbao/zt.h"

static zt_rbac *
parse_ok(const char *text)
{
    zt_rbac *p = NULL;
    dbao_err err = {0};
    int rc = zt_rbac_parse(&p, text, strlen(text), "t.yaml", &err);
    if (rc != 0) {
        fail_msg("policy refused: %s", err.msg);
    }
    assert_non_null(p);
    return p;
}

/* check returns 'A' or 'D' and compares the deciding rule with `want_rule` (NULL: skip) */
static void
expect(const zt_rbac *p, const char *roles_csv, const char *method, const char *path,
       const char *route, zt_rbac_decision want, const char *want_rule)
{
    const char *roles[8];
    char buf[256];
    size_t n = 0;
    snprintf(buf, sizeof(buf), "%s", roles_csv);
    for (char *s = buf, *save = NULL, *tok; (tok = strtok_r(s, ",", &save)) != NULL; s = NULL) {
        roles[n++] = tok;
    }
    const char *rule = NULL;
    zt_rbac_decision d = zt_rbac_check(p, roles, n, method, path, route, &rule);
    if (d != want || (want_rule != NULL && strcmp(rule, want_rule) != 0)) {
        fail_msg("roles [%s] %s %s route %s: got %s by '%s', want %s by '%s'", roles_csv, method,
                 path, route ? route : "-", d == ZT_RBAC_ALLOW ? "allow" : "deny", rule,
                 want == ZT_RBAC_ALLOW ? "allow" : "deny", want_rule ? want_rule : "?");
    }
}

#define ALLOW ZT_RBAC_ALLOW
#define DENY  ZT_RBAC_DENY

static void
test_default_deny(void **state)
{
    (void) state;
    zt_rbac *p = parse_ok("roles: {}\n");
    expect(p, "doctor", "GET", "/", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "", "GET", "/x", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    assert_int_equal(zt_rbac_num_rules(p), 0);
    zt_rbac_unref(p);

    p = parse_ok("version: 1\n"
                 "roles:\n"
                 "  doctor:\n"
                 "    - {methods: [GET], path: \"/patients/{id}\"}\n"
                 "  clerk:\n");
    expect(p, "doctor", "GET", "/patients/7", NULL, ALLOW, "doctor#1");
    expect(p, "clerk", "GET", "/patients/7", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "nobody", "GET", "/patients/7", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "", "GET", "/patients/7", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    /* NULL arguments deny */
    const char *r = NULL;
    const char *roles[] = {"doctor"};
    assert_int_equal(zt_rbac_check(NULL, roles, 1, "GET", "/patients/7", NULL, &r), DENY);
    assert_int_equal(zt_rbac_check(p, roles, 1, NULL, "/patients/7", NULL, &r), DENY);
    assert_int_equal(zt_rbac_check(p, roles, 1, "GET", NULL, NULL, &r), DENY);
    assert_int_equal(zt_rbac_check(p, NULL, 0, "GET", "/patients/7", NULL, &r), DENY);
    const char *with_null[] = {NULL, "doctor"};
    assert_int_equal(zt_rbac_check(p, with_null, 2, "GET", "/patients/7", NULL, NULL), ALLOW);
    zt_rbac_unref(p);
}

static const char *POLICY = "roles:\n"
                            "  doctor:\n"
                            "    - id: read-patients\n"
                            "      methods: [GET, HEAD]\n"
                            "      path: /patients/{id}\n"
                            "    - id: write-notes\n"
                            "      methods: [POST, PUT]\n"
                            "      path: /patients/{id}/notes\n"
                            "    - id: no-psych\n"
                            "      effect: deny\n"
                            "      methods: \"*\"\n"
                            "      path: /patients/{id}/psych/**\n"
                            "    - id: records\n"
                            "      methods: \"*\"\n"
                            "      path: /patients/**\n"
                            "  clerk:\n"
                            "    - {id: clerk-list, methods: [GET], path: /patients}\n"
                            "    - {id: clerk-any, methods: [GET], path: /billing/*/items}\n"
                            "    - {id: clerk-slash, methods: [GET], path: /billing/}\n"
                            "    - {id: clerk-emr, methods: [DELETE], path: /x, route: emr}\n"
                            "  auditor:\n"
                            "    - {id: audit-deny-first, effect: deny, methods: [GET], path: "
                            "/patients/1}\n"
                            "  \"*\":\n"
                            "    - {id: health, methods: [GET], path: /healthz}\n"
                            "    - {id: root, methods: [GET], path: /}\n"
                            "    - {id: internal, effect: deny, methods: \"*\", path: "
                            "\"/patients/{id}/internal\"}\n";

static void
test_allow_and_deny(void **state)
{
    (void) state;
    zt_rbac *p = parse_ok(POLICY);
    assert_int_equal(zt_rbac_num_rules(p), 12);
    /* allow by role, the first matching allow in text order decides */
    expect(p, "doctor", "GET", "/patients/42", NULL, ALLOW, "read-patients");
    expect(p, "doctor", "DELETE", "/patients/42", NULL, ALLOW, "records");
    expect(p, "doctor", "POST", "/patients/42/notes", NULL, ALLOW, "write-notes");
    /* deny beats allow: same role, later allow; the role "*" */
    expect(p, "doctor", "GET", "/patients/42/psych", NULL, DENY, "no-psych");
    expect(p, "doctor", "GET", "/patients/42/psych/notes/1", NULL, DENY, "no-psych");
    expect(p, "doctor", "GET", "/patients/42/internal", NULL, DENY, "internal");
    /* deny from another role the subject also has */
    expect(p, "doctor,auditor", "GET", "/patients/1", NULL, DENY, "audit-deny-first");
    expect(p, "auditor,doctor", "GET", "/patients/2", NULL, ALLOW, "read-patients");
    expect(p, "doctor,doctor", "GET", "/patients/2", NULL, ALLOW, "read-patients");
    /* the role "*" applies to everyone, also without roles */
    expect(p, "", "GET", "/healthz", NULL, ALLOW, "health");
    expect(p, "clerk", "GET", "/", NULL, ALLOW, "root");
    expect(p, "*", "GET", "/patients/1", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    zt_rbac_unref(p);
}

static void
test_methods(void **state)
{
    (void) state;
    zt_rbac *p = parse_ok(POLICY);
    expect(p, "doctor", "HEAD", "/patients/1", NULL, ALLOW, "read-patients");
    expect(p, "clerk", "GET", "/patients", NULL, ALLOW, "clerk-list");
    expect(p, "clerk", "POST", "/patients", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "clerk", "get", "/patients", NULL, DENY, ZT_RBAC_RULE_DEFAULT); /* case */
    expect(p, "clerk", "GETX", "/patients", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "clerk", "", "/patients", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    /* "*" takes any method, also unknown ones */
    expect(p, "doctor", "PROPFIND", "/patients/1/x", NULL, ALLOW, "records");
    expect(p, "doctor", "OPTIONS", "/patients/1/x", NULL, ALLOW, "records");
    zt_rbac_unref(p);
}

static void
test_patterns(void **state)
{
    (void) state;
    zt_rbac *p = parse_ok(POLICY);
    /* exact */
    expect(p, "clerk", "GET", "/patients/", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "clerk", "GET", "/patientsx", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "clerk", "GET", "/patients/1", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    /* "{id}": one non-empty segment */
    expect(p, "doctor", "GET", "/patients/", NULL, ALLOW, "records");     /* via "**" */
    expect(p, "doctor", "HEAD", "/patients/1/2", NULL, ALLOW, "records"); /* not read-patients */
    expect(p, "doctor", "GET", "/patients/1/2", NULL, ALLOW, "records");
    /* "*" in the middle */
    expect(p, "clerk", "GET", "/billing/2024/items", NULL, ALLOW, "clerk-any");
    expect(p, "clerk", "GET", "/billing/2024/items/", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "clerk", "GET", "/billing/a/b/items", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "clerk", "GET", "/billing/items", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    /* trailing slash is part of the path */
    expect(p, "clerk", "GET", "/billing/", NULL, ALLOW, "clerk-slash");
    expect(p, "clerk", "GET", "/billing", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    /* "**": the prefix itself, with a slash, and below, at segment boundaries only */
    expect(p, "doctor", "GET", "/patients", NULL, ALLOW, "records");
    expect(p, "doctor", "PUT", "/patients/1/psych", NULL, DENY, "no-psych");
    expect(p, "doctor", "PUT", "/patients/1/psych/", NULL, DENY, "no-psych");
    expect(p, "doctor", "PUT", "/patients/1/psychology", NULL, ALLOW, "records");
    expect(p, "doctor", "PUT", "/patientsx/1", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    /* route */
    expect(p, "clerk", "DELETE", "/x", "emr", ALLOW, "clerk-emr");
    expect(p, "clerk", "DELETE", "/x", "his", DENY, ZT_RBAC_RULE_DEFAULT);
    expect(p, "clerk", "DELETE", "/x", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    /* root */
    expect(p, "", "GET", "/", NULL, ALLOW, "root");
    expect(p, "", "GET", "/healthz/", NULL, DENY, ZT_RBAC_RULE_DEFAULT);
    zt_rbac_unref(p);

    /* A final "**" at the root covers everything, also "/"; a literal and a wildcard at the same
     * level both considered; escaped bytes are literal */
    p = parse_ok("roles:\n"
                 "  a:\n"
                 "    - {id: all, methods: [GET], path: \"/**\"}\n"
                 "    - {id: lit, effect: deny, methods: [GET], path: /x/y/z}\n"
                 "    - {id: wild, effect: deny, methods: [GET], path: /x/*/w}\n"
                 "    - {id: esc, effect: deny, methods: [GET], path: /%E4%B8%AD/%3A}\n");
    expect(p, "a", "GET", "/", NULL, ALLOW, "all");
    expect(p, "a", "GET", "/x/y/z", NULL, DENY, "lit");
    expect(p, "a", "GET", "/x/y/w", NULL, DENY, "wild");
    expect(p, "a", "GET", "/x/y/q", NULL, ALLOW, "all");
    expect(p, "a", "GET", "/%E4%B8%AD/%3A", NULL, DENY, "esc");
    expect(p, "a", "GET", "/%E4%B8%AD/:", NULL, ALLOW, "all"); /* ':' is not "%3A" */
    zt_rbac_unref(p);
}

static const char *TRICK_POLICY = "roles:\n"
                                  "  user:\n"
                                  "    - {id: user-all, methods: \"*\", path: \"/**\"}\n"
                                  "    - {id: no-admin, effect: deny, methods: \"*\", path: "
                                  "\"/admin/**\"}\n"
                                  "  admin:\n"
                                  "    - {id: admin, methods: \"*\", path: \"/admin/**\"}\n";

/* through runs the gateway's normaliser first, as the gateway does; a refused path is a 400 and
 * never reaches zt_rbac_check (reported here as "refused") */
static const char *
through(const zt_rbac *p, const char *role, const char *raw)
{
    char norm[256];
    const char *roles[] = {role};
    if (gw_path_normalize(raw, norm, sizeof(norm)) != 0) {
        return "refused";
    }
    return zt_rbac_check(p, roles, 1, "GET", norm, NULL, NULL) == ALLOW ? "allow" : "deny";
}

static void
test_path_tricks(void **state)
{
    (void) state;
    zt_rbac *p = parse_ok(TRICK_POLICY);
    static const struct {
        const char *raw;
        const char *user, *admin; /* after gw_path_normalize */
    } T[] = {
        {"/admin/users", "deny", "allow"},
        {"/admin", "deny", "allow"},
        {"/admin/", "deny", "allow"},
        {"/adminx", "allow", "deny"},
        {"/admin/../x", "allow", "deny"},       /* really "/x" */
        {"/x/../admin/users", "deny", "allow"}, /* really "/admin/users" */
        {"/x/%2e%2e/admin", "deny", "allow"},
        {"/x/%2E%2E/admin/", "deny", "allow"},
        {"/%2e%2e/admin", "refused", "refused"},
        {"/admin%2fusers", "refused", "refused"},
        {"/admin%2Fusers", "refused", "refused"},
        {"/admin\\users", "refused", "refused"},
        {"//admin", "deny", "allow"},
        {"/x//..//admin", "deny", "allow"},
        {"/./admin/./users", "deny", "allow"},
        {"/%61dmin/users", "deny", "allow"}, /* %61 is 'a' */
        {"/Admin/users", "allow", "deny"},   /* case-sensitive: another path */
        {"/ADMIN", "allow", "deny"},
        {"/admin%20/x", "allow", "deny"}, /* "admin " is another segment */
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        const char *u = through(p, "user", T[i].raw);
        const char *a = through(p, "admin", T[i].raw);
        if (strcmp(u, T[i].user) != 0 || strcmp(a, T[i].admin) != 0) {
            fail_msg("%s: user %s (want %s), admin %s (want %s)", T[i].raw, u, T[i].user, a,
                     T[i].admin);
        }
    }
    /* handed over un-normalised, every trick is denied whoever asks */
    static const char *const RAW[] = {
        "/admin/../x",
        "/x/../admin",
        "/x/%2e%2e/admin",
        "/x/%2E%2E/admin",
        "//admin",
        "/x//admin",
        "/./admin",
        "/admin/.",
        "/admin/..",
        "/%61dmin",
        "/admin%2fx",
        "/admin%3a",
        "/admin\\x",
        "admin",
        "",
        "/admin/\t",
        "/x/%7E",
        "/x/%zz",
        "/x/%",
        "/x/%4",
    };
    for (size_t i = 0; i < sizeof(RAW) / sizeof(RAW[0]); i++) {
        expect(p, "user", "GET", RAW[i], NULL, DENY, ZT_RBAC_RULE_BAD_PATH);
        expect(p, "admin", "GET", RAW[i], NULL, DENY, ZT_RBAC_RULE_BAD_PATH);
        assert_false(zt_rbac_path_is_normalized(RAW[i]));
    }
    zt_rbac_unref(p);
}

static void
test_normalized_form(void **state)
{
    (void) state;
    /* zt_rbac_path_is_normalized(x) iff gw_path_normalize(x) accepts x and gives x back */
    static const char *const P[] = {
        "/",     "/a",      "/a/",  "/a/b",  "//",      "/a//b", "/.",     "/..",    "/a/.",
        "/a/..", "/...",    "/.a",  "/a..",  "/%41",    "/%3a",  "/%3A",   "/%2F",   "/%5C",
        "/%00",  "/%E4%B8", "/%e4", "/a?b",  "/a#b",    "/a b",  "/a\\",   "/a\x01", "/\x7f",
        "/\x80", "/%",      "/%4",  "/%G0",  "a",       "",      "/a/./b", "/%2E",   "/%2e",
        "/~",    "/%7E",    "/*",   "/{id}", "/a/b/c/", "/%25",  "/%2525", "/a%20b", "/a/%2E%2E/b",
    };
    for (size_t i = 0; i < sizeof(P) / sizeof(P[0]); i++) {
        char out[64];
        bool fix = gw_path_normalize(P[i], out, sizeof(out)) == 0 && strcmp(out, P[i]) == 0;
        if (fix != zt_rbac_path_is_normalized(P[i])) {
            fail_msg("'%s': gw_path_normalize fixpoint %d, zt_rbac_path_is_normalized %d", P[i],
                     fix, !fix);
        }
    }
    assert_false(zt_rbac_path_is_normalized(NULL));
}

static void
test_yaml_errors(void **state)
{
    (void) state;
    static const struct {
        const char *text;
        const char *msg; /* expected substring */
    } T[] = {
        {"", "t.yaml:1: empty policy"},
        {"roles: [\n", "t.yaml:2: yaml:"},
        {"- a\n", "t.yaml:1: the policy must be a mapping"},
        {"version: 1\n", "t.yaml:1: missing 'roles'"},
        {"version: 2\nroles: {}\n", "t.yaml:1: 'version' must be 1"},
        {"version: \"1\"\nroles: {}\n", "t.yaml:1: 'version' must be 1"},
        {"roles: {}\nrole: {}\n", "t.yaml:2: unknown key 'role'"},
        {"roles: {}\nroles: {}\n", "t.yaml:2: duplicate key 'roles'"},
        {"roles: {}\n---\nroles: {}\n", "t.yaml:3: more than one yaml document"},
        {"roles: []\n", "t.yaml:1: 'roles' must be a mapping"},
        {"roles:\n  a: x\n", "t.yaml:2: role 'a' must be a list of rules"},
        {"roles:\n  a: []\n  a: []\n", "t.yaml:3: duplicate role 'a'"},
        {"roles:\n  a:\n    - x\n", "t.yaml:3: a rule must be a mapping in rule 1 of role 'a'"},
        {"roles:\n  a:\n    - methods: [GET]\n", "t.yaml:3: missing 'path' in rule 1"},
        {"roles:\n  a:\n    - path: /x\n", "t.yaml:3: missing 'methods'"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET]}\n    - path: /y\n      "
         "methods:\n"
         "        - GET\n        - GTE\n",
         "t.yaml:7: unknown method 'GTE' in rule 2 of role 'a'"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET, GET]}\n", "t.yaml:3: duplicate method"},
        {"roles:\n  a:\n    - {path: /x, methods: [\"G T\"]}\n", "t.yaml:3: bad method"},
        {"roles:\n  a:\n    - {path: /x, methods: []}\n", "'methods' must not be empty"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET, \"*\"]}\n", "'*' must be the whole"},
        {"roles:\n  a:\n    - {path: /x, methods: GET}\n", "'methods' must be \"*\" or a list"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET], pth: /y}\n",
         "t.yaml:3: unknown key 'pth' in rule 1 of role 'a'"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET], path: /y}\n", "duplicate key 'path'"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET], effect: permit}\n",
         "'effect' must be allow or deny"},
        {"roles:\n  a:\n    - {path: x, methods: [GET]}\n", "t.yaml:3: path 'x' is not a norm"},
        {"roles:\n  a:\n    - {path: /a//b, methods: [GET]}\n", "is not a normalised path"},
        {"roles:\n  a:\n    - {path: /a/../b, methods: [GET]}\n", "is not a normalised path"},
        {"roles:\n  a:\n    - {path: /%2e, methods: [GET]}\n", "is not a normalised path"},
        {"roles:\n  a:\n    - {path: /a%3a, methods: [GET]}\n", "is not a normalised path"},
        {"roles:\n  a:\n    - {path: \"/**/x\", methods: [GET]}\n", "'**' must be the last"},
        {"roles:\n  a:\n    - {path: \"/a*\", methods: [GET]}\n", "bad segment 'a*'"},
        {"roles:\n  a:\n    - {path: \"/{1d}\", methods: [GET]}\n", "bad segment '{1d}'"},
        {"roles:\n  a:\n    - {path: \"/{}\", methods: [GET]}\n", "bad segment '{}'"},
        {"roles:\n  a:\n    - {path: \"/{a\", methods: [GET]}\n", "bad segment '{a'"},
        {"roles:\n  a:\n    - {path: \"\", methods: [GET]}\n", "'path' must not be empty"},
        {"roles:\n  a:\n    - {path: ~, methods: [GET]}\n", "'path' must be a string"},
        {"roles:\n  a:\n    - {path: [/x], methods: [GET]}\n", "'path' must be a string"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET], route: \"\"}\n",
         "'route' must not be empty"},
        {"roles:\n  a:\n    - {id: r, path: /x, methods: [GET]}\n    - {id: r, "
         "path: /y, "
         "methods: [GET]}\n",
         "t.yaml:4: duplicate rule id 'r'"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET]}\n  b:\n    - {id: "
         "\"a#1\", path: /y, "
         "methods: [GET]}\n",
         "t.yaml:5: duplicate rule id 'a#1'"},
        {"roles:\n  a:\n    - {id: default-deny, path: /x, methods: [GET]}\n", "is reserved"},
        {"roles:\n  a:\n    - &r {path: /x, methods: [GET]}\n  b:\n    - *r\n",
         "t.yaml:3: yaml aliases are not supported"},
        {"roles:\n  ? [a]\n  : []\n", "t.yaml:2: 'roles' must be a string"},
        {"roles:\n  a:\n    - {path: /x, methods: [GET]}\n    - {path: /x, "
         "methods: [GET], "
         "description: [x]}\n",
         "t.yaml:4: 'description' must be a string in rule 2 of role 'a'"},
    };
    for (size_t i = 0; i < sizeof(T) / sizeof(T[0]); i++) {
        zt_rbac *p = (zt_rbac *) 1;
        dbao_err err = {0};
        int rc = zt_rbac_parse(&p, T[i].text, strlen(T[i].text), "t.yaml", &err);
        if (rc != DBAO_EFORMAT || p != NULL || strstr(err.msg, T[i].msg) == NULL) {
            fail_msg("case %zu: rc %d, message '%s', want '%s'", i, rc, err.msg, T[i].msg);
        }
    }
    /* depth limit */
    char deep[1024];
    int off = snprintf(deep, sizeof(deep), "roles:\n  a:\n    - {methods: [GET], path: ");
    for (int i = 0; i < ZT_RBAC_MAX_DEPTH + 1; i++) {
        off += snprintf(deep + off, sizeof(deep) - (size_t) off, "/a");
    }
    snprintf(deep + off, sizeof(deep) - (size_t) off, "}\n");
    zt_rbac *p = NULL;
    dbao_err err = {0};
    assert_int_equal(zt_rbac_parse(&p, deep, strlen(deep), "t.yaml", &err), DBAO_EFORMAT);
    assert_non_null(strstr(err.msg, "more than 64 segments"));
    /* not NUL-terminated input: only `len` bytes are read */
    const char *txt = "roles: {}\nGARBAGE";
    assert_int_equal(zt_rbac_parse(&p, txt, 10, "t.yaml", &err), 0);
    zt_rbac_unref(p);
    assert_int_equal(zt_rbac_parse(NULL, txt, 10, "t.yaml", &err), DBAO_EINVAL);
}

static void
test_load(void **state)
{
    (void) state;
    char path[] = "/tmp/zt_rbac_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, POLICY, strlen(POLICY)), (ssize_t) strlen(POLICY));
    close(fd);
    zt_rbac *p = NULL;
    dbao_err err = {0};
    assert_int_equal(zt_rbac_load(&p, path, &err), 0);
    expect(p, "doctor", "GET", "/patients/42", NULL, ALLOW, "read-patients");
    zt_rbac_unref(p);
    /* errors name the file */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "roles:\n  a: 1\n", 14), 14);
    close(fd);
    assert_int_equal(zt_rbac_load(&p, path, &err), DBAO_EFORMAT);
    assert_null(p);
    char want[64];
    snprintf(want, sizeof(want), "%s:2:", path);
    assert_non_null(strstr(err.msg, want));
    unlink(path);
    assert_true(zt_rbac_load(&p, path, &err) < 0);
    assert_null(p);
}

static void
test_alloc_failures(void **state)
{
    (void) state;
    for (long n = 0;; n++) {
        zt_rbac *p = NULL;
        dbao_alloc_fail_after(n, false);
        int rc = zt_rbac_parse(&p, POLICY, strlen(POLICY), "t.yaml", NULL);
        dbao_alloc_fail_after(-1, false);
        if (rc == 0) {
            expect(p, "doctor", "GET", "/patients/42", NULL, ALLOW, "read-patients");
            zt_rbac_unref(p);
            assert_true(n > 10);
            break;
        }
        assert_int_equal(rc, DBAO_ENOMEM);
        assert_null(p);
    }
    /* the slot */
    dbao_alloc_fail_after(0, false);
    zt_rbac_slot *s = NULL;
    assert_int_equal(zt_rbac_slot_new(&s, NULL), DBAO_ENOMEM);
    dbao_alloc_fail_after(-1, false);
}

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

/* a large generated policy: 100 roles x 200 rules; parse time and check cost (printed) */
static void
test_large_policy(void **state)
{
    (void) state;
    dbao_buf b = {0};
    assert_int_equal(dbao_buf_printf(&b, "roles:\n"), 0);
    for (int r = 0; r < 100; r++) {
        assert_int_equal(dbao_buf_printf(&b, "  role%d:\n", r), 0);
        for (int j = 0; j < 200; j++) {
            assert_int_equal(dbao_buf_printf(&b,
                                             "    - {methods: [GET, POST], path: "
                                             "\"/svc%d/res%d/{id}/**\"}\n",
                                             j, r),
                             0);
        }
        assert_int_equal(dbao_buf_printf(&b,
                                         "    - {effect: deny, methods: \"*\", path: "
                                         "\"/svc%d/res%d/*/secret\"}\n",
                                         r, r),
                         0);
    }
    uint64_t t0 = mono_ns();
    zt_rbac *p = parse_ok(b.data);
    uint64_t t1 = mono_ns();
    assert_int_equal(zt_rbac_num_rules(p), 100 * 201);
    const char *roles[] = {"role7", "role42", "nobody"};
    enum { N = 200000 };
    int allowed = 0;
    uint64_t t2 = mono_ns();
    for (int i = 0; i < N; i++) {
        static const char *const paths[] = {"/svc3/res7/123/x", "/svc42/res42/9/secret",
                                            "/svc199/res42/1", "/nothing/here"};
        allowed += zt_rbac_check(p, roles, 3, "GET", paths[i & 3], NULL, NULL) == ALLOW;
    }
    uint64_t t3 = mono_ns();
    assert_int_equal(allowed, N / 2);
    printf("rbac: %zu rules parsed in %.1f ms; check %.0f ns (3 roles, 4 paths)\n",
           zt_rbac_num_rules(p), (double) (t1 - t0) / 1e6, (double) (t3 - t2) / N);
    expect(p, "role42", "GET", "/svc42/res42/9/secret", NULL, DENY, "role42#201");
    zt_rbac_unref(p);
    dbao_buf_free(&b);
}

/* ---- hot swap under threads ---- */

static const char *POL_A = "roles:\n  u:\n    - {id: a, methods: [GET], path: /a}\n";
static const char *POL_B = "roles:\n  u:\n    - {id: b, methods: [GET], path: /b}\n";

typedef struct reader {
    zt_rbac_slot *slot;
    atomic_bool *stop;
    long checks, seen_a, seen_b, bad;
} reader;

static void *
reader_main(void *arg)
{
    reader *r = arg;
    zt_rbac_local local = {0};
    const char *roles[] = {"u"};
    while (!atomic_load(r->stop) || r->checks < 1000) {
        const zt_rbac *p = zt_rbac_slot_get(r->slot, &local);
        const char *ra = NULL, *rb = NULL;
        zt_rbac_decision da = zt_rbac_check(p, roles, 1, "GET", "/a", NULL, &ra);
        zt_rbac_decision db = zt_rbac_check(p, roles, 1, "GET", "/b", NULL, &rb);
        if (da == ALLOW && db == DENY && strcmp(ra, "a") == 0) {
            r->seen_a++;
        } else if (da == DENY && db == ALLOW && strcmp(rb, "b") == 0) {
            r->seen_b++;
        } else {
            r->bad++;
        }
        r->checks++;
    }
    zt_rbac_local_cleanup(&local);
    return NULL;
}

static void
test_hot_swap(void **state)
{
    (void) state;
    enum { NR = 4, SWAPS = 2000 };
    zt_rbac_slot *slot = NULL;
    assert_int_equal(zt_rbac_slot_new(&slot, parse_ok(POL_A)), 0);
    atomic_bool stop = false;
    reader rd[NR];
    pthread_t th[NR];
    for (int i = 0; i < NR; i++) {
        rd[i] = (reader){.slot = slot, .stop = &stop};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &rd[i]), 0);
    }
    for (int i = 0; i < SWAPS; i++) {
        zt_rbac *next = parse_ok(i % 2 ? POL_A : POL_B);
        zt_rbac_slot_set(slot, next);
        /* a bad policy is refused and the slot keeps the old one */
        if (i % 100 == 0) {
            zt_rbac *bad = NULL;
            assert_int_equal(zt_rbac_parse(&bad, "roles: [", 8, "etcd:/p", NULL), DBAO_EFORMAT);
        }
    }
    atomic_store(&stop, true);
    long a = 0, b = 0;
    for (int i = 0; i < NR; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rd[i].bad, 0);
        a += rd[i].seen_a;
        b += rd[i].seen_b;
    }
    assert_true(a + b >= NR * 1000);
    /* after the last swap (i = SWAPS - 1, odd: POL_A) a fresh reader sees A */
    zt_rbac_local local = {0};
    const char *roles[] = {"u"};
    assert_int_equal(
        zt_rbac_check(zt_rbac_slot_get(slot, &local), roles, 1, "GET", "/a", NULL, NULL), ALLOW);
    /* an empty slot denies */
    zt_rbac_slot_set(slot, NULL);
    assert_null(zt_rbac_slot_get(slot, &local));
    assert_int_equal(
        zt_rbac_check(zt_rbac_slot_get(slot, &local), roles, 1, "GET", "/a", NULL, NULL), DENY);
    zt_rbac_local_cleanup(&local);
    zt_rbac_slot_free(slot);
    zt_rbac_slot_free(NULL);
    zt_rbac_unref(NULL);
    assert_null(zt_rbac_ref(NULL));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_deny),   cmocka_unit_test(test_allow_and_deny),
        cmocka_unit_test(test_methods),        cmocka_unit_test(test_patterns),
        cmocka_unit_test(test_path_tricks),    cmocka_unit_test(test_normalized_form),
        cmocka_unit_test(test_yaml_errors),    cmocka_unit_test(test_load),
        cmocka_unit_test(test_alloc_failures), cmocka_unit_test(test_hot_swap),
        cmocka_unit_test(test_large_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
