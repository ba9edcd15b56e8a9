/* test_catalog.c: the masking proxy's catalog (sqlmask.h) against a real PostgreSQL 15, and
 * rewritten statements run on it.
 *
 * The group setup starts PostgreSQL with scripts/services.sh (found relative to this file or
 * through DBAO_SOURCE_DIR; a failure to start fails the tests) and creates tables, a domain, a
 * column comment with a @PII tag, views (one over another), a materialized view, a function and a
 * procedure over the trusted unix socket; the teardown stops it. Tests: loading (relations, kinds,
 * columns in attnum order, format_type names, comments, view definitions, functions), binding with
 * a policy (column rules, data type, comment tag, view lineage), and statements rewritten for a
 * masked role executed with libpq: every masked value comes back as marker, action index, ':' and
 * the hex of the clear UTF-8 value, NULL stays NULL, clear columns are untouched, also through
 * COPY, PREPARE/EXECUTE, cursors, views and RETURNING. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sql_internal.h"
#include "testsvc.h"

#define MARKER                                                                                     \
    "\x1f"                                                                                         \
    "Zq9"

static tu_svc g_svc;
static char g_ci[512];
static int g_pgport;

static const char POLICY[] =
    "derived: \"replace('***')\"\n"
    "data_types: {cn_rid: CN_RID18}\n"
    "columns:\n"
    "  public.patients.id_no: {type: CN_RID18, mask: \"keep(6,4)\", roles: {doctor: clear}}\n"
    "  patients.name: {type: CN_NAME, roles: {doctor: clear}}\n";

static const char *const SETUP_SQL[] = {
    "CREATE DOMAIN cn_rid AS varchar(18)",
    "CREATE TABLE patients (id int PRIMARY KEY, name text, id_no text, phone text, "
    "notes text, rid cn_rid, dropped int)",
    "ALTER TABLE patients DROP COLUMN dropped",
    "COMMENT ON COLUMN patients.phone IS 'mobile number @PII:CN_MOBILE'",
    "COMMENT ON COLUMN patients.notes IS 'free text, no tag'",
    "CREATE SCHEMA other",
    "CREATE TABLE other.patients (id int, name text)",
    "CREATE TABLE visits (id int, patient_id int, diag text)",
    "CREATE VIEW v_pat AS SELECT id, name AS nm, lower(id_no) AS lid FROM patients",
    "CREATE VIEW v_v AS SELECT nm, lid FROM v_pat",
    "CREATE MATERIALIZED VIEW mv AS SELECT id_no AS i, id FROM patients",
    "CREATE FUNCTION leak(int) RETURNS text LANGUAGE sql AS "
    "'SELECT id_no FROM patients WHERE id = $1'",
    "CREATE PROCEDURE proc1() LANGUAGE sql AS 'SELECT 1'",
    "CREATE VIEW v_fn AS SELECT public.leak(id) AS x, id FROM visits",
    "INSERT INTO patients VALUES (1, '张三', '110105199001011234', '13800138000', 'hi', "
    "'11010519900101123X'), (2, NULL, NULL, NULL, NULL, NULL)",
    "INSERT INTO visits VALUES (1, 1, 'flu')",
    "REFRESH MATERIALIZED VIEW mv",
};

static int
group_setup(void **state)
{
    (void) state;
    if (tu_svc_init(&g_svc, "mcat-test") != 0 ||
        (g_pgport = tu_svc_start(&g_svc, "postgres", 0)) <= 0) {
        return -1;
    }
    snprintf(g_ci, sizeof g_ci, "host=%s/postgres port=%d user=postgres dbname=postgres", g_svc.dir,
             g_pgport);
    PGconn *c = PQconnectdb(g_ci);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connection: %s", PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < sizeof(SETUP_SQL) / sizeof(SETUP_SQL[0]) && rc == 0; i++) {
        PGresult *r = PQexec(c, SETUP_SQL[i]);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "setup: %s: %s", SETUP_SQL[i], PQerrorMessage(c));
            rc = -1;
        }
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}

static int
group_teardown(void **state)
{
    (void) state;
    return tu_svc_cleanup(&g_svc);
}

static const mcat_rel *
rel(const mask_catalog *c, const char *schema, const char *name)
{
    for (size_t i = 0; i < c->num_rels; i++) {
        if (strcmp(c->rels[i].schema, schema) == 0 && strcmp(c->rels[i].name, name) == 0) {
            return &c->rels[i];
        }
    }
    fail_msg("relation %s.%s not loaded", schema, name);
    return NULL;
}

static const mcat_col *
col(const mcat_rel *r, const char *name)
{
    for (size_t i = 0; i < r->num_cols; i++) {
        if (strcmp(r->cols[i].name, name) == 0) {
            return &r->cols[i];
        }
    }
    fail_msg("column %s.%s not loaded", r->name, name);
    return NULL;
}

static mask_catalog *
load(void)
{
    mask_catalog *c = NULL;
    dbao_err e = {0};
    assert_int_equal(mask_catalog_new(&c), 0);
    int rc = mask_catalog_load_pg(c, g_ci, &e);
    if (rc != 0) {
        fail_msg("load: %s", e.msg);
    }
    return c;
}

static mask_policy *
policy(void)
{
    mask_policy *p = NULL;
    dbao_err e = {0};
    if (mask_policy_parse(&p, POLICY, strlen(POLICY), "t.yaml", &e) != 0) {
        fail_msg("policy: %s", e.msg);
    }
    return p;
}

static void
test_load(void **state)
{
    (void) state;
    mask_catalog *c = load();
    const mcat_rel *p = rel(c, "public", "patients");
    assert_int_equal(p->kind, 'r');
    assert_null(p->view_sql);
    assert_int_equal(p->num_cols, 6); /* the dropped column is gone */
    static const char *const names[] = {"id", "name", "id_no", "phone", "notes", "rid"};
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(p->cols[i].name, names[i]);
    }
    assert_string_equal(col(p, "id")->type_name, "integer");
    assert_string_equal(col(p, "rid")->type_name, "public.cn_rid");
    assert_string_equal(col(p, "phone")->comment, "mobile number @PII:CN_MOBILE");
    assert_null(col(p, "name")->comment);
    assert_int_equal(rel(c, "other", "patients")->num_cols, 2);
    const mcat_rel *v = rel(c, "public", "v_v");
    assert_int_equal(v->kind, 'v');
    assert_non_null(v->view_sql);
    assert_non_null(strstr(v->view_sql, "public.v_pat"));
    assert_int_equal(rel(c, "public", "mv")->kind, 'm');
    assert_non_null(rel(c, "public", "mv")->view_sql);
    bool leak = false, proc = false, sys = false;
    for (size_t i = 0; i < c->num_funcs; i++) {
        leak |= strcmp(c->funcs[i].name, "leak") == 0 && strcmp(c->funcs[i].schema, "public") == 0;
        proc |= strcmp(c->funcs[i].name, "proc1") == 0;
        sys |= strcmp(c->funcs[i].schema, "pg_catalog") == 0;
    }
    assert_true(leak);
    assert_true(proc);
    assert_false(sys);
    for (size_t i = 0; i < c->num_rels; i++) {
        assert_string_not_equal(c->rels[i].schema, "pg_catalog");
        assert_string_not_equal(c->rels[i].schema, "information_schema");
    }
    mask_catalog_free(c);

    /* a bad conninfo is an error naming the connection, not a crash */
    dbao_err e = {0};
    assert_int_equal(mask_catalog_new(&c), 0);
    assert_int_equal(mask_catalog_load_pg(c, "host=127.0.0.1 port=1 connect_timeout=2", &e),
                     DBAO_EIO);
    assert_non_null(strstr(e.msg, "cannot connect"));
    mask_catalog_free(c);
}

static void
test_bind(void **state)
{
    (void) state;
    mask_catalog *c = load();
    mask_policy *pol = policy();
    dbao_err e = {0};
    assert_int_equal(mask_catalog_bind(c, pol, &e), 0);
    const mcat_rel *p = rel(c, "public", "patients");
    assert_ptr_equal(col(p, "id_no")->rule, mask_policy_column(pol, "public", "patients", "id_no"));
    assert_ptr_equal(col(p, "name")->rule, mask_policy_column(pol, "public", "patients", "name"));
    assert_ptr_equal(col(p, "rid")->rule, mask_policy_type_rule(pol, MASK_T_CN_RID18));
    assert_ptr_equal(col(p, "phone")->rule, mask_policy_type_rule(pol, MASK_T_CN_MOBILE));
    assert_null(col(p, "notes")->rule);
    assert_null(col(p, "id")->rule);
    /* "patients.name" matches the table in any schema */
    assert_non_null(col(rel(c, "other", "patients"), "name")->rule);
    /* views: direct and derived lineage, through a view over a view */
    const mcat_rel *v = rel(c, "public", "v_v");
    assert_int_equal(v->view_state, MCAT_VIEW_DONE);
    assert_true(v->sensitive);
    const mcat_col *nm = col(v, "nm"), *lid = col(v, "lid");
    assert_int_equal(nm->taint.n, 1);
    assert_false(nm->taint.derived);
    assert_string_equal(c->sens[nm->taint.ids[0]].path, "public.patients.name");
    assert_int_equal(lid->taint.n, 1);
    assert_true(lid->taint.derived);
    assert_string_equal(c->sens[lid->taint.ids[0]].path, "public.patients.id_no");
    const mcat_rel *mv = rel(c, "public", "mv");
    assert_false(col(mv, "i")->taint.derived);
    assert_int_equal(col(mv, "i")->taint.n, 1);
    assert_int_equal(col(mv, "id")->taint.n, 0);
    /* a view calling a user function fails closed: every column derived */
    const mcat_rel *vf = rel(c, "public", "v_fn");
    assert_int_equal(vf->view_state, MCAT_VIEW_FAILED);
    assert_true(col(vf, "id")->taint.derived);
    assert_int_equal(col(vf, "x")->taint.n, c->num_sens);
    /* bound catalogs are read-only */
    assert_int_equal(mask_catalog_add_relation(c, "public", "x", 'r', NULL), DBAO_EINVAL);
    mask_catalog_free(c);
    mask_policy_free(pol);
}

/* ---- rewritten statements on the server ----------------------------------------------------- */

typedef struct env {
    mask_catalog *cat;
    mask_policy *pol;
    PGconn *conn;
} env;

static int
env_setup(void **state)
{
    env *v = calloc(1, sizeof(*v));
    dbao_err e = {0};
    if (v == NULL || mask_catalog_new(&v->cat) != 0 ||
        mask_catalog_load_pg(v->cat, g_ci, &e) != 0 ||
        mask_policy_parse(&v->pol, POLICY, strlen(POLICY), "t.yaml", &e) != 0 ||
        mask_catalog_bind(v->cat, v->pol, &e) != 0) {
        fprintf(stderr, "env: %s\n", e.msg);
        return -1;
    }
    v->conn = PQconnectdb(g_ci);
    if (PQstatus(v->conn) != CONNECTION_OK) {
        return -1;
    }
    *state = v;
    return 0;
}

static int
env_teardown(void **state)
{
    env *v = *state;
    PQfinish(v->conn);
    mask_catalog_free(v->cat);
    mask_policy_free(v->pol);
    free(v);
    return 0;
}

static char *
rewrite(env *v, const char *sql)
{
    static const char *const roles[] = {"clerk"};
    mask_sql_opts o = {v->cat, v->pol, roles, 1, MARKER, false};
    mask_sql_result r;
    assert_int_equal(mask_sql_rewrite(&o, sql, strlen(sql), &r, NULL), 0);
    if (r.verdict != MASK_SQL_REWRITE) {
        fail_msg("%s: want REWRITE, got %d %s %s", sql, r.verdict, r.sqlstate,
                 r.message ? r.message : "");
    }
    char *s = strdup(r.sql);
    mask_sql_result_cleanup(&r);
    return s;
}

static int
action(env *v, const char *rule_col, bool derived)
{
    static const char *const roles[] = {"clerk"};
    if (derived) {
        return mask_policy_derived_action(v->pol);
    }
    if (strcmp(rule_col, "phone") == 0) {
        return mask_rule_action_for(mask_policy_type_rule(v->pol, MASK_T_CN_MOBILE), roles, 1);
    }
    if (strcmp(rule_col, "rid") == 0) {
        return mask_rule_action_for(mask_policy_type_rule(v->pol, MASK_T_CN_RID18), roles, 1);
    }
    return mask_rule_action_for(mask_policy_column(v->pol, "public", "patients", rule_col), roles,
                                1);
}

/* value == MARKER "<k>:" hex(clear) */
static void
assert_marked(const char *value, int k, const char *clear)
{
    char want[512];
    int n = snprintf(want, sizeof want, "%s%d:", MARKER, k);
    for (const unsigned char *p = (const unsigned char *) clear; *p; p++) {
        n += snprintf(want + n, sizeof want - (size_t) n, "%02x", *p);
    }
    if (strcmp(value, want) != 0) {
        fail_msg("got %s want %s", value + 1, want + 1);
    }
}

static PGresult *
exec_tuples(env *v, const char *sql)
{
    PGresult *r = PQexec(v->conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", sql, PQerrorMessage(v->conn));
    }
    return r;
}

static void
test_run_select(void **state)
{
    env *v = *state;
    char *sql = rewrite(v, "SELECT id, name, lower(id_no) AS l, phone, notes FROM patients "
                           "ORDER BY id");
    PGresult *r = exec_tuples(v, sql);
    assert_int_equal(PQntuples(r), 2);
    assert_string_equal(PQfname(r, 1), "name");
    assert_string_equal(PQfname(r, 2), "l");
    assert_string_equal(PQgetvalue(r, 0, 0), "1");
    assert_marked(PQgetvalue(r, 0, 1), action(v, "name", false), "张三");
    assert_marked(PQgetvalue(r, 0, 2), action(v, "id_no", true), "110105199001011234");
    assert_marked(PQgetvalue(r, 0, 3), action(v, "phone", false), "13800138000");
    assert_string_equal(PQgetvalue(r, 0, 4), "hi");
    for (int c = 1; c <= 3; c++) {
        assert_true(PQgetisnull(r, 1, c)); /* NULL stays NULL */
    }
    PQclear(r);
    free(sql);

    /* SELECT * over a join with USING, and a view over a view */
    sql = rewrite(v, "SELECT * FROM patients p JOIN visits v ON v.patient_id = p.id");
    r = exec_tuples(v, sql);
    assert_int_equal(PQnfields(r), 9);
    assert_string_equal(PQfname(r, 2), "id_no");
    assert_marked(PQgetvalue(r, 0, 2), action(v, "id_no", false), "110105199001011234");
    assert_marked(PQgetvalue(r, 0, 5), action(v, "rid", false), "11010519900101123X");
    assert_string_equal(PQgetvalue(r, 0, 8), "flu");
    PQclear(r);
    free(sql);
    sql = rewrite(v, "SELECT * FROM v_v");
    r = exec_tuples(v, sql);
    assert_marked(PQgetvalue(r, 0, 0), action(v, "name", false), "张三");
    assert_marked(PQgetvalue(r, 0, 1), action(v, "id_no", true), "110105199001011234");
    PQclear(r);
    free(sql);
    sql = rewrite(v, "SELECT name FROM patients WHERE id = 1 UNION ALL SELECT diag FROM visits");
    r = exec_tuples(v, sql);
    assert_int_equal(PQntuples(r), 2);
    assert_marked(PQgetvalue(r, 0, 0), action(v, "name", false), "张三");
    assert_marked(PQgetvalue(r, 1, 0), action(v, "name", false), "flu");
    PQclear(r);
    free(sql);
    sql = rewrite(v, "SELECT row_to_json(p) AS j FROM patients p WHERE id = 2");
    r = exec_tuples(v, sql);
    assert_non_null(strstr(PQgetvalue(r, 0, 0), MARKER));
    PQclear(r);
    free(sql);
}

static void
test_run_statements(void **state)
{
    env *v = *state;
    /* PREPARE / EXECUTE */
    char *sql = rewrite(v, "PREPARE q(int) AS SELECT id_no FROM patients WHERE id = $1");
    PGresult *r = PQexec(v->conn, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    free(sql);
    r = exec_tuples(v, "EXECUTE q(1)");
    assert_marked(PQgetvalue(r, 0, 0), action(v, "id_no", false), "110105199001011234");
    PQclear(r);
    /* a cursor */
    PQclear(PQexec(v->conn, "BEGIN"));
    sql = rewrite(v, "DECLARE c CURSOR FOR SELECT name FROM patients ORDER BY id");
    r = PQexec(v->conn, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    free(sql);
    r = exec_tuples(v, "FETCH 1 FROM c");
    assert_marked(PQgetvalue(r, 0, 0), action(v, "name", false), "张三");
    PQclear(r);
    /* RETURNING, rolled back */
    sql = rewrite(v, "UPDATE patients SET notes = 'x' WHERE id = 1 RETURNING id, id_no");
    r = exec_tuples(v, sql);
    assert_marked(PQgetvalue(r, 0, 1), action(v, "id_no", false), "110105199001011234");
    PQclear(r);
    free(sql);
    PQclear(PQexec(v->conn, "ROLLBACK"));
    /* COPY table TO */
    sql = rewrite(v, "COPY patients TO STDOUT");
    r = PQexec(v->conn, sql);
    assert_int_equal(PQresultStatus(r), PGRES_COPY_OUT);
    PQclear(r);
    char *buf = NULL;
    int n, rows = 0;
    bool saw = false;
    while ((n = PQgetCopyData(v->conn, &buf, 0)) > 0) {
        rows++;
        if (strncmp(buf, "1\t", 2) == 0) {
            char want[64];
            snprintf(want, sizeof want, "\t%s%d:e5bca0e4b889\t", MARKER, action(v, "name", false));
            saw = strstr(buf, want) != NULL && strstr(buf, "张三") == NULL &&
                  strstr(buf, "110105") == NULL;
        }
        PQfreemem(buf);
    }
    assert_int_equal(n, -1);
    r = PQgetResult(v->conn);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    while ((r = PQgetResult(v->conn)) != NULL) {
        PQclear(r);
    }
    assert_int_equal(rows, 2);
    assert_true(saw);
    free(sql);
    /* a table whose name exists in two schemas: the sensitive one is assumed */
    sql = rewrite(v, "SELECT name FROM other.patients");
    r = exec_tuples(v, sql); /* "patients.name" matches every schema */
    PQclear(r);
    free(sql);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_bind),
        cmocka_unit_test_setup_teardown(test_run_select, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_run_statements, env_setup, env_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
