/* fuzz_mask_sql.c: libFuzzer target for the SQL analyser/rewriter (sqlmask.h).
 *
 * Arbitrary text goes through mask_sql_rewrite with a fixed hand-built catalog (tables with
 * sensitive columns, a table name in two schemas, views over views, a user function) and a fixed
 * policy, once for a masked role and once for a clear role.
 *
 * Invariants:
 *   - mask_sql_rewrite returns 0 (no out-of-memory here) and never crashes or leaks;
 *   - a clear role always gets PASS (decisions only, every action -1);
 *   - REWRITE carries a NUL-terminated text of sql_len bytes that parses again and contains
 *     the marker; the masked flag is set;
 *   - REFUSE carries a five-character SQLSTATE and a message, and no text;
 *   - every decision has a column and a label, and its action is -1 or a valid action index.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -I include -I src/mask
 *        tests/fuzz/fuzz_mask_sql.c <instrumented libdengbao.a> -lpg_query -lyaml ... */
#include <assert.h>
#include <pg_query.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sqlmask.h"

#define MARKER                                                                                     \
    "\x1f"                                                                                         \
    "Fz"

static const char POLICY[] =
    "derived: \"replace('***')\"\n"
    "data_types: {cn_rid: CN_RID18}\n"
    "allow_functions: [public.safe_lookup]\n"
    "columns:\n"
    "  public.patients.id_no: {type: CN_RID18, mask: \"keep(6,4)\", roles: {doctor: clear}}\n"
    "  public.patients.name: {type: CN_NAME, roles: {doctor: clear}, predicates: allow}\n"
    "  public.patients.phone: {type: CN_MOBILE, roles: {doctor: clear}, predicates: deny}\n"
    "  public.people.rid: {type: CN_RID18, roles: {doctor: clear}}\n";

static mask_policy *pol;
static mask_catalog *cat;

static void
rel(const char *schema, const char *name, char kind, const char *sql, const char *cols)
{
    int rc = mask_catalog_add_relation(cat, schema, name, kind, sql);
    assert(rc == 0);
    char buf[256];
    strcpy(buf, cols);
    for (char *save = NULL, *c = strtok_r(buf, ",", &save); c != NULL;
         c = strtok_r(NULL, ",", &save)) {
        rc = mask_catalog_add_column(cat, schema, name, c, "text", NULL);
        assert(rc == 0);
    }
}

static void
init(void)
{
    dbao_err e;
    int rc = mask_policy_parse(&pol, POLICY, strlen(POLICY), "fuzz.yaml", &e);
    assert(rc == 0);
    rc = mask_catalog_new(&cat);
    assert(rc == 0);
    rel("public", "patients", 'r', NULL, "id,name,id_no,phone,notes");
    rel("public", "visits", 'r', NULL, "id,patient_id,diag");
    rel("other", "patients", 'r', NULL, "id,name");
    rel("public", "people", 'r', NULL, "pid,rid");
    rel("public", "v_pat", 'v', "SELECT id, name AS nm, lower(id_no) AS lid FROM patients",
        "id,nm,lid");
    rel("public", "v_v", 'v', "SELECT nm, lid FROM v_pat", "nm,lid");
    rel("public", "v_bad", 'v', "SELECT FROM WHERE", "a");
    rc = mask_catalog_add_function(cat, "public", "leak");
    assert(rc == 0);
    rc = mask_catalog_add_function(cat, "public", "safe_lookup");
    assert(rc == 0);
    rc = mask_catalog_bind(cat, pol, &e);
    assert(rc == 0);
}

static void
check(const mask_sql_result *r, bool clear)
{
    assert(!clear || r->verdict == MASK_SQL_PASS);
    switch (r->verdict) {
    case MASK_SQL_PASS:
        assert(r->sql == NULL);
        break;
    case MASK_SQL_REWRITE: {
        assert(!clear);
        assert(r->sql != NULL && strlen(r->sql) == r->sql_len);
        assert(r->masked);
        assert(strstr(r->sql, MARKER) != NULL);
        PgQueryParseResult p = pg_query_parse(r->sql);
        assert(p.error == NULL);
        pg_query_free_parse_result(p);
        break;
    }
    case MASK_SQL_REFUSE:
        assert(r->sql == NULL && r->message != NULL && strlen(r->sqlstate) == 5);
        break;
    default:
        assert(0);
    }
    for (size_t i = 0; i < r->num_decisions; i++) {
        const mask_sql_decision *d = &r->decisions[i];
        assert(d->column != NULL && d->label != NULL);
        assert(d->action == -1 ||
               (d->action >= 0 && (size_t) d->action < mask_policy_num_actions(pol)));
        if (clear) {
            assert(d->action == -1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const masked[] = {"clerk"};
    static const char *const clear[] = {"doctor"};
    if (pol == NULL) {
        init();
    }
    for (int k = 0; k < 2; k++) {
        mask_sql_opts o = {cat, pol, k == 0 ? masked : clear, 1, MARKER, false};
        mask_sql_result r;
        int rc = mask_sql_rewrite(&o, (const char *) data, size, &r, NULL);
        assert(rc == 0);
        check(&r, k == 1);
        mask_sql_result_cleanup(&r);
    }
    return 0;
}
